use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use switchboard_connectors::Connections;
use switchboard_core::{Clock, SecretBox};
use switchboard_inbound::{Inbound, InboundConfig};
use switchboard_store::Store;
use switchboard_webhooks::Webhooks;

use crate::lookups::Lookups;
use crate::metrics::Metrics;
use crate::schemas::SchemaCache;
use switchboard_core::rate::KeyedRateLimiter;

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// A request still running after this is answered with a 503 problem.
    pub request_timeout: Duration,
    /// Requests per second allowed per API key; `None` for no limit.
    pub rate_limit_per_key: Option<NonZeroU32>,
    /// Incoming webhooks per second accepted per connection, and per source address.
    pub inbound_per_connection: Option<NonZeroU32>,
    pub inbound_per_source: Option<NonZeroU32>,
    /// Whether this process turns stored incoming webhooks into events; off, it only receives
    /// (and other processes on the same database process).
    pub inbound_processing: bool,
    /// How long a process holds a claimed batch of incoming webhooks; one held by a process
    /// that died is claimed again after this.
    pub inbound_lease: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: Duration::from_secs(30),
            rate_limit_per_key: None,
            inbound_per_connection: NonZeroU32::new(500),
            inbound_per_source: NonZeroU32::new(500),
            inbound_processing: true,
            inbound_lease: Duration::from_secs(60),
        }
    }
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub secrets: Arc<SecretBox>,
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub schemas: SchemaCache,
    pub lookups: Lookups,
    pub limiter: Option<KeyedRateLimiter>,
    pub webhooks: Webhooks,
    pub connections: Connections,
    pub inbound: Inbound,
    /// Set when the process is about to stop: `/readyz` fails and every answer closes its
    /// connection, while requests are still served.
    draining: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// The state around the webhooks and connections services; the webhooks service brings
    /// the store, the clock and the secret box.
    pub fn new(webhooks: Webhooks, connections: Connections, config: ServerConfig) -> Self {
        let limiter = config.rate_limit_per_key.map(KeyedRateLimiter::new);
        let inbound = Inbound::new(
            webhooks.store.clone(),
            webhooks.clock.clone(),
            connections.clone(),
            webhooks.clone(),
            InboundConfig {
                per_connection: config.inbound_per_connection,
                per_source: config.inbound_per_source,
                processing: config.inbound_processing,
                lease: config.inbound_lease,
            },
        );
        Self(Arc::new(Inner {
            store: webhooks.store.clone(),
            clock: webhooks.clock.clone(),
            secrets: webhooks.secrets.clone(),
            metrics: Metrics::new(&webhooks.metrics),
            webhooks,
            connections,
            inbound,
            draining: std::sync::atomic::AtomicBool::new(false),
            schemas: SchemaCache::default(),
            lookups: Lookups::default(),
            limiter,
            config,
        }))
    }

    /// Starts the drain before a stop: load balancers see `/readyz` fail and clients are told
    /// to close their connections, while every request that still arrives is answered.
    pub fn begin_drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
