//! Calls and events decoded from bodies PHP itself encoded, and the errors bad bodies get.

use std::path::PathBuf;
use std::time::Duration;

use phpform::{Array, Value};
use proptest::prelude::*;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/php-encoded")
        .join(format!("{name}.body"));
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    body.trim_ascii_end().to_vec()
}

fn call(name: &str) -> ActivityCall {
    ActivityCall::from_form(&fixture(name), &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn scalar(s: &str) -> PropertyValue {
    PropertyValue::Scalar(s.to_owned())
}

#[test]
fn basic_call_is_fully_typed() {
    let call = call("call-basic");
    assert_eq!(call.workflow_id, "681c894d3f0ec8.54818143");
    assert_eq!(call.code, "check_credit_limit");
    assert_eq!(
        call.document_id,
        DocumentId {
            module: "crm".into(),
            entity: "CCrmDocumentDeal".into(),
            id: "DEAL_1188".into()
        }
    );
    assert_eq!(call.document_type.as_ref().map(|t| t.kind.as_str()), Some("DEAL"));
    let parts = call.event_token.parts().unwrap();
    assert_eq!(
        (parts.workflow_id, parts.activity_name),
        ("681c894d3f0ec8.54818143", "A36717_5720_22885_29158")
    );
    assert_eq!(call.properties.get("company_id"), Some(&scalar("42")));
    assert_eq!(call.properties.get("amount"), Some(&scalar("1500.5")));
    assert!(call.waits_for_result);
    assert_eq!(call.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(call.dispatched_at, Some(1746700621));
    let auth = &call.auth;
    assert_eq!(auth.domain, "example.bitrix24.com");
    assert_eq!(auth.member_id.as_str(), "3d906b2a32030386ccc7274d2313a01b");
    assert_eq!(auth.application_token.expose(), "565be534fe44bce005bae699aa0313f8");
    assert_eq!(
        auth.client_endpoint.as_ref().map(|u| u.as_str()),
        Some("https://example.bitrix24.com/rest/")
    );
    assert_eq!(
        auth.server_endpoint.as_ref().map(|u| u.as_str()),
        Some("https://oauth.bitrix.info/rest/")
    );
    assert_eq!(auth.user_id, Some(1));
    assert_eq!(auth.scope.as_deref(), Some("crm,bizproc,placement,user_brief"));
    let tokens = auth.tokens.as_ref().unwrap();
    assert!(tokens.access_token.expose().starts_with("5d971c68"));
    assert!(tokens.refresh_token.as_ref().unwrap().expose().starts_with("4d164468"));
    assert_eq!((tokens.expires, tokens.expires_in), (Some(1746704221), Some(3600)));
}

#[test]
fn every_value_shape_of_section_2_4_is_kept() {
    let p = call("call-types").properties;
    assert_eq!(p["inputString"], scalar("Deal #1188: Müller & Co"));
    assert_eq!(p["sendCopy"], scalar("Y"));
    assert_eq!(p["approvers"], PropertyValue::List(vec!["user_1".into(), "user_7".into()]));
    assert_eq!(p["dueDate"], scalar("21.08.2026"));
    assert_eq!(p["comment"], scalar(""));
    assert_eq!(p["file"], scalar("1234"));
    assert_eq!(p["choice"], PropertyValue::List(vec!["opt_a".into(), "opt_c".into()]));
    let keys: Vec<&str> = p.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["inputString", "sendCopy", "approvers", "dueDate", "amount", "comment", "file", "choice"]
    );
}

#[test]
fn cyrillic_and_reserved_characters_survive() {
    let p = call("call-cyrillic-and-specials").properties;
    assert_eq!(p["article"], scalar("Артикул №7 / 50% & \"кавычки\" + | # = ?"));
    assert_eq!(p["note"], scalar("строка\nвторая"));
}

#[test]
fn optional_parts_may_be_missing() {
    assert!(call("call-no-properties").properties.is_empty());
    let no_refresh = call("call-no-refresh-token").auth.tokens.unwrap();
    assert!(no_refresh.refresh_token.is_none());
    let no_tokens = call("call-no-tokens").auth;
    assert!(no_tokens.tokens.is_none());
    assert_eq!(no_tokens.member_id.as_str(), "3d906b2a32030386ccc7274d2313a01b");
}

#[test]
fn other_document_kinds_and_no_subscription() {
    let lists = call("call-lists-document");
    assert_eq!(
        (lists.document_id.module.as_str(), lists.document_id.id.as_str()),
        ("lists", "123")
    );
    let dynamic = call("call-dynamic-no-timeout");
    assert_eq!(dynamic.document_id.id, "DYNAMIC_147_1");
    assert!(!dynamic.waits_for_result);
    assert_eq!(dynamic.timeout, None);
}

#[test]
fn install_event_carries_tokens_and_uninstall_does_not() {
    let install = AppEvent::from_form(&fixture("event-onappinstall"), &Limits::default()).unwrap();
    assert_eq!(install.kind, AppEventKind::Install);
    assert_eq!(install.version.as_deref(), Some("1"));
    assert_eq!(install.language_id.as_deref(), Some("ru"));
    assert!(install.auth.tokens.unwrap().refresh_token.is_some());
    let uninstall =
        AppEvent::from_form(&fixture("event-onappuninstall"), &Limits::default()).unwrap();
    assert_eq!(uninstall.kind, AppEventKind::Uninstall);
    assert!(uninstall.clean);
    assert!(uninstall.auth.tokens.is_none());
    assert_eq!(uninstall.sent_at, Some(1466439714));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let shown = format!("{:?}", call("call-basic"));
    for secret in [
        "565be534fe44bce005bae699aa0313f8",
        "5d971c6800782a4e",
        "4d16446800782a4e",
        "4a9eda30cc5038d5",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
}

/// The basic fixture with one field replaced (or removed when `value` is `None`).
fn basic_with(field: &str, value: Option<&str>) -> Vec<u8> {
    let mut form = phpform::decode(&fixture("call-basic"), &phpform::Limits::default()).unwrap();
    set_path(&mut form, field, value);
    phpform::encode(&form).into_bytes()
}

fn set_path(form: &mut Array, field: &str, value: Option<&str>) {
    let (head, rest) = field.split_once('[').map_or((field, ""), |(h, r)| (h, r));
    if rest.is_empty() {
        match value {
            Some(v) => form.insert(head.to_owned(), Value::from(v)),
            None => form.shift_remove(head),
        };
        return;
    }
    let slot = form.entry(head.to_owned()).or_insert_with(|| Value::Array(Array::new()));
    if slot.as_array().is_none() {
        *slot = Value::Array(Array::new());
    }
    if let Value::Array(inner) = slot {
        let (key, tail) = rest.split_once(']').unwrap();
        set_path(inner, &format!("{key}{tail}"), value);
    }
}

fn error_of(body: &[u8]) -> String {
    ActivityCall::from_form(body, &Limits::default()).unwrap_err().to_string()
}

#[test]
fn missing_required_fields_are_named() {
    for field in [
        "workflow_id",
        "code",
        "event_token",
        "document_id",
        "auth[member_id]",
        "auth[application_token]",
        "auth[domain]",
    ] {
        assert_eq!(
            error_of(&basic_with(field, None)),
            format!("required field `{field}` is missing")
        );
    }
}

#[test]
fn malformed_fields_are_named() {
    let cases = [
        ("ts", Some("yesterday"), "field `ts` is invalid: `yesterday` is not an integer"),
        (
            "timeout_duration",
            Some("-5"),
            "field `timeout_duration` is invalid: `-5` is not an integer",
        ),
        (
            "use_subscription",
            Some("maybe"),
            "field `use_subscription` is invalid: `maybe` is neither Y nor N",
        ),
        ("document_id[2]", None, "field `document_id` is invalid: expected 3 elements, found 2"),
        (
            "auth[client_endpoint]",
            Some("not a url"),
            "field `auth[client_endpoint]` is invalid: `not a url` is not a URL: relative URL without a base",
        ),
        (
            "properties[amount][x]",
            Some("1"),
            "field `properties[amount]` is invalid: expected a string or a list `[0]`, `[1]`, …",
        ),
        (
            "workflow_id[0]",
            Some("1"),
            "field `workflow_id` is invalid: expected a string, got an array",
        ),
    ];
    for (field, value, expected) in cases {
        assert_eq!(error_of(&basic_with(field, value)), expected, "{field}");
    }
}

#[test]
fn undecodable_bodies_are_rejected_with_the_field() {
    let mut body = fixture("call-basic");
    body.extend_from_slice(b"&properties%5Bnote%5D=%C3%28");
    assert_eq!(
        error_of(&body),
        "malformed form body: field `properties[note]`: its value is not valid UTF-8"
    );
    let small = Limits { max_body_bytes: 100, ..Limits::default() };
    let err = ActivityCall::from_form(&fixture("call-basic"), &small).unwrap_err();
    assert!(err.to_string().starts_with("malformed form body: form body is "), "{err}");
}

#[test]
fn event_names_are_checked() {
    let body =
        phpform::encode(&[("event".to_owned(), Value::from("ONCRMDEALADD"))].into_iter().collect());
    let err = AppEvent::from_form(body.as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `event` is invalid: `ONCRMDEALADD` is not ONAPPINSTALL, ONAPPUPDATE or ONAPPUNINSTALL"
    );
    let mut install =
        phpform::decode(&fixture("event-onappinstall"), &phpform::Limits::default()).unwrap();
    set_path(&mut install, "auth[access_token]", None);
    let err =
        AppEvent::from_form(phpform::encode(&install).as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "required field `auth[access_token]` is missing");
}

/// A property id as §1.5 allows, and any value: scalar or a non-empty list.
fn property() -> impl Strategy<Value = (String, PropertyValue)> {
    let value = prop_oneof![
        any::<String>().prop_map(PropertyValue::Scalar),
        prop::collection::vec(any::<String>(), 1..4).prop_map(PropertyValue::List),
    ];
    ("[a-z][a-zA-Z0-9_]{0,10}", value)
}

proptest! {
    /// Whatever properties PHP encodes into a call, the call decoder gives them back.
    #[test]
    fn properties_round_trip_through_php_encoding(props in prop::collection::vec(property(), 0..6)) {
        let mut form = phpform::decode(&fixture("call-basic"), &phpform::Limits::default()).unwrap();
        let encoded: Array = props.iter().map(|(k, v)| {
            let value = match v {
                PropertyValue::Scalar(s) => Value::from(s.as_str()),
                PropertyValue::List(items) => Value::Array(items.iter().enumerate().map(|(i, s)| (i.to_string(), Value::from(s.as_str()))).collect()),
            };
            (k.clone(), value)
        }).collect();
        form.insert("properties".into(), Value::Array(encoded));
        let call = ActivityCall::from_form(phpform::encode(&form).as_bytes(), &Limits::default()).unwrap();
        let expected: indexmap::IndexMap<String, PropertyValue> = props.into_iter().collect();
        prop_assert_eq!(call.properties, expected);
    }
}

#[test]
fn event_token_code_and_property_values_are_bounded() {
    let limits = Limits::default();
    let long_token = "w|a|e.".to_owned() + &"s".repeat(limits.max_event_token_bytes);
    let long_code = "c".repeat(limits.max_code_bytes + 1);
    let long_value = "v".repeat(limits.max_property_value_bytes + 1);
    let cases = [
        ("event_token", long_token.as_str(), "event_token"),
        ("code", long_code.as_str(), "code"),
        ("properties[amount]", long_value.as_str(), "properties[amount]"),
        ("properties[amount][0]", long_value.as_str(), "properties[amount]"),
    ];
    for (path, value, field) in cases {
        let error = error_of(&basic_with(path, Some(value)));
        assert!(
            error.starts_with(&format!(
                "field `{field}` is invalid: is {} bytes, over the limit of",
                value.len()
            )),
            "{path}: {error}"
        );
    }
    let at_the_limit = "c".repeat(limits.max_code_bytes);
    let call = ActivityCall::from_form(&basic_with("code", Some(&at_the_limit)), &limits).unwrap();
    assert_eq!(call.code, at_the_limit);
}

#[test]
fn echoed_input_is_cut_short_and_escaped() {
    let hostile = format!("x\n2025-01-01 ERROR forged\u{1b}[2J\"{}", "k".repeat(100 * 1024));
    let mut with_key = fixture("call-basic");
    let encoded: String =
        hostile
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
    with_key.extend_from_slice(format!("&properties%5B{encoded}%5D%5Ba%5D%5B%5D=1").as_bytes());
    let bodies = [
        basic_with("use_subscription", Some(&hostile)),
        basic_with("ts", Some(&hostile)),
        with_key,
    ];
    for body in bodies {
        let error = error_of(&body);
        assert!(error.len() < 400, "{} bytes: {}", error.len(), &error[..400.min(error.len())]);
        assert!(!error.contains('\n') && !error.contains('\u{1b}'), "{error}");
        assert!(
            error.contains("x\\n2025-01-01 ERROR forged\\u{1b}[2J\\\"") && error.contains('…'),
            "{error}"
        );
    }
}
