//! What operators see and do (`b24act jobs list | show | retry | cancel`), and the queue-wide
//! questions the host asks (counts by state, when the next job falls due).

use serde_json::Value;
use sqlx::Row;

use crate::Store;
use crate::attempts::{Attempt, CLOSE_OPEN_ATTEMPTS_OF_JOB, attempt_from_row};
use crate::backend::{Dialect, read, write_tx};
use crate::error::{Error, Result};
use crate::jobs::{JobId, JobState, ResultKind, count, parse_json};

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub member_id: String,
    pub action_code: String,
    pub event_token: String,
    pub workflow_id: String,
    pub payload: Value,
    pub payload_version: i32,
    pub waits_for_result: bool,
    pub deadline_at: i64,
    pub state: JobState,
    /// Execution attempts so far.
    pub attempts: u32,
    /// queued / retry_wait: when it runs; running: when its lease expires.
    pub next_run_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub result: Option<Value>,
    pub result_kind: Option<ResultKind>,
    pub delivery_attempts: u32,
    /// delivering: when it is sent; while a sender holds it, when its lease expires.
    pub next_delivery_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub dead_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A job with its whole history.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDetail {
    pub job: Job,
    /// Execute attempts, then deliver attempts, each in number order.
    pub attempts: Vec<Attempt>,
}

/// Which jobs [`Store::list_jobs`] returns: newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub member_id: Option<String>,
    /// Only jobs older than this one (paging: pass the last id of the previous page).
    pub before: Option<JobId>,
    pub limit: u32,
}

impl Default for JobFilter {
    fn default() -> JobFilter {
        JobFilter { state: None, member_id: None, before: None, limit: 50 }
    }
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub queued: u64,
    pub running: u64,
    pub retry_wait: u64,
    pub delivering: u64,
    pub done: u64,
    pub dead: u64,
}

impl StateCounts {
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::RetryWait => self.retry_wait,
            JobState::Delivering => self.delivering,
            JobState::Done => self.done,
            JobState::Dead => self.dead,
        }
    }

    fn slot(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::RetryWait => &mut self.retry_wait,
            JobState::Delivering => &mut self.delivering,
            JobState::Done => &mut self.done,
            JobState::Dead => &mut self.dead,
        }
    }
}

/// What an operator's retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// The job runs again now (it had no result).
    Requeued,
    /// Its stored result is sent again now; it is not recomputed.
    Redelivering,
}

/// The reason an operator's cancel leaves on a job.
pub const CANCELLED_BY_OPERATOR: &str = "cancelled by operator";

/// The columns [`job_from_row!`] reads, as a literal for `concat!`.
macro_rules! job_columns {
    () => {
        "id, member_id, action_code, event_token, workflow_id, payload, payload_version, \
         waits_for_result, deadline_at, state, attempts, next_run_at, lease_owner, lease_until, \
         result, result_kind, delivery_attempts, next_delivery_at, delivered_at, dead_reason, \
         created_at, updated_at"
    };
}

/// Decodes a `jobs` row selected with [`job_columns!`]. Expands inside a body.
macro_rules! job_from_row {
    ($row:expr) => {{
        let row = &$row;
        let id = JobId(row.try_get("id")?);
        Job {
            id,
            member_id: row.try_get("member_id")?,
            action_code: row.try_get("action_code")?,
            event_token: row.try_get("event_token")?,
            workflow_id: row.try_get("workflow_id")?,
            payload: parse_json(id, "payload", row.try_get("payload")?)?,
            payload_version: row.try_get("payload_version")?,
            waits_for_result: row.try_get("waits_for_result")?,
            deadline_at: row.try_get("deadline_at")?,
            state: JobState::decode(row.try_get("state")?)?,
            attempts: count(row.try_get("attempts")?)?,
            next_run_at: row.try_get("next_run_at")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_until: row.try_get("lease_until")?,
            result: match row.try_get::<Option<&str>, _>("result")? {
                Some(text) => Some(parse_json(id, "result", text)?),
                None => None,
            },
            result_kind: match row.try_get::<Option<&str>, _>("result_kind")? {
                Some(text) => Some(ResultKind::decode(text)?),
                None => None,
            },
            delivery_attempts: count(row.try_get("delivery_attempts")?)?,
            next_delivery_at: row.try_get("next_delivery_at")?,
            delivered_at: row.try_get("delivered_at")?,
            dead_reason: row.try_get("dead_reason")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        }
    }};
}

/// Reads (and on PostgreSQL row-locks) a job's state inside a write transaction; a missing job
/// ends the body with [`Error::JobNotFound`]. Evaluates to `(JobState, has_result)`.
macro_rules! locked_state {
    ($tx:ident, $dialect:ident, $id:expr) => {{
        let sql = match $dialect {
            Dialect::Sqlite => {
                "SELECT state, result IS NOT NULL AS has_result FROM jobs WHERE id = $1"
            }
            Dialect::Postgres => {
                "SELECT state, result IS NOT NULL AS has_result FROM jobs WHERE id = $1 FOR UPDATE"
            }
        };
        let Some(row) = sqlx::query(sql).bind($id.0).fetch_optional(&mut *$tx).await? else {
            return Err(Error::JobNotFound($id).into());
        };
        let state = JobState::decode(row.try_get("state")?)?;
        let has_result: bool = row.try_get("has_result")?;
        (state, has_result)
    }};
}

