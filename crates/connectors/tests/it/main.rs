//! Integration tests of the connectors crate: the renderer, the mapping, the registry, and the
//! `http` connector against a fake finance API on 127.0.0.1.

mod credit_limit;
mod fake_api;
mod http_config;
mod http_errors;
mod http_request;
mod mapping;
mod onec;
mod registry;
mod sharepoint;
mod telegram;
mod template;

use std::sync::Arc;

use connectors::{Connector, ConnectorError, ConnectorRequest, DocumentId, Registry};
use serde_json::{Value, json};

/// A call of job `job-1` to the activity `code` on deal `DEAL_7`, without properties.
pub fn deal_call(code: &str) -> ConnectorRequest {
    ConnectorRequest::new("job-1", code, DocumentId::new("crm", "CCrmDocumentDeal", "DEAL_7"))
}

/// A call as the host would hand it over: company 42, amount 1500.5, two managers, on a deal.
pub fn call() -> ConnectorRequest {
    deal_call("check_credit_limit")
        .with_property("company_id", 42)
        .with_property("amount", 1500.5)
        .with_property("managers", json!(["user_1", "user_7"]))
        .with_property("urgent", true)
}

/// An `http` connector from the settings of an `[actions.connector]` table (without `kind`).
pub fn http(settings: Value) -> Arc<dyn Connector> {
    build_http(settings).unwrap_or_else(|e| panic!("config is valid: {e}"))
}

pub fn build_http(mut settings: Value) -> Result<Arc<dyn Connector>, connectors::ConfigError> {
    settings["kind"] = json!("http");
    Registry::new().build(&settings)
}

/// The config error's text for these `http` settings.
pub fn config_error(settings: Value) -> String {
    match build_http(settings) {
        Ok(_) => panic!("config should be rejected"),
        Err(e) => e.to_string(),
    }
}

/// A connector of any kind from a whole `[actions.connector]` table (with `kind`).
pub fn build_connector(settings: &Value) -> Result<Arc<dyn Connector>, connectors::ConfigError> {
    Registry::new().build(settings)
}

/// [`build_connector`] for settings that are valid.
pub fn connector(settings: &Value) -> Arc<dyn Connector> {
    build_connector(settings).unwrap_or_else(|e| panic!("config is valid: {e}"))
}

/// The config error's text for settings that [`build_connector`] must reject.
pub fn rejected(settings: &Value) -> String {
    match build_connector(settings) {
        Ok(_) => panic!("config should be rejected"),
        Err(e) => e.to_string(),
    }
}

/// `base` with each key of the object `changes` set to its value.
pub fn with_settings(base: &Value, changes: Value) -> Value {
    let Value::Object(changes) = changes else { panic!("changes are an object: {changes}") };
    let mut settings = base.clone();
    for (key, value) in changes {
        settings[key] = value;
    }
    settings
}

/// `base` with `key` set to `value`.
pub fn with_setting(base: &Value, key: &str, value: Value) -> Value {
    with_settings(base, json!({ key: value }))
}

/// [`rejected`]'s text for `base` with `key` set to `value`.
pub fn rejected_with(base: &Value, key: &str, value: Value) -> String {
    rejected(&with_setting(base, key, value))
}

/// Asserts that no text the error shows (its reason, its `Debug`, the text and `Debug` of each
/// of its sources) holds any of `secrets`.
pub fn assert_hides(error: &ConnectorError, secrets: &[&str]) {
    let mut texts = vec![error.to_string(), format!("{error:?}")];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        texts.extend([cause.to_string(), format!("{cause:?}")]);
        source = cause.source();
    }
    for text in texts {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

/// Runs `request` and returns the error it must fail with, which must be fatal.
pub async fn fatal_error(
    connector: &Arc<dyn Connector>,
    request: &ConnectorRequest,
) -> ConnectorError {
    error_of_class(connector, request, false).await
}

/// [`fatal_error`] of `request` on a connector from `base` with `key` set to `value`.
pub async fn fatal_with(
    base: &Value,
    key: &str,
    value: Value,
    request: &ConnectorRequest,
) -> ConnectorError {
    fatal_error(&connector(&with_setting(base, key, value)), request).await
}

/// Runs `request` and returns the error it must fail with, which must be retryable.
pub async fn retryable_error(
    connector: &Arc<dyn Connector>,
    request: &ConnectorRequest,
) -> ConnectorError {
    error_of_class(connector, request, true).await
}

async fn error_of_class(
    connector: &Arc<dyn Connector>,
    request: &ConnectorRequest,
    retryable: bool,
) -> ConnectorError {
    let error = connector.run(request).await.expect_err("the call fails");
    assert_eq!(error.is_retryable(), retryable, "is_retryable: {error}");
    error
}

/// Asserts that the error's reason contains `text`, showing the whole error when it does not.
pub fn assert_reason_contains(error: &ConnectorError, text: &str) {
    assert!(error.reason().contains(text), "{error}");
}

/// The connector's own error `E` behind a [`ConnectorError`].
pub fn own_error<E: std::error::Error + 'static>(error: &ConnectorError) -> &E {
    std::error::Error::source(error).and_then(|source| source.downcast_ref::<E>()).unwrap_or_else(
        || panic!("the source is the connector's own {}", std::any::type_name::<E>()),
    )
}
