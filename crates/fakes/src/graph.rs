//! A fake of the Microsoft identity platform's token endpoint and of Microsoft Graph's
//! SharePoint document libraries: client-credentials tokens that expire, simple uploads, upload
//! sessions with conflict behaviour, in the real request and response shapes, with fault
//! injection.
//!
//! Three servers, as in real life three hosts: [`GraphApi::identity_url`] stands for
//! `https://login.microsoftonline.com`, [`GraphApi::graph_url`] for `https://graph.microsoft.com`,
//! [`GraphApi::upload_host_url`] for the SharePoint host an upload session's `uploadUrl` points
//! at. Each has its own [`Behaviour`] (so a test can rate-limit Graph while tokens still come).
//!
//! # Identity platform
//!
//! `POST /{tenant}/oauth2/v2.0/token`, form body `grant_type=client_credentials&client_id=…&
//! client_secret=…&scope=https://graph.microsoft.com/.default`:
//!
//! | case | status | body |
//! |---|---|---|
//! | issued | 200 | `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ…"}` |
//! | wrong secret | 401 | `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. …","error_codes":[7000215],…}` |
//! | unknown client | 400 | `unauthorized_client`, AADSTS700016 |
//! | unknown tenant | 400 | `invalid_request`, AADSTS90002 |
//! | other grant, bad scope, missing parameter | 400 | `unsupported_grant_type` / `invalid_scope` / `invalid_request` |
//!
//! Tokens live [`GraphApi::set_token_lifetime`] (default 3599 s, as Entra ID says in
//! `expires_in`); [`GraphApi::expire_tokens`] ends every token issued so far at once.
//!
//! # Graph: simple upload
//!
//! `PUT /v1.0/sites/{site-id}/drives/{drive-id}/root:/{folder}/{file-name}:/content` with the
//! bytes as the body (up to [`MAX_SIMPLE_UPLOAD`], 250 MiB, as Graph's documentation says) and
//! `Authorization: Bearer <token>`. Missing folders are created; names compare
//! case-insensitively, as in SharePoint.
//!
//! A simple upload always replaces an existing file: `?@microsoft.graph.conflictBehavior=` is
//! checked (`fail|replace|rename`) but not honoured, as a Microsoft maintainer says of this API
//! (msgraph-sdk-php#186: "always replaces … use upload session to change that behavior") and as
//! some deployments do. Only `If-None-Match: *` keeps an existing file: the answer is then 412
//! (with `resourceModified`, the code Graph's error list gives to a failed precondition), as a
//! OneDrive engineer describes it (onedrive-api-docs#607).
//!
//! | case | status | body |
//! |---|---|---|
//! | created | 201 | a `driveItem`: `id`, `name`, `webUrl`, `size`, `createdDateTime`, `file.mimeType`, `parentReference`, … |
//! | replaced, whatever the conflict behaviour | 200 | the same item (same `id`), new content |
//! | exists, `If-None-Match: *` | 412 | `{"error":{"code":"resourceModified","message":"…"}}` |
//! | no, unknown or expired token | 401, `WWW-Authenticate` | `{"error":{"code":"InvalidAuthenticationToken","message":"…"}}` |
//! | unknown site or drive | 404 | `itemNotFound` |
//! | over 250 MiB | 413 | `invalidRequest` |
//! | rate limited | 429, `Retry-After` | `activityLimitReached` |
//! | unavailable | 503 (or as set) | `serviceNotAvailable` |
//!
//! # Graph: upload sessions
//!
//! `POST …/root:/{folder}/{file-name}:/createUploadSession` with the token and, optionally, a
//! JSON body `{"item": {"@microsoft.graph.conflictBehavior": "fail|replace|rename"}}` (default
//! `replace`, as observed on SharePoint, whatever the documentation says; the annotation outside
//! `item` is ignored, as Graph ignores it) answers 200 with
//! `{"uploadUrl", "expirationDateTime", "nextExpectedRanges": ["0-"]}`; when the file exists,
//! 412 `resourceModified` if the request has `If-None-Match: *`, else 409 `nameAlreadyExists`
//! if the behaviour is `fail`. A session honours `fail` and `rename`. The `uploadUrl`
//! is on the upload host and pre-authenticated (a `tempauth` in its query): it takes requests
//! *without* `Authorization` — one that carries it is answered 401, as Graph's documentation
//! warns — and the session is its only state:
//!
//! | request | status | body |
//! |---|---|---|
//! | `PUT` with `Content-Range: bytes {start}-{end}/{total}`, more to come | 202 | `{"expirationDateTime","nextExpectedRanges":["{received}-"]}` |
//! | `PUT` of the last bytes | 201 or 200 | the `driveItem`, stored with the session's behaviour (409 `nameAlreadyExists` if `fail` and the file appeared meanwhile) |
//! | `PUT` not starting where the session is | 416 | `invalidRange` |
//! | `PUT` of a fragment not a multiple of 320 KiB (but the last), a bad `Content-Range`, a body of another length, another total | 400 | `invalidRequest` |
//! | `PUT` of 60 MiB or more | 413 | `invalidRequest` |
//! | `GET` | 200 | `{"expirationDateTime","nextExpectedRanges":["{received}-{total - 1}"]}` |
//! | an unknown or finished session | 404 | `itemNotFound` |
//!
//! Fragments are taken in order only, so `nextExpectedRanges` always holds one range. Sessions do
//! not expire. [`GraphApi::lose_next_fragment_answers`] makes fragments be stored and then
//! answered 504, as when a gateway gives up on an upload the back end took.
//!
//! # Names
//!
//! Both requests refuse, with 400 `invalidRequest`, what SharePoint refuses (Microsoft's
//! "Restrictions and limitations in OneDrive and SharePoint"): an empty name, `" * : < > ? \ |`
//! or a control character, leading or trailing spaces, a trailing dot; `.lock`, `desktop.ini`,
//! `CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9` (with or without an extension), a
//! name starting with `~$` or containing `_vti_`, a folder `forms` at the library's root; and a
//! decoded path over [`MAX_PATH_CHARS`] with the library's own path (`/sites/approvals/Shared
//! Documents` for the default library) counted in. A literal `+` in the request's path is read
//! as a space, as some of Graph's front ends do (onedrive-api-docs#1432): a `+` must come as
//! `%2B`.
//!
//! Every accepted upload is kept ([`GraphApi::uploads`]), and the library's current files can be
//! read back ([`GraphApi::file`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::dates::rfc3339;
use crate::faults::{Behaviour, Faults, Served, listen, lock, percent_decode, set_retry_after};

