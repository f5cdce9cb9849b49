//! The `sharepoint` connector: creates a document in a SharePoint document library through
//! Microsoft Graph — an app token from the client-credentials flow, then a simple upload of
//! content rendered from a template, or an upload session ([`session`]) for larger content —
//! and returns the item's id and web URL.
//!
//! # Config
//!
//! ```toml
//! [actions.connector]
//! kind = "sharepoint"
//! tenant = "contoso.onmicrosoft.com"     # or the tenant id
//! client_id = "6731de76-14a6-49ae-97bc-6eba6914391e"
//! client_secret = "Qx58Q~…"              # the host resolves secrets before us
//! site_id = "contoso.sharepoint.com,2c712604-…,2d2244c3-…"
//! drive_id = "b!BCZxLHATvU…"             # the document library
//! folder = "Approvals/{{document.id}}"   # optional; missing folders are created
//! file_name = "credit-check-{{document.id}}.md"
//! format = "markdown"                    # text | markdown | html | csv: how values are escaped
//! conflict = "replace"                   # replace (default) | rename | fail
//! content = """
//! # Credit check for {{properties.company_name}}
//!
//! Amount: {{properties.amount}} RUB, requested in {{document.id}}.
//! """
//! timeout = "30s"                        # per attempt; the host's attempt timeout applies too
//! simple_upload_max_bytes = 4194304      # larger content goes through an upload session
//! max_content_bytes = 262144000          # larger content is a fatal error
//! chunk_bytes = 5242880                  # an upload session's fragments, multiples of 320 KiB
//! document_id_property = "document_id"   # the return property that gets the item id
//! document_url_property = "document_url" # … and its web URL
//! # authority = "https://login.microsoftonline.com"   # defaults; other clouds or a fake
//! # graph_url = "https://graph.microsoft.com"
//! # scope = "https://graph.microsoft.com/.default"
//! ```
//!
//! The app registration needs the `Sites.ReadWrite.All` application permission with admin
//! consent, or `Sites.Selected` and a `write` grant on the site (`POST /sites/{site-id}/permissions`
//! by an admin with `Sites.FullControl.All`; without it Graph answers 403): see the README.
//!
//! # Names and content
//!
//! `folder` and `file_name` are templates; values put in are made safe as names
//! ([`Escape::FileName`]: `/`, `:`, `*`, `?`… become `_`), so a value cannot add a folder;
//! the template's own `/` separate folders. Leading and trailing spaces and trailing dots of each
//! name are dropped, as SharePoint would refuse them. The names SharePoint refuses (`CON`,
//! `desktop.ini`, `~$…`, `…_vti_…`, a path over 400 characters, …: [`names`]) are a config error
//! naming the key when the templates' fixed text makes them, and a fatal error naming the rule
//! when values do. Names go percent-encoded, `+` as `%2B`. `content` is a template whose values are
//! escaped for `format` ([`Escape::Markdown`], [`Escape::Html`], [`Escape::CsvField`], as is for
//! `text`), sent as `text/plain`, `text/markdown`, `text/html` or `text/csv` in UTF-8.
//!
//! # Sizes
//!
//! Graph's simple upload takes up to 250 MiB, but Microsoft recommends upload sessions above
//! 4 MiB: content up to `simple_upload_max_bytes` (default 4 MiB) goes in one `PUT`, larger
//! content through an upload session in fragments of `chunk_bytes`, resumed where the session
//! says after a failed fragment ([`session`]). Content over `max_content_bytes` (default
//! 250 MiB) is a fatal error before any request.
//!
//! # Conflicts, and running twice
//!
//! `replace` (Graph's default) overwrites a file of the same name and keeps its id; `rename`
//! stores the new one as `name 1.md`; `fail` makes an existing file a fatal error.
//!
//! A simple upload (`PUT …:/content`) replaces an existing file on some Graph deployments
//! whatever `@microsoft.graph.conflictBehavior` says (a Microsoft maintainer in
//! msgraph-sdk-php#186: it "always replaces"). So `fail` also sends `If-None-Match: *`, which
//! Graph answers 412 when the file exists (taken as "exists", like 409 `nameAlreadyExists`), and
//! `rename` always goes through an upload session, which honours the behaviour in its `item`;
//! an empty file cannot (a session takes no empty content), so `rename` with empty content is a
//! fatal error. A session checks `fail` when it is created and again at its last byte.
//!
//! Jobs run at least once: after a crash between Graph's answer and the host's record the upload
//! runs again, which `replace` makes harmless, `rename` turns into a second file, and `fail`
//! into a failed job.
//!
//! # Tokens
//!
//! The token is cached until a minute before it expires (a tenth of its lifetime for short
//! ones) and shared by concurrent calls: one request fetches it while the others wait. A 401
//! `InvalidAuthenticationToken` from Graph (a token revoked, or clocks that disagree) drops it,
//! fetches one new token and uploads once more; a second 401 is fatal. There is no other retry
//! loop here: the host retries.
//!
//! # Errors
//!
//! [`SharePointError`], classified in one place: timeouts, connection failures, 5xx, 429 and 423
//! (the file is locked) are retryable, after `Retry-After` when given; the identity platform
//! refusing the credentials (`invalid_client`, an unknown tenant or app), 403, 404 (site or
//! drive), 409 `nameAlreadyExists` with `conflict = "fail"` and other 4xx are fatal, with the
//! service's code and message in the reason. An upload session whose URL answers 404 is
//! retryable: the next attempt starts a new one. The client secret and tokens are never logged or
//! put in reasons; `Debug` shows `<redacted>`.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, IF_NONE_MATCH};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::config::ConfigError;
use crate::connector::{ConnectorError, ConnectorRequest, Contract, Outputs};
use crate::http::error::StatusPolicy;
use crate::http::{Answer, HttpError, WithClient, excerpt_of, required_properties, template_error};
use crate::secret::Secret;
use crate::template::{Escape, RenderError, Template, is_property_id};

