//! Attempts: one row per execution or delivery try, kept forever, with its outcome and error.

use crate::error::{Error, Result};
use crate::jobs::JobId;

/// What an attempt tried to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// Run the connector.
    Execute,
    /// Send the result with `bizproc.event.send`.
    Deliver,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Execute => "execute",
            AttemptKind::Deliver => "deliver",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<AttemptKind> {
        match text {
            "execute" => Ok(AttemptKind::Execute),
            "deliver" => Ok(AttemptKind::Deliver),
            other => Err(Error::Corrupt { what: "attempt kind", value: other.to_owned() }),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// It worked (the connector returned values, or the portal accepted the result).
    Ok,
    /// A transient failure: try again later.
    Retryable,
    /// A permanent failure: the failure policy applies (or the delivery is dead).
    Fatal,
    /// The per-attempt timeout passed.
    Timeout,
    /// The connector panicked.
    Panic,
    /// The job's deadline passed.
    Deadline,
    /// The input was invalid (a property failed its declared type).
    Invalid,
    /// The worker's lease expired before it reported (it died or stalled); written by the store
    /// when another worker re-claims the job.
    LeaseExpired,
    /// An operator cancelled the job, or the portal uninstalled the app; written by the store.
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Retryable => "retryable",
            AttemptOutcome::Fatal => "fatal",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Panic => "panic",
            AttemptOutcome::Deadline => "deadline",
            AttemptOutcome::Invalid => "invalid",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<AttemptOutcome> {
        Ok(match text {
            "ok" => AttemptOutcome::Ok,
            "retryable" => AttemptOutcome::Retryable,
            "fatal" => AttemptOutcome::Fatal,
            "timeout" => AttemptOutcome::Timeout,
            "panic" => AttemptOutcome::Panic,
            "deadline" => AttemptOutcome::Deadline,
            "invalid" => AttemptOutcome::Invalid,
            "lease_expired" => AttemptOutcome::LeaseExpired,
            "cancelled" => AttemptOutcome::Cancelled,
            other => {
                return Err(Error::Corrupt { what: "attempt outcome", value: other.to_owned() });
            }
        })
    }
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub job_id: JobId,
    pub kind: AttemptKind,
    /// 1, 2, … per kind: the job's `attempts` (or `delivery_attempts`) when it was claimed.
    pub number: u32,
    /// The worker that claimed it.
    pub worker: String,
    pub started_at: i64,
    /// `None` while it is under way.
    pub finished_at: Option<i64>,
    pub outcome: Option<AttemptOutcome>,
    pub error: Option<String>,
}

/// Closes one open attempt (both dialects accept `$n` placeholders).
pub(crate) const CLOSE_ATTEMPT: &str = "UPDATE attempts SET finished_at = $1, outcome = $2, error = $3 \
     WHERE job_id = $4 AND kind = $5 AND number = $6 AND finished_at IS NULL";

/// Closes every open attempt of a job, whatever its kind and number (cancel, uninstall).
pub(crate) const CLOSE_OPEN_ATTEMPTS_OF_JOB: &str = "UPDATE attempts SET finished_at = $1, outcome = 'cancelled', error = $2 \
     WHERE job_id = $3 AND finished_at IS NULL";

/// Rows per multi-row statement: far below SQLite's 32,766 bound variables and PostgreSQL's
/// 65,535 even at a dozen columns.
pub(crate) const CHUNK: usize = 500;

/// For the jobs just claimed (`(id, number)` pairs, in `$claimed`): closes the attempt a dead
/// worker left open as `lease_expired`, then opens the new attempt. Expands inside a
/// [`write_tx!`](crate::backend::write_tx) body.
macro_rules! open_attempts {
    ($tx:ident, $kind:expr, $claimed:expr, $worker:expr, $now:expr) => {
        for chunk in $claimed.chunks($crate::attempts::CHUNK) {
            let kind: $crate::attempts::AttemptKind = $kind;
            let mut close = sqlx::QueryBuilder::new("UPDATE attempts SET finished_at = ");
            close
                .push_bind($now)
                .push(", outcome = 'lease_expired', error = 'the lease expired before the worker reported' ")
                .push("WHERE finished_at IS NULL AND kind = ")
                .push_bind(kind.as_str())
                .push(" AND job_id IN (");
            let mut ids = close.separated(", ");
            for (id, _) in chunk {
                ids.push_bind(id.0);
            }
            close.push(")");
            close.build().execute(&mut *$tx).await?;

            let mut open = sqlx::QueryBuilder::new(
                "INSERT INTO attempts (job_id, kind, number, worker, started_at) ",
            );
            open.push_values(chunk, |mut row, (id, number)| {
                row.push_bind(id.0)
                    .push_bind(kind.as_str())
                    .push_bind(*number)
                    .push_bind($worker)
                    .push_bind($now);
            });
            open.build().execute(&mut *$tx).await?;
        }
    };
}

pub(crate) use open_attempts;

/// Decodes an `attempts` row. Expands inside a body.
macro_rules! attempt_from_row {
    ($row:expr) => {{
        let row = &$row;
        $crate::attempts::Attempt {
            job_id: $crate::jobs::JobId(row.try_get("job_id")?),
            kind: $crate::attempts::AttemptKind::parse(row.try_get("kind")?)?,
            number: $crate::jobs::count(row.try_get("number")?)?,
            worker: row.try_get("worker")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            outcome: match row.try_get::<Option<&str>, _>("outcome")? {
                Some(text) => Some($crate::attempts::AttemptOutcome::parse(text)?),
                None => None,
            },
            error: row.try_get("error")?,
        }
    }};
}

pub(crate) use attempt_from_row;

/// Closes the attempt `$lease` was granted for. Expands inside a body.
macro_rules! close_attempt {
    ($tx:ident, $lease:expr, $outcome:expr, $error:expr, $now:expr) => {
        sqlx::query($crate::attempts::CLOSE_ATTEMPT)
            .bind($now)
            .bind($outcome.as_str())
            .bind($error)
            .bind($lease.job_id.0)
            .bind($lease.kind.as_str())
            .bind($lease.number)
            .execute(&mut *$tx)
            .await?;
    };
}

pub(crate) use close_attempt;
