//! The request-parameter tree as PHP sees it: ordered arrays with scalar leaves, from JSON or forms.
//!
//! Bitrix24 turns every request into a PHP array (`$_POST`, `parse_str` or `json_decode`, protocol
//! doc §5.1). PHP arrays keep insertion order, and several behaviours depend on it (the order of
//! `properties[…]` in a dispatched call, batch result keys), so this tree is ordered, unlike
//! `serde_json::Value` without its `preserve_order` feature. JSON lists become arrays keyed
//! `"0".."n-1"`, as in PHP.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A PHP array: an ordered map with string keys (numeric keys kept in decimal form).
pub(crate) type Array = IndexMap<String, Param>;

/// One PHP value as a REST method receives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Array(Array),
}

impl Param {
    pub(crate) fn str(s: impl Into<String>) -> Param {
        Param::Str(s.into())
    }

    /// An array from `(key, value)` pairs, in order.
    pub(crate) fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Param)>) -> Param {
        Param::Array(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A list (keys `0..n`).
    pub(crate) fn list(items: impl IntoIterator<Item = Param>) -> Param {
        Param::Array(items.into_iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect())
    }

    pub(crate) fn as_array(&self) -> Option<&Array> {
        match self {
            Param::Array(a) => Some(a),
            _ => None,
        }
    }

    /// PHP's `empty()`: null, false, 0, 0.0, `""`, `"0"` and `[]` are empty.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Param::Null => true,
            Param::Bool(b) => !b,
            Param::Num(n) => n.as_f64() == Some(0.0),
            Param::Str(s) => s.is_empty() || s == "0",
            Param::Array(a) => a.is_empty(),
        }
    }

    /// PHP's `(bool)` cast: the opposite of `empty()`. The string `"false"` is true (§5.5).
    pub(crate) fn truthy(&self) -> bool {
        !self.is_empty()
    }

    /// PHP's `(string)` cast for scalars; `None` for arrays (PHP would print `Array`).
    pub(crate) fn php_string(&self) -> Option<String> {
        match self {
            Param::Null => Some(String::new()),
            Param::Bool(b) => Some(if *b { "1".to_owned() } else { String::new() }),
            Param::Num(n) => Some(php_number(n)),
            Param::Str(s) => Some(s.clone()),
            Param::Array(_) => None,
        }
    }

    /// PHP's `(int)` cast, as far as Bitrix24 uses it (`AUTH_USER_ID`).
    pub(crate) fn php_int(&self) -> i64 {
        match self {
            Param::Null | Param::Array(_) => 0,
            Param::Bool(b) => i64::from(*b),
            Param::Num(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
            Param::Str(s) => {
                let t = s.trim_start();
                let end = t
                    .char_indices()
                    .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
                    .map_or(t.len(), |(i, _)| i);
                t[..end].parse().unwrap_or(0)
            }
        }
    }

    /// The JSON `json_encode` would produce (lists as arrays, empty arrays as `[]`).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Param::Null => serde_json::Value::Null,
            Param::Bool(b) => serde_json::Value::Bool(*b),
            Param::Num(n) => serde_json::Value::Number(n.clone()),
            Param::Str(s) => serde_json::Value::String(s.clone()),
            Param::Array(a) if is_list(a) => {
                serde_json::Value::Array(a.values().map(Param::to_json).collect())
            }
            Param::Array(a) => {
                serde_json::Value::Object(a.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// The tree `json_decode($json, true)` would give.
    pub(crate) fn from_json(json: &serde_json::Value) -> Param {
        match json {
            serde_json::Value::Null => Param::Null,
            serde_json::Value::Bool(b) => Param::Bool(*b),
            serde_json::Value::Number(n) => Param::Num(n.clone()),
            serde_json::Value::String(s) => Param::Str(s.clone()),
            serde_json::Value::Array(items) => Param::list(items.iter().map(Param::from_json)),
            serde_json::Value::Object(map) => {
                Param::map(map.iter().map(|(k, v)| (k.clone(), Param::from_json(v))))
            }
        }
    }

    /// The tree `parse_str` gives for a decoded form value.
    pub(crate) fn from_form(value: &phpform::Value) -> Param {
        match value {
            phpform::Value::Str(s) => Param::Str(s.clone()),
            phpform::Value::Array(a) => Param::Array(from_form_array(a)),
        }
    }

    /// The form value `http_build_query` would write: `null` is skipped, booleans are `1`/`0`.
    pub(crate) fn to_form(&self) -> Option<phpform::Value> {
        Some(match self {
            Param::Null => return None,
            Param::Bool(b) => phpform::Value::Str(if *b { "1" } else { "0" }.to_owned()),
            Param::Num(n) => phpform::Value::Str(php_number(n)),
            Param::Str(s) => phpform::Value::Str(s.clone()),
            Param::Array(a) => phpform::Value::Array(
                a.iter().filter_map(|(k, v)| Some((k.clone(), v.to_form()?))).collect(),
            ),
        })
    }
}

/// A whole decoded form as a parameter array.
pub(crate) fn from_form_array(form: &phpform::Array) -> Array {
    form.iter().map(|(k, v)| (k.clone(), Param::from_form(v))).collect()
}

/// A whole parameter array as a form for `phpform::encode`.
pub(crate) fn to_form_array(array: &Array) -> phpform::Array {
    array.iter().filter_map(|(k, v)| Some((k.clone(), v.to_form()?))).collect()
}

/// `array_change_key_case($array, CASE_UPPER)`: a later key that collides overwrites the value
/// but keeps the first key's position, as PHP does.
pub(crate) fn upper_keys(array: &Array) -> Array {
    let mut out = Array::with_capacity(array.len());
    for (k, v) in array {
        out.insert(k.to_uppercase(), v.clone());
    }
    out
}

/// Looks a key up case-insensitively (the first match in order).
pub(crate) fn get_ci<'a>(array: &'a Array, key: &str) -> Option<&'a Param> {
    array.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn is_list(array: &Array) -> bool {
    array.keys().enumerate().all(|(i, k)| *k == i.to_string())
}

/// A JSON number as PHP prints it: integers in decimal, floats shortest-round-trip with PHP's
/// exponent style (`1.0E+25`), and an integral float without `.0`.
pub(crate) fn php_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    n.as_f64().map_or_else(|| n.to_string(), php_float)
}

