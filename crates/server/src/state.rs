use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use switchboard_connectors::Connections;
use switchboard_core::{Clock, SecretBox};
use switchboard_hub::Hub;
use switchboard_identity::Identity;
use switchboard_inbound::Inbound;
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: Duration::from_secs(30),
            rate_limit_per_key: None,
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
    pub limiter: Option<Arc<KeyedRateLimiter>>,
    pub identity: Identity,
    pub webhooks: Webhooks,
    pub connections: Connections,
    pub inbound: Inbound,
    /// Set when the process is about to stop: `/readyz` fails and every answer closes its
    /// connection, while requests are still served.
    draining: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// The state around the services a [`Hub`] built.
    pub fn new(hub: &Hub, config: ServerConfig) -> Self {
        let limiter = config.rate_limit_per_key.map(|rate| Arc::new(KeyedRateLimiter::new(rate)));
        Self(Arc::new(Inner {
            store: hub.store().clone(),
            clock: hub.clock().clone(),
            secrets: hub.secrets().clone(),
            metrics: Metrics::new(hub.webhooks().metrics()),
            identity: hub.identity().clone(),
            webhooks: hub.webhooks().clone(),
            connections: hub.connections().clone(),
            inbound: hub.inbound().clone(),
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
