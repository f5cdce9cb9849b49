//! The shared state of one running host: configuration, store, actions and portal clients.
//! Intake, install, workers and outbox each get an `Arc<Host>`.

use std::num::NonZeroU32;
use std::sync::Arc;

use b24::rest::{AppCredentials, HttpClient, LimiterRegistry, RateLimits};
use b24::secret::ClientSecret;
use connectors::Registry;
use store::Backend;
use store::{Store, StoreKey, StoreOptions};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::health::PortalHealth;
use crate::portals::{Portals, StoreBudget};

/// Everything the host's parts share.
pub struct Host {
    pub config: Config,
    pub store: Arc<Store>,
    pub catalog: Catalog,
    pub portals: Portals,
    /// Portals whose deliveries are paused, and why (`GET /health` shows them).
    pub health: PortalHealth,
    /// This process's name in leases (`lease_owner`), unique per start.
    pub node_id: String,
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store.encryption_key")]
    Key(#[source] store::Error),
    #[error("opening the store at {0}")]
    Store(String, #[source] store::Error),
    #[error("building the connectors")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("building the HTTP client")]
    Http(#[from] b24::rest::Error),
}

impl Host {
    /// Opens the store (creating and migrating it) and builds every connector with `registry`
    /// (the built-in kinds plus any registered from Rust).
    pub async fn open(config: Config, registry: &Registry) -> Result<Host, StartError> {
        let key =
            StoreKey::from_hex(config.store.encryption_key.expose()).map_err(StartError::Key)?;
        let url = config.store.url.expose();
        let store = Store::open(url, StoreOptions::new(key))
            .await
            .map_err(|source| StartError::Store(store::redact_url(url), source))?;
        let catalog = Catalog::build(&config, registry)?;
        let limits = RateLimits {
            per_second: config.delivery.rate_per_second,
            burst: NonZeroU32::new(config.delivery.burst).unwrap_or(NonZeroU32::MIN),
        };
        let store = Arc::new(store);
        // Several nodes share a PostgreSQL store, and so each portal's request budget; on
        // SQLite this process is the only one calling its portals.
        let limiters = match store.backend() {
            Backend::Postgres => {
                LimiterRegistry::shared(limits, Arc::new(StoreBudget::new(&store)))
            }
            Backend::Sqlite => LimiterRegistry::new(limits),
        };
        let portals = Portals::new(
            store.clone(),
            HttpClient::new()?,
            limiters,
            AppCredentials {
                client_id: config.app.client_id.clone(),
                client_secret: ClientSecret::new(config.app.client_secret.expose()),
                auth_server: config.app.auth_server.clone(),
            },
        );
        let node_id = format!("{}-{}", hostname(), std::process::id());
        Ok(Host { config, store, catalog, portals, health: PortalHealth::default(), node_id })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "b24act".to_owned())
}
