//! The delivery workers: claim due messages in batches (with their events and endpoints),
//! attempt each concurrently, and record the outcomes in batches (one store unit for many
//! deliveries).

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{Id, Timestamp};
use switchboard_store::queue::{ClaimLimits, Feed, claim_loop};
use switchboard_store::{
    AttemptErrorKind, ClaimedMessage, DeliveryRecord, EndpointHealth, EventWithMessages, NewEvent, NextStep,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::delivery::{self, Verdict};
use crate::handoff::{Context, Leased};
use crate::limiter::Slot;
use crate::{Webhooks, endpoint_slots, operational};

/// The most messages claimed in one unit.
const CLAIM_BATCH: u32 = 256;
/// The most outcomes recorded in one unit.
const RECORD_BATCH: usize = 512;

struct Outcome {
    record: DeliveryRecord,
    event: Option<NewEvent>,
}

/// Runs until `shutdown`, then finishes the deliveries in hand and records them.
pub(crate) async fn run(service: Webhooks, shutdown: CancellationToken) {
    let (outcomes, received) = mpsc::channel::<Outcome>(RECORD_BATCH * 4);
    let recorder = tokio::spawn(record_outcomes(service.clone(), received));
    let limits = ClaimLimits { concurrency: service.config.concurrency, max_idle_wait: Duration::from_secs(30) };
    let claim = |free: u32| {
        let service = service.clone();
        async move {
            let now = service.clock.now();
            let batch = service.store.claim_messages(free.min(CLAIM_BATCH), now, service.lease()).await?;
            service.metrics.claimed.inc_by(batch.messages.len() as u64);
            let context = Arc::new(Context {
                events: batch.events.into_iter().map(|e| (e.id.clone(), e)).collect(),
                endpoints: batch.endpoints.into_iter().map(|(e, deleted)| (e.id.clone(), (e, deleted))).collect(),
            });
            Ok(batch.messages.into_iter().map(|message| (message, context.clone())).collect())
        }
    };
    let next_due = || {
        let service = service.clone();
        async move { service.store.next_message_due().await }
    };
    let handle = |(message, context): Leased| {
        let (service, outcomes) = (service.clone(), outcomes.clone());
        async move {
            let outcome = handle(&service, &context, message).await;
            let _ = outcomes.send(outcome).await;
        }
    };
    // Room for one round of deliveries waiting for a slot: beyond it, new messages wait for a
    // claim, which batches them.
    let feed = Feed {
        signal: service.store.work_signal(switchboard_store::queue::Work::Messages),
        handed: service.handoff.open(service.config.concurrency),
    };
    claim_loop("deliveries", service.clock.clone(), feed, limits, shutdown, claim, next_due, handle).await;
    drop(outcomes);
    let _ = recorder.await;
}

/// Decides about one message and, when it is to be sent, sends it.
async fn handle(service: &Webhooks, context: &Context, claimed: ClaimedMessage) -> Outcome {
    let now = service.clock.now();
    let message = &claimed.message;
    let mut record = DeliveryRecord {
        tenant_id: message.tenant_id.clone(),
        message_id: message.id.clone(),
        endpoint_id: message.endpoint_id.clone(),
        lease_id: claimed.lease_id.clone(),
        attempt: None,
        next: NextStep::Failed,
        health: EndpointHealth::Unchanged,
        error: None,
        at: now,
    };
    let endpoint = match context.endpoints.get(&message.endpoint_id) {
        Some((endpoint, false)) if endpoint.tenant_id == message.tenant_id && endpoint.enabled => endpoint,
        Some((_, false)) => return give_up(record, "endpoint_disabled"),
        _ => return give_up(record, "endpoint_deleted"),
    };
    let Some(event) = context.events.get(&message.event_id).filter(|e| e.tenant_id == message.tenant_id) else {
        return give_up(record, "event_pruned");
    };
    let Some(_slot) = service.slots.take(&endpoint.id).await else {
        service.metrics.put_back.inc();
        let at = now + chrono::Duration::from_std(endpoint_slots::PUT_BACK).unwrap_or(chrono::Duration::seconds(1));
        record.next = NextStep::RetryAt { at, advance: false };
        return Outcome { record, event: None };
    };
    if let Some(rate) = endpoint.rate_limit_per_second
        && let Slot::At(at) = service.limiter.reserve(&endpoint.id, &message.id, rate, now)
    {
        record.next = NextStep::RetryAt { at, advance: false };
        return Outcome { record, event: None };
    }
    let secrets = match service.signing_secrets(endpoint, now).await {
        Ok(secrets) => secrets,
        Err(error) => {
            // Without its secret nothing can be signed; try again later like any failure.
            tracing::error!(endpoint = %endpoint.id, %error, "the endpoint's signing secret cannot be read");
            record.error = Some("signing_secret_unavailable".into());
            record.next = NextStep::RetryAt { at: now + chrono::Duration::seconds(60), advance: false };
            return Outcome { record, event: None };
        }
    };
    let transform = service.transform_of(endpoint);
    let (attempt, verdict) = match delivery::body_for(transform.as_ref(), event).await {
        Ok(body) => {
            let request = delivery::Request { endpoint, event, body, secrets: &secrets, now };
            delivery::send(&service.egress, service.config.request_timeout, request).await
        }
        Err(error) => (transform_failure(error, now), Verdict::Failed(Default::default())),
    };
    service.metrics.observe(&attempt, &verdict);
    record.error = attempt.error.clone().or_else(|| attempt.error_kind.map(|kind| kind.to_string()));
    let status = attempt.response_status;
    record.attempt = Some(attempt);
    let mut emitted = None;
    match verdict {
        Verdict::Delivered => {
            record.next = NextStep::Succeeded;
            record.health = EndpointHealth::Succeeded;
        }
        Verdict::Gone => {
            record.next = NextStep::Failed;
            record.health = EndpointHealth::Gone;
        }
        Verdict::Failed(hints) => {
            record.health = EndpointHealth::Failed;
            let index = usize::try_from(message.retry_index).unwrap_or(usize::MAX);
            let delay = service.config.schedule.next_delay(index, hints, &mut rand::thread_rng());
            match delay {
                Some(delay) => {
                    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(1));
                    record.next = NextStep::RetryAt { at: now + delay, advance: true };
                }
                None => {
                    record.next = NextStep::Failed;
                    if !operational::is_operational(&event.event_type) {
                        service.metrics.exhausted.inc();
                        emitted = Some(operational::attempt_exhausted(
                            message,
                            &event.event_type,
                            status,
                            record.error.as_deref(),
                            now,
                        ));
                    }
                }
            }
        }
    }
    Outcome { record, event: emitted }
}

