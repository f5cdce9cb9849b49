//! Content above `simple_upload_max_bytes` goes through a Graph upload session: `POST
//! …:/createUploadSession` with the token (the conflict behaviour in `item`), then the content in
//! fragments of `chunk_bytes` (multiples of 320 KiB) `PUT` to the session's `uploadUrl` with
//! `Content-Range: bytes {start}-{end}/{total}`. Intermediate fragments are answered 202 with
//! `nextExpectedRanges`; the last one 200 or 201 with the driveItem.
//!
//! The `uploadUrl` is pre-authenticated and may be on another host (the tenant's SharePoint
//! host): the bearer token is never sent there, as Graph's documentation says (a request that
//! carries it may be refused with 401), and the URL must be https — plain http only to a
//! loopback address, for tests. It is itself a credential: it never goes into a reason or a log.
//!
//! A fragment that fails in a way another try may fix (a connection failure, 5xx, 429, or a 416
//! when Graph already has more than we thought) is not simply sent again: the session is asked
//! (`GET` on the `uploadUrl`) which bytes it still expects, and the upload goes on from there, at
//! most [`MAX_RESUMES`] times per attempt, each after the `Retry-After` asked for (or
//! [`RESUME_PAUSE`]) if that still fits in the attempt. A session that answers 404 is gone; the
//! host's next attempt starts a new one (sessions are not kept across attempts; Graph lets an
//! abandoned one expire).

use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use serde_json::Value;
use tokio::time::Instant;
use url::{Host, Url};

use super::{
    GraphCall, MAX_ANSWER_BYTES, SharePointConnector, SharePointError, answer_error, http_error,
    json_answer, remaining,
};
use crate::http::Answer;

/// How many times one attempt asks the session where to go on after a failed fragment.
pub const MAX_RESUMES: u32 = 3;

/// The wait before asking, when the failure named none.
pub const RESUME_PAUSE: Duration = Duration::from_millis(200);

const SERVICE: &str = "upload session";

/// What the session expects next: from `start`, up to `end` (inclusive) if it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    start: usize,
    end: Option<usize>,
}

/// A fragment's answer.
enum Fragment {
    /// 200 or 201: the file is stored.
    Stored(StatusCode, Value),
    /// 202: more is expected.
    More(Expected),
}