/// PHP 8's float-to-string (`serialize_precision = -1`): fixed notation while the decimal
/// exponent is in `-5 < e < 17`, else `d.dddE±x`.
pub(crate) fn php_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NAN".into()
        } else if f > 0.0 {
            "INF".into()
        } else {
            "-INF".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-5 < exp) && (exp < 17) {
        let s = format!("{f}");
        return s;
    }
    let mantissa =
        if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}E{sign}{}", exp.abs())
}

impl Serialize for Param {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Param::Null => serializer.serialize_unit(),
            Param::Bool(b) => serializer.serialize_bool(*b),
            Param::Num(n) => n.serialize(serializer),
            Param::Str(s) => serializer.serialize_str(s),
            Param::Array(a) if is_list(a) => {
                let mut seq = serializer.serialize_seq(Some(a.len()))?;
                for v in a.values() {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Param::Array(a) => {
                let mut map = serializer.serialize_map(Some(a.len()))?;
                for (k, v) in a {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamVisitor)
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Param, E> {
        Ok(Param::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Param, E> {
        Ok(Param::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Param, D::Error> {
        Param::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Param, E> {
        Ok(Param::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Param, E> {
        Ok(Param::Num(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Param, E> {
        Ok(Param::Num(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Param, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Param::Null, Param::Num))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
        Ok(Param::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Param, E> {
        Ok(Param::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Param, A::Error> {
        let mut out = Array::new();
        while let Some(v) = seq.next_element::<Param>()? {
            out.insert(out.len().to_string(), v);
        }
        Ok(Param::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Param, A::Error> {
        let mut out = Array::new();
        while let Some((k, v)) = map.next_entry::<String, Param>()? {
            out.insert(k, v);
        }
        Ok(Param::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_key_order_and_lists() {
        let p: Param = serde_json::from_str(r#"{"b":1,"a":[true,null],"c":{}}"#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"b":1,"a":[true,null],"c":[]}"#);
    }

    #[test]
    fn floats_print_like_php() {
        for (float, printed) in [
            (1500.5, "1500.5"),
            (1.0, "1"),
            (1e25, "1.0E+25"),
            (0.0001, "0.0001"),
            (0.00001, "1.0E-5"),
            (1e16, "10000000000000000"),
        ] {
            assert_eq!(php_float(float), printed, "{float:e}");
        }
    }

    #[test]
    fn php_empty_and_int_casts() {
        assert!(Param::str("0").is_empty());
        assert!(!Param::str("false").is_empty());
        assert_eq!(Param::str(" 12abc").php_int(), 12);
        assert_eq!(Param::str("abc").php_int(), 0);
    }
}
