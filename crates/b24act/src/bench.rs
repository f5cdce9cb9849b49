//! `b24act bench`: measures a real `b24act serve` process on SQLite against the numbers of
//! design.md §6 — intake throughput and ack latency, results per second under the portal's
//! limit, call-to-result latency without a limit, and memory with a large backlog — and prints
//! one table (and, with `--json`, the same figures as JSON). `multi-node` runs several `serve`
//! nodes on one PostgreSQL database and one portal, and measures the same figures per node count.
//!
//! The server under test is a child process (this binary's `serve`), so the RSS and CPU reported
//! for it are its own; the emulator, the JSON API behind the action and the load generator run in
//! this process. On a small machine both processes share the cores, which the table says (the
//! CPU each one used). Everything listens on 127.0.0.1 and lives in temp dirs removed at the end.
//! Figures are for BENCHMARKS.md; no test asserts a timing.

mod console;
mod deployment;
pub mod load;
pub(crate) mod measure;
mod postgres;
mod report;
mod scenarios;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

pub use report::{Report, Row, ScenarioReport, Target};

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Closed loop: connections posting calls as fast as they are answered.
    Intake,
    /// Open loop: calls sent at fixed rates; ack latency from the scheduled moment.
    Latency,
    /// Workflows on a portal limited to 2 requests/s, burst 50: results delivered per second.
    Limited,
    /// Workflows on an unlimited portal with an instant API: call-to-result latency.
    E2e,
    /// Jobs left queued behind busy workers: the server's memory.
    Rss,
    /// Clients posting worst-case bodies (max_body_bytes of `k[]=1&…`, of 63-deep keys) while
    /// good calls are sent: the good calls' ack latency, and the decoder's own times.
    Hostile,
    /// Several nodes on one PostgreSQL database and one portal (`--nodes`): `limited`'s results
    /// per second and `intake`'s accepted calls per second, for each node count.
    MultiNode,
    /// `--console-jobs` jobs in the store, in every state, of several portals and actions: how
    /// long the console's pages take over HTTP (p50, p99).
    Console,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Intake => "intake",
            Scenario::Latency => "latency",
            Scenario::Limited => "limited",
            Scenario::E2e => "e2e",
            Scenario::Rss => "rss",
            Scenario::Hostile => "hostile",
            Scenario::MultiNode => "multi-node",
            Scenario::Console => "console",
        }
    }
}

/// `b24act bench` arguments: which scenarios, and their sizes (small sizes make a quick run).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "intake,latency,limited,e2e,rss,hostile"
    )]
    pub scenarios: Vec<Scenario>,
    /// Keep-alive HTTP/1.1 connections of the load generator (intake, latency, rss).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// intake, multi-node: how long the closed loop runs at most.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub intake_duration: Duration,
    /// intake: the most calls it sends (whichever of the two limits comes first).
    #[arg(long, default_value_t = 300_000)]
    pub intake_calls: u64,
    /// latency: the offered loads in calls/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub rates: Vec<u32>,
    /// latency: how long each offered load lasts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub rate_duration: Duration,
    /// limited, multi-node: workflows started at once on a portal limited to 2 requests/s, burst
    /// 50. The first 50 batches ride the burst; give it well over 2,500 to see the steady state.
    #[arg(long, default_value_t = 6_000)]
    pub limited_workflows: usize,
    /// e2e: workflows started on an unlimited portal.
    #[arg(long, default_value_t = 1_000)]
    pub e2e_workflows: usize,
    /// e2e: workflows started per second.
    #[arg(long, default_value_t = 100)]
    pub e2e_rate: u32,
    /// rss: jobs left queued while every worker is busy.
    #[arg(long, default_value_t = 100_000)]
    pub queued: u64,
    /// hostile: clients each posting worst-case bodies back to back.
    #[arg(long, default_value_t = 16)]
    pub hostile_clients: usize,
    /// hostile: good calls per second sent meanwhile (for `--rate-duration`).
    #[arg(long, default_value_t = 200)]
    pub hostile_good_rate: u32,
    /// console: jobs put in the store before the pages are timed.
    #[arg(long, default_value_t = 100_000)]
    pub console_jobs: u64,
    /// console: requests timed per page.
    #[arg(long, default_value_t = 50)]
    pub console_requests: usize,
    /// multi-node: the node counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub nodes: Vec<usize>,
    /// multi-node: the PostgreSQL server the nodes share; each deployment gets a fresh database
    /// on it, dropped at the end.
    #[arg(
        long,
        env = "B24ACT_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        hide_env_values = true
    )]
    pub postgres_url: String,
    /// Each node's `workers.concurrency`.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// The server's log filter (its `RUST_LOG`); the log goes to a file in its temp dir.
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// The `b24act` binary run as the server (default: this one).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// The longest one scenario may take before the benchmark gives up.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub scenario_timeout: Duration,
    /// Keep each server's temp dir (config, database, `serve.log`) and print where it is.
    #[arg(long)]
    pub keep_files: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the chosen scenarios one after another, each against a fresh server, printing each
