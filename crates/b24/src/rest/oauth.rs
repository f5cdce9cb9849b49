//! OAuth token refresh (protocol doc §4.1): one refresh at a time per portal, new tokens handed
//! to the host through a [`TokenSink`].
//!
//! The flow: a call fails with 401 `expired_token` → [`TokenState::refresh`] → one
//! `GET <auth_server>oauth/token/?grant_type=refresh_token&…` → the call is repeated once. The
//! auth server is the configured one ([`AppCredentials::auth_server`]), never one an event named
//! (docs/protocol.md §4.4). [`redeem_refresh_token`] is the same grant used as proof: the host
//! verifies an install event with it. Concurrent callers that hit `expired_token` with the same token wait on one gate; the
//! first one refreshes and bumps a generation counter, the others see the new generation and
//! reuse its token (or its failure) instead of refreshing again. Every refresh issues a new
//! refresh token and invalidates the old one, so two refreshes racing would lose one of them.
//!
//! Processes that share a portal's tokens (the host's nodes) take turns through the sink: a
//! sink that keeps the tokens where all of them see it ([`TokenSink::check_out`]) lends them
//! under a hold no other refresher gets. Under it the client re-reads the tokens as kept: if
//! they are no longer the ones that expired, another process refreshed them, and the client
//! takes those instead of spending the rotated refresh token again — one `/oauth/token/`
//! request per expiry across all of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

use super::client::HttpClient;
use super::credentials::{AppCredentials, OAuthTokens, host_of};
use super::error::{ApiError, Error, RefreshError};
use super::observer::ClientObserver;
use crate::report::ErrorChain;
use crate::secret::{AccessToken, RefreshToken};

/// What a sink returns: a boxed future, so the trait stays object-safe.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Any error the host's sink reports; the client logs it and carries on with the new token.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where the host keeps tokens. Called after every successful refresh, before the call that
/// needed it is repeated, and awaited: once it returns, the old refresh token is useless and
/// the new one must be the one stored (the host stores it encrypted).
pub trait TokenSink: Send + Sync {
    /// Persist the tokens of `portal` (its `member_id`).
    fn store<'a>(&'a self, tokens: &'a RefreshedTokens) -> SinkFuture<'a>;

    /// Lends the tokens of portal `member_id` as kept now, under a hold no other refresher —
    /// in this process or another sharing the keeping — gets until the loan is saved or
    /// dropped. The default keeps nothing shared (`None`): the client refreshes from the tokens
    /// it holds and hands the new ones to [`TokenSink::store`].
    fn check_out<'a>(&'a self, member_id: &'a str) -> CheckOutFuture<'a> {
        let _ = member_id;
        Box::pin(async { Ok(None) })
    }
}

/// What [`TokenSink::check_out`] returns.
pub type CheckOutFuture<'a> = Pin<
    Box<dyn Future<Output = Result<Option<Box<dyn CheckedOut<'a> + 'a>>, SinkError>> + Send + 'a>,
>;

/// A portal's tokens lent by [`TokenSink::check_out`].
pub trait CheckedOut<'a>: Send {
    /// The tokens as kept when they were lent; `None` when the portal has none (not installed).
    fn tokens(&self) -> Option<KeptTokens>;

    /// Keeps a refresh's tokens and ends the loan.
    fn save(self: Box<Self>, tokens: RefreshedTokens) -> SinkFuture<'a>;
}

/// A portal's tokens as the host keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptTokens {
    pub access_token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    /// Unix time the access token expires.
    pub expires: Option<i64>,
}

/// A sink that only drops the tokens; for clients whose tokens need not outlive the process.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardTokens;

