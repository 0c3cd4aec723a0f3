//! Fairness between endpoints: no endpoint holds more than its share of this process's
//! delivery slots. A message whose endpoint already has its share in flight waits a moment
//! for one of them to finish (a fast endpoint's do, at once) and is otherwise put back for a
//! second, without using up a step of its retry schedule, so a slow endpoint's backlog cannot
//! fill every slot while other endpoints' messages wait behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::Id;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a message waits for its endpoint's slot before it is put back.
pub(crate) const PATIENCE: Duration = Duration::from_millis(50);

/// How long a message that found its endpoint's slots taken is put back for.
pub(crate) const PUT_BACK: Duration = Duration::from_secs(1);

/// Past this many endpoints known, idle ones are forgotten.
const REMEMBERED: usize = 4096;

/// The delivery slots of each endpoint.
#[derive(Debug)]
pub(crate) struct EndpointSlots {
    per_endpoint: usize,
    endpoints: Mutex<HashMap<Id, Arc<Semaphore>>>,
}

impl EndpointSlots {
    pub(crate) fn new(per_endpoint: usize) -> Self {
        Self { per_endpoint: per_endpoint.max(1), endpoints: Mutex::new(HashMap::new()) }
    }

    /// One of the endpoint's slots, held until dropped; `None` when none came free within
    /// [`PATIENCE`].
    pub(crate) async fn take(&self, endpoint_id: &Id) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            if endpoints.len() >= REMEMBERED && !endpoints.contains_key(endpoint_id) {
                endpoints.retain(|_, slots| slots.available_permits() < self.per_endpoint);
            }
            endpoints.entry(endpoint_id.clone()).or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint))).clone()
        };
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        tokio::time::timeout(PATIENCE, slots.acquire_owned()).await.ok()?.ok()
    }
}
