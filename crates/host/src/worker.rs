//! Workers: claim due jobs, run each action's connector under a per-attempt timeout, and store
//! what became of the attempt — the result, a retry at the next backoff, the fallback, or a dead
//! job — through transitions fenced by the job's lease (design.md §3).
//!
//! - [`Workers::run_once`] claims as many due jobs as there are free slots, runs them and waits
//!   for them: tests step it with explicit times. Progress lines are stored with their job
//!   for the outbox to send, not sent straight to the portal.
//! - [`run`] loops until cancelled, sleeping until the store's next wake-up, a poke on
//!   [`Wakeups::jobs`], or a slot freeing up; on cancel it stops claiming and lets running
//!   attempts finish.
//!
//! Every connector attempt runs in its own task, so a panic is a `JoinError` — the job takes its
//! failure policy and the worker carries on.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use b24::report::ErrorChain;
use connectors::{ConnectorError, ConnectorRequest, DocumentId, Outputs};
use store::{AttemptKind, AttemptOutcome, ClaimedJob, Fenced};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Host;
use crate::backoff;
use crate::catalog::Action;
use crate::clock::{self, ClaimClock};
use crate::console::metrics;
use crate::language::Lang;
use crate::loops::{IDLE_PAUSE, Wakeups, pause_until_due, report_task};
use crate::payload::{JobPayload, JobResult, PAYLOAD_VERSION};

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
                    tracing::error!(error = %ErrorChain(&error), "cannot claim jobs; trying again shortly");
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
                portal = %job.call.member_id,
                code = %job.call.action_code,
                attempt = job.attempt,
            );
            running.spawn(
                async move {
                    let _slot = permit;
                    if let Err(error) = (Claim { shared: &shared, job: &job }).process(clock).await {
                        // The lease runs out and the job is claimed again.
                        tracing::error!(error = %ErrorChain(&error), "job not recorded; it runs again when its lease expires");
                    }
                }
                .instrument(span),
            );
        }
        Ok(claimed)
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

/// A claimed job on its way to its next state. Each state change is a method of it, fenced by
/// the job's lease: a worker that lost the lease changes nothing.
struct Claim<'a> {
    shared: &'a Shared,
    job: &'a ClaimedJob,
}

