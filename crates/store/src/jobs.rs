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
use std::time::Duration;

use serde_json::Value;

use crate::Store;
use crate::attempts::{CHUNK, Claim, Ended, fenced_update, lease_until};
use crate::error::{Error, Result};
use crate::model::{
    AttemptKind, AttemptOutcome, ClaimedJob, Enqueued, Fenced, JobId, Lease, NewJob, ResultKind,
};
use crate::sql::{Conn, Failure, Param, Record, Statement, count, parse_json, to_json};

/// The most jobs one claim takes.
const MAX_CLAIM: usize = 1_000;

/// Picks the due jobs to claim — queued or waiting-to-retry jobs whose time has come, and
/// running jobs whose lease expired — round-robin across portals: the oldest due of every
/// portal first, then the second oldest of each, and so on, so one portal's backlog never
/// holds up another's few (design.md §3: fairness). A portal's jobs running now count as its
/// first turns: workers claim a slot or two at a time as attempts end, and by age alone the
/// big portal's oldest job would win every such claim, leaving a small portal's first job
/// behind its whole backlog; counted this way, the portal with the fewest running goes first. The portals are found by a loose index scan
/// (`jobs_run_due_by_member`, one step per portal); between this and [`CLAIM_DUE_RANK`] the
/// dialect's [`Dialect::due_of_each_portal`] gives each portal's oldest `$2` due jobs as `own`,
/// so a claim reads a few rows per portal, never a whole backlog.
///
/// [`Dialect::due_of_each_portal`]: crate::dialect::Dialect::due_of_each_portal
const CLAIM_DUE_PORTALS: &str = "WITH RECURSIVE portals (member_id) AS (\
     SELECT MIN(member_id) FROM jobs WHERE state IN ('queued', 'retry_wait', 'running') \
     UNION ALL SELECT (SELECT MIN(member_id) FROM jobs \
     WHERE state IN ('queued', 'retry_wait', 'running') AND member_id > portals.member_id) \
     FROM portals WHERE portals.member_id IS NOT NULL), \
     ranked AS (SELECT own.id, own.next_run_at, ROW_NUMBER() OVER \
     (PARTITION BY own.member_id ORDER BY own.next_run_at, own.id) \
     + (SELECT COUNT(*) FROM jobs AS busy WHERE busy.member_id = portals.member_id \
     AND busy.state = 'running' AND busy.lease_until > $1) AS position ";

/// Ranks the picked jobs and keeps the first `$2`. The dialect's lock clause follows, then
/// [`CLAIM_DUE_TAKE`].
const CLAIM_DUE_RANK: &str = "), due AS (SELECT id FROM jobs WHERE id IN \
     (SELECT id FROM ranked ORDER BY position, next_run_at, id LIMIT $2) \
     AND state IN ('queued', 'retry_wait', 'running') AND next_run_at <= $1";

