//! `b24act demo` (the default scenario): the reference case of design.md §2, run as written.
//!
//! A distributor approves shipment requests with deferred payment. Each request is a CRM deal
//! (`COMPANY_ID`, `OPPORTUNITY` = the amount) on the emulated portal, running the
//! credit-approval template ([`b24_emulator::templates::CreditApproval`]): the action
//! `check_credit_limit` (the host's `credit_limit` connector) asks the finance system
//! ([`fakes::finance::FinanceApi`]) for the company's limit and debt; approval required → a task
//! for the CFO, whom the demo plays (answering after a seeded delay, by a seeded rule);
//! otherwise automatic approval and `STAGE_ID = APPROVED`. The finance system fails a share of
//! its requests at random and is down for a maintenance window; the action retries within its
//! max wait (30 minutes), then sends the request to the CFO with the reason.
//!
//! Time is compressed by one factor (`--time-factor`, default 120): every duration of the case
//! — the arrivals, the max wait, the backoff, the attempt timeout, the maintenance window, the
//! CFO's answers — is divided by it, and the run uses real timers, real HTTP on loopback and
//! the real store. Measured times are shown as measured and multiplied back by the factor
//! ("real"); what does not compress (loopback round trips, the portal's 2 requests/s) is
//! multiplied too, so the real figures are pessimistic.
//!
//! Every figure printed is read at the end from the emulator (workflows, steps, tasks, the
//! document's stage, REST calls), the host's store (jobs, attempts, result kinds) and the fake
//! (its book and its counters); decisions are checked against the book.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use b24::report::ErrorChain;
use b24_emulator::templates::{CHECK_STEP, CreditApproval};
use b24_emulator::{
    DocumentSpec, ProcessStatus, StepKind, TaskCompletion, TaskOutcome, WorkflowState,
};
use fakes::finance::{Behaviour, FinanceApi, SEEDED_COMPANIES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use store::ResultKind;

use super::deployment::{
    CLIENT_ID, DemoDeployment, JobTotals, PortalCalls, Settling, all_jobs, most_frequent_first,
    portal_limit, print_summary, problems, store_rows,
};
use super::{DemoArgs, Latency, row, seconds};
use host::config::RetryPolicy;
use sandbox::{Deployment, retry_settings};

/// The action's code, as in design.md §2.
pub const CODE: &str = "check_credit_limit";
/// The CFO's user id on the portal.
const CFO: u64 = 7;
const APPROVED: &str = "APPROVED";
const REJECTED: &str = "REJECTED";

/// The reference case's defaults, in real time.
const FAILURE_RATE: f64 = 0.04;
const MAX_WAIT: Duration = Duration::from_secs(30 * 60);
/// The action's retry policy in real time: the product's defaults (`[actions.retry]`).
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(5 * 60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);
/// The CFO approves a request over the limit by at most this share of the credit limit.
const CFO_TOLERANCE: f64 = 0.2;
/// …and, beyond it, approves this share anyway (a customer the CFO knows).
const CFO_GOODWILL: f64 = 0.25;

/// How often the demo prints a progress line (wall time).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often the simulated CFO looks at the task list (wall time).
const CFO_POLL: Duration = Duration::from_millis(25);
/// What the demo waits (wall time), once everything should have ended, before it counts the
/// workflows still running as hung.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

/// The reference case's settings, resolved from [`DemoArgs`]; durations in real time.
#[derive(Debug, Clone)]
struct Settings {
    requests: usize,
    factor: f64,
    arrivals: Duration,
    maintenance: (Duration, Duration),
    max_wait: Duration,
    failure_rate: f64,
    cfo_response: Duration,
    seed: u64,
    log_retries: bool,
}

impl Settings {
    fn of(args: &DemoArgs) -> anyhow::Result<Settings> {
        ensure!(
            args.time_factor.is_finite() && args.time_factor >= 1.0,
            "--time-factor must be a number ≥ 1"
        );
        let settings = Settings {
            requests: args.workflows,
            factor: args.time_factor,
            arrivals: args.arrivals,
            maintenance: (args.maintenance_at, args.maintenance_at + args.maintenance_for),
            max_wait: args.max_wait.unwrap_or(MAX_WAIT),
            failure_rate: args.failure_rate.unwrap_or(FAILURE_RATE),
            cfo_response: args.cfo_response,
            seed: args.seed,
            log_retries: args.log_retries,
        };
        ensure!(
            settings.compress(settings.max_wait) >= Duration::from_millis(100),
            "--max-wait / --time-factor must leave at least 100 ms of wall time"
        );
        Ok(settings)
    }

    /// A real duration in wall time: divided by the factor (at least a millisecond).
    fn compress(&self, real: Duration) -> Duration {
        real.div_f64(self.factor).max(Duration::from_millis(1))
    }

    /// A measured wall time in real time.
    fn expand(&self, wall: Duration) -> Duration {
        wall.mul_f64(self.factor)
    }

    /// How long a worker holds a job: four attempts' worth, at least 10 s.
    fn lease(&self) -> Duration {
        (self.compress(ATTEMPT_TIMEOUT) * 4).max(Duration::from_secs(10))
    }

    /// The host's one action: examples/b24act.toml's `check_credit_limit` against the fake
    /// finance API, its durations compressed.
    fn action_toml(&self, api: &FinanceApi) -> String {
        let retry = RetryPolicy {
            max_wait: self.compress(self.max_wait),
            backoff_base: self.compress(BACKOFF_BASE),
            backoff_cap: self.compress(BACKOFF_CAP),
            jitter: 0.2,
            attempt_timeout: self.compress(ATTEMPT_TIMEOUT),
            deadline_margin: self.compress(DEADLINE_MARGIN),
            log_retries: self.log_retries,
        };
        let mut action = sandbox::reference_action_against(api);
        sandbox::set(&mut action, "retry", retry_settings(&retry));
        sandbox::action_toml(&action)
    }
}

/// One shipment request: who asks for how much, and what became of it.
#[derive(Debug, Clone)]
struct Request {
    company_id: u64,
    amount: f64,
    document_id: Vec<String>,
    workflow_id: String,
}

/// Figures over a set of cycle times, as measured and in real time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cycle {
    pub wall: Latency,
    pub real: Latency,
}

