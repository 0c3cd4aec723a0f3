//! Prometheus metrics for `/metrics`. The registry is per application (not global), so
//! several servers in one test process never share counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchboard_egress::CircuitState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `created`, `replayed`, `rejected` (invalid) or `deferred` (the tenant's deliveries are behind).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    /// `stored`, `duplicate`, `rejected`, `rate_limited` or `handshake`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub reason: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: HistogramFamily,
    pub events: Family<EventLabels, Counter>,
    pub inbound: Family<InboundLabels, Counter>,
    pub inbound_rejections: Family<RejectionLabels, Counter>,
    circuits: Family<CircuitLabels, Gauge>,
}

impl Metrics {
    pub fn new(deliveries: &switchboard_webhooks::DeliveryMetrics) -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        deliveries.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let request_seconds: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16)));
        registry.register("http_request_duration_seconds", "Time to answer an HTTP request", request_seconds.clone());
        let events = Family::<EventLabels, Counter>::default();
        registry.register("events", "Events submitted through the API, by outcome", events.clone());
        let inbound = Family::<InboundLabels, Counter>::default();
        registry.register("inbound_webhooks", "Incoming webhooks by outcome", inbound.clone());
        let inbound_rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "inbound_webhook_rejections",
            "Incoming webhooks refused, by reason",
            inbound_rejections.clone(),
        );
        // Counted by state only: `/metrics` answers without a key, so no series names a
        // tenant, a connection or the base URL a tenant configured.
        let circuits = Family::<CircuitLabels, Gauge>::default();
        registry.register("circuits", "Circuit breakers (per tenant and provider API) by state", circuits.clone());
        Self { registry, requests, request_seconds, events, inbound, inbound_rejections, circuits }
    }

    /// Sets the circuit series to the breakers' current counts.
    pub fn observe_circuits(&self, counts: &[(CircuitState, u64)]) {
        for (state, count) in counts {
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            self.circuits.get_or_create(&CircuitLabels { state: state.as_str() }).set(count);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
