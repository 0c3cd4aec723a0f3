//! SQLite: one writer task with group commit, a pool of readers (WAL lets them run beside the
//! writer), and in-process wake-ups for workers.

use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

use crate::coalesce::Coalescer;
use crate::queue::WakeSignal;
pub(crate) use crate::sql::inbound_batch::insert_sqlite as insert_inbound_batch;
use crate::{NewInbound, OpenOptions, Result, StoreError, Stored};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Called once the batch carrying a unit has committed (`None`) or failed (`Some`).
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// One atomic unit of writes; returns whether it succeeded and how to report the outcome.
type Unit = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Finish)> + Send>;

/// When a unit's caller hears back.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Once the batch carrying the unit has committed (or failed).
    AfterCommit,
    /// As soon as the unit has run.
    BeforeCommit,
}

enum Command {
    Write(Unit, Answer),
    Close(oneshot::Sender<()>),
}

/// The units of the next transaction. Units answered before the commit run first, so they see
/// only what earlier transactions committed: a claim must never hand out a message whose
/// event could still be rolled back with it.
struct Batch {
    units: Vec<Unit>,
    early: usize,
}

impl Batch {
    fn add(&mut self, unit: Unit, answer: Answer) {
        match answer {
            Answer::BeforeCommit => {
                self.units.insert(self.early, unit);
                self.early += 1;
            }
            Answer::AfterCommit => self.units.push(unit),
        }
    }
}

/// The most units one transaction carries; bounds the latency a large burst adds.
const MAX_BATCH: usize = 1024;

/// Where write units queue for the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer(mpsc::Sender<Command>);

impl Writer {
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.submit(f, Answer::AfterCommit).await
    }

    /// Every write is a transaction here; see the PostgreSQL writer's.
    pub(crate) async fn write_statement<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.write(f).await
    }

    /// Queues `f` for the writer and waits for its answer.
    async fn submit<T, F>(&self, f: F, answer: Answer) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel::<Result<T>>();
        let unit: Unit = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let finish: Finish = match answer {
                    Answer::AfterCommit => Box::new(move |commit_error| {
                        let _ = reply.send(match (result, commit_error) {
                            (Ok(_), Some(error)) => Err(StoreError::Commit(error.to_string())),
                            (result, _) => result,
                        });
                    }),
                    Answer::BeforeCommit => {
                        let _ = reply.send(result);
                        Box::new(|_| {})
                    }
                };
                (ok, finish)
            })
        });
        self.0.send(Command::Write(unit, answer)).await.map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Commit("the write was abandoned".into()))?
    }
}

pub struct SqliteStore {
    writer: Writer,
    pub(crate) inbound_batches: Coalescer<NewInbound, Stored>,
    readers: SqlitePool,
    pub(crate) signal: WakeSignal,
}

impl SqliteStore {
    pub async fn open(options: &OpenOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(&options.url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before any request it carries is answered. Group
            // commit makes that affordable.
            .synchronous(SqliteSynchronous::Full)
            // Each unit runs in a savepoint, whose rollback journal (the sub-journal) would
            // otherwise be a temporary file written page by page.
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .disable_statement_logging();
        let mut writer_conn = connect
            .clone()
            // Room for every statement text the writer runs, the batched inserts' one per row
            // count among them, so none is prepared twice.
            .statement_cache_capacity(crate::sql::inbound_batch::SQLITE_MAX_ROWS + 200)
            // Inserts land all over the indexes on random keys (dedupe keys, provider ids):
            // the writer keeps up to 64 MiB of pages instead of SQLite's 2 MiB, so a grown
            // table does not make every insert fetch its index pages again.
            .pragma("cache_size", "-65536")
            .connect()
            .await?;
        MIGRATOR.run(&mut writer_conn).await?;
        // A reader idle for a minute is closed, with its page cache.
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .idle_timeout(Duration::from_secs(60))
            .connect_with(connect)
            .await?;
        let (writer, commands) = mpsc::channel(8192);
        tokio::spawn(run_writer(writer_conn, commands));
        Ok(Self {
            writer: Writer(writer),
            // One writer: a second batch in flight would only queue behind the first.
            inbound_batches: Coalescer::new(MAX_BATCH, 1),
            readers,
            signal: WakeSignal::new(),
        })
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.writer.submit(f, Answer::AfterCommit).await
    }

    /// A handle on the writer that outlives this borrow, for batches written from a task.
    pub(crate) fn writer(&self) -> Writer {
        self.writer.clone()
    }

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut conn = self.readers.acquire().await?;
        f(&mut conn).await
    }

