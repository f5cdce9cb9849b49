//! The HTTP edge: the accept loop, with a cap on connections and deadlines on every phase of a
//! connection's life, and the checks every protocol route shares (a form body, on time).
//!
//! Why not `axum::serve`: it has no connection cap, no body deadline and no idle timeout, so a
//! client that opens connections and trickles (or sends nothing) holds them forever.
//!
//! Why not hyper's own `header_read_timeout`: in hyper 1.x (`proto/h1/conn.rs`,
//! `poll_read_head`) its timer is armed whenever the connection starts waiting for a request
//! head — after every answer too (`State::idle` sets `notify_read` for exactly that) — so it
//! bounds the keep-alive wait and the header read together, with one duration. We want two
//! (an idle connection may wait longer than a started head may take), so each connection has a
//! small watchdog instead that knows which phase it is in:
//!
//! - **waiting** (new, or kept alive after an answer) until its first byte: `idle_timeout`;
//! - **reading a head** from that byte until the request reaches the router: `header_timeout`;
//! - **in a request**: the body must be complete within `body_timeout` (checked by
//!   [`body_deadline`], which answers 408), then the handler runs without a connection deadline.
//!
//! A connection past its phase's deadline is closed. `max_connections` permits are taken before
//! `accept`, so past the cap clients wait in the kernel's backlog, costing us nothing; shutdown
//! takes every permit back, i.e. waits until each connection has finished its request.
//!
//! The listen backlog is [`LISTEN_BACKLOG`], not the 128 of `TcpListener::bind`: a burst of
//! connections larger than the backlog, while the accept loop is short of CPU, overflows the
//! kernel's queues, and past the SYN queue Linux answers with syncookies — then a client whose
//! handshake ACK meets a full accept queue believes it is connected while this side has no
//! trace of it. A client that sends at once retransmits and gets in; the connection is only
//! late. 1024 (capped by `net.core.somaxconn`) is what nginx-sized servers use for bursts.
//!
//! Under pressure — every permit taken and a client connecting — one idle connection makes room
//! for it, as nginx reuses its idle keep-alive connections: a kept-alive one idle for
//! [`SHED_KEPT_ALIVE_AFTER`], or a new one that has sent nothing for [`SHED_SILENT_AFTER`], is
//! shut down gracefully (hyper closes it between requests) instead of at its idle timeout. The
//! loop then accepts that client without a permit and waits for one before serving it, so past
//! the cap at most one accepted connection waits. Otherwise a client keeping a pool of idle
//! connections (any HTTP client library does), or someone opening connections and sending
//! nothing, would hold the cap for `idle_timeout` while calls wait in the backlog — and Bitrix24
//! gives a call 10 s. Closing an idle connection is what `idle_timeout` does anyway; the grace
//! times keep a connection that has just answered, or just opened, from being taken.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use b24::incoming::quoted;
use b24::report::ErrorChain;
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;

/// The deadlines and the cap, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
}

impl Edge {
    pub fn new(server: &ServerConfig) -> Edge {
        Edge {
            header_timeout: server.header_timeout,
            body_timeout: server.body_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: server.max_connections,
            max_body_bytes: server.max_body_bytes,
        }
    }
}

/// How long a new connection may have sent nothing before it may make room for another (a
/// client sends its request as soon as it has connected).
pub const SHED_SILENT_AFTER: Duration = Duration::from_secs(1);

/// How long a kept-alive connection must have been idle before it may make room for another (a
/// client reusing it sends its next request at once).
pub const SHED_KEPT_ALIVE_AFTER: Duration = Duration::from_millis(250);

/// While a connection waits for a permit, how often an idle one is asked again (one that was
/// busy when asked may be idle a moment later).
const SHED_EVERY: Duration = Duration::from_millis(100);

/// Asks one idle connection to make room: the first sheddable connection to take the request
/// shuts down; the others, woken too, find it taken.
#[derive(Default)]
struct Pressure {
    wanted: AtomicBool,
    asked: Notify,
}

impl Pressure {
    fn ask_one(&self) {
        self.wanted.store(true, Ordering::SeqCst);
        self.asked.notify_waiters();
    }

    fn withdraw(&self) {
        self.wanted.store(false, Ordering::SeqCst);
    }

