//! `b24act demo --all-connectors`: a few workflows through each of the other built-in connectors,
//! each against its fake, with the emulator as the portal and the host in between; prints what
//! came back: `onec` (price and stock by SKU from a fake 1C over OData), `telegram` (a message
//! to a chat through a fake Bot API) and `sharepoint` (a document in a library through a fake
//! Microsoft Graph). The connector tables are public: the end-to-end tests run the same ones.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use b24_emulator::{WorkflowSpec, WorkflowStatus};
use fakes::faults::Failure;
use fakes::graph::{self, GraphApi};
use fakes::onec::{self, Fault, OneC};
use fakes::telegram::{self, BotApi};
use serde_json::{Value, json};

use host::config::RetryPolicy;
use sandbox::{ActionTable, AppIdentity, Deployment, TempDir, connector_table, set};

const CLIENT_ID: &str = "local.b24act.examples";
const CLIENT_SECRET: &str = "examples-secret";
/// One example's action: its code, inputs (all required) and return values, and what its
/// fallback's log line says before the reason. The end-to-end tests run the same inputs and
/// return values.
pub struct ExampleAction {
    pub code: &'static str,
    /// Each input property as `(id, type)`.
    pub properties: &'static [(&'static str, &'static str)],
    /// Each return property as `(id, type)`; `error` gets the fallback's reason.
    pub returns: &'static [(&'static str, &'static str)],
    /// What the fallback's log line says before the reason.
    pub failed: &'static str,
}

/// The `onec` example's action: price and stock by SKU.
pub const ONEC: ExampleAction = ExampleAction {
    code: "item_price_stock",
    properties: &[("sku", "string")],
    returns: &[
        ("name", "string"),
        ("price", "double"),
        ("available", "double"),
        ("in_stock", "bool"),
        ("error", "string"),
    ],
    failed: "1C lookup",
};
/// The `telegram` example's action: a message to the sales chat.
pub const TELEGRAM: ExampleAction = ExampleAction {
    code: "notify_sales",
    properties: &[("company_name", "string"), ("amount", "double")],
    returns: &[("message_id", "int"), ("error", "string")],
    failed: "Telegram message not sent",
};
/// The `sharepoint` example's action: a document in a library.
pub const SHAREPOINT: ExampleAction = ExampleAction {
    code: "archive_check",
    properties: &[("company_name", "string"), ("amount", "double")],
    returns: &[("document_id", "string"), ("document_url", "string"), ("error", "string")],
    failed: "SharePoint document not created",
};
/// The examples' fallback values: the reason in `error`.
pub const FALLBACK_VALUES: &str = r#"{ error = "{reason}" }"#;
/// How long one example workflow may take before it counts as hung.
const WITHIN: Duration = Duration::from_secs(20);

/// One connector's example: what was asked and what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The connector kind, e.g. `onec`.
    pub connector: String,
    pub runs: Vec<ExampleRun>,
}

/// One workflow of an example.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleRun {
    /// What the workflow asked, e.g. `sku = SKU-1`.
    pub input: String,
    /// What the fake was made to do first, if anything.
    pub fault: Option<String>,
    /// The activity closed (by the result or the fallback) within [`WITHIN`].
    pub closed: bool,
    /// The return values, as the workflow got them.
    pub values: Value,
    /// The workflow's log lines.
    pub log: Vec<String>,
    /// What the run should have returned: `(return property, expectation)`.
    pub expected: Expected,
}

