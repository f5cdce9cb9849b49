//! The per-portal request pacer: a leaky bucket that mirrors the portal's own, and waits instead
//! of failing. It is written here rather than taken from governor because it must be told what
//! the portal says: governor's GCRA cannot be set to "full as of now", which a
//! `QUERY_LIMIT_EXCEEDED` demands, and filling it by taking cells leaves its schedule out of
//! phase with the portal's drain (the next request went a fraction of an interval early).
//!
//! Bitrix24 drains each portal's bucket at 2 requests/s with a burst threshold of 50 (Enterprise:
//! 5/s, 250); above it the portal answers 503 `QUERY_LIMIT_EXCEEDED` (protocol doc §5.6). The
//! bucket is per portal (per source IP, even across apps), so every client of one portal in this
//! process must share one limiter: the host creates one [`LimiterRegistry`] and hands each
//! client the [`PortalLimiter`] for its portal.
//!
//! What this process cannot see, it assumes the worst of (docs/protocol.md §5.6): a new bucket
//! starts **full** — another client of the portal, or this host before a restart, may have
//! filled the portal's — and a `QUERY_LIMIT_EXCEEDED` or `OPERATION_TIME_LIMIT` answer fills
//! it again ([`PortalLimiter::saturate`]). Either way the next request waits for the drain, so
//! one episode costs at most one rejected request instead of a burst of them.
//!
//! Several processes calling one portal (the host's nodes) must share one bucket, or each
//! paces itself at the portal's whole rate. A registry built with [`LimiterRegistry::shared`]
//! keeps every portal's bucket in a [`SharedBudget`] the processes share (the host's database):
//! each request reserves its place in the drain there and waits for it, and a rejection fills
//! the shared bucket. When the shared budget cannot be reached, the in-process bucket paces
//! alone (the safe side for one process; the portal's answers correct the rest).

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::report::ErrorChain;

/// A drain rate and a burst threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Requests per second the bucket drains.
    pub per_second: f64,
    /// The portal's burst threshold: how many requests it takes at once when its bucket is
    /// empty. The limiter lets a little fewer through at once (see [`JITTER_ALLOWANCE`]).
    pub burst: NonZeroU32,
}

impl RateLimits {
    /// Every plan but Enterprise: 2/s, burst 50.
    pub const STANDARD: RateLimits = RateLimits { per_second: 2.0, burst: non_zero(50) };
    /// Enterprise plans: 5/s, burst 250.
    pub const ENTERPRISE: RateLimits = RateLimits { per_second: 5.0, burst: non_zero(250) };

    /// Requests per second the bucket drains; a rate that is not a positive finite number
    /// falls back to 2/s.
    fn rate(&self) -> f64 {
        if self.per_second.is_finite() && self.per_second > 0.0 {
            self.per_second
        } else {
            RateLimits::STANDARD.per_second
        }
    }

    /// How many requests the limiter lets into an empty bucket at once: the portal's threshold
    /// less [`JITTER_ALLOWANCE`] worth of requests (at least one request), because requests
    /// reach the portal later than the limiter admits them, and unevenly (connection set-up,
    /// scheduling); with no headroom, a late first burst followed by a prompt next request
    /// piles up over the threshold. At 2/s, burst 50 that is 49; at 5/s, burst 250, 247.
    pub fn capacity(&self) -> f64 {
        f64::from(self.admitted_burst(self.rate()).get())
    }

    /// How long the bucket takes to drain one request.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate())
    }

    /// The burst the limiter itself allows: the threshold minus the jitter headroom.
    fn admitted_burst(&self, rate: f64) -> NonZeroU32 {
        // Saturating float-to-int cast; the headroom is small and positive.
        let headroom = ((rate * JITTER_ALLOWANCE.as_secs_f64()).ceil() as u32).max(1);
        NonZeroU32::new(self.burst.get().saturating_sub(headroom)).unwrap_or(NonZeroU32::MIN)
    }
}

/// How much delivery jitter the limiter leaves room for, in time at the drain rate.
pub const JITTER_ALLOWANCE: Duration = Duration::from_millis(500);

