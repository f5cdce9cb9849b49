//! REST envelopes: success `{result, total?, next?, time}` (§5.2) and error
//! `{error, error_description, …}` with no `time` (§5.3), and the HTTP status of each (§5.4).

use std::time::{Duration, SystemTime};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::clock;
use crate::limits::OperatingStatus;
use crate::param::{Array, Param};

/// A REST error as the portal answers it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RestError {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) description: String,
    /// Additional top-level keys (e.g. `operating_reset_at`).
    pub(crate) extra: Vec<(String, Param)>,
}

impl RestError {
    pub(crate) fn new(
        status: u16,
        code: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self { status, code: code.into(), description: description.into(), extra: Vec::new() }
    }

    /// A `RestException`: HTTP 400 (§1.7).
    pub(crate) fn bad_request(code: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(400, code, description)
    }

    /// An `AccessException`: 403 `ACCESS_DENIED`, "Access denied!" plus `" " . msg` (§1.7).
    pub(crate) fn access_denied(message: Option<&str>) -> Self {
        let description = match message {
            Some(m) => format!("Access denied! {m}"),
            None => "Access denied!".to_owned(),
        };
        Self::new(403, "ACCESS_DENIED", description)
    }

    pub(crate) fn method_not_found() -> Self {
        Self::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    }

    pub(crate) fn body(&self) -> Param {
        let mut body = Array::new();
        body.insert("error".into(), Param::str(&self.code));
        body.insert("error_description".into(), Param::str(&self.description));
        body.extend(self.extra.iter().cloned());
        Param::Array(body)
    }
}

/// A method's successful result before it is wrapped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Success {
    pub(crate) result: Param,
    pub(crate) total: Option<u64>,
    pub(crate) next: Option<u64>,
}

impl From<Param> for Success {
    fn from(result: Param) -> Self {
        Self { result, total: None, next: None }
    }
}

/// The `time` object (§5.2); `operating*` only while the load limiter is on.
pub(crate) fn time_object(
    start: SystemTime,
    finish: SystemTime,
    processing: Duration,
    operating: Option<OperatingStatus>,
) -> Param {
    let duration = finish.duration_since(start).unwrap_or_default().as_secs_f64();
    let float = |f: f64| serde_json::Number::from_f64(f).map_or(Param::Null, Param::Num);
    let mut time = Array::new();
    time.insert("start".into(), float(clock::unix_f64(start)));
    time.insert("finish".into(), float(clock::unix_f64(finish)));
    time.insert("duration".into(), float(duration));
    time.insert("processing".into(), float(processing.as_secs_f64()));
    time.insert("date_start".into(), Param::str(clock::iso8601(start)));
    time.insert("date_finish".into(), Param::str(clock::iso8601(finish)));
    if let Some(op) = operating {
        time.insert("operating_reset_at".into(), Param::Num(clock::unix_secs(op.reset_at).into()));
        time.insert("operating".into(), float(op.operating));
    }
    Param::Array(time)
}

/// The full success body.
pub(crate) fn success_body(success: &Success, time: Param) -> Param {
    let mut body = Array::new();
    body.insert("result".into(), success.result.clone());
    if let Some(total) = success.total {
        body.insert("total".into(), Param::Num(total.into()));
    }
    if let Some(next) = success.next {
        body.insert("next".into(), Param::Num(next.into()));
    }
    body.insert("time".into(), time);
    Param::Array(body)
}

/// Writes a JSON body with the portal's content type.
pub(crate) fn json_response(status: u16, body: &Param) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}
