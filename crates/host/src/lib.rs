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
pub mod language;
pub mod loops;
pub mod operator;
pub mod outbox;
pub mod payload;
pub mod portals;
pub mod registrations;
pub mod routes;
pub mod settings_form;
pub mod state;
pub mod values;
pub mod worker;

/// The start of a test configuration: an app, a store key, and one action `check` whose
/// `http` connector's table is open for the test to finish (its `url`, then any more tables).
#[cfg(test)]
#[macro_export]
macro_rules! one_http_action_config {
    () => {
        r#"
[app]
client_id = "local.x"
client_secret = "s"
public_url = "https://b24act.example.com/"
[store]
encryption_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[[actions]]
code = "check"
name = "Check"
[actions.connector]
kind = "http"
"#
    };
}

pub use state::{Host, StartError};
