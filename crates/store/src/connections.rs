//! Connections as stored: a provider installed by a tenant, its config, its sealed
//! credentials (a [`StoredSecret`] holding a JSON object) and its health.

use std::collections::{BTreeMap, HashMap};

use switchboard_core::{Id, Timestamp};

use crate::{Page, Result, StoredSecret};

closed_set! {
    /// How far a connection's credentials got.
    pub enum AuthState {
        /// The auth mode's required credentials are not all set.
        MissingCredentials,
        /// Every required credential is set; the provider has not been asked yet.
        Configured,
        /// The provider accepted the credentials.
        Ok,
        /// The provider refused the credentials (a 401 from a test or a call).
        Rejected,
        /// The provider refused the OAuth2 grant for good (`invalid_grant`): connect again.
        AuthFailed,
    }
}

/// A provider installed by a tenant, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// `conn_…`; unique across tenants, so a webhook URL can name the connection alone.
    pub id: Id,
    /// The tenant that installed it; every tenant-scoped method filters on it.
    pub tenant_id: Id,
    /// The manifest's name.
    pub provider: String,
    /// The name the tenant gave it.
    pub name: String,
    /// Which of the manifest's auth modes it uses (`oauth2`, `api_key`, `bearer`, …).
    pub auth_mode: String,
    /// The non-secret config values, a JSON object kept as text.
    pub config: String,
    /// `sec_…`, the sealed credentials (a JSON object); `None` while none are set.
    pub credentials_secret_id: Option<Id>,
    /// Which credentials are set, and when.
    pub credential_fields: BTreeMap<String, Timestamp>,
    /// How far its credentials got.
    pub auth_state: AuthState,
    /// When a call through it last succeeded; never moves back.
    pub last_success_at: Option<Timestamp>,
    /// The latest error of a call or token refresh through it.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_at: Option<Timestamp>,
    /// When the last health check ran; `None` before the first.
    pub last_test_at: Option<Timestamp>,
    /// Whether the last health check passed; `None` before the first.
    pub last_test_ok: Option<bool>,
    /// Starts at 1; bumped whenever its credentials or tokens change.
    pub version: i64,
    /// When it was installed.
    pub created_at: Timestamp,
    /// When its credentials or tokens last changed (its creation until then).
    pub updated_at: Timestamp,
    /// For OAuth2 connections: what is known of the tokens (never the tokens themselves).
    pub token: TokenState,
}

/// An OAuth2 connection's token metadata and refresh bookkeeping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenState {
    /// When the access token expires; `None` when the provider did not say.
    pub expires_at: Option<Timestamp>,
    /// When the access token was obtained (its lifetime is `expires_at - issued_at`).
    pub issued_at: Option<Timestamp>,
    /// The scopes the provider granted.
    pub scopes: Vec<String>,
    /// When a refresh last succeeded; `None` until the first.
    pub last_refresh_at: Option<Timestamp>,
    /// Refreshes that failed in a row.
    pub refresh_failures: u32,
    /// No refresh is tried before this (backoff after failures).
    pub refresh_retry_at: Option<Timestamp>,
}

/// What calls through a connection taught since the last flush. Fields left `None` are
/// unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionHealthUpdate {
    /// The connection's tenant; the update matches on it.
    pub tenant_id: Id,
    /// `conn_…`, the connection to update.
    pub connection_id: Id,
    /// A success at this time; the stored time only ever moves forward.
    pub last_success_at: Option<Timestamp>,
    /// The latest error and when it happened.
    pub last_error: Option<(String, Timestamp)>,
    /// A new auth state, e.g. `rejected` after a 401.
    pub auth_state: Option<AuthState>,
    /// The outcome of a health check run at that time.
    pub test: Option<(Timestamp, bool)>,
}

/// Connections and their sealed credentials.
#[async_trait::async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Stores a connection and, if it has any, its sealed credentials, in one unit.
    async fn create_connection(
        &self,
        connection: &Connection,
        credentials: Option<&StoredSecret>,
    ) -> Result<Connection>;
    /// `None` when the connection is not in the tenant.
    async fn get_connection(&self, tenant_id: &str, id: &str) -> Result<Option<Connection>>;
    /// The connection and its sealed credentials read in one statement, so they belong
    /// together even while another process replaces the credentials.
    async fn get_connection_with_credentials(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<(Connection, Option<StoredSecret>)>>;
    /// A connection by id alone, for the webhook receiver, whose URL names only the
    /// connection (ids are unique across tenants).
    async fn find_connection(&self, id: &str) -> Result<Option<Connection>>;
    /// The tenant's connections, newest first.
    async fn list_connections(&self, tenant_id: &str, page: &Page) -> Result<Vec<Connection>>;
    /// Deletes the connection and its credentials; false when there was none.
    async fn delete_connection(&self, tenant_id: &str, id: &str) -> Result<bool>;
    /// Replaces the connection's credentials (the old secret row is deleted in the same unit)
    /// and sets its auth state.
    async fn set_connection_credentials(
        &self,
        tenant_id: &str,
        id: &str,
        credentials: &StoredSecret,
        fields: &BTreeMap<String, Timestamp>,
        auth_state: AuthState,
    ) -> Result<Option<Connection>>;
    /// Applies a batch of health updates in one unit; rows that went away are skipped.
    async fn record_connection_health(&self, updates: &[ConnectionHealthUpdate]) -> Result<()>;
    /// Installed connections per provider, across every tenant (the marketplace's popularity).
    async fn installs_per_provider(&self) -> Result<HashMap<String, u64>>;
}
