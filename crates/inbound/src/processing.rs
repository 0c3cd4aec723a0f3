//! Processing stored incoming webhooks into hub events, on the store's claim loop (the
//! receiver stores them and wakes this loop).

use http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_core::{Id, IdKind};

use switchboard_store::queue::{ClaimLimits, claim_loop};
use switchboard_store::{CreateEventOutcome, FinishedInbound, InboundOutcome, InboundWebhook, NewEvent};

use switchboard_webhooks::operational;

use crate::Inbound;
use crate::document::{self, BodyEncoding};

/// Processes stored webhooks into hub events, from the durable queue, until `stop`: the
/// manifest says where the event type lives; the event is `{provider}.{type}` with the
/// connection attached, published through the events API (idempotent per webhook, so a
/// crash between publishing and recording publishes nothing twice).
pub(crate) fn start(state: Inbound, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
    // One batch in hand at a time: a batch is published in one unit, so batches, not
    // webhooks, are the loop's items. Other processes' webhooks are found within the idle
    // wait; this process's wake the loop at once.
    let limits = ClaimLimits { concurrency: 1, max_idle_wait: IDLE_WAIT };
    let (claiming, handling) = (state.clone(), state.clone());
    tokio::spawn(async move {
        claim_loop(
            "inbound processing",
            state.clock.clone(),
            state.ready.subscribe().into(),
            limits,
            stop,
            move |_free| {
                let state = claiming.clone();
                async move {
                    let now = state.clock.now();
                    // Polled every IDLE_WAIT: a read when there is nothing, instead of a
                    // claim (a write, which would keep the SQLite writer from ever idling).
                    if !state.store.inbound_claimable(now).await? {
                        return Ok(Vec::new());
                    }
                    let lease =
                        chrono::TimeDelta::from_std(state.config.lease).unwrap_or(chrono::TimeDelta::seconds(60));
                    let batch = state.store.claim_inbound(BATCH, now + lease, now).await?;
                    Ok(if batch.is_empty() { Vec::new() } else { vec![batch] })
                }
            },
            || async { Ok(None) },
            move |batch| {
                let state = handling.clone();
                async move {
                    let finished = process_batch(&state, batch).await;
                    if !finished.is_empty()
                        && let Err(error) = state.store.finish_inbound(&finished, state.clock.now()).await
                    {
                        tracing::warn!(%error, webhooks = finished.len(), "recording processed webhooks failed");
                    }
                }
            },
        )
        .await
    })
}

/// Webhooks claimed (and published in one unit) at once.
const BATCH: u32 = 100;
/// The longest wait before looking for webhooks stored by other processes.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Turns a claimed batch into events published in one unit, and says how each webhook ended.
/// A webhook that fails for good raises `inbound.processing_failed`, so nothing acknowledged
/// to a provider disappears silently.
async fn process_batch(state: &Inbound, claimed: Vec<InboundWebhook>) -> Vec<FinishedInbound> {
    let mut finished = Vec::with_capacity(claimed.len());
    let mut publishing = Vec::with_capacity(claimed.len());
    for inbound in claimed {
        match prepare(state, &inbound).await {
            Ok(event) => publishing.push((inbound, event)),
            Err(outcome) => finished.push((inbound, outcome)),
        }
    }
    if !publishing.is_empty() {
        let events: Vec<NewEvent> = publishing.iter().map(|(_, event)| event.clone()).collect();
        let outcomes = match state.webhooks.publish_batch(events).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            // One bad event must not hold back the rest: each goes alone, and only those that
            // fail on their own are retried.
            Err(error) => {
                tracing::warn!(%error, webhooks = publishing.len(), "publishing a batch failed; publishing one by one");
                let mut outcomes = Vec::with_capacity(publishing.len());
                for (_, event) in &publishing {
                    outcomes.push(state.webhooks.publish(event.clone()).await);
                }
                outcomes
            }
        };
        for ((inbound, event), mut outcome) in publishing.into_iter().zip(outcomes) {
            if let Ok(CreateEventOutcome::KeyReused) = outcome {
                // Published before as another event: the manifest reads it differently since
                // (a replay after a fix). It becomes the event it reads as now, under a key of
                // that reading, so a crash and a retry still find it.
                outcome = state.webhooks.publish(reread(event.clone())).await;
            }
            let outcome = match outcome {
                Ok(CreateEventOutcome::Created(stored)) => {
                    InboundOutcome::Processed { event_type: event.event_type, event_id: stored.id }
                }
                // Processed before: replayed, or the process died before recording it. The
                // endpoints subscribed since get it now.
                Ok(CreateEventOutcome::Replayed(stored)) => {
                    match state.webhooks.deliver_to_new_subscribers(&stored).await {
                        Ok(_) => InboundOutcome::Processed { event_type: event.event_type, event_id: stored.id },
                        Err(error) => InboundOutcome::Failed { error: error.to_string(), retry: true },
                    }
                }
                Ok(CreateEventOutcome::KeyReused) => InboundOutcome::Failed {
                    error: "the webhook was already published differently, twice".into(),
                    retry: false,
                },
                Err(error) => InboundOutcome::Failed { error: error.to_string(), retry: true },
            };
            finished.push((inbound, outcome));
        }
    }
    let now = state.clock.now();
    let alarms: Vec<NewEvent> = finished
        .iter()
        .filter_map(|(inbound, outcome)| match outcome {
            InboundOutcome::Failed { error, retry: false } => Some(operational::inbound_processing_failed(
                &inbound.tenant_id,
                &inbound.id,
                &inbound.connection_id,
                inbound.attempts,
                error,
                now,
            )),
            _ => None,
        })
        .collect();
    if !alarms.is_empty()
        && let Err(error) = state.webhooks.publish_batch(alarms).await
    {
        // Unannounced, a failure would be silent: those webhooks are retried instead, and
        // raise their alarm when they fail for good again.
        tracing::warn!(%error, "publishing inbound.processing_failed events failed; retrying those webhooks");
        for (_, outcome) in &mut finished {
            if let InboundOutcome::Failed { retry, .. } = outcome {
                *retry = true;
            }
        }
    }
    finished
        .into_iter()
        .map(|(inbound, outcome)| FinishedInbound { tenant_id: inbound.tenant_id, id: inbound.id, outcome })
        .collect()
}

