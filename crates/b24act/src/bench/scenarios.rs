//! The scenarios: each starts its own deployment, drives it, and reports what it measured
//! against the targets of design.md §6.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use b24_emulator::{PortalSpec, RecordedCall, WorkflowState, WorkflowStatus};

use super::deployment::{Api, CODE, Deployment, Setup, StoreKind};
use super::load::{self, Calls, LoadResult};
use super::measure::{CpuMeter, CpuShare, Latencies, megabytes};
use super::report::{Row, ScenarioReport, Target};
use super::{BenchArgs, Scenario};

/// design.md §6.
const ACKS_PER_SECOND: f64 = 10_000.0;
const ACK_P99_MS_AT_1000: f64 = 2.0;
const RESULTS_PER_SECOND_LIMITED: f64 = 95.0;
const CALL_TO_RESULT_P50_MS: f64 = 20.0;
const RSS_MB: f64 = 100.0;
const RSS_QUEUED_JOBS: u64 = 100_000;
/// Issue 7: good calls' ack p99 while 16 clients post worst-case bodies.
const ACK_P99_MS_UNDER_HOSTILE_BODIES: f64 = 50.0;
/// The server's `max_body_bytes` (the default): the hostile bodies fill it.
const HOSTILE_BODY_BYTES: usize = 1024 * 1024;
/// Just under the decoder's depth limit, so every field is decoded the whole way down.
const HOSTILE_DEPTH: usize = 63;

/// The portal limit of the `limited` scenario (Bitrix24's default: 2 requests/s, burst 50).
const PORTAL_RATE: (f64, u32) = (2.0, 50);
/// How long the workflows may make no progress before the run stops waiting for them.
const STALL: Duration = Duration::from_secs(60);
/// How long the template call may take to be accepted.
const TEMPLATE_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(
    scenario: Scenario,
    args: &BenchArgs,
    server: &Path,
) -> anyhow::Result<ScenarioReport> {
    match scenario {
        Scenario::Intake => intake(args, server).await,
        Scenario::Latency => latency(args, server).await,
        Scenario::Limited => limited(args, server).await,
        Scenario::E2e => end_to_end(args, server).await,
        Scenario::Rss => rss(args, server).await,
        Scenario::Hostile => hostile(args, server).await,
        Scenario::MultiNode => multi_node(args, server).await,
        Scenario::Console => super::console::console(args, server).await,
    }
}

