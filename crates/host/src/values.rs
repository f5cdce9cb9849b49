//! Property values between Bitrix24's wire strings and typed JSON, by declared type.
//!
//! Inbound, a call carries every value as a string or a list of strings (protocol §2.4); the
//! connector gets typed JSON (`int` → number, `bool` → true/false, `Multiple` → array).
//! Outbound, return values become what the portal stores (§3.1): `Y`/`N` for bool, `user_N` for
//! users, arrays for multiple values. The portal itself validates nothing (§3.1), so this is
//! where a wrong type is caught, with a message naming what was expected.
//!
//! Every declared type is checked on the way in. Dates, users and files stay the strings the
//! portal sent (connectors see what the portal's users see), but only in the shapes §2.4 says
//! the portal sends; where that section infers rather than quotes its source, both readings
//! pass (see [`is_date`], [`is_user`], [`is_file`]).

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
        PropertyType::Date if !is_date(s) => Err(format!(
            "`{}` is not a date (expected the portal's site format such as 05.12.2026 or \
             12/05/2026, or 2026-12-05)",
            shown(s)
        )),
        PropertyType::Datetime if !is_datetime(s) => Err(format!(
            "`{}` is not a date and time (expected the portal's site format such as \
             05.12.2026 14:30:00 or 12/05/2026 02:30:00 pm, or ISO 8601 such as \
             2026-12-05T14:30:00+03:00)",
            shown(s)
        )),
        PropertyType::User if !is_user(s) => Err(format!(
            "`{}` is not a user (expected user_N, a user id, author, or a group_… code)",
            shown(s)
        )),
        PropertyType::File if !is_file(s) => {
            Err(format!("`{}` is not a file (expected a file id or its URL)", shown(s)))
        }
        // Strings, texts, checked dates, users and files, and document-specific types pass
        // unchanged.
        _ => Ok(Value::String(s.to_owned())),
    }
}

/// A value as a message quotes it: at most 64 characters, control characters escaped, so a
/// call cannot forge or flood a log line through its problem.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// A calendar date as a portal sends one (§2.4: `(string)$date`, the portal's site format, not
/// ISO-8601 — but ISO is what the same object gives in a REST context, and the section is
/// inferred, so both pass): `DD.MM.YYYY`, `MM/DD/YYYY` or `DD/MM/YYYY` (either reading), and
/// `YYYY-MM-DD`. The day must exist in its month (29.02 only in leap years).
pub fn is_date(s: &str) -> bool {
    let bytes = s.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = bytes.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if bytes.len() != 10 {
        return false;
    }
    match (bytes[2], bytes[4], bytes[5], bytes[7]) {
        (b'.', _, b'.', _) | (b'/', _, b'/', _) => {
            let (Some(first), Some(second), Some(year)) =
                (number(0..2), number(3..5), number(6..10))
            else {
                return false;
            };
            if bytes[2] == b'.' {
                valid_date(year, second, first)
            } else {
                valid_date(year, first, second) || valid_date(year, second, first)
            }
        }
        (_, b'-', _, b'-') => match (number(0..4), number(5..7), number(8..10)) {
            (Some(year), Some(month), Some(day)) => valid_date(year, month, day),
            _ => false,
        },
        _ => false,
    }
}

fn valid_date(year: u32, month: u32, day: u32) -> bool {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days).contains(&day)
}

/// A date and time as a portal sends one: a date ([`is_date`]) alone (a datetime field may hold
/// a plain date, and a plain string passes unchanged, §2.4), or followed by a space and
/// `HH:MM[:SS]` (24-hour) or `hh:MM[:SS] am|pm`; or ISO 8601,
/// `YYYY-MM-DDTHH:MM[:SS[.fraction]]` with an optional `Z` or `±HH:MM`.
pub fn is_datetime(s: &str) -> bool {
    if let Some((date, time)) = s.split_once('T') {
        return is_date(date) && date.as_bytes().get(4) == Some(&b'-') && is_iso_time(time);
    }
    match s.split_once(' ') {
        None => is_date(s),
        Some((date, time)) => is_date(date) && is_site_time(time),
    }
}

