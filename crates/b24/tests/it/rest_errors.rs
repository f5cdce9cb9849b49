//! Every error class as the portal produces it: permanent refusals, retryable conditions,
//! and transport failures.

use std::time::{Duration, SystemTime};

use b24::rest::{ActivityDefinition, Error, ErrorClass, EventSend};
use b24::secret::AccessToken;
use b24_emulator::{Faults, PortalSpec, ServerErrorBurst};

use crate::support::{TestPortal, credit_check, eventually, webhook_builder};

fn assert_api(error: &Error, code: &str, class: ErrorClass) {
    assert_eq!(error.code(), Some(code), "{error:?}");
    assert_eq!(error.class(), class, "{error:?}");
}

#[tokio::test]
async fn validation_errors_are_permanent() {
    let t = TestPortal::start().await;
    let client = t.client();

    let bad_code = ActivityDefinition::new("no spaces allowed", &t.handler, "x");
    let error = client.activity_add(&bad_code).await.unwrap_err();
    assert_api(&error, "ERROR_ACTIVITY_VALIDATION_FAILURE", ErrorClass::Permanent);
    assert!(!error.is_retryable());

    let bad_handler = ActivityDefinition::new("ok_code", "http://localhost/h", "x");
    let error = client.activity_add(&bad_handler).await.unwrap_err();
    assert_api(&error, "ERROR_WRONG_HANDLER_URL", ErrorClass::Permanent);

    client.activity_add(&credit_check("twice", &t.handler)).await.unwrap();
    let error = client.robot_add(&credit_check("twice", &t.handler)).await.unwrap_err();
    assert_api(&error, "ERROR_ACTIVITY_ALREADY_INSTALLED", ErrorClass::Permanent);

    let error = client.activity_delete("never_added").await.unwrap_err();
    assert_api(&error, "ERROR_ACTIVITY_NOT_FOUND", ErrorClass::Permanent);
}

#[tokio::test]
async fn webhook_cannot_register_and_that_is_permanent() {
    let t = TestPortal::start().await;
    let error = t.webhook().activity_add(&credit_check("hooked", &t.handler)).await.unwrap_err();
    assert_api(&error, "ACCESS_DENIED", ErrorClass::Permanent);
    assert!(matches!(error, Error::Api { status: Some(403), .. }), "{error:?}");
}

#[tokio::test]
async fn forged_event_token_is_access_denied_and_permanent() {
    let t = TestPortal::start().await;
    let client = t.client();
    let wf = t.waiting_credit_check().await;

    // Same payload, signature flipped.
    let (payload, signature) = wf.event_token.rsplit_once('.').unwrap();
    let flipped: String = signature.chars().map(|c| if c == '0' { '1' } else { '0' }).collect();
    let forged = format!("{payload}.{flipped}");
    let error = client.event_send(&EventSend::new(forged)).await.unwrap_err();
    assert_api(&error, "ACCESS_DENIED", ErrorClass::Permanent);
    assert!(!t.is_closed(&wf.workflow_id));
}

#[tokio::test]
async fn event_send_after_the_workflow_closed_is_404_and_permanent() {
    let t = TestPortal::start().await;
    let client = t.client();
    let wf = t.waiting_credit_check().await;
    client.event_send(&EventSend::new(&wf.event_token)).await.unwrap();
    // The workflow runs on for a moment after the activity closes (another send is a no-op
    // then); once its instance is gone, the portal answers "404".
    eventually(Duration::from_secs(10), || t.workflow(&wf.workflow_id).finished.then_some(()))
        .await;

    let error = client.event_send(&EventSend::new(&wf.event_token)).await.unwrap_err();
    assert_api(&error, "404", ErrorClass::Permanent);
}

#[tokio::test]
async fn locked_workflow_423_is_retryable() {
    let spec = PortalSpec {
        unlimited: true,
        lock_window: Duration::from_secs(30),
        ..PortalSpec::default()
    };
    let t = TestPortal::start_with(spec).await;
    let client = t.client();
    let wf = t.waiting_credit_check().await;

    let error = client.event_send(&EventSend::new(&wf.event_token)).await.unwrap_err();
    assert_api(&error, "423", ErrorClass::Retryable);
    assert!(error.is_retryable());
    assert!(!t.is_closed(&wf.workflow_id));
}

