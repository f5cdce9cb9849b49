//! The portal's REST endpoint: `/rest/<method>[.json|.xml]` and `/rest/<user>/<secret>/<method>`,
//! the load limits and fault injection that act on whole HTTP requests (5xx bursts, lost
//! answers), and the domain-move redirect.

mod auth;
mod bindings;
mod bizproc;
mod connection;
mod crm;
mod envelope;
mod listing;
pub(crate) mod methods;
mod request;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

pub(crate) use auth::{Caller, Credential};
pub(crate) use bindings::Bindings;
pub(crate) use connection::{Connection, DroppableListener};
pub(crate) use envelope::{RestError, Success, time_object};
pub(crate) use request::parse_str;

use envelope::{Answer, Transport};

use crate::faults::AnswerLoss;
use crate::param::Param;
use crate::portal::PortalState;
use crate::state::Shared;

/// One portal listener: the domain it was bound as (a moved portal keeps its old listener).
#[derive(Clone)]
struct Listener {
    shared: Arc<Shared>,
    domain: String,
}

/// The router a portal listener serves: the designer's settings dialog (on the portal's own
/// origin, as the frame protocol needs) and REST for everything else.
pub(crate) fn portal_router(shared: Arc<Shared>, domain: String) -> Router {
    let rest = Router::new()
        .fallback(portal_request)
        .with_state(Listener { shared: shared.clone(), domain: domain.clone() });
    crate::designer::router(shared, domain).merge(rest)
}

/// The REST routes of the OAuth server (`/rest/app.info` for the trusted check, §4.4).
pub(crate) fn oauth_router() -> Router<Arc<Shared>> {
    Router::new().route("/rest/{method}", axum::routing::any(oauth_request))
}

/// Where a `/rest/...` path points.
struct Route {
    method: String,
    webhook: Option<(String, String)>,
    transport: Transport,
}

fn parse_route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/rest/")?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (webhook, name) = match segments.as_slice() {
        [name] => (None, *name),
        [user, secret, name] => (Some(((*user).to_owned(), (*secret).to_owned())), *name),
        _ => return None,
    };
    // `.json` is the default format; `.xml` answers in XML. Names are lower-cased (§5.1).
    let (name, transport) = match name.strip_suffix(".xml") {
        Some(name) => (name, Transport::Xml),
        None => (name.strip_suffix(".json").unwrap_or(name), Transport::Json),
    };
    Some(Route { method: name.to_lowercase(), webhook, transport })
}