/// A burst size for constants; zero becomes one.
const fn non_zero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::STANDARD
    }
}

/// What a [`SharedBudget`] returns: a boxed future, so the trait stays object-safe.
pub type BudgetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BudgetError>> + Send + 'a>>;

/// Why a [`SharedBudget`] could not answer.
pub type BudgetError = Box<dyn std::error::Error + Send + Sync>;

/// Where processes that call the same portals keep each portal's bucket together (the host:
/// its database). `portal` is the key the registry was asked for, lower-cased.
pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// Reserves the next request's place in `portal`'s bucket, which drains at `limits`; resolves
    /// to how long to wait before sending it. A bucket seen for the first time starts full.
    fn reserve<'a>(&'a self, portal: &'a str, limits: RateLimits) -> BudgetFuture<'a, Duration>;

    /// Takes `portal`'s bucket as full as of now (the portal said so).
    fn fill<'a>(&'a self, portal: &'a str, limits: RateLimits) -> BudgetFuture<'a, ()>;
}

/// The limiter of one portal. Cheap to clone; clones share the bucket.
#[derive(Clone, Debug)]
pub struct PortalLimiter {
    bucket: Arc<Mutex<Bucket>>,
    limits: RateLimits,
    /// The portal's key and the budget shared with other processes, when there is one.
    shared: Option<(String, Arc<dyn SharedBudget>)>,
}

/// How full the portal's bucket is, as far as this process knows.
#[derive(Debug)]
pub struct Bucket {
    /// Requests in the bucket as of `at`.
    level: f64,
    at: Instant,
}

impl Bucket {
    /// An empty bucket: `capacity` requests fit at once.
    pub fn empty() -> Bucket {
        Bucket { level: 0.0, at: Instant::now() }
    }

    /// Drains the bucket at `rate` requests a second up to now, then counts one more request
    /// if it fits under `capacity`; otherwise says how long until it would.
    pub fn admit(&mut self, rate: f64, capacity: f64) -> Result<(), Duration> {
        let now = Instant::now();
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.level = (self.level - drained).max(0.0);
        self.at = now;
        let over = self.level + 1.0 - capacity;
        if over <= 0.0 {
            self.level += 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(over / rate))
        }
    }
}

