//! The rules a configuration must keep, checked before anything is sent to a portal: Bitrix24's
//! own registration rules (protocol §1.2–1.5) and the consistency b24act needs.

use std::collections::HashSet;

use b24::rest::{LocalizedText, PropertyType};
use indexmap::IndexMap;

use super::suggest;
use super::{
    ActionConfig, Config, ConsoleConfig, FailurePolicy, FilterRuleConfig, Problem, PropertyConfig,
    ServerConfig, TelemetryConfig,
};
use crate::values::{self, Shape};

/// Bitrix24 rejects longer codes with a save error (§1.2, DB validator).
const MAX_CODE_LENGTH: usize = 128;

/// The largest `server.max_body_bytes` accepted: protocol calls are a few KiB, and every body is
/// held in memory while it is decoded.
pub const MAX_BODY_BYTES_CAP: usize = 16 * 1024 * 1024;

/// The fewest distinct byte values a `store.encryption_key` may have. 32 random bytes have
/// about 30; fewer than 12 happens by chance with probability below 10^-20, so such a key was
/// typed by hand (`00…00`, `abab…`) and is refused.
pub const MIN_DISTINCT_KEY_BYTES: usize = 12;

/// The most `server.max_connections` accepted (the shutdown waits for all of them at once).
const MAX_CONNECTIONS_CAP: usize = 65_536;

/// The shortest `console.token` accepted: it is all that stands between the network and the
/// operator's actions, so it must not be guessable.
pub const MIN_CONSOLE_TOKEN_CHARS: usize = 16;

/// Property ids the activity constructor sets itself; a property with one of these ids is
/// silently skipped by the portal (§1.5, "Reserved property IDs").
const RESERVED_PROPERTY_IDS: [&str; 8] = [
    "Title",
    "UseSubscription",
    "IsTimeout",
    "AuthUserId",
    "SetStatusMessage",
    "StatusMessage",
    "TimeoutDuration",
    "TimeoutDurationType",
];

/// Every broken rule; empty when the configuration is good.
pub(super) fn problems(config: &Config) -> Vec<Problem> {
    let mut found = Problems::default();
    check_app(config, &mut found);
    check_runtime(config, &mut found);
    let mut codes = HashSet::new();
    if config.actions.is_empty() {
        found.add("actions", "no action is declared: add an [[actions]] table");
    }
    for (index, action) in config.actions.iter().enumerate() {
        let key = format!("actions[{index}]");
        if !action.code.is_empty() && !codes.insert(action.code.as_str()) {
            found.add(
                format!("{key}.code"),
                format!(
                    "`{}` is declared twice (activities and robots share one namespace, §1.1)",
                    action.code
                ),
            );
        }
        check_action(config, action, &key, &mut found);
    }
    found.0
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }
}

fn check_app(config: &Config, found: &mut Problems) {
    if config.app.client_id.trim().is_empty() {
        found.add("app.client_id", "must not be empty");
    }
    if config.app.client_secret.expose().is_empty() {
        found.add("app.client_secret", "must not be empty");
    }
    let url = &config.app.public_url;
    if !matches!(url.scheme(), "http" | "https") {
        found.add(
            "app.public_url",
            format!("scheme `{}` is not http or https (§1.2)", url.scheme()),
        );
    }
    // The portal rejects a handler whose host has no dot, or starts with one (§1.2).
    let host = url.host_str().unwrap_or_default();
    if host.find('.').is_none_or(|dot| dot == 0) {
        found.add(
            "app.public_url",
            format!("host `{host}` would be refused by Bitrix24, which needs a dot in the handler's host (§1.2); use a real domain or 127.0.0.1"),
        );
    }
    // The client secret and every refresh token go there (§4.4): plain http only on loopback.
    let auth = &config.app.auth_server;
    let loopback = match auth.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if auth.host().is_none() || !(auth.scheme() == "https" || auth.scheme() == "http" && loopback) {
        found.add(
            "app.auth_server",
            format!("`{auth}` must be an https:// URL (http:// only on loopback): the client secret is sent there (§4.4)"),
        );
    }
}

