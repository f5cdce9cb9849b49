//! The b24act host as a library: everything a running host is, and nothing else — no CLI, no
//! emulator, no fakes. The `b24act` binary wires it to a command line; tests start it in-process.
//!
//! The flow of one call (docs/design.md §3): [`intake`] authenticates, decodes and stores it and
//! answers at once; a worker runs the action's connector with retries until its deadline and
//! stores the result or the fallback; the outbox returns it with `bizproc.event.send`, batched
//! per portal. [`install`] keeps portals, tokens and registrations in step.

pub mod app;
pub mod backoff;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod console;
pub mod edge;
pub mod health;
pub mod install;
pub mod intake;
pub mod loops;
pub mod operator;
pub mod outbox;
pub mod payload;
pub mod portals;
pub mod registrations;
pub mod routes;
pub mod state;
pub mod values;
pub mod worker;

pub use state::{Host, StartError};
