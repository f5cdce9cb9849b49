//! What this node knows of each installed portal: who it is when it posts (its
//! `application_token`, [`Portals::authenticate`]) and how to call it back (a REST client built
//! from the tokens stored at install, sharing the process's HTTP client and per-portal rate
//! limiters; refreshed tokens and domain moves go back to the store). Both are remembered
//! together and forgotten together ([`Portals::forget`]). Tokens go only to a portal's verified
//! `client_endpoint` and to the configured auth server, the client secret only to the latter
//! (docs/protocol.md §4.4).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use b24::incoming::{ApplicationToken, quoted};
use b24::report::ErrorChain;

use b24::rest::{
    AppCredentials, Bucket, BudgetFuture, CheckOutFuture, CheckedOut, Credentials, DomainMove,
    ErrorClass, Grant, HttpClient, KeptTokens, LimiterRegistry, MoveSink, OAuthTokens, RateLimits,
    RefreshError, RefreshedTokens, RestClient, SharedBudget, SinkFuture, TokenSink,
};
use b24::secret::{AccessToken, RefreshToken};
use store::{InstallationStatus, NewInstallation, Store, TokenLock};
use subtle::ConstantTimeEq;
use url::Url;

use crate::clock;
use crate::console::activity::PortalActivity;
use crate::console::metrics::PortalMetrics;

