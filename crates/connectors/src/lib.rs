//! Connectors: the work a b24act action does, behind one small trait, and the built-in kinds.
//!
//! - [`connector`]: the [`Connector`] trait, [`ConnectorRequest`] in, [`Outputs`] or a
//!   [`ConnectorError`] (retryable or fatal, decided once) out.
//! - [`registry`]: kinds by name (`http` built in, yours from Rust), built from an action's
//!   `[actions.connector]` table with errors that name the key.
//! - [`template`]: `{{properties.x}}` templates, escaped for URLs and headers or kept typed in JSON.
//! - [`mapping`]: return values picked from a JSON response by JSON pointer.
//! - [`http`]: the `http` connector.
//! - [`onec`]: the `onec` connector (1C:Enterprise through its standard OData interface).
//! - [`credit_limit`]: the `credit_limit` connector (a credit check against a finance API).
//! - [`telegram`]: the `telegram` connector (a message from a bot to a chat).
//! - [`sharepoint`]: the `sharepoint` connector (a document in a SharePoint library via Graph).
//! - [`secret`]: secrets in settings, kept out of `Debug` and reasons.
//!
//! A connector knows nothing of the host's HTTP server, its store or Bitrix24: it gets the call's
//! typed properties and document id and returns JSON values by return-property id.
//!
//! # A custom connector
//!
//! ```
//! use connectors::{BoxFuture, Connector, ConnectorError, ConnectorRequest, Outputs, Registry};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct DiscountConfig { percent: f64 }
//!
//! /// Returns the discounted price of `amount` (a `double` input) as `price`.
//! struct Discount { percent: f64 }
//!
//! impl Connector for Discount {
//!     fn run<'a>(&'a self, call: &'a ConnectorRequest) -> BoxFuture<'a, Result<Outputs, ConnectorError>> {
//!         Box::pin(async move {
//!             let Some(amount) = call.properties.get("amount").and_then(|v| v.as_f64()) else {
//!                 return Err(ConnectorError::fatal("the call has no number `amount`"));
//!             };
//!             let price = amount * (100.0 - self.percent) / 100.0;
//!             Ok(Outputs::new().with("price", price).with_log(format!("{}% off", self.percent)))
//!         })
//!     }
//! }
//!
//! let mut registry = connectors::Registry::new(); // `http` built in
//! registry.register("discount", |c: DiscountConfig| Ok(Discount { percent: c.percent }));
//! // What the host does with `[actions.connector] kind = "discount", percent = 10`:
//! let connector = registry.build(&serde_json::json!({ "kind": "discount", "percent": 10 }))?;
//! let call = ConnectorRequest::new("job-1", "quote", connectors::DocumentId::new("crm", "CCrmDocumentDeal", "DEAL_1"))
//!     .with_property("amount", 200.0);
//! let outputs = tokio::runtime::Runtime::new()?.block_on(connector.run(&call))?;
//! assert_eq!(outputs.values["price"], 180.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod connector;
pub mod credit_limit;
pub mod http;
pub mod mapping;
pub mod onec;
pub mod registry;
pub mod secret;
pub mod sharepoint;
pub mod telegram;
pub mod template;

pub use config::ConfigError;
pub use connector::{
    BoxError, BoxFuture, Connector, ConnectorError, ConnectorRequest, Contract, DocumentId, Outputs,
};
pub use registry::Registry;
