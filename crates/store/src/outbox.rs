//! The outbox: what one service asks another to do, enqueued on the durable job queue in the
//! same unit as the row that causes it, and done by a worker afterwards. A crash after the
//! row is written cannot lose the request, and a slow consumer cannot make it drop.

use serde::{Deserialize, Serialize};
use switchboard_core::{Id, IdKind, Timestamp};

use crate::NewJob;

/// The queue of [`OperationalEvent`]s, which the hub publishes as hub events.
pub const OPERATIONAL_EVENTS_QUEUE: &str = "operational-events";

/// An operational event raised where it cannot be published at once (by the connections
/// runtime, or inside the store's own unit), to be published by the outgoing-webhooks
/// service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OperationalEvent {
    /// `connection.auth_failed`: the provider refused the connection's grant for good.
    ConnectionAuthFailed {
        /// `conn_…`, the connection whose grant was refused.
        connection_id: Id,
        /// The connection's provider (the manifest's name).
        provider: String,
        /// Why the token endpoint refused it (e.g. `invalid_grant`).
        reason: String,
        /// When the refresh was refused.
        at: Timestamp,
    },
    /// `endpoint.disabled`: deliveries stopped (410 Gone, or failing for too long).
    EndpointDisabled {
        /// `ep_…`, the endpoint that was disabled.
        endpoint_id: Id,
        /// Why it was disabled: `gone` or `failing`.
        reason: crate::DisabledReason,
        /// When it was disabled.
        at: Timestamp,
    },
}

impl OperationalEvent {
    /// The job that publishes this event for `tenant_id`, due at `now`.
    pub fn to_job(&self, tenant_id: &Id, now: Timestamp) -> NewJob {
        NewJob {
            id: Id::new(IdKind::Job),
            tenant_id: tenant_id.clone(),
            queue: OPERATIONAL_EVENTS_QUEUE.to_string(),
            payload: serde_json::to_string(self).expect("operational events serialise"),
            run_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_carries_its_event_as_json() {
        let now = switchboard_core::from_micros(1_760_000_000_000_000);
        let event = OperationalEvent::ConnectionAuthFailed {
            connection_id: Id::new(IdKind::Connection),
            provider: "github".into(),
            reason: "invalid_grant".into(),
            at: now,
        };
        let tenant = Id::new(IdKind::Tenant);
        let job = event.to_job(&tenant, now);
        assert_eq!((job.queue.as_str(), &job.tenant_id, job.run_at), (OPERATIONAL_EVENTS_QUEUE, &tenant, now));
        assert!(job.payload.contains(r#""kind":"connection_auth_failed""#), "{}", job.payload);
        assert_eq!(serde_json::from_str::<OperationalEvent>(&job.payload).unwrap(), event);
    }
}