/// A run's expectations: `(return property, what it should be)`.
type Expected = Vec<(&'static str, Want)>;

/// What one return value should be.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// This value: numbers compare as numbers (`12500` is `12500.0`), the rest as text.
    Is(&'static str),
    /// Text containing this.
    Contains(&'static str),
    /// Any value but an empty one.
    Present,
    /// No value.
    Absent,
}

impl Want {
    fn accepts(&self, got: Option<&Value>) -> bool {
        let text = got.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        let text = text.filter(|t| !t.is_empty() && t != "null");
        match (self, text) {
            (Want::Absent, text) => text.is_none(),
            (_, None) => false,
            (Want::Present, Some(_)) => true,
            (Want::Contains(part), Some(text)) => text.contains(part),
            (Want::Is(want), Some(text)) => match (want.parse::<f64>(), text.parse::<f64>()) {
                (Ok(want), Ok(got)) => want == got,
                _ => text == *want,
            },
        }
    }
}

impl ExampleRun {
    /// The return values that are not what [`ExampleRun::expected`] says.
    fn unexpected(&self) -> Vec<String> {
        self.expected
            .iter()
            .filter(|(key, want)| !want.accepts(self.values.get(*key)))
            .map(|(key, want)| {
                format!(
                    "{key} = {} (expected {want:?})",
                    self.values.get(*key).unwrap_or(&Value::Null)
                )
            })
            .collect()
    }
}

impl Example {
    /// Why the example counts as failed, if it does: a workflow that hung, or one that returned
    /// other values than its case expects.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let hung = self.runs.iter().filter(|r| !r.closed).count();
        if hung > 0 {
            problems.push(format!("{hung} `{}` example workflow(s) hung", self.connector));
        }
        for run in self.runs.iter().filter(|r| r.closed) {
            for unexpected in run.unexpected() {
                problems.push(format!("`{}` {}: returned {unexpected}", self.connector, run.input));
            }
        }
        problems
    }

    fn render(&self) -> String {
        let mut text = format!("\n`{}` example\n", self.connector);
        for run in &self.runs {
            let fault = run.fault.as_deref().map(|f| format!(" (first: {f})")).unwrap_or_default();
            let _ = writeln!(text, "  {}{fault}", run.input);
            if !run.closed {
                let _ = writeln!(text, "    HUNG: still waiting after {WITHIN:?}");
                continue;
            }
            let _ = writeln!(text, "    returned {}", run.values);
            for unexpected in run.unexpected() {
                let _ = writeln!(text, "    UNEXPECTED: {unexpected}");
            }
            for line in &run.log {
                let _ = writeln!(text, "    log: {line}");
            }
        }
        text
    }
}

/// Runs every example, printing each as it finishes.
pub async fn run(_seed: u64, out: &mut impl std::io::Write) -> anyhow::Result<Vec<Example>> {
    let mut examples = Vec::new();
    for (name, example) in [
        ("onec", onec_example().await),
        ("telegram", telegram_example().await),
        ("sharepoint", sharepoint_example().await),
    ] {
        let example = example.with_context(|| format!("the `{name}` example"))?;
        write!(out, "{}", example.render())?;
        out.flush()?;
        examples.push(example);
    }
    Ok(examples)
}

/// Price and stock by SKU from a fake 1C: found, out of stock, no price, unknown, and 1C
/// unavailable for the first two attempts.
async fn onec_example() -> anyhow::Result<Example> {
    let onec = OneC::start().await.context("starting the fake 1C")?;
    let (deployment, _temp) = deploy(&ONEC, &onec_connector(&onec.base_url())).await?;
    let desk = [
        ("name", Want::Is("Стол письменный «Альфа»")),
        ("price", Want::Is("12500")),
        ("available", Want::Is("12")),
        ("in_stock", Want::Is("Y")),
        ("error", Want::Absent),
    ];
    let cases: [(&str, Option<Fault>, Expected); 5] = [
        ("SKU-1", None, desk.to_vec()),
        (
            "SKU-2",
            None,
            vec![
                ("price", Want::Is("8990")),
                ("available", Want::Is("0")),
                ("in_stock", Want::Is("N")),
            ],
        ),
        (
            "SKU-3",
            None,
            vec![
                ("name", Want::Is("Шкаф-купе «Гамма»")),
                ("price", Want::Is("0")),
                ("in_stock", Want::Is("N")),
            ],
        ),
        ("SKU-404", None, vec![("error", Want::Contains("no item where")), ("name", Want::Absent)]),
        ("SKU-1", Some(Fault::Unavailable), desk.to_vec()),
    ];
    let mut runs = Vec::new();
    for (sku, fault, expected) in cases {
        let described = fault.as_ref().map(|f| format!("1C {f:?} twice"));
        if let Some(fault) = fault {
            onec.fail_next_n(2, fault);
        }
        let mut run = run_one(&deployment, ONEC.code, json!({ "sku": sku }), described).await?;
        run.expected = expected;
        runs.push(run);
    }
    deployment.running.shutdown().await;
    Ok(Example { connector: "onec".into(), runs })
}

/// A message to the sales chat through a fake Bot API: posted, posted after a `429` with
/// `retry_after`, and refused for a revoked bot token; each run also shows the text the chat got.
async fn telegram_example() -> anyhow::Result<Example> {
    let bot = BotApi::start().await.context("starting the fake Telegram Bot API")?;
    let (deployment, _temp) = deploy(&TELEGRAM, &telegram_connector(&bot)).await?;
    let cases = [
        (
            "ООО \"Ромашка\"",
            1500.5,
            None,
            vec![("message_id", Want::Is("1")), ("error", Want::Absent)],
        ),
        (
            "snake_case & Co.",
            42.0,
            Some("429 with retry_after 1"),
            vec![("message_id", Want::Is("2")), ("error", Want::Absent)],
        ),
        (
            "АО Лютик",
            7.0,
            Some("a revoked bot token"),
            vec![("message_id", Want::Absent), ("error", Want::Contains("refused the bot token"))],
        ),
    ];
    let mut runs = Vec::new();
    for (company, amount, fault, expected) in cases {
        match fault {
            Some("429 with retry_after 1") => {
                bot.update(|b| b.fail_next.push_back(Failure::RateLimited(Duration::from_secs(1))))
                    .await;
            }
            Some(_) => bot.set_token("7000000001:AAHreissuedToken"),
            None => {}
        }
        let properties = json!({ "company_name": company, "amount": amount });
        let mut run =
            run_one(&deployment, TELEGRAM.code, properties, fault.map(str::to_owned)).await?;
        run.expected = expected;
        if let Some(message) = bot.sent().last().filter(|_| run.values.get("message_id").is_some())
        {
            run.log.push(format!("the chat shows: {:?}", message.text));
        }
        runs.push(run);
    }
    deployment.running.shutdown().await;
    Ok(Example { connector: "telegram".into(), runs })
}

/// A credit-check note in a SharePoint library through a fake Graph: created, created after a
/// `503` with `Retry-After`, and refused for a wrong client secret; each run also shows the
/// file the library got.
async fn sharepoint_example() -> anyhow::Result<Example> {
    let graph = GraphApi::start().await.context("starting the fake Microsoft Graph")?;
    let (deployment, _temp) = deploy(&SHAREPOINT, &sharepoint_connector(&graph)).await?;
    let created = |file: &'static str| {
        vec![
            ("document_id", Want::Present),
            ("document_url", Want::Contains(file)),
            ("error", Want::Absent),
        ]
    };
    let cases = [
        ("Ромашка", 1500.5, "DEAL_1", None, created("credit-check-DEAL_1.md")),
        (
            "Лютик",
            42.0,
            "DEAL_2",
            Some("Graph 503 with Retry-After 1"),
            created("credit-check-DEAL_2.md"),
        ),
        (
            "Василёк",
            7.0,
            "DEAL_3",
            Some("a wrong client secret"),
            vec![("document_id", Want::Absent), ("error", Want::Contains("client"))],
        ),
    ];
    let mut runs = Vec::new();
    for (company, amount, deal, fault, expected) in cases {
        match fault {
            Some("Graph 503 with Retry-After 1") => {
                let failure = Failure::RetryAfter(503, Duration::from_secs(1));
                graph.update(|b| b.fail_next.push_back(failure)).await;
            }
            Some(_) => {
                graph.set_client_secret("a-rotated-secret");
                graph.expire_tokens();
            }
            None => {}
        }
        let properties = json!({ "company_name": company, "amount": amount });
        let spec = WorkflowSpec {
            document_id: Some(vec!["crm".into(), "CCrmDocumentDeal".into(), deal.into()]),
            ..workflow(&deployment, SHAREPOINT.code, properties)
        };
        let mut run = run_spec(&deployment, spec, fault.map(str::to_owned)).await?;
        run.expected = expected;
        let path = format!("Approvals/{deal}/credit-check-{deal}.md");
        if let Some(bytes) = graph.file(&path).filter(|_| run.values.get("document_id").is_some()) {
            run.log.push(format!("the library has {path}: {:?}", String::from_utf8_lossy(&bytes)));
        }
        runs.push(run);
    }
    deployment.running.shutdown().await;
    Ok(Example { connector: "sharepoint".into(), runs })
}