/// The tenant that exists from the start (its domain; [`TENANT_ID`] works as well).
pub const TENANT: &str = "contoso.onmicrosoft.com";
/// The same tenant's id.
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The app registration that exists from the start.
pub const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
/// Its secret, unless [`GraphApi::set_client_secret`] says otherwise.
pub const DEFAULT_CLIENT_SECRET: &str = "Qx58Q~fake.secret-for-b24act~tests0123456";
/// The only scope client credentials may ask Graph for.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The document library that exists from the start: its site id …
pub const SITE_ID: &str = "contoso.sharepoint.com,2c712604-1370-44e7-a1f5-426573005fd7,2d2244c3-251a-49ea-93a8-39d1fd42ce5b";
/// … its drive id …
pub const DRIVE_ID: &str = "b!BCZxLHATvUOh9UJlcwBf1w0S7ZVrYmRLk6g50f1Czls0nCFRvcoJSoBQs8ZsTKsC";
/// … and the web address of its root folder.
pub const LIBRARY_WEB_URL: &str =
    "https://contoso.sharepoint.com/sites/approvals/Shared%20Documents";
/// The largest body a simple upload takes: 250 MiB.
pub const MAX_SIMPLE_UPLOAD: usize = 250 * 1024 * 1024;
/// An upload session's fragments are multiples of this (320 KiB), but the last.
pub const FRAGMENT_MULTIPLE: usize = 320 * 1024;
/// A fragment must be smaller than this (60 MiB).
pub const MAX_FRAGMENT: usize = 60 * 1024 * 1024;
/// The most characters a decoded path may have, the library's own path included.
pub const MAX_PATH_CHARS: usize = 400;
/// Where an upload session's `uploadUrl` points on the upload host.
const UPLOAD_SESSION_PATH: &str = "/_api/v2.0/uploadSession";
/// What `expires_in` says by default.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// One accepted upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub site_id: String,
    pub drive_id: String,
    /// The item's path as requested, decoded, without a leading `/`: `Approvals/DEAL_7.md`.
    pub path: String,
    /// The name it was stored under (differs from the requested one after a `rename`).
    pub stored_as: String,
    pub bytes: Vec<u8>,
    /// The `Content-Type` sent, if any.
    pub content_type: Option<String>,
    /// `@microsoft.graph.conflictBehavior` as sent, if any.
    pub conflict_behavior: Option<String>,
    /// The `If-None-Match` header of the request that stored it, if any (a session's fragments
    /// carry none).
    pub if_none_match: Option<String>,
    /// 201 (created) or 200 (replaced).
    pub status: u16,
    /// The `driveItem` id answered.
    pub item_id: String,
    /// How many fragments an upload session took; `None` for a simple upload.
    pub fragments: Option<u32>,
}

/// A running fake identity platform and Graph (on 127.0.0.1 unless started elsewhere); both stop
/// when dropped.
#[derive(Debug)]
pub struct GraphApi {
    identity_addr: SocketAddr,
    upload_addr: SocketAddr,
    /// Graph's address and both servers' state and stop token.
    server: Served<GraphState>,
}

struct GraphState {
    identity_faults: Arc<Faults>,
    graph_faults: Arc<Faults>,
    upload_faults: Arc<Faults>,
    /// `http://127.0.0.1:PORT` of the upload host, for the `uploadUrl`s.
    upload_base: String,
    client_secret: Mutex<String>,
    token_lifetime: Mutex<Duration>,
    /// Access token → when it expires.
    tokens: Mutex<BTreeMap<String, Instant>>,
    /// `(site id, drive id)` → the library.
    libraries: Mutex<BTreeMap<(String, String), Library>>,
    uploads: Mutex<Vec<Upload>>,
    /// `guid` of an upload session → the session.
    sessions: Mutex<BTreeMap<String, Session>>,
    /// How many of the next fragments are stored and then answered 504.
    lost_fragment_answers: Mutex<u32>,
    next_id: AtomicU64,
}

/// An upload session: where its file goes and the bytes received so far.
struct Session {
    target: Target,
    /// The pre-authentication its `uploadUrl` carries.
    tempauth: String,
    /// `fail`, `replace` or `rename`.
    conflict: String,
    received: Vec<u8>,
    /// The size the first fragment announced.
    total: Option<usize>,
    fragments: u32,
}

/// Where an item request points: the library and the path in it, decoded.
#[derive(Clone)]
struct Target {
    site_id: String,
    drive_id: String,
    /// Without a leading `/`: `Approvals/DEAL_7.md`.
    path: String,
}

