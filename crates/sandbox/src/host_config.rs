//! The configuration file of a local host, built from typed knobs: one builder for the demo's
//! scenarios, the bench and the end-to-end tests, so the `[app]`, `[server]`, `[store]`,
//! `[workers]`, `[delivery]` and `[actions.retry]` tables are written in one place.

use std::net::SocketAddr;
use std::time::Duration;

use fakes::finance::FinanceApi;

use super::{AppIdentity, Site};
use host::config::{DeliveryConfig, RetryPolicy, WorkersConfig};

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
        let encryption_key =
            rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
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

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        let HostConfig { app, listen, workers, delivery, .. } = self;
        let mut text = format!(
            r#"
[app]
client_id = "{client_id}"
client_secret = "{client_secret}"
public_url = "http://{listen}/"
auth_server = "{auth_server}"

[server]
listen = "{listen}"

[store]
url = "{store_url}"
encryption_key = "{key}"

[workers]
concurrency = {concurrency}
lease = "{lease}"

[delivery]
rate_per_second = {rate:?}
burst = {burst}
retry_base = "{retry_base}"
retry_cap = "{retry_cap}"
"#,
            client_id = toml_escape(&app.client_id),
            client_secret = toml_escape(&app.client_secret),
            auth_server = toml_escape(&self.auth_server),
            store_url = toml_escape(&self.store_url),
            key = toml_escape(&self.encryption_key),
            concurrency = workers.concurrency,
            lease = config_duration(workers.lease),
            rate = delivery.rate_per_second,
            burst = delivery.burst,
            retry_base = config_duration(delivery.retry_base),
            retry_cap = config_duration(delivery.retry_cap),
        );
        for action in &self.actions {
            text.push_str(action);
        }
        text
    }
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
    /// The `[actions.connector]` table and its sub-tables, as TOML text.
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
    format!(
        r#"
[actions.connector]
kind = "http"
method = "GET"
url = "{api_url}/api/v1/companies/{{{{properties.company_id}}}}/credit"
headers = {{ Authorization = "Bearer {token}" }}
"#,
        api_url = toml_escape(&api.url()),
        token = toml_escape(&api.token()),
    )
}

/// The `[actions.retry]` table of the action last opened, every key written.
pub fn retry_table(retry: &RetryPolicy) -> String {
    format!(
        r#"
[actions.retry]
max_wait = "{max_wait}"
backoff_base = "{backoff_base}"
backoff_cap = "{backoff_cap}"
jitter = {jitter:?}
attempt_timeout = "{attempt_timeout}"
deadline_margin = "{deadline_margin}"
log_retries = {log_retries}
"#,
        max_wait = config_duration(retry.max_wait),
        backoff_base = config_duration(retry.backoff_base),
        backoff_cap = config_duration(retry.backoff_cap),
        jitter = retry.jitter,
        attempt_timeout = config_duration(retry.attempt_timeout),
        deadline_margin = config_duration(retry.deadline_margin),
        log_retries = retry.log_retries,
    )
}

/// A string's content for a TOML basic string.
pub fn toml_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A duration as the configuration writes it (`1m 30s`, `250ms`).
pub fn config_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
