use std::time::Duration;

use crate::admission::AdmissionConfig;
use crate::schedule::RetrySchedule;

/// How outgoing webhooks behave; every field has a `serve` flag.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub schedule: RetrySchedule,
    /// An attempt still waiting for its answer after this has failed (`timeout`).
    pub request_timeout: Duration,
    /// Deliveries in flight at once in this process.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint; `None` for a quarter of `concurrency`.
    pub concurrency_per_endpoint: Option<usize>,
    /// How long a claimed message stays with its worker; a worker that dies gives its
    /// messages back after this. Must exceed the request timeout.
    pub lease: Duration,
    /// An endpoint that has only failed for this long is disabled.
    pub disable_after: Duration,
    /// How long the old secret keeps signing after a rotation.
    pub rotation_grace: Duration,
    /// Events, messages and attempts older than this are pruned.
    pub retention: Duration,
    pub retention_interval: Duration,
    /// How long this process trusts its copy of a tenant's endpoints when fanning out;
    /// changes made through this process apply at once.
    pub endpoint_cache_ttl: Duration,
    /// When a tenant whose deliveries are behind is refused new events.
    pub admission: AdmissionConfig,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        Self {
            schedule: RetrySchedule::default(),
            request_timeout: Duration::from_secs(15),
            concurrency: 256,
            concurrency_per_endpoint: None,
            lease: Duration::from_secs(60),
            disable_after: days(5),
            rotation_grace: Duration::from_secs(24 * 3600),
            retention: days(30),
            retention_interval: Duration::from_secs(3600),
            endpoint_cache_ttl: Duration::from_secs(1),
            admission: AdmissionConfig::default(),
        }
    }
}

impl WebhookConfig {
    /// Deliveries in flight at once to one endpoint.
    pub fn per_endpoint(&self) -> usize {
        self.concurrency_per_endpoint.unwrap_or(self.concurrency / 4).clamp(1, self.concurrency.max(1))
    }
}
