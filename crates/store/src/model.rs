//! The rows the store reads and writes. API representations live in the server crate.

use std::fmt;
use std::str::FromStr;

use switchboard_core::{Id, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: Id,
    pub name: String,
    /// The operator tenant (created at first start) may manage other tenants.
    pub is_operator: bool,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: Id,
    pub name: String,
    pub created_at: Timestamp,
}

/// What a key may do. Each scope includes the ones below it: admin ⊇ write ⊇ read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn allows(self, required: Scope) -> bool {
        self >= required
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Id,
    pub tenant_id: Id,
    pub name: String,
    pub scope: Scope,
    pub masked: String,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl ApiKey {
    pub fn is_usable_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Id,
    pub tenant_id: Id,
    pub name: String,
    pub scope: Scope,
    pub key_hash: String,
    pub masked: String,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl NewApiKey {
    /// A key row for a minted (or operator-supplied) token: only its digest and mask are kept.
    pub fn for_token(
        tenant_id: &Id,
        name: impl Into<String>,
        scope: Scope,
        token: &switchboard_core::api_key::MintedToken,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        Self {
            id: Id::new(switchboard_core::IdKind::ApiKey),
            tenant_id: tenant_id.clone(),
            name: name.into(),
            scope,
            key_hash: token.hash.clone(),
            masked: token.masked.clone(),
            expires_at,
            created_at: now,
        }
    }

    /// The key as it reads back right after being stored.
    pub fn as_stored(&self) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            scope: self.scope,
            masked: self.masked.clone(),
            expires_at: self.expires_at,
            revoked_at: None,
            created_at: self.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub id: Id,
    pub tenant_id: Id,
    pub name: String,
    pub description: String,
    /// JSON Schema text that payloads must satisfy.
    pub schema: Option<String>,
    /// Bumped on every change, so compiled schemas can be cached by (name, version).
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewEventType {
    pub id: Id,
    pub tenant_id: Id,
    pub name: String,
    pub description: String,
    pub schema: Option<String>,
    pub created_at: Timestamp,
}

/// Fields left `None` are unchanged; `schema: Some(None)` removes the schema.
#[derive(Debug, Clone, Default)]
pub struct EventTypePatch {
    pub description: Option<String>,
    pub schema: Option<Option<String>>,
    pub updated_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Id,
    pub tenant_id: Id,
    pub event_type: String,
    /// The payload as JSON text, exactly as validated.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Id,
    pub tenant_id: Id,
    pub event_type: String,
    pub payload: String,
    pub idempotency: Option<Idempotency>,
    pub created_at: Timestamp,
}

/// An idempotency key and a digest of the request it arrived with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreateEventOutcome {
    Created(Event),
    /// The key was used before with the same request: this is that event.
    Replayed(Event),
    /// The key was used before with a different request.
    KeyReused,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub page: Page,
    pub event_type: Option<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

/// Newest first; `before` is the id of the last row of the previous page.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: u32,
    pub before: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Self { limit: 50, before: None }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to run (due or scheduled), not leased.
    pub pending: u64,
    /// Leased by a worker right now.
    pub leased: u64,
    /// Parked for good.
    pub dead: u64,
}

/// A value sealed by the secret box, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub id: Id,
    pub tenant_id: Id,
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    pub updated_at: Timestamp,
}
