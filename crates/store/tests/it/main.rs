//! The store's integration tests: one suite, run against SQLite (a temporary file) and against
//! PostgreSQL when `B24ACT_TEST_POSTGRES_URL` is set (each test in its own database).

mod support;

mod claims;
mod enqueue;
mod installations;
mod open;
mod operator;
mod outbox;
