//! Workflow templates: the reference credit-approval process end to end with a handler that
//! answers through `bizproc.event.send`, expressions, conditions, tasks, failures, timeouts
//! inside a template, and the control routes for documents, templates and tasks.

use std::time::Duration;

use b24_emulator::templates::{CFO_TASK_STEP, CHECK_STEP, CreditApproval, credit_approval};
use b24_emulator::{
    ACTIVITY_NOT_INSTALLED, ActivityStep, CompareOp, CompletedBy, Condition, DocumentSpec,
    IfElseStep, LogStep, ProcessStatus, SetFieldStep, Step, StepKind, StepStatus, TaskCompletion,
    TaskOutcome, TaskStatus, TaskStep, WorkflowState, WorkflowStatus, WorkflowTemplate,
};
use serde_json::{Value, json};

use crate::handler::{Handler, credit_check, register_credit_check};
use crate::support::{World, err, get_json, post_json};

/// A handler and the credit action registered with it.
async fn credit_world(
    decide: impl Fn(&str, &Value) -> Option<Value> + Send + Sync + 'static,
) -> (World, Handler) {
    let w = World::new().await;
    let handler = Handler::start(w.http.clone(), decide).await;
    register_credit_check(&w, &handler).await;
    (w, handler)
}

fn deal(w: &World, amount: f64) -> Vec<String> {
    let mut fields = serde_json::Map::new();
    fields.insert("TITLE".into(), json!("Shipment to Müller & Co"));
    fields.insert("COMPANY_ID".into(), json!(1001));
    fields.insert("OPPORTUNITY".into(), json!(amount));
    fields.insert("STAGE_ID".into(), json!("NEW"));
    w.emu
        .create_document(&w.portal.domain, DocumentSpec { fields, ..Default::default() })
        .unwrap()
        .document_id
}

async fn run(w: &World, template: WorkflowTemplate, document_id: &[String]) -> String {
    let stored = w.emu.create_template(&w.portal.domain, template).unwrap();
    w.emu.start_template(&w.portal.domain, stored.id, document_id).await.unwrap()
}

/// Polls until the workflow satisfies `done`, failing after five seconds.
async fn until(w: &World, id: &str, done: impl Fn(&WorkflowState) -> bool) -> WorkflowState {
    let state =
        w.emu.wait_for_workflow(&w.portal.domain, id, Duration::from_secs(5), &done).await.unwrap();
    assert!(done(&state), "gave up waiting: {state:#?}");
    state
}

fn ended(s: &WorkflowState) -> bool {
    matches!(s.process_status, ProcessStatus::Completed | ProcessStatus::Failed)
}

fn stage(w: &World, document_id: &[String]) -> Value {
    w.emu.document(&w.portal.domain, document_id).unwrap().fields["STAGE_ID"].clone()
}

fn kinds(state: &WorkflowState) -> Vec<StepKind> {
    state.steps.iter().map(|s| s.kind).collect()
}

