//! The fakes of `crates/fakes` as `b24act dev --fake NAME` starts them beside the host and
//! `b24act fake NAME` runs one alone: which connector each stands in for, the settings that
//! point such a connector at it (what `dev` changes in memory, and what `fake` prints), and what
//! it holds to try.

use std::net::SocketAddr;

use anyhow::Context;
use fakes::finance::FinanceApi;
use fakes::graph::{self, GraphApi};
use fakes::onec::{self, OneC};
use fakes::telegram::{self, BotApi};
use host::config::ConnectorConfig;
use serde_json::{Map, Value, json};

/// A fake by the name the command line gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum FakeName {
    /// A finance API's credit endpoint, for `credit_limit` (and `http` connectors asking its
    /// `/api/v1/companies/…` path).
    Finance,
    /// 1C:Enterprise's standard OData interface over a small trade database, for `onec`.
    #[value(alias = "1c")]
    Onec,
    /// The Telegram Bot API with one chat, for `telegram`.
    Telegram,
    /// Microsoft Graph with one document library, and its token endpoint, for `sharepoint`.
    Graph,
}

impl FakeName {
    /// The fake that stands in for connectors of `kind`, if one does.
    pub fn for_connector(kind: &str) -> Option<FakeName> {
        match kind {
            "credit_limit" => Some(FakeName::Finance),
            "onec" => Some(FakeName::Onec),
            "telegram" => Some(FakeName::Telegram),
            "sharepoint" => Some(FakeName::Graph),
            _ => None,
        }
    }

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FakeName::Finance => "finance",
            FakeName::Onec => "onec",
            FakeName::Telegram => "telegram",
            FakeName::Graph => "graph",
        }
    }
}

/// The seed of `b24act`'s fake finance API: its book of companies and its token.
const FINANCE_SEED: u64 = 1;
/// The finance API's credit route, before the company id (`fakes::finance`).
const FINANCE_COMPANIES: &str = "/api/v1/companies/";

/// A running fake; stops when dropped.
pub enum Fake {
    Finance(FinanceApi),
    Onec(OneC),
    Telegram(BotApi),
    Graph(GraphApi),
}

impl Fake {
    /// Starts the fake `name` on `listen` (port 0: a free one). Graph's token endpoint gets a
    /// free port on the same address.
    pub async fn start(name: FakeName, listen: SocketAddr) -> anyhow::Result<Fake> {
        let fake = match name {
            FakeName::Finance => {
                FinanceApi::start_on(FINANCE_SEED, listen).await.map(Fake::Finance)
            }
            FakeName::Onec => OneC::start_on(listen).await.map(Fake::Onec),
            FakeName::Telegram => BotApi::start_on(listen).await.map(Fake::Telegram),
            FakeName::Graph => {
                let identity = SocketAddr::new(listen.ip(), 0);
                GraphApi::start_on(listen, identity).await.map(Fake::Graph)
            }
        };
        fake.with_context(|| format!("starting the fake {} on {listen}", name.as_str()))
    }

    pub fn name(&self) -> FakeName {
        match self {
            Fake::Finance(_) => FakeName::Finance,
            Fake::Onec(_) => FakeName::Onec,
            Fake::Telegram(_) => FakeName::Telegram,
            Fake::Graph(_) => FakeName::Graph,
        }
    }

    /// What it is, where, and what it holds to try: `fake 1C at http://…/trade: items SKU-1, …`.
    pub fn title(&self) -> String {
        match self {
            Fake::Finance(api) => format!(
                "fake finance API at {}: GET {FINANCE_COMPANIES}{{id}}/credit for companies 1 to {}",
                api.url(),
                fakes::finance::SEEDED_COMPANIES
            ),
            Fake::Onec(onec) => format!(
                "fake 1C at {}: items SKU-1 (in stock), SKU-2 (none in stock), SKU-3 (no price)",
                onec.base_url()
            ),
            Fake::Telegram(bot) => {
                format!(
                    "fake Telegram Bot API at {}: one chat, {}",
                    bot.url(),
                    telegram::DEFAULT_CHAT_ID
                )
            }
            Fake::Graph(graph) => format!(
                "fake Microsoft Graph at {}, its token endpoint at {}: one document library",
                graph.graph_url(),
                graph.identity_url()
            ),
        }
    }