mod names;
mod session;

/// The largest body of a simple upload Graph takes: 250 MiB.
pub const MAX_SIMPLE_UPLOAD: usize = 250 * 1024 * 1024;

/// `max_content_bytes` when not set: 250 MiB.
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 250 * 1024 * 1024;

/// An upload session's fragments are multiples of this (320 KiB), but the last.
pub const FRAGMENT_MULTIPLE: usize = 320 * 1024;

/// A fragment must be smaller than this (60 MiB).
pub const MAX_FRAGMENT: usize = 60 * 1024 * 1024;

/// Answers (tokens, driveItems, errors) are small; anything bigger is not one.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A cached token is dropped this long before it expires (or a tenth of its lifetime if less).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// How values are escaped in the content, and the content type it is sent as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Markdown,
    Html,
    Csv,
}

impl Format {
    fn escape(self) -> Escape {
        match self {
            Format::Text => Escape::Text,
            Format::Markdown => Escape::Markdown,
            Format::Html => Escape::Html,
            Format::Csv => Escape::CsvField,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// What happens when the file already exists (`@microsoft.graph.conflictBehavior`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// Overwrite it, keeping its id (Graph's default; harmless when a job runs twice).
    #[default]
    Replace,
    /// Store the new file as `name 1.ext` (always through an upload session).
    Rename,
    /// A fatal error (`If-None-Match: *` sent as well).
    Fail,
}

impl Conflict {
    fn as_str(self) -> &'static str {
        match self {
            Conflict::Replace => "replace",
            Conflict::Rename => "rename",
            Conflict::Fail => "fail",
        }
    }
}

/// Settings of the `sharepoint` connector; see the [module docs](self). `Debug` redacts the
/// client secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharePointConfig {
    /// The tenant's id or a verified domain (`contoso.onmicrosoft.com`).
    pub tenant: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    pub client_secret: Secret,
    /// Default `https://login.microsoftonline.com`.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// Default `https://graph.microsoft.com`; `/v1.0` is appended.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Default `https://graph.microsoft.com/.default`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// `hostname,site-collection-id,web-id`.
    pub site_id: String,
    /// The document library's drive id.
    pub drive_id: String,
    /// A template; `/` separates folders; empty: the library's root.
    #[serde(default)]
    pub folder: String,
    /// A template.
    pub file_name: String,
    /// A template; values escaped for `format`.
    pub content: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub conflict: Conflict,
    /// For the whole attempt (token and upload); the host's attempt timeout applies too.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// Content up to this many bytes goes in one `PUT`, larger content through an upload
    /// session. Default 4 MiB, above which Microsoft recommends sessions; at most
    /// [`MAX_SIMPLE_UPLOAD`].
    #[serde(default = "default_simple_upload_max_bytes")]
    pub simple_upload_max_bytes: usize,
    /// Larger content is a fatal error. Default [`DEFAULT_MAX_CONTENT_BYTES`].
    #[serde(default = "default_max_content_bytes")]
    pub max_content_bytes: usize,
    /// The size of an upload session's fragments: a multiple of [`FRAGMENT_MULTIPLE`], under
    /// [`MAX_FRAGMENT`]. Default 5 MiB.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: usize,
    /// The return property that gets the item id. Default `document_id`.
    #[serde(default = "default_id_property")]
    pub document_id_property: String,
    /// The return property that gets the item's web URL. Default `document_url`.
    #[serde(default = "default_url_property")]
    pub document_url_property: String,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".to_owned()
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com".to_owned()
}

