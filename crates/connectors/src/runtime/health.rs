//! Per-connection health as this process saw it: calls, errors, latency percentiles, the
//! last success and the last error. Kept in memory (bounded) and written to the connection
//! row when something changes: every error, a success at most every 30 s, and auth
//! rejections and recoveries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use switchboard_core::{Clock, Id, Timestamp};
use switchboard_store::{AuthState, ConnectionHealthUpdate};

const SUCCESS_PERSIST_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionHealth {
    pub calls: u64,
    pub errors: u64,
    /// Errors over calls, 0 to 1, since this process started watching.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub last_success_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

struct Stats {
    calls: u64,
    errors: u64,
    latency: Histogram<u64>,
    last_success_at: Option<Timestamp>,
    last_error: Option<(String, Timestamp)>,
    last_persisted_success: Option<Timestamp>,
    rejected: bool,
}

/// What should be written to the row after a call.
pub(crate) struct Persist {
    success_at: Option<Timestamp>,
    error: Option<String>,
    auth_state: Option<AuthState>,
}

impl Persist {
    pub(crate) fn into_update(self, tenant_id: &Id, connection_id: &Id, now: Timestamp) -> ConnectionHealthUpdate {
        ConnectionHealthUpdate {
            tenant_id: tenant_id.clone(),
            connection_id: connection_id.clone(),
            last_success_at: self.success_at,
            last_error: self.error.map(|e| (e, now)),
            auth_state: self.auth_state,
            test: None,
        }
    }
}

pub struct HealthBook {
    clock: Arc<dyn Clock>,
    stats: moka::sync::Cache<Id, Arc<Mutex<Stats>>>,
}

impl HealthBook {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let stats =
            moka::sync::Cache::builder().max_capacity(50_000).time_to_idle(Duration::from_secs(24 * 3600)).build();
        Self { clock, stats }
    }

    pub(crate) fn record(
        &self,
        id: &Id,
        elapsed: Duration,
        error: Option<&str>,
        status: Option<u16>,
    ) -> Option<Persist> {
        let now = self.clock.now();
        let entry = self.stats.get_with_by_ref(id, || {
            Arc::new(Mutex::new(Stats {
                calls: 0,
                errors: 0,
                latency: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("constant bounds are valid"),
                last_success_at: None,
                last_error: None,
                last_persisted_success: None,
                rejected: false,
            }))
        });
        let mut s = entry.lock().unwrap_or_else(|p| p.into_inner());
        s.calls += 1;
        let _ = s.latency.record((elapsed.as_micros() as u64).max(1));
        let rejected = matches!(status, Some(401));
        let auth_change = if rejected && !s.rejected {
            s.rejected = true;
            Some(AuthState::Rejected)
        } else if !rejected && s.rejected && error.is_none() {
            s.rejected = false;
            Some(AuthState::Ok)
        } else {
            None
        };
        match error {
            Some(message) => {
                s.errors += 1;
                s.last_error = Some((message.to_string(), now));
                Some(Persist { success_at: None, error: Some(message.to_string()), auth_state: auth_change })
            }
            None => {
                s.last_success_at = Some(now);
                let due = s.last_persisted_success.is_none_or(|at| now - at >= SUCCESS_PERSIST_INTERVAL);
                if due || auth_change.is_some() {
                    s.last_persisted_success = Some(now);
                    Some(Persist {
                        success_at: Some(now),
                        error: None,
                        auth_state: auth_change.or(Some(AuthState::Ok)),
                    })
                } else {
                    None
                }
            }
        }
    }

    pub fn get(&self, id: &Id) -> Option<ConnectionHealth> {
        let entry = self.stats.get(id)?;
        let s = entry.lock().unwrap_or_else(|p| p.into_inner());
        let quantile = |q: f64| (!s.latency.is_empty()).then(|| s.latency.value_at_quantile(q) as f64 / 1000.0);
        Some(ConnectionHealth {
            calls: s.calls,
            errors: s.errors,
            error_rate: if s.calls == 0 { 0.0 } else { s.errors as f64 / s.calls as f64 },
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            last_success_at: s.last_success_at,
            last_error: s.last_error.as_ref().map(|(m, _)| m.clone()),
            last_error_at: s.last_error.as_ref().map(|(_, at)| *at),
        })
    }

    pub fn forget(&self, id: &Id) {
        self.stats.invalidate(id);
    }
}

/// Everything known about a connection's health: the stored row (last test, last success and
/// error as every process recorded them), this process's live figures, and the circuit of
/// the provider API it calls.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub connection: switchboard_store::Connection,
    /// `None` until this process has called through the connection.
    pub live: Option<ConnectionHealth>,
    /// `None` while the connection cannot be resolved (no credentials yet, say).
    pub circuit: Option<switchboard_egress::BreakerSnapshot>,
}

impl super::Connections {
    pub async fn health_report(&self, tenant_id: &Id, id: &str) -> Result<HealthReport, super::ConnectorError> {
        Ok(self.health_of(self.get(tenant_id, id).await?).await)
    }

    pub async fn health_of(&self, connection: switchboard_store::Connection) -> HealthReport {
        let circuit = match self.resolved(&connection.tenant_id, connection.id.as_str()).await {
            Ok(resolved) => Some(self.egress.breakers().snapshot(&resolved.breaker())),
            Err(_) => None,
        };
        let live = self.health.get(&connection.id);
        HealthReport { connection, live, circuit }
    }
}
