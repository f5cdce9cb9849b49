//! Jobs on the execution side: group-committed intake, claiming due work under a lease, and the
//! fenced transitions a worker makes when an attempt ends.
//!
//! ```text
//! enqueue ─▶ queued ──claim_due──▶ running ──complete / resolve_with_fallback──▶ delivering ─▶ (outbox)
//!              ▲                    │  │                          └─ (nothing to send) ─▶ done
//!              │   retry_wait ◀─────┘  └─ kill ─▶ dead
//!              └── claim_due ─┘   (a running job whose lease expired is due again)
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;

use crate::Store;
use crate::attempts::{AttemptKind, AttemptOutcome, CHUNK, open_attempts};
use crate::backend::{Dialect, millis, write_tx};
use crate::error::{Error, Result};

/// A job's id: assigned at enqueue, never reused — connectors get it as their idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Stored, waiting for a worker.
    Queued,
    /// A worker holds it under a lease.
    Running,
    /// An attempt failed; it runs again at `next_run_at`.
    RetryWait,
    /// The result is stored; the outbox sends it with `bizproc.event.send`.
    Delivering,
    /// Finished: the result was delivered, or there was nothing to send.
    Done,
    /// Ended without a delivered result; `dead_reason` says why.
    Dead,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::RetryWait,
        JobState::Delivering,
        JobState::Done,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::RetryWait => "retry_wait",
            JobState::Delivering => "delivering",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    /// The state named `text` (as written by [`JobState::as_str`]).
    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == text)
    }

    pub(crate) fn decode(text: &str) -> Result<JobState> {
        JobState::parse(text)
            .ok_or_else(|| Error::Corrupt { what: "job state", value: text.to_owned() })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stored result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultKind {
    /// The connector's values.
    Success,
    /// The action's declared fallback values (the deadline passed, or the error was fatal).
    Fallback,
}

impl ResultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Success => "success",
            ResultKind::Fallback => "fallback",
        }
    }

    pub(crate) fn decode(text: &str) -> Result<ResultKind> {
        match text {
            "success" => Ok(ResultKind::Success),
            "fallback" => Ok(ResultKind::Fallback),
            other => Err(Error::Corrupt { what: "result kind", value: other.to_owned() }),
        }
    }
}

/// A call to store: what the intake decoded, in plain strings and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub member_id: String,
    pub action_code: String,
    /// The dedupe key: a second job with the same token is not created.
    pub event_token: String,
    pub workflow_id: String,
    /// The call as the host serializes it; `payload_version` says which format.
    pub payload: Value,
    pub payload_version: i32,
    /// `false` when the action returns nothing (`use_subscription = N`): it ends `done`.
    pub waits_for_result: bool,
    /// When the failure policy takes over (Unix ms).
    pub deadline_at: i64,
}

/// What [`Store::enqueue`] did with one [`NewJob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Created(JobId),
    /// A job with this `event_token` already existed (or came earlier in the same batch).
    Duplicate(JobId),
}

