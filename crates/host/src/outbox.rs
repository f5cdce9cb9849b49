//! The outbox: stored results returned with `bizproc.event.send`, one `batch` of up to 50 per
//! portal at a time, paced by the portal's limiter (design.md §3, protocol §3.1, §3.3, §5.5).
//!
//! Progress lines stored for the same portal (`store::StoredLine`) ride in the room the results
//! leave in its batch — ahead of them, so a line reaches the activity before its result closes
//! it — or in a batch of their own when no result is due; they never take a result's place.
//! Once a batch carried a line it is deleted, whatever the portal made of it.
//!
//! Each command's outcome decides its job alone: accepted → `done` (never sent again);
//! `"423"`, rate limits, 5xx, network trouble, commands the portal did not run, or an access
//! token the client could not renew → sent again after a backoff; `ACCESS_DENIED`, `"404"` and
//! other permanent refusals → `dead` with the portal's reason. A stored result is sent exactly
//! as stored, never recomputed.
//!
//! What holds is at-least-once sending and a result the workflow observes once (docs/protocol.md
//! §3.3: a second `event.send` to a waiting workflow does nothing). A send whose answer was lost
//! — the sender died between the `batch` and its record, or the request failed in a way that
//! the portal may have run it — marks the job `send_uncertain`; when a later send of it is
//! answered "not found", the workflow most likely took the first, so the job is `done` with its
//! delivery unconfirmed, never `dead` and never sent again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use b24::incoming::EventToken;
use b24::report::ErrorChain;
use b24::rest::{
    ApiError, BatchCommand, BatchOutcome, BatchResults, EVENT_SEND_METHOD, ErrorClass, EventSend,
    MAX_BATCH_COMMANDS,
};
use store::{AttemptOutcome, Delivery, Fenced, JobId, PortalBatch, StoredLine};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Host;
use crate::backoff;
use crate::clock::{self, ClaimClock};
use crate::console::metrics;
use crate::health::Cause;
use crate::loops::{IDLE_PAUSE, Wakeups, pause_until_due, report_task};
use crate::payload::JobResult;
use crate::portals::PortalError;

/// The largest random share cut from a redelivery wait, so many jobs refused together (a rate
/// limit, a portal outage) do not all come back in the same second.
const DELIVERY_JITTER: f64 = 0.2;

/// How long a portal's deliveries wait after the auth server refused to renew its token: one
/// refresh attempt per pause, instead of one per retry.
const CREDENTIALS_PAUSE: Duration = Duration::from_secs(60);

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
                tracing::error!(error = %ErrorChain(&error), "cannot claim deliveries; trying again shortly");
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

