//! Fan-out: which endpoints receive an event. Runs in the request that publishes the event,
//! so the messages are stored in the same unit as the event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_core::{Id, IdKind, Timestamp};
use switchboard_store::{Endpoint, NewEvent, NewMessage, Store, StoreError};

use crate::patterns;
use switchboard_jq::{JqProgram, ProgramCache};

/// An enabled endpoint with its filter compiled.
#[derive(Debug)]
pub struct Subscriber {
    pub endpoint: Endpoint,
    pub filter: Option<JqProgram>,
}

type Cached = HashMap<Id, (Instant, Arc<Vec<Subscriber>>)>;

/// The enabled endpoints of each tenant, kept for a short while.
#[derive(Debug)]
pub struct EndpointCache {
    ttl: Duration,
    tenants: Mutex<Cached>,
}

impl EndpointCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, tenants: Mutex::new(HashMap::new()) }
    }

    pub async fn subscribers(
        &self,
        store: &dyn Store,
        programs: &ProgramCache,
        tenant_id: &Id,
        now: Timestamp,
    ) -> Result<Arc<Vec<Subscriber>>, StoreError> {
        if let Some((fetched, subscribers)) = self.lock().get(tenant_id)
            && fetched.elapsed() < self.ttl
        {
            return Ok(subscribers.clone());
        }
        let endpoints = store.enabled_endpoints(tenant_id.as_str()).await?;
        let subscribers: Arc<Vec<Subscriber>> = Arc::new(
            endpoints
                .into_iter()
                .map(|endpoint| {
                    // Filters were compiled when stored; one that no longer compiles (a newer
                    // jq dialect) matches nothing rather than everything.
                    let filter = endpoint.filter.as_deref().map(|text| {
                        programs.get(tenant_id.as_str(), text, now).unwrap_or_else(|error| {
                            tracing::warn!(endpoint = %endpoint.id, %error, "endpoint filter does not compile");
                            JqProgram::broken(error)
                        })
                    });
                    Subscriber { endpoint, filter }
                })
                .collect(),
        );
        self.lock().insert(tenant_id.clone(), (Instant::now(), subscribers.clone()));
        Ok(subscribers)
    }

    /// Forgets a tenant's endpoints after a change made through this process.
    pub fn invalidate(&self, tenant_id: &Id) {
        self.lock().remove(tenant_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The JSON document filters and transforms see: the delivered body plus the event id.
pub fn event_document(id: &str, event_type: &str, created_at: Timestamp, payload: &str) -> Value {
    serde_json::json!({
        "id": id,
        "type": event_type,
        "timestamp": created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": serde_json::from_str::<Value>(payload).unwrap_or(Value::Null),
    })
}

/// How long a filter may run for one event.
pub const FILTER_TIME_LIMIT: Duration = Duration::from_secs(1);

/// One message per enabled endpoint that subscribes to the event's type and whose filter
/// (if any) yields `true`.
pub async fn messages_for(event: &NewEvent, subscribers: &[Subscriber], now: Timestamp) -> Vec<NewMessage> {
    let mut document = None;
    let mut messages = Vec::new();
    for subscriber in subscribers {
        if !patterns::subscribes(&subscriber.endpoint.event_types, &event.event_type) {
            continue;
        }
        if let Some(filter) = &subscriber.filter {
            let document = document.get_or_insert_with(|| {
                event_document(event.id.as_str(), &event.event_type, event.created_at, &event.payload)
            });
            if !filter.is_true(document, FILTER_TIME_LIMIT).await {
                continue;
            }
        }
        messages.push(NewMessage {
            id: Id::new(IdKind::Message),
            endpoint_id: subscriber.endpoint.id.clone(),
            fifo: subscriber.endpoint.fifo,
            next_attempt_at: now,
            lease_id: None,
        });
    }
    messages
}
