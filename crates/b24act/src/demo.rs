//! `b24act demo`: the emulator, the host on a temporary SQLite file and a flaky fake API in one
//! process; a few hundred workflows through an `http` action with injected failures and an
//! outage; a summary of what happened to every one of them.
//!
//! Time is compressed by settings (short backoff, short max wait), never faked: real timers,
//! real HTTP on loopback, the real store. The demo doubles as a smoke test: it fails when a
//! workflow hangs, a result is sent twice, or a returned value is wrong.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use b24_emulator::{
    AppSpec, Emulator, EmulatorConfig, PortalSpec, WorkflowSpec, WorkflowState, WorkflowStatus,
};
use serde_json::Value;
use store::{AttemptKind, JobFilter, JobState, ResultKind};

use crate::app::{self, Running};
use crate::config::Config;
use crate::fake_api::{Behaviour, FakeApi};

/// The demo app's OAuth client id on the emulator.
pub const CLIENT_ID: &str = "local.b24act.demo";
/// The action every demo workflow runs.
pub const CODE: &str = "check_credit";
const CLIENT_SECRET: &str = "demo-secret";

/// How often the demo prints a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long the app may take to register its action after ONAPPINSTALL.
const REGISTRATION_WITHIN: Duration = Duration::from_secs(15);
/// What the demo waits, after the last start and the max wait, before it counts the
/// workflows still waiting as hung.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// `b24act demo`'s knobs.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How many workflows to start.
    #[arg(long, default_value_t = 300)]
    pub workflows: usize,
    /// How many workflows start per second, evenly spread (300 at 25/s take 12 s).
    #[arg(long, default_value_t = 25.0)]
    pub start_rate: f64,
    /// Share of the fake API's requests that fail with 503, all through the run (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub failure_rate: f64,
    /// How long the fake API is fully down (every request 503), in the middle of the starts.
    /// Seconds (`4.5`) or a duration (`4500ms`). Jobs that arrive more than `--max-wait`
    /// before the API comes back finish with the fallback.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub outage: Duration,
    /// The action's max wait: a job still failing this long after its call arrived gives up
    /// and returns the fallback. Seconds or a duration.
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    pub max_wait: Duration,
    /// Seed of the fake API's random failures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The portal's leaky-bucket drain rate, requests per second (0 switches the portal's
    /// limit off). The host paces itself to the same limit.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// The portal's burst threshold.
    #[arg(long, default_value_t = 50)]
    pub burst: u32,
    /// Write a line to the workflow's log on every retry (`bizproc.activity.log`). Each line
    /// is one REST request against the portal's limit: with an outage and the default 2/s the
    /// run takes minutes instead of seconds.
    #[arg(long)]
    pub log_retries: bool,
    /// Keep the SQLite store at this path (which must not exist) instead of a temporary file,
    /// and the host's configuration next to it as `PATH.toml`, to look at the jobs afterwards
    /// with `b24act jobs list --config PATH.toml`.
    #[arg(long, value_name = "PATH")]
    pub keep_db: Option<PathBuf>,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            workflows: 300,
            start_rate: 25.0,
            failure_rate: 0.1,
            outage: Duration::from_secs(5),
            max_wait: Duration::from_secs(3),
            seed: 1,
            rate: 2.0,
            burst: 50,
            log_retries: false,
            keep_db: None,
        }
    }
}

/// A duration given as seconds (`3`, `0.5`) or in humantime form (`1500ms`, `2s`).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a number of seconds ≥ 0"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is neither seconds nor a duration: {error}"))
}

