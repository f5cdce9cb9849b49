//! The configuration file of a local host: `examples/b24act.toml` with what a local deployment
//! changes (addresses, store, key, timings) set by key path, for the demo's scenarios, the bench
//! and the end-to-end tests. The reference action is the example's own; other actions and the
//! `[actions.retry]` table are written from typed knobs here, in one place.

use std::net::SocketAddr;
use std::time::Duration;

use fakes::finance::FinanceApi;

use super::{AppIdentity, Site};
use host::config::{DeliveryConfig, RetryPolicy, WorkersConfig};

/// `examples/b24act.toml`: the reference configuration every local deployment starts from.
pub const EXAMPLE: &str = include_str!("../../../examples/b24act.toml");

/// The example as a tree, to change with [`set`].
pub fn example() -> toml::Table {
    EXAMPLE.parse().unwrap_or_else(|e| unreachable!("examples/b24act.toml is TOML: {e}"))
}

/// The example's action, `check_credit_limit` (the reference case), as a tree to change with
/// [`set`] and write with [`action_toml`].
pub fn reference_action() -> toml::Table {
    let mut config = example();
    let actions = config.remove("actions");
    match actions.as_ref().and_then(|actions| actions.get(0)) {
        Some(toml::Value::Table(action)) => action.clone(),
        _ => unreachable!("examples/b24act.toml declares an [[actions]] table"),
    }
}

/// The reference action asking `api`: the example's URL on the fake's origin, and its token.
pub fn reference_action_against(api: &FinanceApi) -> toml::Table {
    let mut action = reference_action();
    let url = action.get("connector").and_then(|c| c.get("url")).and_then(toml::Value::as_str);
    // The example's finance API has the fake's paths; only the origin differs.
    let url = url
        .and_then(|url| on_origin(url, &api.url()))
        .unwrap_or_else(|| unreachable!("the example's connector URL is absolute"));
    set(&mut action, "connector.url", url);
    set(&mut action, "connector.auth.bearer", api.token());
    action
}

/// `url` on another origin (`http://127.0.0.1:P`), its path, query and placeholders kept:
/// `https://finance.example.com/api/{{properties.id}}` → `http://127.0.0.1:P/api/{{properties.id}}`.
/// Templated URLs are not parsed as URLs (a placeholder is not valid in one), hence by hand.
/// `None` when `url` has no `scheme://`.
pub fn on_origin(url: &str, origin: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let path = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    Some(format!("{}{path}", origin.trim_end_matches('/')))
}

/// Sets `value` at `path`, keys joined by dots (`store.url`), creating the tables on the way.
pub fn set(table: &mut toml::Table, path: &str, value: impl Into<toml::Value>) {
    let (parents, key) = path.rsplit_once('.').map_or((None, path), |(p, k)| (Some(p), k));
    let mut node = table;
    for segment in parents.into_iter().flat_map(|p| p.split('.')) {
        let child = node.entry(segment).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match child {
            toml::Value::Table(next) => next,
            other => {
                *other = toml::Value::Table(toml::Table::new());
                other.as_table_mut().unwrap_or_else(|| unreachable!("just made a table"))
            }
        };
    }
    node.insert(key.to_owned(), value.into());
}

/// One action's `[[actions]]` table as TOML text, for [`HostConfig::actions`].
pub fn action_toml(action: &toml::Table) -> String {
    let mut document = toml::Table::new();
    document.insert("actions".to_owned(), toml::Value::Array(vec![action.clone().into()]));
    format!("\n{document}")
}

/// A host's configuration: what differs between local deployments, everything else the
/// product's defaults. [`HostConfig::to_toml`] writes the file.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub app: AppIdentity,
    /// Where the host listens; its public URL is `http://{listen}/`.
    pub listen: SocketAddr,
    /// The auth server the host trusts (`[app] auth_server`): the emulator's.
    pub auth_server: String,
    pub store_url: String,
    /// 32 bytes in hex; fresh and random from [`HostConfig::new`].
    pub encryption_key: String,
    pub workers: WorkersConfig,
    pub delivery: DeliveryConfig,
    /// The `[[actions]]` tables, as TOML text (e.g. [`FinanceCreditCheck::to_toml`]).
    pub actions: Vec<String>,
}