impl PortalLimiter {
    /// A limiter of its own, not shared through a registry. It starts full (see the module's
    /// documentation): the first request waits one drain interval.
    pub fn new(limits: RateLimits) -> PortalLimiter {
        let full = Bucket { level: limits.capacity(), at: Instant::now() };
        PortalLimiter { bucket: Arc::new(Mutex::new(full)), limits, shared: None }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // Only whole-field assignments happen under the lock: a poisoned one is consistent.
        self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the bucket as full as of now: the portal said so (503 `QUERY_LIMIT_EXCEEDED`, 429
    /// `OPERATION_TIME_LIMIT`), whatever this process counted. The next request waits one
    /// drain interval, and the ones after it the drain rate. A shared bucket is filled too.
    pub async fn saturate(&self) {
        *self.bucket() = Bucket { level: self.limits.capacity(), at: Instant::now() };
        if let Some((portal, budget)) = &self.shared
            && let Err(error) = budget.fill(portal, self.limits).await
        {
            tracing::warn!(portal = %portal, error = %ErrorChain(error.as_ref()),
                "cannot fill the shared request budget; this process paces alone");
        }
    }

    /// Waits until one more request fits in the bucket, and counts it: in the shared budget
    /// when there is one (falling back to this process's bucket when it cannot be reached).
    pub async fn acquire(&self) {
        if let Some((portal, budget)) = &self.shared {
            match budget.reserve(portal, self.limits).await {
                Ok(wait) => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(portal = %portal, error = %ErrorChain(error.as_ref()),
                        "cannot reach the shared request budget; this process paces alone");
                }
            }
        }
        loop {
            let admitted = self.bucket().admit(self.limits.rate(), self.limits.capacity());
            match admitted {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// The limits this bucket was built with.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }
}

/// One limiter per portal, created on first use. The host makes one registry at start-up and
/// asks it for each portal's limiter; the key is the portal's domain (`host[:port]`, lower-cased)
/// unless the host chooses another stable key such as `member_id`.
#[derive(Debug)]
pub struct LimiterRegistry {
    default: RateLimits,
    portals: Mutex<HashMap<String, PortalLimiter>>,
    /// Where every portal's bucket is kept with other processes, if anywhere.
    shared: Option<Arc<dyn SharedBudget>>,
}

impl LimiterRegistry {
    /// A registry whose portals get `default` limits unless told otherwise; each portal's
    /// bucket lives in this process.
    pub fn new(default: RateLimits) -> LimiterRegistry {
        LimiterRegistry { default, portals: Mutex::new(HashMap::new()), shared: None }
    }

    /// A registry whose portals' buckets live in `budget`, shared with the other processes that
    /// call the same portals through it.
    pub fn shared(default: RateLimits, budget: Arc<dyn SharedBudget>) -> LimiterRegistry {
        LimiterRegistry { default, portals: Mutex::new(HashMap::new()), shared: Some(budget) }
    }

    /// The limiter of `portal`, created with the default limits if it is new.
    pub fn portal(&self, portal: &str) -> PortalLimiter {
        self.portal_with(portal, self.default)
    }

    /// The limiter of `portal`, created with `limits` if it is new (an existing limiter keeps
    /// its limits: one portal has one bucket).
    pub fn portal_with(&self, portal: &str, limits: RateLimits) -> PortalLimiter {
        let key = portal.to_ascii_lowercase();
        let mut portals = self.portals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        portals
            .entry(key.clone())
            .or_insert_with(|| {
                let mut limiter = PortalLimiter::new(limits);
                limiter.shared = self.shared.clone().map(|budget| (key, budget));
                limiter
            })
            .clone()
    }
}

impl Default for LimiterRegistry {
    fn default() -> Self {
        LimiterRegistry::new(RateLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_half_a_second_of_requests_and_at_least_one() {
        let burst = |limits: RateLimits| limits.admitted_burst(limits.per_second).get();
        assert_eq!(burst(RateLimits::STANDARD), 49);
        assert_eq!(burst(RateLimits::ENTERPRISE), 247);
        let tiny = RateLimits { per_second: 100.0, burst: NonZeroU32::new(3).unwrap() };
        assert_eq!(burst(tiny), 1);
    }

    #[test]
    fn one_portal_gets_one_bucket() {
        let registry = LimiterRegistry::default();
        let a = registry.portal("Example.bitrix24.com");
        let b = registry.portal("example.bitrix24.com");
        assert!(Arc::ptr_eq(&a.bucket, &b.bucket));
        let other = registry.portal("other.bitrix24.com");
        assert!(!Arc::ptr_eq(&a.bucket, &other.bucket));
    }

    #[tokio::test]
    async fn burst_passes_at_once_and_the_rest_waits_at_the_drain_rate() {
        let limiter = PortalLimiter::new(RateLimits {
            per_second: 20.0,
            burst: NonZeroU32::new(15).unwrap(),
        });
        // It starts full; after 0.5 s at 20/s it has drained 10 requests' worth.
        tokio::time::sleep(Duration::from_millis(520)).await;
        let started = Instant::now();
        // A threshold of 15 at 20/s lets 5 through at once (10 requests = 0.5 s of headroom).
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert!(started.elapsed() < Duration::from_millis(40), "burst should not wait");
        for _ in 0..4 {
            limiter.acquire().await;
        }
        // Four more at 20/s take about 200 ms.
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_new_or_saturated_bucket_makes_the_next_request_wait_for_the_drain() {
        let limits = RateLimits { per_second: 10.0, burst: NonZeroU32::new(20).unwrap() };
        let limiter = PortalLimiter::new(limits);
        let started = Instant::now();
        limiter.acquire().await;
        assert!(started.elapsed() >= Duration::from_millis(80), "{:?}", started.elapsed());

        tokio::time::sleep(Duration::from_millis(600)).await;
        limiter.saturate().await;
        let saturated = Instant::now();
        limiter.acquire().await;
        assert!(saturated.elapsed() >= Duration::from_millis(80), "{:?}", saturated.elapsed());
    }
}
