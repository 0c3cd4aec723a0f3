//! The durable queue's job types and the worker runtime every background task runs on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use switchboard_core::{Clock, Id, Timestamp};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{QueueDepth, Result, Store};

/// What a wake-up is about. Each kind of worker waits on its own signal, so a published
/// message does not wake the job workers (and a job does not wake delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Messages to deliver became due (created, resent, recovered, retried).
    Messages,
    /// Jobs became claimable (enqueued, released for a retry).
    Jobs,
}

impl Work {
    /// Every kind, for wake-ups that cannot tell (a reconnect, a test that moved its clock).
    pub const ALL: [Work; 2] = [Work::Messages, Work::Jobs];

    /// The name announced to other processes (PostgreSQL's NOTIFY payload).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Work::Messages => "messages",
            Work::Jobs => "jobs",
        }
    }
}

/// Asks another task to tell other processes which kinds of work became due; requests made
/// while one announcement is being sent share the next.
#[derive(Debug, Default)]
pub(crate) struct Announcer {
    pending: [std::sync::atomic::AtomicBool; 2],
    notify: tokio::sync::Notify,
}

impl Announcer {
    fn request(&self, work: Work) {
        self.pending[work as usize].store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits for requests, then takes them: the kinds to announce.
    pub(crate) async fn next(&self) -> Vec<Work> {
        self.notify.notified().await;
        Work::ALL
            .into_iter()
            .filter(|work| self.pending[*work as usize].swap(false, std::sync::atomic::Ordering::AcqRel))
            .collect()
    }
}

/// Wakes the workers of this process: per kind of work, a counter that changes whenever some
/// became due. A watch channel (not a bare notify) so a worker busy claiming when the change
/// happens still sees it on its next wait.
#[derive(Debug)]
pub(crate) struct WakeSignal {
    local: [tokio::sync::watch::Sender<u64>; 2],
    /// Tells other processes too (PostgreSQL's NOTIFY), when they share the database.
    announce: Option<Arc<Announcer>>,
}

impl WakeSignal {
    pub(crate) fn new() -> Self {
        Self { local: [tokio::sync::watch::Sender::new(0), tokio::sync::watch::Sender::new(0)], announce: None }
    }

    pub(crate) fn announcing(announce: Arc<Announcer>) -> Self {
        Self { announce: Some(announce), ..Self::new() }
    }

    /// Work of this kind became due (call after its commit): wakes this process's workers
    /// of that kind and, where processes share the database, theirs.
    pub(crate) fn wake(&self, work: Work) {
        self.wake_local(work);
        if let Some(announce) = &self.announce {
            announce.request(work);
        }
    }

    /// Wakes this process's workers of that kind only (another process announced work).
    pub(crate) fn wake_local(&self, work: Work) {
        self.local[work as usize].send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self, work: Work) -> tokio::sync::watch::Receiver<u64> {
        self.local[work as usize].subscribe()
    }
}

/// The durable queue: the primitive every background task runs on. Jobs are enqueued in the
/// same unit as the rows that cause them (see [`crate::Store::create_event`]) or on their own.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync {
    /// Stores the jobs in one unit and wakes the workers.
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<()>;
    /// Leases up to `limit` due jobs of `queue` until `now + lease`. A job is due when its
    /// `run_at` has passed and it is not leased, or its lease expired (its worker died).
    async fn claim(&self, queue: &str, limit: u32, now: Timestamp, lease: chrono::Duration) -> Result<Vec<Job>>;
    /// Finishes a job. False when the lease was lost (expired and claimed by another worker).
    async fn ack(&self, lease: &JobLease) -> Result<bool>;
    /// Releases the job to run again at `at`.
    async fn retry_at(&self, lease: &JobLease, at: Timestamp, error: &str) -> Result<bool>;
    /// Keeps a long job's lease alive.
    async fn extend_lease(&self, lease: &JobLease, until: Timestamp) -> Result<bool>;
    /// Parks the job for good (dead letter): it is kept for inspection but never claimed.
    async fn dead_letter(&self, lease: &JobLease, at: Timestamp, error: &str) -> Result<bool>;
    /// When the next job of `queue` becomes claimable (due, or its lease expires).
    async fn next_due(&self, queue: &str) -> Result<Option<Timestamp>>;
    /// How many jobs of `queue` are pending, leased and dead.
    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth>;
    /// A receiver that changes whenever work of this kind may have become due: after a local
    /// commit that made it so and, on PostgreSQL, after another process's (LISTEN/NOTIFY).
    fn work_signal(&self, work: Work) -> tokio::sync::watch::Receiver<u64>;
    /// Wakes every worker of this process (e.g. after a test moved its clock).
    fn wake_workers(&self);
}