/// What happened to the shipment requests; printed at the end and returned for tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreditSummary {
    pub requests: usize,
    pub time_factor: f64,
    /// The action's max wait, in real time.
    pub max_wait: Duration,
    /// Requests whose amount is within the available limit by the finance system's book.
    pub within_limit_by_book: usize,
    /// The check answered "no approval required": stage set to approved with nobody involved.
    pub auto_approved: usize,
    /// Routed to the CFO because the amount exceeds the available limit.
    pub cfo_over_limit: usize,
    /// Routed to the CFO because the finance system stayed unreachable past the max wait (the
    /// action's fallback).
    pub cfo_unreachable: usize,
    /// Why the check gave up, as the workflow got it (numbers in URLs blanked), most frequent
    /// first.
    pub unreachable_reasons: Vec<(String, usize)>,
    pub cfo_approved: usize,
    pub cfo_rejected: usize,
    /// Decisions that contradict the book (an automatic approval over the limit, an "over the
    /// limit" within it), or a stage that is not what the decision says (must be 0).
    pub wrong: usize,
    /// Still running when the demo stopped waiting (must be 0).
    pub hung: usize,
    /// Ended in the `Failed` state (must be 0).
    pub failed: usize,
    /// Request → stage set, over the automatic approvals.
    pub auto_cycle: Cycle,
    /// Request → stage set, over the requests the CFO decided.
    pub cfo_cycle: Cycle,
    /// Jobs the host stored (one per check), and those that ended dead (must be 0).
    pub jobs: usize,
    pub dead: usize,
    /// Jobs `done` without the portal's word: a resend after an uncertain send was answered
    /// "not found" (information, not a problem).
    pub unconfirmed_deliveries: usize,
    /// Execution attempts beyond the first, over all jobs.
    pub retries: u64,
    pub finance_requests: u64,
    pub finance_unavailable: u64,
    /// `bizproc.event.send` commands the portal accepted.
    pub event_sends: usize,
    /// Results sent more than once: event tokens in two or more `bizproc.event.send` requests,
    /// whatever the portal answered (must be 0).
    pub duplicate_sends: usize,
    /// Every REST request the portal received, batch sub-commands not counted separately.
    pub rest_requests: usize,
    pub batches: usize,
    pub query_limit_exceeded: usize,
    pub wall_time: Duration,
}