struct Library {
    web_url: String,
    /// The library's own path on its host, decoded: `/sites/approvals/Shared Documents`.
    root_path: String,
    /// Lower-cased path → the file.
    files: BTreeMap<String, Item>,
}

impl Library {
    fn new(web_url: &str) -> Library {
        let after_scheme = web_url.split_once("://").map_or(web_url, |(_, rest)| rest);
        let path = after_scheme.find('/').map_or("", |at| &after_scheme[at..]);
        let root_path = percent_decode(path).unwrap_or_else(|| path.to_owned());
        Library { web_url: web_url.to_owned(), root_path, files: BTreeMap::new() }
    }

    /// Graph's 400 when `path`, with the library's own path, is over 400 characters.
    fn refuses_length(&self, path: &str) -> Option<Response> {
        let chars = self.root_path.chars().count() + 1 + path.chars().count();
        (chars > MAX_PATH_CHARS).then(|| {
            graph_error(
                StatusCode::BAD_REQUEST,
                "invalidRequest",
                &format!("The path is {chars} characters long with the library's; at most {MAX_PATH_CHARS} are allowed."),
            )
        })
    }
}

#[derive(Clone)]
struct Item {
    id: String,
    /// The path as stored (original case), without a leading `/`.
    path: String,
    bytes: Vec<u8>,
    created: SystemTime,
    modified: SystemTime,
    version: u64,
}

impl GraphApi {
    /// Starts the three servers on 127.0.0.1 on free ports, with the tenant [`TENANT`], the app
    /// [`CLIENT_ID`]/[`DEFAULT_CLIENT_SECRET`] and the library [`SITE_ID`]/[`DRIVE_ID`].
    pub async fn start() -> std::io::Result<GraphApi> {
        let free = SocketAddr::from(([127, 0, 0, 1], 0));
        GraphApi::start_on(free, free).await
    }

    /// As [`start`](GraphApi::start), Graph on `graph` and the identity platform on `identity`
    /// (`b24act fake graph --listen`); the upload sessions' host takes a free port on Graph's
    /// address.
    pub async fn start_on(graph: SocketAddr, identity: SocketAddr) -> std::io::Result<GraphApi> {
        let (identity, identity_addr) = listen(identity).await?;
        let (graph, graph_addr) = listen(graph).await?;
        let (upload, upload_addr) = listen(SocketAddr::new(graph_addr.ip(), 0)).await?;
        let state = Arc::new(GraphState::new(format!("http://{upload_addr}")));
        let identity_router = Router::new().fallback(token).with_state(state.clone());
        let graph_router = Router::new().fallback(graph_request).with_state(state.clone());
        let upload_router = Router::new()
            .route(UPLOAD_SESSION_PATH, any(upload_host_request))
            .with_state(state.clone());
        let faults = [&state.identity_faults, &state.graph_faults, &state.upload_faults];
        let [identity_faults, graph_faults, upload_faults] = faults.map(Arc::clone);
        let server = Served::new(graph_addr, state);
        server.spawn_with_faults(
            "entra-id",
            identity,
            identity_addr,
            identity_router,
            identity_faults,
        );
        server.spawn_with_faults("graph", graph, graph_addr, graph_router, graph_faults);
        server.spawn_with_faults("sharepoint", upload, upload_addr, upload_router, upload_faults);
        tracing::debug!(%identity_addr, %graph_addr, %upload_addr, "fake identity platform and Graph started");
        Ok(GraphApi { identity_addr, upload_addr, server })
    }

    /// `http://127.0.0.1:PORT`, the connector's `authority` (really
    /// `https://login.microsoftonline.com`).
    pub fn identity_url(&self) -> String {
        format!("http://{}", self.identity_addr)
    }

    /// `http://127.0.0.1:PORT`, the connector's `graph_url` (really `https://graph.microsoft.com`).
    pub fn graph_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// `http://127.0.0.1:PORT`, where upload sessions' `uploadUrl`s point (really the tenant's
    /// SharePoint host, `https://contoso.sharepoint.com`).
    pub fn upload_host_url(&self) -> String {
        format!("http://{}", self.upload_addr)
    }

    /// The secret the app registration accepts now.
    pub fn client_secret(&self) -> String {
        lock(&self.server.state.client_secret).clone()
    }

    /// Accepts only this secret from now on (a rotated secret).
    pub fn set_client_secret(&self, secret: impl Into<String>) {
        *lock(&self.server.state.client_secret) = secret.into();
    }

