//! The REST client of one portal: sends a method call, paces it, renews an expired token once,
//! follows a renamed portal, and turns the answer into a [`Response`] or an [`Error`].
//!
//! Calls are `POST <endpoint>/<method>` with a JSON body (protocol doc §5.1). Redirects are never
//! followed by the HTTP library: a POST answered with 302 must be re-sent as a POST to the new
//! host, and the move reported, because a renamed portal answers 302 at its old address (§5.1).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;
use url::Url;

use super::credentials::{Credentials, TokenPlacement, WebhookUrl, host_of, redact};
use super::envelope::{self, Envelope, Response};
use super::error::{ApiError, Error};
use super::limiter::{LimiterRegistry, PortalLimiter, RateLimits};
use super::oauth::{DiscardTokens, IssuedToken, TokenSink, TokenState};
use super::observer::ClientObserver;
use crate::secret::{AccessToken, RefreshToken};

/// Bitrix24 cuts a REST request off after 60 s (§5.6); waiting longer is pointless.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The answers that mean the portal's leaky bucket (or its time budget) is full (§5.6).
const BUCKET_FULL_CODES: &[&str] = &["QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"];

/// How many 302 hops one call follows. A rename is one hop; a chain of them is a loop.
const MAX_MOVES_PER_CALL: usize = 3;

/// The most of an answer a call reads. A portal's largest answers — a `batch` of 50 list pages
/// of 50 items — are a few MiB; past this the answer is not read on, so no server can make the
/// host hold as much memory as it cares to send.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// An HTTP client set up the way Bitrix24 needs it: rustls on `ring`, and no automatic redirects
/// (§5.1). Cheap to clone; share one between all portals so connections are pooled.
#[derive(Debug, Clone)]
pub struct HttpClient(reqwest::Client);

impl HttpClient {
    /// Builds the client, installing `ring` as the process's rustls provider if none is yet.
    pub fn new() -> Result<HttpClient, Error> {
        // Fails only if a provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("b24act/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(HttpClient)
            .map_err(Error::HttpClient)
    }

    pub(crate) fn reqwest(&self) -> &reqwest::Client {
        &self.0
    }
}

/// A portal that changed its address (§5.1): the old one answered 302 to the new one. The call
/// was re-sent there and the client uses the new address from now on; the host should update
/// the stored domain (and webhook URL, see [`RestClient::webhook_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMove {
    /// `member_id` for OAuth clients; webhooks do not know theirs.
    pub member_id: Option<String>,
    pub old_domain: String,
    pub new_domain: String,
}

/// Told about every domain move a client sees, as it happens.
pub trait MoveSink: Send + Sync {
    fn moved(&self, change: &DomainMove);
}

/// Forwards every move into a channel.
impl MoveSink for tokio::sync::mpsc::UnboundedSender<DomainMove> {
    fn moved(&self, change: &DomainMove) {
        if self.send(change.clone()).is_err() {
            tracing::warn!(?change, "domain move not delivered: the receiver is gone");
        }
    }
}

/// Builds a [`RestClient`].
#[must_use]
pub struct RestClientBuilder {
    credentials: Credentials,
    http: Option<HttpClient>,
    timeout: Duration,
    placement: TokenPlacement,
    limiter: Option<PortalLimiter>,
    token_sink: Arc<dyn TokenSink>,
    move_sink: Option<Arc<dyn MoveSink>>,
    observer: Option<Arc<dyn ClientObserver>>,
    follow_moves: bool,
}

