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
//! How close to its expiry a token is refreshed scales with its lifetime: before a call, at a
//! tenth of it (at most a minute), so a token that lives 15 s is not stale at birth; ahead of
//! time, by the refresher, at a quarter (at most its margin), so a token that lives five
//! minutes is renewed about once per lifetime. The same test runs again after the lock and
//! the lease, on the row as it is then: a token another task or process refreshed a moment
//! ago is fresh, and used.
//!
//! Failures that may pass (the endpoint unreachable, a 5xx) back off, 30 s doubling to an
//! hour. A refusal for good (`invalid_grant`: revoked or expired; a client the server no
//! longer knows) makes the connection `auth_failed` at once: calls fail fast and a
//! `connection.auth_failed` event goes out, until a new connect flow.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use switchboard_core::Timestamp;
use switchboard_store::outbox::OperationalEvent;
use switchboard_store::{AuthState, Connection, RefreshFailure, TokenState};

use super::oauth::{describe, token_endpoint};
use super::resolve::{Injection, Resolved};
use super::{Connections, ConnectorError};

/// Before a call, a token is refreshed once it has a tenth of its lifetime left, at most this.
const STALE_WITHIN: TimeDelta = TimeDelta::seconds(60);
/// How long a refresh lease lasts (a crashed holder's lease lapses after this).
const LEASE: TimeDelta = TimeDelta::seconds(30);
/// How long a caller waits for another process's refresh.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The token expires soon (or already did): before a call.
    Expiring,
    /// The refresher's pass, with its margin.
    Ahead(TimeDelta),
    /// The provider refused the token.
    Rejected,
}

impl Why {
    /// Whether `token` still needs what this refresh is for, at `now`.
    fn still_needed(self, token: &TokenState, now: Timestamp) -> bool {
        let left_below = |margin: TimeDelta| token.expires_at.is_some_and(|at| at - now <= margin);
        match self {
            Why::Expiring => left_below(stale_margin(token)),
            Why::Ahead(margin) => left_below(ahead_margin(token, margin)),
            Why::Rejected => true,
        }
    }
}

/// A token's lifetime, when both ends are known.
fn lifetime(token: &TokenState) -> Option<TimeDelta> {
    Some(token.expires_at? - token.issued_at?).filter(|life| *life > TimeDelta::zero())
}

/// How little may be left before a call refreshes: a tenth of the lifetime, at most a minute.
fn stale_margin(token: &TokenState) -> TimeDelta {
    lifetime(token).map_or(STALE_WITHIN, |life| (life / 10).min(STALE_WITHIN))
}

/// How little may be left before the refresher renews: a quarter of the lifetime, at most
/// `margin` (the store's query applies the same rule).
fn ahead_margin(token: &TokenState, margin: TimeDelta) -> TimeDelta {
    lifetime(token).map_or(margin, |life| (life / 4).min(margin))
}

