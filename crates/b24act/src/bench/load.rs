//! The load generator: keep-alive HTTP/1.1 connections (hyper, one task each) posting activity
//! calls made from one real call body, either closed loop (the next call as soon as the last is
//! answered) or open loop (calls scheduled by time).
//!
//! In the open loop a call's latency counts from its scheduled moment whenever the connection
//! was still busy then (so a slow answer delays what follows and is charged for it: no
//! coordinated omission), and from the moment it was sent otherwise (so the timer's own
//! millisecond granularity is not charged to the server; it is reported as the generator's lag).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use b24::report::ErrorChain;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use phpform::Value;
use tokio::task::JoinSet;

use super::measure::micros;

/// What stands in a call body for its sequence number until a call is built.
const MARK: &str = "b24actbenchseq";

/// Calls built from a real one: the same portal, action, document and properties, each with its
/// own `workflow_id` and `event_token` (so each is a new job, never a duplicate).
pub struct Calls {
    /// The body cut at each place the sequence number goes.
    pieces: Vec<String>,
    path: Uri,
    next: AtomicU64,
}

impl Calls {
    /// From a body exactly as the portal sent it (PHP form encoding) to `/bitrix/actions/{code}`.
    pub fn from_body(body: &str, code: &str) -> anyhow::Result<Calls> {
        let mut form = phpform::decode(body.as_bytes(), &phpform::Limits::default())
            .context("decoding the template call")?;
        let text = |form: &phpform::Array, key: &str| -> anyhow::Result<String> {
            form.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("the template call has no `{key}`"))
        };
        let workflow_id = text(&form, "workflow_id")?;
        let token = text(&form, "event_token")?;
        // `workflow_id|activity_name|event_id.signature`: the new workflow id goes first.
        let (payload, signature) =
            token.rsplit_once('.').context("the template's event_token has no signature")?;
        let (_, activity_and_event) =
            payload.split_once('|').context("the template's event_token has no `|`")?;
        let new_workflow = format!("{workflow_id}-{MARK}");
        form.insert("workflow_id".into(), Value::Str(new_workflow.clone()));
        form.insert(
            "event_token".into(),
            Value::Str(format!("{new_workflow}|{activity_and_event}.{signature}")),
        );
        let encoded = phpform::encode(&form);
        let pieces: Vec<String> = encoded.split(MARK).map(str::to_owned).collect();
        ensure!(pieces.len() == 3, "the sequence mark should appear twice in the encoded call");
        let path: Uri = host::routes::action_path(code).parse().context("handler path")?;
        Ok(Calls { pieces, path, next: AtomicU64::new(0) })
    }

    /// The next call: a body no other call from this set has.
    pub fn next_body(&self) -> Bytes {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let length = self.pieces.iter().map(String::len).sum::<usize>() + 2 * sequence.len();
        let mut body = String::with_capacity(length);
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                body.push_str(&sequence);
            }
            body.push_str(piece);
        }
        Bytes::from(body)
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %ErrorChain(&error), "load connection ended");
            }
        });
        Ok(Conn { sender, host: HeaderValue::from_str(&addr.to_string())? })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &Uri,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = path.clone();
        request.headers_mut().insert(HOST, self.host.clone());
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Calls answered 200 (stored).
    pub accepted: u64,
    /// Calls answered anything else.
    pub refused: u64,
    /// Calls that got no answer (connection trouble).
    pub failed: u64,
    pub first_problem: Option<String>,
    /// Ack latency of every accepted call, µs.
    pub latencies_us: Vec<u64>,
    /// Open loop: how late the generator sent calls it was free to send on time, µs.
    pub lag_us: Vec<u64>,
    /// From the first call to the last answer.
    pub elapsed: Duration,
}

impl LoadResult {
    fn merge(&mut self, other: LoadResult) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.failed += other.failed;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
        self.latencies_us.extend(other.latencies_us);
        self.lag_us.extend(other.lag_us);
    }

    pub fn errors(&self) -> u64 {
        self.refused + self.failed
    }

    fn problem(&mut self, problem: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(problem);
        }
    }

    /// Records the answer to one call sent at `origin`.
    fn answered(&mut self, outcome: anyhow::Result<(StatusCode, Bytes)>, origin: Instant) -> bool {
        match outcome {
            Ok((StatusCode::OK, _)) => {
                self.accepted += 1;
                self.latencies_us.push(micros(origin.elapsed()));
                true
            }
            Ok((status, body)) => {
                self.refused += 1;
                self.problem(format!("{status}: {}", String::from_utf8_lossy(&body)));
                true
            }
            Err(error) => {
                self.failed += 1;
                self.problem(format!("{error:#}"));
                false
            }
        }
    }

    /// Sends one call on `conn` and records its answer against `origin`; after connection
    /// trouble, opens a fresh connection to `addr`. False when that fails too (the connection's
    /// task stops).
    async fn call(
        &mut self,
        conn: &mut Conn,
        addr: SocketAddr,
        path: &Uri,
        body: Bytes,
        origin: Instant,
    ) -> bool {
        let outcome = conn.send(Method::POST, path, body).await;
        if self.answered(outcome, origin) {
            return true;
        }
        match Conn::open(addr).await {
            Ok(fresh) => {
                *conn = fresh;
                true
            }
            Err(error) => {
                self.problem(format!("{error:#}"));
                false
            }
        }
    }
}