impl CreditSummary {
    /// The CFO's share of the requests.
    pub fn routed_to_cfo(&self) -> usize {
        self.cfo_over_limit + self.cfo_unreachable
    }

    /// Why the run counts as failed, if it does.
    pub fn problems(&self) -> Vec<String> {
        problems(
            &[
                (self.hung, "workflow(s) hung"),
                (self.failed, "workflow(s) failed"),
                (self.duplicate_sends, "result(s) sent more than once"),
                (self.wrong, "decision(s) contradict the book"),
                (self.dead, "job(s) ended dead"),
            ],
            self.query_limit_exceeded,
        )
    }

    /// The summary as the demo prints it.
    pub fn render(&self) -> String {
        let share = |n: usize| {
            if self.requests == 0 { 0.0 } else { n as f64 * 100.0 / self.requests as f64 }
        };
        let counted = |n: usize| format!("{n} ({:.1}%)", share(n));
        let mut text = String::new();
        row(&mut text, "shipment requests", self.requests);
        row(&mut text, "approved automatically", counted(self.auto_approved));
        row(&mut text, "routed to the CFO", counted(self.routed_to_cfo()));
        let _ = writeln!(text, "    {:>5} × over the available limit", self.cfo_over_limit);
        let _ = writeln!(
            text,
            "    {:>5} × finance system unreachable past the max wait ({})",
            self.cfo_unreachable,
            humantime::format_duration(self.max_wait)
        );
        for (reason, count) in &self.unreachable_reasons {
            let _ = writeln!(text, "            {count:>5} × {reason}");
        }
        row(
            &mut text,
            "the CFO approved / rejected",
            format!("{} / {}", self.cfo_approved, self.cfo_rejected),
        );
        row(&mut text, "within the limit by the book", counted(self.within_limit_by_book));
        row(&mut text, "decisions against the book (must be 0)", self.wrong);
        row(&mut text, "hung (must be 0)", self.hung);
        row(&mut text, "failed workflows (must be 0)", self.failed);
        text.push_str("  request → stage set (wall time, and × the factor as real time)\n");
        row(&mut text, "  approved automatically", cycle(&self.auto_cycle));
        row(&mut text, "  decided by the CFO", cycle(&self.cfo_cycle));
        row(&mut text, "retries", self.retries);
        row(
            &mut text,
            "finance API requests / unavailable",
            format!("{} / {}", self.finance_requests, self.finance_unavailable),
        );
        row(
            &mut text,
            "results sent",
            format!(
                "{} accepted for {} checks; sent more than once: {} (must be 0)",
                self.event_sends,
                self.auto_approved + self.routed_to_cfo(),
                self.duplicate_sends
            ),
        );
        store_rows(&mut text, self.jobs, self.dead, self.unconfirmed_deliveries);
        row(
            &mut text,
            "portal REST requests",
            format!("{} ({} batches)", self.rest_requests, self.batches),
        );
        row(&mut text, "QUERY_LIMIT_EXCEEDED (must be 0)", self.query_limit_exceeded);
        row(
            &mut text,
            "wall time",
            format!(
                "{:.1} s (time ×{}: {} of real time)",
                self.wall_time.as_secs_f64(),
                self.time_factor,
                real(self.wall_time.mul_f64(self.time_factor))
            ),
        );
        text
    }
}

