//! A small finance-like HTTP/JSON API on 127.0.0.1 that records what it receives and fails on
//! demand, plus raw-socket servers that break connections.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Exactly as sent, still percent-encoded.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.get(name)
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// What the next request gets instead of the normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with this JSON-ish body.
    Status(u16, &'static str),
    /// This status with this `Retry-After` value.
    RetryAfter(u16, String),
    /// Answers after this long (a slow upstream).
    Slow(Duration),
    /// 200 with this content type and body.
    Garbage(&'static str, &'static str),
    /// 200 with a JSON body of this many bytes.
    Huge(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct Company {
    pub credit: f64,
    pub debt: f64,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    faults: Mutex<VecDeque<Fault>>,
    companies: Mutex<BTreeMap<String, Company>>,
}

/// The fake finance API.
///
/// - `GET /api/companies/{id}/limit` → `{"company": {"id"}, "limit": {"credit", "debt",
///   "available", "currency"}}`, 404 for an unknown company;
/// - `POST /api/companies/{id}/credit-check` with `{"amount": number}` → the same plus
///   `{"decision": {"approval_required", "reason"}}`; 422 when `amount` is not a number;
/// - any method on `/echo/...` → what it received: `{"method", "path", "headers", "body"}`;
/// - anything else: 404.
pub struct FakeApi {
    pub base: String,
    shared: Arc<Shared>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let shared = Arc::new(Shared::default());
        shared
            .companies
            .lock()
            .unwrap()
            .insert("42".into(), Company { credit: 500_000.0, debt: 120_000.5 });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeApi { base, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next requests get these faults, one each, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.lock().unwrap().extend(faults);
    }

    pub fn set_company(&self, id: &str, company: Company) {
        self.shared.companies.lock().unwrap().insert(id.into(), company);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The only request received; panics if there were none or several.
    pub fn only_request(&self) -> Received {
        let received = self.received();
        assert_eq!(received.len(), 1, "expected one request, got {received:#?}");
        received.into_iter().next().unwrap()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    shared.received.lock().unwrap().push(Received {
        method: method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: headers.clone(),
        body: body.to_vec(),
    });
    let fault = shared.faults.lock().unwrap().pop_front();
    match fault {
        Some(Fault::Status(code, text)) => {
            return (status(code), [(header::CONTENT_TYPE, "application/json")], text)
                .into_response();
        }
        Some(Fault::RetryAfter(code, after)) => {
            return (status(code), [(header::RETRY_AFTER, after)], r#"{"error":"slow down"}"#)
                .into_response();
        }
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Garbage(content_type, text)) => {
            return (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response();
        }
        Some(Fault::Huge(size)) => {
            let text = format!(r#"{{"padding":"{}"}}"#, "x".repeat(size));
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text)
                .into_response();
        }
        None => {}
    }

    let path = uri.path();
    if path.starts_with("/echo/") {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(name, value)| {
                (name.to_string(), Value::String(String::from_utf8_lossy(value.as_bytes()).into()))
            })
            .collect();
        let body = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        return json_response(
            StatusCode::OK,
            json!({ "method": method.as_str(), "path": path_and_query, "headers": headers, "body": body }),
        );
    }

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["api", "companies", id, action] = segments.as_slice() else {
        return json_response(StatusCode::NOT_FOUND, json!({ "error": "no such endpoint" }));
    };
    let Some(company) = shared.companies.lock().unwrap().get(*id).copied() else {
        return json_response(StatusCode::NOT_FOUND, json!({ "error": "no such company" }));
    };
    let available = company.credit - company.debt;
    let limit = json!({
        "credit": company.credit, "debt": company.debt, "available": available, "currency": "RUB",
    });
    match (*action, method) {
        ("limit", Method::GET) => {
            json_response(StatusCode::OK, json!({ "company": { "id": id }, "limit": limit }))
        }
        ("credit-check", Method::POST) => {
            let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
            let Some(amount) = request.get("amount").and_then(Value::as_f64) else {
                return json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({ "error": "amount must be a number" }),
                );
            };
            let approval_required = amount > available;
            let reason = if approval_required { "over the available limit" } else { "" };
            json_response(
                StatusCode::OK,
                json!({
                    "company": { "id": id },
                    "limit": limit,
                    "decision": { "approval_required": approval_required, "reason": reason },
                }),
            )
        }
        _ => {
            json_response(StatusCode::METHOD_NOT_ALLOWED, json!({ "error": "method not allowed" }))
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("a valid status")
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// How a raw server breaks the one connection it accepts.
#[derive(Debug, Clone, Copy)]
pub enum Break {
    /// Reads the request and closes without answering.
    BeforeAnswer,
    /// Sends a 200 promising 100 bytes of JSON, sends 10, closes.
    MidBody,
}

/// A server on 127.0.0.1 that accepts one connection and breaks it; returns its base URL.
pub fn breaking_server(how: Break) -> String {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
        if let Break::MidBody = how {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"limit\":",
            );
            let _ = stream.flush();
        }
    });
    base
}

/// A base URL on 127.0.0.1 where nothing listens.
pub fn refusing_address() -> String {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    base
}