impl HostConfig {
    /// A host at `site` with its store at `store_url`, a fresh random encryption key, the
    /// default workers and delivery, and no actions yet.
    pub fn new(app: &AppIdentity, site: &Site, store_url: impl Into<String>) -> HostConfig {
        let encryption_key = fresh_encryption_key();
        HostConfig {
            app: app.clone(),
            listen: site.listen,
            auth_server: site.auth_server.clone(),
            store_url: store_url.into(),
            encryption_key,
            workers: WorkersConfig::default(),
            delivery: DeliveryConfig::default(),
            actions: Vec::new(),
        }
    }

    /// The configuration file's text: the example's, with this deployment's values and actions.
    pub fn to_toml(&self) -> String {
        let HostConfig { app, listen, workers, delivery, .. } = self;
        let mut config = example();
        config.remove("actions");
        set(&mut config, "app.client_id", app.client_id.as_str());
        set(&mut config, "app.client_secret", app.client_secret.as_str());
        set(&mut config, "app.public_url", format!("http://{listen}/"));
        set(&mut config, "app.auth_server", self.auth_server.as_str());
        set(&mut config, "server.listen", listen.to_string());
        // A free port: local deployments run side by side (tests in parallel, bench nodes).
        set(&mut config, "console.listen", "127.0.0.1:0");
        set(&mut config, "store.url", self.store_url.as_str());
        set(&mut config, "store.encryption_key", self.encryption_key.as_str());
        set(&mut config, "workers.concurrency", count(workers.concurrency));
        set(&mut config, "workers.lease", config_duration(workers.lease));
        set(&mut config, "delivery.rate_per_second", delivery.rate_per_second);
        set(&mut config, "delivery.burst", i64::from(delivery.burst));
        set(&mut config, "delivery.retry_base", config_duration(delivery.retry_base));
        set(&mut config, "delivery.retry_cap", config_duration(delivery.retry_cap));
        let mut text = config.to_string();
        for action in &self.actions {
            text.push_str(action);
        }
        text
    }
}

/// A new random `store.encryption_key`: 32 bytes as 64 hex characters.
pub fn fresh_encryption_key() -> String {
    rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `http` action the demo's generic scenario, the bench and the tests run: it asks the fake
/// finance API for company `company_id`'s credit and returns its limit and debt as `limit` and
/// `debt`; when it gives up, the fallback logs the reason.
#[derive(Debug, Clone)]
pub struct FinanceCreditCheck<'a> {
    pub code: &'a str,
    /// The action's English name.
    pub name: &'a str,
    pub api: &'a FinanceApi,
    pub retry: RetryPolicy,
    /// The action also returns `unavailable`, which its fallback sets to true.
    pub flags_unavailable: bool,
}

impl FinanceCreditCheck<'_> {
    /// The action's `[[actions]]` table.
    pub fn to_toml(&self) -> String {
        let mut text = format!(
            r#"
[[actions]]
code = "{code}"
name = {{ en = "{name}" }}

[actions.properties.company_id]
name = "Company"
type = "int"
required = true

[actions.return_properties.limit]
name = "Limit"
type = "double"

[actions.return_properties.debt]
name = "Debt"
type = "double"
"#,
            code = toml_escape(self.code),
            name = toml_escape(self.name),
        );
        if self.flags_unavailable {
            text.push_str(
                r#"
[actions.return_properties.unavailable]
name = "Finance system unavailable"
type = "bool"
"#,
            );
        }
        text.push_str(&finance_credit_connector(self.api));
        text.push_str(
            r#"
[actions.connector.response]
limit = "/credit_limit"
debt = "/current_debt"
"#,
        );
        text.push_str(&retry_table(&self.retry));
        text.push_str(
            r#"
[actions.on_failure]
mode = "fallback"
log_message = "Finance system unavailable: {reason}"
"#,
        );
        if self.flags_unavailable {
            text.push_str("values = { unavailable = true }\n");
        }
        text
    }
}