fn cycle(c: &Cycle) -> String {
    if c.wall.count == 0 {
        return "–".to_owned();
    }
    format!(
        "p50 {} · p90 {} · max {}  =  real p50 {} · p90 {} · max {}  (n = {})",
        seconds(c.wall.p50),
        seconds(c.wall.p90),
        seconds(c.wall.max),
        real(c.real.p50),
        real(c.real.p90),
        real(c.real.max),
        c.wall.count
    )
}

/// A real-time duration to the second or, under a minute, to a tenth: `4m 12s`, `8.4s`.
fn real(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        return format!("{:.1}s", d.as_secs_f64());
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Who asks for how much: companies drawn from the book, amounts spread around what each has
/// available so that about seven in ten are within it (a company over its limit asks for
/// 5–30% of the limit, and always needs approval).
fn plan(api: &FinanceApi, requests: usize, seed: u64) -> Vec<(u64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5417_9e9d_0c3a_11b7);
    (0..requests)
        .map(|_| {
            let company_id = rng.random_range(1..=SEEDED_COMPANIES);
            let (limit, debt) = api.company(company_id).unwrap_or((0.0, 0.0));
            let available = limit - debt;
            let raw = if available >= 1_000.0 {
                available * rng.random_range(0.2..1.15)
            } else {
                limit * rng.random_range(0.05..0.3)
            };
            (company_id, ((raw / 100.0).round() * 100.0).max(100.0))
        })
        .collect()
}

/// The CFO's decision on a request, given the book: approve up to [`CFO_TOLERANCE`] of the
/// credit limit over what is available, and a seeded [`CFO_GOODWILL`] share beyond.
fn cfo_decides(book: Option<(f64, f64)>, amount: f64, rng: &mut StdRng) -> TaskCompletion {
    let Some((limit, debt)) = book else {
        return TaskCompletion {
            outcome: TaskOutcome::Rejected,
            comment: "the company is not in the book".into(),
        };
    };
    let available = limit - debt;
    if amount <= available {
        return TaskCompletion {
            outcome: TaskOutcome::Approved,
            comment: "within the limit".into(),
        };
    }
    let over = amount - available;
    if over <= limit * CFO_TOLERANCE || rng.random_bool(CFO_GOODWILL) {
        TaskCompletion {
            outcome: TaskOutcome::Approved,
            comment: format!("approved {over:.2} over the available limit"),
        }
    } else {
        TaskCompletion {
            outcome: TaskOutcome::Rejected,
            comment: format!("{over:.2} over the available limit"),
        }
    }
}

/// Runs the reference case, writing progress and the summary to `out`.
pub async fn run(args: &DemoArgs, out: &mut impl std::io::Write) -> anyhow::Result<CreditSummary> {
    let settings = Settings::of(args)?;
    let wall = Instant::now();
    let demo = DemoDeployment::start(args, CODE, settings.lease(), |api| settings.action_toml(api))
        .await?;
    let (deployment, api) = (&demo.deployment, &demo.api);
    let template = CreditApproval {
        client_id: Some(CLIENT_ID.into()),
        cfo_user_id: CFO,
        approved_stage: APPROVED.into(),
        rejected_stage: REJECTED.into(),
        ..CreditApproval::new(CODE)
    };
    let template = deployment
        .emulator()
        .create_template(deployment.domain(), template.template())
        .context("storing the credit-approval template")?;

    let (m_from, m_until) = settings.maintenance;
    writeln!(
        out,
        "b24act demo: {} shipment requests through the credit approval (`{CODE}`, credit_limit → fake finance API at {})",
        settings.requests,
        api.url()
    )?;
    writeln!(
        out,
        "  time ×{}: 1 s of wall time is {} of real time. Requests arrive over {}; the action waits up to {}",
        settings.factor,
        real(Duration::from_secs(1).mul_f64(settings.factor)),
        humantime::format_duration(settings.arrivals),
        humantime::format_duration(settings.max_wait),
    )?;
    writeln!(
        out,
        "  finance API: {:.0}% of requests fail; maintenance from {} to {}. The CFO answers in about {}. Portal limit {}; store {}",
        settings.failure_rate * 100.0,
        humantime::format_duration(m_from),
        humantime::format_duration(m_until),
        humantime::format_duration(settings.cfo_response),
        portal_limit(args),
        demo.store_path.display()
    )?;

    let run = Run { deployment, api, settings: &settings, template: template.id };
    let requests = run.drive(out).await;
    let collected = match requests {
        Ok(requests) => run.collect(&requests).await,
        Err(error) => Err(error),
    };
    let mut summary = demo.shut_down(collected).await?;
    summary.wall_time = wall.elapsed();
    print_summary(&summary.render(), args, out)?;
    Ok(summary)
}

