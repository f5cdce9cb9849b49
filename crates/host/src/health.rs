//! What this node knows is wrong with a portal, and `GET /health`, which says it. A portal is
//! degraded when the auth server refuses to renew its token (`invalid_grant`,
//! `invalid_client`): a matter of the installation or the configuration that no retry mends, so
//! its deliveries pause and an operator is told what to do. An install event or a delivery that
//! gets through clears it. A node that is draining (stopping, but still answering calls for
//! `server.drain_grace`) says so with 503, so a load balancer moves traffic elsewhere.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use b24::report::ErrorChain;
use serde_json::{Value, json};

use crate::Host;
use crate::clock;

/// Why a portal is degraded, and since when (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    pub reason: String,
    pub since: i64,
}

/// The degraded portals of this node, by `member_id`, and whether it is draining.
#[derive(Debug, Default)]
pub struct PortalHealth {
    degraded: Mutex<BTreeMap<String, Degraded>>,
    draining: AtomicBool,
}

impl PortalHealth {
    /// The node is stopping: it still answers calls, but `/health` sends traffic elsewhere.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether [`PortalHealth::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Degraded>> {
        // Whole entries are inserted and removed under the lock: a poisoned map is consistent.
        self.degraded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks a portal degraded; returns whether it was healthy until now (so the caller says
    /// what to do once, not on every paused round).
    pub fn degrade(&self, member_id: &str, reason: String) -> bool {
        let mut degraded = self.lock();
        let newly = !degraded.contains_key(member_id);
        let since = degraded.get(member_id).map_or_else(clock::now_ms, |known| known.since);
        degraded.insert(member_id.to_owned(), Degraded { reason, since });
        newly
    }

    /// Marks a portal healthy again; returns whether it was degraded.
    pub fn clear(&self, member_id: &str) -> bool {
        self.lock().remove(member_id).is_some()
    }

    /// Every degraded portal, by `member_id`.
    pub fn degraded(&self) -> Vec<(String, Degraded)> {
        self.lock().iter().map(|(member_id, why)| (member_id.clone(), why.clone())).collect()
    }
}

/// Route: `GET /health`.
pub fn router(host: Arc<Host>) -> Router {
    Router::new().route(crate::routes::HEALTH, get(health)).with_state(host)
}

/// `GET /health`: 503 while the store does not answer or the node drains; otherwise 200 with
/// the jobs by state,
/// and `"status": "degraded"` with each degraded portal and why. A degraded portal does not make
/// the node unhealthy — it still takes every call durably — so the code stays 200 and a load
/// balancer keeps sending calls; monitoring reads `status`.
async fn health(State(host): State<Arc<Host>>) -> (StatusCode, Json<Value>) {
    if host.health.is_draining() {
        let body = json!({"status": "draining", "node": host.node_id});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    match host.store.state_counts().await {
        Ok(counts) => {
            let by_state: serde_json::Map<String, Value> = store::JobState::ALL
                .iter()
                .map(|state| (state.as_str().to_owned(), json!(counts.get(*state))))
                .collect();
            let degraded: Vec<Value> = host
                .health
                .degraded()
                .into_iter()
                .map(|(member_id, why)| {
                    json!({"portal": member_id, "reason": why.reason, "since": why.since})
                })
                .collect();
            let status = if degraded.is_empty() { "ok" } else { "degraded" };
            let body = json!({
                "status": status,
                "node": host.node_id,
                "jobs": by_state,
                "degraded": degraded,
            });
            (StatusCode::OK, Json(body))
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "store unavailable", "error": ErrorChain(&error).to_string()})),
        ),
    }
}
