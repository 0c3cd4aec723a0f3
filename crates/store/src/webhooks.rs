//! Outgoing webhooks as stored: endpoints, messages (which are their own delivery queue) and
//! attempts, with the traits the store implements for them.

use std::collections::BTreeMap;

use switchboard_core::{Id, Timestamp};

use crate::{Event, NewEvent, Page, Result, StoredSecret};

/// A subscription: where a tenant's events are delivered, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `ep_…`, the endpoint's id.
    pub id: Id,
    /// The owning tenant; every tenant-scoped method filters on it.
    pub tenant_id: Id,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text; may be empty.
    pub description: String,
    /// Exact names and `prefix.*` patterns; empty means every event type.
    pub event_types: Vec<String>,
    /// A jq program over `{id, type, timestamp, data}` that must yield `true` for the endpoint
    /// to get the event; `None` lets every subscribed event through.
    pub filter: Option<String>,
    /// A jq program over the same document whose result is sent as the body; `None` sends the
    /// standard body.
    pub transform: Option<String>,
    /// Static headers added to every delivery request.
    pub headers: BTreeMap<String, String>,
    /// At most this many deliveries per second; `None` for no limit.
    pub rate_limit_per_second: Option<u32>,
    /// A disabled endpoint gets no new messages, and its pending ones fail when claimed.
    pub enabled: bool,
    /// Why the endpoint is disabled.
    pub disabled_reason: Option<DisabledReason>,
    /// Deliver in event order: a message waits while an earlier one of the endpoint is pending.
    pub fifo: bool,
    /// A JSON object, kept as text.
    pub metadata: String,
    /// `sec_…`, the sealed signing secret.
    pub secret_id: Id,
    /// The secret the last rotation replaced, still signing until
    /// `previous_secret_expires_at`; `None` when there is none.
    pub previous_secret_id: Option<Id>,
    /// When the previous secret stops signing.
    pub previous_secret_expires_at: Option<Timestamp>,
    /// The first failure since the last success; `None` while healthy.
    pub failing_since: Option<Timestamp>,
    /// Bumped on every change.
    pub version: i64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// Fields left `None` are unchanged; `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// A new delivery URL.
    pub url: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// Replaces the subscribed names and patterns.
    pub event_types: Option<Vec<String>>,
    /// `Some(Some(_))` replaces the filter, `Some(None)` removes it.
    pub filter: Option<Option<String>>,
    /// `Some(Some(_))` replaces the transform, `Some(None)` removes it.
    pub transform: Option<Option<String>>,
    /// Replaces every static header.
    pub headers: Option<BTreeMap<String, String>>,
    /// `Some(Some(_))` sets the limit, `Some(None)` removes it.
    pub rate_limit_per_second: Option<Option<u32>>,
    /// Enabling clears `disabled_reason` and `failing_since`; disabling gives the reason
    /// `manual`.
    pub enabled: Option<bool>,
    /// Turns ordered delivery on or off.
    pub fifo: Option<bool>,
    /// Replaces the metadata (a JSON object, as text).
    pub metadata: Option<String>,
    /// The new `updated_at`; `None` keeps the old one (the version is bumped either way).
    pub updated_at: Option<Timestamp>,
}

closed_set! {
    /// Why an attempt failed before the endpoint answered (or its answer could be made).
    pub enum AttemptErrorKind {
        /// The endpoint's URL is not one that can be called.
        InvalidUrl,
        /// The URL's address is refused by the SSRF guard (loopback, private, metadata…).
        ForbiddenAddress,
        /// The host name did not resolve.
        DnsError,
        /// No complete answer within the request timeout.
        Timeout,
        /// The connection could not be made, or broke before an answer.
        ConnectionError,
        /// Anything else on the way: TLS, a broken response.
        RequestError,
        /// The endpoint's jq transform failed on the event.
        TransformError,
    }
}

closed_set! {
    /// Why an endpoint is disabled.
    pub enum DisabledReason {
        /// Someone disabled it.
        Manual,
        /// It answered 410 Gone.
        Gone,
        /// Every delivery failed for longer than the failing period (5 days unless configured).
        Failing,
    }
}

closed_set! {
    /// Where a message (one event for one endpoint) stands.
    pub enum MessageStatus {
        /// Waiting for its first or next attempt (or being attempted right now).
        Pending,
        /// An attempt was answered with a 2xx: delivered.
        Succeeded,
        /// Every attempt failed, or the endpoint went away: the dead letter.
        Failed,
    }
}

/// One event for one endpoint, created by fan-out in the same unit as the event.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// `msg_…`, the new message's id.
    pub id: Id,
    /// `ep_…`, the endpoint it is delivered to.
    pub endpoint_id: Id,
    /// The endpoint's `fifo`: the message waits for earlier ones of its endpoint.
    pub fifo: bool,
    /// When its first attempt is due; with a `lease_id`, when that lease ends.
    pub next_attempt_at: Timestamp,
    /// Set when the process creating the message hands it to its own delivery workers
    /// instead of waiting for a claim: the message is stored already leased until
    /// `next_attempt_at`, so no claim takes it before then, and a crash only delays it until
    /// the lease runs out.
    pub lease_id: Option<String>,
}

