//! The workflow, template and task methods over REST: a workflow started by
//! `bizproc.workflow.start` runs its template (its activity's call reaches the handler), a task
//! completed by `bizproc.task.complete` moves it on, and every method's parameters, paging,
//! error strings and auth checks.

use std::time::{Duration, Instant};

use b24_emulator::{DocumentSpec, ProcessStatus, WorkflowTemplate};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{HANDLER_PATH, World, err, post_json};

/// `TEMPLATE_DATA` as the emulator takes it: `[file name, base64 of the steps as JSON]`.
fn template_data(steps: &Value) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(steps.to_string());
    json!(["template.bpt", encoded])
}

/// Notify (an activity that does not wait), then an approval task for user 7, then the stage.
fn approval_steps() -> Value {
    json!([
        {"type": "activity", "name": "notify", "code": "notify",
         "properties": {"title": "{=Document:TITLE}"}},
        {"type": "task", "name": "approve", "user_id": 7, "title": "Approve {=Document:TITLE}"},
        {"type": "if_else", "condition": {"operand": "{=approve:outcome}", "op": "=", "value": "approved"},
         "then": [{"type": "set_field", "field": "STAGE_ID", "value": "WON"}],
         "otherwise": [{"type": "set_field", "field": "STAGE_ID", "value": "LOSE"}]}
    ])
}

fn deal(w: &World) -> Vec<String> {
    let mut fields = serde_json::Map::new();
    fields.insert("TITLE".into(), json!("Shipment"));
    let spec = DocumentSpec { fields, ..Default::default() };
    w.emu.create_document(&w.portal.domain, spec).unwrap().document_id
}

/// A world with the `notify` activity registered and the approval template added by REST.
async fn approval_world() -> (World, u64) {
    let w = World::new().await;
    let properties = json!({"title": {"Name": "Title", "Type": "string"}});
    let fields = json!({"CODE": "notify", "USE_SUBSCRIPTION": "N", "PROPERTIES": properties});
    w.register("bizproc.activity.add", fields).await;
    let add = json!({"DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "DEAL"], "NAME": "Approval",
                     "TEMPLATE_DATA": template_data(&approval_steps())});
    let (status, body) = w.call("bizproc.workflow.template.add", add).await;
    assert_eq!(status, 200, "{body}");
    (w, body["result"].as_u64().unwrap())
}

