//! The Bitrix24 REST client: credentials, envelopes, error classes, token refresh, `batch`, the
//! per-portal rate limiter, domain moves and typed business-process methods (protocol doc §1,
//! §3–5).
//!
//! The host builds the shared parts once and one [`RestClient`] per portal:
//!
//! ```no_run
//! # async fn demo(call: b24::incoming::ActivityCall) -> Result<(), b24::rest::Error> {
//! use std::sync::Arc;
//! use b24::rest::*;
//! use b24::secret::ClientSecret;
//!
//! let http = HttpClient::new()?;                                  // once per process
//! let limiters = LimiterRegistry::new(RateLimits::STANDARD);      // once per process
//! let app = AppCredentials {
//!     client_id: "app.1".into(),
//!     client_secret: ClientSecret::new("s"),
//!     auth_server: BITRIX_AUTH_SERVER.parse().expect("a URL"), // configured, never from an event
//! };
//! // The tokens that came with the call (or the ones the host stored):
//! let Some(tokens) = OAuthTokens::from_auth(&call.auth) else { return Ok(()) };
//! let client = RestClient::builder(Credentials::OAuth { tokens, app })
//!     .http_client(http)
//!     .limiter_from(&limiters)
//!     .token_sink(Arc::new(DiscardTokens))
//!     .build()?;
//! let sent = client.event_send(&EventSend::new("token").value("approved", "Y")).await;
//! match sent {
//!     Ok(_) => {}
//!     Err(e) if e.is_retryable() => { /* later, not before e.retry_at() */ }
//!     Err(e) => { /* permanent or token: give up with e's reason */ }
//! }
//! # Ok(()) }
//! ```

mod batch;
mod bizproc;
mod client;
mod credentials;
mod envelope;
mod error;
mod limiter;
mod oauth;
mod observer;

pub use batch::{BatchCommand, BatchEntry, BatchOutcome, BatchResults, MAX_BATCH_COMMANDS};
pub use bizproc::{
    ACTIVITY_LOG_METHOD, ActionKind, ActivityChanges, ActivityDefinition, ActivityFilter, AppInfo,
    EVENT_SEND_METHOD, EventSend, FilterRule, LocalizedText, OrderedMap, PropertyDefinition,
    PropertyType, YesNo,
};
pub use client::{
    DEFAULT_TIMEOUT, DomainMove, HttpClient, MAX_ANSWER_BYTES, MoveSink, RestClient,
    RestClientBuilder,
};
pub use credentials::{
    AppCredentials, BITRIX_AUTH_SERVER, Credentials, OAuthTokens, TokenPlacement, WebhookUrl,
};
pub use envelope::{Response, Time, php_map, php_object};
pub use error::{ApiError, Error, ErrorClass, RefreshError};
pub use limiter::{
    Bucket, BudgetError, BudgetFuture, JITTER_ALLOWANCE, LimiterRegistry, PortalLimiter,
    RateLimits, SharedBudget,
};
pub use oauth::{
    CheckOutFuture, CheckedOut, DiscardTokens, Grant, KeptTokens, RefreshedTokens, SinkError,
    SinkFuture, TokenSink, redeem_refresh_token,
};
pub use observer::ClientObserver;