#[tokio::test]
async fn within_the_limit_the_deal_is_approved_automatically_without_a_task() {
    let (w, handler) = credit_world(credit_check).await;
    let deal = deal(&w, 1200.5);
    let id = run(&w, credit_approval("check_credit"), &deal).await;
    let state = until(&w, &id, ended).await;

    assert_eq!(state.process_status, ProcessStatus::Completed, "{state:#?}");
    assert!(state.finished && state.error.is_none());
    assert_eq!(stage(&w, &deal), json!("APPROVED"));
    assert!(state.tasks.is_empty());
    assert!(w.emu.tasks(&w.portal.domain).unwrap().is_empty());
    assert_eq!(
        state.log,
        ["Received application response", "Approved automatically: available limit 5000"]
    );
    assert_eq!(
        kinds(&state),
        [StepKind::Activity, StepKind::IfElse, StepKind::SetField, StepKind::Log]
    );
    assert!(state.steps.iter().all(|s| s.status == StepStatus::Done), "{:#?}", state.steps);
    assert!(state.steps[1].detail.ends_with("→ then"), "{}", state.steps[1].detail);

    // The document's fields reached the handler, typed as registered (§2.4).
    let calls = handler.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["properties"], json!({"company_id": "1001", "amount": "1200.5"}));
    assert_eq!(calls[0]["document_id"], json!(deal));
    assert_eq!(calls[0]["document_type"], json!(["crm", "CCrmDocumentDeal", "DEAL"]));
    let token = calls[0]["event_token"].as_str().unwrap();
    assert!(token.contains(&format!("|{CHECK_STEP}|")), "{token}");

    let activity = &state.activities[0];
    assert_eq!((activity.name.as_str(), activity.status), (CHECK_STEP, WorkflowStatus::Closed));
    assert_eq!(activity.return_values["approval_required"], json!("N"));
    assert_eq!(state.return_values, activity.return_values);

    // The template completed, so the instance is gone (§3.3).
    let (status, body) = w.call("bizproc.event.send", json!({"EVENT_TOKEN": token})).await;
    assert_eq!((status, err(&body).0), (400, "404"));
}

#[tokio::test]
async fn over_the_limit_the_cfo_gets_a_task_whose_outcome_sets_the_stage() {
    let (w, _handler) = credit_world(credit_check).await;
    let template =
        w.emu.create_template(&w.portal.domain, credit_approval("check_credit")).unwrap();
    let approved_deal = deal(&w, 9000.0);
    let rejected_deal = deal(&w, 12000.0);
    let approved =
        w.emu.start_template(&w.portal.domain, template.id, &approved_deal).await.unwrap();
    let rejected =
        w.emu.start_template(&w.portal.domain, template.id, &rejected_deal).await.unwrap();
    for id in [&approved, &rejected] {
        let state = until(&w, id, |s| s.process_status == ProcessStatus::WaitingForTask).await;
        assert!(!state.finished);
        assert_eq!(
            state.log,
            ["Received application response", "Approval required: over the limit"]
        );
    }
    assert_eq!(stage(&w, &approved_deal), json!("NEW"));

    let open = w.emu.open_tasks(&w.portal.domain).unwrap();
    assert_eq!(open.len(), 2, "{open:#?}");
    let task = open.iter().find(|t| t.workflow_id == approved).unwrap();
    assert_eq!((task.user_id, task.step.as_str()), (7, CFO_TASK_STEP));
    assert_eq!(task.title, "Approve shipment: Shipment to Müller & Co");
    assert_eq!(task.description, "Amount 9000, available limit 5000. over the limit");
    assert_eq!(task.status, TaskStatus::Open);

    // The CFO approves one over the control API…
    let url = format!(
        "{}/control/portals/{}/tasks/{}/complete",
        w.emu.control_url(),
        w.portal.domain,
        task.task_id
    );
    let (status, done) = post_json(&w.http, &url, &json!({"outcome": "approved"})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["status"].as_str(), done["outcome"].as_str()),
        (Some("Completed"), Some("approved"))
    );
    let state = until(&w, &approved, ended).await;
    assert_eq!(state.process_status, ProcessStatus::Completed);
    assert_eq!(stage(&w, &approved_deal), json!("APPROVED"));
    assert_eq!(state.log.last().unwrap(), "Approved by the CFO");
    assert_eq!(state.tasks[0].completed_by, Some(CompletedBy::User));
    let (status, body) = post_json(&w.http, &url, &json!({"outcome": "rejected"})).await;
    assert_eq!(status, 400, "a completed task cannot be completed again: {body}");

    // …and rejects the other through the Rust API.
    let other = w.emu.open_tasks(&w.portal.domain).unwrap();
    assert_eq!(other.len(), 1);
    w.emu
        .complete_task(
            &w.portal.domain,
            other[0].task_id,
            TaskCompletion { outcome: TaskOutcome::Rejected, comment: "too risky".into() },
        )
        .unwrap();
    let state = until(&w, &rejected, ended).await;
    assert_eq!(stage(&w, &rejected_deal), json!("REJECTED"));
    assert_eq!(state.log.last().unwrap(), "Rejected by the CFO: too risky");
    assert_eq!(
        kinds(&state),
        [
            StepKind::Activity,
            StepKind::IfElse,
            StepKind::Log,
            StepKind::Task,
            StepKind::IfElse,
            StepKind::SetField,
            StepKind::Log
        ]
    );
    assert!(w.emu.open_tasks(&w.portal.domain).unwrap().is_empty());
}

