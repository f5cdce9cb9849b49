//! The `http` connector: calls an HTTP/JSON API with a templated request and maps the JSON answer
//! to return values.
//!
//! # Config
//!
//! ```toml
//! [actions.connector]
//! kind = "http"
//! # Absolute http(s) URL. Placeholders only after the host; their values are percent-encoded.
//! url = "https://finance.example.com/api/v1/companies/{{properties.company_id}}/credit-check"
//! method = "POST"                 # default POST
//! timeout = "10s"                 # optional; the action's per-attempt timeout applies as well
//! idempotency_header = "Idempotency-Key"  # default; carries the job id; "" sends none
//! retry_on_status = [409]         # default rule: 408, 429 and 5xx retry, other non-2xx fail
//! fatal_on_status = [501]
//! retry_on_invalid_body = false   # a 2xx that is not JSON fails at once (see below)
//! max_response_bytes = 1048576
//!
//! [actions.connector.headers]     # values templated; the host resolves secrets before us
//! Authorization = "Bearer 5f2b…"
//! X-Deal = "{{document.id}}"
//!
//! [actions.connector.query]       # templated, form-encoded, appended to the URL's query
//! source = "bitrix24"
//! deal = "{{document.id}}"
//!
//! [actions.connector.body]        # a JSON template
//! amount = "{{properties.amount}}"           # exactly one placeholder: stays a number
//! comment = "Request {{document.id}} from Bitrix24"  # interpolated as text
//! managers = "{{properties.managers?}}"      # `?`: null when the call does not carry it
//! request_id = "{{job.id}}"
//!
//! [actions.connector.response]    # return-property id → JSON pointer into the response
//! available_limit = "/limit/available"
//! approval_required = "/decision/approval_required"
//! reason = { pointer = "/decision/reason", default = "" }
//! ```
//!
//! Placeholders are described in [`template`](crate::template).
//!
//! # Errors
//!
//! Config errors name the key (``connector.url: `finance.example.com/x` has no scheme: write
//! https://finance.example.com/x``). At run time,
//! [`HttpError`] is classified by one function, `StatusPolicy::classify`:
//! timeouts, connection failures, 408, 429 and 5xx are retryable (with `Retry-After` as the delay);
//! other 4xx and 3xx (redirects are not followed), a missing mapped value, a property the
//! templates need but the call lacks, or a response over the size limit are fatal. A 2xx whose body
//! is not JSON while values are mapped from it is fatal by default: a complete 2xx is the
//! upstream's deliberate answer and is likely to be the same next time (a URL that points at a web
//! page, a broken upstream), so retrying would only hide the fault until the deadline; set
//! `retry_on_invalid_body` for an upstream that serves maintenance pages with 200.
//!
//! Header values, the query string and bodies are never logged or put in error messages.

mod config;
pub(crate) mod error;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use url::{Position, Url};

pub use config::HttpConfig;
pub(crate) use config::without_query;
pub use error::HttpError;

use crate::config::ConfigError;
use crate::connector::{ConnectorError, ConnectorRequest, Contract, Outputs};
use crate::mapping::ResponseMapping;
use crate::template::{Escape, JsonTemplate, Placeholder, Template};
use error::StatusPolicy;

/// `impl Connector` for a connector that calls out over HTTP. Each attempt gets its timeout from
/// [`attempt_timeout`] (the connector's `timeout` field and the host's) and runs
/// `attempt(request, timeout)` inside a debug span named `$span` with the job id, the attempt
/// number and `$field`s (declared empty, for `attempt` to record); an error it returns becomes a
/// [`ConnectorError`] through `From`. The contract is the connector's `known_contract()`.
macro_rules! impl_http_connector {
    ($connector:ty, $span:literal $(, $field:ident = $value:expr)* $(,)?) => {
        impl $crate::connector::Connector for $connector {
            fn run<'a>(
                &'a self,
                request: &'a $crate::connector::ConnectorRequest,
            ) -> $crate::connector::BoxFuture<
                'a,
                Result<$crate::connector::Outputs, $crate::connector::ConnectorError>,
            > {
                let timeout = $crate::http::attempt_timeout(self.timeout, request);
                let span = tracing::debug_span!(
                    $span,
                    job_id = %request.job_id,
                    attempt = request.attempt,
                    $($field = $value,)*
                );
                Box::pin(tracing::Instrument::instrument(
                    async move {
                        self.attempt(request, timeout)
                            .await
                            .map_err($crate::connector::ConnectorError::from)
                    },
                    span,
                ))
            }

            fn contract(&self) -> Option<$crate::connector::Contract> {
                Some(self.known_contract())
            }
        }
    };
}
pub(crate) use impl_http_connector;