async fn start(w: &World, template_id: u64, document_id: &[String]) -> String {
    let (status, body) = w
        .call(
            "bizproc.workflow.start",
            json!({"TEMPLATE_ID": template_id, "DOCUMENT_ID": document_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["result"].as_str().unwrap().to_owned()
}

/// `bizproc.task.list` as `token`'s user until it lists `n` tasks.
async fn tasks_of(w: &World, token: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = w
            .call_with(
                token,
                "bizproc.task.list",
                json!({"SELECT": ["ID", "WORKFLOW_ID", "NAME", "USER_ID", "STATUS"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["total"] == json!(n) || Instant::now() >= deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_workflow_started_by_rest_runs_its_template_and_a_task_completed_by_rest_moves_it_on() {
    let (w, template_id) = approval_world().await;
    let document_id = deal(&w);
    let workflow_id = start(&w, template_id, &document_id).await;
    let call = &w.echo.wait_for(HANDLER_PATH, 1).await[0];
    assert_eq!(call.json()["properties"]["title"], json!("Shipment"));
    assert_eq!(call.json()["workflow_id"], json!(workflow_id));
    let cfo = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 7).unwrap().access_token;
    let tasks = tasks_of(&w, &cfo, 1).await;
    let task = &tasks["result"][0];
    assert_eq!(
        (task["WORKFLOW_ID"].as_str(), task["NAME"].as_str(), &task["USER_ID"], &task["STATUS"]),
        (Some(workflow_id.as_str()), Some("Approve Shipment"), &json!("7"), &json!("0"))
    );
    let (_, running) = w
        .call(
            "bizproc.workflow.instances",
            json!({"SELECT": ["ID", "TEMPLATE_ID", "STARTED_BY", "DOCUMENT_ID"]}),
        )
        .await;
    assert_eq!(
        running["result"],
        json!([{"ID": workflow_id, "TEMPLATE_ID": template_id.to_string(), "STARTED_BY": "1", "DOCUMENT_ID": document_id[2]}])
    );
    let (status, body) = w
        .call_with(
            &cfo,
            "bizproc.task.complete",
            json!({"TASK_ID": task["ID"], "STATUS": "yes", "COMMENT": "ok"}),
        )
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    let state = w.emu.workflow(&w.portal.domain, &workflow_id).unwrap();
    assert_eq!(state.process_status, ProcessStatus::Completed);
    assert_eq!(
        w.emu.document(&w.portal.domain, &document_id).unwrap().fields["STAGE_ID"],
        json!("WON")
    );
    let (_, running) = w.call("bizproc.workflow.instances", json!({})).await;
    assert_eq!((&running["result"], &running["total"]), (&json!([]), &json!(0)));
    let (status, body) = w
        .call_with(&cfo, "bizproc.task.complete", json!({"TASK_ID": task["ID"], "STATUS": 2}))
        .await;
    assert_eq!((status, err(&body)), (400, ("ERROR_TASK_COMPLETED", "Task already completed")));
    let tasks = tasks_of(&w, &cfo, 1).await;
    assert_eq!(tasks["result"][0]["STATUS"], json!("1"));
}

#[tokio::test]
async fn workflow_start_refuses_what_the_portal_refuses() {
    let (w, template_id) = approval_world().await;
    let document_id = deal(&w);
    let cases = [
        (json!({"DOCUMENT_ID": document_id}), ("ERROR_WRONG_WORKFLOW_ID", "Empty TEMPLATE_ID")),
        (
            json!({"TEMPLATE_ID": 999, "DOCUMENT_ID": document_id}),
            ("ERROR_WRONG_WORKFLOW_ID", "Template not found"),
        ),
        (json!({"TEMPLATE_ID": template_id, "DOCUMENT_ID": "DEAL_1"}), ("", "Wrong DOCUMENT_ID!")),
        (
            json!({"TEMPLATE_ID": template_id, "DOCUMENT_ID": ["crm", "CCrmDocumentDeal", "DEAL_404"]}),
            ("", "Incorrect document type!"),
        ),
    ];
    for (params, expected) in cases {
        let (status, body) = w.call("bizproc.workflow.start", params.clone()).await;
        assert_eq!((status, err(&body)), (400, expected), "{params}");
    }
    let lead_type = vec!["crm".to_owned(), "CCrmDocumentLead".to_owned(), "LEAD".to_owned()];
    let lead = w
        .emu
        .create_document(
            &w.portal.domain,
            DocumentSpec { document_type: lead_type, ..Default::default() },
        )
        .unwrap();
    let (status, body) = w
        .call(
            "bizproc.workflow.start",
            json!({"TEMPLATE_ID": template_id, "DOCUMENT_ID": lead.document_id}),
        )
        .await;
    assert_eq!((status, err(&body)), (400, ("", "Template type and DOCUMENT_ID mismatch!")));
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "crm").unwrap();
    let (status, body) =
        post_json(&w.http, &format!("{hook}bizproc.workflow.start"), &json!({})).await;
    assert_eq!((status, err(&body).0), (401, "insufficient_scope"));
}

#[tokio::test]
async fn terminate_keeps_the_record_and_kill_deletes_it_both_for_admins() {
    let (w, template_id) = approval_world().await;
    let cfo = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 7).unwrap().access_token;
    let first = start(&w, template_id, &deal(&w)).await;
    let second = start(&w, template_id, &deal(&w)).await;
    let tasks = tasks_of(&w, &cfo, 2).await;
    let (status, body) = w.call_with(&cfo, "bizproc.workflow.instances", json!({})).await;
    assert_eq!((status, err(&body)), (403, ("ACCESS_DENIED", "Access denied!")));
    let (status, body) =
        w.call_with(&cfo, "bizproc.workflow.terminate", json!({"ID": first})).await;
    assert_eq!((status, err(&body).0), (403, "ACCESS_DENIED"));
    let (status, body) = w.call("bizproc.workflow.terminate", json!({"STATUS": "why"})).await;
    assert_eq!(
        (status, err(&body)),
        (400, ("ERROR_WRONG_WORKFLOW_ID", "Empty workflow instance ID"))
    );
    let (status, body) = w
        .call("bizproc.workflow.terminate", json!({"ID": first, "STATUS": "Stopped by hand"}))
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    let state = w.emu.workflow(&w.portal.domain, &first).unwrap();
    assert_eq!(state.process_status, ProcessStatus::Terminated);
    assert!(state.log.contains(&"Stopped by hand".to_owned()), "{:?}", state.log);
    let (status, _) = w.call("bizproc.workflow.terminate", json!({"ID": first})).await;
    assert_eq!(status, 400);
    let first_task = tasks["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["WORKFLOW_ID"] == json!(first))
        .unwrap();
    let (status, body) = w
        .call_with(&cfo, "bizproc.task.complete", json!({"TASK_ID": first_task["ID"], "STATUS": 1}))
        .await;
    assert_eq!((status, err(&body).0), (400, "ERROR_TASK_COMPLETED"));
    let (_, body) = w.call("bizproc.workflow.kill", json!({"ID": second})).await;
    assert_eq!(body["result"], json!(true));
    assert!(w.emu.workflow(&w.portal.domain, &second).is_err());
    let (_, running) = w.call("bizproc.workflow.instance.list", json!({})).await;
    assert_eq!(running["total"], json!(0));
    let tasks = tasks_of(&w, &cfo, 1).await;
    assert_eq!(tasks["result"][0]["WORKFLOW_ID"], json!(first));
}

#[tokio::test]
async fn task_methods_check_their_parameters_and_whose_task_it_is() {
    let (w, template_id) = approval_world().await;
    start(&w, template_id, &deal(&w)).await;
    let cfo = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 7).unwrap().access_token;
    let tasks = tasks_of(&w, &cfo, 1).await;
    let task_id = tasks["result"][0]["ID"].clone();
    let (status, body) =
        w.call_with(&cfo, "bizproc.task.list", json!({"FILTER": {"USER_ID": 1}})).await;
    assert_eq!((status, err(&body).0), (403, "ACCESS_DENIED"));
    // The admin sees every task; user 5 none.
    let (_, body) = w.call("bizproc.task.list", json!({})).await;
    assert_eq!(body["total"], json!(1));
    let other = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 5).unwrap().access_token;
    let (_, body) = w.call_with(&other, "bizproc.task.list", json!({})).await;
    assert_eq!(body["total"], json!(0));
    let cases = [
        (json!({"STATUS": "yes"}), ("ERROR_TASK_VALIDATION", "empty TASK_ID")),
        (
            json!({"TASK_ID": task_id, "STATUS": "maybe"}),
            ("ERROR_TASK_VALIDATION", "incorrect STATUS"),
        ),
        (json!({"TASK_ID": 999, "STATUS": "yes"}), ("ERROR_TASK_NOT_FOUND", "Task not found")),
    ];
    for (params, expected) in cases {
        let (status, body) = w.call_with(&cfo, "bizproc.task.complete", params.clone()).await;
        assert_eq!((status, err(&body)), (400, expected), "{params}");
    }
    let (status, body) = w
        .call_with(&other, "bizproc.task.complete", json!({"TASK_ID": task_id, "STATUS": "yes"}))
        .await;
    assert_eq!((status, err(&body).0), (400, "ERROR_TASK_NOT_FOUND"));
    let (status, body) = w
        .call_with(&cfo, "bizproc.task.complete", json!({"TASK_ID": task_id, "STATUS": "no"}))
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
}

#[tokio::test]
async fn templates_are_added_changed_and_deleted_only_by_their_app_and_listed_in_pages() {
    let (w, template_id) = approval_world().await;
    let data = template_data(&approval_steps());
    let deal_type = json!(["crm", "CCrmDocumentDeal", "DEAL"]);
    let cases = [
        (json!({"NAME": "x", "TEMPLATE_DATA": data}), "Incorrect field DOCUMENT_TYPE!"),
        (json!({"DOCUMENT_TYPE": deal_type, "TEMPLATE_DATA": data}), "Empty template name!"),
        (
            json!({"DOCUMENT_TYPE": deal_type, "NAME": "x", "AUTO_EXECUTE": 8, "TEMPLATE_DATA": data}),
            "Incorrect field AUTO_EXECUTE!",
        ),
        (
            json!({"DOCUMENT_TYPE": deal_type, "NAME": "x", "TEMPLATE_DATA": ["t.bpt", "not base64!"]}),
            "Incorrect field TEMPLATE_DATA!",
        ),
    ];
    for (params, message) in cases {
        let (status, body) = w.call("bizproc.workflow.template.add", params.clone()).await;
        assert_eq!(
            (status, err(&body)),
            (400, ("ERROR_TEMPLATE_VALIDATION_FAILURE", message)),
            "{params}"
        );
    }
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "bizproc").unwrap();
    let (status, body) =
        post_json(&w.http, &format!("{hook}bizproc.workflow.template.add"), &json!({})).await;
    assert_eq!(
        (status, err(&body)),
        (403, ("ACCESS_DENIED", "Access denied! Application context required"))
    );

    let (status, body) = w
        .call(
            "bizproc.workflow.template.update",
            json!({"ID": template_id, "FIELDS": {"NAME": "Approval v2", "AUTO_EXECUTE": 1}}),
        )
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(template_id)));
    let (_, body) =
        w.call("bizproc.workflow.template.update", json!({"ID": template_id, "FIELDS": {}})).await;
    assert_eq!(err(&body), ("ERROR_TEMPLATE_VALIDATION_FAILURE", "No fields to update."));
    let (_, body) = w
        .call("bizproc.workflow.template.update", json!({"ID": 999, "FIELDS": {"NAME": "y"}}))
        .await;
    assert_eq!(err(&body), ("ERROR_TEMPLATE_NOT_FOUND", "Workflow template not found."));
    // A template of the control API belongs to no app.
    let mut others = Vec::new();
    for i in 0..51 {
        let t = WorkflowTemplate { name: format!("control {i:02}"), ..Default::default() };
        others.push(w.emu.create_template(&w.portal.domain, t).unwrap().id);
    }
    let (_, body) = w
        .call("bizproc.workflow.template.update", json!({"ID": others[0], "FIELDS": {"NAME": "y"}}))
        .await;
    assert_eq!(
        err(&body),
        (
            "ERROR_TEMPLATE_NOT_OWNER",
            "You can update ONLY templates created by current application"
        )
    );
    let (_, body) = w.call("bizproc.workflow.template.delete", json!({"ID": others[0]})).await;
    assert_eq!(
        err(&body),
        (
            "ERROR_TEMPLATE_NOT_OWNER",
            "You can delete ONLY templates created by current application"
        )
    );

    // 52 templates: a page of 50 with `next`, then the last 2 without.
    let (_, page) = w.call("bizproc.workflow.template.list", json!({})).await;
    assert_eq!(
        (page["result"].as_array().unwrap().len(), &page["total"], &page["next"]),
        (50, &json!(52), &json!(50))
    );
    assert_eq!(page["result"][0], json!({"ID": template_id}));
    let (_, page) = w.call("bizproc.workflow.template.list", json!({"start": 50})).await;
    assert_eq!(page["result"].as_array().unwrap().len(), 2);
    assert!(page.get("next").is_none(), "{page}");
    let (_, page) = w
        .call("bizproc.workflow.template.list", json!({"SELECT": ["ID", "NAME", "SYSTEM_CODE", "AUTO_EXECUTE"], "FILTER": {"<=ID": template_id}, "ORDER": {"ID": "DESC"}}))
        .await;
    assert_eq!(
        page["result"],
        json!([{"ID": template_id, "NAME": "Approval v2", "SYSTEM_CODE": format!("rest_app_{}", w.app.id), "AUTO_EXECUTE": 1}])
    );
    let (status, body) =
        w.call("bizproc.workflow.template.list", json!({"FILTER": {"%NAME": "x"}})).await;
    assert_eq!((status, err(&body)), (400, ("ERROR_ARGUMENT", "Filter operation not allowed: %")));
    let (_, body) = w.call("bizproc.workflow.template.list", json!({"ORDER": {"ID": "UP"}})).await;
    assert_eq!(err(&body), ("ERROR_ARGUMENT", "Order direction should be one of {ASC|DESC}"));

    let (status, body) =
        w.call("bizproc.workflow.template.delete", json!({"ID": template_id})).await;
    assert_eq!((status, &body["result"]), (200, &Value::Null));
    let (_, body) = w.call("bizproc.workflow.template.delete", json!({"ID": template_id})).await;
    assert_eq!(err(&body).0, "ERROR_TEMPLATE_NOT_FOUND");
}
