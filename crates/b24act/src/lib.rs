//! b24act as a library: the host's parts, which the binary (`main.rs`) wires together and the
//! tests start in-process.

pub mod config;
pub mod values;
