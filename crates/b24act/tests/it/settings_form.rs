//! The settings form over plain HTTP, as the designer's frame and an attacker reach it: the
//! registration asks for it, a genuine placement POST gets the typed form (the declared fields,
//! the designer's values and expressions, escaped, in the portal's language, framable by that
//! portal only), and forged or foreign POSTs are refused with a page that says why, their
//! tokens sent nowhere but the installed portal. The browser side is in `settings_form_browser`.

use b24_emulator::AppSpec;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{CLIENT_ID, CODE, NOTIFY_CODE, Options, TestApp};

const PLACEMENT: &str = "BIZPROC_ACTIVITY_PROPERTIES_DIALOG";

async fn app() -> TestApp {
    TestApp::start(Options { settings_form: true, ..Options::default() }).await
}

/// The designer's POST for `code`: the query the portal appends and the form it sends.
async fn post(
    app: &TestApp,
    code: &str,
    query: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let url = format!("http://{}/bitrix/settings/{code}?{query}", app.listen);
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A genuine POST's fields: a fresh token of user 1, the portal's member_id, and `options`.
fn genuine(app: &TestApp, options: &serde_json::Value) -> Vec<(&'static str, String)> {
    let token = app.emulator.issue_token(&app.domain, CLIENT_ID, 1).unwrap();
    vec![
        ("AUTH_ID", token.access_token),
        ("AUTH_EXPIRES", "3600".into()),
        ("REFRESH_ID", token.refresh_token),
        ("member_id", token.member_id),
        ("status", "L".into()),
        ("PLACEMENT", PLACEMENT.into()),
        ("PLACEMENT_OPTIONS", options.to_string()),
    ]
}

fn borrowed<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

fn app_info_calls(app: &TestApp) -> usize {
    app.calls_of("app.info")
}

#[tokio::test]
async fn a_genuine_post_gets_the_typed_form_framable_by_its_portal_only() {
    let app = app().await;
    let listen = app.listen;
    let registration = app
        .emulator
        .registrations(&app.domain)
        .unwrap()
        .into_iter()
        .find(|r| r.code == CODE)
        .unwrap();
    assert!(registration.use_placement, "the action is registered with USE_PLACEMENT=Y");
    assert_eq!(
        registration.placement_handler.as_deref(),
        Some(format!("http://{listen}/bitrix/settings/{CODE}").as_str())
    );

    let options = json!({
        "code": CODE,
        "activity_name": "A1_2_3",
        "current_values": { "company_id": "{=Document:COMPANY_ID}", "note": "<script>alert(1)</script>" },
        "document_fields": { "COMPANY_ID": { "Name": "Company" }, "OPPORTUNITY": { "Name": "Amount" } },
        "template": {
            "variables": [{ "Id": "Limit", "Name": "Limit <b>" }],
            "return_activities": [{ "Id": "A9_9", "Title": "Earlier", "Return": [{ "Id": "ok", "Name": "OK" }] }]
        }
    });
    let fields = genuine(&app, &options);
    let query = format!("DOMAIN={}&PROTOCOL=0&LANG=ru&APP_SID=0a1b2c3d", app.domain);
    let before = app_info_calls(&app);
    let response = post(&app, CODE, &query, &borrowed(&fields)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        policy.contains(&format!("frame-ancestors http://{}", app.domain)),
        "only the portal may frame the form: {policy}"
    );
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(headers.get("x-frame-options").is_none(), "X-Frame-Options would break the frame");
    assert_eq!(headers["cache-control"], "no-store");
    let page = response.text().await.unwrap();
    assert_eq!(app_info_calls(&app), before + 1, "the token was checked with the portal once");

    for id in ["company_id", "amount", "priority", "confirmed", "due", "remind_at", "approver"] {
        assert!(page.contains(&format!("name=\"{id}\"")), "a field for {id}");
    }
    assert!(page.contains("Сумма"), "labels in the portal's language");
    assert!(page.contains("Срочно"), "options in the portal's language");
    assert!(page.contains("value=\"{=Document:COMPANY_ID}\""), "the designer's value is shown");
    assert!(page.contains("&#60;script&#62;alert(1)"), "values are escaped");
    assert!(!page.contains("<script>alert"), "nothing the portal sent runs");
    assert!(page.contains("{=Variable:Limit}") && page.contains("Limit &#60;b&#62;"));
    assert!(page.contains("{=A9_9:ok}"), "earlier actions' return values are offered");
    assert!(page.contains("{=Document:OPPORTUNITY}"));
    assert!(page.contains(&format!("data-origin=\"http://{}\"", app.domain)));
    assert!(page.contains("data-sid=\"0a1b2c3d\""));

    let script =
        reqwest::get(format!("http://{listen}/bitrix/settings-assets/form.js")).await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.text().await.unwrap().contains("setPropertyValue"));
}