    /// The connector kind it stands in for, and the settings that point one at it.
    pub fn settings(&self) -> (&'static str, Map<String, Value>) {
        let (kind, settings) = match self {
            Fake::Finance(api) => (
                "credit_limit",
                json!({
                    "url": format!("{}{FINANCE_COMPANIES}{{{{properties.company_id}}}}/credit", api.url()),
                    "auth": { "bearer": api.token() },
                }),
            ),
            Fake::Onec(onec) => (
                "onec",
                json!({ "url": onec.base_url(), "username": onec::USER, "password": onec::PASSWORD }),
            ),
            Fake::Telegram(bot) => (
                "telegram",
                json!({
                    "base_url": bot.url(),
                    "bot_token": bot.token(),
                    "chat_id": telegram::DEFAULT_CHAT_ID,
                }),
            ),
            Fake::Graph(graph) => (
                "sharepoint",
                json!({
                    "authority": graph.identity_url(),
                    "graph_url": graph.graph_url(),
                    "tenant": graph::TENANT,
                    "client_id": graph::CLIENT_ID,
                    "client_secret": graph.client_secret(),
                    "site_id": graph::SITE_ID,
                    "drive_id": graph::DRIVE_ID,
                }),
            ),
        };
        let Value::Object(settings) = settings else { unreachable!("settings are an object") };
        (kind, settings)
    }

    /// The settings as TOML a person pastes into `[actions.connector]`: `url = "…"`, one a line.
    pub fn settings_toml(&self) -> Vec<String> {
        let (kind, settings) = self.settings();
        let mut lines = vec![format!("kind = \"{kind}\"")];
        for (key, value) in settings {
            let value = toml::Value::try_from(value)
                .unwrap_or_else(|e| unreachable!("a fake's settings are TOML: {e}"));
            lines.push(format!("{key} = {value}"));
        }
        lines
    }

    /// Points `connector` at this fake when it is one this fake stands in for, and returns the
    /// keys changed (none: not this fake's). A URL keeps its path and placeholders, only its
    /// origin changes; a `chat_id` given by a placeholder is kept.
    pub fn point(&self, connector: &mut ConnectorConfig) -> Vec<String> {
        let settings = &mut connector.settings;
        if let Fake::Finance(api) = self
            && connector.kind == "http"
        {
            return point_http_at_finance(settings, api);
        }
        let (kind, wanted) = self.settings();
        if connector.kind != kind {
            return Vec::new();
        }
        let mut changed = Vec::new();
        for (key, value) in wanted {
            let kept_path = match (self, key.as_str(), settings.get(&key)) {
                (Fake::Finance(api), "url", Some(Value::String(url))) => {
                    sandbox::on_origin(url, &api.url()).map(Value::String)
                }
                (_, "chat_id", Some(Value::String(chat))) if chat.contains("{{") => continue,
                _ => None,
            };
            settings.insert(key.clone(), kept_path.unwrap_or(value));
            changed.push(key);
        }
        changed
    }
}

/// An `http` connector asking the finance API's credit route, pointed at the fake with its
/// token; any other `http` connector is left alone.
fn point_http_at_finance(settings: &mut Map<String, Value>, api: &FinanceApi) -> Vec<String> {
    let Some(Value::String(url)) = settings.get("url") else { return Vec::new() };
    let Some(path) = sandbox::on_origin(url, "") else { return Vec::new() };
    if !path.starts_with(FINANCE_COMPANIES) {
        return Vec::new();
    }
    settings.insert("url".to_owned(), Value::String(format!("{}{path}", api.url())));
    let headers = settings.entry("headers").or_insert_with(|| json!({}));
    if let Value::Object(headers) = headers {
        headers.insert("Authorization".to_owned(), format!("Bearer {}", api.token()).into());
    }
    vec!["url".to_owned(), "headers.Authorization".to_owned()]
}

