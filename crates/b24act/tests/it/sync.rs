//! `b24act sync` as an operator runs it, the real binary against the emulator, on SQLite and
//! PostgreSQL: after a configuration change (one action removed, one changed, one added) a dry
//! run prints the plan and changes nothing; a sync applies it; a second one finds everything
//! unchanged; `keep_removed_actions` keeps a removed action; a `serve` restart deletes one; a
//! portal that fails makes the exit code 1 and is named.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use b24_emulator::{Faults, ServerErrorBurst};
use serde_json::Value;
use store::testing::ScratchStore;
use store::{Store, StoreKey, StoreOptions};

use crate::support::{CLIENT_ID, CODE, KEY, NOTIFY_CODE, Options, ServeSite, Server};

store::on_both_stores!(store::testing::with_scratch_store =>
    sync_plans_applies_and_deletes_what_the_configuration_removed,
);

/// An action the changed configuration adds.
const ADDED: &str = "ask_finance";
/// Where the test configuration's last action, [`NOTIFY_CODE`], begins.
const NOTIFY_TABLE: &str = "\n[[actions]]\ncode = \"tell_finance\"";
const NAME: &str = "name = { en = \"Check credit\" }";
const RENAMED: &str = "name = { en = \"Check credit v2\" }";

/// Runs `b24act sync ARGS --config FILE`; returns (exit code, stdout, stderr). Waited for off
/// the runtime's threads, which serve the emulator the command talks to.
async fn sync(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_b24act"));
    command.arg("sync").args(args).arg("--config").arg(config).env_remove("RUST_LOG");
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The test configuration without [`NOTIFY_CODE`], `check_credit` renamed and, when `added`,
/// [`ADDED`] (a copy of the removed action under another code).
fn changed(original: &str, added: bool) -> String {
    let (rest, notify) = original.split_once(NOTIFY_TABLE).expect("the notify action is last");
    assert!(rest.contains(NAME), "the credit check's name is in the configuration");
    let mut text = rest.replacen(NAME, RENAMED, 1);
    if added {
        text.push_str(&format!("\n[[actions]]\ncode = \"{ADDED}\"{notify}"));
    }
    text
}

/// The portal's registrations: code → (kind, English name).
fn registered(site: &ServeSite) -> BTreeMap<String, (bool, String)> {
    let registrations = site.sandbox.emulator.registrations(&site.sandbox.domain).unwrap();
    registrations
        .into_iter()
        .map(|r| (r.code, (r.is_robot, r.name["EN"].as_str().unwrap_or_default().to_owned())))
        .collect()
}

/// How many registration changes the portal was asked for.
fn changes_asked(site: &ServeSite) -> usize {
    let calls = site.sandbox.emulator.rest_calls(&site.sandbox.domain);
    let changing = ["bizproc.activity.add", "bizproc.activity.update", "bizproc.activity.delete"];
    calls.iter().filter(|call| changing.contains(&call.method.as_str())).count()
}

async fn wait_until<F: Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn sync_plans_applies_and_deletes_what_the_configuration_removed(store: ScratchStore) {
    let options = Options { store_url: Some(store.url.clone()), ..Options::default() };
    let site = ServeSite::new("b24act-sync", 3, &options).await;
    let member_id = site.sandbox.emulator.portal(&site.sandbox.domain).unwrap().member_id;
    let server = Server::start(&site.config);
    site.sandbox.install(CLIENT_ID, &[CODE, NOTIFY_CODE], Duration::from_secs(10)).await.unwrap();
    let key = StoreKey::from_hex(KEY).unwrap();
    let db = Store::open(&site.store_url, StoreOptions::new(key)).await.unwrap();
    wait_until("the install's registrations are recorded", || async {
        db.registrations(&member_id).await.unwrap().is_some()
    })
    .await;
    server.kill();
    let before = registered(&site);
    assert_eq!(before.keys().collect::<Vec<_>>(), [CODE, NOTIFY_CODE]);
    assert_eq!(db.action_registrations(&member_id).await.unwrap().len(), 2);

    // One action removed, one changed, one added: the plan, and nothing changes.
    let config = site.dir.path().join("changed.toml");
    std::fs::write(&config, changed(&site.config_text, true)).unwrap();
    let asked = changes_asked(&site);
    let (code, plan, stderr) = sync(&config, &["--dry-run"]).await;
    assert_eq!(code, 0, "{plan}{stderr}");
    let header = format!("portal {} (member_id {member_id})", site.sandbox.domain);
    assert!(plan.starts_with(&format!("{header}\n")), "{plan}");
    let expected = [
        "  delete tell_finance (activity; removed from the configuration)",
        "  update check_credit (activity)",
        "  add ask_finance (activity)",
        "  dry run: 3 change(s), nothing applied",
    ];
    assert_eq!(plan.lines().skip(1).collect::<Vec<_>>(), expected, "{plan}");
    assert_eq!(registered(&site), before, "a dry run changes nothing");
    assert_eq!(changes_asked(&site), asked, "a dry run asks the portal for no change");

    let (code, json, stderr) = sync(&config, &["--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((json["version"].as_u64(), &json["dry_run"]), (Some(1), &Value::Bool(true)));
    let steps: Vec<(&str, &str)> = json["portals"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["change"].as_str().unwrap(), s["code"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("delete", NOTIFY_CODE), ("update", CODE), ("add", ADDED)]);
    assert_eq!(json["portals"][0]["member_id"], member_id.as_str());

    // Applied: the portal has what the configuration says.
    let (code, applied, stderr) = sync(&config, &[]).await;
    assert_eq!(code, 0, "{applied}{stderr}");
    for line in ["done: delete tell_finance", "done: update check_credit", "done: add ask_finance"]
    {
        assert!(applied.contains(line), "{line}:\n{applied}");
    }
    let after = registered(&site);
    assert_eq!(after.keys().collect::<Vec<_>>(), [ADDED, CODE]);
    assert_eq!(after[CODE].1, "Check credit v2", "the changed action was updated");

    // Again: nothing to do, and nothing asked of the portal.
    let asked = changes_asked(&site);
    let (code, again, stderr) = sync(&config, &[]).await;
    assert_eq!(code, 0, "{again}{stderr}");
    let expected = [
        header.as_str(),
        "  unchanged check_credit (activity)",
        "  unchanged ask_finance (activity)",
        "  nothing to change",
    ];
    assert_eq!(again.lines().collect::<Vec<_>>(), expected, "{again}");
    assert_eq!(changes_asked(&site), asked);

    // Removed, but kept by the switch.
    let keep = site.dir.path().join("keep.toml");
    let keeping = changed(&site.config_text, false).replacen(
        "[app]\n",
        "[app]\nkeep_removed_actions = true\n",
        1,
    );
    std::fs::write(&keep, keeping).unwrap();
    let (code, kept, stderr) = sync(&keep, &[]).await;
    assert_eq!(code, 0, "{kept}{stderr}");
    assert!(
        kept.contains(
            "  keep ask_finance (activity; removed from the configuration; kept by \
             app.keep_removed_actions)"
        ),
        "{kept}"
    );
    assert!(kept.contains("nothing to change"), "{kept}");
    assert!(registered(&site).contains_key(ADDED), "kept on the portal");

    // A portal that fails is named, with its error, and the exit code says so.
    let portal_down = Faults {
        server_errors: Some(ServerErrorBurst { count: 1, status: 500 }),
        ..Faults::default()
    };
    site.sandbox.emulator.set_faults(&site.sandbox.domain, portal_down).unwrap();
    let (code, failed, stderr) = sync(&keep, &["--dry-run"]).await;
    assert_eq!(code, 1, "{failed}{stderr}");
    assert!(failed.contains(&format!("{header}\n  FAILED: cannot plan: ")), "{failed}");
    assert!(failed.contains("INTERNAL_SERVER_ERROR"), "the portal's error string: {failed}");
    assert!(stderr.contains(&format!("sync failed on 1 portal(s): {}", &header[7..])), "{stderr}");

    // `serve` with the action removed (and not kept) deletes it at start.
    std::fs::write(&site.config, changed(&site.config_text, false)).unwrap();
    let _server = Server::start(&site.config);
    let emulator = &site.sandbox.emulator;
    wait_until("serve deleted the removed action at start, and recorded it", || async {
        let registrations = emulator.registrations(&site.sandbox.domain).unwrap();
        let codes: Vec<&str> = registrations.iter().map(|r| r.code.as_str()).collect();
        codes == [CODE] && !db.action_registrations(&member_id).await.unwrap().contains_key(ADDED)
    })
    .await;
    db.close().await;
}
