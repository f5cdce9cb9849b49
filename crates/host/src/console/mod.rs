//! The operator console: its own listener (`[console] listen`, default `127.0.0.1:8081`),
//! served by the edge's accept loop with the same connection deadlines, cap and body limits as
//! the main one, and stopped with it. What it answers is in [`router`]; who may ask, and what
//! every answer carries, in [`auth`]; Prometheus metrics in [`metrics`]; the pages in
//! [`pages`], what they do in [`actions`]. docs/console.md is the
//! operator's guide.

pub mod actions;
pub mod activity;
pub mod auth;
pub mod metrics;
pub mod pages;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::Host;
use crate::edge::{self, Edge};

pub use auth::{CSRF_FIELD, Operator, Refused, csrf_token};

/// What the console's handlers share.
pub struct Console {
    pub host: Arc<Host>,
    /// The process's recorder ([`metrics::recorder`]).
    pub metrics: &'static PrometheusHandle,
}

impl Console {
    /// The console of `host`; installs the process's metrics recorder if it is not yet.
    pub fn new(host: Arc<Host>) -> Arc<Console> {
        Arc::new(Console { host, metrics: metrics::recorder() })
    }
}

/// Every route of the console. Route sets are merged here, before the layers, so that each one
/// is behind them: the security headers on every answer, then [`auth::guard`] — credentials,
/// the read-only rule without a token, and the cross-site checks, on the headers alone — and
/// only then the body, read whole within `server.body_timeout` and `server.max_body_bytes`
/// (so no one without the token makes the console buffer a body). Handlers read the
/// [`Operator`] from the request's extensions.
pub fn router(console: Arc<Console>) -> Router {
    let config = &console.host.config;
    let access = Arc::new(auth::Access::new(config.console.token.clone()));
    let routes =
        Router::new().merge(metrics::router(console.clone())).merge(pages::router(console.clone()));
    edge::bounded(routes, Edge::new(&config.server))
        .layer(middleware::from_fn_with_state(access, auth::guard))
        .layer(middleware::from_fn(auth::security_headers))
}