impl RestClientBuilder {
    /// Shares an HTTP client (and its connection pool). Without one, the client builds its own.
    pub fn http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }

    /// The timeout of each HTTP request (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the OAuth token travels (default `Authorization: Bearer`).
    pub fn token_placement(mut self, placement: TokenPlacement) -> Self {
        self.placement = placement;
        self
    }

    /// Paces requests with this limiter. Without one (or [`Self::limiter_from`]) the client gets
    /// a private bucket with the standard limits, which is only right if no other client talks
    /// to the same portal.
    pub fn limiter(mut self, limiter: PortalLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Takes this portal's limiter from the host's registry, keyed by the portal's domain.
    pub fn limiter_from(self, registry: &LimiterRegistry) -> Self {
        let domain = domain_of(&self.credentials);
        self.limiter(registry.portal(&domain))
    }

    /// Where refreshed tokens go (default: nowhere).
    pub fn token_sink(mut self, sink: Arc<dyn TokenSink>) -> Self {
        self.token_sink = sink;
        self
    }

    /// Who hears about domain moves, besides the [`Response::moved`] of the call that saw one.
    pub fn move_sink(mut self, sink: Arc<dyn MoveSink>) -> Self {
        self.move_sink = Some(sink);
        self
    }

    /// Whether a portal's 302 is followed (the default) or is an [`Error::BadRedirect`]. A
    /// client checking a token that someone else handed us does not follow: the token would go
    /// wherever the answer points.
    pub fn follow_moves(mut self, follow: bool) -> Self {
        self.follow_moves = follow;
        self
    }

    /// Who hears how long requests waited for the portal's budget, the portal's refusals for a
    /// full one and every token refresh (for metrics).
    pub fn observer(mut self, observer: Arc<dyn ClientObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn build(self) -> Result<RestClient, Error> {
        let http = match self.http {
            Some(http) => http.0,
            None => HttpClient::new()?.0,
        };
        let domain = domain_of(&self.credentials);
        let (auth, base) = match self.credentials {
            Credentials::OAuth { tokens, app } => {
                let base = tokens.client_endpoint.clone();
                let state = TokenState::new(&tokens, app, self.token_sink, self.observer.clone());
                (Auth::OAuth(state), base)
            }
            Credentials::Webhook(hook) => (Auth::Webhook, hook.url().clone()),
        };
        let member_id = match &auth {
            Auth::OAuth(state) => Some(state.member_id().to_owned()),
            Auth::Webhook => None,
        };
        Ok(RestClient {
            inner: Arc::new(Inner {
                http,
                timeout: self.timeout,
                placement: self.placement,
                auth,
                member_id,
                endpoint: Mutex::new(Endpoint { base, domain, last_move: None }),
                limiter: self.limiter.unwrap_or_else(|| PortalLimiter::new(RateLimits::default())),
                move_sink: self.move_sink,
                observer: self.observer,
                follow_moves: self.follow_moves,
            }),
        })
    }
}

fn domain_of(credentials: &Credentials) -> String {
    match credentials {
        Credentials::OAuth { tokens, .. } if !tokens.domain.is_empty() => tokens.domain.clone(),
        Credentials::OAuth { tokens, .. } => host_of(&tokens.client_endpoint),
        Credentials::Webhook(hook) => host_of(hook.url()),
    }
}

/// A REST client for one portal. Cheap to clone: clones share tokens, the refresh gate, the
/// limiter and the current address, so the host keeps one per portal and clones it freely.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    timeout: Duration,
    placement: TokenPlacement,
    auth: Auth,
    member_id: Option<String>,
    endpoint: Mutex<Endpoint>,
    limiter: PortalLimiter,
    move_sink: Option<Arc<dyn MoveSink>>,
    observer: Option<Arc<dyn ClientObserver>>,
    follow_moves: bool,
}

#[allow(clippy::large_enum_variant, reason = "one per client, behind its Arc")]
enum Auth {
    OAuth(TokenState),
    /// The secret is in the URL path.
    Webhook,
}

/// Where calls go now: the OAuth `client_endpoint` or the webhook base URL, and the portal's
/// domain. Changes when the portal moves.
struct Endpoint {
    base: Url,
    domain: String,
    last_move: Option<DomainMove>,
}

/// One HTTP exchange's outcome, before the retry-after-refresh decision.
enum Answer {
    Success(Box<Response<Value>>),
    Failure { status: u16, error: ApiError },
}

impl RestClient {
    /// Starts building a client for one portal.
    pub fn builder(credentials: Credentials) -> RestClientBuilder {
        RestClientBuilder {
            credentials,
            http: None,
            timeout: DEFAULT_TIMEOUT,
            placement: TokenPlacement::default(),
            limiter: None,
            token_sink: Arc::new(DiscardTokens),
            move_sink: None,
            observer: None,
            follow_moves: true,
        }
    }

