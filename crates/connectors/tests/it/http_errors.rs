//! Every error class of the `http` connector: what is retried, what is fatal, and what the reason
//! says (and does not say: no secrets).

use std::time::{Duration, SystemTime};

use connectors::ConnectorError;
use connectors::http::HttpError;
use serde_json::json;

use crate::fake_api::{Break, FakeApi, Fault, breaking_server, refusing_address};
use crate::{
    assert_hides, assert_reason_contains, call, fatal_error, http, own_error, retryable_error,
};

fn http_error(error: &ConnectorError) -> &HttpError {
    own_error(error)
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retryable() {
    let api = FakeApi::start().await;
    api.fail_next([Fault::Slow(Duration::from_secs(30))]);
    let connector = http(json!({ "url": api.url("/echo/x"), "timeout": "200ms" }));
    let error = retryable_error(&connector, &call()).await;
    assert_eq!(error.retry_after(), None);
    assert!(matches!(http_error(&error), HttpError::Timeout { .. }));
    assert_reason_contains(&error, "no answer within 200ms");
}

#[tokio::test]
async fn the_hosts_attempt_timeout_bounds_the_request_when_shorter() {
    let api = FakeApi::start().await;
    api.fail_next([Fault::Slow(Duration::from_secs(30))]);
    let connector = http(json!({ "url": api.url("/echo/x"), "timeout": "20s" }));
    let mut request = call();
    request.attempt_timeout = Some(Duration::from_millis(150));
    let error = retryable_error(&connector, &request).await;
    assert_reason_contains(&error, "no answer within 150ms");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let base = refusing_address();
    let error = retryable_error(&http(json!({ "url": format!("{base}/x") })), &call()).await;
    assert!(matches!(http_error(&error), HttpError::Connect { .. }));
    assert!(error.reason().starts_with(&format!("POST {base}/x: could not connect")), "{error}");
}

#[tokio::test]
async fn a_connection_closed_before_the_answer_is_retryable() {
    let base = breaking_server(Break::BeforeAnswer);
    let error = retryable_error(&http(json!({ "url": format!("{base}/x") })), &call()).await;
    assert!(matches!(http_error(&error), HttpError::Transport { .. }), "{error:?}");
}

#[tokio::test]
async fn a_body_cut_short_is_retryable_not_a_bad_body() {
    let base = breaking_server(Break::MidBody);
    let connector = http(json!({ "url": format!("{base}/x"), "response": { "limit": "/limit" } }));
    let error = retryable_error(&connector, &call()).await;
    assert!(matches!(http_error(&error), HttpError::Transport { .. }), "{error:?}");
}

#[tokio::test]
async fn server_errors_are_retryable_and_quote_the_body() {
    let api = FakeApi::start().await;
    let connector = http(json!({ "url": api.url("/echo/x") }));
    for code in [500, 502, 503, 504] {
        api.fail_next([Fault::Status(code, r#"{"error": "maintenance until 03:00"}"#)]);
        let error = connector.run(&call()).await.unwrap_err();
        assert!(error.is_retryable(), "{code}");
        assert_reason_contains(&error, &format!("answered {code}"));
        assert!(error.reason().ends_with(r#": {"error": "maintenance until 03:00"}"#), "{error}");
    }
}

#[tokio::test]
async fn too_many_requests_passes_retry_after_in_seconds_or_as_a_date() {
    let api = FakeApi::start().await;
    let connector = http(json!({ "url": api.url("/echo/x") }));

    api.fail_next([Fault::RetryAfter(429, "7".into())]);
    let error = retryable_error(&connector, &call()).await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

    let at = httpdate_in(Duration::from_secs(120));
    api.fail_next([Fault::RetryAfter(503, at)]);
    let after = connector.run(&call()).await.unwrap_err().retry_after().expect("a delay");
    assert!(after > Duration::from_secs(100) && after <= Duration::from_secs(120), "{after:?}");

    api.fail_next([Fault::RetryAfter(429, "soon".into())]);
    let error = retryable_error(&connector, &call()).await;
    assert_eq!(error.retry_after(), None, "an unreadable Retry-After is ignored");

    api.fail_next([Fault::Status(429, "{}")]);
    assert_eq!(connector.run(&call()).await.unwrap_err().retry_after(), None);
}

fn httpdate_in(delay: Duration) -> String {
    // Written by the fakes' own formatter, to keep the test independent of the parser under test.
    fakes::dates::imf_fixdate(SystemTime::now() + delay)
}

#[tokio::test]
async fn client_errors_and_redirects_are_fatal() {
    let api = FakeApi::start().await;
    let connector = http(json!({ "url": api.url("/echo/x") }));
    for code in [400, 401, 403, 404, 409, 422, 301, 302] {
        api.fail_next([Fault::Status(code, "{}")]);
        let error = connector.run(&call()).await.unwrap_err();
        assert!(!error.is_retryable(), "{code}");
        assert_reason_contains(&error, &format!("answered {code}"));
    }
}

#[tokio::test]
async fn request_timeout_status_is_retryable() {
    let api = FakeApi::start().await;
    api.fail_next([Fault::Status(408, "")]);
    retryable_error(&http(json!({ "url": api.url("/echo/x") })), &call()).await;
}

#[tokio::test]
async fn the_upstreams_own_validation_error_is_fatal() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/api/companies/42/credit-check"),
        "body": { "amount": "{{properties.amount}}" },
    }));
    let error = fatal_error(&connector, &call().with_property("amount", "lots")).await;
    assert_reason_contains(
        &error,
        r#"answered 422 Unprocessable Entity: {"error":"amount must be a number"}"#,
    );
}

#[tokio::test]
async fn status_overrides_win_over_the_default_rule() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/echo/x"),
        "retry_on_status": [409, 423],
        "fatal_on_status": [503],
    }));
    api.fail_next([Fault::Status(409, "{}"), Fault::Status(423, "{}"), Fault::Status(503, "{}")]);
    assert!(connector.run(&call()).await.unwrap_err().is_retryable());
    assert!(connector.run(&call()).await.unwrap_err().is_retryable());
    assert!(!connector.run(&call()).await.unwrap_err().is_retryable());
    api.fail_next([Fault::Status(500, "{}"), Fault::Status(404, "{}")]);
    assert!(connector.run(&call()).await.unwrap_err().is_retryable(), "others keep the default");
    assert!(!connector.run(&call()).await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn a_fatal_override_drops_retry_after() {
    let api = FakeApi::start().await;
    api.fail_next([Fault::RetryAfter(429, "5".into())]);
    let connector = http(json!({ "url": api.url("/echo/x"), "fatal_on_status": [429] }));
    let error = fatal_error(&connector, &call()).await;
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn a_missing_pointer_is_fatal_and_named() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/api/companies/42/limit"),
        "method": "GET",
        "response": { "available_limit": "/limit/available", "rating": "/company/rating" },
    }));
    let error = fatal_error(&connector, &call()).await;
    assert_reason_contains(
        &error,
        "nothing at `/company/rating` in the response for return value `rating`",
    );
}

