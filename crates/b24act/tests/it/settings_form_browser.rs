//! The settings form in a real headless Chromium, as an admin meets it in the BP designer: the
//! emulator's designer page frames the host's form (the real placement POST and frame
//! protocol); a typed value, a chosen option, a list and a document-field expression picked
//! from the menu are saved into the template, and the next workflow's call carries them with
//! the expression resolved. A required field left empty cannot be saved; a forged placement
//! POST shows a refusal in the frame; and the form's checks agree with the host's own
//! (`host::values`) on the same values. `B24ACT_SCREENSHOTS=1` saves the filled-in form in the
//! designer as `docs/settings-form.png`.

use std::time::{Duration, Instant};

use b24::incoming::PropertyValue;
use b24_emulator::templates::{CHECK_STEP, credit_approval};
use b24_emulator::{DocumentSpec, Step};
use fantoccini::Locator;
use host::values::{self, Shape};
use serde_json::{Value, json};
use store::{Job, JobFilter};

use crate::browser::Browser;
use crate::support::{CODE, Options, TestApp};

/// The designer's page for the credit check's step of a new credit-approval template, and the
/// template's id.
fn designer(app: &TestApp) -> (String, u64) {
    let template = app.emulator.create_template(&app.domain, credit_approval(CODE)).unwrap();
    let url = format!(
        "{}/control/portals/{}/templates/{}/designer/{CHECK_STEP}",
        app.emulator.control_url(),
        app.domain,
        template.id
    );
    (url, template.id)
}

/// Opens the designer at `url` and enters the frame once the host's form is in it.
async fn open_form(browser: &Browser, url: &str) {
    browser.client.goto(url).await.unwrap();
    enter_frame_when(browser, "#settings fieldset#field-company_id").await;
}

