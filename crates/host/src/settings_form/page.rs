//! What the settings form shows, built from the action's declaration and the designer's
//! `PLACEMENT_OPTIONS` (docs/protocol.md §1.8): one field per declared property with its current
//! value, the expressions the designer offers (document fields, the template's parameters,
//! variables and constants, earlier actions' return values), and the words of the page in the
//! portal's language. The declaration, not the portal's copy of it, decides the fields: it is
//! what the host checks calls against.

use b24::rest::{LocalizedText, PropertyType};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{ActionConfig, PropertyConfig};
pub use crate::language::Lang;

/// At most this many expressions in one group, and characters in one label: the options come
/// from the portal and are shown in every field's menu.
const MAX_EXPRESSIONS_PER_GROUP: usize = 500;
const MAX_LABEL_CHARS: usize = 200;
/// At most this many values of one multiple property: each is a control of its own on the
/// page, so a POST holding more is refused rather than rendered (or cut, which Save would
/// store).
pub const MAX_VALUES_PER_FIELD: usize = 100;

/// The form's words in `lang`.
pub fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::En => &EN,
        Lang::Ru => &RU,
    }
}

/// Every word of the page and its checks, in one language. The checks' messages go to the
/// script with the form's data, so both sides say the same thing.
#[derive(Debug, Serialize)]
pub struct Words {
    pub title: &'static str,
    pub insert: &'static str,
    pub add_value: &'static str,
    pub required: &'static str,
    pub default_is: &'static str,
    pub document_fields: &'static str,
    pub parameters: &'static str,
    pub variables: &'static str,
    pub constants: &'static str,
    pub global_variables: &'static str,
    pub global_constants: &'static str,
    pub earlier_actions: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub not_set: &'static str,
    /// The checks' messages, by problem.
    pub problems: Problems,
}

/// What a client-side check says, by problem; `{value}` is replaced by the value.
#[derive(Debug, Serialize)]
pub struct Problems {
    pub required: &'static str,
    pub int: &'static str,
    pub double: &'static str,
    pub bool: &'static str,
    pub select: &'static str,
    pub date: &'static str,
    pub datetime: &'static str,
    pub user: &'static str,
    pub file: &'static str,
}

static EN: Words = Words {
    title: "Action settings",
    insert: "Insert a value…",
    add_value: "Add a value",
    required: "required",
    default_is: "Default:",
    document_fields: "Document fields",
    parameters: "Template parameters",
    variables: "Variables",
    constants: "Constants",
    global_variables: "Global variables",
    global_constants: "Global constants",
    earlier_actions: "Earlier actions",
    yes: "Yes",
    no: "No",
    not_set: "(not set)",
    problems: Problems {
        required: "A value is required.",
        int: "“{value}” is not a whole number.",
        double: "“{value}” is not a number (use a dot: 1.5).",
        bool: "“{value}” is not Yes or No.",
        select: "“{value}” is not one of the options.",
        date: "“{value}” is not a date (05.12.2026, 12/05/2026 or 2026-12-05).",
        datetime: "“{value}” is not a date and time (05.12.2026 14:30:00 or 2026-12-05T14:30:00).",
        user: "“{value}” is not a user (user_1, 1, author or a group_… code).",
        file: "“{value}” is not a file (its id or its http(s) address).",
    },
};

static RU: Words = Words {
    title: "Настройки действия",
    insert: "Вставить значение…",
    add_value: "Добавить значение",
    required: "обязательно",
    default_is: "По умолчанию:",
    document_fields: "Поля документа",
    parameters: "Параметры шаблона",
    variables: "Переменные",
    constants: "Константы",
    global_variables: "Глобальные переменные",
    global_constants: "Глобальные константы",
    earlier_actions: "Предыдущие действия",
    yes: "Да",
    no: "Нет",
    not_set: "(не задано)",
    problems: Problems {
        required: "Нужно указать значение.",
        int: "«{value}» — не целое число.",
        double: "«{value}» — не число (дробную часть отделяйте точкой: 1.5).",
        bool: "«{value}» — не «Да» и не «Нет».",
        select: "«{value}» нет среди вариантов.",
        date: "«{value}» — не дата (05.12.2026, 12/05/2026 или 2026-12-05).",
        datetime: "«{value}» — не дата и время (05.12.2026 14:30:00 или 2026-12-05T14:30:00).",
        user: "«{value}» — не пользователь (user_1, 1, author или код group_…).",
        file: "«{value}» — не файл (его ID или адрес http(s)).",
    },
};

/// How a field is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widget {
    Line,
    Text,
    Choice,
}

