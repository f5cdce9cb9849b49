//! The typed configuration tree: what a TOML file (plus environment overrides) declares.
//!
//! Defaults live here, next to the fields; the rules that need more than one field are in
//! `validate.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use b24::rest::{LocalizedText, PropertyType};
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};
use url::Url;

use super::Secret;

/// Everything b24act needs to run, after validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub app: AppConfig,
    #[serde(default)]
    pub server: ServerConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The environment overrides applied to the file, so that a key they set is blamed on its
    /// variable (a connector's settings are checked after loading).
    #[serde(skip)]
    pub overrides: Vec<super::EnvOverride>,
    /// The keys that still hold one of the example's `<…>` placeholders (`app.client_secret`),
    /// environment overrides applied: check-config warns about them, since they would only fail
    /// on a real portal or service.
    #[serde(skip)]
    pub unfilled: Vec<super::Unfilled>,
}

/// How the process logs (to stderr; `RUST_LOG` picks the levels).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (one line per event, for people) or `json` (one JSON object per line, for log
    /// collectors). The command line's `--log-format` wins over this.
    pub format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal and `NO_COLOR` is unset.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`), and
    /// the spans the event happened in.
    Json,
}

impl LogFormat {
    /// Every format by the name the configuration and `--log-format` use.
    pub const NAMES: [&'static str; 2] = ["text", "json"];
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<LogFormat, String> {
        match name {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; expected text or json")),
        }
    }
}

/// The Bitrix24 app b24act acts as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The OAuth `client_id` (`local.…` for local apps, `app.…` for Market apps).
    pub client_id: String,
    /// The OAuth `client_secret`, used only to refresh tokens, and sent only to `auth_server`.
    pub client_secret: Secret,
    /// The OAuth server that refreshes tokens and vouches for install events
    /// (docs/protocol.md §4.4). Nothing an event says overrides it. The cloud's is the default;
    /// a box portal or the emulator names its own.
    #[serde(default = "default_auth_server", deserialize_with = "absolute_url")]
    pub auth_server: Url,
    /// Where portals reach this server, e.g. `https://b24act.example.com/`: handler and install
    /// URLs are built under it ([`crate::routes`]).
    #[serde(deserialize_with = "absolute_url")]
    pub public_url: Url,
    /// Whether actions removed from `[[actions]]` stay registered on the portals. By default
    /// (`false`) `serve` at start and `b24act sync` delete them, so the designer stops offering
    /// an action whose calls this host would refuse; `true` leaves them for another deployment
    /// of the same app to serve.
    #[serde(default)]
    pub keep_removed_actions: bool,
}

/// An absolute URL; one written without a scheme (`b24act.example.com/`) is refused saying so,
/// with the URL to write, as the connectors' URLs are.
fn absolute_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let text = String::deserialize(deserializer)?;
    if let Some(problem) = connectors::config::missing_scheme(&text) {
        return Err(serde::de::Error::custom(problem));
    }
    Url::parse(&text).map_err(serde::de::Error::custom)
}

fn default_auth_server() -> Url {
    Url::parse(b24::rest::BITRIX_AUTH_SERVER).unwrap_or_else(|_| unreachable!("a literal URL"))
}

/// The HTTP server that takes calls and install events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The largest request body accepted (protocol calls are a few KiB), at most 16 MiB.
    pub max_body_bytes: usize,
    /// From a request's first byte until its head (request line and headers) is complete;
    /// a slower client is disconnected.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// From the end of a request's head until its whole body has arrived; a slower client is
    /// answered 408 and disconnected.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a connection may wait for a request to begin: a new one for its first, a
    /// kept-alive one for its next. Then it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The most connections served at once; more wait in the listen backlog until one closes
    /// (idle ones are closed at once to make room).
    pub max_connections: usize,
    /// What this node does: take calls and install events (`intake`), run jobs (`worker`),
    /// send results and register actions (`outbox`). Default all three; nodes sharing a
    /// PostgreSQL store may split them.
    pub roles: Vec<Role>,
    /// On SIGTERM, how long the node keeps answering calls (and says `draining` on `/health`)
    /// after it stops claiming work, so a load balancer can move traffic away: Bitrix24 never
    /// sends a refused call again.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
}

/// One of the things a node does (`server.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Intake,
    Worker,
    Outbox,
}

