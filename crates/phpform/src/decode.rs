//! `parse_str` as PHP reads a form body, with limits and errors instead of PHP's silent repairs.

use crate::{Array, Value};

/// Bounds on what one body may hold; anything past them is an error, never a truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest body accepted, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// The deepest bracket nesting accepted (default 64, PHP's `max_input_nesting_level`).
    pub max_depth: usize,
    /// The most `name=value` pairs accepted (default 10,000).
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 1024 * 1024, max_depth: 64, max_fields: 10_000 }
    }
}

/// Why a body could not be decoded. `field` is the key as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("form body is {actual} bytes, over the limit of {limit}")]
    TooLarge { limit: usize, actual: usize },
    #[error("form body has more than {limit} fields")]
    TooManyFields { limit: usize },
    #[error("field `{field}`: malformed percent-encoding at byte {offset} of its {part}")]
    BadPercentEncoding { field: String, part: Part, offset: usize },
    #[error("field `{field}`: its {part} is not valid UTF-8")]
    InvalidUtf8 { field: String, part: Part },
    #[error("field `{field}` has an empty name before its brackets")]
    EmptyName { field: String },
    #[error("field `{field}`: `[` is never closed by `]`")]
    UnclosedBracket { field: String },
    #[error("field `{field}`: nested deeper than {limit} levels")]
    TooDeep { field: String, limit: usize },
}

/// Which half of a `name=value` pair an error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Name,
    Value,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Name => "name",
            Part::Value => "value",
        })
    }
}

/// Decodes an `application/x-www-form-urlencoded` body as PHP's `parse_str` does.
///
/// Bracket keys build nested arrays (`a[b][c]`, `a[0]`, `a[]` appends), with the brackets
/// literal or percent-encoded in either case (`%5B`, `%5b`); `+` is a space; a later duplicate
/// key overwrites an earlier one in place; text after a key's last `]` is ignored, as in PHP.
pub fn decode(body: &[u8], limits: &Limits) -> Result<Array, DecodeError> {
    if body.len() > limits.max_body_bytes {
        return Err(DecodeError::TooLarge { limit: limits.max_body_bytes, actual: body.len() });
    }
    let mut form = Array::new();
    let pairs = body.split(|&b| b == b'&').filter(|pair| !pair.is_empty());
    for (count, pair) in pairs.enumerate() {
        if count == limits.max_fields {
            return Err(DecodeError::TooManyFields { limit: limits.max_fields });
        }
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        let lossy_name = || String::from_utf8_lossy(raw_name).into_owned();
        let name = percent_decode(raw_name)
            .map_err(|offset| DecodeError::BadPercentEncoding {
                field: lossy_name(),
                part: Part::Name,
                offset,
            })
            .and_then(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|_| DecodeError::InvalidUtf8 { field: lossy_name(), part: Part::Name })
            })?;
        let value = percent_decode(raw_value)
            .map_err(|offset| DecodeError::BadPercentEncoding {
                field: name.clone(),
                part: Part::Value,
                offset,
            })
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 {
                    field: name.clone(),
                    part: Part::Value,
                })
            })?;
        let path = split_key(&name, limits.max_depth)?;
        insert(&mut form, &path, value);
    }
    Ok(form)
}

/// Undoes `urlencode`: `+` is a space, `%XX` a byte. Returns the offset of a bad `%` sequence.
fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(i)?;
                let high = hex_digit(hex[0]).ok_or(i)?;
                let low = hex_digit(hex[1]).ok_or(i)?;
                out.push(high << 4 | low);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits `base[a][][b]` into `["base", Some("a"), None, Some("b")]`; `None` means "append".
fn split_key(name: &str, max_depth: usize) -> Result<Vec<Option<&str>>, DecodeError> {
    let base_end = name.find('[').unwrap_or(name.len());
    let base = &name[..base_end];
    if base.is_empty() {
        return Err(DecodeError::EmptyName { field: name.to_owned() });
    }
    let mut path = vec![Some(base)];
    let mut rest = &name[base_end..];
    while let Some(after_open) = rest.strip_prefix('[') {
        let close = after_open
            .find(']')
            .ok_or_else(|| DecodeError::UnclosedBracket { field: name.to_owned() })?;
        if path.len() > max_depth {
            return Err(DecodeError::TooDeep { field: name.to_owned(), limit: max_depth });
        }
        let index = &after_open[..close];
        path.push((!index.is_empty()).then_some(index));
        rest = &after_open[close + 1..];
    }
    Ok(path)
}

