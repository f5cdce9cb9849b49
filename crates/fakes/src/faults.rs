//! Fault injection shared by the Telegram and Microsoft Graph fakes: the [`Behaviour`] a test
//! sets at run time (down, unavailable windows, the next requests failing, a rate limit, latency),
//! the verdict each request gets, and a listener that really closes while the fake is "refusing
//! connections". The pieces every fake uses (serving until stopped, stopping on drop, the
//! fixed-window rate limit, `Retry-After`, percent-decoding, poison-tolerant locking) live here
//! too.
//!
//! Time is Tokio's clock, measured from the fake's start, so a test with a paused clock controls
//! windows and latency too.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a fake is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// Every request answers this status (502, 503, 504) in the system's own shape for it.
    Status(u16),
    /// The port is closed: connecting fails with "connection refused".
    Refuse,
}

/// An unavailable window `[from, to)`, measured from the fake's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Duration,
    pub to: Duration,
    pub how: Down,
}

/// What one of the next requests gets instead of the normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// This status, in the system's own error shape for it (e.g. Telegram's 401
    /// `Unauthorized`, Graph's 401 `InvalidAuthenticationToken`, nginx's 502 page).
    Status(u16),
    /// 429, asking to come back after this long.
    RateLimited(Duration),
    /// This status (503, say) with `Retry-After` set to this long, in whole seconds.
    RetryAfter(u16, Duration),
    /// The normal answer, after this long.
    Slow(Duration),
}

/// A fixed-window rate limit: at most `requests` per `per`, counted from the first request in
/// the window; the rest answer 429 with the time left in the window (whole seconds, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

/// How a fake behaves; change it at any time with the fake's `set`/`update`. The default is
/// healthy, fast and unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Unavailable until changed.
    pub down: Option<Down>,
    /// Unavailable windows, measured from the fake's start.
    pub windows: Vec<Window>,
    /// The next requests fail this way, one each, in order (popped as requests arrive).
    pub fail_next: VecDeque<Failure>,
    /// Every answer waits this long first.
    pub latency: Duration,
    /// At most so many requests per window; the rest answer 429.
    pub rate_limit: Option<RateLimit>,
}

impl Behaviour {
    pub fn healthy() -> Behaviour {
        Behaviour::default()
    }

    /// Adds an unavailable window from `from` to `to` after the fake started.
    pub fn down_between(mut self, from: Duration, to: Duration, how: Down) -> Behaviour {
        self.windows.push(Window { from, to, how });
        self
    }

    /// Whether the port should be closed at `since_start`.
    fn refusing(&self, since_start: Duration) -> bool {
        self.down == Some(Down::Refuse)
            || self
                .windows
                .iter()
                .any(|w| w.how == Down::Refuse && (w.from..w.to).contains(&since_start))
    }

    /// The next window edge after `since_start`, when the listener may have to change.
    fn next_edge(&self, since_start: Duration) -> Option<Duration> {
        self.windows
            .iter()
            .filter(|w| w.how == Down::Refuse)
            .flat_map(|w| [w.from, w.to])
            .filter(|edge| *edge > since_start)
            .min()
    }
}

/// What a request gets, decided once under the behaviour's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Answer this status in the system's own shape, with `Retry-After` if given.
    Status(u16, Option<Duration>),
    /// 429 with this delay.
    RateLimited(Duration),
    /// The normal answer.
    Proceed,
}

/// A fixed rate-limit window, counted from the first request in it.
pub(crate) struct RateWindow {
    start: Instant,
    count: u32,
}

impl RateWindow {
    pub(crate) fn new(now: Instant) -> RateWindow {
        RateWindow { start: now, count: 0 }
    }

    /// Counts a request at `now` against at most `requests` per `per`; `Err` with the time left
    /// in the window when it is over the limit (and then it does not count).
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        requests: u32,
        per: Duration,
    ) -> Result<(), Duration> {
        let age = now.saturating_duration_since(self.start);
        if age >= per {
            *self = RateWindow::new(now);
        } else if self.count >= requests {
            return Err(per.saturating_sub(age));
        }
        self.count += 1;
        Ok(())
    }
}

