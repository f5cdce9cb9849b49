//! `getPropertiesDialogValues` of a REST activity (protocol §1.8): each registered property's
//! value read from the dialog as `GetFieldInputValue` reads it for the property's type, then the
//! required properties checked. Nothing is stored unless every value passes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::EmulatorError;
use crate::expr;
use crate::param::{Array, Param};
use crate::registry;
use crate::template::Known;

/// One complaint of the settings dialog, as `getPropertiesDialogValues` reports them: `code`
/// `ErrorValue` (a value its type does not take; `parameter` is the dialog's control,
/// `property_<id lower-cased>`), `NotFound` (no such user) or `NotExist` (a required property
/// with no value; `parameter` is the property's ID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyError {
    pub code: String,
    pub parameter: String,
    pub message: String,
}

/// The dialog's control for a property: `property_<id lower-cased>` (§1.8).
pub(crate) fn control_name(id: &str) -> String {
    format!("property_{}", id.to_lowercase())
}

/// Every registered property's value from `given` (by property ID), parsed by its type, or
/// what is wrong. As the portal does, the first property with a value its type refuses stops
/// the parsing and only its errors are reported; once every value parses, every required
/// property with no value (and no `DEFAULT`) is reported.
pub(crate) fn parse(
    properties: &Array,
    given: &Map<String, Value>,
    known: &Known<'_>,
    language: &str,
) -> Result<Map<String, Value>, Vec<PropertyError>> {
    let empty = Array::new();
    let mut values = Map::new();
    for (id, definition) in properties {
        let definition = definition.as_array().unwrap_or(&empty);
        let value = parse_property(id, definition, given.get(id), known)?;
        values.insert(id.clone(), value);
    }
    let missing: Vec<PropertyError> = properties
        .iter()
        .filter_map(|(id, definition)| {
            let definition = definition.as_array().unwrap_or(&empty);
            // ValidateProperties: an unset value falls back to the DEFAULT; an empty list does not.
            let value = match values.get(id) {
                Some(Value::Null) | None => definition.get("DEFAULT").map(Param::to_json),
                Some(v) => Some(v.clone()),
            };
            let required = registry::property_flag(definition, "REQUIRED");
            let blank = value.as_ref().is_none_or(expr::is_empty);
            (required && blank).then(|| {
                let name =
                    registry::localized(definition.get("NAME").unwrap_or(&Param::Null), language);
                PropertyError {
                    code: "NotExist".into(),
                    parameter: id.clone(),
                    message: format!("This field is required: {name}"),
                }
            })
        })
        .collect();
    if missing.is_empty() { Ok(values) } else { Err(missing) }
}