/// A job to enqueue. `payload` is JSON text owned by whoever handles the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// `job_…`, the job's id.
    pub id: Id,
    /// The tenant the job works for.
    pub tenant_id: Id,
    /// The queue it goes to; workers claim jobs by queue name.
    pub queue: String,
    /// JSON text for the queue's handler.
    pub payload: String,
    /// The job is not claimed before this.
    pub run_at: Timestamp,
}

/// A claimed job. Its lease must be presented to ack or retry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// `job_…`, the job's id.
    pub id: Id,
    /// The tenant the job works for.
    pub tenant_id: Id,
    /// The queue it was claimed from.
    pub queue: String,
    /// JSON text for the queue's handler.
    pub payload: String,
    /// When it became (or becomes) due.
    pub run_at: Timestamp,
    /// How many times it has been claimed, this claim included.
    pub attempts: i64,
    /// The error its last retry recorded; `None` on its first run.
    pub last_error: Option<String>,
    /// The lease this claim holds.
    pub lease: JobLease,
}

/// A claim on a job: acking, retrying, extending or parking it works only while the job
/// still carries this lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    /// `job_…`, the leased job.
    pub job_id: Id,
    /// Fresh for every claim, so a worker whose lease expired cannot finish a job claimed again.
    pub lease_id: String,
}

/// What a handler decided about a job.
#[derive(Debug)]
pub enum JobOutcome {
    /// Finished: the job is deleted.
    Done,
    /// Run it again at this time, recording the error.
    RetryAt(Timestamp, String),
    /// Park it for good with this error; it is kept for inspection.
    DeadLetter(String),
}

/// How [`run_worker`] works through a queue.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The queue whose jobs it handles.
    pub queue: String,
    /// Jobs handled at the same time by this process.
    pub concurrency: usize,
    /// How long a claim holds a job before another worker may claim it again.
    pub lease: chrono::Duration,
    /// Upper bound on an idle wait; wake-ups normally come from the job signal.
    pub max_idle_wait: Duration,
}

impl WorkerConfig {
    /// A config for `queue`: 8 jobs at a time, 60-second leases, idle waits of at most 30 seconds.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            concurrency: 8,
            lease: chrono::Duration::seconds(60),
            max_idle_wait: Duration::from_secs(30),
        }
    }
}

/// Runs `handler` on the jobs of one queue until `shutdown` is cancelled, then waits for the
/// jobs in hand to finish. A job whose handler never finishes keeps its lease and is claimed
/// again elsewhere when the lease expires, so stopping never loses work.
pub async fn run_worker<H, F>(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Job) -> F + Send + Sync + 'static,
    F: Future<Output = JobOutcome> + Send + 'static,
{
    let handler = Arc::new(handler);
    let limits = ClaimLimits { concurrency: config.concurrency, max_idle_wait: config.max_idle_wait };
    let queue = config.queue.clone();
    let claim = {
        let (store, clock, queue) = (store.clone(), clock.clone(), queue.clone());
        move |free: u32| {
            let (store, clock, queue) = (store.clone(), clock.clone(), queue.clone());
            async move { store.claim(&queue, free, clock.now(), config.lease).await }
        }
    };
    let next_due = {
        let (store, queue) = (store.clone(), queue.clone());
        move || {
            let (store, queue) = (store.clone(), queue.clone());
            async move { store.next_due(&queue).await }
        }
    };
    let (signal, loop_clock) = (store.work_signal(Work::Jobs), clock.clone());
    let handle = move |job: Job| {
        let (store, clock, handler) = (store.clone(), clock.clone(), handler.clone());
        async move {
            let lease = job.lease.clone();
            let queue = job.queue.clone();
            let outcome = match AssertUnwindSafe(handler(job)).catch_unwind().await {
                Ok(outcome) => outcome,
                // A panic is a bug; parking the job keeps it for inspection instead of
                // re-running it every lease period forever.
                Err(_) => JobOutcome::DeadLetter("the job handler panicked".into()),
            };
            let result = match &outcome {
                JobOutcome::Done => store.ack(&lease).await,
                JobOutcome::RetryAt(at, error) => store.retry_at(&lease, *at, error).await,
                JobOutcome::DeadLetter(error) => store.dead_letter(&lease, clock.now(), error).await,
            };
            match result {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%queue, job = %lease.job_id, "lease lost before the job finished; another worker owns it now")
                }
                Err(error) => {
                    tracing::error!(%queue, job = %lease.job_id, %error, "recording a job outcome failed; the job will run again after its lease expires")
                }
            }
        }
    };
    claim_loop(&queue, loop_clock, signal.into(), limits, shutdown, claim, next_due, handle).await
}