#[tokio::test]
async fn optional_and_default_fields_cover_missing_values() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/api/companies/42/limit"),
        "method": "GET",
        "response": {
            "available_limit": "/limit/available",
            "rating": { "pointer": "/company/rating", "optional": true },
            "grade": { "pointer": "/company/grade", "default": "B" },
            "id": { "pointer": "/company/id", "default": "unused" },
        },
    }));
    let outputs = connector.run(&call()).await.expect("succeeds");
    assert_eq!(outputs.values.get("rating"), None);
    assert_eq!(outputs.values["grade"], json!("B"));
    assert_eq!(outputs.values["id"], json!("42"));
}

#[tokio::test]
async fn a_2xx_that_is_not_json_is_fatal_unless_configured_retryable() {
    let api = FakeApi::start().await;
    let settings = json!({ "url": api.url("/echo/x"), "response": { "limit": "/limit" } });
    for (content_type, body) in [
        ("text/html", "<html>Maintenance</html>"),
        ("application/json", r#"{"limit": 12"#),
        ("application/json", ""),
    ] {
        api.fail_next([Fault::Garbage(content_type, body)]);
        let error = http(settings.clone()).run(&call()).await.unwrap_err();
        assert!(!error.is_retryable(), "{body:?}");
        assert_reason_contains(
            &error,
            &format!("answered 200 OK with a body that is not JSON ({content_type})"),
        );
    }

    let mut retrying = settings.clone();
    retrying["retry_on_invalid_body"] = json!(true);
    api.fail_next([Fault::Garbage("text/html", "<html>Maintenance</html>")]);
    assert!(http(retrying).run(&call()).await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn a_body_over_the_limit_is_fatal() {
    let api = FakeApi::start().await;
    api.fail_next([Fault::Huge(2000)]);
    let connector = http(json!({
        "url": api.url("/echo/x"),
        "max_response_bytes": 1000,
        "response": { "padding": "/padding" },
    }));
    let error = fatal_error(&connector, &call()).await;
    assert_reason_contains(&error, "larger than 1000 bytes");
}

#[tokio::test]
async fn reasons_carry_no_header_values_or_query_string() {
    let api = FakeApi::start().await;
    let connector = http(json!({
        "url": api.url("/echo/{{properties.company_id}}?api_key=url-s3cret"),
        "headers": { "Authorization": "Bearer header-s3cret" },
        "query": { "token": "query-s3cret" },
    }));
    api.fail_next([Fault::Status(500, "oops"), Fault::Slow(Duration::from_secs(30))]);
    let failed = connector.run(&call()).await.unwrap_err();
    let mut request = call();
    request.attempt_timeout = Some(Duration::from_millis(100));
    let timed_out = connector.run(&request).await.unwrap_err();
    let refused = http(json!({
        "url": format!("{}/x?api_key=url-s3cret", refusing_address()),
        "headers": { "Authorization": "Bearer header-s3cret" },
    }))
    .run(&call())
    .await
    .unwrap_err();

    for error in [failed, timed_out, refused] {
        assert_hides(&error, &["url-s3cret", "header-s3cret", "query-s3cret"]);
    }
}

#[test]
fn config_debug_redacts_header_and_query_values() {
    let config: connectors::http::HttpConfig = connectors::config::from_value(json!({
        "url": "https://example.com/x?api_key=url-s3cret",
        "headers": { "Authorization": "Bearer header-s3cret" },
        "query": { "token": "query-s3cret" },
    }))
    .expect("valid");
    let debug = format!("{config:?}");
    assert!(debug.contains("Authorization"), "{debug}");
    for secret in ["url-s3cret", "header-s3cret", "query-s3cret"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
}
