//! Persistence for Switchboard behind one trait, [`Store`], with a SQLite and a PostgreSQL
//! implementation that share their SQL (see `sql.rs`).
//!
//! Every write is one atomic unit: a trait method either commits all of its rows (the domain
//! rows *and* the jobs they cause: the outbox) or none. SQLite funnels writes through a single
//! writer task that commits many units in one transaction (group commit, one fsync for many
//! requests), isolating each unit in a savepoint. PostgreSQL runs each unit in its own
//! transaction and claims jobs with `FOR UPDATE SKIP LOCKED`.

#![warn(missing_docs)]

/// Declares a closed set stored as text: one spelling (`snake_case`) for the database, the
/// API (serde) and `as_str`/`FromStr`/`Display` (strum), and a schema for the OpenAPI
/// document when the `openapi` feature is on.
macro_rules! closed_set {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            serde::Serialize,
            serde::Deserialize,
            strum::EnumString,
            strum::IntoStaticStr,
            strum::Display,
        )]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        pub enum $name {
            $($(#[$variant_meta])* $variant),*
        }

        impl $name {
            /// The stored and API spelling.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    };
}

mod coalesce;
pub mod connections;
mod error;
pub mod inbound;
pub mod model;
pub mod oauth;
pub mod outbox;
mod postgres;
pub mod queue;
pub mod records;
pub mod secrets;
mod sql;
mod sqlite;
pub mod sync_runs;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_core::Timestamp;

pub use connections::{AuthState, Connection, ConnectionHealthUpdate, ConnectionStore, TokenState};
pub use error::StoreError;
pub use inbound::{
    FinishedInbound, InboundCounts, InboundFilter, InboundOutcome, InboundStatus, InboundStore, InboundWebhook,
    NewInbound, Stored, Verification,
};
pub use model::*;
pub use oauth::{NewTokens, OAuthState, OAuthStore, RefreshFailure, TakenState};
pub use queue::{Job, JobLease, JobQueue, NewJob};
pub use secrets::SecretStore;
pub use webhooks::*;

/// What store operations return: a [`StoreError`] unless a method says otherwise.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file, written by a single writer task with group commit.
    Sqlite,
    /// PostgreSQL, possibly shared by several processes.
    Postgres,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `sqlite://path/to/file.db` or `postgres://…`.
    pub url: String,
    /// PostgreSQL only: the schema every connection uses (created if missing). Tests use a
    /// fresh schema each so that they never see each other's rows.
    pub pg_schema: Option<String>,
    /// PostgreSQL connection pool size; SQLite reader pool size.
    pub max_connections: u32,
}

impl OpenOptions {
    /// Options for `url` with no PostgreSQL schema of its own and 16 connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), pg_schema: None, max_connections: 16 }
    }
}

/// Opens the store named by the URL and brings its schema up to date.
pub async fn open(options: &OpenOptions) -> Result<Arc<dyn Store>> {
    let url = options.url.as_str();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PgStore::open(options).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL scheme in {:?}: expected sqlite:// or postgres://",
            redact_url(url)
        )))
    }
}

/// A URL fit for logs and errors: the password is masked and the query string (which may
/// carry `password=` or `sslpassword=`) is dropped.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// Everything Switchboard persists, with the queue ([`JobQueue`]) and sealed secrets
/// ([`SecretStore`]) as traits of their own. Every method that touches tenant data takes the
/// tenant id and filters on it: a row of another tenant is indistinguishable from a missing row.
#[async_trait]
pub trait Store:
    JobQueue
    + SecretStore
    + EndpointStore
    + DeliveryStore
    + ConnectionStore
    + OAuthStore
    + InboundStore
    + records::RecordStore
    + sync_runs::SyncRunStore
    + Send
    + Sync
    + 'static
{
    /// The database this store runs on.
    fn backend(&self) -> Backend;

    /// Proves the database answers (used by `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Stops background tasks and flushes pending writes.
    async fn close(&self);

    // --- tenants and API keys -------------------------------------------------------------

    /// Creates the operator tenant and its first admin key unless one exists. Returns the
    /// tenant when this call created it; safe to race from several processes.
    async fn bootstrap_operator(&self, tenant: &NewTenant, key: &NewApiKey) -> Result<Option<Tenant>>;
    /// Creates a (non-operator) tenant and, if given, its first key, in one unit; an id already
    /// taken is a conflict.
    async fn create_tenant(&self, tenant: &NewTenant, first_key: Option<&NewApiKey>) -> Result<Tenant>;
    /// `None` when no tenant has this id.
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Every tenant, newest first: the operator's view across tenants.
    async fn list_tenants(&self, page: &Page) -> Result<Vec<Tenant>>;

    /// Stores a key; a key with the same hash is a conflict.
    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKey>;
    /// The tenant's keys, newest first, revoked and expired ones included.
    async fn list_api_keys(&self, tenant_id: &str, page: &Page) -> Result<Vec<ApiKey>>;
    /// `None` when the key is not in the tenant.
    async fn get_api_key(&self, tenant_id: &str, id: &str) -> Result<Option<ApiKey>>;
    /// Returns false when no such (unrevoked) key exists in the tenant.
    async fn revoke_api_key(&self, tenant_id: &str, id: &str, at: Timestamp) -> Result<bool>;
    /// Authentication: the key with this hash, with its tenant's operator flag.
    async fn authenticate(&self, key_hash: &str) -> Result<Option<(ApiKey, bool)>>;

    // --- event types and events -----------------------------------------------------------

    /// Stores an event type at version 1; a name the tenant already uses is a conflict.
    async fn create_event_type(&self, event_type: &NewEventType) -> Result<EventType>;
    /// Applies the patch and bumps the version; `None` when the tenant has no event type of
    /// that name.
    async fn update_event_type(&self, tenant_id: &str, name: &str, patch: &EventTypePatch)
    -> Result<Option<EventType>>;
    /// The tenant's event type of that name; `None` when it has none.
    async fn get_event_type(&self, tenant_id: &str, name: &str) -> Result<Option<EventType>>;
    /// The tenant's event types, newest first.
    async fn list_event_types(&self, tenant_id: &str, page: &Page) -> Result<Vec<EventType>>;

    /// Stores the event, its fan-out (messages) and the jobs it causes in one unit. With an
    /// idempotency key that was seen before, nothing is written and the earlier event (same
    /// request) or a conflict (different request) is returned.
    async fn create_event(
        &self,
        event: &NewEvent,
        messages: &[NewMessage],
        jobs: &[NewJob],
    ) -> Result<CreateEventOutcome>;
    /// Many events with their fan-outs, each as [`Store::create_event`] would store it, in one
    /// unit: all are stored or none.
    async fn create_events(&self, events: Vec<(NewEvent, Vec<NewMessage>)>) -> Result<Vec<CreateEventOutcome>>;
    /// The event stored under an idempotency key, with the digest of the request that made it.
    async fn find_idempotent_event(&self, tenant_id: &str, key: &str) -> Result<Option<(Event, String)>>;
    /// `None` when the event is not in the tenant (or was pruned).
    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>>;
    /// The tenant's events that match the filter, newest first.
    async fn list_events(&self, tenant_id: &str, filter: &EventFilter) -> Result<Vec<Event>>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacted_urls_keep_no_password() {
        let redacted = super::redact_url("postgres://app:hunter2@db:5432/sb?sslmode=require&password=hunter3");
        assert_eq!(redacted, "postgres://app:***@db:5432/sb");
    }
}
