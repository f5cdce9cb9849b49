//! The OAuth server (the `oauth.bitrix.info` stand-in): the token store, token issuing and
//! `GET /oauth/token/` for `refresh_token` and `authorization_code` grants (protocol doc §4.1).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::EmulatorError;
use crate::ids;
use crate::param::{Param, from_form_array, get_ci};
use crate::state::{Shared, State};

/// How long an authorization code lives (§4.1).
const AUTHORIZATION_CODE_LIFETIME: Duration = Duration::from_secs(30);

/// A token pair as the OAuth server hands it out (§4.1 body, ONAPPINSTALL `auth[...]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds when `access_token` expires.
    pub expires: u64,
    pub expires_in: u64,
    /// The app's scopes, comma-separated.
    pub scope: String,
    pub user_id: u64,
    pub member_id: String,
    /// The portal's domain (`127.0.0.1:Q`).
    pub domain: String,
    /// `http://127.0.0.1:Q/rest/`
    pub client_endpoint: String,
    /// `http://127.0.0.1:P/rest/`, the OAuth server.
    pub server_endpoint: String,
    /// The app status letter (`L` for local apps, §2.3).
    pub status: String,
}

/// Whom an access token, refresh token or authorization code speaks for: a user of an app on a
/// portal.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) portal: usize,
    pub(crate) client_id: String,
    pub(crate) user_id: u64,
}

impl Grant {
    fn is_for(&self, portal: usize, client_id: &str) -> bool {
        self.portal == portal && self.client_id == client_id
    }
}

#[derive(Debug, Clone)]
struct AccessToken {
    grant: Grant,
    expires_at: SystemTime,
    /// Set by `expire_tokens`: the token answers `expired_token` whatever its time.
    forced_expired: bool,
}

#[derive(Debug, Clone)]
struct AuthorizationCode {
    grant: Grant,
    expires_at: SystemTime,
}

/// Every token the OAuth server issued and has not revoked, and every request it was sent.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, Grant>,
    codes: HashMap<String, AuthorizationCode>,
    pub(crate) requests: Vec<TokenRequest>,
}

/// One request to `/oauth/token/`, as tests inspect them: how many refreshes, and whether one
/// spent a refresh token that was already rotated (`invalid_grant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    #[serde(with = "clock::unix")]
    pub at: SystemTime,
    /// `refresh_token`, `authorization_code`, or what the request said (empty when unreadable).
    pub grant_type: String,
    /// The OAuth error answered (`invalid_grant`, `invalid_client`, …); `None` when tokens were
    /// issued.
    pub error: Option<String>,
}

/// What the portal learns from an access token.
pub(crate) enum TokenCheck<'a> {
    Valid(&'a Grant),
    Expired,
    Unknown,
}

impl TokenStore {
    pub(crate) fn check(&self, token: &str) -> TokenCheck<'_> {
        match self.access.get(token) {
            None => TokenCheck::Unknown,
            Some(t) if t.forced_expired || SystemTime::now() >= t.expires_at => TokenCheck::Expired,
            Some(t) => TokenCheck::Valid(&t.grant),
        }
    }

    /// Makes every access token of a portal answer `expired_token`.
    pub(crate) fn expire_portal(&mut self, portal: usize) {
        for t in self.access.values_mut().filter(|t| t.grant.portal == portal) {
            t.forced_expired = true;
        }
    }

    /// Forgets every token of an app on a portal (uninstall: "API access is already revoked").
    pub(crate) fn revoke(&mut self, portal: usize, client_id: &str) {
        self.access.retain(|_, t| !t.grant.is_for(portal, client_id));
        self.refresh.retain(|_, g| !g.is_for(portal, client_id));
        self.codes.retain(|_, c| !c.grant.is_for(portal, client_id));
    }
}

/// Issues a token pair for `user_id` of app `client_id`, which must be installed on the portal
/// at `domain`.
pub(crate) fn issue_on(
    shared: &Shared,
    domain: &str,
    client_id: &str,
    user_id: u64,
) -> Result<TokenSet, EmulatorError> {
    let mut state = shared.lock();
    let portal = state.portal_index(domain)?;
    if !state.portals[portal].is_installed(client_id) {
        return Err(EmulatorError::not_installed(domain, client_id));
    }
    issue(shared, &mut state, portal, client_id, user_id)
}

/// Issues a new access + refresh token pair for `user_id` of an installed app.
pub(crate) fn issue(
    shared: &Shared,
    state: &mut State,
    portal: usize,
    client_id: &str,
    user_id: u64,
) -> Result<TokenSet, EmulatorError> {
    let app = state.app(client_id)?;
    let (scope, status) = (app.scope.clone(), app.status.clone());
    let p = state
        .portals
        .get(portal)
        .ok_or_else(|| EmulatorError::UnknownPortal(portal.to_string()))?;
    let lifetime = p.access_token_lifetime();
    let now = SystemTime::now();
    let expires_at = now + lifetime;
    let set = TokenSet {
        access_token: ids::oauth_token(),
        refresh_token: ids::oauth_token(),
        expires: clock::unix_secs(expires_at),
        expires_in: lifetime.as_secs(),
        scope,
        user_id,
        member_id: p.member_id.clone(),
        domain: p.domain.clone(),
        client_endpoint: p.client_endpoint(),
        server_endpoint: shared.server_endpoint(),
        status,
    };
    let grant = Grant { portal, client_id: client_id.to_owned(), user_id };
    state.tokens.access.insert(
        set.access_token.clone(),
        AccessToken { grant: grant.clone(), expires_at, forced_expired: false },
    );
    state.tokens.refresh.insert(set.refresh_token.clone(), grant);
    Ok(set)
}

