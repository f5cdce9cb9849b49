//! REST plumbing: credentials and their precedence, envelopes, status codes, request encodings.

use serde_json::json;

use crate::support::{World, err, get_json, post_json};

#[tokio::test]
async fn success_envelope_has_result_and_time_error_envelope_has_no_time() {
    let w = World::new().await;
    let (status, body) = w.call("bizproc.activity.list", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], json!([]));
    for key in ["start", "finish", "duration", "processing", "date_start", "date_finish"] {
        assert!(body["time"].get(key).is_some(), "time.{key} missing in {body}");
    }
    assert!(body["time"].get("operating").is_none());
    let (status, body) = w.call("no.such.method", json!({})).await;
    assert_eq!((status, err(&body)), (404, ("ERROR_METHOD_NOT_FOUND", "Method not found!")));
    assert!(body.get("time").is_none());
}

#[tokio::test]
async fn missing_unknown_and_expired_tokens_are_401_with_their_codes() {
    let w = World::new().await;
    let url = format!("{}bizproc.activity.list", w.portal.client_endpoint);
    let (status, body) = post_json(&w.http, &url, &json!({})).await;
    assert_eq!((status, err(&body)), (401, ("NO_AUTH_FOUND", "Wrong authorization data")));
    let (status, body) = w.call_with("deadbeef", "bizproc.activity.list", json!({})).await;
    assert_eq!((status, err(&body).0), (401, "invalid_token"));
    w.emu.expire_tokens(&w.portal.domain).unwrap();
    let (status, body) = w.call("bizproc.activity.list", json!({})).await;
    assert_eq!(
        (status, err(&body)),
        (401, ("expired_token", "The access token provided has expired"))
    );
}

