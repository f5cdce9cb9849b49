//! The BP designer's settings dialog (protocol §1.8): the page on the portal's own origin opens
//! the app's placement handler in a frame with the portal's real POST and `PLACEMENT_OPTIONS`;
//! Save parses the values by type as `getPropertiesDialogValues` does, refuses what the portal
//! refuses, and stores the rest so that the next run's call carries them, resolved. The frame
//! protocol itself runs in a browser and is tested there (the app side's browser test).

use b24_emulator::{DocumentSpec, WorkflowTemplate};
use serde_json::{Value, json};

use crate::support::{HANDLER_PATH, World, get_json, post_json};

/// Where the app's form would be: a path on the echo server.
const FORM_PATH: &str = "/bitrix/settings/check_credit";

/// A world with two actions: `lookup` (no waiting, returns `region`) and `check_credit`, whose
/// settings form is the app's placement handler; a deal; and a template running `lookup` and
/// then `check_credit` as step `check`.
async fn dialog_world() -> (World, u64, Vec<String>) {
    let w = World::new().await;
    let lookup = json!({
        "CODE": "lookup", "NAME": "Look up the region", "USE_SUBSCRIPTION": "N",
        "RETURN_PROPERTIES": {"region": {"Name": {"en": "Region", "ru": "Регион"}, "Type": "string"}},
    });
    w.register("bizproc.activity.add", lookup).await;
    let check = json!({
        "CODE": "check_credit", "NAME": "Credit check", "USE_SUBSCRIPTION": "Y",
        "USE_PLACEMENT": "Y", "PLACEMENT_HANDLER": format!("{}{FORM_PATH}", w.echo.url),
        "PROPERTIES": {
            "company_id": {"Name": "Company", "Type": "int", "Required": "Y"},
            "amount": {"Name": "Amount", "Type": "double", "Required": "Y"},
            "note": {"Name": "Note", "Type": "string", "Default": "none"},
            "tags": {"Name": "Tags", "Type": "string", "Multiple": "Y"},
            "mode": {"Name": "Mode", "Type": "select", "Options": {"fast": "Fast", "full": "Full"}},
            "urgent": {"Name": "Urgent", "Type": "bool"}
        },
    });
    w.register("bizproc.activity.add", check).await;
    let fields =
        json!({"TITLE": "Shipment", "COMPANY_ID": 1001, "OPPORTUNITY": 9000, "REGION": "EU"});
    let spec =
        DocumentSpec { fields: fields.as_object().unwrap().clone(), ..DocumentSpec::default() };
    let deal = w.emu.create_document(&w.portal.domain, spec).unwrap().document_id;
    let template: WorkflowTemplate = serde_json::from_value(json!({
        "name": "Credit",
        "parameters": {"Reason": {"Name": "Reason", "Default": "routine"}},
        "variables": {"Approver": {"Name": "Approver", "Type": "user", "Default": "user_7"}},
        "constants": {"Limit": {"Name": "Limit", "Type": "double", "Default": 5000}},
        "steps": [
            {"type": "activity", "name": "lookup", "code": "lookup"},
            {"type": "activity", "name": "check", "code": "check_credit",
             "properties": {"company_id": "{=Document:COMPANY_ID}", "amount": "{=Document:OPPORTUNITY}"}}
        ]
    }))
    .unwrap();
    let template = w.emu.create_template(&w.portal.domain, template).unwrap();
    (w, template.id, deal)
}

/// `& < > " '` back from their entities.
fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The unescaped value of attribute `name` in the first tag of `html` that starts with `start`.
fn attr(html: &str, start: &str, name: &str) -> Option<String> {
    let tag = &html[html.find(start)?..];
    let tag = &tag[..tag.find('>')?];
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(unescape(&tag[at..at + tag[at..].find('"')?]))
}

/// Every input in `html`: `(name, value)`.
fn inputs(html: &str) -> Vec<(String, String)> {
    html.match_indices("<input ")
        .map(|(at, _)| {
            let input = &html[at..];
            (attr(input, "<input", "name").unwrap(), attr(input, "<input", "value").unwrap())
        })
        .collect()
}