impl TokenSink for DiscardTokens {
    fn store<'a>(&'a self, _tokens: &'a RefreshedTokens) -> SinkFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// A sink that forwards every refresh into a channel, for hosts that persist on another task.
impl TokenSink for tokio::sync::mpsc::UnboundedSender<RefreshedTokens> {
    fn store<'a>(&'a self, tokens: &'a RefreshedTokens) -> SinkFuture<'a> {
        let sent = self.send(tokens.clone()).map_err(|e| -> SinkError { Box::new(e) });
        Box::pin(async move { sent })
    }
}

/// The token set an `/oauth/token/` refresh returned (§4.1), as handed to the [`TokenSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshedTokens {
    /// The portal these tokens belong to (stable across domain moves).
    pub member_id: String,
    /// The portal's domain as the client knows it now.
    pub domain: String,
    pub access_token: AccessToken,
    /// The new refresh token. If an old portal's auth server sent none, the previous one is kept.
    pub refresh_token: Option<RefreshToken>,
    /// Unix time the new access token expires.
    pub expires: Option<i64>,
    pub scope: Option<String>,
    pub user_id: Option<u64>,
}

/// The access token a request was sent with, and which generation of tokens it came from.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub token: AccessToken,
    pub generation: u64,
    /// When the call took it: a refresh that failed after this moment is this call's failure too.
    pub taken_at: Instant,
}

/// The live tokens of one OAuth client, and the single-flight refresh gate.
pub(crate) struct TokenState {
    app: AppCredentials,
    member_id: String,
    sink: Arc<dyn TokenSink>,
    /// Told the outcome of every refresh request.
    observer: Option<Arc<dyn ClientObserver>>,
    live: Mutex<Live>,
    /// Held for the whole refresh, including the sink: refreshes of one portal never overlap.
    gate: tokio::sync::Mutex<()>,
}

struct Live {
    access_token: AccessToken,
    refresh_token: Option<RefreshToken>,
    expires: Option<i64>,
    generation: u64,
    /// The last failed refresh: the generation it tried to replace, when, and why.
    failure: Option<(u64, Instant, Arc<RefreshError>)>,
}