impl ServerConfig {
    /// Whether this node plays `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            roles: vec![Role::Intake, Role::Worker, Role::Outbox],
            drain_grace: Duration::from_secs(5),
        }
    }
}

/// The operator console and `/metrics`, on a listener of their own (docs/console.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Whether `serve` starts the console.
    pub enabled: bool,
    /// Where the console listens; beyond loopback only with a `token`.
    pub listen: SocketAddr,
    /// What operators and Prometheus present: `Authorization: Bearer <token>`, or the password
    /// of HTTP basic auth (the user name is recorded with what they do). Without one the console
    /// is read-only and loopback-only.
    pub token: Option<Secret>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 8081)), token: None }
    }
}

/// Exporting the process's spans to an OpenTelemetry collector (docs/telemetry.md). The section
/// always parses; only a binary built with the `otel` feature can act on `enabled = true`, and
/// one built without refuses to start with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Whether `serve` exports its spans.
    pub enabled: bool,
    /// Where spans are sent, OTLP over HTTP with protobuf bodies: the collector's traces URL,
    /// path included (`/v1/traces`).
    #[serde(deserialize_with = "absolute_url")]
    pub endpoint: Url,
    /// The `service.name` the spans carry.
    pub service_name: String,
    /// The share of traces kept, from 0 (none) to 1 (all); each call and each job is a trace.
    pub sample_ratio: f64,
}

/// The OTLP/HTTP port of a collector on this machine, the protocol's default.
pub const DEFAULT_TELEMETRY_ENDPOINT: &str = "http://127.0.0.1:4318/v1/traces";

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: Url::parse(DEFAULT_TELEMETRY_ENDPOINT)
                .unwrap_or_else(|_| unreachable!("a literal URL")),
            service_name: "b24act".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

/// Where jobs, attempts and installations are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:<path>` (the file is created on first start) or `postgres://…`.
    #[serde(default = "default_store_url")]
    pub url: Secret,
    /// 32 bytes as 64 hex characters (`openssl rand -hex 32`): encrypts portal tokens at rest,
    /// so a copied database file does not leak portal access. A key with fewer than 12
    /// distinct byte values is refused as hand-made (a random one has about 30).
    pub encryption_key: Secret,
}

fn default_store_url() -> Secret {
    Secret::new("sqlite:b24act.db")
}

/// The workers that run connectors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// How many jobs run at once.
    pub concurrency: usize,
    /// How long a claimed job belongs to its worker; a job whose worker died runs again after
    /// this. Must exceed every action's `attempt_timeout`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self { concurrency: 8, lease: Duration::from_secs(5 * 60) }
    }
}

/// Returning results with `bizproc.event.send`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The portal's leaky-bucket drain rate (protocol §5.6: 2/s, Enterprise 5/s).
    pub rate_per_second: f64,
    /// The portal's burst threshold (50, Enterprise 250).
    pub burst: u32,
    /// First wait after a failed delivery; doubles up to `retry_cap`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 2.0,
            burst: 50,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
        }
    }
}

/// An activity (BP designer) or a robot (CRM automation), protocol §1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    #[default]
    Activity,
    Robot,
}

/// One action b24act hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The registered `CODE`: `[A-Za-z0-9._-]`, at most 128 characters (§1.2).
    pub code: String,
    #[serde(default)]
    pub kind: ActionKind,
    /// A string, or a table by language: `name = { en = "…", ru = "…" }`.
    pub name: LocalizedText,
    #[serde(default)]
    pub description: Option<LocalizedText>,
    /// The default "Run as" user, whose token the call carries (§6.5).
    #[serde(default = "default_auth_user_id")]
    pub auth_user_id: u64,
    /// Whether the workflow waits for the result. With `false`, the work runs and only log
    /// lines are sent.
    #[serde(default = "default_true")]
    pub use_subscription: bool,
    #[serde(default)]
    pub properties: IndexMap<String, PropertyConfig>,
    #[serde(default)]
    pub return_properties: IndexMap<String, PropertyConfig>,
    /// Whether the action gets b24act's settings form in the BP designer: registered with
    /// `USE_PLACEMENT=Y` and `PLACEMENT_HANDLER` = `<public_url>bitrix/settings/<code>`
    /// (docs/protocol.md §1.8, docs/settings-form.md).
    #[serde(default)]
    pub settings_form: bool,
    /// `[module, entity, type]` the action is offered for, e.g.
    /// `["crm", "CCrmDocumentDeal", "DEAL"]` (`DOCUMENT_TYPE`, §1.2).
    #[serde(default)]
    pub document_type: Option<[String; 3]>,
    /// Where the designer lists the action (`FILTER`, §1.6). Hides it; not a permission.
    #[serde(default)]
    pub filter: Option<FilterConfig>,
    pub connector: ConnectorConfig,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub on_failure: FailurePolicy,
}

