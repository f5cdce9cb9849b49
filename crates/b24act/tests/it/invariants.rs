//! The invariants ARCHITECTURE.md states that no other suite pins down, each tested the way it
//! would break: the intake alone making no REST or connector call, its 200 waiting for the
//! commit, group commit, registration at every start, `/health` answering 503 while the store
//! is down, `check-config` as the binary runs it.

use std::time::{Duration, Instant};

use b24_emulator::PortalSpec;
use fakes::finance::FinanceApi;
use sandbox::{AppIdentity, Sandbox};
use serde_json::{Value, json};
use store::testing::with_scratch_store;

use crate::support::{
    CLIENT_ID, CLIENT_SECRET, CODE, NOTIFY_CODE, Options, ServeSite, Server, TempDir, TestApp,
    config_text,
};

/// A host that runs nothing but its HTTP server (intake and install handler): no workers, no
/// outbox. Whatever REST call or connector request happens while it takes calls is the intake's.
struct IntakeOnly {
    sandbox: Sandbox,
    api: FinanceApi,
    host: std::sync::Arc<host::Host>,
    listen: std::net::SocketAddr,
    db: std::path::PathBuf,
    cancel: tokio_util::sync::CancellationToken,
    _dir: TempDir,
}

impl IntakeOnly {
    async fn start() -> IntakeOnly {
        let sandbox =
            Sandbox::start(PortalSpec { unlimited: true, ..PortalSpec::default() }).await.unwrap();
        let api = FinanceApi::start(5).await.unwrap();
        let dir = TempDir::new("b24act-it").unwrap();
        let db = dir.path().join("b24act.db");
        let (listener, listen) = sandbox::loopback_listener().await.unwrap();
        let text = config_text(
            &sandbox.site(listen),
            &format!("sqlite:{}", db.display()),
            &api,
            &Options::default(),
        );
        let config = host::config::Config::from_toml(&text, "test", std::iter::empty()).unwrap();
        let host = std::sync::Arc::new(
            host::Host::open(config, &connectors::Registry::new()).await.unwrap(),
        );
        let intake = host::intake::Intake::start(host.clone(), Default::default());
        let installer = std::sync::Arc::new(host::install::Installer { host: host.clone() });
        let router = host::app::router(host.clone(), Some((intake, installer)));
        let cancel = tokio_util::sync::CancellationToken::new();
        let edge = host::edge::Edge::new(&host.config.server);
        tokio::spawn(host::edge::serve(listener, router, edge, cancel.clone()));
        sandbox.register_app(&AppIdentity::new(CLIENT_ID, CLIENT_SECRET), listen);
        sandbox.install(CLIENT_ID, &[CODE, NOTIFY_CODE], Duration::from_secs(10)).await.unwrap();
        IntakeOnly { sandbox, api, host, listen, db, cancel, _dir: dir }
    }

    fn rest_calls(&self) -> usize {
        self.sandbox.emulator.rest_calls(&self.sandbox.domain).len()
    }

    async fn jobs(&self) -> Vec<store::Job> {
        self.host.store.list_jobs(&store::JobFilter::default()).await.unwrap()
    }
}