/// Worst-case bodies for the decoder, as large as the server takes: appends (`k[]=1&…`) and
/// deep keys (`a[a]…[a]=1&…`).
fn hostile_bodies(bytes: usize) -> [(&'static str, String); 2] {
    let fill = |field: &str| field.repeat(bytes / field.len());
    [
        ("k[]=1 appends", fill("k[]=1&")),
        ("63-deep keys", fill(&format!("a{}=1&", "[a]".repeat(HOSTILE_DEPTH)))),
    ]
}

/// The decoder alone, in this process: the median of `runs` decodes of `body`, in ms.
fn decode_ms(body: &str, limits: &phpform::Limits, runs: usize) -> f64 {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let decoded = phpform::decode(body.as_bytes(), limits);
            let took = started.elapsed();
            std::hint::black_box(decoded.map(|form| form.len()).ok());
            took
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

/// Good calls at `--hostile-good-rate` while `--hostile-clients` connections post worst-case
/// bodies back to back; then the decoder's times on those bodies and on 10,000 and 100,000
/// appends. The bodies are refused before authentication (too many fields, missing fields), so
/// this is what anyone who can reach the server can make it do.
async fn hostile(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let deployment = Deployment::start(&backlog_setup(args), args, server).await?;
    let calls = template_calls(&deployment).await?;
    let addr = deployment.server().addr;
    let path: hyper::Uri = host::routes::action_path(CODE).parse()?;
    let bodies = hostile_bodies(HOSTILE_BODY_BYTES);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut attackers = tokio::task::JoinSet::new();
    for client in 0..args.hostile_clients {
        let body = hyper::body::Bytes::from(bodies[client % bodies.len()].1.clone());
        let (path, stop) = (path.clone(), stop.clone());
        attackers.spawn(async move {
            let (mut sent, mut refused, mut failed) = (0u64, 0u64, 0u64);
            let mut conn = load::Conn::open(addr).await.ok();
            while !stop.is_cancelled() {
                let Some(open) = conn.as_mut() else { break };
                match open.send(hyper::Method::POST, &path, body.clone()).await {
                    Ok((status, _)) if status.is_client_error() => refused += 1,
                    Ok(_) => {}
                    Err(_) => {
                        failed += 1;
                        conn = load::Conn::open(addr).await.ok();
                    }
                }
                sent += 1;
            }
            (sent, refused, failed)
        });
    }
    // Let the attack reach its pace before the good calls start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rate = f64::from(args.hostile_good_rate);
    let total = (rate * args.rate_duration.as_secs_f64()).ceil().max(1.0) as u64;
    let cpu = CpuMeter::start(deployment.pids())?;
    let attack_started = Instant::now();
    let target = load::Target { addrs: &[addr], calls: &calls, connections: args.connections };
    let mut result = target.open_loop(rate, total).await?;
    let share = cpu.stop()?;
    stop.cancel();
    let attack_seconds = attack_started.elapsed().as_secs_f64();
    let (mut sent, mut refused, mut failed) = (0, 0, 0);
    while let Some(joined) = attackers.join_next().await {
        let (s, r, f) = joined?;
        (sent, refused, failed) = (sent + s, refused + r, failed + f);
    }
    let latencies = Latencies::new(std::mem::take(&mut result.latencies_us));

    let mut report = ScenarioReport::new("hostile");
    let at = format!("good @{rate:.0}/s ");
    ack_rows(&mut report, &at, &latencies, Some(Target::AtMost(ACK_P99_MS_UNDER_HOSTILE_BODIES)));
    report.row(
        Row::new(format!("{at}errors"), result.errors() as f64, "calls")
            .target(Target::AtMost(0.0)),
    );
    report.row(Row::new(
        "hostile bodies answered 4xx per second",
        refused as f64 / attack_seconds,
        "bodies/s",
    ));
    report.row(Row::new("hostile bodies not answered", failed as f64, "bodies"));
    cpu_rows(&mut report, "", share);
    let default = phpform::Limits::default();
    let appends = |n: usize| "k[]=1&".repeat(n);
    let roomy = phpform::Limits { max_body_bytes: usize::MAX, max_fields: usize::MAX, ..default };
    report.row(Row::new("decode k[]=1 x10,000", decode_ms(&appends(10_000), &default, 21), "ms"));
    report.row(Row::new("decode k[]=1 x100,000", decode_ms(&appends(100_000), &roomy, 11), "ms"));
    for (name, body) in &bodies {
        let row = format!("decode 1 MiB of {name} (server limits)");
        report.row(Row::new(row, decode_ms(body, &default, 11), "ms"));
    }
    report.note(format!(
        "{} clients posted {} bodies of {} KiB ({}) back to back, {sent} in all; good calls: {total} \
         scheduled over {:.1} s on {} connections",
        args.hostile_clients,
        bodies.len(),
        HOSTILE_BODY_BYTES / 1024,
        bodies.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", "),
        total as f64 / rate,
        args.connections
    ));
    report.note("decode times: this process, median of repeated phpform::decode calls");
    note_problem(&mut report, "", &result);
    Ok(report)
}

/// Workers held by an API that never answers: calls pile up as queued jobs, and only the intake
/// uses the server's CPU.
pub(super) fn backlog_setup(args: &BenchArgs) -> Setup {
    Setup {
        portal: PortalSpec { unlimited: true, ..PortalSpec::default() },
        delivery: PORTAL_RATE,
        api: Api::Hanging,
        workers: args.workers,
        nodes: 1,
        store: StoreKind::Sqlite,
    }
}

/// A portal limited to [`PORTAL_RATE`], the server's limiter at the same values, an instant API.
fn limited_setup(args: &BenchArgs) -> Setup {
    Setup {
        portal: PortalSpec { rate: PORTAL_RATE, unlimited: false, ..PortalSpec::default() },
        delivery: PORTAL_RATE,
        api: Api::Instant,
        workers: args.workers,
        nodes: 1,
        store: StoreKind::Sqlite,
    }
}

async fn intake(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let deployment = Deployment::start(&backlog_setup(args), args, server).await?;
    let acks = Acks::measure(&deployment, args).await?;
    let mut report = ScenarioReport::new("intake");
    acks.rows(&mut report, "", Some(Target::AtLeast(ACKS_PER_SECOND)));
    report.note(format!("server log filter: {}", args.server_log));
    Ok(report)
}

/// Durable acks: `intake`'s closed loop on a deployment whose workers are held (a backlog
/// setup), its connections spread over every node.
struct Acks {
    result: LoadResult,
    latencies: Latencies,
    /// Jobs the store gained during the measured loop.
    stored: u64,
    share: CpuShare,
    warmup: u64,
    connections: usize,
    nodes: usize,
}

impl Acks {
    /// Warm-up calls, then `--intake-calls` calls back to back for at most `--intake-duration`
    /// on `--connections` connections, round-robin over the nodes.
    async fn measure(deployment: &Deployment, args: &BenchArgs) -> anyhow::Result<Acks> {
        let calls = template_calls(deployment).await?;
        let addrs = deployment.addrs();
        let target = load::Target { addrs: &addrs, calls: &calls, connections: args.connections };
        let warmup = (args.intake_calls / 20).min(2_000);
        if warmup > 0 {
            target.closed_loop(warmup, args.intake_duration).await?;
        }
        let stored_before = deployment.job_counts().await?.total;
        let cpu = CpuMeter::start(deployment.pids())?;
        let mut result = target.closed_loop(args.intake_calls, args.intake_duration).await?;
        let share = cpu.stop()?;
        let stored = deployment.job_counts().await?.total - stored_before;
        let latencies = Latencies::new(std::mem::take(&mut result.latencies_us));
        Ok(Acks {
            result,
            latencies,
            stored,
            share,
            warmup,
            connections: args.connections,
            nodes: addrs.len(),
        })
    }

    /// The rows, each named after `prefix`; accepted calls/s against `target`, if any.
    fn rows(&self, report: &mut ScenarioReport, prefix: &str, target: Option<Target>) {
        let Acks { result, latencies, stored, share, warmup, connections, nodes } = self;
        let rate = result.accepted as f64 / result.elapsed.as_secs_f64();
        let row = Row::new(format!("{prefix}accepted calls/s"), rate, "calls/s");
        report.row(match target {
            Some(target) => row.target(target),
            None => row,
        });
        ack_rows(report, prefix, latencies, None);
        report.row(Row::new(
            format!("{prefix}calls accepted (200)"),
            result.accepted as f64,
            "calls",
        ));
        report.row(Row::new(format!("{prefix}jobs stored by them"), *stored as f64, "jobs"));
        report.row(
            Row::new(format!("{prefix}errors"), result.errors() as f64, "calls")
                .target(Target::AtMost(0.0)),
        );
        cpu_rows(report, prefix, *share);
        report.note(format!(
            "{prefix}closed loop: {connections} keep-alive connections to {}, {} calls in {:.1} s \
             after {warmup} warm-up calls",
            node_count(*nodes),
            result.accepted + result.errors(),
            result.elapsed.as_secs_f64()
        ));
        note_problem(report, prefix, result);
    }
}

/// "1 node", "3 nodes".
fn node_count(nodes: usize) -> String {
    format!("{nodes} node{}", if nodes == 1 { "" } else { "s" })
}

async fn latency(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let deployment = Deployment::start(&backlog_setup(args), args, server).await?;
    let calls = template_calls(&deployment).await?;
    let addrs = deployment.addrs();
    let mut report = ScenarioReport::new("latency");
    for &rate in &args.rates {
        let rate = f64::from(rate);
        let total = (rate * args.rate_duration.as_secs_f64()).ceil().max(1.0) as u64;
        let cpu = CpuMeter::start(deployment.pids())?;
        let target = load::Target { addrs: &addrs, calls: &calls, connections: args.connections };
        let mut result = target.open_loop(rate, total).await?;
        let share = cpu.stop()?;
        let latencies = Latencies::new(std::mem::take(&mut result.latencies_us));
        let lag = Latencies::new(std::mem::take(&mut result.lag_us));
        let at = format!("@{rate:.0}/s ");
        let achieved = result.accepted as f64 / result.elapsed.as_secs_f64();
        report.row(Row::new(format!("{at}accepted calls/s"), achieved, "calls/s"));
        let p99_target = (rate == 1_000.0).then_some(Target::AtMost(ACK_P99_MS_AT_1000));
        ack_rows(&mut report, &at, &latencies, p99_target);
        report.row(
            Row::new(format!("{at}errors"), result.errors() as f64, "calls")
                .target(Target::AtMost(0.0)),
        );
        cpu_rows(&mut report, &at, share);
        report.row(Row::new(format!("{at}generator timer lag p99"), lag.quantile_ms(0.99), "ms"));
        report.note(format!(
            "{at}open loop: {total} calls scheduled over {:.1} s on {} connections",
            total as f64 / rate,
            args.connections
        ));
        note_problem(&mut report, &at, &result);
    }
    report.note(
        "latency counts from the scheduled send time when the connection was still busy (no \
         coordinated omission), else from the actual send",
    );
    Ok(report)
}

async fn limited(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let deployment = Deployment::start(&limited_setup(args), args, server).await?;
    let run = PortalRun::measure(&deployment, args.limited_workflows).await?;
    let memory = deployment.server().memory()?;

    let mut report = ScenarioReport::new("limited");
    run.rows(&mut report, "");
    report.row(
        Row::new("QUERY_LIMIT_EXCEEDED answers", run.refusals().len() as f64, "answers")
            .target(Target::AtMost(0.0)),
    );
    report.row(Row::new("server peak RSS", megabytes(memory.peak_bytes), "MB"));
    report.note(format!(
        "{} workflows started in {:.1} s on a portal limited to {}/s, burst {}; server \
         delivery.rate_per_second = {}, burst = {}; {} workers; instant API",
        args.limited_workflows,
        run.dispatched_in.as_secs_f64(),
        PORTAL_RATE.0,
        PORTAL_RATE.1,
        PORTAL_RATE.0,
        PORTAL_RATE.1,
        args.workers
    ));
    Ok(report)
}

/// Workflows run on a portal limited to [`PORTAL_RATE`]: what the portal saw.
struct PortalRun {
    /// When the workflows started being dispatched.
    since: SystemTime,
    dispatched_in: Duration,
    states: Vec<WorkflowState>,
    /// The portal's REST log from `since`.
    calls: Vec<RecordedCall>,
}

impl PortalRun {
    /// Lets the installation's calls drain from the portal's bucket, starts `workflows`
    /// workflows as fast as the emulator dispatches them and waits until they closed.
    async fn measure(deployment: &Deployment, workflows: usize) -> anyhow::Result<PortalRun> {
        // Let the installation's calls drain from the portal's bucket, as they would in real life.
        let drain = Duration::from_secs_f64(f64::from(PORTAL_RATE.1) / PORTAL_RATE.0);
        tokio::time::sleep(drain.min(Duration::from_secs(5))).await;
        let since = SystemTime::now();
        let dispatch = Instant::now();
        for i in 0..workflows {
            deployment.start_workflow(i as u64 + 1).await?;
            if i % 100 == 99 {
                tokio::task::yield_now().await;
            }
        }
        let dispatched_in = dispatch.elapsed();
        let states = wait_closed(deployment, workflows).await?;
        let calls = deployment
            .emulator
            .rest_calls(&deployment.domain)
            .into_iter()
            .filter(|c| c.at >= since)
            .collect();
        Ok(PortalRun { since, dispatched_in, states, calls })
    }

    /// The portal's `QUERY_LIMIT_EXCEEDED` answers, in order.
    fn refusals(&self) -> Vec<&RecordedCall> {
        self.calls.iter().filter(|c| c.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED")).collect()
    }

    /// The batches the portal took, in order.
    fn batches(&self) -> Vec<SystemTime> {
        self.calls
            .iter()
            .filter(|c| c.method == "batch" && !c.in_batch && c.status == 200)
            .map(|c| c.at)
            .collect()
    }

    /// Results delivered, overall and steady results/s (against the target), batching, and calls
    /// intake did not take; each row named after `prefix`.
    fn rows(&self, report: &mut ScenarioReport, prefix: &str) {
        let closed = closed_times(&self.states);
        report.row(Row::new(format!("{prefix}results delivered"), closed.len() as f64, "results"));
        if let (Some(first), Some(last)) =
            (self.states.iter().map(|s| s.started_at).min(), closed.last())
        {
            let span = seconds_between(first, *last);
            let overall = closed.len() as f64 / span;
            report.row(Row::new(format!("{prefix}overall results/s"), overall, "results/s"));
        }
        let batches = self.batches();
        let burst = usize::try_from(PORTAL_RATE.1).unwrap_or(usize::MAX);
        match (batches.get(burst), batches.last()) {
            (Some(&from), Some(&to)) if to > from => {
                // Each batch's results close before the portal records the batch, and after the
                // batch before it: (from, to] holds exactly the batches after the burst's last one.
                let results = closed.iter().filter(|&&t| t > from && t <= to).count();
                let rate = results as f64 / seconds_between(from, to);
                report.row(
                    Row::new(
                        format!("{prefix}steady results/s after the burst"),
                        rate,
                        "results/s",
                    )
                    .target(Target::AtLeast(RESULTS_PER_SECOND_LIMITED)),
                );
                report.note(format!(
                    "{prefix}steady state: {results} results in the {} batches after the first \
                     {burst} (the portal's burst), over {:.1} s",
                    batches.len() - burst - 1,
                    seconds_between(from, to)
                ));
            }
            _ => report.note(format!(
                "{prefix}no steady state: {} batches, all within the portal's burst of {burst}; \
                 raise --limited-workflows well above {}",
                batches.len(),
                burst * 50
            )),
        }
        let sends = |in_batch: bool| {
            self.calls
                .iter()
                .filter(|c| c.method == "bizproc.event.send" && c.in_batch == in_batch)
                .count()
        };
        report.row(Row::new(format!("{prefix}batch calls"), batches.len() as f64, "calls"));
        if !batches.is_empty() {
            report.row(Row::new(
                format!("{prefix}event.send per batch (mean)"),
                sends(true) as f64 / batches.len() as f64,
                "commands",
            ));
        }
        report.row(Row::new(
            format!("{prefix}event.send outside a batch"),
            sends(false) as f64,
            "calls",
        ));
        not_accepted_rows(report, prefix, &self.states);
    }
}

/// For each of `--nodes`, several `serve` nodes (every role, each its own port, one
/// configuration) on a fresh PostgreSQL database and one portal, installed on the first node,
/// which the portal calls: `limited`'s workflows (results per second once the burst is spent,
/// `QUERY_LIMIT_EXCEEDED` answers), then, on a fresh deployment of as many nodes with held
/// workers, `intake`'s closed loop with its connections spread over the nodes.
async fn multi_node(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let store = StoreKind::Postgres(args.postgres_url.clone());
    let mut report = ScenarioReport::new("multi-node");
    for &nodes in &args.nodes {
        let prefix = format!("{}: ", node_count(nodes));
        let setup = Setup { nodes, store: store.clone(), ..limited_setup(args) };
        // Dropped at the end of the block: its nodes stop before the next deployment starts.
        let run = {
            let deployment = Deployment::start(&setup, args, server).await?;
            PortalRun::measure(&deployment, args.limited_workflows).await?
        };
        run.rows(&mut report, &prefix);
        let refusals = run.refusals();
        let refused = refusals.len() as f64;
        report.row(Row::new(format!("{prefix}QUERY_LIMIT_EXCEEDED answers"), refused, "answers"));
        report.row(
            Row::new(
                format!("{prefix}QUERY_LIMIT_EXCEEDED after the first"),
                (refused - 1.0).max(0.0),
                "answers",
            )
            .target(Target::AtMost(0.0)),
        );
        if !refusals.is_empty() {
            let batches = run.batches();
            let when: Vec<String> = refusals
                .iter()
                .map(|refusal| {
                    let taken = batches.iter().filter(|&&at| at < refusal.at).count();
                    format!(
                        "{} at +{:.1} s after {taken} batches",
                        refusal.method,
                        seconds_between(run.since, refusal.at)
                    )
                })
                .collect();
            report.note(format!("{prefix}QUERY_LIMIT_EXCEEDED: {}", when.join("; ")));
        }
        let setup = Setup { nodes, store: store.clone(), ..backlog_setup(args) };
        let deployment = Deployment::start(&setup, args, server).await?;
        Acks::measure(&deployment, args).await?.rows(&mut report, &prefix, None);
    }
    report.note(format!(
        "results: {} workflows started at once on a portal limited to {}/s, burst {}, calling the \
         first node; each node's delivery limiter at the same values, {} workers, instant API",
        args.limited_workflows, PORTAL_RATE.0, PORTAL_RATE.1, args.workers
    ));
    report.note(format!(
        "each deployment on a fresh database at {}, dropped after it; server CPU is every node's, \
         PostgreSQL's own is not counted",
        store::redact_url(&args.postgres_url)
    ));
    Ok(report)
}

async fn end_to_end(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let unlimited = 100_000;
    let setup = Setup {
        portal: PortalSpec { unlimited: true, ..PortalSpec::default() },
        delivery: (f64::from(unlimited), unlimited),
        api: Api::Instant,
        workers: args.workers,
        nodes: 1,
        store: StoreKind::Sqlite,
    };
    let deployment = Deployment::start(&setup, args, server).await?;
    let rate = f64::from(args.e2e_rate);
    let cpu = CpuMeter::start(deployment.pids())?;
    let start = Instant::now();
    for i in 0..args.e2e_workflows {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        deployment.start_workflow(i as u64 + 1).await?;
    }
    let states = wait_closed(&deployment, args.e2e_workflows).await?;
    let share = cpu.stop()?;
    let latencies = Latencies::from_durations(
        states
            .iter()
            .filter(|s| s.status == WorkflowStatus::Closed)
            .filter_map(|s| s.closed_at?.duration_since(s.started_at).ok()),
    );
    let calls = deployment.emulator.rest_calls(&deployment.domain);
    let batches = calls.iter().filter(|c| c.method == "batch" && !c.in_batch).count();

    let mut report = ScenarioReport::new("e2e");
    let samples = latencies.len();
    report.row(
        Row::new("call → result p50", latencies.quantile_ms(0.5), "ms")
            .target(Target::AtMost(CALL_TO_RESULT_P50_MS))
            .over(samples),
    );
    report.row(Row::new("call → result p99", latencies.quantile_ms(0.99), "ms").over(samples));
    report.row(Row::new("call → result max", latencies.max_ms(), "ms").over(samples));
    report.row(Row::new("results delivered", latencies.len() as f64, "results"));
    not_accepted_rows(&mut report, "", &states);
    report.row(Row::new("batch calls", batches as f64, "calls"));
    cpu_rows(&mut report, "", share);
    report.note(format!(
        "{} workflows started at {rate:.0}/s on an unlimited portal (server limiter {unlimited}/s); \
         {} workers; instant API; from the portal's dispatch to its event.send (emulator clock)",
        args.e2e_workflows, args.workers
    ));
    Ok(report)
}

async fn rss(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let deployment = Deployment::start(&backlog_setup(args), args, server).await?;
    let calls = template_calls(&deployment).await?;
    let idle = deployment.server().memory()?;
    // The template's job holds one worker slot; the others take the first calls.
    let to_send = args.queued + args.workers as u64 - 1;
    let addrs = deployment.addrs();
    let target = load::Target { addrs: &addrs, calls: &calls, connections: args.connections };
    let result = target.closed_loop(to_send, args.scenario_timeout).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counts = deployment.job_counts().await?;
    while counts.queued < args.queued || counts.running < args.workers as u64 {
        if Instant::now() > deadline {
            bail!(
                "expected {} queued and {} running jobs, the server reports {counts:?}",
                args.queued,
                args.workers
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        counts = deployment.job_counts().await?;
    }
    // Let the server settle (no more calls, workers waiting) before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory = deployment.server().memory()?;

    let mut report = ScenarioReport::new("rss");
    report.row(Row::new("jobs queued", counts.queued as f64, "jobs"));
    report.row(Row::new("jobs running (held by the API)", counts.running as f64, "jobs"));
    let rss = Row::new("server RSS (VmRSS)", megabytes(memory.rss_bytes), "MB");
    report.row(if counts.queued >= RSS_QUEUED_JOBS {
        rss.target(Target::AtMost(RSS_MB))
    } else {
        rss
    });
    report.row(Row::new("server peak RSS (VmHWM)", megabytes(memory.peak_bytes), "MB"));
    report.row(Row::new("server RSS before the calls", megabytes(idle.rss_bytes), "MB"));
    report.row(Row::new("store on disk (db + wal)", megabytes(deployment.store_bytes()), "MB"));
    report.row(Row::new(
        "intake while filling",
        result.accepted as f64 / result.elapsed.as_secs_f64(),
        "calls/s",
    ));
    report.row(Row::new("errors", result.errors() as f64, "calls").target(Target::AtMost(0.0)));
    report.note(format!(
        "{} calls through intake on {} connections while {} workers wait on an API that does \
         not answer; memory read 2 s after the last call",
        result.accepted + result.errors(),
        args.connections,
        args.workers
    ));
    note_problem(&mut report, "", &result);
    Ok(report)
}

/// Runs one workflow through the portal and returns calls made from its body, once the server
/// has accepted it (so the portal, the token and the action are known to work).
async fn template_calls(deployment: &Deployment) -> anyhow::Result<Arc<Calls>> {
    let started = deployment.start_workflow(1).await?;
    let deadline = Instant::now() + TEMPLATE_TIMEOUT;
    loop {
        let state = deployment.emulator.workflow(&deployment.domain, &started.workflow_id)?;
        match state.deliveries.last() {
            Some(delivery) if delivery.status == Some(200) => break,
            Some(delivery) => bail!(
                "the server did not accept the template call: {:?} {:?}; {}",
                delivery.status,
                delivery.error,
                deployment.server().log_tail()
            ),
            None if Instant::now() > deadline => bail!("the template call was not delivered"),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    Ok(Arc::new(Calls::from_body(&started.body, CODE)?))
}

/// Waits until `expected` workflows stopped waiting, or nothing changed for [`STALL`]; returns
/// every workflow's state.
async fn wait_closed(
    deployment: &Deployment,
    expected: usize,
) -> anyhow::Result<Vec<WorkflowState>> {
    let mut last_closed = 0;
    let mut last_progress = Instant::now();
    loop {
        let states = deployment.emulator.workflows(&deployment.domain)?;
        let closed = states.iter().filter(|s| s.status != WorkflowStatus::Waiting).count();
        if closed >= expected {
            return Ok(states);
        }
        if closed > last_closed {
            (last_closed, last_progress) = (closed, Instant::now());
        } else if last_progress.elapsed() > STALL {
            tracing::warn!(closed, expected, "workflows stopped closing; reporting what closed");
            return Ok(states);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When each workflow closed with a result, in order.
fn closed_times(states: &[WorkflowState]) -> Vec<SystemTime> {
    let mut times: Vec<SystemTime> = states
        .iter()
        .filter(|s| s.status == WorkflowStatus::Closed)
        .filter_map(|s| s.closed_at)
        .collect();
    times.sort_unstable();
    times
}

/// The workflows whose call the server did not answer 200, and a note with why, by cause (the
/// last delivery's status or the emulator's error chain), most frequent first.
fn not_accepted_rows(report: &mut ScenarioReport, prefix: &str, states: &[WorkflowState]) {
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for state in states.iter().filter(|s| !s.deliveries.iter().any(|d| d.status == Some(200))) {
        let cause = match state.deliveries.last() {
            Some(d) => match (&d.error, d.status) {
                (Some(error), _) => error.clone(),
                (None, Some(status)) => format!("answered {status}"),
                (None, None) => "no answer".to_owned(),
            },
            None => "not dispatched".to_owned(),
        };
        *causes.entry(cause).or_default() += 1;
    }
    let total: usize = causes.values().sum();
    report.row(Row::new(format!("{prefix}calls not accepted by intake"), total as f64, "calls"));
    let mut by_count: Vec<(String, usize)> = causes.into_iter().collect();
    by_count.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    for (cause, count) in by_count.iter().take(3) {
        report.note(format!("{prefix}{count} calls not accepted: {cause}"));
    }
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64()).max(f64::EPSILON)
}

/// The ack p50, p99 (against `p99_target`, if any) and max rows.
fn ack_rows(
    report: &mut ScenarioReport,
    prefix: &str,
    latencies: &Latencies,
    p99_target: Option<Target>,
) {
    let row = |figure: &str, ms: f64| {
        Row::new(format!("{prefix}ack {figure}"), ms, "ms").over(latencies.len())
    };
    report.row(row("p50", latencies.quantile_ms(0.5)));
    let p99 = row("p99", latencies.quantile_ms(0.99));
    report.row(match p99_target {
        Some(target) => p99.target(target),
        None => p99,
    });
    report.row(row("max", latencies.max_ms()));
}

fn cpu_rows(report: &mut ScenarioReport, prefix: &str, share: CpuShare) {
    report.row(Row::new(format!("{prefix}server CPU"), share.server_cores, "cores"));
    report.row(Row::new(
        format!("{prefix}bench process CPU (generator, emulator, API)"),
        share.bench_cores,
        "cores",
    ));
}

fn note_problem(report: &mut ScenarioReport, prefix: &str, result: &LoadResult) {
    if let Some(problem) = &result.first_problem {
        report.note(format!("{prefix}first error: {problem}"));
    }
}