    /// A client with default settings and the given shared parts.
    pub fn new(
        credentials: Credentials,
        http: HttpClient,
        limiters: &LimiterRegistry,
        token_sink: Arc<dyn TokenSink>,
    ) -> Result<RestClient, Error> {
        RestClient::builder(credentials)
            .http_client(http)
            .limiter_from(limiters)
            .token_sink(token_sink)
            .build()
    }

    fn endpoint(&self) -> MutexGuard<'_, Endpoint> {
        // Only whole fields are assigned under this lock, so a poisoned one is still consistent.
        self.inner.endpoint.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The portal's domain as the client knows it now (changes after a move).
    pub fn domain(&self) -> String {
        self.endpoint().domain.clone()
    }

    /// The portal's `member_id`, for OAuth clients.
    pub fn member_id(&self) -> Option<&str> {
        self.inner.member_id.as_deref()
    }

    /// The OAuth `client_endpoint` now in use (after a move, on the new host).
    pub fn client_endpoint(&self) -> Option<Url> {
        match self.inner.auth {
            Auth::OAuth(_) => Some(self.endpoint().base.clone()),
            Auth::Webhook => None,
        }
    }

    /// The webhook URL now in use (after a move, on the new host). Holds the webhook's secret.
    pub fn webhook_url(&self) -> Option<WebhookUrl> {
        match self.inner.auth {
            Auth::Webhook => WebhookUrl::parse(self.endpoint().base.as_str()).ok(),
            Auth::OAuth(_) => None,
        }
    }

    /// The most recent domain move this client followed, if any.
    pub fn last_move(&self) -> Option<DomainMove> {
        self.endpoint().last_move.clone()
    }

    /// The limiter this client waits on.
    pub fn limiter(&self) -> &PortalLimiter {
        &self.inner.limiter
    }

    /// Replaces the OAuth tokens, e.g. with fresher ones an activity call carried in `auth[...]`.
    /// A refresh token of `None` keeps the current one. No effect on webhook clients.
    pub fn replace_tokens(
        &self,
        access_token: AccessToken,
        refresh_token: Option<RefreshToken>,
        expires: Option<i64>,
    ) {
        if let Auth::OAuth(state) = &self.inner.auth {
            state.replace(access_token, refresh_token, expires);
        }
    }

    /// Calls `method` with `params` (a JSON object; `()` or `null` for none) and decodes
    /// `result` into `T`.
    pub async fn call_as<T, P>(&self, method: &str, params: &P) -> Result<Response<T>, Error>
    where
        T: DeserializeOwned,
        P: Serialize + ?Sized,
    {
        self.call(method, params).await?.decode(method)
    }

    /// Calls `method` with `params`, which must serialize to a JSON object (or `null`/`()` for
    /// none). On 401 `expired_token` an OAuth client refreshes the token once and repeats the
    /// call once (§4.1); a 302 from a renamed portal is re-sent to the new host (§5.1). Every
    /// other failure is returned as is; see [`Error::class`] for what to do with it.
    pub async fn call<P>(&self, method: &str, params: &P) -> Result<Response<Value>, Error>
    where
        P: Serialize + ?Sized,
    {
        let span = tracing::info_span!("b24_call", method, portal = %self.domain());
        self.call_inner(method, params).instrument(span).await
    }

    async fn call_inner<P>(&self, method: &str, params: &P) -> Result<Response<Value>, Error>
    where
        P: Serialize + ?Sized,
    {
        let params = params_object(method, params)?;
        let mut moved = None;
        let mut refreshed = false;
        loop {
            let token = self.current_token();
            let answer = self.send(method, &params, token.as_ref(), &mut moved).await?;
            match answer {
                Answer::Success(response) => return Ok(Response { moved, ..*response }),
                Answer::Failure { status, error } => {
                    if let (Auth::OAuth(state), Some(stale), false) =
                        (&self.inner.auth, &token, refreshed)
                        && error.code == "expired_token"
                    {
                        let domain = self.domain();
                        state
                            .refresh(&self.inner.http, self.inner.timeout, method, stale, &domain)
                            .await?;
                        refreshed = true;
                        continue;
                    }
                    if BUCKET_FULL_CODES.contains(&error.code.as_str()) {
                        // The portal's bucket is fuller than ours says (§5.6): believe it.
                        tracing::warn!(code = %error.code, portal = %self.domain(),
                            "the portal says its request budget is spent; pacing from empty");
                        self.inner.limiter.saturate().await;
                        if let Some(observer) = &self.inner.observer {
                            observer.budget_refused(&error.code);
                        }
                    }
                    tracing::debug!(status, code = %error.code, "call failed");
                    return Err(Error::Api {
                        method: method.to_owned(),
                        status: Some(status),
                        error,
                    });
                }
            }
        }
    }

