//! b24act's durable store: jobs, their attempts, the outbox and portal installations, on SQLite
//! (one file, the default) or PostgreSQL (several nodes sharing the queue), selected by URL.
//!
//! The store depends on no sibling crate: it speaks strings, integers and JSON values, and the
//! host maps its own types onto them. Times are Unix milliseconds passed in by the caller
//! (`now`), so tests control the clock.
//!
//! - [`jobs`]: group-committed intake ([`Store::enqueue`]), claiming due work under a lease
//!   ([`Store::claim_due`]) and the fenced transitions that end an attempt.
//! - [`outbox`]: stored results claimed in per-portal batches for `bizproc.event.send`.
//! - [`attempts`]: every execution and delivery attempt, kept with its outcome.
//! - [`operator`]: listing, showing, retrying and cancelling jobs; counts; the next wake-up.
//! - [`installations`]: portals, their endpoints and their tokens, encrypted at rest
//!   ([`cipher`]).
//!
//! Every transition is one transaction. Transitions that end an attempt are fenced by the
//! lease (`lease_owner` and the attempt number): a worker whose lease expired and whose job was
//! claimed again gets [`Fenced::LeaseLost`] and changes nothing.

pub mod address;
pub mod attempts;
mod backend;
pub mod cipher;
mod error;
pub mod installations;
pub mod jobs;
pub mod operator;
pub mod outbox;

pub use address::{Backend, redact_url};
pub use attempts::{Attempt, AttemptKind, AttemptOutcome};
pub use backend::StoreOptions;
pub use cipher::StoreKey;
pub use error::{Error, Result};
pub use installations::{Installation, InstallationStatus, NewInstallation};
pub use jobs::{ClaimedJob, Enqueued, Fenced, JobId, JobState, Lease, NewJob, ResultKind};
pub use operator::{CANCELLED_BY_OPERATOR, Job, JobDetail, JobFilter, Retried, StateCounts};
pub use outbox::{Delivery, MAX_BATCH, PortalBatch};

/// An open store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    db: backend::Db,
    cipher: cipher::Cipher,
    backend: Backend,
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
        let db = backend::connect(url, &options).await?;
        Ok(Store { db, cipher: cipher::Cipher::new(&options.key), backend })
    }

    /// Which database this store is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection, waiting for queries in flight.
    pub async fn close(&self) {
        match &self.db {
            backend::Db::Sqlite { writer, reader, checkpoints } => {
                checkpoints.stop();
                reader.close().await;
                writer.close().await;
            }
            backend::Db::Postgres(pool) => pool.close().await,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}
