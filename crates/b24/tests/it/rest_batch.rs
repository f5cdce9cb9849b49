//! `batch` against the emulator: chunking past 50, per-command results and errors, `halt`, and
//! log lines with a result in one batch, as the host's outbox sends them.

use b24::incoming::EventToken;
use b24::rest::{BatchCommand, BatchOutcome, ErrorClass, EventSend};
use b24_emulator::WorkflowStatus;
use serde_json::json;

use crate::support::TestPortal;

#[tokio::test]
async fn batch_over_fifty_is_chunked_with_per_command_errors() {
    let t = TestPortal::start().await;
    let client = t.client();
    let wf = t.waiting_credit_check().await;

    // 120 commands: every 7th is an event.send with a forged token, one real event.send,
    // the rest list calls.
    let mut commands = Vec::new();
    for i in 0..120 {
        let command = if i == 60 {
            let send = EventSend::new(&wf.event_token).value("approval_required", "Y");
            BatchCommand::event_send(format!("c{i}"), &send)
        } else if i % 7 == 3 {
            BatchCommand::event_send(format!("c{i}"), &EventSend::new(format!("forged{i}")))
        } else {
            BatchCommand::new(format!("c{i}"), "bizproc.activity.list", &json!({}))
        };
        commands.push(command.unwrap());
    }

    let results = client.batch(&commands, false).await.unwrap();
    assert_eq!(results.requests, 3, "120 commands need three requests of at most 50");
    assert_eq!(results.entries.len(), 120);
    for (i, entry) in results.entries.iter().enumerate() {
        assert_eq!(entry.key, format!("c{i}"), "order kept");
        match &entry.outcome {
            BatchOutcome::Ok(response) if i == 60 => assert_eq!(response.result, json!(true)),
            BatchOutcome::Failed(error) if i % 7 == 3 => {
                assert_eq!(error.code(), Some("ACCESS_DENIED"), "{error:?}");
                assert_eq!(error.class(), ErrorClass::Permanent);
            }
            BatchOutcome::Ok(response) => {
                assert_eq!(response.result, json!(["check_credit_limit"]))
            }
            other => panic!("c{i}: unexpected {other:?}"),
        }
    }
    assert!(!results.all_ok());
    assert!(t.is_closed(&wf.workflow_id));
    let state = t.workflow(&wf.workflow_id);
    assert_eq!(state.return_values.get("approval_required"), Some(&json!("Y")));

    let batches =
        t.emu.rest_calls(&t.portal.domain).into_iter().filter(|c| c.method == "batch").count();
    assert_eq!(batches, 3);
    let length_errors = t
        .emu
        .rest_calls(&t.portal.domain)
        .into_iter()
        .filter(|c| c.error.as_deref() == Some("ERROR_BATCH_LENGTH_EXCEEDED"))
        .count();
    assert_eq!(length_errors, 0);
}

/// What the host's outbox sends a portal: progress lines first, then results, in one batch.
#[tokio::test]
async fn log_lines_and_a_result_in_one_batch_reach_the_workflow_in_order() {
    let t = TestPortal::start().await;
    let client = t.client();
    let wf = t.waiting_credit_check().await;
    let token = EventToken::new(wf.event_token.clone());

    let result = EventSend::new(token.clone()).value("approval_required", "N").log("limit checked");
    let commands = vec![
        BatchCommand::activity_log("log0", &token, "asking the finance system"),
        BatchCommand::event_send("job1", &result).unwrap(),
    ];
    let results = client.batch(&commands, false).await.unwrap();

    assert_eq!(results.get("log0").and_then(BatchOutcome::result), Some(&json!(true)));
    assert_eq!(results.get("job1").and_then(BatchOutcome::result), Some(&json!(true)));
    let state = t.workflow(&wf.workflow_id);
    assert_eq!(state.status, WorkflowStatus::Closed, "{state:?}");
    assert_eq!(state.return_values.get("approval_required"), Some(&json!("N")));
    let line = |text: &str| state.log.iter().position(|line| line.contains(text));
    let (asking, checked) = (line("asking the finance system"), line("limit checked"));
    assert!(asking.is_some() && asking < checked, "{:?}", state.log);
}

#[tokio::test]
async fn halt_stops_at_the_first_failure_and_sends_no_further_chunk() {
    let t = TestPortal::start().await;
    let client = t.client();
    let commands: Vec<_> = (0..60)
        .map(|i| {
            if i == 10 {
                BatchCommand::new(
                    format!("k{i}"),
                    "bizproc.activity.delete",
                    &json!({"CODE": "missing"}),
                )
            } else {
                BatchCommand::new(format!("k{i}"), "bizproc.robot.list", &json!({}))
            }
            .unwrap()
        })
        .collect();

    let results = client.batch(&commands, true).await.unwrap();
    assert_eq!(results.requests, 1);
    for (i, entry) in results.entries.iter().enumerate() {
        match (i, &entry.outcome) {
            (0..10, BatchOutcome::Ok(_)) => {}
            (10, BatchOutcome::Failed(error)) => {
                assert_eq!(error.code(), Some("ERROR_ACTIVITY_NOT_FOUND"), "{error:?}")
            }
            (11.., BatchOutcome::Skipped) => {}
            (i, other) => panic!("k{i}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn empty_results_come_back_as_php_empty_arrays_and_still_parse() {
    let t = TestPortal::start().await;
    let client = t.client();
    let commands = vec![
        BatchCommand::new("a", "bizproc.activity.list", &()).unwrap(),
        BatchCommand::new("b", "bizproc.robot.list", &()).unwrap(),
    ];
    let results = client.batch(&commands, false).await.unwrap();
    assert!(results.all_ok(), "{results:?}");
    assert_eq!(results.get("a").and_then(BatchOutcome::result), Some(&json!([])));
}

#[tokio::test]
async fn duplicate_keys_are_refused_before_sending() {
    let t = TestPortal::start().await;
    let commands = vec![
        BatchCommand::new("same", "app.info", &()).unwrap(),
        BatchCommand::new("same", "app.info", &()).unwrap(),
    ];
    let error = t.client().batch(&commands, false).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(t.emu.rest_calls(&t.portal.domain).is_empty());
}