/// Latency figures over a set of workflows, from the call (`started_at`) to the activity's
/// close (`closed_at`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let rank = |p: f64| -> Duration {
            // Nearest rank: the smallest sample with at least p of the samples at or below it.
            let index = ((p * samples.len() as f64).ceil() as usize).saturating_sub(1);
            samples.get(index).copied().unwrap_or_default()
        };
        Latency {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// What happened to the demo's workflows; printed at the end and returned for tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoSummary {
    pub started: usize,
    /// Closed with the API's values.
    pub with_result: usize,
    /// Closed with the action's fallback values.
    pub with_fallback: usize,
    /// Why the fallbacks happened (reasons with their numbers blanked), most frequent first.
    pub fallback_reasons: Vec<(String, usize)>,
    /// Still waiting when the demo stopped waiting (must be 0).
    pub hung: usize,
    /// Closed with values that are not the API's answer for that company, or closed without a
    /// stored result to explain it (must be 0).
    pub wrong: usize,
    /// Jobs the host stored (one per call).
    pub jobs: usize,
    /// Jobs that ended dead: nothing was sent for them.
    pub dead: usize,
    /// Execution attempts beyond the first, over all jobs.
    pub retries: u64,
    /// `bizproc.event.send` commands the portal accepted.
    pub event_sends: usize,
    /// Accepted sends beyond one per closed workflow (must be 0).
    pub duplicate_sends: usize,
    pub api_requests: u64,
    pub api_failures: u64,
    /// Every REST request the portal received, batch sub-commands not counted separately.
    pub rest_requests: usize,
    pub batches: usize,
    pub activity_log_lines: usize,
    pub query_limit_exceeded: usize,
    /// Call → result over every closed workflow.
    pub latency: Latency,
    /// Call → result over the workflows whose job succeeded at its first attempt.
    pub latency_clean: Latency,
    pub wall_time: Duration,
}

impl DemoSummary {
    /// Why the run counts as failed, if it does.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.hung > 0 {
            problems.push(format!("{} workflow(s) hung", self.hung));
        }
        if self.duplicate_sends > 0 {
            problems.push(format!("{} result(s) sent more than once", self.duplicate_sends));
        }
        if self.wrong > 0 {
            problems.push(format!("{} workflow(s) closed with a wrong result", self.wrong));
        }
        if self.query_limit_exceeded > 0 {
            problems.push(format!(
                "the portal answered QUERY_LIMIT_EXCEEDED {} time(s)",
                self.query_limit_exceeded
            ));
        }
        problems
    }

    /// The summary as the demo prints it.
    pub fn render(&self) -> String {
        let mut text = String::new();
        row(&mut text, "workflows started", self.started.to_string());
        row(&mut text, "finished with a result", self.with_result.to_string());
        row(&mut text, "finished with the fallback", self.with_fallback.to_string());
        for (reason, count) in &self.fallback_reasons {
            let _ = writeln!(text, "      {count:>4} × {reason}");
        }
        row(&mut text, "hung (must be 0)", self.hung.to_string());
        row(&mut text, "wrong results (must be 0)", self.wrong.to_string());
        row(
            &mut text,
            "results sent",
            format!(
                "{} for {} closed workflows; sent twice: {} (must be 0)",
                self.event_sends,
                self.with_result + self.with_fallback,
                self.duplicate_sends
            ),
        );
        row(&mut text, "jobs stored / dead", format!("{} / {}", self.jobs, self.dead));
        row(&mut text, "retries", self.retries.to_string());
        row(
            &mut text,
            "fake API requests / failed",
            format!("{} / {}", self.api_requests, self.api_failures),
        );
        row(
            &mut text,
            "portal REST requests",
            format!(
                "{} ({} batches, {} event.send, {} activity.log)",
                self.rest_requests, self.batches, self.event_sends, self.activity_log_lines
            ),
        );
        row(&mut text, "QUERY_LIMIT_EXCEEDED (must be 0)", self.query_limit_exceeded.to_string());
        row(&mut text, "call → result, all", latency(&self.latency));
        row(&mut text, "call → result, no failure hit", latency(&self.latency_clean));
        row(&mut text, "wall time", format!("{:.1} s", self.wall_time.as_secs_f64()));
        text
    }
}

/// One labelled line of the summary.
fn row(text: &mut String, label: &str, value: String) {
    let _ = writeln!(text, "  {label:<34}{value}");
}

fn latency(l: &Latency) -> String {
    if l.count == 0 {
        return "–".to_owned();
    }
    format!(
        "p50 {} · p99 {} · max {} (n = {})",
        seconds(l.p50),
        seconds(l.p99),
        seconds(l.max),
        l.count
    )
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// How the demo deployment is set up; [`Deployment::start`] turns it into running parts.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    pub portal: PortalSpec,
    /// Seed of the fake API's random failures.
    pub api_seed: u64,
    /// `sqlite:<path>` or `postgres://…`.
    pub store_url: String,
    pub concurrency: usize,
    pub lease: Duration,
    /// The action's retry policy.
    pub max_wait: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub attempt_timeout: Duration,
    pub log_retries: bool,
    /// How the host paces requests to the portal: per second, burst.
    pub host_rate: (f64, u32),
    /// First wait after a failed delivery, and its cap.
    pub delivery_retry: (Duration, Duration),
}