fn check_runtime(config: &Config, found: &mut Problems) {
    let url = config.store.url.expose();
    if !["sqlite:", "postgres://", "postgresql://"].iter().any(|scheme| url.starts_with(scheme)) {
        let scheme = url.split(':').next().unwrap_or_default();
        found.add("store.url", format!("scheme `{scheme}` is neither sqlite: nor postgres://"));
    }
    let key = config.store.encryption_key.expose();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        found.add(
            "store.encryption_key",
            format!(
                "must be 32 bytes as 64 hex characters (`openssl rand -hex 32`), got {} characters",
                key.len()
            ),
        );
    } else if distinct_bytes(key) < MIN_DISTINCT_KEY_BYTES {
        found.add(
            "store.encryption_key",
            format!(
                "has {} distinct byte values, fewer than the {MIN_DISTINCT_KEY_BYTES} a random key has; generate one with `openssl rand -hex 32`",
                distinct_bytes(key)
            ),
        );
    }
    check_server(&config.server, found);
    check_console(&config.console, &config.server, found);
    check_telemetry(&config.telemetry, found);
    if config.workers.concurrency == 0 {
        found.add("workers.concurrency", "must be at least 1");
    }
    if !(config.delivery.rate_per_second > 0.0 && config.delivery.rate_per_second.is_finite()) {
        found.add("delivery.rate_per_second", "must be a positive number");
    }
    if config.delivery.burst == 0 {
        found.add("delivery.burst", "must be at least 1");
    }
    if config.delivery.retry_base.is_zero()
        || config.delivery.retry_base > config.delivery.retry_cap
    {
        found.add("delivery.retry_base", "must be more than 0 and at most delivery.retry_cap");
    }
}

/// How many different byte values a key of 64 hex digits holds.
fn distinct_bytes(hex: &str) -> usize {
    let bytes: HashSet<u8> = hex
        .as_bytes()
        .chunks(2)
        .filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect();
    bytes.len()
}

fn check_server(server: &ServerConfig, found: &mut Problems) {
    if server.max_body_bytes == 0 || server.max_body_bytes > MAX_BODY_BYTES_CAP {
        found.add(
            "server.max_body_bytes",
            format!(
                "must be more than 0 and at most {MAX_BODY_BYTES_CAP} (16 MiB), got {}",
                server.max_body_bytes
            ),
        );
    }
    for (key, timeout) in [
        ("server.header_timeout", server.header_timeout),
        ("server.body_timeout", server.body_timeout),
        ("server.idle_timeout", server.idle_timeout),
    ] {
        if timeout.is_zero() {
            found.add(key, "must be more than 0");
        } else if timeout > std::time::Duration::from_secs(3600) {
            found.add(key, "must be at most 1h");
        }
    }
    if server.max_connections == 0 || server.max_connections > MAX_CONNECTIONS_CAP {
        found.add(
            "server.max_connections",
            format!("must be from 1 to {MAX_CONNECTIONS_CAP}, got {}", server.max_connections),
        );
    }
    if server.roles.is_empty() {
        found.add("server.roles", "must name at least one of \"intake\", \"worker\", \"outbox\"");
    }
    let distinct: HashSet<_> = server.roles.iter().collect();
    if distinct.len() != server.roles.len() {
        found.add("server.roles", "names a role twice");
    }
    if server.drain_grace > std::time::Duration::from_secs(600) {
        found.add("server.drain_grace", "must be at most 10m");
    }
}

fn check_console(console: &ConsoleConfig, server: &ServerConfig, found: &mut Problems) {
    if !console.enabled {
        return;
    }
    match &console.token {
        Some(token) if token.expose().chars().count() < MIN_CONSOLE_TOKEN_CHARS => found.add(
            "console.token",
            format!(
                "must be at least {MIN_CONSOLE_TOKEN_CHARS} characters (`openssl rand -hex 32`); remove it for a read-only console on loopback"
            ),
        ),
        Some(_) => {}
        None if !console.listen.ip().is_loopback() => found.add(
            "console.listen",
            format!(
                "`{}` is beyond loopback, and without console.token anyone who reaches it would see every job: set console.token (or B24ACT__CONSOLE__TOKEN) to a secret (`openssl rand -hex 32`), or listen on 127.0.0.1",
                console.listen
            ),
        ),
        None => {}
    }
    if console.listen.port() != 0 && console.listen == server.listen {
        found.add(
            "console.listen",
            format!(
                "`{}` is server.listen too; give the console a port of its own",
                console.listen
            ),
        );
    }
}

