//! The `b24act` binary, driven as a user drives it: a real process, real HTTP on loopback.

mod emulator_command;
mod host_fixture;
mod operator_cli;
mod outbox;
mod worker;