impl SharePointConnector {
    /// Uploads `content` to the item at `names` through an upload session; the status and
    /// driveItem of the last fragment, and `, through an upload session in N fragments` for the
    /// log.
    pub(super) async fn session_upload(
        &self,
        names: &[String],
        content: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(StatusCode, Value, String), SharePointError> {
        let (_, session) =
            self.with_token(GraphCall::CreateSession, names, deadline, timeout).await?;
        let url = upload_url(&session)?;
        let total = content.len();
        // Each fragment answered 202 must move the session on; a resume may cost a fragment sent
        // again and one cut short where the session said it stands.
        let most = total.div_ceil(self.chunk_bytes) + 2 * MAX_RESUMES as usize;
        let mut expected = Expected { start: 0, end: None };
        let mut resumes = 0;
        let mut sent = 0;
        while sent < most {
            let end = (expected.start + self.chunk_bytes)
                .min(total)
                .min(expected.end.map_or(total, |end| end + 1));
            sent += 1;
            match self.put_fragment(&url, content, expected.start, end, deadline, timeout).await {
                Ok(Fragment::Stored(status, item)) => {
                    return Ok((
                        status,
                        item,
                        format!(", through an upload session in {sent} fragments"),
                    ));
                }
                Ok(Fragment::More(next)) if next.start > expected.start && next.start < total => {
                    expected = next;
                }
                Ok(Fragment::More(next)) => {
                    return Err(malformed(format!(
                        "after bytes {}-{} of {total} it expects {} next",
                        expected.start,
                        end - 1,
                        next.start
                    )));
                }
                Err(error) if resumes < MAX_RESUMES && resumable(&error) => {
                    let pause = error.retry().flatten().unwrap_or(RESUME_PAUSE);
                    if Instant::now() + pause >= deadline {
                        return Err(error);
                    }
                    resumes += 1;
                    tracing::debug!(%error, resumes, "a fragment failed; asking the session where to go on");
                    tokio::time::sleep(pause).await;
                    expected = self.session_state(&url, total, deadline, timeout).await?;
                }
                Err(error) => return Err(error),
            }
        }
        Err(malformed(format!("{sent} fragments did not finish {total} bytes")))
    }

    /// `PUT`s `content[start..end]` to the session, without the token.
    async fn put_fragment(
        &self,
        url: &Url,
        content: &[u8],
        start: usize,
        end: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Fragment, SharePointError> {
        let range = format!("bytes {start}-{}/{}", end - 1, content.len());
        let request = self
            .client
            .put(url.clone())
            .header(CONTENT_RANGE, range)
            .body(content[start..end].to_vec())
            .timeout(remaining(deadline));
        let answer = fetch(request, timeout).await?;
        match answer.status {
            StatusCode::OK | StatusCode::CREATED => {
                let item = json_answer(SERVICE, "a driveItem", &answer.bytes)?;
                Ok(Fragment::Stored(answer.status, item))
            }
            StatusCode::ACCEPTED => {
                let state = json_answer(SERVICE, "an upload session's state", &answer.bytes)?;
                expected(&state, content.len()).map(Fragment::More)
            }
            _ => Err(malformed(format!("a fragment was answered {}", answer.status))),
        }
    }

    /// Asks the session which bytes it still expects.
    async fn session_state(
        &self,
        url: &Url,
        total: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Expected, SharePointError> {
        let request = self.client.get(url.clone()).timeout(remaining(deadline));
        let answer = fetch(request, timeout).await?;
        let state = json_answer(SERVICE, "an upload session's state", &answer.bytes)?;
        expected(&state, total)
    }
}

/// Sends a request to the session and reads its answer: a 2xx, or the error it stands for.
async fn fetch(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Answer, SharePointError> {
    let answer = Answer::fetch(request, SERVICE, MAX_ANSWER_BYTES, timeout)
        .await
        .map_err(|e| http_error(SERVICE, e))?;
    match answer.status {
        status if status.is_success() => Ok(answer),
        StatusCode::NOT_FOUND => Err(SharePointError::SessionGone),
        _ => Err(answer_error(SERVICE, &answer, None)),
    }
}

/// Worth asking the session where to go on: what another try may fix, and a 416 (the session has
/// other bytes than this fragment's start assumed).
fn resumable(error: &SharePointError) -> bool {
    match error {
        SharePointError::Graph { status: StatusCode::RANGE_NOT_SATISFIABLE, .. } => true,
        SharePointError::SessionGone => false,
        other => other.retry().is_some(),
    }
}

/// The first of `nextExpectedRanges` (`"{start}-"` or `"{start}-{end}"`), within `total`.
fn expected(state: &Value, total: usize) -> Result<Expected, SharePointError> {
    let range = state["nextExpectedRanges"]
        .as_array()
        .and_then(|ranges| ranges.first())
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no nextExpectedRanges".to_owned()))?;
    let parsed = range.split_once('-').and_then(|(start, end)| {
        let start = start.trim().parse::<usize>().ok()?;
        let end = match end.trim() {
            "" => None,
            end => Some(end.parse::<usize>().ok()?),
        };
        let fits = start < total && end.is_none_or(|end| start <= end && end < total);
        fits.then_some(Expected { start, end })
    });
    parsed.ok_or_else(|| {
        let shown: String = range.chars().take(40).collect();
        malformed(format!("it expects {shown:?} of {total} bytes"))
    })
}

/// The session's `uploadUrl`: https, or http to a loopback address.
fn upload_url(session: &Value) -> Result<Url, SharePointError> {
    let url = session["uploadUrl"]
        .as_str()
        .and_then(|text| Url::parse(text).ok())
        .ok_or_else(|| malformed("the session has no uploadUrl that parses".to_owned()))?;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(_)) | None => false,
    };
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        return Ok(url);
    }
    let host: String = url.host_str().unwrap_or_default().chars().take(100).collect();
    Err(malformed(format!(
        "its uploadUrl is {}://{host}/…, not https; nothing was sent there",
        url.scheme()
    )))
}

fn malformed(problem: String) -> SharePointError {
    SharePointError::Malformed { service: SERVICE, problem }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn upload_urls_are_https_or_loopback() {
        for good in [
            "https://contoso.sharepoint.com/sites/a/_api/v2.0/uploadSession?guid=1&tempauth=x",
            "http://127.0.0.1:4000/_api/v2.0/uploadSession?guid=1",
            "http://[::1]:4000/up",
        ] {
            assert!(upload_url(&json!({ "uploadUrl": good })).is_ok(), "{good}");
        }
        for bad in [
            json!({ "uploadUrl": "http://contoso.sharepoint.com/up?tempauth=secret" }),
            json!({ "uploadUrl": "http://localhost:4000/up" }),
            json!({ "uploadUrl": "ftp://127.0.0.1/up" }),
            json!({ "uploadUrl": "/relative" }),
            json!({ "uploadUrl": 7 }),
            json!({}),
        ] {
            let error = upload_url(&bad).expect_err("refused").to_string();
            assert!(!error.contains("tempauth") && !error.contains("secret"), "{error}");
        }
        let error = upload_url(&json!({ "uploadUrl": "http://evil.example/up" })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "upload session answered in an unexpected shape: its uploadUrl is http://evil.example/…, not https; nothing was sent there"
        );
    }

    #[test]
    fn expected_ranges_are_read_within_the_content() {
        let state = |range: &str| json!({ "nextExpectedRanges": [range, "900-"] });
        assert_eq!(expected(&state("26-"), 100).ok(), Some(Expected { start: 26, end: None }));
        assert_eq!(expected(&state("0-99"), 100).ok(), Some(Expected { start: 0, end: Some(99) }));
        for bad in ["100-", "5-4", "0-100", "-5", "x-", "", "12"] {
            assert!(expected(&state(bad), 100).is_err(), "{bad}");
        }
        assert!(expected(&json!({ "nextExpectedRanges": [] }), 100).is_err());
    }
}