/// Where the load goes: `connections` connections posting `calls`, spread round-robin over the
/// hosts at `addrs` (connection `i` goes to `addrs[i % addrs.len()]`).
pub struct Target<'a> {
    pub addrs: &'a [SocketAddr],
    pub calls: &'a Arc<Calls>,
    pub connections: usize,
}

impl Target<'_> {
    /// Closed loop: the connections send calls back to back until `max_calls` were sent or
    /// `duration` passed.
    pub async fn closed_loop(
        &self,
        max_calls: u64,
        duration: Duration,
    ) -> anyhow::Result<LoadResult> {
        self.drive_all(move |mut conn, addr, calls, issued, started| async move {
            let deadline = started + duration;
            let mut seen = LoadResult::default();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_calls {
                let body = calls.next_body();
                let sent = Instant::now();
                if !seen.call(&mut conn, addr, &calls.path, body, sent).await {
                    break;
                }
            }
            seen
        })
        .await
    }

    /// Open loop: `total` calls at `rate` per second, spread over the connections.
    pub async fn open_loop(&self, rate: f64, total: u64) -> anyhow::Result<LoadResult> {
        self.drive_all(move |mut conn, addr, calls, issued, started| async move {
            let mut seen = LoadResult::default();
            loop {
                let index = issued.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let scheduled = started + Duration::from_secs_f64(index as f64 / rate);
                let free_at = Instant::now();
                let origin = if free_at > scheduled {
                    scheduled
                } else {
                    tokio::time::sleep_until(scheduled.into()).await;
                    let sent = Instant::now();
                    seen.lag_us.push(micros(sent - scheduled));
                    sent
                };
                let body = calls.next_body();
                if !seen.call(&mut conn, addr, &calls.path, body, origin).await {
                    break;
                }
            }
            seen
        })
        .await
    }

    /// Opens the connections, runs `drive` on each in its own task (given its host's address, the
    /// calls, the count of calls issued so far, shared by all, and when the run started) and
    /// merges what they saw, with the run's elapsed time.
    async fn drive_all<Drive, Driven>(&self, drive: Drive) -> anyhow::Result<LoadResult>
    where
        Drive: Fn(Conn, SocketAddr, Arc<Calls>, Arc<AtomicU64>, Instant) -> Driven,
        Driven: Future<Output = LoadResult> + Send + 'static,
    {
        ensure!(!self.addrs.is_empty(), "the load has no host to go to");
        let mut conns = Vec::with_capacity(self.connections);
        for addr in self.addrs.iter().copied().cycle().take(self.connections) {
            conns.push((Conn::open(addr).await?, addr));
        }
        let issued = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for (conn, addr) in conns {
            tasks.spawn(drive(conn, addr, self.calls.clone(), issued.clone(), started));
        }
        let mut result = LoadResult::default();
        while let Some(ended) = tasks.join_next().await {
            result.merge(ended.context("a load connection's task failed")?);
        }
        result.elapsed = started.elapsed();
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str =
        "workflow_id=A.1&code=x&event_token=A.1%7Cact%7Cev.sig&auth%5Bmember_id%5D=m";

    #[test]
    fn each_call_gets_its_own_workflow_and_event_token() {
        let calls = Calls::from_body(BODY, "x").unwrap();
        let limits = phpform::Limits::default();
        let first = phpform::decode(&calls.next_body(), &limits).unwrap();
        let second = phpform::decode(&calls.next_body(), &limits).unwrap();
        let get = |form: &phpform::Array, key: &str| form[key].as_str().unwrap().to_owned();
        assert_eq!(get(&first, "workflow_id"), "A.1-0");
        assert_eq!(get(&first, "event_token"), "A.1-0|act|ev.sig");
        assert_eq!(get(&second, "event_token"), "A.1-1|act|ev.sig");
        let auth = second["auth"].as_array().unwrap();
        assert_eq!(auth["member_id"].as_str(), Some("m"), "nested values are kept");
    }
}
