//! The `credit_limit` connector against the fake finance system (`fakes::finance`): the decision
//! rule, the configurable names, every error class and its reason, and config errors by key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use connectors::credit_limit::{CreditLimitError, Rule};
use connectors::{Connector, ConnectorError, ConnectorRequest, DocumentId, Outputs, Registry};
use fakes::finance::{Behaviour, Company, Credentials, FinanceApi, Malformed};
use serde_json::{Value, json};

use crate::assert_reason_contains;

/// A fake finance system where company 42 has a limit of 50 000 and a debt of 12 000, and
/// company 7 a limit of 10 000 and a debt of 2 000.
async fn finance() -> FinanceApi {
    let api = FinanceApi::start(1).await.expect("the fake starts");
    api.set_company(42, Company::new(50_000.0, 12_000.0));
    api.set_company(7, Company::new(10_000.0, 2_000.0));
    api
}

/// The settings for the fake, with its token.
fn settings(api: &FinanceApi) -> Value {
    json!({
        "url": format!("{}/api/v1/companies/{{{{properties.company_id}}}}/credit", api.url()),
        "auth": { "bearer": api.token() },
    })
}

fn build(mut settings: Value) -> Result<Arc<dyn Connector>, connectors::ConfigError> {
    settings["kind"] = json!("credit_limit");
    Registry::new().build(&settings)
}

fn connector(settings: Value) -> Arc<dyn Connector> {
    build(settings).unwrap_or_else(|e| panic!("config is valid: {e}"))
}

fn config_error(settings: Value) -> String {
    match build(settings) {
        Ok(_) => panic!("config should be rejected"),
        Err(e) => e.to_string(),
    }
}

fn call(company: impl Into<Value>, amount: impl Into<Value>) -> ConnectorRequest {
    ConnectorRequest::new(
        "job-17",
        "check_credit_limit",
        DocumentId::new("crm", "CCrmDocumentDeal", "DEAL_3"),
    )
    .with_property("company_id", company)
    .with_property("amount", amount)
}

async fn check(api: &FinanceApi, settings: Value, company: u64, amount: f64) -> Outputs {
    let outputs = connector(settings).run(&call(company, amount)).await;
    outputs.unwrap_or_else(|e| panic!("the check succeeds, got {e} (fake saw {:?})", api.counts()))
}

/// Checks each `(company, amount)` with the fake's [`settings`] under `rule`, asserting the
/// decision given with it; returns the outputs in the same order.
async fn decisions_under_rule(
    api: &FinanceApi,
    rule: Value,
    cases: &[(u64, f64, bool, &str)],
) -> Vec<Outputs> {
    let mut settings = settings(api);
    settings["rule"] = rule;
    let mut outputs = Vec::new();
    for &(company, amount, approval_required, reason) in cases {
        let decided = check(api, settings.clone(), company, amount).await;
        assert_decision(&decided, approval_required, reason);
        outputs.push(decided);
    }
    outputs
}

async fn failure(api: &FinanceApi, settings: Value, request: &ConnectorRequest) -> ConnectorError {
    let error = connector(settings).run(request).await.expect_err("the check fails");
    assert!(!error.reason().contains(&api.token()), "the token leaked: {error}");
    error
}

/// Asserts the decision a check returned: whether approval is required, and why.
fn assert_decision(outputs: &Outputs, approval_required: bool, reason: &str) {
    assert_eq!(outputs.values["approval_required"], approval_required, "{reason}");
    assert_eq!(outputs.values["reason"], reason);
}

fn source(error: &ConnectorError) -> &CreditLimitError {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<CreditLimitError>())
        .expect("the source is the connector's own error")
}

// The decision.

#[tokio::test]
async fn an_amount_within_the_available_limit_needs_no_approval() {
    let api = finance().await;
    let outputs = check(&api, settings(&api), 42, 15_000.0).await;
    assert_eq!(
        Value::Object(outputs.values),
        json!({
            "available_limit": 38000.0,
            "approval_required": false,
            "reason": "within the available limit 38000.00",
        })
    );
    assert_eq!(
        outputs.log.as_deref(),
        Some(
            "Company 42: credit limit 50000.00, debt 12000.00, amount 15000.00: within the \
             available limit 38000.00"
        )
    );
    let received = api.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/api/v1/companies/42/credit");
    assert_eq!(received[0].idempotency_key.as_deref(), Some("job-17"), "the job id is the key");
}

