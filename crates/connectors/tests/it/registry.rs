//! The registry: built-in and custom kinds by name, built from `[actions.connector]` tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use connectors::{
    BoxFuture, ConfigError, Connector, ConnectorError, ConnectorRequest, Outputs, Registry,
};
use serde::Deserialize;
use serde_json::json;

use crate::call;

/// Echoes one property under another name, failing (retryably) the first `flaky` attempts.
struct Echo {
    from: String,
    to: String,
    flaky: u32,
    runs: AtomicU32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoConfig {
    from: String,
    to: String,
    #[serde(default)]
    flaky: u32,
}

impl Connector for Echo {
    fn run<'a>(
        &'a self,
        request: &'a ConnectorRequest,
    ) -> BoxFuture<'a, Result<Outputs, ConnectorError>> {
        Box::pin(async move {
            if self.runs.fetch_add(1, Ordering::SeqCst) < self.flaky {
                return Err(ConnectorError::retryable("not yet")
                    .with_retry_after(std::time::Duration::from_secs(1)));
            }
            let value = request
                .properties
                .get(&self.from)
                .cloned()
                .ok_or_else(|| ConnectorError::fatal(format!("no `{}`", self.from)))?;
            Ok(Outputs::new().with(self.to.clone(), value).with_log("echoed"))
        })
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("echo", |c: EchoConfig| {
        if c.to.is_empty() {
            return Err(ConfigError::new("to", "must not be empty"));
        }
        Ok(Echo { from: c.from, to: c.to, flaky: c.flaky, runs: AtomicU32::new(0) })
    });
    registry
}

#[tokio::test]
async fn a_custom_kind_is_built_from_its_table_and_runs() {
    let connector: Arc<dyn Connector> = registry()
        .build(&json!({ "kind": "echo", "from": "amount", "to": "price", "flaky": 1 }))
        .unwrap();
    let first = connector.run(&call()).await.unwrap_err();
    assert!(first.is_retryable());
    assert_eq!(first.retry_after(), Some(std::time::Duration::from_secs(1)));
    let outputs = connector.run(&call()).await.unwrap();
    assert_eq!(outputs, Outputs::new().with("price", 1500.5).with_log("echoed"));
    assert_eq!(connector.contract(), None);
}

#[test]
fn custom_config_errors_name_the_key() {
    let error = |table| registry().build(&table).err().map(|e| e.to_string()).unwrap();
    assert_eq!(
        error(json!({ "kind": "echo", "from": "a", "to": "" })),
        "connector.to: must not be empty"
    );
    assert_eq!(
        error(json!({ "kind": "echo", "from": "a", "to": "b", "flaky": "x" })),
        "connector.flaky: invalid type: string \"x\", expected u32"
    );
    assert!(
        error(json!({ "kind": "echo", "to": "b" })).starts_with("connector: missing field `from`")
    );
}

#[test]
fn kinds_are_listed_and_unknown_or_missing_kinds_are_errors() {
    let registry = registry();
    assert_eq!(
        registry.kinds().collect::<Vec<_>>(),
        ["credit_limit", "echo", "http", "onec", "sharepoint", "telegram"]
    );
    let error = |table| registry.build(&table).err().map(|e| e.to_string()).unwrap();
    assert_eq!(
        error(json!({ "kind": "htp" })),
        "connector.kind: unknown connector `htp`; known: credit_limit, echo, http, onec, sharepoint, telegram"
    );
    assert_eq!(
        error(json!({ "url": "x" })),
        "connector.kind: missing; say which connector runs the action"
    );
    assert_eq!(error(json!({ "kind": 1 })), "connector.kind: expected a string");
    assert_eq!(error(json!("http")), "connector: expected a table with `kind` and the settings");
}

#[tokio::test]
async fn a_ready_instance_takes_no_settings_and_can_replace_a_builtin() {
    let mut registry = Registry::empty();
    let echo: Arc<dyn Connector> =
        Arc::new(Echo { from: "amount".into(), to: "x".into(), flaky: 0, runs: AtomicU32::new(0) });
    registry.register_instance("http", echo);
    let connector = registry.build(&json!({ "kind": "http" })).unwrap();
    assert_eq!(connector.run(&call()).await.unwrap().values["x"], json!(1500.5));
    assert_eq!(
        registry.build(&json!({ "kind": "http", "url": "x" })).err().map(|e| e.to_string()),
        Some("connector.url: this connector takes no settings".into())
    );
}

#[test]
fn connector_errors_keep_class_reason_and_source() {
    let io = std::io::Error::other("disk on fire");
    let error = ConnectorError::retryable("could not write").with_source(io);
    assert_eq!(error.to_string(), "could not write");
    assert_eq!(error.reason(), "could not write");
    assert!(std::error::Error::source(&error).is_some());
    let fatal =
        ConnectorError::fatal("bad input").with_retry_after(std::time::Duration::from_secs(3));
    assert!(!fatal.is_retryable());
    assert_eq!(fatal.retry_after(), None, "a fatal error has no retry delay");
}
