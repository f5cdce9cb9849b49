//! Opening a store: connection pools per backend, SQLite's durability settings and its
//! background checkpoints, and the embedded migrations of each dialect.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::address::{Backend, redact_url};
use crate::dialect::Dialect;
use crate::error::{Error, Result};

/// The connection pools of an open store.
pub(crate) enum Db {
    /// SQLite allows one writer at a time: all writes go through a single connection (no lock
    /// contention, no busy waits inside the process), reads through a pool of read-only ones.
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
        /// Moves the WAL into the database file off the commit path (see [`checkpoint_wal`]).
        checkpoints: Checkpoints,
    },
    Postgres(PgPool),
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Encrypts installation secrets at rest.
    pub key: crate::StoreKey,
    /// Connections to PostgreSQL, or read connections to SQLite (SQLite has one writer).
    pub max_connections: u32,
    /// How long SQLite waits for another process holding the write lock (the CLI next to
    /// `serve`, for instance) before reporting the database busy.
    pub busy_timeout: Duration,
}

impl StoreOptions {
    /// Defaults: 8 connections, 5 s busy timeout.
    pub fn new(key: crate::StoreKey) -> StoreOptions {
        StoreOptions { key, max_connections: 8, busy_timeout: Duration::from_secs(5) }
    }
}

pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Db> {
    match Backend::from_url(url)? {
        Backend::Sqlite => connect_sqlite(url, options).await,
        Backend::Postgres => connect_postgres(url, options).await,
    }
}

async fn connect_sqlite(url: &str, options: &StoreOptions) -> Result<Db> {
    let shown = redact_url(url);
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(Error::InMemory { url: shown });
    }
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|source| Error::InvalidUrl { url: shown.clone(), source })?
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true);
    let path = base.get_filename().to_path_buf();
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Error::MissingDirectory {
            path: path.display().to_string(),
            dir: dir.display().to_string(),
        });
    }
    // WAL plus synchronous=FULL: a commit returns only once the WAL is on disk, so an
    // acknowledged job survives a power loss; readers never block the writer.
    //
    // SQLite's automatic checkpoint would run inside whichever commit pushes the WAL past 1,000
    // pages, copying pages into the database file and fsyncing it while that commit's callers
    // wait for their answer; the bench saw 10-150 ms acknowledgements from it. The writer does
    // not checkpoint; a background task does, on a connection of its own.
    let writer_options = base
        .clone()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("wal_autocheckpoint", "0");
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(writer_options)
        .await
        .map_err(|source| Error::Open { url: shown.clone(), source })?;
    migrate(&writer, Dialect::Sqlite, &shown).await?;
    let checkpointer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone().synchronous(SqliteSynchronous::Full))
        .await
        .map_err(|source| Error::Open { url: shown.clone(), source })?;
    let reader = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .connect_with(base.read_only(true))
        .await
        .map_err(|source| Error::Open { url: shown.clone(), source })?;
    let checkpoints = Checkpoints(tokio::spawn(checkpoint_wal(checkpointer)));
    Ok(Db::Sqlite { writer, reader, checkpoints })
}

/// How often the WAL is checkpointed. At the target rate of 10,000 calls/s a WAL grows by a
/// few MB a second, so it stays small, while no single checkpoint has much to copy.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The background checkpointer's task; stopped with the store.
pub(crate) struct Checkpoints(tokio::task::JoinHandle<()>);

impl Checkpoints {
    pub(crate) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies committed WAL frames into the database file, PASSIVE so it never blocks the writer or
/// readers (it copies what it can and tries again next time). The next commit after a complete
/// checkpoint starts the WAL over, so the file stays bounded.
async fn checkpoint_wal(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            // Recorded as an error, so the log line carries its sources (the store links no `b24`
            // for `ErrorChain`; sqlx's own message names the cause).
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "WAL checkpoint failed; trying again"
            );
        }
    }
}

async fn connect_postgres(url: &str, options: &StoreOptions) -> Result<Db> {
    let shown = redact_url(url);
    let connect = PgConnectOptions::from_str(url)
        .map_err(|source| Error::InvalidUrl { url: shown.clone(), source })?;
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .connect_with(connect)
        .await
        .map_err(|source| Error::Open { url: shown.clone(), source })?;
    migrate(&pool, Dialect::Postgres, &shown).await?;
    Ok(Db::Postgres(pool))
}

/// The embedded migrations of `dialect`. Applied ones are recorded in `_sqlx_migrations` with a
/// checksum, so reopening applies nothing twice and an edited migration is refused.
fn migrator(dialect: Dialect) -> Migrator {
    Migrator::with_migrations(
        dialect
            .migrations()
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect(),
    )
}

async fn migrate<DB>(pool: &sqlx::Pool<DB>, dialect: Dialect, shown: &str) -> Result<()>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    migrator(dialect)
        .run(pool)
        .await
        .map_err(|source| Error::Migrate { url: shown.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_leaves_checkpoints_to_the_background_task() {
        let dir = std::env::temp_dir().join(format!("b24act-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}", dir.join("writer.db").display());
        let options = StoreOptions::new(crate::StoreKey::generate());
        let Db::Sqlite { writer, checkpoints, .. } = connect_sqlite(&url, &options).await.unwrap()
        else {
            panic!("a SQLite URL opens SQLite")
        };
        let pages: i64 =
            sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&writer).await.unwrap();
        assert_eq!(pages, 0, "a commit must never run a checkpoint");
        assert!(!checkpoints.0.is_finished(), "the checkpointer runs");
        checkpoints.stop();
        writer.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