fn give_up(mut record: DeliveryRecord, reason: &str) -> Outcome {
    record.error = Some(reason.to_string());
    record.next = NextStep::Failed;
    Outcome { record, event: None }
}

fn transform_failure(error: String, now: Timestamp) -> switchboard_store::NewAttempt {
    switchboard_store::NewAttempt {
        id: Id::new(switchboard_core::IdKind::Attempt),
        response_status: None,
        response_headers: None,
        response_body: None,
        error_kind: Some(AttemptErrorKind::TransformError),
        error: Some(format!("the transform failed: {error}")),
        duration_us: 0,
        created_at: now,
    }
}

/// Writes outcomes in batches: whatever arrived while the previous batch was written.
async fn record_outcomes(service: Webhooks, mut received: mpsc::Receiver<Outcome>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while received.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let now = service.clock.now();
        let mut records = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        for outcome in batch.drain(..) {
            if let Some(event) = outcome.event {
                let messages = service.fan_out(&event).await.unwrap_or_else(|error| {
                    // The deliveries' own outcomes matter more than who hears about them.
                    tracing::error!(%error, event = %event.id, "reading endpoints for an operational event failed");
                    Vec::new()
                });
                events.push(EventWithMessages { event, messages });
            }
            records.push(outcome.record);
        }
        let disable_before =
            now - chrono::Duration::from_std(service.config.disable_after).unwrap_or(chrono::Duration::days(5));
        match service.store.record_deliveries(&records, &events, disable_before).await {
            Ok(recorded) => {
                // `endpoint.disabled` went into the outbox with the change.
                for (tenant_id, endpoint_id, reason) in recorded.disabled {
                    tracing::warn!(endpoint = %endpoint_id, %reason, "endpoint disabled");
                    service.endpoints.invalidate(&tenant_id);
                }
            }
            // The leases run out and the messages are delivered again: at least once.
            Err(error) => tracing::error!(%error, records = records.len(), "recording deliveries failed"),
        }
    }
}
