//! Sync runs on both backends: one active run per sync, progress and checkpoints that a
//! resumed run starts from, and cancelling.

use chrono::Duration;
use switchboard_core::{Id, IdKind, Timestamp, from_micros};
use switchboard_store::sync_runs::{
    MAX_KEPT_FAILURES, NewSyncRun, PageProgress, QueuedRun, RunEnd, SyncCounts, SyncFailure, SyncMode, SyncRunStatus,
};
use switchboard_store::testing::TestDb;
use switchboard_store::*;

switchboard_store::conformance_tests!(
    a_sync_has_one_active_run_and_queueing_another_answers_it,
    pages_add_up_and_a_resumed_run_starts_from_its_checkpoint,
    a_queued_run_cancels_at_once_and_a_running_one_at_its_next_page,
);

fn t0() -> Timestamp {
    from_micros(1_760_000_000_000_000)
}

async fn tenant(store: &dyn Store) -> Id {
    let tenant = NewTenant { id: Id::new(IdKind::Tenant), name: "acme".into(), created_at: t0() };
    store.create_tenant(&tenant, None).await.unwrap().id
}

fn new_run(tenant_id: &Id, sync_name: &str) -> (NewSyncRun, NewJob) {
    let run = NewSyncRun {
        id: Id::new(IdKind::SyncRun),
        tenant_id: tenant_id.clone(),
        connection_id: Id::from_trusted("conn_github".to_string()),
        sync_name: sync_name.into(),
        mode: SyncMode::Incremental,
        created_at: t0(),
    };
    let job = NewJob {
        id: Id::new(IdKind::Job),
        tenant_id: tenant_id.clone(),
        queue: "sync-runs".into(),
        payload: format!(r#"{{"run_id":"{}"}}"#, run.id),
        run_at: t0(),
    };
    (run, job)
}

async fn a_sync_has_one_active_run_and_queueing_another_answers_it(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let (first, job) = new_run(&a, "issues");
    let QueuedRun::Queued(queued) = store.queue_sync_run(&first, &job).await.unwrap() else {
        panic!("the first is queued")
    };
    assert_eq!((queued.status, queued.counts), (SyncRunStatus::Queued, SyncCounts::default()));
    assert_eq!(store.queue_depth("sync-runs").await.unwrap().pending, 1, "its job is queued in the same unit");

    // Asked again while it is active (from any process): the active run, and nothing queued.
    let (second, second_job) = new_run(&a, "issues");
    assert_eq!(store.queue_sync_run(&second, &second_job).await.unwrap(), QueuedRun::AlreadyActive(queued.clone()));
    assert_eq!(store.queue_depth("sync-runs").await.unwrap().pending, 1);
    assert!(store.get_sync_run(a.as_str(), second.id.as_str()).await.unwrap().is_none());

    // Another sync of the connection, or the same sync of another tenant, has its own.
    let (other_sync, other_job) = new_run(&a, "repositories");
    assert!(matches!(store.queue_sync_run(&other_sync, &other_job).await.unwrap(), QueuedRun::Queued(_)));
    let b = tenant(&*store).await;
    let (other_tenant, other_tenant_job) = new_run(&b, "issues");
    assert!(matches!(store.queue_sync_run(&other_tenant, &other_tenant_job).await.unwrap(), QueuedRun::Queued(_)));
    assert!(store.get_sync_run(b.as_str(), first.id.as_str()).await.unwrap().is_none(), "tenants are apart");

    // Once it has ended, the next one queues.
    store.start_sync_run(a.as_str(), first.id.as_str(), t0()).await.unwrap().unwrap();
    let ended = store.finish_sync_run(a.as_str(), first.id.as_str(), &RunEnd::Succeeded, t0()).await.unwrap().unwrap();
    assert_eq!((ended.status, ended.finished_at), (SyncRunStatus::Succeeded, Some(t0())));
    assert!(store.finish_sync_run(a.as_str(), first.id.as_str(), &RunEnd::Cancelled, t0()).await.unwrap().is_none());
    assert!(matches!(store.queue_sync_run(&second, &second_job).await.unwrap(), QueuedRun::Queued(_)));
    let runs =
        store.list_sync_runs(a.as_str(), "conn_github", "issues", &Page { limit: 10, before: None }).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [second.id, first.id], "newest first");
}