/// The emulator with one portal, the fake API, and the host installed on the portal with one
/// `http` action ([`CODE`]) asking the API for a company's credit, with a fallback that names
/// the reason.
pub struct Deployment {
    pub emulator: Emulator,
    /// The portal's domain (`127.0.0.1:PORT`).
    pub domain: String,
    pub api: FakeApi,
    pub running: Running,
    /// The host's configuration file, as text (to start the host again on the same store).
    pub config_text: String,
    /// Where the host listens.
    pub listen: SocketAddr,
}

impl Deployment {
    /// Starts everything and installs the app the real way (ONAPPINSTALL → `app.info` →
    /// registration); returns once the action is registered on the portal.
    pub async fn start(spec: &DeploymentSpec) -> anyhow::Result<Deployment> {
        let emulator =
            Emulator::start(EmulatorConfig::default()).await.context("starting the emulator")?;
        let portal =
            emulator.create_portal(spec.portal.clone()).await.context("creating the portal")?;
        let api = FakeApi::start(spec.api_seed).await.context("starting the fake API")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the host's listener")?;
        let listen = listener.local_addr().context("reading the host's address")?;
        let config_text = config_text(listen, &api.url(), spec);
        emulator.register_app(AppSpec {
            client_id: Some(CLIENT_ID.into()),
            client_secret: Some(CLIENT_SECRET.into()),
            install_url: Some(format!("http://{listen}/bitrix/install")),
            scope: "bizproc,crm".into(),
            ..AppSpec::default()
        });
        let config = Config::from_toml(&config_text, "the demo configuration", std::iter::empty())
            .context("the demo configuration")?;
        let running = app::start_on(listener, config, &connectors::Registry::new())
            .await
            .context("starting the host")?;
        let deployment =
            Deployment { emulator, domain: portal.domain, api, running, config_text, listen };
        let installed = deployment
            .emulator
            .install_app(&deployment.domain, CLIENT_ID)
            .await
            .context("installing the app")?;
        ensure!(
            installed.event_status == Some(200),
            "the host answered ONAPPINSTALL with {:?}",
            installed.event_status
        );
        let deadline = Instant::now() + REGISTRATION_WITHIN;
        while !deployment.registered()? {
            if Instant::now() >= deadline {
                bail!("the action `{CODE}` was not registered within {REGISTRATION_WITHIN:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(deployment)
    }

    fn registered(&self) -> anyhow::Result<bool> {
        Ok(self.emulator.registrations(&self.domain)?.iter().any(|r| r.code == CODE))
    }

    /// Starts a workflow running the action for `company_id`; returns its id.
    pub async fn start_workflow(&self, company_id: u64) -> anyhow::Result<String> {
        let spec = WorkflowSpec {
            domain: self.domain.clone(),
            code: CODE.into(),
            properties: serde_json::json!({ "company_id": company_id }),
            // The demo measures hanging itself; the portal waits for ever, as it may.
            timeout_duration: 0,
            // The instance stays, so a second send is a visible no-op rather than a "404".
            finish_after: None,
            ..WorkflowSpec::default()
        };
        Ok(self.emulator.start_workflow(spec).await?.workflow_id)
    }
}

/// The host's configuration for a [`DeploymentSpec`].
pub fn config_text(listen: SocketAddr, api_url: &str, spec: &DeploymentSpec) -> String {
    let d = |duration: Duration| humantime::format_duration(duration).to_string();
    let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    format!(
        r#"
[app]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
public_url = "http://{listen}/"

[server]
listen = "{listen}"

[store]
url = "{store_url}"
encryption_key = "{key}"

[workers]
concurrency = {concurrency}
lease = "{lease}"

[delivery]
rate_per_second = {rate}
burst = {burst}
retry_base = "{delivery_base}"
retry_cap = "{delivery_cap}"

[[actions]]
code = "{CODE}"
name = {{ en = "Check credit" }}

[actions.properties.company_id]
name = "Company"
type = "int"
required = true

[actions.return_properties.limit]
name = "Limit"
type = "double"

[actions.return_properties.debt]
name = "Debt"
type = "double"

[actions.return_properties.unavailable]
name = "Finance system unavailable"
type = "bool"

[actions.connector]
kind = "http"
method = "GET"
url = "{api_url}/companies/{{{{properties.company_id}}}}/credit"

[actions.connector.response]
limit = "/limit"
debt = "/debt"

[actions.retry]
max_wait = "{max_wait}"
backoff_base = "{backoff_base}"
backoff_cap = "{backoff_cap}"
jitter = 0.2
attempt_timeout = "{attempt_timeout}"
deadline_margin = "1s"
log_retries = {log_retries}

[actions.on_failure]
mode = "fallback"
log_message = "Finance system unavailable: {{reason}}"
values = {{ unavailable = true }}
"#,
        store_url = toml_escape(&spec.store_url),
        concurrency = spec.concurrency,
        lease = d(spec.lease),
        rate = spec.host_rate.0,
        burst = spec.host_rate.1,
        delivery_base = d(spec.delivery_retry.0),
        delivery_cap = d(spec.delivery_retry.1),
        max_wait = d(spec.max_wait),
        backoff_base = d(spec.backoff_base),
        backoff_cap = d(spec.backoff_cap),
        attempt_timeout = d(spec.attempt_timeout),
        log_retries = spec.log_retries,
    )
}

/// A string's content for a TOML basic string.
fn toml_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A directory of our own under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let unique = format!("b24act-demo-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%error, path = %self.0.display(), "cannot remove the demo's temp dir");
        }
    }
}

/// When the fake API is down, measured from the first start.
#[derive(Debug, Clone, Copy)]
struct Outage {
    from: Duration,
    until: Duration,
}

impl Outage {
    /// `length` centred on the start phase (or from its beginning when longer).
    fn centred(start_phase: Duration, length: Duration) -> Outage {
        let from = start_phase.saturating_sub(length) / 2;
        Outage { from, until: from + length }
    }