/// One `[[actions]]` table around a connector's own `[actions.connector]` table: the action's
/// inputs and return values, its retry policy and a fallback that names the reason. The tests of
/// each connector and `demo --all-connectors` build their actions with it.
#[derive(Debug, Clone)]
pub struct ActionTable<'a> {
    pub code: &'a str,
    /// The action's name (any language).
    pub name: &'a str,
    /// Each input property as `(id, type)`; all required.
    pub properties: &'a [(&'a str, &'a str)],
    /// Each return property as `(id, type)`.
    pub returns: &'a [(&'a str, &'a str)],
    /// The `[actions.connector]` table and its sub-tables, as TOML text ([`connector_table`]).
    pub connector: &'a str,
    pub retry: RetryPolicy,
    /// The fallback's `log_message` (`{reason}` becomes the reason).
    pub fallback_log: &'a str,
    /// The fallback's `values`, as a TOML inline table (`{ error = "{reason}" }`).
    pub fallback_values: &'a str,
}

impl ActionTable<'_> {
    /// The action's `[[actions]]` table.
    pub fn to_toml(&self) -> String {
        let mut text = format!(
            "\n[[actions]]\ncode = \"{}\"\nname = \"{}\"\n",
            toml_escape(self.code),
            toml_escape(self.name)
        );
        for (id, kind) in self.properties {
            text.push_str(&format!(
                "\n[actions.properties.{id}]\nname = \"{id}\"\ntype = \"{kind}\"\nrequired = true\n"
            ));
        }
        for (id, kind) in self.returns {
            text.push_str(&format!(
                "\n[actions.return_properties.{id}]\nname = \"{id}\"\ntype = \"{kind}\"\n"
            ));
        }
        text.push_str(self.connector);
        text.push_str(&retry_table(&self.retry));
        text.push_str(&format!(
            "\n[actions.on_failure]\nmode = \"fallback\"\nlog_message = \"{}\"\nvalues = {}\n",
            toml_escape(self.fallback_log),
            self.fallback_values
        ));
        text
    }
}

/// The `[actions.connector]` table of an `http` GET of `api`'s credit endpoint for
/// `properties.company_id`, with its bearer token.
pub fn finance_credit_connector(api: &FinanceApi) -> String {
    let mut settings = toml::Table::new();
    set(&mut settings, "method", "GET");
    let url = format!("{}/api/v1/companies/{{{{properties.company_id}}}}/credit", api.url());
    set(&mut settings, "url", url);
    set(&mut settings, "headers.Authorization", format!("Bearer {}", api.token()));
    connector_table("http", settings)
}

/// The `[actions.connector]` table of the action last opened, as TOML text: `kind`, then
/// `settings` (the connector's own keys and sub-tables), each value escaped by the writer.
pub fn connector_table(kind: &str, settings: toml::Table) -> String {
    let mut connector = toml::Table::new();
    connector.insert("kind".to_owned(), kind.into());
    connector.extend(settings);
    action_subtable("connector", connector)
}

/// An action's retry policy as its `retry` table, every key written.
pub fn retry_settings(retry: &RetryPolicy) -> toml::Table {
    let mut table = toml::Table::new();
    set(&mut table, "max_wait", config_duration(retry.max_wait));
    set(&mut table, "backoff_base", config_duration(retry.backoff_base));
    set(&mut table, "backoff_cap", config_duration(retry.backoff_cap));
    set(&mut table, "jitter", retry.jitter);
    set(&mut table, "attempt_timeout", config_duration(retry.attempt_timeout));
    set(&mut table, "deadline_margin", config_duration(retry.deadline_margin));
    set(&mut table, "log_retries", retry.log_retries);
    table
}

/// The `[actions.retry]` table of the action last opened, as TOML text.
pub fn retry_table(retry: &RetryPolicy) -> String {
    action_subtable("retry", retry_settings(retry))
}

/// `table` as the `[actions.<key>]` table of the action last opened, as TOML text.
fn action_subtable(key: &str, table: toml::Table) -> String {
    let mut document = toml::Table::new();
    set(&mut document, &format!("actions.{key}"), table);
    format!("\n{document}")
}

/// A count as a TOML integer.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A string's content for a TOML basic string.
pub fn toml_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A duration as the configuration writes it (`1m 30s`, `250ms`).
pub fn config_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