fn default_scope() -> String {
    "https://graph.microsoft.com/.default".to_owned()
}

fn default_simple_upload_max_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_max_content_bytes() -> usize {
    DEFAULT_MAX_CONTENT_BYTES
}

fn default_chunk_bytes() -> usize {
    16 * FRAGMENT_MULTIPLE
}

fn default_id_property() -> String {
    "document_id".to_owned()
}

fn default_url_property() -> String {
    "document_url".to_owned()
}

/// The `sharepoint` connector's own error. Messages never contain the secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum SharePointError {
    /// The call's values do not fit a template (a property is missing).
    #[error("{template}: {source}")]
    Render {
        /// `folder`, `file_name` or `content`.
        template: &'static str,
        #[source]
        source: RenderError,
    },
    /// A folder or file name rendered to nothing usable.
    #[error("{template} renders an empty name{}", if .path.is_empty() { String::new() } else { format!(" in `{}`", .path) })]
    EmptyName { template: &'static str, path: String },
    /// A rendered name SharePoint refuses; `rule` says which.
    #[error("{template} renders `{name}`, which SharePoint refuses: {rule}")]
    Name { template: &'static str, name: String, rule: &'static str },
    /// The path is over [`names::MAX_PATH_CHARS`] characters.
    #[error(
        "the path `{path}` is {chars} characters; SharePoint takes at most {}, the library's own path included",
        names::MAX_PATH_CHARS
    )]
    PathTooLong { path: String, chars: usize },
    /// The content is over `max_content_bytes`.
    #[error(
        "the content is {size} bytes; max_content_bytes allows {max} (raise it, or make the content smaller)"
    )]
    TooLarge { size: usize, max: usize },
    /// The upload session's URL answers 404: it expired, was cancelled, or finished while its
    /// answer was lost. The next attempt starts a new session.
    #[error("the upload session is gone (its URL answered 404); the next attempt starts a new one")]
    SessionGone,
    /// The exchange failed below the service: timeout, connection, a status without its JSON
    /// error. `service` is `token endpoint`, `Graph` or `upload session`.
    #[error("{service}: {source}")]
    Http {
        service: &'static str,
        #[source]
        source: HttpError,
    },
    /// The identity platform's error answer (`{"error", "error_description"}`).
    #[error("the identity platform answered {status}: {error}: {description}")]
    Token { status: StatusCode, error: String, description: String, retry_after: Option<Duration> },
    /// Graph's error answer (`{"error": {"code", "message"}}`).
    #[error("Graph answered {status} {code}: {message}{}", graph_hint(*.status, .code))]
    Graph { status: StatusCode, code: String, message: String, retry_after: Option<Duration> },
    /// The file exists and `conflict = "fail"` (Graph answered 409 `nameAlreadyExists`, or 412
    /// to `If-None-Match: *`).
    #[error(
        "`{path}` already exists in the library and conflict = \"fail\"; \
         set conflict to \"replace\" or \"rename\", or make file_name unique"
    )]
    Exists { path: String },
    /// `conflict = "rename"` needs an upload session, which takes no empty content.
    #[error(
        "the content renders empty, and conflict = \"rename\" needs an upload session, which takes no empty file; \
         use \"replace\" or \"fail\", or give the file content"
    )]
    EmptyRename,
    /// A 2xx that is not what the service promises.
    #[error("{service} answered in an unexpected shape: {problem}")]
    Malformed { service: &'static str, problem: String },
}