/// `HH:MM[:SS]` in 24 hours, or `hh:MM[:SS] am|pm` (either case).
fn is_site_time(time: &str) -> bool {
    let (clock, twelve_hour) = match time.rsplit_once(' ') {
        Some((clock, half))
            if half.eq_ignore_ascii_case("am") || half.eq_ignore_ascii_case("pm") =>
        {
            (clock, true)
        }
        Some(_) => return false,
        None => (time, false),
    };
    match clock_parts(clock) {
        Some((hour, _, _)) if twelve_hour => (1..=12).contains(&hour),
        Some(_) => true,
        None => false,
    }
}

/// `HH:MM[:SS[.fraction]]` then nothing, `Z`, or `±HH:MM`.
fn is_iso_time(time: &str) -> bool {
    let (clock, zone) = match time.find(['Z', '+', '-']) {
        Some(at) => time.split_at(at),
        None => (time, ""),
    };
    let clock = match clock.split_once('.') {
        Some((clock, fraction)) => {
            if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            clock
        }
        None => clock,
    };
    let zone_ok = match zone.as_bytes() {
        [] | [b'Z'] => true,
        [b'+' | b'-', rest @ ..] => std::str::from_utf8(rest)
            .ok()
            .and_then(clock_parts)
            .is_some_and(|(_, _, seconds)| seconds.is_none()),
        _ => false,
    };
    zone_ok && clock_parts(clock).is_some()
}

/// `HH:MM` or `HH:MM:SS`, two digits each, within a day: (hours, minutes, seconds).
fn clock_parts(clock: &str) -> Option<(u32, u32, Option<u32>)> {
    let two_digits = |piece: &str, limit: u32| -> Option<u32> {
        if piece.len() != 2 || !piece.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        piece.parse().ok().filter(|n| *n <= limit)
    };
    let pieces: Vec<&str> = clock.split(':').collect();
    match pieces[..] {
        [hours, minutes] => Some((two_digits(hours, 23)?, two_digits(minutes, 59)?, None)),
        [hours, minutes, seconds] => {
            Some((two_digits(hours, 23)?, two_digits(minutes, 59)?, Some(two_digits(seconds, 59)?)))
        }
        _ => None,
    }
}

/// A user as a portal sends one (§2.4): the internal code `user_N`; a plain id `N` (what the
/// `ExternalExtract` setting gives); `author`; or a group code `group_…` (letters, digits and
/// `_`, such as `group_g1` or `group_d12`) when the designer stored one.
pub fn is_user(s: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let code = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match s {
        "author" => true,
        _ if s.starts_with("user_") => digits(&s["user_".len()..]),
        _ if s.starts_with("group_") => code(&s["group_".len()..]),
        _ => digits(s),
    }
}

