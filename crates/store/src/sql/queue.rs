//! The durable queue: the `JobQueue` methods.

macro_rules! queue_impl {
    ($store:ty, $db:ty) => {
        #[async_trait]
        impl crate::JobQueue for $store {
            async fn enqueue(&self, jobs: &[NewJob]) -> Result<()> {
                let jobs = jobs.to_vec();
                self.write(move |c| Box::pin(async move { insert_jobs(c, &jobs).await })).await?;
                self.signal.wake(crate::queue::Work::Jobs);
                Ok(())
            }

            async fn claim(&self, queue: &str, limit: u32, now: Timestamp, lease: chrono::Duration) -> Result<Vec<Job>> {
                let queue = queue.to_string();
                let lease_id = Id::new(switchboard_core::IdKind::Job).to_string();
                let expires = now + lease;
                self.worker_write(move |c| Box::pin(async move {
                    let rows = sqlx::query(CLAIM_SQL)
                        .bind(&lease_id)
                        .bind(to_micros(expires))
                        .bind(&queue)
                        .bind(to_micros(now))
                        .bind(i64::from(limit))
                        .fetch_all(&mut *c)
                        .await?;
                    let mut jobs = rows.iter().map(job_from).collect::<Result<Vec<_>>>()?;
                    jobs.sort_by(|a, b| (a.run_at, &a.id).cmp(&(b.run_at, &b.id)));
                    Ok(jobs)
                }))
                .await
            }

            async fn ack(&self, lease: &JobLease) -> Result<bool> {
                let lease = lease.clone();
                self.worker_write(move |c| Box::pin(async move {
                    let done = sqlx::query("DELETE FROM jobs WHERE id = $1 AND lease_id = $2")
                        .bind(lease.job_id.as_str())
                        .bind(&lease.lease_id)
                        .execute(&mut *c)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }))
                .await
            }

            async fn retry_at(&self, lease: &JobLease, at: Timestamp, error: &str) -> Result<bool> {
                let (lease, error) = (lease.clone(), error.to_string());
                let released = self.worker_write(move |c| Box::pin(async move {
                    end_lease(
                        c,
                        "UPDATE jobs SET run_at = $3, last_error = $4, lease_id = NULL, lease_expires_at = NULL
                         WHERE id = $1 AND lease_id = $2",
                        &lease,
                        at,
                        &error,
                    )
                    .await
                }))
                .await?;
                if released {
                    self.signal.wake(crate::queue::Work::Jobs);
                }
                Ok(released)
            }

            async fn extend_lease(&self, lease: &JobLease, until: Timestamp) -> Result<bool> {
                let lease = lease.clone();
                self.worker_write(move |c| Box::pin(async move {
                    let done = sqlx::query("UPDATE jobs SET lease_expires_at = $3 WHERE id = $1 AND lease_id = $2")
                        .bind(lease.job_id.as_str())
                        .bind(&lease.lease_id)
                        .bind(to_micros(until))
                        .execute(&mut *c)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }))
                .await
            }

            async fn dead_letter(&self, lease: &JobLease, at: Timestamp, error: &str) -> Result<bool> {
                let (lease, error) = (lease.clone(), error.to_string());
                self.worker_write(move |c| Box::pin(async move {
                    end_lease(
                        c,
                        "UPDATE jobs SET failed_at = $3, last_error = $4, lease_id = NULL, lease_expires_at = NULL
                         WHERE id = $1 AND lease_id = $2",
                        &lease,
                        at,
                        &error,
                    )
                    .await
                }))
                .await
            }

            async fn next_due(&self, queue: &str) -> Result<Option<Timestamp>> {
                let queue = queue.to_string();
                self.worker_read(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT MIN(CASE WHEN lease_expires_at IS NULL THEN run_at ELSE lease_expires_at END) AS due
                         FROM jobs WHERE queue = $1 AND failed_at IS NULL",
                    )
                    .bind(&queue)
                    .fetch_one(&mut *c)
                    .await?;
                    Ok(row.try_get::<Option<i64>, _>("due")?.map(from_micros))
                }))
                .await
            }

            async fn queue_depth(&self, queue: &str) -> Result<QueueDepth> {
                let queue = queue.to_string();
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT
                            COUNT(CASE WHEN failed_at IS NULL AND lease_id IS NULL THEN 1 END) AS pending,
                            COUNT(CASE WHEN failed_at IS NULL AND lease_id IS NOT NULL THEN 1 END) AS leased,
                            COUNT(CASE WHEN failed_at IS NOT NULL THEN 1 END) AS dead
                         FROM jobs WHERE queue = $1",
                    )
                    .bind(&queue)
                    .fetch_one(&mut *c)
                    .await?;
                    let count = |column| row.try_get::<i64, _>(column).map(|n| n.max(0) as u64);
                    Ok(QueueDepth { pending: count("pending")?, leased: count("leased")?, dead: count("dead")? })
                }))
                .await
            }

            fn work_signal(&self, work: crate::queue::Work) -> tokio::sync::watch::Receiver<u64> {
                self.signal.subscribe(work)
            }

            fn wake_workers(&self) {
                for work in crate::queue::Work::ALL {
                    self.signal.wake(work);
                }
            }
        }
    };
}

pub(crate) use queue_impl;
