//! The console's listener as operators and Prometheus meet it, over real HTTP to a `b24act
//! serve` process: credentials (bearer or basic), the read-only console without a token, the
//! cross-site checks, `check-config` refusing an exposed console, and `/metrics` after real
//! calls through the emulator, parsed line by line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use b24_emulator::{PortalSpec, WorkflowSpec, WorkflowStatus};
use reqwest::StatusCode;
use store::{JobState, StoreKey, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{CLIENT_ID, CODE, KEY, Options, ServeSite, Server};

/// A console token long enough for the configuration.
pub(crate) const TOKEN: &str = "console-token-0123456789";

/// Starts `b24act serve` on `site` with its console on a free loopback port and `token` (none:
/// read-only); returns the process and the console's address.
pub(crate) fn serve_with_console(site: &ServeSite, token: Option<&str>) -> (Server, SocketAddr) {
    // A port just released can be handed out again: the site's own, picked the same way, is
    // refused as the console's (serve would exit on it).
    let console = std::iter::repeat_with(|| {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    })
    .find(|console| *console != site.listen)
    .unwrap();
    let mut config: toml::Table = site.config_text.parse().unwrap();
    sandbox::set(&mut config, "console.listen", console.to_string());
    if let Some(token) = token {
        sandbox::set(&mut config, "console.token", token);
    }
    std::fs::write(&site.config, config.to_string()).unwrap();
    (Server::start(&site.config), console)
}

fn metrics_url(console: SocketAddr) -> String {
    format!("http://{console}{}", host::routes::METRICS)
}

/// The headers every console answer carries.
fn assert_security_headers(response: &reqwest::Response) {
    let header = |name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let policy = header("content-security-policy");
    assert!(
        policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "same-origin");
    assert_eq!(header("cache-control"), "no-store");
}

#[tokio::test]
async fn the_console_wants_its_token_as_a_bearer_token_or_a_basic_password() {
    let site = ServeSite::new("b24act-console-auth", 1, &Options::default()).await;
    let (_server, console) = serve_with_console(&site, Some(TOKEN));
    let client = reqwest::Client::new();
    let url = metrics_url(console);

    let refused = [
        client.get(&url),
        client.get(&url).bearer_auth("console-token-012345678"),
        client.get(&url).bearer_auth(format!("{TOKEN}x")),
        client.get(&url).basic_auth("anna", Some("wrong")),
        client.get(&url).basic_auth(TOKEN, None::<&str>),
    ];
    for request in refused {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer.headers()["www-authenticate"].to_str().unwrap(),
            "Basic realm=\"b24act console\", charset=\"UTF-8\"",
            "a browser prompts"
        );
        assert_security_headers(&answer);
        assert!(!answer.text().await.unwrap().contains(TOKEN));
    }
    for request in
        [client.get(&url).bearer_auth(TOKEN), client.get(&url).basic_auth("anna", Some(TOKEN))]
    {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_security_headers(&answer);
        assert!(answer.text().await.unwrap().contains("# TYPE b24act_jobs gauge"));
    }
}