/// One property as a form field.
#[derive(Debug, Clone)]
pub struct Field {
    pub id: String,
    pub label: String,
    pub description: Option<String>,
    /// The declared type as Bitrix24 names it (`int`, `select`, …): what the script checks.
    pub kind: String,
    pub widget: Widget,
    pub required: bool,
    pub multiple: bool,
    /// The values shown, at least one (an empty one for an unset field).
    pub values: Vec<String>,
    /// For a choice: `(key, label)`, in declared order, the empty "not set" first. A held value
    /// that is none of them (an expression) is added to its own list only ([`Field::is_choice`]),
    /// so the page grows with the number of values, not with its square.
    pub choices: Vec<(String, String)>,
    /// For `select`: the declared option keys, what a value must be one of.
    pub options: Vec<String>,
    pub default: Option<String>,
    /// The shown values are the default, not what the designer holds: the script sends them
    /// once the form has loaded, as the designer would store them.
    pub from_default: bool,
}

impl Field {
    /// Whether `value` is one of the field's choices.
    pub fn is_choice(&self, value: &str) -> bool {
        self.choices.iter().any(|(key, _)| key == value)
    }
}

/// Why the designer's `PLACEMENT_OPTIONS` cannot be shown as a form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error(
        "property `{property}` holds {count} values; the form shows at most {MAX_VALUES_PER_FIELD}"
    )]
    TooManyValues { property: String, count: usize },
}

/// A group of expressions the designer offers, e.g. the document's fields.
#[derive(Debug, Clone, Serialize)]
pub struct ExpressionGroup {
    pub label: &'static str,
    /// `(expression, label)`: `("{=Document:TITLE}", "Title")`.
    pub items: Vec<(String, String)>,
}

/// The page: its fields and the expressions every field can take.
#[derive(Debug, Clone)]
pub struct Form {
    pub fields: Vec<Field>,
    pub expressions: Vec<ExpressionGroup>,
}

impl Form {
    /// The form of `action`, filled from the designer's `PLACEMENT_OPTIONS` (`Null` when the
    /// portal sent none).
    pub fn build(action: &ActionConfig, options: &Value, lang: Lang) -> Result<Form, FormError> {
        let current = options.get("current_values").and_then(Value::as_object);
        let fields = action
            .properties
            .iter()
            .map(|(id, property)| field(id, property, current_value(current, id), lang))
            .collect::<Result<_, _>>()?;
        Ok(Form { fields, expressions: expressions(options, words(lang)) })
    }

    /// What the script needs besides the fields it finds in the page: each field's type, its
    /// flags and choices, which fields to send at once, and the checks' messages.
    pub fn script_data(&self, lang: Lang) -> Value {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .map(|f| {
                serde_json::json!({
                    "id": f.id,
                    "type": f.kind,
                    "required": f.required,
                    "multiple": f.multiple,
                    "options": f.options,
                    "send_on_load": f.from_default,
                })
            })
            .collect();
        serde_json::json!({ "fields": fields, "problems": words(lang).problems })
    }
}

/// The designer's current value of property `id`: by its exact id, else ignoring case (the
/// portal upper-cases some keys, §1.5).
fn current_value<'a>(current: Option<&'a Map<String, Value>>, id: &str) -> Option<&'a Value> {
    let current = current?;
    current
        .get(id)
        .or_else(|| current.iter().find(|(key, _)| key.eq_ignore_ascii_case(id)).map(|(_, v)| v))
}

fn field(
    id: &str,
    property: &PropertyConfig,
    current: Option<&Value>,
    lang: Lang,
) -> Result<Field, FormError> {
    let words = words(lang);
    let text = |t: &LocalizedText| t.in_language(lang.code()).to_owned();
    let (widget, choices) = match &property.kind {
        PropertyType::Text => (Widget::Text, Vec::new()),
        PropertyType::Bool => (
            Widget::Choice,
            vec![
                (String::new(), words.not_set.to_owned()),
                ("Y".to_owned(), words.yes.to_owned()),
                ("N".to_owned(), words.no.to_owned()),
            ],
        ),
        PropertyType::Select => {
            let mut choices = vec![(String::new(), words.not_set.to_owned())];
            choices.extend(property.options.iter().map(|(key, label)| (key.clone(), text(label))));
            (Widget::Choice, choices)
        }
        _ => (Widget::Line, Vec::new()),
    };
    let defaults =
        property.default.as_ref().map(|d| shown_values(d, &property.kind)).unwrap_or_default();
    let default = (!defaults.is_empty()).then(|| defaults.join(", "));
    let held = current.map(|v| shown_values(v, &property.kind)).unwrap_or_default();
    let from_default = held.is_empty() && property.default.is_some();
    let mut values = if from_default { defaults } else { held };
    if !property.multiple {
        values.truncate(1);
    }
    if values.len() > MAX_VALUES_PER_FIELD {
        return Err(FormError::TooManyValues { property: id.to_owned(), count: values.len() });
    }
    if values.is_empty() {
        values.push(String::new());
    }
    Ok(Field {
        id: id.to_owned(),
        label: text(&property.name),
        description: property.description.as_ref().map(text).filter(|d| !d.is_empty()),
        kind: property.kind.as_str().to_owned(),
        widget,
        required: property.required,
        multiple: property.multiple,
        values,
        choices,
        options: property.options.keys().cloned().collect(),
        default,
        from_default,
    })
}

