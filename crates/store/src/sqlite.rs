//! SQLite: one writer thread with group commit, pools of readers (WAL lets them run beside
//! the writer), and in-process wake-ups for workers.

mod direct;

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
/// One atomic unit of writes through the driver (each statement a round trip to the
/// driver's thread); returns whether it succeeded and how to report the outcome.
type DriverUnit = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Finish)> + Send>;
/// One atomic unit of writes run on the writer's own thread, straight on the connection.
type DirectUnit = Box<dyn FnOnce(&rusqlite::Connection) -> (bool, Finish) + Send>;

/// When a unit's caller hears back.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Once the batch carrying the unit has committed (or failed).
    AfterCommit,
    /// As soon as the unit has run.
    BeforeCommit,
}

enum Command {
    Write(DriverUnit, Answer),
    WriteDirect(DirectUnit, Durability),
    Close(oneshot::Sender<()>),
}

/// How a direct unit's commit must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// On disk before its caller hears back (`synchronous=FULL`): what the API acknowledges.
    Synced,
    /// Safe from a crash of the process as soon as it commits, but not from one of the
    /// machine (`synchronous=NORMAL`: the WAL is synced by the next synced commit or
    /// checkpoint). For writes whose loss the system repairs by itself: a delivery outcome
    /// lost with the machine means the message is delivered again when its lease runs out.
    Relaxed,
}

/// The units of the next transaction, in the order they run. Units answered before the
/// commit run first, so they see only what earlier transactions committed: a claim must
/// never hand out a message whose event could still be rolled back with it. Direct units run
/// last, together, so the connection is taken from the driver once per batch.
#[derive(Default)]
struct Batch {
    early: Vec<DriverUnit>,
    late: Vec<DriverUnit>,
    direct: Vec<DirectUnit>,
    /// Whether any unit needs its commit synced (driver units always do).
    synced: bool,
}

impl Batch {
    fn add(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Write(unit, Answer::BeforeCommit) => {
                self.early.push(unit);
                self.synced = true;
            }
            Command::Write(unit, Answer::AfterCommit) => {
                self.late.push(unit);
                self.synced = true;
            }
            Command::WriteDirect(unit, durability) => {
                self.direct.push(unit);
                self.synced |= durability == Durability::Synced;
            }
            Command::Close(done) => return Some(done),
        }
        None
    }

    fn len(&self) -> usize {
        self.early.len() + self.late.len() + self.direct.len()
    }
}

/// A reader idle this long is closed, with its page cache (the writer's next idle pass gives
/// the memory back).
const READER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most units one transaction carries; bounds the latency a large burst adds.
const MAX_BATCH: usize = 1024;

/// Where write units queue for the writer thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer(mpsc::Sender<Command>);

/// Answers a unit's caller once its batch has committed: the unit's result, unless the
/// commit failed.
fn answer_after_commit<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, result: Result<T>) -> Finish {
    Box::new(move |commit_error| {
        let _ = reply.send(match (result, commit_error) {
            (Ok(_), Some(error)) => Err(StoreError::Commit(error.to_string())),
            (result, _) => result,
        });
    })
}

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
        let unit: DriverUnit = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let finish: Finish = match answer {
                    Answer::AfterCommit => answer_after_commit(reply, result),
                    Answer::BeforeCommit => {
                        let _ = reply.send(result);
                        Box::new(|_| {})
                    }
                };
                (ok, finish)
            })
        });
        self.send(Command::Write(unit, answer), outcome).await
    }

    /// Queues `f` to run on the writer's thread, straight on the connection, and waits until
    /// its batch has committed as `durability` asks.
    pub(crate) async fn write_direct<T, F>(&self, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel::<Result<T>>();
        let unit: DirectUnit = Box::new(move |db| {
            let result = f(db);
            (result.is_ok(), answer_after_commit(reply, result))
        });
        self.send(Command::WriteDirect(unit, durability), outcome).await
    }

    async fn send<T>(&self, command: Command, outcome: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.0.send(command).await.map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Commit("the write was abandoned".into()))?
    }
}