/// Why no client could be had for a portal, or a portal's call or event was not taken as its.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("portal {0} is not installed")]
    Unknown(String),
    #[error("portal {0} uninstalled the app")]
    Uninstalled(String),
    #[error("portal {0}: the application_token does not match the installation")]
    WrongApplicationToken(String),
    #[error("portal {member_id}: stored endpoint `{url}` is not a URL")]
    BadEndpoint { member_id: String, url: String },
    #[error("reading the installation")]
    Store(#[from] store::Error),
    #[error("building the REST client")]
    Client(#[source] Box<b24::rest::Error>),
}

/// Why a user's token from a settings-form POST was not taken as this app's on its portal.
#[derive(Debug, thiserror::Error)]
pub enum UserTokenError {
    #[error(transparent)]
    Portal(#[from] PortalError),
    /// The portal answered, and not with this app's information.
    #[error("the portal refused the token")]
    Refused(#[source] Box<b24::rest::Error>),
    /// The portal could not be asked now (network trouble, 5xx, its rate limit).
    #[error("the portal could not be asked about the token")]
    Unreachable(#[source] Box<b24::rest::Error>),
    /// `app.info` named another local app.
    #[error("the token belongs to app `{0}`, not this one")]
    OtherApp(String),
    /// The portal's allowance of checks is spent ([`USER_TOKEN_CHECKS_BURST`]); nothing was
    /// sent.
    #[error("too many sign-ins to check on this portal; the next in {} s", retry_in.as_secs().max(1))]
    TooMany { retry_in: Duration },
}

/// The scopes the app must be granted on a portal for everything this host calls there:
/// `bizproc` for registrations (`bizproc.activity.*`, `bizproc.robot.*`, with the settings
/// form's placement), `bizproc.event.send` and `bizproc.activity.log`; `batch` and `app.info`
/// are basic methods every app has. No connector calls the portal. Every end-to-end deployment
/// (`sandbox`) registers its app with exactly these, so a call needing more fails there.
pub const REQUIRED_SCOPES: &[&str] = &["bizproc"];

/// How long the portal may take to say whose a settings form's token is.
const USER_TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many settings-form sign-ins one portal may have checked back to back, and how fast the
/// allowance comes back ([`USER_TOKEN_CHECK_EVERY`]). Each check is an `app.info` paid from the
/// portal's REST budget, which delivering results shares, and anyone who knows a `member_id`
/// can send a POST with a made-up token: without this, a flood of them would starve the
/// portal's workflows of their results. A person opening settings dialogs needs far less.
pub const USER_TOKEN_CHECKS_BURST: u32 = 10;
/// One more settings-form check per portal is allowed this often.
pub const USER_TOKEN_CHECK_EVERY: Duration = Duration::from_secs(6);

/// How long the auth server may take to vouch for an install event's refresh token.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a portal's `application_token` is trusted from memory before the store is asked
/// again. Install events on this node forget it at once; this bounds staleness across nodes.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(30);

/// Where [`Portals::authenticate`] reads the installation it checks against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// What this node remembers, up to [`AUTH_CACHE_TTL`] old: for activity calls, which come
    /// in floods and must be answered fast.
    Remembered,
    /// The store, now: for an uninstall, which stops a portal's work for good and must not be
    /// refused on a token another node has replaced since.
    Stored,
}

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
    /// By `member_id`; an entry goes whole ([`Portals::forget`]).
    known: Mutex<HashMap<String, KnownPortal>>,
    /// What the clients saw lately, for the console.
    activity: Arc<PortalActivity>,
    /// Each installed portal's allowance of settings-form checks, by `member_id`.
    user_token_checks: Mutex<HashMap<String, Bucket>>,
}

/// What this node remembers of one portal.
#[derive(Default)]
struct KnownPortal {
    /// Its REST client, once built.
    client: Option<RestClient>,
    /// The `application_token` of its active installation, and when it was read.
    application_token: Option<(ApplicationToken, Instant)>,
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
                known: Mutex::new(HashMap::new()),
                activity: Arc::default(),
                user_token_checks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// What every portal's client saw lately (refusals for a spent budget, refreshes, waits).
    pub fn activity(&self) -> &PortalActivity {
        &self.inner.activity
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

    /// Whether `access_token` — a user's, from a settings-form POST, which nothing signs
    /// (docs/protocol.md §4.4) — is this app's token on the installed portal `member_id`:
    /// `app.info` with it, sent to the stored `client_endpoint` only, never to an address the
    /// request named, and paced by the portal's rate budget. The token is used for this one
    /// call and not kept. A local app's `app.info` names its `client_id` as `CODE`, so another
    /// local app's token is refused; a Market app's `CODE` is its own name (INFERRED), so there
    /// the portal's acceptance is the check. Returns the installation.
    pub async fn check_user_token(
        &self,
        member_id: &str,
        access_token: AccessToken,
    ) -> Result<NewInstallation, UserTokenError> {
        let portal = self.installed(member_id).await?;
        // After the lookup: only installed portals get an allowance, so their number bounds
        // the map.
        self.take_user_token_check(member_id)?;
        let client_endpoint =
            Url::parse(&portal.client_endpoint).map_err(|_| PortalError::BadEndpoint {
                member_id: member_id.to_owned(),
                url: portal.client_endpoint.clone(),
            })?;
        let tokens = OAuthTokens {
            client_endpoint,
            access_token,
            refresh_token: None,
            expires: None,
            member_id: portal.member_id.clone(),
            domain: portal.domain.clone(),
        };
        let client =
            RestClient::builder(Credentials::OAuth { tokens, app: self.inner.app.clone() })
                .http_client(self.inner.http.clone())
                .limiter_from(&self.inner.limiters)
                .timeout(USER_TOKEN_TIMEOUT)
                .follow_moves(false)
                .build()
                .map_err(|e| PortalError::Client(Box::new(e)))?;
        let info = match client.app_info().await {
            Ok(response) => response.result,
            Err(error) if error.class() == ErrorClass::Retryable => {
                return Err(UserTokenError::Unreachable(Box::new(error)));
            }
            Err(error) => return Err(UserTokenError::Refused(Box::new(error))),
        };
        let own = &self.inner.app.client_id;
        match info.code {
            Some(code) if own.starts_with("local.") && code != *own => {
                Err(UserTokenError::OtherApp(code))
            }
            _ => Ok(portal),
        }
    }

    /// Takes one settings-form check from `member_id`'s allowance, or says when the next one
    /// comes.
    fn take_user_token_check(&self, member_id: &str) -> Result<(), UserTokenError> {
        let mut checks =
            self.inner.user_token_checks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        checks
            .entry(member_id.to_owned())
            .or_insert_with(Bucket::empty)
            .admit(1.0 / USER_TOKEN_CHECK_EVERY.as_secs_f64(), f64::from(USER_TOKEN_CHECKS_BURST))
            .map_err(|retry_in| UserTokenError::TooMany { retry_in })
    }

    /// What the stored installation of `member_id` says about the portal, if the app is
    /// installed there: [`PortalError::Unknown`] without one, [`PortalError::Uninstalled`] after
    /// an uninstall.
    async fn installed(&self, member_id: &str) -> Result<NewInstallation, PortalError> {
        let installation = self
            .inner
            .store
            .installation(member_id)
            .await?
            .ok_or_else(|| PortalError::Unknown(member_id.to_owned()))?;
        if installation.status == InstallationStatus::Uninstalled {
            return Err(PortalError::Uninstalled(member_id.to_owned()));
        }
        Ok(installation.portal)
    }

    /// The client for an installed portal, built on first use from the stored installation.
    pub async fn client(&self, member_id: &str) -> Result<RestClient, PortalError> {
        if let Some(client) = self.cached(member_id) {
            return Ok(client);
        }
        let portal = self.installed(member_id).await?;
        let url = |text: &str| {
            Url::parse(text).map_err(|_| PortalError::BadEndpoint {
                member_id: member_id.to_owned(),
                url: text.to_owned(),
            })
        };
        let tokens = OAuthTokens {
            client_endpoint: url(&portal.client_endpoint)?,
            access_token: AccessToken::new(portal.access_token),
            refresh_token: portal.refresh_token.map(RefreshToken::new),
            expires: Some(portal.expires_at / 1000),
            member_id: portal.member_id,
            domain: portal.domain,
        };
        let sinks = Arc::new(StoreSinks { store: self.inner.store.clone() });
        let client =
            RestClient::builder(Credentials::OAuth { tokens, app: self.inner.app.clone() })
                .http_client(self.inner.http.clone())
                .limiter_from(&self.inner.limiters)
                .token_sink(sinks.clone())
                .move_sink(sinks)
                .observer(PortalMetrics::new(member_id, self.inner.activity.clone()))
                .build()
                .map_err(|e| PortalError::Client(Box::new(e)))?;
        let mut known = self.known();
        let entry = known.entry(member_id.to_owned()).or_default();
        Ok(entry.client.get_or_insert(client).clone())
    }

    /// Whether a call or event really comes from `member_id`: a portal with the app installed,
    /// presenting its installation's `application_token` (compared in constant time; §4.4).
    pub async fn authenticate(
        &self,
        member_id: &str,
        presented: &ApplicationToken,
        lookup: Lookup,
    ) -> Result<(), PortalError> {
        let remembered = match lookup {
            Lookup::Remembered => self.remembered_application_token(member_id),
            Lookup::Stored => None,
        };
        let expected = match remembered {
            Some(expected) => expected,
            None => {
                let portal = self.installed(member_id).await?;
                let expected = ApplicationToken::new(portal.application_token);
                // Only installed portals are remembered: one that installs through another node
                // must not be refused from a stale "unknown".
                let mut known = self.known();
                known.entry(member_id.to_owned()).or_default().application_token =
                    Some((expected.clone(), Instant::now()));
                expected
            }
        };
        let equal: bool = expected.expose().as_bytes().ct_eq(presented.expose().as_bytes()).into();
        if !equal {
            return Err(PortalError::WrongApplicationToken(member_id.to_owned()));
        }
        Ok(())
    }

    /// Forgets all this node remembers of a portal — its client and its `application_token` —
    /// so the next use reads the installation again (after an install, update or uninstall
    /// changed it, or its tokens stopped working).
    pub fn forget(&self, member_id: &str) {
        self.known().remove(member_id);
    }

    fn cached(&self, member_id: &str) -> Option<RestClient> {
        self.known().get(member_id).and_then(|known| known.client.clone())
    }

    fn remembered_application_token(&self, member_id: &str) -> Option<ApplicationToken> {
        let known = self.known();
        let (token, read_at) = known.get(member_id)?.application_token.as_ref()?;
        (read_at.elapsed() < AUTH_CACHE_TTL).then(|| token.clone())
    }

    fn known(&self) -> MutexGuard<'_, HashMap<String, KnownPortal>> {
        // Whole fields are replaced under the lock: a poisoned map is consistent.
        self.inner.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The answer to a call or event that [`Portals::authenticate`] did not take as its portal's,
/// logged once here; `what` names it in the log line ("a call", "ONAPPUNINSTALL"). The portal
/// named is unauthenticated input, so it is quoted (docs/protocol.md §4.4).
pub(crate) fn refusal(what: &str, member_id: &str, error: &PortalError) -> (StatusCode, String) {
    match error {
        PortalError::Unknown(_) | PortalError::Uninstalled(_) => {
            tracing::warn!("refused {what} from a portal where the app is not installed");
            (
                StatusCode::UNAUTHORIZED,
                format!(
                    "auth[member_id]: portal `{}` has not installed this app",
                    quoted(member_id)
                ),
            )
        }
        PortalError::WrongApplicationToken(_) => {
            tracing::warn!("refused {what} with a wrong application_token");
            (
                StatusCode::FORBIDDEN,
                "auth[application_token]: does not match the installation".to_owned(),
            )
        }
        PortalError::Store(_) | PortalError::BadEndpoint { .. } | PortalError::Client(_) => {
            tracing::error!(error = %ErrorChain(error), "cannot read installations");
            (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable".to_owned())
        }
    }
}

/// Writes what the client learns back to the store, and lends it the stored tokens for a
/// refresh under the store's token lock — the row lock every node takes on PostgreSQL — so one
/// node refreshes a portal's tokens and the others take the tokens it stored.
struct StoreSinks {
    store: Arc<Store>,
}

/// A portal's stored tokens, lent to a refresh under the store's lock.
struct StoredLoan<'a>(TokenLock<'a>);

impl<'a> CheckedOut<'a> for StoredLoan<'a> {
    fn tokens(&self) -> Option<KeptTokens> {
        self.0.tokens().map(|stored| KeptTokens {
            access_token: AccessToken::new(stored.access_token.clone()),
            refresh_token: stored.refresh_token.clone().map(RefreshToken::new),
            expires: Some(stored.expires_at / 1000),
        })
    }

    fn save(self: Box<Self>, tokens: RefreshedTokens) -> SinkFuture<'a> {
        Box::pin(async move {
            let now = clock::now_ms();
            let refresh = match (&tokens.refresh_token, self.0.tokens()) {
                (Some(token), _) => token.expose().to_owned(),
                // An old auth server may send no new refresh token: the stored one stays valid.
                (None, Some(stored)) => stored.refresh_token.clone().unwrap_or_default(),
                (None, None) => String::new(),
            };
            let expires_at = expires_at_ms(&tokens, now);
            self.0.save(tokens.access_token.expose(), &refresh, expires_at, now).await?;
            tracing::info!(portal = %tokens.member_id, "stored refreshed tokens");
            Ok(())
        })
    }
}

/// When refreshed tokens expire, in Unix ms: as the auth server said, else in an hour (§4.1).
fn expires_at_ms(tokens: &RefreshedTokens, now: i64) -> i64 {
    tokens.expires.map_or(now + 3_600_000, |s| s.saturating_mul(1000))
}

impl TokenSink for StoreSinks {
    fn check_out<'a>(&'a self, member_id: &'a str) -> CheckOutFuture<'a> {
        Box::pin(async move {
            let lock = self.store.lock_tokens(member_id).await?;
            Ok(Some(Box::new(StoredLoan(lock)) as Box<dyn CheckedOut<'a> + 'a>))
        })
    }

    /// Tokens refreshed without a loan (the client asks for one first, so this is the
    /// fallback): stored the same way, under the same lock.
    fn store<'a>(&'a self, tokens: &'a RefreshedTokens) -> SinkFuture<'a> {
        Box::pin(async move {
            let lock = self.store.lock_tokens(&tokens.member_id).await?;
            Box::new(StoredLoan(lock)).save(tokens.clone()).await
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
                let mut moved = installation.portal;
                moved.client_endpoint =
                    moved.client_endpoint.replacen(&change.old_domain, &change.new_domain, 1);
                moved.domain = change.new_domain.clone();
                store.upsert_installation(&moved, clock::now_ms()).await
            };
            match outcome.await {
                Ok(()) => {
                    tracing::warn!(portal = %member_id, from = %change.old_domain, to = %change.new_domain, "portal moved; stored its new domain")
                }
                Err(error) => {
                    tracing::error!(portal = %member_id, error = %ErrorChain(&error), "portal moved, but its new domain could not be stored")
                }
            }
        });
    }
}

/// Each portal's request budget in the store, shared by every node on the same PostgreSQL
/// database (see `store::Store::reserve_request`).
#[derive(Debug)]
pub struct StoreBudget {
    store: Arc<Store>,
}

impl StoreBudget {
    pub fn new(store: &Arc<Store>) -> StoreBudget {
        StoreBudget { store: store.clone() }
    }
}

impl SharedBudget for StoreBudget {
    fn reserve<'a>(&'a self, portal: &'a str, limits: RateLimits) -> BudgetFuture<'a, Duration> {
        Box::pin(async move {
            let interval_ms = limits.interval().as_secs_f64() * 1000.0;
            let wait_ms =
                self.store.reserve_request(portal, interval_ms, limits.capacity()).await?;
            Ok(Duration::from_secs_f64(wait_ms / 1000.0))
        })
    }

    fn fill<'a>(&'a self, portal: &'a str, limits: RateLimits) -> BudgetFuture<'a, ()> {
        Box::pin(async move {
            let interval_ms = limits.interval().as_secs_f64() * 1000.0;
            self.store.fill_budget(portal, interval_ms, limits.capacity()).await?;
            Ok(())
        })
    }
}
