//! Template expressions and conditions, a small subset of the BP designer's, in its own syntax:
//!
//! * `{=Document:FIELD}`: a field of the workflow's document;
//! * `{=Template:ID}`: a parameter of the template, as the workflow was started with it
//!   (`PARAMETERS` of `bizproc.workflow.start`), or its `Default`;
//! * `{=Variable:ID}` and `{=Constant:ID}`: a variable or a constant of the template, which
//!   reads as its `Default` (no step sets variables yet);
//! * `{=step:value}`: a value of an earlier step, by the step's name: an activity's return value
//!   (matched case-insensitively, as `event.send` matches them, §3.1) or its built-in `IsTimeout`
//!   (`1` after the timeout, else `0`, §2.7); a task's `outcome` (`approved`/`rejected`),
//!   `approved` (`Y`/`N`), `comment` and `user` (`user_N`).
//!
//! A value that was never set (a step that has not run, a return value the handler did not
//! send, a missing field) is `null`, which reads as the empty string. A string that is exactly
//! one expression becomes the value itself (a number stays a number, a list a list); expressions
//! inside longer text are replaced by their text. Conditions compare numerically when both
//! sides are numbers, else as text; `>`, `<`, `>=`, `<=` on a non-number are false.

use serde_json::Value;

use crate::error::EmulatorError;
use crate::template::CompareOp;

/// The source name of document fields.
pub(crate) const DOCUMENT: &str = "Document";
/// The source name of template parameters.
pub(crate) const TEMPLATE: &str = "Template";
/// The source name of template variables.
pub(crate) const VARIABLE: &str = "Variable";
/// The source name of template constants.
pub(crate) const CONSTANT: &str = "Constant";
/// The sources that are not steps, so no step may take their names.
pub(crate) const SOURCES: [&str; 4] = [DOCUMENT, TEMPLATE, VARIABLE, CONSTANT];

/// One `{=source:name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expression {
    pub(crate) source: String,
    pub(crate) name: String,
}

/// Where expressions find their values.
pub(crate) trait Scope {
    /// The value, or `Value::Null` when there is none.
    fn lookup(&self, source: &str, name: &str) -> Value;
}

impl Expression {
    /// A text that must be exactly one expression (a condition's operand).
    pub(crate) fn single(text: &str) -> Result<Expression, EmulatorError> {
        let spans = spans(text)?;
        match spans.as_slice() {
            [(0, end, e)] if *end == text.len() => Ok(e.clone()),
            _ => Err(EmulatorError::InvalidSpec(format!(
                "`{text}` must be exactly one expression such as `{{=Document:TITLE}}`"
            ))),
        }
    }
}

/// Letters, digits and `_`, not empty.
pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every expression in `text`.
pub(crate) fn parse_all(text: &str) -> Result<Vec<Expression>, EmulatorError> {
    Ok(spans(text)?.into_iter().map(|(_, _, e)| e).collect())
}

/// `(start, end, expression)` for each `{=…}` in `text`.
fn spans(text: &str) -> Result<Vec<(usize, usize, Expression)>, EmulatorError> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("{=") {
        let start = from + found;
        let Some(len) = text[start..].find('}') else {
            return Err(EmulatorError::InvalidSpec(format!("unclosed `{{=` in `{text}`")));
        };
        let end = start + len + 1;
        let inner = &text[start + 2..end - 1];
        let parsed = inner.split_once(':').filter(|(s, n)| is_identifier(s) && is_identifier(n));
        let Some((source, name)) = parsed else {
            return Err(EmulatorError::InvalidSpec(format!(
                "`{{={inner}}}` is not `{{=Document:FIELD}}`, `{{=Template:ID}}`, \
                 `{{=Variable:ID}}`, `{{=Constant:ID}}` or `{{=step:value}}`"
            )));
        };
        out.push((start, end, Expression { source: source.to_owned(), name: name.to_owned() }));
        from = end;
    }
    Ok(out)
}

/// Calls `f` on every string inside a JSON value.
pub(crate) fn each_string(
    value: &Value,
    f: &mut dyn FnMut(&str) -> Result<(), EmulatorError>,
) -> Result<(), EmulatorError> {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|v| each_string(v, f)),
        Value::Object(map) => map.values().try_for_each(|v| each_string(v, f)),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// Substitutes the expressions in every string of `value` (validated when the template was
/// stored, so a malformed one is left as it is).
pub(crate) fn evaluate(value: &Value, scope: &dyn Scope) -> Value {
    match value {
        Value::String(s) => evaluate_str(s, scope),
        Value::Array(items) => Value::Array(items.iter().map(|v| evaluate(v, scope)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), evaluate(v, scope))).collect())
        }
        other => other.clone(),
    }
}

fn evaluate_str(text: &str, scope: &dyn Scope) -> Value {
    let Ok(spans) = spans(text) else {
        return Value::String(text.to_owned());
    };
    if let [(0, end, e)] = spans.as_slice()
        && *end == text.len()
    {
        return scope.lookup(&e.source, &e.name);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, e) in &spans {
        out.push_str(&text[at..*start]);
        out.push_str(&as_text(&scope.lookup(&e.source, &e.name)));
        at = *end;
    }
    out.push_str(&text[at..]);
    Value::String(out)
}

