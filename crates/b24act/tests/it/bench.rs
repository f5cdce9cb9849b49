//! `b24act bench` with tiny sizes: every scenario runs against a real `serve` child process,
//! completes, and reports figures of the right shape. No timing is asserted here — figures and
//! targets live in BENCHMARKS.md.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::TempDir;

/// `b24act bench` with `sizes`, four workers, a two-minute bound per scenario and its JSON
/// report written to `json`; standard input closed.
fn bench(sizes: &[&str], json: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_b24act"));
    command
        .arg("bench")
        .args(sizes)
        .args(["--workers", "4", "--scenario-timeout", "120s", "--json"])
        .arg(json)
        .stdin(Stdio::null());
    command
}

fn rows(report: &Value, scenario: &str) -> Vec<Value> {
    let scenario = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == scenario)
        .unwrap_or_else(|| panic!("no scenario {scenario} in {report:#}"));
    scenario["rows"].as_array().unwrap().clone()
}

fn value(rows: &[Value], measure: &str) -> f64 {
    rows.iter()
        .find(|r| r["measure"] == measure)
        .unwrap_or_else(|| panic!("no row {measure} in {rows:#?}"))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn bench_runs_every_scenario_with_tiny_sizes_and_reports_each_figure() {
    let dir = TempDir::new("b24act-it").unwrap();
    let json = dir.path().join("bench.json");
    let sizes = [
        "--connections",
        "8",
        "--intake-calls",
        "200",
        "--rates",
        "200",
        "--rate-duration",
        "1s",
        "--limited-workflows",
        "50",
        "--e2e-workflows",
        "30",
        "--e2e-rate",
        "50",
        "--queued",
        "2000",
    ];
    let output = bench(&sizes, &json).output().expect("run b24act bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for title in ["intake", "latency", "limited", "e2e", "rss", "targets (design.md §6)"] {
        assert!(stdout.lines().any(|l| l == title), "no table `{title}` in:\n{stdout}");
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);

    // The intake before the warm-up's 10 calls: exactly the 200 asked for, each stored once.
    let intake = rows(&report, "intake");
    assert_eq!(value(&intake, "calls accepted (200)"), 200.0);
    assert_eq!(value(&intake, "jobs stored by them"), 200.0);
    assert_eq!(value(&intake, "errors"), 0.0);
    assert!(value(&intake, "accepted calls/s") > 0.0);
    let (p50, p99, max) =
        (value(&intake, "ack p50"), value(&intake, "ack p99"), value(&intake, "ack max"));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");

    let latency = rows(&report, "latency");
    assert_eq!(value(&latency, "@200/s errors"), 0.0);
    assert!(value(&latency, "@200/s ack p99") > 0.0);

    let limited = rows(&report, "limited");
    assert_eq!(value(&limited, "results delivered"), 50.0);
    assert_eq!(value(&limited, "QUERY_LIMIT_EXCEEDED answers"), 0.0);
    assert_eq!(value(&limited, "calls not accepted by intake"), 0.0);
    assert!(value(&limited, "batch calls") >= 1.0);

    let e2e = rows(&report, "e2e");
    assert_eq!(value(&e2e, "results delivered"), 30.0);
    assert!(value(&e2e, "call → result p50") > 0.0);

    let rss = rows(&report, "rss");
    assert!(value(&rss, "jobs queued") >= 2000.0);
    assert_eq!(value(&rss, "jobs running (held by the API)"), 4.0);
    assert!(value(&rss, "server RSS (VmRSS)") > 0.0);
    assert_eq!(value(&rss, "errors"), 0.0);
}

/// `--scenarios multi-node` with tiny sizes on two nodes: the workflows' results all reach the
/// portal with no refused request after the first, the calls spread over both nodes are each
/// stored once, and the run's databases are gone afterwards. No timing is asserted.
#[test]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL leg: set B24ACT_TEST_POSTGRES_URL to run it")]
fn bench_multi_node_runs_two_nodes_on_one_postgres_database_and_drops_it() {
    let dir = TempDir::new("b24act-it").unwrap();
    let json = dir.path().join("bench.json");
    let server = store::testing::postgres_server();
    let sizes = [
        "--scenarios",
        "multi-node",
        "--nodes",
        "2",
        "--postgres-url",
        &server,
        "--connections",
        "8",
        "--intake-calls",
        "200",
        "--limited-workflows",
        "50",
    ];
    let child = bench(&sizes, &json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run b24act bench");
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let nodes = rows(&report, "multi-node");
    assert_eq!(value(&nodes, "2 nodes: results delivered"), 50.0);
    assert_eq!(value(&nodes, "2 nodes: QUERY_LIMIT_EXCEEDED after the first"), 0.0);
    assert_eq!(value(&nodes, "2 nodes: calls not accepted by intake"), 0.0);
    assert_eq!(value(&nodes, "2 nodes: calls accepted (200)"), 200.0);
    assert_eq!(value(&nodes, "2 nodes: jobs stored by them"), 200.0);
    assert_eq!(value(&nodes, "2 nodes: errors"), 0.0);

    let left = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        let pattern = format!("b24act_bench_{pid}_%");
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
            .bind(pattern)
            .fetch_one(&mut admin)
            .await
            .unwrap()
    });
    assert_eq!(left, 0, "the bench's databases are dropped at the end");
}

/// `--scenarios console` with a few jobs: every page is asked for and timed.
#[test]
fn bench_console_times_every_page() {
    let dir = TempDir::new("b24act-it").unwrap();
    let json = dir.path().join("bench.json");
    let sizes = ["--scenarios", "console", "--console-jobs", "1200", "--console-requests", "3"];
    let output = bench(&sizes, &json).output().expect("run b24act bench");
    assert!(
        output.status.success(),
        "bench failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let console = rows(&report, "console");
    for page in
        ["overview /", "jobs, no filter", "jobs, state=dead", "jobs, workflow", "a job", "portals"]
    {
        let (p50, p99) =
            (value(&console, &format!("{page} p50")), value(&console, &format!("{page} p99")));
        assert!(0.0 < p50 && p50 <= p99, "{page}: {p50} {p99}");
    }
}
