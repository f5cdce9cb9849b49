//! Registration methods: every row of the §1.7 error table, key case rules, kinds and app context.

use b24_emulator::PortalSpec;
use serde_json::{Value, json};

use crate::support::{World, err, post_json};

async fn add_error(world: &World, method: &str, params: Value) -> (u16, String, String) {
    let (status, body) = world.call(method, params).await;
    let (code, description) = err(&body);
    (status, code.to_owned(), description.to_owned())
}

/// Asserts that calling `method` with `params` fails with exactly `expected`.
async fn assert_error(
    world: &World,
    method: &str,
    params: Value,
    expected: &(u16, String, String),
) {
    let got = add_error(world, method, params.clone()).await;
    assert_eq!(&got, expected, "{method} {params}");
}

fn v(status: u16, code: &str, description: &str) -> (u16, String, String) {
    (status, code.to_owned(), description.to_owned())
}

#[tokio::test]
async fn every_validation_error_of_the_table_has_its_exact_string() {
    let w = World::new().await;
    let h = w.handler_url();
    let va = "ERROR_ACTIVITY_VALIDATION_FAILURE";
    let cases: Vec<(Value, (u16, String, String))> = vec![
        (json!({}), v(400, va, "Empty data!")),
        (json!({"HANDLER": h, "NAME": "n"}), v(400, va, "Empty activity code!")),
        (json!({"CODE": "0", "HANDLER": h, "NAME": "n"}), v(400, va, "Empty activity code!")),
        (
            json!({"CODE": "bad code!", "HANDLER": h, "NAME": "n"}),
            v(400, va, "Wrong activity code!"),
        ),
        (json!({"CODE": "c", "NAME": "n"}), v(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")),
        (
            json!({"CODE": "c", "HANDLER": "http://localhost/h", "NAME": "n"}),
            v(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ),
        (
            json!({"CODE": "c", "HANDLER": "http://.example.com/h", "NAME": "n"}),
            v(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ),
        (
            json!({"CODE": "c", "HANDLER": "example.com/h", "NAME": "n"}),
            v(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ),
        (
            json!({"CODE": "c", "HANDLER": "ftp://example.com/h", "NAME": "n"}),
            v(400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol"),
        ),
        (json!({"CODE": "c", "HANDLER": h}), v(400, va, "Empty activity NAME!")),
        (
            json!({"CODE": "c", "HANDLER": h, "NAME": "n", "PROPERTIES": "x"}),
            v(400, va, "Wrong properties array!"),
        ),
        (
            json!({"CODE": "c", "HANDLER": h, "NAME": "n", "RETURN_PROPERTIES": "x"}),
            v(400, va, "Wrong properties array!"),
        ),
        (
            json!({"CODE": "c", "HANDLER": h, "NAME": "n", "PROPERTIES": {"1abc": {"NAME": "x"}}}),
            v(400, va, "Wrong property key (1abc)!"),
        ),
        (
            json!({"CODE": "c", "HANDLER": h, "NAME": "n", "PROPERTIES": {"p1": {"TYPE": "string"}}}),
            v(400, va, "Empty property NAME (p1)!"),
        ),
        (
            json!({"CODE": "c", "HANDLER": h, "NAME": "n", "FILTER": "b24"}),
            v(400, va, "Wrong activity FILTER!"),
        ),
        (
            json!({"CODE": "c", "HANDLER": h, "NAME": "n", "DOCUMENT_TYPE": ["foo", "bar", "baz"]}),
            v(400, va, "Wrong activity DOCUMENT_TYPE!"),
        ),
        (
            json!({"CODE": "x".repeat(129), "HANDLER": h, "NAME": "n"}),
            v(400, "ERROR_ACTIVITY_ADD_FAILURE", "Activity save error!"),
        ),
    ];
    for (params, expected) in cases {
        assert_error(&w, "bizproc.activity.add", params, &expected).await;
    }
}

#[tokio::test]
async fn validation_runs_in_source_order_code_before_handler_before_name() {
    let w = World::new().await;
    let got =
        add_error(&w, "bizproc.robot.add", json!({"CODE": "bad!", "HANDLER": "ftp://x"})).await;
    assert_eq!(got.2, "Wrong activity code!");
    let got = add_error(&w, "bizproc.robot.add", json!({"CODE": "ok", "HANDLER": "ftp://x"})).await;
    assert_eq!(got.1, "ERROR_WRONG_HANDLER_URL");
}

#[tokio::test]
async fn loopback_ip_handler_is_accepted_and_robot_skips_document_type_check() {
    let w = World::new().await;
    w.register("bizproc.robot.add", json!({"CODE": "r1", "DOCUMENT_TYPE": ["foo", "bar", "baz"]}))
        .await;
    w.register(
        "bizproc.activity.add",
        json!({"CODE": "a1", "DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "DEAL"]}),
    )
    .await;
}

#[tokio::test]
async fn webhook_cannot_register_and_non_admin_is_denied() {
    let w = World::new().await;
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "bizproc").unwrap();
    for method in [
        "bizproc.activity.add",
        "bizproc.robot.list",
        "bizproc.activity.delete",
        "bizproc.robot.update",
    ] {
        let body = json!({"CODE": "c", "HANDLER": w.handler_url(), "NAME": "n"});
        let (status, resp) = post_json(&w.http, &format!("{hook}{method}"), &body).await;
        assert_eq!(
            (status, err(&resp)),
            (403, ("ACCESS_DENIED", "Access denied! Application context required"))
        );
    }
    let user7 = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 7).unwrap();
    let (status, resp) = w.call_with(&user7.access_token, "bizproc.activity.list", json!({})).await;
    assert_eq!((status, err(&resp)), (403, ("ACCESS_DENIED", "Access denied!")));
}

#[tokio::test]
async fn keys_are_upper_cased_except_property_ids_and_options() {
    let w = World::new().await;
    let params = json!({
        "code": "case_test", "handler": w.handler_url(), "name": {"en": "English", "de": "Deutsch"},
        "properties": {"myProp": {"Name": "x", "type": "select", "options": {"keyA": "A"}}},
        "return_properties": {"outValue": {"name": "y"}},
        "use_subscription": "Y",
    });
    let (status, body) = w.call("BIZPROC.ACTIVITY.ADD", params).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    let regs = w.emu.registrations(&w.portal.domain).unwrap();
    let r = &regs[0];
    assert_eq!(r.code, "case_test");
    assert_eq!(r.name, json!({"EN": "English", "DE": "Deutsch"}));
    assert_eq!(
        r.properties,
        json!({"myProp": {"NAME": "x", "TYPE": "select", "OPTIONS": {"keyA": "A"}}})
    );
    assert_eq!(r.return_properties, json!({"outValue": {"NAME": "y"}}));
    assert_eq!(r.use_subscription, "Y");
    let md5 = {
        use md5::Digest;
        hex::encode(md5::Md5::digest(format!("{}@case_test", w.app.client_id)))
    };
    assert_eq!(r.internal_code, md5);
}

#[tokio::test]
async fn activities_and_robots_share_codes_on_add_but_not_on_update_delete_list() {
    let w = World::new().await;
    w.register("bizproc.robot.add", json!({"CODE": "shared"})).await;
    let add = json!({"CODE": "shared", "HANDLER": w.handler_url(), "NAME": "n"});
    let installed =
        v(400, "ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!");
    assert_error(&w, "bizproc.activity.add", add, &installed).await;

    let not_found = v(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!");
    assert_error(&w, "bizproc.activity.delete", json!({"code": "shared"}), &not_found).await;
    let update = json!({"CODE": "shared", "FIELDS": {"NAME": "x"}});
    assert_error(&w, "bizproc.activity.update", update, &not_found).await;
    let (_, list) = w.call("bizproc.activity.list", json!({})).await;
    assert_eq!(list["result"], json!([]));
    let (_, list) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(list["result"], json!(["shared"]));

    let (status, body) = w.call("bizproc.robot.delete", json!({"code": "shared"})).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
    let (_, list) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(list["result"], json!([]));
}

#[tokio::test]
async fn update_changes_only_given_fields_and_rejects_empty_fields() {
    let w = World::new().await;
    w.register("bizproc.activity.add", json!({"CODE": "u1", "PROPERTIES": {"a": {"NAME": "A"}}}))
        .await;
    let no_fields = v(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "No fields to update");
    let wrong_handler = v(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL");
    for (params, expected) in [
        (json!({"CODE": "u1"}), &no_fields),
        (json!({"CODE": "u1", "FIELDS": {"FOO": 1}}), &no_fields),
        (json!({"CODE": "u1", "FIELDS": {"HANDLER": "http://localhost/"}}), &wrong_handler),
    ] {
        assert_error(&w, "bizproc.activity.update", params, expected).await;
    }
    let (status, body) = w
        .call(
            "bizproc.activity.update",
            json!({"code": "u1", "fields": {"properties": {"b": {"name": "B"}}, "auth_user_id": "5"}}),
        )
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    let r = &w.emu.registrations(&w.portal.domain).unwrap()[0];
    assert_eq!(r.properties, json!({"b": {"NAME": "B"}}));
    assert_eq!(r.auth_user_id, 5);
    assert_eq!(r.name, json!("Test"));
}

#[tokio::test]
async fn app_update_and_uninstall_wipe_registrations() {
    let w = World::new().await;
    w.register("bizproc.activity.add", json!({"CODE": "keep_me"})).await;
    w.register("bizproc.robot.add", json!({"CODE": "robot_me"})).await;
    let updated = w.emu.update_app(&w.portal.domain, &w.app.client_id).await.unwrap();
    assert!(w.emu.registrations(&w.portal.domain).unwrap().is_empty());
    assert_eq!(updated.version, 2);
    let events = w.echo.wait_for(crate::support::INSTALL_PATH, 2).await;
    let update = events[1].json();
    assert_eq!(update["event"], "ONAPPUPDATE");
    assert_eq!(update["data"]["VERSION"], "2");
    assert_eq!(update["data"]["PREVIOUS_VERSION"], "1");

    w.call_with(
        &updated.access_token,
        "bizproc.activity.add",
        json!({"CODE": "again", "HANDLER": w.handler_url(), "NAME": "n"}),
    )
    .await;
    w.emu.uninstall_app(&w.portal.domain, &w.app.client_id).await.unwrap();
    assert!(w.emu.registrations(&w.portal.domain).unwrap().is_empty());
}

#[tokio::test]
async fn form_encoded_registration_works_like_json() {
    let w = World::new().await;
    let params = json!({"CODE": "form_code", "HANDLER": w.handler_url(), "NAME": "Form",
        "PROPERTIES": {"amount": {"Name": "Amount", "Type": "double"}}});
    let (status, body) = w.call_form("bizproc.robot.add", params).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    assert_eq!(
        w.emu.registrations(&w.portal.domain).unwrap()[0].properties,
        json!({"amount": {"NAME": "Amount", "TYPE": "double"}})
    );
    let _ = PortalSpec::default();
}