async fn pages_add_up_and_a_resumed_run_starts_from_its_checkpoint(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let (run, job) = new_run(&a, "issues");
    store.queue_sync_run(&run, &job).await.unwrap();
    let (tenant_id, run_id) = (a.as_str(), run.id.as_str());
    let page = |n: u64, checkpoint: &str| PageProgress {
        counts: SyncCounts { pages: 1, fetched: n, added: n - 1, failed: 1, ..SyncCounts::default() },
        failures: (0..80)
            .map(|i| SyncFailure { external_id: Some(i.to_string()), reason: "no title".into() })
            .collect(),
        checkpoint: Some(checkpoint.into()),
    };
    assert!(
        store.checkpoint_sync_run(tenant_id, run_id, &page(1, "x"), t0()).await.unwrap().is_none(),
        "not running yet"
    );
    let started = store.start_sync_run(tenant_id, run_id, t0()).await.unwrap().unwrap();
    assert_eq!((started.status, started.checkpoint, started.started_at), (SyncRunStatus::Running, None, Some(t0())));
    store.checkpoint_sync_run(tenant_id, run_id, &page(100, r#"{"page":2}"#), t0()).await.unwrap().unwrap();
    let later = t0() + Duration::seconds(5);
    let after = store.checkpoint_sync_run(tenant_id, run_id, &page(50, r#"{"page":3}"#), later).await.unwrap().unwrap();
    assert_eq!(after.counts, SyncCounts { pages: 2, fetched: 150, added: 148, failed: 2, ..SyncCounts::default() });
    assert_eq!(after.failures.len(), MAX_KEPT_FAILURES, "the first failures are kept, the rest counted");
    assert_eq!(after.updated_at, later);

    // The worker died; another process starts it again: it resumes where the last page ended.
    let resumed = store.start_sync_run(tenant_id, run_id, later).await.unwrap().unwrap();
    assert_eq!(resumed.checkpoint.as_deref(), Some(r#"{"page":3}"#));
    assert_eq!((resumed.started_at, resumed.counts.pages), (Some(t0()), 2));
    let failed =
        store.finish_sync_run(tenant_id, run_id, &RunEnd::Failed("HTTP 500".into()), later).await.unwrap().unwrap();
    assert_eq!((failed.status, failed.error.as_deref()), (SyncRunStatus::Failed, Some("HTTP 500")));
    assert!(store.start_sync_run(tenant_id, run_id, later).await.unwrap().is_none(), "an ended run does not start");
}

async fn a_queued_run_cancels_at_once_and_a_running_one_at_its_next_page(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let (queued, job) = new_run(&a, "issues");
    store.queue_sync_run(&queued, &job).await.unwrap();
    let cancelled = store.cancel_sync_run(a.as_str(), queued.id.as_str(), t0()).await.unwrap().unwrap();
    assert_eq!((cancelled.status, cancelled.finished_at), (SyncRunStatus::Cancelled, Some(t0())));

    let (running, job) = new_run(&a, "issues");
    store.queue_sync_run(&running, &job).await.unwrap();
    store.start_sync_run(a.as_str(), running.id.as_str(), t0()).await.unwrap().unwrap();
    let asked = store.cancel_sync_run(a.as_str(), running.id.as_str(), t0()).await.unwrap().unwrap();
    assert_eq!((asked.status, asked.cancel_requested), (SyncRunStatus::Running, true));
    let progress = PageProgress { counts: SyncCounts { pages: 1, ..SyncCounts::default() }, ..PageProgress::default() };
    let told = store.checkpoint_sync_run(a.as_str(), running.id.as_str(), &progress, t0()).await.unwrap().unwrap();
    assert!(told.cancel_requested, "the worker hears it at its next page");
    store.finish_sync_run(a.as_str(), running.id.as_str(), &RunEnd::Cancelled, t0()).await.unwrap().unwrap();
    let ended = store.cancel_sync_run(a.as_str(), running.id.as_str(), t0()).await.unwrap().unwrap();
    assert_eq!(ended.status, SyncRunStatus::Cancelled, "an ended run is answered as it is");
    let other = tenant(&*store).await;
    assert!(store.cancel_sync_run(other.as_str(), running.id.as_str(), t0()).await.unwrap().is_none());
}
