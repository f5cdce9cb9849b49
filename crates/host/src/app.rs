//! Assembling and running the host: one HTTP server (intake, install handler, health; its
//! connections kept in bounds by `edge`), the operator console on a listener of its own (when
//! `console.enabled`), the workers and the outbox — each as `server.roles` says — in one
//! process. Stopping drains: work stops being claimed at once, calls are still
//! answered for `server.drain_grace` (`/health` says `draining`), then the server stops.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use b24::report::ErrorChain;
use connectors::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Role};
use crate::console::{self, Console};
use crate::edge::{self, Edge};
use crate::health;
use crate::install::{self, Installer};
use crate::intake::{self, Intake};
use crate::loops::{Wakeups, relay_wakeups};
use crate::state::{Host, StartError};
use crate::{outbox, settings_form, worker};

/// A started host. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    /// Where the HTTP server listens (the configured address, with the real port if it was 0).
    pub addr: SocketAddr,
    /// Where the console listens (with the real port if it was 0); `None` when disabled.
    pub console: Option<SocketAddr>,
    pub host: Arc<Host>,
    /// Stops the workers, the outbox and the relay of wake-ups.
    stop_work: CancellationToken,
    /// Stops the HTTP servers (calls and console), after the drain.
    stop_serving: CancellationToken,
    work: JoinSet<()>,
    server: JoinSet<()>,
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Boxed: it is large, and every `Result` of this module carries it.
    #[error(transparent)]
    Start(Box<StartError>),
    #[error(
        "listening on {addr}, the {key} (in use? {variable}=127.0.0.1:0 takes a free port)",
        key = listener.key(),
        variable = listener.variable()
    )]
    Listen {
        listener: Listener,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Which of the host's listeners an address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Server,
    Console,
}

impl Listener {
    /// Its configuration key.
    pub fn key(self) -> &'static str {
        match self {
            Listener::Server => "server.listen",
            Listener::Console => "console.listen",
        }
    }

    /// The environment variable that overrides it.
    pub fn variable(self) -> &'static str {
        match self {
            Listener::Server => "B24ACT__SERVER__LISTEN",
            Listener::Console => "B24ACT__CONSOLE__LISTEN",
        }
    }
}

impl From<StartError> for RunError {
    fn from(error: StartError) -> Self {
        RunError::Start(Box::new(error))
    }
}

/// Opens the store, builds the connectors, binds `server.listen`, and starts the server, the
/// workers and the outbox. Actions are registered in the background on every installed portal
/// that does not have this configuration's registrations yet, so a changed configuration
/// reaches the portals at start.
pub async fn start(config: Config, registry: &Registry) -> Result<Running, RunError> {
    let (listener, _) = bind(Listener::Server, config.server.listen)?;
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
    let addr = listener.local_addr().map_err(|source| RunError::Listen {
        listener: Listener::Server,
        addr: listen,
        source,
    })?;
    let console_listener = if config.console.enabled {
        Some(bind(Listener::Console, config.console.listen)?)
    } else {
        None
    };
    let host = Arc::new(Host::open(config, registry).await?);

    let stop_work = CancellationToken::new();
    let stop_serving = CancellationToken::new();
    let wakeups = Arc::new(Wakeups::default());
    let roles = &host.config.server;
    let intake = roles.has(Role::Intake).then(|| {
        let intake = Intake::start(host.clone(), wakeups.clone());
        (intake, Arc::new(Installer { host: host.clone() }))
    });
    let router = router(host.clone(), intake);

    let mut server = JoinSet::new();
    warn_if_exposed_over_http(addr, &host.config);
    let edge = Edge::new(&host.config.server);
    server.spawn(edge::serve(listener, router, edge, stop_serving.clone()));
    let console = match console_listener {
        Some((listener, console_addr)) => {
            let read_only = host.config.console.token.is_none();
            tracing::info!(addr = %console_addr, read_only, "b24act console serving");
            let routes = console::router(Console::new(host.clone()));
            server.spawn(edge::serve(listener, routes, edge, stop_serving.clone()));
            Some(console_addr)
        }
        None => None,
    };
    let mut work = JoinSet::new();
    if roles.has(Role::Worker) {
        work.spawn(worker::run(host.clone(), wakeups.clone(), stop_work.clone()));
    }
    if roles.has(Role::Outbox) {
        work.spawn(outbox::run(host.clone(), wakeups.clone(), stop_work.clone()));
        work.spawn(register_everywhere(host.clone()));
    }
    work.spawn(relay_wakeups(host.clone(), wakeups, stop_work.clone()));
    tracing::info!(%addr, node = %host.node_id, roles = ?roles.roles,
        actions = host.catalog.iter().count(), "b24act serving");
    Ok(Running { addr, console, host, stop_work, stop_serving, work, server })
}