fn graph_hint(status: StatusCode, code: &str) -> &'static str {
    match (status.as_u16(), code) {
        (401, _) => " (a freshly issued token was refused too)",
        (403, _) => {
            " (the app needs the Sites.ReadWrite.All application permission with admin consent, or Sites.Selected and a write grant on this site: POST /v1.0/sites/{site-id}/permissions)"
        }
        (404, _) => " (check site_id and drive_id)",
        _ => "",
    }
}

impl From<SharePointError> for ConnectorError {
    fn from(error: SharePointError) -> ConnectorError {
        error.classify()
    }
}

impl SharePointError {
    /// The one place a SharePoint failure becomes retryable or fatal; `SharePoint: ` goes in
    /// front of the reason. Failures below the services are classified by the `http`
    /// connector's rule and keep its [`HttpError`] as the source.
    pub fn classify(self) -> ConnectorError {
        let error = match self {
            SharePointError::Http { service, source } => {
                return StatusPolicy::default().classify(&format!("SharePoint {service}"), source);
            }
            other => other,
        };
        let retry = error.retry();
        let reason = format!("SharePoint: {error}");
        crate::http::error::decided(reason, retry).with_source(error)
    }

    /// `None` when fatal, `Some(retry_after)` when another try may succeed.
    fn retry(&self) -> Option<Option<Duration>> {
        match self {
            SharePointError::Http { source, .. } => StatusPolicy::default().retry_delay(source),
            SharePointError::Token { status, retry_after, .. }
                if *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
            {
                Some(*retry_after)
            }
            SharePointError::Graph { status, retry_after, .. }
                if *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::LOCKED
                    || status.is_server_error() =>
            {
                Some(*retry_after)
            }
            SharePointError::SessionGone => Some(None),
            _ => None,
        }
    }
}

/// An access token and when to stop using it.
struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

/// The `sharepoint` connector, built from a checked [`SharePointConfig`].
pub struct SharePointConnector {
    client: reqwest::Client,
    token_url: Url,
    client_id: String,
    client_secret: Secret,
    scope: String,
    /// `…/v1.0/sites/{site}/drives/{drive}`.
    drive_url: Url,
    folder: Template,
    file_name: Template,
    content: Template,
    format: Format,
    conflict: Conflict,
    timeout: Option<Duration>,
    simple_upload_max_bytes: usize,
    max_content_bytes: usize,
    chunk_bytes: usize,
    document_id_property: String,
    document_url_property: String,
    /// Held while a token is fetched, so concurrent calls wait for one fetch.
    token: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for SharePointConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharePointConnector")
            .field("drive", &self.drive_url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("conflict", &self.conflict)
            .finish_non_exhaustive()
    }
}

impl WithClient for SharePointConnector {
    type Config = SharePointConfig;

