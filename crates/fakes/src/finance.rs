//! A fake of an internal finance system's HTTP/JSON API: companies' credit limits and debts
//! behind bearer-token (or basic, or API-key) auth, with fault injection set at run time.
//!
//! # The API
//!
//! `GET /api/v1/companies/{id}/credit`
//!
//! | case | status | body |
//! |---|---|---|
//! | known company | 200 | `{"company_id": 42, "credit_limit": 50000.0, "current_debt": 12000.0, "currency": "RUB"}` |
//! | wrong or missing credentials | 401, `WWW-Authenticate` | `{"error": "unauthorized", "message": "…"}` |
//! | unknown company (or an id that is not a number) | 404 | `{"error": "not_found", "message": "company 42 not found"}` |
//! | unavailable (see [`Behaviour`]) | 503 | `{"error": "unavailable", "message": "…"}` |
//! | over the rate limit | 429, `Retry-After: N` | `{"error": "rate_limited", "message": "…"}` |
//! | any other path | 404 | `{"error": "not_found", "message": "no such route"}` |
//!
//! Checks run in this order: latency, unavailability, rate limit, credentials, company, then the
//! answer (possibly [malformed](Malformed)). Every request counts, whatever its answer.
//!
//! # Companies
//!
//! Ids 1 to [`SEEDED_COMPANIES`] exist from the start, with limits and debts drawn from the seed
//! (the same seed gives the same book); [`FinanceApi::set_company`] and
//! [`FinanceApi::remove_company`] change it.
//!
//! # Time
//!
//! Latency and the maintenance windows use Tokio's clock, measured from [`FinanceApi::start`], so
//! a test with a paused clock controls them too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::faults::{RateWindow, Served, listen, lock, whole_seconds};

/// How many companies the book starts with: ids 1 to this.
pub const SEEDED_COMPANIES: u64 = 1_000;

/// The header the fake reads the idempotency key from, to record it.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// One company's line in the book.
#[derive(Debug, Clone, PartialEq)]
pub struct Company {
    pub credit_limit: f64,
    pub current_debt: f64,
    /// ISO 4217, `RUB` for the seeded companies.
    pub currency: String,
}

impl Company {
    pub fn new(credit_limit: f64, current_debt: f64) -> Company {
        Company { credit_limit, current_debt, currency: "RUB".to_owned() }
    }
}

/// Which credentials the API accepts. The default is a bearer token derived from the seed
/// ([`FinanceApi::token`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: String },
    /// `<name>: <value>`, e.g. `X-Api-Key`.
    Header { name: String, value: String },
    /// Anything goes.
    None,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}:<redacted>)"),
            Credentials::Header { name, .. } => write!(f, "Header({name}: <redacted>)"),
            Credentials::None => f.write_str("None"),
        }
    }
}

/// A 200 answer that is not what the API promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// The JSON cut off in the middle (a complete HTTP answer whose body is not valid JSON).
    Truncated,
    /// An HTML maintenance page, as `text/html`.
    NotJson,
    /// Valid JSON without this field.
    MissingField(String),
    /// Valid JSON with this field as the text `"n/a"` instead of a number.
    NonNumeric(String),
}

/// How the API behaves; change it at any time with [`FinanceApi::set`] or
/// [`FinanceApi::update`]. The default is a healthy, fast, unlimited API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// Every request answers 503 (fully down).
    pub down: bool,
    /// This share of requests (0 to 1) answers 503, drawn from the seeded generator.
    pub failure_rate: f64,
    /// The next this-many requests answer 503, then it recovers.
    pub fail_next: u32,
    /// Maintenance windows `[start, end)`, measured from the API's start: requests inside one
    /// answer 503. See [`Behaviour::down_between`].
    pub maintenance: Vec<(Duration, Duration)>,
    /// Every answer waits this long first.
    pub latency: Duration,
    /// At most this many requests per second (a fixed one-second window from the first request
    /// in it); the rest answer 429 with `Retry-After` in whole seconds (at least 1).
    pub rate_limit: Option<u32>,
    /// Successful answers are malformed this way.
    pub malformed: Option<Malformed>,
}

impl Behaviour {
    /// A healthy API.
    pub fn healthy() -> Behaviour {
        Behaviour::default()
    }

    /// Adds a maintenance window: unavailable from `start` to `end` after the API started.
    pub fn down_between(mut self, start: Duration, end: Duration) -> Behaviour {
        self.maintenance.push((start, end));
        self
    }
}

/// What the API has answered so far, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every request, whatever its answer.
    pub requests: u64,
    /// 200 with a well-formed answer.
    pub ok: u64,
    /// 503.
    pub unavailable: u64,
    /// 429.
    pub rate_limited: u64,
    /// 401.
    pub unauthorized: u64,
    /// 404.
    pub not_found: u64,
    /// 200 with a malformed answer.
    pub malformed: u64,
}

