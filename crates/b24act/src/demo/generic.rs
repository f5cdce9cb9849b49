//! `b24act demo --scenario generic`: a few hundred workflows through an `http` action asking
//! the fake finance system for a company's credit, with failures injected at random and an
//! outage in the middle of the run; a summary of what happened to every one of them.
//!
//! Time is compressed by settings (short backoff, short max wait), never faked: real timers,
//! real HTTP on loopback, the real store.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use anyhow::ensure;
use b24_emulator::{WorkflowSpec, WorkflowState, WorkflowStatus};
use fakes::finance::{Behaviour, FinanceApi};
use serde_json::Value;
use store::{AttemptKind, ResultKind};

use super::deployment::{
    DemoDeployment, JobTotals, PortalCalls, Settling, all_jobs, most_frequent_first, portal_limit,
    print_summary, problems, store_rows,
};
use super::{DemoArgs, row, seconds};
use crate::bench::measure::nearest_rank;
use host::config::RetryPolicy;
use sandbox::{Deployment, FinanceCreditCheck};

/// The action every generic workflow runs.
pub const CODE: &str = "check_credit";

/// How often the demo prints a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// What the demo waits, after the last start and the max wait, before it counts the
/// workflows still waiting as hung.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// The generic scenario's default share of failing requests.
const FAILURE_RATE: f64 = 0.1;
/// The generic scenario's default max wait.
const MAX_WAIT: Duration = Duration::from_secs(3);

/// The generic scenario's settings, resolved from [`DemoArgs`].
#[derive(Debug, Clone)]
struct Settings {
    workflows: usize,
    start_rate: f64,
    failure_rate: f64,
    outage: Duration,
    max_wait: Duration,
    log_retries: bool,
}

impl Settings {
    fn of(args: &DemoArgs) -> anyhow::Result<Settings> {
        ensure!(
            args.start_rate.is_finite() && args.start_rate > 0.0,
            "--start-rate must be a positive number"
        );
        Ok(Settings {
            workflows: args.workflows,
            start_rate: args.start_rate,
            failure_rate: args.failure_rate.unwrap_or(FAILURE_RATE),
            outage: args.outage,
            max_wait: args.max_wait.unwrap_or(MAX_WAIT),
            log_retries: args.log_retries,
        })
    }
}

/// Latency figures over a set of workflows, from the call (`started_at`) to the activity's
/// close (`closed_at`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let rank = |p: f64| nearest_rank(&samples, p).unwrap_or_default();
        Latency {
            count: samples.len(),
            p50: rank(0.50),
            p90: rank(0.90),
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
    /// Jobs that ended dead: nothing was sent for them (must be 0).
    pub dead: usize,
    /// Jobs `done` without the portal's word: a resend after an uncertain send was answered
    /// "not found" (information, not a problem).
    pub unconfirmed_deliveries: usize,
    /// Execution attempts beyond the first, over all jobs.
    pub retries: u64,
    /// `bizproc.event.send` commands the portal accepted.
    pub event_sends: usize,
    /// Results sent more than once: event tokens in two or more `bizproc.event.send` requests,
    /// whatever the portal answered (must be 0).
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
        problems(
            &[
                (self.hung, "workflow(s) hung"),
                (self.duplicate_sends, "result(s) sent more than once"),
                (self.wrong, "workflow(s) closed with a wrong result"),
                (self.dead, "job(s) ended dead"),
            ],
            self.query_limit_exceeded,
        )
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
                "{} accepted for {} closed workflows; sent more than once: {} (must be 0)",
                self.event_sends,
                self.with_result + self.with_fallback,
                self.duplicate_sends
            ),
        );
        store_rows(&mut text, self.jobs, self.dead, self.unconfirmed_deliveries);
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

