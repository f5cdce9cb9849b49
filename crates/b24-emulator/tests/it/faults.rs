//! Fault injection: dropped, duplicated and retried calls, missing tokens, 5xx bursts, and the
//! 302 domain move.

use b24_emulator::{Faults, ServerErrorBurst, StartedWorkflow};
use serde_json::json;

use crate::support::{HANDLER_PATH, TOKENLESS_AUTH_KEYS, World, auth_keys, err, get_json};

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