impl Counts {
    /// Requests that did not get a well-formed 200.
    pub fn failures(&self) -> u64 {
        self.requests - self.ok
    }
}

/// One request as the API saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The path, e.g. `/api/v1/companies/42/credit`.
    pub path: String,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
    /// The status it answered.
    pub status: u16,
}

/// A running fake finance API (on 127.0.0.1 unless started elsewhere); stops when dropped.
#[derive(Debug)]
pub struct FinanceApi {
    server: Served<ApiState>,
}

struct ApiState {
    started: Instant,
    seed: u64,
    behaviour: Mutex<Behaviour>,
    credentials: Mutex<Credentials>,
    companies: Mutex<BTreeMap<u64, Company>>,
    rng: Mutex<StdRng>,
    window: Mutex<RateWindow>,
    received: Mutex<Vec<Received>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    unavailable: AtomicU64,
    rate_limited: AtomicU64,
    unauthorized: AtomicU64,
    not_found: AtomicU64,
    malformed: AtomicU64,
}

impl FinanceApi {
    /// Starts on 127.0.0.1 on a free port. `seed` fixes the book of companies, the token and the
    /// random failures, so a run can be repeated.
    pub async fn start(seed: u64) -> std::io::Result<FinanceApi> {
        FinanceApi::start_on(seed, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// As [`start`](FinanceApi::start), on this address (`b24act fake finance --listen`).
    pub async fn start_on(seed: u64, address: SocketAddr) -> std::io::Result<FinanceApi> {
        let (listener, addr) = listen(address).await?;
        let now = Instant::now();
        let state = Arc::new(ApiState {
            started: now,
            seed,
            behaviour: Mutex::new(Behaviour::default()),
            credentials: Mutex::new(Credentials::Bearer(token_for(seed))),
            companies: Mutex::new(seeded_companies(seed)),
            // Not the book's generator: changing the book does not change the failures.
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)),
            window: Mutex::new(RateWindow::new(now)),
            received: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        let router = Router::new()
            .route("/api/v1/companies/{id}/credit", get(credit))
            .fallback(no_route)
            .with_state(state.clone());
        let server = Served::new(addr, state);
        server.spawn("finance", listener, router);
        tracing::debug!(%addr, seed, "fake finance API started");
        Ok(FinanceApi { server })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The credit endpoint's URL for a company: `http://127.0.0.1:PORT/api/v1/companies/42/credit`.
    pub fn credit_url(&self, company_id: impl std::fmt::Display) -> String {
        format!("{}/api/v1/companies/{company_id}/credit", self.url())
    }

    /// The bearer token accepted by default (derived from the seed).
    pub fn token(&self) -> String {
        token_for(self.server.state.seed)
    }

    /// Replaces the behaviour.
    pub fn set(&self, behaviour: Behaviour) {
        *lock(&self.server.state.behaviour) = behaviour;
    }

    /// Changes the behaviour in place, e.g. `api.update(|b| b.down = false)`.
    pub fn update(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut lock(&self.server.state.behaviour));
    }

    /// The behaviour now (`fail_next` counts down as requests arrive).
    pub fn behaviour(&self) -> Behaviour {
        lock(&self.server.state.behaviour).clone()
    }

    /// Which credentials the API accepts from now on.
    pub fn set_credentials(&self, credentials: Credentials) {
        *lock(&self.server.state.credentials) = credentials;
    }

    /// A company's credit limit and current debt, if the book has it.
    pub fn company(&self, id: u64) -> Option<(f64, f64)> {
        lock(&self.server.state.companies).get(&id).map(|c| (c.credit_limit, c.current_debt))
    }

    /// Adds or replaces a company.
    pub fn set_company(&self, id: u64, company: Company) {
        lock(&self.server.state.companies).insert(id, company);
    }

    /// Removes a company: it answers 404 from now on.
    pub fn remove_company(&self, id: u64) {
        lock(&self.server.state.companies).remove(&id);
    }

    /// What the API has answered so far.
    pub fn counts(&self) -> Counts {
        let c = &self.server.state.counters;
        Counts {
            requests: c.requests.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            unauthorized: c.unauthorized.load(Ordering::Relaxed),
            not_found: c.not_found.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
        }
    }

    /// Every request so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.server.state.received).clone()
    }

    /// Time since the API started, on Tokio's clock (what maintenance windows are measured on).
    pub fn elapsed(&self) -> Duration {
        self.server.state.started.elapsed()
    }
}

fn token_for(seed: u64) -> String {
    format!("fin-{:016x}", seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed)
}

/// Limits from 10 000 to 200 000 in steps of 5 000; debts from nothing to 120% of the limit (so
/// some companies are over their limit), in whole hundreds.
fn seeded_companies(seed: u64) -> BTreeMap<u64, Company> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=SEEDED_COMPANIES)
        .map(|id| {
            let limit = f64::from(rng.random_range(2..=40_u32)) * 5_000.0;
            let debt = (limit * rng.random_range(0.0..1.2) / 100.0).round() * 100.0;
            (id, Company::new(limit, debt))
        })
        .collect()
}