    /// How long tokens issued from now on live (and what `expires_in` says, in whole seconds).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.server.state.token_lifetime) = lifetime;
    }

    /// Ends every token issued so far: Graph answers 401 `InvalidAuthenticationToken` to them,
    /// although their `expires_in` has not run out (a revocation, or clocks that disagree).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        lock(&self.server.state.tokens).values_mut().for_each(|expiry| *expiry = now);
    }

    /// Adds an empty document library.
    pub fn add_library(&self, site_id: &str, drive_id: &str, web_url: &str) {
        lock(&self.server.state.libraries)
            .insert((site_id.to_owned(), drive_id.to_owned()), Library::new(web_url));
    }

    /// Puts a file in the default library, as if someone had uploaded it (to test conflicts).
    pub fn put_file(&self, path: &str, bytes: &[u8]) {
        let id = self.server.state.item_id();
        let now = SystemTime::now();
        let mut libraries = lock(&self.server.state.libraries);
        if let Some(library) = libraries.get_mut(&(SITE_ID.to_owned(), DRIVE_ID.to_owned())) {
            let path = path.trim_start_matches('/').to_owned();
            library.files.insert(
                path.to_lowercase(),
                Item { id, path, bytes: bytes.to_vec(), created: now, modified: now, version: 1 },
            );
        }
    }

    /// A file's current content in the default library, by path (`Approvals/DEAL_7.md`,
    /// case-insensitive).
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.file_in(SITE_ID, DRIVE_ID, path)
    }

    /// A file's current content in a library.
    pub fn file_in(&self, site_id: &str, drive_id: &str, path: &str) -> Option<Vec<u8>> {
        let libraries = lock(&self.server.state.libraries);
        let library = libraries.get(&(site_id.to_owned(), drive_id.to_owned()))?;
        let key = path.trim_start_matches('/').to_lowercase();
        library.files.get(&key).map(|item| item.bytes.clone())
    }

    /// The paths in the default library, sorted (lower-cased).
    pub fn paths(&self) -> Vec<String> {
        lock(&self.server.state.libraries)
            .get(&(SITE_ID.to_owned(), DRIVE_ID.to_owned()))
            .map(|library| library.files.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every accepted upload, oldest first.
    pub fn uploads(&self) -> Vec<Upload> {
        lock(&self.server.state.uploads).clone()
    }

    /// Requests to the token endpoint so far, whatever their answer.
    pub fn token_requests(&self) -> u64 {
        self.server.state.identity_faults.requests()
    }

    /// Requests to Graph so far, whatever their answer.
    pub fn graph_requests(&self) -> u64 {
        self.server.state.graph_faults.requests()
    }

    /// Requests to the upload host (fragments, status reads) so far, whatever their answer.
    pub fn upload_host_requests(&self) -> u64 {
        self.server.state.upload_faults.requests()
    }

    /// Changes the upload host's behaviour in place.
    pub async fn update_upload_host(&self, change: impl FnOnce(&mut Behaviour)) {
        self.server.state.upload_faults.update(change).await;
    }

    /// The next `n` fragments an upload session takes are stored and then answered 504, as when
    /// a gateway gives up on an upload the back end took.
    pub fn lose_next_fragment_answers(&self, n: u32) {
        *lock(&self.server.state.lost_fragment_answers) = n;
    }

    /// Replaces Graph's behaviour; returns once its port matches it.
    pub async fn set(&self, behaviour: Behaviour) {
        self.server.state.graph_faults.update(|b| *b = behaviour).await;
    }

    /// Changes Graph's behaviour in place.
    pub async fn update(&self, change: impl FnOnce(&mut Behaviour)) {
        self.server.state.graph_faults.update(change).await;
    }

    /// Graph's behaviour now.
    pub fn behaviour(&self) -> Behaviour {
        self.server.state.graph_faults.behaviour()
    }

    /// Replaces the token endpoint's behaviour; returns once its port matches it.
    pub async fn set_identity(&self, behaviour: Behaviour) {
        self.server.state.identity_faults.update(|b| *b = behaviour).await;
    }

    /// Changes the token endpoint's behaviour in place.
    pub async fn update_identity(&self, change: impl FnOnce(&mut Behaviour)) {
        self.server.state.identity_faults.update(change).await;
    }
}

impl GraphState {
    /// The tenant, the app and the default library, no token issued yet.
    fn new(upload_base: String) -> GraphState {
        let library = Library::new(LIBRARY_WEB_URL);
        GraphState {
            identity_faults: Arc::new(Faults::new()),
            graph_faults: Arc::new(Faults::new()),
            upload_faults: Arc::new(Faults::new()),
            upload_base,
            client_secret: Mutex::new(DEFAULT_CLIENT_SECRET.to_owned()),
            token_lifetime: Mutex::new(DEFAULT_TOKEN_LIFETIME),
            tokens: Mutex::new(BTreeMap::new()),
            libraries: Mutex::new(BTreeMap::from([(
                (SITE_ID.to_owned(), DRIVE_ID.to_owned()),
                library,
            )])),
            uploads: Mutex::new(Vec::new()),
            sessions: Mutex::new(BTreeMap::new()),
            lost_fragment_answers: Mutex::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// A SharePoint-looking item id: `01` and 32 base-32 characters.
    fn item_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
        let mut id = String::from("01");
        for i in 0..32 {
            if i == 16 {
                mixed = mixed.rotate_left(17) ^ n;
            }
            id.push(char::from(ALPHABET[(mixed & 31) as usize]));
            mixed = mixed.rotate_right(5);
        }
        id
    }
}

// ---- identity platform ----

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace = uuid_like(u64::from(code) ^ 0x7ace);
    let timestamp = rfc3339(SystemTime::now());
    let body = json!({
        "error": error,
        "error_description": format!(
            "{description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": trace,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, axum::Json(body)).into_response()
}

fn identity_failure(status: u16, retry_after: Option<Duration>) -> Response {
    let mut response = match status {
        401 => aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_215,
            "AADSTS7000215: Invalid client secret provided.",
        ),
        429 => aad_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            50_196,
            "AADSTS50196: The server terminated an operation because it encountered a client request loop.",
        ),
        400..=499 => aad_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            "invalid_request",
            900_144,
            "AADSTS900144: The request is not valid.",
        ),
        _ => aad_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "temporarily_unavailable",
            90_033,
            "AADSTS90033: A transient error has occurred. Please try again.",
        ),
    };
    set_retry_after(&mut response, retry_after);
    response
}