/// Takes the picked jobs under the lease and returns them (see [`Claim::run`]).
const CLAIM_DUE_TAKE: &str = ") UPDATE jobs SET state = 'running', attempts = attempts + 1, \
     lease_owner = $3, lease_until = $4, next_run_at = $4, updated_at = $1 \
     WHERE id IN (SELECT id FROM due) \
     RETURNING id, member_id, action_code, event_token, workflow_id, document_id, payload, \
     payload_version, waits_for_result, deadline_at, attempts AS number, created_at";

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
                let subject = || format!("the call with event_token `{}`", job.event_token);
                to_json(subject, "payload", &job.payload)
            })
            .collect::<Result<Vec<String>>>()?;
        // The first occurrence of each token is inserted; later ones in the batch are duplicates.
        let mut seen: HashSet<&str> = HashSet::with_capacity(jobs.len());
        let first: Vec<bool> = jobs.iter().map(|job| seen.insert(&job.event_token)).collect();
        let firsts: Vec<usize> = (0..jobs.len()).filter(|&index| first[index]).collect();

        let (created, existing) = self
            .write("enqueue", async |conn| {
                let mut created: HashMap<String, JobId> = HashMap::with_capacity(firsts.len());
                let mut existing: HashMap<String, JobId> = HashMap::new();
                for chunk in firsts.chunks(CHUNK) {
                    let insert = Statement::new(
                        "INSERT INTO jobs (member_id, action_code, event_token, workflow_id, \
                         document_id, payload, payload_version, waits_for_result, deadline_at, \
                         next_run_at, created_at, updated_at) ",
                    )
                    .push_values(chunk, |&index| {
                        let job = &jobs[index];
                        [
                            job.member_id.as_str().into(),
                            job.action_code.as_str().into(),
                            job.event_token.as_str().into(),
                            job.workflow_id.as_str().into(),
                            job.document_id.as_deref().into(),
                            payloads[index].as_str().into(),
                            job.payload_version.into(),
                            job.waits_for_result.into(),
                            job.deadline_at.into(),
                            now.into(),
                            now.into(),
                            now.into(),
                        ]
                    })
                    .push(" ON CONFLICT (event_token) DO NOTHING RETURNING id, event_token");
                    ids_by_token(&conn.fetch_all(insert).await?, &mut created)?;
                    let missing: Vec<&str> = chunk
                        .iter()
                        .map(|&index| jobs[index].event_token.as_str())
                        .filter(|token| !created.contains_key(*token))
                        .collect();
                    if missing.is_empty() {
                        continue;
                    }
                    let select =
                        Statement::new("SELECT id, event_token FROM jobs WHERE event_token IN (")
                            .push_list(missing)
                            .push(")");
                    ids_by_token(&conn.fetch_all(select).await?, &mut existing)?;
                }
                Ok((created, existing))
            })
            .await?;

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
    /// get the same job. Taken round-robin across portals (see [`CLAIM_DUE_PORTALS`]); returned in
    /// id order.
    pub async fn claim_due(
        &self,
        worker: &str,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>> {
        let Some(claim) =
            Claim::new(AttemptKind::Execute, worker, now, lease, limit.min(MAX_CLAIM))
        else {
            return Ok(Vec::new());
        };
        self.write("claim due jobs", async |conn| {
            let per_portal = conn.dialect().due_of_each_portal();
            let pick = [CLAIM_DUE_PORTALS, per_portal, CLAIM_DUE_RANK];
            let rows = claim.run(conn, &pick, CLAIM_DUE_TAKE).await?;
            let mut claimed = rows
                .into_iter()
                .map(|(row, lease)| claimed_job(&row, lease))
                .collect::<Result<Vec<_>, Failure>>()?;
            claimed.sort_by_key(|job| job.id);
            Ok(claimed)
        })
        .await
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
        let text = to_json(|| format!("job {}", lease.job_id), "result", result)?;
        let set = "state = CASE WHEN waits_for_result THEN 'delivering' ELSE 'done' END, \
             result = $4, result_kind = $5, \
             next_delivery_at = CASE WHEN waits_for_result THEN $6 ELSE NULL END, \
             next_run_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $6";
        let update = fenced_update(lease, set)
            .push(" AND result IS NULL")
            .bind(text.as_str())
            .bind(kind.as_str())
            .bind(now);
        let ended = Ended { outcome, error, at: now };
        self.end_attempt("store a job's result", lease, AttemptKind::Execute, update, ended).await
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
        let set = "state = 'retry_wait', next_run_at = $4, lease_owner = NULL, \
                   lease_until = NULL, updated_at = $5";
        let update = fenced_update(lease, set).bind(next_run_at).bind(now);
        let ended = Ended { outcome, error: Some(error), at: now };
        self.end_attempt("schedule a retry", lease, AttemptKind::Execute, update, ended).await
    }

    /// The job cannot finish and has no fallback: it goes `dead` with `reason`.
    pub async fn kill(
        &self,
        lease: &Lease,
        outcome: AttemptOutcome,
        reason: &str,
        now: i64,
    ) -> Result<Fenced> {
        let set = "state = 'dead', dead_reason = $4, next_run_at = NULL, lease_owner = NULL, \
                   lease_until = NULL, updated_at = $5";
        let update = fenced_update(lease, set).bind(reason).bind(now);
        let ended = Ended { outcome, error: Some(reason), at: now };
        self.end_attempt("kill a job", lease, AttemptKind::Execute, update, ended).await
    }

    /// Extends a lease still held (a long attempt, or a slow delivery) to `now + lease`.
    /// On success `held` carries the new expiry.
    pub async fn extend_lease(
        &self,
        held: &mut Lease,
        lease: Duration,
        now: i64,
    ) -> Result<Fenced> {
        let until = lease_until(now, lease);
        let set = match held.kind {
            AttemptKind::Execute => "lease_until = $4, next_run_at = $4, updated_at = $5",
            AttemptKind::Deliver => "lease_until = $4, next_delivery_at = $4, updated_at = $5",
        };
        let update = fenced_update(held, set).bind(until).bind(now);
        let changed = self.write_one("extend a lease", update).await?;
        if changed == 0 {
            return Ok(Fenced::LeaseLost);
        }
        held.until = until;
        Ok(Fenced::Applied)
    }
}