impl Enqueued {
    pub fn id(self) -> JobId {
        match self {
            Enqueued::Created(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// The right to finish one attempt: whoever holds the current lease of a job. Opaque so it
/// cannot be forged; a lease that is no longer current is refused with [`Fenced::LeaseLost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub(crate) job_id: JobId,
    pub(crate) kind: AttemptKind,
    pub(crate) owner: String,
    pub(crate) number: i32,
    pub(crate) until: i64,
}

impl Lease {
    pub fn job_id(&self) -> JobId {
        self.job_id
    }
    pub fn kind(&self) -> AttemptKind {
        self.kind
    }
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// The attempt (or delivery attempt) number this lease was granted for: 1, 2, …
    pub fn number(&self) -> u32 {
        u32::try_from(self.number).unwrap_or(0)
    }
    /// When it expires (Unix ms); after that another worker may claim the job.
    pub fn until(&self) -> i64 {
        self.until
    }
}

/// Whether a fenced transition happened.
#[must_use = "a lost lease means another worker owns the job now: drop the outcome"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    Applied,
    /// The lease is not current any more (expired and re-claimed, cancelled, or already
    /// finished): nothing was changed.
    LeaseLost,
}

impl Fenced {
    pub fn is_applied(self) -> bool {
        self == Fenced::Applied
    }
}

/// A fenced transition that ends the attempt `$lease` was granted for, as one transaction:
/// runs `$sql`, an UPDATE bound to `$binds` and then to the lease's job id, owner and attempt
/// number (the fence); when that changed the job, closes the attempt with `$outcome` and
/// `$error`. A lease of another kind than `$kind`, or one that is no longer current, changes
/// nothing. Evaluates to a [`Fenced`]; expands inside a `Store` method returning [`Result`].
macro_rules! fenced_transition {
    (
        $store:expr, $operation:literal, $lease:expr, $kind:expr,
        $sql:expr, [$($bind:expr),+ $(,)?], $outcome:expr, $error:expr, $now:expr $(,)?
    ) => {{
        let lease: &$crate::jobs::Lease = $lease;
        if lease.kind != $kind {
            $crate::jobs::Fenced::LeaseLost
        } else {
            $crate::backend::write_tx!($store, $operation, |tx, dialect| {
                let changed = sqlx::query($sql)
                    $(.bind($bind))+
                    .bind(lease.job_id.0)
                    .bind(lease.owner.as_str())
                    .bind(lease.number)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if changed == 0 {
                    return Ok($crate::jobs::Fenced::LeaseLost);
                }
                $crate::attempts::close_attempt!(tx, lease, $outcome, $error, $now);
                Ok($crate::jobs::Fenced::Applied)
            })
        }
    }};
}

pub(crate) use fenced_transition;

/// A job handed to a worker by [`Store::claim_due`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: JobId,
    pub member_id: String,
    pub action_code: String,
    pub event_token: String,
    pub workflow_id: String,
    pub payload: Value,
    pub payload_version: i32,
    pub waits_for_result: bool,
    pub deadline_at: i64,
    /// This attempt's number: 1 on the first run.
    pub attempt: u32,
    pub created_at: i64,
    pub lease: Lease,
}

/// The most jobs one claim takes.
const MAX_CLAIM: usize = 1_000;

macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "WITH due AS (SELECT id FROM jobs ",
            "WHERE state IN ('queued', 'retry_wait', 'running') AND next_run_at <= $1 ",
            "ORDER BY next_run_at, id LIMIT $2 ",
            $lock,
            ") UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $3, ",
            "lease_until = $4, next_run_at = $4, updated_at = $1 ",
            "WHERE id IN (SELECT id FROM due) ",
            "RETURNING id, member_id, action_code, event_token, workflow_id, payload, ",
            "payload_version, waits_for_result, deadline_at, attempts, created_at"
        )
    };
}

impl Store {
    /// Stores a batch of calls in ONE transaction (group commit: the intake funnels concurrent
    /// calls through here, so one fsync acknowledges them all). Returns, in input order, the
    /// new job's id or the id of the job that already had the `event_token`; a duplicate creates
    /// nothing. New jobs are `queued` and due at `now`.
    pub async fn enqueue(&self, jobs: &[NewJob], now: i64) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let payloads = jobs
            .iter()
            .map(|job| {
                serde_json::to_string(&job.payload).map_err(|source| Error::Serialize {
                    subject: format!("the call with event_token `{}`", job.event_token),
                    field: "payload",
                    source,
                })
            })
            .collect::<Result<Vec<String>>>()?;
        // The first occurrence of each token is inserted; later ones in the batch are duplicates.
        let mut seen: HashSet<&str> = HashSet::with_capacity(jobs.len());
        let first: Vec<bool> = jobs.iter().map(|job| seen.insert(&job.event_token)).collect();
        let firsts: Vec<usize> = (0..jobs.len()).filter(|&index| first[index]).collect();

