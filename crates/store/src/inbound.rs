//! Incoming webhooks as stored: written (raw body, masked headers, verification result)
//! before the sender gets its 2xx, de-duplicated per connection, then claimed with a lease
//! and processed into hub events.

use std::collections::BTreeMap;

use switchboard_core::{Id, Timestamp};

use crate::{Page, Result};

/// A webhook as received.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    /// `inb_…`, the id it is stored under if it is new.
    pub id: Id,
    /// The tenant that owns the connection.
    pub tenant_id: Id,
    /// `conn_…`, the connection whose webhook URL received it.
    pub connection_id: Id,
    /// When the receiver got it.
    pub received_at: Timestamp,
    /// The sender's address, when known.
    pub source_ip: Option<String>,
    /// A JSON object of the headers, credential-like values masked.
    pub headers: String,
    /// The raw body, byte for byte.
    pub body: Vec<u8>,
    /// What the receiver concluded: an accepted webhook is stored `pending`, a refused one
    /// `rejected`.
    pub verification: Verification,
    /// The provider's own id for the event, when the webhook carries one.
    pub provider_event_id: Option<String>,
    /// The provider's event id, or a hash of signature and body; a second webhook with the
    /// same key on the same connection is a duplicate.
    pub dedupe_key: String,
}

closed_set! {
    /// Where a stored webhook stands.
    pub enum InboundStatus {
        /// Accepted, waiting to be processed (or being processed, or to be retried).
        Pending,
        /// Became a hub event.
        Processed,
        /// Could not become an event; waits for a replay.
        Failed,
        /// Refused at verification; kept for inspection, never processed.
        Rejected,
    }
}

/// A stored incoming webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundWebhook {
    /// `inb_…`, the webhook's id.
    pub id: Id,
    /// The tenant that owns the connection; every tenant-scoped method filters on it.
    pub tenant_id: Id,
    /// `conn_…`, the connection whose webhook URL received it.
    pub connection_id: Id,
    /// When the receiver got it.
    pub received_at: Timestamp,
    /// The sender's address, when known.
    pub source_ip: Option<String>,
    /// A JSON object of the headers, credential-like values masked.
    pub headers: String,
    /// The raw body, byte for byte.
    pub body: Vec<u8>,
    /// The signature verified; false for unsigned and rejected webhooks.
    pub verified: bool,
    /// The reason code it was refused with; `None` when accepted.
    pub rejection: Option<String>,
    /// The provider's own id for the event, when the webhook carried one.
    pub provider_event_id: Option<String>,
    /// Later deliveries of the same webhook (same dedupe key), counted here, not stored.
    pub duplicates: u32,
    /// Where it stands.
    pub status: InboundStatus,
    /// The hub event type it became; `None` until processed.
    pub event_type: Option<String>,
    /// `evt_…`, the hub event it became; `None` until processed.
    pub event_id: Option<Id>,
    /// How many times it has been claimed for processing.
    pub attempts: u32,
    /// Why the last processing failed; `None` after a success or a replay.
    pub last_error: Option<String>,
    /// When processing last ended (processed, or failed for good); `None` until then.
    pub processed_at: Option<Timestamp>,
}

/// What the receiver concluded about a webhook's authenticity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The signature verified: processed.
    Verified,
    /// No secret is set and the connection accepts unsigned webhooks: processed.
    Unsigned,
    /// Refused, with the reason code: kept for inspection, never processed.
    Rejected(String),
}

impl Verification {
    /// Whether the webhook goes on to processing.
    pub fn is_accepted(&self) -> bool {
        !matches!(self, Verification::Rejected(_))
    }

    /// `verified`, `unsigned` or `rejected`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verification::Verified => "verified",
            Verification::Unsigned => "unsigned",
            Verification::Rejected(_) => "rejected",
        }
    }
}