/// scenario's table as it ends and a summary of the targets at the end.
pub async fn run(args: BenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    check(&args)?;
    let server = match &args.server {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this binary to run as the server")?,
    };
    let machine = measure::Machine::read();
    writeln!(out, "b24act bench — {}", machine.describe())?;
    writeln!(
        out,
        "server: {} serve (child process), store: SQLite in a temp dir",
        server.display()
    )?;
    if args.scenarios.contains(&Scenario::MultiNode) {
        writeln!(
            out,
            "multi-node: {} serve nodes on a fresh database at {}",
            args.nodes.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
            store::redact_url(&args.postgres_url)
        )?;
    }
    writeln!(out)?;
    let mut report = Report::new(machine);
    let mut seen = Vec::new();
    for scenario in args.scenarios.iter().copied() {
        if seen.contains(&scenario) {
            continue;
        }
        seen.push(scenario);
        writeln!(out, "== {} …", scenario.name())?;
        out.flush()?;
        let ran =
            tokio::time::timeout(args.scenario_timeout, scenarios::run(scenario, &args, &server))
                .await;
        let result = match ran {
            Ok(result) => result.with_context(|| format!("scenario `{}`", scenario.name()))?,
            Err(_) => bail!(
                "scenario `{}` took longer than --scenario-timeout {}",
                scenario.name(),
                humantime::format_duration(args.scenario_timeout)
            ),
        };
        result.print(out)?;
        writeln!(out)?;
        report.scenarios.push(result);
    }
    report.print_summary(out)?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "figures written to {}", path.display())?;
    }
    Ok(())
}

/// Sizes that would make a scenario meaningless or unbounded are refused up front.
fn check(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(args.connections >= 1, "--connections must be at least 1");
    ensure!(args.intake_calls >= 1, "--intake-calls must be at least 1");
    ensure!(!args.intake_duration.is_zero(), "--intake-duration must be more than 0");
    ensure!(args.rates.iter().all(|&r| r > 0), "--rates must all be more than 0");
    ensure!(!args.rate_duration.is_zero(), "--rate-duration must be more than 0");
    ensure!(args.limited_workflows >= 1, "--limited-workflows must be at least 1");
    ensure!(args.e2e_workflows >= 1, "--e2e-workflows must be at least 1");
    ensure!(args.e2e_rate >= 1, "--e2e-rate must be at least 1");
    ensure!(args.queued >= 1, "--queued must be at least 1");
    ensure!(args.workers >= 1, "--workers must be at least 1");
    ensure!(args.hostile_good_rate >= 1, "--hostile-good-rate must be at least 1");
    ensure!(!args.nodes.is_empty(), "--nodes names none");
    ensure!(args.nodes.iter().all(|&n| n >= 1), "--nodes must all be at least 1");
    ensure!(!args.scenarios.is_empty(), "--scenarios names none");
    Ok(())
}
