//! The `http` connector's settings, as written under `[actions.connector]`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::mapping::ResponseMapping;

/// Settings of the `http` connector. See the [module docs](crate::http) for a complete example.
///
/// Secrets (tokens in `headers` or `query`) arrive here already resolved by the host; `Debug`
/// prints header and query values as `<redacted>`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Absolute `http`/`https` URL; placeholders allowed in the path, query and fragment, where
    /// their values are percent-encoded. Not in the scheme or host: a call must not be able to
    /// send the configured credentials elsewhere.
    pub url: String,
    /// Default `POST`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Header name → templated value (CR/LF in a value is refused).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameter → templated value, form-encoded and appended to the URL's own query.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// A JSON template sent as `application/json` (see [`JsonTemplate`](crate::template::JsonTemplate));
    /// none means no body.
    #[serde(default)]
    pub body: Option<Value>,
    /// Per-request timeout; the host's per-attempt timeout applies too, whichever is shorter.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// Return-property id → JSON pointer into the response body.
    #[serde(default)]
    pub response: ResponseMapping,
    /// Statuses to retry although the default rule says fatal (e.g. `[409, 423]`).
    #[serde(default)]
    pub retry_on_status: Vec<u16>,
    /// Statuses to fail at once although the default rule says retry (e.g. `[501]`).
    #[serde(default)]
    pub fatal_on_status: Vec<u16>,
    /// Retry a 2xx whose body is not JSON instead of failing (for upstreams known to serve
    /// maintenance pages with 200).
    #[serde(default)]
    pub retry_on_invalid_body: bool,
    /// The header that carries the job id as idempotency key; `""` sends none.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Larger response bodies are refused (fatal). Default 1 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".to_owned()
}

fn default_max_response_bytes() -> usize {
    1 << 20
}

impl HttpConfig {
    /// A POST to `url` with the defaults for everything else.
    pub fn new(url: impl Into<String>) -> HttpConfig {
        HttpConfig {
            url: url.into(),
            method: default_method(),
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            body: None,
            timeout: None,
            response: ResponseMapping::default(),
            retry_on_status: Vec::new(),
            fatal_on_status: Vec::new(),
            retry_on_invalid_body: false,
            idempotency_header: default_idempotency_header(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |map: &BTreeMap<String, String>| {
            map.keys().map(|key| (key.clone(), "<redacted>")).collect::<BTreeMap<_, _>>()
        };
        f.debug_struct("HttpConfig")
            .field("url", &without_query(&self.url))
            .field("method", &self.method)
            .field("headers", &redacted(&self.headers))
            .field("query", &redacted(&self.query))
            .field("body", &self.body)
            .field("timeout", &self.timeout)
            .field("response", &self.response)
            .field("retry_on_status", &self.retry_on_status)
            .field("fatal_on_status", &self.fatal_on_status)
            .field("retry_on_invalid_body", &self.retry_on_invalid_body)
            .field("idempotency_header", &self.idempotency_header)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// A URL template without its query, which may hold an API key.
pub(crate) fn without_query(url: &str) -> String {
    match url.split_once('?') {
        Some((before, _)) => format!("{before}?<redacted>"),
        None => url.to_owned(),
    }
}
