//! What operators see and do (`b24act jobs …`, the console): listing and showing jobs with
//! their history, retrying, cancelling (with or without the fallback), completing by hand and
//! re-sending a result; and the queue-wide questions the host asks (counts by state, when the
//! next job falls due).
//!
//! Every operator action is one write transaction that reads the job under a row lock, refuses
//! what is unsafe, changes it and records it in `job_history` with its actor. A worker or
//! sender holding the job loses its lease: the change takes it out of the state its lease was
//! granted in, and clears the lease, so the holder's fenced transition changes nothing.

use serde_json::Value;

use crate::Store;
use crate::attempts::{ATTEMPT_COLUMNS, attempt_from};
use crate::error::{Error, Result};
use crate::jobs::{call_from, close_open_attempts, stop_jobs};
use crate::model::{
    CANCELLED_BY_OPERATOR, COMPLETED_BY_OPERATOR, HistoryEntry, Job, JobCount, JobDetail,
    JobFilter, JobId, JobState, OperatorAction, ResultKind, Retried, StateCounts,
};
use crate::sql::{Conn, Failure, Record, Statement, count, decode, parse_json, to_json};

/// Selects every column [`job_from`] reads; a `WHERE` follows.
const SELECT_JOBS: &str = "SELECT id, member_id, action_code, event_token, workflow_id, \
     document_id, payload, payload_version, waits_for_result, deadline_at, state, attempts, \
     next_run_at, lease_owner, lease_until, result, result_kind, delivery_attempts, \
     next_delivery_at, delivered_at, send_uncertain, delivery_unconfirmed, dead_reason, \
     created_at, updated_at FROM jobs";

/// Sends a job's stored result again now (never recomputed): `$1` now, `$2` a new deadline or
/// NULL, `$3` the job. A `done` job's result reached the portal, so the send is uncertain from
/// the start: a "not found" then means the workflow took it, and the job ends `done`,
/// unconfirmed, not `dead`.
const REDELIVER: &str = "UPDATE jobs SET state = 'delivering', next_delivery_at = $1, \
     dead_reason = NULL, delivered_at = NULL, delivery_unconfirmed = false, \
     send_uncertain = (send_uncertain OR state = 'done'), lease_owner = NULL, lease_until = NULL, \
     deadline_at = COALESCE($2, deadline_at), updated_at = $1 WHERE id = $3";

impl Store {
    /// Jobs matching `filter`, newest first. Each filter is served by an index (see
    /// `migrations/*/0003_operator.sql`), so a page stays fast among many jobs.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let mut query = Statement::new(SELECT_JOBS).push(" WHERE 1 = 1");
        if let Some(state) = filter.state {
            query = query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(member_id) = &filter.member_id {
            query = query.push(" AND member_id = ").push_bind(member_id.as_str());
        }
        if let Some(code) = &filter.action_code {
            query = query.push(" AND action_code = ").push_bind(code.as_str());
        }
        if let Some(workflow_id) = &filter.workflow_id {
            query = query.push(" AND workflow_id = ").push_bind(workflow_id.as_str());
        }
        if let Some(document_id) = &filter.document_id {
            query = query.push(" AND document_id = ").push_bind(document_id.as_str());
        }
        if let Some(since) = filter.created_since {
            query = query.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = filter.created_until {
            query = query.push(" AND created_at < ").push_bind(until);
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

    /// One job with every attempt and its history, or `None` if there is no such job.
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
            let history = Statement::new(
                "SELECT at, actor, action, detail FROM job_history WHERE job_id = $1 ORDER BY id",
            )
            .bind(id);
            let history =
                conn.fetch_all(history).await?.iter().map(entry_from).collect::<Result<_, _>>()?;
            Ok(Some(JobDetail { job, attempts, history }))
        })
        .await
    }

