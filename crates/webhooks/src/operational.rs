//! Operational events: what the hub itself publishes about deliveries, through the same
//! events API, so users subscribe to them like to any other event.

use serde_json::json;
use switchboard_core::{Id, IdKind, Timestamp};
use switchboard_store::{DisabledReason, Message, NewEvent};

pub const MESSAGE_ATTEMPT_EXHAUSTED: &str = "message.attempt.exhausted";
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";
pub const CONNECTION_AUTH_FAILED: &str = "connection.auth_failed";
pub const INBOUND_PROCESSING_FAILED: &str = "inbound.processing_failed";

/// Event types every tenant has without registering them.
pub const OPERATIONAL_EVENT_TYPES: &[&str] =
    &[MESSAGE_ATTEMPT_EXHAUSTED, ENDPOINT_DISABLED, CONNECTION_AUTH_FAILED, INBOUND_PROCESSING_FAILED];

pub fn is_operational(event_type: &str) -> bool {
    OPERATIONAL_EVENT_TYPES.contains(&event_type)
}

fn event(tenant_id: &Id, event_type: &str, payload: serde_json::Value, now: Timestamp) -> NewEvent {
    NewEvent {
        id: Id::new(IdKind::Event),
        tenant_id: tenant_id.clone(),
        event_type: event_type.to_string(),
        payload: payload.to_string(),
        idempotency: None,
        created_at: now,
    }
}

pub fn attempt_exhausted(
    message: &Message,
    event_type: &str,
    last_status: Option<u16>,
    last_error: Option<&str>,
    now: Timestamp,
) -> NewEvent {
    let payload = json!({
        "message_id": message.id,
        "event_id": message.event_id,
        "event_type": event_type,
        "endpoint_id": message.endpoint_id,
        "attempts": message.attempts + 1,
        "last_status_code": last_status,
        "last_error": last_error,
    });
    event(&message.tenant_id, MESSAGE_ATTEMPT_EXHAUSTED, payload, now)
}

pub fn endpoint_disabled(tenant_id: &Id, endpoint_id: &Id, reason: DisabledReason, now: Timestamp) -> NewEvent {
    let payload = json!({ "endpoint_id": endpoint_id, "reason": reason });
    event(tenant_id, ENDPOINT_DISABLED, payload, now)
}

/// A connection whose provider refused its grant for good: calls through it fail until it is
/// connected again.
pub fn connection_auth_failed(
    tenant_id: &Id,
    connection_id: &Id,
    provider: &str,
    reason: &str,
    now: Timestamp,
) -> NewEvent {
    let payload = json!({ "connection_id": connection_id, "provider": provider, "reason": reason });
    event(tenant_id, CONNECTION_AUTH_FAILED, payload, now)
}

/// An incoming webhook that was acknowledged to its provider but could not become an event
/// (its type is not where the manifest says, the connection is gone…): it stays `failed`
/// until it is replayed. One event each time it fails for good (a replay that fails again
/// raises another); attempts that will be retried raise none.
pub fn inbound_processing_failed(
    tenant_id: &Id,
    inbound_id: &Id,
    connection_id: &Id,
    attempt: u32,
    error: &str,
    now: Timestamp,
) -> NewEvent {
    let payload = json!({
        "inbound_id": inbound_id,
        "connection_id": connection_id,
        "attempt": attempt,
        "error": error,
    });
    let mut event = event(tenant_id, INBOUND_PROCESSING_FAILED, payload, now);
    // Published again after a crash between publishing and recording, it is found again.
    event.idempotency = Some(switchboard_store::Idempotency {
        key: format!("inbound-failed:{inbound_id}:{attempt}"),
        request_hash: String::new(),
    });
    event
}
