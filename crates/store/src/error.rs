//! The store's error type: what failed, on which object, with the driver's error kept as source.

use crate::model::{JobId, JobState};

/// Everything that can go wrong in the store. Database failures keep the driver's error as
/// [`std::error::Error::source`] and name the operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL names neither SQLite nor PostgreSQL.
    #[error(
        "unsupported store URL scheme `{scheme}` in `{url}`: use `sqlite:/path/to/file.db` or `postgres://user@host/db`"
    )]
    UnsupportedScheme { scheme: String, url: String },

    /// The URL could not be parsed by the driver.
    #[error("invalid store URL `{url}`")]
    InvalidUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// An in-memory SQLite database cannot keep an acknowledged job.
    #[error("the store must be durable: in-memory SQLite (`{url}`) is not supported, use a file")]
    InMemory { url: String },

    /// The SQLite file's directory does not exist (the file itself is created on first start).
    #[error("cannot create the SQLite store `{path}`: directory `{dir}` does not exist")]
    MissingDirectory { path: String, dir: String },

    /// The database could not be reached or opened.
    #[error("cannot open the store at `{url}`")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// The embedded migrations failed.
    #[error("cannot migrate the store at `{url}`")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A query failed.
    #[error("store: {operation} failed")]
    Database {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// The encryption key is not 32 bytes of hex.
    #[error("the store key must be 64 hex digits (32 bytes), got {length} characters")]
    InvalidKey { length: usize },

    /// A secret could not be encrypted.
    #[error("cannot encrypt the {field} of installation `{member_id}`")]
    Encrypt { member_id: String, field: &'static str },

    /// A secret could not be decrypted: the key is not the one it was written with, or the
    /// stored value was altered.
    #[error(
        "cannot decrypt the {field} of installation `{member_id}`: the store key is not the one it was written with, or the stored value was altered"
    )]
    Decrypt { member_id: String, field: &'static str },

    /// A stored JSON value does not parse (the database was edited by hand or is corrupt).
    #[error("the stored {field} of job {job_id} is not valid JSON")]
    Json {
        job_id: JobId,
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A JSON value given to the store could not be serialized.
    #[error("cannot serialize the {field} of {subject}")]
    Serialize {
        subject: String,
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A stored value is outside the store's vocabulary (for example an unknown state).
    #[error("corrupt store: {what} `{value}`")]
    Corrupt { what: &'static str, value: String },

    /// An operator command named a job that does not exist.
    #[error("job {0} does not exist")]
    JobNotFound(JobId),

    /// An operator command is not allowed in the job's current state.
    #[error("cannot {action} job {job_id}: it is {state}")]
    NotAllowed { action: &'static str, job_id: JobId, state: JobState },
    /// An operator's retry would send a result again that the workflow may already have.
    #[error(
        "job {job_id}: its result may already have reached the workflow (an earlier send was \
         not answered, or the portal answered \"not found\" after one); sending it again could \
         deliver it twice, so it is refused without --force"
    )]
    MayBeDelivered { job_id: JobId },

    /// An operator's command would send a result to a workflow that waits for none.
    #[error(
        "cannot {action} job {job_id}: its action returns nothing (use_subscription is off), so \
         the workflow does not wait for a result"
    )]
    NothingToSend { action: &'static str, job_id: JobId },

    /// An operator's command would store a result for a job that has one: a stored result is
    /// never replaced.
    #[error(
        "cannot {action} job {job_id}: it already has a result, which {whereabouts}; a stored \
         result is never replaced"
    )]
    HasResult { action: &'static str, job_id: JobId, whereabouts: &'static str },

    /// An operator's command needs a stored result the job does not have.
    #[error("cannot {action} job {job_id}: it has no stored result")]
    NoResult { action: &'static str, job_id: JobId },

    /// An operator's re-send of a result the workflow may have already, without force.
    #[error(
        "job {job_id}: its result was delivered or may have been, so it is sent again only \
         with force (--force): a workflow that took it answers \"not found\", one still waiting \
         takes it"
    )]
    ResendNeedsForce { job_id: JobId },
}

/// Short for `Result<T, store::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a driver error to [`Error::Database`] naming `operation`.
pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database { operation, source }
}