    fn with_client(config: Self::Config, client: reqwest::Client) -> Result<Self, ConfigError> {
        let tenant = config.tenant.trim();
        if tenant.is_empty()
            || !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError::new(
                "tenant",
                "expected the tenant id or a domain such as contoso.onmicrosoft.com",
            ));
        }
        if config.client_id.trim().is_empty() {
            return Err(ConfigError::new("client_id", "empty"));
        }
        if config.client_secret.is_empty() {
            return Err(ConfigError::new("client_secret", "empty"));
        }
        let mut token_url = base_url("authority", &config.authority)?;
        push_segments(&mut token_url, &[tenant, "oauth2", "v2.0", "token"]);
        for (key, value) in [("site_id", &config.site_id), ("drive_id", &config.drive_id)] {
            if value.trim().is_empty() || value.contains(['/', '?', '#']) {
                return Err(ConfigError::new(key, "expected a Graph id (no `/`, `?` or `#`)"));
            }
        }
        let mut drive_url = base_url("graph_url", &config.graph_url)?;
        push_segments(
            &mut drive_url,
            &["v1.0", "sites", config.site_id.trim(), "drives", config.drive_id.trim()],
        );
        if config.scope.trim().is_empty() {
            return Err(ConfigError::new("scope", "empty"));
        }

        let folder = Template::parse(&config.folder).map_err(|e| template_error("folder", e))?;
        names::check_template("folder", &folder, true)?;
        let file_name =
            Template::parse(&config.file_name).map_err(|e| template_error("file_name", e))?;
        if config.file_name.trim().is_empty() {
            return Err(ConfigError::new("file_name", "empty"));
        }
        names::check_template("file_name", &file_name, false)?;
        names::check_fixed_length(&folder, &file_name)?;
        let content = Template::parse(&config.content).map_err(|e| template_error("content", e))?;
        crate::http::check_timeout(config.timeout)?;
        check_sizes(&config)?;
        for (key, id) in [
            ("document_id_property", &config.document_id_property),
            ("document_url_property", &config.document_url_property),
        ] {
            if !is_property_id(id) {
                return Err(ConfigError::new(
                    key,
                    "not a property id (letters, digits and `_`, starting with a letter)",
                ));
            }
        }
        if config.document_id_property == config.document_url_property {
            return Err(ConfigError::new("document_url_property", "same as document_id_property"));
        }
        Ok(SharePointConnector {
            client,
            token_url,
            client_id: config.client_id.trim().to_owned(),
            client_secret: config.client_secret,
            scope: config.scope.trim().to_owned(),
            drive_url,
            folder,
            file_name,
            content,
            format: config.format,
            conflict: config.conflict,
            timeout: config.timeout,
            simple_upload_max_bytes: config.simple_upload_max_bytes,
            max_content_bytes: config.max_content_bytes,
            chunk_bytes: config.chunk_bytes,
            document_id_property: config.document_id_property,
            document_url_property: config.document_url_property,
            token: Mutex::new(None),
        })
    }
}

impl SharePointConnector {
    /// The item's path in the library, as names: folders then the file.
    /// Each name cleaned and checked against SharePoint's rules ([`names`]), and the path's
    /// length.
    fn item_path(&self, request: &ConnectorRequest) -> Result<Vec<String>, SharePointError> {
        let folder = self
            .folder
            .render(request, Escape::FileName)
            .map_err(|source| SharePointError::Render { template: "folder", source })?;
        let file = self
            .file_name
            .render(request, Escape::FileName)
            .map_err(|source| SharePointError::Render { template: "file_name", source })?;
        let folders = folder.split('/').filter(|segment| !segment.trim().is_empty());
        let segments = folders.map(|raw| ("folder", raw)).chain([("file_name", file.as_str())]);
        let mut path = Vec::new();
        for (template, raw) in segments {
            let shown_path = || names::shown(&path.join("/"));
            let name = names::clean(raw)
                .ok_or_else(|| SharePointError::EmptyName { template, path: shown_path() })?;
            let root_folder = template == "folder" && path.is_empty();
            if let Some(rule) = names::refusal(&name, root_folder) {
                return Err(SharePointError::Name { template, name: names::shown(&name), rule });
            }
            path.push(name);
        }
        if let Some(chars) = names::too_long(&path) {
            return Err(SharePointError::PathTooLong {
                path: names::shown(&path.join("/")),
                chars,
            });
        }
        Ok(path)
    }