/// Text with its expressions replaced.
pub(crate) fn interpolate(text: &str, scope: &dyn Scope) -> String {
    as_text(&evaluate_str(text, scope))
}

/// A value as the designer prints it: `null` → `""`, booleans `Y`/`N`, numbers as PHP prints
/// them, lists joined with `", "`.
pub(crate) fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "Y" } else { "N" }.to_owned(),
        Value::Number(n) => crate::param::php_number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(as_text).collect::<Vec<_>>().join(", "),
        Value::Object(_) => value.to_string(),
    }
}

/// No value: what reads as the empty string (`null`, `""`, `[]`).
pub(crate) fn is_empty(value: &Value) -> bool {
    as_text(value).is_empty()
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn is_true(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.as_str(), "Y" | "y" | "1") || s.eq_ignore_ascii_case("true"),
        Value::Array(items) => items.first().is_some_and(is_true),
        Value::Null | Value::Object(_) => false,
    }
}

/// `left op right` by the rules in the module documentation.
pub(crate) fn compare(left: &Value, op: CompareOp, right: &Value) -> bool {
    let numbers = as_number(left).zip(as_number(right));
    match op {
        CompareOp::IsTrue => is_true(left),
        CompareOp::Empty => is_empty(left),
        CompareOp::NotEmpty => !is_empty(left),
        CompareOp::Eq | CompareOp::Ne => {
            let equal = match numbers {
                Some((l, r)) => l == r,
                None => as_text(left) == as_text(right),
            };
            equal == (op == CompareOp::Eq)
        }
        CompareOp::Gt | CompareOp::Lt | CompareOp::Ge | CompareOp::Le => {
            let Some((l, r)) = numbers else {
                return false;
            };
            match op {
                CompareOp::Gt => l > r,
                CompareOp::Lt => l < r,
                CompareOp::Ge => l >= r,
                _ => l <= r,
            }
        }
    }
}

/// A condition's description for the step record, e.g. `{=check:approval_required} is_true`.
pub(crate) fn describe(operand: &str, op: CompareOp, right: &Value, left: &Value) -> String {
    let symbol = match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "!=",
        CompareOp::Gt => ">",
        CompareOp::Lt => "<",
        CompareOp::Ge => ">=",
        CompareOp::Le => "<=",
        CompareOp::IsTrue => return format!("{operand} (= {:?}) is true", as_text(left)),
        CompareOp::Empty => return format!("{operand} (= {:?}) is empty", as_text(left)),
        CompareOp::NotEmpty => return format!("{operand} (= {:?}) is not empty", as_text(left)),
    };
    format!("{operand} (= {:?}) {symbol} {:?}", as_text(left), as_text(right))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed;
    impl Scope for Fixed {
        fn lookup(&self, source: &str, name: &str) -> Value {
            match (source, name) {
                ("Document", "OPPORTUNITY") => json!(1500.5),
                ("Document", "COMPANY_ID") => json!(42),
                ("check", "approval_required") => json!("Y"),
                _ => Value::Null,
            }
        }
    }

    #[test]
    fn a_whole_expression_keeps_its_type_and_text_interpolates() {
        assert_eq!(evaluate(&json!("{=Document:COMPANY_ID}"), &Fixed), json!(42));
        assert_eq!(
            evaluate(
                &json!("Deal of {=Document:COMPANY_ID}: {=Document:OPPORTUNITY}{=x:y}!"),
                &Fixed
            ),
            json!("Deal of 42: 1500.5!")
        );
        assert_eq!(evaluate(&json!(["{=check:approval_required}", 3]), &Fixed), json!(["Y", 3]));
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for bad in ["{=Document}", "{=Document:TITLE", "{=Do cument:X}", "{=:X}"] {
            assert!(parse_all(bad).is_err(), "{bad}");
        }
        assert!(Expression::single("a {=Document:X}").is_err());
        assert_eq!(
            Expression::single("{=check:IsTimeout}").unwrap(),
            Expression { source: "check".into(), name: "IsTimeout".into() }
        );
    }

    #[test]
    fn comparisons_follow_the_documented_rules() {
        assert!(compare(&json!("1500.0"), CompareOp::Eq, &json!(1500)));
        assert!(compare(&json!("abc"), CompareOp::Ne, &json!("abd")));
        assert!(compare(&json!(true), CompareOp::Eq, &json!("Y")));
        assert!(compare(&json!("10"), CompareOp::Gt, &json!(9)));
        assert!(!compare(&Value::Null, CompareOp::Gt, &json!(9)));
        assert!(!compare(&Value::Null, CompareOp::Lt, &json!(9)));
        assert!(!compare(&Value::Null, CompareOp::IsTrue, &Value::Null));
        assert!(compare(&Value::Null, CompareOp::Empty, &Value::Null));
        assert!(compare(&json!("y"), CompareOp::IsTrue, &Value::Null));
        assert!(!compare(&json!("N"), CompareOp::IsTrue, &Value::Null));
        assert!(compare(&Value::Null, CompareOp::Eq, &json!("")));
    }
}