async fn token(
    State(state): State<Arc<GraphState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(answer) = state.identity_faults.admit(identity_failure).await {
        return answer;
    }
    let Some(tenant) =
        uri.path().strip_prefix('/').and_then(|p| p.strip_suffix("/oauth2/v2.0/token"))
    else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    if method != Method::POST {
        return aad_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900_561,
            "AADSTS900561: The endpoint only accepts POST requests.",
        );
    }
    if tenant != TENANT && tenant != TENANT_ID {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90_002,
            &format!(
                "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form { form_pairs(&body) } else { BTreeMap::new() };
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let missing = |name: &str| {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            &format!(
                "AADSTS900144: The request body must contain the following parameter: '{name}'."
            ),
        )
    };
    let Some(grant_type) = field("grant_type") else { return missing("grant_type") };
    if grant_type != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70_003,
            &format!("AADSTS70003: The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = field("client_id") else { return missing("client_id") };
    if client_id != CLIENT_ID {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    }
    let Some(scope) = field("scope") else { return missing("scope") };
    if scope != GRAPH_SCOPE {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1_002_012,
            &format!(
                "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    let Some(secret) = field("client_secret") else { return missing("client_secret") };
    if secret != *lock(&state.client_secret) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_215,
            &format!(
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'."
            ),
        );
    }
    let lifetime = *lock(&state.token_lifetime);
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let access_token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2dyYXBoLm1pY3Jvc29mdC5jb20ifQ.{}",
        uuid_like(n).replace('-', "")
    );
    lock(&state.tokens).insert(access_token.clone(), Instant::now() + lifetime);
    let expires_in = lifetime.as_secs();
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token,
    }))
    .into_response()
}

// ---- Graph ----

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": rfc3339(SystemTime::now()),
                "request-id": uuid_like(u64::from(status.as_u16())),
                "client-request-id": uuid_like(u64::from(status.as_u16()) ^ 0xc1),
            },
        },
    });
    (status, axum::Json(body)).into_response()
}

fn unauthenticated(message: &str) -> Response {
    let mut response = graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        ),
    );
    response
}

fn graph_failure(status: u16, retry_after: Option<Duration>) -> Response {
    let mut response = match status {
        401 => unauthenticated("Access token has expired or is not yet valid."),
        403 => graph_error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Either scp or roles claim need to be present in the token.",
        ),
        404 => {
            graph_error(StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found.")
        }
        423 => graph_error(
            StatusCode::LOCKED,
            "resourceLocked",
            "The resource you are attempting to access is locked",
        ),
        429 => graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "activityLimitReached",
            "The request has been throttled",
        ),
        500 => graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            "An unspecified error has occurred.",
        ),
        other => graph_error(
            StatusCode::from_u16(other).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry after the time in the Retry-After header.",
        ),
    };
    set_retry_after(&mut response, retry_after);
    response
}

/// An item request's target and what it asks for: the last segment after the path, `content`
/// or `createUploadSession`.
fn item_request(path: &str) -> Option<(Target, &str)> {
    let rest = path.strip_prefix("/v1.0/sites/")?;
    let (site, rest) = rest.split_once("/drives/")?;
    let (drive, rest) = rest.split_once("/root:/")?;
    let (item, action) = rest.rsplit_once(":/")?;
    let target = Target {
        site_id: percent_decode(site)?,
        drive_id: percent_decode(drive)?,
        // A literal `+` is read as a space, as some of Graph's front ends do.
        path: percent_decode(&item.replace('+', " "))?,
    };
    Some((target, action))
}

/// Characters SharePoint does not allow in a file or folder name.
const INVALID_NAME_CHARACTERS: &[char] = &['"', '*', ':', '<', '>', '?', '\\', '|'];

/// Graph's 400 for a path with a name SharePoint refuses (see the module docs), if it has one.
fn refused_name(path: &str) -> Option<Response> {
    for (index, segment) in path.split('/').enumerate() {
        let folder_at_root = index == 0 && path.contains('/');
        let message = if segment.is_empty()
            || segment.trim() != segment
            || segment.ends_with('.')
            || segment.contains(INVALID_NAME_CHARACTERS)
            || segment.chars().any(char::is_control)
        {
            "The provided name contains invalid characters.".to_owned()
        } else if reserved(segment, folder_at_root) {
            format!("The name '{segment}' is reserved by SharePoint.")
        } else {
            continue;
        };
        return Some(graph_error(StatusCode::BAD_REQUEST, "invalidRequest", &message));
    }
    None
}

/// Names SharePoint keeps for itself, for Office's lock files or for Windows' devices.
fn reserved(name: &str, folder_at_root: bool) -> bool {
    let lower = name.to_lowercase();
    let base = lower.split_once('.').map_or(lower.as_str(), |(base, _)| base);
    let numbered_device = base.len() == 4
        && (base.starts_with("com") || base.starts_with("lpt"))
        && base.ends_with(|c: char| c.is_ascii_digit());
    ["con", "prn", "aux", "nul"].contains(&base)
        || numbered_device
        || lower == ".lock"
        || lower == "desktop.ini"
        || lower.starts_with("~$")
        || lower.contains("_vti_")
        || (folder_at_root && lower == "forms")
}

/// Graph's 401 when the token in `headers` is missing, unknown or expired.
fn authentication_refused(state: &GraphState, headers: &HeaderMap) -> Option<Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty());
    let Some(bearer) = bearer else { return Some(unauthenticated("Access token is empty.")) };
    match lock(&state.tokens).get(bearer) {
        None => Some(unauthenticated(
            "IDX14100: JWT is not well formed, there are no dots (.).\nThe token needs to be in JWS or JWE Compact Serialization Format.",
        )),
        Some(expiry) if *expiry <= Instant::now() => {
            Some(unauthenticated("Lifetime validation failed, the token is expired."))
        }
        Some(_) => None,
    }
}

