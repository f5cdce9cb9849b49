//! The emulator's shared state: every app, portal and token behind one lock.
//!
//! REST methods run synchronously under the lock (they only read and write memory); everything
//! that waits (handler calls, install events) copies what it needs out first and never holds the
//! lock across an `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;
use tokio::task::AbortHandle;

use crate::app::App;
use crate::error::EmulatorError;
use crate::oauth::TokenStore;
use crate::portal::PortalState;
use crate::tls::Tls;

/// How many handler calls the emulator has in flight at once, over all portals.
///
/// A portal runs workflows on a bounded pool of workers, each waiting for its call's answer
/// (docs/protocol.md §2.1; the pool's size is not published, so this number is INFERRED).
/// Without a bound, thousands of workflows started at once would open as many connections in
/// the same instant: a SYN flood no portal sends, which overflows any server's listen queue and
/// then measures the kernel's retransmission timers (calls arriving up to a minute late), not
/// the handler. A call waiting for a slot has not been sent yet; its timeout starts when it is.
pub(crate) const DISPATCH_CONCURRENCY: usize = 128;

/// What every listener and background task shares.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// The client for handler calls and install events.
    pub(crate) http: reqwest::Client,
    /// Handler calls in flight, at most [`DISPATCH_CONCURRENCY`].
    pub(crate) dispatch_slots: tokio::sync::Semaphore,
    /// `http://127.0.0.1:P`, the OAuth server and control API.
    pub(crate) main_url: String,
    /// The address portal listeners bind on (port 0 each).
    pub(crate) portal_host: IpAddr,
    /// Listener tasks, aborted when the emulator is dropped.
    tasks: Mutex<Vec<AbortHandle>>,
    /// The certificate authority of TLS portals, made for the first one.
    tls: Mutex<Option<Arc<Tls>>>,
}

/// The mutable world.
#[derive(Default)]
pub(crate) struct State {
    /// OAuth apps by `client_id`.
    pub(crate) apps: IndexMap<String, App>,
    /// Portals, indexed by a stable number (their domain can move).
    pub(crate) portals: Vec<PortalState>,
    /// Every domain a portal ever had → the portal. A domain that is not the portal's current
    /// one answers 302 (§5.1).
    pub(crate) domains: HashMap<String, usize>,
    pub(crate) tokens: TokenStore,
}

impl Shared {
    pub(crate) fn new(http: reqwest::Client, main_url: String, portal_host: IpAddr) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            http,
            dispatch_slots: tokio::sync::Semaphore::new(DISPATCH_CONCURRENCY),
            main_url,
            portal_host,
            tasks: Mutex::new(Vec::new()),
            tls: Mutex::new(None),
        })
    }

    /// The emulator's TLS authority, made on first use.
    pub(crate) fn tls(&self) -> Result<Arc<Tls>, EmulatorError> {
        let mut tls = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tls) = tls.as_ref() {
            return Ok(tls.clone());
        }
        let made = Arc::new(Tls::generate(self.portal_host)?);
        *tls = Some(made.clone());
        Ok(made)
    }

    /// Locks the state. A panic while holding the lock cannot leave it half-written in a way
    /// that matters to a test double, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `http://127.0.0.1:P/rest/`, the `server_endpoint` of every token set.
    pub(crate) fn server_endpoint(&self) -> String {
        format!("{}/rest/", self.main_url)
    }

    pub(crate) fn track(&self, task: AbortHandle) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    pub(crate) fn abort_all(&self) {
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl State {
    /// The portal a domain belongs to, following moves.
    pub(crate) fn portal_index(&self, domain: &str) -> Result<usize, EmulatorError> {
        self.domains
            .get(domain)
            .copied()
            .ok_or_else(|| EmulatorError::UnknownPortal(domain.to_owned()))
    }

    pub(crate) fn portal(&self, domain: &str) -> Result<&PortalState, EmulatorError> {
        let i = self.portal_index(domain)?;
        self.portals.get(i).ok_or_else(|| EmulatorError::UnknownPortal(domain.to_owned()))
    }

    pub(crate) fn portal_mut(&mut self, domain: &str) -> Result<&mut PortalState, EmulatorError> {
        let i = self.portal_index(domain)?;
        self.portals.get_mut(i).ok_or_else(|| EmulatorError::UnknownPortal(domain.to_owned()))
    }

    pub(crate) fn app(&self, client_id: &str) -> Result<&App, EmulatorError> {
        self.apps.get(client_id).ok_or_else(|| EmulatorError::UnknownApp(client_id.to_owned()))
    }
}