/// A stored or default value as the field shows it: one string per value. Booleans become
/// `Y`/`N` (a `true` default means `Y`), numbers their text, `null` nothing.
fn shown_values(value: &Value, kind: &PropertyType) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) if *kind == PropertyType::Bool => Some(if *b { "Y" } else { "N" }.into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    };
    match value {
        Value::Array(items) => items.iter().filter_map(one).filter(|s| !s.is_empty()).collect(),
        other => one(other).filter(|s| !s.is_empty()).into_iter().collect(),
    }
}

/// The expressions of `PLACEMENT_OPTIONS`, grouped as the designer groups them. Lists and
/// maps by id are both read (the shape is INFERRED, §1.8); ids that could not be written as
/// an expression are left out.
fn expressions(options: &Value, words: &Words) -> Vec<ExpressionGroup> {
    let mut groups = Vec::new();
    let mut push = |label: &'static str, items: Vec<(String, String)>| {
        if !items.is_empty() {
            groups.push(ExpressionGroup { label, items });
        }
    };
    let document = options.get("document_fields").map(|fields| {
        entries(fields)
            .into_iter()
            .map(|(id, field)| (format!("{{=Document:{id}}}"), name_of(&field, "Name", &id)))
            .collect()
    });
    push(words.document_fields, document.unwrap_or_default());
    let template = options.get("template").cloned().unwrap_or(Value::Null);
    for (key, source, label) in [
        ("parameters", "Template", words.parameters),
        ("variables", "Variable", words.variables),
        ("constants", "Constant", words.constants),
        ("global_variables", "GlobalVar", words.global_variables),
        ("global_constants", "GlobalConst", words.global_constants),
    ] {
        let items = template.get(key).map(|items| {
            entries(items)
                .into_iter()
                .map(|(id, item)| (format!("{{={source}:{id}}}"), name_of(&item, "Name", &id)))
                .collect()
        });
        push(label, items.unwrap_or_default());
    }
    let returns = template.get("return_activities").map(|activities| {
        let mut items = Vec::new();
        for (step, activity) in entries(activities) {
            let title = name_of(&activity, "Title", &step);
            for (id, value) in activity.get("Return").map(entries).unwrap_or_default() {
                let name = name_of(&value, "Name", &id);
                items.push((format!("{{={step}:{id}}}"), clip(&format!("{title}: {name}"))));
            }
        }
        items.truncate(MAX_EXPRESSIONS_PER_GROUP);
        items
    });
    push(words.earlier_actions, returns.unwrap_or_default());
    groups
}

/// `(id, item)` of a list of `{Id, …}` objects or a map by id; at most
/// [`MAX_EXPRESSIONS_PER_GROUP`], only ids an expression can name.
fn entries(value: &Value) -> Vec<(String, Value)> {
    let pairs: Vec<(String, Value)> = match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| {
                let id = item.get("Id").or_else(|| item.get("ID"))?.as_str()?;
                Some((id.to_owned(), item.clone()))
            })
            .collect(),
        Value::Object(map) => map.iter().map(|(id, item)| (id.clone(), item.clone())).collect(),
        _ => Vec::new(),
    };
    pairs.into_iter().filter(|(id, _)| is_identifier(id)).take(MAX_EXPRESSIONS_PER_GROUP).collect()
}

/// Letters, digits and `_`: what `{=Source:Name}` allows on both sides.
fn is_identifier(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An item's display name (`Name`, `Title`, upper- or lower-case), else its id; clipped.
fn name_of(item: &Value, key: &str, id: &str) -> String {
    let name = [key.to_owned(), key.to_ascii_uppercase(), key.to_ascii_lowercase()]
        .iter()
        .find_map(|k| item.get(k))
        .and_then(|name| match name {
            Value::String(s) => Some(s.clone()),
            // A name by language, as registrations give them.
            Value::Object(by) => by.values().find_map(Value::as_str).map(str::to_owned),
            _ => None,
        })
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| id.to_owned());
    clip(&name)
}

fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_LABEL_CHARS).collect();
    if text.chars().nth(MAX_LABEL_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action() -> ActionConfig {
        let text = concat!(
            crate::one_http_action_config!(),
            r#"url = "http://127.0.0.1:9/"
[actions.properties.amount]
name = { en = "Amount", ru = "Сумма" }
type = "double"
required = true
[actions.properties.mode]
name = "Mode"
type = "select"
default = "fast"
options = { fast = "Fast", careful = { en = "Careful", ru = "Осторожно" } }
[actions.properties.tags]
name = "Tags"
multiple = true
"#
        );
        let config = crate::config::Config::from_toml(text, "test", std::iter::empty()).unwrap();
        config.actions[0].clone()
    }

    #[test]
    fn fields_follow_the_declaration_with_the_designers_values() {
        let options = json!({ "current_values": { "AMOUNT": "{=Document:OPPORTUNITY}", "tags": ["a", "", "b"] } });
        let form = Form::build(&action(), &options, Lang::Ru).unwrap();
        let amount = form.fields.iter().find(|f| f.id == "amount").unwrap();
        assert_eq!(amount.label, "Сумма");
        assert_eq!(amount.values, ["{=Document:OPPORTUNITY}"]);
        assert!(amount.required && !amount.from_default);
        let mode = form.fields.iter().find(|f| f.id == "mode").unwrap();
        assert_eq!(mode.widget, Widget::Choice);
        assert_eq!(mode.values, ["fast"], "an unset field shows its default");
        assert!(mode.from_default, "and the default is sent once the form loads");
        assert!(mode.choices.contains(&("careful".into(), "Осторожно".into())));
        let tags = form.fields.iter().find(|f| f.id == "tags").unwrap();
        assert_eq!(tags.values, ["a", "b"], "empty entries of a list are dropped");
    }

    #[test]
    fn a_multiple_property_holding_too_many_values_is_refused_naming_it() {
        let at_most: Vec<String> = (0..MAX_VALUES_PER_FIELD).map(|n| n.to_string()).collect();
        let options = json!({ "current_values": { "tags": at_most } });
        let form = Form::build(&action(), &options, Lang::En).unwrap();
        let tags = form.fields.iter().find(|f| f.id == "tags").unwrap();
        assert_eq!(tags.values.len(), MAX_VALUES_PER_FIELD);

        let one_more: Vec<String> = (0..=MAX_VALUES_PER_FIELD).map(|n| n.to_string()).collect();
        let options = json!({ "current_values": { "tags": one_more } });
        let error = Form::build(&action(), &options, Lang::En).unwrap_err();
        assert_eq!(
            error,
            FormError::TooManyValues { property: "tags".into(), count: MAX_VALUES_PER_FIELD + 1 }
        );
        assert!(error.to_string().contains("`tags` holds 101 values"), "{error}");
    }

    #[test]
    fn a_held_expression_is_not_added_to_the_declared_choices() {
        let options = json!({ "current_values": { "mode": "{=Variable:Mode}" } });
        let form = Form::build(&action(), &options, Lang::En).unwrap();
        let mode = form.fields.iter().find(|f| f.id == "mode").unwrap();
        assert_eq!(mode.values, ["{=Variable:Mode}"]);
        assert!(!mode.is_choice("{=Variable:Mode}") && mode.is_choice("careful"));
        assert_eq!(mode.choices.len(), 3, "not set, fast, careful");
    }

    #[test]
    fn expressions_come_from_lists_and_maps_and_skip_what_cannot_be_named() {
        let options = json!({
            "document_fields": { "TITLE": { "Name": "Title" }, "BAD ID": { "Name": "x" } },
            "template": {
                "parameters": [{ "Id": "Region", "Name": "Region" }],
                "variables": { "Limit": { "Name": "Limit" } },
                "constants": [],
                "return_activities": [
                    { "Id": "A1_2", "Title": "Check", "Return": [{ "Id": "approved", "Name": "Approved" }] }
                ]
            }
        });
        let form = Form::build(&action(), &options, Lang::En).unwrap();
        let all: Vec<(&str, &str)> = form
            .expressions
            .iter()
            .flat_map(|g| g.items.iter().map(|(e, l)| (e.as_str(), l.as_str())))
            .collect();
        assert_eq!(
            all,
            [
                ("{=Document:TITLE}", "Title"),
                ("{=Template:Region}", "Region"),
                ("{=Variable:Limit}", "Limit"),
                ("{=A1_2:approved}", "Check: Approved"),
            ]
        );
    }
}
