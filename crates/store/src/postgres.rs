//! PostgreSQL: a connection pool, one transaction per unit, `FOR UPDATE SKIP LOCKED` claims,
//! and `LISTEN/NOTIFY` so that workers of every process sharing the database wake on enqueue.

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::queue::WakeSignal;
use crate::{OpenOptions, Result, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The NOTIFY channel that announces new or released jobs.
const JOBS_CHANNEL: &str = "switchboard_jobs";

pub struct PgStore {
    pool: PgPool,
    pub(crate) signal: Arc<WakeSignal>,
    stop_listening: CancellationToken,
}

impl PgStore {
    pub async fn open(options: &OpenOptions) -> Result<Self> {
        let mut connect = PgConnectOptions::from_str(&options.url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
            .disable_statement_logging();
        if let Some(schema) = &options.pg_schema {
            if !schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(StoreError::Config("the schema name must be lowercase letters, digits and '_'".into()));
            }
            let mut admin = connect.connect().await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut admin).await?;
            sqlx::Connection::close(admin).await?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;

        let signal = Arc::new(WakeSignal::new());
        let stop_listening = CancellationToken::new();
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(JOBS_CHANNEL).await?;
        tokio::spawn(listen_for_jobs(listener, signal.clone(), stop_listening.clone()));
        Ok(Self { pool, signal, stop_listening })
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut tx = self.pool.begin().await?;
        match f(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut conn = self.pool.acquire().await?;
        f(&mut conn).await
    }

    /// NOTIFY is transactional: it is delivered on commit and never for a rolled-back unit.
    pub(crate) async fn notify_in_unit(conn: &mut PgConnection) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')").bind(JOBS_CHANNEL).execute(&mut *conn).await?;
        Ok(())
    }

    pub(crate) async fn shutdown(&self) {
        self.stop_listening.cancel();
        self.pool.close().await;
    }
}

async fn listen_for_jobs(mut listener: PgListener, signal: Arc<WakeSignal>, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            received = listener.recv() => {
                // On a reconnect notifications may have been missed: wake the workers anyway.
                if let Err(error) = received {
                    if stop.is_cancelled() {
                        return;
                    }
                    tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                signal.wake();
            }
        }
    }
}

// Rows locked by another claimer are skipped, so concurrent claimers never share a job.
crate::sql::store_impl!(PgStore, sqlx::Postgres, Backend::Postgres, "FOR UPDATE SKIP LOCKED");
