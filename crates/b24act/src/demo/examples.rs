//! `b24act demo --all-connectors`: a few workflows through each of the other built-in connectors,
//! each against its fake, with the emulator as the portal and the host in between; prints what
//! came back. Today: `onec` (price and stock by SKU from a fake 1C over OData).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use b24_emulator::{PortalSpec, WorkflowSpec, WorkflowStatus};
use fakes::onec::{self, Fault, OneC};
use serde_json::{Value, json};

use crate::config::{RetryPolicy, WorkersConfig};
use crate::sandbox::{AppIdentity, Deployment, HostConfig, TempDir, retry_table, toml_escape};

const CLIENT_ID: &str = "local.b24act.examples";
const CLIENT_SECRET: &str = "examples-secret";
/// The `onec` example's action.
pub const ONEC_CODE: &str = "item_price_stock";
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
}

impl Example {
    /// Why the example counts as failed, if it does.
    pub fn problems(&self) -> Vec<String> {
        let hung = self.runs.iter().filter(|r| !r.closed).count();
        if hung == 0 {
            return Vec::new();
        }
        vec![format!("{hung} `{}` example workflow(s) hung", self.connector)]
    }

    fn render(&self) -> String {
        let mut text = format!("\n`{}` example\n", self.connector);
        for run in &self.runs {
            let fault =
                run.fault.as_deref().map(|f| format!(" (1C first: {f})")).unwrap_or_default();
            let _ = writeln!(text, "  {}{fault}", run.input);
            if !run.closed {
                let _ = writeln!(text, "    HUNG: still waiting after {WITHIN:?}");
                continue;
            }
            let _ = writeln!(text, "    returned {}", run.values);
            for line in &run.log {
                let _ = writeln!(text, "    log: {line}");
            }
        }
        text
    }
}

/// Runs every example, printing each as it finishes.
pub async fn run(seed: u64, out: &mut impl std::io::Write) -> anyhow::Result<Vec<Example>> {
    let onec = onec_example(seed).await.context("the `onec` example")?;
    write!(out, "{}", onec.render())?;
    out.flush()?;
    Ok(vec![onec])
}

/// Price and stock by SKU from a fake 1C: found, out of stock, no price, unknown, and 1C
/// unavailable for the first two attempts.
async fn onec_example(_seed: u64) -> anyhow::Result<Example> {
    let onec = OneC::start().await.context("starting the fake 1C")?;
    let temp = TempDir::new("b24act-examples").context("creating a temp dir")?;
    let store_url = format!("sqlite:{}", temp.path().join("examples.db").display());
    let app = AppIdentity::new(CLIENT_ID, CLIENT_SECRET);
    let deployment = Deployment::start(
        PortalSpec { unlimited: true, ..PortalSpec::default() },
        &app,
        &[ONEC_CODE],
        |listen| onec_config(&app, listen, &store_url, &onec.base_url()),
        &connectors::Registry::new(),
    )
    .await?;
    let cases: [(&str, Option<Fault>); 5] = [
        ("SKU-1", None),
        ("SKU-2", None),
        ("SKU-3", None),
        ("SKU-404", None),
        ("SKU-1", Some(Fault::Unavailable)),
    ];
    let mut runs = Vec::new();
    for (sku, fault) in cases {
        let described = fault.as_ref().map(|f| format!("{f:?} twice"));
        if let Some(fault) = fault {
            onec.fail_next_n(2, fault);
        }
        runs.push(run_one(&deployment, ONEC_CODE, json!({ "sku": sku }), described).await?);
    }
    deployment.running.shutdown().await;
    Ok(Example { connector: "onec".into(), runs })
}

/// Starts one single-activity workflow and waits for it to close.
async fn run_one(
    deployment: &Deployment,
    code: &str,
    properties: Value,
    fault: Option<String>,
) -> anyhow::Result<ExampleRun> {
    let input = properties
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k} = {}", v.as_str().map_or(v.to_string(), str::to_owned)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let spec = WorkflowSpec {
        domain: deployment.domain().to_owned(),
        code: code.into(),
        properties,
        finish_after: None,
        ..WorkflowSpec::default()
    };
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
    })
}

/// README's `onec` example against the fake: price and stock by SKU.
fn onec_config(app: &AppIdentity, listen: SocketAddr, store_url: &str, base_url: &str) -> String {
    let retry = RetryPolicy {
        max_wait: Duration::from_secs(10),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(500),
        attempt_timeout: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    let action = format!(
        r#"
[[actions]]
code = "{ONEC_CODE}"
name = "Цена и остаток товара (1С)"

[actions.properties.sku]
name = "SKU"
required = true

[actions.return_properties.name]
name = "Name"

[actions.return_properties.price]
name = "Price"
type = "double"

[actions.return_properties.available]
name = "Available"
type = "double"

[actions.return_properties.in_stock]
name = "In stock"
type = "bool"

[actions.return_properties.error]
name = "Error"

[actions.connector]
kind = "onec"
url = "{base_url}"
username = "{user}"
password = "{password}"

[actions.connector.item]
entity = "Catalog_Номенклатура"
filter = {{ "Артикул" = "sku" }}

[actions.connector.registers.price]
entity = "InformationRegister_ЦеныНоменклатуры/SliceLast"
key = "Номенклатура_Key"
condition = "ВидЦены_Key eq guid'{retail}'"

[actions.connector.registers.stock]
entity = "AccumulationRegister_ТоварыНаСкладах/Balance"
key = "Номенклатура_Key"
dimensions = "Номенклатура"

[actions.connector.response]
name = "/item/Description"
price = {{ pointer = "/price/0/Цена", default = 0 }}
available = {{ pointer = "/stock/0/ВНаличииBalance", default = 0 }}

[actions.connector.flags]
in_stock = {{ pointer = "/stock/0/ВНаличииBalance", above = 0 }}
{retry}
[actions.on_failure]
mode = "fallback"
log_message = "1C lookup failed: {{reason}}"
values = {{ error = "{{reason}}" }}
"#,
        user = toml_escape(onec::USER),
        password = toml_escape(onec::PASSWORD),
        retail = onec::keys::RETAIL,
        retry = retry_table(&retry),
    );
    HostConfig {
        workers: WorkersConfig { concurrency: 4, lease: Duration::from_secs(10) },
        actions: vec![action],
        ..HostConfig::new(app, listen, store_url)
    }
    .to_toml()
}
