//! What this node knows is wrong with a portal, and the two health routes that say it.
//!
//! A portal is degraded when it cannot be served: the auth server refuses to renew its token
//! (`invalid_grant`, `invalid_client`) — its deliveries pause — or its actions could not be
//! registered — its workflows cannot call them. Both are matters of the installation or the
//! configuration that no retry mends, so an operator is told what to do; a reinstall clears
//! both, a delivery that gets through clears the first, a registration the second.
//!
//! Two routes, because two different questions are asked:
//!
//! - `GET /health` is for monitoring: 200 `ok` only when the store answers and every portal
//!   can be served; 503 `degraded` with each portal and why, 503 while the store does not
//!   answer, 503 `draining` while the node stops.
//! - `GET /health/intake` is for load balancers: 200 while this node takes calls durably (it
//!   runs the intake, the store answers, it is not draining), whatever a portal's state.
//!   Bitrix24 never sends a refused call again, so a balancer must not take a node out of
//!   service because one portal's token is bad: every node would fail that check alike, and
//!   calls the nodes could have stored would be refused.

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
use crate::config::Role;

/// What about a portal cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The auth server refuses to renew its token: its results cannot be sent.
    Token,
    /// Its actions could not be registered: its workflows cannot call them.
    Registration,
}

impl Cause {
    /// How `/health` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Token => "token",
            Cause::Registration => "registration",
        }
    }
}

/// Why a portal is degraded, and since when (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    pub cause: Cause,
    pub reason: String,
    pub since: i64,
}

/// The degraded portals of this node, by `member_id` and cause, and whether it is draining.
#[derive(Debug, Default)]
pub struct PortalHealth {
    degraded: Mutex<BTreeMap<(String, Cause), Degraded>>,
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

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, Cause), Degraded>> {
        // Whole entries are inserted and removed under the lock: a poisoned map is consistent.
        self.degraded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks a portal degraded for `cause`; returns whether it was not, for that cause, until
    /// now (so the caller says what to do once, not on every paused round).
    pub fn degrade(&self, member_id: &str, cause: Cause, reason: String) -> bool {
        let mut degraded = self.lock();
        let key = (member_id.to_owned(), cause);
        let known = degraded.get(&key).map(|known| known.since);
        degraded
            .insert(key, Degraded { cause, reason, since: known.unwrap_or_else(clock::now_ms) });
        known.is_none()
    }

    /// Clears `cause` for a portal; returns whether it was degraded for it.
    pub fn clear(&self, member_id: &str, cause: Cause) -> bool {
        self.lock().remove(&(member_id.to_owned(), cause)).is_some()
    }

    /// Clears every cause for a portal (it installed the app again); returns whether it was
    /// degraded.
    pub fn clear_all(&self, member_id: &str) -> bool {
        let mut degraded = self.lock();
        let before = degraded.len();
        degraded.retain(|(member, _), _| member != member_id);
        degraded.len() != before
    }

    /// Every degraded portal, by `member_id`, once per cause.
    pub fn degraded(&self) -> Vec<(String, Degraded)> {
        self.lock().iter().map(|((member_id, _), why)| (member_id.clone(), why.clone())).collect()
    }
}

/// Routes: `GET /health` and `GET /health/intake`.
pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route(crate::routes::HEALTH, get(health))
        .route(crate::routes::HEALTH_INTAKE, get(intake_health))
        .with_state(host)
}

/// `GET /health`: the jobs by state and the degraded portals. 200 `ok` when the store answers
/// and every portal can be served; 503 `degraded` (with each portal, the cause and the reason)
/// when one cannot; 503 while the store does not answer or the node drains.
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
                    json!({
                        "portal": member_id,
                        "cause": why.cause.as_str(),
                        "reason": why.reason,
                        "since": why.since,
                    })
                })
                .collect();
            let (code, status) = if degraded.is_empty() {
                (StatusCode::OK, "ok")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "degraded")
            };
            let body = json!({
                "status": status,
                "node": host.node_id,
                "jobs": by_state,
                "degraded": degraded,
            });
            (code, Json(body))
        }
        Err(error) => store_unavailable(&error),
    }
}

/// `GET /health/intake`: whether this node takes calls durably — it runs the intake, is not
/// draining, and its store answers. Degraded portals do not count (see the module's
/// documentation).
async fn intake_health(State(host): State<Arc<Host>>) -> (StatusCode, Json<Value>) {
    let refuse = |status: &str| {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": status, "node": host.node_id})))
    };
    if !host.config.server.has(Role::Intake) {
        return refuse("takes no calls");
    }
    if host.health.is_draining() {
        return refuse("draining");
    }
    match host.store.state_counts().await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok", "node": host.node_id}))),
        Err(error) => store_unavailable(&error),
    }
}

fn store_unavailable(error: &store::Error) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "store unavailable", "error": ErrorChain(error).to_string()})),
    )
}
