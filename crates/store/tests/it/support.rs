//! Test support: one suite, two backends. `store::on_both_stores!(crate::support::run => …)`
//! turns each `async fn(TestDb)` into a SQLite test (a real file in a fresh temporary directory)
//! and a PostgreSQL test (a fresh database, dropped afterwards), so tests run in parallel without
//! sharing state; `store::testing` says how a PostgreSQL leg is never skipped silently.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use store::testing::with_scratch_store;
use store::{
    Backend, ClaimedJob, Delivery, Enqueued, JobId, NewInstallation, NewJob, Store, StoreKey,
    StoreOptions,
};

/// A fixed instant tests count from (Unix ms).
pub const T0: i64 = 1_700_000_000_000;

/// A lease of 30 s.
pub const LEASE: Duration = Duration::from_secs(30);

/// Where one test's store lives.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub kind: Backend,
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
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }
}

/// Runs `test` against a fresh store on `backend` (see `store::testing`).
pub async fn run<F, Fut>(backend: Backend, name: &str, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_scratch_store(backend, name, |scratch| test(TestDb { kind: backend, url: scratch.url }))
        .await
}

/// A call for portal `member` with event token `token`, waiting for its result, deadline in 30
/// minutes.
pub fn call(member: &str, token: &str) -> NewJob {
    NewJob {
        member_id: member.to_owned(),
        action_code: "check_credit_limit".to_owned(),
        event_token: token.to_owned(),
        workflow_id: format!("wf-{token}"),
        document_id: Some("DEAL_1".to_owned()),
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
    store::testing::assert_legs_run_under_ci(cfg!(postgres_tests));
}

/// An installation of portal `member` with recognisable secrets, its token valid an hour from
/// [`T0`].
pub fn install(member: &str) -> NewInstallation {
    NewInstallation {
        member_id: member.to_owned(),
        domain: format!("{member}.bitrix24.example"),
        client_endpoint: format!("https://{member}.bitrix24.example/rest/"),
        server_endpoint: "https://oauth.bitrix.info/rest/".to_owned(),
        application_token: format!("app-token-{member}-51f0c"),
        access_token: format!("access-token-{member}-9a8b7c"),
        refresh_token: Some(format!("refresh-token-{member}-1d2e3f")),
        expires_at: T0 + 3_600_000,
    }
}
