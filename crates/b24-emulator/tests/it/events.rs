//! `bizproc.event.send` and `bizproc.activity.log`: semantics and errors of §3.1–§3.3, waiting and
//! timeouts of §2.7.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use b24_emulator::{Faults, PortalSpec, StartedWorkflow, WorkflowSpec, WorkflowStatus};
use serde_json::json;

use crate::support::{World, err, event_send_batch, get_json, post_json};

async fn waiting(w: &World, spec: impl FnOnce(WorkflowSpec) -> WorkflowSpec) -> StartedWorkflow {
    w.register(
        "bizproc.robot.add",
        json!({"CODE": "wait", "USE_SUBSCRIPTION": "Y",
               "RETURN_PROPERTIES": {"availableLimit": {"Name": "L"}, "approvalRequired": {"Name": "A", "Type": "bool"}}}),
    )
    .await;
    w.emu.start_workflow(spec(w.workflow("wait", json!({})))).await.unwrap()
}

#[tokio::test]
async fn event_send_closes_the_activity_with_case_insensitive_return_values() {
    let w = World::new().await;
    let wf = waiting(&w, |s| s).await;
    let (status, body) = w
        .call(
            "bizproc.event.send",
            json!({"event_token": wf.event_token,
                   "return_values": {"AVAILABLELIMIT": "1500.5", "approvalrequired": "N", "unknown": "x"}}),
        )
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    assert!(body.get("time").is_some());
    let state = w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap();
    assert_eq!(state.status, WorkflowStatus::Closed);
    assert_eq!(state.return_values, json!({"availableLimit": "1500.5", "approvalRequired": "N"}));
    assert_eq!(state.log, ["Received application response"]);
    assert!(!state.is_timeout);

    let (status, body) = w
        .call("bizproc.event.send", json!({"EVENT_TOKEN": wf.event_token, "LOG_MESSAGE": "again"}))
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "a second send is a no-op");
    assert_eq!(w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap().log.len(), 1);
}

#[tokio::test]
async fn a_finished_workflow_answers_404_and_a_forged_token_403() {
    let w = World::new().await;
    let wf = waiting(&w, |s| WorkflowSpec { finish_after: Some(Duration::ZERO), ..s }).await;
    let (payload, _) = wf.event_token.rsplit_once('.').unwrap();
    let forged = format!("{payload}.{}", "0".repeat(64));
    for token in [forged.as_str(), "", "no-dot-at-all"] {
        let (status, body) = w.call("bizproc.event.send", json!({"EVENT_TOKEN": token})).await;
        assert_eq!((status, err(&body)), (403, ("ACCESS_DENIED", "Access denied!")));
    }
    let (status, _) = w
        .call("bizproc.event.send", json!({"EVENT_TOKEN": wf.event_token, "LOG_MESSAGE": "done"}))
        .await;
    assert_eq!(status, 200);
    let state = w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap();
    assert!(state.finished);
    assert_eq!(state.log, ["done"]);
    let (status, body) = w.call("bizproc.event.send", json!({"EVENT_TOKEN": wf.event_token})).await;
    assert_eq!((status, err(&body)), (400, ("404", "The business process is not found.")));
}

#[tokio::test]
async fn every_send_in_a_batch_is_logged_with_its_token_and_outcome_including_404() {
    let w = World::new().await;
    let workflows = w.waiting_workflows(1).await;
    let token = workflows[0].event_token.as_str();
    let (status, body) = w.call("batch", event_send_batch(&[token])).await;
    assert_eq!((status, &body["result"]["result"]["e0"]), (200, &json!(true)), "{body}");
    assert!(w.emu.workflow(&w.portal.domain, &workflows[0].workflow_id).unwrap().finished);

    let (status, body) = w.call("batch", event_send_batch(&[token, token])).await;
    assert_eq!(status, 200, "{body}");
    for key in ["e0", "e1"] {
        let error = &body["result"]["result_error"][key];
        assert_eq!(err(error), ("404", "The business process is not found."), "{body}");
    }
    let not_found = (true, 400, Some("404".to_owned()));
    assert_eq!(w.sends_of(token), [(true, 200, None), not_found.clone(), not_found]);
}

#[tokio::test]
async fn a_token_of_another_portal_is_access_denied() {
    let w = World::new().await;
    let wf = waiting(&w, |s| s).await;
    let other =
        w.emu.create_portal(PortalSpec { unlimited: true, ..Default::default() }).await.unwrap();
    let inst = w.emu.install_app(&other.domain, &w.app.client_id).await.unwrap();
    let url = format!("{}bizproc.event.send", other.client_endpoint);
    let (status, body) = post_json(
        &w.http,
        &url,
        &json!({"auth": inst.access_token, "EVENT_TOKEN": wf.event_token}),
    )
    .await;
    assert_eq!((status, err(&body).0), (403, "ACCESS_DENIED"));
}

#[tokio::test]
async fn the_lock_window_answers_423_then_lets_the_event_through() {
    let w = World::new().await;
    w.set_faults(Faults { lock_window: Some(Duration::from_millis(700)), ..Default::default() });
    let wf = waiting(&w, |s| s).await;
    let (status, body) = w.call("bizproc.event.send", json!({"EVENT_TOKEN": wf.event_token})).await;
    assert_eq!((status, err(&body)), (400, ("423", "The workflow is hung or being executed")));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) =
            w.call("bizproc.event.send", json!({"EVENT_TOKEN": wf.event_token})).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lock never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap().status,
        WorkflowStatus::Closed
    );
}

