//! What operators see and do (`b24act jobs list | show | retry | cancel`), and the queue-wide
//! questions the host asks (counts by state, when the next job falls due).

use crate::Store;
use crate::attempts::{ATTEMPT_COLUMNS, attempt_from};
use crate::error::{Error, Result};
use crate::jobs::{call_from, stop_jobs};
use crate::model::{
    CANCELLED_BY_OPERATOR, Job, JobCount, JobDetail, JobFilter, JobId, JobState, Retried,
    StateCounts,
};
use crate::sql::{Conn, Failure, Record, Statement, count, decode, parse_json};

/// Selects every column [`job_from`] reads; a `WHERE` follows.
const SELECT_JOBS: &str = "SELECT id, member_id, action_code, event_token, workflow_id, payload, \
     payload_version, waits_for_result, deadline_at, state, attempts, next_run_at, lease_owner, \
     lease_until, result, result_kind, delivery_attempts, next_delivery_at, delivered_at, \
     send_uncertain, delivery_unconfirmed, dead_reason, created_at, updated_at FROM jobs";

impl Store {
    /// Jobs matching `filter`, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let mut query = Statement::new(SELECT_JOBS).push(" WHERE 1 = 1");
        if let Some(state) = filter.state {
            query = query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(member_id) = &filter.member_id {
            query = query.push(" AND member_id = ").push_bind(member_id.as_str());
        }
        if let Some(before) = filter.before {
            query = query.push(" AND id < ").push_bind(before);
        }
        let query = query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(filter.limit));
        self.read("list jobs", async |conn| {
            conn.fetch_all(query).await?.iter().map(job_from).collect()
        })
        .await
    }

    /// One job with every attempt, or `None` if there is no such job.
    pub async fn job(&self, id: JobId) -> Result<Option<JobDetail>> {
        self.read("read a job", async |conn| {
            let select = Statement::new(SELECT_JOBS).push(" WHERE id = $1").bind(id);
            let Some(row) = conn.fetch_optional(select).await? else {
                return Ok(None);
            };
            let job = job_from(&row)?;
            let attempts = Statement::new("SELECT ")
                .push(ATTEMPT_COLUMNS)
                .push(" FROM attempts WHERE job_id = $1 ORDER BY kind DESC, number")
                .bind(id);
            let attempts = conn
                .fetch_all(attempts)
                .await?
                .iter()
                .map(attempt_from)
                .collect::<Result<_, _>>()?;
            Ok(Some(JobDetail { job, attempts }))
        })
        .await
    }

    /// An operator's retry. A job with a stored result (its delivery died) is sent again — the
    /// result is never recomputed. A job without one (dead, or waiting to retry) runs again now.
    /// `deadline_at` replaces the job's deadline when given (an expired deadline would send the
    /// fallback at once). A result that may already have reached the workflow (an uncertain
    /// send, or a delivery recorded as unconfirmed) is refused with [`Error::MayBeDelivered`]
    /// unless `force`; with it, an unconfirmed `done` job is sent again too. Any other state is
    /// refused with [`Error::NotAllowed`].
    pub async fn retry_job(
        &self,
        id: JobId,
        deadline_at: Option<i64>,
        force: bool,
        now: i64,
    ) -> Result<Retried> {
        self.write("retry a job", async |conn| {
            let job = locked_job(conn, id).await?;
            let redeliver = job.has_result
                && (job.state == JobState::Dead
                    || (job.state == JobState::Done && job.delivery_unconfirmed));
            let (retried, sql) = if redeliver {
                if (job.send_uncertain || job.delivery_unconfirmed) && !force {
                    return Err(Error::MayBeDelivered { job_id: id }.into());
                }
                (
                    Retried::Redelivering,
                    "UPDATE jobs SET state = 'delivering', next_delivery_at = $1, \
                     dead_reason = NULL, delivered_at = NULL, delivery_unconfirmed = false, \
                     lease_owner = NULL, lease_until = NULL, \
                     deadline_at = COALESCE($2, deadline_at), updated_at = $1 WHERE id = $3",
                )
            } else if !job.has_result && matches!(job.state, JobState::Dead | JobState::RetryWait) {
                (
                    Retried::Requeued,
                    "UPDATE jobs SET state = 'queued', next_run_at = $1, dead_reason = NULL, \
                     lease_owner = NULL, lease_until = NULL, \
                     deadline_at = COALESCE($2, deadline_at), updated_at = $1 WHERE id = $3",
                )
            } else {
                let state = job.state;
                return Err(Error::NotAllowed { action: "retry", job_id: id, state }.into());
            };
            conn.execute(Statement::new(sql).bind(now).bind(deadline_at).bind(id)).await?;
            Ok(retried)
        })
        .await
    }

    /// An operator's cancel: a job not yet finished goes `dead` with the reason "cancelled by
    /// operator"; a worker or sender holding it loses its lease. Finished jobs are refused.
    pub async fn cancel_job(&self, id: JobId, now: i64) -> Result<()> {
        self.write("cancel a job", async |conn| {
            let state = locked_job(conn, id).await?.state;
            if matches!(state, JobState::Done | JobState::Dead) {
                return Err(Error::NotAllowed { action: "cancel", job_id: id, state }.into());
            }
            stop_jobs(conn, "id = $3", id.into(), CANCELLED_BY_OPERATOR, now).await?;
            Ok(())
        })
        .await
    }

    /// How many jobs are in each state.
    pub async fn state_counts(&self) -> Result<StateCounts> {
        self.counts_where(None).await
    }

    /// How many jobs of one portal are in each state.
    pub async fn portal_state_counts(&self, member_id: &str) -> Result<StateCounts> {
        self.counts_where(Some(member_id)).await
    }

    /// How many jobs of each portal and action are in each state (combinations with no job
    /// are absent), ordered by portal, action and state name. One aggregate over the table, read
    /// once: Prometheus scrapes it, and the console's overview shows it.
    pub async fn job_counts(&self) -> Result<Vec<JobCount>> {
        self.read("count jobs by portal and action", async |conn| {
            let select = Statement::new(
                "SELECT member_id, action_code, state, COUNT(*) AS jobs FROM jobs \
                 GROUP BY member_id, action_code, state ORDER BY member_id, action_code, state",
            );
            conn.fetch_all(select)
                .await?
                .iter()
                .map(|row| {
                    let jobs: i64 = row.get("jobs")?;
                    Ok(JobCount {
                        member_id: row.get("member_id")?,
                        action_code: row.get("action_code")?,
                        state: decode(row.get("state")?)?,
                        jobs: u64::try_from(jobs).unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }

    async fn counts_where(&self, member_id: Option<&str>) -> Result<StateCounts> {
        self.read("count jobs", async |conn| {
            let select = Statement::new(
                "SELECT state, COUNT(*) AS jobs FROM jobs \
                 WHERE $1 IS NULL OR member_id = $1 GROUP BY state",
            );
            let mut counts = StateCounts::default();
            for row in conn.fetch_all(select.bind(member_id)).await? {
                let jobs: i64 = row.get("jobs")?;
                *counts.slot(decode(row.get("state")?)?) = u64::try_from(jobs).unwrap_or(0);
            }
            Ok(counts)
        })
        .await
    }

    /// When the next job falls due (Unix ms): the earliest run, retry, lease expiry or delivery.
    /// `None` when nothing is pending. Workers sleep until then (or until the intake wakes them).
    pub async fn next_wakeup(&self) -> Result<Option<i64>> {
        self.read("find the next due job", async |conn| {
            let mut next = None;
            for earliest in [
                "SELECT MIN(next_run_at) AS due FROM jobs \
                 WHERE state IN ('queued', 'retry_wait', 'running')",
                "SELECT MIN(next_delivery_at) AS due FROM jobs WHERE state = 'delivering'",
            ] {
                let due: Option<i64> = match conn.fetch_optional(Statement::new(earliest)).await? {
                    Some(row) => row.get("due")?,
                    None => None,
                };
                next = [next, due].into_iter().flatten().min();
            }
            Ok(next)
        })
        .await
    }
}

/// Reads (and on PostgreSQL row-locks) a job's state inside a write transaction, and whether it
/// has a stored result; a missing job is [`Error::JobNotFound`].
/// What an operator's command needs to know of a job, read under a row lock.
struct LockedJob {
    state: JobState,
    has_result: bool,
    send_uncertain: bool,
    delivery_unconfirmed: bool,
}

async fn locked_job(conn: &mut Conn<'_>, id: JobId) -> Result<LockedJob, Failure> {
    let select = Statement::new(
        "SELECT state, result IS NOT NULL AS has_result, send_uncertain, delivery_unconfirmed \
         FROM jobs WHERE id = $1",
    )
    .push(conn.dialect().lock_row())
    .bind(id);
    let Some(row) = conn.fetch_optional(select).await? else {
        return Err(Error::JobNotFound(id).into());
    };
    Ok(LockedJob {
        state: decode(row.get("state")?)?,
        has_result: row.get("has_result")?,
        send_uncertain: row.get("send_uncertain")?,
        delivery_unconfirmed: row.get("delivery_unconfirmed")?,
    })
}

/// Decodes a `jobs` row selected with [`SELECT_JOBS`].
fn job_from(row: &Record) -> Result<Job, Failure> {
    let id = JobId(row.get("id")?);
    Ok(Job {
        id,
        call: call_from(id, row)?,
        state: decode(row.get("state")?)?,
        attempts: count(row.get("attempts")?)?,
        next_run_at: row.get("next_run_at")?,
        lease_owner: row.get("lease_owner")?,
        lease_until: row.get("lease_until")?,
        result: row
            .get::<Option<&str>>("result")?
            .map(|text| parse_json(id, "result", text))
            .transpose()?,
        result_kind: row.get::<Option<&str>>("result_kind")?.map(decode).transpose()?,
        delivery_attempts: count(row.get("delivery_attempts")?)?,
        next_delivery_at: row.get("next_delivery_at")?,
        delivered_at: row.get("delivered_at")?,
        send_uncertain: row.get("send_uncertain")?,
        delivery_unconfirmed: row.get("delivery_unconfirmed")?,
        dead_reason: row.get("dead_reason")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}