/// The body, or Graph's 413 when it is over `limit` bytes (or breaks off).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalidRequest",
            &format!("The request body is larger than the {limit} bytes this request takes."),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

/// `fail`, `replace` or `rename` (`replace` when not given); `None` for another value.
fn conflict_behavior(value: Option<&str>) -> Option<String> {
    match value.unwrap_or("replace") {
        known @ ("fail" | "replace" | "rename") => Some(known.to_owned()),
        _ => None,
    }
}

fn invalid_conflict_behavior() -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "invalidRequest",
        "Invalid value for @microsoft.graph.conflictBehavior.",
    )
}

async fn graph_request(
    State(state): State<Arc<GraphState>>,
    method: Method,
    uri: Uri,
    query: Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(answer) = state.graph_faults.admit(graph_failure).await {
        return answer;
    }
    // Authentication comes before routing, as on Graph.
    if let Some(refused) = authentication_refused(&state, &headers) {
        return refused;
    }
    let answer = match (item_request(uri.path()), method) {
        (Some((target, "content")), Method::PUT) => {
            simple_upload(&state, target, &query, &headers, body).await
        }
        (Some((target, "createUploadSession")), Method::POST) => {
            create_session(&state, target, &headers, body).await
        }
        (Some(_), _) => Err(graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalidRequest",
            "The method is not allowed for this resource.",
        )),
        (None, _) => Err(graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "Invalid request: this fake knows …/root:/{path}:/content and :/createUploadSession only",
        )),
    };
    answer.unwrap_or_else(|error| error)
}

/// `PUT …:/content`: the body becomes the file.
async fn simple_upload(
    state: &GraphState,
    target: Target,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let raw_conflict = query.get("@microsoft.graph.conflictBehavior").cloned();
    if conflict_behavior(raw_conflict.as_deref()).is_none() {
        return Err(invalid_conflict_behavior());
    }
    let bytes = read_body(headers, body, MAX_SIMPLE_UPLOAD).await?;
    if let Some(refused) = refused_name(&target.path) {
        return Err(refused);
    }
    let header_text =
        |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    let stored = Stored {
        bytes: bytes.to_vec(),
        content_type: header_text(header::CONTENT_TYPE),
        if_none_match: header_text(header::IF_NONE_MATCH),
        fragments: None,
    };
    // A simple upload replaces, whatever the conflict behaviour says (see the module docs).
    Ok(state.store(&target, "replace", raw_conflict, stored))
}

/// `POST …:/createUploadSession`: a session on the upload host for the file at `target`.
async fn create_session(
    state: &GraphState,
    target: Target,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let bytes = read_body(headers, body, 64 * 1024).await?;
    let request: Value = if bytes.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&bytes).map_err(|_| {
            graph_error(
                StatusCode::BAD_REQUEST,
                "invalidRequest",
                "Invalid JSON in the request body.",
            )
        })?
    };
    let annotation = request["item"]["@microsoft.graph.conflictBehavior"].as_str();
    let conflict = conflict_behavior(annotation).ok_or_else(invalid_conflict_behavior)?;
    if let Some(refused) = refused_name(&target.path) {
        return Err(refused);
    }
    {
        let libraries = lock(&state.libraries);
        let library = libraries.get(&target.library()).ok_or_else(no_library)?;
        if let Some(refused) = library.refuses_length(&target.path) {
            return Err(refused);
        }
        if library.files.contains_key(&target.path.to_lowercase()) {
            if if_none_match_any(headers) {
                return Err(precondition_failed());
            }
            if conflict == "fail" {
                return Err(name_exists(&target.path));
            }
        }
    }
    let guid = uuid_like(state.next_id.fetch_add(1, Ordering::Relaxed));
    let tempauth = format!("eyJ0eXAiOiJKV1Qi.tempauth.{}", guid.replace('-', ""));
    let upload_url = format!(
        "{}{UPLOAD_SESSION_PATH}?guid={guid}&overwrite={}&rename={}&tempauth={tempauth}",
        state.upload_base,
        conflict == "replace",
        conflict == "rename",
    );
    let session =
        Session { target, tempauth, conflict, received: Vec::new(), total: None, fragments: 0 };
    lock(&state.sessions).insert(guid, session);
    let answer = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
        "expirationDateTime": session_expiry(),
        "nextExpectedRanges": ["0-"],
        "uploadUrl": upload_url,
    });
    Ok((StatusCode::OK, axum::Json(answer)).into_response())
}

/// When a session would expire (not enforced): 15 minutes from now, as SharePoint gives.
fn session_expiry() -> String {
    rfc3339(SystemTime::now() + Duration::from_secs(15 * 60))
}

fn no_library() -> Response {
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "Requested site or drive could not be found")
}

/// `If-None-Match: *`: the request is only for an item that does not exist.
fn if_none_match_any(headers: &HeaderMap) -> bool {
    headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == b"*")
}

fn precondition_failed() -> Response {
    graph_error(
        StatusCode::PRECONDITION_FAILED,
        "resourceModified",
        "The item already exists: If-None-Match: * does not hold.",
    )
}

fn name_exists(path: &str) -> Response {
    let (_, name) = split_path(path);
    graph_error(
        StatusCode::CONFLICT,
        "nameAlreadyExists",
        &format!("The specified item name already exists. Name: {name}"),
    )
}

