//! Workers: claim due jobs, run each action's connector under a per-attempt timeout, and store
//! what became of the attempt — the result, a retry at the next backoff, the fallback, or a dead
//! job — through transitions fenced by the job's lease (design.md §3).
//!
//! - [`Workers::run_once`] claims as many due jobs as there are free slots, runs them and waits
//!   for them: tests step it with explicit times. Progress lines go to the outbox's queue
//!   (`progress.rs`), not straight to the portal.
//! - [`run`] loops until cancelled, sleeping until the store's next wake-up, a poke on
//!   [`Wakeups::jobs`], or a slot freeing up; on cancel it stops claiming and lets running
//!   attempts finish.
//!
//! Every connector attempt runs in its own task, so a panic is a `JoinError` — the job takes its
//! failure policy and the worker carries on.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use connectors::{ConnectorError, ConnectorRequest, DocumentId, Outputs};
use store::{AttemptOutcome, ClaimedJob, Fenced};
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Host;
use crate::backoff;
use crate::catalog::Action;
use crate::clock;
use crate::payload::{JobPayload, JobResult, PAYLOAD_VERSION};

/// The longest a worker or the outbox sleeps without looking at the store: jobs written by
/// another node (PostgreSQL) are found within this.
pub const IDLE_PAUSE: Duration = Duration::from_secs(1);

/// The shortest sleep between two looks at the store, so something due that another part is
/// handling (a delivery, a job held by another node) is not polled in a tight loop.
const MIN_PAUSE: Duration = Duration::from_millis(25);

/// Pokes between the host's parts: the intake pokes `jobs` after it commits calls, the workers
/// poke `results` after they store a result to send. A poke while nobody waits is kept, so it is
/// never lost between a look at the store and the next sleep.
#[derive(Debug, Default)]
pub struct Wakeups {
    pub jobs: Notify,
    pub results: Notify,
}

impl Wakeups {
    /// New calls were stored: wake the workers.
    pub fn job_arrived(&self) {
        self.jobs.notify_one();
    }

    /// A result was stored: wake the outbox.
    pub fn result_stored(&self) {
        self.results.notify_one();
    }
}

/// Runs workers on `host` until `cancel`, then waits for the attempts in flight.
pub async fn run(host: Arc<Host>, wakeups: Arc<Wakeups>, cancel: CancellationToken) {
    Workers::new(host, wakeups).run(cancel).await;
}

/// One step: claims the jobs due at `now` (as many as `workers.concurrency` allows), runs them
/// and waits for them. Returns how many were claimed.
pub async fn run_once(
    host: Arc<Host>,
    wakeups: Arc<Wakeups>,
    now: i64,
) -> Result<usize, store::Error> {
    Workers::new(host, wakeups).run_once(now).await
}

/// A pool of `workers.concurrency` slots claiming jobs under one lease-owner name.
pub struct Workers {
    shared: Arc<Shared>,
    name: String,
    slots: Arc<Semaphore>,
}

/// What every job task needs.
struct Shared {
    host: Arc<Host>,
    wakeups: Arc<Wakeups>,
}

impl Workers {
    /// Workers named after the host's `node_id`.
    pub fn new(host: Arc<Host>, wakeups: Arc<Wakeups>) -> Workers {
        let name = host.node_id.clone();
        let slots = Arc::new(Semaphore::new(host.config.workers.concurrency.max(1)));
        let shared = Arc::new(Shared { host, wakeups });
        Workers { shared, name, slots }
    }

    /// The same workers under another lease-owner name (several pools in one process).
    pub fn with_name(mut self, name: impl Into<String>) -> Workers {
        self.name = name.into();
        self
    }

    /// One step at time `now`: claims due jobs up to the free slots, runs each in its own task
    /// and waits for all of them. Returns how many were claimed.
    pub async fn run_once(&self, now: i64) -> Result<usize, store::Error> {
        let mut running = JoinSet::new();
        let claimed = self.claim(now, &mut running).await?;
        while let Some(ended) = running.join_next().await {
            report_task(ended);
        }
        Ok(claimed)
    }

