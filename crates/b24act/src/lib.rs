//! b24act as a library: the host's parts, which the binary (`main.rs`) wires together and the
//! tests start in-process.
//!
//! The flow of one call (docs/design.md §3): [`intake`] authenticates, decodes and stores it and
//! answers at once; a worker runs the action's connector with retries until its deadline and
//! stores the result or the fallback; the outbox returns it with `bizproc.event.send`, batched
//! per portal. [`install`] keeps portals, tokens and registrations in step.

pub mod app;
pub mod backoff;
pub mod bench;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod demo;
pub mod edge;
pub mod health;
pub mod host;
pub mod install;
pub mod intake;
pub mod operator_cli;
pub mod outbox;
pub mod payload;
pub mod portal_cli;
pub mod portals;
pub mod progress;
pub mod sandbox;
pub mod values;
pub mod worker;