impl Store {
    /// Jobs matching `filter`, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        Ok(read!(self, "list jobs", |pool, dialect| {
            let mut query = sqlx::QueryBuilder::new(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE 1 = 1"
            ));
            if let Some(state) = filter.state {
                query.push(" AND state = ").push_bind(state.as_str());
            }
            if let Some(member_id) = &filter.member_id {
                query.push(" AND member_id = ").push_bind(member_id.as_str());
            }
            if let Some(before) = filter.before {
                query.push(" AND id < ").push_bind(before.0);
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(filter.limit));
            let rows = query.build().fetch_all(pool).await?;
            let mut jobs = Vec::with_capacity(rows.len());
            for row in rows {
                jobs.push(job_from_row!(row));
            }
            Ok(jobs)
        }))
    }

    /// One job with every attempt, or `None` if there is no such job.
    pub async fn job(&self, id: JobId) -> Result<Option<JobDetail>> {
        Ok(read!(self, "read a job", |pool, dialect| {
            let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
            let Some(row) = sqlx::query(sql).bind(id.0).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let job = job_from_row!(row);
            let rows = sqlx::query(
                "SELECT job_id, kind, number, worker, started_at, finished_at, outcome, error \
                 FROM attempts WHERE job_id = $1 ORDER BY kind DESC, number",
            )
            .bind(id.0)
            .fetch_all(pool)
            .await?;
            let mut attempts = Vec::with_capacity(rows.len());
            for row in rows {
                attempts.push(attempt_from_row!(row));
            }
            Ok(Some(JobDetail { job, attempts }))
        }))
    }

    /// An operator's retry. A job with a stored result (its delivery died) is sent again — the
    /// result is never recomputed. A job without one (dead, or waiting to retry) runs again now.
    /// `deadline_at` replaces the job's deadline when given (an expired deadline would send the
    /// fallback at once). Any other state is refused with [`Error::NotAllowed`].
    pub async fn retry_job(
        &self,
        id: JobId,
        deadline_at: Option<i64>,
        now: i64,
    ) -> Result<Retried> {
        Ok(write_tx!(self, "retry a job", |tx, dialect| {
            let (state, has_result) = locked_state!(tx, dialect, id);
            let (retried, sql) = match (state, has_result) {
                (JobState::Dead, true) => (
                    Retried::Redelivering,
                    "UPDATE jobs SET state = 'delivering', next_delivery_at = $1, \
                     dead_reason = NULL, lease_owner = NULL, lease_until = NULL, \
                     deadline_at = COALESCE($2, deadline_at), updated_at = $1 WHERE id = $3",
                ),
                (JobState::Dead | JobState::RetryWait, false) => (
                    Retried::Requeued,
                    "UPDATE jobs SET state = 'queued', next_run_at = $1, dead_reason = NULL, \
                     lease_owner = NULL, lease_until = NULL, \
                     deadline_at = COALESCE($2, deadline_at), updated_at = $1 WHERE id = $3",
                ),
                _ => return Err(Error::NotAllowed { action: "retry", job_id: id, state }.into()),
            };
            sqlx::query(sql).bind(now).bind(deadline_at).bind(id.0).execute(&mut *tx).await?;
            Ok(retried)
        }))
    }

    /// An operator's cancel: a job not yet finished goes `dead` with the reason "cancelled by
    /// operator"; a worker or sender holding it loses its lease. Finished jobs are refused.
    pub async fn cancel_job(&self, id: JobId, now: i64) -> Result<()> {
        write_tx!(self, "cancel a job", |tx, dialect| {
            let (state, _) = locked_state!(tx, dialect, id);
            if matches!(state, JobState::Done | JobState::Dead) {
                return Err(Error::NotAllowed { action: "cancel", job_id: id, state }.into());
            }
            sqlx::query(
                "UPDATE jobs SET state = 'dead', dead_reason = $1, next_run_at = NULL, \
                 next_delivery_at = NULL, lease_owner = NULL, lease_until = NULL, \
                 updated_at = $2 WHERE id = $3",
            )
            .bind(CANCELLED_BY_OPERATOR)
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
            sqlx::query(CLOSE_OPEN_ATTEMPTS_OF_JOB)
                .bind(now)
                .bind(CANCELLED_BY_OPERATOR)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            Ok(())
        });
        Ok(())
    }

    /// How many jobs are in each state.
    pub async fn state_counts(&self) -> Result<StateCounts> {
        self.counts_where(None).await
    }

    /// How many jobs of one portal are in each state.
    pub async fn portal_state_counts(&self, member_id: &str) -> Result<StateCounts> {
        self.counts_where(Some(member_id)).await
    }

    async fn counts_where(&self, member_id: Option<&str>) -> Result<StateCounts> {
        Ok(read!(self, "count jobs", |pool, dialect| {
            let rows = sqlx::query(
                "SELECT state, COUNT(*) AS jobs FROM jobs \
                 WHERE $1 IS NULL OR member_id = $1 GROUP BY state",
            )
            .bind(member_id)
            .fetch_all(pool)
            .await?;
            let mut counts = StateCounts::default();
            for row in rows {
                let state = JobState::decode(row.try_get("state")?)?;
                let jobs: i64 = row.try_get("jobs")?;
                *counts.slot(state) = u64::try_from(jobs).unwrap_or(0);
            }
            Ok(counts)
        }))
    }

    /// When the next job falls due (Unix ms): the earliest run, retry, lease expiry or delivery.
    /// `None` when nothing is pending. Workers sleep until then (or until the intake wakes them).
    pub async fn next_wakeup(&self) -> Result<Option<i64>> {
        Ok(read!(self, "find the next due job", |pool, dialect| {
            let run: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(next_run_at) FROM jobs \
                 WHERE state IN ('queued', 'retry_wait', 'running')",
            )
            .fetch_one(pool)
            .await?;
            let deliver: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(next_delivery_at) FROM jobs WHERE state = 'delivering'",
            )
            .fetch_one(pool)
            .await?;
            Ok(match (run, deliver) {
                (Some(run), Some(deliver)) => Some(run.min(deliver)),
                (one, other) => one.or(other),
            })
        }))
    }
}