#[tokio::test]
async fn an_amount_over_the_available_limit_needs_approval() {
    let api = finance().await;
    let outputs = check(&api, settings(&api), 7, 15_000.0).await;
    assert_eq!(outputs.values["available_limit"], 8000.0);
    assert_decision(&outputs, true, "amount 15000.00 exceeds the available limit 8000.00");
}

#[tokio::test]
async fn an_amount_equal_to_the_available_limit_needs_no_approval() {
    let api = finance().await;
    let outputs = check(&api, settings(&api), 7, 8_000.0).await;
    assert_eq!(outputs.values["approval_required"], false);
}

#[tokio::test]
async fn a_company_over_its_limit_has_a_negative_available_limit_and_needs_approval() {
    let api = finance().await;
    api.set_company(9, Company::new(10_000.0, 12_500.0));
    let outputs = check(&api, settings(&api), 9, 100.0).await;
    assert_eq!(outputs.values["available_limit"], -2500.0);
    assert_decision(&outputs, true, "amount 100.00 exceeds the available limit -2500.00");
}

#[tokio::test]
async fn share_of_available_asks_for_approval_above_that_share() {
    let api = finance().await;
    let outputs = decisions_under_rule(
        &api,
        json!({ "share_of_available": 0.8 }),
        &[
            (
                42,
                31_000.0,
                true,
                "amount 31000.00 exceeds 80% of the available limit 38000.00 (30400.00)",
            ),
            (42, 30_400.0, false, "within 80% of the available limit 38000.00 (30400.00)"),
        ],
    )
    .await;
    assert_eq!(
        outputs[0].values["available_limit"], 38000.0,
        "the full available limit is returned"
    );
}

#[tokio::test]
async fn always_above_asks_for_approval_whatever_the_limit() {
    let api = finance().await;
    decisions_under_rule(
        &api,
        json!({ "always_above": 20000 }),
        &[
            (42, 25_000.0, true, "amount 25000.00 is above 20000.00, above which approval is always required"),
            (
                7,
                25_000.0,
                true,
                "amount 25000.00 exceeds the available limit 8000.00; amount 25000.00 is above 20000.00, \
                 above which approval is always required",
            ),
            (42, 20_000.0, false, "within the available limit 38000.00"),
        ],
    )
    .await;
}

#[test]
fn the_rule_requires_approval_exactly_above_its_bounds() {
    let rules = [
        Rule::default(),
        Rule { share_of_available: 0.5, always_above: None },
        Rule { share_of_available: 0.9, always_above: Some(1_000.0) },
    ];
    for rule in &rules {
        for (limit, debt) in
            [(10_000.0, 0.0), (10_000.0, 9_999.5), (10_000.0, 10_000.0), (5_000.0, 7_000.0)]
        {
            for amount in
                [0.0, 0.5, 500.0, 999.99, 1_000.0, 1_000.01, 5_000.0, 9_000.0, 10_000.0, 1e9]
            {
                let decision = rule.decide(amount, limit, debt);
                let available: f64 = limit - debt;
                let allowed =
                    if available > 0.0 { available * rule.share_of_available } else { available };
                let expected = amount > allowed || rule.always_above.is_some_and(|b| amount > b);
                assert_eq!(decision.available_limit, available);
                assert_eq!(
                    decision.approval_required, expected,
                    "{rule:?} {amount} {limit} {debt}"
                );
                assert!(!decision.reason.is_empty());
            }
        }
    }
}

// Configurable names.

#[tokio::test]
async fn input_and_output_property_ids_are_configurable() {
    let api = finance().await;
    let settings = json!({
        "url": format!("{}/api/v1/companies/{{{{properties.firm}}}}/credit", api.url()),
        "auth": { "bearer": api.token() },
        "inputs": { "company_id": "firm", "amount": "sum" },
        "outputs": { "available_limit": "free", "approval_required": "needs_cfo", "reason": "why" },
    });
    let connector = connector(settings);
    let contract = connector.contract().expect("the connector knows its contract");
    assert_eq!(contract.inputs.iter().collect::<Vec<_>>(), ["firm", "sum"]);
    assert_eq!(contract.outputs.iter().collect::<Vec<_>>(), ["free", "needs_cfo", "why"]);
    let request = ConnectorRequest::new("job-1", "check", DocumentId::new("crm", "D", "1"))
        .with_property("firm", "42")
        .with_property("sum", "100.5");
    let outputs = connector.run(&request).await.expect("the check succeeds");
    assert_eq!(
        Value::Object(outputs.values),
        json!({"free": 38000.0, "needs_cfo": false, "why": "within the available limit 38000.00"})
    );
}