impl Connections {
    /// Before a call: fails fast for a connection whose auth failed, and refreshes a token
    /// about to expire. `None`: the connection as resolved is good to use.
    pub(crate) async fn oauth_before_call(&self, resolved: &Resolved) -> Result<Option<Arc<Resolved>>, ConnectorError> {
        if !matches!(resolved.auth, crate::manifest::Auth::Oauth2(_)) {
            return Ok(None);
        }
        let connection = &resolved.connection;
        if connection.auth_state == AuthState::AuthFailed {
            return Err(auth_failed(connection));
        }
        if !Why::Expiring.still_needed(&connection.token, self.clock.now()) {
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

    /// One pass of the proactive refresher: every OAuth2 connection whose token has less than
    /// `margin`, and less than a quarter of its lifetime, left is refreshed now. Returns how
    /// many were refreshed.
    pub async fn refresh_expiring(&self, margin: Duration) -> Result<usize, ConnectorError> {
        let now = self.clock.now();
        let margin = TimeDelta::from_std(margin).unwrap_or(TimeDelta::minutes(15));
        let due = self.store.connections_due_for_refresh(now, margin, 100).await?;
        let mut refreshed = 0;
        for (tenant_id, connection_id) in due {
            let resolved = match self.resolved(&tenant_id, connection_id.as_str()).await {
                Ok(resolved) => resolved,
                Err(error) => {
                    tracing::warn!(connection = %connection_id, %error, "a connection due for refresh cannot be resolved");
                    continue;
                }
            };
            if !Why::Ahead(margin).still_needed(&resolved.connection.token, now) {
                continue;
            }
            match self.refresh(&resolved, Why::Ahead(margin)).await {
                Ok(_) => refreshed += 1,
                Err(error) => tracing::info!(connection = %connection_id, %error, "proactive token refresh failed"),
            }
        }
        Ok(refreshed)
    }

    async fn refresh(&self, seen: &Resolved, why: Why) -> Result<Arc<Resolved>, ConnectorError> {
        let tenant_id = seen.connection.tenant_id.clone();
        let id = seen.connection.id.clone();
        let lock = self.refresh_locks.get_with_by_ref(&id, || Arc::new(tokio::sync::Mutex::new(())));
        let _turn = lock.lock().await;

        let current = self.get(&tenant_id, id.as_str()).await?;
        if current.credentials_secret_id != seen.connection.credentials_secret_id {
            // Refreshed (or reconnected) while we queued: use those tokens.
            return self.reresolved(&current).await;
        }
        if current.auth_state == AuthState::AuthFailed {
            return Err(auth_failed(&current));
        }
        let now = self.clock.now();
        if !why.still_needed(&current.token, now) {
            return self.reresolved(&current).await;
        }
        if let Some(backing_off) = backing_off(&current, now) {
            return Err(backing_off);
        }

        if !self.store.lease_refresh(tenant_id.as_str(), id.as_str(), &self.process_id, now + LEASE, now).await? {
            return self.wait_for_other_process(&current, why).await;
        }
        self.refresh_holding_lease(current, why).await
    }

    async fn refresh_holding_lease(&self, seen: Connection, why: Why) -> Result<Arc<Resolved>, ConnectorError> {
        // Another process may have finished a refresh between our read and our lease.
        let (current, mut credentials) = self.connection_with_credentials(&seen.tenant_id, seen.id.as_str()).await?;
        let refreshed_meanwhile = current.credentials_secret_id != seen.credentials_secret_id
            || !why.still_needed(&current.token, self.clock.now());
        if refreshed_meanwhile {
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
        let gives_up = permanent;
        let backoff = TimeDelta::seconds(30 * (1_i64 << (failures.min(8) - 1))).min(TimeDelta::hours(1));
        // Giving up is announced (`connection.auth_failed`) through the outbox: enqueued with
        // the row that records it, so neither a crash nor a slow consumer can lose it.
        let announcement = OperationalEvent::ConnectionAuthFailed {
            connection_id: current.id.clone(),
            provider: current.provider.clone(),
            reason: error.clone(),
            at: now,
        };
        let failure = RefreshFailure {
            error: format!("token refresh: {error}"),
            at: now,
            retry_at: (!gives_up).then_some(now + backoff),
            auth_state: gives_up.then_some(AuthState::AuthFailed),
            lease_owner: self.process_id.clone(),
            jobs: if gives_up { vec![announcement.to_job(&current.tenant_id, now)] } else { Vec::new() },
        };
        self.store.record_refresh_failure(current.tenant_id.as_str(), current.id.as_str(), &failure).await?;
        self.forget_resolved(&current.id);
        if gives_up {
            return Ok(ConnectorError::AuthFailed(error));
        }
        Ok(ConnectorError::RefreshBackingOff { retry_after: backoff.to_std().unwrap_or_default(), last_error: error })
    }

    /// Another process holds the lease: wait until its tokens are written (or its lease
    /// lapses, and then take over).
    async fn wait_for_other_process(&self, seen: &Connection, why: Why) -> Result<Arc<Resolved>, ConnectorError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHERS;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let current = self.get(&seen.tenant_id, seen.id.as_str()).await?;
            if current.credentials_secret_id != seen.credentials_secret_id {
                return self.reresolved(&current).await;
            }
            if current.auth_state == AuthState::AuthFailed {
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
                return self.refresh_holding_lease(current, why).await;
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
