//! The rows the store reads and writes. API representations live in the server crate.

use std::fmt;
use std::str::FromStr;

use switchboard_core::{Id, Timestamp};

/// A tenant: every other row belongs to one, and every API key acts for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// `ten_…`, the tenant's id.
    pub id: Id,
    /// The name it was created with.
    pub name: String,
    /// The operator tenant (created at first start) may manage other tenants.
    pub is_operator: bool,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A tenant to create.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// `ten_…`, the new tenant's id.
    pub id: Id,
    /// A name for people; need not be unique.
    pub name: String,
    /// When it is created.
    pub created_at: Timestamp,
}

/// What a key may do. Each scope includes the ones below it: admin ⊇ write ⊇ read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Reads only.
    Read,
    /// Reads, and creates or changes the tenant's resources.
    Write,
    /// Everything, API keys included; in the operator tenant, other tenants too.
    Admin,
}

impl Scope {
    /// The scope's stored name: `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Whether this scope covers `required` (a scope includes the ones below it).
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

/// An API key as read back: never the token, nor its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_…`, the key's id.
    pub id: Id,
    /// The tenant the key acts for.
    pub tenant_id: Id,
    /// The name given at creation, to tell keys apart.
    pub name: String,
    /// What the key may do.
    pub scope: Scope,
    /// `sk_AbCd…wXyZ`: enough of the token to recognise it, too little to use.
    pub masked: String,
    /// The key stops working at this time; `None` never expires.
    pub expires_at: Option<Timestamp>,
    /// When the key was revoked; `None` while it is not.
    pub revoked_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
}

impl ApiKey {
    /// Whether the key authenticates at `now`: not revoked and not expired.
    pub fn is_usable_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// An API key to store: the token's digest and mask, never the token.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// `key_…`, the new key's id.
    pub id: Id,
    /// The tenant the key acts for.
    pub tenant_id: Id,
    /// A name to tell keys apart.
    pub name: String,
    /// What the key may do.
    pub scope: Scope,
    /// The hex SHA-256 of the token: what authentication looks the key up by. Unique.
    pub key_hash: String,
    /// `sk_AbCd…wXyZ`: enough of the token to recognise it, too little to use.
    pub masked: String,
    /// The key stops working at this time; `None` never expires.
    pub expires_at: Option<Timestamp>,
    /// When it is created.
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

/// A kind of event a tenant publishes, with an optional schema for its payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    /// `et_…`, the event type's id.
    pub id: Id,
    /// The owning tenant; every query filters on it.
    pub tenant_id: Id,
    /// Unique within the tenant; events name their type by it.
    pub name: String,
    /// Free text; may be empty.
    pub description: String,
    /// JSON Schema text that payloads must satisfy.
    pub schema: Option<String>,
    /// Bumped on every change, so compiled schemas can be cached by (name, version).
    pub version: i64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed (its creation time until then).
    pub updated_at: Timestamp,
}

/// An event type to create; it starts at version 1.
#[derive(Debug, Clone)]
pub struct NewEventType {
    /// `et_…`, the new event type's id.
    pub id: Id,
    /// The owning tenant.
    pub tenant_id: Id,
    /// Must be unused in the tenant.
    pub name: String,
    /// Free text; may be empty.
    pub description: String,
    /// JSON Schema text that payloads must satisfy; `None` accepts any payload.
    pub schema: Option<String>,
    /// When it is created; also its first `updated_at`.
    pub created_at: Timestamp,
}

/// Fields left `None` are unchanged; `schema: Some(None)` removes the schema.
#[derive(Debug, Clone, Default)]
pub struct EventTypePatch {
    /// A new description.
    pub description: Option<String>,
    /// `Some(Some(_))` replaces the schema, `Some(None)` removes it.
    pub schema: Option<Option<String>>,
    /// The new `updated_at`; `None` keeps the old one (the version is bumped either way).
    pub updated_at: Option<Timestamp>,
}

/// A published event, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_…`, the event's id.
    pub id: Id,
    /// The publishing tenant; every query filters on it.
    pub tenant_id: Id,
    /// The name of its event type.
    pub event_type: String,
    /// The payload as JSON text, exactly as validated.
    pub payload: String,
    /// The idempotency key it was published with, if any; unique within the tenant.
    pub idempotency_key: Option<String>,
    /// When it was published.
    pub created_at: Timestamp,
}

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `evt_…`, the new event's id.
    pub id: Id,
    /// The publishing tenant.
    pub tenant_id: Id,
    /// The name of its event type.
    pub event_type: String,
    /// The payload as JSON text, already validated.
    pub payload: String,
    /// Set when the request carried an idempotency key.
    pub idempotency: Option<Idempotency>,
    /// When it is published.
    pub created_at: Timestamp,
}

/// An idempotency key and a digest of the request it arrived with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The key the client sent; unique within the tenant.
    pub key: String,
    /// A digest of the request, to tell a retry from a different request under the same key.
    pub request_hash: String,
}

impl From<NewEvent> for Event {
    /// The event as it is stored.
    fn from(event: NewEvent) -> Self {
        Event {
            id: event.id,
            tenant_id: event.tenant_id,
            event_type: event.event_type,
            payload: event.payload,
            idempotency_key: event.idempotency.map(|i| i.key),
            created_at: event.created_at,
        }
    }
}

/// What storing an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateEventOutcome {
    /// Stored now, with its messages and jobs.
    Created(Event),
    /// The key was used before with the same request: this is that event.
    Replayed(Event),
    /// The key was used before with a different request.
    KeyReused,
}

/// Narrows [`crate::Store::list_events`]; fields left `None` match every event.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Which page of the results.
    pub page: Page,
    /// Only events of this type (by name).
    pub event_type: Option<String>,
    /// Only events created strictly after this.
    pub created_after: Option<Timestamp>,
    /// Only events created strictly before this.
    pub created_before: Option<Timestamp>,
}

/// Newest first; `before` is the id of the last row of the previous page.
#[derive(Debug, Clone)]
pub struct Page {
    /// At most this many rows.
    pub limit: u32,
    /// The id of the previous page's last row; `None` for the first page.
    pub before: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Self { limit: 50, before: None }
    }
}

/// The jobs of one queue, by state.
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
    /// `sec_…`, the secret's id.
    pub id: Id,
    /// The owning tenant. The ciphertext is bound to it and to `id`: moved to another row or
    /// tenant, it no longer decrypts.
    pub tenant_id: Id,
    /// `mk_…`, the master key that sealed it.
    pub key_id: String,
    /// `nonce || ciphertext || tag` (AES-256-GCM).
    pub ciphertext: Vec<u8>,
    /// When it was last sealed (stored or resealed).
    pub updated_at: Timestamp,
}