#[tokio::test]
async fn forged_and_foreign_posts_are_refused_and_say_why() {
    let app = app().await;
    let options = json!({ "code": CODE });
    let query = format!("DOMAIN={}&PROTOCOL=0&LANG=en&APP_SID=abc", app.domain);
    let good = genuine(&app, &options);
    let with = |name: &'static str, value: &'static str| {
        let mut fields = good.clone();
        fields.retain(|(n, _)| *n != name);
        fields.push((name, value.to_owned()));
        fields
    };

    // A made-up token: the portal is asked, says no.
    let before = app_info_calls(&app);
    let forged = post(&app, CODE, &query, &borrowed(&with("AUTH_ID", "forged-token"))).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.text().await.unwrap().contains("AUTH_ID"));
    assert_eq!(app_info_calls(&app), before + 1);

    // A portal that never installed the app: nobody is asked.
    let before = app_info_calls(&app);
    let stranger =
        post(&app, CODE, &query, &borrowed(&with("member_id", "0123456789abcdef"))).await;
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    assert!(stranger.text().await.unwrap().contains("has not installed this app"));
    assert_eq!(app_info_calls(&app), before, "no token goes anywhere for an unknown portal");

    // A genuine token, but the frame claims another portal: the token went to the stored one
    // only, and the page is refused.
    let elsewhere = "DOMAIN=evil.example.com&PROTOCOL=1&LANG=en&APP_SID=abc";
    let response = post(&app, CODE, elsewhere, &borrowed(&good)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("evil.example.com"));

    // Not the settings placement; no APP_SID; a form the designer would never send.
    let other =
        post(&app, CODE, &query, &borrowed(&with("PLACEMENT", "CRM_DEAL_DETAIL_TAB"))).await;
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    let no_sid = post(&app, CODE, "LANG=ru", &borrowed(&good)).await;
    assert_eq!(no_sid.status(), StatusCode::BAD_REQUEST);
    assert!(
        no_sid.text().await.unwrap().contains("APP_SID"),
        "refusals speak the portal's language too"
    );
    let wrong_action = json!({ "code": NOTIFY_CODE }).to_string();
    let mut fields = good.clone();
    fields.retain(|(n, _)| *n != "PLACEMENT_OPTIONS");
    fields.push(("PLACEMENT_OPTIONS", wrong_action));
    let response = post(&app, CODE, &query, &borrowed(&fields)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // An action without a form, and a body that is not a form.
    let formless = post(&app, NOTIFY_CODE, &query, &borrowed(&good)).await;
    assert_eq!(formless.status(), StatusCode::NOT_FOUND);
    let json_body = reqwest::Client::new()
        .post(format!("http://{}/bitrix/settings/{CODE}?{query}", app.listen))
        .json(&json!({ "AUTH_ID": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Another app's genuine token on the same portal.
    app.emulator.register_app(AppSpec {
        client_id: Some("local.other.app".into()),
        client_secret: Some("other-secret".into()),
        scope: "bizproc".into(),
        ..AppSpec::default()
    });
    // Installed without an install handler to tell: only the portal's state matters here.
    let _ = app.emulator.install_app(&app.domain, "local.other.app").await;
    let other_token = app.emulator.issue_token(&app.domain, "local.other.app", 1).unwrap();
    let mut fields = good.clone();
    fields.retain(|(n, _)| *n != "AUTH_ID");
    fields.push(("AUTH_ID", other_token.access_token));
    let response = post(&app, CODE, &query, &borrowed(&fields)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "another app's token is not ours");

    // And the genuine POST still works after all that.
    let response = post(&app, CODE, &query, &borrowed(&good)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_flood_of_forged_posts_costs_the_portal_a_bounded_number_of_requests() {
    use host::portals::USER_TOKEN_CHECKS_BURST;

    let app = app().await;
    let query = format!("DOMAIN={}&PROTOCOL=0&LANG=en&APP_SID=abc", app.domain);
    let mut forged = genuine(&app, &json!({ "code": CODE }));
    forged.retain(|(name, _)| *name != "AUTH_ID");
    forged.push(("AUTH_ID", "made-up-token".into()));

    let before = app_info_calls(&app);
    let burst = usize::try_from(USER_TOKEN_CHECKS_BURST).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..burst + 15 {
        statuses.push(post(&app, CODE, &query, &borrowed(&forged)).await.status());
    }
    let asked = app_info_calls(&app) - before;
    assert!(
        (burst..=burst + 1).contains(&asked),
        "the portal was asked {asked} times for {} POSTs",
        statuses.len()
    );
    assert!(statuses[..burst].iter().all(|s| *s == StatusCode::FORBIDDEN), "{statuses:?}");
    assert!(
        statuses[burst + 1..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "the rest are refused without asking the portal: {statuses:?}"
    );
    let refused = post(&app, CODE, &query, &borrowed(&forged)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.text().await.unwrap().contains("try again in"), "and say when to come back");
}

#[tokio::test]
async fn a_post_holding_more_values_than_the_form_shows_is_refused_before_the_portal_is_asked() {
    use host::settings_form::page::MAX_VALUES_PER_FIELD;

    let app = app().await;
    let query = format!("DOMAIN={}&PROTOCOL=0&LANG=en&APP_SID=abc", app.domain);
    let too_many: Vec<String> = (0..=MAX_VALUES_PER_FIELD).map(|n| n.to_string()).collect();
    let fields = genuine(&app, &json!({ "code": CODE, "current_values": { "tags": too_many } }));
    let before = app_info_calls(&app);
    let response = post(&app, CODE, &query, &borrowed(&fields)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(page.contains("`tags` holds 101 values"), "{page}");
    assert_eq!(app_info_calls(&app), before, "no request was spent on it");

    let at_most: Vec<String> = (0..MAX_VALUES_PER_FIELD).map(|n| n.to_string()).collect();
    let options = json!({
        "code": CODE,
        "current_values": { "tags": at_most },
        "document_fields": { "TITLE": { "Name": "Title" } },
    });
    let response = post(&app, CODE, &query, &borrowed(&genuine(&app, &options))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert_eq!(page.matches("name=\"tags\"").count(), MAX_VALUES_PER_FIELD);
    assert_eq!(page.matches("<template id=\"insert-menu\">").count(), 1, "one menu for all");
    assert_eq!(page.matches("{=Document:TITLE}").count(), 1, "its expressions written once");
}
