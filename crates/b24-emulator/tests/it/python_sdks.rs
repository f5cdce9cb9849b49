//! Bitrix24's official Python SDK (b24pysdk) and fast_bitrix24, installed from PyPI at the
//! versions pinned in `tests/python/requirements.txt`, run unmodified against a TLS portal
//! (`tests/python/sdks.py`): `app.info`, `bizproc.workflow.start` of the credit-approval
//! template, `bizproc.task.list` until the CFO's task is there, a `batch` beside the same calls
//! one by one, paging through `crm.deal.list`, and starting a template that does not exist.
//! They trust the emulator's authority only through the standard variables
//! (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`).
//!
//! The interpreter is `B24ACT_TEST_PYTHON` (`scripts/python-sdks.sh` makes it; `.ci/run` sets
//! it). Without it the test says it skips, except under `CI`, where it fails.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use b24_emulator::templates::credit_approval;
use b24_emulator::{DocumentSpec, PortalSpec, ProcessStatus};
use serde_json::{Value, json};

use crate::handler::{Handler, credit_check, register_credit_check};
use crate::support::{World, get_json};

/// How long the script may take (two SDKs' imports and some forty requests; seconds normally).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The deals besides the one the workflows run on: 61 in all, so listing them takes two pages.
const MORE_DEALS: usize = 60;

/// The interpreter to run, or `None` (said on stderr) when none is configured outside CI.
fn python() -> Option<String> {
    if let Ok(python) = std::env::var("B24ACT_TEST_PYTHON") {
        return Some(python);
    }
    let under_ci = std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false");
    assert!(
        !under_ci,
        "CI must run the Python SDK test, but B24ACT_TEST_PYTHON is not set (.ci/run sets it from scripts/python-sdks.sh)"
    );
    eprintln!("skipped: B24ACT_TEST_PYTHON not set (.ci/run sets it)");
    None
}

/// The pinned versions of `requirements.txt`, by lower-case package name.
fn pinned(package: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt");
    let requirements = std::fs::read_to_string(path).unwrap();
    requirements
        .lines()
        .filter_map(|line| line.split_once("=="))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(package))
        .map(|(_, version)| version.trim().to_owned())
        .unwrap_or_else(|| panic!("{package} is not pinned"))
}

