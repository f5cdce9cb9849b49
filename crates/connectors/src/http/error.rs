//! What goes wrong in an HTTP call, and the one place that decides retryable or fatal.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::connector::ConnectorError;
use crate::mapping::MappingError;
use crate::template::RenderError;

/// The `http` connector's own error. Messages never contain header values or the query string.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The call's values do not fit the templates (a property is missing, a header value has
    /// CR/LF, …).
    #[error("{template}: {source}")]
    Render {
        /// Which template: `url`, `headers.X-Company`, `query.from`, `body`.
        template: String,
        #[source]
        source: RenderError,
    },
    /// The rendered URL does not parse.
    #[error("the rendered URL is not valid: {source}")]
    Url {
        #[source]
        source: url::ParseError,
    },
    /// A rendered header value is not one HTTP allows.
    #[error("headers.{name}: the rendered value is not a valid header value")]
    HeaderValue { name: String },
    /// No answer within the timeout (connecting, sending or reading the body).
    #[error("no answer within {after:?}")]
    Timeout {
        after: Duration,
        #[source]
        source: reqwest::Error,
    },
    /// The connection could not be made (refused, unreachable, DNS, TLS).
    #[error("could not connect: {cause}")]
    Connect {
        cause: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke while sending or receiving (closed early, reset, truncated body).
    #[error("the connection failed: {cause}")]
    Transport {
        cause: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status other than 2xx.
    #[error("answered {status}{}", body_excerpt(.body))]
    Status {
        status: StatusCode,
        /// From `Retry-After` (seconds or an HTTP date), if present and valid.
        retry_after: Option<Duration>,
        /// The start of the response body, for the log.
        body: String,
    },
    /// The response body is bigger than `max_response_bytes`.
    #[error("the response body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// A 2xx whose body is not JSON, although return values are mapped from it.
    #[error("answered {status} with a body that is not JSON ({content_type}): {source}")]
    InvalidBody {
        status: StatusCode,
        content_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// A 2xx JSON body without a value the mapping requires.
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

/// `: body`, or nothing for an empty body.
pub(crate) fn body_excerpt(body: &str) -> String {
    if body.is_empty() { String::new() } else { format!(": {body}") }
}

impl HttpError {
    /// Classifies a reqwest error from sending or reading.
    pub(crate) fn from_reqwest(error: reqwest::Error, timeout: Duration) -> HttpError {
        // The URL may carry a templated value or a key in its query: the message names the
        // endpoint itself, without the query.
        let error = error.without_url();
        let cause = root_cause(&error);
        if error.is_timeout() {
            HttpError::Timeout { after: timeout, source: error }
        } else if error.is_connect() {
            HttpError::Connect { cause, source: error }
        } else {
            HttpError::Transport { cause, source: error }
        }
    }
}

/// The innermost message of an error chain ("Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// `Retry-After` as a delay: delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Which statuses are retried. Defaults: 408, 429 and 5xx retry; every other non-2xx is fatal
/// (a 3xx too: redirects are not followed, configure the final URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StatusPolicy {
    pub retry_on: Vec<u16>,
    pub fatal_on: Vec<u16>,
    pub retry_on_invalid_body: bool,
}

impl StatusPolicy {
    fn is_retryable(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        if self.fatal_on.contains(&code) {
            false
        } else if self.retry_on.contains(&code) {
            true
        } else {
            status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error()
        }
    }

    /// The one place an [`HttpError`] becomes retryable or fatal. `endpoint` is
    /// `METHOD scheme://host/path`, put in front of the reason.
    ///
    /// - timeouts, connection failures and broken connections: retryable — the other side may be
    ///   back on the next attempt;
    /// - statuses: see the type's docs, with `Retry-After` passed on;
    /// - a 2xx body that is not JSON: fatal unless `retry_on_invalid_body`. A complete 2xx
    ///   answer is the upstream's deliberate reply, so asking again most likely gets the same
    ///   garbage (a wrong URL pointing at a web page, a broken upstream); retrying would only hide
    ///   that until the deadline. A body cut short by a dropped connection is a transport error,
    ///   and retried;
    /// - a missing mapped value, a template that cannot be rendered for this call, a body over
    ///   the size limit: fatal — the same input gives the same failure.
    pub fn classify(&self, endpoint: &str, error: HttpError) -> ConnectorError {
        let reason = format!("{endpoint}: {error}");
        decided(reason, self.retry_delay(&error)).with_source(error)
    }

    /// The decision behind [`classify`](Self::classify), for connectors that wrap [`HttpError`]
    /// in an error of their own: `None` when fatal, `Some(retry_after)` when retryable.
    pub(crate) fn retry_delay(&self, error: &HttpError) -> Option<Option<Duration>> {
        match error {
            HttpError::Timeout { .. } | HttpError::Connect { .. } | HttpError::Transport { .. } => {
                Some(None)
            }
            HttpError::Status { status, retry_after, .. } if self.is_retryable(*status) => {
                Some(*retry_after)
            }
            HttpError::InvalidBody { .. } if self.retry_on_invalid_body => Some(None),
            HttpError::Status { .. }
            | HttpError::InvalidBody { .. }
            | HttpError::Render { .. }
            | HttpError::Url { .. }
            | HttpError::HeaderValue { .. }
            | HttpError::TooLarge { .. }
            | HttpError::Mapping(_) => None,
        }
    }
}

/// A failure with `reason`, fatal when `retry` is `None`, else retryable (after the delay, if
/// any): the shape of [`StatusPolicy::retry_delay`]'s answer.
pub(crate) fn decided(reason: String, retry: Option<Option<Duration>>) -> ConnectorError {
    match retry {
        Some(Some(after)) => ConnectorError::retryable(reason).with_retry_after(after),
        Some(None) => ConnectorError::retryable(reason),
        None => ConnectorError::fatal(reason),
    }
}