    fn current_token(&self) -> Option<IssuedToken> {
        match &self.inner.auth {
            Auth::OAuth(state) => Some(state.current()),
            Auth::Webhook => None,
        }
    }

    /// Sends one call, following at most [`MAX_MOVES_PER_CALL`] portal moves.
    async fn send(
        &self,
        method: &str,
        params: &[u8],
        token: Option<&IssuedToken>,
        moved: &mut Option<DomainMove>,
    ) -> Result<Answer, Error> {
        let body = self.body(method, params, token)?;
        for _ in 0..=MAX_MOVES_PER_CALL {
            let url = self.method_url(method);
            let waiting = Instant::now();
            self.inner.limiter.acquire().await;
            if let Some(observer) = &self.inner.observer {
                observer.budget_waited(waiting.elapsed());
            }
            let mut request = self
                .inner
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.inner.timeout)
                .body(body.clone());
            if let (Some(token), TokenPlacement::Bearer) = (token, self.inner.placement) {
                request = request.bearer_auth(token.token.expose());
            }
            let response = request.send().await.map_err(|source| Error::Transport {
                method: method.to_owned(),
                source: source.without_url(),
            })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_owned);
                *moved = Some(self.follow_move(method, &url, location)?);
                continue;
            }
            let bytes = read_capped(method, response).await?;
            return read_answer(method, status.as_u16(), &bytes);
        }
        Err(Error::BadRedirect { method: method.to_owned(), location: None })
    }

    /// The JSON body: the params, with `auth` first when the token travels in the body (§4.1).
    fn body(
        &self,
        method: &str,
        params: &[u8],
        token: Option<&IssuedToken>,
    ) -> Result<Vec<u8>, Error> {
        let (Some(token), TokenPlacement::AuthParam) = (token, self.inner.placement) else {
            return Ok(params.to_vec());
        };
        let auth = serde_json::to_vec(token.token.expose())
            .map_err(|source| Error::Encode { method: method.to_owned(), source })?;
        // `params` is a compact JSON object from `params_object`: `{}` or `{"k":…}`.
        let rest = params.get(1..).unwrap_or(b"}");
        let mut body = Vec::with_capacity(params.len() + auth.len() + 10);
        body.extend_from_slice(b"{\"auth\":");
        body.extend_from_slice(&auth);
        if rest != b"}" {
            body.push(b',');
        }
        body.extend_from_slice(rest);
        Ok(body)
    }

    /// `<base>/<method>`, with the method as one path segment.
    fn method_url(&self, method: &str) -> Url {
        let mut url = self.endpoint().base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(method);
        }
        url
    }

    /// Moves the client to the host named by a 302's `Location` (same path, §5.1), and reports it.
    fn follow_move(
        &self,
        method: &str,
        from: &Url,
        location: Option<String>,
    ) -> Result<DomainMove, Error> {
        let bad = || Error::BadRedirect {
            method: method.to_owned(),
            location: location.as_deref().map(redact),
        };
        let target = location.as_deref().and_then(|l| from.join(l).ok()).ok_or_else(bad)?;
        if !self.inner.follow_moves || !is_a_move(from, &target) {
            return Err(bad());
        }
        let (change, first) = {
            let mut endpoint = self.endpoint();
            let mut base = endpoint.base.clone();
            base.set_scheme(target.scheme()).map_err(|()| bad())?;
            base.set_host(target.host_str()).map_err(|_| bad())?;
            base.set_port(target.port()).map_err(|()| bad())?;
            let new_domain = host_of(&base);
            match &endpoint.last_move {
                // A concurrent call already followed this move: re-send, report it once.
                Some(known) if endpoint.domain == new_domain => (known.clone(), false),
                _ => {
                    let change = DomainMove {
                        member_id: self.inner.member_id.clone(),
                        old_domain: endpoint.domain.clone(),
                        new_domain,
                    };
                    endpoint.base = base;
                    endpoint.domain = change.new_domain.clone();
                    endpoint.last_move = Some(change.clone());
                    (change, true)
                }
            }
        };
        if first {
            tracing::warn!(old = %change.old_domain, new = %change.new_domain, "portal moved; re-sending");
            if let Some(sink) = &self.inner.move_sink {
                sink.moved(&change);
            }
        }
        Ok(change)
    }
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.auth {
            Auth::OAuth(_) => "oauth",
            Auth::Webhook => "webhook",
        };
        f.debug_struct("RestClient")
            .field("domain", &self.domain())
            .field("auth", &kind)
            .field("member_id", &self.inner.member_id)
            .finish_non_exhaustive()
    }
}

