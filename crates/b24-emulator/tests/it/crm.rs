//! `crm.<kind>.get/list/update` on the documents workflows run on: parameters, paging, filters,
//! error strings and the scope check; a field a workflow sets is the field the CRM reads.

use b24_emulator::{DocumentSpec, ProcessStatus, SetFieldStep, Step, WorkflowTemplate};
use serde_json::{Value, json};

use crate::support::{World, err, post_json};

fn ids(body: &Value) -> Vec<&str> {
    body["result"].as_array().unwrap().iter().map(|r| r["ID"].as_str().unwrap()).collect()
}

/// Deals `DEAL_1` … `DEAL_n`, titled "Deal i" with an amount of `i * 100`.
fn deals(w: &World, n: u64) {
    for i in 1..=n {
        let mut fields = serde_json::Map::new();
        fields.insert("TITLE".into(), json!(format!("Deal {i}")));
        fields.insert("OPPORTUNITY".into(), json!(i * 100));
        w.emu
            .create_document(&w.portal.domain, DocumentSpec { fields, ..Default::default() })
            .unwrap();
    }
}

#[tokio::test]
async fn crm_deal_get_answers_a_deal_or_the_crm_errors() {
    let w = World::new().await;
    deals(&w, 2);
    let (status, body) = w.call("crm.deal.get", json!({"id": 2})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], json!({"ID": "2", "TITLE": "Deal 2", "OPPORTUNITY": 200}));
    let (status, body) = w.call("crm.deal.get", json!({"ID": "0"})).await;
    assert_eq!((status, err(&body)), (400, ("", "ID is not defined or invalid.")));
    let (status, body) = w.call("crm.deal.get", json!({"id": 3})).await;
    assert_eq!((status, err(&body)), (400, ("", "Not found")));
    // A deal is not a lead.
    let (_, body) = w.call("crm.lead.get", json!({"id": 1})).await;
    assert_eq!(err(&body), ("", "Not found"));
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "bizproc").unwrap();
    let (status, body) =
        post_json(&w.http, &format!("{hook}crm.deal.get"), &json!({"id": 1})).await;
    assert_eq!((status, err(&body).0), (401, "insufficient_scope"));
}

#[tokio::test]
async fn crm_deal_list_pages_by_fifty_filters_orders_and_selects() {
    let w = World::new().await;
    deals(&w, 53);
    let (_, page) = w.call("crm.deal.list", json!({})).await;
    assert_eq!(
        (page["result"].as_array().unwrap().len(), &page["total"], &page["next"]),
        (50, &json!(53), &json!(50))
    );
    assert_eq!(page["result"][0], json!({"ID": "1", "TITLE": "Deal 1", "OPPORTUNITY": 100}));
    let (_, page) = w.call("crm.deal.list", json!({"start": 50})).await;
    assert_eq!(ids(&page), ["51", "52", "53"]);
    assert!(page.get("next").is_none(), "{page}");
    // `start=-1`: no count (total 0, no next); the client pages on with `>ID` (§5.2).
    let (_, page) = w.call("crm.deal.list", json!({"start": -1})).await;
    assert_eq!((ids(&page).len(), &page["total"]), (50, &json!(0)));
    assert!(page.get("next").is_none(), "{page}");
    let uncounted = json!({"start": -1, "filter": {">ID": 50}, "order": {"ID": "ASC"}});
    let (_, page) = w.call("crm.deal.list", uncounted).await;
    assert_eq!((ids(&page), &page["total"]), (vec!["51", "52", "53"], &json!(0)));
    let (_, page) = w
        .call("crm.deal.list", json!({"select": ["ID", "TITLE"], "filter": {">OPPORTUNITY": 5000}, "order": {"OPPORTUNITY": "DESC"}}))
        .await;
    assert_eq!(page["result"][0], json!({"ID": "53", "TITLE": "Deal 53"}));
    assert_eq!((ids(&page), &page["total"]), (vec!["53", "52", "51"], &json!(3)));
    let (_, page) =
        w.call("crm.deal.list", json!({"filter": {"%TITLE": "deal 5"}, "select": ["ID"]})).await;
    assert_eq!(ids(&page), ["5", "50", "51", "52", "53"]);
    let (_, page) =
        w.call("crm.deal.list", json!({"filter": {"@ID": [2, 4]}, "select": ["ID"]})).await;
    assert_eq!(ids(&page), ["2", "4"]);
    let (status, body) = w.call("crm.deal.list", json!({"filter": {"~TITLE": "x"}})).await;
    assert_eq!((status, err(&body)), (400, ("ERROR_ARGUMENT", "Filter operation not allowed: ~")));
}

#[tokio::test]
async fn crm_update_changes_the_fields_given_and_workflows_and_the_crm_share_one_document() {
    let w = World::new().await;
    deals(&w, 1);
    let lead_type = vec!["crm".to_owned(), "CCrmDocumentLead".to_owned(), "LEAD".to_owned()];
    let mut fields = serde_json::Map::new();
    fields.insert("TITLE".into(), json!("A lead"));
    let spec = DocumentSpec { document_type: lead_type.clone(), id: Some("LEAD_7".into()), fields };
    w.emu.create_document(&w.portal.domain, spec).unwrap();
    let (status, body) =
        w.call("crm.deal.update", json!({"id": 1, "fields": {"STAGE_ID": "PREPARATION"}})).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
    let deal = vec!["crm".to_owned(), "CCrmDocumentDeal".to_owned(), "DEAL_1".to_owned()];
    let stored = w.emu.document(&w.portal.domain, &deal).unwrap();
    assert_eq!(
        (&stored.fields["STAGE_ID"], &stored.fields["TITLE"]),
        (&json!("PREPARATION"), &json!("Deal 1"))
    );
    let (_, body) = w.call("crm.deal.update", json!({"id": 1})).await;
    assert_eq!(err(&body), ("", "The parameter 'fields' must be array."));
    let (_, body) = w.call("crm.deal.update", json!({"id": 9, "fields": {"TITLE": "x"}})).await;
    assert_eq!(err(&body), ("", "Not found"));
    let (_, body) =
        w.call("crm.lead.update", json!({"ID": 7, "FIELDS": {"STATUS_ID": "IN_PROCESS"}})).await;
    assert_eq!(body["result"], json!(true));
    let (_, body) = w.call("crm.lead.list", json!({})).await;
    assert_eq!(body["result"], json!([{"ID": "7", "TITLE": "A lead", "STATUS_ID": "IN_PROCESS"}]));
    // A workflow's field change is what crm.deal.get reads.
    let set_stage = Step::SetField(SetFieldStep { field: "STAGE_ID".into(), value: json!("WON") });
    let template = WorkflowTemplate { steps: vec![set_stage], ..Default::default() };
    let template = w.emu.create_template(&w.portal.domain, template).unwrap();
    let workflow_id = w.emu.start_template(&w.portal.domain, template.id, &deal).await.unwrap();
    let state = w.emu.workflow(&w.portal.domain, &workflow_id).unwrap();
    assert_eq!(state.process_status, ProcessStatus::Completed);
    let (_, body) = w.call("crm.deal.get", json!({"id": 1})).await;
    assert_eq!(body["result"]["STAGE_ID"], json!("WON"));
}
