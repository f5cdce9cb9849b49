//! The fake finance API: its answers, its credentials, and that each fault works as documented.

use std::time::{Duration, Instant};

use fakes::finance::{Behaviour, Company, Credentials, FinanceApi, Malformed, SEEDED_COMPANIES};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::support::{answer, client};

/// One answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: impl reqwest::header::AsHeaderName) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

async fn start(seed: u64) -> FinanceApi {
    FinanceApi::start(seed).await.expect("the fake starts")
}

/// `GET` with the API's own token.
async fn get(api: &FinanceApi, company: impl std::fmt::Display) -> Answer {
    let request = client().get(api.credit_url(company)).bearer_auth(api.token());
    send(request).await
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = answer(request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.expect("the body is read");
    Answer { status, headers, body }
}

/// Polls until `check` holds for an answer about company 1, or fails after `within`.
async fn poll_until(api: &FinanceApi, within: Duration, check: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = Instant::now() + within;
    loop {
        let answer = get(api, 1).await;
        if check(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "still {} after {within:?}", answer.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_known_company_answers_its_limit_and_debt() {
    let api = start(1).await;
    api.set_company(42, Company::new(50_000.0, 12_000.0));
    let answer = get(&api, 42).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header(CONTENT_TYPE).starts_with("application/json"));
    assert_eq!(
        answer.json(),
        json!({"company_id": 42, "credit_limit": 50000.0, "current_debt": 12000.0, "currency": "RUB"})
    );
    assert_eq!(api.company(42), Some((50_000.0, 12_000.0)));
    let counts = api.counts();
    assert_eq!((counts.requests, counts.ok, counts.failures()), (1, 1, 0));
}

#[tokio::test]
async fn the_book_is_seeded_deterministically() {
    let (a, b, c) = (start(7).await, start(7).await, start(8).await);
    assert_eq!(a.token(), b.token());
    assert_ne!(a.token(), c.token());
    let book =
        |api: &FinanceApi| (1..=SEEDED_COMPANIES).map(|id| api.company(id)).collect::<Vec<_>>();
    assert_eq!(book(&a), book(&b));
    assert_ne!(book(&a), book(&c));
    assert!(book(&a).iter().all(Option::is_some));
    assert_eq!(a.company(SEEDED_COMPANIES + 1), None);
    // What the API answers is what `company` says.
    let (limit, debt) = a.company(17).expect("seeded");
    let answer = get(&a, 17).await.json();
    assert_eq!(
        (answer["credit_limit"].as_f64(), answer["current_debt"].as_f64()),
        (Some(limit), Some(debt))
    );
}

#[tokio::test]
async fn an_unknown_company_is_a_404_with_a_json_error() {
    let api = start(1).await;
    api.remove_company(5);
    for id in ["5", "1000001", "abc"] {
        let answer = get(&api, id).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(
            answer.json(),
            json!({"error": "not_found", "message": format!("company {id} not found")})
        );
    }
    let answer = send(client().get(format!("{}/api/v2/whatever", api.url()))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["error"], "not_found");
    assert_eq!(api.counts().not_found, 4);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_a_401_with_a_json_error() {
    let api = start(1).await;
    let wrong = send(client().get(api.credit_url(1)).bearer_auth("not-the-token")).await;
    let missing = send(client().get(api.credit_url(1))).await;
    for answer in [wrong, missing] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(answer.header(WWW_AUTHENTICATE).starts_with("Bearer"));
        assert_eq!(answer.json()["error"], "unauthorized");
    }
    assert_eq!(api.counts().unauthorized, 2);
}

#[tokio::test]
async fn basic_header_and_no_credentials_can_be_required_instead() {
    let api = start(1).await;
    api.set_credentials(Credentials::Basic { username: "b24".into(), password: "s3cret".into() });
    assert_eq!(
        send(client().get(api.credit_url(1)).basic_auth("b24", Some("s3cret"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(client().get(api.credit_url(1)).basic_auth("b24", Some("wrong"))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&api, 1).await.status,
        StatusCode::UNAUTHORIZED,
        "the bearer token no longer works"
    );

    api.set_credentials(Credentials::Header { name: "X-Api-Key".into(), value: "k-1".into() });
    assert_eq!(
        send(client().get(api.credit_url(1)).header("X-Api-Key", "k-1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(client().get(api.credit_url(1)).header("X-Api-Key", "k-2")).await.status,
        StatusCode::UNAUTHORIZED
    );

    api.set_credentials(Credentials::None);
    assert_eq!(send(client().get(api.credit_url(1))).await.status, StatusCode::OK);
    assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
}

#[tokio::test]
async fn down_answers_503_until_it_is_up_again() {
    let api = start(1).await;
    api.set(Behaviour { down: true, ..Behaviour::default() });
    let answer = get(&api, 1).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["error"], "unavailable");
    api.update(|b| b.down = false);
    assert_eq!(get(&api, 1).await.status, StatusCode::OK);
    let counts = api.counts();
    assert_eq!((counts.requests, counts.unavailable, counts.failures()), (2, 1, 1));
}

#[tokio::test]
async fn fail_next_fails_exactly_that_many_requests() {
    let api = start(1).await;
    api.set(Behaviour { fail_next: 3, ..Behaviour::default() });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&api, 1).await.status.as_u16());
    }
    assert_eq!(statuses, [503, 503, 503, 200, 200]);
    assert_eq!(api.behaviour().fail_next, 0);
}

#[tokio::test]
async fn failure_rate_fails_about_that_share_and_repeats_with_the_seed() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let api = start(seed).await;
        api.set(Behaviour { failure_rate: 0.25, ..Behaviour::default() });
        let mut statuses = Vec::new();
        for _ in 0..200 {
            statuses.push(get(&api, 1).await.status.as_u16());
        }
        assert_eq!(api.counts().unavailable, statuses.iter().filter(|&&s| s == 503).count() as u64);
        statuses
    }
    let first = statuses(11).await;
    let failed = first.iter().filter(|&&s| s == 503).count();
    assert!((25..=75).contains(&failed), "{failed} of 200 failed at a rate of 0.25");
    assert!(first.iter().all(|&s| s == 200 || s == 503));
    assert_eq!(statuses(11).await, first, "the same seed fails the same requests");
}

#[tokio::test]
async fn a_maintenance_window_is_unavailable_only_inside_it() {
    let api = start(1).await;
    api.set(
        Behaviour::healthy().down_between(Duration::from_millis(300), Duration::from_millis(700)),
    );
    assert_eq!(get(&api, 1).await.status, StatusCode::OK, "before the window");
    let inside =
        poll_until(&api, Duration::from_secs(5), |a| a.status == StatusCode::SERVICE_UNAVAILABLE)
            .await;
    assert_eq!(inside.json()["message"], "scheduled maintenance");
    assert!(api.elapsed() >= Duration::from_millis(300));
    poll_until(&api, Duration::from_secs(5), |a| a.status == StatusCode::OK).await;
    assert!(api.elapsed() >= Duration::from_millis(700), "up again only after the window");
}

#[tokio::test]
async fn a_window_from_the_start_is_down_at_once() {
    let api = start(1).await;
    api.set(Behaviour::healthy().down_between(Duration::ZERO, Duration::from_secs(3600)));
    assert_eq!(get(&api, 1).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let api = start(1).await;
    api.set(Behaviour { latency: Duration::from_millis(300), ..Behaviour::default() });
    let started = Instant::now();
    assert_eq!(get(&api, 1).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn over_the_rate_limit_answers_429_with_retry_after() {
    let api = start(1).await;
    api.set(Behaviour { rate_limit: Some(3), ..Behaviour::default() });
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get(&api, 1).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let limited = &answers[3];
    assert_eq!(limited.header(RETRY_AFTER), "1");
    assert_eq!(limited.json()["error"], "rate_limited");
    assert_eq!(api.counts().rate_limited, 1);
    // The next second has a fresh budget.
    poll_until(&api, Duration::from_secs(3), |a| a.status == StatusCode::OK).await;
}

#[tokio::test]
async fn malformed_answers_are_200s_in_each_documented_shape() {
    let api = start(1).await;
    api.set_company(42, Company::new(50_000.0, 12_000.0));

    api.update(|b| b.malformed = Some(Malformed::Truncated));
    let truncated = get(&api, 42).await;
    assert_eq!(truncated.status, StatusCode::OK);
    assert!(truncated.header(CONTENT_TYPE).starts_with("application/json"));
    assert!(serde_json::from_str::<Value>(&truncated.body).is_err(), "{}", truncated.body);
    assert!(truncated.body.starts_with("{\"company_id\":42"), "{}", truncated.body);

    api.update(|b| b.malformed = Some(Malformed::NotJson));
    let html = get(&api, 42).await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.header(CONTENT_TYPE).starts_with("text/html"));
    assert!(html.body.contains("maintenance"));

    api.update(|b| b.malformed = Some(Malformed::MissingField("current_debt".into())));
    assert_eq!(
        get(&api, 42).await.json(),
        json!({"company_id": 42, "credit_limit": 50000.0, "currency": "RUB"})
    );

    api.update(|b| b.malformed = Some(Malformed::NonNumeric("credit_limit".into())));
    assert_eq!(get(&api, 42).await.json()["credit_limit"], "n/a");

    let counts = api.counts();
    assert_eq!((counts.malformed, counts.ok), (4, 0));
}

#[tokio::test]
async fn requests_are_recorded_with_their_idempotency_key() {
    let api = start(1).await;
    send(
        client().get(api.credit_url(3)).bearer_auth(api.token()).header("Idempotency-Key", "job-9"),
    )
    .await;
    get(&api, "x").await;
    let received = api.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].path, "/api/v1/companies/3/credit");
    assert_eq!(received[0].idempotency_key.as_deref(), Some("job-9"));
    assert_eq!(received[0].status, 200);
    assert_eq!((received[1].idempotency_key.as_deref(), received[1].status), (None, 404));
}

#[tokio::test]
async fn the_api_stops_when_dropped() {
    let api = start(1).await;
    let url = api.credit_url(1);
    drop(api);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A fresh client each time: no pooled connection that outlives the server.
        match client().get(&url).send().await {
            Err(error) if error.is_connect() => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "still answering after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
