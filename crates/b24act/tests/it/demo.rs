//! `b24act demo`: the reference case and the generic scenario in-process with small
//! configurations, asserting on the summaries, and as the real binary, asserting on what it
//! prints and its exit code.

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

use b24act::demo::{self, DemoArgs, DemoReport, Outcome, Scenario};

use crate::support::TempDir;

/// The reference case at ×600: 40 requests over 4.5 s; the finance system is in maintenance
/// from 0.75 s to 4.25 s, longer than the 3 s max wait, so the requests that arrive early in it
/// go to the CFO as unreachable and the later ones wait it out.
fn small_credit_case() -> DemoArgs {
    DemoArgs {
        workflows: 40,
        time_factor: 600.0,
        arrivals: Duration::from_secs(45 * 60),
        maintenance_at: Duration::from_secs(7 * 60 + 30),
        maintenance_for: Duration::from_secs(35 * 60),
        cfo_response: Duration::from_secs(5 * 60),
        seed: 3,
        rate: 5.0,
        ..DemoArgs::default()
    }
}

/// Runs the demo in-process, which must take under 20 s; returns its report and what it printed.
async fn run_in_process(args: DemoArgs) -> (DemoReport, String) {
    let started = Instant::now();
    let mut out = Vec::new();
    let report = demo::run(args, &mut out).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    (report, String::from_utf8(out).unwrap())
}

