//! b24act's durable store: jobs, their attempts, the outbox and portal installations, on SQLite
//! (one file, the default) or PostgreSQL (several nodes sharing the queue), selected by URL.
//!
//! The store depends on no sibling crate: it speaks strings, integers and JSON values, and the
//! host maps its own types onto them. Times are Unix milliseconds passed in by the caller
//! (`now`), so tests control the clock.
//!
//! [`model`] holds the vocabulary: ids, states, outcomes, leases and the records the store
//! takes and returns. The files that hold the SQL use it, and this file puts them together:
//!
//! - `jobs.rs`: group-committed intake ([`Store::enqueue`]), claiming due work under a lease
//!   ([`Store::claim_due`]) and the fenced transitions that end an attempt.
//! - `outbox.rs`: stored results claimed in per-portal batches for `bizproc.event.send`.
//! - `attempts.rs`: every execution and delivery attempt, kept with its outcome, and the
//!   leases and fences that guard them.
//! - `operator.rs`: listing (filtered, paged) and showing jobs with their history; what an
//!   operator does to one (retry, cancel, cancel with the fallback, complete by hand, re-send),
//!   each recorded with its actor; counts; the next wake-up.
//! - `installations.rs`: portals, their endpoints and their tokens, encrypted at rest
//!   ([`cipher`]).
//!
//! Underneath, `sql.rs` runs one piece of code on either database, `dialect.rs` holds what the
//! two dialects say differently, and `connect.rs` opens the pools and applies the migrations.
//!
//! Every transition is one transaction. Transitions that end an attempt are fenced by the
//! lease (`lease_owner` and the attempt number): a worker whose lease expired and whose job was
//! claimed again gets [`Fenced::LeaseLost`] and changes nothing.

pub mod address;
mod attempts;
pub mod cipher;
mod connect;
mod coordination;
mod dialect;
mod error;
mod installations;
mod jobs;
pub mod model;
mod operator;
mod outbox;
mod progress;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;

pub use address::{Backend, redact_url};
pub use cipher::StoreKey;
pub use connect::StoreOptions;
pub use coordination::{StoredTokens, TokenLock, WAKE_CHANNEL, Wake, WakeUp, next_wake};
pub use error::{Error, Result};
pub use model::{
    Attempt, AttemptKind, AttemptOutcome, CANCELLED_BY_OPERATOR, COMPLETED_BY_OPERATOR, ClaimedJob,
    Delivery, Enqueued, Fenced, HistoryEntry, Installation, InstallationStatus, Job, JobCount,
    JobDetail, JobFilter, JobId, JobOutcome, JobState, Lease, NewInstallation, NewJob,
    OperatorAction, PortalBatch, ResultKind, Retried, StateCounts,
};
pub use outbox::MAX_BATCH;
pub use progress::StoredLine;

/// An open store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    db: connect::Db,
    cipher: cipher::Cipher,
    backend: Backend,
    /// On SQLite, where one process is the only node: the per-portal token locks.
    token_locks: coordination::LocalTokenLocks,
}

impl Store {
    /// Opens the store at `url` and applies the embedded migrations (idempotent on reopen).
    ///
    /// - `sqlite:/path/to/file.db` (or `sqlite:///abs/path`, `sqlite:relative.db`): created on
    ///   first start (its directory must exist), WAL journal, `synchronous=FULL` so an
    ///   acknowledged job survives a power loss, `busy_timeout` from `options`.
    /// - `postgres://user@host:port/db` (or `postgresql://`).
    ///
    /// Any other scheme is refused naming it. Errors show the URL without its password.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store> {
        let backend = Backend::from_url(url)?;
        let db = connect::connect(url, &options).await?;
        Ok(Store {
            db,
            cipher: cipher::Cipher::new(&options.key),
            backend,
            token_locks: coordination::LocalTokenLocks::default(),
        })
    }

    /// Which database this store is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn dialect(&self) -> dialect::Dialect {
        match &self.db {
            connect::Db::Sqlite { .. } => dialect::Dialect::Sqlite,
            connect::Db::Postgres(_) => dialect::Dialect::Postgres,
        }
    }

    /// Closes every connection, waiting for queries in flight.
    pub async fn close(&self) {
        match &self.db {
            connect::Db::Sqlite { writer, reader, checkpoints } => {
                checkpoints.stop();
                reader.close().await;
                writer.close().await;
            }
            connect::Db::Postgres(pool) => pool.close().await,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}
