//! The per-portal limiter against the emulator's leaky bucket (protocol doc §5.6).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use b24::rest::{ErrorClass, LimiterRegistry, RateLimits};
use b24_emulator::PortalSpec;

use crate::support::{TestPortal, concurrently, unpaced, webhook_builder};

/// A portal whose bucket is the emulator's scaled down so a test takes a couple of seconds
/// (10/s, burst 10), and a limiter registry that knows those limits.
async fn small_bucket_portal() -> (TestPortal, LimiterRegistry) {
    let spec = PortalSpec { rate: (10.0, 10), ..PortalSpec::default() };
    let limits = RateLimits { per_second: 10.0, burst: NonZeroU32::new(10).unwrap() };
    (TestPortal::start_with(spec).await, LimiterRegistry::new(limits))
}

#[tokio::test]
async fn without_pacing_a_burst_over_the_threshold_gets_503_retryable() {
    let (t, _) = small_bucket_portal().await;
    let client = t.oauth().limiter(unpaced(1000)).build().unwrap();

    let mut refused = 0;
    for _ in 0..40 {
        if let Err(error) = client.app_info().await {
            assert_eq!(error.code(), Some("QUERY_LIMIT_EXCEEDED"), "{error:?}");
            assert_eq!(error.class(), ErrorClass::Retryable);
            refused += 1;
        }
    }
    assert!(refused > 0, "the emulator's bucket should have refused some calls");
}

#[tokio::test]
async fn limiter_keeps_a_burst_under_the_portal_bucket() {
    let (t, registry) = small_bucket_portal().await;
    let client = t.oauth().limiter_from(&registry).build().unwrap();

    let started = Instant::now();
    let calls = concurrently(&client, 30, |client| async move { client.app_info().await }).await;
    for result in calls {
        result.unwrap();
    }
    // 5 at once (half a second of headroom below 10), then 25 more at 10/s: the limiter
    // waited rather than failed.
    assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());
    let errors = t.recorded_errors(&t.portal.domain);
    assert_eq!(errors.len(), 30);
    assert!(errors.iter().all(Option::is_none), "{errors:?}");
}

#[tokio::test]
async fn clients_of_one_portal_share_its_bucket() {
    let (t, registry) = small_bucket_portal().await;
    let oauth = t.oauth().limiter_from(&registry).build().unwrap();
    let hook_url = t.emu.create_webhook(&t.portal.domain, 1, "bizproc").unwrap();
    let hook = webhook_builder(&hook_url).limiter_from(&registry).build().unwrap();
    assert_eq!(oauth.domain(), hook.domain());

    let mut calls = Vec::new();
    for i in 0..24 {
        let (oauth, hook) = (oauth.clone(), hook.clone());
        calls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                oauth.call("bizproc.activity.list", &()).await
            } else {
                hook.call("app.info", &()).await
            }
        }));
    }
    for call in calls {
        let result = call.await.unwrap();
        // The webhook may be refused app.info for lack of an app context; never for the rate.
        if let Err(error) = result {
            assert_ne!(error.code(), Some("QUERY_LIMIT_EXCEEDED"), "{error:?}");
        }
    }
    let errors = t.recorded_errors(&t.portal.domain);
    assert!(!errors.iter().any(|e| e.as_deref() == Some("QUERY_LIMIT_EXCEEDED")), "{errors:?}");
}

#[tokio::test]
async fn a_bucket_filled_by_another_client_costs_at_most_one_refusal() {
    let (t, registry) = small_bucket_portal().await;
    // Someone else (another app, another node) spends the portal's whole budget.
    let hog = t.oauth().limiter(unpaced(10_000)).build().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // our own bucket drains meanwhile
    for _ in 0..12 {
        let _ = hog.call("profile", &()).await;
    }
    let before = t.recorded_errors(&t.portal.domain).len();

    tokio::time::sleep(Duration::from_millis(1100)).await; // ours believes itself empty again
    let client = t.oauth().limiter_from(&registry).build().unwrap();
    let mut failed = 0;
    for _ in 0..15 {
        // The one refusal is retryable; a caller would come back later, as this loop does.
        if client.app_info().await.is_err() {
            failed += 1;
        }
    }
    let refused = t.recorded_errors(&t.portal.domain)[before..]
        .iter()
        .filter(|e| e.as_deref() == Some("QUERY_LIMIT_EXCEEDED"))
        .count();
    assert!(refused <= 1, "{refused} refusals after the portal said its bucket was full");
    assert_eq!(failed, refused);
}