#[tokio::test]
async fn the_cfo_task_completes_itself_after_its_delay() {
    let (w, _handler) = credit_world(credit_check).await;
    let deal = deal(&w, 7000.0);
    let template = CreditApproval {
        auto_complete_after: Some(Duration::from_millis(300)),
        auto_outcome: TaskOutcome::Rejected,
        ..CreditApproval::new("check_credit")
    }
    .template();
    let id = run(&w, template, &deal).await;
    let state = until(&w, &id, ended).await;
    assert_eq!(stage(&w, &deal), json!("REJECTED"));
    let task = &state.tasks[0];
    assert_eq!(
        (task.completed_by, task.outcome),
        (Some(CompletedBy::Timer), Some(TaskOutcome::Rejected))
    );
    let waited = task.completed_at.unwrap().duration_since(task.created_at).unwrap();
    assert!(waited.abs_diff(Duration::from_millis(300)) < Duration::from_millis(5), "{waited:?}");
    assert!(state.steps[3].detail.contains("rejected (automatically)"), "{:#?}", state.steps);
}

#[tokio::test]
async fn document_fields_and_earlier_return_values_reach_later_steps() {
    let (w, handler) = credit_world(credit_check).await;
    let properties = json!({
        "text": {"Name": "Text", "Type": "string"},
        "limit": {"Name": "Limit", "Type": "double"},
        "approvers": {"Name": "Approvers", "Type": "user", "Multiple": "Y"},
        "untouched": {"Name": "Default", "Type": "string", "Default": "as registered"}
    });
    handler.register_activity(&w, "notify", "N", properties, None).await;
    let deal = deal(&w, 100.0);
    let mut check = serde_json::Map::new();
    check.insert("company_id".into(), json!("{=Document:COMPANY_ID}"));
    check.insert("amount".into(), json!("{=Document:OPPORTUNITY}"));
    let mut notify = serde_json::Map::new();
    notify.insert(
        "text".into(),
        json!("{=Document:TITLE}: {=check:reason}limit {=check:available_limit}, timeout {=check:IsTimeout}"),
    );
    notify.insert("limit".into(), json!("{=check:available_limit}"));
    notify.insert("approvers".into(), json!([1, "{=Document:CFO}"]));
    w.emu
        .update_document(
            &w.portal.domain,
            &deal,
            serde_json::Map::from_iter([("CFO".to_owned(), json!(7))]),
        )
        .unwrap();
    let template = WorkflowTemplate {
        name: "expressions".into(),
        steps: vec![
            Step::Activity(ActivityStep {
                name: "check".into(),
                code: "check_credit".into(),
                properties: check,
                ..Default::default()
            }),
            Step::Activity(ActivityStep {
                name: "notify".into(),
                code: "notify".into(),
                properties: notify,
                ..Default::default()
            }),
            Step::SetField(SetFieldStep {
                field: "COMMENTS".into(),
                value: json!("checked: {=check:available_limit} ({=check:approval_required})"),
            }),
            Step::SetField(SetFieldStep {
                field: "LIMIT".into(),
                value: json!("{=check:available_limit}"),
            }),
        ],
        ..Default::default()
    };
    let id = run(&w, template, &deal).await;
    let state = until(&w, &id, ended).await;
    assert_eq!(state.process_status, ProcessStatus::Completed, "{state:#?}");

    let calls = handler.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1]["properties"],
        json!({
            "text": "Shipment to Müller & Co: limit 5000, timeout 0",
            "limit": "5000",
            "approvers": ["user_1", "user_7"],
            "untouched": "as registered"
        })
    );
    let fields = w.emu.document(&w.portal.domain, &deal).unwrap().fields;
    assert_eq!(fields["COMMENTS"], json!("checked: 5000 (N)"));
    assert_eq!(fields["LIMIT"], json!(5000), "a whole expression keeps the value's type");
    // USE_SUBSCRIPTION=N closes at dispatch; the state's top-level fields are the latest activity.
    assert_eq!(state.code, "notify");
    assert_eq!(state.activities[1].status, WorkflowStatus::Closed);
    assert!(state.steps[1].detail.contains("USE_SUBSCRIPTION = N"), "{:#?}", state.steps);
}

