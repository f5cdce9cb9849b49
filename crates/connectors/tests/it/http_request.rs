//! The `http` connector's requests: templated URL, query, headers and body reach the server exactly,
//! and mapped answers keep their JSON types.

use std::sync::Arc;

use connectors::Connector;
use serde_json::json;

use crate::fake_api::FakeApi;
use crate::{assert_reason_contains, call, fatal_error, http};

#[tokio::test]
async fn templated_request_reaches_the_server_exactly_and_the_answer_is_mapped() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/api/companies/{{properties.company_id}}/credit-check"),
        "headers": {
            "Authorization": "Bearer s3cret-token",
            "X-Deal": "{{document.module}}:{{document.entity}}:{{document.id}}",
            "X-Action": "{{ action.code }}",
        },
        "query": { "source": "bitrix24", "deal": "{{document.id}}" },
        "body": {
            "amount": "{{properties.amount}}",
            "company": "{{properties.company_id}}",
            "note": "Deal {{document.id}} for company {{properties.company_id}}",
            "managers": "{{properties.managers}}",
            "urgent": "{{properties.urgent}}",
            "comment": "{{properties.comment?}}",
            "fixed": [7, null, "plain"],
            "meta": { "job": "{{job.id}}", "attempt": "{{job.attempt}}" },
        },
        "response": {
            "available_limit": "/limit/available",
            "approval_required": "/decision/approval_required",
            "reason": "/decision/reason",
            "currency": "/limit/currency",
        },
    }));

    let outputs = connector.run(&call()).await.expect("the call succeeds");

    let received = api.only_request();
    assert_eq!(received.method, "POST");
    assert_eq!(
        received.path_and_query,
        "/api/companies/42/credit-check?deal=DEAL_7&source=bitrix24"
    );
    assert_eq!(received.header_str("authorization"), Some("Bearer s3cret-token"));
    assert_eq!(received.header_str("x-deal"), Some("crm:CCrmDocumentDeal:DEAL_7"));
    assert_eq!(received.header_str("x-action"), Some("check_credit_limit"));
    assert_eq!(received.header_str("content-type"), Some("application/json"));
    assert_eq!(
        received.json(),
        json!({
            "amount": 1500.5,
            "company": 42,
            "note": "Deal DEAL_7 for company 42",
            "managers": ["user_1", "user_7"],
            "urgent": true,
            "comment": null,
            "fixed": [7, null, "plain"],
            "meta": { "job": "job-1", "attempt": 1 },
        })
    );

    assert_eq!(outputs.values["available_limit"], json!(379_999.5));
    assert_eq!(outputs.values["approval_required"], json!(false));
    assert_eq!(outputs.values["reason"], json!(""));
    assert_eq!(outputs.values["currency"], json!("RUB"));
    assert_eq!(outputs.values.len(), 4);
}

#[tokio::test]
async fn the_job_id_goes_out_as_the_idempotency_key_on_every_attempt() {
    let api = FakeApi::start().await;
    let connector = http(json!({ "url": api.url("/echo/pay") }));
    let mut request = call();
    connector.run(&request).await.expect("first attempt");
    request.attempt = 2;
    connector.run(&request).await.expect("second attempt");

    let keys: Vec<_> =
        api.received().iter().map(|r| r.header_str("idempotency-key").map(str::to_owned)).collect();
    assert_eq!(keys, [Some("job-1".to_owned()), Some("job-1".to_owned())]);
}

#[tokio::test]
async fn the_idempotency_header_can_be_renamed_or_left_out() {
    let api = FakeApi::start().await;
    http(json!({ "url": api.url("/echo/a"), "idempotency_header": "X-Request-Id" }))
        .run(&call())
        .await
        .expect("renamed");
    http(json!({ "url": api.url("/echo/b"), "idempotency_header": "" }))
        .run(&call())
        .await
        .expect("left out");

    let received = api.received();
    assert_eq!(received[0].header_str("x-request-id"), Some("job-1"));
    assert_eq!(received[0].header("idempotency-key"), None);
    assert_eq!(received[1].header("idempotency-key"), None);
}

#[tokio::test]
async fn a_get_sends_no_body_and_maps_nested_values() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/api/companies/{{properties.company_id}}/limit"),
        "method": "get",
        "response": { "credit": "/limit/credit", "debt": "/limit/debt", "company": "/company" },
    }));
    let outputs = connector.run(&call()).await.expect("the call succeeds");

    let received = api.only_request();
    assert_eq!(received.method, "GET");
    assert!(received.body.is_empty());
    assert_eq!(received.header("content-type"), None);
    assert_eq!(outputs.values["credit"], json!(500_000.0));
    assert_eq!(outputs.values["debt"], json!(120_000.5));
    assert_eq!(outputs.values["company"], json!({ "id": "42" }), "objects are returned whole");
}