/// One event for one endpoint, as stored: also its entry in the delivery queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `msg_…`, the message's id.
    pub id: Id,
    /// The owning tenant; every tenant-scoped method filters on it.
    pub tenant_id: Id,
    /// `evt_…`, the event delivered.
    pub event_id: Id,
    /// `ep_…`, the endpoint it is delivered to.
    pub endpoint_id: Id,
    /// Where it stands.
    pub status: MessageStatus,
    /// Waits while an earlier message of its endpoint is pending.
    pub fifo: bool,
    /// Attempts made, ever (a resend does not reset it).
    pub attempts: i64,
    /// Its position in the retry schedule; a resend resets it to 0.
    pub retry_index: i64,
    /// When it is next due (the lease's end while claimed); `None` once it succeeded or failed.
    pub next_attempt_at: Option<Timestamp>,
    /// The HTTP status of the latest attempt; `None` when that attempt got no answer.
    pub last_status_code: Option<i64>,
    /// Why the latest attempt failed, or why none was made (`endpoint_disabled`, …);
    /// `None` after a success.
    pub last_error: Option<String>,
    /// When it was created: with its event, or later when added for a new endpoint.
    pub created_at: Timestamp,
    /// When an outcome or a resend last changed it.
    pub updated_at: Timestamp,
}

/// A message leased to a delivery worker, with what it needs to deliver it.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    /// The message as claimed.
    pub message: Message,
    /// The lease to record its outcome under; once lost, the outcome is not recorded.
    pub lease_id: String,
}

/// What a claim hands a delivery worker: the leased messages, their events and their
/// endpoints (across tenants; with whether each endpoint was deleted).
#[derive(Debug, Clone, Default)]
pub struct ClaimedBatch {
    /// The leased messages, in id order.
    pub messages: Vec<ClaimedMessage>,
    /// Their events, each once.
    pub events: Vec<Event>,
    /// Their endpoints, each once, with whether it was deleted.
    pub endpoints: Vec<(Endpoint, bool)>,
}

/// An attempt to record with its message's outcome (see [`DeliveryRecord`]).
#[derive(Debug, Clone)]
pub struct NewAttempt {
    /// `atmpt_…`, the attempt's id.
    pub id: Id,
    /// The HTTP status; `None` when no answer came.
    pub response_status: Option<u16>,
    /// JSON object text.
    pub response_headers: Option<String>,
    /// The start of the response body (at most 4 KiB); `None` without an answer.
    pub response_body: Option<String>,
    /// Why no answer came (or none could be sent); `None` when the endpoint answered.
    pub error_kind: Option<AttemptErrorKind>,
    /// What went wrong (`HTTP 500`, a transport error); `None` on success.
    pub error: Option<String>,
    /// How long the request took, in microseconds.
    pub duration_us: i64,
    /// When the attempt was made.
    pub created_at: Timestamp,
}

/// A delivery attempt, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// `atmpt_…`, the attempt's id.
    pub id: Id,
    /// The owning tenant; every query filters on it.
    pub tenant_id: Id,
    /// `msg_…`, the message attempted.
    pub message_id: Id,
    /// `ep_…`, the endpoint called.
    pub endpoint_id: Id,
    /// 1 for the message's first attempt; counts every attempt ever made of it.
    pub attempt_number: i64,
    /// Whether this attempt delivered the message.
    pub succeeded: bool,
    /// The HTTP status; `None` when no answer came.
    pub response_status: Option<i64>,
    /// A few of the response's headers (`content-type`, `retry-after`, …) as a JSON object.
    pub response_headers: Option<String>,
    /// The start of the response body (at most 4 KiB); `None` without an answer.
    pub response_body: Option<String>,
    /// Why no answer came (or none could be sent); `None` when the endpoint answered.
    pub error_kind: Option<AttemptErrorKind>,
    /// What went wrong (`HTTP 500`, a transport error); `None` on success.
    pub error: Option<String>,
    /// How long the request took, in microseconds.
    pub duration_us: i64,
    /// When the attempt was made.
    pub created_at: Timestamp,
}

