//! Test support: one suite, two backends. `both_backends!` turns each `async fn(TestDb)` into a
//! SQLite test (a real file in a fresh temporary directory) and a PostgreSQL test (a fresh
//! database, dropped afterwards), so tests run in parallel without sharing state.
//!
//! A PostgreSQL leg is never skipped silently: without `B24ACT_TEST_POSTGRES_URL` at build time
//! (the build script sets `cfg(postgres_tests)` when it is there) each is declared
//! `#[ignore]` with the reason, so the summary counts and names them; under CI it must be set
//! (`legs_run_under_ci`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sqlx::Connection;
use store::{ClaimedJob, Delivery, Enqueued, JobId, NewJob, Store, StoreKey, StoreOptions};

/// The variable that names the PostgreSQL server for the PostgreSQL leg.
pub const POSTGRES_URL_VAR: &str = "B24ACT_TEST_POSTGRES_URL";

/// A fixed instant tests count from (Unix ms).
pub const T0: i64 = 1_700_000_000_000;

/// A lease of 30 s.
pub const LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Where one test's store lives.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
}

pub fn key() -> StoreKey {
    StoreKey::from_bytes([7; 32])
}

impl TestDb {
    /// Opens the store with the suite's key.
    pub async fn open(&self) -> Store {
        match Store::open(&self.url, StoreOptions::new(key())).await {
            Ok(store) => store,
            Err(error) => panic!("cannot open {}: {error:?}", self.url),
        }
    }

    /// Opens the store with `key`.
    pub async fn open_with(&self, key: StoreKey) -> store::Result<Store> {
        Store::open(&self.url, StoreOptions::new(key)).await
    }

    /// The bytes of the first column of every row `sql` returns, read with a plain connection
    /// (not through the store), to look at what is really on disk.
    pub async fn raw_bytes(&self, sql: &'static str) -> Vec<Vec<u8>> {
        match self.kind {
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }
}

/// Runs `test` against a fresh store of `kind`; cleans up even when the test panics, then
/// re-raises the panic.
pub async fn run<F, Fut>(kind: Kind, name: &str, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match kind {
        Kind::Sqlite => {
            let dir = temp_dir(name);
            let db = TestDb { kind, url: format!("sqlite:{}", dir.join("store.db").display()) };
            let outcome = tokio::spawn(test(db)).await;
            let _ = std::fs::remove_dir_all(&dir);
            if let Err(error) = outcome {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        Kind::Postgres => {
            // Declared runnable (or run with --ignored): without the server it fails, never passes.
            let server = match std::env::var(POSTGRES_URL_VAR) {
                Ok(url) if !url.is_empty() => url,
                _ => panic!("this PostgreSQL leg needs {POSTGRES_URL_VAR}"),
            };
            let database = unique_name(name);
            let mut admin = sqlx::PgConnection::connect(&server)
                .await
                .unwrap_or_else(|error| panic!("{POSTGRES_URL_VAR}={server}: {error}"));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
                .execute(&mut admin)
                .await
                .unwrap();
            let db = TestDb { kind, url: with_database(&server, &database) };
            let outcome = tokio::spawn(test(db)).await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .unwrap();
            if let Err(error) = outcome {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    }
}

/// Declares each listed `async fn(TestDb)` of the current module as a test on both backends:
/// `sqlite::NAME` and `postgres::NAME`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::run($crate::support::Kind::Sqlite, stringify!($name), super::$name)
                        .await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(
                    not(postgres_tests),
                    ignore = "PostgreSQL leg: set B24ACT_TEST_POSTGRES_URL to run it"
                )]
                async fn $name() {
                    $crate::support::run($crate::support::Kind::Postgres, stringify!($name), super::$name)
                        .await
                }
            )*
        }
    };
}

pub(crate) use both_backends;

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

fn unique_name(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let short: String = test.chars().take(30).collect();
    format!("b24act_it_{short}_{}_{sequence}_{nanos}", std::process::id())
}

/// A fresh directory of its own for test `test`, under the system's temporary directory.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(test));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `server` with its database path replaced by `database`.
fn with_database(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{database}{query}")
}

/// A call for portal `member` with event token `token`, waiting for its result, deadline in 30
/// minutes.
pub fn call(member: &str, token: &str) -> NewJob {
    NewJob {
        member_id: member.to_owned(),
        action_code: "check_credit_limit".to_owned(),
        event_token: token.to_owned(),
        workflow_id: format!("wf-{token}"),
        payload: json!({ "properties": { "company_id": 42, "amount": "1500.00" }, "token": token }),
        payload_version: 1,
        waits_for_result: true,
        deadline_at: T0 + 30 * 60 * 1000,
    }
}

/// Enqueues `calls` and returns their ids, all newly created.
pub async fn enqueue_new(store: &Store, calls: &[NewJob], now: i64) -> Vec<JobId> {
    store
        .enqueue(calls, now)
        .await
        .unwrap()
        .into_iter()
        .map(|enqueued| match enqueued {
            Enqueued::Created(id) => id,
            other => panic!("expected a new job, got {other:?}"),
        })
        .collect()
}

/// Enqueues one call (portal `p1`, token `a`) at `T0` and claims it as worker `w`: the new
/// job's id and its claim.
pub async fn claim_one(store: &Store) -> (JobId, ClaimedJob) {
    let id = enqueue_new(store, &[call("p1", "a")], T0).await[0];
    let mut claimed = store.claim_due("w", T0, LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "one job was due");
    (id, claimed.remove(0))
}

/// The oldest result of the first portal `sender` claims at `now` (up to 50 per portal).
pub async fn first_delivery(store: &Store, sender: &str, now: i64) -> Delivery {
    store.claim_deliveries(sender, now, LEASE, 50).await.unwrap().remove(0).jobs.remove(0)
}

/// CI runs every leg: a CI build without the variable fails here instead of ignoring them.
#[test]
fn legs_run_under_ci() {
    let ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
    assert!(
        !ci || cfg!(postgres_tests),
        "CI is set but {POSTGRES_URL_VAR} was not when the tests were built: the PostgreSQL legs \
         would be ignored (.ci/run sets it)"
    );
}