impl InboundWebhook {
    /// What the receiver concluded, rebuilt from `verified` and `rejection`.
    pub fn verification(&self) -> Verification {
        match (&self.rejection, self.verified) {
            (Some(reason), _) => Verification::Rejected(reason.clone()),
            (None, true) => Verification::Verified,
            (None, false) => Verification::Unsigned,
        }
    }
}

/// What storing a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored as a new webhook under this id.
    New(Id),
    /// The same webhook arrived before: counted on that record, not stored again.
    Duplicate(Id),
}

/// How processing a webhook ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutcome {
    /// It became a hub event.
    Processed {
        /// The hub event type it became.
        event_type: String,
        /// `evt_…`, the hub event it became.
        event_id: Id,
    },
    /// `retry`: leave it pending for another attempt; otherwise it is `failed`.
    Failed {
        /// Why processing failed, kept as the webhook's `last_error`.
        error: String,
        /// Leave it pending for another attempt instead of marking it `failed`.
        retry: bool,
    },
}

/// A processed webhook and how its processing ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedInbound {
    /// The webhook's tenant; the update matches on it.
    pub tenant_id: Id,
    /// `inb_…`, the webhook's id.
    pub id: Id,
    /// How its processing ended.
    pub outcome: InboundOutcome,
}

/// Narrows [`InboundStore::list_inbound`]; fields left `None` match every webhook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundFilter {
    /// Only the webhooks of this connection (`conn_…`).
    pub connection_id: Option<String>,
    /// Only the webhooks with this status.
    pub status: Option<InboundStatus>,
}

/// Counts over a tenant's stored webhooks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundCounts {
    /// Every stored webhook, rejected ones included (duplicates are not stored).
    pub received: u64,
    /// Accepted with a verified signature.
    pub verified: u64,
    /// Accepted without a signature (connections that accept unsigned webhooks).
    pub unsigned: u64,
    /// Refused at verification, per reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Later deliveries counted on a stored webhook instead of stored.
    pub duplicates: u64,
    /// Accepted and waiting to be processed (or retried).
    pub pending: u64,
    /// Accepted and turned into hub events.
    pub processed: u64,
    /// Accepted but failed for good, until replayed.
    pub failed: u64,
}

/// Incoming webhooks: storing, claiming, finishing, inspecting and replaying them.
#[async_trait::async_trait]
pub trait InboundStore: Send + Sync {
    /// Stores a webhook durably (an accepted one as `pending`, a refused one as `rejected`), or
    /// counts it as a duplicate of the one stored with its dedupe key.
    async fn store_inbound(&self, inbound: NewInbound) -> Result<Stored>;
    /// Leases up to `limit` pending webhooks (of any tenant) until `lease_until`.
    async fn claim_inbound(&self, limit: u32, lease_until: Timestamp, now: Timestamp) -> Result<Vec<InboundWebhook>>;
    /// Whether a claim at `now` would find a webhook: a read, so a loop looking for work need
    /// not write to find none.
    async fn inbound_claimable(&self, now: Timestamp) -> Result<bool>;
    /// Records how processing of each webhook ended and releases the leases, in one unit.
    async fn finish_inbound(&self, finished: &[FinishedInbound], now: Timestamp) -> Result<()>;
    /// `None` when the webhook is not in the tenant.
    async fn get_inbound(&self, tenant_id: &str, id: &str) -> Result<Option<InboundWebhook>>;
    /// Newest first.
    async fn list_inbound(&self, tenant_id: &str, filter: &InboundFilter, page: &Page) -> Result<Vec<InboundWebhook>>;
    /// Puts a stored, accepted webhook back in the queue; `None` when there is none (or it
    /// was rejected).
    async fn replay_inbound(&self, tenant_id: &str, id: &str) -> Result<Option<InboundWebhook>>;
    /// Counts over every webhook the tenant has stored.
    async fn inbound_counts(&self, tenant_id: &str) -> Result<InboundCounts>;
}
