//! Refreshing OAuth2 tokens (RFC 6749 §6) so that exactly one refresh per connection runs at
//! a time, across tasks and across processes sharing a database:
//!
//! 1. a per-connection async mutex makes this process's callers queue behind one refresh;
//! 2. the queued re-read the row: if its credentials changed, someone refreshed, use theirs;
//! 3. otherwise a lease on the row (`lease_refresh`) keeps other processes out; one that
//!    cannot take it waits for the holder's tokens to appear;
//! 4. the holder refreshes, keeps the old refresh token when the answer omits one, and writes
//!    the new tokens only while it still holds the lease.
//!
//! Failures back off (30 s doubling to an hour); after [`FAILURES_BEFORE_AUTH_FAILED`]
//! refusals in a row (`invalid_grant`: revoked, expired) the connection is `auth_failed`:
//! calls fail fast and a `connection.auth_failed` event goes out, until a new connect flow.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use switchboard_core::{Id, Timestamp};
use switchboard_store::{Connection, RefreshFailure};

use super::oauth::{describe, token_endpoint};
use super::resolve::{Injection, Resolved};
use super::{Connections, ConnectorError};

/// Refusals in a row that mark a connection `auth_failed`.
pub const FAILURES_BEFORE_AUTH_FAILED: u32 = 3;
/// A token this close to its expiry is refreshed before a call.
const STALE_WITHIN: TimeDelta = TimeDelta::seconds(60);
/// How long a refresh lease lasts (a crashed holder's lease lapses after this).
const LEASE: TimeDelta = TimeDelta::seconds(30);
/// How long a caller waits for another process's refresh.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(10);

/// Something the connections service reports to whoever listens (the server turns it into
/// an operational event).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionEvent {
    AuthFailed { tenant_id: Id, connection_id: Id, provider: String, reason: String, at: Timestamp },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The token expires soon (or already did).
    Expiring,
    /// The provider refused the token.
    Rejected,
}

impl Connections {
    /// Before a call: fails fast for a connection whose auth failed, and refreshes a token
    /// about to expire. `None`: the connection as resolved is good to use.
    pub(crate) async fn oauth_before_call(&self, resolved: &Resolved) -> Result<Option<Arc<Resolved>>, ConnectorError> {
        if !matches!(resolved.auth, crate::manifest::Auth::Oauth2(_)) {
            return Ok(None);
        }
        let connection = &resolved.connection;
        if connection.auth_state == "auth_failed" {
            return Err(auth_failed(connection));
        }
        let stale = connection.token.expires_at.is_some_and(|at| at <= self.clock.now() + STALE_WITHIN);
        if !stale {
            return Ok(None);
        }
        self.refresh(resolved, Why::Expiring).await.map(Some)
    }

    /// After the provider answered 401 to an OAuth2 token: one refresh, then the caller
    /// tries once more.
    pub(crate) async fn oauth_after_rejection(
        &self,
        resolved: &Resolved,
    ) -> Result<Option<Arc<Resolved>>, ConnectorError> {
        if !matches!(resolved.injection, Injection::Header(..))
            || !matches!(resolved.auth, crate::manifest::Auth::Oauth2(_))
        {
            return Ok(None);
        }
        self.refresh(resolved, Why::Rejected).await.map(Some)
    }

    /// One pass of the proactive refresher: every OAuth2 connection whose token expires
    /// within `margin` is refreshed now. Returns how many were refreshed.
    pub async fn refresh_expiring(&self, margin: Duration) -> Result<usize, ConnectorError> {
        let now = self.clock.now();
        let horizon = now + TimeDelta::from_std(margin).unwrap_or(TimeDelta::minutes(15));
        let due = self.store.connections_expiring(horizon, now, 100).await?;
        let mut refreshed = 0;
        for (tenant_id, connection_id) in due {
            let resolved = match self.resolved(&tenant_id, connection_id.as_str()).await {
                Ok(resolved) => resolved,
                Err(error) => {
                    tracing::warn!(connection = %connection_id, %error, "a connection due for refresh cannot be resolved");
                    continue;
                }
            };
            let still_due = resolved.connection.token.expires_at.is_some_and(|at| at <= horizon);
            if !still_due {
                continue;
            }
            match self.refresh_with(&resolved, Why::Expiring, Some(horizon)).await {
                Ok(_) => refreshed += 1,
                Err(error) => tracing::info!(connection = %connection_id, %error, "proactive token refresh failed"),
            }
        }
        Ok(refreshed)
    }

    async fn refresh(&self, resolved: &Resolved, why: Why) -> Result<Arc<Resolved>, ConnectorError> {
        self.refresh_with(resolved, why, None).await
    }

    /// `horizon`: for the proactive pass, a token expiring after it needs no refresh.
    async fn refresh_with(
        &self,
        seen: &Resolved,
        why: Why,
        horizon: Option<Timestamp>,
    ) -> Result<Arc<Resolved>, ConnectorError> {
        let tenant_id = seen.connection.tenant_id.clone();
        let id = seen.connection.id.clone();
        let lock = self.refresh_locks.get_with_by_ref(&id, || Arc::new(tokio::sync::Mutex::new(())));
        let _turn = lock.lock().await;

        let current = self.get(&tenant_id, id.as_str()).await?;
        if current.credentials_secret_id != seen.connection.credentials_secret_id {
            // Refreshed (or reconnected) while we queued: use those tokens.
            return self.reresolved(&current).await;
        }
        if current.auth_state == "auth_failed" {
            return Err(auth_failed(&current));
        }
        let now = self.clock.now();
        let stale_at = horizon.unwrap_or(now + STALE_WITHIN);
        if why == Why::Expiring && current.token.expires_at.is_none_or(|at| at > stale_at) {
            return self.reresolved(&current).await;
        }
        if let Some(backing_off) = backing_off(&current, now) {
            return Err(backing_off);
        }

        if !self.store.lease_refresh(tenant_id.as_str(), id.as_str(), &self.process_id, now + LEASE, now).await? {
            return self.wait_for_other_process(&current).await;
        }
        self.refresh_holding_lease(current).await
    }