/// Runs `command` to its end or until `within` passes (then kills it): its exit status (`None`
/// when killed), stdout and stderr.
fn run_bounded(mut command: Command, within: Duration) -> (Option<ExitStatus>, String, String) {
    let program = command.get_program().to_owned();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// A list of IDs as strings.
fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

fn deal(w: &World, title: &str, amount: f64) -> Vec<String> {
    let mut fields = serde_json::Map::new();
    fields.insert("TITLE".into(), json!(title));
    fields.insert("COMPANY_ID".into(), json!(1001));
    fields.insert("OPPORTUNITY".into(), json!(amount));
    let spec = DocumentSpec { fields, ..Default::default() };
    w.emu.create_document(&w.portal.domain, spec).unwrap().document_id
}

#[tokio::test]
async fn the_python_sdks_run_unmodified_against_a_tls_portal() {
    let Some(python) = python() else {
        return;
    };
    let w = World::with_spec(PortalSpec { tls: true, unlimited: true, ..Default::default() }).await;
    let domain = w.portal.domain.clone();
    let handler = Handler::start(w.http.clone(), credit_check).await;
    register_credit_check(&w, &handler).await;
    // Over the credit check's limit of 5000: the workflow goes on to the CFO's task.
    let document_id = deal(&w, "Shipment 17", 9000.0);
    for n in 0..MORE_DEALS {
        deal(&w, &format!("Deal {n}"), 100.0);
    }
    let template = w.emu.create_template(&domain, credit_approval("check_credit")).unwrap();
    let webhook = w.emu.create_webhook(&domain, 1, "bizproc,crm").unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdks.py");
    let ca_file = w.portal.ca_file.clone().unwrap();
    let mut command = Command::new(&python);
    command
        .arg(script)
        .env("B24_DOMAIN", &domain)
        .env("B24_CLIENT_ENDPOINT", &w.portal.client_endpoint)
        .env("B24_WEBHOOK", &webhook)
        .env("B24_CLIENT_ID", &w.app.client_id)
        .env("B24_CLIENT_SECRET", &w.app.client_secret)
        .env("B24_ACCESS_TOKEN", &w.inst.access_token)
        .env("B24_TEMPLATE_ID", template.id.to_string())
        .env("B24_DOCUMENT_ID", json!(document_id).to_string())
        // Trust exactly the emulator's authority, through each library's standard variable.
        .env("REQUESTS_CA_BUNDLE", &ca_file)
        .env("SSL_CERT_FILE", &ca_file)
        .env_remove("SSL_CERT_DIR")
        .env_remove("CURL_CA_BUNDLE")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null());
    // The script waits on a blocking thread; the emulator and the handler go on in this runtime.
    let (status, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_bounded(command, SCRIPT_TIMEOUT)).await.unwrap();
    let status = status.unwrap_or_else(|| panic!("over {SCRIPT_TIMEOUT:?}; stderr:\n{stderr}"));
    assert!(status.success(), "the script failed ({status}):\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    let (_, workflows) =
        get_json(&w.http, &format!("{}/control/portals/{domain}/workflows", w.emu.control_url()))
            .await;
    let tasks = w.emu.open_tasks(&domain).unwrap();
    let title = "Approve shipment: Shipment 17";
    let all_deals: Vec<String> = w
        .emu
        .documents(&domain)
        .unwrap()
        .into_iter()
        .map(|d| d.document_id[2].trim_start_matches("DEAL_").to_owned())
        .collect();
    assert_eq!(all_deals.len(), MORE_DEALS + 1);

    // app.info as the app and as the webhook: b24pysdk parsed it into its typed schema (ints,
    // bools, the status enum), fast_bitrix24 hands over the portal's answer as it came.
    assert_eq!(
        report["b24pysdk"]["app_info"],
        json!({"id": w.app.id, "code": w.app.client_id, "version": 1, "status": "L",
               "installed": true, "license": "en_project", "language_id": "en"})
    );
    assert_eq!(
        report["b24pysdk"]["webhook_app_info"],
        json!({"scope": ["bizproc", "crm"], "license": "en_project"})
    );
    let info = &report["fast_bitrix24"]["app_info"];
    assert_eq!(
        (&info["ID"], &info["CODE"], &info["INSTALLED"], &info["SCOPE"]),
        (
            &json!(w.app.id.to_string()),
            &json!(w.app.client_id),
            &json!(true),
            &json!(["bizproc", "crm"])
        )
    );
    assert_eq!(
        report["fast_bitrix24"]["webhook_app_info"],
        json!({"SCOPE": ["bizproc", "crm"], "LICENSE": "en_project"})
    );

    for sdk in ["b24pysdk", "fast_bitrix24"] {
        let r = &report[sdk];
        assert_eq!(r["version"], json!(pinned(sdk)), "{sdk}");

        // The workflow it started is the emulator's, on the deal, waiting for the CFO.
        let workflow_id = r["workflow_id"].as_str().unwrap_or_else(|| panic!("{sdk}: {r}"));
        let workflow = workflows
            .as_array()
            .unwrap()
            .iter()
            .find(|wf| wf["workflow_id"] == json!(workflow_id))
            .unwrap_or_else(|| panic!("{sdk}'s workflow {workflow_id} is not in {workflows}"));
        assert_eq!(workflow["template_id"], json!(template.id));
        assert_eq!(workflow["document_id"], json!(document_id));
        assert_eq!(workflow["process_status"], json!(ProcessStatus::WaitingForTask));

        // bizproc.task.list answered the CFO's task of that workflow.
        let task = tasks.iter().find(|t| t.workflow_id == workflow_id).unwrap();
        assert_eq!(
            r["tasks"],
            json!([{"ID": task.task_id.to_string(), "WORKFLOW_ID": workflow_id, "NAME": title,
                    "USER_ID": "7", "STATUS": "0", "DOCUMENT_ID": document_id[2]}]),
            "{sdk}"
        );

        // The batch answered what the same calls answer one by one, with real values.
        let batch = &r["batch"];
        assert_eq!(batch["result"], r["single"], "{sdk}");
        assert_eq!(batch["result"]["deal"]["TITLE"], json!("Shipment 17"), "{sdk}");
        assert_eq!(batch["result"]["tasks"], r["tasks"], "{sdk}");
        assert_eq!(batch["result"]["profile"]["ID"], json!("1"), "{sdk}");
        assert_eq!(batch["result"]["scope"], json!(["bizproc", "crm"]), "{sdk}");
        assert_eq!(batch["result_error"], json!([]), "{sdk}");
        assert_eq!(batch["result_total"], json!({"tasks": 1}), "{sdk}");
        assert_eq!(batch["result_next"], json!([]), "{sdk}");
        assert_eq!(batch["result_time"], json!(["deal", "profile", "scope", "tasks"]), "{sdk}");

        // Every deal, once, through the SDK's own use of `next` and `total`.
        let mut listed = ids(&r["deal_ids"]);
        listed.sort_by_key(|id| id.parse::<u64>().unwrap());
        assert_eq!(listed, all_deals, "{sdk}");
    }
    assert_eq!(report["b24pysdk"]["tasks_total"], json!(1));
    // Uncounted, in ID order: `start=-1` and `>ID` the last one seen (§5.2).
    assert_eq!(ids(&report["b24pysdk"]["deal_ids_uncounted"]), all_deals);

    // A template that does not exist: the SDK raises the portal's error; fast_bitrix24 sent the
    // call as a batch command, so it comes back in `result_error` under its command key.
    let missing =
        json!({"error": "ERROR_WRONG_WORKFLOW_ID", "error_description": "Template not found"});
    let mut raised = missing.clone();
    raised["class"] = json!("BitrixAPIBadRequest");
    raised["status"] = json!(400);
    assert_eq!(report["b24pysdk"]["missing_template"], raised);
    assert_eq!(report["fast_bitrix24"]["missing_template"], json!({"order0000000000": missing}));
    assert_eq!(tasks.len(), 2, "one CFO task per SDK's workflow: {tasks:?}");
    assert_eq!(handler.calls().len(), 2);

    // b24pysdk called as the app with the token; fast_bitrix24 through the webhook, sending even
    // one call as a batch command.
    let starts: Vec<(bool, String)> = w
        .emu
        .rest_calls(&domain)
        .into_iter()
        .filter(|c| c.method == "bizproc.workflow.start" && c.status == 200)
        .map(|c| (c.in_batch, c.caller))
        .collect();
    assert_eq!(
        starts,
        [(false, format!("app:{}", w.app.client_id)), (true, "webhook:1".to_owned())]
    );
}