pub struct SqliteStore {
    writer: Writer,
    pub(crate) inbound_batches: Coalescer<NewInbound, Stored>,
    readers: SqlitePool,
    /// Background work's reads (polling for due work) have readers of their own: the pool
    /// hands out its idle connections oldest first, so polls spread over the API's readers
    /// would keep every one of them (and its page cache) open forever.
    worker_readers: SqlitePool,
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
            // table does not make every insert fetch its index pages again. (16 MiB cut the peak
            // memory by a third and delivery throughput by 40 %: BENCHMARKS.md.)
            .pragma("cache_size", "-65536")
            .connect()
            .await?;
        MIGRATOR.run(&mut writer_conn).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .idle_timeout(READER_IDLE_TIMEOUT)
            .connect_with(connect.clone())
            .await?;
        let worker_readers =
            SqlitePoolOptions::new().max_connections(2).idle_timeout(READER_IDLE_TIMEOUT).connect_with(connect).await?;
        let (writer, commands) = mpsc::channel(8192);
        start_writer(writer_conn, commands)?;
        Ok(Self {
            writer: Writer(writer),
            // One writer: a second batch in flight would only queue behind the first.
            inbound_batches: Coalescer::new(MAX_BATCH, 1),
            readers,
            worker_readers,
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

    /// Publishes events with their messages and jobs, in one unit run on the writer's thread.
    pub(crate) async fn insert_events(
        &self,
        events: Vec<crate::sql::EventUnit>,
    ) -> Result<Vec<crate::CreateEventOutcome>> {
        self.writer
            .write_direct(Durability::Synced, move |db| {
                events
                    .into_iter()
                    .map(|(event, messages, jobs)| direct::insert_event(db, event, &messages, &jobs))
                    .collect()
            })
            .await
    }

    /// Records a batch of delivery outcomes, with the events they emit, in one unit run on
    /// the writer's thread.
    pub(crate) async fn record_deliveries_unit(
        &self,
        records: Vec<crate::DeliveryRecord>,
        events: Vec<crate::EventWithMessages>,
        disable_failing_before: switchboard_core::Timestamp,
    ) -> Result<crate::RecordedDeliveries> {
        self.writer
            .write_direct(Durability::Relaxed, move |db| {
                direct::record_deliveries(db, &records, events, disable_failing_before)
            })
            .await
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
        let mut conn = self.worker_readers.acquire().await?;
        f(&mut conn).await
    }

    pub(crate) async fn shutdown(&self) {
        let (done, closed) = oneshot::channel();
        if self.writer.0.send(Command::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
        self.readers.close().await;
        self.worker_readers.close().await;
    }
}

/// The writer's connection. Units of the driver run through sqlx, a round trip to its thread
/// per statement; direct units run here, on the writer's thread, through the raw handle,
/// which sqlx lends while the driver's thread waits.
struct Connections {
    driver: SqliteConnection,
    /// rusqlite's view of the same connection (with its own statement cache), used only
    /// while the handle is lent; created at the first loan.
    direct: Option<rusqlite::Connection>,
    /// The connection's `synchronous` setting now: FULL unless the last batch was relaxed.
    synced: bool,
}

impl Connections {
    /// Runs `f` on the raw connection, with the driver's thread parked meanwhile.
    async fn direct<R>(&mut self, f: impl FnOnce(&rusqlite::Connection) -> R) -> Result<R> {
        let mut handle = self.driver.lock_handle().await?;
        let result = f(view(&mut self.direct, &mut handle)?);
        drop(handle);
        Ok(result)
    }

    async fn close(mut self) {
        if let Some(db) = self.direct.take() {
            // Its cached statements are finalised while the handle is lent.
            let lent = self.driver.lock_handle().await;
            drop(db);
            drop(lent);
        }
        let _ = sqlx::Connection::close(self.driver).await;
    }
}

/// rusqlite's view of the lent connection, created at the first loan.
fn view<'v>(
    direct: &'v mut Option<rusqlite::Connection>,
    handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
) -> Result<&'v rusqlite::Connection> {
    if let Some(db) = direct {
        return Ok(db);
    }
    // SAFETY: the handle stays open as long as the driver's connection, which outlives this
    // view (`Connections::close` drops it first), and the view is used only while the handle
    // is lent, when nothing else touches the connection.
    let db = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
    db.set_prepared_statement_cache_capacity(DIRECT_STATEMENTS);
    Ok(direct.insert(db))
}

/// Statements the direct units and the writer's scripts keep prepared.
const DIRECT_STATEMENTS: usize = 32;

/// The writer's thread: a runtime of its own, so what it runs on the connection never holds
/// up a request's worker, and its units reach SQLite without leaving it.
fn start_writer(conn: SqliteConnection, commands: mpsc::Receiver<Command>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer: {e}")))?;
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || runtime.block_on(run_writer(Connections { driver: conn, direct: None, synced: true }, commands)))
        .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer: {e}")))?;
    Ok(())
}