/// The params as compact JSON object text, serialized straight from `params` so that the
/// caller's key order survives (the portal keeps PHP array order, e.g. for PROPERTIES). `null`
/// (and `()`) means none; anything but an object is refused, because the portal reads named
/// parameters only.
fn params_object<P: Serialize + ?Sized>(method: &str, params: &P) -> Result<Vec<u8>, Error> {
    let encode = |source| Error::Encode { method: method.to_owned(), source };
    let bytes = serde_json::to_vec(params).map_err(encode)?;
    match bytes.first() {
        Some(b'{') => Ok(bytes),
        _ if bytes == b"null" || bytes == b"[]" => Ok(b"{}".to_vec()),
        _ => Err(encode(serde::ser::Error::custom("parameters must be a JSON object"))),
    }
}

/// Turns an answer into success or failure; bodies that are neither envelope become
/// [`Error::UnexpectedAnswer`].
fn read_answer(method: &str, status: u16, bytes: &[u8]) -> Result<Answer, Error> {
    let unexpected = |source| Error::UnexpectedAnswer {
        method: method.to_owned(),
        status,
        snippet: snippet(bytes),
        source,
    };
    match envelope::parse(bytes) {
        Ok(Some(Envelope::Error(error))) => Ok(Answer::Failure { status, error }),
        Ok(Some(Envelope::Success(response))) if (200..300).contains(&status) => {
            Ok(Answer::Success(response))
        }
        Ok(_) => Err(unexpected(None)),
        Err(source) => Err(unexpected(Some(source))),
    }
}

/// An answer's body, up to [`MAX_ANSWER_BYTES`]; a longer one is an unexpected answer, as an
/// unreadable one is.
async fn read_capped(method: &str, mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
    let status = response.status().as_u16();
    let too_large = || Error::UnexpectedAnswer {
        method: method.to_owned(),
        status,
        snippet: format!("an answer over {MAX_ANSWER_BYTES} bytes, not read"),
        source: None,
    };
    let declared = response.content_length().and_then(|n| usize::try_from(n).ok());
    if declared.is_some_and(|n| n > MAX_ANSWER_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(|source| Error::Transport {
        method: method.to_owned(),
        source: source.without_url(),
    })? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of a body, for error messages: one line, escaped.
fn snippet(bytes: &[u8]) -> String {
    phpform::one_line(&String::from_utf8_lossy(bytes), 200).to_string()
}

/// Whether a 302 from `from` to `target` is a portal's move this client may follow: to another
/// host, and never from https to http, where the token would cross the network in clear.
fn is_a_move(from: &Url, target: &Url) -> bool {
    let downgrade = from.scheme() == "https" && target.scheme() != "https";
    !downgrade && !host_of(target).is_empty() && host_of(target) != host_of(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn a_move_goes_to_another_host_and_never_from_https_to_http() {
        let from = url("https://old.bitrix24.com/rest/app.info");
        assert!(is_a_move(&from, &url("https://new.bitrix24.com/rest/app.info")));
        assert!(!is_a_move(&from, &url("http://new.bitrix24.com/rest/app.info")), "downgrade");
        assert!(!is_a_move(&from, &url("https://old.bitrix24.com/other")), "same host");
        let plain = url("http://127.0.0.1:8080/rest/app.info");
        assert!(is_a_move(&plain, &url("http://127.0.0.1:8081/rest/app.info")));
        assert!(is_a_move(&plain, &url("https://127.0.0.1:8081/rest/app.info")), "upgrade");
    }
}