/// A fake's behaviour and the state fault injection needs.
pub(crate) struct Faults {
    started: Instant,
    behaviour: Mutex<Behaviour>,
    window: Mutex<RateWindow>,
    /// Bumped on every change, so the listener's supervisor re-checks.
    changed: watch::Sender<u64>,
    /// The last change the supervisor has applied.
    applied: watch::Sender<u64>,
    /// Requests admitted or failed so far (refused connections never get here).
    requests: AtomicU64,
}

impl Faults {
    pub(crate) fn new() -> Faults {
        let now = Instant::now();
        Faults {
            started: now,
            behaviour: Mutex::new(Behaviour::default()),
            window: Mutex::new(RateWindow::new(now)),
            changed: watch::Sender::new(0),
            applied: watch::Sender::new(0),
            requests: AtomicU64::new(0),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn behaviour(&self) -> Behaviour {
        lock(&self.behaviour).clone()
    }

    /// Changes the behaviour and waits until the listener matches it (closed while refusing).
    pub(crate) async fn update(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut lock(&self.behaviour));
        let mut generation = 0;
        self.changed.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        let mut applied = self.applied.subscribe();
        // Fails only when the supervisor is gone (the fake stopped): nothing left to wait for.
        let _ = applied.wait_for(|done| *done >= generation).await;
    }

    /// Requests received so far, whatever their answer.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts the request, waits the latency, then `Err` with the answer for a request that
    /// fails, shaped by `failure` from the status and `Retry-After` (a rate limit is 429 with
    /// its delay).
    pub(crate) async fn admit(
        &self,
        failure: impl FnOnce(u16, Option<Duration>) -> axum::response::Response,
    ) -> Result<(), axum::response::Response> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.verdict().await {
            Verdict::Status(status, retry_after) => Err(failure(status, retry_after)),
            Verdict::RateLimited(after) => Err(failure(429, Some(after))),
            Verdict::Proceed => Ok(()),
        }
    }

    /// Waits the latency, then decides the request's fate.
    async fn verdict(&self) -> Verdict {
        let (latency, slow) = {
            let mut behaviour = lock(&self.behaviour);
            let slow = match behaviour.fail_next.front() {
                Some(Failure::Slow(delay)) => {
                    let delay = *delay;
                    behaviour.fail_next.pop_front();
                    Some(delay)
                }
                _ => None,
            };
            (behaviour.latency, slow)
        };
        let wait = latency + slow.unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let now = Instant::now();
        let since_start = now.saturating_duration_since(self.started);
        let mut behaviour = lock(&self.behaviour);
        if let Some(Down::Status(status)) = behaviour.down {
            return Verdict::Status(status, None);
        }
        if let Some(window) =
            behaviour.windows.iter().find(|w| (w.from..w.to).contains(&since_start))
        {
            // A refusing window closes the port; a request that got in just before still fails.
            let status = match window.how {
                Down::Status(status) => status,
                Down::Refuse => 503,
            };
            return Verdict::Status(status, None);
        }
        if slow.is_none() {
            match behaviour.fail_next.pop_front() {
                Some(Failure::Status(status)) => return Verdict::Status(status, None),
                Some(Failure::RetryAfter(status, after)) => {
                    return Verdict::Status(status, Some(after));
                }
                Some(Failure::RateLimited(after)) => return Verdict::RateLimited(after),
                Some(Failure::Slow(_)) | None => {}
            }
        }
        if let Some(limit) = behaviour.rate_limit
            && let Err(left) = lock(&self.window).admit(now, limit.requests, limit.per)
        {
            return Verdict::RateLimited(Duration::from_secs(whole_seconds(left)));
        }
        Verdict::Proceed
    }
}

