//! Integration tests of the fakes: each fake's API shapes and its fault injection, over HTTP.

mod finance;
mod graph;
mod onec;
mod support;
mod telegram;
