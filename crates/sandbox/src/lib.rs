//! A local deployment on loopback, the one set-up the demo, the end-to-end tests and the bench
//! share: the emulator with one portal, the app registered on it with its install URL, a host
//! (in this process with [`Deployment`], or a `b24act serve` child the caller starts) trusting
//! the emulator as its auth server, and the install done the real way (ONAPPINSTALL → refresh
//! at the auth server → `bizproc.activity.add`), waited for until every action is registered;
//! [`host_config`] writes the host's configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use b24::report::ErrorChain;
use b24_emulator::{AppSpec, Emulator, EmulatorConfig, PortalSpec};

pub mod host_config;
mod portal_log;

use host::app::{self, Running};
use host::config::{Config, WorkersConfig};

pub use host_config::{
    ActionTable, EXAMPLE, FinanceCreditCheck, HostConfig, action_toml, config_duration,
    connector_table, example, finance_credit_connector, fresh_encryption_key, on_origin,
    reference_action, reference_action_against, retry_settings, retry_table, set, toml_escape,
};
pub use portal_log::tokens_sent_more_than_once;

/// How long the host may take to register its actions after ONAPPINSTALL.
pub const REGISTRATION_WITHIN: Duration = Duration::from_secs(30);

/// The app's OAuth identity on the emulator (and in the host's `[app]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppIdentity {
    pub client_id: String,
    pub client_secret: String,
}

impl AppIdentity {
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> AppIdentity {
        AppIdentity { client_id: client_id.into(), client_secret: client_secret.into() }
    }
}

/// Where a local host lives: its own address, and the auth server it trusts (the emulator's
/// main listener, `[app] auth_server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub listen: SocketAddr,
    pub auth_server: String,
}

/// The emulator with one portal: the Bitrix24 side of a deployment.
pub struct Sandbox {
    pub emulator: Emulator,
    /// The portal's domain (`127.0.0.1:PORT`).
    pub domain: String,
}

impl Sandbox {
    /// Starts the emulator on loopback and creates the portal.
    pub async fn start(portal: PortalSpec) -> anyhow::Result<Sandbox> {
        let emulator =
            Emulator::start(EmulatorConfig::default()).await.context("starting the emulator")?;
        let domain = emulator.create_portal(portal).await.context("creating the portal")?.domain;
        Ok(Sandbox { emulator, domain })
    }

    /// The emulator's auth server (`http://127.0.0.1:P/`), for the host's `[app] auth_server`.
    pub fn auth_server(&self) -> String {
        format!("{}/", self.emulator.control_url())
    }

    /// A host at `listen` that trusts this emulator's auth server.
    pub fn site(&self, listen: SocketAddr) -> Site {
        Site { listen, auth_server: self.auth_server() }
    }

    /// Registers the OAuth app, with the host at `host` receiving ONAPPINSTALL.
    pub fn register_app(&self, app: &AppIdentity, host: SocketAddr) {
        self.emulator.register_app(AppSpec {
            client_id: Some(app.client_id.clone()),
            client_secret: Some(app.client_secret.clone()),
            install_url: Some(format!("http://{host}{}", host::routes::INSTALL)),
            // Only what the host needs: a call needing more fails in every end-to-end test.
            scope: host::portals::REQUIRED_SCOPES.join(","),
            ..AppSpec::default()
        });
    }

    /// Installs the app on the portal (the host must be listening) and waits until every one of
    /// `codes` is registered.
    pub async fn install(
        &self,
        client_id: &str,
        codes: &[&str],
        within: Duration,
    ) -> anyhow::Result<()> {
        let installed = self
            .emulator
            .install_app(&self.domain, client_id)
            .await
            .context("installing the app")?;
        ensure!(
            installed.event_status == Some(200),
            "the host answered ONAPPINSTALL with {:?}",
            installed.event_status
        );
        self.wait_registered(codes, within).await
    }

    /// Waits until every one of `codes` is registered on the portal.
    pub async fn wait_registered(&self, codes: &[&str], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let registered = self.emulator.registrations(&self.domain)?;
            let missing: Vec<&str> = codes
                .iter()
                .copied()
                .filter(|code| !registered.iter().any(|r| r.code == *code))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("not registered within {within:?}: {}", missing.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A listener on a free loopback port, and its address.
pub async fn loopback_listener() -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
    let addr = listener.local_addr().context("reading the listener's address")?;
    Ok((listener, addr))
}

/// The portal, and the host running in this process with the app installed.
pub struct Deployment {
    pub sandbox: Sandbox,
    pub running: Running,
    /// The host's configuration file, as text (to start the host again on the same store).
    pub config_text: String,
    /// Where the host listens.
    pub listen: SocketAddr,
}

impl Deployment {
    /// Starts the portal, binds the host's port, builds the configuration with `config` (given
    /// the host's site), starts the host with `registry`'s connectors, installs the app and
    /// waits until every one of `codes` is registered.
    pub async fn start(
        portal: PortalSpec,
        app: &AppIdentity,
        codes: &[&str],
        config: impl FnOnce(&Site) -> String,
        registry: &connectors::Registry,
    ) -> anyhow::Result<Deployment> {
        let sandbox = Sandbox::start(portal).await?;
        let (listener, listen) = loopback_listener().await?;
        let config_text = config(&sandbox.site(listen));
        sandbox.register_app(app, listen);
        let running = start_host(listener, &config_text, registry).await?;
        let deployment = Deployment { sandbox, running, config_text, listen };
        deployment.sandbox.install(&app.client_id, codes, REGISTRATION_WITHIN).await?;
        Ok(deployment)
    }

    /// A deployment of one action, as a connector's example or test wants it: an unlimited
    /// portal, and a host with 4 workers holding a job for `lease`, on a SQLite file in a fresh
    /// temp dir (`prefix`), running `action` (its `[[actions]]` table) as `code`, installed.
    pub async fn one_action(
        prefix: &str,
        app: &AppIdentity,
        code: &str,
        action: String,
        lease: Duration,
    ) -> anyhow::Result<(Deployment, TempDir)> {
        let temp = TempDir::new(prefix).context("creating a temp dir")?;
        let store_url = format!("sqlite:{}", temp.path().join("b24act.db").display());
        let config = |site: &Site| {
            HostConfig {
                workers: WorkersConfig { concurrency: 4, lease },
                actions: vec![action],
                ..HostConfig::new(app, site, &store_url)
            }
            .to_toml()
        };
        let portal = PortalSpec { unlimited: true, ..PortalSpec::default() };
        let registry = connectors::Registry::new();
        let deployment = Deployment::start(portal, app, &[code], config, &registry).await?;
        Ok((deployment, temp))
    }

    pub fn emulator(&self) -> &Emulator {
        &self.sandbox.emulator
    }

    pub fn domain(&self) -> &str {
        &self.sandbox.domain
    }

    pub fn store(&self) -> &store::Store {
        &self.running.host.store
    }
}

/// Starts the host on `listener` with the configuration `config_text`.
pub async fn start_host(
    listener: tokio::net::TcpListener,
    config_text: &str,
    registry: &connectors::Registry,
) -> anyhow::Result<Running> {
    let config = Config::from_toml(config_text, "the local configuration", std::iter::empty())
        .context("the local configuration")?;
    app::start_on(listener, config, registry).await.context("starting the host")
}

/// A directory of our own under the system's temp dir, removed when dropped unless kept.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// `<temp>/<prefix>-<pid>-<random>`.
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let unique = format!("{prefix}-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(error = %ErrorChain(&error), path = %self.path.display(), "cannot remove a temp dir");
        }
    }
}
