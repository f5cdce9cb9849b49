//! Attempts and the leases that guard them: one `attempts` row per execution or delivery try,
//! kept forever with its outcome, opened when a job is claimed and closed by the fenced
//! transition that ends the try.

use std::time::Duration;

use crate::Store;
use crate::error::Result;
use crate::model::{Attempt, AttemptKind, AttemptOutcome, Fenced, JobId, Lease};
use crate::sql::{Conn, Failure, Record, Statement, count, decode};

/// Rows per multi-row statement: far below SQLite's 32,766 bound variables and PostgreSQL's
/// 65,535 even at a dozen columns.
pub(crate) const CHUNK: usize = 500;

/// When a lease of `lease` granted at `now` expires (Unix ms), saturating.
pub(crate) fn lease_until(now: i64, lease: Duration) -> i64 {
    now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// The columns [`attempt_from`] reads.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "job_id, kind, number, worker, started_at, finished_at, outcome, error";

/// Decodes an `attempts` row selected with [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt_from(row: &Record) -> Result<Attempt, Failure> {
    Ok(Attempt {
        job_id: JobId(row.get("job_id")?),
        kind: decode(row.get("kind")?)?,
        number: count(row.get("number")?)?,
        worker: row.get("worker")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        outcome: row.get::<Option<&str>>("outcome")?.map(decode).transpose()?,
        error: row.get("error")?,
    })
}

/// For the jobs just claimed (`(id, number)` pairs): closes the attempt a dead worker left open
/// as `lease_expired`, then opens the new attempt of `kind` for `worker`.
async fn open_attempts(
    conn: &mut Conn<'_>,
    kind: AttemptKind,
    claimed: &[(JobId, i32)],
    worker: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    for chunk in claimed.chunks(CHUNK) {
        let close = Statement::new("UPDATE attempts SET finished_at = ")
            .push_bind(now)
            .push(
                ", outcome = 'lease_expired', error = 'the lease expired before the worker \
                 reported' WHERE finished_at IS NULL AND kind = ",
            )
            .push_bind(kind.as_str())
            .push(" AND job_id IN (")
            .push_list(chunk.iter().map(|&(id, _)| id))
            .push(")");
        conn.execute(close).await?;

        let open =
            Statement::new("INSERT INTO attempts (job_id, kind, number, worker, started_at) ")
                .push_values(chunk, |&(id, number)| {
                    [id.into(), kind.as_str().into(), number.into(), worker.into(), now.into()]
                });
        conn.execute(open).await?;
    }
    Ok(())
}

/// A claim of due work by one worker: the kind of attempt it opens, when, until when the
/// lease runs, and how many rows it takes (per job, or per portal for deliveries).
pub(crate) struct Claim<'a> {
    kind: AttemptKind,
    worker: &'a str,
    now: i64,
    until: i64,
    limit: i64,
}

impl<'a> Claim<'a> {
    /// A claim by `worker` at `now` of up to `limit` rows, each under a lease of `lease`; `None`
    /// when it would take nothing.
    pub(crate) fn new(
        kind: AttemptKind,
        worker: &'a str,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Option<Claim<'a>> {
        let limit = i64::try_from(limit).ok().filter(|&limit| limit > 0)?;
        Some(Claim { kind, worker, now, until: lease_until(now, lease), limit })
    }

    /// Runs the claiming statement — the pieces of `pick`, the dialect's lock clause, then
    /// `take`, an `UPDATE jobs … RETURNING` of the job's `id` and its new attempt count as
    /// `number`, reading `$1` now, `$2` the limit, `$3` the worker and `$4` the lease's expiry —
    /// and opens an attempt for each job it took. Returns each row with the lease granted for it.
    pub(crate) async fn run(
        &self,
        conn: &mut Conn<'_>,
        pick: &[&'static str],
        take: &'static str,
    ) -> Result<Vec<(Record, Lease)>, Failure> {
        let claim = pick
            .iter()
            .fold(Statement::new(""), |statement, piece| statement.push(piece))
            .push(conn.dialect().skip_locked())
            .push(take)
            .bind(self.now)
            .bind(self.limit)
            .bind(self.worker)
            .bind(self.until);
        let rows = conn.fetch_all(claim).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let lease = Lease {
                job_id: JobId(row.get("id")?),
                kind: self.kind,
                owner: self.worker.to_owned(),
                number: row.get("number")?,
                until: self.until,
            };
            claimed.push((row, lease));
        }
        let numbers: Vec<(JobId, i32)> =
            claimed.iter().map(|(_, lease)| (lease.job_id, lease.number)).collect();
        open_attempts(conn, self.kind, &numbers, self.worker, self.now).await?;
        Ok(claimed)
    }
}

/// `UPDATE jobs SET <set> WHERE <the fence>`: it changes the job only while `lease` is
/// current — the job is still in the state the lease was granted in, held by its owner, on the
/// attempt number it was granted for. The fence reads `$1` to `$3`, bound here; `set`, and any
/// conditions appended with `AND`, number their own parameters from `$4`, bound after.
pub(crate) fn fenced_update<'a>(lease: &'a Lease, set: &'static str) -> Statement<'a> {
    let fence = match lease.kind {
        AttemptKind::Execute => {
            " WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3"
        }
        AttemptKind::Deliver => {
            " WHERE id = $1 AND state = 'delivering' AND lease_owner = $2 \
             AND delivery_attempts = $3"
        }
    };
    Statement::new("UPDATE jobs SET ")
        .push(set)
        .push(fence)
        .bind(lease.job_id)
        .bind(lease.owner.as_str())
        .bind(lease.number)
}

/// How an attempt ended, as its row records it.
pub(crate) struct Ended<'a> {
    pub(crate) outcome: AttemptOutcome,
    pub(crate) error: Option<&'a str>,
    pub(crate) at: i64,
}

impl Store {
    /// A fenced transition that ends the attempt `lease` was granted for, as one transaction:
    /// runs `update`, a [`fenced_update`] for `lease`; when that changed the
    /// job, closes the attempt as `ended`. A lease of another kind than `kind`, or one that is
    /// no longer current, changes nothing.
    pub(crate) async fn end_attempt(
        &self,
        operation: &'static str,
        lease: &Lease,
        kind: AttemptKind,
        update: Statement<'_>,
        ended: Ended<'_>,
    ) -> Result<Fenced> {
        if lease.kind != kind {
            return Ok(Fenced::LeaseLost);
        }
        self.write(operation, async |conn| {
            if conn.execute(update).await? == 0 {
                return Ok(Fenced::LeaseLost);
            }
            let close = Statement::new(
                "UPDATE attempts SET finished_at = $1, outcome = $2, error = $3 \
                 WHERE job_id = $4 AND kind = $5 AND number = $6 AND finished_at IS NULL",
            );
            let close = close
                .bind(ended.at)
                .bind(ended.outcome.as_str())
                .bind(ended.error)
                .bind(lease.job_id)
                .bind(lease.kind.as_str())
                .bind(lease.number);
            conn.execute(close).await?;
            Ok(Fenced::Applied)
        })
        .await
    }
}