/// Takes `first` and whatever else queued up (while the previous batch committed) into
/// `batch`; answers the close request, if one came.
fn gather(batch: &mut Batch, first: Command, commands: &mut mpsc::Receiver<Command>) -> Option<oneshot::Sender<()>> {
    let mut close = batch.add(first);
    while close.is_none() && batch.len() < MAX_BATCH {
        match commands.try_recv() {
            Ok(command) => close = batch.add(command),
            Err(_) => break,
        }
    }
    close
}

async fn run_writer(mut conns: Connections, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Batch::default();
    let mut close = None;
    let mut open = true;
    let mut idle = FIRST_IDLE_WAIT;
    while open && close.is_none() {
        // Batches of direct units alone run with the connection lent, and it stays lent
        // between them: they make no round trip to the driver's thread at all. A batch with
        // units of the driver gives it back and runs below.
        match conns.driver.lock_handle().await {
            Ok(mut handle) => match view(&mut conns.direct, &mut handle) {
                Ok(db) => loop {
                    let first = match tokio::time::timeout(idle, commands.recv()).await {
                        Ok(Some(first)) => first,
                        Ok(None) => {
                            open = false;
                            break;
                        }
                        Err(_) => {
                            give_memory_back(db);
                            idle = (idle * 2).min(MAX_IDLE_WAIT);
                            continue;
                        }
                    };
                    idle = FIRST_IDLE_WAIT;
                    close = gather(&mut batch, first, &mut commands);
                    if !batch.early.is_empty() || !batch.late.is_empty() {
                        break;
                    }
                    let mut finishes = Vec::with_capacity(batch.len());
                    let synced = std::mem::take(&mut batch.synced);
                    let result = sync_as(db, &mut conns.synced, synced)
                        .and_then(|()| run_direct(db, std::mem::take(&mut batch.direct), false, &mut finishes));
                    settle(result.map_err(StoreError::from), finishes);
                    if close.is_some() {
                        break;
                    }
                },
                Err(error) => {
                    tracing::error!(%error, "the SQLite writer cannot use its connection directly");
                    open = false;
                }
            },
            Err(error) => {
                tracing::error!(%error, "the SQLite writer cannot borrow its connection");
                open = false;
            }
        }
        commit_batch(&mut conns, &mut batch).await;
    }
    commands.close();
    // Units that raced with the close (or arrived while the writer failed) still get an answer.
    while let Ok(command) = commands.try_recv() {
        batch.add(command);
    }
    commit_batch(&mut conns, &mut batch).await;
    conns.close().await;
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// After this long without a write, the writer gives memory back; then again after twice as
/// long, and so on up to `MAX_IDLE_WAIT`, so what idle readers free is given back as well.
const FIRST_IDLE_WAIT: Duration = Duration::from_secs(5);
const MAX_IDLE_WAIT: Duration = Duration::from_secs(20);

/// Frees the writer's cached pages and hands free heap pages back to the system. SQLite
/// allocates through the C library, whose heaps keep what SQLite frees unless trimmed: without
/// this, a server stays at its peak memory long after a burst.
fn give_memory_back(db: &rusqlite::Connection) {
    if let Err(error) = db.execute_batch("PRAGMA shrink_memory") {
        tracing::warn!(%error, "SQLite could not shrink the writer's cache");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the C library's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Answers every unit of a batch: committed, or failed with the batch's error.
fn settle(result: Result<()>, finishes: Vec<Finish>) {
    match result {
        Ok(()) => finishes.into_iter().for_each(|finish| finish(None)),
        Err(error) => {
            tracing::error!(%error, units = finishes.len(), "SQLite group commit failed; its writes were rolled back");
            let error = StoreError::Commit(error.to_string());
            finishes.into_iter().for_each(|finish| finish(Some(&error)));
        }
    }
}

async fn commit_batch(conns: &mut Connections, batch: &mut Batch) {
    if batch.len() == 0 {
        return;
    }
    let mut finishes = Vec::with_capacity(batch.len());
    let result = run_units(conns, batch, &mut finishes).await;
    if result.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut conns.driver).await;
    }
    settle(result, finishes);
    // Units never reached (after a failure) are dropped here; their callers see an error.
    *batch = Batch::default();
}

/// What runs between two units, or after the last: the unit's savepoint ends (released, or
/// rolled back if the unit failed) and the next one opens, or the transaction commits.
fn between(ok: bool, last: bool) -> &'static [&'static str] {
    match (ok, last) {
        (true, false) => &["RELEASE unit", "SAVEPOINT unit"],
        (false, false) => &["ROLLBACK TO unit", "RELEASE unit", "SAVEPOINT unit"],
        (true, true) => &["RELEASE unit", "COMMIT"],
        (false, true) => &["ROLLBACK TO unit", "RELEASE unit", "COMMIT"],
    }
}