/// The texts of a summary's grouped reasons, whose counts must add up to `total`.
fn reasons_for<'a>(reasons: &'a [(String, usize)], total: usize, printed: &str) -> Vec<&'a str> {
    assert_eq!(reasons.iter().map(|(_, n)| n).sum::<usize>(), total, "{printed}");
    reasons.iter().map(|(reason, _)| reason.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_case_approves_some_automatically_and_routes_the_rest_to_the_cfo_with_why() {
    let (report, printed) = run_in_process(small_credit_case()).await;
    let Outcome::Credit(summary) = &report.outcome else { panic!("not the credit case") };

    assert_eq!(summary.requests, 40, "{printed}");
    assert_eq!((summary.hung, summary.failed, summary.wrong), (0, 0, 0), "{printed}");
    assert_eq!(summary.auto_approved + summary.routed_to_cfo(), 40, "{printed}");
    assert!(summary.auto_approved > 0, "{printed}");
    assert!(summary.cfo_over_limit > 0, "{printed}");
    assert!(summary.cfo_unreachable > 0, "the window outlasts the max wait: {printed}");
    let reasons = reasons_for(&summary.unreachable_reasons, summary.cfo_unreachable, &printed);
    assert!(reasons.iter().any(|reason| reason.contains("503")), "{printed}");
    assert_eq!(summary.cfo_approved + summary.cfo_rejected, summary.routed_to_cfo(), "{printed}");
    // Every automatic approval is within the limit by the book (`wrong` is 0), and only the
    // unreachable ones within it can have gone to the CFO.
    assert!(summary.auto_approved <= summary.within_limit_by_book, "{printed}");
    assert!(summary.retries > 0 && summary.finance_unavailable > 0, "{printed}");
    assert_eq!(
        (summary.jobs, summary.dead, summary.unconfirmed_deliveries),
        (40, 0, 0),
        "{printed}"
    );
    assert_eq!((summary.event_sends, summary.duplicate_sends), (40, 0), "{printed}");
    assert_eq!(summary.query_limit_exceeded, 0, "{printed}");
    let auto = summary.auto_cycle;
    assert_eq!(auto.wall.count, summary.auto_approved);
    assert!(auto.wall.p50 <= auto.wall.p90 && auto.wall.p90 <= auto.wall.max);
    assert_eq!(auto.real.max, auto.wall.max.mul_f64(600.0));
    assert_eq!(summary.cfo_cycle.wall.count, summary.routed_to_cfo());
    assert!(report.problems().is_empty());
    for line in ["approved automatically", "routed to the CFO", "unreachable past the max wait"] {
        assert!(printed.contains(line), "no `{line}` in:\n{printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_every_workflow_closes_once_with_a_result_or_the_fallback_through_an_outage() {
    // 40 starts over 2 s; the API is down from 0.25 s to 1.75 s, longer than the max wait, so
    // the jobs that arrive early in the outage fall back and the later ones retry and succeed.
    let args = DemoArgs {
        scenario: Scenario::Generic,
        workflows: 40,
        start_rate: 20.0,
        failure_rate: Some(0.2),
        outage: Duration::from_millis(1500),
        max_wait: Some(Duration::from_secs(1)),
        seed: 3,
        rate: 5.0,
        burst: 50,
        ..DemoArgs::default()
    };
    let (report, printed) = run_in_process(args).await;
    let Outcome::Generic(summary) = &report.outcome else { panic!("not the generic scenario") };

    assert_eq!(summary.started, 40, "{printed}");
    assert_eq!(summary.hung, 0, "{printed}");
    assert_eq!(summary.with_result + summary.with_fallback, 40, "{printed}");
    assert!(summary.with_result > 0, "{printed}");
    assert!(summary.with_fallback > 0, "the outage is longer than the max wait: {printed}");
    let reasons = reasons_for(&summary.fallback_reasons, summary.with_fallback, &printed);
    assert!(reasons.iter().all(|reason| reason.starts_with("deadline: gave up")), "{printed}");
    assert_eq!(summary.wrong, 0, "{printed}");
    assert_eq!(
        (summary.jobs, summary.dead, summary.unconfirmed_deliveries),
        (40, 0, 0),
        "{printed}"
    );
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
}

#[test]
fn the_binary_runs_the_generic_demo_prints_the_summary_and_keeps_the_store_when_asked() {
    let dir = TempDir::new("b24act-it").unwrap();
    let db = dir.path().join("kept.db");
    let flags = "demo --scenario generic --workflows 30 --start-rate 30 --failure-rate 0.2 \
        --outage 0.5 --max-wait 2 --rate 0 --seed 5 --keep-db";
    let stdout = run_binary_demo(flags.split_whitespace().map(OsStr::new).chain([db.as_os_str()]));
    let value_of = |label: &str| summary_value(&stdout, label);
    assert_eq!(value_of("workflows started"), "30");
    assert_eq!(value_of("hung (must be 0)"), "0");
    assert_eq!(value_of("wrong results (must be 0)"), "0");
    assert_eq!(value_of("QUERY_LIMIT_EXCEEDED (must be 0)"), "0");
    let results: usize = value_of("finished with a result").parse().unwrap();
    let fallbacks: usize = value_of("finished with the fallback").parse().unwrap();
    assert_eq!(results + fallbacks, 30, "{stdout}");
    assert!(
        value_of("results sent")
            .starts_with("30 accepted for 30 closed workflows; sent more than once: 0"),
        "{stdout}"
    );
    assert_eq!(value_of("jobs stored / dead"), "30 / 0 (dead must be 0)");
    assert!(value_of("deliveries unconfirmed").starts_with("0 "), "{stdout}");
    assert!(value_of("call → result, all").starts_with("p50 "), "{stdout}");
    assert!(db.exists(), "--keep-db leaves the store at {}", db.display());
    let config = dir.path().join("kept.db.toml");
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

#[test]
fn the_binary_runs_the_reference_case_and_prints_the_shares_and_the_cycle_time() {
    let flags = "demo --requests 24 --time-factor 900 --arrivals 30m --maintenance-at 5m \
        --maintenance-for 40m --cfo-response 5m --rate 0 --seed 4";
    let stdout = run_binary_demo(flags.split_whitespace());
    let value_of = |label: &str| summary_value(&stdout, label);
    let count = |label: &str| -> usize {
        value_of(label).split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_eq!(value_of("shipment requests"), "24");
    assert_eq!(count("approved automatically") + count("routed to the CFO"), 24, "{stdout}");
    assert_eq!(value_of("hung (must be 0)"), "0");
    assert_eq!(value_of("decisions against the book (must be 0)"), "0");
    assert_eq!(value_of("QUERY_LIMIT_EXCEEDED (must be 0)"), "0");
    assert!(value_of("results sent").ends_with("sent more than once: 0 (must be 0)"), "{stdout}");
    assert_eq!(value_of("jobs stored / dead"), "24 / 0 (dead must be 0)");
    assert!(stdout.contains("unreachable past the max wait (30m)"), "{stdout}");
    assert!(value_of("approved automatically").contains('%'), "{stdout}");
    assert!(stdout.contains("real p50 "), "{stdout}");
}

/// Runs the binary with `args` and `RUST_LOG` unset; it must succeed, and be quiet by default:
/// the demo's own lines on stdout, no logs on stderr. Returns its stdout.
fn run_binary_demo(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_b24act"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{stderr}", output.status);
    assert!(stderr.trim().is_empty(), "{stderr}");
    stdout.into_owned()
}

/// The value on the summary line `label` of what the demo printed.
fn summary_value(stdout: &str, label: &str) -> String {
    let line = stdout
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{stdout}"));
    line.trim_start()[label.len()..].trim().to_owned()
}

#[test]
fn the_help_explains_every_knob() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_b24act")).args(["demo", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for flag in [
        "--scenario",
        "--requests",
        "--failure-rate",
        "--max-wait",
        "--seed",
        "--rate",
        "--burst",
        "--log-retries",
        "--keep-db",
        "--all-connectors",
        "--time-factor",
        "--arrivals",
        "--maintenance-at",
        "--maintenance-for",
        "--cfo-response",
        "--start-rate",
        "--outage",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_connectors_runs_onec_telegram_and_sharepoint_and_prints_what_came_back() {
    let mut out = Vec::new();
    let examples = demo::examples::run(1, &mut out).await.unwrap();
    let printed = String::from_utf8(out).unwrap();
    let kinds: Vec<&str> = examples.iter().map(|e| e.connector.as_str()).collect();
    assert_eq!(kinds, ["onec", "telegram", "sharepoint"], "{printed}");
    assert!(examples.iter().all(|e| e.problems().is_empty()), "{printed}");
    let telegram = &examples[1].runs;
    assert_eq!(telegram[0].values["message_id"], serde_json::json!("1"), "{printed}");
    assert!(telegram[1].values["message_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(telegram[2].values["error"].as_str().unwrap().contains("401"), "{printed}");
    assert!(!telegram[2].log.iter().any(|l| l.starts_with("the chat shows")), "{printed}");
    let sharepoint = &examples[2].runs;
    assert!(sharepoint[0].values["document_url"].as_str().unwrap().ends_with(".md"));
    assert!(sharepoint[2].values["error"].as_str().unwrap().contains("invalid_client"));
    for line in ["`telegram` example", "the chat shows:", "`sharepoint` example", "the library has"]
    {
        assert!(printed.contains(line), "no `{line}` in:\n{printed}");
    }
}
