//! Runs of a connection's sync: status, progress counts, the first failures, and the
//! checkpoint a resumed run starts from. At most one run per sync is active (queued or
//! running) at a time, across every process sharing the database.

use switchboard_core::{Id, Timestamp};

use crate::{NewJob, Page, Result};

/// The most failed items a run keeps with their reasons (the rest are only counted).
pub const MAX_KEPT_FAILURES: usize = 100;

closed_set! {
    /// How a run finds what changed.
    pub enum SyncMode {
        /// Only what changed since the last run's cursor.
        Incremental,
        /// Everything; what is no longer there is deleted.
        Full,
    }
}

closed_set! {
    /// Where a run stands.
    pub enum SyncRunStatus {
        /// Waiting for a worker.
        Queued,
        /// A worker is fetching pages.
        Running,
        /// Every page was fetched (items may have failed; they are counted).
        Succeeded,
        /// Stopped by an error.
        Failed,
        /// Stopped by a person.
        Cancelled,
    }
}

impl SyncRunStatus {
    /// Queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, SyncRunStatus::Queued | SyncRunStatus::Running)
    }
}

/// What a run has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncCounts {
    /// Pages fetched and written.
    pub pages: u64,
    /// Items the provider returned.
    pub fetched: u64,
    /// Records new to the store.
    pub added: u64,
    /// Records that changed.
    pub updated: u64,
    /// Records deleted.
    pub deleted: u64,
    /// Records found as they were: not written.
    pub unchanged: u64,
    /// Items that could not become records (their reasons in `failures`, up to a limit).
    pub failed: u64,
}

/// One item that could not become a record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncFailure {
    /// The item's primary key, when it could be read.
    pub external_id: Option<String>,
    /// Why it failed.
    pub reason: String,
}

/// A run about to be queued.
#[derive(Debug, Clone)]
pub struct NewSyncRun {
    /// `srun_…`.
    pub id: Id,
    /// The tenant whose connection it syncs.
    pub tenant_id: Id,
    /// `conn_…`.
    pub connection_id: Id,
    /// The sync's name in the provider's manifest.
    pub sync_name: String,
    /// Incremental or full.
    pub mode: SyncMode,
    /// When it was asked for.
    pub created_at: Timestamp,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    /// `srun_…`.
    pub id: Id,
    /// The tenant whose connection it syncs.
    pub tenant_id: Id,
    /// `conn_…`.
    pub connection_id: Id,
    /// The sync's name in the provider's manifest.
    pub sync_name: String,
    /// Incremental or full.
    pub mode: SyncMode,
    /// Where it stands.
    pub status: SyncRunStatus,
    /// What it has done so far.
    pub counts: SyncCounts,
    /// The first failed items (at most [`MAX_KEPT_FAILURES`]).
    pub failures: Vec<SyncFailure>,
    /// JSON text: where the next page starts; `None` before the first page.
    pub checkpoint: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// A person asked to cancel it; the worker stops at its next checkpoint.
    pub cancel_requested: bool,
    /// When it was asked for.
    pub created_at: Timestamp,
    /// When a worker first took it.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What queueing a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum QueuedRun {
    /// Queued now, with its job.
    Queued(SyncRun),
    /// The sync already has an active run: this one, and nothing was written.
    AlreadyActive(SyncRun),
}

/// One page's progress, written after the page's records in the run's checkpoint.
#[derive(Debug, Clone, Default)]
pub struct PageProgress {
    /// Counts to add.
    pub counts: SyncCounts,
    /// Failures to keep (up to [`MAX_KEPT_FAILURES`] in all).
    pub failures: Vec<SyncFailure>,
    /// JSON text: where the next page starts.
    pub checkpoint: Option<String>,
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every page was fetched.
    Succeeded,
    /// Stopped by this error.
    Failed(String),
    /// Stopped because a person asked.
    Cancelled,
}

/// Sync runs.
#[async_trait::async_trait]
pub trait SyncRunStore: Send + Sync {
    /// Queues a run and the job that runs it, in one unit, unless the sync has an active run.
    async fn queue_sync_run(&self, run: &NewSyncRun, job: &NewJob) -> Result<QueuedRun>;
    /// Marks an active run running (a resumed run stays running) and answers it with its
    /// checkpoint; `None` when it has ended (or is not in the tenant).
    async fn start_sync_run(&self, tenant_id: &str, run_id: &str, at: Timestamp) -> Result<Option<SyncRun>>;
    /// Adds a page's progress to a running run; answers the run as it is now (`None` when it
    /// is no longer running), with `cancel_requested` telling the worker to stop.
    async fn checkpoint_sync_run(
        &self,
        tenant_id: &str,
        run_id: &str,
        progress: &PageProgress,
        at: Timestamp,
    ) -> Result<Option<SyncRun>>;
    /// Ends an active run; `None` when it had ended already.
    async fn finish_sync_run(
        &self,
        tenant_id: &str,
        run_id: &str,
        end: &RunEnd,
        at: Timestamp,
    ) -> Result<Option<SyncRun>>;
    /// Cancels a queued run at once and asks a running one to stop; `None` when the run is
    /// not in the tenant. An ended run is answered as it is.
    async fn cancel_sync_run(&self, tenant_id: &str, run_id: &str, at: Timestamp) -> Result<Option<SyncRun>>;
    /// `None` when the run is not in the tenant.
    async fn get_sync_run(&self, tenant_id: &str, run_id: &str) -> Result<Option<SyncRun>>;
    /// A sync's runs, newest first.
    async fn list_sync_runs(
        &self,
        tenant_id: &str,
        connection_id: &str,
        sync_name: &str,
        page: &Page,
    ) -> Result<Vec<SyncRun>>;
}
