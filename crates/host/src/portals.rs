//! One REST client per installed portal, built from the tokens stored at install, sharing the
//! process's HTTP client and per-portal rate limiters; refreshed tokens and domain moves go back
//! to the store. Tokens go only to a portal's verified `client_endpoint` and to the configured
//! auth server, the client secret only to the latter (docs/protocol.md §4.4).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use b24::rest::{
    AppCredentials, Credentials, DomainMove, Grant, HttpClient, LimiterRegistry, MoveSink,
    OAuthTokens, RefreshError, RefreshedTokens, RestClient, SinkFuture, TokenSink,
};
use b24::secret::{AccessToken, RefreshToken};
use store::{InstallationStatus, NewInstallation, Store};
use url::Url;

use crate::clock;

/// Why no client could be had for a portal.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("portal {0} is not installed")]
    Unknown(String),
    #[error("portal {0} uninstalled the app")]
    Uninstalled(String),
    #[error("portal {member_id}: stored endpoint `{url}` is not a URL")]
    BadEndpoint { member_id: String, url: String },
    #[error("reading the installation")]
    Store(#[from] store::Error),
    #[error("building the REST client")]
    Client(#[source] Box<b24::rest::Error>),
}

/// How long the auth server may take to vouch for an install event's refresh token.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// The clients, by `member_id`.
#[derive(Clone)]
pub struct Portals {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    http: HttpClient,
    limiters: LimiterRegistry,
    /// The app's id, secret and the configured auth server: the one place its secret goes.
    app: AppCredentials,
    clients: Mutex<HashMap<String, RestClient>>,
}

impl Portals {
    pub fn new(
        store: Arc<Store>,
        http: HttpClient,
        limiters: LimiterRegistry,
        app: AppCredentials,
    ) -> Portals {
        Portals {
            inner: Arc::new(Inner {
                store,
                http,
                limiters,
                app,
                clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Asks the configured auth server what an install event's refresh token is: the portal it
    /// belongs to and a rotated token pair, or a refusal (docs/protocol.md §4.4). Nothing is
    /// sent anywhere else.
    pub async fn verify(&self, refresh_token: &RefreshToken) -> Result<Grant, RefreshError> {
        b24::rest::redeem_refresh_token(
            &self.inner.http,
            &self.inner.app,
            refresh_token,
            VERIFY_TIMEOUT,
        )
        .await
    }

    /// The client for an installed portal, built on first use from the stored installation.
    pub async fn client(&self, member_id: &str) -> Result<RestClient, PortalError> {
        if let Some(client) = self.cached(member_id) {
            return Ok(client);
        }
        let installation = self
            .inner
            .store
            .installation(member_id)
            .await?
            .ok_or_else(|| PortalError::Unknown(member_id.to_owned()))?;
        if installation.status == InstallationStatus::Uninstalled {
            return Err(PortalError::Uninstalled(member_id.to_owned()));
        }
        let url = |text: &str| {
            Url::parse(text).map_err(|_| PortalError::BadEndpoint {
                member_id: member_id.to_owned(),
                url: text.to_owned(),
            })
        };
        let tokens = OAuthTokens {
            client_endpoint: url(&installation.client_endpoint)?,
            access_token: AccessToken::new(installation.access_token),
            refresh_token: installation.refresh_token.map(RefreshToken::new),
            expires: Some(installation.expires_at / 1000),
            member_id: installation.member_id,
            domain: installation.domain,
        };
        let sinks = Arc::new(StoreSinks { store: self.inner.store.clone() });
        let client =
            RestClient::builder(Credentials::OAuth { tokens, app: self.inner.app.clone() })
                .http_client(self.inner.http.clone())
                .limiter_from(&self.inner.limiters)
                .token_sink(sinks.clone())
                .move_sink(sinks)
                .build()
                .map_err(|e| PortalError::Client(Box::new(e)))?;
        let mut clients =
            self.inner.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(clients.entry(member_id.to_owned()).or_insert(client).clone())
    }

    /// Forgets a portal's client, so the next use reads the installation again (after an
    /// install, update or uninstall changed it).
    pub fn forget(&self, member_id: &str) {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(member_id);
    }

    fn cached(&self, member_id: &str) -> Option<RestClient> {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(member_id)
            .cloned()
    }
}

/// Writes what the client learns back to the store.
struct StoreSinks {
    store: Arc<Store>,
}

impl TokenSink for StoreSinks {
    fn store<'a>(&'a self, tokens: &'a RefreshedTokens) -> SinkFuture<'a> {
        Box::pin(async move {
            let now = clock::now_ms();
            // An old auth server may send no new refresh token: the stored one stays valid.
            let refresh = match &tokens.refresh_token {
                Some(token) => Some(token.expose().to_owned()),
                None => {
                    self.store.installation(&tokens.member_id).await?.and_then(|i| i.refresh_token)
                }
            };
            let expires_at = tokens.expires.map_or(now + 3_600_000, |s| s.saturating_mul(1000));
            let refresh = refresh.unwrap_or_default();
            self.store
                .update_tokens(
                    &tokens.member_id,
                    tokens.access_token.expose(),
                    &refresh,
                    expires_at,
                    now,
                )
                .await?;
            tracing::info!(portal = %tokens.member_id, "stored refreshed tokens");
            Ok(())
        })
    }
}

impl MoveSink for StoreSinks {
    /// Remembers a renamed portal's new domain (protocol §5.1), in the background: the client
    /// already sends to the new host.
    fn moved(&self, change: &DomainMove) {
        let Some(member_id) = change.member_id.clone() else { return };
        let store = self.store.clone();
        let change = change.clone();
        tokio::spawn(async move {
            let outcome = async {
                let Some(installation) = store.installation(&member_id).await? else {
                    return Ok(());
                };
                let client_endpoint = installation.client_endpoint.replacen(
                    &change.old_domain,
                    &change.new_domain,
                    1,
                );
                let moved = NewInstallation {
                    member_id: installation.member_id,
                    domain: change.new_domain.clone(),
                    client_endpoint,
                    server_endpoint: installation.server_endpoint,
                    application_token: installation.application_token,
                    access_token: installation.access_token,
                    refresh_token: installation.refresh_token,
                    expires_at: installation.expires_at,
                };
                store.upsert_installation(&moved, clock::now_ms()).await
            };
            match outcome.await {
                Ok(()) => {
                    tracing::warn!(portal = %member_id, from = %change.old_domain, to = %change.new_domain, "portal moved; stored its new domain")
                }
                Err(error) => {
                    tracing::error!(portal = %member_id, error = %error, "portal moved, but its new domain could not be stored")
                }
            }
        });
    }
}
