//! `parse_str` as PHP reads a form body, with limits and errors instead of PHP's silent repairs.

use indexmap::IndexMap;

use crate::{Array, Value, quoted};

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

/// Why a body could not be decoded. `field` is the key as far as it could be read; the messages
/// show it through [`quoted`](crate::quoted), cut short and escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("form body is {actual} bytes, over the limit of {limit}")]
    TooLarge { limit: usize, actual: usize },
    #[error("form body has more than {limit} fields")]
    TooManyFields { limit: usize },
    #[error("field `{}`: malformed percent-encoding at byte {offset} of its {part}", quoted(field))]
    BadPercentEncoding { field: String, part: Part, offset: usize },
    #[error("field `{}`: its {part} is not valid UTF-8", quoted(field))]
    InvalidUtf8 { field: String, part: Part },
    #[error("field `{}` has an empty name before its brackets", quoted(field))]
    EmptyName { field: String },
    #[error("field `{}`: `[` is never closed by `]`", quoted(field))]
    UnclosedBracket { field: String },
    #[error("field `{}`: nested deeper than {limit} levels", quoted(field))]
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
    let mut form = Node::default();
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
    Ok(form.into_array())
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

/// The tree `decode` builds: PHP's arrays with their `nNextFreeElement`, so that `[]` finds its
/// key in constant time instead of scanning the array's keys on every append (which made
/// `k[]=1&k[]=1&…` quadratic).
#[derive(Default)]
struct Node {
    entries: IndexMap<String, Slot>,
    /// PHP's `nNextFreeElement`: one past the largest non-negative integer key, else 0.
    next_free: u64,
    /// An integer key of `i64::MAX` was stored: PHP cannot append to this array any more.
    full: bool,
}

enum Slot {
    Str(String),
    Node(Node),
}

impl Node {
    /// The key for one path segment: itself, or for `[]` the next free integer key. `None`
    /// when PHP's append fails (the array already holds `PHP_INT_MAX`): PHP drops the field.
    fn resolve(&self, segment: Option<&str>) -> Option<String> {
        match segment {
            Some(key) => Some(key.to_owned()),
            None => (!self.full).then(|| self.next_free.to_string()),
        }
    }

    /// Inserts or overwrites `key`, keeping `next_free` as PHP's hash table does.
    fn entry(&mut self, key: String) -> indexmap::map::Entry<'_, String, Slot> {
        if let Some(n) = integer_key(&key) {
            if n == i64::MAX as u64 {
                self.full = true;
            }
            if n >= self.next_free {
                self.next_free = n + 1;
            }
        }
        self.entries.entry(key)
    }

    fn into_array(self) -> Array {
        self.entries
            .into_iter()
            .map(|(key, slot)| {
                let value = match slot {
                    Slot::Str(s) => Value::Str(s),
                    Slot::Node(node) => Value::Array(node.into_array()),
                };
                (key, value)
            })
            .collect()
    }
}

/// A key PHP stores as an integer and counts for `[]`: canonical decimal (`0`, `17`, never
/// `017` or `+1`) from 0 to `PHP_INT_MAX`.
fn integer_key(key: &str) -> Option<u64> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    canonical.then(|| key.parse::<u64>().ok()).flatten().filter(|&n| n <= i64::MAX as u64)
}

fn insert(form: &mut Node, path: &[Option<&str>], value: String) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = form;
    for segment in parents {
        // Most fields walk through arrays that exist already: find those without allocating.
        let existing = segment.and_then(|key| node.entries.get_index_of(key));
        let slot = match existing {
            Some(index) => &mut node.entries[index],
            None => {
                let Some(key) = node.resolve(*segment) else { return };
                node.entry(key).or_insert_with(|| Slot::Node(Node::default()))
            }
        };
        if !matches!(slot, Slot::Node(_)) {
            // PHP replaces a scalar by an array when a later key nests under it.
            *slot = Slot::Node(Node::default());
        }
        let Slot::Node(inner) = slot else { unreachable!("made an array just above") };
        node = inner;
    }
    let Some(key) = node.resolve(*last) else { return };
    match node.entry(key) {
        indexmap::map::Entry::Occupied(mut slot) => *slot.get_mut() = Slot::Str(value),
        indexmap::map::Entry::Vacant(slot) => {
            slot.insert(Slot::Str(value));
        }
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

    /// `k[]=1` repeated: each append finds its key in constant time (the decode is linear;
    /// BENCHMARKS.md has its timing), and the keys run `0..n` in order.
    #[test]
    fn many_appends_make_one_list_in_order() {
        for n in [10_000, 100_000] {
            let body = "k[]=1&".repeat(n);
            let limits = Limits { max_body_bytes: body.len(), max_depth: 64, max_fields: n };
            let form = decode(body.as_bytes(), &limits).unwrap();
            assert_eq!(form.len(), 1);
            let list = form["k"].as_list().expect("keys 0..n in order");
            assert_eq!(list.len(), n);
            assert!(list.iter().all(|v| v.as_str() == Some("1")));
            let nested = "a[b][]=x&".repeat(n);
            let limits = Limits { max_body_bytes: nested.len(), ..limits };
            let form = decode(nested.as_bytes(), &limits).unwrap();
            let b = form["a"].as_array().unwrap()["b"].as_list().unwrap();
            assert_eq!(b.len(), n);
        }
    }

    #[test]
    fn appends_follow_phps_next_free_element() {
        assert_eq!(json_of("a[3]=x&a[1]=y&a[]=z"), json!({"a": {"3": "x", "1": "y", "4": "z"}}));
        assert_eq!(json_of("a[x]=1&a[07]=2&a[]=3"), json!({"a": {"x": "1", "07": "2", "0": "3"}}));
        assert_eq!(json_of("a[-3]=1&a[]=2"), json!({"a": {"-3": "1", "0": "2"}}));
        // A scalar replaced by an array starts counting again.
        assert_eq!(json_of("a[5]=1&a=s&a[]=2"), json!({"a": ["2"]}));
        // Past PHP_INT_MAX a key is a string; at it, PHP's append fails and drops the field.
        assert_eq!(
            json_of("a[9223372036854775808]=1&a[]=2"),
            json!({"a": {"9223372036854775808": "1", "0": "2"}})
        );
        assert_eq!(
            json_of("a[9223372036854775807]=1&a[]=2&a[][x]=3"),
            json!({"a": {"9223372036854775807": "1"}})
        );
    }

    #[test]
    fn errors_show_the_field_cut_short_and_escaped() {
        // A newline and an ANSI "clear screen" in the name, then 100 KB more of it.
        let body = format!("x%0A%1B[2J{}%zz=1", "k".repeat(100 * 1024));
        let message = decode(body.as_bytes(), &Limits::default()).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(!message.contains('\n') && !message.contains('\u{1b}'), "{message}");
        assert!(message.contains("x%0A%1B[2J") && message.contains('…'), "{message}");
        let body = "y\n\u{1b}M=1&bad=%FF".to_string();
        let message = decode(body.as_bytes(), &Limits::default()).unwrap_err().to_string();
        assert_eq!(message, "field `bad`: its value is not valid UTF-8");
        let message = decode("z\n\u{1b}[1A[=1".as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(message.to_string(), "field `z\\n\\u{1b}[1A[`: `[` is never closed by `]`");
    }
}