#[tokio::test]
async fn without_a_token_the_console_reads_on_loopback_and_changes_nothing() {
    let site = ServeSite::new("b24act-console-read-only", 1, &Options::default()).await;
    let (_server, console) = serve_with_console(&site, None);
    let client = reqwest::Client::new();

    let read = client.get(metrics_url(console)).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK, "readable from loopback without credentials");
    assert_security_headers(&read);

    let change = client.post(metrics_url(console)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(change.status(), StatusCode::FORBIDDEN);
    assert_security_headers(&change);
    let message = change.text().await.unwrap();
    assert!(message.contains("read-only") && message.contains("console.token"), "{message}");

    // A page on another domain that resolves to 127.0.0.1 (DNS rebinding) gets nothing.
    let rebound = raw_status(console, "GET /metrics HTTP/1.1\r\nHost: evil.example.com\r\n").await;
    assert_eq!(rebound, 403);
    assert_eq!(raw_status(console, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n").await, 200);
}

/// The status code of a request written by hand (`head` without the closing blank line).
async fn raw_status(addr: SocketAddr, head: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"))
}

#[tokio::test]
async fn a_change_sent_from_another_site_is_refused() {
    let site = ServeSite::new("b24act-console-csrf", 1, &Options::default()).await;
    let (_server, console) = serve_with_console(&site, Some(TOKEN));
    let client = reqwest::Client::new();
    let post = || client.post(metrics_url(console)).bearer_auth(TOKEN);

    let foreign = post().header("origin", "http://evil.example.com").send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let message = foreign.text().await.unwrap();
    assert!(message.contains("Origin `http://evil.example.com` is not this console"), "{message}");
    let cross = post().header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);

    // The same request from the console's own origin passes the guard and reaches the router,
    // which has no POST on /metrics.
    let own = post()
        .header("origin", format!("http://{console}"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn check_config_refuses_a_console_beyond_loopback_without_a_token() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/b24act.toml");
    let check = |env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_b24act"))
            .args(["check-config", "--config", example])
            .env("B24ACT__STORE__ENCRYPTION_KEY", KEY)
            .env_remove("B24ACT__CONSOLE__TOKEN")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let exposed = ("B24ACT__CONSOLE__LISTEN", "0.0.0.0:8081");
    let refused = check(&[exposed]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("console.listen: `0.0.0.0:8081` is beyond loopback")
            && stderr.contains("set console.token (or B24ACT__CONSOLE__TOKEN)"),
        "names the key and what to do: {stderr}"
    );
    let with_token = check(&[exposed, ("B24ACT__CONSOLE__TOKEN", TOKEN)]);
    assert!(with_token.status.success(), "{}", String::from_utf8_lossy(&with_token.stderr));
}

#[tokio::test]
async fn metrics_scrape_cleanly_and_count_what_real_calls_did() {
    // Access tokens that expire before the results go back, so a refresh is counted too.
    let token_lifetime = Duration::from_secs(2);
    let portal = PortalSpec { access_token_lifetime: token_lifetime, ..Options::default().portal };
    let options = Options { portal, ..Options::default() };
    let site = ServeSite::new("b24act-console-metrics", 1, &options).await;
    let (_server, console) = serve_with_console(&site, Some(TOKEN));
    site.sandbox.install(CLIENT_ID, &[CODE], Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(token_lifetime + Duration::from_millis(200)).await;

    let workflows = 5;
    let mut ids = Vec::new();
    for company_id in 1..=workflows {
        let spec = WorkflowSpec {
            domain: site.sandbox.domain.clone(),
            code: CODE.into(),
            properties: serde_json::json!({ "company_id": company_id }),
            finish_after: None,
            ..WorkflowSpec::default()
        };
        ids.push(site.sandbox.emulator.start_workflow(spec).await.unwrap().workflow_id);
    }
    for id in &ids {
        let state = site
            .sandbox
            .emulator
            .wait_for_workflow(&site.sandbox.domain, id, Duration::from_secs(30), |s| {
                s.status != WorkflowStatus::Waiting
            })
            .await
            .unwrap();
        assert_eq!(state.status, WorkflowStatus::Closed, "{state:?}");
    }
    // A call for an action this host does not run: refused, nothing stored.
    let stray = reqwest::Client::new()
        .post(format!("http://{}{}", site.listen, host::routes::action_path("retired")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=retired")
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), StatusCode::NOT_FOUND);

    let store =
        store::Store::open(&site.store_url, StoreOptions::new(StoreKey::from_hex(KEY).unwrap()))
            .await
            .unwrap();
    let member_id = store.installations().await.unwrap().remove(0).portal.member_id;
    // The outbox records a delivery just after the portal took it: wait for the store to say so.
    let mut done = 0;
    for _ in 0..200 {
        done = store.state_counts().await.unwrap().get(JobState::Done);
        if done == workflows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(done, workflows, "every job is done");

    let scraped =
        reqwest::Client::new().get(metrics_url(console)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    let content_type = scraped.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = scraped.text().await.unwrap();
    let samples = parse_exposition(&text);
    let get = |name: &str, labels: &[(&str, &str)]| value_of(&samples, name, labels, &text);
    let calls = workflows as f64;

    assert_eq!(get("b24act_calls_total", &[("outcome", "accepted"), ("reason", "new")]), calls);
    assert_eq!(
        get("b24act_calls_total", &[("outcome", "refused"), ("reason", "unknown_action")]),
        1.0
    );
    assert_eq!(get("b24act_call_ack_seconds_count", &[]), calls);
    assert_eq!(get("b24act_call_ack_seconds_bucket", &[("le", "+Inf")]), calls);
    assert_eq!(get("b24act_attempts_total", &[("action", CODE), ("outcome", "ok")]), calls);
    assert_eq!(get("b24act_result_latency_seconds_count", &[]), calls);
    assert!(get("b24act_result_latency_seconds_sum", &[]) > 0.0, "{text}");
    let portal = [("portal", member_id.as_str())];
    assert!(get("b24act_limiter_wait_seconds_count", &portal) >= 1.0, "{text}");
    let refreshed = [("portal", member_id.as_str()), ("outcome", "ok")];
    assert!(get("b24act_token_refreshes_total", &refreshed) >= 1.0, "{text}");

    for count in store.job_counts().await.unwrap() {
        let labels = [
            ("state", count.state.as_str()),
            ("portal", count.member_id.as_str()),
            ("action", count.action_code.as_str()),
        ];
        assert_eq!(get("b24act_jobs", &labels), count.jobs as f64, "{labels:?}");
    }
    let in_gauge: f64 = samples.iter().filter(|s| s.name == "b24act_jobs").map(|s| s.value).sum();
    assert_eq!(in_gauge, calls, "the gauge holds every job once");
}

/// One sample of the text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus' text format strictly: every line is blank, a `# HELP` or `# TYPE`
/// comment, or a sample of a family whose `# TYPE` came before it.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name, rest) = (words.next(), words.next(), words.next());
            let name = name.unwrap_or_else(|| panic!("a comment without a name: {line}"));
            assert!(is_metric_name(name), "{line}");
            match (kind, rest) {
                (Some("HELP"), _) => {}
                (Some("TYPE"), Some(kind @ ("counter" | "gauge" | "histogram" | "summary"))) => {
                    typed.insert(name.to_owned(), kind.to_owned());
                }
                _ => panic!("not a HELP or TYPE line: {line}"),
            }
            continue;
        }
        let sample = parse_sample(line);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.name.strip_suffix(suffix)?;
                (typed.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&sample.name);
        assert!(typed.contains_key(family), "a sample before its # TYPE: {line}");
        samples.push(sample);
    }
    samples
}

/// `name{label="value",…} value`, with the format's escapes in label values.
fn parse_sample(line: &str) -> Sample {
    let bad = || -> ! { panic!("not a valid sample: {line}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        bad();
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inside.split_once("=\"").unwrap_or_else(|| bad());
            if !is_metric_name(label) || label.contains(':') {
                bad();
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => bad(),
                    },
                    Some((at, '"')) => break at,
                    Some((_, c)) => value.push(c),
                    None => bad(),
                }
            };
            labels.insert(label.to_owned(), value);
            inside = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
        }
    }
    let mut fields = rest.strip_prefix(' ').unwrap_or_else(|| bad()).split(' ');
    let value = match fields.next().unwrap_or_else(|| bad()) {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().unwrap_or_else(|_| bad()),
    };
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().unwrap_or_else(|_| bad());
    }
    if fields.next().is_some() {
        bad();
    }
    Sample { name: name.to_owned(), labels, value }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The sum of the samples named `name` that carry every one of `labels`; fails when none does.
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)], text: &str) -> f64 {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .collect();
    assert!(!matching.is_empty(), "no {name} with {labels:?} in:\n{text}");
    matching.iter().sum()
}

#[test]
fn the_parser_refuses_what_is_not_the_text_format() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\",y=\"\"} 3\n";
    let samples = parse_exposition(good);
    assert_eq!(samples[0].labels["x"], "q\"\n");
    assert_eq!(samples[0].value, 3.0);
    for bad in [
        "a_total 1\n",
        "# TYPE a_total counter\na_total{x=\"1} 1\n",
        "# TYPE a_total counter\na_total{x=1} 1\n",
        "# TYPE a_total counter\na_total one\n",
        "# TYPE a_total counter\n1a_total 1\n",
        "# TYPO a_total counter\n",
    ] {
        assert!(std::panic::catch_unwind(|| parse_exposition(bad)).is_err(), "{bad}");
    }
}
