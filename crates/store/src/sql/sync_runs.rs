//! Sync runs: the `SyncRunStore` methods.

macro_rules! sync_runs_impl {
    ($store:ty, $db:ty) => {
        const SYNC_RUN_COLUMNS: &str = "id, tenant_id, connection_id, sync_name, mode, status, pages, fetched, added,
            updated, deleted, unchanged, failed, failures, checkpoint, error, cancel_requested, created_at, started_at,
            finished_at, updated_at";

        /// A counter column as stored (never negative).
        fn count(row: &Row, column: &str) -> Result<u64> {
            Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
        }

        fn sync_run_from(row: &Row) -> Result<crate::sync_runs::SyncRun> {
            let failures: String = row.try_get("failures")?;
            Ok(crate::sync_runs::SyncRun {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                connection_id: id(row, "connection_id")?,
                sync_name: row.try_get("sync_name")?,
                mode: named(row, "mode")?,
                status: named(row, "status")?,
                counts: crate::sync_runs::SyncCounts {
                    pages: count(row, "pages")?,
                    fetched: count(row, "fetched")?,
                    added: count(row, "added")?,
                    updated: count(row, "updated")?,
                    deleted: count(row, "deleted")?,
                    unchanged: count(row, "unchanged")?,
                    failed: count(row, "failed")?,
                },
                failures: serde_json::from_str(&failures).map_err(|e| StoreError::Corrupt(format!("failures: {e}")))?,
                checkpoint: row.try_get("checkpoint")?,
                error: row.try_get("error")?,
                cancel_requested: row.try_get("cancel_requested")?,
                created_at: time(row, "created_at")?,
                started_at: opt_time(row, "started_at")?,
                finished_at: opt_time(row, "finished_at")?,
                updated_at: time(row, "updated_at")?,
            })
        }

        async fn select_sync_run(c: &mut Conn, tenant_id: &str, run_id: &str) -> Result<Option<crate::sync_runs::SyncRun>> {
            let row = sqlx::query(&format!("SELECT {SYNC_RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant_id)
                .bind(run_id)
                .fetch_optional(&mut *c)
                .await?;
            row.as_ref().map(sync_run_from).transpose()
        }

        #[async_trait]
        impl crate::sync_runs::SyncRunStore for $store {
            async fn queue_sync_run(
                &self,
                run: &crate::sync_runs::NewSyncRun,
                job: &NewJob,
            ) -> Result<crate::sync_runs::QueuedRun> {
                let (run, job) = (run.clone(), job.clone());
                self.write(move |c| Box::pin(async move {
                    // DO NOTHING on any conflict: the one-active-run index, or the id.
                    let queued = sqlx::query(&format!(
                        "INSERT INTO sync_runs (id, tenant_id, connection_id, sync_name, mode, status, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6) ON CONFLICT DO NOTHING RETURNING {SYNC_RUN_COLUMNS}"
                    ))
                    .bind(run.id.as_str())
                    .bind(run.tenant_id.as_str())
                    .bind(run.connection_id.as_str())
                    .bind(&run.sync_name)
                    .bind(run.mode.as_str())
                    .bind(to_micros(run.created_at))
                    .fetch_optional(&mut *c)
                    .await?;
                    let Some(queued) = queued else {
                        let row = sqlx::query(&format!(
                            "SELECT {SYNC_RUN_COLUMNS} FROM sync_runs
                             WHERE tenant_id = $1 AND connection_id = $2 AND sync_name = $3 AND status IN ('queued', 'running')"
                        ))
                        .bind(run.tenant_id.as_str())
                        .bind(run.connection_id.as_str())
                        .bind(&run.sync_name)
                        .fetch_optional(&mut *c)
                        .await?;
                        return match row {
                            Some(row) => Ok(crate::sync_runs::QueuedRun::AlreadyActive(sync_run_from(&row)?)),
                            None => Err(StoreError::Conflict("a sync run with this id")),
                        };
                    };
                    insert_jobs(c, std::slice::from_ref(&job)).await?;
                    Ok(crate::sync_runs::QueuedRun::Queued(sync_run_from(&queued)?))
                }))
                .await
            }

            async fn start_sync_run(&self, tenant_id: &str, run_id: &str, at: Timestamp) -> Result<Option<crate::sync_runs::SyncRun>> {
                let (tenant_id, run_id) = (tenant_id.to_string(), run_id.to_string());
                self.worker_write(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "UPDATE sync_runs SET status = 'running', started_at = COALESCE(started_at, $3), updated_at = $3
                         WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running') RETURNING {SYNC_RUN_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&run_id)
                    .bind(to_micros(at))
                    .fetch_optional(&mut *c)
                    .await?;
                    row.as_ref().map(sync_run_from).transpose()
                }))
                .await
            }

            async fn checkpoint_sync_run(
                &self,
                tenant_id: &str,
                run_id: &str,
                progress: &crate::sync_runs::PageProgress,
                at: Timestamp,
            ) -> Result<Option<crate::sync_runs::SyncRun>> {
                let (tenant_id, run_id, progress) = (tenant_id.to_string(), run_id.to_string(), progress.clone());
                self.worker_write(move |c| Box::pin(async move {
                    let Some(run) = select_sync_run(c, &tenant_id, &run_id).await? else { return Ok(None) };
                    if run.status != crate::sync_runs::SyncRunStatus::Running {
                        return Ok(None);
                    }
                    let mut failures = run.failures;
                    let room = crate::sync_runs::MAX_KEPT_FAILURES.saturating_sub(failures.len());
                    failures.extend(progress.failures.into_iter().take(room));
                    let failures = serde_json::to_string(&failures).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let n = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
                    let counts = progress.counts;
                    let row = sqlx::query(&format!(
                        "UPDATE sync_runs SET pages = pages + $3, fetched = fetched + $4, added = added + $5,
                             updated = updated + $6, deleted = deleted + $7, unchanged = unchanged + $8, failed = failed + $9,
                             failures = $10, checkpoint = COALESCE($11, checkpoint), updated_at = $12
                         WHERE tenant_id = $1 AND id = $2 AND status = 'running' RETURNING {SYNC_RUN_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&run_id)
                    .bind(n(counts.pages))
                    .bind(n(counts.fetched))
                    .bind(n(counts.added))
                    .bind(n(counts.updated))
                    .bind(n(counts.deleted))
                    .bind(n(counts.unchanged))
                    .bind(n(counts.failed))
                    .bind(failures)
                    .bind(progress.checkpoint)
                    .bind(to_micros(at))
                    .fetch_optional(&mut *c)
                    .await?;
                    row.as_ref().map(sync_run_from).transpose()
                }))
                .await
            }

            async fn finish_sync_run(
                &self,
                tenant_id: &str,
                run_id: &str,
                end: &crate::sync_runs::RunEnd,
                at: Timestamp,
            ) -> Result<Option<crate::sync_runs::SyncRun>> {
                use crate::sync_runs::{RunEnd, SyncRunStatus};
                let (status, error) = match end {
                    RunEnd::Succeeded => (SyncRunStatus::Succeeded, None),
                    RunEnd::Failed(error) => (SyncRunStatus::Failed, Some(error.clone())),
                    RunEnd::Cancelled => (SyncRunStatus::Cancelled, None),
                };
                let (tenant_id, run_id) = (tenant_id.to_string(), run_id.to_string());
                self.worker_write(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "UPDATE sync_runs SET status = $3, error = $4, finished_at = $5, updated_at = $5
                         WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running') RETURNING {SYNC_RUN_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&run_id)
                    .bind(status.as_str())
                    .bind(error)
                    .bind(to_micros(at))
                    .fetch_optional(&mut *c)
                    .await?;
                    row.as_ref().map(sync_run_from).transpose()
                }))
                .await
            }

            async fn cancel_sync_run(&self, tenant_id: &str, run_id: &str, at: Timestamp) -> Result<Option<crate::sync_runs::SyncRun>> {
                let (tenant_id, run_id) = (tenant_id.to_string(), run_id.to_string());
                self.write(move |c| Box::pin(async move {
                    // A queued run ends now; a running one is asked to stop at its next page.
                    let row = sqlx::query(&format!(
                        "UPDATE sync_runs SET
                             status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                             finished_at = CASE WHEN status = 'queued' THEN $3 ELSE finished_at END,
                             cancel_requested = $4, updated_at = $3
                         WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running') RETURNING {SYNC_RUN_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&run_id)
                    .bind(to_micros(at))
                    .bind(true)
                    .fetch_optional(&mut *c)
                    .await?;
                    match row {
                        Some(row) => Ok(Some(sync_run_from(&row)?)),
                        None => select_sync_run(c, &tenant_id, &run_id).await,
                    }
                }))
                .await
            }

            async fn get_sync_run(&self, tenant_id: &str, run_id: &str) -> Result<Option<crate::sync_runs::SyncRun>> {
                let (tenant_id, run_id) = (tenant_id.to_string(), run_id.to_string());
                self.read(move |c| Box::pin(async move { select_sync_run(c, &tenant_id, &run_id).await })).await
            }

            async fn list_sync_runs(
                &self,
                tenant_id: &str,
                connection_id: &str,
                sync_name: &str,
                page: &Page,
            ) -> Result<Vec<crate::sync_runs::SyncRun>> {
                let (tenant_id, connection_id, sync_name, page) =
                    (tenant_id.to_string(), connection_id.to_string(), sync_name.to_string(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {SYNC_RUN_COLUMNS} FROM sync_runs WHERE tenant_id = "));
                    q.push_bind(&tenant_id).push(" AND connection_id = ").push_bind(&connection_id);
                    q.push(" AND sync_name = ").push_bind(&sync_name);
                    push_page(&mut q, &page);
                    q.build().fetch_all(&mut *c).await?.iter().map(sync_run_from).collect()
                }))
                .await
            }
        }
    };
}

pub(crate) use sync_runs_impl;