/// What the request gets instead of the normal answer, decided under the behaviour's lock.
enum Verdict {
    Unavailable(&'static str),
    RateLimited(u64),
    Proceed(Option<Malformed>),
}

impl ApiState {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn verdict(&self, now: Instant) -> Verdict {
        let mut behaviour = lock(&self.behaviour);
        let since_start = now.saturating_duration_since(self.started);
        if behaviour.down {
            return Verdict::Unavailable("the finance system is down");
        }
        if behaviour.maintenance.iter().any(|(start, end)| (*start..*end).contains(&since_start)) {
            return Verdict::Unavailable("scheduled maintenance");
        }
        if behaviour.fail_next > 0 {
            behaviour.fail_next -= 1;
            return Verdict::Unavailable("temporarily unavailable");
        }
        if behaviour.failure_rate > 0.0 && lock(&self.rng).random::<f64>() < behaviour.failure_rate
        {
            return Verdict::Unavailable("temporarily unavailable");
        }
        if let Some(limit) = behaviour.rate_limit
            && let Err(left) = lock(&self.window).admit(now, limit, Duration::from_secs(1))
        {
            return Verdict::RateLimited(whole_seconds(left));
        }
        Verdict::Proceed(behaviour.malformed.clone())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let header_is = |name: &str, expected: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v == expected)
        };
        match &*lock(&self.credentials) {
            Credentials::Bearer(token) => {
                header_is(header::AUTHORIZATION.as_str(), &format!("Bearer {token}"))
            }
            Credentials::Basic { username, password } => header_is(
                header::AUTHORIZATION.as_str(),
                &format!("Basic {}", base64(format!("{username}:{password}").as_bytes())),
            ),
            Credentials::Header { name, value } => header_is(name, value),
            Credentials::None => true,
        }
    }
}

/// `GET /api/v1/companies/{id}/credit`.
async fn credit(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = answer(&state, &id, &headers).await;
    lock(&state.received).push(Received {
        path: format!("/api/v1/companies/{id}/credit"),
        idempotency_key: headers
            .get(IDEMPOTENCY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: response.status().as_u16(),
    });
    response
}

async fn answer(state: &ApiState, id: &str, headers: &HeaderMap) -> Response {
    state.count(&state.counters.requests);
    let latency = lock(&state.behaviour).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let malformed = match state.verdict(Instant::now()) {
        Verdict::Unavailable(message) => {
            state.count(&state.counters.unavailable);
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        }
        Verdict::RateLimited(retry_after) => {
            state.count(&state.counters.rate_limited);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; slow down",
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return response;
        }
        Verdict::Proceed(malformed) => malformed,
    };
    if !state.authorized(headers) {
        state.count(&state.counters.unauthorized);
        let mut response =
            error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid credentials");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"finance\""));
        return response;
    }
    let company = id.parse::<u64>().ok().and_then(|n| {
        let companies = lock(&state.companies);
        companies.get(&n).cloned().map(|company| (n, company))
    });
    let Some((company_id, company)) = company else {
        state.count(&state.counters.not_found);
        return error(StatusCode::NOT_FOUND, "not_found", &format!("company {id} not found"));
    };
    let mut body = json!({
        "company_id": company_id,
        "credit_limit": company.credit_limit,
        "current_debt": company.current_debt,
        "currency": company.currency,
    });
    let Some(malformed) = malformed else {
        state.count(&state.counters.ok);
        return (StatusCode::OK, Json(body)).into_response();
    };
    state.count(&state.counters.malformed);
    match malformed {
        Malformed::Truncated => {
            let text = body.to_string();
            let cut = text.len() / 2;
            let text = text.get(..cut).unwrap_or_default().to_owned();
            raw(StatusCode::OK, "application/json", text)
        }
        Malformed::NotJson => raw(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><h1>Down for maintenance</h1></body></html>".to_owned(),
        ),
        Malformed::MissingField(field) => {
            if let Value::Object(map) = &mut body {
                map.remove(&field);
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Malformed::NonNumeric(field) => {
            body[field.as_str()] = json!("n/a");
            (StatusCode::OK, Json(body)).into_response()
        }
    }
}

async fn no_route(State(state): State<Arc<ApiState>>) -> Response {
    state.count(&state.counters.requests);
    state.count(&state.counters.not_found);
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

fn raw(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Standard base64 with padding (RFC 4648 §4), for checking basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_book() {
        assert_eq!(seeded_companies(7), seeded_companies(7));
        assert_ne!(seeded_companies(7), seeded_companies(8));
    }
}
