//! Delivery figures for `/metrics`: attempts by outcome (the success rate), their durations
//! (p50/p99 with `histogram_quantile`), and the latest failure.
//!
//! `/metrics` answers without a key, so nothing here is labelled by endpoint (that would show
//! every tenant's ids, and grow with every endpoint ever created); per-endpoint figures are
//! in the API (`GET /api/integrations/webhooks/{id}/stats`), behind the tenant's key.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchboard_store::NewAttempt;

use crate::delivery::Verdict;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `succeeded` or `failed`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    pub attempts: Family<AttemptLabels, Counter>,
    pub duration: Histogram,
    /// Unix time of the latest failed attempt.
    pub last_failure: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub exhausted: Counter,
    pub fanned_out: Counter,
    /// Messages handed to this process's delivery workers by the publish that created them.
    pub handed_over: Counter,
    /// Messages the delivery workers claimed from the store.
    pub claimed: Counter,
    /// Messages put back because their endpoint had its share of delivery slots in flight.
    pub put_back: Counter,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        Self {
            attempts: Family::default(),
            duration: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            last_failure: Gauge::default(),
            exhausted: Counter::default(),
            fanned_out: Counter::default(),
            handed_over: Counter::default(),
            claimed: Counter::default(),
            put_back: Counter::default(),
        }
    }
}

impl DeliveryMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("webhook_attempts", "Delivery attempts by outcome", self.attempts.clone());
        registry.register(
            "webhook_attempt_duration_seconds",
            "Time from sending a delivery to its answer",
            self.duration.clone(),
        );
        registry.register(
            "webhook_last_failure_timestamp_seconds",
            "When the latest failed attempt was made",
            self.last_failure.clone(),
        );
        registry.register("webhook_messages_exhausted", "Messages that failed every attempt", self.exhausted.clone());
        registry.register("webhook_messages", "Messages created by fan-out", self.fanned_out.clone());
        registry.register(
            "webhook_messages_handed_over",
            "Messages handed by their publish to this process's delivery workers, without a claim",
            self.handed_over.clone(),
        );
        registry.register(
            "webhook_messages_claimed",
            "Messages claimed from the store by this process's delivery workers",
            self.claimed.clone(),
        );
        registry.register(
            "webhook_messages_put_back",
            "Messages put back for a second because their endpoint had its share of delivery slots in flight",
            self.put_back.clone(),
        );
    }

    pub(crate) fn observe(&self, attempt: &NewAttempt, verdict: &Verdict) {
        let outcome = if *verdict == Verdict::Delivered { "succeeded" } else { "failed" };
        self.attempts.get_or_create(&AttemptLabels { outcome }).inc();
        self.duration.observe(attempt.duration_us as f64 / 1e6);
        if *verdict != Verdict::Delivered {
            self.last_failure.set(attempt.created_at.timestamp_micros() as f64 / 1e6);
        }
    }
}