    /// An operator's retry. A job with a stored result (its delivery died) is sent again — the
    /// result is never recomputed. A job without one (dead, or waiting to retry) runs again now.
    /// `deadline_at` replaces the job's deadline when given (an expired deadline would send the
    /// fallback at once). A result that may already have reached the workflow (an uncertain
    /// send, or a delivery recorded as unconfirmed) is refused with [`Error::MayBeDelivered`]
    /// unless `force`; with it, an unconfirmed `done` job is sent again too. Any other state is
    /// refused with [`Error::NotAllowed`]. Recorded in the job's history as done by `actor`.
    pub async fn retry_job(
        &self,
        id: JobId,
        deadline_at: Option<i64>,
        force: bool,
        actor: &str,
        now: i64,
    ) -> Result<Retried> {
        self.write("retry a job", async |conn| {
            let job = locked_job(conn, id).await?;
            let redeliver = job.has_result
                && (job.state == JobState::Dead
                    || (job.state == JobState::Done && job.delivery_unconfirmed));
            let (retried, sql, detail) = if redeliver {
                let may_be_delivered = job.send_uncertain || job.delivery_unconfirmed;
                if may_be_delivered && !force {
                    return Err(Error::MayBeDelivered { job_id: id }.into());
                }
                let detail = if may_be_delivered {
                    "stored result sent again, forced: it may have been delivered"
                } else {
                    "stored result sent again"
                };
                (Retried::Redelivering, REDELIVER, detail)
            } else if !job.has_result && matches!(job.state, JobState::Dead | JobState::RetryWait) {
                let requeue = "UPDATE jobs SET state = 'queued', next_run_at = $1, \
                     dead_reason = NULL, lease_owner = NULL, lease_until = NULL, \
                     deadline_at = COALESCE($2, deadline_at), updated_at = $1 WHERE id = $3";
                (Retried::Requeued, requeue, "runs again now")
            } else {
                let state = job.state;
                return Err(Error::NotAllowed { action: "retry", job_id: id, state }.into());
            };
            conn.execute(Statement::new(sql).bind(now).bind(deadline_at).bind(id)).await?;
            record(conn, id, actor, OperatorAction::Retry, Some(detail), now).await?;
            Ok(retried)
        })
        .await
    }

    /// An operator's cancel: a job not yet finished goes `dead` with the reason "cancelled by
    /// operator"; a worker or sender holding it loses its lease. Nothing is sent: the workflow
    /// keeps waiting (see [`Store::cancel_with_fallback`]). Finished jobs are refused.
    pub async fn cancel_job(&self, id: JobId, actor: &str, now: i64) -> Result<()> {
        self.write("cancel a job", async |conn| {
            let state = locked_job(conn, id).await?.state;
            if matches!(state, JobState::Done | JobState::Dead) {
                return Err(Error::NotAllowed { action: "cancel", job_id: id, state }.into());
            }
            stop_jobs(conn, "id = $3", id.into(), CANCELLED_BY_OPERATOR, now).await?;
            record(conn, id, actor, OperatorAction::Cancel, Some("nothing sent"), now).await?;
            Ok(())
        })
        .await
    }

    /// An operator's cancel that releases the workflow: `fallback` (the action's declared
    /// fallback values, built by the host) is stored as the job's result, kind `fallback`, and
    /// goes to the outbox. The job must have no result yet — queued, running (its worker loses
    /// the lease), waiting to retry, or dead without one (a cancelled job, a dead letter) — and
    /// its workflow must wait for one; otherwise it is refused ([`Error::HasResult`],
    /// [`Error::NothingToSend`], [`Error::NotAllowed`]).
    pub async fn cancel_with_fallback(
        &self,
        id: JobId,
        fallback: &Value,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let settlement = Settlement {
            action: OperatorAction::CancelWithFallback,
            verb: "cancel with the fallback",
            kind: ResultKind::Fallback,
            reason: CANCELLED_BY_OPERATOR,
            detail: "fallback values sent",
        };
        self.settle(id, fallback, &settlement, actor, now).await
    }