fn default_auth_user_id() -> u64 {
    1
}

fn default_true() -> bool {
    true
}

/// `FILTER` (§1.6): `include` and `exclude` rules, each a distribution name (`"b24"` for the
/// cloud, `"box"` on-premise) or a document-type prefix (`["crm", "CCrmDocumentDeal"]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    pub include: Vec<FilterRuleConfig>,
    pub exclude: Vec<FilterRuleConfig>,
}

/// One `FILTER` rule (§1.6).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FilterRuleConfig {
    Distribution(String),
    DocumentType(Vec<String>),
}

/// An input or return property (§1.5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyConfig {
    pub name: LocalizedText,
    #[serde(default)]
    pub description: Option<LocalizedText>,
    #[serde(rename = "type", default = "default_property_type")]
    pub kind: PropertyType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub multiple: bool,
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// For `select`: option key → label.
    #[serde(default)]
    pub options: IndexMap<String, LocalizedText>,
}

fn default_property_type() -> PropertyType {
    PropertyType::String
}

/// Which connector runs the action, and its own settings (checked by the connector).
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorConfig {
    pub kind: String,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// How long and how often to retry a failing connector (design.md §2.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Give up this long after the call arrived (or earlier, when the portal's own
    /// `timeout_duration` ends first).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Wait before the second attempt; doubles each time up to `backoff_cap`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Each wait is shortened by a random share of up to this fraction (0 to 1), so retries
    /// from many jobs spread out.
    pub jitter: f64,
    /// One connector attempt is abandoned after this long.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// When the portal set a timeout, finish this long before it, so the result (or the
    /// fallback) arrives while the activity still waits (§2.7) — but at most a quarter of the
    /// time the portal left the call, so a short timeout still gets its attempt.
    #[serde(with = "humantime_serde")]
    pub deadline_margin: Duration,
    /// Write a line to the workflow's log on each retry (`bizproc.activity.log`).
    pub log_retries: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(30 * 60),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(5 * 60),
            jitter: 0.2,
            attempt_timeout: Duration::from_secs(30),
            deadline_margin: Duration::from_secs(30),
            log_retries: true,
        }
    }
}

/// What happens when the connector fails for good or the deadline passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum FailurePolicy {
    /// Return these values (by return-property id) and a log line, so the workflow goes on.
    /// `{reason}` in the message and in string values is replaced by why the work failed.
    Fallback {
        #[serde(default)]
        values: IndexMap<String, serde_json::Value>,
        #[serde(default = "default_fallback_message")]
        log_message: String,
        /// A declared string return property that gets why the work failed when the fallback
        /// answers, and is sent empty with every other result: how a workflow tells a fallback
        /// from a success (`[actions.on_failure] reason_property = "error"`).
        #[serde(default)]
        reason_property: Option<String>,
    },
    /// Keep the job as dead for an operator (`b24act jobs retry`); nothing is sent, so the
    /// workflow waits until its own timeout. A table variant, so that a fallback's keys given
    /// with it (`values`, `reason_property`) are refused rather than ignored.
    DeadLetter {},
}

impl Default for FailurePolicy {
    /// A fallback with no values: the workflow goes on with the return properties' defaults
    /// and learns why from the log, rather than hanging.
    fn default() -> Self {
        FailurePolicy::Fallback {
            values: IndexMap::new(),
            log_message: default_fallback_message(),
            reason_property: None,
        }
    }
}

impl FailurePolicy {
    /// The return property that carries the failure's reason, if the action declares one.
    pub fn reason_property(&self) -> Option<&str> {
        match self {
            FailurePolicy::Fallback { reason_property, .. } => reason_property.as_deref(),
            FailurePolicy::DeadLetter {} => None,
        }
    }
}

fn default_fallback_message() -> String {
    "b24act could not complete the action: {reason}".to_owned()
}
