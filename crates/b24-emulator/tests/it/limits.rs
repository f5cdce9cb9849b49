//! Load limits (§5.6): the leaky bucket's 503 and refill, a batch as one request, and the
//! operating limit's 429.

use std::time::{Duration, Instant};

use b24_emulator::PortalSpec;
use serde_json::json;

use crate::support::{World, err};

#[tokio::test]
async fn the_bucket_refuses_past_the_burst_and_refills_at_the_drain_rate() {
    let w = World::with_spec(PortalSpec { rate: (1.0, 3), ..Default::default() }).await;
    for _ in 0..3 {
        let (status, _) = w.call("bizproc.robot.list", json!({})).await;
        assert_eq!(status, 200);
    }
    let (status, body) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!((status, err(&body)), (503, ("QUERY_LIMIT_EXCEEDED", "Too many requests")));
    let refused_at = Instant::now();
    loop {
        let (status, _) = w.call("bizproc.robot.list", json!({})).await;
        if status == 200 {
            break;
        }
        assert!(refused_at.elapsed() < Duration::from_secs(3), "bucket never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = refused_at.elapsed();
    assert!(waited >= Duration::from_millis(500), "refilled too fast: {waited:?}");
    let refused = w.emu.rest_calls(&w.portal.domain).iter().filter(|c| c.status == 503).count();
    assert!(refused >= 1);
}

#[tokio::test]
async fn a_batch_of_many_commands_is_one_request_against_the_bucket() {
    let w = World::with_spec(PortalSpec { rate: (0.5, 2), ..Default::default() }).await;
    let cmd: Vec<_> = (0..40).map(|_| json!("bizproc.robot.list")).collect();
    let (status, body) = w.call("batch", json!({"cmd": cmd})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["result"].as_array().map(Vec::len), Some(40));
    let (status, _) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(status, 200, "the batch took one slot, one remains");
}

#[tokio::test]
async fn the_operating_limit_answers_429_with_its_reset_time() {
    let w = World::with_spec(PortalSpec {
        unlimited: true,
        operating_limit: Some(Duration::from_secs(1)),
        operating_cost: Some(Duration::from_millis(400)),
        ..Default::default()
    })
    .await;
    for n in 1..=3 {
        let (status, body) = w.call("bizproc.robot.list", json!({})).await;
        assert_eq!(status, 200);
        assert!(body["time"]["operating"].as_f64().unwrap() > 0.39 * f64::from(n));
        assert!(body["time"]["operating_reset_at"].is_u64());
    }
    let (status, body) = w.call("bizproc.robot.list", json!({})).await;
    assert_eq!(
        (status, err(&body)),
        (429, ("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."))
    );
    assert!(body["operating_reset_at"].is_u64());
    let (status, _) = w.call("bizproc.activity.list", json!({})).await;
    assert_eq!(status, 200, "the limit is per method");
}
