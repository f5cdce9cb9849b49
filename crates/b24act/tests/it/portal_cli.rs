//! `b24act portals list | show | remove` as an operator runs it: the real binary against the
//! store of a host whose portal installed the app the real way.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use store::{InstallationStatus, JobState};

use crate::support::{Options, TestApp};

/// Runs `b24act portals ARGS --config FILE`; returns (exit code, stdout, stderr).
fn portals(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_b24act"))
        .arg("portals")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_shows_and_removes_a_portal_without_seeing_a_secret() {
    let app = TestApp::start(Options { max_wait: "1h", ..Options::default() }).await;
    let member_id = app.emulator.portal(&app.domain).unwrap().member_id;
    let config = app._dir.path().join("b24act.toml");
    std::fs::write(&config, &app.config_text).unwrap();
    let stored = app.store().installation(&member_id).await.unwrap().unwrap();
    let secrets = [
        stored.portal.access_token.clone(),
        stored.portal.refresh_token.clone().unwrap(),
        stored.portal.application_token.clone(),
    ];
    let no_secret = |text: &str| {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret was printed:\n{text}");
        }
    };

    let (code, list, _) = portals(&config, &["list"]);
    assert_eq!(code, 0);
    assert!(list.contains(&member_id) && list.contains(&app.domain) && list.contains("active"));
    no_secret(&list);

    let (code, shown, _) = portals(&config, &["show", &member_id, "--json"]);
    assert_eq!(code, 0, "{shown}");
    no_secret(&shown);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["client_endpoint"], app.emulator.portal(&app.domain).unwrap().client_endpoint);
    assert_eq!(shown["has_refresh_token"], true);

    // A job waiting for the finance API when the portal is removed.
    app.api.set(fakes::finance::Behaviour {
        latency: Duration::from_secs(3600),
        ..fakes::finance::Behaviour::default()
    });
    app.start_workflow(4, 0).await;
    app.wait_for_jobs(JobState::Running, 1, Duration::from_secs(10)).await;

    let (code, removed, stderr) = portals(&config, &["remove", &member_id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(removed.contains("1 unfinished job(s) stopped"), "{removed}");
    let after = app.store().installation(&member_id).await.unwrap().unwrap();
    assert_eq!(after.status, InstallationStatus::Uninstalled);
    assert_eq!(after.portal.refresh_token, None, "its tokens are forgotten");
    let counts = app.store().portal_state_counts(&member_id).await.unwrap();
    assert_eq!(counts.get(JobState::Dead), 1, "its job is kept, stopped");

    let (code, _, stderr) = portals(&config, &["show", "no-such-portal"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no portal `no-such-portal`"), "{stderr}");
}
