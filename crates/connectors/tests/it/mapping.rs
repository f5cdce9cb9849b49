//! Response mapping by JSON pointer, used by the `http` connector and those to come.

use connectors::mapping::{Field, MappingError, ResponseMapping};
use serde_json::json;

fn mapping(fields: &[(&str, Field)]) -> ResponseMapping {
    ResponseMapping::new(fields.iter().map(|(k, f)| (k.to_string(), f.clone()))).unwrap()
}

#[test]
fn pointers_walk_keys_indexes_and_escapes() {
    let body =
        json!({ "data": { "items": [{ "a/b": 1 }, { "m~n": "two" }], "ok": true, "none": null } });
    let values = mapping(&[
        ("first", Field::required("/data/items/0/a~1b")),
        ("second", Field::required("/data/items/1/m~0n")),
        ("ok", Field::required("/data/ok")),
        ("none", Field::required("/data/none")),
        ("whole", Field::required("")),
    ])
    .apply(&body)
    .unwrap();
    assert_eq!(values["first"], json!(1));
    assert_eq!(values["second"], json!("two"));
    assert_eq!(values["ok"], json!(true));
    assert_eq!(values["none"], json!(null), "null is a value, not a missing one");
    assert_eq!(values["whole"], body);
}

#[test]
fn missing_values_fail_default_or_are_left_out() {
    let body = json!({ "data": [] });
    let error = mapping(&[("x", Field::required("/data/0"))]).apply(&body).unwrap_err();
    assert_eq!(error, MappingError { property: "x".into(), pointer: "/data/0".into() });
    let values = mapping(&[
        ("d", Field { pointer: "/nope".into(), optional: false, default: Some(json!(0)) }),
        ("o", Field { pointer: "/nope".into(), optional: true, default: None }),
    ])
    .apply(&body)
    .unwrap();
    assert_eq!(values.get("d"), Some(&json!(0)));
    assert_eq!(values.get("o"), None);
}

#[test]
fn pointers_are_checked_when_built() {
    let error = ResponseMapping::new([("x".to_string(), Field::required("data"))]).unwrap_err();
    assert_eq!(error.property, "x");
    assert!(ResponseMapping::new([("x".to_string(), Field::required("/~"))]).is_err());
    assert!(ResponseMapping::new([("x".to_string(), Field::required("/~1/~0"))]).is_ok());
}

#[test]
fn a_mapping_deserializes_from_pointers_and_tables() {
    let mapping: ResponseMapping = connectors::config::from_value(json!({
        "a": "/a",
        "b": { "pointer": "/b", "default": "B" },
    }))
    .unwrap();
    assert_eq!(mapping.properties().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(
        mapping.apply(&json!({ "a": 1 })).unwrap(),
        *json!({ "a": 1, "b": "B" }).as_object().unwrap()
    );
}
