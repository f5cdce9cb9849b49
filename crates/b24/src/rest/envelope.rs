//! Response envelopes (protocol doc §5.2, §5.3) and PHP's `[]`-for-an-empty-map quirk.
//!
//! A success is `{"result": …, "total", "next", "time": {…}}`; an error is
//! `{"error", "error_description", …}`. PHP's `json_encode` writes an empty associative array as
//! `[]`, so every place that expects an object also takes `[]` (see [`php_map`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::client::DomainMove;
use super::error::ApiError;

/// A successful answer. `total` and `next` appear on list methods only, `next` only when more
/// pages exist (§5.2; pages have 50 items, resend with `start = next`).
#[derive(Debug, Clone, PartialEq)]
pub struct Response<T> {
    /// The `result` value.
    pub result: T,
    /// `total`: how many items a list method has in all.
    pub total: Option<u64>,
    /// `next`: the `start` of the next page.
    pub next: Option<u64>,
    /// `time`: the portal's timing, including the `operating` budget on cloud.
    pub time: Option<Time>,
    /// Set when the portal answered 302 because it was renamed, and this call was re-sent to the
    /// new address (§5.1). The client already uses the new address for later calls.
    pub moved: Option<DomainMove>,
}

impl<T> Response<T> {
    /// The same envelope with another `result`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            result: f(self.result),
            total: self.total,
            next: self.next,
            time: self.time,
            moved: self.moved,
        }
    }
}

impl Response<Value> {
    /// Decodes `result` into a typed value.
    pub fn decode<T: DeserializeOwned>(self, method: &str) -> Result<Response<T>, super::Error> {
        let Response { result, total, next, time, moved } = self;
        let result = serde_json::from_value(result)
            .map_err(|source| super::Error::Decode { method: method.to_owned(), source })?;
        Ok(Response { result, total, next, time, moved })
    }
}

/// The `time` object of a success envelope (§5.2). Every field is optional: old portals and
/// batch sub-results send fewer of them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Time {
    pub start: Option<f64>,
    pub finish: Option<f64>,
    pub duration: Option<f64>,
    pub processing: Option<f64>,
    pub date_start: Option<String>,
    pub date_finish: Option<String>,
    /// Seconds of method time used in the `operating` window (cloud only, §5.6).
    pub operating: Option<f64>,
    /// Unix time when the oldest `operating` bucket drops (cloud only, §5.6).
    pub operating_reset_at: Option<f64>,
}

/// What a portal answer body turned out to be.
#[derive(Debug)]
pub(crate) enum Envelope {
    Success(Box<Response<Value>>),
    Error(ApiError),
}

/// Reads an answer body. `None` if the body is not a JSON object with `result` or `error`.
pub(crate) fn parse(body: &[u8]) -> Result<Option<Envelope>, serde_json::Error> {
    let value: Value = serde_json::from_slice(body)?;
    let Value::Object(object) = value else { return Ok(None) };
    Ok(from_object(object))
}

/// Reads an envelope out of a JSON object: an `error` key wins over `result`.
pub(crate) fn from_object(mut object: Map<String, Value>) -> Option<Envelope> {
    if let Some(error) = ApiError::from_object(&object) {
        return Some(Envelope::Error(error));
    }
    let result = object.remove("result")?;
    Some(Envelope::Success(Box::new(Response {
        result,
        total: object.get("total").and_then(as_u64),
        next: object.get("next").and_then(as_u64),
        time: object.remove("time").and_then(time),
        moved: None,
    })))
}

/// A `time` value, tolerating `[]` and junk (timing is informative, never worth failing a call).
pub(crate) fn time(value: Value) -> Option<Time> {
    match value {
        Value::Object(_) => serde_json::from_value(value).ok(),
        _ => None,
    }
}

/// A count that PHP may send as a number or a numeric string.
pub(crate) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Deserializes a PHP array that is meant as a map: a JSON object as is, an empty `[]` as an
/// empty map, and a non-empty list as a map keyed `"0"`, `"1"`, … (what PHP's `json_encode`
/// writes for a map whose keys happen to be `0..n`). For `#[serde(deserialize_with)]`.
pub fn php_map<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum PhpArray<V> {
        Map(BTreeMap<String, V>),
        List(Vec<V>),
    }
    Ok(match Option::<PhpArray<V>>::deserialize(deserializer)? {
        Some(PhpArray::Map(map)) => map,
        Some(PhpArray::List(list)) => {
            list.into_iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect()
        }
        None => BTreeMap::new(),
    })
}

