//! The store's integration tests: one suite, run against SQLite (a temporary file) and against
//! PostgreSQL when `B24ACT_TEST_POSTGRES_URL` is set (each test in its own database; otherwise
//! each PostgreSQL leg shows as ignored, by name, in the summary).

mod support;

mod claims;
mod coordination;
mod enqueue;
mod installations;
mod open;
mod operator;
mod operator_actions;
mod outbox;