/// Checked whether or not export is enabled, so turning it on later meets no surprise.
fn check_telemetry(telemetry: &TelemetryConfig, found: &mut Problems) {
    let endpoint = &telemetry.endpoint;
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
        found.add(
            "telemetry.endpoint",
            format!("`{endpoint}` is not an http:// or https:// URL (OTLP over HTTP, e.g. http://127.0.0.1:4318/v1/traces)"),
        );
    } else if endpoint.path() == "/" {
        found.add(
            "telemetry.endpoint",
            format!("`{endpoint}` has no path; OTLP over HTTP takes traces at {endpoint}v1/traces"),
        );
    } else if !endpoint.username().is_empty() || endpoint.password().is_some() {
        found.add(
            "telemetry.endpoint",
            "must not hold credentials (the configuration is logged); give the collector's headers in OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        );
    }
    if telemetry.service_name.trim().is_empty() {
        found.add("telemetry.service_name", "must not be empty");
    }
    if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
        found.add(
            "telemetry.sample_ratio",
            format!("must be from 0 to 1, got {}", telemetry.sample_ratio),
        );
    }
}

fn check_action(config: &Config, action: &ActionConfig, key: &str, found: &mut Problems) {
    check_code(&action.code, &format!("{key}.code"), found);
    if is_empty(&action.name) {
        found.add(format!("{key}.name"), "must not be empty (\"Empty activity NAME!\", §1.7)");
    }
    check_properties(&action.properties, &format!("{key}.properties"), found);
    check_properties(&action.return_properties, &format!("{key}.return_properties"), found);
    let inputs: HashSet<String> =
        action.properties.keys().map(|k| k.to_ascii_lowercase()).collect();
    for id in action.return_properties.keys() {
        if inputs.contains(&id.to_ascii_lowercase()) {
            found.add(
                format!("{key}.return_properties.{id}"),
                "is also an input property; the portal would skip it (§1.5)",
            );
        }
    }
    if !action.use_subscription && !action.return_properties.is_empty() {
        found.add(
            format!("{key}.return_properties"),
            "return values need use_subscription = true: nothing is returned to a workflow that does not wait (§6.6)",
        );
    }
    let retry = &action.retry;
    let retry_key = format!("{key}.retry");
    if retry.max_wait.is_zero() {
        found.add(format!("{retry_key}.max_wait"), "must be more than 0");
    }
    if retry.backoff_base.is_zero() || retry.backoff_base > retry.backoff_cap {
        found.add(
            format!("{retry_key}.backoff_base"),
            "must be more than 0 and at most backoff_cap",
        );
    }
    if !(0.0..=1.0).contains(&retry.jitter) {
        found.add(format!("{retry_key}.jitter"), "must be between 0 and 1");
    }
    if retry.attempt_timeout.is_zero() {
        found.add(format!("{retry_key}.attempt_timeout"), "must be more than 0");
    }
    if retry.attempt_timeout >= config.workers.lease {
        found.add(
            format!("{retry_key}.attempt_timeout"),
            format!(
                "must be shorter than workers.lease ({}), or a slow attempt would run twice",
                humantime::format_duration(config.workers.lease)
            ),
        );
    }
    if let FailurePolicy::Fallback { values, reason_property, .. } = &action.on_failure {
        check_fallback(action, values, &format!("{key}.on_failure.values"), found);
        if let Some(id) = reason_property {
            check_reason_property(action, id, values, &format!("{key}.on_failure"), found);
        }
    }
    if action.settings_form && action.properties.is_empty() {
        found.add(
            format!("{key}.settings_form"),
            "the settings form shows the action's properties, and it declares none",
        );
    }
    if let Some(document_type) = &action.document_type
        && document_type.iter().any(|part| part.trim().is_empty())
    {
        found.add(
            format!("{key}.document_type"),
            "must be [module, entity, type] with none empty, e.g. [\"crm\", \"CCrmDocumentDeal\", \"DEAL\"]",
        );
    }
    if let Some(filter) = &action.filter {
        for (side, rules) in [("include", &filter.include), ("exclude", &filter.exclude)] {
            for (index, rule) in rules.iter().enumerate() {
                let empty = match rule {
                    FilterRuleConfig::Distribution(name) => name.trim().is_empty(),
                    FilterRuleConfig::DocumentType(prefix) => {
                        prefix.is_empty() || prefix.iter().any(|part| part.trim().is_empty())
                    }
                };
                if empty {
                    found.add(
                        format!("{key}.filter.{side}[{index}]"),
                        "must be a distribution name (\"b24\" or \"box\") or a document-type prefix such as [\"crm\", \"CCrmDocumentDeal\"], not empty (§1.6)",
                    );
                }
            }
        }
    }
}