#[tokio::test]
async fn property_values_are_percent_encoded_in_the_path_and_form_encoded_in_the_query() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/echo/{{properties.name}}?raw={{properties.name}}"),
        "query": { "name": "{{properties.name}}" },
    }));
    let request = call().with_property("name", "Рога & Копыта/ООО 50%+");
    connector.run(&request).await.expect("the call succeeds");

    let encoded = "%D0%A0%D0%BE%D0%B3%D0%B0%20%26%20%D0%9A%D0%BE%D0%BF%D1%8B%D1%82%D0%B0%2F%D0%9E%D0%9E%D0%9E%2050%25%2B";
    let form = "%D0%A0%D0%BE%D0%B3%D0%B0+%26+%D0%9A%D0%BE%D0%BF%D1%8B%D1%82%D0%B0%2F%D0%9E%D0%9E%D0%9E+50%25%2B";
    assert_eq!(
        api.only_request().path_and_query,
        format!("/echo/{encoded}?raw={encoded}&name={form}"),
        "one path segment, one query value each: `/`, `&`, spaces and `%` cannot change the URL"
    );
}

#[tokio::test]
async fn a_dot_segment_value_is_refused_before_sending() {
    let api = FakeApi::start().await;
    let connector =
        http(json!({ "url": api.url("/echo/companies/{{properties.company_id}}/limit") }));
    let error = fatal_error(&connector, &call().with_property("company_id", "..")).await;
    assert_reason_contains(&error, "url: `{{properties.company_id}}` is `.` or `..`");
    assert!(api.received().is_empty());
}

/// A connector that sends the property `name` as the header `X-Company`.
fn company_header_connector(api: &FakeApi) -> Arc<dyn Connector> {
    http(json!({
        "url": api.url("/echo/x"),
        "headers": { "X-Company": "{{properties.name}}" },
    }))
}

#[tokio::test]
async fn header_values_with_cr_or_lf_are_refused_before_sending() {
    let api = FakeApi::start().await;
    let connector = company_header_connector(&api);
    for evil in ["ACME\r\nX-Admin: yes", "ACME\nX-Admin: yes", "ACME\rX", "A\u{0}B"] {
        let error = connector.run(&call().with_property("name", evil)).await.unwrap_err();
        assert!(!error.is_retryable(), "{evil:?}");
        assert_reason_contains(&error, "headers.X-Company");
        assert_reason_contains(&error, "control character");
    }
    assert!(api.received().is_empty());
}

#[tokio::test]
async fn header_values_keep_tabs_and_cyrillic() {
    let api = FakeApi::start().await;
    let connector = company_header_connector(&api);
    connector.run(&call().with_property("name", "ООО\t«Рога»")).await.expect("sent");
    assert_eq!(
        api.only_request().header("x-company").map(|v| v.as_bytes().to_vec()),
        Some("ООО\t«Рога»".as_bytes().to_vec())
    );
}

#[tokio::test]
async fn a_missing_property_is_fatal_and_nothing_is_sent() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/echo/x"),
        "body": { "inn": "{{properties.inn}}" },
    }));
    let error = fatal_error(&connector, &call()).await;
    assert_reason_contains(&error, "the call has no property `inn`");
    assert!(error.reason().starts_with(&format!("POST {}/echo/x: body:", api.base)), "{error}");
    assert!(api.received().is_empty());
}

#[tokio::test]
async fn the_whole_properties_object_can_be_the_body() {
    let api = FakeApi::start().await;
    let connector = http(json!({ "url": api.url("/echo/x"), "body": "{{properties}}" }));
    connector.run(&call()).await.expect("sent");
    assert_eq!(
        api.only_request().json(),
        json!({ "company_id": 42, "amount": 1500.5, "managers": ["user_1", "user_7"], "urgent": true })
    );
}

#[tokio::test]
async fn put_patch_and_delete_are_sent_as_configured() {
    let api = FakeApi::start().await;
    for method in ["PUT", "PATCH", "DELETE"] {
        http(json!({ "url": api.url("/echo/x"), "method": method, "body": { "a": 1 } }))
            .run(&call())
            .await
            .expect("sent");
    }
    let methods: Vec<_> = api.received().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["PUT", "PATCH", "DELETE"]);
}

#[tokio::test]
async fn an_answer_without_mapping_needs_no_json_and_returns_no_values() {
    let api = FakeApi::start().await;
    api.fail_next([crate::fake_api::Fault::Garbage("text/html", "<html>ok</html>")]);
    let outputs =
        http(json!({ "url": api.url("/echo/x") })).run(&call()).await.expect("a 2xx is enough");
    assert!(outputs.values.is_empty());
}

#[tokio::test]
async fn an_amount_over_the_limit_comes_back_as_approval_required() {
    let api = FakeApi::start().await;
    api.set_company("7", crate::fake_api::Company { credit: 1000.0, debt: 900.0 });
    let connector = http(json!({
        "url": api.url("/api/companies/{{properties.company_id}}/credit-check"),
        "body": { "amount": "{{properties.amount}}" },
        "response": {
            "available_limit": "/limit/available",
            "approval_required": "/decision/approval_required",
            "reason": "/decision/reason",
        },
    }));
    let outputs = connector.run(&call().with_property("company_id", "7")).await.expect("succeeds");
    assert_eq!(outputs.values["available_limit"], json!(100.0));
    assert_eq!(outputs.values["approval_required"], json!(true));
    assert_eq!(outputs.values["reason"], json!("over the available limit"));
}
