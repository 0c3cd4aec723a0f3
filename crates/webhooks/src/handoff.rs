//! Messages created in this process go straight to its delivery workers: published already
//! leased to this process, then handed over in memory once committed. No claim (a write
//! unit of its own) is needed for them, and the workers need no wake-up. The lease keeps
//! them safe: if this process dies first, they come due when it runs out and any process
//! claims them, as it would any message.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use switchboard_core::{Id, IdKind, Timestamp};
use switchboard_store::{ClaimedMessage, Endpoint, Event, Message, MessageStatus, NewMessage};
use tokio::sync::mpsc;

use crate::fanout::Subscriber;

/// The events and endpoints of the messages handed over or claimed together.
pub(crate) struct Context {
    pub(crate) events: HashMap<Id, Event>,
    pub(crate) endpoints: HashMap<Id, (Endpoint, bool)>,
}

/// What the delivery workers run: a leased message with its event and endpoint.
pub(crate) type Leased = (ClaimedMessage, Arc<Context>);

/// The way into this process's delivery workers; closed until they start.
#[derive(Default)]
pub(crate) struct Handoff {
    workers: OnceLock<mpsc::Sender<Leased>>,
}

impl Handoff {
    /// Opens the way in for workers that take up to `capacity` messages waiting for a slot.
    pub(crate) fn open(&self, capacity: usize) -> Option<mpsc::Receiver<Leased>> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        self.workers.set(sender).ok().map(|()| receiver)
    }

    /// Leases the messages the workers have room for to this process, until `lease_ends`.
    /// FIFO messages are left to the claim, which alone knows what is pending before them.
    /// When the workers are full, stopped or not started, nothing is leased and the
    /// messages wait for a claim like any other.
    pub(crate) fn lease(&self, messages: &mut [NewMessage], lease_ends: Timestamp) -> Handing<'_> {
        let wanted = messages.iter().filter(|m| !m.fifo).count();
        let permits = match self.workers.get() {
            Some(workers) if wanted > 0 => workers.try_reserve_many(wanted).ok(),
            _ => None,
        };
        let Some(permits) = permits else {
            return Handing { lease: None };
        };
        let lease_id = Id::new(IdKind::Job).to_string();
        let mut leased = Vec::with_capacity(wanted);
        for message in messages.iter_mut().filter(|m| !m.fifo) {
            message.lease_id = Some(lease_id.clone());
            message.next_attempt_at = lease_ends;
            leased.push((message.id.clone(), message.endpoint_id.clone()));
        }
        Handing { lease: Some(Lease { id: lease_id, ends: lease_ends, messages: leased, permits }) }
    }
}

/// Room reserved with the workers for one event's leased messages; dropping it unused (the
/// event was not stored) gives the room back.
pub(crate) struct Handing<'a> {
    lease: Option<Lease<'a>>,
}

struct Lease<'a> {
    id: String,
    ends: Timestamp,
    /// The leased messages' ids and endpoints.
    messages: Vec<(Id, Id)>,
    permits: mpsc::PermitIterator<'a, Leased>,
}

impl Handing<'_> {
    /// Hands the leased messages of the committed `event` to the workers; returns how many.
    pub(crate) fn hand(self, event: &Event, subscribers: &[Subscriber]) -> u64 {
        let Some(Lease { id: lease_id, ends, messages, mut permits }) = self.lease else {
            return 0;
        };
        let handed = messages.len() as u64;
        let wanted: HashSet<&Id> = messages.iter().map(|(_, endpoint_id)| endpoint_id).collect();
        let endpoints = subscribers
            .iter()
            .filter(|s| wanted.contains(&s.endpoint.id))
            .map(|s| (s.endpoint.id.clone(), (s.endpoint.clone(), false)))
            .collect();
        let context = Arc::new(Context { events: HashMap::from([(event.id.clone(), event.clone())]), endpoints });
        for (id, endpoint_id) in messages {
            let Some(permit) = permits.next() else { break };
            let message = Message {
                id,
                tenant_id: event.tenant_id.clone(),
                event_id: event.id.clone(),
                endpoint_id,
                status: MessageStatus::Pending,
                fifo: false,
                attempts: 0,
                retry_index: 0,
                next_attempt_at: Some(ends),
                last_status_code: None,
                last_error: None,
                created_at: event.created_at,
                updated_at: event.created_at,
            };
            permit.send((ClaimedMessage { message, lease_id: lease_id.clone() }, context.clone()));
        }
        handed
    }
}