/// Serves `router` on `addr`'s listener until `stop`, closing the port while the behaviour says
/// to refuse connections and opening it again (same port) afterwards.
fn serve(
    name: &'static str,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
    faults: Arc<Faults>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut listener = Some(listener);
        let mut serving: Option<CancellationToken> = None;
        let mut changed = faults.changed.subscribe();
        loop {
            let generation = *changed.borrow_and_update();
            let since_start = faults.elapsed();
            let behaviour = faults.behaviour();
            let refusing = behaviour.refusing(since_start);
            match (&serving, refusing) {
                (Some(running), true) => {
                    running.cancel();
                    serving = None;
                    wait_until_closed(addr).await;
                    tracing::debug!(name, %addr, "fake refuses connections");
                }
                (None, true) => {
                    // Changed to refusing before the first serve: close the port we hold.
                    if listener.take().is_some() {
                        tracing::debug!(name, %addr, "fake refuses connections");
                    }
                }
                (None, false) => {
                    let open = match listener.take() {
                        Some(open) => Ok(open),
                        None => tokio::net::TcpListener::bind(addr).await,
                    };
                    match open {
                        Ok(open) => {
                            let running = stop.child_token();
                            spawn_server(name, open, router.clone(), running.clone());
                            serving = Some(running);
                        }
                        Err(error) => {
                            tracing::error!(name, %addr, %error, "fake cannot listen again");
                        }
                    }
                }
                (Some(_), false) => {}
            }
            faults.applied.send_replace(generation);
            let edge = behaviour.next_edge(since_start);
            tokio::select! {
                () = stop.cancelled() => break,
                result = changed.changed() => if result.is_err() { break },
                () = sleep_until_edge(faults.started, edge) => {}
            }
        }
        if let Some(running) = serving {
            running.cancel();
        }
    });
}

/// Serves `router` on `listener` until `stop` is cancelled.
fn spawn_server(
    name: &'static str,
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(name, %error, "fake stopped");
        }
    });
}

/// A listener bound at `address`, and the address it got (the port, when `address` asked for
/// any).
pub(crate) async fn listen(
    address: impl tokio::net::ToSocketAddrs,
) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// A running fake: the address it listens on, the state its handlers share, and the token its
/// servers stop on, cancelled when this is dropped. Every fake's public handle holds one.
pub(crate) struct Served<S> {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<S>,
    stop: CancellationToken,
}

impl<S> Served<S> {
    /// Nothing served yet: [`spawn`](Served::spawn) or [`spawn_with_faults`](Served::spawn_with_faults)
    /// starts the servers.
    pub(crate) fn new(addr: SocketAddr, state: Arc<S>) -> Served<S> {
        Served { addr, state, stop: CancellationToken::new() }
    }

    /// Serves `router` on `listener` until this is dropped.
    pub(crate) fn spawn(
        &self,
        name: &'static str,
        listener: tokio::net::TcpListener,
        router: Router,
    ) {
        spawn_server(name, listener, router, self.stop.clone());
    }

    /// Serves `router` on `listener` (bound at `addr`) until this is dropped, closing the port
    /// while `faults` say to refuse connections (see [`serve`]).
    pub(crate) fn spawn_with_faults(
        &self,
        name: &'static str,
        listener: tokio::net::TcpListener,
        addr: SocketAddr,
        router: Router,
        faults: Arc<Faults>,
    ) {
        serve(name, listener, addr, router, faults, self.stop.clone());
    }
}

impl<S> std::fmt::Debug for Served<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl<S> Drop for Served<S> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits until connecting to `addr` is refused: axum drops the listener in its own task soon
/// after the shutdown signal, and a change to "refuse" is applied only once it has.
async fn wait_until_closed(addr: SocketAddr) {
    for _ in 0..1_000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tracing::warn!(%addr, "the fake's port is still open a second after closing it");
}

async fn sleep_until_edge(started: Instant, edge: Option<Duration>) {
    match edge {
        Some(edge) => tokio::time::sleep_until(started + edge).await,
        None => std::future::pending().await,
    }
}

/// Whole seconds for a `Retry-After` or `retry_after`, at least 1.
pub(crate) fn whole_seconds(after: Duration) -> u64 {
    after.as_secs_f64().ceil().max(1.0) as u64
}

/// Sets `Retry-After` to `after` in whole seconds (at least 1), if given.
pub(crate) fn set_retry_after(response: &mut axum::response::Response, after: Option<Duration>) {
    if let Some(after) = after {
        let value = axum::http::HeaderValue::from(whole_seconds(after));
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
    }
}

/// `%XX` decoded (RFC 3986, strict); `None` when an escape is broken or the result is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Locks, ignoring poisoning: a panicking test thread must not take the fake down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
