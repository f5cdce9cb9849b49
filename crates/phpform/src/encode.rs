//! `http_build_query` as PHP writes it (RFC 1738 flavour, the default Bitrix24 uses).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::{Array, Value};

/// What PHP's `urlencode` leaves alone: letters, digits and `-_.`; a space becomes `+`.
const URLENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Encodes a form as PHP's `http_build_query($data)` does: keys in insertion order, nested keys
/// as `outer%5Binner%5D`, an empty array dropped entirely (docs/protocol.md §2.4), values
/// through `urlencode` (space as `+`, everything but `[A-Za-z0-9-_.]` as upper-case `%XX`).
pub fn encode(form: &Array) -> String {
    let mut out = String::new();
    for (key, value) in form {
        push_pairs(&mut out, &urlencode(key), value);
    }
    out
}

fn push_pairs(out: &mut String, encoded_key: &str, value: &Value) {
    match value {
        Value::Str(s) => {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(encoded_key);
            out.push('=');
            out.push_str(&urlencode(s));
        }
        Value::Array(items) => {
            for (key, item) in items {
                let nested = format!("{encoded_key}%5B{}%5D", urlencode(key));
                push_pairs(out, &nested, item);
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    utf8_percent_encode(s, URLENCODE).to_string().replace("%20", "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, Value)]) -> Array {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn encodes_like_php_urlencode() {
        let f = form(&[("s", "a b&c=d~*ü-_.".into())]);
        assert_eq!(encode(&f), "s=a+b%26c%3Dd%7E%2A%C3%BC-_.");
    }

    #[test]
    fn nests_with_encoded_brackets_and_drops_empty_arrays() {
        let inner = form(&[("0", "x".into()), ("1", "y".into())]);
        let f = form(&[
            ("a", Value::Array(inner)),
            ("empty", Value::Array(Array::new())),
            ("b", "".into()),
        ]);
        assert_eq!(encode(&f), "a%5B0%5D=x&a%5B1%5D=y&b=");
    }
}