/// One round at time `now`: claims the results due, at most [`MAX_BATCH_COMMANDS`] per
/// portal, sends one `batch` per portal (portals in parallel) with the progress lines that fit
/// beside them, and records each result's outcome. Returns how many results and lines were sent
/// or settled.
pub async fn run_once(host: &Arc<Host>, now: i64) -> Result<usize, store::Error> {
    let mut batches = host
        .store
        .claim_deliveries(&host.node_id, now, host.config.workers.lease, MAX_BATCH_COMMANDS)
        .await?;
    // Portals with lines but no result due get a batch of lines alone; portals without lines
    // cost no claim of lines (a write transaction each).
    let with_lines = host.store.portals_with_progress(now).await?;
    for member_id in &with_lines {
        if !batches.iter().any(|batch| &batch.member_id == member_id) {
            batches.push(PortalBatch { member_id: member_id.clone(), jobs: Vec::new() });
        }
    }
    let mut handled = 0;
    let clock = ClaimClock::claimed_at(now);
    let mut portals = JoinSet::new();
    for batch in batches {
        let room = MAX_BATCH_COMMANDS - batch.jobs.len();
        let lease = host.config.workers.lease;
        let lines = if with_lines.contains(&batch.member_id) {
            host.store.claim_progress(&batch.member_id, room, now, lease).await?
        } else {
            Vec::new()
        };
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
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Delivered,
    /// Sent again later; `uncertain`: the portal may have run this send (see the module's
    /// documentation).
    Retry {
        reason: String,
        not_before: Option<SystemTime>,
        uncertain: bool,
    },
    Dead {
        reason: String,
    },
    /// "Not found" after a send that may have reached the workflow: `done`, unconfirmed.
    Unconfirmed {
        reason: String,
    },
}

/// A result in a batch, as [`judge`] needs it.
#[derive(Debug, Clone, Copy)]
struct Sending {
    id: JobId,
    /// An earlier send of it may have reached the portal.
    send_uncertain: bool,
}

/// What one `batch` request's outcome means for a portal's deliveries: decided by [`judge`]
/// without I/O, acted on by [`deliver`].
#[derive(Debug, PartialEq)]
enum BatchVerdict {
    /// The request failed and carried only progress lines: they are lost (they are best effort).
    LinesLost,
    /// The auth server will not renew the portal's token (docs/protocol.md §4.1). Retrying will
    /// not mend that: the portal is degraded, its client forgotten (a reinstall brings new
    /// tokens), and every result waits until `not_before`.
    CredentialsRefused { reason: String, not_before: SystemTime },
    /// The request failed as a whole: every result in it is sent again later. `uncertain`: the
    /// portal may have run it although the answer was lost.
    RequestFailed {
        reason: String,
        not_before: Option<SystemTime>,
        forget_client: bool,
        uncertain: bool,
    },
    /// The portal answered: one verdict per result, in the order they were sent.
    Answered { results: Vec<Verdict>, unwritten_lines: usize, forget_client: bool },
}

/// Judges one `batch` request's outcome for the results `sending` (and `lines` progress lines)
/// it carried, at wall-clock time `wall_now`. Each command's outcome decides its result alone
/// (see the module's documentation); an access token the client could not renew also means the
/// client is forgotten, so the next try reads the installation again.
fn judge(
    sent: &Result<BatchResults, b24::rest::Error>,
    sending: &[Sending],
    lines: usize,
    wall_now: SystemTime,
) -> BatchVerdict {
    let answered = match sent {
        Ok(answered) => answered,
        Err(_) if sending.is_empty() => return BatchVerdict::LinesLost,
        Err(error) if error.is_credentials_problem() => {
            return BatchVerdict::CredentialsRefused {
                reason: rest_reason(error),
                not_before: wall_now + CREDENTIALS_PAUSE,
            };
        }
        Err(error) => {
            return BatchVerdict::RequestFailed {
                reason: rest_reason(error),
                not_before: error.retry_at(),
                forget_client: error.class() == ErrorClass::Token,
                uncertain: error.may_have_been_processed(),
            };
        }
    };
    let outcomes: HashMap<&str, &BatchOutcome> =
        answered.entries.iter().map(|entry| (entry.key.as_str(), &entry.outcome)).collect();
    let unwritten_lines = (0..lines)
        .filter_map(|index| outcomes.get(line_key(index).as_str()))
        .filter(|outcome| !matches!(outcome, BatchOutcome::Ok(_)))
        .count();
    let mut forget_client = false;
    let retry =
        |reason: String, not_before| Verdict::Retry { reason, not_before, uncertain: false };
    let results = sending
        .iter()
        .map(|job| match outcomes.get(key(job.id).as_str()) {
            Some(BatchOutcome::Ok(_)) => Verdict::Delivered,
            Some(BatchOutcome::Failed(error)) => match error.class() {
                ErrorClass::Retryable => retry(rest_reason(error), error.retry_at()),
                ErrorClass::Token => {
                    forget_client = true;
                    retry(rest_reason(error), None)
                }
                ErrorClass::Permanent
                    if job.send_uncertain
                        && error.api_error().is_some_and(ApiError::is_workflow_gone) =>
                {
                    Verdict::Unconfirmed { reason: rest_reason(error) }
                }
                ErrorClass::Permanent => Verdict::Dead { reason: rest_reason(error) },
            },
            Some(BatchOutcome::Unsent(error)) => retry(rest_reason(error), error.retry_at()),
            Some(BatchOutcome::Skipped) | None => {
                retry(format!("{EVENT_SEND_METHOD}: the portal did not run the command"), None)
            }
        })
        .collect();
    BatchVerdict::Answered { results, unwritten_lines, forget_client }
}

/// What becomes of a portal's results when no client can be had for it: gone for good if the
/// portal is not (or no longer) installed or its stored endpoint is broken, else sent again.
fn without_client(error: &PortalError) -> Verdict {
    let reason = format!("no client for the portal: {}", ErrorChain(error));
    match error {
        PortalError::Unknown(_)
        | PortalError::Uninstalled(_)
        | PortalError::BadEndpoint { .. }
        | PortalError::WrongApplicationToken(_) => Verdict::Dead { reason },
        PortalError::Store(_) | PortalError::Client(_) => {
            Verdict::Retry { reason, not_before: None, uncertain: false }
        }
    }
}

/// Sends one portal's batch — its progress lines, then its results — and records every
/// result's outcome as [`judge`] decides it. Lines are best effort: once a batch carried them
/// they are deleted, and one that fails is only logged.
async fn deliver(host: Arc<Host>, batch: PortalBatch, lines: Vec<StoredLine>, clock: ClaimClock) {
    let PortalBatch { member_id, jobs } = batch;
    let client = match host.portals.client(&member_id).await {
        Ok(client) => client,
        Err(error) => {
            let verdict = without_client(&error);
            if matches!(verdict, Verdict::Dead { .. }) && !lines.is_empty() {
                tracing::warn!(dropped = lines.len(), error = %ErrorChain(&error), "progress lines dropped: the portal cannot be called");
                forget_lines(&host, &lines).await;
            }
            let now = clock.now();
            for job in &jobs {
                record(&host, job, &verdict, now).await;
            }
            return;
        }
    };

    let mut commands: Vec<BatchCommand> = lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let event_token = EventToken::new(line.event_token.as_str());
            BatchCommand::activity_log(line_key(index), &event_token, &line.message)
        })
        .collect();
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
    forget_lines(&host, &lines).await;
    let judged: Vec<Sending> = sending
        .iter()
        .map(|job| Sending { id: job.id, send_uncertain: job.send_uncertain })
        .collect();
    let verdicts = match judge(&sent, &judged, lines.len(), SystemTime::now()) {
        BatchVerdict::LinesLost => {
            if let Err(error) = &sent {
                tracing::warn!(dropped = lines.len(), error = %ErrorChain(error), "progress lines not written to the workflow log");
            }
            return;
        }
        BatchVerdict::CredentialsRefused { reason, not_before } => {
            if host.health.degrade(&member_id, Cause::Token, reason.clone())
                && let Err(error) = &sent
            {
                tracing::error!(error = %ErrorChain(error), pause = ?CREDENTIALS_PAUSE,
                    "PORTAL DEGRADED: the auth server will not renew its token, so its results \
                     cannot be sent. invalid_grant: the installation's refresh token is dead — \
                     reinstall the app on the portal; invalid_client: check [app] client_id and \
                     client_secret. Results are kept; delivery pauses and is tried again, and \
                     resumes by itself once the portal installs again");
            }
            host.portals.forget(&member_id);
            let retry = Verdict::Retry { reason, not_before: Some(not_before), uncertain: false };
            vec![retry; sending.len()]
        }
        BatchVerdict::RequestFailed { reason, not_before, forget_client, uncertain } => {
            if let Err(error) = &sent {
                tracing::warn!(error = %ErrorChain(error), uncertain, "batch request failed; every result in it is sent again later");
            }
            if forget_client {
                // Read the installation again next time: a reinstall may have brought new tokens.
                host.portals.forget(&member_id);
            }
            vec![Verdict::Retry { reason, not_before, uncertain }; sending.len()]
        }
        BatchVerdict::Answered { results, unwritten_lines, forget_client } => {
            if host.health.clear(&member_id, Cause::Token) {
                tracing::info!("portal recovered: its token renews again and deliveries resume");
            }
            if unwritten_lines > 0 {
                tracing::warn!(
                    unwritten = unwritten_lines,
                    "progress lines not written to the workflow log"
                );
            }
            if forget_client {
                host.portals.forget(&member_id);
            }
            results
        }
    };

    let mut delivered: Vec<JobId> = Vec::with_capacity(sending.len());
    for (job, verdict) in sending.iter().zip(&verdicts) {
        match verdict {
            Verdict::Delivered => {
                metrics::result_delivered(job.created_at, now);
                delivered.push(job.id);
            }
            other => record(&host, job, other, now).await,
        }
    }
    if delivered.is_empty() {
        return;
    }
    match host.store.delivered(&delivered, now).await {
        Ok(moved) => tracing::info!(delivered = moved, "results delivered"),
        // The jobs stay `delivering` under this sender's lease; once it expires they are sent
        // again as uncertain sends, and the portal's "not found" then records them as
        // delivered, unconfirmed (§3.3).
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "results delivered but not recorded")
        }
    }
}