#[tokio::test]
async fn operating_limit_429_is_retryable_with_the_reset_time() {
    let t = TestPortal::start().await;
    t.set_faults(Faults {
        operating_limit: Some(Duration::from_secs(1)),
        operating_cost: Some(Duration::from_secs(2)),
        ..Faults::default()
    });
    let client = t.client();

    // The first call is charged 2 s against a 1 s budget; the next one is refused.
    let first = client.activity_list().await.unwrap();
    assert!(first.time.is_some());
    let error = client.activity_list().await.unwrap_err();
    assert_api(&error, "OPERATION_TIME_LIMIT", ErrorClass::Retryable);
    assert!(matches!(error, Error::Api { status: Some(429), .. }), "{error:?}");
    let retry_at = error.retry_at().expect("429 carries operating_reset_at");
    let now = SystemTime::now();
    assert!(retry_at > now, "reset time {retry_at:?} is in the future");
    assert!(retry_at < now + Duration::from_secs(601), "within the ten-minute window");
}

#[tokio::test]
async fn server_error_burst_is_retryable_and_passes() {
    let t = TestPortal::start().await;
    let burst = ServerErrorBurst { count: 2, status: 500 };
    t.set_faults(Faults { server_errors: Some(burst), ..Faults::default() });
    let client = t.client();

    for _ in 0..2 {
        let error = client.app_info().await.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert!(
            matches!(
                error,
                Error::Api { status: Some(500), .. } | Error::UnexpectedAnswer { status: 500, .. }
            ),
            "{error:?}"
        );
    }
    client.app_info().await.unwrap();
}

#[tokio::test]
async fn overload_503_is_retryable() {
    let t = TestPortal::start().await;
    let burst = ServerErrorBurst { count: 1, status: 503 };
    t.set_faults(Faults { server_errors: Some(burst), ..Faults::default() });
    let error = t.client().app_info().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Retryable, "{error:?}");
}

#[tokio::test]
async fn unknown_method_is_permanent() {
    let t = TestPortal::start().await;
    let error = t.client().call("bizproc.no.such.method", &()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent, "{error:?}");
    assert!(matches!(error, Error::Api { status: Some(404), .. }), "{error:?}");
}

#[tokio::test]
async fn unknown_access_token_is_permanent() {
    let t = TestPortal::start().await;
    let mut tokens = t.tokens();
    tokens.access_token = AccessToken::new("forged".repeat(10));
    let error = t.oauth_with(tokens).build().unwrap().app_info().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent, "{error:?}");
    assert!(matches!(error, Error::Api { status: Some(401 | 403), .. }), "{error:?}");
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // A port held by a socket that is bound but not listening: connections to it are refused,
    // and no other test can grab the port meanwhile.
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = holder.local_addr().unwrap();
    let client = webhook_builder(&format!("http://{addr}/rest/1/secret/")).build().unwrap();
    let error = client.app_info().await.unwrap_err();
    match &error {
        Error::Transport { source, .. } => assert!(source.is_connect(), "{source:?}"),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    assert!(error.is_retryable());
    drop(holder);
}

#[tokio::test]
async fn a_portal_that_does_not_answer_times_out_and_is_retryable() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let client = webhook_builder(&format!("http://{addr}/rest/1/secret/"))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = client.app_info().await.unwrap_err();
    match &error {
        Error::Transport { source, .. } => assert!(source.is_timeout(), "{source:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(error.is_retryable());
    silent.abort();
}

/// A server on loopback that answers every request with `head` and then `body_bytes` spaces.
async fn endless_answer(head: &'static str, body_bytes: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: at most four requests, each answered once.
        for _ in 0..4 {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 1 << 20];
                let mut left = body_bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if socket.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    format!("http://{addr}/rest/1/secret/")
}

#[tokio::test]
async fn an_answer_larger_than_the_cap_is_not_read_to_its_end() {
    use b24::rest::MAX_ANSWER_BYTES;

    // No length announced: the client stops reading at the cap.
    let url = endless_answer(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        MAX_ANSWER_BYTES + (1 << 20),
    )
    .await;
    let error = webhook_builder(&url).build().unwrap().app_info().await.unwrap_err();
    assert!(matches!(error, Error::UnexpectedAnswer { status: 200, .. }), "{error:?}");
    assert!(error.to_string().contains("not read"), "{error}");
    assert_eq!(error.class(), ErrorClass::Permanent, "as an unreadable answer is");

    // A length over the cap, announced: refused before any of the body is read.
    let url = endless_answer(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n",
        1 << 20,
    )
    .await;
    let error = webhook_builder(&url).build().unwrap().app_info().await.unwrap_err();
    assert!(error.to_string().contains("not read"), "{error}");
}