/// When neither the connector nor the host sets a timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of an error response's body goes into the reason.
const EXCERPT_CHARS: usize = 200;

/// The `http` connector, built from a checked [`HttpConfig`]. `Debug` shows the endpoint only.
pub struct HttpConnector {
    client: reqwest::Client,
    method: Method,
    url: Template,
    /// `METHOD url-template-without-query`, for errors before the URL is rendered.
    endpoint_template: String,
    /// As configured (for messages), parsed, and the value template.
    headers: Vec<(String, HeaderName, Template)>,
    query: Vec<(String, Template)>,
    body: Option<JsonTemplate>,
    timeout: Option<Duration>,
    idempotency_header: Option<HeaderName>,
    max_response_bytes: usize,
    response: ResponseMapping,
    policy: StatusPolicy,
}

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_endpoint_only(f, "HttpConnector", &self.endpoint_template)
    }
}

impl WithClient for HttpConnector {
    type Config = HttpConfig;

    fn with_client(config: Self::Config, client: reqwest::Client) -> Result<Self, ConfigError> {
        let method = Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ConfigError::new("method", "not an HTTP method"))?;
        let url = parse_url(&config.url)?;
        let endpoint_template = format!("{method} {}", config::without_query(&config.url));

        let mut headers = Vec::with_capacity(config.headers.len());
        for (name, value) in &config.headers {
            let key = format!("headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::new(&key, "not a valid header name"))?;
            let template = Template::parse(value).map_err(|e| template_error(&key, e))?;
            if template.literal_text().chars().any(|c| c.is_control() && c != '\t') {
                return Err(ConfigError::new(key, "the value contains a control character"));
            }
            headers.push((name.clone(), header, template));
        }

        let query = config
            .query
            .iter()
            .map(|(name, value)| {
                Template::parse(value)
                    .map(|template| (name.clone(), template))
                    .map_err(|e| template_error(&format!("query.{name}"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let body = match &config.body {
            None => None,
            Some(_) if method == Method::GET || method == Method::HEAD => {
                return Err(ConfigError::new("body", format!("a {method} request has no body")));
            }
            Some(body) => Some(JsonTemplate::parse(body).map_err(|e| {
                ConfigError::new(format!("body{}", e.at), e.source.to_string()).with_source(e)
            })?),
        };

        check_timeout(config.timeout)?;
        if config.max_response_bytes == 0 {
            return Err(ConfigError::new("max_response_bytes", "must be at least 1"));
        }
        let idempotency_header = idempotency_header(&config.idempotency_header)?;
        check_statuses("retry_on_status", &config.retry_on_status)?;
        check_statuses("fatal_on_status", &config.fatal_on_status)?;
        if let Some(both) =
            config.fatal_on_status.iter().find(|s| config.retry_on_status.contains(s))
        {
            return Err(ConfigError::new(
                "fatal_on_status",
                format!("{both} is in retry_on_status too"),
            ));
        }

        Ok(HttpConnector {
            client,
            method,
            url,
            endpoint_template,
            headers,
            query,
            body,
            timeout: config.timeout,
            idempotency_header,
            max_response_bytes: config.max_response_bytes,
            response: config.response,
            policy: StatusPolicy {
                retry_on: config.retry_on_status,
                fatal_on: config.fatal_on_status,
                retry_on_invalid_body: config.retry_on_invalid_body,
            },
        })
    }
}

impl HttpConnector {
    fn render_url(&self, request: &ConnectorRequest) -> Result<Url, HttpError> {
        let text = self
            .url
            .render(request, Escape::UrlComponent)
            .map_err(|source| HttpError::Render { template: "url".to_owned(), source })?;
        let mut url = Url::parse(&text).map_err(|source| HttpError::Url { source })?;
        if !self.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, template) in &self.query {
                let value = template.render(request, Escape::Text).map_err(|source| {
                    HttpError::Render { template: format!("query.{name}"), source }
                })?;
                pairs.append_pair(name, &value);
            }
        }
        Ok(url)
    }

    async fn call(
        &self,
        url: Url,
        request: &ConnectorRequest,
        timeout: Duration,
    ) -> Result<Outputs, HttpError> {
        let mut builder = self.client.request(self.method.clone(), url).timeout(timeout);
        for (key, name, template) in &self.headers {
            let text = template.render(request, Escape::Header).map_err(|source| {
                HttpError::Render { template: format!("headers.{key}"), source }
            })?;
            let mut value = HeaderValue::from_bytes(text.as_bytes())
                .map_err(|_| HttpError::HeaderValue { name: key.clone() })?;
            value.set_sensitive(true);
            builder = builder.header(name, value);
        }
        if let Some(name) = &self.idempotency_header
            && !self.headers.iter().any(|(_, configured, _)| configured == name)
        {
            let value = HeaderValue::from_str(&request.job_id)
                .map_err(|_| HttpError::HeaderValue { name: name.to_string() })?;
            builder = builder.header(name, value);
        }
        if let Some(body) = &self.body {
            let body = body
                .render(request)
                .map_err(|source| HttpError::Render { template: "body".to_owned(), source })?;
            builder = builder.json(&body);
        }

        let response =
            builder.send().await.map_err(|error| HttpError::from_reqwest(error, timeout))?;
        let status = response.status();
        tracing::debug!(status = status.as_u16(), "answered");
        if !status.is_success() {
            let retry_after = error::retry_after(response.headers());
            let body = excerpt(response).await;
            return Err(HttpError::Status { status, retry_after, body });
        }
        if self.response.is_empty() {
            return Ok(Outputs::new());
        }
        let content_type = content_type(&response);
        let bytes = read_limited(response, self.max_response_bytes, timeout).await?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|source| HttpError::InvalidBody { status, content_type, source })?;
        let values = self.response.apply(&body)?;
        Ok(Outputs { values, log: None })
    }
}

impl HttpConnector {
    /// One attempt: renders the request, sends it and maps the answer.
    async fn attempt(
        &self,
        request: &ConnectorRequest,
        timeout: Duration,
    ) -> Result<Outputs, ConnectorError> {
        let url = self
            .render_url(request)
            .map_err(|e| self.policy.classify(&self.endpoint_template, e))?;
        let endpoint = format!("{} {}", self.method, &url[..Position::AfterPath]);
        tracing::Span::current().record("endpoint", endpoint.as_str());
        self.call(url, request, timeout).await.map_err(|e| self.policy.classify(&endpoint, e))
    }

    fn known_contract(&self) -> Contract {
        let mut placeholders: Vec<&Placeholder> = self.url.placeholders().collect();
        placeholders.extend(self.headers.iter().flat_map(|(_, _, t)| t.placeholders()));
        placeholders.extend(self.query.iter().flat_map(|(_, t)| t.placeholders()));
        if let Some(body) = &self.body {
            placeholders.extend(body.placeholders());
        }
        let inputs = required_properties(placeholders);
        let outputs = self.response.properties().map(str::to_owned).collect();
        Contract { inputs, outputs }
    }
}

impl_http_connector!(HttpConnector, "http", endpoint = tracing::field::Empty);

/// A connector that calls out over HTTP, built from its config on its own client ([`new`]) or
/// on a client of the caller's ([`with_client`], to share a connection pool).
///
/// [`new`]: WithClient::new
/// [`with_client`]: WithClient::with_client
pub trait WithClient: Sized {
    /// The connector's settings, as deserialized from its `[actions.connector]` table.
    type Config;

    /// Checks the config and builds the connector on a client of the caller's. The client should
    /// not follow redirects.
    fn with_client(config: Self::Config, client: reqwest::Client) -> Result<Self, ConfigError>;

    /// Checks the config and builds the connector with the built-in connectors' HTTP client
    /// (rustls on `ring`, no redirects, system proxy settings honoured).
    fn new(config: Self::Config) -> Result<Self, ConfigError> {
        Self::with_client(config, client()?)
    }
}

/// The HTTP client the built-in connectors use: rustls on `ring`, no redirects (a 3xx is an
/// answer to report, not to follow with the credentials), system proxy settings honoured.
pub(crate) fn client() -> Result<reqwest::Client, ConfigError> {
    // Fails only if a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("b24act/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::new("", "cannot set up an HTTP client").with_source(e))
}

/// `Debug` for a connector whose other fields may hold secrets: its name and endpoint only.
pub(crate) fn debug_endpoint_only(
    f: &mut std::fmt::Formatter<'_>,
    connector: &str,
    endpoint: &str,
) -> std::fmt::Result {
    f.debug_struct(connector).field("endpoint", &endpoint).finish_non_exhaustive()
}

/// Parses the URL template: absolute http(s), placeholders only after the host.
pub(crate) fn parse_url(source: &str) -> Result<Template, ConfigError> {
    if let Some(problem) = crate::config::missing_scheme(source) {
        return Err(ConfigError::new("url", problem));
    }
    let template = Template::parse(source).map_err(|e| template_error("url", e))?;
    if let Some(at) = template.first_placeholder_at() {
        // Everything before the path: `scheme://authority`.
        let authority_end = source
            .find("://")
            .map(|start| {
                let rest = &source[start + 3..];
                start + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len())
            })
            .unwrap_or(0);
        if at < authority_end {
            return Err(ConfigError::new(
                "url",
                "placeholders are allowed only in the path, query and fragment, not in the scheme or host",
            ));
        }
    }
    let sample = Url::parse(&template.render_with("x"))
        .map_err(|e| ConfigError::new("url", e.to_string()).with_source(e))?;
    if !matches!(sample.scheme(), "http" | "https") {
        return Err(ConfigError::new("url", format!("`{}` is not http or https", sample.scheme())));
    }
    Ok(template)
}

/// A template that does not parse, as a config error naming its key.
pub(crate) fn template_error(key: &str, error: crate::template::TemplateError) -> ConfigError {
    ConfigError::new(key, error.to_string()).with_source(error)
}

/// The timeout of one attempt: the connector's own and the host's per-attempt one, whichever is
/// shorter, or [`DEFAULT_TIMEOUT`] when neither is set.
pub(crate) fn attempt_timeout(own: Option<Duration>, request: &ConnectorRequest) -> Duration {
    match (own, request.attempt_timeout) {
        (Some(own), Some(host)) => own.min(host),
        (own, host) => own.or(host).unwrap_or(DEFAULT_TIMEOUT),
    }
}

/// A configured `timeout` must be longer than zero.
pub(crate) fn check_timeout(timeout: Option<Duration>) -> Result<(), ConfigError> {
    if timeout == Some(Duration::ZERO) {
        return Err(ConfigError::new("timeout", "must be longer than zero"));
    }
    Ok(())
}

/// The configured `idempotency_header`; `""` sends none.
pub(crate) fn idempotency_header(name: &str) -> Result<Option<HeaderName>, ConfigError> {
    match name {
        "" => Ok(None),
        name => HeaderName::from_bytes(name.as_bytes())
            .map(Some)
            .map_err(|_| ConfigError::new("idempotency_header", "not a valid header name")),
    }
}

/// The ids of the properties the placeholders require (optional ones left out).
pub(crate) fn required_properties<'a>(
    placeholders: impl IntoIterator<Item = &'a Placeholder>,
) -> BTreeSet<String> {
    placeholders
        .into_iter()
        .filter_map(|p| match p {
            Placeholder::Property { id, optional: false } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// The response's `Content-Type`, for a message.
pub(crate) fn content_type(response: &Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_owned()
}

fn check_statuses(key: &str, statuses: &[u16]) -> Result<(), ConfigError> {
    match statuses.iter().find(|&&s| !(300..=599).contains(&s)) {
        Some(bad) => Err(ConfigError::new(
            key,
            format!("{bad} is not a status this rule can apply to (300–599)"),
        )),
        None => Ok(()),
    }
}

/// An answer read whole: its status, its `Retry-After` and its body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) bytes: Vec<u8>,
}

impl Answer {
    /// Sends `request` (its own timeout already set) and reads the answer, refusing more than
    /// `limit` bytes; `service` names who answered in the debug log.
    pub(crate) async fn fetch(
        request: RequestBuilder,
        service: &str,
        limit: usize,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let response = request.send().await.map_err(|e| HttpError::from_reqwest(e, timeout))?;
        let status = response.status();
        tracing::debug!(status = status.as_u16(), "{service} answered");
        let retry_after = error::retry_after(response.headers());
        let bytes = read_limited(response, limit, timeout).await?;
        Ok(Answer { status, retry_after, bytes })
    }

    /// This answer as an unexpected status, with `body` (an excerpt of it, made safe to show).
    pub(crate) fn status_error(&self, body: String) -> HttpError {
        HttpError::Status { status: self.status, retry_after: self.retry_after, body }
    }
}

/// Reads the body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    mut response: Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(HttpError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|error| HttpError::from_reqwest(error, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Err(HttpError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error response's body, on one line, for the reason. Best effort.
async fn excerpt(mut response: Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    excerpt_of(&bytes)
}

/// The start of a body, on one line, at most [`EXCERPT_CHARS`] characters.
pub(crate) fn excerpt_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut line: String =
        text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(EXCERPT_CHARS).collect();
    if line.chars().count() == EXCERPT_CHARS {
        line.push('…');
    }
    line
}