    /// Claims and runs jobs until `cancel`; then claims nothing more and waits for the jobs in
    /// flight.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(worker = %self.name, slots = self.slots.available_permits(), "workers started");
        let mut running = JoinSet::new();
        while !cancel.is_cancelled() {
            while let Some(ended) = running.try_join_next() {
                report_task(ended);
            }
            let now = clock::now_ms();
            let free = self.slots.available_permits();
            let pause = match self.claim(now, &mut running).await {
                // Every free slot was filled: more may be due; look again once one frees.
                Ok(claimed) if claimed > 0 && claimed == free => IDLE_PAUSE,
                Ok(_) if self.slots.available_permits() == 0 => IDLE_PAUSE,
                Ok(_) => pause_until_due(&self.shared.host, now).await,
                Err(error) => {
                    tracing::error!(error = %chain(&error), "cannot claim jobs; trying again shortly");
                    IDLE_PAUSE
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.shared.wakeups.jobs.notified() => {}
                () = tokio::time::sleep(pause) => {}
                Some(ended) = running.join_next(), if !running.is_empty() => report_task(ended),
            }
        }
        tracing::info!(worker = %self.name, running = running.len(), "workers stopping; letting attempts finish");
        while let Some(ended) = running.join_next().await {
            report_task(ended);
        }
    }

    /// Claims up to the free slots' worth of due jobs and starts a task for each.
    async fn claim(&self, now: i64, running: &mut JoinSet<()>) -> Result<usize, store::Error> {
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(0);
        }
        let host = &self.shared.host;
        let jobs = host.store.claim_due(&self.name, now, host.config.workers.lease, free).await?;
        let claimed = jobs.len();
        let clock = ClaimClock::claimed_at(now);
        for job in jobs {
            // Only this pool takes permits, and it asked for no more than were free.
            let permit = self.slots.clone().acquire_owned().await.ok();
            let shared = self.shared.clone();
            let span = tracing::info_span!(
                "job",
                job_id = %job.id,
                portal = %job.member_id,
                code = %job.action_code,
                attempt = job.attempt,
            );
            running.spawn(
                async move {
                    let _slot = permit;
                    if let Err(error) = shared.process(&job, clock).await {
                        // The lease runs out and the job is claimed again.
                        tracing::error!(error = %chain(&error), "job not recorded; it runs again when its lease expires");
                    }
                }
                .instrument(span),
            );
        }
        Ok(claimed)
    }
}

/// A claimed job's (or an outbox round's) time: the `now` it was claimed at, moved on by the real
/// time since, so stepped tests and production agree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimClock {
    at_claim: i64,
    since: Instant,
}

impl ClaimClock {
    /// The clock of a claim made at `now`, from this instant on.
    pub(crate) fn claimed_at(now: i64) -> ClaimClock {
        ClaimClock { at_claim: now, since: Instant::now() }
    }

