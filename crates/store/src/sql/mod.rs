//! The SQL both backends share, written once.
//!
//! `store_impl!` expands to the whole [`crate::Store`] implementation for one backend: the row
//! decoders and shared helpers here, then the methods by concern in `domain.rs`, `queue.rs`,
//! `secrets.rs`, `endpoints.rs`, `deliveries.rs`, `connections.rs`, `oauth.rs` and
//! `inbound.rs`. The statements use `$n` placeholders, which SQLite and PostgreSQL both
//! accept; where the dialects differ (claiming jobs, signalling workers, batch writes) the
//! backend type supplies the piece or the code matches on the backend:
//!
//! - `write(f)`: runs `f` as one atomic unit on a connection (SQLite: inside the group commit;
//!   PostgreSQL: in its own transaction);
//! - `read(f)`: runs `f` on a pooled connection;
//! - `worker_write(f)`, `worker_read(f)`: the same for background work (on pools of their
//!   own), and `worker_write_unconfirmed(f)`, which may answer before the commit;
//! - `insert_events(events)` and `record_deliveries_unit(…)`: the hot path's two units,
//!   publishing and recording outcomes, each backend's own (SQLite runs them on its writer's
//!   thread, `sqlite::direct`; PostgreSQL in `postgres::recording`), from the statements and
//!   bookkeeping shared here and in `recording.rs`;
//! - `shutdown()`, and a `signal: WakeSignal` field: its `wake(kind)` after a commit that made
//!   work due wakes the workers of this process and of any other sharing the database;
//! - the row-lock clause of the claim query (the macro's last argument).
//!
//! The including module imports `Result` and `StoreError`.

pub(crate) mod connections;
pub(crate) mod deliveries;
pub(crate) mod domain;
pub(crate) mod endpoints;
pub(crate) mod inbound;
pub(crate) mod inbound_batch;
pub(crate) mod oauth;
pub(crate) mod queue;
pub(crate) mod recording;
pub(crate) mod records;
pub(crate) mod secrets;
pub(crate) mod sync_runs;

use crate::model::NewEvent;
use crate::queue::NewJob;
use crate::webhooks::NewMessage;

/// An event to publish, with the messages and jobs written in its unit.
pub(crate) type EventUnit = (NewEvent, Vec<NewMessage>, Vec<NewJob>);

// The statements of publishing an event, shared by both backends' units (SQLite runs them on
// its writer's thread, see `sqlite::direct`).

pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO events (id, tenant_id, event_type, payload, idempotency_key, request_hash, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (tenant_id, idempotency_key) DO NOTHING";

macro_rules! event_columns {
    () => {
        "id, tenant_id, event_type, payload, idempotency_key, request_hash, created_at"
    };
}

pub(crate) const EVENT_COLUMNS: &str = event_columns!();

pub(crate) const SELECT_EVENT_BY_IDEMPOTENCY_KEY: &str =
    concat!("SELECT ", event_columns!(), " FROM events WHERE tenant_id = $1 AND idempotency_key = $2");

macro_rules! message_insert_head {
    () => {
        "INSERT INTO messages (id, tenant_id, event_id, endpoint_id, status, fifo, next_attempt_at, lease_id, created_at, updated_at) "
    };
}

/// The head of a multi-row insert of new messages.
pub(crate) const INSERT_MESSAGES_HEAD: &str = message_insert_head!();

/// One new message: id, tenant, event, endpoint, fifo, first attempt (or lease end), lease,
/// creation time.
pub(crate) const INSERT_MESSAGE: &str =
    concat!(message_insert_head!(), "VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $8)");

pub(crate) const INSERT_JOB: &str =
    "INSERT INTO jobs (id, tenant_id, queue, payload, run_at, created_at) VALUES ($1, $2, $3, $4, $5, $5)";

macro_rules! store_impl {
    ($store:ty, $db:ty, $backend:expr, $claim_lock:literal) => {
        use async_trait::async_trait;
        use sqlx::Row as _;
        use switchboard_core::{Id, Timestamp, from_micros, to_micros};

        use crate::model::*;
        use crate::queue::{Job, JobLease, NewJob};
        use crate::webhooks::*;
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

        /// A column holding one of a closed set's names (a status, a reason, a kind).
        fn named<T: std::str::FromStr>(row: &Row, column: &str) -> Result<T> {
            let name: String = row.try_get(column)?;
            name.parse().map_err(|_| StoreError::Corrupt(format!("{column}: unknown value {name:?}")))
        }

        fn opt_named<T: std::str::FromStr>(row: &Row, column: &str) -> Result<Option<T>> {
            match row.try_get::<Option<String>, _>(column)? {
                Some(name) => {
                    name.parse().map(Some).map_err(|_| StoreError::Corrupt(format!("{column}: unknown value {name:?}")))
                }
                None => Ok(None),
            }
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

        use crate::sql::EVENT_COLUMNS;

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
                sqlx::query(crate::sql::INSERT_JOB)
                    .bind(job.id.as_str())
                    .bind(job.tenant_id.as_str())
                    .bind(&job.queue)
                    .bind(&job.payload)
                    .bind(to_micros(job.run_at))
                    .execute(&mut *c)
                    .await?;
            }
            Ok(())
        }

        /// Stores a sealed secret, or reseals the one with its id; another tenant's id is a
        /// conflict.
        async fn put_secret_in_unit(c: &mut Conn, secret: &StoredSecret) -> Result<()> {
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
        }

        /// `WHERE tenant_id = … [AND id < before] ORDER BY id DESC LIMIT …` for list queries.
        fn push_page<'a>(q: &mut sqlx::QueryBuilder<'a, $db>, page: &'a Page) {
            if let Some(before) = &page.before {
                q.push(" AND id < ").push_bind(before.as_str());
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(page.limit));
        }

        /// ` AND created_at > … AND created_at < …` for the bounds that are set.
        fn push_created_between(
            q: &mut sqlx::QueryBuilder<'_, $db>,
            after: Option<Timestamp>,
            before: Option<Timestamp>,
        ) {
            if let Some(after) = after {
                q.push(" AND created_at > ").push_bind(to_micros(after));
            }
            if let Some(before) = before {
                q.push(" AND created_at < ").push_bind(to_micros(before));
            }
        }

        /// Ends a lease: `sql` binds the job id, the lease id, a time and an error text.
        async fn end_lease(
            c: &mut Conn,
            sql: &'static str,
            lease: &JobLease,
            at: Timestamp,
            error: &str,
        ) -> Result<bool> {
            let done = sqlx::query(sql)
                .bind(lease.job_id.as_str())
                .bind(&lease.lease_id)
                .bind(to_micros(at))
                .bind(error)
                .execute(&mut *c)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        crate::sql::domain::domain_impl!($store, $db, $backend);
        crate::sql::queue::queue_impl!($store, $db);
        crate::sql::secrets::secrets_impl!($store, $db);
        crate::sql::endpoints::endpoints_impl!($store, $db);
        crate::sql::deliveries::deliveries_impl!($store, $db, $backend, $claim_lock);
        crate::sql::connections::connections_impl!($store, $db, $backend);
        crate::sql::oauth::oauth_impl!($store, $db);
        crate::sql::inbound::inbound_impl!($store, $db, $backend, $claim_lock);
        crate::sql::records::records_impl!($store, $db, $backend);
        crate::sql::sync_runs::sync_runs_impl!($store, $db);
    };
}

pub(crate) use store_impl;