/// Deletes lines a batch carried (or that can never be sent), so no sender sends them again.
async fn forget_lines(host: &Host, lines: &[StoredLine]) {
    let ids: Vec<i64> = lines.iter().map(|line| line.id).collect();
    if let Err(error) = host.store.progress_sent(&ids).await {
        tracing::error!(lines = ids.len(), error = %ErrorChain(&error),
            "progress lines sent but not forgotten; they go again when their claim expires");
    }
}

/// Records a failed send: a retry after the backoff, or a dead job.
async fn record(host: &Host, job: &Delivery, verdict: &Verdict, now: i64) {
    let recorded = match verdict {
        Verdict::Delivered => return,
        Verdict::Retry { reason, not_before, uncertain } => {
            let delivery = &host.config.delivery;
            let wait = backoff::delay(
                delivery.retry_base,
                delivery.retry_cap,
                DELIVERY_JITTER,
                job.attempt,
                rand::random(),
            );
            let mut next = now.saturating_add(clock::millis(wait));
            if let Some(asked) = not_before.and_then(clock::unix_ms) {
                next = next.max(asked);
            }
            tracing::warn!(job_id = %job.id, attempt = job.attempt, %reason, retry_in_ms = next - now, "result not delivered; sending again later");
            host.store
                .delivery_retry(
                    &job.lease,
                    next,
                    *uncertain,
                    AttemptOutcome::Retryable,
                    reason,
                    now,
                )
                .await
        }
        Verdict::Unconfirmed { reason } => {
            tracing::warn!(job_id = %job.id, attempt = job.attempt, %reason,
                "the portal no longer knows the workflow after a send whose answer was lost: \
                 it most likely took that send; recorded as delivered, unconfirmed");
            host.store.delivery_unconfirmed(&job.lease, reason, now).await
        }
        Verdict::Dead { reason } => {
            tracing::error!(job_id = %job.id, attempt = job.attempt, %reason, "result refused for good; job is dead");
            host.store.delivery_dead(&job.lease, reason, now).await
        }
    };
    match recorded {
        Ok(Fenced::Applied) => {
            if let Verdict::Dead { .. } = verdict {
                metrics::dead_letter(&job.action_code);
            }
        }
        Ok(Fenced::LeaseLost) => {
            tracing::debug!(job_id = %job.id, "lease lost before the send was recorded; outcome dropped")
        }
        Err(error) => {
            tracing::error!(job_id = %job.id, error = %ErrorChain(&error), "send outcome not recorded")
        }
    }
}

