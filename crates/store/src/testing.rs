//! Scratch stores for tests (feature `testing`): the one way every crate's suite runs a test on
//! a fresh SQLite file and again on a fresh PostgreSQL database.
//!
//! [`on_both_stores!`](crate::on_both_stores) declares each scenario twice, `sqlite::NAME` and
//! `postgres::NAME`. A PostgreSQL leg is never skipped silently: the calling crate's build script
//! sets `cfg(postgres_tests)` when [`POSTGRES_URL_VAR`] is set at build time, and without it
//! each leg is declared `#[ignore]` with the reason, so the summary counts and names it; a leg
//! that runs without the variable fails saying what to set. Under CI the variable must be set
//! ([`assert_legs_run_under_ci`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

use crate::Backend;

/// The variable that names the PostgreSQL server the legs create their databases on, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_URL_VAR: &str = "B24ACT_TEST_POSTGRES_URL";

/// A fresh, empty store for one test: where it is and on which backend.
#[derive(Debug, Clone)]
pub struct ScratchStore {
    pub backend: Backend,
    /// The store URL (`sqlite:/tmp/…/store.db` or `postgres://…/b24act_…`).
    pub url: String,
    /// A directory of the test's own, removed afterwards (on both backends).
    pub dir: PathBuf,
}

/// The PostgreSQL server's URL. Panics, naming the variable, when it is not set: a leg declared
/// runnable never passes without having run.
pub fn postgres_server() -> String {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this PostgreSQL leg needs {POSTGRES_URL_VAR}, e.g. postgres://postgres@127.0.0.1:5432/test"
        ),
    }
}

/// Runs `scenario` with a fresh store on `backend`, named after `test`, and cleans up (the
/// directory; the PostgreSQL database, dropped with its connections) even when the scenario
/// panics, then re-raises the panic.
pub async fn with_scratch_store<F, Fut>(backend: Backend, test: &str, scenario: F)
where
    F: FnOnce(ScratchStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = scratch_dir(test);
    let name = dir.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_owned();
    let outcome = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite:{}", dir.join("store.db").display());
            tokio::spawn(scenario(ScratchStore { backend, url, dir: dir.clone() })).await
        }
        Backend::Postgres => {
            let server = postgres_server();
            let mut admin = sqlx::PgConnection::connect(&server)
                .await
                .unwrap_or_else(|error| panic!("{POSTGRES_URL_VAR}={server}: {error}"));
            execute(&mut admin, format!("CREATE DATABASE \"{name}\"")).await;
            let url = database_url(&server, &name);
            let outcome =
                tokio::spawn(scenario(ScratchStore { backend, url, dir: dir.clone() })).await;
            execute(&mut admin, format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
            outcome
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// A fresh directory named after `test` under the system's temporary directory, no other
/// test's, run's or process's; its name is also a valid PostgreSQL identifier.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(test));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
    dir
}

/// Fails under CI (`CI` set and not `false`) when the PostgreSQL legs were built ignored;
/// `postgres_tests_on` is the calling crate's `cfg!(postgres_tests)`.
pub fn assert_legs_run_under_ci(postgres_tests_on: bool) {
    let ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
    assert!(
        !ci || postgres_tests_on,
        "CI is set but {POSTGRES_URL_VAR} was not when the tests were built: the PostgreSQL legs \
         would be ignored (.ci/run sets it)"
    );
}

async fn execute(admin: &mut sqlx::PgConnection, statement: String) {
    sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
        .execute(admin)
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"));
}

/// `server` with its database path replaced by `database` (its `?query` kept).
fn database_url(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{database}{query}")
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

fn unique_name(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let short: String =
        test.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(24).collect();
    format!("b24act_{short}_{}_{sequence}_{nanos}", std::process::id())
}

/// Declares each listed scenario of the current module as a test on both stores, `sqlite::NAME`
/// and `postgres::NAME`, run by `runner(backend, "NAME", scenario)` (for example
/// [`with_scratch_store`](crate::testing::with_scratch_store), or a wrapper of the suite's own).
/// The PostgreSQL legs are `#[ignore]`d by name unless the calling crate has
/// `cfg(postgres_tests)`. A macro because only a macro can declare test functions.
#[macro_export]
macro_rules! on_both_stores {
    ($runner:path => $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $runner($crate::Backend::Sqlite, stringify!($name), super::$name).await;
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
                    $runner($crate::Backend::Postgres, stringify!($name), super::$name).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_replaces_the_path_and_the_query_is_kept() {
        assert_eq!(
            database_url("postgres://u@h:5432/test?sslmode=disable", "scratch"),
            "postgres://u@h:5432/scratch?sslmode=disable"
        );
        assert_eq!(database_url("postgres://u@h/test", "scratch"), "postgres://u@h/scratch");
    }

    #[test]
    fn names_are_unique_identifiers() {
        let (a, b) = (unique_name("a test-name!"), unique_name("a test-name!"));
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{a}");
    }
}
