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

    /// `ArgumentNullException`: 400 `ERROR_ARGUMENT` naming the argument in `argument` (§5.3).
    pub(crate) fn argument_null(name: &str) -> Self {
        let mut e =
            Self::bad_request("ERROR_ARGUMENT", format!("Argument '{name}' is null or empty"));
        e.extra.push(("argument".into(), Param::str(name)));
        e
    }

    /// 403 `WRONG_AUTH_TYPE`: a method of the `rest` module that needs an app called otherwise
    /// (by a webhook).
    pub(crate) fn wrong_auth_type() -> Self {
        Self::new(
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method Application context required",
        )
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

/// How a portal writes its answer: JSON, or XML for a method called as `<method>.xml` (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Json,
    Xml,
}

/// What a portal's REST answer carries besides its status and body (§5.2).
pub(crate) struct Answer<'a> {
    pub(crate) transport: Transport,
    /// The calling app's `client_id` (`X-Bitrix-Rest-Application`), once it is known.
    pub(crate) application: Option<&'a str>,
    /// The method's own time (`X-Bitrix-Rest-Time`).
    pub(crate) processing: Duration,
}

/// A portal's REST answer: the body in its transport, the CORS headers every answer carries, and
/// the cloud's `X-Bitrix-Rest-*` timings. The emulator cannot measure one request's CPU time in
/// a shared process, so it reports the method's time as user time and no system time.
pub(crate) fn rest_response(status: u16, body: &Param, answer: &Answer<'_>) -> Response {
    let mut resp = match answer.transport {
        Transport::Json => json_response(status, body),
        Transport::Xml => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (status, xml("response", body)).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
            resp
        }
    };
    let headers = resp.headers_mut();
    cors(headers);
    if let Some(v) = answer.application.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert("x-bitrix-rest-application", v);
    }
    let seconds = |d: Duration| HeaderValue::from_str(&format!("{:.10}", d.as_secs_f64()));
    for (name, value) in [
        ("x-bitrix-rest-time", seconds(answer.processing)),
        ("x-bitrix-rest-user-time", seconds(answer.processing)),
        ("x-bitrix-rest-system-time", seconds(Duration::ZERO)),
    ] {
        if let Ok(value) = value {
            headers.insert(name, value);
        }
    }
    resp
}

/// The CORS headers of every REST answer, so a page on any origin can call the portal (§5.2).
pub(crate) fn cors(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("origin, content-type, accept"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// `CRestServer::outputXml`: a tag per key (`item` for a list's), scalars as PHP prints them,
/// escaped; no XML declaration.
fn xml(key: &str, value: &Param) -> String {
    let mut out = String::new();
    write_xml(key, value, &mut out);
    out
}

fn write_xml(key: &str, value: &Param, out: &mut String) {
    let tag = if key.parse::<i64>().is_ok_and(|n| n.to_string() == key) { "item" } else { key };
    out.push('<');
    out.push_str(tag);
    out.push('>');
    match value {
        Param::Array(items) => {
            for (k, v) in items {
                write_xml(k, v, out);
            }
        }
        scalar => {
            for c in scalar.php_string().unwrap_or_default().chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&apos;"),
                    c => out.push(c),
                }
            }
        }
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}