/// The `which` listener on `addr`, and its address with the real port; a refusal names the
/// listener's key and how to take a free port.
pub fn bind(
    which: Listener,
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), RunError> {
    let listen = |source| RunError::Listen { listener: which, addr, source };
    let listener = edge::listen(addr).map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    Ok((listener, bound))
}

impl Running {
    /// Drains and stops: stops claiming work at once (running attempts and deliveries finish),
    /// keeps answering calls for `server.drain_grace` while `/health` says `draining` — every
    /// call taken meanwhile is stored, for this node's next start or another node — then stops
    /// the server, waits for all and closes the store.
    pub async fn shutdown(mut self) {
        self.host.health.start_draining();
        self.stop_work.cancel();
        let grace = self.host.config.server.drain_grace;
        if self.host.config.server.has(Role::Intake) && !grace.is_zero() {
            tracing::info!(?grace, "draining: calls are still answered, no work is claimed");
            tokio::time::sleep(grace).await;
        }
        self.stop_serving.cancel();
        while self.work.join_next().await.is_some() {}
        while self.server.join_next().await.is_some() {}
        self.host.store.close().await;
    }

    /// Completes when the host was told to stop.
    pub fn cancellation(&self) -> CancellationToken {
        self.stop_work.clone()
    }
}

/// Every route of the host: the intake's and the install handler's when this node takes calls,
/// and `/health`. Every body is read whole within `server.body_timeout` and
/// `server.max_body_bytes` before a handler runs; the protocol routes take forms only.
pub fn router(host: Arc<Host>, intake: Option<(Arc<Intake>, Arc<Installer>)>) -> Router {
    let forms_only = middleware::from_fn(edge::require_form);
    let mut routes = Router::new();
    if let Some((intake, installer)) = intake {
        routes = routes
            .merge(intake::router(intake).layer(forms_only.clone()))
            .merge(install::router(installer).layer(forms_only))
            .merge(settings_form::router(host.clone()));
    }
    edge::bounded(routes.merge(health::router(host.clone())), Edge::new(&host.config.server))
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

/// Syncs the registrations of every installed portal whose stored registrations are not this
/// configuration's (a new, changed or removed action, a new public URL, `keep_removed_actions`
/// switched): actions are added, updated and — unless kept — deleted ([`crate::registrations`]);
/// portals already current cost no request. An install or update event syncs whatever is
/// stored (an update wipes registrations, §1.1).
async fn register_everywhere(host: Arc<Host>) {
    let installations = match host.store.installations().await {
        Ok(installations) => installations,
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot list installations to register actions");
            return;
        }
    };
    let fingerprint = install::registrations_fingerprint(&host);
    for installation in
        installations.into_iter().filter(|i| i.status == store::InstallationStatus::Active)
    {
        let member_id = installation.portal.member_id;
        match host.store.registrations(&member_id).await {
            Ok(Some(stored)) if stored == fingerprint => {
                tracing::info!(portal = %member_id, "registrations current; none made");
            }
            Ok(_) => {
                tokio::spawn(install::register_with_retries(host.clone(), member_id));
            }
            Err(error) => {
                tracing::warn!(portal = %member_id, error = %ErrorChain(&error), "cannot read the stored registrations; registering");
                tokio::spawn(install::register_with_retries(host.clone(), member_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_names_the_listener_and_how_to_take_a_free_one() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind(Listener::Console, addr).unwrap_err();
        let shown = error.to_string();
        assert!(shown.starts_with(&format!("listening on {addr}, the console.listen ")), "{shown}");
        assert!(shown.contains("B24ACT__CONSOLE__LISTEN=127.0.0.1:0"), "{shown}");
        let error = bind(Listener::Server, addr).unwrap_err();
        assert!(error.to_string().contains("server.listen"), "{error}");
    }
}
