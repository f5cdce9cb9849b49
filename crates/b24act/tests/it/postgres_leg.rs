//! The PostgreSQL legs of the end-to-end suites (`serve::postgres::*`, `operator_cli::postgres::*`):
//! each runs in a database of its own on the server `B24ACT_TEST_POSTGRES_URL` names, dropped
//! afterwards.
//!
//! A leg is never skipped silently: when the variable was not set at build time, the macros that
//! declare the legs mark each `#[cfg_attr(not(postgres_tests), ignore = "…")]` (the build script
//! sets `cfg(postgres_tests)`), so the summary counts them as ignored and lists each by name.
//! Under CI the variable must be set ([`legs_run_under_ci`]); `.ci/run` sets it.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The variable that names the PostgreSQL server.
pub const URL_VAR: &str = "B24ACT_TEST_POSTGRES_URL";

/// The server's URL. A leg that runs without it (built with the variable, run without it, or
/// run with `--ignored`) fails saying what to set: it never passes without having run.
pub fn server() -> String {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this PostgreSQL leg needs {URL_VAR}, e.g. postgres://postgres@127.0.0.1:5432/test"
        ),
    }
}

/// Runs `scenario` with the URL of a fresh database named after `test`, and drops the database
/// afterwards even when the scenario panics (then re-raises the panic).
pub async fn with_database<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = server();
    let database = unique_name(test);
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|error| panic!("{URL_VAR}={server}: {error}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("creating database {database}: {error}"));
    let outcome = tokio::spawn(scenario(with_database_name(&server, &database))).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap_or_else(|error| panic!("dropping database {database}: {error}"));
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// `server` with its database path replaced by `database` (its `?query` kept).
fn with_database_name(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{database}{query}")
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A database name no other test, run or process uses.
fn unique_name(test: &str) -> String {
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let short: String = test.chars().take(30).collect();
    format!("b24act_e2e_{short}_{}_{sequence}", std::process::id())
}

/// CI runs every leg: a CI build without the variable fails here instead of ignoring them.
#[test]
fn legs_run_under_ci() {
    let ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
    assert!(
        !ci || cfg!(postgres_tests),
        "CI is set but {URL_VAR} was not when the tests were built: the PostgreSQL legs would be \
         ignored (.ci/run sets it)"
    );
}
