//! Every typed method and the generic `call` against the emulator: success envelopes.

use b24::rest::{
    ActionKind, ActivityChanges, ActivityDefinition, EventSend, PropertyDefinition, PropertyType,
    TokenPlacement, YesNo,
};
use b24_emulator::WorkflowStatus;
use serde_json::json;

use crate::support::TestPortal;

/// The reference case's action (design.md §2).
pub fn credit_check(code: &str, handler: &str) -> ActivityDefinition {
    let mut definition = ActivityDefinition::new(code, handler, "Check credit limit");
    definition.auth_user_id = Some(1);
    definition.use_subscription = Some(YesNo::Yes);
    definition.description = Some("Asks the finance system".into());
    definition.properties = Some(
        [
            ("company_id", PropertyDefinition::new("Company", PropertyType::Int).required(true)),
            ("amount", PropertyDefinition::new("Amount", PropertyType::Double).required(true)),
            (
                "mode",
                PropertyDefinition::new("Mode", PropertyType::Select)
                    .options([("strict", "Strict"), ("lenient", "Lenient")])
                    .default_value("strict"),
            ),
        ]
        .into_iter()
        .collect(),
    );
    definition.return_properties = Some(
        [
            ("available_limit", PropertyDefinition::new("Available limit", PropertyType::Double)),
            ("approval_required", PropertyDefinition::new("Approval required", PropertyType::Bool)),
        ]
        .into_iter()
        .collect(),
    );
    definition
}

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
    client.activity_add(&credit_check("check_credit_limit", &t.handler)).await.unwrap();
    let wf = t.start_waiting_workflow("check_credit_limit").await;

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
    client.activity_add(&credit_check("check_credit_limit", &t.handler)).await.unwrap();
    let wf = t.start_waiting_workflow("check_credit_limit").await;

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
    t.client().activity_add(&credit_check("check_credit_limit", &t.handler)).await.unwrap();
    let wf = t.start_waiting_workflow("check_credit_limit").await;

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