async fn portal_request(
    AxState(l): AxState<Listener>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = Answer { transport: Transport::Json, application: None, processing: Duration::ZERO };
    let mut state = l.shared.lock();
    let Ok(portal) = state.portal_index(&l.domain) else {
        return envelope::rest_response(404, &RestError::method_not_found().body(), &json);
    };
    if let Some(redirect) = moved(&state.portals[portal], &l.domain, &uri) {
        return redirect;
    }
    let current = state.portals[portal].domain.clone();
    let Some(route) = parse_route(uri.path()) else {
        return envelope::rest_response(404, &RestError::method_not_found().body(), &json);
    };
    let refused = Answer { transport: route.transport, ..json };
    if method == Method::OPTIONS {
        // A browser's preflight: the CORS headers and nothing else (INFERRED, §5.2).
        let mut resp = StatusCode::OK.into_response();
        envelope::cors(resp.headers_mut());
        return resp;
    }
    let _span = tracing::debug_span!("rest", portal = current, method = route.method).entered();
    let start = SystemTime::now();

    let p = &mut state.portals[portal];
    if p.server_errors_left > 0 {
        p.server_errors_left -= 1;
        let status = p.faults.server_errors.map_or(500, |b| b.status);
        let error = if status == 503 {
            RestError::new(503, "OVERLOAD_LIMIT", "REST API is blocked due to overload.")
        } else {
            RestError::new(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        };
        methods::append(&mut state, portal, &route.method, "none", Err(&error), false, None);
        return envelope::rest_response(error.status, &error.body(), &refused);
    }
    let (rate, threshold) = p.spec.rate;
    if !p.spec.unlimited && !p.bucket.admit(rate, threshold) {
        let error = RestError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests");
        methods::append(&mut state, portal, &route.method, "none", Err(&error), false, None);
        return envelope::rest_response(503, &error.body(), &refused);
    }

    let mut params = request::params(&uri, &headers, &body);
    let credential = match route.webhook {
        Some((user_id, secret)) => {
            params.shift_remove("auth");
            Credential::Webhook { user_id, secret }
        }
        None => auth::take_credential(&headers, &mut params),
    };
    let outcome =
        methods::call(&l.shared, &mut state, portal, &route.method, params, &credential, false);
    let finish = SystemTime::now();
    methods::record_outcome(&mut state, portal, &route.method, &outcome, false);
    if let Some(loss) = state.portals[portal].lose_answer(&route.method) {
        tracing::info!(?loss, "answer lost after processing (fault)");
        return lost_answer(loss, &connection);
    }
    let answer = Answer {
        transport: route.transport,
        application: outcome.application.as_deref(),
        processing: outcome.processing,
    };
    match &outcome.result {
        Ok(success) => {
            let time = time_object(start, finish, outcome.processing, outcome.operating);
            envelope::rest_response(200, &envelope::success_body(success, time), &answer)
        }
        Err(e) => {
            tracing::debug!(code = e.code, "REST error");
            envelope::rest_response(e.status, &e.body(), &answer)
        }
    }
}

/// When the portal was renamed since this listener was bound as `listener`: 302 to the same
/// path on the new host, as every request there gets (§5.1).
pub(crate) fn moved(p: &PortalState, listener: &str, uri: &Uri) -> Option<Response> {
    if p.domain == listener {
        return None;
    }
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("{}://{}{path}", p.scheme(), p.domain);
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Some(resp)
}

/// What the client gets instead of the answer: a proxy's error page, or nothing at all.
fn lost_answer(loss: AnswerLoss, connection: &Connection) -> Response {
    let status = match loss {
        AnswerLoss::ServerError(status) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        AnswerLoss::DropConnection => {
            connection.drop_unanswered();
            // Never written: the first write fails and hyper closes the connection.
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    // nginx's own page for an upstream failure: HTML, not a REST envelope.
    let title = format!("{} {}", status.as_str(), status.canonical_reason().unwrap_or(""));
    let title = title.trim_end();
    let page = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
         <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut resp = (status, page).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// `/rest/app.info` on the OAuth server: the same answer as the portal, for the token's portal.
async fn oauth_request(
    AxState(shared): AxState<Arc<Shared>>,
    axum::extract::Path(method): axum::extract::Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = SystemTime::now();
    let name = method.strip_suffix(".json").unwrap_or(&method).to_lowercase();
    if name != "app.info" {
        return envelope::json_response(404, &RestError::method_not_found().body());
    }
    let mut params = request::params(&uri, &headers, &body);
    let state = shared.lock();
    let credential = auth::take_credential(&headers, &mut params);
    let portal = match &credential {
        Credential::Token(t) => match state.tokens.check(t) {
            crate::oauth::TokenCheck::Valid(t) => Some(t.portal),
            _ => None,
        },
        _ => None,
    };
    let result = match portal {
        Some(portal) => auth::authenticate(&state, portal, &credential)
            .and_then(|caller| methods::app_info(&state, portal, &caller)),
        None => auth::authenticate(&state, usize::MAX, &credential).map(|_| Param::Null),
    };
    match result {
        Ok(info) => {
            let time = time_object(start, SystemTime::now(), std::time::Duration::ZERO, None);
            envelope::json_response(200, &envelope::success_body(&Success::from(info), time))
        }
        Err(e) => envelope::json_response(e.status, &e.body()),
    }
}