fn insert(form: &mut Array, path: &[Option<&str>], value: String) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut array = form;
    for segment in parents {
        let key = resolve(array, *segment);
        let slot = array.entry(key).or_insert_with(|| Value::Array(Array::new()));
        if !matches!(slot, Value::Array(_)) {
            // PHP replaces a scalar by an array when a later key nests under it.
            *slot = Value::Array(Array::new());
        }
        let Value::Array(inner) = slot else { unreachable!("made an array just above") };
        array = inner;
    }
    let key = resolve(array, *last);
    array.insert(key, Value::Str(value));
}

/// The key for one path segment: itself, or for `[]` the next free integer key, as PHP's
/// `nNextFreeElement` (one past the largest non-negative integer key, else 0).
fn resolve(array: &Array, segment: Option<&str>) -> String {
    match segment {
        Some(key) => key.to_owned(),
        None => array
            .keys()
            .filter_map(|k| k.parse::<u64>().ok().filter(|n| n.to_string() == *k))
            .max()
            .map_or(0, |max| max + 1)
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(body: &str) -> serde_json::Value {
        crate::value::array_to_json(&decode(body.as_bytes(), &Limits::default()).unwrap())
    }

    #[test]
    fn brackets_in_any_spelling_nest() {
        let expected = json!({"a": {"b": {"c": "1"}}});
        assert_eq!(json_of("a[b][c]=1"), expected);
        assert_eq!(json_of("a%5Bb%5D%5Bc%5D=1"), expected);
        assert_eq!(json_of("a%5bb%5d%5bc%5d=1"), expected);
    }

    #[test]
    fn empty_brackets_append_after_the_largest_integer_key() {
        assert_eq!(json_of("a[]=x&a[]=y"), json!({"a": ["x", "y"]}));
        assert_eq!(json_of("a[5]=x&a[]=y"), json!({"a": {"5": "x", "6": "y"}}));
    }

    #[test]
    fn plus_is_space_and_missing_equals_is_empty() {
        assert_eq!(json_of("a=b+c%2Bd&flag&&"), json!({"a": "b c+d", "flag": ""}));
    }

    #[test]
    fn later_duplicates_overwrite_in_place() {
        assert_eq!(json_of("a=1&b=2&a=3"), json!({"a": "3", "b": "2"}));
        assert_eq!(json_of("a=1&a[x]=2"), json!({"a": {"x": "2"}}));
    }

    #[test]
    fn text_after_the_last_bracket_is_ignored_as_in_php() {
        assert_eq!(json_of("a[b]c=1"), json!({"a": {"b": "1"}}));
    }

    #[test]
    fn malformed_input_names_the_field() {
        let limits = Limits::default();
        let err = decode(b"ok=1&bad%zz=1", &limits).unwrap_err();
        assert!(
            matches!(err, DecodeError::BadPercentEncoding { ref field, part: Part::Name, offset: 3 } if field == "bad%zz")
        );
        let err = decode(b"name=abc%4", &limits).unwrap_err();
        assert!(
            matches!(err, DecodeError::BadPercentEncoding { ref field, part: Part::Value, offset: 3 } if field == "name")
        );
        let err = decode(b"auth[domain]=%FF%FE", &limits).unwrap_err();
        assert_eq!(err.to_string(), "field `auth[domain]`: its value is not valid UTF-8");
        let err = decode(b"a[b=1", &limits).unwrap_err();
        assert_eq!(err, DecodeError::UnclosedBracket { field: "a[b".into() });
        let err = decode(b"=orphan", &limits).unwrap_err();
        assert_eq!(err, DecodeError::EmptyName { field: String::new() });
    }

    #[test]
    fn limits_are_errors_not_truncations() {
        let limits = Limits { max_body_bytes: 8, max_depth: 2, max_fields: 2 };
        let roomy = Limits { max_body_bytes: 64, ..limits };
        assert_eq!(
            decode(b"123456789", &limits).unwrap_err(),
            DecodeError::TooLarge { limit: 8, actual: 9 }
        );
        assert_eq!(
            decode(b"a=&b=&c=", &limits).unwrap_err(),
            DecodeError::TooManyFields { limit: 2 }
        );
        assert!(decode(b"a[1][2]=", &roomy).is_ok());
        assert!(matches!(
            decode(b"a[1][2][3]", &roomy),
            Err(DecodeError::TooDeep { limit: 2, .. })
        ));
    }
}