    /// An operator's completion by hand: `result` (values typed in, checked by the host against
    /// the action's return properties) is stored as the job's result, kind `manual`, and goes
    /// to the outbox. Refused like [`Store::cancel_with_fallback`].
    pub async fn complete_by_hand(
        &self,
        id: JobId,
        result: &Value,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let settlement = Settlement {
            action: OperatorAction::Complete,
            verb: "complete by hand",
            kind: ResultKind::Manual,
            reason: COMPLETED_BY_OPERATOR,
            detail: "values typed in sent",
        };
        self.settle(id, result, &settlement, actor, now).await
    }

    async fn settle(
        &self,
        id: JobId,
        result: &Value,
        settlement: &Settlement,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let text = to_json(|| format!("job {id}"), "result", result)?;
        self.write("settle a job by hand", async |conn| {
            let job = locked_job(conn, id).await?;
            job.may_settle(id, settlement.verb)?;
            close_open_attempts(conn, "id = $3", id.into(), settlement.reason, now).await?;
            let update = Statement::new(
                "UPDATE jobs SET state = 'delivering', result = $1, result_kind = $2, \
                 next_delivery_at = $3, next_run_at = NULL, lease_owner = NULL, \
                 lease_until = NULL, dead_reason = NULL, updated_at = $3 \
                 WHERE id = $4 AND result IS NULL",
            );
            let update =
                update.bind(text.as_str()).bind(settlement.kind.as_str()).bind(now).bind(id);
            conn.execute(update).await?;
            record(conn, id, actor, settlement.action, Some(settlement.detail), now).await?;
            Ok(())
        })
        .await
    }