/// Stops the jobs `which` selects — a condition on `jobs` that reads its key as `$3` and picks
/// unfinished jobs only — with `reason`: their open attempts are closed as cancelled, they go
/// `dead`, and a worker or sender holding one loses its lease. A result whose sender held it
/// may be on its way to the portal, so it is marked `send_uncertain` (before the lease that
/// says so is cleared): no one sends it again without `--force`. Returns how many were stopped.
pub(crate) async fn stop_jobs(
    conn: &mut Conn<'_>,
    which: &'static str,
    key: Param<'_>,
    reason: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    // Open attempts exist on unfinished jobs only: close them while the jobs still match.
    close_open_attempts(conn, which, key, reason, now).await?;
    let jobs = Statement::new(
        "UPDATE jobs SET state = 'dead', dead_reason = $2, next_run_at = NULL, \
         next_delivery_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $1, \
         send_uncertain = (send_uncertain OR (state = 'delivering' AND lease_owner IS NOT NULL)) \
         WHERE ",
    )
    .push(which);
    conn.execute(jobs.bind(now).bind(reason).bind(key)).await
}

/// Closes the open attempts of the jobs `which` selects — a condition on `jobs` that reads its
/// key as `$3` — as cancelled with `reason`: whoever holds them has lost the job to an operator
/// or an uninstall.
pub(crate) async fn close_open_attempts(
    conn: &mut Conn<'_>,
    which: &'static str,
    key: Param<'_>,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let attempts = Statement::new(
        "UPDATE attempts SET finished_at = $1, outcome = 'cancelled', error = $2 \
         WHERE finished_at IS NULL AND job_id IN (SELECT id FROM jobs WHERE ",
    )
    .push(which)
    .push(")");
    conn.execute(attempts.bind(now).bind(reason).bind(key)).await?;
    Ok(())
}

/// Adds the `event_token` → `id` of each of `rows` to `ids`.
fn ids_by_token(rows: &[Record], ids: &mut HashMap<String, JobId>) -> Result<(), sqlx::Error> {
    for row in rows {
        ids.insert(row.get("event_token")?, JobId(row.get("id")?));
    }
    Ok(())
}

/// Decodes a row [`CLAIM_DUE_TAKE`] returned, claimed under `lease`.
fn claimed_job(row: &Record, lease: Lease) -> Result<ClaimedJob, Failure> {
    let id = lease.job_id;
    Ok(ClaimedJob {
        id,
        call: call_from(id, row)?,
        attempt: count(lease.number)?,
        created_at: row.get("created_at")?,
        lease,
    })
}

/// Decodes the call job `id` stores, from a `jobs` row selected with its call's columns.
pub(crate) fn call_from(id: JobId, row: &Record) -> Result<NewJob, Failure> {
    Ok(NewJob {
        member_id: row.get("member_id")?,
        action_code: row.get("action_code")?,
        event_token: row.get("event_token")?,
        workflow_id: row.get("workflow_id")?,
        document_id: row.get("document_id")?,
        payload: parse_json(id, "payload", row.get("payload")?)?,
        payload_version: row.get("payload_version")?,
        waits_for_result: row.get("waits_for_result")?,
        deadline_at: row.get("deadline_at")?,
    })
}