/// The emulator, and the host on a temp SQLite file running `action` around `connector` with
/// short retries and a fallback that puts the reason in `error` and the log, installed.
async fn deploy(action: &ExampleAction, connector: &str) -> anyhow::Result<(Deployment, TempDir)> {
    let table = ActionTable {
        code: action.code,
        name: action.code,
        properties: action.properties,
        returns: action.returns,
        connector,
        retry: RetryPolicy {
            max_wait: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(2),
            ..RetryPolicy::default()
        },
        fallback_log: &format!("{}: {{reason}}", action.failed),
        fallback_values: FALLBACK_VALUES,
    };
    let app = AppIdentity::new(CLIENT_ID, CLIENT_SECRET);
    let lease = Duration::from_secs(10);
    Deployment::one_action("b24act-examples", &app, action.code, table.to_toml(), lease).await
}

/// A single-activity workflow running `code` with `properties`.
fn workflow(deployment: &Deployment, code: &str, properties: Value) -> WorkflowSpec {
    WorkflowSpec {
        domain: deployment.domain().to_owned(),
        code: code.into(),
        properties,
        finish_after: None,
        ..WorkflowSpec::default()
    }
}

/// Starts one single-activity workflow and waits for it to close.
async fn run_one(
    deployment: &Deployment,
    code: &str,
    properties: Value,
    fault: Option<String>,
) -> anyhow::Result<ExampleRun> {
    run_spec(deployment, workflow(deployment, code, properties), fault).await
}