/// The running case.
struct Run<'a> {
    deployment: &'a Deployment,
    api: &'a FinanceApi,
    settings: &'a Settings,
    template: u64,
}

impl Run<'_> {
    fn domain(&self) -> &str {
        self.deployment.domain()
    }

    /// Starts the requests at their pace, plays the CFO, prints progress, and waits until
    /// every workflow ended and every job settled (or the hard cap).
    async fn drive(&self, out: &mut impl std::io::Write) -> anyhow::Result<Vec<Request>> {
        let s = self.settings;
        let plan = plan(self.api, s.requests, s.seed);
        let mut cfo_rng = StdRng::seed_from_u64(s.seed ^ 0xcf0_cf0_cf0);
        let spacing = s.compress(s.arrivals).div_f64(s.requests as f64);
        let (m_from, m_until) = (s.compress(s.maintenance.0), s.compress(s.maintenance.1));
        let t0 = Instant::now();
        // Maintenance windows are measured from the API's start; the demo's from now.
        let offset = self.api.elapsed();
        let mut behaviour = Behaviour { failure_rate: s.failure_rate, ..Behaviour::default() };
        if m_until > m_from {
            behaviour = behaviour.down_between(offset + m_from, offset + m_until);
        }
        self.api.set(behaviour);

        let quiet_from = s.compress(s.arrivals).max(m_until);
        let hard_cap = quiet_from
            + s.compress(s.max_wait)
            + s.compress(s.cfo_response).mul_f64(1.5)
            + s.compress(BACKOFF_CAP)
            + SETTLE_WITHIN;
        let mut requests: Vec<Request> = Vec::with_capacity(s.requests);
        let mut answers: HashMap<u64, (Instant, TaskCompletion)> = HashMap::new();
        let mut answered: HashSet<u64> = HashSet::new();
        let mut next_progress = PROGRESS_EVERY;
        let mut next_cfo = Duration::ZERO;
        let mut settling = Settling::until(hard_cap);
        loop {
            let elapsed = t0.elapsed();
            let due = if spacing.is_zero() {
                s.requests
            } else {
                ((elapsed.as_secs_f64() / spacing.as_secs_f64()) as usize + 1).min(s.requests)
            };
            while requests.len() < due {
                let (company_id, amount) = plan[requests.len()];
                requests.push(self.start(requests.len() + 1, company_id, amount).await?);
            }
            if elapsed >= next_cfo {
                next_cfo = elapsed + CFO_POLL;
                self.play_cfo(&requests, &mut answers, &mut answered, &mut cfo_rng)?;
            }
            if elapsed >= next_progress {
                next_progress += PROGRESS_EVERY;
                self.progress(elapsed, requests.len(), (m_from, m_until), out).await?;
            }
            let ready = requests.len() == s.requests && elapsed >= quiet_from;
            let is_running = |w: &WorkflowState| w.ended_at.is_none();
            if settling.done(self.deployment, elapsed, ready, is_running, out).await? {
                return Ok(requests);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Creates request `n`'s deal and starts the approval on it.
    async fn start(&self, n: usize, company_id: u64, amount: f64) -> anyhow::Result<Request> {
        let mut fields = serde_json::Map::new();
        fields.insert("TITLE".into(), json!(format!("Shipment request #{n}")));
        fields.insert("COMPANY_ID".into(), json!(company_id));
        fields.insert("OPPORTUNITY".into(), json!(amount));
        fields.insert("CURRENCY_ID".into(), json!("RUB"));
        fields.insert("STAGE_ID".into(), json!("NEW"));
        let emulator = self.deployment.emulator();
        let document = emulator
            .create_document(self.domain(), DocumentSpec { fields, ..DocumentSpec::default() })
            .context("creating a deal")?;
        let workflow_id = emulator
            .start_template(self.domain(), self.template, &document.document_id)
            .await
            .context("starting the approval")?;
        Ok(Request { company_id, amount, document_id: document.document_id, workflow_id })
    }

    /// The CFO: notices new tasks, answers each after a seeded delay, by the seeded rule.
    fn play_cfo(
        &self,
        requests: &[Request],
        answers: &mut HashMap<u64, (Instant, TaskCompletion)>,
        answered: &mut HashSet<u64>,
        rng: &mut StdRng,
    ) -> anyhow::Result<()> {
        let emulator = self.deployment.emulator();
        let now = Instant::now();
        for task in emulator.open_tasks(self.domain())? {
            if task.user_id != CFO || answered.contains(&task.task_id) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(entry) = answers.entry(task.task_id) {
                let request = requests.iter().find(|r| r.workflow_id == task.workflow_id);
                let (company, amount) = request.map_or((0, 0.0), |r| (r.company_id, r.amount));
                let decision = cfo_decides(self.api.company(company), amount, rng);
                let delay = self
                    .settings
                    .compress(self.settings.cfo_response)
                    .mul_f64(rng.random_range(0.5..1.5));
                entry.insert((now + delay, decision));
            }
        }
        let due: Vec<u64> =
            answers.iter().filter(|(_, (at, _))| *at <= now).map(|(id, _)| *id).collect();
        for task_id in due {
            if let Some((_, decision)) = answers.remove(&task_id) {
                answered.insert(task_id);
                if let Err(error) = emulator.complete_task(self.domain(), task_id, decision) {
                    tracing::warn!(task_id, error = %ErrorChain(&error), "the CFO could not complete a task");
                }
            }
        }
        Ok(())
    }

    async fn progress(
        &self,
        elapsed: Duration,
        started: usize,
        maintenance: (Duration, Duration),
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<()> {
        let workflows = self.deployment.emulator().workflows(self.domain())?;
        let count =
            |status: ProcessStatus| workflows.iter().filter(|w| w.process_status == status).count();
        let jobs = self.deployment.store().state_counts().await?;
        let api = self.api.counts();
        let down = elapsed >= maintenance.0 && elapsed < maintenance.1;
        writeln!(
            out,
            "  {:>5.1} s = {:>7} real  requests {started}/{}  checking {}  with the CFO {}  done {}  | jobs retrying {} | finance API {} ({} requests, {} unavailable)",
            elapsed.as_secs_f64(),
            real(self.settings.expand(elapsed)),
            self.settings.requests,
            count(ProcessStatus::WaitingForActivity) + count(ProcessStatus::Running),
            count(ProcessStatus::WaitingForTask),
            count(ProcessStatus::Completed),
            jobs.retry_wait,
            if down { "IN MAINTENANCE" } else { "up" },
            api.requests,
            api.unavailable,
        )?;
        out.flush()?;
        Ok(())
    }

    /// Reads the emulator, the store and the fake, and works out the summary.
    async fn collect(&self, requests: &[Request]) -> anyhow::Result<CreditSummary> {
        let s = self.settings;
        let jobs = all_jobs(self.deployment.store()).await?;
        let by_workflow: HashMap<&str, &store::Job> =
            jobs.iter().map(|job| (job.call.workflow_id.as_str(), job)).collect();
        let totals = JobTotals::of(&jobs);
        let mut summary = CreditSummary {
            requests: requests.len(),
            time_factor: s.factor,
            max_wait: s.max_wait,
            jobs: totals.jobs,
            dead: totals.dead,
            unconfirmed_deliveries: totals.unconfirmed_deliveries,
            retries: totals.retries,
            ..CreditSummary::default()
        };
        let (mut auto, mut cfo) = (Vec::new(), Vec::new());
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let emulator = self.deployment.emulator();
        for request in requests {
            let book = self.api.company(request.company_id);
            let available = book.map(|(limit, debt)| limit - debt);
            let within = available.is_some_and(|a| request.amount <= a);
            summary.within_limit_by_book += usize::from(within);
            let state = emulator.workflow(self.domain(), &request.workflow_id)?;
            match state.process_status {
                ProcessStatus::Completed => {}
                ProcessStatus::Failed | ProcessStatus::Terminated => {
                    tracing::warn!(workflow = %request.workflow_id, error = ?state.error, "a workflow failed");
                    summary.failed += 1;
                    continue;
                }
                _ => {
                    summary.hung += 1;
                    continue;
                }
            }
            let stage = emulator
                .document(self.domain(), &request.document_id)?
                .fields
                .get("STAGE_ID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let check = state.activities.iter().find(|a| a.name == CHECK_STEP);
            let values = check.map(|a| &a.return_values);
            let required = values.and_then(|v| v.get("approval_required")).is_none_or(is_yes);
            let took = request_to_stage(&state);
            if !required {
                summary.auto_approved += 1;
                auto.extend(took);
                if !within || stage != APPROVED {
                    summary.wrong += 1;
                }
                continue;
            }
            cfo.extend(took);
            let job = by_workflow.get(request.workflow_id.as_str());
            match job.and_then(|j| j.result_kind) {
                Some(ResultKind::Fallback) => {
                    summary.cfo_unreachable += 1;
                    let reason = values
                        .and_then(|v| v.get("reason"))
                        .and_then(Value::as_str)
                        .unwrap_or("(no reason returned)");
                    *reasons.entry(group_reason(reason)).or_default() += 1;
                }
                Some(ResultKind::Success) => {
                    summary.cfo_over_limit += 1;
                    summary.wrong += usize::from(within);
                }
                // A workflow that went on without a stored result, or with one typed in by
                // hand (the demo has no operator): nothing explains it.
                Some(ResultKind::Manual) | None => summary.wrong += 1,
            }
            match state.tasks.first().and_then(|t| t.outcome) {
                Some(TaskOutcome::Approved) => {
                    summary.cfo_approved += 1;
                    summary.wrong += usize::from(stage != APPROVED);
                }
                Some(TaskOutcome::Rejected) => {
                    summary.cfo_rejected += 1;
                    summary.wrong += usize::from(stage != REJECTED);
                }
                None => summary.wrong += 1,
            }
        }
        let cycle_of = |samples: Vec<Duration>| Cycle {
            real: Latency::of(samples.iter().map(|d| s.expand(*d)).collect()),
            wall: Latency::of(samples),
        };
        summary.auto_cycle = cycle_of(auto);
        summary.cfo_cycle = cycle_of(cfo);
        summary.unreachable_reasons = most_frequent_first(reasons);

        let calls = PortalCalls::of(&emulator.rest_calls(self.domain()));
        summary.rest_requests = calls.rest_requests;
        summary.batches = calls.batches;
        summary.event_sends = calls.event_sends;
        summary.query_limit_exceeded = calls.query_limit_exceeded;
        summary.duplicate_sends = calls.results_sent_more_than_once;
        let counts = self.api.counts();
        summary.finance_requests = counts.requests;
        summary.finance_unavailable = counts.unavailable;
        Ok(summary)
    }
}

/// `Y`, `y`, `1`, `true` or a non-zero number, as Bitrix24 reads a bool.
fn is_yes(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => matches!(s.as_str(), "Y" | "y" | "1" | "true"),
        _ => false,
    }
}

/// From the first step's start to the moment the last `STAGE_ID` was set.
fn request_to_stage(state: &WorkflowState) -> Option<Duration> {
    let start: SystemTime = state.steps.first()?.started_at;
    let set = state.steps.iter().rev().find(|s| s.kind == StepKind::SetField)?.finished_at?;
    Some(set.duration_since(start).unwrap_or_default())
}

/// A fallback reason with what varies between requests blanked, so the same cause groups:
/// the number of attempts, and numbers in URL paths.
fn group_reason(reason: &str) -> String {
    let reason = reason.strip_prefix("Manual approval: ").unwrap_or(reason);
    let words: Vec<String> = reason
        .split(' ')
        .scan(false, |after, word| {
            let blank = *after && word.chars().all(|c| c.is_ascii_digit());
            *after = word == "after";
            Some(if blank { "N".to_owned() } else { word.to_owned() })
        })
        .collect();
    super::generic::blank_numbers(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_by_attempts_and_ids() {
        let a = "Manual approval: deadline: gave up after 7 attempts: finance API GET http://127.0.0.1:9/api/v1/companies/42/credit: answered 503";
        let b = "Manual approval: deadline: gave up after 12 attempts: finance API GET http://127.0.0.1:9/api/v1/companies/7/credit: answered 503";
        assert_eq!(group_reason(a), group_reason(b));
        assert_eq!(
            group_reason(a),
            "deadline: gave up after N attempts: finance API GET http://127.0.0.1:9/api/vN/companies/N/credit: answered 503"
        );
    }

    #[test]
    fn the_cfo_approves_within_the_tolerance_and_some_beyond() {
        let mut rng = StdRng::seed_from_u64(1);
        let book = Some((100_000.0, 60_000.0));
        assert_eq!(cfo_decides(book, 40_000.0, &mut rng).outcome, TaskOutcome::Approved);
        assert_eq!(cfo_decides(book, 60_000.0, &mut rng).outcome, TaskOutcome::Approved);
        let beyond: Vec<TaskOutcome> =
            (0..200).map(|_| cfo_decides(book, 90_000.0, &mut rng).outcome).collect();
        let approved = beyond.iter().filter(|o| **o == TaskOutcome::Approved).count();
        assert!((20..100).contains(&approved), "{approved} of 200");
        assert_eq!(cfo_decides(None, 1.0, &mut rng).outcome, TaskOutcome::Rejected);
    }

    #[test]
    fn time_compresses_and_expands_by_the_factor() {
        let args = DemoArgs::default();
        let s = Settings::of(&args).unwrap();
        assert_eq!(s.compress(MAX_WAIT), Duration::from_secs(15));
        assert_eq!(s.expand(Duration::from_secs(15)), MAX_WAIT);
        assert_eq!(s.compress(Duration::from_micros(1)), Duration::from_millis(1));
        assert_eq!(real(Duration::from_secs(252)), "4m 12s");
        assert_eq!(real(Duration::from_millis(8_440)), "8.4s");
    }

    #[test]
    fn a_hang_a_failure_a_second_send_a_wrong_decision_or_a_dead_job_fails_the_run() {
        assert!(CreditSummary::default().problems().is_empty());
        for summary in [
            CreditSummary { hung: 1, ..CreditSummary::default() },
            CreditSummary { failed: 1, ..CreditSummary::default() },
            CreditSummary { duplicate_sends: 1, ..CreditSummary::default() },
            CreditSummary { wrong: 1, ..CreditSummary::default() },
            CreditSummary { dead: 1, ..CreditSummary::default() },
            CreditSummary { query_limit_exceeded: 1, ..CreditSummary::default() },
        ] {
            assert_eq!(summary.problems().len(), 1, "{summary:?}");
        }
        let unconfirmed = CreditSummary { unconfirmed_deliveries: 1, ..CreditSummary::default() };
        assert!(unconfirmed.problems().is_empty());
    }

    #[test]
    fn bitrix_bools_read_as_bitrix_reads_them() {
        assert!(is_yes(&json!("Y")) && is_yes(&json!(true)) && is_yes(&json!(1)));
        assert!(!is_yes(&json!("N")) && !is_yes(&json!(false)) && !is_yes(&json!("")));
    }
}
