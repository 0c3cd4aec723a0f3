//! OAuth2 connections as stored: pending connect flows (single-use states), tokens set by a
//! flow or a refresh, refresh failures with backoff, and the lease that lets one process at a
//! time refresh a connection's tokens.

use std::collections::BTreeMap;

use switchboard_core::{Id, Timestamp};

use crate::{Connection, Result, StoredSecret};

/// A started connect flow. Only the SHA-256 of its `state` is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthState {
    /// Hex SHA-256 of the `state` sent to the provider; the state itself is never stored.
    pub state_hash: String,
    /// The tenant that started the flow.
    pub tenant_id: Id,
    /// `conn_…`, the connection the flow connects.
    pub connection_id: Id,
    /// The callback URI sent to the provider; the code exchange must repeat it.
    pub redirect_uri: String,
    /// Where the browser goes once the flow ends, if the caller gave one.
    pub return_url: Option<String>,
    /// The scopes requested.
    pub scopes: Vec<String>,
    /// When the flow started.
    pub created_at: Timestamp,
    /// The state is refused from this time on.
    pub expires_at: Timestamp,
}

/// What `take_oauth_state` found.
#[derive(Debug, Clone, PartialEq)]
pub enum TakenState {
    /// The state was pending: it is now used, and its PKCE verifier (if any) deleted from
    /// the store and returned.
    Taken(Box<(OAuthState, Option<StoredSecret>)>),
    /// The state was pending but has expired; it is left as it was.
    Expired,
    /// The state was used before (a replayed or concurrent callback).
    AlreadyUsed,
    /// No flow has this state.
    Unknown,
}

/// Tokens set on a connection by a connect flow or a refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTokens {
    /// The connection's whole sealed credentials, tokens included.
    pub credentials: StoredSecret,
    /// Which credentials are set, and when: replaces the connection's `credential_fields`.
    pub fields: BTreeMap<String, Timestamp>,
    /// When the new access token expires; `None` when the provider did not say.
    pub expires_at: Option<Timestamp>,
    /// The scopes the provider granted.
    pub scopes: Vec<String>,
    /// Set for a refresh; `None` for a connect flow.
    pub refreshed_at: Option<Timestamp>,
    /// Only the holder of this lease may write a refresh (`None` for a connect flow).
    pub lease_owner: Option<String>,
    /// The connection's new auth state (normally `ok`).
    pub auth_state: crate::AuthState,
    /// A new config (a JSON object), when the token answer carried values the provider's
    /// form declares (Salesforce's `instance_url`).
    pub config: Option<String>,
}

/// A refresh that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshFailure {
    /// What went wrong, kept as the connection's `last_error`.
    pub error: String,
    /// When it failed, kept as the connection's `last_error_at`.
    pub at: Timestamp,
    /// No refresh before this.
    pub retry_at: Option<Timestamp>,
    /// A new auth state (`auth_failed`), if it changes.
    pub auth_state: Option<crate::AuthState>,
    /// The process that tried the refresh: nothing is recorded unless it still holds the lease.
    pub lease_owner: String,
    /// Enqueued in the same unit, if the failure is recorded (the lease was still held): the
    /// operational event an `auth_failed` raises.
    pub jobs: Vec<crate::NewJob>,
}

/// OAuth2 connect flows and the tokens, failures and refresh leases of OAuth2 connections.
#[async_trait::async_trait]
pub trait OAuthStore: Send + Sync {
    /// Stores a pending flow and, with PKCE, its sealed verifier, in one unit.
    async fn create_oauth_state(&self, state: &OAuthState, verifier: Option<&StoredSecret>) -> Result<()>;
    /// Uses a state once: marks it used and returns it with its verifier (deleted in the same
    /// unit), or says why it cannot be used.
    async fn take_oauth_state(&self, state_hash: &str, now: Timestamp) -> Result<TakenState>;
    /// Deletes states that expired before `before`, and their verifiers.
    async fn prune_oauth_states(&self, before: Timestamp) -> Result<u64>;
    /// Replaces the connection's credentials with ones holding new tokens, records their
    /// metadata and clears the refresh failures and lease. `None` when the connection is gone
    /// or (for a refresh) the lease is no longer this owner's.
    async fn set_connection_tokens(&self, tenant_id: &str, id: &str, tokens: &NewTokens) -> Result<Option<Connection>>;
    /// Records a failed refresh and releases the lease.
    async fn record_refresh_failure(&self, tenant_id: &str, id: &str, failure: &RefreshFailure) -> Result<()>;
    /// Takes the connection's refresh lease until `until` unless anyone (this owner too)
    /// holds one that has not expired.
    async fn lease_refresh(
        &self,
        tenant_id: &str,
        id: &str,
        owner: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool>;
    /// Gives the lease back (only if `owner` holds it).
    async fn release_refresh(&self, tenant_id: &str, id: &str, owner: &str) -> Result<()>;
    /// OAuth2 connections due for a refresh ahead of time: less than `margin`, and less than
    /// a quarter of the token's lifetime, left before it expires (so a token that lives five
    /// minutes is refreshed about once per lifetime, not at every pass), and refreshable now
    /// (not failed for good, not backing off, not leased); soonest first.
    async fn connections_due_for_refresh(
        &self,
        now: Timestamp,
        margin: chrono::TimeDelta,
        limit: u32,
    ) -> Result<Vec<(Id, Id)>>;
}
