//! Admission: a tenant whose deliveries have fallen too far behind is asked to slow down
//! (429 with `Retry-After`) instead of growing a backlog that every later event of theirs
//! waits behind. "Behind" is the number of the tenant's messages that are due and not yet
//! delivered or in flight; messages waiting for a scheduled retry do not count, so an
//! endpoint that is down does not stop its tenant from publishing.
//!
//! Counting is a query, so each process counts a tenant at most once per
//! [`AdmissionConfig::recount_every`], and adds what it published since; between counts the
//! figure can lag what other processes published, by at most one interval's worth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use switchboard_core::{Id, Timestamp};

use crate::Webhooks;

/// When a tenant is told to slow down.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// A tenant with this many messages due and undelivered is refused new events until
    /// delivery catches up; `None` admits everything.
    pub max_due_per_tenant: Option<u64>,
    /// How long a count of a tenant's due messages is trusted.
    pub recount_every: Duration,
    /// The wait a refused publisher is told to observe.
    pub retry_after: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            // About a second of deliveries on a 2-core machine: with fan-out 10 a larger
            // backlog kept create→delivered p99 past a second (BENCHMARKS.md).
            max_due_per_tenant: Some(5_000),
            recount_every: Duration::from_millis(100),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// Why a publish was refused: the tenant's deliveries are this far behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{due} messages of this tenant are due and not yet delivered (the limit is {limit}); retry later")]
pub struct Backlogged {
    /// The tenant's due messages, as last counted plus those published here since.
    pub due: u64,
    /// The configured limit.
    pub limit: u64,
    /// How long to wait before publishing again.
    pub retry_after: Duration,
}

/// What this process knows of each tenant's backlog.
#[derive(Debug, Default)]
pub(crate) struct Backlogs {
    tenants: Mutex<HashMap<Id, Backlog>>,
}

#[derive(Debug, Clone, Copy)]
struct Backlog {
    counted: u64,
    /// When the latest count started; the next one is due a recount interval later.
    counted_at: Timestamp,
    published_since: u64,
}

impl Backlogs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Backlog>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds messages this process just published for the tenant.
    pub(crate) fn published(&self, tenant_id: &Id, messages: u64) {
        if let Some(backlog) = self.lock().get_mut(tenant_id) {
            backlog.published_since += messages;
        }
    }
}

impl Webhooks {
    /// Whether the tenant may publish now: refused while its deliveries are too far behind
    /// (see [`AdmissionConfig`]). If the count cannot be made, the event is admitted: the
    /// limit protects latency, and refusing events for a failed count would lose more.
    pub async fn admit(&self, tenant_id: &Id) -> Result<(), Backlogged> {
        let config = &self.config.admission;
        let Some(limit) = config.max_due_per_tenant else {
            return Ok(());
        };
        let now = self.clock.now();
        let recount = chrono::Duration::from_std(config.recount_every).unwrap_or(chrono::Duration::zero());
        // The caller that finds the count stale takes the recount on itself (marking it as
        // started now); the others meanwhile go by the figure there is. A recount abandoned
        // half-way (the request went away) is simply made by the next caller after it.
        let known = {
            let mut tenants = self.backlogs.lock();
            match tenants.get_mut(tenant_id) {
                Some(backlog) if now - backlog.counted_at < recount => Some(*backlog),
                Some(backlog) => {
                    backlog.counted_at = now;
                    None
                }
                None => {
                    tenants.insert(tenant_id.clone(), Backlog { counted: 0, counted_at: now, published_since: 0 });
                    None
                }
            }
        };
        let due = match known {
            Some(backlog) => backlog.counted + backlog.published_since,
            // One past the limit is enough to know the answer.
            None => match self.store.count_due_messages(tenant_id.as_str(), now, limit + 1).await {
                Ok(counted) => {
                    let backlog = Backlog { counted, counted_at: now, published_since: 0 };
                    self.backlogs.lock().insert(tenant_id.clone(), backlog);
                    counted
                }
                Err(error) => {
                    tracing::warn!(tenant = %tenant_id, %error, "counting the tenant's due messages failed; admitting");
                    return Ok(());
                }
            },
        };
        if due >= limit {
            return Err(Backlogged { due, limit, retry_after: config.retry_after });
        }
        Ok(())
    }
}
