//! The `http` connector's config checks: every error names the key, none repeats a secret.

use std::collections::BTreeSet;

use connectors::Contract;
use serde_json::json;

use crate::{config_error, http};

#[test]
fn url_errors_name_the_url_key() {
    for (url, expected) in [
        (
            "/api/{{properties.company_id}}",
            "connector.url: `/api/{{properties.company_id}}` has no scheme or host: write https://<host>/api/{{properties.company_id}}",
        ),
        (
            "finance.example.com/api/{{properties.company_id}}",
            "connector.url: `finance.example.com/api/{{properties.company_id}}` has no scheme: write https://finance.example.com/api/{{properties.company_id}}",
        ),
        ("ftp://files.example.com/x", "connector.url: `ftp` is not http or https"),
        (
            "https://{{properties.host}}/api",
            "connector.url: placeholders are allowed only in the path, query and fragment, not in the scheme or host",
        ),
        (
            "https://api.example.com:{{properties.port}}/x",
            "connector.url: placeholders are allowed only in the path, query and fragment, not in the scheme or host",
        ),
        (
            "https://api.example.com/{{env.TOKEN}}",
            "connector.url: unknown namespace `env` in `{{env.TOKEN}}`; use properties, document, job or action \
             (secrets come resolved in the config, not from templates)",
        ),
        (
            "https://api.example.com/{{properties.id",
            "connector.url: `{{` at byte 24 is not closed by `}}`",
        ),
    ] {
        assert_eq!(config_error(json!({ "url": url })), expected, "url {url}");
    }
    assert!(config_error(json!({})).starts_with("connector: missing field `url`"));
}

#[test]
fn misspelt_and_mistyped_keys_are_named() {
    let error = config_error(json!({ "url": "https://a.example/x", "timeuot": "5s" }));
    assert!(
        error.starts_with("connector.timeuot: unknown field `timeuot`, expected one of"),
        "{error}"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "headers": { "X-Count": 5 } })),
        "connector.headers.X-Count: invalid type: integer `5`, expected a string"
    );
    let error = config_error(json!({ "url": "https://a.example/x", "timeout": "ten seconds" }));
    assert!(
        error.starts_with("connector.timeout: invalid value: string \"ten seconds\""),
        "{error}"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "timeout": "0s" })),
        "connector.timeout: must be longer than zero"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "method": "GE T" })),
        "connector.method: not an HTTP method"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "max_response_bytes": 0 })),
        "connector.max_response_bytes: must be at least 1"
    );
}

#[test]
fn header_errors_name_the_header_and_not_its_value() {
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "headers": { "Bad Name": "v" } })),
        "connector.headers.Bad Name: not a valid header name"
    );
    let error = config_error(json!({
        "url": "https://a.example/x",
        "headers": { "Authorization": "Bearer s3cret\r\nX-Admin: yes" },
    }));
    assert_eq!(error, "connector.headers.Authorization: the value contains a control character");
    assert_eq!(
        config_error(
            json!({ "url": "https://a.example/x", "headers": { "X-Doc": "{{document.number}}" } })
        ),
        "connector.headers.X-Doc: unknown placeholder `{{document.number}}`; document has module, entity and id"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "idempotency_header": "Idem Key" })),
        "connector.idempotency_header: not a valid header name"
    );
}

#[test]
fn body_and_query_errors_name_the_place_in_the_template() {
    assert_eq!(
        config_error(json!({
            "url": "https://a.example/x",
            "body": { "items": [{ "sku": "{{properties.sku}}" }, { "sku": "{{job.number}}" }] },
        })),
        "connector.body.items[1].sku: unknown placeholder `{{job.number}}`; job has id and attempt"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "query": { "q": "{{ }}" } })),
        "connector.query.q: empty placeholder at byte 0"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "method": "GET", "body": { "a": 1 } })),
        "connector.body: a GET request has no body"
    );
}

#[test]
fn response_errors_name_the_return_property() {
    assert_eq!(
        config_error(
            json!({ "url": "https://a.example/x", "response": { "limit": "data/limit" } })
        ),
        "connector.response.limit: `data/limit` is not a JSON pointer: it must be empty (the whole body) or start with `/`"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "response": { "limit": "/a~2b" } })),
        "connector.response.limit: `/a~2b` is not a JSON pointer: `~` must be followed by 0 or 1 (`~0` is `~`, `~1` is `/`)"
    );
    let error = config_error(json!({
        "url": "https://a.example/x",
        "response": { "limit": { "pointer": "/a", "optinal": true } },
    }));
    assert!(
        error.starts_with("connector.response.limit.optinal: unknown field `optinal`"),
        "{error}"
    );
    assert_eq!(
        config_error(json!({
            "url": "https://a.example/x",
            "response": { "limit": { "pointer": "/a", "optional": true, "default": 0 } },
        })),
        "connector.response.limit: give `optional` or `default`, not both"
    );
    let error = config_error(json!({ "url": "https://a.example/x", "response": { "limit": 5 } }));
    assert!(
        error.starts_with(
            "connector.response.limit: invalid type: integer `5`, expected a JSON pointer"
        ),
        "{error}"
    );
}

#[test]
fn status_rules_are_checked() {
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "retry_on_status": [200] })),
        "connector.retry_on_status: 200 is not a status this rule can apply to (300–599)"
    );
    assert_eq!(
        config_error(json!({ "url": "https://a.example/x", "fatal_on_status": [503, 700] })),
        "connector.fatal_on_status: 700 is not a status this rule can apply to (300–599)"
    );
    assert_eq!(
        config_error(json!({
            "url": "https://a.example/x",
            "retry_on_status": [409, 503],
            "fatal_on_status": [503],
        })),
        "connector.fatal_on_status: 503 is in retry_on_status too"
    );
}

#[test]
fn durations_take_units_or_seconds() {
    for timeout in [json!("500ms"), json!("10s"), json!("2m"), json!("1h"), json!(10), json!(0.5)] {
        http(json!({ "url": "https://a.example/x", "timeout": timeout }));
    }
}

#[test]
fn the_contract_lists_required_inputs_and_mapped_outputs() {
    let connector = http(json!({
        "url": "https://a.example/companies/{{properties.company_id}}",
        "headers": { "X-Manager": "{{properties.manager}}" },
        "query": { "deal": "{{document.id}}" },
        "body": { "amount": "{{properties.amount}}", "note": "{{properties.note?}}" },
        "response": { "available_limit": "/a", "approval_required": "/b" },
    }));
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        connector.contract(),
        Some(Contract {
            inputs: strings(&["amount", "company_id", "manager"]),
            outputs: strings(&["approval_required", "available_limit"]),
        })
    );
}