/// An API of another shape: `{"data": {"limit": "50000.00", "debt": 12000}}` at `/v2/{id}`.
async fn nested_api() -> String {
    let router = Router::new()
        .route(
            "/v2/{id}",
            get(|| async { axum::Json(json!({"data": {"limit": "50000.00", "debt": 12000}})) }),
        )
        .route("/forbidden/{id}", get(|| async { (StatusCode::FORBIDDEN, "no") }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn field_pointers_are_configurable_and_numeric_strings_count() {
    let base = nested_api().await;
    let settings = json!({
        "url": format!("{base}/v2/{{{{properties.company_id}}}}"),
        "fields": { "credit_limit": "/data/limit", "current_debt": "/data/debt" },
    });
    let outputs = connector(settings).run(&call(42, 40_000.0)).await.expect("the check succeeds");
    assert_eq!(outputs.values["available_limit"], 38000.0);
    assert_eq!(outputs.values["approval_required"], true);
}

#[tokio::test]
async fn basic_and_header_credentials_are_sent() {
    let api = finance().await;
    let url = settings(&api)["url"].clone();

    api.set_credentials(Credentials::Basic { username: "b24act".into(), password: "pw-1".into() });
    let basic =
        json!({ "url": url, "auth": { "basic": { "username": "b24act", "password": "pw-1" } } });
    check(&api, basic, 42, 1.0).await;

    api.set_credentials(Credentials::Header { name: "X-Api-Key".into(), value: "key-1".into() });
    let header =
        json!({ "url": url, "auth": { "header": { "name": "X-Api-Key", "value": "key-1" } } });
    check(&api, header, 42, 1.0).await;
}

// Errors: retryable.

#[tokio::test]
async fn a_finance_system_that_is_down_is_retryable() {
    let api = finance().await;
    api.set(Behaviour { down: true, ..Behaviour::default() });
    let error = failure(&api, settings(&api), &call(42, 1.0)).await;
    assert!(error.is_retryable(), "{error}");
    assert_eq!(error.retry_after(), None);
    assert!(
        error.reason().starts_with(&format!(
            "finance API GET {}/api/v1/companies/42/credit: answered 503 Service Unavailable",
            api.url()
        )),
        "{error}"
    );
    assert!(matches!(source(&error), CreditLimitError::Http(_)));
}

#[tokio::test]
async fn a_maintenance_window_is_retried_until_it_ends() {
    let api = finance().await;
    api.set(Behaviour::healthy().down_between(Duration::ZERO, Duration::from_millis(400)));
    let connector = connector(settings(&api));
    // What the host does, compressed: retry retryable errors until a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut retries = 0;
    let outputs = loop {
        match connector.run(&call(42, 1_000.0)).await {
            Ok(outputs) => break outputs,
            Err(error) => {
                assert!(error.is_retryable(), "{error}");
                assert_reason_contains(&error, "503");
                assert!(Instant::now() < deadline, "still failing: {error}");
                retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(retries >= 1, "the first attempt fell in the window");
    assert_eq!(outputs.values["approval_required"], false);
    assert!(api.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn a_share_of_failures_is_retryable_and_the_next_attempt_can_succeed() {
    let api = finance().await;
    api.set(Behaviour { fail_next: 2, ..Behaviour::default() });
    let connector = connector(settings(&api));
    for _ in 0..2 {
        let error = connector.run(&call(42, 1.0)).await.expect_err("unavailable");
        assert!(error.is_retryable());
    }
    assert!(connector.run(&call(42, 1.0)).await.is_ok());
    assert_eq!(api.counts().unavailable, 2);
}

#[tokio::test]
async fn a_slow_answer_past_the_timeout_is_retryable() {
    let api = finance().await;
    api.set(Behaviour { latency: Duration::from_secs(5), ..Behaviour::default() });
    let mut settings = settings(&api);
    settings["timeout"] = json!("200ms");
    let started = Instant::now();
    let error = failure(&api, settings.clone(), &call(42, 1.0)).await;
    assert!(error.is_retryable(), "{error}");
    assert!(error.reason().ends_with("no answer within 200ms"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The host's attempt timeout bounds it too, when shorter.
    let mut request = call(42, 1.0);
    request.attempt_timeout = Some(Duration::from_millis(150));
    let error = failure(&api, settings, &request).await;
    assert!(error.reason().ends_with("no answer within 150ms"), "{error}");
}

#[tokio::test]
async fn an_unreachable_finance_system_is_retryable() {
    let api = finance().await;
    let settings = settings(&api);
    let token = api.token();
    drop(api);
    let connector = connector(settings);
    let deadline = Instant::now() + Duration::from_secs(5);
    let error = loop {
        // The fake stops accepting shortly after the drop.
        let error = connector.run(&call(42, 1.0)).await.expect_err("nobody answers");
        if error.reason().contains("could not connect") || Instant::now() > deadline {
            break error;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(error.is_retryable(), "{error}");
    assert_reason_contains(&error, "could not connect");
    assert!(!error.reason().contains(&token));
}

#[tokio::test]
async fn rate_limiting_is_retryable_after_retry_after() {
    let api = finance().await;
    api.set(Behaviour { rate_limit: Some(1), ..Behaviour::default() });
    let connector = connector(settings(&api));
    connector.run(&call(42, 1.0)).await.expect("the first request is within the limit");
    let error = connector.run(&call(42, 1.0)).await.expect_err("the second is over it");
    assert!(error.is_retryable(), "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    assert_reason_contains(&error, "answered 429 Too Many Requests");
}

// Errors: fatal.

#[tokio::test]
async fn wrong_credentials_are_fatal_without_the_secret() {
    let api = finance().await;
    let mut settings = settings(&api);
    settings["auth"] = json!({ "bearer": "stale-token-123" });
    let error = failure(&api, settings, &call(42, 1.0)).await;
    assert!(!error.is_retryable());
    assert_eq!(error.reason(), "finance API refused the credentials (401)");
    assert!(!format!("{error:?}").contains("stale-token-123"));
    assert!(matches!(source(&error), CreditLimitError::Credentials { .. }));

    let missing = failure(&api, json!({ "url": settings_url(&api) }), &call(42, 1.0)).await;
    assert_eq!(missing.reason(), "finance API refused the credentials (401)");
}

fn settings_url(api: &FinanceApi) -> Value {
    settings(api)["url"].clone()
}

#[tokio::test]
async fn forbidden_is_a_credentials_error_too() {
    let base = nested_api().await;
    let settings = json!({ "url": format!("{base}/forbidden/{{{{properties.company_id}}}}") });
    let error = connector(settings).run(&call(42, 1.0)).await.expect_err("forbidden");
    assert!(!error.is_retryable());
    assert_eq!(error.reason(), "finance API refused the credentials (403)");
}

#[tokio::test]
async fn an_unknown_company_is_fatal_and_named() {
    let api = finance().await;
    let error = failure(&api, settings(&api), &call(4242, 1.0)).await;
    assert!(!error.is_retryable());
    assert!(
        error.reason().starts_with("company 4242 is unknown to the finance system (404: "),
        "{error}"
    );
    assert!(matches!(source(&error), CreditLimitError::UnknownCompany { .. }));
}

#[tokio::test]
async fn malformed_answers_are_fatal_and_name_what_is_wrong() {
    let api = finance().await;
    let cases = [
        (Malformed::Truncated, "answered 200 OK with a body that is not JSON (application/json)"),
        (Malformed::NotJson, "answered 200 OK with a body that is not JSON (text/html"),
        (
            Malformed::MissingField("current_debt".into()),
            "the finance API's answer has nothing instead of a number for `current_debt` (at \
             `/current_debt`)",
        ),
        (
            Malformed::NonNumeric("credit_limit".into()),
            "the finance API's answer has the text \"n/a\" instead of a number for `credit_limit` \
             (at `/credit_limit`)",
        ),
    ];
    for (malformed, expected) in cases {
        api.update(|b| b.malformed = Some(malformed.clone()));
        let error = failure(&api, settings(&api), &call(42, 1.0)).await;
        assert!(!error.is_retryable(), "{malformed:?}: {error}");
        assert!(error.reason().contains(expected), "{malformed:?}: {error}");
    }
}

#[tokio::test]
async fn a_call_without_usable_inputs_is_fatal_and_asks_nothing() {
    let api = finance().await;
    let document = DocumentId::new("crm", "CCrmDocumentDeal", "DEAL_3");
    let cases = [
        (
            ConnectorRequest::new("j", "c", document.clone()).with_property("amount", 1.0),
            "input `company_id`: the call has none",
        ),
        (
            ConnectorRequest::new("j", "c", document.clone()).with_property("company_id", 42),
            "input `amount`: the call has none",
        ),
        (call(42, "lots"), "input `amount`: expected a number"),
        (call(42, -5.0), "input `amount`: must not be negative"),
        (call(json!([1, 2]), 1.0), "input `company_id`: expected one company id"),
    ];
    for (request, expected) in cases {
        let error = failure(&api, settings(&api), &request).await;
        assert!(!error.is_retryable(), "{error}");
        assert!(error.reason().starts_with(expected), "{error}");
    }
    assert_eq!(api.counts().requests, 0);
}

// Config.

#[test]
fn config_errors_name_the_key() {
    let url = "http://127.0.0.1:9/api/v1/companies/{{properties.company_id}}/credit";
    let cases = [
        (json!({}), "connector: missing field `url`"),
        (
            json!({ "url": url, "limit_field": "/x" }),
            "connector.limit_field: unknown field `limit_field`",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/api/v1/companies/credit" }),
            "connector.url: must contain {{properties.company_id}}",
        ),
        (
            json!({ "url": url, "inputs": { "company_id": "firm" } }),
            "connector.url: must contain {{properties.firm}}",
        ),
        (json!({ "url": "ftp://x/{{properties.company_id}}" }), "connector.url: `ftp` is not http"),
        (json!({ "url": url, "timeout": "0s" }), "connector.timeout: must be longer than zero"),
        (json!({ "url": url, "timeout": "soon" }), "connector.timeout: invalid value"),
        (
            json!({ "url": url, "auth": { "token": "x" } }),
            "connector.auth: unknown variant `token`",
        ),
        (json!({ "url": url, "auth": { "bearer": "" } }), "connector.auth.bearer: is empty"),
        (
            json!({ "url": url, "auth": { "basic": { "username": "a:b", "password": "p" } } }),
            "connector.auth.basic.username: must not contain `:`",
        ),
        (
            json!({ "url": url, "auth": { "header": { "name": "X Key", "value": "v" } } }),
            "connector.auth.header.name: not a valid header name",
        ),
        (
            json!({ "url": url, "fields": { "credit_limit": "limit" } }),
            "connector.fields.credit_limit: `limit` is not a JSON pointer",
        ),
        (
            json!({ "url": url, "rule": { "share_of_available": 1.5 } }),
            "connector.rule.share_of_available: must be above 0 and at most 1",
        ),
        (
            json!({ "url": url, "rule": { "share_of_available": 0 } }),
            "connector.rule.share_of_available: must be above 0",
        ),
        (
            json!({ "url": url, "rule": { "always_above": -1 } }),
            "connector.rule.always_above: must be a number of at least 0",
        ),
        (
            json!({ "url": url, "rule": { "headroom": 0.5 } }),
            "connector.rule.headroom: unknown field `headroom`",
        ),
        (
            json!({ "url": url, "inputs": { "amount": "1sum" } }),
            "connector.inputs.amount: `1sum` is not a property id",
        ),
        (
            json!({ "url": url, "outputs": { "reason": "approval_required" } }),
            "connector.outputs.reason: is another output's property too",
        ),
        (
            json!({ "url": url, "idempotency_header": "bad header" }),
            "connector.idempotency_header: not a valid header name",
        ),
    ];
    for (settings, expected) in cases {
        let message = config_error(settings.clone());
        assert!(message.starts_with(expected), "{settings}: {message}");
    }
}

#[test]
fn secrets_stay_out_of_config_errors_and_debug_output() {
    let url = "http://127.0.0.1:9/c/{{properties.company_id}}?key=query-secret";
    let message = config_error(json!({
        "url": url,
        "auth": { "basic": { "username": "user", "password": "pass\nword" } },
    }));
    assert_eq!(message, "connector.auth.basic.password: contains a control character");

    let config: connectors::credit_limit::CreditLimitConfig = serde_json::from_value(json!({
        "url": url,
        "auth": { "bearer": "bearer-secret" },
    }))
    .expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains("bearer-secret") && !debug.contains("query-secret"), "{debug}");
    let built =
        <connectors::credit_limit::CreditLimitConnector as connectors::http::WithClient>::new(
            config,
        )
        .expect("valid");
    assert!(!format!("{built:?}").contains("secret"));
}
