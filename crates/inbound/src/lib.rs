//! Incoming webhooks: providers' webhooks received at `/webhooks/{connection_id}`, verified,
//! stored before the 2xx, and processed into hub events.
//!
//! - [`verify`]: each provider's signature scheme, on the raw body, constant-time;
//! - [`handshake`]: how providers prove an address (Slack, Zoom, Meta, Dropbox, Microsoft
//!   Graph), answered in their own terms;
//! - [`document`]: what a body says (JSON, forms, batches) where a manifest locates a value;
//! - `receiver`: the receive decision ([`Inbound::admit`], [`Inbound::receive`]): limits,
//!   verification or unsigned acceptance, handshakes, dedupe keys, durable storage;
//! - `processing`: stored webhooks into events, on the store's claim loop, publishing through
//!   the outgoing-webhooks service.
//!
//! The HTTP route in `server` only adapts: it reads the body within the connection's limit,
//! calls [`Inbound::receive`], and turns the [`Receipt`] or [`Refusal`] into an answer and
//! metrics.

pub mod document;
pub mod handshake;
mod processing;
mod receiver;
pub mod verify;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use switchboard_connectors::{Connections, ConnectorError};
use switchboard_core::Clock;
use switchboard_store::{InboundWebhook, Store, StoreError};
use switchboard_webhooks::Webhooks;
use tokio_util::sync::CancellationToken;

pub use receiver::{Admitted, RawWebhook, Receipt, StoredWebhook};

/// How incoming webhooks are received and processed by this process.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// Webhooks per second accepted per connection, and per source address; `None` for no
    /// limit.
    pub per_connection: Option<NonZeroU32>,
    pub per_source: Option<NonZeroU32>,
    /// Whether this process turns stored webhooks into events; off, it only receives (and
    /// other processes on the same database process).
    pub processing: bool,
    /// How long a process holds a claimed batch of webhooks; one held by a process that died
    /// is claimed again after this.
    pub lease: Duration,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            per_connection: NonZeroU32::new(500),
            per_source: NonZeroU32::new(500),
            processing: true,
            lease: Duration::from_secs(60),
        }
    }
}

/// Why a webhook was not taken (or not answered with a receipt).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No webhooks are received at this address: an unknown connection, another tenant's,
    /// or one whose provider sends none. One answer for all, so probing teaches nothing.
    #[error("no webhook receiver at this address")]
    NoReceiver,
    /// The source or the connection sends too fast.
    #[error("too many webhooks; retry in {wait:?}")]
    RateLimited { wait: Duration },
    /// The signature did not verify (or none was sent where one is required); the webhook was
    /// stored with this reason code.
    #[error("the signature could not be verified ({reason})")]
    Rejected { reason: String },
    /// A batch of more items than are taken at once; nothing was stored.
    #[error("the batch holds {items} items; at most {limit} are taken in one request")]
    BatchTooLarge { items: usize, limit: usize },
    /// The provider's manifest cannot be used to receive.
    #[error("the manifest cannot be used to receive: {0}")]
    Misconfigured(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connection(#[from] ConnectorError),
}

/// The incoming-webhooks service. Cheap to clone.
#[derive(Clone)]
pub struct Inbound(Arc<Inner>);

pub struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    connections: Connections,
    webhooks: Webhooks,
    config: InboundConfig,
    limits: receiver::Limits,
    /// Bumped when a webhook is stored or replayed, so processing's claim loop wakes at once.
    ready: tokio::sync::watch::Sender<u64>,
}

impl std::ops::Deref for Inbound {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inbound {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        connections: Connections,
        webhooks: Webhooks,
        config: InboundConfig,
    ) -> Self {
        Self(Arc::new(Inner {
            limits: receiver::Limits::new(config.per_connection, config.per_source),
            store,
            clock,
            connections,
            webhooks,
            config,
            ready: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Starts processing stored webhooks into events, until `stop`; `None` for a process that
    /// only receives.
    pub fn start(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        self.config.processing.then(|| processing::start(self.clone(), stop))
    }

    /// Puts a stored, accepted webhook back in the processing queue. `None` when it cannot be
    /// (it was refused at verification).
    pub async fn replay(&self, tenant_id: &str, id: &str) -> Result<Option<InboundWebhook>, StoreError> {
        let replayed = self.store.replay_inbound(tenant_id, id).await?;
        if replayed.is_some() {
            self.wake_processing();
        }
        Ok(replayed)
    }

    /// Wakes processing in this process; others find the webhook within their idle wait.
    fn wake_processing(&self) {
        self.ready.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Drops the rate-limit state of idle senders (call every minute or so).
    pub fn forget_idle(&self) {
        self.limits.forget_idle();
    }

    /// Distinct source addresses refused for their rate in the last hour, by this process.
    pub fn limited_sources(&self) -> u64 {
        self.limits.limited_sources()
    }

    /// Processing loops in this process.
    pub fn processing_workers(&self) -> u32 {
        u32::from(self.config.processing)
    }
}
