//! `b24act demo`: in-process with a small configuration, asserting on the summary, and as the
//! real binary, asserting on what it prints and its exit code.

use std::process::Command;
use std::time::{Duration, Instant};

use b24act::demo::{self, DemoArgs};

use crate::support::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workflow_closes_once_with_a_result_or_the_fallback_through_failures_and_an_outage() {
    // 40 starts over 2 s; the API is down from 0.25 s to 1.75 s, longer than the max wait, so
    // the jobs that arrive early in the outage fall back and the later ones retry and succeed.
    let args = DemoArgs {
        workflows: 40,
        start_rate: 20.0,
        failure_rate: 0.2,
        outage: Duration::from_millis(1500),
        max_wait: Duration::from_secs(1),
        seed: 3,
        rate: 5.0,
        burst: 50,
        ..DemoArgs::default()
    };
    let started = Instant::now();
    let mut out = Vec::new();
    let summary = demo::run(args, &mut out).await.unwrap();
    let printed = String::from_utf8(out).unwrap();

    assert_eq!(summary.started, 40, "{printed}");
    assert_eq!(summary.hung, 0, "{printed}");
    assert_eq!(summary.with_result + summary.with_fallback, 40, "{printed}");
    assert!(summary.with_result > 0, "{printed}");
    assert!(summary.with_fallback > 0, "the outage is longer than the max wait: {printed}");
    assert_eq!(
        summary.fallback_reasons.iter().map(|(_, n)| n).sum::<usize>(),
        summary.with_fallback,
        "{printed}"
    );
    assert!(
        summary.fallback_reasons.iter().all(|(reason, _)| reason.starts_with("deadline: gave up")),
        "{printed}"
    );
    assert_eq!(summary.wrong, 0, "{printed}");
    assert_eq!((summary.jobs, summary.dead), (40, 0), "{printed}");
    assert_eq!((summary.event_sends, summary.duplicate_sends), (40, 0), "{printed}");
    assert!(summary.retries > 0, "failures were injected: {printed}");
    assert!(summary.api_failures > 0 && summary.api_requests > summary.api_failures);
    assert_eq!(summary.query_limit_exceeded, 0, "{printed}");
    assert!(summary.batches >= 1 && summary.batches < summary.rest_requests, "{printed}");
    assert_eq!(summary.latency.count, 40);
    assert!(summary.latency.p50 <= summary.latency.p99);
    assert!(summary.latency.p99 <= summary.latency.max);
    assert!(summary.latency_clean.count > 0 && summary.latency_clean.count < 40);
    assert!(summary.latency_clean.max <= summary.latency.max);
    assert!(summary.problems().is_empty());
    assert!(printed.contains("Summary") && printed.contains("finished with the fallback"));
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn the_binary_runs_the_demo_prints_the_summary_and_keeps_the_store_when_asked() {
    let dir = TempDir::new();
    let db = dir.0.join("kept.db");
    let output = Command::new(env!("CARGO_BIN_EXE_b24act"))
        .args(["demo", "--workflows", "30", "--start-rate", "30", "--failure-rate", "0.2"])
        .args(["--outage", "0.5", "--max-wait", "2", "--rate", "0", "--seed", "5"])
        .arg("--keep-db")
        .arg(&db)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{stderr}", output.status);
    let value_of = |label: &str| -> String {
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in:\n{stdout}"));
        line.trim_start()[label.len()..].trim().to_owned()
    };
    assert_eq!(value_of("workflows started"), "30");
    assert_eq!(value_of("hung (must be 0)"), "0");
    assert_eq!(value_of("wrong results (must be 0)"), "0");
    assert_eq!(value_of("QUERY_LIMIT_EXCEEDED (must be 0)"), "0");
    let results: usize = value_of("finished with a result").parse().unwrap();
    let fallbacks: usize = value_of("finished with the fallback").parse().unwrap();
    assert_eq!(results + fallbacks, 30, "{stdout}");
    assert!(
        value_of("results sent").starts_with("30 for 30 closed workflows; sent twice: 0"),
        "{stdout}"
    );
    assert!(value_of("call → result, all").starts_with("p50 "), "{stdout}");
    // Quiet by default: the demo's own lines on stdout, no logs on stderr.
    assert!(stderr.trim().is_empty(), "{stderr}");
    assert!(db.exists(), "--keep-db leaves the store at {}", db.display());
    let config = dir.0.join("kept.db.toml");
    assert!(stdout.contains(&format!("b24act jobs list --config {}", config.display())));
    let jobs = Command::new(env!("CARGO_BIN_EXE_b24act"))
        .args(["jobs", "list", "--json", "--limit", "100", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&jobs.stdout);
    assert!(jobs.status.success(), "{listed}\n{}", String::from_utf8_lossy(&jobs.stderr));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let jobs = listed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 30);
    assert!(jobs.iter().all(|job| job["state"] == "done"), "{listed}");

    let again = Command::new(env!("CARGO_BIN_EXE_b24act"))
        .args(["demo", "--workflows", "1", "--keep-db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