/// Enters the designer's frame and waits until `css` is in it.
async fn enter_frame_when(browser: &Browser, css: &str) {
    let c = &browser.client;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        c.enter_parent_frame().await.unwrap();
        if let Ok(frame) = c.find(Locator::Css("#placement-frame")).await
            && frame.enter_frame().await.is_ok()
            && c.find(Locator::Css(css)).await.is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never appeared in the frame: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The credit check's step properties as the template now holds them.
fn step_properties(app: &TestApp, template_id: u64) -> serde_json::Map<String, Value> {
    let template = app.emulator.template(&app.domain, template_id).unwrap();
    template
        .steps
        .iter()
        .find_map(|step| match step {
            Step::Activity(activity) if activity.name == CHECK_STEP => {
                Some(activity.properties.clone())
            }
            _ => None,
        })
        .expect("the template has the credit check's step")
}

/// Waits for the designer's status line to say `text`, or its error list to say anything.
async fn designer_says(browser: &Browser) -> (String, String) {
    let c = &browser.client;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = c.find(Locator::Css("#status")).await.unwrap().text().await.unwrap();
        let errors = c.find(Locator::Css("#errors")).await.unwrap().text().await.unwrap();
        if !status.trim().is_empty() || !errors.trim().is_empty() {
            return (status, errors);
        }
        assert!(Instant::now() < deadline, "the designer said nothing after Save");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The job the host took for `workflow_id`, once it is stored.
async fn job_of(app: &TestApp, workflow_id: &str) -> Job {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let filter =
            JobFilter { workflow_id: Some(workflow_id.to_owned()), ..JobFilter::default() };
        if let Some(job) = app.store().list_jobs(&filter).await.unwrap().pop() {
            return job;
        }
        assert!(Instant::now() < deadline, "no job for workflow {workflow_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_admin_sets_the_actions_properties_in_the_designer_and_the_next_call_carries_them() {
    let Some(browser) = Browser::start("settings_form_browser").await else { return };
    let app = TestApp::start(Options { settings_form: true, ..Options::default() }).await;
    let deal = app
        .emulator
        .create_document(
            &app.domain,
            DocumentSpec {
                fields: json!({ "TITLE": "Pallets", "COMPANY_ID": 42, "OPPORTUNITY": 1500.5 })
                    .as_object()
                    .unwrap()
                    .clone(),
                ..DocumentSpec::default()
            },
        )
        .unwrap();
    let (url, template_id) = designer(&app);
    let c = &browser.client;

    // A forged placement POST (the designer's own form, another AUTH_ID) is refused in the frame.
    c.goto(&url).await.unwrap();
    enter_frame_when(&browser, "#settings").await;
    c.enter_parent_frame().await.unwrap();
    c.execute(
        "const form = document.getElementById('placement-form');\
         form.querySelector('input[name=AUTH_ID]').value = 'forged-token';\
         form.submit();",
        vec![],
    )
    .await
    .unwrap();
    enter_frame_when(&browser, "p.refused").await;
    let refusal = c.find(Locator::Css("p.refused")).await.unwrap().text().await.unwrap();
    assert!(refusal.contains("AUTH_ID"), "the frame says why: {refusal}");
    assert!(c.find(Locator::Css("#settings")).await.is_err(), "and shows no form");

    // The real thing: values typed, chosen, listed and picked from the expression menu.
    open_form(&browser, &url).await;
    let company = c.find(Locator::Css("#field-company_id input")).await.unwrap();
    company.clear().await.unwrap();
    c.find(Locator::Css("#field-company_id select.insert"))
        .await
        .unwrap()
        .select_by_value("{=Document:COMPANY_ID}")
        .await
        .unwrap();
    assert_eq!(company.prop("value").await.unwrap().as_deref(), Some("{=Document:COMPANY_ID}"));
    let amount = c.find(Locator::Css("#field-amount input")).await.unwrap();
    amount.clear().await.unwrap();
    amount.send_keys("2500.75").await.unwrap();
    c.find(Locator::Css("#field-priority .values select"))
        .await
        .unwrap()
        .select_by_value("urgent")
        .await
        .unwrap();
    c.find(Locator::Css("#field-tags input")).await.unwrap().send_keys("red").await.unwrap();
    c.find(Locator::Css("#field-tags button.add")).await.unwrap().click().await.unwrap();
    let tags = c.find_all(Locator::Css("#field-tags input")).await.unwrap();
    assert_eq!(tags.len(), 2, "a second row for the list");
    tags[1].send_keys("blue").await.unwrap();
    let problems = c.find_all(Locator::Css(".problem:not([hidden])")).await.unwrap();
    assert!(problems.is_empty(), "nothing entered is wrong");

    c.enter_parent_frame().await.unwrap();
    c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
    browser.screenshot("settings-form.png").await;
    c.find(Locator::Css("#save")).await.unwrap().click().await.unwrap();
    let (status, errors) = designer_says(&browser).await;
    assert!(errors.trim().is_empty(), "the designer refused the values: {errors}");
    assert!(status.contains("Saved"), "{status}");
    let saved = step_properties(&app, template_id);
    assert_eq!(saved["company_id"], json!("{=Document:COMPANY_ID}"), "{saved:?}");
    assert_eq!(saved["amount"].to_string().trim_matches('"'), "2500.75", "{saved:?}");
    assert_eq!(saved["priority"], json!("urgent"), "{saved:?}");
    assert_eq!(saved["tags"], json!(["red", "blue"]), "{saved:?}");

    // The next run sends them, the expression resolved against the deal.
    let workflow =
        app.emulator.start_template(&app.domain, template_id, &deal.document_id).await.unwrap();
    let job = job_of(&app, &workflow).await;
    let properties = &job.call.payload["properties"];
    assert_eq!(properties["company_id"], json!(42), "{properties}");
    assert_eq!(properties["amount"], json!(2500.75), "{properties}");
    assert_eq!(properties["priority"], json!("urgent"), "{properties}");
    assert_eq!(properties["tags"], json!(["red", "blue"]), "{properties}");

    // A required field left empty: the form says so, and the designer's Save stores nothing.
    open_form(&browser, &url).await;
    let company = c.find(Locator::Css("#field-company_id input")).await.unwrap();
    company.clear().await.unwrap();
    let problem = c.find(Locator::Css("#field-company_id .problem")).await.unwrap();
    assert_eq!(problem.text().await.unwrap(), "A value is required.");
    c.enter_parent_frame().await.unwrap();
    c.find(Locator::Css("#save")).await.unwrap().click().await.unwrap();
    let (_, errors) = designer_says(&browser).await;
    assert!(!errors.trim().is_empty(), "the designer refuses an empty required property");
    assert_eq!(step_properties(&app, template_id), saved, "nothing was stored");
    browser.close().await;
}

#[tokio::test]
async fn the_forms_checks_agree_with_the_hosts_on_the_same_values() {
    let Some(browser) = Browser::start("settings_form_browser").await else { return };
    let app = TestApp::start(Options { settings_form: true, ..Options::default() }).await;
    let config = host::config::Config::from_toml(&app.config_text, "test", std::iter::empty())
        .expect("the test configuration loads");
    let action = config.actions.iter().find(|a| a.code == CODE).unwrap();
    let (url, _) = designer(&app);
    open_form(&browser, &url).await;

    let table: &[(&str, &[&str])] = &[
        (
            "company_id",
            &[
                "42",
                " 7 ",
                "+5",
                "-3",
                "4.5",
                "abc",
                "1e3",
                "9223372036854775807",
                "9223372036854775808",
            ],
        ),
        (
            "amount",
            &["1500.5", "1,5", "-0.25", ".5", "5.", "1e3", "+2", "abc", "inf", "NaN", "1.2.3"],
        ),
        (
            "due",
            &[
                "05.12.2026",
                "12/05/2026",
                "31/12/2026",
                "2026-12-05",
                "2026-02-29",
                "2024-02-29",
                "32.01.2026",
                "2026-13-01",
                "tomorrow",
                "5.12.2026",
            ],
        ),
        (
            "remind_at",
            &[
                "05.12.2026 14:30:00",
                "12/05/2026 02:30:00 pm",
                "2026-12-05T14:30:00+03:00",
                "2026-12-05T14:30:00Z",
                "2026-12-05T14:30",
                "2026-12-05T14:30:00.123",
                "05.12.2026",
                "05.12.2026 25:00",
                "2026-12-05T14:30:00+03",
                "12/05/2026 13:30 pm",
                "2026-12-05 14:30",
            ],
        ),
        ("approver", &["user_1", "1", "author", "group_g1", "user_x", "bob", "group_"]),
        (
            "contract",
            &["17", "https://files.example.com/f.pdf", "ftp://files.example.com/f", "contract.pdf"],
        ),
    ];
    let mut disagreements = Vec::new();
    for (id, samples) in table {
        let property = &action.properties[*id];
        for sample in *samples {
            // Typed into the field as a person would, through its own input handler.
            let accepted = browser
                .client
                .execute(
                    "const input = document.querySelector('#field-' + arguments[0] + ' .values input');\
                     input.value = arguments[1];\
                     input.dispatchEvent(new Event('input', { bubbles: true }));\
                     return document.querySelector('#field-' + arguments[0] + ' .problem').hidden;",
                    vec![json!(id), json!(sample)],
                )
                .await
                .unwrap();
            let host_accepts = values::from_call(
                Shape::of(property),
                &PropertyValue::Scalar((*sample).to_owned()),
            )
            .is_ok();
            if accepted != json!(host_accepts) {
                disagreements.push(format!(
                    "{id} = {sample:?}: form accepts {accepted}, host accepts {host_accepts}"
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    browser.close().await;
}