    /// Background work shares the one writer: group commit serves it like any request.
    pub(crate) async fn worker_write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.write(f).await
    }

    /// Like [`Self::worker_write`], but answers as soon as the unit has run, before its
    /// batch commits. Only for writes whose loss is harmless: if the commit fails, the unit's
    /// effect is gone although its caller saw it succeed.
    pub(crate) async fn worker_write_unconfirmed<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.writer.submit(f, Answer::BeforeCommit).await
    }

    pub(crate) async fn worker_read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.read(f).await
    }

    pub(crate) async fn shutdown(&self) {
        let (done, closed) = oneshot::channel();
        if self.writer.0.send(Command::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
        self.readers.close().await;
    }
}

async fn run_writer(mut conn: SqliteConnection, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Batch { units: Vec::with_capacity(MAX_BATCH), early: 0 };
    while let Some(first) = commands.recv().await {
        let mut close = None;
        match first {
            Command::Write(unit, answer) => batch.add(unit, answer),
            Command::Close(done) => close = Some(done),
        }
        // Everything that queued up while the previous batch committed goes into this one.
        while close.is_none() && batch.units.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(Command::Write(unit, answer)) => batch.add(unit, answer),
                Ok(Command::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        if !batch.units.is_empty() {
            commit_batch(&mut conn, &mut batch.units).await;
            batch.early = 0;
        }
        if let Some(done) = close {
            commands.close();
            // Units that raced with the close still get carried out.
            while let Ok(Command::Write(unit, answer)) = commands.try_recv() {
                batch.add(unit, answer);
            }
            if !batch.units.is_empty() {
                commit_batch(&mut conn, &mut batch.units).await;
            }
            let _ = sqlx::Connection::close(conn).await;
            let _ = done.send(());
            return;
        }
    }
}

async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Unit>) {
    let mut finishes = Vec::with_capacity(batch.len());
    match run_units(conn, batch, &mut finishes).await {
        Ok(()) => finishes.into_iter().for_each(|finish| finish(None)),
        Err(error) => {
            tracing::error!(%error, units = finishes.len(), "SQLite group commit failed; its writes were rolled back");
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            let error = StoreError::Commit(error.to_string());
            finishes.into_iter().for_each(|finish| finish(Some(&error)));
        }
    }
    // Units never reached (after a failure) are dropped here; their callers see an error.
    batch.clear();
}

/// Runs the units in one transaction, each inside its own savepoint. Every call into SQLite
/// is a round trip to the connection's thread, so the statements between two units (end one
/// savepoint, open the next) travel together as one script.
async fn run_units(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Unit>,
    finishes: &mut Vec<Finish>,
) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE; SAVEPOINT unit").execute(&mut *conn).await?;
    let count = batch.len();
    for (index, unit) in batch.drain(..).enumerate() {
        let ok = match AssertUnwindSafe(unit(conn)).catch_unwind().await {
            Ok((ok, finish)) => {
                finishes.push(finish);
                ok
            }
            Err(_) => {
                tracing::error!("a store write panicked; it was rolled back");
                false
            }
        };
        let last = index + 1 == count;
        let between = match (ok, last) {
            (true, false) => "RELEASE unit; SAVEPOINT unit",
            (false, false) => "ROLLBACK TO unit; RELEASE unit; SAVEPOINT unit",
            (true, true) => "RELEASE unit; COMMIT",
            (false, true) => "ROLLBACK TO unit; RELEASE unit; COMMIT",
        };
        sqlx::query(between).execute(&mut *conn).await?;
    }
    Ok(())
}

// The single writer serialises claims, so no row lock is needed.
crate::sql::store_impl!(SqliteStore, sqlx::Sqlite, Backend::Sqlite, "");
