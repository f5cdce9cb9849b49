//! Integration tests of `b24`: the REST client against the in-process emulator.

mod rest_batch;
mod rest_errors;
mod rest_limits;
mod rest_methods;
mod rest_moves;
mod rest_oauth;
mod support;