#[tokio::test]
async fn activity_log_adds_lines_and_keeps_waiting_and_webhooks_may_call_it() {
    let w = World::new().await;
    let wf = waiting(&w, |s| s).await;
    let (status, body) = w
        .call("bizproc.activity.log", json!({"EVENT_TOKEN": wf.event_token, "LOG_MESSAGE": ""}))
        .await;
    assert_eq!((status, err(&body)), (400, ("ERROR_EMPTY_LOG_MESSAGE", "Empty log message!")));
    let (status, _) = w
        .call(
            "bizproc.activity.log",
            json!({"EVENT_TOKEN": wf.event_token, "LOG_MESSAGE": "attempt 1 failed"}),
        )
        .await;
    assert_eq!(status, 200);
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "bizproc").unwrap();
    let (status, _) = post_json(
        &w.http,
        &format!("{hook}bizproc.activity.log"),
        &json!({"event_token": wf.event_token, "log_message": "attempt 2 failed"}),
    )
    .await;
    assert_eq!(status, 200);
    let state = w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap();
    assert_eq!(state.status, WorkflowStatus::Waiting);
    assert_eq!(state.log, ["attempt 1 failed", "attempt 2 failed"]);
}

#[tokio::test]
async fn the_timeout_sets_is_timeout_and_closes() {
    let w = World::new().await;
    let wf = waiting(&w, |s| WorkflowSpec { timeout_duration: 1, ..s }).await;
    let state = w.stopped_waiting(&wf.workflow_id).await;
    assert_eq!(state.status, WorkflowStatus::TimedOut);
    assert!(state.is_timeout);
    let (status, body) = w
        .call(
            "bizproc.event.send",
            json!({"EVENT_TOKEN": wf.event_token, "RETURN_VALUES": {"availableLimit": 1}}),
        )
        .await;
    assert!(status == 200 || err(&body).0 == "404", "{body}");
    assert_eq!(w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap().return_values, json!({}));
}

#[tokio::test]
async fn use_subscription_n_closes_right_after_dispatch() {
    let w = World::new().await;
    w.register("bizproc.activity.add", json!({"CODE": "fire_and_forget", "USE_SUBSCRIPTION": "N"}))
        .await;
    let wf = w.emu.start_workflow(w.workflow("fire_and_forget", json!({}))).await.unwrap();
    assert!(!wf.use_subscription);
    let state = w.emu.workflow(&w.portal.domain, &wf.workflow_id).unwrap();
    assert_eq!(state.status, WorkflowStatus::Closed);
    w.emu.finish_workflow(&w.portal.domain, &wf.workflow_id).unwrap();
    let (status, body) = w.call("bizproc.event.send", json!({"EVENT_TOKEN": wf.event_token})).await;
    assert_eq!((status, err(&body).0), (400, "404"));
}

#[tokio::test]
async fn closed_at_is_null_while_waiting_and_marks_each_way_of_closing() {
    let w = World::new().await;
    let sent = waiting(&w, |s| s).await;
    let url = format!(
        "{}/control/portals/{}/workflows/{}",
        w.emu.control_url(),
        w.portal.domain,
        sent.workflow_id
    );
    let (_, state) = get_json(&w.http, &url).await;
    assert_eq!(state["closed_at"], json!(null), "{state}");
    assert_eq!(w.emu.workflow(&w.portal.domain, &sent.workflow_id).unwrap().closed_at, None);

    tokio::time::sleep(Duration::from_millis(50)).await;
    let before_send = SystemTime::now();
    let (status, _) = w.call("bizproc.event.send", json!({"EVENT_TOKEN": sent.event_token})).await;
    assert_eq!(status, 200);
    let state = w.emu.workflow(&w.portal.domain, &sent.workflow_id).unwrap();
    let closed = state.closed_at.unwrap();
    assert!(closed >= before_send && closed <= SystemTime::now(), "{state:?}");
    assert!(closed.duration_since(state.started_at).unwrap() >= Duration::from_millis(50));
    let (_, json_state) = get_json(&w.http, &url).await;
    let closed_secs = closed.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((json_state["closed_at"].as_f64().unwrap() - closed_secs).abs() < 1e-3, "{json_state}");

    // The timeout closes the activity at `started_at + timeout_duration`.
    let timed = w
        .emu
        .start_workflow(WorkflowSpec { timeout_duration: 1, ..w.workflow("wait", json!({})) })
        .await
        .unwrap();
    let state = w.stopped_waiting(&timed.workflow_id).await;
    assert_eq!(state.status, WorkflowStatus::TimedOut);
    let after = state.closed_at.unwrap().duration_since(state.started_at).unwrap();
    assert!(after.abs_diff(Duration::from_secs(1)) < Duration::from_millis(5), "{after:?}");

    // USE_SUBSCRIPTION=N closes it at dispatch.
    w.register("bizproc.activity.add", json!({"CODE": "fire_and_forget", "USE_SUBSCRIPTION": "N"}))
        .await;
    let fired = w.emu.start_workflow(w.workflow("fire_and_forget", json!({}))).await.unwrap();
    let state = w.emu.workflow(&w.portal.domain, &fired.workflow_id).unwrap();
    let after = state.closed_at.unwrap().duration_since(state.started_at).unwrap();
    assert!(after < Duration::from_millis(50), "{after:?}");
}