/// The event again, under an idempotency key of its own content.
fn reread(mut event: NewEvent) -> NewEvent {
    if let Some(idempotency) = &mut event.idempotency {
        idempotency.key = format!("{}:{}", idempotency.key, &idempotency.request_hash[..16]);
    }
    event
}

/// The hub event a webhook becomes, or why it becomes none.
async fn prepare(state: &Inbound, inbound: &InboundWebhook) -> Result<NewEvent, InboundOutcome> {
    let failed = |error: String| Err(InboundOutcome::Failed { error, retry: false });
    // The receiver's cached target: a burst of webhooks reads the connection once.
    let target = match state.connections.webhook_target(inbound.connection_id.as_str()).await {
        Ok(Some(target)) if target.connection.tenant_id == inbound.tenant_id => target,
        Ok(_) => return failed("the connection was uninstalled, or its provider sends no webhooks".into()),
        Err(error) => return Err(InboundOutcome::Failed { error: error.to_string(), retry: true }),
    };
    let (connection, provider, webhooks) = (&target.connection, &target.provider, target.webhooks());
    let headers: HeaderMap = serde_json::from_str::<serde_json::Map<String, Value>>(&inbound.headers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| {
            let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = http::HeaderValue::from_str(value.as_str()?).ok()?;
            Some((name, value))
        })
        .collect();
    // An item of a batch was stored as its own JSON body, so it reads like any other.
    let encoding = BodyEncoding::of(&headers);
    let body_document = document::document(&inbound.body, encoding, webhooks.form_json_fields());
    let locations = webhooks.event_type_locations(encoding == BodyEncoding::Form);
    let Some(kind) = document::locate_first(locations.iter(), &headers, body_document.as_ref()) else {
        return failed(format!("the event type is not at {locations}"));
    };
    // Keep the provider's type readable within the hub's naming rules.
    let kind: String =
        kind.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    let event_type = format!("{}.{}", provider.name(), kind.trim_matches('.'));
    if !switchboard_webhooks::patterns::is_valid_pattern(&event_type) || event_type.ends_with('*') {
        return failed(format!("{event_type:?} is not a valid event type"));
    }
    let data = body_document.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&inbound.body).into_owned()));
    let payload = json!({
        "connection_id": connection.id,
        "provider": provider.name(),
        "provider_event_id": inbound.provider_event_id,
        "inbound_id": inbound.id,
        "data": data,
    });
    let payload = payload.to_string();
    Ok(NewEvent {
        id: Id::new(IdKind::Event),
        tenant_id: inbound.tenant_id.clone(),
        event_type,
        idempotency: Some(switchboard_store::Idempotency {
            key: format!("inbound:{}", inbound.id),
            request_hash: hex::encode(Sha256::digest(payload.as_bytes())),
        }),
        payload,
        created_at: state.clock.now(),
    })
}