    fn covers(&self, elapsed: Duration) -> bool {
        !self.until.is_zero() && elapsed >= self.from && elapsed < self.until
    }
}

/// Runs the demo, writing progress and the summary to `out`. Fails (after printing the
/// summary) when a workflow hung, a result was sent twice or a value was wrong.
pub async fn run(args: DemoArgs, out: &mut impl std::io::Write) -> anyhow::Result<DemoSummary> {
    validate(&args)?;
    let wall = Instant::now();
    let temp;
    let store_path = match &args.keep_db {
        Some(path) => {
            ensure!(!path.exists(), "--keep-db: {} already exists", path.display());
            ensure!(
                !kept_config_path(path).exists(),
                "--keep-db: {} already exists",
                kept_config_path(path).display()
            );
            path.clone()
        }
        None => {
            temp = TempDir::new().context("creating a temp dir for the store")?;
            temp.0.join("b24act-demo.db")
        }
    };
    let spec = deployment_spec(&args, &store_path);
    let deployment = Deployment::start(&spec).await?;
    if let Some(path) = &args.keep_db {
        let config_path = kept_config_path(path);
        std::fs::write(&config_path, &deployment.config_text)
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    let start_phase = Duration::from_secs_f64(args.workflows as f64 / args.start_rate);
    let outage = Outage::centred(start_phase, args.outage);
    writeln!(
        out,
        "b24act demo: {} workflows through `{CODE}` (http → fake API at {}), {} per second",
        args.workflows,
        deployment.api.url(),
        args.start_rate
    )?;
    writeln!(
        out,
        "  API: {:.0}% of requests fail; fully down from {:.1} s to {:.1} s. Max wait {}; portal limit {}; store {}",
        args.failure_rate * 100.0,
        outage.from.as_secs_f64(),
        outage.until.as_secs_f64(),
        seconds(args.max_wait),
        if args.rate > 0.0 {
            format!("{}/s, burst {}", args.rate, args.burst)
        } else {
            "off".to_owned()
        },
        store_path.display()
    )?;

    let drive = drive(&deployment, &args, outage, start_phase, out).await;
    let collected = match drive {
        Ok(ids) => collect(&deployment, &ids).await,
        Err(error) => Err(error),
    };
    deployment.running.shutdown().await;
    let mut summary = collected?;
    summary.wall_time = wall.elapsed();
    writeln!(out, "\nSummary")?;
    write!(out, "{}", summary.render())?;
    out.flush()?;
    if let Some(path) = &args.keep_db {
        writeln!(
            out,
            "\nThe store is kept: b24act jobs list --config {}",
            kept_config_path(path).display()
        )?;
    }
    let problems = summary.problems();
    if !problems.is_empty() {
        bail!("the demo failed: {}", problems.join("; "));
    }
    Ok(summary)
}

/// Where `--keep-db PATH` keeps the host's configuration: `PATH.toml`.
fn kept_config_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".toml");
    PathBuf::from(name)
}