    pub(crate) fn now(&self) -> i64 {
        let elapsed = i64::try_from(self.since.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.at_claim.saturating_add(elapsed)
    }
}

/// Why a job's outcome could not be recorded.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("storing the attempt's outcome")]
    Store(#[from] store::Error),
    #[error("encoding the result")]
    Encode(#[from] serde_json::Error),
}

/// How one connector attempt ended.
enum Ran {
    Outputs(Outputs),
    /// Worth another attempt.
    Retry {
        outcome: AttemptOutcome,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Not worth another attempt: the failure policy applies now.
    Failed {
        outcome: AttemptOutcome,
        reason: String,
    },
}

impl Shared {
    /// Runs one claimed job to its next state.
    async fn process(&self, job: &ClaimedJob, clock: ClaimClock) -> Result<(), JobError> {
        let Some(action) = self.host.catalog.get(&job.action_code).cloned() else {
            let reason = format!(
                "action `{}` is not configured on this host (the configuration changed after the call arrived)",
                job.action_code
            );
            return self.kill(job, AttemptOutcome::Fatal, &reason, clock.now()).await;
        };
        let payload = match parse_payload(job) {
            Ok(payload) => payload,
            Err(reason) => {
                return self.kill(job, AttemptOutcome::Fatal, &reason, clock.now()).await;
            }
        };
        if let Some(invalid) = &payload.invalid {
            return self.fail(job, &action, AttemptOutcome::Invalid, invalid, clock.now()).await;
        }
        if clock.now() >= job.deadline_at {
            return self
                .fail(job, &action, AttemptOutcome::Deadline, "deadline passed", clock.now())
                .await;
        }

        let ran = run_connector(&action, job, payload, clock.now()).await;
        let now = clock.now();
        match ran {
            Ran::Outputs(outputs) => match action.return_values(&outputs.values) {
                Ok(return_values) => {
                    let log_message =
                        outputs.log.unwrap_or_else(|| format!("b24act: {} done", job.action_code));
                    let result = JobResult { return_values, log_message: Some(log_message) };
                    let fenced = self
                        .host
                        .store
                        .complete(&job.lease, &serde_json::to_value(&result)?, now)
                        .await?;
                    if self.stored(job, fenced) {
                        tracing::info!("attempt succeeded; result stored");
                    }
                    Ok(())
                }
                Err(problem) => {
                    let reason = format!("the connector's result was refused: {problem}");
                    self.fail(job, &action, AttemptOutcome::Fatal, &reason, now).await
                }
            },
            Ran::Retry { outcome, reason, retry_after } => {
                let retry = &action.config.retry;
                let next =
                    backoff::next_attempt_at(now, job.attempt, retry, retry_after, rand::random());
                if next >= job.deadline_at {
                    let attempts = if job.attempt == 1 {
                        "1 attempt".to_owned()
                    } else {
                        format!("{} attempts", job.attempt)
                    };
                    let reason = format!("gave up after {attempts}: {reason}");
                    return self.fail(job, &action, AttemptOutcome::Deadline, &reason, now).await;
                }
                let fenced =
                    self.host.store.retry_later(&job.lease, next, outcome, &reason, now).await?;
                if fenced == Fenced::LeaseLost {
                    tracing::debug!("lease lost before the retry was recorded; outcome dropped");
                    return Ok(());
                }
                tracing::info!(%reason, retry_in_ms = next - now, "attempt failed; retrying");
                if retry.log_retries && job.waits_for_result {
                    let line = format!(
                        "Attempt {} failed: {reason}; retrying at {}",
                        job.attempt,
                        clock_time(next)
                    );
                    self.progress_line(job, line);
                }
                Ok(())
            }
            Ran::Failed { outcome, reason } => self.fail(job, &action, outcome, &reason, now).await,
        }
    }

    /// The failure policy: the action's fallback values and log line, or a dead job.
    async fn fail(
        &self,
        job: &ClaimedJob,
        action: &Action,
        outcome: AttemptOutcome,
        reason: &str,
        now: i64,
    ) -> Result<(), JobError> {
        let Some((return_values, log_message)) = action.fallback(reason) else {
            return self.kill(job, outcome, reason, now).await;
        };
        let result = JobResult { return_values, log_message: Some(log_message) };
        let fallback = serde_json::to_value(&result)?;
        let fenced = self
            .host
            .store
            .resolve_with_fallback(&job.lease, &fallback, outcome, reason, now)
            .await?;
        if self.stored(job, fenced) {
            tracing::warn!(outcome = outcome.as_str(), %reason, "resolved with the fallback");
        }
        Ok(())
    }

    async fn kill(
        &self,
        job: &ClaimedJob,
        outcome: AttemptOutcome,
        reason: &str,
        now: i64,
    ) -> Result<(), JobError> {
        match self.host.store.kill(&job.lease, outcome, reason, now).await? {
            Fenced::Applied => tracing::error!(outcome = outcome.as_str(), %reason, "job is dead"),
            Fenced::LeaseLost => {
                tracing::debug!("lease lost before the job was killed; outcome dropped")
            }
        }
        Ok(())
    }

    /// After a result was stored: wakes the outbox if there is something to send.
    fn stored(&self, job: &ClaimedJob, fenced: Fenced) -> bool {
        match fenced {
            Fenced::Applied => {
                if job.waits_for_result {
                    self.wakeups.result_stored();
                }
                true
            }
            Fenced::LeaseLost => {
                tracing::debug!("lease lost before the result was stored; outcome dropped");
                false
            }
        }
    }

    /// Queues `line` for the workflow's log; the outbox sends it in the room results leave in
    /// its batches (see `progress.rs`), so lines never cost results their place.
    fn progress_line(&self, job: &ClaimedJob, line: String) {
        self.host.progress.push(&job.member_id, &job.event_token, line);
        self.wakeups.result_stored();
    }
}

/// The job's payload, if this build understands it.
fn parse_payload(job: &ClaimedJob) -> Result<JobPayload, String> {
    if job.payload_version != PAYLOAD_VERSION {
        return Err(format!(
            "payload version {} is not understood by this build (it reads version {PAYLOAD_VERSION})",
            job.payload_version
        ));
    }
    serde_json::from_value(job.payload.clone())
        .map_err(|error| format!("stored payload is unreadable: {error}"))
}

/// Runs one attempt of `action`'s connector in its own task, bounded by the attempt timeout
/// and the time left before the deadline.
async fn run_connector(
    action: &Arc<Action>,
    job: &ClaimedJob,
    payload: JobPayload,
    now: i64,
) -> Ran {
    let retry = &action.config.retry;
    let left =
        Duration::from_millis(u64::try_from(job.deadline_at.saturating_sub(now)).unwrap_or(0));
    let limit = retry.attempt_timeout.min(left);
    let [module, entity, id] = payload.document_id;
    let mut request = ConnectorRequest::new(
        job.id.to_string(),
        job.action_code.clone(),
        DocumentId::new(module, entity, id),
    );
    request.attempt = job.attempt;
    request.properties = payload.properties;
    request.deadline =
        UNIX_EPOCH + Duration::from_millis(u64::try_from(job.deadline_at).unwrap_or(0));
    request.attempt_timeout = Some(limit);

    let connector = action.connector.clone();
    let mut task = tokio::spawn(
        async move { connector.run(&request).await }.instrument(tracing::Span::current()),
    );
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(Ok(outputs))) => Ran::Outputs(outputs),
        Ok(Ok(Err(ConnectorError::Retryable { reason, retry_after, .. }))) => {
            Ran::Retry { outcome: AttemptOutcome::Retryable, reason, retry_after }
        }
        Ok(Ok(Err(ConnectorError::Fatal { reason, .. }))) => {
            Ran::Failed { outcome: AttemptOutcome::Fatal, reason }
        }
        Ok(Err(error)) => joined(error),
        Err(_elapsed) => {
            task.abort();
            let reason = format!("no answer within {}", humantime::format_duration(limit));
            Ran::Retry { outcome: AttemptOutcome::Timeout, reason, retry_after: None }
        }
    }
}

/// A connector task that did not return: a panic takes the failure policy at once (it would
/// most likely panic again); a cancelled task (the runtime shutting down) is retried.
fn joined(error: JoinError) -> Ran {
    match error.try_into_panic() {
        Ok(panic) => Ran::Failed {
            outcome: AttemptOutcome::Panic,
            reason: format!("connector panicked: {}", panic_message(panic.as_ref())),
        },
        Err(_) => Ran::Retry {
            outcome: AttemptOutcome::Retryable,
            reason: "the attempt was cancelled before it finished".to_owned(),
            retry_after: None,
        },
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// `HH:MM:SS UTC` of a Unix-ms time, for progress lines.
fn clock_time(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// How long to sleep before the next look at the store: until its next wake-up, at least
/// [`MIN_PAUSE`] and at most [`IDLE_PAUSE`].
pub(crate) async fn pause_until_due(host: &Host, now: i64) -> Duration {
    match host.store.next_wakeup().await {
        Ok(Some(due)) => {
            let wait = Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0));
            wait.clamp(MIN_PAUSE, IDLE_PAUSE)
        }
        Ok(None) => IDLE_PAUSE,
        Err(error) => {
            tracing::warn!(error = %chain(&error), "cannot read the next wake-up");
            IDLE_PAUSE
        }
    }
}

/// A task of ours that panicked is a bug; say so and carry on.
pub(crate) fn report_task(ended: Result<(), JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        tracing::error!(error = %error, "a worker task panicked");
    }
}

/// An error with its sources, `outer: inner: …`, for logs.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_time_is_utc_hours_minutes_seconds() {
        // 2026-11-06 13:04:09.500 UTC
        assert_eq!(clock_time(1_793_970_249_500), "13:04:09 UTC");
        assert_eq!(clock_time(0), "00:00:00 UTC");
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string() {
        let text: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(panic_message(text.as_ref()), "boom");
        let owned: Box<dyn Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_message(owned.as_ref()), "bang");
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(other.as_ref()), "(no message)");
    }
}