/// What happens to a message after an attempt (or a decision not to attempt it).
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// Delivered: the message is done.
    Succeeded,
    /// Try again at this time; `advance` moves to the next step of the retry schedule (a
    /// postponement by the endpoint's rate limit does not).
    RetryAt {
        /// When it is due again.
        at: Timestamp,
        /// Whether this uses up a step of the retry schedule.
        advance: bool,
    },
    /// Give up: the message fails (a resend or a recovery can revive it).
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
    /// The message's tenant.
    pub tenant_id: Id,
    /// `msg_…`, the message handled.
    pub message_id: Id,
    /// `ep_…`, the message's endpoint, whose health `health` updates.
    pub endpoint_id: Id,
    /// The lease it was claimed with; if the message no longer carries it, nothing is recorded.
    pub lease_id: String,
    /// The attempt made, if one was.
    pub attempt: Option<NewAttempt>,
    /// Where the message goes next.
    pub next: NextStep,
    /// What the attempt says about the endpoint.
    pub health: EndpointHealth,
    /// The message's new `last_error`: why the attempt failed, or why none was made. With an
    /// attempt it replaces the old one even when `None`.
    pub error: Option<String>,
    /// When the outcome was decided; the message's new `updated_at`.
    pub at: Timestamp,
}

/// An event to store with its fan-out, e.g. an operational event a delivery caused.
#[derive(Debug, Clone)]
pub struct EventWithMessages {
    /// The event to store.
    pub event: NewEvent,
    /// Its fan-out: one message per endpoint that gets it.
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

/// Narrows [`DeliveryStore::list_messages`]; fields left `None` match every message.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Which page of the results.
    pub page: Page,
    /// Only the messages to this endpoint (`ep_…`).
    pub endpoint_id: Option<String>,
    /// Only the messages of this event (`evt_…`).
    pub event_id: Option<String>,
    /// Only the messages with this status.
    pub status: Option<MessageStatus>,
    /// Only messages created strictly after this.
    pub created_after: Option<Timestamp>,
    /// Only messages created strictly before this.
    pub created_before: Option<Timestamp>,
}

/// Narrows [`DeliveryStore::list_attempts`]; fields left `None` match every attempt.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    /// Which page of the results.
    pub page: Page,
    /// Only the attempts on this endpoint (`ep_…`).
    pub endpoint_id: Option<String>,
    /// Only the attempts of this message (`msg_…`).
    pub message_id: Option<String>,
    /// Attempts of the messages of this event.
    pub event_id: Option<String>,
    /// Only successful (`true`) or failed (`false`) attempts.
    pub succeeded: Option<bool>,
    /// Only attempts made strictly after this.
    pub created_after: Option<Timestamp>,
    /// Only attempts made strictly before this.
    pub created_before: Option<Timestamp>,
}

/// Recent delivery figures of one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptSample {
    /// Whether the attempt delivered its message.
    pub succeeded: bool,
    /// How long the request took, in microseconds.
    pub duration_us: i64,
    /// The attempt's error, or its error kind when it has no text; `None` on success.
    pub error: Option<String>,
    /// When the attempt was made.
    pub created_at: Timestamp,
}

/// What one pass of the retention job removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted.
    pub events: u64,
    /// Finished messages deleted.
    pub messages: u64,
    /// Attempts deleted.
    pub attempts: u64,
}

/// Endpoints and their secrets.
#[async_trait::async_trait]
pub trait EndpointStore: Send + Sync {
    /// Stores the endpoint and its sealed signing secret in one unit.
    async fn create_endpoint(&self, endpoint: &Endpoint, secret: &StoredSecret) -> Result<Endpoint>;
    /// `None` when the endpoint is not in the tenant or was deleted.
    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>>;
    /// The tenant's endpoints, deleted ones left out, newest first.
    async fn list_endpoints(&self, tenant_id: &str, page: &Page) -> Result<Vec<Endpoint>>;
    /// The enabled endpoints of a tenant: the candidates of fan-out.
    async fn enabled_endpoints(&self, tenant_id: &str) -> Result<Vec<Endpoint>>;
    /// Applies the patch and bumps the version; `None` when the tenant has no such endpoint
    /// (or it was deleted).
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
    /// How many of the tenant's pending messages are due at `now` and not leased, counting
    /// no further than `cap` (so a deep backlog costs no more to count than `cap` rows).
    async fn count_due_messages(&self, tenant_id: &str, now: Timestamp, cap: u64) -> Result<u64>;
    /// Records attempts and moves messages on in one unit, with the operational events they
    /// cause. Endpoints that answered 410, or have failed since before `disable_failing_before`,
    /// are disabled, and an [`crate::outbox::OperationalEvent::EndpointDisabled`] enqueued for each.
    async fn record_deliveries(
        &self,
        records: &[DeliveryRecord],
        events: &[EventWithMessages],
        disable_failing_before: Timestamp,
    ) -> Result<RecordedDeliveries>;

    /// `None` when the message is not in the tenant.
    async fn get_message(&self, tenant_id: &str, id: &str) -> Result<Option<Message>>;
    /// The tenant's messages that match the filter, newest first.
    async fn list_messages(&self, tenant_id: &str, filter: &MessageFilter) -> Result<Vec<Message>>;
    /// The tenant's attempts that match the filter, newest first.
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
