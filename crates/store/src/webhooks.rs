//! Outgoing webhooks as stored: endpoints, messages (which are their own delivery queue) and
//! attempts, with the traits the store implements for them.

use std::collections::BTreeMap;

use switchboard_core::{Id, Timestamp};

use crate::{Event, NewEvent, Page, Result, StoredSecret};

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: Id,
    pub tenant_id: Id,
    pub url: String,
    pub description: String,
    /// Exact names and `prefix.*` patterns; empty means every event type.
    pub event_types: Vec<String>,
    pub filter: Option<String>,
    pub transform: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub rate_limit_per_second: Option<u32>,
    pub enabled: bool,
    /// Why the endpoint is disabled.
    pub disabled_reason: Option<DisabledReason>,
    pub fifo: bool,
    /// A JSON object, kept as text.
    pub metadata: String,
    pub secret_id: Id,
    pub previous_secret_id: Option<Id>,
    pub previous_secret_expires_at: Option<Timestamp>,
    /// The first failure since the last success; `None` while healthy.
    pub failing_since: Option<Timestamp>,
    /// Bumped on every change.
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Fields left `None` are unchanged; `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub filter: Option<Option<String>>,
    pub transform: Option<Option<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub rate_limit_per_second: Option<Option<u32>>,
    /// Enabling clears `disabled_reason` and `failing_since`; disabling gives the reason
    /// `manual`.
    pub enabled: Option<bool>,
    pub fifo: Option<bool>,
    pub metadata: Option<String>,
    pub updated_at: Option<Timestamp>,
}

/// Why an attempt failed before the endpoint answered (or its answer could be made).
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
pub enum AttemptErrorKind {
    /// The endpoint's URL is not one that can be called.
    InvalidUrl,
    /// The URL's address is refused by the SSRF guard (loopback, private, metadata…).
    ForbiddenAddress,
    DnsError,
    Timeout,
    ConnectionError,
    /// Anything else on the way: TLS, a broken response.
    RequestError,
    /// The endpoint's jq transform failed on the event.
    TransformError,
}

impl AttemptErrorKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why an endpoint is disabled.
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
pub enum DisabledReason {
    /// Someone disabled it.
    Manual,
    /// It answered 410 Gone.
    Gone,
    /// Every delivery failed for longer than the failing period (5 days unless configured).
    Failing,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a message (one event for one endpoint) stands.
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
pub enum MessageStatus {
    /// Waiting for its first or next attempt (or being attempted right now).
    Pending,
    Succeeded,
    /// Every attempt failed, or the endpoint went away: the dead letter.
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One event for one endpoint, created by fan-out in the same unit as the event.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Id,
    pub endpoint_id: Id,
    pub fifo: bool,
    pub next_attempt_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Id,
    pub tenant_id: Id,
    pub event_id: Id,
    pub endpoint_id: Id,
    pub status: MessageStatus,
    pub fifo: bool,
    pub attempts: i64,
    pub retry_index: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A message leased to a delivery worker, with what it needs to deliver it.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub message: Message,
    pub lease_id: String,
}

/// What a claim hands a delivery worker: the leased messages, their events and their
/// endpoints (across tenants; with whether each endpoint was deleted).
#[derive(Debug, Clone, Default)]
pub struct ClaimedBatch {
    pub messages: Vec<ClaimedMessage>,
    pub events: Vec<Event>,
    pub endpoints: Vec<(Endpoint, bool)>,
}

#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: Id,
    pub response_status: Option<u16>,
    /// JSON object text.
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub error_kind: Option<AttemptErrorKind>,
    pub error: Option<String>,
    pub duration_us: i64,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: Id,
    pub tenant_id: Id,
    pub message_id: Id,
    pub endpoint_id: Id,
    pub attempt_number: i64,
    pub succeeded: bool,
    pub response_status: Option<i64>,
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub error_kind: Option<AttemptErrorKind>,
    pub error: Option<String>,
    pub duration_us: i64,
    pub created_at: Timestamp,
}

/// What happens to a message after an attempt (or a decision not to attempt it).
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Succeeded,
    /// Try again at this time; `advance` moves to the next step of the retry schedule (a
    /// postponement by the endpoint's rate limit does not).
    RetryAt {
        at: Timestamp,
        advance: bool,
    },
    Failed,
}

/// The endpoint-level consequence of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointHealth {
    /// No change (the attempt was not made).
    Unchanged,
    /// A success: the failure clock stops.
    Succeeded,
    /// A failure: the failure clock starts unless it runs already.
    Failed,
    /// The endpoint asked never to be called again (410 Gone).
    Gone,
}

/// The outcome of handling one claimed message, recorded in one unit with others.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub tenant_id: Id,
    pub message_id: Id,
    pub endpoint_id: Id,
    pub lease_id: String,
    pub attempt: Option<NewAttempt>,
    pub next: NextStep,
    pub health: EndpointHealth,
    pub error: Option<String>,
    pub at: Timestamp,
}

/// An event to store with its fan-out, e.g. an operational event a delivery caused.
#[derive(Debug, Clone)]
pub struct EventWithMessages {
    pub event: NewEvent,
    pub messages: Vec<NewMessage>,
}

/// What recording a batch of deliveries changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedDeliveries {
    /// Per record, in order: false when the lease was lost and nothing was recorded for it.
    pub recorded: Vec<bool>,
    /// Endpoints this batch disabled (410 Gone, or failing for longer than allowed), as
    /// (tenant id, endpoint id, reason).
    pub disabled: Vec<(Id, Id, DisabledReason)>,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub page: Page,
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<MessageStatus>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub page: Page,
    pub endpoint_id: Option<String>,
    pub message_id: Option<String>,
    /// Attempts of the messages of this event.
    pub event_id: Option<String>,
    pub succeeded: Option<bool>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

/// Recent delivery figures of one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptSample {
    pub succeeded: bool,
    pub duration_us: i64,
    pub error: Option<String>,
    pub created_at: Timestamp,
}

/// What one pass of the retention job removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub messages: u64,
    pub attempts: u64,
}

/// Endpoints and their secrets.
#[async_trait::async_trait]
pub trait EndpointStore: Send + Sync {
    /// Stores the endpoint and its sealed signing secret in one unit.
    async fn create_endpoint(&self, endpoint: &Endpoint, secret: &StoredSecret) -> Result<Endpoint>;
    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>>;
    async fn list_endpoints(&self, tenant_id: &str, page: &Page) -> Result<Vec<Endpoint>>;
    /// The enabled endpoints of a tenant: the candidates of fan-out.
    async fn enabled_endpoints(&self, tenant_id: &str) -> Result<Vec<Endpoint>>;
    async fn update_endpoint(&self, tenant_id: &str, id: &str, patch: &EndpointPatch) -> Result<Option<Endpoint>>;
    /// Marks the endpoint deleted and drops its secrets; its pending messages fail when next
    /// claimed. False when there was no such endpoint.
    async fn delete_endpoint(&self, tenant_id: &str, id: &str, at: Timestamp) -> Result<bool>;
    /// Makes `secret` the signing secret; the current one keeps signing until
    /// `previous_expires_at`. An older previous secret is dropped.
    async fn rotate_endpoint_secret(
        &self,
        tenant_id: &str,
        id: &str,
        secret: &StoredSecret,
        previous_expires_at: Timestamp,
    ) -> Result<Option<Endpoint>>;
}

/// Messages (the delivery queue) and attempts: claiming, recording, inspecting, resending,
/// pruning.
#[async_trait::async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Leases up to `limit` due messages until `now + lease`, with their events and
    /// endpoints. A FIFO message is due only when no earlier message of its endpoint is
    /// pending.
    async fn claim_messages(&self, limit: u32, now: Timestamp, lease: chrono::Duration) -> Result<ClaimedBatch>;
    /// When the next pending message comes due.
    async fn next_message_due(&self) -> Result<Option<Timestamp>>;
    /// Records attempts and moves messages on in one unit, with the operational events they
    /// cause. Endpoints that answered 410, or have failed since before `disable_failing_before`,
    /// are disabled, and an [`crate::outbox::OperationalEvent::EndpointDisabled`] enqueued for each.
    async fn record_deliveries(
        &self,
        records: &[DeliveryRecord],
        events: &[EventWithMessages],
        disable_failing_before: Timestamp,
    ) -> Result<RecordedDeliveries>;

    async fn get_message(&self, tenant_id: &str, id: &str) -> Result<Option<Message>>;
    async fn list_messages(&self, tenant_id: &str, filter: &MessageFilter) -> Result<Vec<Message>>;
    async fn list_attempts(&self, tenant_id: &str, filter: &AttemptFilter) -> Result<Vec<Attempt>>;
    /// Adds messages of a stored event for the endpoints among `messages` that have none of it
    /// yet (those subscribed since it was published), in one unit; returns how many were
    /// added. Nothing is added for an event that does not exist.
    async fn add_missing_messages(
        &self,
        tenant_id: &str,
        event_id: &str,
        messages: &[NewMessage],
        now: Timestamp,
    ) -> Result<u64>;
    /// Queues a message for a new attempt now, with a fresh retry schedule. None when there
    /// is no such message; a pending message is left as it is.
    async fn resend_message(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<Option<Message>>;
    /// Resends up to `limit` failed messages of an endpoint created at or after `since`.
    /// Returns how many; call again until it returns fewer than `limit`.
    async fn recover_messages(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        since: Timestamp,
        now: Timestamp,
        limit: u32,
    ) -> Result<u64>;
    /// The latest attempts of an endpoint, newest first, for statistics.
    async fn recent_attempts(&self, tenant_id: &str, endpoint_id: &str, limit: u32) -> Result<Vec<AttemptSample>>;
    /// Counts of an endpoint's messages by status.
    async fn message_counts(&self, tenant_id: &str, endpoint_id: &str) -> Result<BTreeMap<String, u64>>;

    /// Deletes up to `limit` rows of each kind older than `before`: attempts, finished
    /// messages, and events none of whose messages is pending. "Older" is read from the ids,
    /// which carry their creation time (an index range, not a scan); ids are minted from the
    /// system clock, so `before` must come from it too.
    async fn prune(&self, before: Timestamp, limit: u32) -> Result<Pruned>;
}
