//! Fault injection per portal: what a test can make the portal do wrong, and when.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::EmulatorError;
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
    /// Serve the next `count` requests to the chosen methods in full, then lose their answers.
    pub answer_lost: Option<AnswerLost>,
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

impl Faults {
    /// Refuses values no portal could act on.
    pub(crate) fn check(&self) -> Result<(), EmulatorError> {
        let Some(lost) = &self.answer_lost else {
            return Ok(());
        };
        if let AnswerLoss::ServerError(status) = lost.how
            && !(500..=599).contains(&status)
        {
            return Err(EmulatorError::InvalidSpec(format!(
                "answer_lost.how.server_error: {status} is not a 5xx status"
            )));
        }
        if lost.methods.is_empty() {
            return Err(EmulatorError::InvalidSpec(
                "answer_lost.methods: empty, so no answer would be lost".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A run of server errors on the next REST requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerErrorBurst {
    /// How many requests fail.
    pub count: u32,
    /// 500 (`INTERNAL_SERVER_ERROR`) or 503 (`OVERLOAD_LIMIT`); anything else is sent as 500.
    pub status: u16,
}

/// "The portal processed the request, but its answer was lost": the next `count` requests to
/// `methods` run in full (state changed, every command in the REST log with its real outcome),
/// then the client gets `how` instead of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerLost {
    /// How many requests lose their answer; requests to other methods are not counted.
    pub count: u32,
    /// What the client gets instead of the answer.
    pub how: AnswerLoss,
    /// The methods whose answers are lost, compared case-insensitively. Default `["batch"]`.
    #[serde(default = "batch_only")]
    pub methods: Vec<String>,
}

impl AnswerLost {
    /// The next `count` batches lose their answers `how`.
    pub fn batches(count: u32, how: AnswerLoss) -> Self {
        Self { count, how, methods: batch_only() }
    }

    pub(crate) fn applies_to(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// The default `AnswerLost::methods`.
fn batch_only() -> Vec<String> {
    vec!["batch".to_owned()]
}

/// What reaches the client in place of a lost answer. JSON: `{"server_error": 502}` or
/// `"drop_connection"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerLoss {
    /// This 5xx status with a proxy's HTML error page (not JSON), e.g. 502 or 504 from nginx.
    ServerError(u16),
    /// The connection is closed without a single byte of HTTP answer.
    DropConnection,
}
