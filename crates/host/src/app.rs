//! Assembling and running the host: one HTTP server (intake, install handler, health; its
//! connections kept in bounds by `edge`), the workers and the outbox, in one process, stopped
//! together by one cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use b24::report::ErrorChain;
use connectors::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::edge::{self, Edge};
use crate::health;
use crate::install::{self, Installer};
use crate::intake::{self, Intake};
use crate::loops::Wakeups;
use crate::state::{Host, StartError};
use crate::{outbox, worker};

/// A started host. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    /// Where the HTTP server listens (the configured address, with the real port if it was 0).
    pub addr: SocketAddr,
    pub host: Arc<Host>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the store, builds the connectors, binds `server.listen`, and starts the server, the
/// workers and the outbox. Actions are registered again on every installed portal in the
/// background, so a changed configuration reaches the portals at start.
pub async fn start(config: Config, registry: &Registry) -> Result<Running, RunError> {
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RunError::Listen { addr: listen, source })?;
    start_on(listener, config, registry).await
}

/// [`start`] on a listener the caller bound (tests bind port 0 first, so the configured
/// `public_url` can name the real port).
pub async fn start_on(
    listener: tokio::net::TcpListener,
    config: Config,
    registry: &Registry,
) -> Result<Running, RunError> {
    let listen = config.server.listen;
    let addr = listener.local_addr().map_err(|source| RunError::Listen { addr: listen, source })?;
    let host = Arc::new(Host::open(config, registry).await?);

    let cancel = CancellationToken::new();
    let wakeups = Arc::new(Wakeups::default());
    let intake = Intake::start(host.clone(), wakeups.clone());
    let installer = Arc::new(Installer { host: host.clone() });
    let router = router(host.clone(), intake, installer);

    let mut tasks = JoinSet::new();
    warn_if_exposed_over_http(addr, &host.config);
    tasks.spawn(edge::serve(listener, router, Edge::new(&host.config.server), cancel.clone()));
    tasks.spawn(worker::run(host.clone(), wakeups.clone(), cancel.clone()));
    tasks.spawn(outbox::run(host.clone(), wakeups, cancel.clone()));
    tasks.spawn(register_everywhere(host.clone()));
    tracing::info!(%addr, node = %host.node_id, actions = host.catalog.iter().count(), "b24act serving");
    Ok(Running { addr, host, cancel, tasks })
}

impl Running {
    /// Stops taking calls, lets running attempts and deliveries finish, and waits for all.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.host.store.close().await;
    }

    /// Completes when the host was told to stop.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Every route of the host. Every body is read whole within `server.body_timeout` and
/// `server.max_body_bytes` before a handler runs; the protocol routes take forms only.
pub fn router(host: Arc<Host>, intake: Arc<Intake>, installer: Arc<Installer>) -> Router {
    let limit = host.config.server.max_body_bytes;
    let forms_only = middleware::from_fn(edge::require_form);
    Router::new()
        .merge(intake::router(intake).layer(forms_only.clone()))
        .merge(install::router(installer).layer(forms_only))
        .merge(health::router(host.clone()))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(Edge::new(&host.config.server), edge::body_deadline))
}

/// Portals send tokens with every call: a host reachable beyond loopback should be behind
/// TLS, which an `http://` public URL says it is not.
fn warn_if_exposed_over_http(addr: SocketAddr, config: &Config) {
    if !addr.ip().is_loopback() && config.app.public_url.scheme() == "http" {
        tracing::warn!(
            %addr,
            public_url = %config.app.public_url,
            "listening beyond loopback with an http:// public_url: portals' tokens would cross the network in clear; put TLS in front and use https://"
        );
    }
}

async fn register_everywhere(host: Arc<Host>) {
    match host.store.installations().await {
        Ok(installations) => {
            for installation in
                installations.into_iter().filter(|i| i.status == store::InstallationStatus::Active)
            {
                tokio::spawn(install::register_with_retries(
                    host.clone(),
                    installation.portal.member_id,
                ));
            }
        }
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot list installations to register actions")
        }
    }
}