/// The `batch` key of a job's result.
fn key(id: JobId) -> String {
    format!("job{id}")
}

/// The `batch` key of the batch's `index`th progress line.
fn line_key(index: usize) -> String {
    format!("log{index}")
}

/// The `bizproc.event.send` command for a stored result, exactly as stored.
fn command(job: &Delivery) -> Result<BatchCommand, String> {
    let result: JobResult = serde_json::from_value(job.result.clone())
        .map_err(|error| format!("the stored result is unreadable: {error}"))?;
    let event_token = EventToken::new(job.event_token.as_str());
    let event = EventSend {
        return_values: result.return_values,
        log_message: result.log_message,
        ..EventSend::new(event_token)
    };
    BatchCommand::event_send(key(job.id), &event)
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
    use std::time::UNIX_EPOCH;

    use b24::rest::{ApiError, BatchEntry, Error, RefreshError, Response};
    use serde_json::{Map, json};

    use super::*;

    const WALL_NOW: Duration = Duration::from_secs(1_800_000_000);

    fn wall_now() -> SystemTime {
        UNIX_EPOCH + WALL_NOW
    }

    fn api(code: &str, status: Option<u16>, extra: Map<String, serde_json::Value>) -> Error {
        let error = ApiError { code: code.into(), description: String::new(), extra };
        Error::Api { method: EVENT_SEND_METHOD.into(), status, error }
    }

    fn failed(code: &str) -> BatchOutcome {
        BatchOutcome::Failed(api(code, None, Map::new()))
    }

    fn refused_refresh(code: &str) -> Error {
        let error = ApiError { code: code.into(), description: String::new(), extra: Map::new() };
        Error::Refresh {
            method: "batch".into(),
            source: Arc::new(RefreshError::Rejected { status: 400, error }),
        }
    }

    /// The portal's answer with these outcomes.
    fn answered(entries: Vec<(String, BatchOutcome)>) -> BatchResults {
        let entries = entries
            .into_iter()
            .map(|(key, outcome)| BatchEntry { key, method: EVENT_SEND_METHOD.into(), outcome })
            .collect();
        BatchResults { entries, requests: 1, moved: None }
    }

    fn ok() -> BatchOutcome {
        BatchOutcome::Ok(Response {
            result: json!(true),
            total: None,
            next: None,
            time: None,
            moved: None,
        })
    }

    fn retry(reason: &str) -> Verdict {
        Verdict::Retry { reason: reason.into(), not_before: None, uncertain: false }
    }

    /// Results never sent before (`send_uncertain` false).
    fn first_sends(ids: &[i64]) -> Vec<Sending> {
        ids.iter().map(|&id| Sending { id: JobId(id), send_uncertain: false }).collect()
    }

    #[test]
    fn a_failed_request_of_lines_alone_loses_them() {
        let sent = Err(api("QUERY_LIMIT_EXCEEDED", Some(503), Map::new()));
        assert_eq!(judge(&sent, &[], 3, wall_now()), BatchVerdict::LinesLost);
    }

    #[test]
    fn a_token_the_auth_server_will_not_renew_pauses_every_result() {
        let sent = Err(refused_refresh("invalid_grant"));
        let BatchVerdict::CredentialsRefused { reason, not_before } =
            judge(&sent, &first_sends(&[1, 2]), 0, wall_now())
        else {
            panic!("not a credentials pause");
        };
        assert_eq!(not_before, wall_now() + CREDENTIALS_PAUSE);
        assert!(reason.contains("invalid_grant"), "{reason}");
    }

    #[test]
    fn a_request_failed_as_a_whole_retries_when_the_portal_says() {
        let mut extra = Map::new();
        extra.insert("operating_reset_at".into(), json!(WALL_NOW.as_secs() + 30));
        let sent = Err(api("OPERATION_TIME_LIMIT", Some(429), extra));
        let verdict = judge(&sent, &first_sends(&[1]), 0, wall_now());
        let BatchVerdict::RequestFailed { not_before, forget_client, .. } = verdict else {
            panic!("not a failed request: {verdict:?}");
        };
        assert_eq!(not_before, Some(wall_now() + Duration::from_secs(30)));
        assert!(!forget_client);
    }

    /// The verdict on a request of one first send that failed as a whole with `code`
    /// (HTTP `status`).
    fn whole_request_failed(code: &str, status: u16) -> BatchVerdict {
        judge(&Err(api(code, Some(status), Map::new())), &first_sends(&[1]), 0, wall_now())
    }

    #[test]
    fn an_expired_token_fails_the_request_and_forgets_the_client() {
        let verdict = whole_request_failed("expired_token", 401);
        assert!(
            matches!(verdict, BatchVerdict::RequestFailed { forget_client: true, .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn each_command_decides_its_result_alone() {
        let unsent = Arc::new(api("QUERY_LIMIT_EXCEEDED", Some(503), Map::new()));
        let sent = Ok(answered(vec![
            (line_key(0), ok()),
            (line_key(1), failed("ERROR_EMPTY_LOG_MESSAGE")),
            (key(JobId(1)), ok()),
            (key(JobId(2)), failed("423")),
            (key(JobId(3)), failed("ACCESS_DENIED")),
            (key(JobId(4)), BatchOutcome::Unsent(unsent)),
            (key(JobId(5)), BatchOutcome::Skipped),
        ]));
        let verdict = judge(&sent, &first_sends(&[1, 2, 3, 4, 5, 6]), 2, wall_now());
        let not_run = "bizproc.event.send: the portal did not run the command";
        assert_eq!(
            verdict,
            BatchVerdict::Answered {
                results: vec![
                    Verdict::Delivered,
                    retry("bizproc.event.send: 423"),
                    Verdict::Dead { reason: "bizproc.event.send: ACCESS_DENIED".into() },
                    retry("bizproc.event.send: QUERY_LIMIT_EXCEEDED (HTTP 503)"),
                    retry(not_run),
                    retry(not_run),
                ],
                unwritten_lines: 1,
                forget_client: false,
            }
        );
    }

    #[test]
    fn a_request_whose_answer_was_lost_marks_its_results_uncertain() {
        let uncertain = |code: &str, status| match whole_request_failed(code, status) {
            BatchVerdict::RequestFailed { uncertain, .. } => uncertain,
            other => panic!("{code}: not a failed request: {other:?}"),
        };
        assert!(uncertain("INTERNAL_SERVER_ERROR", 500), "a 5xx after the request may have run it");
        assert!(!uncertain("QUERY_LIMIT_EXCEEDED", 503), "a rate limit refuses before running");
    }

    #[test]
    fn not_found_after_an_uncertain_send_is_an_unconfirmed_delivery_not_a_dead_job() {
        let gone = |code: &str, description: &str| {
            let error =
                ApiError { code: code.into(), description: description.into(), extra: Map::new() };
            BatchOutcome::Failed(Error::Api {
                method: EVENT_SEND_METHOD.into(),
                status: None,
                error,
            })
        };
        let sent = Ok(answered(vec![
            (key(JobId(1)), gone("404", "The business process is not found.")),
            (key(JobId(2)), gone("404", "The business process is not found.")),
            (key(JobId(3)), gone("ERROR_CORE", "The business process is not found.")),
            (key(JobId(4)), gone("ACCESS_DENIED", "Access denied!")),
        ]));
        let sending = [(1, true), (2, false), (3, true), (4, true)]
            .map(|(id, send_uncertain)| Sending { id: JobId(id), send_uncertain });
        let BatchVerdict::Answered { results, .. } = judge(&sent, &sending, 0, wall_now()) else {
            panic!("the portal answered");
        };
        assert!(
            matches!(&results[0], Verdict::Unconfirmed { reason } if reason.contains("404")),
            "{results:?}"
        );
        assert!(
            matches!(&results[1], Verdict::Dead { .. }),
            "a first send's 404: the workflow is gone: {results:?}"
        );
        assert!(
            matches!(&results[2], Verdict::Unconfirmed { .. }),
            "older portals' wording: {results:?}"
        );
        assert!(
            matches!(&results[3], Verdict::Dead { .. }),
            "a refusal is no proof of a delivery: {results:?}"
        );
    }

    #[test]
    fn a_command_refused_for_its_token_is_retried_and_forgets_the_client() {
        let sent = Ok(answered(vec![(key(JobId(1)), failed("expired_token"))]));
        assert_eq!(
            judge(&sent, &first_sends(&[1]), 0, wall_now()),
            BatchVerdict::Answered {
                results: vec![retry("bizproc.event.send: expired_token")],
                unwritten_lines: 0,
                forget_client: true,
            }
        );
    }

    #[test]
    fn without_a_client_only_a_passing_trouble_is_retried() {
        let gone = without_client(&PortalError::Uninstalled("m1".into()));
        assert!(matches!(gone, Verdict::Dead { .. }), "{gone:?}");
        let unknown = without_client(&PortalError::Unknown("m1".into()));
        assert!(matches!(unknown, Verdict::Dead { .. }), "{unknown:?}");
        let broken = PortalError::BadEndpoint { member_id: "m1".into(), url: "not a url".into() };
        assert!(matches!(without_client(&broken), Verdict::Dead { .. }));
        let building = PortalError::Client(Box::new(api("x", None, Map::new())));
        let Verdict::Retry { reason, not_before: None, uncertain: false } =
            without_client(&building)
        else {
            panic!("a client that could not be built is tried again");
        };
        assert_eq!(
            reason,
            "no client for the portal: building the REST client: bizproc.event.send: x"
        );
    }

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
