//! The value tree PHP builds from a form: strings at the leaves, ordered maps (PHP arrays) inside.

use indexmap::IndexMap;

/// A PHP array: an ordered map. Integer keys are kept in their decimal form (`"0"`, `"1"`, …),
/// which is how PHP itself treats a numeric string key.
pub type Array = IndexMap<String, Value>;

/// One form value: every scalar arrives as a string (docs/protocol.md §2.3), nesting as an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Array(Array),
}

impl Value {
    /// The string, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Array(_) => None,
        }
    }

    /// The array, if this is one.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            Value::Str(_) => None,
        }
    }

    /// The elements in order, if this is a list: an array whose keys are exactly `0, 1, …, n-1`
    /// in that order (what PHP's `array_is_list` and `json_encode` call a list).
    pub fn as_list(&self) -> Option<Vec<&Value>> {
        let array = self.as_array()?;
        is_list(array).then(|| array.values().collect())
    }

    /// The JSON that PHP's `json_encode` makes of this value: lists become JSON arrays, other
    /// arrays objects, and an empty array `[]` (PHP cannot tell an empty map from an empty list,
    /// docs/protocol.md §5.2).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => array_to_json(a),
        }
    }

    /// The form value PHP's `http_build_query` makes of a JSON value: `null` is skipped (`None`),
    /// `true`/`false` become `1`/`0`, numbers their decimal text, JSON arrays get keys `0..n`.
    pub fn from_json(json: &serde_json::Value) -> Option<Value> {
        Some(match json {
            serde_json::Value::Null => return None,
            serde_json::Value::Bool(b) => Value::Str(if *b { "1" } else { "0" }.to_owned()),
            serde_json::Value::Number(n) => Value::Str(n.to_string()),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| Some((i.to_string(), Value::from_json(item)?)))
                    .collect(),
            ),
            serde_json::Value::Object(map) => Value::Array(
                map.iter().filter_map(|(k, v)| Some((k.clone(), Value::from_json(v)?))).collect(),
            ),
        })
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<Array> for Value {
    fn from(a: Array) -> Self {
        Value::Array(a)
    }
}

/// The JSON object or list PHP's `json_encode` makes of a whole decoded form.
pub fn array_to_json(array: &Array) -> serde_json::Value {
    if is_list(array) {
        serde_json::Value::Array(array.values().map(Value::to_json).collect())
    } else {
        serde_json::Value::Object(array.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }
}

fn is_list(array: &Array) -> bool {
    array.keys().enumerate().all(|(i, k)| k.parse::<usize>() == Ok(i) && *k == i.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_are_sequential_integer_keys_only() {
        let list: Array =
            [("0".into(), "a".into()), ("1".into(), "b".into())].into_iter().collect();
        assert_eq!(Value::Array(list.clone()).as_list().map(|l| l.len()), Some(2));
        let gap: Array = [("0".into(), "a".into()), ("2".into(), "b".into())].into_iter().collect();
        assert!(Value::Array(gap).as_list().is_none());
        let padded: Array = [("00".into(), "a".into())].into_iter().collect();
        assert!(Value::Array(padded).as_list().is_none());
        assert_eq!(Value::Array(list).to_json(), json!(["a", "b"]));
    }

    #[test]
    fn empty_array_serializes_as_php_does() {
        assert_eq!(Value::Array(Array::new()).to_json(), json!([]));
    }

    #[test]
    fn from_json_follows_http_build_query() {
        let v = Value::from_json(&json!({"a": true, "b": false, "c": null, "d": [1.5, "x"]}));
        let expected = json!({"a": "1", "b": "0", "d": ["1.5", "x"]});
        assert_eq!(v.map(|v| v.to_json()), Some(expected));
    }
}
