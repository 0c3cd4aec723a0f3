//! The SQL both backends share, written once.
//!
//! `store_impl!` expands to the whole [`crate::Store`] implementation for one backend. The
//! statements use `$n` placeholders, which SQLite and PostgreSQL both accept; where the
//! dialects differ (claiming jobs, signalling workers) the backend type supplies the piece:
//!
//! - `write(f)`: runs `f` as one atomic unit on a connection (SQLite: inside the group commit;
//!   PostgreSQL: in its own transaction);
//! - `read(f)`: runs `f` on a pooled connection;
//! - `notify_in_unit(conn)`: tells other processes that jobs were enqueued;
//! - `shutdown()`, and a `signal: WakeSignal` field for local wake-ups;
//! - the row-lock clause of the claim query (the macro's last argument).
//!
//! The including module imports `Result` and `StoreError`.

macro_rules! store_impl {
    ($store:ty, $db:ty, $backend:expr, $claim_lock:literal) => {
        use async_trait::async_trait;
        use sqlx::Row as _;
        use switchboard_core::{Id, Timestamp, from_micros, to_micros};

        use crate::model::*;
        use crate::queue::{Job, JobLease, NewJob};
        use crate::{Backend, Store};

        type Row = <$db as sqlx::Database>::Row;
        type Conn = <$db as sqlx::Database>::Connection;

        /// The picked ids are materialised first: PostgreSQL may otherwise re-run a
        /// `LIMIT … FOR UPDATE SKIP LOCKED` subquery and lease more jobs than asked for.
        const CLAIM_SQL: &str = concat!(
            "WITH picked AS MATERIALIZED (
                 SELECT id FROM jobs
                 WHERE queue = $3 AND failed_at IS NULL AND run_at <= $4
                   AND (lease_expires_at IS NULL OR lease_expires_at <= $4)
                 ORDER BY run_at, id LIMIT $5 ",
            $claim_lock,
            ")
             UPDATE jobs SET lease_id = $1, lease_expires_at = $2, attempts = attempts + 1
             WHERE id IN (SELECT id FROM picked)
             RETURNING id, tenant_id, queue, payload, run_at, attempts, last_error, lease_id"
        );

        fn id(row: &Row, column: &str) -> Result<Id> {
            Ok(Id::from_trusted(row.try_get::<String, _>(column)?))
        }

        fn time(row: &Row, column: &str) -> Result<Timestamp> {
            Ok(from_micros(row.try_get::<i64, _>(column)?))
        }

        fn opt_time(row: &Row, column: &str) -> Result<Option<Timestamp>> {
            Ok(row.try_get::<Option<i64>, _>(column)?.map(from_micros))
        }

        fn tenant_from(row: &Row) -> Result<Tenant> {
            Ok(Tenant {
                id: id(row, "id")?,
                name: row.try_get("name")?,
                is_operator: row.try_get("is_operator")?,
                created_at: time(row, "created_at")?,
            })
        }

        const API_KEY_COLUMNS: &str = "id, tenant_id, name, scope, masked, expires_at, revoked_at, created_at";

        fn api_key_from(row: &Row) -> Result<ApiKey> {
            let scope: String = row.try_get("scope")?;
            Ok(ApiKey {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                name: row.try_get("name")?,
                scope: scope.parse().map_err(StoreError::Corrupt)?,
                masked: row.try_get("masked")?,
                expires_at: opt_time(row, "expires_at")?,
                revoked_at: opt_time(row, "revoked_at")?,
                created_at: time(row, "created_at")?,
            })
        }

        const EVENT_TYPE_COLUMNS: &str = "id, tenant_id, name, description, schema, version, created_at, updated_at";

        fn event_type_from(row: &Row) -> Result<EventType> {
            Ok(EventType {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                name: row.try_get("name")?,
                description: row.try_get("description")?,
                schema: row.try_get("schema")?,
                version: row.try_get("version")?,
                created_at: time(row, "created_at")?,
                updated_at: time(row, "updated_at")?,
            })
        }

        const EVENT_COLUMNS: &str = "id, tenant_id, event_type, payload, idempotency_key, request_hash, created_at";

        fn event_from(row: &Row) -> Result<Event> {
            Ok(Event {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                event_type: row.try_get("event_type")?,
                payload: row.try_get("payload")?,
                idempotency_key: row.try_get("idempotency_key")?,
                created_at: time(row, "created_at")?,
            })
        }

        fn job_from(row: &Row) -> Result<Job> {
            let job_id = id(row, "id")?;
            Ok(Job {
                lease: JobLease { job_id: job_id.clone(), lease_id: row.try_get("lease_id")? },
                id: job_id,
                tenant_id: id(row, "tenant_id")?,
                queue: row.try_get("queue")?,
                payload: row.try_get("payload")?,
                run_at: time(row, "run_at")?,
                attempts: row.try_get("attempts")?,
                last_error: row.try_get("last_error")?,
            })
        }

        fn secret_from(row: &Row) -> Result<StoredSecret> {
            Ok(StoredSecret {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                key_id: row.try_get("key_id")?,
                ciphertext: row.try_get("ciphertext")?,
                updated_at: time(row, "updated_at")?,
            })
        }

        async fn insert_tenant(c: &mut Conn, t: &NewTenant, is_operator: bool) -> Result<u64> {
            let done = sqlx::query(
                "INSERT INTO tenants (id, tenant_id, name, is_operator, created_at) VALUES ($1, $1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(t.id.as_str())
            .bind(&t.name)
            .bind(is_operator)
            .bind(to_micros(t.created_at))
            .execute(&mut *c)
            .await?;
            Ok(done.rows_affected())
        }

        async fn insert_api_key(c: &mut Conn, k: &NewApiKey) -> Result<()> {
            sqlx::query(
                "INSERT INTO api_keys (id, tenant_id, name, scope, key_hash, masked, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(k.id.as_str())
            .bind(k.tenant_id.as_str())
            .bind(&k.name)
            .bind(k.scope.as_str())
            .bind(&k.key_hash)
            .bind(&k.masked)
            .bind(k.expires_at.map(to_micros))
            .bind(to_micros(k.created_at))
            .execute(&mut *c)
            .await
            .map_err(|e| StoreError::conflict_or(e, "an API key with this value"))?;
            Ok(())
        }

        async fn insert_jobs(c: &mut Conn, jobs: &[NewJob]) -> Result<()> {
            for job in jobs {
                sqlx::query(
                    "INSERT INTO jobs (id, tenant_id, queue, payload, run_at, created_at) VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(job.id.as_str())
                .bind(job.tenant_id.as_str())
                .bind(&job.queue)
                .bind(&job.payload)
                .bind(to_micros(job.run_at))
                .execute(&mut *c)
                .await?;
            }
            if !jobs.is_empty() {
                <$store>::notify_in_unit(c).await?;
            }
            Ok(())
        }

        /// `WHERE tenant_id = … [AND id < before] ORDER BY id DESC LIMIT …` for list queries.
        fn push_page<'a>(q: &mut sqlx::QueryBuilder<'a, $db>, page: &'a Page) {
            if let Some(before) = &page.before {
                q.push(" AND id < ").push_bind(before.as_str());
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(page.limit));
        }

        /// Ends a lease: `sql` binds the job id, the lease id, a time and an error text.
        async fn end_lease(c: &mut Conn, sql: &'static str, lease: &JobLease, at: Timestamp, error: &str) -> Result<bool> {
            let done = sqlx::query(sql)
                .bind(lease.job_id.as_str())
                .bind(&lease.lease_id)
                .bind(to_micros(at))
                .bind(error)
                .execute(&mut *c)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                self.read(|c| Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&mut *c).await?;
                    Ok(())
                }))
                .await
            }

            async fn close(&self) {
                self.shutdown().await
            }

            async fn bootstrap_operator(&self, tenant: &NewTenant, key: &NewApiKey) -> Result<Option<Tenant>> {
                let (tenant, key) = (tenant.clone(), key.clone());
                self.write(move |c| Box::pin(async move {
                    if insert_tenant(c, &tenant, true).await? == 0 {
                        return Ok(None);
                    }
                    insert_api_key(c, &key).await?;
                    Ok(Some(Tenant { id: tenant.id, name: tenant.name, is_operator: true, created_at: tenant.created_at }))
                }))
                .await
            }

            async fn create_tenant(&self, tenant: &NewTenant, first_key: Option<&NewApiKey>) -> Result<Tenant> {
                let (tenant, key) = (tenant.clone(), first_key.cloned());
                self.write(move |c| Box::pin(async move {
                    if insert_tenant(c, &tenant, false).await? == 0 {
                        return Err(StoreError::Conflict("a tenant with this id"));
                    }
                    if let Some(key) = &key {
                        insert_api_key(c, key).await?;
                    }
                    Ok(Tenant { id: tenant.id, name: tenant.name, is_operator: false, created_at: tenant.created_at })
                }))
                .await
            }

            async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>> {
                let tenant_id = tenant_id.to_string();
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query("SELECT id, name, is_operator, created_at FROM tenants WHERE tenant_id = $1")
                        .bind(&tenant_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(tenant_from).transpose()
                }))
                .await
            }

            async fn list_tenants(&self, page: &Page) -> Result<Vec<Tenant>> {
                let page = page.clone();
                self.read(move |c| Box::pin(async move {
                    // Listing tenants is the operator's view across tenants.
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id, name, is_operator, created_at FROM tenants WHERE tenant_id = id");
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(tenant_from).collect()
                }))
                .await
            }

            async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKey> {
                let key = key.clone();
                self.write(move |c| Box::pin(async move {
                    insert_api_key(c, &key).await?;
                    Ok(key.as_stored())
                }))
                .await
            }

            async fn list_api_keys(&self, tenant_id: &str, page: &Page) -> Result<Vec<ApiKey>> {
                let (tenant_id, page) = (tenant_id.to_string(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(api_key_from).collect()
                }))
                .await
            }

            async fn get_api_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKey>> {
                let (tenant_id, key_id) = (tenant_id.to_string(), key_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&key_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(api_key_from).transpose()
                }))
                .await
            }

            async fn revoke_api_key(&self, tenant_id: &str, key_id: &str, at: Timestamp) -> Result<bool> {
                let (tenant_id, key_id) = (tenant_id.to_string(), key_id.to_string());
                self.write(move |c| Box::pin(async move {
                    let done = sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
                        .bind(&tenant_id)
                        .bind(&key_id)
                        .bind(to_micros(at))
                        .execute(&mut *c)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }))
                .await
            }

            async fn authenticate(&self, key_hash: &str) -> Result<Option<(ApiKey, bool)>> {
                let key_hash = key_hash.to_string();
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT k.id, k.tenant_id, k.name, k.scope, k.masked, k.expires_at, k.revoked_at, k.created_at, t.is_operator
                         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id AND t.tenant_id = k.tenant_id
                         WHERE k.key_hash = $1",
                    )
                    .bind(&key_hash)
                    .fetch_optional(&mut *c)
                    .await?;
                    match row {
                        Some(row) => Ok(Some((api_key_from(&row)?, row.try_get("is_operator")?))),
                        None => Ok(None),
                    }
                }))
                .await
            }

            async fn create_event_type(&self, et: &NewEventType) -> Result<EventType> {
                let et = et.clone();
                self.write(move |c| Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO event_types (id, tenant_id, name, description, schema, version, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
                    )
                    .bind(et.id.as_str())
                    .bind(et.tenant_id.as_str())
                    .bind(&et.name)
                    .bind(&et.description)
                    .bind(et.schema.as_deref())
                    .bind(to_micros(et.created_at))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::conflict_or(e, "an event type with this name"))?;
                    Ok(EventType {
                        id: et.id,
                        tenant_id: et.tenant_id,
                        name: et.name,
                        description: et.description,
                        schema: et.schema,
                        version: 1,
                        created_at: et.created_at,
                        updated_at: et.created_at,
                    })
                }))
                .await
            }

            async fn update_event_type(&self, tenant_id: &str, name: &str, patch: &EventTypePatch) -> Result<Option<EventType>> {
                let (tenant_id, name, patch) = (tenant_id.to_string(), name.to_string(), patch.clone());
                self.write(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE event_types SET version = version + 1");
                    if let Some(description) = &patch.description {
                        q.push(", description = ").push_bind(description.as_str());
                    }
                    if let Some(schema) = &patch.schema {
                        q.push(", schema = ").push_bind(schema.as_deref());
                    }
                    if let Some(at) = patch.updated_at {
                        q.push(", updated_at = ").push_bind(to_micros(at));
                    }
                    q.push(" WHERE tenant_id = ").push_bind(tenant_id.as_str());
                    q.push(" AND name = ").push_bind(name.as_str());
                    q.push(format!(" RETURNING {EVENT_TYPE_COLUMNS}"));
                    let row = q.build().fetch_optional(&mut *c).await?;
                    row.as_ref().map(event_type_from).transpose()
                }))
                .await
            }

            async fn get_event_type(&self, tenant_id: &str, name: &str) -> Result<Option<EventType>> {
                let (tenant_id, name) = (tenant_id.to_string(), name.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE tenant_id = $1 AND name = $2"))
                        .bind(&tenant_id)
                        .bind(&name)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(event_type_from).transpose()
                }))
                .await
            }

            async fn list_event_types(&self, tenant_id: &str, page: &Page) -> Result<Vec<EventType>> {
                let (tenant_id, page) = (tenant_id.to_string(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(event_type_from).collect()
                }))
                .await
            }

            async fn create_event(&self, event: &NewEvent, jobs: &[NewJob]) -> Result<CreateEventOutcome> {
                let (event, jobs) = (event.clone(), jobs.to_vec());
                let enqueued = !jobs.is_empty();
                let outcome = self.write(move |c| Box::pin(async move {
                    let done = sqlx::query(
                        "INSERT INTO events (id, tenant_id, event_type, payload, idempotency_key, request_hash, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
                    )
                    .bind(event.id.as_str())
                    .bind(event.tenant_id.as_str())
                    .bind(&event.event_type)
                    .bind(&event.payload)
                    .bind(event.idempotency.as_ref().map(|i| i.key.as_str()))
                    .bind(event.idempotency.as_ref().map(|i| i.request_hash.as_str()))
                    .bind(to_micros(event.created_at))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::conflict_or(e, "an event with this id"))?;
                    if done.rows_affected() == 0 {
                        let Some(idempotency) = &event.idempotency else {
                            return Err(StoreError::Conflict("an event with this id"));
                        };
                        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND idempotency_key = $2"))
                            .bind(event.tenant_id.as_str())
                            .bind(&idempotency.key)
                            .fetch_one(&mut *c)
                            .await?;
                        let earlier_hash: Option<String> = row.try_get("request_hash")?;
                        return Ok(if earlier_hash.as_deref() == Some(idempotency.request_hash.as_str()) {
                            CreateEventOutcome::Replayed(event_from(&row)?)
                        } else {
                            CreateEventOutcome::KeyReused
                        });
                    }
                    insert_jobs(c, &jobs).await?;
                    Ok(CreateEventOutcome::Created(Event {
                        id: event.id,
                        tenant_id: event.tenant_id,
                        event_type: event.event_type,
                        payload: event.payload,
                        idempotency_key: event.idempotency.map(|i| i.key),
                        created_at: event.created_at,
                    }))
                }))
                .await?;
                if enqueued && matches!(outcome, CreateEventOutcome::Created(_)) {
                    self.signal.wake();
                }
                Ok(outcome)
            }

            async fn find_idempotent_event(&self, tenant_id: &str, key: &str) -> Result<Option<(Event, String)>> {
                let (tenant_id, key) = (tenant_id.to_string(), key.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND idempotency_key = $2"))
                        .bind(&tenant_id)
                        .bind(&key)
                        .fetch_optional(&mut *c)
                        .await?;
                    match row {
                        Some(row) => Ok(Some((event_from(&row)?, row.try_get::<Option<String>, _>("request_hash")?.unwrap_or_default()))),
                        None => Ok(None),
                    }
                }))
                .await
            }

            async fn get_event(&self, tenant_id: &str, event_id: &str) -> Result<Option<Event>> {
                let (tenant_id, event_id) = (tenant_id.to_string(), event_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&event_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(event_from).transpose()
                }))
                .await
            }

            async fn list_events(&self, tenant_id: &str, filter: &EventFilter) -> Result<Vec<Event>> {
                let (tenant_id, filter) = (tenant_id.to_string(), filter.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    if let Some(event_type) = &filter.event_type {
                        q.push(" AND event_type = ").push_bind(event_type.as_str());
                    }
                    if let Some(after) = filter.created_after {
                        q.push(" AND created_at > ").push_bind(to_micros(after));
                    }
                    if let Some(before) = filter.created_before {
                        q.push(" AND created_at < ").push_bind(to_micros(before));
                    }
                    push_page(&mut q, &filter.page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(event_from).collect()
                }))
                .await
            }

            async fn enqueue(&self, jobs: &[NewJob]) -> Result<()> {
                let jobs = jobs.to_vec();
                self.write(move |c| Box::pin(async move { insert_jobs(c, &jobs).await })).await?;
                self.signal.wake();
                Ok(())
            }

            async fn claim(&self, queue: &str, limit: u32, now: Timestamp, lease: chrono::Duration) -> Result<Vec<Job>> {
                let queue = queue.to_string();
                let lease_id = Id::new(switchboard_core::IdKind::Job).to_string();
                let expires = now + lease;
                self.write(move |c| Box::pin(async move {
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
                self.write(move |c| Box::pin(async move {
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
                let released = self.write(move |c| Box::pin(async move {
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
                    self.signal.wake();
                }
                Ok(released)
            }

            async fn extend_lease(&self, lease: &JobLease, until: Timestamp) -> Result<bool> {
                let lease = lease.clone();
                self.write(move |c| Box::pin(async move {
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
                self.write(move |c| Box::pin(async move {
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
                self.read(move |c| Box::pin(async move {
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

            fn job_signal(&self) -> tokio::sync::watch::Receiver<u64> {
                self.signal.subscribe()
            }

            fn wake_workers(&self) {
                self.signal.wake()
            }

            async fn put_secret(&self, secret: &StoredSecret) -> Result<()> {
                let secret = secret.clone();
                self.write(move |c| Box::pin(async move {
                    let done = sqlx::query(
                        "INSERT INTO secrets (id, tenant_id, key_id, ciphertext, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $5)
                         ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, ciphertext = excluded.ciphertext,
                             updated_at = excluded.updated_at
                         WHERE secrets.tenant_id = excluded.tenant_id",
                    )
                    .bind(secret.id.as_str())
                    .bind(secret.tenant_id.as_str())
                    .bind(&secret.key_id)
                    .bind(&secret.ciphertext)
                    .bind(to_micros(secret.updated_at))
                    .execute(&mut *c)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::Conflict("a secret with this id in another tenant"));
                    }
                    Ok(())
                }))
                .await
            }

            async fn get_secret(&self, tenant_id: &str, secret_id: &str) -> Result<Option<StoredSecret>> {
                let (tenant_id, secret_id) = (tenant_id.to_string(), secret_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query("SELECT id, tenant_id, key_id, ciphertext, updated_at FROM secrets WHERE tenant_id = $1 AND id = $2")
                        .bind(&tenant_id)
                        .bind(&secret_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(secret_from).transpose()
                }))
                .await
            }

            async fn secrets_sealed_with_other_keys(
                &self,
                tenant_id: &str,
                primary_key_id: &str,
                after_id: Option<&str>,
                limit: u32,
            ) -> Result<Vec<StoredSecret>> {
                let (tenant_id, primary, after) = (tenant_id.to_string(), primary_key_id.to_string(), after_id.unwrap_or("").to_string());
                self.read(move |c| Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, tenant_id, key_id, ciphertext, updated_at FROM secrets
                         WHERE tenant_id = $1 AND key_id <> $2 AND id > $3 ORDER BY id LIMIT $4",
                    )
                    .bind(&tenant_id)
                    .bind(&primary)
                    .bind(&after)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *c)
                    .await?;
                    rows.iter().map(secret_from).collect()
                }))
                .await
            }

            async fn reseal_secret(&self, secret: &StoredSecret, as_read: &StoredSecret) -> Result<bool> {
                let (secret, as_read) = (secret.clone(), as_read.clone());
                self.write(move |c| Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE secrets SET key_id = $3, ciphertext = $4, updated_at = $5
                         WHERE tenant_id = $1 AND id = $2 AND key_id = $6 AND ciphertext = $7",
                    )
                    .bind(secret.tenant_id.as_str())
                    .bind(secret.id.as_str())
                    .bind(&secret.key_id)
                    .bind(&secret.ciphertext)
                    .bind(to_micros(secret.updated_at))
                    .bind(&as_read.key_id)
                    .bind(&as_read.ciphertext)
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }))
                .await
            }

            async fn count_secrets_sealed_with_other_keys(&self, primary_key_id: &str) -> Result<u64> {
                let primary = primary_key_id.to_string();
                self.read(move |c| Box::pin(async move {
                    // Per tenant, then summed: every query names its tenant.
                    let row = sqlx::query(
                        "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS total FROM (
                             SELECT COUNT(*) AS n FROM secrets s JOIN tenants t ON t.tenant_id = s.tenant_id
                             WHERE s.key_id <> $1 GROUP BY s.tenant_id) per_tenant",
                    )
                    .bind(&primary)
                    .fetch_one(&mut *c)
                    .await?;
                    Ok(row.try_get::<i64, _>("total")?.max(0) as u64)
                }))
                .await
            }
        }
    };
}

pub(crate) use store_impl;
