//! Every typed method and the generic `call` against the emulator: success envelopes.

use b24::rest::{ActionKind, ActivityChanges, EventSend, TokenPlacement};
use b24_emulator::WorkflowStatus;
use serde_json::json;

use crate::support::{TestPortal, credit_check};

#[tokio::test]
async fn activity_add_list_update_delete_round_trip() {
    let t = TestPortal::start().await;
    let client = t.client();

    let added = client.activity_add(&credit_check("check_credit_limit", &t.handler)).await.unwrap();
    assert!(added.result);
    assert!(added.time.is_some(), "success envelopes carry time");

    let listed = client.activity_list().await.unwrap();
    assert_eq!(listed.result, vec!["check_credit_limit".to_owned()]);
    assert!(client.robot_list().await.unwrap().result.is_empty(), "robots are a separate kind");

    let changes =
        ActivityChanges { name: Some("Check credit".into()), ..ActivityChanges::default() };
    assert!(client.activity_update("check_credit_limit", &changes).await.unwrap().result);

    assert!(client.activity_delete("check_credit_limit").await.unwrap().result);
    assert!(client.activity_list().await.unwrap().result.is_empty());
}

#[tokio::test]
async fn robot_add_list_update_delete_round_trip() {
    let t = TestPortal::start().await;
    let client = t.client();

    assert!(client.robot_add(&credit_check("credit_robot", &t.handler)).await.unwrap().result);
    assert_eq!(client.robot_list().await.unwrap().result, vec!["credit_robot".to_owned()]);
    assert!(client.activity_list().await.unwrap().result.is_empty());

    let full = ActivityChanges::from(&credit_check("credit_robot", &t.handler));
    assert!(client.robot_update("credit_robot", &full).await.unwrap().result);

    assert!(client.action_delete(ActionKind::Robot, "credit_robot").await.unwrap().result);
    assert!(client.robot_list().await.unwrap().result.is_empty());
}

#[tokio::test]
async fn app_info_describes_the_installed_app() {
    let t = TestPortal::start().await;
    let info = t.client().app_info().await.unwrap().result;
    assert!(info.status.is_some(), "app.info has a STATUS: {info:?}");
}

#[tokio::test]
async fn event_send_returns_values_and_resumes_the_workflow() {
    let t = TestPortal::start().await;
    let client = t.client();
    let wf = t.waiting_credit_check().await;

    client.activity_log(&wf.event_token, "asking the finance system").await.unwrap();
    let sent = client
        .event_send(
            &EventSend::new(&wf.event_token)
                .value("available_limit", 1500.5)
                .value("approval_required", "N")
                .log("limit checked"),
        )
        .await
        .unwrap();
    assert!(sent.result);

    let state = t.workflow(&wf.workflow_id);
    assert_eq!(state.status, WorkflowStatus::Closed, "{state:?}");
    let limit = state.return_values.get("available_limit").expect("available_limit returned");
    assert!(limit == &json!(1500.5) || limit == &json!("1500.5"), "{limit}");
    assert_eq!(state.return_values.get("approval_required"), Some(&json!("N")));
    assert!(state.log.iter().any(|line| line.contains("asking the finance system")), "{state:?}");
}

#[tokio::test]
async fn activity_log_leaves_the_workflow_waiting() {
    let t = TestPortal::start().await;
    let client = t.client();
    let wf = t.waiting_credit_check().await;

    assert!(
        client.activity_log(&wf.event_token, "attempt 1 failed, retrying").await.unwrap().result
    );

    let state = t.workflow(&wf.workflow_id);
    assert_eq!(state.status, WorkflowStatus::Waiting, "{state:?}");
    assert!(state.log.iter().any(|line| line.contains("attempt 1 failed")), "{state:?}");
}

#[tokio::test]
async fn webhook_can_return_results() {
    let t = TestPortal::start().await;
    let wf = t.waiting_credit_check().await;

    let hook = t.webhook();
    assert!(hook.event_send(&EventSend::new(&wf.event_token)).await.unwrap().result);
    assert!(t.is_closed(&wf.workflow_id));
}

#[tokio::test]
async fn token_in_the_auth_parameter_works_like_the_bearer_header() {
    let t = TestPortal::start().await;
    let client = t.oauth().token_placement(TokenPlacement::AuthParam).build().unwrap();
    assert!(client.activity_add(&credit_check("by_param", &t.handler)).await.unwrap().result);
    assert_eq!(client.activity_list().await.unwrap().result, vec!["by_param".to_owned()]);
}

#[tokio::test]
async fn generic_call_returns_the_raw_envelope() {
    let t = TestPortal::start().await;
    let client = t.client();
    let response = client.call("bizproc.activity.list", &json!({})).await.unwrap();
    assert_eq!(response.result, json!([]));
    assert!(response.moved.is_none());
    let typed = client.call_as::<Vec<String>, _>("bizproc.robot.list", &()).await.unwrap();
    assert!(typed.result.is_empty());
}