/// A file as a portal sends one (§2.4): its numeric `b_file` id, or — the section being
/// inferred, and what a REST context gives — its download URL (`http(s)://…`).
pub fn is_file(s: &str) -> bool {
    let id = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let url = url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    id || url
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

    fn check(kind: &PropertyType, value: &str) -> Result<Value, String> {
        from_call(shape(kind, false), &scalar(value))
    }

    #[test]
    fn dates_pass_in_site_formats_and_iso_and_nothing_else() {
        for good in
            ["05.12.2026", "21.08.2026", "12/05/2026", "21/08/2026", "2026-12-05", "29.02.2024"]
        {
            assert_eq!(check(&PropertyType::Date, good), Ok(json!(good)), "{good}");
        }
        for bad in [
            "tomorrow",
            "32.01.2026",
            "29.02.2026",
            "05.13.2026",
            "13/13/2026",
            "2026-02-30",
            "5.12.2026",
            "05.12.26",
            "05.12.2026 14:30:00",
            "2026-12-05T14:30:00",
            "05-12-2026",
        ] {
            let problem = check(&PropertyType::Date, bad).unwrap_err();
            assert!(problem.starts_with(&format!("`{bad}` is not a date (expected")), "{problem}");
        }
    }

    #[test]
    fn datetimes_pass_in_site_formats_iso_and_as_plain_dates() {
        for good in [
            "05.12.2026 14:30:00",
            "05.12.2026 14:30",
            "12/05/2026 02:30:00 pm",
            "12/05/2026 10:00:00 AM",
            "2026-12-05 14:30:00",
            "2026-12-05T14:30:00",
            "2026-12-05T14:30:00+03:00",
            "2026-12-05T14:30:00.250Z",
            "05.12.2026",
        ] {
            assert_eq!(check(&PropertyType::Datetime, good), Ok(json!(good)), "{good}");
        }
        for bad in [
            "now",
            "05.12.2026 24:00:00",
            "05.12.2026 14:60",
            "05.12.2026 13:00:00 pm",
            "05.12.2026 14:30:00 noon",
            "05.12.2026T14:30:00",
            "2026-12-05T14:30:00+3",
            "2026-12-05T14:30:00.Z",
            "31.04.2026 10:00",
            "2026-12-05 14:30:00 extra",
        ] {
            let problem = check(&PropertyType::Datetime, bad).unwrap_err();
            assert!(problem.starts_with(&format!("`{bad}` is not a date and time")), "{problem}");
        }
    }

    #[test]
    fn users_pass_as_codes_ids_author_and_groups() {
        for good in ["user_1", "user_1024", "7", "author", "group_g1", "group_d12", "group_dr3"] {
            assert_eq!(check(&PropertyType::User, good), Ok(json!(good)), "{good}");
        }
        for bad in ["bob", "user_", "user_x", "user_1 ", "group_", "group_a-b", "-1", "1.5"] {
            assert_eq!(
                check(&PropertyType::User, bad),
                Err(format!(
                    "`{bad}` is not a user (expected user_N, a user id, author, or a group_… code)"
                )),
            );
        }
    }

    #[test]
    fn files_pass_as_ids_or_download_urls() {
        for good in ["1", "4021", "https://portal.example.com/bitrix/tools/disk/?id=4021"] {
            assert_eq!(check(&PropertyType::File, good), Ok(json!(good)), "{good}");
        }
        for bad in ["report.pdf", "-4", "12a", "ftp://example.com/f", "/upload/f.pdf"] {
            assert_eq!(
                check(&PropertyType::File, bad),
                Err(format!("`{bad}` is not a file (expected a file id or its URL)")),
            );
        }
    }

    #[test]
    fn multiple_values_are_checked_one_by_one() {
        let list =
            |items: &[&str]| PropertyValue::List(items.iter().map(|s| s.to_string()).collect());
        let cases = [
            (PropertyType::Date, ["05.12.2026", "2026-12-06"], ["05.12.2026", "soon"]),
            (
                PropertyType::Datetime,
                ["05.12.2026 10:00", "2026-12-06T10:00:00Z"],
                ["05.12.2026 10:00", "25:00"],
            ),
            (PropertyType::User, ["user_1", "group_g2"], ["user_1", "everyone"]),
            (PropertyType::File, ["10", "11"], ["10", "eleven"]),
        ];
        for (kind, good, bad) in cases {
            assert_eq!(from_call(shape(&kind, true), &list(&good)), Ok(json!(good)), "{kind:?}");
            let problem = from_call(shape(&kind, true), &list(&bad)).unwrap_err();
            assert!(problem.starts_with(&format!("element 1: `{}` is not", bad[1])), "{problem}");
            // One value where several may come is a list of one; a bad one is still refused.
            assert_eq!(from_call(shape(&kind, true), &scalar(good[0])), Ok(json!([good[0]])));
            assert!(from_call(shape(&kind, true), &scalar(bad[1])).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn a_refused_value_is_quoted_short_and_escaped() {
        let long = format!("x\n{}", "y".repeat(500));
        let problem = check(&PropertyType::User, &long).unwrap_err();
        assert!(problem.starts_with("`x\\nyyy"), "{problem}");
        assert!(problem.len() < 200, "{problem}");
        assert!(!problem.contains('\n'), "{problem}");
    }
}
