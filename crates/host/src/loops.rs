//! What the host's long-running loops share: the pokes between them ([`Wakeups`]), how long
//! they sleep between looks at the store, and what becomes of a task of theirs that panicked.
//! The intake pokes the workers, the workers poke the outbox; each loop lives in its own module.
//! On PostgreSQL the pokes also reach the other nodes ([`relay_wakeups`]: `LISTEN`/`NOTIFY`),
//! so a call taken by one node is run by another at once instead of at its next poll.

use std::sync::Arc;
use std::time::Duration;

use b24::report::ErrorChain;
use store::{Backend, Wake};
use tokio::sync::Notify;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

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
    /// Pokes for the other nodes, sent by [`relay_wakeups`] (several pokes, one `NOTIFY`).
    tell_jobs: Notify,
    tell_results: Notify,
}

impl Wakeups {
    /// New calls were stored: wake the workers (here and on the other nodes).
    pub fn job_arrived(&self) {
        self.jobs.notify_one();
        self.tell_jobs.notify_one();
    }

    /// A result (or a progress line) waits to be sent: wake the outbox (here and on the other
    /// nodes).
    pub fn result_stored(&self) {
        self.results.notify_one();
        self.tell_results.notify_one();
    }
}

/// How long the relay waits before listening again after its connection failed.
const RELISTEN_PAUSE: Duration = Duration::from_secs(1);

/// On PostgreSQL, until `cancel`: sends this node's pokes to the other nodes (`NOTIFY`) and
/// turns theirs into pokes here (`LISTEN`). Pokes that come while one is being sent are sent as
/// one. A lost connection only delays work until the loops' next look at the store
/// ([`IDLE_PAUSE`]). Nothing to do on SQLite, where this node is the only one.
pub async fn relay_wakeups(
    host: Arc<crate::Host>,
    wakeups: Arc<Wakeups>,
    cancel: CancellationToken,
) {
    if host.store.backend() != Backend::Postgres {
        return;
    }
    let tell = async {
        loop {
            let wake = tokio::select! {
                () = wakeups.tell_jobs.notified() => Wake::Jobs,
                () = wakeups.tell_results.notified() => Wake::Results,
            };
            if let Err(error) = host.store.wake_others(wake, &host.node_id).await {
                tracing::debug!(error = %ErrorChain(&error), "cannot wake the other nodes");
            }
        }
    };
    let listen = async {
        loop {
            match host.store.listen().await {
                Ok(Some(mut listener)) => loop {
                    match store::next_wake(&mut listener).await {
                        Ok(woken) if woken.from == host.node_id => {}
                        Ok(woken) => match woken.wake {
                            Wake::Jobs => wakeups.jobs.notify_one(),
                            Wake::Results => wakeups.results.notify_one(),
                        },
                        Err(error) => {
                            tracing::warn!(error = %ErrorChain(&error), "wake-ups from other nodes lost; listening again");
                            break;
                        }
                    }
                },
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), "cannot listen for the other nodes' wake-ups");
                }
            }
            tokio::time::sleep(RELISTEN_PAUSE).await;
        }
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tell => {}
        () = listen => {}
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