/// Every hidden input of the placement form.
fn placement_fields(html: &str) -> Vec<(String, String)> {
    let form = &html[html.find("<form id=\"placement-form\"").unwrap()..];
    inputs(&form[..form.find("</form>").unwrap()])
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

async fn page(w: &World, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = w.http.get(url).send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

async fn save(w: &World, template_id: u64, properties: Value) -> (u16, Value) {
    let url = format!("http://{}/designer/{template_id}/check", w.portal.domain);
    post_json(&w.http, &url, &json!({ "properties": properties })).await
}

#[tokio::test]
async fn the_dialog_opens_the_apps_form_with_the_portals_real_post() {
    let (w, template_id, _) = dialog_world().await;
    let domain = &w.portal.domain;

    // The control route sends the browser to the portal's own origin.
    let control = format!(
        "{}/control/portals/{domain}/templates/{template_id}/designer/check",
        w.emu.control_url()
    );
    let resp = w.http.get(&control).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("http://{domain}/designer/{template_id}/check"));
    let missing = format!(
        "{}/control/portals/{domain}/templates/{template_id}/designer/nope",
        w.emu.control_url()
    );
    assert_eq!(get_json(&w.http, &missing).await.0, 404);

    let (status, headers, html) = page(&w, &location).await;
    assert_eq!(status, 200, "{html}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("frame-src {}", w.echo.url)) && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!html.contains("<script>") && !html.contains("style="), "nothing inline: {html}");

    // The frame is named `host|0|APP_SID`, and the hidden form targets it.
    let frame = attr(&html, "<iframe", "name").unwrap();
    let sid = frame.strip_prefix(&format!("{domain}|0|")).unwrap().to_owned();
    assert_eq!(sid.len(), 32, "{frame}");
    assert_eq!(attr(&html, "<form id=\"placement-form\"", "target").unwrap(), frame);
    assert_eq!(attr(&html, "<form id=\"placement-form\"", "method").unwrap(), "POST");
    let action = attr(&html, "<form id=\"placement-form\"", "action").unwrap();
    let action = url::Url::parse(&action).unwrap();
    assert_eq!(action.path(), FORM_PATH);
    let query: Vec<(String, String)> = action.query_pairs().into_owned().collect();
    let expected =
        [("DOMAIN", domain.as_str()), ("PROTOCOL", "0"), ("LANG", "en"), ("APP_SID", &sid)];
    assert_eq!(query, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));

    let fields = placement_fields(&html);
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "AUTH_ID",
            "AUTH_EXPIRES",
            "REFRESH_ID",
            "member_id",
            "status",
            "PLACEMENT",
            "PLACEMENT_OPTIONS"
        ]
    );
    assert_eq!(field(&fields, "AUTH_EXPIRES"), "3600");
    assert_eq!(field(&fields, "member_id"), w.portal.member_id);
    assert_eq!(field(&fields, "status"), "L");
    assert_eq!(field(&fields, "PLACEMENT"), "BIZPROC_ACTIVITY_PROPERTIES_DIALOG");
    // AUTH_ID is a real token of the app, for the administrator.
    let (status, body) = w.call_with(field(&fields, "AUTH_ID"), "app.info", json!({})).await;
    assert_eq!(status, 200, "{body}");

    let options: Value = serde_json::from_str(field(&fields, "PLACEMENT_OPTIONS")).unwrap();
    assert_eq!(
        (&options["code"], &options["activity_name"]),
        (&json!("check_credit"), &json!("check"))
    );
    assert_eq!(
        options["properties"]["company_id"],
        json!({"NAME": "Company", "TYPE": "int", "REQUIRED": "Y"})
    );
    assert_eq!(options["properties"]["mode"]["OPTIONS"], json!({"fast": "Fast", "full": "Full"}));
    assert_eq!(
        options["current_values"],
        json!({"company_id": "{=Document:COMPANY_ID}", "amount": "{=Document:OPPORTUNITY}",
               "note": "none", "tags": [], "mode": "", "urgent": ""})
    );
    assert_eq!(options["document_type"], json!(["crm", "CCrmDocumentDeal", "DEAL"]));
    let fields_of = &options["document_fields"];
    assert_eq!(
        fields_of["OPPORTUNITY"],
        json!({"Name": "Amount", "Type": "double", "Filterable": true, "Editable": true,
               "Required": false, "BaseType": "double"})
    );
    assert_eq!(
        (&fields_of["ASSIGNED_BY_ID"]["Type"], &fields_of["REGION"]["Type"]),
        (&json!("user"), &json!("string"))
    );
    let template = &options["template"];
    assert_eq!(
        template["parameters"],
        json!([{"Id": "Reason", "Type": "string", "Name": "Reason", "Description": "",
                "Multiple": false, "Required": false, "Options": "", "Settings": "", "Default": "routine"}])
    );
    assert_eq!(template["variables"][0]["Default"], "user_7");
    assert_eq!(template["constants"][0]["Id"], "Limit");
    assert_eq!(
        (&template["global_variables"], &template["global_constants"]),
        (&json!([]), &json!([]))
    );
    let lookup =
        w.emu.registrations(domain).unwrap().into_iter().find(|r| r.code == "lookup").unwrap();
    assert_eq!(
        template["return_activities"],
        json!([{"Id": "lookup", "Type": format!("rest_{}", lookup.internal_code),
                "Title": "Look up the region",
                "Return": [{"Id": "region", "Name": "Region", "Type": "string"}]}])
    );

    // What the page's script reads: the handler's origin, the SID and getInitData's answer.
    let config: Value =
        serde_json::from_str(&attr(&html, "<main", "data-config").unwrap()).unwrap();
    let placement = &config["placement"];
    assert_eq!((&placement["origin"], &placement["sid"]), (&json!(w.echo.url), &json!(sid)));
    let init = &placement["init"];
    assert_eq!(init["PLACEMENT_OPTIONS"], options);
    assert_eq!(init["AUTH_ID"], field(&fields, "AUTH_ID"));
    assert_eq!(
        (&init["DOMAIN"], &init["PROTOCOL"], &init["IS_ADMIN"]),
        (&json!(domain), &json!(0), &json!(true))
    );
    assert_eq!(
        config["properties"],
        json!(["company_id", "amount", "note", "tags", "mode", "urgent"])
    );

    // refreshAuth's source: another working token pair.
    let auth = post_json(&w.http, &format!("{location}/auth"), &json!({})).await.1;
    assert_ne!(auth["AUTH_ID"], init["AUTH_ID"]);
    let (status, _) = w.call_with(auth["AUTH_ID"].as_str().unwrap(), "app.info", json!({})).await;
    assert_eq!((status, &auth["AUTH_EXPIRES"]), (200, &json!(3600)));

    for (asset, kind) in [("designer.js", "text/javascript"), ("designer.css", "text/css")] {
        let (status, headers, body) =
            page(&w, &format!("http://{domain}/designer/assets/{asset}")).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], kind);
        assert!(!body.is_empty());
    }
}