/// Starts `spec` and waits for it to close.
async fn run_spec(
    deployment: &Deployment,
    spec: WorkflowSpec,
    fault: Option<String>,
) -> anyhow::Result<ExampleRun> {
    let input = spec
        .properties
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k} = {}", v.as_str().map_or(v.to_string(), str::to_owned)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let emulator = deployment.emulator();
    let id = emulator.start_workflow(spec).await?.workflow_id;
    let deadline = Instant::now() + WITHIN;
    let state = loop {
        let state = emulator.workflow(deployment.domain(), &id)?;
        if state.status != WorkflowStatus::Waiting || Instant::now() >= deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(ExampleRun {
        input,
        fault,
        closed: state.status == WorkflowStatus::Closed,
        values: state.return_values,
        log: state.log,
        expected: Vec::new(),
    })
}

/// The fixed part of docs/connectors.md's `onec` table: the item by SKU, its retail price (the
/// price register's condition names the price kind) and its stock, and what comes back.
const ONEC_MAPPING: &str = r#"
[item]
entity = "Catalog_Номенклатура"
filter = { "Артикул" = "sku" }

[registers.price]
entity = "InformationRegister_ЦеныНоменклатуры/SliceLast"
key = "Номенклатура_Key"

[registers.stock]
entity = "AccumulationRegister_ТоварыНаСкладах/Balance"
key = "Номенклатура_Key"
dimensions = "Номенклатура"

[response]
name = "/item/Description"
price = { pointer = "/price/0/Цена", default = 0 }
available = { pointer = "/stock/0/ВНаличииBalance", default = 0 }

