//! Fault injection: dropped, duplicated and retried calls, missing tokens, 5xx bursts, answers
//! lost after processing, and the 302 domain move.

use b24_emulator::{
    AnswerLoss, AnswerLost, Faults, ServerErrorBurst, StartedWorkflow, WorkflowStatus,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    HANDLER_PATH, TOKENLESS_AUTH_KEYS, World, auth_keys, err, event_send_batch, get_json,
};

/// A world with the robot `f` (a subscribing one) registered and `faults` set.
async fn robot_with(faults: Faults) -> World {
    let w = World::new().await;
    w.register("bizproc.robot.add", json!({"CODE": "f", "USE_SUBSCRIPTION": "Y"})).await;
    w.set_faults(faults);
    w
}

async fn start_robot(w: &World) -> StartedWorkflow {
    w.emu.start_workflow(w.workflow("f", json!({}))).await.unwrap()
}

#[tokio::test]
async fn dropped_calls_never_arrive_but_the_workflow_waits() {
    let w = robot_with(Faults { drop_calls: true, ..Default::default() }).await;
    let wf = start_robot(&w).await;
    let state = w.delivered(&wf.workflow_id).await;
    assert_eq!(state.deliveries[0].error.as_deref(), Some("dropped by fault injection"));
    assert!(w.echo.on(HANDLER_PATH).is_empty());
    assert_eq!(state.status, b24_emulator::WorkflowStatus::Waiting);
}

#[tokio::test]
async fn duplicated_calls_arrive_twice_with_the_same_body() {
    let w = robot_with(Faults { duplicate_calls: true, ..Default::default() }).await;
    start_robot(&w).await;
    let calls = w.echo.wait_for(HANDLER_PATH, 2).await;
    assert_eq!(calls[0].body, calls[1].body);
}

#[tokio::test]
async fn retry_mode_resends_while_the_handler_fails() {
    let w = robot_with(Faults { retry_non_2xx: 2, ..Default::default() }).await;
    w.echo.set_status(axum::http::StatusCode::SERVICE_UNAVAILABLE);
    start_robot(&w).await;
    w.echo.wait_for(HANDLER_PATH, 3).await;
}

#[tokio::test]
async fn token_omission_faults_strip_auth_fields() {
    let w = robot_with(Faults { omit_refresh_token: true, ..Default::default() }).await;
    start_robot(&w).await;
    let first = w.echo.wait_for(HANDLER_PATH, 1).await[0].json();
    assert!(first["auth"].get("refresh_token").is_none());
    assert!(first["auth"].get("access_token").is_some());

    w.set_faults(Faults { omit_tokens: true, ..Default::default() });
    start_robot(&w).await;
    let second = w.echo.wait_for(HANDLER_PATH, 2).await[1].json();
    assert_eq!(auth_keys(&second), TOKENLESS_AUTH_KEYS);
}

#[tokio::test]
async fn a_burst_of_server_errors_hits_the_next_requests_only() {
    let w = World::new().await;
    let burst = ServerErrorBurst { count: 2, status: 500 };
    w.set_faults(Faults { server_errors: Some(burst), ..Default::default() });
    let (status, body) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!((status, err(&body).0), (500, "INTERNAL_SERVER_ERROR"));
    let (status, _) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(status, 500);
    let (status, _) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(status, 200);
    let burst = ServerErrorBurst { count: 1, status: 503 };
    w.set_faults(Faults { server_errors: Some(burst), ..Default::default() });
    let (status, body) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!((status, err(&body).0), (503, "OVERLOAD_LIMIT"));
}

/// Sets `answer_lost` for the next `count` batches.
fn lose_batch_answers(w: &World, count: u32, how: AnswerLoss) {
    w.set_faults(Faults {
        answer_lost: Some(AnswerLost::batches(count, how)),
        ..Default::default()
    });
}

