//! Throwaway databases for tests: a SQLite file in a temporary directory, or a fresh schema in
//! the PostgreSQL named by `SWITCHBOARD_TEST_DATABASE_URL`, dropped when the test ends (even
//! when it panics).

use std::sync::Arc;

use crate::{Backend, OpenOptions, Store};

/// The environment variable naming the test PostgreSQL (`postgres://user@host:port/database`).
pub const PG_URL_VAR: &str = "SWITCHBOARD_TEST_DATABASE_URL";

/// A test database. Keep it alive for as long as the store is used.
pub struct TestDb {
    /// How to open the store on this database.
    pub options: OpenOptions,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("switchboard.db").display());
        Self { options: OpenOptions::new(url), _dir: Some(dir), pg: None }
    }

    /// A fresh schema in the test PostgreSQL. PostgreSQL tests are compiled as ignored unless
    /// `SWITCHBOARD_TEST_DATABASE_URL` was set (see the crate's build script, `build/postgres_tests.rs`), so reaching this
    /// without it means they were run with `--include-ignored`: that fails, it never passes.
    pub fn postgres() -> Self {
        let url = std::env::var(PG_URL_VAR)
            .unwrap_or_else(|_| panic!("a PostgreSQL test needs {PG_URL_VAR} (postgres://user@host:port/database)"));
        let schema = format!("sbtest_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut options = OpenOptions::new(url.clone());
        options.pg_schema = Some(schema.clone());
        options.max_connections = 8;
        Self { options, _dir: None, pg: Some((url, schema)) }
    }

    /// A fresh database of `backend`.
    pub fn for_backend(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres(),
        }
    }

    /// Opens (and migrates) a store on this database; panics if that fails.
    pub async fn open(&self) -> Arc<dyn Store> {
        crate::open(&self.options).await.expect("open the test store")
    }

    /// A fresh database of `backend` and the store opened on it.
    pub async fn store_for(backend: Backend) -> (Self, Arc<dyn Store>) {
        let db = Self::for_backend(backend);
        let store = db.open().await;
        (db, store)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((url, schema)) = self.pg.take() else { return };
        // Drop runs outside any async context we could borrow; use a private runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// Declares one test per backend for each listed `async fn(Backend)`.
/// The PostgreSQL variant is reported as ignored when no test database was configured at
/// build time (see the crate's build script, `build/postgres_tests.rs`).
#[macro_export]
macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(switchboard_postgres), ignore = "set SWITCHBOARD_TEST_DATABASE_URL to run the PostgreSQL tests")]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}
