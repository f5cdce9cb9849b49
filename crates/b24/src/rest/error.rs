//! The one error type of the REST client, and the one place that decides what is worth retrying.
//!
//! Every failure a caller can see is an [`Error`]; [`Error::class`] sorts it into
//! [`ErrorClass::Retryable`], [`ErrorClass::Token`] or [`ErrorClass::Permanent`]. The rules
//! (protocol doc §3.3, §4.1, §5.4, §5.6) live in [`classify_api`] and nowhere else.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// What a caller should do with a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try the same call again later (rate limits, a locked workflow, 5xx, network trouble).
    /// [`Error::retry_at`] tells when, if the portal said so.
    Retryable,
    /// The access token is expired and this client could not renew it: it has no refresh token,
    /// or the call failed with `expired_token` again right after a refresh (the client refreshes
    /// once per call and never loops, §4.1). New tokens are needed, e.g. from the next activity
    /// call's `auth[...]` ([`super::RestClient::replace_tokens`]).
    Token,
    /// Do not repeat this call: it will fail the same way (access denied, the workflow is gone,
    /// validation errors, a revoked refresh token, ...).
    Permanent,
}

/// An error envelope as the portal or the OAuth server sends it (§5.3):
/// `{"error": "<CODE>", "error_description": "<text>", ...extra}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The `error` value. A numeric code (`404`, as older portals send it) is kept as its decimal
    /// text, so `"404"` and `404` compare equal.
    pub code: String,
    /// `error_description`, empty when absent.
    pub description: String,
    /// Any other keys of the envelope, e.g. `argument` for `ERROR_ARGUMENT`.
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// Reads an error envelope out of a decoded JSON object. `None` if it has no `error` key.
    pub fn from_object(object: &Map<String, Value>) -> Option<ApiError> {
        let code = match object.get("error")? {
            Value::String(s) => s.clone(),
            Value::Null => return None,
            other => other.to_string(),
        };
        let description = match object.get("error_description") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let extra = object
            .iter()
            .filter(|(k, _)| *k != "error" && *k != "error_description")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(ApiError { code, description, extra })
    }

    /// Whether this is `event.send`'s "the business process is not found" (protocol §3.3): the
    /// workflow has finished or was terminated — which is also what a workflow that already took
    /// the result answers to a second send. Newer portals send `"404"`, older ones `404` or
    /// `ERROR_CORE` with the same description.
    pub fn is_workflow_gone(&self) -> bool {
        self.code == "404" || self.description.to_ascii_lowercase().contains("not found")
    }

    /// `operating_reset_at` (Unix seconds) if the envelope carries one, at the top level or under
    /// `time` (§5.6: when the oldest one-minute `operating` bucket drops).
    fn operating_reset_at(&self) -> Option<SystemTime> {
        let value = self
            .extra
            .get("operating_reset_at")
            .or_else(|| self.extra.get("time").and_then(|t| t.get("operating_reset_at")))?;
        let secs = match value {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.parse::<f64>().ok()?,
            _ => return None,
        };
        (secs.is_finite() && secs >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(secs))
    }
}

/// How much of a portal's error description a message shows.
const DESCRIPTION_LIMIT: usize = 500;

/// The code and description as the portal sent them, as one bounded line: they end up in logs,
/// job reasons and a terminal, and a portal (a self-hosted one, or a proxy in front of it) can
/// put anything there.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = phpform::quoted(&self.code);
        if self.description.is_empty() {
            write!(f, "{code}")
        } else {
            write!(f, "{code}: {}", phpform::one_line(&self.description, DESCRIPTION_LIMIT))
        }
    }
}