fn check_code(code: &str, key: &str, found: &mut Problems) {
    if code.is_empty() {
        found.add(key, "must not be empty (\"Empty activity code!\", §1.7)");
    } else if !code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
        found.add(
            key,
            format!(
                "`{code}` has characters outside [A-Za-z0-9._-] (\"Wrong activity code!\", §1.2)"
            ),
        );
    } else if code.len() > MAX_CODE_LENGTH {
        found.add(
            key,
            format!("is {} characters, over Bitrix24's {MAX_CODE_LENGTH} (§1.2)", code.len()),
        );
    }
}

fn check_properties(
    properties: &IndexMap<String, PropertyConfig>,
    key: &str,
    found: &mut Problems,
) {
    for (id, property) in properties {
        let at = format!("{key}.{id}");
        let mut chars = id.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            found.add(&at, format!("`{id}` is not a valid property id [A-Za-z][A-Za-z0-9_]* (\"Wrong property key\", §1.2)"));
        }
        if RESERVED_PROPERTY_IDS.iter().any(|reserved| reserved.eq_ignore_ascii_case(id)) {
            found.add(
                &at,
                format!(
                    "`{id}` is reserved by the activity itself; the portal would skip it (§1.5)"
                ),
            );
        }
        if is_empty(&property.name) {
            found.add(format!("{at}.name"), "must not be empty (\"Empty property NAME\", §1.7)");
        }
        if let PropertyType::Other(other) = &property.kind {
            found.add(
                format!("{at}.type"),
                format!("`{other}` is not one of string, text, int, double, bool, date, datetime, select, user, file"),
            );
        }
        let options = &property.options;
        if property.kind == PropertyType::Select && options.is_empty() {
            found.add(format!("{at}.options"), "a select property needs at least one option");
        }
        if property.kind != PropertyType::Select && !options.is_empty() {
            found.add(format!("{at}.options"), "options are only for select properties");
        }
        if let Some(default) = &property.default
            && let Err(problem) = values::to_return_value(Shape::of(property), default)
        {
            found.add(format!("{at}.default"), problem);
        }
    }
}

fn check_fallback(
    action: &ActionConfig,
    fallback: &IndexMap<String, serde_json::Value>,
    key: &str,
    found: &mut Problems,
) {
    for (id, value) in fallback {
        let Some(property) = action.return_properties.get(id) else {
            let declared = action.return_properties.keys().map(String::as_str);
            let meant = suggest::did_you_mean(id, declared);
            found.add(format!("{key}.{id}"), format!("is not a declared return property{meant}"));
            continue;
        };
        if let Err(problem) = values::to_return_value(Shape::of(property), value) {
            found.add(format!("{key}.{id}"), problem);
        }
    }
}

/// The fallback's `reason_property`: a declared single string return property, which no fallback
/// value fills too (the reason would overwrite it).
fn check_reason_property(
    action: &ActionConfig,
    id: &str,
    values: &IndexMap<String, serde_json::Value>,
    key: &str,
    found: &mut Problems,
) {
    let at = format!("{key}.reason_property");
    let Some(property) = action.return_properties.get(id) else {
        let declared = action.return_properties.keys().map(String::as_str);
        let meant = suggest::did_you_mean(id, declared);
        found.add(
            at,
            format!("`{id}` is not a declared return property; declare it as a string{meant}"),
        );
        return;
    };
    if !matches!(property.kind, PropertyType::String | PropertyType::Text) || property.multiple {
        found.add(
            at,
            format!(
                "`{id}` must be a single string (or text) return property to carry the reason, not {}{}",
                if property.multiple { "multiple " } else { "" },
                property.kind.as_str()
            ),
        );
    }
    if values.contains_key(id) {
        found.add(
            format!("{key}.values.{id}"),
            "is the reason_property, which gets the reason; give it no fallback value",
        );
    }
}

fn is_empty(text: &LocalizedText) -> bool {
    match text {
        LocalizedText::Text(s) => s.trim().is_empty(),
        LocalizedText::ByLanguage(by_language) => by_language.values().all(|s| s.trim().is_empty()),
    }
}
