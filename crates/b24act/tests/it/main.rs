//! The `b24act` binary, driven as a user drives it: a real process, real HTTP on loopback.

mod bench;
mod browser;
mod connectors;
mod console;
mod console_pages;
mod crash;
mod degraded;
mod demo;
mod edge;
mod emulator_command;
mod fairness;
mod host_fixture;
mod install;
mod invariants;
mod languages;
mod logs;
mod operator_actions;
mod operator_cli;
mod outbox;
mod outcomes;
mod portal_budget;
mod portal_cli;
mod process;
mod production;
mod quickstart;
mod serve;
mod settings_form;
mod settings_form_browser;
mod several_nodes;
mod support;
mod sync;
mod worker;

/// CI runs every PostgreSQL leg: a CI build without the variable fails here instead of
/// ignoring them (see `store::testing`).
#[test]
fn legs_run_under_ci() {
    store::testing::assert_legs_run_under_ci(cfg!(postgres_tests));
}
