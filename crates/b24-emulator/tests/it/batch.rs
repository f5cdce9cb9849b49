//! `batch` (§5.5): per-command results and errors, `[]` for empty maps, halt, the 50-command
//! limit, no nesting, references, and form encoding.

use serde_json::{Value, json};

use crate::support::World;

#[tokio::test]
async fn batch_collects_results_and_errors_with_http_200() {
    let w = World::new().await;
    w.register("bizproc.robot.add", json!({"CODE": "r1"})).await;
    let (status, body) = w
        .call("batch", json!({"cmd": {"robots": "bizproc.robot.list", "bad": "bizproc.robot.delete?CODE=nope", "acts": "bizproc.activity.list?"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let r = &body["result"];
    assert_eq!(r["result"], json!({"robots": ["r1"], "acts": []}));
    assert_eq!(r["result_error"]["bad"]["error"], "ERROR_ACTIVITY_NOT_FOUND");
    assert_eq!(r["result_total"], json!([]));
    assert_eq!(r["result_next"], json!([]));
    assert!(r["result_time"]["robots"].get("duration").is_some());
    assert!(body.get("time").is_some());
}

#[tokio::test]
async fn empty_maps_are_php_empty_arrays_on_the_wire() {
    let w = World::new().await;
    let url = format!("{}batch", w.portal.client_endpoint);
    let text = w
        .http
        .post(url)
        .json(&json!({"auth": w.inst.access_token, "cmd": {"a": "bizproc.robot.list"}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#""result_error":[]"#), "{text}");
    assert!(text.contains(r#""result_total":[]"#), "{text}");
}

#[tokio::test]
async fn halt_stops_after_the_first_failure_with_php_bool_semantics() {
    let w = World::new().await;
    let cmd = json!({"a": "bizproc.robot.list", "b": "nope.method", "c": "bizproc.robot.list"});
    for (halt, expect_c) in
        [(json!(0), true), (json!("false"), false), (json!(1), false), (json!(""), true)]
    {
        let (_, body) = w.call("batch", json!({"cmd": cmd, "halt": halt})).await;
        let r = &body["result"];
        assert_eq!(r["result_error"]["b"]["error"], "ERROR_METHOD_NOT_FOUND");
        assert_eq!(r["result"].get("c").is_some(), expect_c, "halt={halt}: {body}");
    }
}

#[tokio::test]
async fn commands_past_fifty_fail_one_by_one_and_nesting_is_refused() {
    let w = World::new().await;
    let cmd: Value = (0..53).map(|_| json!("bizproc.robot.list")).collect::<Vec<_>>().into();
    let (status, body) = w.call("batch", json!({"cmd": cmd})).await;
    assert_eq!(status, 200);
    let r = &body["result"];
    assert_eq!(
        r["result"].as_object().map(|o| o.len()).or(r["result"].as_array().map(|a| a.len())),
        Some(50)
    );
    let errors = r["result_error"].as_object().unwrap();
    assert_eq!(errors.keys().cloned().collect::<Vec<_>>(), ["50", "51", "52"]);
    assert_eq!(
        errors["50"],
        json!({"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"})
    );

    let (_, body) = w.call("batch", json!({"cmd": {"inner": "batch?cmd[x]=app.info"}})).await;
    assert_eq!(body["result"]["result_error"]["inner"]["error"], "ERROR_BATCH_METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn form_encoded_batch_double_encodes_queries_and_copies_outer_auth() {
    let w = World::new().await;
    let add = format!(
        "bizproc.robot.add?{}",
        phpform::encode(
            &[
                ("CODE".to_owned(), phpform::Value::from("from_batch")),
                ("HANDLER".to_owned(), phpform::Value::from(w.handler_url().as_str())),
                ("NAME".to_owned(), phpform::Value::from("Made & batched")),
            ]
            .into_iter()
            .collect()
        )
    );
    let (status, body) = w
        .call_form("batch", json!({"halt": 1, "cmd": {"add": add, "list": "bizproc.robot.list"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["result"], json!({"add": true, "list": ["from_batch"]}));
    let regs = w.emu.registrations(&w.portal.domain).unwrap();
    assert_eq!(regs[0].name, json!("Made & batched"));
    let calls = w.emu.rest_calls(&w.portal.domain);
    let in_batch: Vec<_> = calls.iter().filter(|c| c.in_batch).map(|c| c.method.as_str()).collect();
    assert_eq!(in_batch, ["bizproc.robot.add", "bizproc.robot.list"]);
}

#[tokio::test]
async fn references_to_earlier_results_are_substituted() {
    let w = World::new().await;
    w.register("bizproc.robot.add", json!({"CODE": "ref_me"})).await;
    let (_, body) = w
        .call(
            "batch",
            json!({"cmd": ["bizproc.robot.list", "bizproc.robot.delete?CODE=$result[0][0]"]}),
        )
        .await;
    // (json! sorts object keys, so a list keeps the command order here.)
    assert_eq!(body["result"]["result"], json!([["ref_me"], true]), "{body}");
    assert!(w.emu.registrations(&w.portal.domain).unwrap().is_empty());
}