impl Drop for IntakeOnly {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Calls are stored and answered by the intake alone: not one REST request to the portal, not
/// one request to the action's API, however many calls come in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_makes_no_rest_or_connector_call() {
    let deployment = IntakeOnly::start().await;
    let rest_before = deployment.rest_calls();
    let mut workflows = Vec::new();
    for company in 0..10 {
        let spec = b24_emulator::WorkflowSpec {
            domain: deployment.sandbox.domain.clone(),
            code: CODE.into(),
            properties: json!({ "company_id": company }),
            finish_after: None,
            ..b24_emulator::WorkflowSpec::default()
        };
        workflows.push(deployment.sandbox.emulator.start_workflow(spec).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while deployment.jobs().await.len() < workflows.len() {
        assert!(Instant::now() < deadline, "the calls were not all stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything the intake would have set off after answering has had time to happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_rest: Vec<String> = deployment
        .sandbox
        .emulator
        .rest_calls(&deployment.sandbox.domain)
        .into_iter()
        .skip(rest_before)
        .map(|call| call.method)
        .collect();
    assert!(new_rest.is_empty(), "the intake called the portal: {new_rest:?}");
    assert_eq!(deployment.api.counts().requests, 0, "the intake called the action's API");
    assert!(
        deployment.jobs().await.iter().all(|job| job.state == store::JobState::Queued),
        "nothing ran them"
    );
}

/// A call is answered only once it is committed: while another connection holds SQLite's write
/// lock no answer comes; when it lets go, every call waiting is committed in one transaction
/// (they share the commit's `created_at`) and answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_wait_for_the_commit_and_waiting_calls_are_committed_together() {
    use sqlx::Connection;
    const CALLS: usize = 20;
    let deployment = IntakeOnly::start().await;
    let spec = b24_emulator::WorkflowSpec {
        domain: deployment.sandbox.domain.clone(),
        code: CODE.into(),
        properties: json!({ "company_id": 1 }),
        finish_after: None,
        ..b24_emulator::WorkflowSpec::default()
    };
    let template = deployment.sandbox.emulator.start_workflow(spec).await.unwrap().workflow_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    while deployment.jobs().await.is_empty() {
        assert!(Instant::now() < deadline, "the template call was not stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = deployment.sandbox.emulator.workflow(&deployment.sandbox.domain, &template).unwrap();
    let calls = b24act::bench::load::Calls::from_body(&body.body, CODE).unwrap();

    let mut writer =
        sqlx::SqliteConnection::connect(&format!("sqlite:{}", deployment.db.display()))
            .await
            .unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://{}{}", deployment.listen, host::routes::action_path(CODE));
    let answers: Vec<_> = (0..CALLS)
        .map(|_| {
            let request = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(calls.next_body());
            tokio::spawn(async move { request.send().await.map(|answer| answer.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let answered = answers.iter().filter(|answer| answer.is_finished()).count();
    assert_eq!(answered, 0, "calls were answered before they could be committed");
    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
    for answer in answers {
        assert_eq!(answer.await.unwrap().unwrap(), 200);
    }

    let jobs = deployment.jobs().await;
    assert_eq!(jobs.len(), CALLS + 1, "every call stored once");
    let commits: std::collections::BTreeSet<i64> = jobs
        .iter()
        .filter(|job| job.call.workflow_id != template)
        .map(|job| job.created_at)
        .collect();
    // The first call's group was already waiting on the lock; all the others gathered behind it.
    assert!(commits.len() <= 2, "{CALLS} calls took {} commits: {commits:?}", commits.len());
}

/// A changed configuration reaches the portal when the host starts: no reinstall, no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_made_at_start_only_where_the_catalog_changed() {
    let ServeSite { sandbox, dir: _dir, config, config_text: text, .. } =
        ServeSite::new("b24act-it", 3, &Options::default()).await;

    let first = Server::start(&config);
    sandbox.install(CLIENT_ID, &[CODE], Duration::from_secs(10)).await.unwrap();
    assert_eq!(registered_name(&sandbox), Some(json!({"EN": "Check credit"})));
    first.kill();

    // The same catalog: the portal has its registrations, so a start spends no request on them.
    let before = registration_calls(&sandbox);
    let same = Server::start(&config);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        registration_calls(&sandbox),
        before,
        "an unchanged catalog is not registered again"
    );
    same.kill();

    let renamed = text.replacen("\"Check credit\"", "\"Check the credit limit\"", 1);
    assert_ne!(renamed, text, "the test configuration names the action `Check credit`");
    std::fs::write(&config, renamed).unwrap();
    let _changed = Server::start(&config);
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

/// How many registration requests (`bizproc.activity.*`, `bizproc.robot.*`) the portal got.
fn registration_calls(sandbox: &Sandbox) -> usize {
    let calls = sandbox.emulator.rest_calls(&sandbox.domain);
    calls
        .iter()
        .filter(|call| {
            call.method.starts_with("bizproc.activity.") && call.method != "bizproc.activity.log"
                || call.method.starts_with("bizproc.robot.")
        })
        .count()
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

/// `b24act check-config` as an operator runs it before a deploy: the shipped example passes
/// once it has a key, and a broken copy fails with exit 1 and the key that is wrong.
#[test]
fn check_config_passes_the_example_and_names_what_is_wrong() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/b24act.toml");
    let check = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_b24act"))
            .args(["check-config", "--config"])
            .arg(path)
            .env("B24ACT__STORE__ENCRYPTION_KEY", crate::support::KEY)
            .env_remove("B24ACT__APP__CLIENT_SECRET")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let ok = check(std::path::Path::new(example));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let printed = String::from_utf8_lossy(&ok.stdout);
    assert!(
        printed.contains("valid; 1 action(s): check_credit_limit")
            && printed.contains("the app needs the scopes: bizproc (set them"),
        "{printed}"
    );
    assert!(
        printed.contains(
            "warning: app.client_secret still holds the example's placeholder: fill it in, or set \
             B24ACT__APP__CLIENT_SECRET,"
        ),
        "a placeholder left in is valid but said: {printed}"
    );

    let dir = TempDir::new("b24act-check").unwrap();
    let broken = dir.path().join("b24act.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let bad = text.replacen("concurrency = 4", "concurrency = \"many\"", 1);
    assert_ne!(bad, text, "the example sets workers.concurrency = 4");
    std::fs::write(&broken, bad).unwrap();
    let refused = check(&broken);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("workers.concurrency"), "names the key: {stderr}");

    // What used to fail only at run time: a placeholder and a mapping naming undeclared
    // properties, all listed, each with the id probably meant.
    let misspelt = text
        .replace("{{properties.company_id}}", "{{properties.compny_id}}")
        .replace("# company_id = \"company_id\"", "company_id = \"compny_id\"")
        .replace("# reason = \"reason\"", "reason = \"reson\"");
    std::fs::write(&broken, misspelt).unwrap();
    let refused = check(&broken);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    for expected in [
        "2 problem(s) in the actions' connectors:",
        "  - actions[0].connector: reads the input property `compny_id`, which the action does not declare (it declares company_id, amount); did you mean `company_id`?",
        "  - actions[0].connector: fills the return property `reson`, which the action does not declare",
        "did you mean `reason`?",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    // A variable of no known key is named, with the one probably meant.
    let misnamed = std::process::Command::new(env!("CARGO_BIN_EXE_b24act"))
        .args(["check-config", "--config", example])
        .env("B24ACT__STORE__ENCRYPTION_KEY", crate::support::KEY)
        .env("B24ACT__APP__CLIENT_SECRT", "from-the-vault")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&misnamed.stderr);
    assert_eq!(misnamed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("environment variable B24ACT__APP__CLIENT_SECRT: sets `app.client_secrt`, which is not a known key")
            && stderr.contains("did you mean B24ACT__APP__CLIENT_SECRET?")
            && !stderr.contains("from-the-vault"),
        "{stderr}"
    );
}
