//! `b24act demo`: the emulator, the host on a temporary SQLite file and fake external systems in
//! one process, running business processes end to end and printing what happened to every one
//! of them.
//!
//! Two scenarios: [`credit`] (the default) is the reference case of design.md §2, shipment
//! requests through the credit-approval process with a `credit_limit` action against a fake
//! finance system, time compressed by a factor; [`generic`] is the first demo, an `http` action
//! against a flaky API with an outage. `--all-connectors` adds small runs of the other
//! connectors ([`examples`]). The demo doubles as a smoke test: it fails when a workflow hangs,
//! a result is sent twice, a value or a decision is wrong, or the portal refused a request for
//! its rate limit.

pub mod credit;
mod deployment;
pub mod examples;
pub mod generic;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use generic::{DemoSummary, Latency};

/// Which process the demo runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The reference case: shipment requests with deferred payment, a credit check against the
    /// finance system, the CFO for the rest.
    #[default]
    Credit,
    /// The first demo: an `http` action against a flaky JSON API, with an outage.
    Generic,
}

const CREDIT: &str =
    "Reference case (--scenario credit); durations are REAL time, divided by --time-factor";
const GENERIC: &str = "Generic scenario (--scenario generic); durations are wall time";

/// `b24act demo`'s knobs. Durations are seconds (`4.5`) or humantime (`30m`, `1500ms`).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Which process to run.
    #[arg(long, value_enum, default_value_t = Scenario::Credit)]
    pub scenario: Scenario,
    /// How many shipment requests (credit) or workflows (generic) to start.
    #[arg(long, visible_alias = "requests", default_value_t = 300)]
    pub workflows: usize,
    /// Share of the external API's requests that answer 503 at random, all through the run (0 to
    /// 1); the finance system's "unavailable 3–5% of the time". Default 0.04 (credit) or 0.1
    /// (generic).
    #[arg(long)]
    pub failure_rate: Option<f64>,
    /// The action's max wait: a check still failing this long after its call arrived gives up
    /// and returns the fallback (credit: manual approval with the reason). Default 30m of real
    /// time (credit, compressed by --time-factor) or 3 s (generic).
    #[arg(long, value_parser = parse_seconds)]
    pub max_wait: Option<Duration>,
    /// Seed of everything random: the finance system's book and failures, which company asks for
    /// how much, the CFO's answers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The portal's leaky-bucket drain rate, requests per second (0 switches the portal's
    /// limit off). The host paces itself to the same limit.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// The portal's burst threshold.
    #[arg(long, default_value_t = 50)]
    pub burst: u32,
    /// Write a line to the workflow's log on every retry (`bizproc.activity.log`); the lines
    /// ride in the outbox's batches.
    #[arg(long)]
    pub log_retries: bool,
    /// Keep the SQLite store at this path (which must not exist) instead of a temporary file,
    /// and the host's configuration next to it as `PATH.toml`, to look at the jobs afterwards
    /// with `b24act jobs list --config PATH.toml`.
    #[arg(long, value_name = "PATH")]
    pub keep_db: Option<PathBuf>,
    /// Also run a few workflows through each of the other connectors against its fake (`onec`
    /// against a fake 1C), printing what came back.
    #[arg(long)]
    pub all_connectors: bool,

    /// How much faster than real time the run goes: every duration of the case (arrivals, max
    /// wait, backoff, attempt timeout, the maintenance window, the CFO's answer) is divided by
    /// it, and the measured times are shown both as measured and multiplied back. 120: 30 min
    /// of max wait take 15 s.
    #[arg(long, default_value_t = 120.0, help_heading = CREDIT)]
    pub time_factor: f64,
    /// The requests arrive evenly over this much real time.
    #[arg(long, default_value = "45m", value_parser = parse_seconds, help_heading = CREDIT)]
    pub arrivals: Duration,
    /// The finance system's maintenance window starts this long after the first request.
    #[arg(long, default_value = "30m", value_parser = parse_seconds, help_heading = CREDIT)]
    pub maintenance_at: Duration,
    /// How long the maintenance window lasts (0: none). Requests that arrive more than the max
    /// wait before it ends go to the CFO with the reason; the others wait it out.
    #[arg(long, default_value = "35m", value_parser = parse_seconds, help_heading = CREDIT)]
    pub maintenance_for: Duration,
    /// How long the CFO takes to answer a task, on average (each answer takes 0.5 to 1.5 times
    /// this, seeded).
    #[arg(long, default_value = "15m", value_parser = parse_seconds, help_heading = CREDIT)]
    pub cfo_response: Duration,

    /// How many workflows start per second, evenly spread (300 at 25/s take 12 s).
    #[arg(long, default_value_t = 25.0, help_heading = GENERIC)]
    pub start_rate: f64,
    /// How long the fake API is fully down (every request 503), in the middle of the starts.
    /// Jobs that arrive more than the max wait before the API comes back finish with the
    /// fallback.
    #[arg(long, default_value = "5", value_parser = parse_seconds, help_heading = GENERIC)]
    pub outage: Duration,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            scenario: Scenario::Credit,
            workflows: 300,
            failure_rate: None,
            max_wait: None,
            seed: 1,
            rate: 2.0,
            burst: 50,
            log_retries: false,
            keep_db: None,
            all_connectors: false,
            time_factor: 120.0,
            arrivals: Duration::from_secs(45 * 60),
            maintenance_at: Duration::from_secs(30 * 60),
            maintenance_for: Duration::from_secs(35 * 60),
            cfo_response: Duration::from_secs(15 * 60),
            start_rate: 25.0,
            outage: Duration::from_secs(5),
        }
    }
}