    /// A valid token: the cached one unless it is `stale` (refused by Graph) or due, else a new
    /// one. Concurrent callers wait for one fetch.
    async fn token(
        &self,
        stale: Option<&Secret>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Secret, SharePointError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
            && stale != Some(&token.value)
        {
            return Ok(token.value.clone());
        }
        *cached = None;
        let fresh = self.fetch_token(deadline, timeout).await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<CachedToken, SharePointError> {
        const SERVICE: &str = "token endpoint";
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.expose())
            .append_pair("scope", &self.scope)
            .finish();
        let asked_at = Instant::now();
        let request = self
            .client
            .post(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .timeout(remaining(deadline));
        let http_answer = Answer::fetch(request, SERVICE, MAX_ANSWER_BYTES, timeout)
            .await
            .map_err(|e| http_error(SERVICE, e))?;
        let bytes = &http_answer.bytes;
        if !http_answer.status.is_success() {
            return Err(match serde_json::from_slice::<TokenError>(bytes) {
                Ok(answer) => SharePointError::Token {
                    status: http_answer.status,
                    error: self.client_secret.scrub(&answer.error).into_owned(),
                    description: self
                        .client_secret
                        .scrub(first_sentences(answer.error_description.as_deref()))
                        .into_owned(),
                    retry_after: http_answer.retry_after,
                },
                Err(_) => http_error(
                    SERVICE,
                    http_answer
                        .status_error(self.client_secret.scrub(&excerpt_of(bytes)).into_owned()),
                ),
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(bytes).map_err(|e| {
            SharePointError::Malformed { service: SERVICE, problem: format!("not a token: {e}") }
        })?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") || answer.access_token.is_empty() {
            return Err(SharePointError::Malformed {
                service: SERVICE,
                problem: "not a bearer token".to_owned(),
            });
        }
        let lifetime = Duration::from_secs(answer.expires_in.seconds());
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        tracing::debug!(expires_in = lifetime.as_secs(), "got an access token");
        Ok(CachedToken {
            value: Secret::new(answer.access_token),
            refresh_at: asked_at + lifetime.saturating_sub(margin),
        })
    }

    /// Sends `call` with `token`; `Ok(None)` on a 401 `InvalidAuthenticationToken`.
    async fn send(
        &self,
        call: GraphCall<'_>,
        names: &[String],
        token: &Secret,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Option<(StatusCode, Value)>, SharePointError> {
        const SERVICE: &str = "Graph";
        let request = match call {
            GraphCall::Put(content) => self
                .client
                .put(self.item_url(names, "content"))
                .header(CONTENT_TYPE, self.format.content_type())
                .body(content.to_vec()),
            GraphCall::CreateSession => {
                let item = json!({ "@microsoft.graph.conflictBehavior": self.conflict.as_str() });
                self.client
                    .post(self.item_url(names, "createUploadSession"))
                    .json(&json!({ "item": item }))
            }
        };
        let request = if self.conflict == Conflict::Fail {
            request.header(IF_NONE_MATCH, "*")
        } else {
            request
        };
        let request = request
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .timeout(remaining(deadline));
        let answer = Answer::fetch(request, SERVICE, MAX_ANSWER_BYTES, timeout)
            .await
            .map_err(|e| http_error(SERVICE, e))?;
        if !answer.status.is_success() {
            let error = answer_error(SERVICE, &answer, Some(token));
            if let SharePointError::Graph { status: StatusCode::UNAUTHORIZED, code, .. } = &error
                && code == "InvalidAuthenticationToken"
            {
                return Ok(None);
            }
            return Err(error);
        }
        let what = match call {
            GraphCall::Put(_) => "a driveItem",
            GraphCall::CreateSession => "an upload session",
        };
        Ok(Some((answer.status, json_answer(SERVICE, what, &answer.bytes)?)))
    }

    /// Sends `call` with the cached token; on a 401 `InvalidAuthenticationToken`, once more with
    /// a new one.
    async fn with_token(
        &self,
        call: GraphCall<'_>,
        names: &[String],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(StatusCode, Value), SharePointError> {
        let token = self.token(None, deadline, timeout).await?;
        if let Some(answer) = self.send(call, names, &token, deadline, timeout).await? {
            return Ok(answer);
        }
        tracing::debug!("Graph refused the token; fetching a new one, once");
        let fresh = self.token(Some(&token), deadline, timeout).await?;
        match self.send(call, names, &fresh, deadline, timeout).await? {
            Some(answer) => Ok(answer),
            None => Err(SharePointError::Graph {
                status: StatusCode::UNAUTHORIZED,
                code: "InvalidAuthenticationToken".to_owned(),
                message: "Graph refused the token".to_owned(),
                retry_after: None,
            }),
        }
    }

    /// One attempt: takes a token, makes the folders and uploads the file, in one `PUT` or
    /// through an upload session.
    async fn attempt(
        &self,
        request: &ConnectorRequest,
        timeout: Duration,
    ) -> Result<Outputs, SharePointError> {
        let deadline = Instant::now() + timeout;
        let names = self.item_path(request)?;
        let path = names.join("/");
        let content = self
            .content
            .render(request, self.format.escape())
            .map_err(|source| SharePointError::Render { template: "content", source })?;
        if content.len() > self.max_content_bytes {
            return Err(SharePointError::TooLarge {
                size: content.len(),
                max: self.max_content_bytes,
            });
        }
        let content = content.as_bytes();
        let session = self.conflict == Conflict::Rename;
        if session && content.is_empty() {
            return Err(SharePointError::EmptyRename);
        }
        let uploaded = if session || content.len() > self.simple_upload_max_bytes {
            self.session_upload(&names, content, deadline, timeout).await
        } else {
            let put = self.with_token(GraphCall::Put(content), &names, deadline, timeout).await;
            put.map(|(status, item)| (status, item, String::new()))
        };
        let (status, item, how) = uploaded.map_err(|error| match error {
            SharePointError::Graph { status: StatusCode::CONFLICT, code, .. }
                if code == "nameAlreadyExists" =>
            {
                SharePointError::Exists { path: path.clone() }
            }
            SharePointError::Graph { status: StatusCode::PRECONDITION_FAILED, .. }
                if self.conflict == Conflict::Fail =>
            {
                SharePointError::Exists { path: path.clone() }
            }
            other => other,
        })?;
        let field = |name: &str| {
            item.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
                SharePointError::Malformed {
                    service: "Graph",
                    problem: format!("the driveItem has no `{name}`"),
                }
            })
        };
        let id = field("id")?;
        let web_url = field("webUrl")?;
        let stored = item.get("name").and_then(Value::as_str).unwrap_or_default();
        let done = if status == StatusCode::CREATED { "created" } else { "replaced" };
        let renamed = if stored.is_empty() || path.ends_with(stored) {
            String::new()
        } else {
            format!(" as `{stored}`")
        };
        Ok(Outputs::new()
            .with(self.document_id_property.clone(), id)
            .with(self.document_url_property.clone(), web_url.clone())
            .with_log(format!(
                "SharePoint: {done} `{path}`{renamed} ({} bytes{how}): {web_url}",
                content.len()
            )))
    }

    /// `…/drives/{drive}/root:/{folder…}/{name}:/{action}`, the names percent-encoded
    /// ([`names::url_path`]); the simple upload (`content`) carries
    /// `?@microsoft.graph.conflictBehavior=…`.
    fn item_url(&self, path: &[String], action: &str) -> Url {
        let mut url = self.drive_url.clone();
        let encoded = format!("{}/root:{}:/{action}", url.path(), names::url_path(path));
        url.set_path(&encoded);
        if action == "content" {
            url.query_pairs_mut()
                .append_pair("@microsoft.graph.conflictBehavior", self.conflict.as_str());
        }
        url
    }
}

/// A request to Graph that carries the token.
#[derive(Clone, Copy)]
enum GraphCall<'a> {
    /// A simple upload: `PUT …:/content` with the content.
    Put(&'a [u8]),
    /// `POST …:/createUploadSession`.
    CreateSession,
}

impl SharePointConnector {
    fn known_contract(&self) -> Contract {
        let inputs = required_properties(
            self.folder
                .placeholders()
                .chain(self.file_name.placeholders())
                .chain(self.content.placeholders()),
        );
        let outputs =
            BTreeSet::from([self.document_id_property.clone(), self.document_url_property.clone()]);
        Contract { inputs, outputs }
    }
}

crate::http::impl_http_connector!(SharePointConnector, "sharepoint");

#[derive(Deserialize)]
struct TokenAnswer {
    token_type: String,
    /// A number on the v2.0 endpoint; some proxies and older endpoints send a string.
    expires_in: Seconds,
    access_token: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    fn seconds(&self) -> u64 {
        match self {
            Seconds::Number(n) => *n,
            Seconds::Text(text) => text.trim().parse().unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct GraphErrorAnswer {
    error: GraphErrorBody,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// The identity platform's description up to its trace ids, which only clutter a reason.
fn first_sentences(description: Option<&str>) -> &str {
    let description = description.unwrap_or("no description");
    let end = description.find(" Trace ID:").unwrap_or(description.len());
    description[..end].trim()
}

fn http_error(service: &'static str, source: HttpError) -> SharePointError {
    SharePointError::Http { service, source }
}

/// A non-2xx answer as Graph's error, its code and message cut to one short line and `token`
/// scrubbed from the message; as a status error when the body is not in Graph's shape.
fn answer_error(service: &'static str, answer: &Answer, token: Option<&Secret>) -> SharePointError {
    let Ok(GraphErrorAnswer { error }) = serde_json::from_slice(&answer.bytes) else {
        return http_error(service, answer.status_error(excerpt_of(&answer.bytes)));
    };
    // Scrubbed whole, before it is cut: a cut could leave part of the token.
    let message = match token {
        Some(token) => token.scrub(&error.message),
        None => error.message.as_str().into(),
    };
    let message = excerpt_of(message.as_bytes());
    SharePointError::Graph {
        status: answer.status,
        code: excerpt_of(error.code.as_bytes()),
        message,
        retry_after: answer.retry_after,
    }
}

/// A 2xx answer's JSON body, which should be `what`.
fn json_answer(service: &'static str, what: &str, bytes: &[u8]) -> Result<Value, SharePointError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SharePointError::Malformed { service, problem: format!("not {what}: {e}") })
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
}

/// An absolute http(s) URL without query or fragment, trailing `/` dropped.
fn base_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = crate::config::absolute_url(key, text.trim().trim_end_matches('/'))?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || url.cannot_be_a_base()
    {
        return Err(ConfigError::new(key, "expected an http(s) URL without a query"));
    }
    Ok(url)
}

fn push_segments(url: &mut Url, segments: &[&str]) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

/// `simple_upload_max_bytes`, `max_content_bytes` and `chunk_bytes` within what Graph takes.
fn check_sizes(config: &SharePointConfig) -> Result<(), ConfigError> {
    if config.simple_upload_max_bytes > MAX_SIMPLE_UPLOAD {
        return Err(ConfigError::new(
            "simple_upload_max_bytes",
            format!("Graph's simple upload takes at most {MAX_SIMPLE_UPLOAD} bytes (250 MiB)"),
        ));
    }
    if config.max_content_bytes == 0 {
        return Err(ConfigError::new("max_content_bytes", "must be at least 1"));
    }
    let chunk = config.chunk_bytes;
    if chunk == 0 || !chunk.is_multiple_of(FRAGMENT_MULTIPLE) || chunk >= MAX_FRAGMENT {
        return Err(ConfigError::new(
            "chunk_bytes",
            format!(
                "must be a multiple of {FRAGMENT_MULTIPLE} (320 KiB) under {MAX_FRAGMENT} (60 MiB), as Graph's upload sessions require"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_messages_are_scrubbed_then_cut_to_one_short_line() {
        let token = Secret::new("eyJ0eXAi.secret-token");
        let message = format!("{}\n{} tail", "x".repeat(195), token.expose());
        let body = json!({ "error": { "code": "generalException", "message": message } });
        let answer = Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            retry_after: None,
            bytes: body.to_string().into_bytes(),
        };
        let SharePointError::Graph { message, code, .. } =
            answer_error("Graph", &answer, Some(&token))
        else {
            panic!("Graph's error shape");
        };
        assert_eq!(code, "generalException");
        assert!(!message.contains("eyJ") && !message.contains('\n'), "{message}");
        assert_eq!(message.chars().count(), 201, "200 characters and `…`: {message}");
    }
}