/// What an accepted upload stores, beside where and how.
struct Stored {
    bytes: Vec<u8>,
    content_type: Option<String>,
    /// `*` keeps an existing file (412).
    if_none_match: Option<String>,
    fragments: Option<u32>,
}

impl Target {
    fn library(&self) -> (String, String) {
        (self.site_id.clone(), self.drive_id.clone())
    }
}

impl GraphState {
    /// Stores an upload at `target` as `conflict` says and answers with its `driveItem`, or
    /// Graph's error; `annotation` is the conflict behaviour as sent, for [`Upload`].
    fn store(
        &self,
        target: &Target,
        conflict: &str,
        annotation: Option<String>,
        stored: Stored,
    ) -> Response {
        let mut libraries = lock(&self.libraries);
        let Some(library) = libraries.get_mut(&target.library()) else { return no_library() };
        if let Some(refused) = library.refuses_length(&target.path) {
            return refused;
        }
        let now = SystemTime::now();
        let path = &target.path;
        let key = path.to_lowercase();
        let exists = library.files.contains_key(&key);
        if exists && stored.if_none_match.as_deref() == Some("*") {
            return precondition_failed();
        }
        let free_path = match (exists, conflict) {
            (true, "fail") => return name_exists(path),
            (true, "rename") => {
                let (folder, name) = split_path(path);
                let (stem, extension) = match name.rfind('.') {
                    Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
                    _ => (name, ""),
                };
                (1..)
                    .map(|n| join_path(folder, &format!("{stem} {n}{extension}")))
                    .find(|candidate| !library.files.contains_key(&candidate.to_lowercase()))
                    .unwrap_or_else(|| path.clone())
            }
            _ => path.clone(),
        };
        let (status, item) = match library.files.get_mut(&free_path.to_lowercase()) {
            Some(existing) => {
                existing.bytes = stored.bytes;
                existing.modified = now;
                existing.version += 1;
                (StatusCode::OK, existing.clone())
            }
            None => {
                let item = Item {
                    id: self.item_id(),
                    path: free_path.clone(),
                    bytes: stored.bytes,
                    created: now,
                    modified: now,
                    version: 1,
                };
                library.files.insert(free_path.to_lowercase(), item.clone());
                (StatusCode::CREATED, item)
            }
        };
        let answer = drive_item(&item, &target.site_id, &target.drive_id, &library.web_url);
        drop(libraries);
        lock(&self.uploads).push(Upload {
            site_id: target.site_id.clone(),
            drive_id: target.drive_id.clone(),
            path: path.clone(),
            stored_as: item.path.clone(),
            bytes: item.bytes.clone(),
            content_type: stored.content_type,
            conflict_behavior: annotation,
            if_none_match: stored.if_none_match,
            status: status.as_u16(),
            item_id: item.id.clone(),
            fragments: stored.fragments,
        });
        (status, axum::Json(answer)).into_response()
    }
}

// ---- the upload host ----

/// Requests to an upload session's `uploadUrl`: fragments (`PUT`) and its state (`GET`).
async fn upload_host_request(
    State(state): State<Arc<GraphState>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    body: Body,
) -> Response {
    if let Err(answer) = state.upload_faults.admit(graph_failure).await {
        return answer;
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The upload URL is pre-authenticated; a request to it must not carry an Authorization header.",
        );
    }
    let guid = query.get("guid").cloned().unwrap_or_default();
    let tempauth = query.get("tempauth").map(String::as_str);
    let known = lock(&state.sessions).get(&guid).is_some_and(|s| Some(&*s.tempauth) == tempauth);
    if !known {
        return graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The upload session was not found: it expired, was cancelled or is complete.",
        );
    }
    let answer = match method {
        Method::GET => Ok(session_state(&state, &guid)),
        Method::PUT => take_fragment(&state, &guid, &headers, body).await,
        _ => Err(graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalidRequest",
            "The method is not allowed for this resource.",
        )),
    };
    answer.unwrap_or_else(|error| error)
}

/// `GET {uploadUrl}`: what the session still expects.
fn session_state(state: &GraphState, guid: &str) -> Response {
    let sessions = lock(&state.sessions);
    let Some(session) = sessions.get(guid) else { return no_session() };
    let received = session.received.len();
    let range = match session.total {
        Some(total) => format!("{received}-{}", total.saturating_sub(1)),
        None => format!("{received}-"),
    };
    let answer = json!({ "expirationDateTime": session_expiry(), "nextExpectedRanges": [range] });
    (StatusCode::OK, axum::Json(answer)).into_response()
}

fn no_session() -> Response {
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "The upload session was not found.")
}

fn bad_fragment(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "invalidRequest", message)
}

/// `bytes {start}-{end}/{total}`, with `start <= end < total`.
fn content_range(headers: &HeaderMap) -> Option<(usize, usize, usize)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let [start, end, total] = [start, end, total].map(|n| n.trim().parse::<usize>().ok());
    let (start, end, total) = (start?, end?, total?);
    (start <= end && end < total).then_some((start, end, total))
}