/// The host's one action: an `http` action asking the finance API for a company's credit, with
/// a fallback that names the reason.
fn action_toml(api: &FinanceApi, settings: &Settings) -> String {
    FinanceCreditCheck {
        code: CODE,
        name: "Check credit",
        api,
        retry: RetryPolicy {
            max_wait: settings.max_wait,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            jitter: 0.2,
            attempt_timeout: Duration::from_secs(1),
            deadline_margin: Duration::from_secs(1),
            log_retries: settings.log_retries,
        },
        flags_unavailable: true,
    }
    .to_toml()
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

/// Runs the generic scenario, writing progress and the summary to `out`.
pub async fn run(args: &DemoArgs, out: &mut impl std::io::Write) -> anyhow::Result<DemoSummary> {
    let settings = Settings::of(args)?;
    let wall = Instant::now();
    let lease = Duration::from_secs(10);
    let demo = DemoDeployment::start(args, CODE, lease, |api| action_toml(api, &settings)).await?;
    let (deployment, api) = (&demo.deployment, &demo.api);
    let start_phase = Duration::from_secs_f64(settings.workflows as f64 / settings.start_rate);
    let outage = Outage::centred(start_phase, settings.outage);
    writeln!(
        out,
        "b24act demo --scenario generic: {} workflows through `{CODE}` (http → fake finance API at {}), {} per second",
        settings.workflows,
        api.url(),
        settings.start_rate
    )?;
    writeln!(
        out,
        "  API: {:.0}% of requests fail; fully down from {:.1} s to {:.1} s. Max wait {}; portal limit {}; store {}",
        settings.failure_rate * 100.0,
        outage.from.as_secs_f64(),
        outage.until.as_secs_f64(),
        seconds(settings.max_wait),
        portal_limit(args),
        demo.store_path.display()
    )?;

    let drive = drive(deployment, api, &settings, outage, start_phase, out).await;
    let collected = match drive {
        Ok(ids) => collect(deployment, api, &ids).await,
        Err(error) => Err(error),
    };
    let mut summary = demo.shut_down(collected).await?;
    summary.wall_time = wall.elapsed();
    print_summary(&summary.render(), args, out)?;
    Ok(summary)
}

async fn drive(
    deployment: &Deployment,
    api: &FinanceApi,
    args: &Settings,
    outage: Outage,
    start_phase: Duration,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Vec<(String, u64)>> {
    let normal = Behaviour { failure_rate: args.failure_rate, ..Behaviour::default() };
    api.set(normal.clone());
    let mut api_down = false;
    let t0 = Instant::now();
    let hard_cap = start_phase + args.outage + args.max_wait + SETTLE_WITHIN;
    let mut ids = Vec::with_capacity(args.workflows);
    let mut next_progress = PROGRESS_EVERY;
    let mut settling = Settling::until(hard_cap);
    loop {
        let elapsed = t0.elapsed();
        let down = outage.covers(elapsed);
        if down != api_down {
            api_down = down;
            api.set(Behaviour { down, ..normal.clone() });
        }
        let due = ((elapsed.as_secs_f64() * args.start_rate) as usize + 1).min(args.workflows);
        while ids.len() < due {
            let company_id = 1 + ids.len() as u64 % fakes::finance::SEEDED_COMPANIES;
            ids.push((start_workflow(deployment, company_id).await?, company_id));
        }
        if elapsed >= next_progress {
            next_progress += PROGRESS_EVERY;
            progress(deployment, api, elapsed, ids.len(), args.workflows, api_down, out).await?;
        }
        let ready = ids.len() == args.workflows && !api_down;
        let is_running = |w: &WorkflowState| w.status == WorkflowStatus::Waiting;
        if settling.done(deployment, elapsed, ready, is_running, out).await? {
            return Ok(ids);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a workflow running the action for `company_id`; returns its id.
async fn start_workflow(deployment: &Deployment, company_id: u64) -> anyhow::Result<String> {
    let spec = WorkflowSpec {
        domain: deployment.domain().to_owned(),
        code: CODE.into(),
        properties: serde_json::json!({ "company_id": company_id }),
        // The demo measures hanging itself; the portal waits for ever, as it may.
        timeout_duration: 0,
        // The instance stays: a second send is accepted as a no-op rather than answered "404"
        // (the summary counts it either way).
        finish_after: None,
        ..WorkflowSpec::default()
    };
    Ok(deployment.emulator().start_workflow(spec).await?.workflow_id)
}

async fn progress(
    deployment: &Deployment,
    api: &FinanceApi,
    elapsed: Duration,
    started: usize,
    total: usize,
    api_down: bool,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let workflows = deployment.emulator().workflows(deployment.domain())?;
    let waiting = workflows.iter().filter(|w| w.status == WorkflowStatus::Waiting).count();
    let counts = deployment.store().state_counts().await?;
    let counts_api = api.counts();
    let (requests, failures) = (counts_api.requests, counts_api.failures());
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
async fn collect(
    deployment: &Deployment,
    api: &FinanceApi,
    ids: &[(String, u64)],
) -> anyhow::Result<DemoSummary> {
    let store = deployment.store();
    let jobs = all_jobs(store).await?;
    let by_workflow: HashMap<&str, &store::Job> =
        jobs.iter().map(|job| (job.call.workflow_id.as_str(), job)).collect();

    let JobTotals { jobs: stored, dead, unconfirmed_deliveries, retries } = JobTotals::of(&jobs);
    let mut summary = DemoSummary {
        started: ids.len(),
        jobs: stored,
        dead,
        unconfirmed_deliveries,
        retries,
        ..DemoSummary::default()
    };
    let mut all = Vec::new();
    let mut clean = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (workflow_id, company_id) in ids {
        let state = deployment.emulator().workflow(deployment.domain(), workflow_id)?;
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
                if !is_the_apis_answer(api, &state.return_values, *company_id) {
                    summary.wrong += 1;
                }
            }
            Some((job, ResultKind::Fallback)) => {
                summary.with_fallback += 1;
                *reasons.entry(fallback_reason(store, job).await?).or_default() += 1;
            }
            // No stored result, or one typed in by hand (the demo has no operator).
            Some((_, ResultKind::Manual)) | None => summary.wrong += 1,
        }
    }
    summary.latency = Latency::of(all);
    summary.latency_clean = Latency::of(clean);
    summary.fallback_reasons = most_frequent_first(reasons);

    let calls = PortalCalls::of(&deployment.emulator().rest_calls(deployment.domain()));
    summary.rest_requests = calls.rest_requests;
    summary.batches = calls.batches;
    summary.event_sends = calls.event_sends;
    summary.activity_log_lines = calls.activity_log_lines;
    summary.query_limit_exceeded = calls.query_limit_exceeded;
    summary.duplicate_sends = calls.results_sent_more_than_once;
    let counts = api.counts();
    (summary.api_requests, summary.api_failures) = (counts.requests, counts.failures());
    Ok(summary)
}

/// `closed_at − started_at`, when the activity closed.
fn call_to_result(state: &WorkflowState) -> Option<Duration> {
    let closed: SystemTime = state.closed_at?;
    Some(closed.duration_since(state.started_at).unwrap_or_default())
}

/// Whether the returned limit and debt are what the fake API says about the company.
fn is_the_apis_answer(api: &FinanceApi, values: &Value, company_id: u64) -> bool {
    let number = |name: &str| -> Option<f64> {
        match values.get(name)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    let Some((limit, debt)) = api.company(company_id) else { return false };
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
pub(crate) fn blank_numbers(text: &str) -> String {
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
    fn latency_uses_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let l = Latency::of(samples);
        assert_eq!(l.count, 200);
        assert_eq!(l.p50, Duration::from_millis(100));
        assert_eq!(l.p90, Duration::from_millis(180));
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
    fn a_hang_a_second_send_a_wrong_value_or_a_dead_job_fails_the_run() {
        assert!(DemoSummary::default().problems().is_empty());
        let hung = DemoSummary { hung: 1, ..DemoSummary::default() };
        let twice = DemoSummary { duplicate_sends: 2, ..DemoSummary::default() };
        let wrong = DemoSummary { wrong: 1, ..DemoSummary::default() };
        let dead = DemoSummary { dead: 3, ..DemoSummary::default() };
        assert_eq!(hung.problems(), ["1 workflow(s) hung"]);
        assert_eq!(twice.problems(), ["2 result(s) sent more than once"]);
        assert_eq!(wrong.problems(), ["1 workflow(s) closed with a wrong result"]);
        assert_eq!(dead.problems(), ["3 job(s) ended dead"]);
        let unconfirmed = DemoSummary { unconfirmed_deliveries: 1, ..DemoSummary::default() };
        assert!(unconfirmed.problems().is_empty());
    }

    #[tokio::test]
    async fn only_the_apis_own_numbers_count_as_its_answer() {
        let api = FinanceApi::start(1).await.unwrap();
        let (limit, debt) = api.company(42).unwrap();
        let right = serde_json::json!({"limit": limit.to_string(), "debt": debt});
        assert!(is_the_apis_answer(&api, &right, 42));
        assert!(!is_the_apis_answer(&api, &serde_json::json!({"unavailable": "Y"}), 42));
        let other = (1..=100).find(|&id| api.company(id) != Some((limit, debt))).unwrap();
        assert!(!is_the_apis_answer(&api, &right, other));
    }
}
