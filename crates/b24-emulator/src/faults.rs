//! Fault injection per portal: what a test can make the portal do wrong, and when.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock;

/// Misbehaviour switched on for one portal. `Faults::default()` is a well-behaved portal.
/// Set with [`crate::Emulator::set_faults`] or `PUT /control/portals/{domain}/faults`; a new
/// set replaces the old one. Durations are seconds (fractional) on the control API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Extra delay before each activity call is sent to its handler.
    #[serde(with = "clock::secs")]
    pub call_delay: Duration,
    /// Random extra delay in `0..=call_jitter`, added to `call_delay`.
    #[serde(with = "clock::secs")]
    pub call_jitter: Duration,
    /// Never send activity calls (the queue lost them); the workflow still waits.
    pub drop_calls: bool,
    /// Send every activity call twice, with the same body (a queue that redelivers).
    pub duplicate_calls: bool,
    /// Resend a call this many more times while the handler answers non-2xx or is unreachable
    /// (§7 "optional retry on non-2xx"; off by default because the real queue does not retry).
    pub retry_non_2xx: u32,
    /// Leave `auth[refresh_token]` out of activity calls (older portals, §2.2).
    pub omit_refresh_token: bool,
    /// Leave every token field out of activity calls: only `domain`, `server_endpoint`,
    /// `client_endpoint`, `member_id` and `application_token` remain (§2.3, §8 Q2).
    pub omit_tokens: bool,
    /// Answer the next `count` REST requests with this 5xx instead of serving them.
    pub server_errors: Option<ServerErrorBurst>,
    /// Overrides the portal's access-token lifetime for tokens issued from now on.
    #[serde(with = "clock::opt_secs")]
    pub access_token_lifetime: Option<Duration>,
    /// Overrides the portal's "423" window after dispatch (§3.3).
    #[serde(with = "clock::opt_secs")]
    pub lock_window: Option<Duration>,
    /// Overrides the portal's operating limit (summed method time per app and method over ten
    /// minutes; over it → 429 `OPERATION_TIME_LIMIT`, §5.6).
    #[serde(with = "clock::opt_secs")]
    pub operating_limit: Option<Duration>,
    /// Overrides the method time charged per call against the operating limit (by default the
    /// real, tiny, processing time), so tests can reach the limit in a few calls.
    #[serde(with = "clock::opt_secs")]
    pub operating_cost: Option<Duration>,
}

/// A run of server errors on the next REST requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerErrorBurst {
    /// How many requests fail.
    pub count: u32,
    /// 500 (`INTERNAL_SERVER_ERROR`) or 503 (`OVERLOAD_LIMIT`); anything else is sent as 500.
    pub status: u16,
}
