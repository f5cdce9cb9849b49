//! The control API: the newcomer flow from docs/emulator.md's tour, driven over HTTP only.

use std::time::{Duration, Instant};

use b24_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

use crate::support::{Echo, HANDLER_PATH, World, get_json, post_json};

async fn put_json(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let resp = http.put(url).json(body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn the_newcomer_flow_works_over_http() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let echo = Echo::start().await;
    let http = reqwest::Client::new();
    let c = format!("{}/control", emu.control_url());

    let (status, portal) =
        post_json(&http, &format!("{c}/portals"), &json!({"rate": [5.0, 250]})).await;
    assert_eq!(status, 200, "{portal}");
    let domain = portal["domain"].as_str().unwrap().to_owned();
    let (_, app) = post_json(
        &http,
        &format!("{c}/apps"),
        &json!({"scope": "bizproc,crm", "install_url": format!("{}/install", echo.url)}),
    )
    .await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let (status, inst) =
        post_json(&http, &format!("{c}/portals/{domain}/apps/{client_id}/install"), &json!({}))
            .await;
    assert_eq!(status, 200, "{inst}");
    let token = inst["access_token"].as_str().unwrap();

    let add = json!({"auth": token, "CODE": "hello", "HANDLER": format!("{}{HANDLER_PATH}", echo.url), "NAME": "Hello",
                     "AUTH_USER_ID": 1, "USE_SUBSCRIPTION": "Y", "PROPERTIES": {"who": {"Name": "Who"}}});
    let (status, body) = post_json(
        &http,
        &format!("{}bizproc.activity.add", portal["client_endpoint"].as_str().unwrap()),
        &add,
    )
    .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");

    let (_, regs) = get_json(&http, &format!("{c}/portals/{domain}/registrations")).await;
    assert_eq!(regs[0]["code"], "hello");

    let (status, wf) = post_json(
        &http,
        &format!("{c}/portals/{domain}/workflows"),
        &json!({"code": "hello", "properties": {"who": "world"}}),
    )
    .await;
    assert_eq!(status, 200, "{wf}");
    let call = &echo.wait_for(HANDLER_PATH, 1).await[0];
    assert_eq!(call.json()["properties"]["who"], "world");

    let wf_url = format!("{c}/portals/{domain}/workflows/{}", wf["workflow_id"].as_str().unwrap());
    let (_, state) = get_json(&http, &wf_url).await;
    assert_eq!(state["status"], "Waiting");
    let send = json!({"auth": token, "EVENT_TOKEN": wf["event_token"], "RETURN_VALUES": {}});
    let (status, _) = post_json(
        &http,
        &format!("{}bizproc.event.send", portal["client_endpoint"].as_str().unwrap()),
        &send,
    )
    .await;
    assert_eq!(status, 200);
    let (_, state) = get_json(&http, &wf_url).await;
    assert_eq!(state["status"], "Closed");

    let (_, calls) = get_json(&http, &format!("{c}/portals/{domain}/calls")).await;
    let methods: Vec<_> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(methods, ["bizproc.activity.add", "bizproc.event.send"]);
}

#[tokio::test]
async fn faults_tokens_webhooks_and_moves_are_controllable_over_http() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let c = format!("{}/control", emu.control_url());
    let (_, portal) = post_json(&http, &format!("{c}/portals"), &json!({})).await;
    let domain = portal["domain"].as_str().unwrap().to_owned();
    let (_, app) = post_json(&http, &format!("{c}/apps"), &json!({})).await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let (_, inst) =
        post_json(&http, &format!("{c}/portals/{domain}/apps/{client_id}/install"), &Value::Null)
            .await;
    let token = inst["access_token"].as_str().unwrap().to_owned();
    let list =
        format!("{}bizproc.robot.list?auth={token}", portal["client_endpoint"].as_str().unwrap());

    let (status, faults) = put_json(
        &http,
        &format!("{c}/portals/{domain}/faults"),
        &json!({"server_errors": {"count": 1, "status": 503}, "call_delay": 0.5}),
    )
    .await;
    assert_eq!(status, 200, "{faults}");
    let (_, got) = get_json(&http, &format!("{c}/portals/{domain}/faults")).await;
    assert_eq!(got["call_delay"], json!(0.5));
    assert_eq!(get_json(&http, &list).await.0, 503);
    assert_eq!(get_json(&http, &list).await.0, 200);

    let (status, _) =
        put_json(&http, &format!("{c}/portals/{domain}/rate-limit"), &json!({"rate": null})).await;
    assert_eq!(status, 200);
    post_json(&http, &format!("{c}/portals/{domain}/expire-tokens"), &json!({})).await;
    let (status, body) = get_json(&http, &list).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("expired_token")));

    let (_, fresh) = post_json(
        &http,
        &format!("{c}/portals/{domain}/apps/{client_id}/tokens"),
        &json!({"user_id": 1}),
    )
    .await;
    let (_, hook) = post_json(
        &http,
        &format!("{c}/portals/{domain}/webhooks"),
        &json!({"user_id": 1, "scope": "bizproc"}),
    )
    .await;
    assert!(hook["url"].as_str().unwrap().starts_with(&format!("http://{domain}/rest/1/")));

    let (status, moved) = post_json(&http, &format!("{c}/portals/{domain}/move"), &json!({})).await;
    assert_eq!(status, 200, "{moved}");
    let old =
        format!("http://{domain}/rest/app.info?auth={}", fresh["access_token"].as_str().unwrap());
    let started = Instant::now();
    let (status, _) = get_json(&http, &old).await;
    assert_eq!(status, 302);
    assert!(started.elapsed() < Duration::from_secs(2));

    let (status, body) = get_json(&http, &format!("{c}/portals/nope:1/calls")).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn answer_lost_is_set_over_http_and_a_bad_value_is_refused_by_name() {
    let w = World::new().await;
    let faults = format!("{}/control/portals/{}/faults", w.emu.control_url(), w.portal.domain);
    let (status, set) = put_json(
        &w.http,
        &faults,
        &json!({"answer_lost": {"count": 1, "how": {"server_error": 504}}}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let expected = json!({"count": 1, "how": {"server_error": 504}, "methods": ["batch"]});
    assert_eq!(set["answer_lost"], expected);
    assert_eq!(get_json(&w.http, &faults).await.1["answer_lost"], expected);
    let (status, body) = w.call("batch", json!({"cmd": {"a": "bizproc.robot.list"}})).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.as_str().unwrap().contains("504 Gateway Timeout"), "{body}");
    assert_eq!(w.call("batch", json!({"cmd": {"a": "bizproc.robot.list"}})).await.0, 200);

    let drop_list =
        json!({"count": 1, "how": "drop_connection", "methods": ["bizproc.robot.list"]});
    let (status, _) = put_json(&w.http, &faults, &json!({ "answer_lost": drop_list })).await;
    assert_eq!(status, 200);
    let list =
        format!("{}bizproc.robot.list?auth={}", w.portal.client_endpoint, w.inst.access_token);
    let error = w.http.get(&list).send().await.unwrap_err();
    assert_eq!(error.status(), None, "{error:?}");
    assert_eq!(get_json(&w.http, &list).await.0, 200);

    for (bad, named) in [
        (json!({"count": 1, "how": {"server_error": 200}}), "answer_lost.how.server_error"),
        (json!({"count": 1, "how": "drop_connection", "methods": []}), "answer_lost.methods"),
        (json!({"count": 1, "how": "explode"}), "unknown variant `explode`"),
        (json!({"count": 1}), "missing field `how`"),
        (
            json!({"count": 1, "how": "drop_connection", "method": ["batch"]}),
            "unknown field `method`",
        ),
    ] {
        let (status, body) = put_json(&w.http, &faults, &json!({"answer_lost": bad})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(named), "{named}: {body}");
    }
    let kept = get_json(&w.http, &faults).await.1;
    assert_eq!(kept["answer_lost"], drop_list, "a refused set leaves the last one in place");
}
