//! Tells the tests whether their PostgreSQL legs can run: with `B24ACT_TEST_POSTGRES_URL` set
//! when building, `cfg(postgres_tests)` is on; without it each PostgreSQL leg is compiled as
//! `#[ignore]`d, so the test summary counts and names every skipped leg instead of passing it
//! silently. Cargo rebuilds when the variable changes.
//!
//! No `rerun-if-changed=build.rs`: the b24act crate runs this same file as its own build script,
//! and there the relative path names a file that does not exist, which Cargo takes as always
//! stale — every build of b24act recompiled it. An edit to this file rebuilds the script, and a
//! rebuilt script runs again, without it.

fn main() {
    println!("cargo::rerun-if-env-changed=B24ACT_TEST_POSTGRES_URL");
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    if std::env::var_os("B24ACT_TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