    /// Whether this connection is the one to go.
    fn take(&self) -> bool {
        self.wanted.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

/// The listen backlog of [`listen`]; Linux caps it at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (`TcpListener::bind` gives 128; see the module
/// documentation for why that is too few) and `SO_REUSEADDR`, so a restart can bind at once
/// while the old process's connections sit in `TIME_WAIT`.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `cancel`, then lets every open request finish (idle
/// connections are closed at once) and returns.
pub async fn serve(listener: TcpListener, router: Router, edge: Edge, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(edge.max_connections));
    let pressure = Arc::new(Pressure::default());
    let service = TowerToHyperService::new(router);
    loop {
        // Past the cap a client waits in the backlog; once it connects, it is accepted without
        // a permit and waits for one below, while an idle connection makes room.
        let reserved = match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => None,
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, a connection reset before accept: wait a little
                    // rather than spin, and go on.
                    tracing::warn!(error = %ErrorChain(&error), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match reserved {
            Some(permit) => permit,
            None => tokio::select! {
                _ = cancel.cancelled() => break,
                permit = make_room(&permits, &pressure) => match permit {
                    Some(permit) => permit,
                    None => break,
                },
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let cancel = cancel.clone();
        let pressure = pressure.clone();
        tokio::spawn(async move {
            serve_connection(stream, service, edge, cancel, &pressure).await;
            drop(permit);
        });
    }
    pressure.withdraw();
    drop(listener);
    // Every permit back means every connection has ended.
    let all = u32::try_from(edge.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// A permit for a client accepted past the cap: one idle connection is asked to make room,
/// again every [`SHED_EVERY`] until a permit is free. `None` once the semaphore is closed.
async fn make_room(permits: &Arc<Semaphore>, pressure: &Pressure) -> Option<OwnedSemaphorePermit> {
    let permit = loop {
        pressure.ask_one();
        tokio::select! {
            permit = permits.clone().acquire_owned() => break permit.ok(),
            _ = tokio::time::sleep(SHED_EVERY) => {}
        }
    };
    pressure.withdraw();
    permit
}

/// One connection, HTTP/1.1 with keep-alive, under its watchdog.
async fn serve_connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    edge: Edge,
    cancel: CancellationToken,
    pressure: &Pressure,
) {
    let watch = Arc::new(Watch {
        phase: Mutex::new(Phase::Waiting { since: Instant::now(), kept_alive: false }),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched { stream, watch: watch.clone() });
    let service = Tracked { inner: service, watch: watch.clone() };
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = watch.current().deadline(&edge);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = %ErrorChain(&error), "connection ended with an error");
                }
                return;
            }
            _ = cancel.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            // The phase moved on: its deadline is computed again.
            _ = watch.changed.notified() => {}
            // A client waits past the cap: an idle connection makes room (hyper closes it
            // between requests, or after the answer it is still writing).
            _ = pressure.asked.notified(), if !stopping => {
                if watch.current().may_be_shed() && pressure.take() {
                    tracing::debug!("closing an idle connection to make room for a waiting one");
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = sleep_until(deadline) => {
                // Both may be ready at once: close only if the phase's deadline still holds.
                let phase = watch.current();
                if phase.deadline(&edge).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(phase = phase.name(), "closing a connection past its deadline");
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A connection's phase, shared by its socket, its service and its watchdog.
struct Watch {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes (a stored permit if it is not waiting yet).
    changed: Notify,
}

impl Watch {
    fn current(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change`; tells the watchdog if the phase (and so its deadline) moved.
    fn update(&self, change: impl FnOnce(&mut Phase)) {
        let mut phase = self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = *phase;
        change(&mut phase);
        if before != *phase {
            self.changed.notify_one();
        }
    }
}

/// Where a connection is in its life; see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting {
        since: Instant,
        /// It has answered a request before (a kept-alive connection between requests).
        kept_alive: bool,
    },
    ReadingHead {
        since: Instant,
    },
    /// Requests in the router (HTTP/1 pipelining could make it more than one).
    InRequest {
        count: usize,
    },
}

impl Phase {
    /// When the connection is closed if it is still in this phase; `None` while a request is
    /// in the router (the body deadline and the handlers bound that).
    fn deadline(&self, edge: &Edge) -> Option<Instant> {
        match *self {
            Phase::Waiting { since, .. } => Some(since + edge.idle_timeout),
            Phase::ReadingHead { since } => Some(since + edge.header_timeout),
            Phase::InRequest { .. } => None,
        }
    }

    /// Whether it may make room for a waiting client: idle between requests for
    /// [`SHED_KEPT_ALIVE_AFTER`], or new and silent for [`SHED_SILENT_AFTER`].
    fn may_be_shed(&self) -> bool {
        match *self {
            Phase::Waiting { kept_alive: true, since } => since.elapsed() >= SHED_KEPT_ALIVE_AFTER,
            Phase::Waiting { kept_alive: false, since } => since.elapsed() >= SHED_SILENT_AFTER,
            _ => false,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Phase::Waiting { .. } => "idle",
            Phase::ReadingHead { .. } => "reading headers",
            Phase::InRequest { .. } => "in a request",
        }
    }

    fn bytes_arrived(&mut self) {
        if let Phase::Waiting { .. } = self {
            *self = Phase::ReadingHead { since: Instant::now() };
        }
    }

    fn request_started(&mut self) {
        *self = match *self {
            Phase::InRequest { count } => Phase::InRequest { count: count + 1 },
            _ => Phase::InRequest { count: 1 },
        };
    }

    fn request_ended(&mut self) {
        *self = match *self {
            Phase::InRequest { count } if count > 1 => Phase::InRequest { count: count - 1 },
            _ => Phase::Waiting { since: Instant::now(), kept_alive: true },
        };
    }
}

/// The socket, telling the watchdog when bytes arrive.
struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.update(Phase::bytes_arrived);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The router, telling the watchdog when a request enters and leaves it.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    watch: Arc<Watch>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.watch.update(Phase::request_started);
        let ended = RequestEnded(self.watch.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(ended);
            answer
        })
    }
}

/// Ends the request's phase when dropped, also when hyper drops the request half-way.
struct RequestEnded(Arc<Watch>);

impl Drop for RequestEnded {
    fn drop(&mut self) {
        self.0.update(Phase::request_ended);
    }
}

/// `router` with every body read whole before a handler runs, within `body_timeout` and at most
/// `max_body_bytes` ([`body_deadline`]): for each listener's routes.
pub fn bounded(router: Router, edge: Edge) -> Router {
    router
        .layer(DefaultBodyLimit::max(edge.max_body_bytes))
        .layer(middleware::from_fn_with_state(edge, body_deadline))
}

/// Middleware: reads the whole body within `body_timeout` (408 and close past it) and at most
/// `max_body_bytes` (413), so that handlers get a complete body and a trickling client holds
/// nothing for longer than the deadline.
pub async fn body_deadline(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {} bytes", edge.max_body_bytes),
        )
    };
    if declared.is_some_and(|length| length > edge.max_body_bytes as u64) {
        return too_large();
    }
    // Sized from the declared length for a call's usual few KiB; past that it grows as bytes
    // arrive, so a large declared length alone reserves nothing.
    let expected = declared.map_or(0, |length| (length as usize).min(16 * 1024));
    let read = collect(body, expected, edge.max_body_bytes);
    match tokio::time::timeout(edge.body_timeout, read).await {
        Ok(Ok(Some(bytes))) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Ok(None)) => too_large(),
        Ok(Err(_)) => closing(StatusCode::BAD_REQUEST, "the body could not be read".to_owned()),
        Err(_) => {
            tracing::warn!(timeout = ?edge.body_timeout, "closed a connection whose body arrived too slowly");
            closing(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(edge.body_timeout)
                ),
            )
        }
    }
}

/// The body's bytes, `None` past `limit`. Each chunk is copied out at once: a chunk hyper hands
/// over shares its whole read buffer (8 KiB), so keeping the chunks of a body trickled one
/// byte at a time (as `to_bytes` does) would pin 8 KiB per byte until the deadline.
async fn collect(
    mut body: Body,
    expected: usize,
    limit: usize,
) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut bytes = Vec::with_capacity(expected);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if bytes.len() + data.len() > limit {
                return Ok(None);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Some(bytes))
}

/// An answer after which the connection is closed (its body was not read to the end).
fn closing(status: StatusCode, message: String) -> Response {
    let mut response = (status, message).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The one content type the protocol routes take.
const FORM: &str = "application/x-www-form-urlencoded";

/// Middleware for the protocol routes: the body must be a form (`application/x-www-form-urlencoded`,
/// parameters such as `; charset=UTF-8` allowed); anything else is 415 naming what was sent.
pub async fn require_form(request: Request, next: Next) -> Response {
    let sent = request.headers().get(header::CONTENT_TYPE);
    let essence = sent
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().trim());
    if essence.is_some_and(|essence| essence.eq_ignore_ascii_case(FORM)) {
        return next.run(request).await;
    }
    let shown = match sent {
        None => "none".to_owned(),
        Some(value) => format!("`{}`", quoted(&String::from_utf8_lossy(value.as_bytes()))),
    };
    tracing::warn!(content_type = %shown, path = %quoted(request.uri().path()), "refused a body that is not a form");
    closing(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Type {shown} is not {FORM}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_move_with_bytes_and_requests() {
        let edge = Edge {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            max_connections: 1,
            max_body_bytes: 1,
        };
        let start = Instant::now();
        let mut phase = Phase::Waiting { since: start, kept_alive: false };
        assert_eq!(phase.deadline(&edge), Some(start + Duration::from_secs(3)));
        phase.bytes_arrived();
        let Phase::ReadingHead { since } = phase else { panic!("{phase:?}") };
        phase.bytes_arrived();
        assert_eq!(phase.deadline(&edge), Some(since + Duration::from_secs(1)), "not re-armed");
        phase.request_started();
        phase.bytes_arrived();
        phase.request_started();
        assert_eq!(phase.deadline(&edge), None);
        phase.request_ended();
        assert!(matches!(phase, Phase::InRequest { count: 1 }));
        phase.request_ended();
        assert!(matches!(phase, Phase::Waiting { .. }));
    }
}