/// Issues a one-time authorization code (lives 30 s, §4.1).
pub(crate) fn issue_code(
    state: &mut State,
    portal: usize,
    client_id: &str,
    user_id: u64,
) -> String {
    let code = ids::hex(70);
    let expires_at = SystemTime::now() + AUTHORIZATION_CODE_LIFETIME;
    state.tokens.codes.insert(
        code.clone(),
        AuthorizationCode {
            grant: Grant { portal, client_id: client_id.to_owned(), user_id },
            expires_at,
        },
    );
    code
}

/// An OAuth-server error: `{error, error_description}` (§4.1).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body =
        Param::map([("error", Param::str(error)), ("error_description", Param::str(description))]);
    (status, axum::Json(body)).into_response()
}

/// `GET /oauth/token/?grant_type=…` (POST with a form body is accepted too).
/// Every request is recorded with its grant type and outcome ([`TokenRequest`]).
pub(crate) async fn token_endpoint(
    AxState(shared): AxState<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let mut grant_type = String::new();
    let answer = redeem(&shared, query, &body, &mut grant_type);
    let error = match &answer {
        Ok(_) => None,
        Err(refusal) => Some(refusal.error.to_owned()),
    };
    let request = TokenRequest { at: SystemTime::now(), grant_type, error };
    shared.lock().tokens.requests.push(request);
    match answer {
        Ok(tokens) => axum::Json(tokens).into_response(),
        Err(refusal) => oauth_error(refusal.status, refusal.error, &refusal.description),
    }
}

/// Why the OAuth server refused a token request.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

/// Answers a token request: the token JSON, or why not. `grant_type` is set as soon as it is
/// read.
fn redeem(
    shared: &Arc<Shared>,
    query: Option<String>,
    body: &[u8],
    grant_type_seen: &mut String,
) -> Result<Param, Refusal> {
    let refuse = |status: StatusCode, error: &'static str, description: &str| Refusal {
        status,
        error,
        description: description.to_owned(),
    };
    let mut params =
        match phpform::decode(query.unwrap_or_default().as_bytes(), &phpform::Limits::default()) {
            Ok(form) => from_form_array(&form),
            Err(e) => {
                return Err(refuse(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()));
            }
        };
    if !body.is_empty() {
        match phpform::decode(body, &phpform::Limits::default()) {
            Ok(form) => params.extend(from_form_array(&form)),
            Err(e) => {
                return Err(refuse(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()));
            }
        }
    }
    let get = |k: &str| get_ci(&params, k).and_then(Param::php_string).unwrap_or_default();
    let (grant_type, client_id, client_secret) =
        (get("grant_type"), get("client_id"), get("client_secret"));
    grant_type_seen.clone_from(&grant_type);

    let mut state = shared.lock();
    let app_ok = state.apps.get(&client_id).is_some_and(|app| app.client_secret == client_secret);
    if !app_ok {
        // RFC 6749 §5.2 sends invalid_client with 401; the Bitrix docs give no status (INFERRED).
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        ));
    }
    let grant = match grant_type.as_str() {
        "refresh_token" => {
            let rt = get("refresh_token");
            match state.tokens.refresh.get(&rt) {
                Some(t) if t.client_id == client_id => {
                    let (portal, user) = (t.portal, t.user_id);
                    // Every refresh rotates the refresh token; the old one is dead (§4.1).
                    state.tokens.refresh.remove(&rt);
                    Some((portal, user))
                }
                _ => None,
            }
        }
        "authorization_code" => {
            let code = get("code");
            match state.tokens.codes.remove(&code) {
                Some(c) if c.grant.client_id == client_id && SystemTime::now() < c.expires_at => {
                    Some((c.grant.portal, c.grant.user_id))
                }
                _ => None,
            }
        }
        _ => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type must be refresh_token or authorization_code",
            ));
        }
    };
    let Some((portal, user_id)) = grant else {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid grant"));
    };
    let installed = state.portals.get(portal).is_some_and(|p| p.is_installed(&client_id));
    if !installed {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Application not installed",
        ));
    }
    match issue(shared, &mut state, portal, &client_id, user_id) {
        Ok(set) => {
            tracing::debug!(client_id, user_id, grant_type, "issued tokens");
            Ok(refresh_body(shared, &set))
        }
        Err(e) => Err(refuse(StatusCode::BAD_REQUEST, "invalid_grant", &e.to_string())),
    }
}

/// The §4.1 response body. `domain` is the auth server, not the portal.
fn refresh_body(shared: &Shared, set: &TokenSet) -> Param {
    let auth_host = shared.main_url.trim_start_matches("http://").to_owned();
    Param::map([
        ("access_token", Param::str(&set.access_token)),
        ("client_endpoint", Param::str(&set.client_endpoint)),
        ("domain", Param::str(auth_host)),
        ("expires", Param::Num(set.expires.into())),
        ("expires_in", Param::Num(set.expires_in.into())),
        ("member_id", Param::str(&set.member_id)),
        ("refresh_token", Param::str(&set.refresh_token)),
        ("scope", Param::str(&set.scope)),
        ("server_endpoint", Param::str(&set.server_endpoint)),
        ("status", Param::str(&set.status)),
        ("user_id", Param::Num(set.user_id.into())),
    ])
}