/// How long a busy claim loop waits for more free slots before claiming for fewer.
const GATHER_WAIT: Duration = Duration::from_millis(2);

/// How much a claim loop runs at once, and its longest idle wait (wake-ups normally come
/// from the signal).
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// Items run at the same time (at least 1).
    pub concurrency: usize,
    /// The longest sleep while nothing is due.
    pub max_idle_wait: Duration,
}

/// Where a claim loop hears of work: the store's wake signal for its kind, and, for work
/// created in this process, items handed to it directly, already leased, which it runs
/// without a claim.
#[derive(Debug)]
pub struct Feed<T> {
    /// Changes when work of the loop's kind may have become due.
    pub signal: tokio::sync::watch::Receiver<u64>,
    /// Items leased by their creator and handed over; `None` when nothing is handed.
    pub handed: Option<tokio::sync::mpsc::Receiver<T>>,
}

impl<T> From<tokio::sync::watch::Receiver<u64>> for Feed<T> {
    fn from(signal: tokio::sync::watch::Receiver<u64>) -> Self {
        Self { signal, handed: None }
    }
}

/// The loop every kind of background work runs on: claim as many items as there are free
/// slots, run each on a task of its own holding a slot, and when nothing is due sleep until
/// the next item is (or the wake signal changes). Items handed over through the feed run
/// first and cost no claim: while the loop sleeps they run as they arrive. When `shutdown`
/// is cancelled it stops claiming, runs what was handed to it, and returns once every item
/// in hand is done.
#[allow(clippy::too_many_arguments)]
pub async fn claim_loop<T, C, CF, D, DF, H, HF>(
    what: &str,
    clock: Arc<dyn Clock>,
    feed: Feed<T>,
    limits: ClaimLimits,
    shutdown: CancellationToken,
    mut claim: C,
    mut next_due: D,
    handle: H,
) where
    T: Send + 'static,
    C: FnMut(u32) -> CF,
    CF: Future<Output = Result<Vec<T>>>,
    D: FnMut() -> DF,
    DF: Future<Output = Result<Option<Timestamp>>>,
    H: Fn(T) -> HF,
    HF: Future<Output = ()> + Send + 'static,
{
    let Feed { mut signal, mut handed } = feed;
    let concurrency = limits.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let run = |item: T, permit: tokio::sync::OwnedSemaphorePermit| {
        let work = handle(item);
        tokio::spawn(async move {
            work.await;
            drop(permit);
        });
    };
    // While work is waiting, a claim is worth making for several slots at once: every claim
    // is a write unit of its own.
    let gather = (concurrency / 8).max(1);
    let mut backlog = false;
    'claiming: loop {
        signal.borrow_and_update();
        // Handed items first: they are leased already, and their lease is running.
        while let Some(receiver) = handed.as_mut()
            && let Ok(permit) = permits.clone().try_acquire_owned()
        {
            match receiver.try_recv() {
                Ok(item) => run(item, permit),
                Err(_) => break,
            }
        }
        let free = permits.available_permits();
        if free == 0 {
            // Every slot is busy: wait for one to free up (or for shutdown).
            tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        if backlog && free < gather {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                gathered = permits.clone().acquire_many_owned(gather as u32) => drop(gathered),
                _ = tokio::time::sleep(GATHER_WAIT) => {}
            }
        }
        let free = permits.available_permits();
        let claimed = match claim(free as u32).await {
            Ok(items) => items,
            Err(error) => {
                tracing::warn!(%what, %error, "claiming work failed; retrying shortly");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        backlog = claimed.len() == free;
        if claimed.is_empty() {
            let wait = match next_due().await {
                Ok(Some(at)) => (at - clock.now()).to_std().unwrap_or(Duration::ZERO).min(limits.max_idle_wait),
                _ => limits.max_idle_wait,
            };
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            let until = tokio::time::Instant::now() + wait;
            // Asleep until something is due; handed items run meanwhile without a claim.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'claiming,
                    _ = signal.changed() => continue 'claiming,
                    _ = tokio::time::sleep_until(until) => continue 'claiming,
                    item = next_handed(&mut handed) => match item {
                        Some(item) => {
                            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
                            run(item, permit);
                        }
                        None => handed = None,
                    },
                }
            }
        }
        for item in claimed {
            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
            run(item, permit);
        }
    }
    // What was handed over is leased to this process: run it rather than leave it waiting
    // for its lease to run out.
    if let Some(mut receiver) = handed {
        receiver.close();
        while let Some(item) = receiver.recv().await {
            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
            run(item, permit);
        }
    }
    // Drain: every permit back means every item in hand has finished.
    let _ = permits.acquire_many(concurrency as u32).await;
}

/// The next handed item; pending forever when nothing is handed.
async fn next_handed<T>(handed: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match handed {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
