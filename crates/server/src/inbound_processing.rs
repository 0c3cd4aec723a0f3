//! Processing stored incoming webhooks into hub events, from the durable queue (the
//! receiver in `routes/inbound.rs` stores them and wakes this loop).

use axum::http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_core::{Id, IdKind};

use futures::StreamExt as _;
use switchboard_store::FinishedInbound;

use crate::routes::inbound::locate;
use crate::state::AppState;

/// Webhooks of a claimed batch processed concurrently: enough to fill a group commit, few
/// enough to leave the API most of the database pool.
const PROCESSED_AT_ONCE: usize = 16;

/// Processes stored webhooks into hub events, from the durable queue, until `stop`: the
/// manifest says where the event type lives; the event is `{provider}.{type}` with the
/// connection attached, published through the events API (idempotent per webhook, so a
/// crash between publishing and recording publishes nothing twice).
pub fn start_processing(state: AppState, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = state.clock.now();
            let claimed = match state.store.claim_inbound(100, now + chrono::TimeDelta::seconds(60), now).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming incoming webhooks failed");
                    Vec::new()
                }
            };
            let idle = claimed.is_empty();
            // Processed side by side, so their events share commits; recorded in one unit.
            let finished: Vec<FinishedInbound> = futures::stream::iter(claimed)
                .map(|inbound| {
                    let state = &state;
                    async move {
                        let outcome = process(state, &inbound).await;
                        FinishedInbound { tenant_id: inbound.tenant_id, id: inbound.id, outcome }
                    }
                })
                .buffer_unordered(PROCESSED_AT_ONCE)
                .collect()
                .await;
            if !finished.is_empty()
                && let Err(error) = state.store.finish_inbound(&finished, state.clock.now()).await
            {
                tracing::warn!(%error, webhooks = finished.len(), "recording processed webhooks failed");
            }
            if idle {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = state.inbound_ready.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            } else if stop.is_cancelled() {
                return;
            }
        }
    })
}

async fn process(state: &AppState, inbound: &switchboard_store::Inbound) -> switchboard_store::InboundOutcome {
    use switchboard_store::InboundOutcome;
    let failed = |error: String| InboundOutcome::Failed { error, retry: false };
    // The receiver's cached target: a burst of webhooks reads the connection once.
    let target = match state.connections.webhook_target(inbound.connection_id.as_str()).await {
        Ok(Some(target)) if target.connection.tenant_id == inbound.tenant_id => target,
        Ok(_) => return failed("the connection was uninstalled, or its provider sends no webhooks".into()),
        Err(error) => return InboundOutcome::Failed { error: error.to_string(), retry: true },
    };
    let (connection, provider) = (&target.connection, &target.provider);
    let Some(webhooks) = &provider.manifest.webhooks else {
        return failed(format!("{} declares no webhooks", provider.name()));
    };
    let headers: HeaderMap = serde_json::from_str::<serde_json::Map<String, Value>>(&inbound.headers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| {
            let name = axum::http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = axum::http::HeaderValue::from_str(value.as_str()?).ok()?;
            Some((name, value))
        })
        .collect();
    let document: Option<Value> = serde_json::from_slice(&inbound.body).ok();
    let Some(kind) = locate(&webhooks.event_type, &headers, document.as_ref()) else {
        return failed(format!("the event type is not at {}", webhooks.event_type));
    };
    // Keep the provider's type readable within the hub's naming rules.
    let kind: String =
        kind.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    let event_type = format!("{}.{}", provider.name(), kind.trim_matches('.'));
    if !switchboard_webhooks::patterns::is_valid_pattern(&event_type) || event_type.ends_with('*') {
        return failed(format!("{event_type:?} is not a valid event type"));
    }
    let data = document.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&inbound.body).into_owned()));
    let payload = json!({
        "connection_id": connection.id,
        "provider": provider.name(),
        "provider_event_id": inbound.provider_event_id,
        "inbound_id": inbound.id,
        "data": data,
    });
    let payload = payload.to_string();
    let event = switchboard_store::NewEvent {
        id: Id::new(IdKind::Event),
        tenant_id: inbound.tenant_id.clone(),
        event_type: event_type.clone(),
        idempotency: Some(switchboard_store::Idempotency {
            key: format!("inbound:{}", inbound.id),
            request_hash: hex::encode(Sha256::digest(payload.as_bytes())),
        }),
        payload,
        created_at: state.clock.now(),
    };
    match state.webhooks.publish(event).await {
        Ok(
            switchboard_store::CreateEventOutcome::Created(event)
            | switchboard_store::CreateEventOutcome::Replayed(event),
        ) => InboundOutcome::Processed { event_type, event_id: event.id },
        Ok(switchboard_store::CreateEventOutcome::KeyReused) => {
            failed("the webhook was already published differently".into())
        }
        Err(error) => InboundOutcome::Failed { error: error.to_string(), retry: true },
    }
}