/// `PUT {uploadUrl}`: one fragment; the last one stores the file.
async fn take_fragment(
    state: &GraphState,
    guid: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let Some((start, end, total)) = content_range(headers) else {
        return Err(bad_fragment("The Content-Range header is missing or malformed."));
    };
    let length = end - start + 1;
    if length >= MAX_FRAGMENT {
        return Err(graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalidRequest",
            "A fragment must be smaller than 60 MiB.",
        ));
    }
    let bytes = read_body(headers, body, MAX_FRAGMENT).await?;
    if bytes.len() != length {
        return Err(bad_fragment(
            "The Content-Range header length does not match the provided number of bytes.",
        ));
    }
    let mut sessions = lock(&state.sessions);
    let session = sessions.get_mut(guid).ok_or_else(no_session)?;
    if session.total.is_some_and(|known| known != total) {
        return Err(bad_fragment("The Content-Range total does not match the session's."));
    }
    if start != session.received.len() {
        return Err(graph_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            &format!(
                "The uploaded fragment does not start where the session is: expected {}.",
                session.received.len()
            ),
        ));
    }
    if end + 1 < total && length % FRAGMENT_MULTIPLE != 0 {
        return Err(bad_fragment("A fragment but the last must be a multiple of 320 KiB."));
    }
    session.total = Some(total);
    session.received.extend_from_slice(&bytes);
    session.fragments += 1;
    let lost = {
        let mut lost = lock(&state.lost_fragment_answers);
        let now = *lost > 0;
        *lost = lost.saturating_sub(1);
        now
    };
    let answer = if session.received.len() < total {
        let next = format!("{}-", session.received.len());
        let body = json!({ "expirationDateTime": session_expiry(), "nextExpectedRanges": [next] });
        Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
    } else {
        let finished = sessions.remove(guid).ok_or_else(no_session)?;
        drop(sessions);
        let stored = Stored {
            bytes: finished.received,
            content_type: None,
            if_none_match: None,
            fragments: Some(finished.fragments),
        };
        let annotation = Some(finished.conflict.clone());
        Ok(state.store(&finished.target, &finished.conflict, annotation, stored))
    };
    if lost {
        return Err(graph_failure(504, None));
    }
    answer
}

fn split_path(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((folder, name)) => (folder, name),
        None => ("", path),
    }
}

fn join_path(folder: &str, name: &str) -> String {
    if folder.is_empty() { name.to_owned() } else { format!("{folder}/{name}") }
}

fn drive_item(item: &Item, site_id: &str, drive_id: &str, web_root: &str) -> Value {
    let (folder, name) = split_path(&item.path);
    let folder_name = folder.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("root");
    let etag_guid = uuid_like(item.id.len() as u64 ^ item.id.bytes().map(u64::from).sum::<u64>())
        .to_uppercase();
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#driveItem",
        "createdDateTime": rfc3339(item.created),
        "eTag": format!("\"{{{etag_guid}}},{}\"", item.version),
        "id": item.id,
        "lastModifiedDateTime": rfc3339(item.modified),
        "name": name,
        "webUrl": format!("{web_root}/{}", percent_encode_path(&item.path)),
        "cTag": format!("\"c:{{{etag_guid}}},{}\"", item.version),
        "size": item.bytes.len(),
        "createdBy": { "application": { "id": CLIENT_ID, "displayName": "b24act" } },
        "lastModifiedBy": { "application": { "id": CLIENT_ID, "displayName": "b24act" } },
        "parentReference": {
            "driveType": "documentLibrary",
            "driveId": drive_id,
            "id": format!("01{}", folder_name.len()),
            "name": folder_name,
            "path": format!("/drives/{drive_id}/root:{}", if folder.is_empty() { String::new() } else { format!("/{folder}") }),
            "siteId": site_id,
        },
        "file": { "mimeType": mime_type(name) },
        "fileSystemInfo": {
            "createdDateTime": rfc3339(item.created),
            "lastModifiedDateTime": rfc3339(item.modified),
        },
    })
}

/// SharePoint infers the type from the extension.
fn mime_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "txt" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "htm" | "html" => "text/html",
        "csv" => "text/csv",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space), later keys winning.
fn form_pairs(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                percent_decode(&key.replace('+', " "))?,
                percent_decode(&value.replace('+', " "))?,
            ))
        })
        .collect()
}

/// Percent-encodes a path for a web URL, keeping `/` and RFC 3986's unreserved characters.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A GUID-shaped string derived from `n`.
fn uuid_like(n: u64) -> String {
    let a = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = a.rotate_left(29) ^ 0xd1b5_4a32_d192_ed03;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_requests_decode() {
        let (target, action) = item_request(
            "/v1.0/sites/a.sharepoint.com,1,2/drives/b!x/root:/Approvals/%D0%A1%D0%B4%20x.md:/content",
        )
        .unwrap();
        assert_eq!(
            (target.site_id.as_str(), target.drive_id.as_str(), target.path.as_str(), action),
            ("a.sharepoint.com,1,2", "b!x", "Approvals/Сд x.md", "content")
        );
        let (_, action) =
            item_request("/v1.0/sites/s/drives/d/root:/a.md:/createUploadSession").unwrap();
        assert_eq!(action, "createUploadSession");
    }

    #[test]
    fn content_ranges_parse() {
        let range = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(value).unwrap());
            content_range(&headers)
        };
        assert_eq!(range("bytes 0-25/128"), Some((0, 25, 128)));
        assert_eq!(range("bytes 127-127/128"), Some((127, 127, 128)));
        for bad in ["bytes 5-4/10", "bytes 0-10/10", "bytes 0-1/*", "0-1/2", "bytes -1/2"] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }

    #[test]
    fn item_ids_look_like_sharepoints() {
        let state_ids: Vec<String> = (0..3)
            .map(|n| {
                let state = GraphState::new(String::new());
                state.next_id.store(n, Ordering::Relaxed);
                state.item_id()
            })
            .collect();
        assert!(state_ids.iter().all(|id| id.len() == 34 && id.starts_with("01")));
        assert_ne!(state_ids[0], state_ids[1]);
    }
}
