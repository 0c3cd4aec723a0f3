//! Compiles the crate's PostgreSQL tests as ignored unless a test database is configured, so
//! `cargo test` without one reports them as ignored, never as passed (see
//! `switchboard_store::testing::postgres_test`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(switchboard_postgres)");
    println!("cargo::rerun-if-env-changed=SWITCHBOARD_TEST_DATABASE_URL");
    if std::env::var_os("SWITCHBOARD_TEST_DATABASE_URL").is_some() {
        println!("cargo::rustc-cfg=switchboard_postgres");
    }
}
