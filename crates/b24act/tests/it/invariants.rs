//! The invariants ARCHITECTURE.md states that no other suite pins down, each tested the way it
//! would break: registration at every start, `/health` answering 503 while the store is down.

use std::time::{Duration, Instant};

use b24_emulator::PortalSpec;
use fakes::finance::FinanceApi;
use sandbox::{AppIdentity, Sandbox};
use serde_json::{Value, json};
use store::testing::with_scratch_store;

use crate::support::{
    CLIENT_ID, CLIENT_SECRET, CODE, Options, Server, TempDir, TestApp, config_text,
};

/// A changed configuration reaches the portal when the host starts: no reinstall, no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_registered_again_at_every_start() {
    let sandbox =
        Sandbox::start(PortalSpec { unlimited: true, ..PortalSpec::default() }).await.unwrap();
    let api = FinanceApi::start(3).await.unwrap();
    let dir = TempDir::new("b24act-it").unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let store_url = format!("sqlite:{}/b24act.db", dir.path().display());
    let text = config_text(&sandbox.site(listen), &store_url, &api, &Options::default());
    let config = dir.path().join("b24act.toml");
    std::fs::write(&config, &text).unwrap();
    sandbox.register_app(&AppIdentity::new(CLIENT_ID, CLIENT_SECRET), listen);

    let first = Server::start(&config);
    sandbox.install(CLIENT_ID, &[CODE], Duration::from_secs(10)).await.unwrap();
    assert_eq!(registered_name(&sandbox), Some(json!({"EN": "Check credit"})));
    first.kill();

    let renamed = text.replacen("\"Check credit\"", "\"Check the credit limit\"", 1);
    assert_ne!(renamed, text, "the test configuration names the action `Check credit`");
    std::fs::write(&config, renamed).unwrap();
    let _second = Server::start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while registered_name(&sandbox) != Some(json!({"EN": "Check the credit limit"})) {
        assert!(
            Instant::now() < deadline,
            "the restarted host did not update the registration: {:?}",
            registered_name(&sandbox)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The name the portal shows for the test action, as registered (the portal upper-cases the
/// language keys).
fn registered_name(sandbox: &Sandbox) -> Option<Value> {
    let registrations = sandbox.emulator.registrations(&sandbox.domain).unwrap();
    registrations.into_iter().find(|r| r.code == CODE).map(|r| r.name)
}

/// While the store does not answer, `/health` says 503 (a load balancer stops sending calls)
/// and a call is refused with 503, not acknowledged; when it answers again, so does the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL leg: set B24ACT_TEST_POSTGRES_URL to run it")]
async fn health_is_503_while_the_store_is_down_and_200_when_it_is_back() {
    let postgres = store::Backend::Postgres;
    with_scratch_store(postgres, "health_store_down", |scratch| async move {
        let url = scratch.url;
        let app =
            TestApp::start(Options { store_url: Some(url.clone()), ..Options::default() }).await;
        let health = format!("http://{}/health", app.listen);
        let ok = reqwest::get(&health).await.unwrap();
        assert_eq!(ok.status(), 200);

        let database = url.rsplit('/').next().unwrap().to_owned();
        set_reachable(&database, false).await;
        let down = wait_for_status(&health, 503).await;
        assert_eq!(down["status"], "store unavailable", "{down}");
        let error = down["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty() && error.len() < 2000, "a bounded reason: {error}");

        set_reachable(&database, true).await;
        let back = wait_for_status(&health, 200).await;
        assert_eq!(back["status"], "ok", "{back}");
    })
    .await;
}

/// Lets connections into `database` or refuses them and ends every open one: the store's view
/// of a database server that went away.
async fn set_reachable(database: &str, reachable: bool) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&store::testing::postgres_server()).await.unwrap();
    let allow = if reachable { "true" } else { "false" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allow}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if !reachable {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

async fn wait_for_status(url: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = reqwest::get(url).await.unwrap();
        let got = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/health stayed {got}, not {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
