//! Delivery figures for `/metrics`, labelled by endpoint: attempts by outcome (the success
//! rate), their durations (p50/p99 with `histogram_quantile`), and the latest failure.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchboard_store::{Endpoint, NewAttempt};

use crate::delivery::Verdict;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub endpoint_id: String,
    /// `succeeded` or `failed`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint_id: String,
}

type DurationFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    pub attempts: Family<AttemptLabels, Counter>,
    pub duration: DurationFamily,
    /// Unix time of each endpoint's latest failed attempt.
    pub last_failure: Family<EndpointLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub exhausted: Counter,
    pub fanned_out: Counter,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        Self {
            attempts: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_5, 2.0, 16))),
            last_failure: Family::default(),
            exhausted: Counter::default(),
            fanned_out: Counter::default(),
        }
    }
}

impl DeliveryMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("webhook_attempts", "Delivery attempts by endpoint and outcome", self.attempts.clone());
        registry.register(
            "webhook_attempt_duration_seconds",
            "Time from sending a delivery to its answer, by endpoint",
            self.duration.clone(),
        );
        registry.register(
            "webhook_last_failure_timestamp_seconds",
            "When an endpoint's latest attempt failed, by endpoint",
            self.last_failure.clone(),
        );
        registry.register("webhook_messages_exhausted", "Messages that failed every attempt", self.exhausted.clone());
        registry.register("webhook_messages", "Messages created by fan-out", self.fanned_out.clone());
    }

    pub(crate) fn observe(&self, endpoint: &Endpoint, attempt: &NewAttempt, verdict: &Verdict) {
        let endpoint_id = endpoint.id.to_string();
        let outcome = if *verdict == Verdict::Delivered { "succeeded" } else { "failed" };
        self.attempts.get_or_create(&AttemptLabels { endpoint_id: endpoint_id.clone(), outcome }).inc();
        let labels = EndpointLabels { endpoint_id };
        self.duration.get_or_create(&labels).observe(attempt.duration_us as f64 / 1e6);
        if *verdict != Verdict::Delivered {
            self.last_failure.get_or_create(&labels).set(attempt.created_at.timestamp_micros() as f64 / 1e6);
        }
    }
}
