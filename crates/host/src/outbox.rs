//! The outbox: stored results returned with `bizproc.event.send`, one `batch` of up to 50 per
//! portal at a time, paced by the portal's limiter (design.md §3, protocol §3.1, §3.3, §5.5).
//!
//! Progress lines waiting for the same portal (`progress.rs`) ride in the room the results leave
//! in its batch — ahead of them, so a line reaches the activity before its result closes it — or
//! in a batch of their own when no result is due; they never take a result's place.
//!
//! Each command's outcome decides its job alone: accepted → `done` (never sent again);
//! `"423"`, rate limits, 5xx, network trouble, commands the portal did not run, or an access
//! token the client could not renew → sent again after a backoff; `ACCESS_DENIED`, `"404"` and
//! other permanent refusals → `dead` with the portal's reason. A stored result is sent exactly
//! as stored, never recomputed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use b24::rest::{BatchCommand, BatchOutcome, ErrorClass, EventSend};
use store::{AttemptOutcome, Delivery, Fenced, JobId, MAX_BATCH, PortalBatch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Host;
use crate::backoff;
use crate::clock;
use crate::payload::{JobResult, millis};
use crate::portals::PortalError;
use crate::progress::ProgressLine;
use crate::worker::{ClaimClock, IDLE_PAUSE, Wakeups, chain, pause_until_due, report_task};

/// The REST method results go back with.
pub const EVENT_SEND: &str = "bizproc.event.send";
/// The REST method progress lines go with.
pub const ACTIVITY_LOG: &str = "bizproc.activity.log";

/// The largest random share cut from a redelivery wait, so many jobs refused together (a rate
/// limit, a portal outage) do not all come back in the same second.
const DELIVERY_JITTER: f64 = 0.2;

/// How long a portal's deliveries wait after the auth server refused to renew its token: one
/// refresh attempt per pause, instead of one per retry.
const CREDENTIALS_PAUSE: std::time::Duration = std::time::Duration::from_secs(60);

/// Sends results until `cancel`, sleeping until the store's next wake-up or a poke on
/// [`Wakeups::results`]; a round in flight finishes before it returns.
pub async fn run(host: Arc<Host>, wakeups: Arc<Wakeups>, cancel: CancellationToken) {
    tracing::info!("outbox started");
    while !cancel.is_cancelled() {
        let now = clock::now_ms();
        let pause = match run_once(&host, now).await {
            // More may be due (over 50 for one portal): go again at once.
            Ok(handled) if handled > 0 => continue,
            Ok(_) => pause_until_due(&host, now).await,
            Err(error) => {
                tracing::error!(error = %chain(&error), "cannot claim deliveries; trying again shortly");
                IDLE_PAUSE
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = wakeups.results.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("outbox stopped");
}

/// One round at time `now`: claims the results due, at most 50 per portal, sends one `batch`
/// per portal (portals in parallel) with the progress lines that fit beside them, and records
/// each result's outcome. Returns how many results and lines were sent or settled.
pub async fn run_once(host: &Arc<Host>, now: i64) -> Result<usize, store::Error> {
    let mut batches = host
        .store
        .claim_deliveries(&host.node_id, now, host.config.workers.lease, MAX_BATCH)
        .await?;
    // Portals with lines but no result due get a batch of lines alone.
    for member_id in host.progress.portals() {
        if !batches.iter().any(|batch| batch.member_id == member_id) {
            batches.push(PortalBatch { member_id, jobs: Vec::new() });
        }
    }
    let mut handled = 0;
    let clock = ClaimClock::claimed_at(now);
    let mut portals = JoinSet::new();
    for batch in batches {
        let lines = host.progress.take(&batch.member_id, MAX_BATCH - batch.jobs.len());
        handled += batch.jobs.len() + lines.len();
        let span = tracing::info_span!(
            "delivery",
            portal = %batch.member_id,
            results = batch.jobs.len(),
            lines = lines.len()
        );
        portals.spawn(deliver(host.clone(), batch, lines, clock).instrument(span));
    }
    while let Some(ended) = portals.join_next().await {
        report_task(ended);
    }
    Ok(handled)
}

/// What to do with one result after a send.
enum Verdict {
    Delivered,
    Retry { reason: String, not_before: Option<SystemTime> },
    Dead { reason: String },
}

/// Sends one portal's batch — its progress lines, then its results — and records every
/// result's outcome. Lines are best effort: one that fails is only logged.
async fn deliver(host: Arc<Host>, batch: PortalBatch, lines: Vec<ProgressLine>, clock: ClaimClock) {
    let PortalBatch { member_id, jobs } = batch;
    let client = match host.portals.client(&member_id).await {
        Ok(client) => client,
        Err(error) => {
            if !lines.is_empty() {
                tracing::warn!(dropped = lines.len(), error = %chain(&error), "progress lines dropped: no client for the portal");
            }
            let reason = format!("no client for the portal: {}", chain(&error));
            let verdict = match error {
                PortalError::Unknown(_)
                | PortalError::Uninstalled(_)
                | PortalError::BadEndpoint { .. } => Verdict::Dead { reason },
                PortalError::Store(_) | PortalError::Client(_) => {
                    Verdict::Retry { reason, not_before: None }
                }
            };
            let now = clock.now();
            for job in &jobs {
                record(&host, job, &verdict, now).await;
            }
            return;
        }
    };

    let mut commands = Vec::with_capacity(lines.len() + jobs.len());
    for (index, line) in lines.iter().enumerate() {
        let params =
            serde_json::json!({"EVENT_TOKEN": line.event_token, "LOG_MESSAGE": line.message});
        match BatchCommand::new(format!("log{index}"), ACTIVITY_LOG, &params) {
            Ok(command) => commands.push(command),
            Err(error) => tracing::warn!(%error, "progress line dropped: it cannot be encoded"),
        }
    }
    let mut sending = Vec::with_capacity(jobs.len());
    for job in jobs {
        match command(&job) {
            Ok(command) => {
                commands.push(command);
                sending.push(job);
            }
            Err(reason) => record(&host, &job, &Verdict::Dead { reason }, clock.now()).await,
        }
    }
    if commands.is_empty() {
        return;
    }

    let sent = client.batch(&commands, false).await;
    let now = clock.now();
    let mut outcomes: HashMap<String, BatchOutcome> = match sent {
        Ok(results) => {
            results.entries.into_iter().map(|entry| (entry.key, entry.outcome)).collect()
        }
        Err(error) if sending.is_empty() => {
            tracing::warn!(dropped = lines.len(), error = %error, "progress lines not written to the workflow log");
            return;
        }
        Err(error) if error.is_credentials_problem() => {
            // Retrying will not mend this (docs/protocol.md §4.1): pause, say what to do once.
            let reason = rest_reason(&error);
            if host.health.degrade(&member_id, reason.clone()) {
                tracing::error!(error = %chain(&error), pause = ?CREDENTIALS_PAUSE,
                    "PORTAL DEGRADED: the auth server will not renew its token, so its results \
                     cannot be sent. invalid_grant: the installation's refresh token is dead — \
                     reinstall the app on the portal; invalid_client: check [app] client_id and \
                     client_secret. Results are kept; delivery pauses and is tried again, and \
                     resumes by itself once the portal installs again");
            }
            // The next try reads the installation again: a reinstall brings new tokens.
            host.portals.forget(&member_id);
            let not_before = Some(SystemTime::now() + CREDENTIALS_PAUSE);
            for job in &sending {
                record(&host, job, &Verdict::Retry { reason: reason.clone(), not_before }, now)
                    .await;
            }
            return;
        }
        Err(error) => {
            tracing::warn!(error = %error, "batch request failed; every result in it is sent again later");
            if error.class() == ErrorClass::Token {
                // Read the installation again next time: a reinstall may have brought new tokens.
                host.portals.forget(&member_id);
            }
            let verdict =
                Verdict::Retry { reason: rest_reason(&error), not_before: error.retry_at() };
            for job in &sending {
                record(&host, job, &verdict, now).await;
            }
            return;
        }
    };

    if host.health.clear(&member_id) {
        tracing::info!("portal recovered: its token renews again and deliveries resume");
    }
    let unwritten = outcomes
        .iter()
        .filter(|(key, outcome)| key.starts_with("log") && !matches!(outcome, BatchOutcome::Ok(_)))
        .count();
    if unwritten > 0 {
        tracing::warn!(unwritten, "progress lines not written to the workflow log");
    }
    let mut delivered: Vec<JobId> = Vec::with_capacity(sending.len());
    for job in &sending {
        let verdict = match outcomes.remove(&key(job)) {
            Some(BatchOutcome::Ok(_)) => Verdict::Delivered,
            Some(BatchOutcome::Failed(error)) => match error.class() {
                ErrorClass::Retryable => {
                    Verdict::Retry { reason: rest_reason(&error), not_before: error.retry_at() }
                }
                ErrorClass::Token => {
                    host.portals.forget(&member_id);
                    Verdict::Retry { reason: rest_reason(&error), not_before: None }
                }
                ErrorClass::Permanent => Verdict::Dead { reason: rest_reason(&error) },
            },
            Some(BatchOutcome::Unsent(error)) => {
                Verdict::Retry { reason: rest_reason(&error), not_before: error.retry_at() }
            }
            Some(BatchOutcome::Skipped) | None => Verdict::Retry {
                reason: format!("{EVENT_SEND}: the portal did not run the command"),
                not_before: None,
            },
        };
        match verdict {
            Verdict::Delivered => delivered.push(job.id),
            other => record(&host, job, &other, now).await,
        }
    }
    if delivered.is_empty() {
        return;
    }
    match host.store.delivered(&delivered, now).await {
        Ok(moved) => tracing::info!(delivered = moved, "results delivered"),
        // The jobs stay `delivering` and are sent again when their lease expires; the portal
        // ignores a second event.send for a closed activity (§3.3).
        Err(error) => tracing::error!(error = %chain(&error), "results delivered but not recorded"),
    }
}

/// Records a failed send: a retry after the backoff, or a dead job.
async fn record(host: &Host, job: &Delivery, verdict: &Verdict, now: i64) {
    let recorded = match verdict {
        Verdict::Delivered => return,
        Verdict::Retry { reason, not_before } => {
            let delivery = &host.config.delivery;
            let wait = backoff::delay(
                delivery.retry_base,
                delivery.retry_cap,
                DELIVERY_JITTER,
                job.attempt,
                rand::random(),
            );
            let mut next = now.saturating_add(millis(wait));
            if let Some(asked) = not_before.and_then(|at| at.duration_since(UNIX_EPOCH).ok()) {
                next = next.max(millis(asked));
            }
            tracing::warn!(job_id = %job.id, attempt = job.attempt, %reason, retry_in_ms = next - now, "result not delivered; sending again later");
            host.store
                .delivery_retry(&job.lease, next, AttemptOutcome::Retryable, reason, now)
                .await
        }
        Verdict::Dead { reason } => {
            tracing::error!(job_id = %job.id, attempt = job.attempt, %reason, "result refused for good; job is dead");
            host.store.delivery_dead(&job.lease, reason, now).await
        }
    };
    match recorded {
        Ok(Fenced::Applied) => {}
        Ok(Fenced::LeaseLost) => {
            tracing::debug!(job_id = %job.id, "lease lost before the send was recorded; outcome dropped")
        }
        Err(error) => {
            tracing::error!(job_id = %job.id, error = %chain(&error), "send outcome not recorded")
        }
    }
}

/// The `batch` key of a job's command.
fn key(job: &Delivery) -> String {
    format!("job{}", job.id)
}

/// The `bizproc.event.send` command for a stored result, exactly as stored.
fn command(job: &Delivery) -> Result<BatchCommand, String> {
    let result: JobResult = serde_json::from_value(job.result.clone())
        .map_err(|error| format!("the stored result is unreadable: {error}"))?;
    let event = EventSend {
        event_token: job.event_token.clone(),
        return_values: result.return_values,
        log_message: result.log_message,
    };
    BatchCommand::new(key(job), EVENT_SEND, &event)
        .map_err(|error| format!("the stored result cannot be encoded: {error}"))
}

/// A REST error as an operator reads it in the job's history. Only the error's own text (and a
/// refresh's), never its sources: a transport error's URL may carry OAuth secrets.
fn rest_reason(error: &b24::rest::Error) -> String {
    match error {
        b24::rest::Error::Refresh { source, .. } => format!("{error}: {source}"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use b24::rest::{ApiError, Error, RefreshError};

    use super::*;

    #[test]
    fn a_refused_refresh_keeps_the_auth_servers_answer() {
        let error = Error::Refresh {
            method: "batch".into(),
            source: Arc::new(RefreshError::Rejected {
                status: 400,
                error: ApiError {
                    code: "invalid_grant".into(),
                    description: "refresh token revoked".into(),
                    extra: serde_json::Map::new(),
                },
            }),
        };
        let reason = rest_reason(&error);
        assert!(
            reason.starts_with("batch: access token expired and could not be refreshed: "),
            "{reason}"
        );
        assert!(reason.contains("invalid_grant"), "{reason}");
    }
}