    async fn refresh_holding_lease(&self, seen: Connection) -> Result<Arc<Resolved>, ConnectorError> {
        // Another process may have finished a refresh between our read and our lease.
        let (current, mut credentials) = self.connection_with_credentials(&seen.tenant_id, seen.id.as_str()).await?;
        if current.credentials_secret_id != seen.credentials_secret_id {
            self.store.release_refresh(current.tenant_id.as_str(), current.id.as_str(), &self.process_id).await?;
            return self.reresolved(&current).await;
        }
        let provider = self.provider(&current.provider)?.clone();
        let spec = Self::oauth_spec(&provider, &current)?;
        let urls = self.oauth_urls(&provider, &spec)?;
        let outcome = match credentials.get("refresh_token") {
            None => Err(("the connection has no refresh token; connect it again".to_string(), true)),
            Some(refresh_token) => {
                let endpoint = token_endpoint(&current, &urls.token, &credentials, &spec)
                    .map_err(ConnectorError::Misconfigured)?;
                self.token_client
                    .refresh(&endpoint, refresh_token)
                    .await
                    .map_err(|error| (describe(&error), error.is_permanent()))
            }
        };
        match outcome {
            Ok(granted) => {
                let scopes = current.token.scopes.clone();
                match self.store_tokens(&current, &mut credentials, granted, &scopes, Some(&self.process_id)).await? {
                    Some(updated) => self.reresolved(&updated).await,
                    // The lease lapsed and someone else wrote: theirs stand.
                    None => self.reresolved(&self.get(&current.tenant_id, current.id.as_str()).await?).await,
                }
            }
            Err((error, permanent)) => Err(self.record_failure(&current, error, permanent).await?),
        }
    }

    async fn record_failure(
        &self,
        current: &Connection,
        error: String,
        permanent: bool,
    ) -> Result<ConnectorError, ConnectorError> {
        let now = self.clock.now();
        let failures = current.token.refresh_failures + 1;
        let gives_up = permanent && failures >= FAILURES_BEFORE_AUTH_FAILED;
        let backoff = TimeDelta::seconds(30 * (1_i64 << (failures.min(8) - 1))).min(TimeDelta::hours(1));
        let failure = RefreshFailure {
            error: format!("token refresh: {error}"),
            at: now,
            retry_at: (!gives_up).then_some(now + backoff),
            auth_state: gives_up.then(|| "auth_failed".to_string()),
            lease_owner: self.process_id.clone(),
        };
        self.store.record_refresh_failure(current.tenant_id.as_str(), current.id.as_str(), &failure).await?;
        self.forget_resolved(&current.id);
        if gives_up {
            let event = ConnectionEvent::AuthFailed {
                tenant_id: current.tenant_id.clone(),
                connection_id: current.id.clone(),
                provider: current.provider.clone(),
                reason: error.clone(),
                at: now,
            };
            // Nobody listening (a test, a tool) is fine.
            let _ = self.events.send(event);
            return Ok(ConnectorError::AuthFailed(error));
        }
        Ok(ConnectorError::RefreshBackingOff { retry_after: backoff.to_std().unwrap_or_default(), last_error: error })
    }

    /// Another process holds the lease: wait until its tokens are written (or its lease
    /// lapses, and then take over).
    async fn wait_for_other_process(&self, seen: &Connection) -> Result<Arc<Resolved>, ConnectorError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHERS;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let current = self.get(&seen.tenant_id, seen.id.as_str()).await?;
            if current.credentials_secret_id != seen.credentials_secret_id {
                return self.reresolved(&current).await;
            }
            if current.auth_state == "auth_failed" {
                return Err(auth_failed(&current));
            }
            let now = self.clock.now();
            if let Some(backing_off) = backing_off(&current, now) {
                return Err(backing_off);
            }
            if self
                .store
                .lease_refresh(seen.tenant_id.as_str(), seen.id.as_str(), &self.process_id, now + LEASE, now)
                .await?
            {
                return self.refresh_holding_lease(current).await;
            }
        }
        Err(ConnectorError::Unreachable {
            code: "refresh_pending",
            message: "another process is refreshing this connection's token; retry shortly".into(),
        })
    }

    async fn reresolved(&self, connection: &Connection) -> Result<Arc<Resolved>, ConnectorError> {
        self.forget_resolved(&connection.id);
        self.resolved(&connection.tenant_id, connection.id.as_str()).await
    }
}

/// The refusal while a failed refresh's backoff lasts.
fn backing_off(connection: &Connection, now: Timestamp) -> Option<ConnectorError> {
    let retry_at = connection.token.refresh_retry_at.filter(|at| *at > now)?;
    Some(ConnectorError::RefreshBackingOff {
        retry_after: (retry_at - now).to_std().unwrap_or_default(),
        last_error: connection.last_error.clone().unwrap_or_default(),
    })
}

fn auth_failed(connection: &Connection) -> ConnectorError {
    ConnectorError::AuthFailed(connection.last_error.clone().unwrap_or_else(|| "the provider refused the grant".into()))
}