        let (created, existing) = write_tx!(self, "enqueue", |tx, dialect| {
            let mut created: HashMap<String, JobId> = HashMap::with_capacity(firsts.len());
            let mut existing: HashMap<String, JobId> = HashMap::new();
            for chunk in firsts.chunks(CHUNK) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO jobs (member_id, action_code, event_token, workflow_id, payload, \
                     payload_version, waits_for_result, deadline_at, next_run_at, created_at, \
                     updated_at) ",
                );
                insert.push_values(chunk, |mut row, &index| {
                    let job = &jobs[index];
                    row.push_bind(job.member_id.as_str())
                        .push_bind(job.action_code.as_str())
                        .push_bind(job.event_token.as_str())
                        .push_bind(job.workflow_id.as_str())
                        .push_bind(payloads[index].as_str())
                        .push_bind(job.payload_version)
                        .push_bind(job.waits_for_result)
                        .push_bind(job.deadline_at)
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(now);
                });
                insert.push(" ON CONFLICT (event_token) DO NOTHING RETURNING id, event_token");
                for row in insert.build().fetch_all(&mut *tx).await? {
                    created.insert(row.try_get("event_token")?, JobId(row.try_get("id")?));
                }
                let missing: Vec<&str> = chunk
                    .iter()
                    .map(|&index| jobs[index].event_token.as_str())
                    .filter(|token| !created.contains_key(*token))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let mut select = sqlx::QueryBuilder::new(
                    "SELECT id, event_token FROM jobs WHERE event_token IN (",
                );
                let mut tokens = select.separated(", ");
                for token in &missing {
                    tokens.push_bind(*token);
                }
                select.push(")");
                for row in select.build().fetch_all(&mut *tx).await? {
                    existing.insert(row.try_get("event_token")?, JobId(row.try_get("id")?));
                }
            }
            Ok((created, existing))
        });

        jobs.iter()
            .zip(first)
            .map(|(job, first)| {
                let token = job.event_token.as_str();
                match (created.get(token), existing.get(token)) {
                    (Some(&id), _) if first => Ok(Enqueued::Created(id)),
                    (Some(&id), _) | (None, Some(&id)) => Ok(Enqueued::Duplicate(id)),
                    (None, None) => Err(Error::Corrupt {
                        what: "enqueue: event_token neither inserted nor found",
                        value: token.to_owned(),
                    }),
                }
            })
            .collect()
    }

    /// Claims up to `limit` (at most 1,000) due jobs for `worker`: queued or waiting-to-retry
    /// jobs whose `next_run_at <= now`, and running jobs whose lease expired (their worker died
    /// or stalled). Each becomes `running` under a lease until `now + lease`, its attempt count
    /// goes up by one and an `execute` attempt is opened; the attempt a dead worker left open
    /// is closed as `lease_expired`. Several claimers (tasks, processes, PostgreSQL nodes) never
    /// get the same job. Returned oldest-due first.
    pub async fn claim_due(
        &self,
        worker: &str,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>> {
        let until = now.saturating_add(millis(lease));
        let limit = i64::try_from(limit.min(MAX_CLAIM)).unwrap_or(0);
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(write_tx!(self, "claim due jobs", |tx, dialect| {
            let sql = match dialect {
                Dialect::Sqlite => claim_sql!(""),
                Dialect::Postgres => claim_sql!("FOR UPDATE SKIP LOCKED"),
            };
            let rows = sqlx::query(sql)
                .bind(now)
                .bind(limit)
                .bind(worker)
                .bind(until)
                .fetch_all(&mut *tx)
                .await?;
            let mut claimed = Vec::with_capacity(rows.len());
            let mut numbers: Vec<(JobId, i32)> = Vec::with_capacity(rows.len());
            for row in &rows {
                let id = JobId(row.try_get("id")?);
                let number: i32 = row.try_get("attempts")?;
                let payload: &str = row.try_get("payload")?;
                numbers.push((id, number));
                claimed.push(ClaimedJob {
                    id,
                    member_id: row.try_get("member_id")?,
                    action_code: row.try_get("action_code")?,
                    event_token: row.try_get("event_token")?,
                    workflow_id: row.try_get("workflow_id")?,
                    payload: parse_json(id, "payload", payload)?,
                    payload_version: row.try_get("payload_version")?,
                    waits_for_result: row.try_get("waits_for_result")?,
                    deadline_at: row.try_get("deadline_at")?,
                    attempt: count(number)?,
                    created_at: row.try_get("created_at")?,
                    lease: Lease {
                        job_id: id,
                        kind: AttemptKind::Execute,
                        owner: worker.to_owned(),
                        number,
                        until,
                    },
                });
            }
            claimed.sort_by_key(|job| job.id);
            open_attempts!(tx, AttemptKind::Execute, numbers, worker, now);
            Ok(claimed)
        }))
    }

    /// The attempt worked: stores `result` (never overwritten afterwards) and moves the job to
    /// `delivering`, or to `done` when the action returns nothing.
    pub async fn complete(&self, lease: &Lease, result: &Value, now: i64) -> Result<Fenced> {
        self.resolve(lease, result, ResultKind::Success, AttemptOutcome::Ok, None, now).await
    }

    /// The failure policy gave fallback values (deadline passed, fatal error, invalid input):
    /// stored like a result, with kind `fallback`; the attempt is closed with `outcome` and
    /// `error`, which is what an operator sees.
    pub async fn resolve_with_fallback(
        &self,
        lease: &Lease,
        fallback: &Value,
        outcome: AttemptOutcome,
        error: &str,
        now: i64,
    ) -> Result<Fenced> {
        self.resolve(lease, fallback, ResultKind::Fallback, outcome, Some(error), now).await
    }

    async fn resolve(
        &self,
        lease: &Lease,
        result: &Value,
        kind: ResultKind,
        outcome: AttemptOutcome,
        error: Option<&str>,
        now: i64,
    ) -> Result<Fenced> {
        let text = serde_json::to_string(result).map_err(|source| Error::Serialize {
            subject: format!("job {}", lease.job_id),
            field: "result",
            source,
        })?;
        Ok(fenced_transition!(
            self,
            "store a job's result",
            lease,
            AttemptKind::Execute,
            "UPDATE jobs SET \
             state = CASE WHEN waits_for_result THEN 'delivering' ELSE 'done' END, \
             result = $1, result_kind = $2, \
             next_delivery_at = CASE WHEN waits_for_result THEN $3 ELSE NULL END, \
             next_run_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $3 \
             WHERE id = $4 AND state = 'running' AND lease_owner = $5 AND attempts = $6 \
             AND result IS NULL",
            [text.as_str(), kind.as_str(), now],
            outcome,
            error,
            now,
        ))
    }

    /// The attempt failed transiently: the job waits in `retry_wait` until `next_run_at`.
    pub async fn retry_later(
        &self,
        lease: &Lease,
        next_run_at: i64,
        outcome: AttemptOutcome,
        error: &str,
        now: i64,
    ) -> Result<Fenced> {
        Ok(fenced_transition!(
            self,
            "schedule a retry",
            lease,
            AttemptKind::Execute,
            "UPDATE jobs SET state = 'retry_wait', next_run_at = $1, lease_owner = NULL, \
             lease_until = NULL, updated_at = $2 \
             WHERE id = $3 AND state = 'running' AND lease_owner = $4 AND attempts = $5",
            [next_run_at, now],
            outcome,
            Some(error),
            now,
        ))
    }

    /// The job cannot finish and has no fallback: it goes `dead` with `reason`.
    pub async fn kill(
        &self,
        lease: &Lease,
        outcome: AttemptOutcome,
        reason: &str,
        now: i64,
    ) -> Result<Fenced> {
        Ok(fenced_transition!(
            self,
            "kill a job",
            lease,
            AttemptKind::Execute,
            "UPDATE jobs SET state = 'dead', dead_reason = $1, next_run_at = NULL, \
             lease_owner = NULL, lease_until = NULL, updated_at = $2 \
             WHERE id = $3 AND state = 'running' AND lease_owner = $4 AND attempts = $5",
            [reason, now],
            outcome,
            Some(reason),
            now,
        ))
    }

    /// Extends a lease still held (a long attempt, or a slow delivery) to `now + lease`.
    /// On success `held` carries the new expiry.
    pub async fn extend_lease(
        &self,
        held: &mut Lease,
        lease: Duration,
        now: i64,
    ) -> Result<Fenced> {
        let until = now.saturating_add(millis(lease));
        let sql = match held.kind {
            AttemptKind::Execute => {
                "UPDATE jobs SET lease_until = $1, next_run_at = $1, updated_at = $2 \
                 WHERE id = $3 AND state = 'running' AND lease_owner = $4 AND attempts = $5"
            }
            AttemptKind::Deliver => {
                "UPDATE jobs SET lease_until = $1, next_delivery_at = $1, updated_at = $2 \
                 WHERE id = $3 AND state = 'delivering' AND lease_owner = $4 \
                 AND delivery_attempts = $5"
            }
        };
        let fenced = write_tx!(self, "extend a lease", |tx, dialect| {
            let changed = sqlx::query(sql)
                .bind(until)
                .bind(now)
                .bind(held.job_id.0)
                .bind(held.owner.as_str())
                .bind(held.number)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            Ok(if changed == 0 { Fenced::LeaseLost } else { Fenced::Applied })
        });
        if fenced.is_applied() {
            held.until = until;
        }
        Ok(fenced)
    }
}

/// A stored count (attempts, attempt numbers) as `u32`.
pub(crate) fn count(stored: i32) -> Result<u32> {
    u32::try_from(stored).map_err(|_| Error::Corrupt { what: "count", value: stored.to_string() })
}

/// Parses stored JSON, naming the job and field when it does not parse.
pub(crate) fn parse_json(job_id: JobId, field: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|source| Error::Json { job_id, field, source })
}