[flags]
in_stock = { pointer = "/stock/0/ВНаличииBalance", above = 0 }
"#;

/// docs/connectors.md's `onec` table against the fake 1C at `base_url`: price and stock by SKU.
pub fn onec_connector(base_url: &str) -> String {
    let mut settings = toml::Table::new();
    set(&mut settings, "url", base_url);
    set(&mut settings, "username", onec::USER);
    set(&mut settings, "password", onec::PASSWORD);
    settings
        .extend(ONEC_MAPPING.parse::<toml::Table>().unwrap_or_else(|e| unreachable!("TOML: {e}")));
    let condition = format!("ВидЦены_Key eq guid'{}'", onec::keys::RETAIL);
    set(&mut settings, "registers.price.condition", condition);
    connector_table("onec", settings)
}

/// The `telegram` module's example against the fake Bot API: a MarkdownV2 message about the
/// shipment request to the default chat.
pub fn telegram_connector(bot: &BotApi) -> String {
    let mut settings = toml::Table::new();
    set(&mut settings, "bot_token", telegram::DEFAULT_TOKEN);
    set(&mut settings, "base_url", bot.url());
    set(&mut settings, "chat_id", telegram::DEFAULT_CHAT_ID.to_string());
    set(&mut settings, "parse_mode", "MarkdownV2");
    let text = "*Shipment request {{document.id}}*\n\
                Company: {{properties.company_name}}\n\
                Amount: {{properties.amount}} RUB";
    set(&mut settings, "text", text);
    connector_table("telegram", settings)
}

/// The `sharepoint` module's example against the fake identity platform and Graph: a Markdown
/// note of the credit check in `Approvals/<deal>/`.
pub fn sharepoint_connector(graph: &GraphApi) -> String {
    let mut settings = toml::Table::new();
    for (key, value) in [
        ("tenant", graph::TENANT.to_owned()),
        ("client_id", graph::CLIENT_ID.to_owned()),
        ("client_secret", graph::DEFAULT_CLIENT_SECRET.to_owned()),
        ("authority", graph.identity_url()),
        ("graph_url", graph.graph_url()),
        ("site_id", graph::SITE_ID.to_owned()),
        ("drive_id", graph::DRIVE_ID.to_owned()),
        ("folder", "Approvals/{{document.id}}".to_owned()),
        ("file_name", "credit-check-{{document.id}}.md".to_owned()),
        ("format", "markdown".to_owned()),
    ] {
        set(&mut settings, key, value);
    }
    let content = "# Credit check for {{properties.company_name}}\n\n\
                   Amount: {{properties.amount}} RUB, requested in {{document.id}}.\n";
    set(&mut settings, "content", content);
    connector_table("sharepoint", settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(values: Value) -> Example {
        let run = ExampleRun {
            input: "sku = SKU-1".into(),
            fault: None,
            closed: true,
            values,
            log: Vec::new(),
            expected: vec![
                ("price", Want::Is("12500")),
                ("in_stock", Want::Is("Y")),
                ("name", Want::Contains("Альфа")),
                ("error", Want::Absent),
            ],
        };
        Example { connector: "onec".into(), runs: vec![run] }
    }

    #[test]
    fn a_run_that_returned_other_values_is_a_problem() {
        let right = json!({ "price": 12500.0, "in_stock": "Y", "name": "Стол «Альфа»" });
        assert_eq!(example(right).problems(), Vec::<String>::new());
        let wrong = json!({ "price": "0", "in_stock": "Y", "name": "Стол", "error": "1C down" });
        assert_eq!(
            example(wrong).problems(),
            [
                "`onec` sku = SKU-1: returned price = \"0\" (expected Is(\"12500\"))",
                "`onec` sku = SKU-1: returned name = \"Стол\" (expected Contains(\"Альфа\"))",
                "`onec` sku = SKU-1: returned error = \"1C down\" (expected Absent)",
            ]
        );
    }
}