#[tokio::test]
async fn a_condition_on_a_missing_value_reads_it_as_empty() {
    // The handler answers without `approval_required`.
    let (w, _handler) = credit_world(|_, _| Some(json!({"reason": "no data"}))).await;
    let branch = |name: &str, operand: &str, op: CompareOp, value: Value| {
        Step::IfElse(IfElseStep {
            name: name.into(),
            condition: Condition { operand: operand.into(), op, value },
            then: vec![Step::Log(LogStep { message: format!("{name}: then") })],
            otherwise: vec![Step::Log(LogStep { message: format!("{name}: otherwise") })],
        })
    };
    let template = WorkflowTemplate {
        steps: vec![
            Step::Activity(ActivityStep {
                name: "check".into(),
                code: "check_credit".into(),
                ..Default::default()
            }),
            branch("is_true", "{=check:approval_required}", CompareOp::IsTrue, Value::Null),
            branch("greater", "{=Document:NO_SUCH_FIELD}", CompareOp::Gt, json!(10)),
            branch("less", "{=check:available_limit}", CompareOp::Lt, json!(10)),
            branch("empty", "{=check:approval_required}", CompareOp::Empty, Value::Null),
            branch("equal", "{=Document:NO_SUCH_FIELD}", CompareOp::Eq, json!("")),
            branch("reason", "{=check:reason}", CompareOp::Eq, json!("no data")),
        ],
        ..Default::default()
    };
    let deal = deal(&w, 1.0);
    let id = run(&w, template, &deal).await;
    let state = until(&w, &id, ended).await;
    assert_eq!(
        &state.log[1..],
        [
            "is_true: otherwise",
            "greater: otherwise",
            "less: otherwise",
            "empty: then",
            "equal: then",
            "reason: then"
        ]
    );

    // The reference process fails closed: no answer on approval is not an approval.
    let id = run(&w, credit_approval("check_credit"), &deal).await;
    let state = until(&w, &id, |s| s.process_status == ProcessStatus::WaitingForTask).await;
    assert_eq!(state.tasks.len(), 1);
}

