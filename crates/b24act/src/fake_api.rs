//! A flaky JSON API on loopback, for `b24act demo` and the end-to-end tests: the stand-in for
//! "any HTTP API" an action calls. It answers a credit check the way a finance system would,
//! and can be made to fail — a whole outage, a share of failing requests, the next N requests,
//! slowness — while it runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// How the API behaves; change it at any time with [`FakeApi::set`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// Every request answers 503 (maintenance).
    pub down: bool,
    /// This share of requests (0 to 1) answers 503.
    pub failure_rate: f64,
    /// The next this-many requests answer 503, then it recovers.
    pub fail_next: u32,
    /// Every answer waits this long first.
    pub latency: Duration,
}

/// A running fake API; stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<ApiState>,
    stop: CancellationToken,
}

struct ApiState {
    behaviour: Mutex<Behaviour>,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl FakeApi {
    /// Starts on 127.0.0.1 on a free port. `seed` makes the random failures repeatable.
    pub async fn start(seed: u64) -> std::io::Result<FakeApi> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ApiState {
            behaviour: Mutex::new(Behaviour::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let router =
            Router::new().route("/companies/{id}/credit", get(credit)).with_state(state.clone());
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let server =
                axum::serve(listener, router).with_graceful_shutdown(until.cancelled_owned());
            if let Err(error) = server.await {
                tracing::error!(%error, "fake API stopped");
            }
        });
        Ok(FakeApi { addr, state, stop })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *lock(&self.state.behaviour) = behaviour;
    }

    /// Requests answered so far, and how many of them failed.
    pub fn counts(&self) -> (u64, u64) {
        (self.state.requests.load(Ordering::Relaxed), self.state.failures.load(Ordering::Relaxed))
    }

    /// The limit and debt the API reports for a company: fixed per id, so a test or the demo
    /// knows the right answer.
    pub fn credit_of(company_id: u64) -> (f64, f64) {
        let limit = 10_000.0 + (company_id % 7) as f64 * 5_000.0;
        let debt = (company_id % 5) as f64 * 4_000.0;
        (limit, debt)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `GET /companies/{id}/credit` → `{"company_id": 42, "limit": 10000.0, "debt": 4000.0}`.
async fn credit(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let (latency, fails) = {
        let mut behaviour = lock(&state.behaviour);
        let random_failure = behaviour.failure_rate > 0.0
            && lock(&state.rng).random::<f64>() < behaviour.failure_rate;
        let scripted_failure = behaviour.fail_next > 0;
        behaviour.fail_next = behaviour.fail_next.saturating_sub(1);
        (behaviour.latency, behaviour.down || scripted_failure || random_failure)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if fails {
        state.failures.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "maintenance"})));
    }
    let Ok(company_id) = id.parse::<u64>() else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("no company `{id}`")})));
    };
    let (limit, debt) = FakeApi::credit_of(company_id);
    (StatusCode::OK, Json(json!({"company_id": company_id, "limit": limit, "debt": debt})))
}
