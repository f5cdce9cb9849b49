//! What the host's long-running loops share: the pokes between them ([`Wakeups`]), how long
//! they sleep between looks at the store, and what becomes of a task of theirs that panicked.
//! The intake pokes the workers, the workers poke the outbox; each loop lives in its own module.

use std::time::Duration;

use b24::report::ErrorChain;
use tokio::sync::Notify;
use tokio::task::JoinError;

use crate::Host;
use crate::clock;

/// The longest a worker or the outbox sleeps without looking at the store: jobs written by
/// another node (PostgreSQL) are found within this.
pub const IDLE_PAUSE: Duration = Duration::from_secs(1);

/// The shortest sleep between two looks at the store, so something due that another part is
/// handling (a delivery, a job held by another node) is not polled in a tight loop.
const MIN_PAUSE: Duration = Duration::from_millis(25);

/// Pokes between the host's parts: the intake pokes `jobs` after it commits calls, the workers
/// poke `results` after they store a result to send. A poke while nobody waits is kept, so it is
/// never lost between a look at the store and the next sleep.
#[derive(Debug, Default)]
pub struct Wakeups {
    pub jobs: Notify,
    pub results: Notify,
}

impl Wakeups {
    /// New calls were stored: wake the workers.
    pub fn job_arrived(&self) {
        self.jobs.notify_one();
    }

    /// A result (or a progress line) waits to be sent: wake the outbox.
    pub fn result_stored(&self) {
        self.results.notify_one();
    }
}

/// How long to sleep before the next look at the store: until its next wake-up, at least
/// [`MIN_PAUSE`] and at most [`IDLE_PAUSE`].
pub(crate) async fn pause_until_due(host: &Host, now: i64) -> Duration {
    match host.store.next_wakeup().await {
        Ok(Some(due)) => clock::duration_ms(due.saturating_sub(now)).clamp(MIN_PAUSE, IDLE_PAUSE),
        Ok(None) => IDLE_PAUSE,
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), "cannot read the next wake-up");
            IDLE_PAUSE
        }
    }
}

/// A task of ours that panicked is a bug; say so and carry on.
pub(crate) fn report_task(ended: Result<(), JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        tracing::error!(error = %ErrorChain(&error), "a worker task panicked");
    }
}
