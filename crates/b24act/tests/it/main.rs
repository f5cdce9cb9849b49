//! The `b24act` binary, driven as a user drives it: a real process, real HTTP on loopback.

mod bench;
mod connectors;
mod crash;
mod degraded;
mod demo;
mod edge;
mod emulator_command;
mod host_fixture;
mod install;
mod logs;
mod operator_cli;
mod outbox;
mod portal_budget;
mod portal_cli;
mod postgres_leg;
mod serve;
mod support;
mod worker;
