//! Faithful fakes of the external systems b24act's built-in connectors reach, each a real HTTP
//! server on 127.0.0.1 speaking that system's request and response shapes, with fault injection
//! (unavailable windows, slow answers, rate limits). Tests and `b24act demo` use them; nothing
//! here is a mock: connectors talk to them over HTTP exactly as they would to the real system.

pub mod dates;
pub mod faults;
pub mod finance;
pub mod graph;
pub mod onec;
pub mod telegram;