impl Claim<'_> {
    /// Runs the job to its next state.
    async fn process(&self, clock: ClaimClock) -> Result<(), JobError> {
        let job = self.job;
        let Some(action) = self.shared.host.catalog.get(&job.call.action_code).cloned() else {
            let reason = format!(
                "action `{}` is not configured on this host since the call arrived: {}",
                job.call.action_code,
                crate::intake::NOT_CONFIGURED
            );
            return self.mark_dead(AttemptOutcome::Fatal, &reason, clock.now()).await;
        };
        let payload = match parse_payload(job) {
            Ok(payload) => payload,
            Err(reason) => {
                return self.mark_dead(AttemptOutcome::Fatal, &reason, clock.now()).await;
            }
        };
        if let Some(invalid) = &payload.invalid {
            return self.mark_failed(&action, AttemptOutcome::Invalid, invalid, clock.now()).await;
        }
        if clock.now() >= job.call.deadline_at {
            let reason = self.deadline_passed().await;
            return self.mark_failed(&action, AttemptOutcome::Deadline, &reason, clock.now()).await;
        }

        let ran = run_connector(&action, job, payload, clock.now()).await;
        let now = clock.now();
        match ran {
            Ran::Outputs(outputs) => match action.return_values(&outputs.values) {
                Ok(return_values) => {
                    let log_message = match outputs.log {
                        Some(log) => log,
                        None => self.language().await.done(&job.call.action_code),
                    };
                    let result = JobResult { return_values, log_message: Some(log_message) };
                    self.mark_succeeded(&result, now).await
                }
                Err(problem) => {
                    let reason = format!("the connector's result was refused: {problem}");
                    self.mark_failed(&action, AttemptOutcome::Fatal, &reason, now).await
                }
            },
            Ran::Retry { outcome, reason, retry_after } => {
                let retry = &action.config.retry;
                let next =
                    backoff::next_attempt_at(now, job.attempt, retry, retry_after, rand::random());
                if next >= job.call.deadline_at {
                    let reason = format!("gave up after {}: {reason}", attempts(job.attempt));
                    return self.mark_failed(&action, AttemptOutcome::Deadline, &reason, now).await;
                }
                self.retry_at(next, outcome, &reason, retry.log_retries, now).await
            }
            Ran::Failed { outcome, reason } => {
                self.mark_failed(&action, outcome, &reason, now).await
            }
        }
    }

    /// Why a job whose deadline passed before this attempt gives up: with earlier attempts, how
    /// many and the last one's error, so the workflow reads why (a retry can be due before the
    /// deadline and still be claimed after it when workers are busy); the bare fact otherwise,
    /// or when the history cannot be read.
    async fn deadline_passed(&self) -> String {
        let earlier = self.job.attempt.saturating_sub(1);
        let last_error = match self.shared.host.store.job(self.job.id).await {
            Ok(Some(detail)) => detail
                .attempts
                .into_iter()
                .rev()
                .find(|a| a.kind == AttemptKind::Execute && a.error.is_some())
                .and_then(|a| a.error),
            _ => None,
        };
        match last_error {
            Some(error) if earlier > 0 => format!(
                "gave up after {}: the deadline passed before the next; the last failed: {error}",
                attempts(earlier)
            ),
            _ => "deadline passed".to_owned(),
        }
    }

    /// The attempt produced a result: store it for the outbox.
    async fn mark_succeeded(&self, result: &JobResult, now: i64) -> Result<(), JobError> {
        let result = serde_json::to_value(result)?;
        let fenced = self.shared.host.store.complete(&self.job.lease, &result, now).await?;
        if self.stored(fenced) {
            metrics::attempt_ended(&self.job.call.action_code, AttemptOutcome::Ok);
            tracing::info!("attempt succeeded; result stored");
        }
        Ok(())
    }

    /// The attempt failed but another may succeed: run again at `next`, and (with the action's
    /// `log_retries`) tell the waiting workflow.
    async fn retry_at(
        &self,
        next: i64,
        outcome: AttemptOutcome,
        reason: &str,
        log_retries: bool,
        now: i64,
    ) -> Result<(), JobError> {
        let job = self.job;
        let fenced =
            self.shared.host.store.retry_later(&job.lease, next, outcome, reason, now).await?;
        if fenced == Fenced::LeaseLost {
            tracing::debug!("lease lost before the retry was recorded; outcome dropped");
            return Ok(());
        }
        metrics::attempt_ended(&job.call.action_code, outcome);
        tracing::info!(%reason, retry_in_ms = next - now, "attempt failed; retrying");
        if log_retries && job.call.waits_for_result {
            let at = clock::utc_time_of_day(next);
            let line = self.language().await.retrying(job.attempt, reason, &at);
            self.progress_line(&line).await;
        }
        Ok(())
    }

    /// No attempt will succeed: the failure policy applies — the action's fallback values and
    /// log line, or a dead job.
    async fn mark_failed(
        &self,
        action: &Action,
        outcome: AttemptOutcome,
        reason: &str,
        now: i64,
    ) -> Result<(), JobError> {
        let Some(result) = action.fallback(reason) else {
            return self.mark_dead(outcome, reason, now).await;
        };
        let fallback = serde_json::to_value(&result)?;
        let fenced = self
            .shared
            .host
            .store
            .resolve_with_fallback(&self.job.lease, &fallback, outcome, reason, now)
            .await?;
        if self.stored(fenced) {
            metrics::attempt_ended(&self.job.call.action_code, outcome);
            tracing::warn!(outcome = outcome.as_str(), %reason, "resolved with the fallback");
        }
        Ok(())
    }

    /// The job is dead: nothing is sent; an operator decides (`b24act jobs`).
    async fn mark_dead(
        &self,
        outcome: AttemptOutcome,
        reason: &str,
        now: i64,
    ) -> Result<(), JobError> {
        match self.shared.host.store.kill(&self.job.lease, outcome, reason, now).await? {
            Fenced::Applied => {
                let action = &self.job.call.action_code;
                metrics::attempt_ended(action, outcome);
                metrics::dead_letter(action);
                tracing::error!(outcome = outcome.as_str(), %reason, "job is dead");
            }
            Fenced::LeaseLost => {
                tracing::debug!("lease lost before the job was killed; outcome dropped")
            }
        }
        Ok(())
    }

    /// After a result was stored: wakes the outbox if there is something to send.
    fn stored(&self, fenced: Fenced) -> bool {
        match fenced {
            Fenced::Applied => {
                if self.job.call.waits_for_result {
                    self.shared.wakeups.result_stored();
                }
                true
            }
            Fenced::LeaseLost => {
                tracing::debug!("lease lost before the result was stored; outcome dropped");
                false
            }
        }
    }

    /// The language of the job's portal, for the lines b24act writes to its workflow's log;
    /// English when the store does not know it or does not answer.
    async fn language(&self) -> Lang {
        let stored = self.shared.host.store.installation_language(&self.job.call.member_id).await;
        Lang::from_portal(stored.ok().flatten().as_deref())
    }

    /// Stores `line` for the workflow's log; the outbox sends it in the room results leave in
    /// its batches, so lines never cost results their place. A line that cannot be stored is
    /// only logged: it is best effort.
    async fn progress_line(&self, line: &str) {
        let job = self.job;
        let stored = self.shared.host.store.add_progress_line(
            job.id,
            &job.call.member_id,
            line,
            clock::now_ms(),
        );
        match stored.await {
            Ok(()) => self.shared.wakeups.result_stored(),
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "progress line not stored; dropped")
            }
        }
    }
}

/// The job's payload, if this build understands it.
fn parse_payload(job: &ClaimedJob) -> Result<JobPayload, String> {
    if job.call.payload_version != PAYLOAD_VERSION {
        return Err(format!(
            "payload version {} is not understood by this build (it reads version {PAYLOAD_VERSION})",
            job.call.payload_version
        ));
    }
    serde_json::from_value(job.call.payload.clone())
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
    let left = clock::duration_ms(job.call.deadline_at.saturating_sub(now));
    let limit = retry.attempt_timeout.min(left);
    let [module, entity, id] = payload.document_id;
    let mut request = ConnectorRequest::new(
        job.id.to_string(),
        job.call.action_code.clone(),
        DocumentId::new(module, entity, id),
    );
    request.attempt = job.attempt;
    request.properties = payload.properties;
    request.deadline = clock::system_time(job.call.deadline_at);
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

/// "1 attempt", "3 attempts".
fn attempts(count: u32) -> String {
    if count == 1 { "1 attempt".to_owned() } else { format!("{count} attempts") }
}

#[cfg(test)]
mod tests {
    use super::*;

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