/// A failed `/oauth/token/` refresh (§4.1). Shared behind an [`Arc`] with every caller that
/// waited for the same refresh, so one failure is not repeated N times.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The auth server could not be reached or did not answer in time. The source carries no
    /// URL: the refresh request's query holds the client secret and the refresh token.
    #[error("token refresh request failed")]
    Transport(#[source] reqwest::Error),
    /// The auth server answered with an error envelope (`invalid_grant`, `invalid_client`, ...).
    #[error("token refresh rejected (HTTP {status}): {error}")]
    Rejected { status: u16, error: ApiError },
    /// The auth server answered something that is not the token JSON of §4.1.
    #[error("token refresh answer unreadable (HTTP {status})")]
    Unreadable {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    /// The auth server's answer lacks what names the portal (§4.1), so it proves nothing.
    #[error("the auth server's token answer has no usable `{field}`")]
    Incomplete { field: &'static str },
    /// The auth server says the refresh token is another portal's.
    #[error("the auth server says the refresh token belongs to portal {named}, not {expected}")]
    OtherPortal { expected: String, named: String },
    /// The tokens the host keeps for every process could not be taken for the refresh (its
    /// store is unreachable); nothing was sent to the auth server.
    #[error("cannot take the kept tokens for a refresh")]
    Keeping(#[source] super::oauth::SinkError),
}

impl RefreshError {
    /// Whether the auth server refused the app's credentials or the refresh token itself
    /// (`invalid_client`, `invalid_grant`, …): a matter of configuration or of the installation,
    /// which trying again will not mend. Network trouble and 5xx are not.
    pub fn is_credentials_problem(&self) -> bool {
        match self {
            RefreshError::Transport(_) | RefreshError::Keeping(_) => false,
            RefreshError::Unreadable { status, .. } => {
                !matches!(classify_status(*status), ErrorClass::Retryable)
            }
            RefreshError::Rejected { status, error } => {
                classify_api(Some(*status), error) != ErrorClass::Retryable
            }
            RefreshError::Incomplete { .. } | RefreshError::OtherPortal { .. } => true,
        }
    }
}

/// Everything that can go wrong with a REST call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request never got an HTTP answer: connection refused, reset, TLS, timeout. The
    /// source carries no URL: a webhook's holds its secret.
    #[error("{method}: request failed")]
    Transport {
        method: String,
        #[source]
        source: reqwest::Error,
    },
    /// The portal answered with an error envelope (§5.3). `status` is `None` for a `batch`
    /// sub-command, whose errors carry no HTTP status of their own (§5.5).
    #[error("{method}: {error}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Api { method: String, status: Option<u16>, error: ApiError },
    /// The portal answered with something that is neither envelope of §5.2/§5.3.
    #[error("{method}: unexpected answer (HTTP {status}): {snippet}")]
    UnexpectedAnswer {
        method: String,
        status: u16,
        snippet: String,
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The access token expired and the client has no refresh token to renew it (older portals
    /// send none, §2.3).
    #[error("{method}: access token expired and no refresh token is known")]
    NoRefreshToken { method: String },
    /// Renewing the access token failed.
    #[error("{method}: access token expired and could not be refreshed")]
    Refresh {
        method: String,
        #[source]
        source: Arc<RefreshError>,
    },
    /// The portal answered with a redirect we cannot follow: no usable `Location`, or more moves
    /// in a row than any real rename produces (§5.1).
    #[error("{method}: portal redirect to {location:?} cannot be followed")]
    BadRedirect { method: String, location: Option<String> },
    /// A URL (endpoint, webhook, `Location`) could not be built or parsed.
    #[error("invalid URL {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// The request parameters could not be serialized to JSON.
    #[error("{method}: parameters cannot be encoded")]
    Encode {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    /// A successful answer's `result` does not have the shape the typed method expects.
    #[error("{method}: result has an unexpected shape")]
    Decode {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    /// Two commands of one `batch` share a key; their results could not be told apart.
    #[error("batch: duplicate command key {key:?}")]
    DuplicateBatchKey { key: String },
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

impl Error {
    /// The class of this error: the single place retryability is decided.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Transport { .. } => ErrorClass::Retryable,
            Error::Api { status, error, .. } => classify_api(*status, error),
            Error::UnexpectedAnswer { status, .. } => classify_status(*status),
            Error::NoRefreshToken { .. } => ErrorClass::Token,
            Error::Refresh { source, .. } => match source.as_ref() {
                RefreshError::Transport(_) | RefreshError::Keeping(_) => ErrorClass::Retryable,
                RefreshError::Rejected { status, error } => {
                    match classify_api(Some(*status), error) {
                        // An auth server that says "expired" about the refresh token means re-authorize.
                        ErrorClass::Token => ErrorClass::Permanent,
                        class => class,
                    }
                }
                RefreshError::Unreadable { status, .. } => classify_status(*status),
                RefreshError::Incomplete { .. } | RefreshError::OtherPortal { .. } => {
                    ErrorClass::Permanent
                }
            },
            Error::BadRedirect { .. }
            | Error::InvalidUrl { .. }
            | Error::Encode { .. }
            | Error::Decode { .. }
            | Error::DuplicateBatchKey { .. }
            | Error::HttpClient(_) => ErrorClass::Permanent,
        }
    }

    /// Whether the access token expired and cannot be renewed for a reason no retry mends: the
    /// auth server refused the app's credentials or the refresh token (`invalid_client`,
    /// `invalid_grant`), or there is no refresh token. The installation or the configuration
    /// must be fixed; network trouble and 5xx at the auth server are not this.
    pub fn is_credentials_problem(&self) -> bool {
        match self {
            Error::Refresh { source, .. } => source.is_credentials_problem(),
            Error::NoRefreshToken { .. } => true,
            _ => false,
        }
    }

    /// Whether the portal may have run the call although no answer says so: the request went
    /// out and its answer was lost (a dropped connection, a timeout), or the answer was a server
    /// error that does not say the call was turned away (any 5xx but the rate limits, which
    /// refuse before running anything, §5.6). A connection never made, or an answer that
    /// refuses, means the call did not run.
    pub fn may_have_been_processed(&self) -> bool {
        match self {
            Error::Transport { source, .. } => !source.is_connect(),
            Error::Api { status: Some(status), error, .. } => {
                *status >= 500 && !RETRYABLE_CODES.contains(&error.code.as_str())
            }
            Error::UnexpectedAnswer { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Whether repeating the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// The portal's error envelope, if this error carries one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Api { error, .. } => Some(error),
            Error::Refresh { source, .. } => match source.as_ref() {
                RefreshError::Rejected { error, .. } => Some(error),
                _ => None,
            },
            _ => None,
        }
    }

    /// The error code (`"ACCESS_DENIED"`, `"404"`, ...), if the portal sent one.
    pub fn code(&self) -> Option<&str> {
        self.api_error().map(|e| e.code.as_str())
    }

    /// When to try again, if the portal said: `operating_reset_at` of a 429
    /// `OPERATION_TIME_LIMIT` (§5.6). `None` for other errors; callers use their own backoff.
    pub fn retry_at(&self) -> Option<SystemTime> {
        match self {
            Error::Api { error, .. } if self.is_retryable() => error.operating_reset_at(),
            _ => None,
        }
    }
}

/// Error codes that mean "later": the leaky bucket (§5.6), the REST overload switch (§4.2),
/// the `operating` time limit (§5.6), a workflow still locked by the executing process (§3.3).
const RETRYABLE_CODES: &[&str] =
    &["QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT", "OPERATION_TIME_LIMIT", "423"];

/// Error codes that never heal by waiting, whatever HTTP status they come with. Most permanent
/// codes arrive as 4xx and need no entry; these are here because their status varies
/// (`PORTAL_DELETED` is 403 in the source but 500 in the docs, §5.4; OAuth errors may be 401 or
/// 403, §4.1 open question 6).
const PERMANENT_CODES: &[&str] = &[
    "PORTAL_DELETED",
    "ACCESS_DENIED",
    "404",
    "NO_AUTH_FOUND",
    "invalid_token",
    "invalid_grant",
    "invalid_client",
    "INVALID_CREDENTIALS",
    "insufficient_scope",
    "user_access_error",
    "APPLICATION_NOT_FOUND",
    "PAYMENT_REQUIRED",
];

/// The classification rules for an error envelope. `status` is the HTTP status, `None` for
/// batch sub-commands.
fn classify_api(status: Option<u16>, error: &ApiError) -> ErrorClass {
    let code = error.code.as_str();
    if code == "expired_token" {
        return ErrorClass::Token;
    }
    // "The workflow is hung or being executed" may come with an older code (§3.3).
    if RETRYABLE_CODES.contains(&code) || error.description.contains("hung or being executed") {
        return ErrorClass::Retryable;
    }
    if PERMANENT_CODES.contains(&code) {
        return ErrorClass::Permanent;
    }
    match status {
        Some(status) => classify_status(status),
        None => ErrorClass::Permanent,
    }
}

/// Unknown codes: 429 and 5xx heal with time, anything else is the request's fault.
fn classify_status(status: u16) -> ErrorClass {
    if status == 429 || status >= 500 { ErrorClass::Retryable } else { ErrorClass::Permanent }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(status: Option<u16>, body: Value) -> Error {
        let object = body.as_object().cloned().unwrap_or_default();
        let error = ApiError::from_object(&object).expect("an error envelope");
        Error::Api { method: "m".into(), status, error }
    }

    #[test]
    fn rate_and_lock_errors_are_retryable() {
        for (status, body) in [
            (
                503,
                json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
            ),
            (503, json!({"error": "OVERLOAD_LIMIT"})),
            (429, json!({"error": "OPERATION_TIME_LIMIT"})),
            (
                400,
                json!({"error": "423", "error_description": "The workflow is hung or being executed"}),
            ),
            (
                400,
                json!({"error": "ERROR_CORE", "error_description": "The workflow is hung or being executed"}),
            ),
            (500, json!({"error": "INTERNAL_SERVER_ERROR"})),
            (502, json!({"error": "SOMETHING_NEW"})),
        ] {
            assert_eq!(api(Some(status), body.clone()).class(), ErrorClass::Retryable, "{body}");
        }
    }

    #[test]
    fn refusals_are_permanent_and_unknown_4xx_too() {
        for (status, body) in [
            (403, json!({"error": "ACCESS_DENIED", "error_description": "Access denied!"})),
            (
                400,
                json!({"error": "404", "error_description": "The business process is not found."}),
            ),
            (400, json!({"error": 404, "error_description": "The business process is not found."})),
            (400, json!({"error": "ERROR_ACTIVITY_VALIDATION_FAILURE"})),
            (400, json!({"error": "ERROR_WRONG_HANDLER_URL"})),
            (401, json!({"error": "NO_AUTH_FOUND"})),
            (401, json!({"error": "invalid_token"})),
            (500, json!({"error": "PORTAL_DELETED"})),
            (418, json!({"error": "SOMETHING_NEW"})),
        ] {
            assert_eq!(api(Some(status), body.clone()).class(), ErrorClass::Permanent, "{body}");
        }
    }

    #[test]
    fn expired_token_is_its_own_class() {
        assert_eq!(api(Some(401), json!({"error": "expired_token"})).class(), ErrorClass::Token);
    }

    #[test]
    fn numeric_error_codes_read_as_their_decimal_text() {
        let error = api(Some(400), json!({"error": 404, "error_description": "gone"}));
        assert_eq!(error.code(), Some("404"));
    }

    #[test]
    fn operating_limit_carries_its_reset_time() {
        let error = api(
            Some(429),
            json!({"error": "OPERATION_TIME_LIMIT", "operating_reset_at": 1_738_149_352}),
        );
        assert_eq!(error.retry_at(), Some(UNIX_EPOCH + Duration::from_secs(1_738_149_352)));
        let nested = api(
            Some(429),
            json!({"error": "OPERATION_TIME_LIMIT", "time": {"operating_reset_at": 1_738_149_352.5}}),
        );
        assert_eq!(nested.retry_at(), Some(UNIX_EPOCH + Duration::from_secs_f64(1_738_149_352.5)));
    }

    #[test]
    fn refresh_rejections_are_permanent_and_outages_retryable() {
        let rejected = Error::Refresh {
            method: "m".into(),
            source: Arc::new(RefreshError::Rejected {
                status: 400,
                error: ApiError {
                    code: "invalid_grant".into(),
                    description: String::new(),
                    extra: Map::new(),
                },
            }),
        };
        assert_eq!(rejected.class(), ErrorClass::Permanent);
        let outage = Error::Refresh {
            method: "m".into(),
            source: Arc::new(RefreshError::Unreadable {
                status: 502,
                source: serde_json::from_str::<Value>("<html>").unwrap_err(),
            }),
        };
        assert_eq!(outage.class(), ErrorClass::Retryable);
    }
}