#[tokio::test]
async fn an_unregistered_code_fails_the_workflow_with_the_portal_error() {
    let (w, handler) = credit_world(credit_check).await;
    let deal = deal(&w, 1.0);
    let template = WorkflowTemplate {
        steps: vec![
            Step::Log(LogStep { message: "before".into() }),
            Step::Activity(ActivityStep {
                name: "gone".into(),
                code: "not_registered".into(),
                ..Default::default()
            }),
            Step::SetField(SetFieldStep { field: "STAGE_ID".into(), value: json!("NEVER") }),
        ],
        ..Default::default()
    };
    let id = run(&w, template, &deal).await;
    let state = until(&w, &id, ended).await;
    assert_eq!(state.process_status, ProcessStatus::Failed);
    assert_eq!(state.error.as_deref(), Some(ACTIVITY_NOT_INSTALLED));
    assert_eq!(ACTIVITY_NOT_INSTALLED, "Application activity is not installed.");
    assert!(state.finished);
    assert_eq!(kinds(&state), [StepKind::Log, StepKind::Activity]);
    assert_eq!(state.steps[1].status, StepStatus::Failed);
    assert_eq!(stage(&w, &deal), json!("NEW"));
    assert!(state.activities.is_empty() && handler.calls().is_empty());

    // An app update wipes the registration (§1.1): the same template then fails the same way.
    let id = run(&w, credit_approval("check_credit"), &deal).await;
    until(&w, &id, ended).await;
    w.emu.update_app(&w.portal.domain, &w.app.client_id).await.unwrap();
    let id = run(&w, credit_approval("check_credit"), &deal).await;
    let state = until(&w, &id, ended).await;
    assert_eq!(state.error.as_deref(), Some(ACTIVITY_NOT_INSTALLED));
}