#[tokio::test]
async fn bearer_header_wins_over_auth_param_which_wins_over_access_token() {
    let w = World::new().await;
    let url = format!("{}bizproc.activity.list", w.portal.client_endpoint);
    let good = &w.inst.access_token;
    let resp =
        w.http.post(&url).bearer_auth(good).json(&json!({"auth": "bad"})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp =
        w.http.post(&url).bearer_auth("bad").json(&json!({"auth": good})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, _) = post_json(&w.http, &url, &json!({"auth": good, "access_token": "bad"})).await;
    assert_eq!(status, 200);
    let (status, _) = post_json(&w.http, &url, &json!({"access_token": good})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn get_query_and_json_suffix_and_method_case_are_accepted() {
    let w = World::new().await;
    let url = format!(
        "{}BizProc.Activity.List.json?auth={}",
        w.portal.client_endpoint, w.inst.access_token
    );
    let (status, body) = get_json(&w.http, &url).await;
    assert_eq!((status, &body["result"]), (200, &json!([])));
}

#[tokio::test]
async fn webhooks_authenticate_by_path_and_check_scope() {
    let w = World::new().await;
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "crm").unwrap();
    let (status, body) =
        post_json(&w.http, &format!("{hook}bizproc.event.send"), &json!({"EVENT_TOKEN": "x"}))
            .await;
    assert_eq!((status, err(&body).0), (401, "insufficient_scope"));
    let wrong = hook.replace("/rest/1/", "/rest/2/");
    let (status, body) = post_json(&w.http, &format!("{wrong}app.info"), &json!({})).await;
    assert_eq!((status, err(&body)), (403, ("INVALID_CREDENTIALS", "Invalid request credentials")));
}

#[tokio::test]
async fn app_info_answers_on_the_portal_and_on_the_oauth_server() {
    let w = World::new().await;
    let (status, body) = w.call("app.info", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["CODE"], json!(w.app.client_id));
    assert_eq!(body["result"]["INSTALLED"], json!(true));
    let url = format!("{}app.info?auth={}", w.emu.oauth_server_endpoint(), w.inst.access_token);
    let (status, trusted) = get_json(&w.http, &url).await;
    assert_eq!((status, &trusted["result"]["CODE"]), (200, &json!(w.app.client_id)));
    let url = format!("{}app.info?auth=forged", w.emu.oauth_server_endpoint());
    let (status, _) = get_json(&w.http, &url).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn every_request_is_recorded_with_method_status_and_error() {
    let w = World::new().await;
    w.call("bizproc.robot.list", json!({})).await;
    w.call("bogus", json!({})).await;
    let calls = w.emu.rest_calls(&w.portal.domain);
    let summary: Vec<_> =
        calls.iter().map(|c| (c.method.as_str(), c.status, c.error.as_deref())).collect();
    assert_eq!(
        summary,
        vec![("bizproc.robot.list", 200, None), ("bogus", 404, Some("ERROR_METHOD_NOT_FOUND"))]
    );
    assert_eq!(calls[0].caller, format!("app:{}", w.app.client_id));
}

#[tokio::test]
async fn an_unknown_method_is_404_before_any_credential_is_looked_at() {
    let w = World::new().await;
    let url = format!("{}no.such.method", w.portal.client_endpoint);
    let (status, body) = post_json(&w.http, &url, &json!({})).await;
    assert_eq!((status, err(&body)), (404, ("ERROR_METHOD_NOT_FOUND", "Method not found!")));
    let (status, body) = w.call_with("forged", "no.such.method", json!({})).await;
    assert_eq!((status, err(&body).0), (404, "ERROR_METHOD_NOT_FOUND"));
    let (status, body) =
        post_json(&w.http, &format!("{}scope", w.portal.client_endpoint), &json!({})).await;
    assert_eq!((status, err(&body).0), (401, "NO_AUTH_FOUND"));
}

#[tokio::test]
async fn a_body_that_is_not_json_reads_as_no_parameters_and_the_query_still_counts() {
    let w = World::new().await;
    let url = format!("{}scope?auth={}&full=1", w.portal.client_endpoint, w.inst.access_token);
    let resp = w
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["result"], json!(["bizproc", "crm", "placement", "user"]));
}

#[tokio::test]
async fn a_form_body_is_repaired_as_parse_str_repairs_it() {
    let w = World::with_scope("bizproc,crm").await;
    // A bad percent sequence stays literal, an unclosed bracket becomes `_`, a nameless field
    // is skipped: the request goes through and its fields are read.
    let body = "=x&event=onappinstall&handler=http%3A%2F%2Fh.example%2F100%zz&a[b=1";
    let (status, answer) =
        w.call_raw("event.bind", "application/x-www-form-urlencoded", body).await;
    assert_eq!((status, &answer["result"]), (200, &json!(true)), "{answer}");
    let (_, got) = w.call("event.get", json!({})).await;
    assert_eq!(got["result"][0]["handler"], json!("http://h.example/100%zz"));
    // A dot in a name becomes `_`, as PHP registers it: `event.type` is `event_type`, so this
    // unbinds only offline handlers, of which there are none.
    let form = "application/x-www-form-urlencoded";
    let (_, answer) =
        w.call_raw("event.unbind", form, "event=ONAPPINSTALL&event.type=offline").await;
    assert_eq!(answer["result"], json!({"count": 0}));
    let (_, answer) = w.call_raw("event.unbind", form, "event=ONAPPINSTALL").await;
    assert_eq!(answer["result"], json!({"count": 1}));
    // A body of another content type is still read by parse_str.
    let (status, answer) = w.call_raw("scope", "text/plain", "full=false").await;
    assert_eq!((status, answer["result"].as_array().unwrap().len()), (200, 4));
}

#[tokio::test]
async fn the_xml_suffix_answers_in_xml_lists_as_items() {
    let w = World::new().await;
    let url = format!("{}scope.xml?auth={}", w.portal.client_endpoint, w.inst.access_token);
    let resp = w.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/xml; charset=utf-8");
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(
            "<response><result><item>bizproc</item><item>crm</item></result><time><start>"
        ),
        "{text}"
    );
    let url = format!("{}bogus.xml", w.portal.client_endpoint);
    let resp = w.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        resp.text().await.unwrap(),
        "<response><error>ERROR_METHOD_NOT_FOUND</error>\
         <error_description>Method not found!</error_description></response>"
    );
}

#[tokio::test]
async fn every_answer_carries_cors_and_the_rest_timing_headers() {
    let w = World::new().await;
    let url = format!("{}server.time?auth={}", w.portal.client_endpoint, w.inst.access_token);
    let resp = w.http.get(&url).send().await.unwrap();
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-headers"], "origin, content-type, accept");
    assert_eq!(h["x-bitrix-rest-application"], w.app.client_id.as_str());
    for name in ["x-bitrix-rest-time", "x-bitrix-rest-user-time", "x-bitrix-rest-system-time"] {
        let value = h[name].to_str().unwrap();
        let (_, decimals) = value.split_once('.').unwrap();
        assert_eq!(decimals.len(), 10, "{name}: {value}");
    }
    let resp = w.http.get(format!("{}server.time", w.portal.client_endpoint)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(resp.headers().get("x-bitrix-rest-application").is_none());
    let preflight = w
        .http
        .request(reqwest::Method::OPTIONS, format!("{}batch", w.portal.client_endpoint))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(preflight.text().await.unwrap(), "");
}
