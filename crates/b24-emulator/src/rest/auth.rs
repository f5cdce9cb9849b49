//! Who is calling: the credential of a REST request (Bearer, `auth`, `access_token`, or the
//! webhook path, §4.1–§4.2) and the caller it resolves to.

use axum::http::HeaderMap;

use crate::oauth::TokenCheck;
use crate::param::{Array, Param};
use crate::rest::RestError;
use crate::state::State;

/// The credential a request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    Token(String),
    Webhook { user_id: String, secret: String },
    Missing,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The app's client_id; `None` for webhooks (no application context, §1.1).
    pub(crate) client_id: Option<String>,
    pub(crate) user_id: u64,
    pub(crate) scopes: Vec<String>,
    pub(crate) webhook: bool,
    /// `app:<client_id>` or `webhook:<user_id>`: the operating-limit key and the call log label.
    pub(crate) label: String,
}

/// Picks the token: `Authorization: Bearer`, then the `auth` param, then `access_token`; the
/// first match wins (§4.1). Removes the auth params, as the server does before the method runs.
pub(crate) fn take_credential(headers: &HeaderMap, params: &mut Array) -> Credential {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let auth = params.shift_remove("auth").and_then(|p| p.php_string()).filter(|t| !t.is_empty());
    let access =
        params.shift_remove("access_token").and_then(|p| p.php_string()).filter(|t| !t.is_empty());
    bearer.or(auth).or(access).map_or(Credential::Missing, Credential::Token)
}

/// Resolves a credential on a portal.
pub(crate) fn authenticate(
    state: &State,
    portal: usize,
    credential: &Credential,
) -> Result<Caller, RestError> {
    match credential {
        Credential::Missing => {
            Err(RestError::new(401, "NO_AUTH_FOUND", "Wrong authorization data"))
        }
        Credential::Token(token) => match state.tokens.check(token) {
            TokenCheck::Expired => {
                Err(RestError::new(401, "expired_token", "The access token provided has expired"))
            }
            TokenCheck::Valid(t) if t.portal == portal => {
                let scopes = state.apps.get(&t.client_id).map(|a| a.scopes()).unwrap_or_default();
                Ok(Caller {
                    client_id: Some(t.client_id.clone()),
                    user_id: t.user_id,
                    scopes,
                    webhook: false,
                    label: format!("app:{}", t.client_id),
                })
            }
            // INFERRED wording (§4.1, §8 Q8): the OAuth server's rest.check verdict.
            _ => Err(RestError::new(401, "invalid_token", "Token expired or invalid")),
        },
        Credential::Webhook { user_id, secret } => {
            let hook = state.portals.get(portal).and_then(|p| {
                p.webhooks.iter().find(|h| h.user_id.to_string() == *user_id && h.secret == *secret)
            });
            let Some(hook) = hook else {
                return Err(RestError::new(
                    403,
                    "INVALID_CREDENTIALS",
                    "Invalid request credentials",
                ));
            };
            Ok(Caller {
                client_id: None,
                user_id: hook.user_id,
                scopes: hook
                    .scope
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
                webhook: true,
                label: format!("webhook:{}", hook.user_id),
            })
        }
    }
}

/// The `insufficient_scope` error for a caller (§4.1, §4.2).
pub(crate) fn insufficient_scope(caller: &Caller) -> RestError {
    let by = if caller.webhook { "webhook token" } else { "access token" };
    RestError::new(
        401,
        "insufficient_scope",
        format!("The request requires higher privileges than provided by the {by}"),
    )
}

/// `Param` helper kept here so callers can build a scope list for `app.info`.
pub(crate) fn scope_list(scopes: &[String]) -> Param {
    Param::list(scopes.iter().map(Param::str))
}