impl TokenState {
    pub(crate) fn new(
        tokens: &OAuthTokens,
        app: AppCredentials,
        sink: Arc<dyn TokenSink>,
        observer: Option<Arc<dyn ClientObserver>>,
    ) -> Self {
        TokenState {
            app,
            member_id: tokens.member_id.clone(),
            sink,
            observer,
            live: Mutex::new(Live {
                access_token: tokens.access_token.clone(),
                refresh_token: tokens.refresh_token.clone(),
                expires: tokens.expires,
                generation: 0,
                failure: None,
            }),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn member_id(&self) -> &str {
        &self.member_id
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding this lock cannot leave `Live` half-written (only whole-field
        // assignments happen under it), so a poisoned lock is still consistent.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token to send now.
    pub(crate) fn current(&self) -> IssuedToken {
        let live = self.live();
        IssuedToken {
            token: live.access_token.clone(),
            generation: live.generation,
            taken_at: Instant::now(),
        }
    }

    /// Replaces the tokens from outside (e.g. fresh `auth[...]` from an activity call).
    pub(crate) fn replace(
        &self,
        access_token: AccessToken,
        refresh_token: Option<RefreshToken>,
        expires: Option<i64>,
    ) {
        self.adopt(access_token, refresh_token, expires);
    }

    /// Renews the token that `stale` was, unless another caller already did: then its result is
    /// reused — the new token, or the failure of a refresh that ended after this call took its
    /// token (calls that overlapped a failed refresh share it; later calls try afresh).
    /// `domain` is reported to the sink.
    pub(crate) async fn refresh(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        method: &str,
        stale: &IssuedToken,
        domain: &str,
    ) -> Result<IssuedToken, Error> {
        let _gate = self.gate.lock().await;
        let refresh_token = {
            let live = self.live();
            if live.generation != stale.generation {
                tracing::debug!(member_id = %self.member_id, "token already refreshed by another call");
                return Ok(IssuedToken {
                    token: live.access_token.clone(),
                    generation: live.generation,
                    taken_at: Instant::now(),
                });
            }
            if let Some((generation, at, failure)) = &live.failure
                && *generation == stale.generation
                && *at >= stale.taken_at
            {
                return Err(Error::Refresh { method: method.to_owned(), source: failure.clone() });
            }
            live.refresh_token.clone()
        };
        let loan = match self.sink.check_out(&self.member_id).await {
            Ok(loan) => loan,
            Err(error) => {
                tracing::warn!(member_id = %self.member_id, error = %ErrorChain(error.as_ref()),
                    "cannot take the kept tokens for a refresh; not refreshing");
                let source = Arc::new(RefreshError::Keeping(error));
                return Err(Error::Refresh { method: method.to_owned(), source });
            }
        };
        let refresh_token = match loan.as_ref().map(|loan| loan.tokens()) {
            // Nothing shared: refresh what this client holds.
            None => refresh_token,
            Some(None) => return Err(Error::NoRefreshToken { method: method.to_owned() }),
            Some(Some(kept)) if kept.access_token != stale.token => {
                // Another process (or an install) renewed the tokens since this call took its
                // own: use theirs.
                tracing::info!(member_id = %self.member_id, "tokens already renewed elsewhere; taking them");
                return Ok(self.adopt(kept.access_token, kept.refresh_token, kept.expires));
            }
            Some(Some(kept)) => kept.refresh_token,
        };
        let Some(refresh_token) = refresh_token else {
            return Err(Error::NoRefreshToken { method: method.to_owned() });
        };

        tracing::info!(member_id = %self.member_id, "refreshing the access token");
        let answer = request_refresh(http, timeout, &self.app, &refresh_token).await;
        let fresh = answer.and_then(|fresh| fresh.for_portal(&self.member_id));
        if let Some(observer) = &self.observer {
            observer.token_refreshed(fresh.as_ref().map(|_| ()));
        }
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(failure) => {
                tracing::warn!(member_id = %self.member_id, error = %ErrorChain(&failure), "token refresh failed");
                let failure = Arc::new(failure);
                self.live().failure = Some((stale.generation, Instant::now(), failure.clone()));
                return Err(Error::Refresh { method: method.to_owned(), source: failure });
            }
        };

        let issued =
            self.adopt(fresh.access_token.clone(), fresh.refresh_token.clone(), fresh.expires);
        let stored = RefreshedTokens {
            member_id: self.member_id.clone(),
            domain: domain.to_owned(),
            access_token: fresh.access_token,
            refresh_token: fresh.refresh_token.or(Some(refresh_token)),
            expires: fresh.expires,
            scope: fresh.scope,
            user_id: fresh.user_id,
        };
        let kept = match loan {
            Some(loan) => loan.save(stored).await,
            None => self.sink.store(&stored).await,
        };
        if let Err(error) = kept {
            tracing::error!(member_id = %self.member_id, error = %ErrorChain(error.as_ref()),
                "the token sink failed; the new tokens live in memory only");
        }
        Ok(issued)
    }

    /// Makes `access_token` (and `refresh_token`, when there is one) the live tokens, a new
    /// generation; returns the token to send now.
    fn adopt(
        &self,
        access_token: AccessToken,
        refresh_token: Option<RefreshToken>,
        expires: Option<i64>,
    ) -> IssuedToken {
        let mut live = self.live();
        live.access_token = access_token;
        if refresh_token.is_some() {
            live.refresh_token = refresh_token;
        }
        live.expires = expires;
        live.generation += 1;
        live.failure = None;
        IssuedToken {
            token: live.access_token.clone(),
            generation: live.generation,
            taken_at: Instant::now(),
        }
    }
}

/// The token JSON of §4.1. Numbers may arrive as strings from PHP, hence the lenient types.
/// Holds the raw tokens, so it has no `Debug`; they become secret types in [`Fresh`].
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    expires: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    user_id: Option<i64>,
    /// The portal the token belongs to, as the auth server knows it (§4.1).
    #[serde(default)]
    member_id: Option<String>,
    #[serde(default)]
    client_endpoint: Option<String>,
    #[serde(default)]
    server_endpoint: Option<String>,
}

struct Fresh {
    access_token: AccessToken,
    refresh_token: Option<RefreshToken>,
    expires: Option<i64>,
    scope: Option<String>,
    user_id: Option<u64>,
    member_id: Option<String>,
    client_endpoint: Option<String>,
    server_endpoint: Option<String>,
}

impl Fresh {
    /// These tokens, if the auth server did not name a portal other than `member_id`: a refresh
    /// token that comes back as another portal's is not this portal's to use.
    fn for_portal(self, member_id: &str) -> Result<Fresh, RefreshError> {
        match &self.member_id {
            Some(named) if named != member_id => Err(RefreshError::OtherPortal {
                expected: member_id.to_owned(),
                named: named.clone(),
            }),
            _ => Ok(self),
        }
    }
}

/// What the configured auth server says a refresh token is: the portal it belongs to, and the
/// rotated token pair (§4.1). The proof the host takes an install event on (§4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The portal, as the auth server names it.
    pub member_id: String,
    /// The portal's REST address, as the auth server names it.
    pub client_endpoint: Url,
    /// The portal's domain: the host of `client_endpoint` (the answer's own `domain` is the auth
    /// server's, §4.1).
    pub domain: String,
    /// Where the auth server says its REST lives; kept for operators, never used to send.
    pub server_endpoint: Option<Url>,
    pub access_token: AccessToken,
    /// The new refresh token: the one redeemed is dead now.
    pub refresh_token: Option<RefreshToken>,
    /// Unix time the new access token expires.
    pub expires: Option<i64>,
    pub scope: Option<String>,
    pub user_id: Option<u64>,
}

/// Redeems `refresh_token` at the configured auth server (`app.auth_server`), and returns what
/// the server says it belongs to. A refresh token issued to another app is refused there
/// (`invalid_grant`), so a [`Grant`] proves both the app and the portal. The grant rotates the
/// refresh token: store the new pair; the one redeemed is dead.
pub async fn redeem_refresh_token(
    http: &HttpClient,
    app: &AppCredentials,
    refresh_token: &RefreshToken,
    timeout: Duration,
) -> Result<Grant, RefreshError> {
    let fresh = request_refresh(http.reqwest(), timeout, app, refresh_token).await?;
    let missing = |field: &'static str| RefreshError::Incomplete { field };
    let member_id =
        fresh.member_id.filter(|m| !m.is_empty()).ok_or_else(|| missing("member_id"))?;
    let client_endpoint = fresh
        .client_endpoint
        .as_deref()
        .and_then(|url| Url::parse(url).ok())
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
        .ok_or_else(|| missing("client_endpoint"))?;
    Ok(Grant {
        member_id,
        domain: host_of(&client_endpoint),
        client_endpoint,
        server_endpoint: fresh.server_endpoint.as_deref().and_then(|url| Url::parse(url).ok()),
        access_token: fresh.access_token,
        refresh_token: fresh.refresh_token,
        expires: fresh.expires,
        scope: fresh.scope,
        user_id: fresh.user_id,
    })
}

/// `<auth_server>oauth/token/` (§4.1: on the auth server's host, not under its `/rest/`).
pub(crate) fn token_url(auth_server: &Url) -> Url {
    let mut url = auth_server.clone();
    url.set_path("/oauth/token/");
    url.set_query(None);
    url.set_fragment(None);
    url
}

async fn request_refresh(
    http: &reqwest::Client,
    timeout: Duration,
    app: &AppCredentials,
    refresh_token: &RefreshToken,
) -> Result<Fresh, RefreshError> {
    let response = http
        .get(token_url(&app.auth_server))
        .query(&[
            ("grant_type", "refresh_token"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.expose()),
            ("refresh_token", refresh_token.expose()),
        ])
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| RefreshError::Transport(source.without_url()))?;
    let status = response.status().as_u16();
    let body =
        response.bytes().await.map_err(|source| RefreshError::Transport(source.without_url()))?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|source| RefreshError::Unreadable { status, source })?;
    if let Some(error) = value.as_object().and_then(ApiError::from_object) {
        return Err(RefreshError::Rejected { status, error });
    }
    if !(200..300).contains(&status) {
        let error = ApiError {
            code: format!("HTTP_{status}"),
            description: "the auth server answered without an error envelope".into(),
            extra: serde_json::Map::new(),
        };
        return Err(RefreshError::Rejected { status, error });
    }
    let answer: TokenAnswer = serde_json::from_value(value)
        .map_err(|source| RefreshError::Unreadable { status, source })?;
    let expires = answer.expires.or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(i64::try_from(now.as_secs()).ok()? + answer.expires_in?)
    });
    Ok(Fresh {
        access_token: AccessToken::new(answer.access_token),
        refresh_token: answer.refresh_token.filter(|t| !t.is_empty()).map(RefreshToken::new),
        expires,
        scope: answer.scope,
        user_id: answer.user_id.and_then(|id| u64::try_from(id).ok()),
        member_id: answer.member_id,
        client_endpoint: answer.client_endpoint,
        server_endpoint: answer.server_endpoint,
    })
}

fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ErrorChain;
    use crate::secret::ClientSecret;

    /// A refresh that cannot reach the auth server fails with an error whose whole chain, as
    /// logged, names neither the client secret nor the refresh token (they travel in the URL).
    #[tokio::test]
    async fn an_unreachable_auth_server_is_reported_without_the_secret_or_the_token() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let app = AppCredentials {
            client_id: "local.app".into(),
            client_secret: ClientSecret::new("the-client-secret"),
            auth_server: Url::parse(&format!("http://{closed}/")).unwrap(),
        };
        let refresh = RefreshToken::new("the-refresh-token");
        let http = HttpClient::new().unwrap();
        let Err(error) =
            request_refresh(http.reqwest(), Duration::from_secs(5), &app, &refresh).await
        else {
            panic!("nothing listens there, yet the refresh succeeded");
        };
        assert!(matches!(error, RefreshError::Transport(_)), "{error:?}");
        let logged = format!("{} {error:?}", ErrorChain(&error));
        assert!(!logged.contains("the-client-secret"), "{logged}");
        assert!(!logged.contains("the-refresh-token"), "{logged}");
    }

    #[test]
    fn token_url_is_on_the_auth_server_host_not_under_rest() {
        let server = Url::parse("https://oauth.bitrix.info/").unwrap();
        assert_eq!(token_url(&server).as_str(), "https://oauth.bitrix.info/oauth/token/");
        let local = Url::parse("http://127.0.0.1:8080/rest/").unwrap();
        assert_eq!(token_url(&local).as_str(), "http://127.0.0.1:8080/oauth/token/");
    }

    #[test]
    fn refreshed_tokens_debug_shows_no_token() {
        let tokens = RefreshedTokens {
            member_id: "m1".into(),
            domain: "example.bitrix24.com".into(),
            access_token: AccessToken::new("acc-s3cret"),
            refresh_token: Some(RefreshToken::new("ref-s3cret")),
            expires: Some(1),
            scope: None,
            user_id: Some(1),
        };
        let shown = format!("{tokens:?}");
        assert!(shown.contains("example.bitrix24.com") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn token_answer_accepts_strings_for_numbers() {
        let a: TokenAnswer = serde_json::from_str(
            r#"{"access_token":"a","refresh_token":"r","expires":"1780319382","expires_in":3600,"user_id":"67"}"#,
        )
        .unwrap();
        assert_eq!((a.expires, a.expires_in, a.user_id), (Some(1780319382), Some(3600), Some(67)));
    }
}