fn validate(args: &DemoArgs) -> anyhow::Result<()> {
    ensure!(args.workflows > 0, "--workflows must be at least 1");
    ensure!(
        args.start_rate.is_finite() && args.start_rate > 0.0,
        "--start-rate must be a positive number"
    );
    ensure!(
        (0.0..=1.0).contains(&args.failure_rate),
        "--failure-rate must be between 0 and 1, not {}",
        args.failure_rate
    );
    ensure!(args.rate.is_finite() && args.rate >= 0.0, "--rate must be a number ≥ 0 (0: no limit)");
    ensure!(args.burst > 0, "--burst must be at least 1");
    ensure!(!args.max_wait.is_zero(), "--max-wait must be longer than 0");
    Ok(())
}

fn deployment_spec(args: &DemoArgs, store_path: &Path) -> DeploymentSpec {
    let limited = args.rate > 0.0;
    DeploymentSpec {
        portal: PortalSpec {
            rate: (args.rate, args.burst),
            unlimited: !limited,
            ..PortalSpec::default()
        },
        api_seed: args.seed,
        store_url: format!("sqlite:{}", store_path.display()),
        concurrency: 16,
        lease: Duration::from_secs(10),
        max_wait: args.max_wait,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(1),
        attempt_timeout: Duration::from_secs(1),
        log_retries: args.log_retries,
        host_rate: if limited { (args.rate, args.burst) } else { (1000.0, 1000) },
        delivery_retry: (Duration::from_millis(100), Duration::from_secs(1)),
    }
}