const BEGIN: [&str; 2] = ["BEGIN IMMEDIATE", "SAVEPOINT unit"];

/// Runs the units in one transaction, each inside its own savepoint: the driver's units
/// first, then the direct ones with the connection lent once. Every call into SQLite through
/// the driver is a round trip to its thread, so the statements between two driver units
/// travel together as one script.
async fn run_units(conns: &mut Connections, batch: &mut Batch, finishes: &mut Vec<Finish>) -> Result<()> {
    let driver_units: Vec<DriverUnit> = batch.early.drain(..).chain(batch.late.drain(..)).collect();
    let direct_units = std::mem::take(&mut batch.direct);
    let begun = !driver_units.is_empty();
    if begun {
        // Units of the driver are always synced.
        let begin = BEGIN.join("; ");
        let begin = if conns.synced { begin } else { format!("PRAGMA synchronous = FULL; {begin}") };
        sqlx::query(&begin).execute(&mut conns.driver).await?;
        conns.synced = true;
        let count = driver_units.len();
        for (index, unit) in driver_units.into_iter().enumerate() {
            let ok = ran(AssertUnwindSafe(unit(&mut conns.driver)).catch_unwind().await, finishes);
            let last = index + 1 == count && direct_units.is_empty();
            sqlx::query(&between(ok, last).join("; ")).execute(&mut conns.driver).await?;
        }
    }
    if direct_units.is_empty() {
        return Ok(());
    }
    let (synced, mut current) = (batch.synced, conns.synced);
    let result = conns
        .direct(|db| sync_as(db, &mut current, synced).and_then(|()| run_direct(db, direct_units, begun, finishes)))
        .await;
    conns.synced = current;
    Ok(result??)
}

/// Whether a unit succeeded, keeping how to answer its caller; a unit that panicked failed
/// (its savepoint is rolled back) and its caller hears that the write was abandoned.
fn ran(outcome: std::thread::Result<(bool, Finish)>, finishes: &mut Vec<Finish>) -> bool {
    match outcome {
        Ok((ok, finish)) => {
            finishes.push(finish);
            ok
        }
        Err(_) => {
            tracing::error!("a store write panicked; it was rolled back");
            false
        }
    }
}

/// Sets the connection's `synchronous` to what the next commit needs (`current` tracks it);
/// only between transactions.
fn sync_as(db: &rusqlite::Connection, current: &mut bool, synced: bool) -> rusqlite::Result<()> {
    if *current != synced {
        db.execute_batch(if synced { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" })?;
        *current = synced;
    }
    Ok(())
}

/// Runs direct units on the lent connection, each in its own savepoint, and commits; opens
/// the transaction first unless the driver's units `begun` it. On failure the transaction is
/// rolled back whole.
fn run_direct(
    db: &rusqlite::Connection,
    units: Vec<DirectUnit>,
    begun: bool,
    finishes: &mut Vec<Finish>,
) -> rusqlite::Result<()> {
    let run = |statements: &[&str]| -> rusqlite::Result<()> {
        for statement in statements {
            db.prepare_cached(statement)?.execute([])?;
        }
        Ok(())
    };
    let result = (|| {
        if !begun {
            run(&BEGIN)?;
        }
        let count = units.len();
        for (index, unit) in units.into_iter().enumerate() {
            let ok = ran(std::panic::catch_unwind(AssertUnwindSafe(|| unit(db))), finishes);
            run(between(ok, index + 1 == count))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = db.execute_batch("ROLLBACK");
    }
    result
}

// The single writer serialises claims, so no row lock is needed.
crate::sql::store_impl!(SqliteStore, sqlx::Sqlite, Backend::Sqlite, "");
