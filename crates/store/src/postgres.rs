//! PostgreSQL: a connection pool, one transaction per unit, `FOR UPDATE SKIP LOCKED` claims,
//! and `LISTEN/NOTIFY` so that workers of every process sharing the database wake when work
//! becomes due (notified after the commit, coalesced).

mod recording;

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::coalesce::Coalescer;
use crate::queue::{Announcer, WakeSignal, Work};
pub(crate) use crate::sql::inbound_batch::insert_postgres as insert_inbound_batch;
use crate::{NewInbound, OpenOptions, Result, StoreError, Stored};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The NOTIFY channel that announces work that became due; the payload names its kinds.
const JOBS_CHANNEL: &str = "switchboard_jobs";

/// A handle for writing from a task, on the API pool. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer(PgPool);

impl Writer {
    /// Runs `f`, which issues exactly one statement, on its own: PostgreSQL makes a single
    /// statement atomic and durable by itself, so the round trips of `BEGIN` and `COMMIT`
    /// are saved.
    pub(crate) async fn write_statement<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut conn = self.0.acquire().await?;
        f(&mut conn).await
    }
}

pub struct PgStore {
    pool: PgPool,
    pub(crate) inbound_batches: Coalescer<NewInbound, Stored>,
    /// Background work (claiming, recording deliveries) has connections of its own, so a
    /// flood of API requests waiting for the main pool cannot starve it.
    workers: PgPool,
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
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let workers = PgPoolOptions::new()
            .max_connections(WORKER_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;

        let announce = Arc::new(Announcer::default());
        let signal = Arc::new(WakeSignal::announcing(announce.clone()));
        let stop_listening = CancellationToken::new();
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(JOBS_CHANNEL).await?;
        // Announcements name their origin, so this store does not wake itself a second time
        // when its own NOTIFY comes back.
        let origin = ulid::Ulid::new().to_string();
        tokio::spawn(listen_for_jobs(listener, signal.clone(), origin.clone(), stop_listening.clone()));
        tokio::spawn(announce_jobs(pool.clone(), announce, origin, stop_listening.clone()));
        Ok(Self {
            pool,
            workers,
            signal,
            stop_listening,
            inbound_batches: Coalescer::new(INBOUND_BATCH, INBOUND_BATCHES_IN_FLIGHT),
        })
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        transact(&self.pool, f).await
    }

    /// A handle on the pool that outlives this borrow, for batches written from a task.
    pub(crate) fn writer(&self) -> Writer {
        Writer(self.pool.clone())
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut conn = self.pool.acquire().await?;
        f(&mut conn).await
    }

    pub(crate) async fn worker_write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        transact(&self.workers, f).await
    }

    /// A transaction answers only once committed; there is nothing to gain here.
    pub(crate) async fn worker_write_unconfirmed<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.worker_write(f).await
    }

    pub(crate) async fn worker_read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut conn = self.workers.acquire().await?;
        f(&mut conn).await
    }

    pub(crate) async fn shutdown(&self) {
        self.stop_listening.cancel();
        self.pool.close().await;
        self.workers.close().await;
    }
}

/// The most received webhooks one `INSERT` carries.
const INBOUND_BATCH: usize = 512;

/// Batches of received webhooks written at once: one fills while another commits.
const INBOUND_BATCHES_IN_FLIGHT: usize = 3;

/// Connections of the background-work pool.
const WORKER_CONNECTIONS: u32 = 4;

/// Runs `f` in a transaction on a connection of `pool`: committed when it succeeds.
async fn transact<T, F>(pool: &PgPool, f: F) -> Result<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    let mut tx = pool.begin().await?;
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

async fn listen_for_jobs(mut listener: PgListener, signal: Arc<WakeSignal>, origin: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            received = listener.recv() => {
                // The payload names the kinds of work. On a reconnect notifications may have
                // been missed: wake every kind.
                let named: Vec<Work> = match received {
                    Ok(notification) if notification.payload().starts_with(origin.as_str()) => continue,
                    Ok(notification) => {
                        Work::ALL.into_iter().filter(|w| notification.payload().contains(w.as_str())).collect()
                    }
                    Err(error) => {
                        if stop.is_cancelled() {
                            return;
                        }
                        tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Vec::new()
                    }
                };
                for work in if named.is_empty() { Work::ALL.to_vec() } else { named } {
                    signal.wake_local(work);
                }
            }
        }
    }
}

/// Tells the other processes that work became due, after the commit that made it so.
/// Requests coalesce: wake-ups that arrive while a NOTIFY is being sent share the next one,
/// so a burst of commits costs a few notifications, and NOTIFY (which serialises committing
/// transactions in PostgreSQL) stays out of every hot transaction.
async fn announce_jobs(pool: PgPool, announce: Arc<Announcer>, origin: String, stop: CancellationToken) {
    loop {
        let works = tokio::select! {
            _ = stop.cancelled() => return,
            works = announce.next() => works,
        };
        if works.is_empty() {
            continue;
        }
        let kinds: Vec<&str> = works.iter().map(|w| w.as_str()).collect();
        let payload = format!("{origin} {}", kinds.join(" "));
        if let Err(error) =
            sqlx::query("SELECT pg_notify($1, $2)").bind(JOBS_CHANNEL).bind(&payload).execute(&pool).await
        {
            // The others still find the work at their next idle check; only latency suffers.
            tracing::warn!(%error, "announcing new work to other processes failed");
        }
        tokio::time::sleep(ANNOUNCE_INTERVAL).await;
    }
}

/// The shortest time between two announcements of one process.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(2);

// Rows locked by another claimer are skipped, so concurrent claimers never share a job.
crate::sql::store_impl!(PgStore, sqlx::Postgres, Backend::Postgres, "FOR UPDATE SKIP LOCKED");