/// `b24act fake`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FakeArgs {
    /// Which fake to run.
    #[arg(value_enum)]
    pub name: FakeName,
    /// The address to listen on (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// `b24act fake NAME`: runs the fake until `stop` completes, after printing where it is and
/// the connector settings that reach it.
pub async fn run_alone(
    args: &FakeArgs,
    out: &mut impl std::io::Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let fake = Fake::start(args.name, args.listen).await?;
    writeln!(out, "{}", fake.title())?;
    writeln!(out, "  an [actions.connector] table that reaches it:")?;
    for line in fake.settings_toml() {
        writeln!(out, "    {line}")?;
    }
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()?;
    stop.await;
    drop(fake);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(kind: &str, settings: Value) -> ConnectorConfig {
        let Value::Object(settings) = settings else { panic!("an object") };
        ConnectorConfig { kind: kind.to_owned(), settings }
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn a_credit_check_keeps_its_path_and_gets_the_fakes_origin_and_token() {
        let fake = Fake::start(FakeName::Finance, loopback()).await.unwrap();
        let Fake::Finance(api) = &fake else { unreachable!() };
        let mut check = connector(
            "credit_limit",
            json!({"url": "https://finance.example.com/api/v1/companies/{{properties.id}}/credit",
                   "auth": {"basic": {"username": "u", "password": "p"}}}),
        );
        assert_eq!(fake.point(&mut check), ["url", "auth"]);
        assert_eq!(
            check.settings["url"],
            format!("{}/api/v1/companies/{{{{properties.id}}}}/credit", api.url())
        );
        assert_eq!(check.settings["auth"], json!({"bearer": api.token()}));

        let mut asks = connector(
            "http",
            json!({"url": "https://erp.example.com/api/v1/companies/{{properties.id}}/credit?x=1"}),
        );
        assert_eq!(fake.point(&mut asks), ["url", "headers.Authorization"]);
        assert_eq!(
            asks.settings["url"],
            format!("{}/api/v1/companies/{{{{properties.id}}}}/credit?x=1", api.url())
        );
        let mut other = connector("http", json!({"url": "https://erp.example.com/orders"}));
        assert!(fake.point(&mut other).is_empty());
        let mut onec = connector("onec", json!({"url": "https://1c.example.com/trade"}));
        assert!(fake.point(&mut onec).is_empty());
    }

    #[tokio::test]
    async fn a_chat_given_by_a_placeholder_is_kept() {
        let fake = Fake::start(FakeName::Telegram, loopback()).await.unwrap();
        let mut fixed = connector("telegram", json!({"chat_id": "@sales", "bot_token": "x"}));
        assert_eq!(fake.point(&mut fixed), ["base_url", "bot_token", "chat_id"]);
        assert_eq!(fixed.settings["chat_id"], telegram::DEFAULT_CHAT_ID);
        let mut templated = connector("telegram", json!({"chat_id": "{{properties.chat}}"}));
        assert_eq!(fake.point(&mut templated), ["base_url", "bot_token"]);
        assert_eq!(templated.settings["chat_id"], "{{properties.chat}}");
    }

    #[tokio::test]
    async fn what_fake_prints_is_what_dev_sets() {
        let fake = Fake::start(FakeName::Onec, loopback()).await.unwrap();
        let Fake::Onec(onec) = &fake else { unreachable!() };
        let printed = fake.settings_toml().join("\n");
        let table: toml::Table = printed.parse().unwrap();
        assert_eq!(table["url"].as_str(), Some(onec.base_url().as_str()));
        let mut pointed = connector("onec", json!({"url": "https://1c.example.com/trade"}));
        fake.point(&mut pointed);
        assert_eq!(pointed.settings["password"], onec::PASSWORD);
        assert_eq!(table["password"].as_str(), Some(onec::PASSWORD));
    }
}