/// One property: a single value (the first of a list, as `Base::extractValue` takes it) or,
/// for a multiple property, a list without its empty entries.
fn parse_property(
    id: &str,
    definition: &Array,
    given: Option<&Value>,
    known: &Known<'_>,
) -> Result<Value, Vec<PropertyError>> {
    let control = control_name(id);
    let ty = registry::property_type(definition);
    let options = definition.get("OPTIONS").and_then(Param::as_array);
    let items: Vec<&Value> = match given {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    let multiple = registry::property_flag(definition, "MULTIPLE");
    let items = if multiple { &items[..] } else { &items[..items.len().min(1)] };
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        match parse_one(&ty, &text(item), options, known) {
            Ok(Some(value)) => parsed.push(value),
            Ok(None) => {}
            Err((code, message)) => errors.push(PropertyError {
                code: code.into(),
                parameter: control.clone(),
                message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if ty == "select" {
        // A multiple select keeps each option once.
        let mut unique = Vec::with_capacity(parsed.len());
        for value in parsed {
            if !unique.contains(&value) {
                unique.push(value);
            }
        }
        parsed = unique;
    }
    Ok(if multiple { Value::Array(parsed) } else { parsed.pop().unwrap_or(Value::Null) })
}

/// A form value as text: what a browser's form sends, also for JSON scalars (`true` is `1`).
fn text(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => String::new(),
        scalar => Param::from_json(scalar).php_string().unwrap_or_default(),
    }
}

/// `(code, message)` of a refused value.
type Refused = (&'static str, String);

/// One value by type (`GetFieldInputValue`, the base types of §1.5); `None` for no value. An
/// expression is kept as it is whatever the type, once it names something of the template.
fn parse_one(
    ty: &str,
    text: &str,
    options: Option<&Array>,
    known: &Known<'_>,
) -> Result<Option<Value>, Refused> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if text.contains("{=") {
        return match known.check(text) {
            Ok(()) => Ok(Some(Value::String(text.to_owned()))),
            Err(EmulatorError::InvalidSpec(message)) => Err(("ErrorValue", message)),
            Err(other) => Err(("ErrorValue", other.to_string())),
        };
    }
    let refused = |message: &str| Err(("ErrorValue", message.to_owned()));
    let value = match ty {
        "int" => {
            let digits: String = text.chars().filter(|c| *c != ' ').collect();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                return refused("The field value is not integer.");
            }
            Value::from(Param::Str(digits).php_int())
        }
        "double" => {
            let number: String = text
                .chars()
                .filter(|c| *c != ' ')
                .map(|c| if c == ',' { '.' } else { c })
                .collect();
            let parsed = is_php_numeric(&number)
                .then(|| number.parse::<f64>().ok().and_then(serde_json::Number::from_f64))
                .flatten();
            match parsed {
                Some(n) => Value::Number(n),
                None => return refused("The field value is not a valid number."),
            }
        }
        "bool" => match text.to_lowercase().as_str() {
            "y" | "yes" | "true" | "1" => Value::from("Y"),
            "n" | "no" | "false" | "0" => Value::from("N"),
            _ => return refused("The field value is not a valid Yes/No value."),
        },
        "select" => match options {
            None => return Ok(None),
            Some(o) if o.is_empty() => return Ok(None),
            Some(o) if !o.contains_key(text) => {
                return refused("The selected item is not a list item.");
            }
            Some(_) => Value::from(text),
        },
        "date" if !is_date(text.trim()) => return refused("The field value is not a valid date."),
        "datetime" if !is_datetime(text.trim()) => {
            return refused("The field value is not a valid date.");
        }
        "date" | "datetime" => Value::from(text.trim()),
        "user" => {
            let user = text.trim();
            let id = user.strip_prefix("user_").unwrap_or(user);
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(("NotFound", format!("A user or user group '{user}' was not found.")));
            }
            Value::from(format!("user_{id}"))
        }
        _ => Value::from(text),
    };
    Ok(Some(value))
}

/// PHP's `is_numeric` for what a form sends: an optional sign, digits with at most one `.`,
/// an optional exponent (so `1e3` passes and `inf`, `0x1A` or `1.` followed by text do not).
fn is_php_numeric(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    (!int.is_empty() || !frac.is_empty())
        && digits(int)
        && digits(frac)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// `YYYY-MM-DD` with a month 1–12 and a day 1–31.
fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let number = |p: &str, len: usize| {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse::<u32>().ok())
    };
    match parts.as_slice() {
        [y, m, d] => {
            number(y, 4).flatten().is_some()
                && number(m, 2).flatten().is_some_and(|m| (1..=12).contains(&m))
                && number(d, 2).flatten().is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    }
}

/// A date, then `T` or a space, then `HH:MM` or `HH:MM:SS`, and an optional zone (`Z`,
/// `+03:00`).
fn is_datetime(s: &str) -> bool {
    let Some((date, time)) = s.split_once(['T', ' ']) else {
        return false;
    };
    let time = time.trim_end_matches('Z');
    let time = match time.rfind(['+', '-']) {
        Some(at) if at > 0 => &time[..at],
        _ => time,
    };
    let two = |p: &str, max: u32| {
        p.len() == 2
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= max)
    };
    let time_ok = match time.split(':').collect::<Vec<_>>().as_slice() {
        [h, m] => two(h, 23) && two(m, 59),
        [h, m, sec] => two(h, 23) && two(m, 59) && two(sec, 59),
        _ => false,
    };
    is_date(date) && time_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_dates_and_times_are_read_as_the_portal_reads_them() {
        for ok in ["1", "-2.5", "1e3", ".5", "3."] {
            assert!(is_php_numeric(ok), "{ok}");
        }
        for bad in ["", "abc", "1.2.3", "1e", "0x1A", "inf", "--1"] {
            assert!(!is_php_numeric(bad), "{bad}");
        }
        assert!(is_date("2026-08-21"));
        assert!(!is_date("2026-13-01") && !is_date("21.08.2026") && !is_date("2026-8-1"));
        assert!(is_datetime("2026-08-21 10:00") && is_datetime("2026-08-21T10:00:05+03:00"));
        assert!(!is_datetime("2026-08-21") && !is_datetime("2026-08-21 25:00"));
    }
}