/// Every workflow completed by its one accepted send, logged inside a batch.
fn assert_completed_by_one_send(w: &World, workflows: &[StartedWorkflow]) {
    for wf in workflows {
        let state = w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap();
        assert_eq!((state.status, state.finished), (WorkflowStatus::Closed, true));
        assert_eq!(w.sends_of(&wf.event_token), [(true, 200, None)]);
    }
}

#[tokio::test]
async fn a_batch_whose_answer_is_lost_to_a_proxy_5xx_still_ran_every_command() {
    let w = World::new().await;
    let workflows = w.waiting_workflows(2).await;
    let tokens: Vec<&str> = workflows.iter().map(|wf| wf.event_token.as_str()).collect();
    lose_batch_answers(&w, 1, AnswerLoss::ServerError(502));
    let (status, _) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(status, 200, "other methods keep their answers and are not counted");

    let (status, body) = w.call("batch", event_send_batch(&tokens)).await;
    assert_eq!(status, 502);
    let page = body.as_str().expect("an HTML page, not JSON");
    assert!(page.contains("<title>502 Bad Gateway</title>"), "{page}");
    assert_completed_by_one_send(&w, &workflows);
    assert_eq!(w.batches(), [(200, None)], "the log keeps the batch's real outcome");

    // The client's retry of the same batch is answered: each send now finds no workflow.
    let (status, body) = w.call("batch", event_send_batch(&tokens)).await;
    assert_eq!(status, 200, "{body}");
    for key in ["e0", "e1"] {
        assert_eq!(body["result"]["result_error"][key]["error"], "404", "{body}");
    }
    for token in tokens {
        assert_eq!(w.sends_of(token).len(), 2);
    }
}

#[tokio::test]
async fn a_batch_whose_connection_is_dropped_gets_no_http_answer_at_all() {
    let w = World::new().await;
    let workflows = w.waiting_workflows(2).await;
    let tokens: Vec<&str> = workflows.iter().map(|wf| wf.event_token.as_str()).collect();
    lose_batch_answers(&w, 2, AnswerLoss::DropConnection);
    // A kept-alive connection first, so the drop also hits a reused one (reqwest must not
    // resend the batch on its own).
    let (status, _) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(status, 200);

    let mut batch = event_send_batch(&tokens);
    batch["auth"] = json!(w.inst.access_token);
    let url = format!("{}batch", w.portal.client_endpoint);
    let error = w.http.post(&url).json(&batch).send().await.unwrap_err();
    assert_eq!(error.status(), None, "{error:?}");
    assert!(error.is_request() && !error.is_connect(), "{error:?}");
    assert_completed_by_one_send(&w, &workflows);
    assert_eq!(w.batches(), [(200, None)]);

    // On the wire: the request is read in full, then the connection closes with no byte sent.
    let body = json!({"auth": w.inst.access_token, "cmd": {"a": "bizproc.robot.list"}}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(&w.portal.domain).await.unwrap();
    let request = format!(
        "POST /rest/batch HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        w.portal.domain,
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer));
    read.await.expect("the connection is closed").unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&answer), "");
    assert_eq!(w.batches(), [(200, None), (200, None)]);

    let (status, body) = w.call("batch", json!({"cmd": {"a": "bizproc.robot.list"}})).await;
    assert_eq!((status, &body["result"]["result"]["a"]), (200, &json!(["wait"])));
}

#[tokio::test]
async fn a_moved_portal_redirects_every_request_to_its_new_domain() {
    let w = World::new().await;
    let new_domain = w.emu.move_portal(&w.portal.domain).await.unwrap();
    assert_ne!(new_domain, w.portal.domain);
    let url =
        format!("{}bizproc.robot.list?auth={}", w.portal.client_endpoint, w.inst.access_token);
    let resp = w.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, url.replace(&w.portal.domain, &new_domain));
    let (status, body) = get_json(&w.http, &location).await;
    assert_eq!((status, &body["result"]), (200, &json!([])));
    assert_eq!(w.emu.portal(&w.portal.domain).unwrap().domain, new_domain);
}
