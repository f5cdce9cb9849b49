//! Property values between Bitrix24's wire strings and typed JSON, by declared type.
//!
//! Inbound, a call carries every value as a string or a list of strings (protocol §2.4); the
//! connector gets typed JSON (`int` → number, `bool` → true/false, `Multiple` → array).
//! Outbound, return values become what the portal stores (§3.1): `Y`/`N` for bool, `user_N` for
//! users, arrays for multiple values. The portal itself validates nothing (§3.1), so this is
//! where a wrong type is caught, with a message naming what was expected.

use b24::incoming::PropertyValue;
use b24::rest::{LocalizedText, PropertyType};
use indexmap::IndexMap;
use serde_json::{Number, Value};

use crate::config::PropertyConfig;

/// The declared shape of one property, borrowed from its declaration (nothing is built per
/// value: the intake converts every property of every call through here).
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    pub kind: &'a PropertyType,
    pub multiple: bool,
    /// For `select`: option key → label.
    pub options: &'a IndexMap<String, LocalizedText>,
}

impl<'a> Shape<'a> {
    pub fn of(property: &'a PropertyConfig) -> Shape<'a> {
        Shape { kind: &property.kind, multiple: property.multiple, options: &property.options }
    }

    /// Whether `value` is a declared option; anything goes when none are declared.
    fn allows(&self, value: &str) -> bool {
        self.options.is_empty() || self.options.contains_key(value)
    }

    fn not_an_option(&self, value: &str) -> String {
        let keys: Vec<&str> = self.options.keys().map(String::as_str).collect();
        format!("`{value}` is not one of the options {}", keys.join(", "))
    }
}

/// A typed JSON value from what a call carried. An empty string is "no value" (`null`): PHP
/// sends `null` as `''` (§2.4).
pub fn from_call(shape: Shape<'_>, value: &PropertyValue) -> Result<Value, String> {
    match (value, shape.multiple) {
        (PropertyValue::Scalar(s), false) => scalar_from_call(shape, s),
        // `externalizeValueMultiple` wraps a scalar into a list (§2.4).
        (PropertyValue::Scalar(s), true) if s.is_empty() => Ok(Value::Array(Vec::new())),
        (PropertyValue::Scalar(s), true) => Ok(Value::Array(vec![scalar_from_call(shape, s)?])),
        (PropertyValue::List(items), true) => items
            .iter()
            .enumerate()
            .map(|(i, s)| scalar_from_call(shape, s).map_err(|e| format!("element {i}: {e}")))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        (PropertyValue::List(items), false) => {
            Err(format!("expected one value, got a list of {}", items.len()))
        }
    }
}

fn scalar_from_call(shape: Shape<'_>, s: &str) -> Result<Value, String> {
    if s.is_empty() {
        return Ok(Value::Null);
    }
    match shape.kind {
        PropertyType::Int => {
            s.trim().parse::<i64>().map(Value::from).map_err(|_| format!("`{s}` is not an integer"))
        }
        PropertyType::Double => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{s}` is not a number")),
        PropertyType::Bool => match s {
            "Y" | "1" => Ok(Value::Bool(true)),
            "N" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("`{s}` is not Y or N")),
        },
        PropertyType::Select if !shape.allows(s) => Err(shape.not_an_option(s)),
        // Strings, texts, users (`user_1`, or a group code), site-format dates (§2.4: not
        // ISO-8601), file ids and document-specific types pass unchanged.
        _ => Ok(Value::String(s.to_owned())),
    }
}

/// What `bizproc.event.send` should carry for a typed value.
pub fn to_return_value(shape: Shape<'_>, value: &Value) -> Result<Value, String> {
    match (value, shape.multiple) {
        (Value::Null, _) => Ok(Value::Null),
        (Value::Array(items), true) => items
            .iter()
            .enumerate()
            .map(|(i, v)| scalar_to_return(shape, v).map_err(|e| format!("element {i}: {e}")))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        (Value::Array(_), false) => Err("expected one value, got a list".to_owned()),
        (scalar, true) => Ok(Value::Array(vec![scalar_to_return(shape, scalar)?])),
        (scalar, false) => scalar_to_return(shape, scalar),
    }
}

fn scalar_to_return(shape: Shape<'_>, value: &Value) -> Result<Value, String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match (shape.kind, value) {
        (PropertyType::Bool, Value::Bool(b)) => Ok(Value::from(if *b { "Y" } else { "N" })),
        (PropertyType::Bool, Value::String(s)) if s == "Y" || s == "N" => Ok(value.clone()),
        (PropertyType::Bool, _) => Err(format!("expected true/false or \"Y\"/\"N\", got {value}")),
        (PropertyType::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        (PropertyType::Int, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("expected an integer, got {value}")),
        (PropertyType::Int, _) => Err(format!("expected an integer, got {value}")),
        (PropertyType::Double, Value::Number(_)) => Ok(value.clone()),
        (PropertyType::Double, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("expected a number, got {value}")),
        (PropertyType::Double, _) => Err(format!("expected a number, got {value}")),
        (PropertyType::User, Value::Number(n)) if n.is_u64() => {
            Ok(Value::from(format!("user_{n}")))
        }
        (PropertyType::User, Value::String(s)) if s.parse::<u64>().is_ok() => {
            Ok(Value::from(format!("user_{s}")))
        }
        (PropertyType::User, Value::String(_)) => Ok(value.clone()),
        (PropertyType::User, _) => Err(format!("expected a user id or \"user_N\", got {value}")),
        (PropertyType::Select, Value::String(s)) if !shape.allows(s) => Err(shape.not_an_option(s)),
        (_, v) => text(v).map(Value::String).ok_or_else(|| format!("expected text, got {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static NO_OPTIONS: std::sync::LazyLock<IndexMap<String, LocalizedText>> =
        std::sync::LazyLock::new(IndexMap::new);

    fn shape(kind: &PropertyType, multiple: bool) -> Shape<'_> {
        Shape { kind, multiple, options: &NO_OPTIONS }
    }

    fn scalar(s: &str) -> PropertyValue {
        PropertyValue::Scalar(s.to_owned())
    }

    #[test]
    fn call_strings_become_typed_json() {
        assert_eq!(from_call(shape(&PropertyType::Int, false), &scalar("42")), Ok(json!(42)));
        assert_eq!(
            from_call(shape(&PropertyType::Double, false), &scalar("1500.5")),
            Ok(json!(1500.5))
        );
        assert_eq!(from_call(shape(&PropertyType::Bool, false), &scalar("Y")), Ok(json!(true)));
        assert_eq!(from_call(shape(&PropertyType::Bool, false), &scalar("")), Ok(Value::Null));
        assert_eq!(
            from_call(shape(&PropertyType::Date, false), &scalar("21.08.2026")),
            Ok(json!("21.08.2026"))
        );
        let users = PropertyValue::List(vec!["user_1".into(), "user_7".into()]);
        assert_eq!(
            from_call(shape(&PropertyType::User, true), &users),
            Ok(json!(["user_1", "user_7"]))
        );
        assert_eq!(from_call(shape(&PropertyType::Int, true), &scalar("3")), Ok(json!([3])));
    }

    #[test]
    fn wrong_call_values_say_what_was_expected() {
        assert_eq!(
            from_call(shape(&PropertyType::Int, false), &scalar("4x")),
            Err("`4x` is not an integer".into())
        );
        assert_eq!(
            from_call(shape(&PropertyType::Bool, false), &scalar("yes")),
            Err("`yes` is not Y or N".into())
        );
        let list = PropertyValue::List(vec!["1".into(), "x".into()]);
        assert_eq!(
            from_call(shape(&PropertyType::Int, true), &list),
            Err("element 1: `x` is not an integer".into())
        );
        assert_eq!(
            from_call(shape(&PropertyType::Int, false), &list),
            Err("expected one value, got a list of 2".into())
        );
        let options: IndexMap<String, LocalizedText> = ["opt_a", "opt_b"]
            .into_iter()
            .map(|k| (k.to_owned(), LocalizedText::from(k)))
            .collect();
        let select = Shape { kind: &PropertyType::Select, multiple: false, options: &options };
        assert_eq!(
            from_call(select, &scalar("opt_z")),
            Err("`opt_z` is not one of the options opt_a, opt_b".into())
        );
    }

    #[test]
    fn return_values_take_bitrix_spellings() {
        assert_eq!(
            to_return_value(shape(&PropertyType::Bool, false), &json!(true)),
            Ok(json!("Y"))
        );
        assert_eq!(to_return_value(shape(&PropertyType::Bool, false), &json!("N")), Ok(json!("N")));
        assert_eq!(
            to_return_value(shape(&PropertyType::User, false), &json!(7)),
            Ok(json!("user_7"))
        );
        assert_eq!(
            to_return_value(shape(&PropertyType::User, true), &json!([1, "user_2"])),
            Ok(json!(["user_1", "user_2"]))
        );
        assert_eq!(
            to_return_value(shape(&PropertyType::Double, false), &json!("8000.25")),
            Ok(json!(8000.25))
        );
        assert_eq!(
            to_return_value(shape(&PropertyType::String, false), &json!(12)),
            Ok(json!("12"))
        );
        assert!(to_return_value(shape(&PropertyType::Bool, false), &json!("maybe")).is_err());
        assert!(to_return_value(shape(&PropertyType::Int, false), &json!(1.5)).is_err());
        assert!(to_return_value(shape(&PropertyType::String, false), &json!({"a": 1})).is_err());
    }
}