/// What a demo run found; [`Outcome::problems`] says whether it failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Credit(credit::CreditSummary),
    Generic(DemoSummary),
}

impl Outcome {
    /// Why the run counts as failed, if it does.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Outcome::Credit(summary) => summary.problems(),
            Outcome::Generic(summary) => summary.problems(),
        }
    }
}

/// Everything a run produced: the scenario's summary and, with `--all-connectors`, the
/// connector examples.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    pub outcome: Outcome,
    pub examples: Vec<examples::Example>,
}

impl DemoReport {
    /// Why the run counts as failed, if it does.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.outcome.problems();
        for example in &self.examples {
            problems.extend(example.problems());
        }
        problems
    }
}

/// Runs the demo, writing progress and the summary to `out`. Fails (after printing the
/// summary) when the run found a problem.
pub async fn run(args: DemoArgs, out: &mut impl std::io::Write) -> anyhow::Result<DemoReport> {
    validate_common(&args)?;
    let outcome = match args.scenario {
        Scenario::Credit => Outcome::Credit(credit::run(&args, out).await?),
        Scenario::Generic => Outcome::Generic(generic::run(&args, out).await?),
    };
    let examples =
        if args.all_connectors { examples::run(args.seed, out).await? } else { Vec::new() };
    let report = DemoReport { outcome, examples };
    let problems = report.problems();
    if !problems.is_empty() {
        anyhow::bail!("the demo failed: {}", problems.join("; "));
    }
    Ok(report)
}

fn validate_common(args: &DemoArgs) -> anyhow::Result<()> {
    use anyhow::ensure;
    ensure!(args.workflows > 0, "--workflows must be at least 1");
    if let Some(rate) = args.failure_rate {
        ensure!((0.0..=1.0).contains(&rate), "--failure-rate must be between 0 and 1, not {rate}");
    }
    if let Some(wait) = args.max_wait {
        ensure!(!wait.is_zero(), "--max-wait must be longer than 0");
    }
    ensure!(args.rate.is_finite() && args.rate >= 0.0, "--rate must be a number ≥ 0 (0: no limit)");
    ensure!(args.burst > 0, "--burst must be at least 1");
    if let Some(path) = &args.keep_db {
        ensure!(!path.exists(), "--keep-db: {} already exists", path.display());
        let config = kept_config_path(path);
        ensure!(!config.exists(), "--keep-db: {} already exists", config.display());
    }
    Ok(())
}

/// Where `--keep-db PATH` keeps the host's configuration: `PATH.toml`.
pub(crate) fn kept_config_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".toml");
    PathBuf::from(name)
}

/// A duration given as seconds (`3`, `0.5`) or in humantime form (`1500ms`, `2s`, `30m`).
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a number of seconds ≥ 0"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is neither seconds nor a duration: {error}"))
}

/// One labelled line of a summary.
pub(crate) fn row(text: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(text, "  {label:<40}{value}");
}

/// `0.25 s`
pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_humantime() {
        assert_eq!(parse_seconds("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            demo: DemoArgs,
        }
        let parsed = Cli::parse_from(["demo"]).demo;
        let default = DemoArgs::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }
}
