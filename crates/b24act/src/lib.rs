//! The `b24act` command's parts beside its `main.rs`: the newcomer's commands (`init`, `dev`,
//! `fake`), the operator commands (`jobs`, `portals`), the demo, the bench and trace export. The
//! host itself is the `host` crate; the local deployment the demo, `dev`, the bench and the
//! tests share is the `sandbox` crate.

pub mod bench;
pub mod demo;
pub mod dev;
pub mod init;
pub mod operator_cli;
pub mod portal_cli;
pub mod sync_cli;
pub mod telemetry;