    /// An operator's re-send of a stored result, never recomputed: a `done` job's (delivered,
    /// confirmed or not) or a dead one's (its delivery refused). Only with `force`, since the
    /// workflow may have it already — a finished workflow answers "not found" to a second
    /// `event.send` (protocol §3.3), so a re-sent `done` job ends `done` again, unconfirmed;
    /// without it [`Error::ResendNeedsForce`]. A job without a stored result is refused with
    /// [`Error::NoResult`], one still on its way with [`Error::NotAllowed`].
    pub async fn resend_result(&self, id: JobId, force: bool, actor: &str, now: i64) -> Result<()> {
        const VERB: &str = "re-send the result of";
        self.write("re-send a result", async |conn| {
            let job = locked_job(conn, id).await?;
            if !job.has_result {
                return Err(Error::NoResult { action: VERB, job_id: id }.into());
            }
            if !matches!(job.state, JobState::Done | JobState::Dead) {
                let state = job.state;
                return Err(Error::NotAllowed { action: VERB, job_id: id, state }.into());
            }
            if !force {
                return Err(Error::ResendNeedsForce { job_id: id }.into());
            }
            let redeliver = Statement::new(REDELIVER).bind(now).bind(None::<i64>).bind(id);
            conn.execute(redeliver).await?;
            let detail = format!("stored result sent again, forced (it was {})", job.state);
            record(conn, id, actor, OperatorAction::Resend, Some(&detail), now).await?;
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

    /// The oldest job whose workflow still waits on its run — queued, running or waiting to
    /// retry — or `None`. Ids grow with arrival, so it is the least id of those states, read
    /// from `jobs_by_state` (state, id) one state at a time: three index probes, whatever the
    /// number of jobs.
    pub async fn oldest_waiting(&self) -> Result<Option<Job>> {
        self.read("find the oldest waiting job", async |conn| {
            let mut oldest: Option<i64> = None;
            for state in [JobState::Queued, JobState::Running, JobState::RetryWait] {
                let least = Statement::new("SELECT MIN(id) AS id FROM jobs WHERE state = $1")
                    .bind(state.as_str());
                let id: Option<i64> = match conn.fetch_optional(least).await? {
                    Some(row) => row.get("id")?,
                    None => None,
                };
                oldest = [oldest, id].into_iter().flatten().min();
            }
            let Some(id) = oldest else { return Ok(None) };
            let select = Statement::new(SELECT_JOBS).push(" WHERE id = $1").bind(id);
            conn.fetch_optional(select).await?.as_ref().map(job_from).transpose()
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

/// How an operator's settlement stores its result and records itself.
struct Settlement {
    action: OperatorAction,
    /// What the refusals say the operator tried: "cannot {verb} job 7: …".
    verb: &'static str,
    kind: ResultKind,
    /// What closes the attempt a worker had under way.
    reason: &'static str,
    detail: &'static str,
}

/// What an operator's command needs to know of a job, read under a row lock.
struct LockedJob {
    state: JobState,
    waits_for_result: bool,
    has_result: bool,
    /// A sender holds it (a `delivering` job: its send may be under way).
    leased: bool,
    send_uncertain: bool,
    delivery_unconfirmed: bool,
}

impl LockedJob {
    /// Whether a result may be stored for it by hand (`verb` names what is tried): it has none
    /// yet, its workflow waits for one, and it is not finished without one.
    fn may_settle(&self, job_id: JobId, action: &'static str) -> Result<(), Error> {
        if !self.waits_for_result {
            return Err(Error::NothingToSend { action, job_id });
        }
        if self.has_result {
            let whereabouts = if self.state == JobState::Done && !self.delivery_unconfirmed {
                "the portal accepted"
            } else if self.send_uncertain || self.delivery_unconfirmed || self.leased {
                "may already have reached the workflow"
            } else if self.state == JobState::Dead {
                "the portal refused (`jobs retry` sends it again)"
            } else {
                "is waiting to be sent"
            };
            return Err(Error::HasResult { action, job_id, whereabouts });
        }
        match self.state {
            JobState::Queued | JobState::Running | JobState::RetryWait | JobState::Dead => Ok(()),
            state @ (JobState::Delivering | JobState::Done) => {
                Err(Error::NotAllowed { action, job_id, state })
            }
        }
    }
}

/// Reads job `id` inside a write transaction (on PostgreSQL row-locked until the commit; on
/// SQLite the write transaction holds the whole database); a missing job is
/// [`Error::JobNotFound`].
async fn locked_job(conn: &mut Conn<'_>, id: JobId) -> Result<LockedJob, Failure> {
    let select = Statement::new(
        "SELECT state, waits_for_result, result IS NOT NULL AS has_result, \
         lease_owner IS NOT NULL AS leased, send_uncertain, delivery_unconfirmed \
         FROM jobs WHERE id = $1",
    )
    .push(conn.dialect().lock_row())
    .bind(id);
    let Some(row) = conn.fetch_optional(select).await? else {
        return Err(Error::JobNotFound(id).into());
    };
    Ok(LockedJob {
        state: decode(row.get("state")?)?,
        waits_for_result: row.get("waits_for_result")?,
        has_result: row.get("has_result")?,
        leased: row.get("leased")?,
        send_uncertain: row.get("send_uncertain")?,
        delivery_unconfirmed: row.get("delivery_unconfirmed")?,
    })
}

/// Adds a line to job `id`'s history, in the transaction of the change it records.
async fn record(
    conn: &mut Conn<'_>,
    id: JobId,
    actor: &str,
    action: OperatorAction,
    detail: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let insert = Statement::new(
        "INSERT INTO job_history (job_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)",
    );
    conn.execute(insert.bind(id).bind(now).bind(actor).bind(action.as_str()).bind(detail)).await?;
    Ok(())
}

/// Decodes a `job_history` row.
fn entry_from(row: &Record) -> Result<HistoryEntry, Failure> {
    Ok(HistoryEntry {
        at: row.get("at")?,
        actor: row.get("actor")?,
        action: decode(row.get("action")?)?,
        detail: row.get("detail")?,
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