/// Deserializes an object-shaped `T`, taking PHP's `[]` (and `null`) as `T::default()`.
/// For `#[serde(deserialize_with)]` on struct-typed fields.
pub fn php_object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = Value::deserialize(deserializer)?;
    match value {
        Value::Null => Ok(T::default()),
        Value::Array(ref items) if items.is_empty() => Ok(T::default()),
        other => serde_json::from_value(other).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn success(body: Value) -> Response<Value> {
        match parse(body.to_string().as_bytes()) {
            Ok(Some(Envelope::Success(r))) => *r,
            other => panic!("not a success: {other:?}"),
        }
    }

    fn error(body: Value) -> ApiError {
        match parse(body.to_string().as_bytes()) {
            Ok(Some(Envelope::Error(e))) => e,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn success_envelope_exposes_result_total_next_and_time() {
        let r = success(json!({
            "result": [1, 2], "total": 120, "next": 50,
            "time": {"start": 1738148752.692647, "finish": 1738148752.749058, "duration": 0.0564,
                     "processing": 0.0187, "date_start": "2025-01-29T14:05:52+01:00",
                     "date_finish": "2025-01-29T14:05:52+01:00",
                     "operating_reset_at": 1738149352, "operating": 0}
        }));
        assert_eq!(r.result, json!([1, 2]));
        assert_eq!((r.total, r.next), (Some(120), Some(50)));
        let time = r.time.expect("time");
        assert_eq!(time.operating_reset_at, Some(1738149352.0));
        assert_eq!(time.operating, Some(0.0));
        assert_eq!(time.date_start.as_deref(), Some("2025-01-29T14:05:52+01:00"));
    }

    #[test]
    fn success_without_list_fields_or_time_is_fine() {
        let r = success(json!({"result": true}));
        assert_eq!((r.result, r.total, r.next, r.time), (json!(true), None, None, None));
        let r = success(json!({"result": true, "time": []}));
        assert_eq!(r.time, None);
    }

    #[test]
    fn error_envelope_keeps_code_description_and_extra_keys() {
        let e =
            error(json!({"error": "ERROR_ARGUMENT", "error_description": "bad", "argument": "ID"}));
        assert_eq!(e.code, "ERROR_ARGUMENT");
        assert_eq!(e.description, "bad");
        assert_eq!(e.extra.get("argument"), Some(&json!("ID")));
    }

    #[test]
    fn numeric_error_code_becomes_text() {
        let e =
            error(json!({"error": 404, "error_description": "The business process is not found."}));
        assert_eq!(e.code, "404");
        let e = error(json!({"error": "423"}));
        assert_eq!((e.code.as_str(), e.description.as_str()), ("423", ""));
    }

    #[test]
    fn a_body_without_either_key_is_not_an_envelope() {
        assert!(matches!(parse(b"{\"foo\":1}"), Ok(None)));
        assert!(matches!(parse(b"[1]"), Ok(None)));
        assert!(parse(b"<html>").is_err());
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    struct Inner {
        a: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Holder {
        #[serde(default, deserialize_with = "php_map")]
        map: BTreeMap<String, u32>,
        #[serde(default, deserialize_with = "php_object")]
        inner: Inner,
    }

    #[test]
    fn php_empty_array_reads_as_an_empty_map_or_default_object() {
        let h: Holder = serde_json::from_value(json!({"map": [], "inner": []})).unwrap();
        assert_eq!(h, Holder { map: BTreeMap::new(), inner: Inner::default() });
        let h: Holder =
            serde_json::from_value(json!({"map": {"k": 1}, "inner": {"a": 2}})).unwrap();
        assert_eq!(h.map.get("k"), Some(&1));
        assert_eq!(h.inner, Inner { a: Some(2) });
        let h: Holder = serde_json::from_value(json!({})).unwrap();
        assert!(h.map.is_empty());
    }

    #[test]
    fn php_list_with_sequential_keys_reads_as_an_indexed_map() {
        let h: Holder = serde_json::from_value(json!({"map": [7, 8]})).unwrap();
        assert_eq!(h.map.get("0"), Some(&7));
        assert_eq!(h.map.get("1"), Some(&8));
    }

    #[test]
    fn php_map_rejects_scalars() {
        assert!(serde_json::from_value::<Holder>(json!({"map": 3})).is_err());
    }
}