#[tokio::test]
async fn a_timeout_inside_a_template_sets_is_timeout_and_the_workflow_goes_on() {
    // The handler never answers.
    let (w, handler) = credit_world(|_, _| None).await;
    let deal = deal(&w, 100.0);
    let template = WorkflowTemplate {
        steps: vec![
            Step::Activity(ActivityStep {
                name: "check".into(),
                code: "check_credit".into(),
                timeout_duration: 1,
                ..Default::default()
            }),
            Step::IfElse(IfElseStep {
                name: "timed_out".into(),
                condition: Condition {
                    operand: "{=check:IsTimeout}".into(),
                    op: CompareOp::Eq,
                    value: json!(1),
                },
                then: vec![Step::SetField(SetFieldStep {
                    field: "STAGE_ID".into(),
                    value: json!("NO_ANSWER"),
                })],
                otherwise: vec![],
            }),
            Step::Task(TaskStep {
                name: "review".into(),
                user_id: 7,
                title: "Review: no answer".into(),
                auto_complete_after: Some(Duration::from_millis(100)),
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    let id = run(&w, template, &deal).await;
    let state = until(&w, &id, |s| s.status == WorkflowStatus::Waiting).await;
    assert_eq!(state.process_status, ProcessStatus::WaitingForActivity);
    let state = until(&w, &id, ended).await;
    assert_eq!(state.process_status, ProcessStatus::Completed, "{state:#?}");
    let activity = &state.activities[0];
    assert!(activity.is_timeout && activity.status == WorkflowStatus::TimedOut);
    let waited = activity.closed_at.unwrap().duration_since(activity.started_at).unwrap();
    assert!(waited.abs_diff(Duration::from_secs(1)) < Duration::from_millis(5), "{waited:?}");
    assert_eq!(stage(&w, &deal), json!("NO_ANSWER"));
    assert_eq!(state.steps[0].detail, "code check_credit; timed out (IsTimeout = 1)");
    assert_eq!(handler.calls()[0]["timeout_duration"], json!("1"));
    // The task started where the timeout left off.
    let created = state.tasks[0].created_at;
    let gap = created.duration_since(activity.closed_at.unwrap()).unwrap_or_default();
    assert!(gap < Duration::from_millis(1), "{gap:?}");
}

#[tokio::test]
async fn control_routes_drive_documents_templates_and_tasks() {
    let (w, handler) = credit_world(credit_check).await;
    let base = format!("{}/control/portals/{}", w.emu.control_url(), w.portal.domain);

    let (status, doc) = post_json(
        &w.http,
        &format!("{base}/documents"),
        &json!({"fields": {"TITLE": "Over HTTP", "COMPANY_ID": 1002, "OPPORTUNITY": 8000, "STAGE_ID": "NEW"}}),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    let document_id = doc["document_id"].clone();
    let deal_id = document_id[2].as_str().unwrap().to_owned();
    assert!(deal_id.starts_with("DEAL_"), "{doc}");
    let doc_url = format!("{base}/documents/crm/CCrmDocumentDeal/{deal_id}");
    let (status, read) = get_json(&w.http, &doc_url).await;
    assert_eq!((status, &read), (200, &doc));
    let patched = w
        .http
        .patch(&doc_url)
        .json(&json!({"fields": {"OPPORTUNITY": 9500}}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(patched["fields"]["OPPORTUNITY"], json!(9500));
    assert_eq!(patched["fields"]["TITLE"], json!("Over HTTP"));
    let (_, docs) = get_json(&w.http, &format!("{base}/documents")).await;
    assert_eq!(docs.as_array().unwrap().len(), 1);

    // A template as JSON, the way a test in another language writes it.
    let template = json!({
        "name": "over http",
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
        "steps": [
            {"type": "activity", "name": "check", "code": "check_credit",
             "properties": {"company_id": "{=Document:COMPANY_ID}", "amount": "{=Document:OPPORTUNITY}"}},
            {"type": "if_else", "condition": {"operand": "{=check:approval_required}", "op": "is_true"},
             "then": [{"type": "task", "name": "cfo", "user_id": 7, "title": "Approve {=Document:TITLE}"}],
             "otherwise": []},
            {"type": "set_field", "field": "STAGE_ID", "value": "{=cfo:outcome}"},
            {"type": "log", "message": "done by {=cfo:user}"}
        ]
    });
    let (status, stored) = post_json(&w.http, &format!("{base}/templates"), &template).await;
    assert_eq!(status, 200, "{stored}");
    let template_id = stored["id"].as_u64().unwrap();
    let (status, listed) = get_json(&w.http, &format!("{base}/templates")).await;
    assert_eq!((status, listed[0]["id"].as_u64()), (200, Some(template_id)));
    let (status, one) = get_json(&w.http, &format!("{base}/templates/{template_id}")).await;
    assert_eq!((status, &one), (200, &stored));

    let (status, started) = post_json(
        &w.http,
        &format!("{base}/templates/{template_id}/start"),
        &json!({"document_id": document_id}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let workflow_id = started["workflow_id"].as_str().unwrap().to_owned();

    let open_url = format!("{base}/tasks?status=open");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let task = loop {
        let (_, open) = get_json(&w.http, &open_url).await;
        if let Some(task) = open.as_array().unwrap().first() {
            break task.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no task appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        (task["user_id"].as_u64(), task["title"].as_str()),
        (Some(7), Some("Approve Over HTTP"))
    );
    let task_id = task["task_id"].as_u64().unwrap();
    let (status, one) = get_json(&w.http, &format!("{base}/tasks/{task_id}")).await;
    assert_eq!((status, &one), (200, &task));
    let (status, wf) = get_json(&w.http, &format!("{base}/workflows/{workflow_id}")).await;
    assert_eq!((status, wf["process_status"].as_str()), (200, Some("WaitingForTask")));
    assert_eq!(wf["template_id"].as_u64(), Some(template_id));
    assert_eq!(wf["activities"][0]["return_values"]["approval_required"], json!("Y"));

    let (status, done) = post_json(
        &w.http,
        &format!("{base}/tasks/{task_id}/complete"),
        &json!({"outcome": "rejected", "comment": "no"}),
    )
    .await;
    assert_eq!((status, done["comment"].as_str()), (200, Some("no")));
    let (_, wf) = get_json(&w.http, &format!("{base}/workflows/{workflow_id}")).await;
    assert_eq!(
        (wf["process_status"].as_str(), wf["finished"].as_bool()),
        (Some("Completed"), Some(true))
    );
    assert_eq!(wf["log"], json!(["Received application response", "done by user_7"]));
    let (_, doc) = get_json(&w.http, &doc_url).await;
    assert_eq!(doc["fields"]["STAGE_ID"], json!("rejected"));
    let (_, all) = get_json(&w.http, &format!("{base}/tasks")).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (_, open) = get_json(&w.http, &open_url).await;
    assert_eq!(open, json!([]));
    assert_eq!(handler.calls().len(), 1);

    // Errors: unknown things are 404, bad requests 400.
    let missing = [
        format!("{base}/templates/999"),
        format!("{base}/tasks/999"),
        format!("{base}/documents/crm/CCrmDocumentDeal/DEAL_999"),
    ];
    for url in missing {
        let (status, body) = get_json(&w.http, &url).await;
        assert_eq!(status, 404, "{url}: {body}");
    }
    let (status, body) = post_json(
        &w.http,
        &format!("{base}/templates/{template_id}/start"),
        &json!({"document_id": ["crm", "CCrmDocumentDeal", "DEAL_999"]}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let bad = json!({"steps": [{"type": "log", "message": "{=nobody:value}"}]});
    let (status, body) = post_json(&w.http, &format!("{base}/templates"), &bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no step named `nobody`"), "{body}");
    let lead = json!({"document_type": ["crm", "CCrmDocumentLead", "LEAD"]});
    let (_, lead) = post_json(&w.http, &format!("{base}/documents"), &lead).await;
    let (status, body) = post_json(
        &w.http,
        &format!("{base}/templates/{template_id}/start"),
        &json!({"document_id": lead["document_id"]}),
    )
    .await;
    assert_eq!(status, 400, "a deal template does not run on a lead: {body}");
    let (status, _) = post_json(
        &w.http,
        &format!("{base}/tasks/{task_id}/complete"),
        &json!({"outcome": "maybe"}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn templates_refuse_bad_names_and_expressions() {
    let w = |steps: Vec<Step>| WorkflowTemplate { steps, ..Default::default() };
    let activity = |name: &str| {
        Step::Activity(ActivityStep { name: name.into(), code: "c".into(), ..Default::default() })
    };
    let bad = [
        w(vec![activity("same"), activity("same")]),
        w(vec![activity("Document")]),
        w(vec![activity("Variable")]),
        w(vec![Step::Log(LogStep { message: "{=Constant:Missing}".into() })]),
        w(vec![activity("with space")]),
        w(vec![Step::Log(LogStep { message: "{=Document:TITLE".into() })]),
        w(vec![Step::IfElse(IfElseStep {
            condition: Condition {
                operand: "text {=Document:A}".into(),
                op: CompareOp::IsTrue,
                value: Value::Null,
            },
            ..Default::default()
        })]),
        w(vec![Step::Activity(ActivityStep::default())]),
        WorkflowTemplate { document_type: vec!["crm".into()], ..Default::default() },
    ];
    let world = World::new().await;
    for template in bad {
        let refused = world.emu.create_template(&world.portal.domain, template.clone());
        assert!(refused.is_err(), "{template:?}");
    }
    let named = world.emu.create_template(&world.portal.domain, w(vec![activity("")])).unwrap();
    let Step::Activity(a) = &named.steps[0] else { panic!("{named:?}") };
    assert!(a.name.starts_with('A') && a.name.matches('_').count() == 3, "{}", a.name);
}

#[tokio::test]
async fn terminating_a_template_workflow_withdraws_its_task() {
    let (w, _handler) = credit_world(credit_check).await;
    let deal = deal(&w, 9000.0);
    let id = run(&w, credit_approval("check_credit"), &deal).await;
    let state = until(&w, &id, |s| s.process_status == ProcessStatus::WaitingForTask).await;
    let task_id = state.tasks[0].task_id;
    w.emu.finish_workflow(&w.portal.domain, &id).unwrap();
    let state = w.emu.workflow(&w.portal.domain, &id).unwrap();
    assert_eq!((state.process_status, state.finished), (ProcessStatus::Terminated, true));
    assert!(w.emu.open_tasks(&w.portal.domain).unwrap().is_empty());
    let done = TaskCompletion { outcome: TaskOutcome::Approved, comment: String::new() };
    assert!(w.emu.complete_task(&w.portal.domain, task_id, done).is_err());
    assert_eq!(stage(&w, &deal), json!("NEW"));
}

#[tokio::test]
async fn parameters_variables_and_constants_evaluate_and_undeclared_ones_are_refused() {
    let w = World::new().await;
    let base = format!("{}/control/portals/{}", w.emu.control_url(), w.portal.domain);
    let template = json!({
        "name": "declarations",
        "parameters": {
            "Reason": {"Name": "Reason", "Required": true},
            "Limit": {"Name": "Limit", "Type": "int", "Default": 100}
        },
        "variables": {"Note": {"Name": "Note", "Default": "from a variable"}},
        "constants": {"Stage": {"Name": "Stage", "Default": "WON"}},
        "steps": [
            {"type": "log", "message": "{=Template:Reason}, limit {=Template:Limit}, {=Variable:Note}"},
            {"type": "set_field", "field": "STAGE_ID", "value": "{=Constant:Stage}"},
            {"type": "set_field", "field": "LIMIT", "value": "{=Template:Limit}"}
        ]
    });
    let (status, stored) = post_json(&w.http, &format!("{base}/templates"), &template).await;
    assert_eq!(status, 200, "{stored}");
    let template_id = stored["id"].as_u64().unwrap();
    assert_eq!(stored["parameters"]["Limit"]["Type"], "int");

    // Over the control API: a parameter not given takes its Default, a whole expression keeps
    // the value's type.
    let first = deal(&w, 10.0);
    let start = format!("{base}/templates/{template_id}/start");
    let (status, body) = post_json(
        &w.http,
        &start,
        &json!({"document_id": first, "parameters": {"Reason": "by hand"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let state = until(&w, body["workflow_id"].as_str().unwrap(), ended).await;
    assert_eq!(state.log, ["by hand, limit 100, from a variable"]);
    let fields = w.emu.document(&w.portal.domain, &first).unwrap().fields;
    assert_eq!((&fields["STAGE_ID"], &fields["LIMIT"]), (&json!("WON"), &json!(100)));

    // Over REST: PARAMETERS by ID.
    let second = deal(&w, 20.0);
    let (status, body) = w
        .call(
            "bizproc.workflow.start",
            json!({"TEMPLATE_ID": template_id, "DOCUMENT_ID": second,
                   "PARAMETERS": {"Reason": "by REST", "Limit": "250"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let state = until(&w, body["result"].as_str().unwrap(), ended).await;
    assert_eq!(state.log, ["by REST, limit 250, from a variable"]);

    // A required parameter left out: the loader's message, with no code over REST.
    let (status, body) = w
        .call(
            "bizproc.workflow.start",
            json!({"TEMPLATE_ID": template_id, "DOCUMENT_ID": second, "PARAMETERS": {"Reason": ""}}),
        )
        .await;
    assert_eq!((status, err(&body)), (400, ("", "The 'Reason' field is required.")), "{body}");
    let (status, body) = post_json(&w.http, &start, &json!({"document_id": second})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("The 'Reason' field is required."), "{body}");

    // template.list shows the declarations as the designer stores them.
    let (_, list) = w
        .call(
            "bizproc.workflow.template.list",
            json!({"SELECT": ["ID", "PARAMETERS", "CONSTANTS"]}),
        )
        .await;
    assert_eq!(list["result"][0]["PARAMETERS"]["Reason"]["Required"], json!(true), "{list}");
    assert_eq!(list["result"][0]["CONSTANTS"]["Stage"]["Default"], "WON", "{list}");

    // Naming something undeclared is refused when the template is created.
    let mut bad = template.clone();
    bad["steps"][0]["message"] = json!("{=Variable:Missing}");
    let (status, body) = post_json(&w.http, &format!("{base}/templates"), &bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no variable named `Missing`"), "{body}");
}
