//! Incoming webhooks as stored: written (raw body, masked headers, verification result)
//! before the sender gets its 2xx, de-duplicated per connection, then claimed with a lease
//! and processed into hub events.

use std::collections::BTreeMap;

use switchboard_core::{Id, Timestamp};

use crate::{Page, Result};

/// A webhook as received.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    pub id: Id,
    pub tenant_id: Id,
    pub connection_id: Id,
    pub received_at: Timestamp,
    pub source_ip: Option<String>,
    /// A JSON object of the headers, credential-like values masked.
    pub headers: String,
    pub body: Vec<u8>,
    pub verification: Verification,
    pub provider_event_id: Option<String>,
    /// The provider's event id, or a hash of signature and body; a second webhook with the
    /// same key on the same connection is a duplicate.
    pub dedupe_key: String,
}

/// Where a stored webhook stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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

impl InboundStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InboundWebhook {
    pub id: Id,
    pub tenant_id: Id,
    pub connection_id: Id,
    pub received_at: Timestamp,
    pub source_ip: Option<String>,
    pub headers: String,
    pub body: Vec<u8>,
    pub verified: bool,
    pub rejection: Option<String>,
    pub provider_event_id: Option<String>,
    pub duplicates: u32,
    pub status: InboundStatus,
    pub event_type: Option<String>,
    pub event_id: Option<Id>,
    pub attempts: u32,
    pub last_error: Option<String>,
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
    New(Id),
    /// The same webhook arrived before: counted on that record, not stored again.
    Duplicate(Id),
}

/// How processing a webhook ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutcome {
    Processed {
        event_type: String,
        event_id: Id,
    },
    /// `retry`: leave it pending for another attempt; otherwise it is `failed`.
    Failed {
        error: String,
        retry: bool,
    },
}

/// A processed webhook and how its processing ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedInbound {
    pub tenant_id: Id,
    pub id: Id,
    pub outcome: InboundOutcome,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundFilter {
    pub connection_id: Option<String>,
    pub status: Option<InboundStatus>,
}

/// Counts over a tenant's stored webhooks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundCounts {
    pub received: u64,
    pub verified: u64,
    /// Accepted without a signature (connections that accept unsigned webhooks).
    pub unsigned: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub duplicates: u64,
    pub pending: u64,
    pub processed: u64,
    pub failed: u64,
}

#[async_trait::async_trait]
pub trait InboundStore: Send + Sync {
    /// Stores a webhook durably (an accepted one as `pending`, a refused one as `rejected`), or
    /// counts it as a duplicate of the one stored with its dedupe key.
    async fn store_inbound(&self, inbound: NewInbound) -> Result<Stored>;
    /// Leases up to `limit` pending webhooks (of any tenant) until `lease_until`.
    async fn claim_inbound(&self, limit: u32, lease_until: Timestamp, now: Timestamp) -> Result<Vec<InboundWebhook>>;
    /// Records how processing of each webhook ended and releases the leases, in one unit.
    async fn finish_inbound(&self, finished: &[FinishedInbound], now: Timestamp) -> Result<()>;
    async fn get_inbound(&self, tenant_id: &str, id: &str) -> Result<Option<InboundWebhook>>;
    /// Newest first.
    async fn list_inbound(&self, tenant_id: &str, filter: &InboundFilter, page: &Page) -> Result<Vec<InboundWebhook>>;
    /// Puts a stored, accepted webhook back in the queue; `None` when there is none (or it
    /// was rejected).
    async fn replay_inbound(&self, tenant_id: &str, id: &str) -> Result<Option<InboundWebhook>>;
    async fn inbound_counts(&self, tenant_id: &str) -> Result<InboundCounts>;
}