/// Starts the workflows at their pace, runs the outage, prints progress, and waits until every
/// workflow closed and every job settled (or the hard cap). Returns the workflow ids with the
/// company each asked about.
async fn drive(
    deployment: &Deployment,
    args: &DemoArgs,
    outage: Outage,
    start_phase: Duration,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Vec<(String, u64)>> {
    let normal = Behaviour { failure_rate: args.failure_rate, ..Behaviour::default() };
    deployment.api.set(normal.clone());
    let mut api_down = false;
    let t0 = Instant::now();
    let hard_cap = start_phase + args.outage + args.max_wait + SETTLE_WITHIN;
    let mut ids = Vec::with_capacity(args.workflows);
    let mut next_progress = PROGRESS_EVERY;
    let mut next_check = Duration::ZERO;
    loop {
        let elapsed = t0.elapsed();
        let down = outage.covers(elapsed);
        if down != api_down {
            api_down = down;
            deployment.api.set(Behaviour { down, ..normal.clone() });
        }
        let due = ((elapsed.as_secs_f64() * args.start_rate) as usize + 1).min(args.workflows);
        while ids.len() < due {
            let company_id = 1000 + ids.len() as u64;
            ids.push((deployment.start_workflow(company_id).await?, company_id));
        }
        if elapsed >= next_progress {
            next_progress += PROGRESS_EVERY;
            progress(deployment, elapsed, ids.len(), args.workflows, api_down, out).await?;
        }
        if ids.len() == args.workflows && !api_down && elapsed >= next_check {
            next_check = elapsed + Duration::from_millis(100);
            if settled(deployment).await? {
                return Ok(ids);
            }
        }
        if elapsed >= hard_cap {
            writeln!(out, "  giving up waiting after {:.1} s", elapsed.as_secs_f64())?;
            return Ok(ids);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every workflow closed and no job has anything left to do (a late second send would show).
async fn settled(deployment: &Deployment) -> anyhow::Result<bool> {
    let waiting = deployment
        .emulator
        .workflows(&deployment.domain)?
        .iter()
        .any(|w| w.status == WorkflowStatus::Waiting);
    if waiting {
        return Ok(false);
    }
    let counts = deployment.running.host.store.state_counts().await?;
    Ok(counts.queued + counts.running + counts.retry_wait + counts.delivering == 0)
}

async fn progress(
    deployment: &Deployment,
    elapsed: Duration,
    started: usize,
    total: usize,
    api_down: bool,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let workflows = deployment.emulator.workflows(&deployment.domain)?;
    let waiting = workflows.iter().filter(|w| w.status == WorkflowStatus::Waiting).count();
    let counts = deployment.running.host.store.state_counts().await?;
    let (requests, failures) = deployment.api.counts();
    writeln!(
        out,
        "  {:>5.1} s  started {started}/{total}  waiting {waiting}  closed {}  | jobs: running {}, retrying {}, delivering {}, done {}  | API {} ({requests} requests, {failures} failed)",
        elapsed.as_secs_f64(),
        workflows.len() - waiting,
        counts.queued + counts.running,
        counts.retry_wait,
        counts.delivering,
        counts.done,
        if api_down { "DOWN" } else { "up" },
    )?;
    out.flush()?;
    Ok(())
}

/// Reads the emulator, the store and the fake API, and works out the summary.
async fn collect(deployment: &Deployment, ids: &[(String, u64)]) -> anyhow::Result<DemoSummary> {
    let store = &deployment.running.host.store;
    let mut jobs = Vec::new();
    let mut filter = JobFilter { limit: 500, ..JobFilter::default() };
    loop {
        let page = store.list_jobs(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.before = Some(last.id);
        jobs.extend(page);
    }
    let by_workflow: HashMap<&str, &store::Job> =
        jobs.iter().map(|job| (job.workflow_id.as_str(), job)).collect();

    let mut summary = DemoSummary {
        started: ids.len(),
        jobs: jobs.len(),
        dead: jobs.iter().filter(|j| j.state == JobState::Dead).count(),
        retries: jobs.iter().map(|j| u64::from(j.attempts.saturating_sub(1))).sum(),
        ..DemoSummary::default()
    };
    let mut all = Vec::new();
    let mut clean = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (workflow_id, company_id) in ids {
        let state = deployment.emulator.workflow(&deployment.domain, workflow_id)?;
        if state.status != WorkflowStatus::Closed {
            summary.hung += 1;
            continue;
        }
        let job = by_workflow.get(workflow_id.as_str());
        if let Some(took) = call_to_result(&state) {
            all.push(took);
            if job.is_some_and(|j| j.attempts == 1 && j.result_kind == Some(ResultKind::Success)) {
                clean.push(took);
            }
        }
        match job.and_then(|j| j.result_kind.map(|kind| (j, kind))) {
            Some((_, ResultKind::Success)) => {
                summary.with_result += 1;
                if !is_the_apis_answer(&state.return_values, *company_id) {
                    summary.wrong += 1;
                }
            }
            Some((job, ResultKind::Fallback)) => {
                summary.with_fallback += 1;
                *reasons.entry(fallback_reason(store, job).await?).or_default() += 1;
            }
            None => summary.wrong += 1,
        }
    }
    summary.latency = Latency::of(all);
    summary.latency_clean = Latency::of(clean);
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    summary.fallback_reasons = reasons;

    let calls = deployment.emulator.rest_calls(&deployment.domain);
    summary.rest_requests = calls.iter().filter(|c| !c.in_batch).count();
    summary.batches = calls.iter().filter(|c| c.method == "batch").count();
    summary.event_sends = calls
        .iter()
        .filter(|c| c.method == "bizproc.event.send" && c.status == 200 && c.error.is_none())
        .count();
    summary.activity_log_lines = calls
        .iter()
        .filter(|c| c.method == "bizproc.activity.log" && c.status == 200 && c.error.is_none())
        .count();
    summary.query_limit_exceeded =
        calls.iter().filter(|c| c.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED")).count();
    summary.duplicate_sends =
        summary.event_sends.saturating_sub(summary.with_result + summary.with_fallback);
    (summary.api_requests, summary.api_failures) = deployment.api.counts();
    Ok(summary)
}

/// `closed_at − started_at`, when the activity closed.
fn call_to_result(state: &WorkflowState) -> Option<Duration> {
    let closed: SystemTime = state.closed_at?;
    Some(closed.duration_since(state.started_at).unwrap_or_default())
}

/// Whether the returned limit and debt are what the fake API says about the company.
fn is_the_apis_answer(values: &Value, company_id: u64) -> bool {
    let number = |name: &str| -> Option<f64> {
        match values.get(name)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    let (limit, debt) = FakeApi::credit_of(company_id);
    number("limit") == Some(limit) && number("debt") == Some(debt)
}

/// The reason a job fell back (its last execution attempt's error), with numbers blanked so
/// that the same cause groups together.
async fn fallback_reason(store: &store::Store, job: &store::Job) -> anyhow::Result<String> {
    let detail = store.job(job.id).await?;
    let last = detail.as_ref().and_then(|d| {
        d.attempts.iter().filter(|a| a.kind == AttemptKind::Execute).max_by_key(|a| a.number)
    });
    let Some(attempt) = last else {
        return Ok("(no attempt recorded)".to_owned());
    };
    let outcome = attempt.outcome.map_or("unfinished", |o| o.as_str());
    let error = attempt.error.as_deref().unwrap_or("no error recorded");
    Ok(format!("{outcome}: {}", blank_numbers(error)))
}

/// Blanks the numbers in the paths of the URLs in `text`, where ids go:
/// `GET http://127.0.0.1:4100/companies/1042/credit: 503` →
/// `GET http://127.0.0.1:4100/companies/N/credit: 503`.
fn blank_numbers(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|word| {
            let Some(scheme_end) = word.find("://") else { return word.to_owned() };
            let authority = scheme_end + 3;
            let Some(path) = word[authority..].find('/').map(|at| authority + at) else {
                return word.to_owned();
            };
            let mut blanked = word[..path].to_owned();
            let mut in_number = false;
            for c in word[path..].chars() {
                if c.is_ascii_digit() {
                    if !in_number {
                        blanked.push('N');
                    }
                    in_number = true;
                } else {
                    blanked.push(c);
                    in_number = false;
                }
            }
            blanked
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_humantime() {
        assert_eq!(parse_seconds("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn latency_uses_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let l = Latency::of(samples);
        assert_eq!(l.count, 200);
        assert_eq!(l.p50, Duration::from_millis(100));
        assert_eq!(l.p99, Duration::from_millis(198));
        assert_eq!(l.max, Duration::from_millis(200));
        assert_eq!(Latency::of(vec![Duration::from_secs(1)]).p99, Duration::from_secs(1));
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }

    #[test]
    fn the_outage_is_centred_on_the_starts_or_begins_with_them() {
        let o = Outage::centred(Duration::from_secs(12), Duration::from_secs(5));
        assert_eq!((o.from, o.until), (Duration::from_millis(3500), Duration::from_millis(8500)));
        assert!(!o.covers(Duration::from_secs(3)) && o.covers(Duration::from_secs(4)));
        assert!(!o.covers(Duration::from_millis(8500)));
        let long = Outage::centred(Duration::from_secs(1), Duration::from_secs(3));
        assert_eq!((long.from, long.until), (Duration::ZERO, Duration::from_secs(3)));
        assert!(!Outage::centred(Duration::from_secs(1), Duration::ZERO).covers(Duration::ZERO));
    }

    #[test]
    fn reasons_group_by_blanking_ids_in_url_paths() {
        let reason = "gave up after 6 attempts: GET http://127.0.0.1:4100/companies/1042/credit: answered 503";
        assert_eq!(
            blank_numbers(reason),
            "gave up after 6 attempts: GET http://127.0.0.1:4100/companies/N/credit: answered 503"
        );
        assert_eq!(blank_numbers("no answer within 1s"), "no answer within 1s");
    }

    #[test]
    fn a_hang_a_second_send_or_a_wrong_value_fails_the_run() {
        assert!(DemoSummary::default().problems().is_empty());
        let hung = DemoSummary { hung: 1, ..DemoSummary::default() };
        let twice = DemoSummary { duplicate_sends: 2, ..DemoSummary::default() };
        let wrong = DemoSummary { wrong: 1, ..DemoSummary::default() };
        assert_eq!(hung.problems(), ["1 workflow(s) hung"]);
        assert_eq!(twice.problems(), ["2 result(s) sent more than once"]);
        assert_eq!(wrong.problems(), ["1 workflow(s) closed with a wrong result"]);
    }

    #[test]
    fn only_the_apis_own_numbers_count_as_its_answer() {
        let (limit, debt) = FakeApi::credit_of(1042);
        let right = serde_json::json!({"limit": limit.to_string(), "debt": debt});
        assert!(is_the_apis_answer(&right, 1042));
        assert!(!is_the_apis_answer(&right, 1043));
        assert!(!is_the_apis_answer(&serde_json::json!({"unavailable": "Y"}), 1042));
    }
}
