//! Rows every request needs, kept briefly: the API key behind a token and the event type an
//! event names. Each request would otherwise spend two database reads on them before its
//! own work.
//!
//! Changes made through this process apply at once (the caches are cleared); other
//! processes sharing the database see them within [`TTL`]: a key revoked elsewhere keeps
//! working for up to that long. Expiry is exact: it is checked on the cached row.

use std::time::Duration;

use moka::sync::Cache;
use switchboard_store::{ApiKey, EventType, Store, StoreError};

/// How long a looked-up row is trusted.
pub const TTL: Duration = Duration::from_secs(5);
const CAPACITY: u64 = 10_000;

pub struct Lookups {
    /// Token hash → the key and whether it belongs to the operator tenant.
    keys: Cache<String, (ApiKey, bool)>,
    /// (tenant id, name) → the event type.
    event_types: Cache<(String, String), EventType>,
}

impl Default for Lookups {
    fn default() -> Self {
        Self {
            keys: Cache::builder().max_capacity(CAPACITY).time_to_live(TTL).build(),
            event_types: Cache::builder().max_capacity(CAPACITY).time_to_live(TTL).build(),
        }
    }
}

impl Lookups {
    /// The key whose token hashes to `hash`. Unknown tokens are not remembered, so guessing
    /// cannot fill the cache.
    pub async fn authenticate(&self, store: &dyn Store, hash: &str) -> Result<Option<(ApiKey, bool)>, StoreError> {
        if let Some(found) = self.keys.get(hash) {
            return Ok(Some(found));
        }
        let found = store.authenticate(hash).await?;
        if let Some(found) = &found {
            self.keys.insert(hash.to_string(), found.clone());
        }
        Ok(found)
    }

    pub async fn event_type(
        &self,
        store: &dyn Store,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<EventType>, StoreError> {
        let key = (tenant_id.to_string(), name.to_string());
        if let Some(found) = self.event_types.get(&key) {
            return Ok(Some(found));
        }
        let found = store.get_event_type(tenant_id, name).await?;
        if let Some(found) = &found {
            self.event_types.insert(key, found.clone());
        }
        Ok(found)
    }

    /// After a key is revoked through this process.
    pub fn forget_keys(&self) {
        self.keys.invalidate_all();
    }

    /// After an event type is changed through this process (unknown names are not
    /// remembered, so a creation needs nothing).
    pub fn forget_event_types(&self) {
        self.event_types.invalidate_all();
    }
}