#[tokio::test]
async fn saved_values_are_typed_and_the_next_run_sends_them_resolved() {
    let (w, template_id, deal) = dialog_world().await;
    let (status, body) = save(
        &w,
        template_id,
        json!({"company_id": "1 001", "amount": "{=Document:OPPORTUNITY}", "note": "for {=Document:TITLE}",
               "tags": ["a", "", "{=Constant:Limit}"], "mode": "fast", "urgent": "yes"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stored = json!({"company_id": 1001, "amount": "{=Document:OPPORTUNITY}", "note": "for {=Document:TITLE}",
                        "tags": ["a", "{=Constant:Limit}"], "mode": "fast", "urgent": "Y"});
    assert_eq!(body["properties"], stored);
    let template = w.emu.template(&w.portal.domain, template_id).unwrap();
    let check = serde_json::to_value(&template.steps[1]).unwrap();
    assert_eq!(check["properties"], stored);

    let id = w.emu.start_template(&w.portal.domain, template_id, &deal).await.unwrap();
    let calls = w.echo.wait_for(HANDLER_PATH, 2).await;
    let call = calls.iter().map(|c| c.json()).find(|c| c["code"] == "check_credit").unwrap();
    assert_eq!(
        call["properties"],
        json!({"company_id": "1001", "amount": "9000", "note": "for Shipment", "tags": ["a", "5000"],
               "mode": "fast", "urgent": "Y"})
    );
    assert_eq!(w.emu.workflow(&w.portal.domain, &id).unwrap().activities.len(), 2);

    // The control route saves the same way.
    let url = format!(
        "{}/control/portals/{}/templates/{template_id}/steps/check/properties",
        w.emu.control_url(),
        w.portal.domain
    );
    let resp = w
        .http
        .put(&url)
        .json(&json!({"properties": {"company_id": "7", "amount": "1,5"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["properties"],
        json!({"company_id": 7, "amount": 1.5, "note": null, "tags": [], "mode": null, "urgent": null})
    );
}

#[tokio::test]
async fn save_refuses_what_the_dialog_refuses_and_then_stores_nothing() {
    let (w, template_id, _) = dialog_world().await;
    let before = w.emu.template(&w.portal.domain, template_id).unwrap();
    let refused = [
        (
            json!({"company_id": "", "amount": " "}),
            json!([
                {"code": "NotExist", "parameter": "company_id", "message": "This field is required: Company"},
                {"code": "NotExist", "parameter": "amount", "message": "This field is required: Amount"}
            ]),
        ),
        (
            json!({"company_id": "12abc", "amount": "1"}),
            json!([{"code": "ErrorValue", "parameter": "property_company_id",
                    "message": "The field value is not integer."}]),
        ),
        (
            json!({"company_id": "1", "amount": "1", "mode": "slow"}),
            json!([{"code": "ErrorValue", "parameter": "property_mode",
                    "message": "The selected item is not a list item."}]),
        ),
        (
            json!({"company_id": "1", "amount": "1", "urgent": "perhaps"}),
            json!([{"code": "ErrorValue", "parameter": "property_urgent",
                    "message": "The field value is not a valid Yes/No value."}]),
        ),
    ];
    for (properties, errors) in refused {
        let (status, body) = save(&w, template_id, properties.clone()).await;
        assert_eq!((status, &body), (400, &errors), "{properties}");
    }
    let (status, body) =
        save(&w, template_id, json!({"company_id": "{=Variable:Nobody}", "amount": "1"})).await;
    assert_eq!((status, body[0]["code"].as_str()), (400, Some("ErrorValue")), "{body}");
    assert!(body[0]["message"].as_str().unwrap().contains("no variable named `Nobody`"), "{body}");
    assert_eq!(w.emu.template(&w.portal.domain, template_id).unwrap(), before, "nothing stored");

    let url = format!("http://{}/designer/{template_id}/nope", w.portal.domain);
    let (status, body) = post_json(&w.http, &url, &json!({"properties": {}})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, html) = page(&w, &url).await;
    assert_eq!(status, 404);
    assert!(html.contains("has no activity step `nope`"), "{html}");
}

#[tokio::test]
async fn without_a_placement_the_dialog_is_a_plain_form_with_everything_escaped() {
    let w = World::new().await;
    let fields = json!({
        "CODE": "plain", "NAME": "<b>Plain</b> & \"simple\"",
        "PROPERTIES": {
            "who": {"Name": "Who <i>", "Type": "string", "Required": "Y"},
            "cc": {"Name": "Copies", "Type": "user", "Multiple": "Y"}
        },
    });
    w.register("bizproc.activity.add", fields).await;
    let template: WorkflowTemplate = serde_json::from_value(json!({
        "steps": [{"type": "activity", "name": "say", "code": "plain",
                   "properties": {"who": "\"><script>x</script>", "cc": ["user_1", "7"]}}]
    }))
    .unwrap();
    let template = w.emu.create_template(&w.portal.domain, template).unwrap();
    let url = w.emu.designer_url(&w.portal.domain, template.id, "say").unwrap();
    let (status, headers, html) = page(&w, &url).await;
    assert_eq!(status, 200);
    assert!(!html.contains("<iframe") && !html.contains("<script>x"), "{html}");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-src 'none'"));
    assert!(html.contains("<h1>&lt;b&gt;Plain&lt;/b&gt; &amp; &quot;simple&quot;</h1>"), "{html}");
    assert_eq!(
        attr(&html, "<input type=\"text\" id=\"property_who\"", "value").unwrap(),
        "\"><script>x</script>"
    );
    let copies: Vec<String> =
        inputs(&html).into_iter().filter(|(n, _)| n == "property_cc[]").map(|(_, v)| v).collect();
    assert_eq!(copies, ["user_1", "7", ""]);

    // A bare user ID is taken as `user_N`; an unknown user is refused.
    let save_url = format!("http://{}/designer/{}/say", w.portal.domain, template.id);
    let saved = json!({"properties": {"who": "me", "cc": ["1", "user_7"]}});
    let (status, body) = post_json(&w.http, &save_url, &saved).await;
    assert_eq!((status, &body["properties"]["cc"]), (200, &json!(["user_1", "user_7"])), "{body}");
    let refused = json!({"properties": {"who": "me", "cc": ["boss"]}});
    let (status, body) = post_json(&w.http, &save_url, &refused).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!([{"code": "NotFound", "parameter": "property_cc",
                    "message": "A user or user group 'boss' was not found."}])
        )
    );
}
