//! The codec against PHP's own encoding (the fixtures in testdata/php-encoded) and against itself
//! (properties).

use std::path::PathBuf;

use phpform::{Array, Limits, Value, decode, encode};
use proptest::prelude::*;

/// `testdata/php-encoded` at the repository's root: bodies PHP encoded, with PHP's decoding beside.
fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/php-encoded")
}

fn fixture_names() -> Vec<String> {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".body").map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn decodes_every_php_fixture_as_php_parse_str_does() {
    let names = fixture_names();
    assert!(names.len() >= 10, "expected the ten php-encoded fixtures, found {names:?}");
    for name in names {
        let dir = fixtures_dir();
        let body = std::fs::read(dir.join(format!("{name}.body"))).unwrap();
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        let decoded = decode(body.trim_ascii_end(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(Value::Array(decoded).to_json(), expected, "{name}");
    }
}

#[test]
fn re_encodes_every_php_fixture_byte_for_byte() {
    for name in fixture_names() {
        let body = std::fs::read(fixtures_dir().join(format!("{name}.body"))).unwrap();
        let body = std::str::from_utf8(body.trim_ascii_end()).unwrap();
        let decoded = decode(body.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(encode(&decoded), body, "{name}");
    }
}

/// A key PHP can round-trip: non-empty, no brackets (they would be read as nesting).
fn key() -> impl Strategy<Value = String> {
    "[^\\[\\]]{1,12}"
}

/// Any tree `http_build_query` can write and read back: no empty arrays (they are dropped).
fn value() -> impl Strategy<Value = Value> {
    let leaf = any::<String>().prop_map(Value::Str);
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..6).prop_map(|items| Value::Array(
                items.into_iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect()
            )),
            prop::collection::vec((key(), inner), 1..6)
                .prop_map(|pairs| Value::Array(pairs.into_iter().collect())),
        ]
    })
}

fn form() -> impl Strategy<Value = Array> {
    prop::collection::vec((key(), value()), 0..8).prop_map(|pairs| pairs.into_iter().collect())
}

/// Rewrites an encoded body the way other senders spell it: literal or lower-case brackets,
/// `%20` for spaces. A PHP-compatible reader must not care.
fn respell(body: &str, style: u8) -> String {
    match style {
        0 => body.to_owned(),
        1 => body.replace("%5B", "[").replace("%5D", "]"),
        2 => body.replace("%5B", "%5b").replace("%5D", "%5d"),
        _ => body.replace('+', "%20"),
    }
}

proptest! {
    #[test]
    fn decode_gives_back_what_http_build_query_wrote(form in form(), style in 0u8..4) {
        let body = respell(&encode(&form), style);
        let decoded = decode(body.as_bytes(), &Limits::default()).unwrap();
        prop_assert_eq!(decoded, form);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&body, &Limits::default());
    }
}
