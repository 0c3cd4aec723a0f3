//! Endpoints as callers configure them: every field checked (answering a problem per field,
//! as connections do), then written with the endpoint cache kept in step. The one door for
//! endpoint writes, whatever asks: the API, the CLI or a later service.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use switchboard_core::problem::{FieldProblem, Problems, check_text};
use switchboard_core::redact::MASK;
use switchboard_core::signature::SigningSecret;
use switchboard_core::{Id, IdKind};
use switchboard_jq::JqProgram;
use switchboard_store::{DisabledReason, Endpoint, EndpointPatch, Message, StoreError, secrets};

use crate::{SecretError, Webhooks, operational, patterns};

/// At most this many event type patterns per endpoint.
pub const MAX_EVENT_TYPES: usize = 100;
/// At most this many static headers per endpoint.
pub const MAX_HEADERS: usize = 20;
/// The longest filter or transform, in bytes.
pub const MAX_JQ: usize = 4000;
/// The longest URL, in bytes.
pub const MAX_URL: usize = 2048;
/// The longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// The most JSON a caller may keep as metadata.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The longest grace period of a rotation.
pub const MAX_ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Whether signatures are HMAC (`v1`, a `whsec_` secret) or Ed25519 (`v1a`, a `whsk_` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Signing))]
#[serde(rename_all = "snake_case")]
pub enum SigningKind {
    #[default]
    Symmetric,
    Asymmetric,
}

impl SigningKind {
    pub fn of(secret: &SigningSecret) -> Self {
        match secret {
            SigningSecret::Symmetric(_) => Self::Symmetric,
            SigningSecret::Asymmetric(_) => Self::Asymmetric,
        }
    }

    fn generate(self) -> SigningSecret {
        match self {
            Self::Symmetric => SigningSecret::generate_symmetric(),
            Self::Asymmetric => SigningSecret::generate_asymmetric(),
        }
    }
}

/// A new endpoint as the caller describes it, unchecked.
#[derive(Debug, Clone, Default)]
pub struct EndpointSpec {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub filter: Option<String>,
    pub transform: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub rate_limit_per_second: Option<u32>,
    pub enabled: bool,
    pub fifo: bool,
    pub metadata: Map<String, Value>,
    /// The caller's own secret (`whsec_…` or `whsk_…`); one of `signing`'s kind is generated
    /// when absent.
    pub secret: Option<String>,
    pub signing: SigningKind,
}

/// Changes to an endpoint, unchecked; `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub filter: Option<Option<String>>,
    pub transform: Option<Option<String>>,
    /// Replaces every header; a value of `********` keeps that header's current value.
    pub headers: Option<BTreeMap<String, String>>,
    pub rate_limit_per_second: Option<Option<u32>>,
    pub enabled: Option<bool>,
    pub fifo: Option<bool>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The input is wrong; every problem found, by field.
    #[error("the endpoint is not valid: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.detail)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldProblem>),
    #[error("no such endpoint")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// An endpoint with the secret it now signs with (shown to the caller once).
#[derive(Debug)]
pub struct WithSecret {
    pub endpoint: Endpoint,
    pub secret: SigningSecret,
}

impl Webhooks {
    /// Checks and stores a new endpoint with its signing secret, sealed.
    pub async fn create_endpoint(&self, tenant_id: &Id, spec: EndpointSpec) -> Result<WithSecret, EndpointError> {
        let mut problems = Problems::default();
        let url = problems.check(self.check_url(&spec.url).await);
        problems.check(check_text("description", &spec.description, MAX_DESCRIPTION));
        let event_types = self.check_event_types(tenant_id, &spec.event_types, &mut problems).await?;
        let filter = spec.filter.as_deref().map(|text| problems.check(check_jq("filter", text)));
        let transform = spec.transform.as_deref().map(|text| problems.check(check_jq("transform", text)));
        let headers = problems.check(check_headers(&spec.headers));
        problems.check(check_rate(spec.rate_limit_per_second));
        let metadata = problems.check(check_metadata(&spec.metadata));
        let secret = match &spec.secret {
            Some(text) => problems.check(parse_secret(text)),
            None => Some(spec.signing.generate()),
        };
        let (Some(url), Some(headers), Some(metadata), Some(secret)) = (url, headers, metadata, secret) else {
            return Err(EndpointError::Invalid(problems.into_vec()));
        };
        problems.finish().map_err(EndpointError::Invalid)?;
        let now = self.clock.now();
        let sealed = secrets::seal(&self.secrets, tenant_id, secret.to_text().as_bytes(), now);
        let endpoint = Endpoint {
            id: Id::new(IdKind::Endpoint),
            tenant_id: tenant_id.clone(),
            url,
            description: spec.description,
            event_types,
            filter: filter.flatten(),
            transform: transform.flatten(),
            headers,
            rate_limit_per_second: spec.rate_limit_per_second,
            enabled: spec.enabled,
            disabled_reason: (!spec.enabled).then_some(DisabledReason::Manual),
            fifo: spec.fifo,
            metadata,
            secret_id: sealed.id.clone(),
            previous_secret_id: None,
            previous_secret_expires_at: None,
            failing_since: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let endpoint = self.store.create_endpoint(&endpoint, &sealed).await?;
        self.endpoints.invalidate(tenant_id);
        Ok(WithSecret { endpoint, secret })
    }

    /// Checks the given changes as on creation and applies them.
    pub async fn update_endpoint(
        &self,
        tenant_id: &Id,
        id: &str,
        changes: EndpointChanges,
    ) -> Result<Endpoint, EndpointError> {
        let existing = self.store.get_endpoint(tenant_id.as_str(), id).await?.ok_or(EndpointError::NotFound)?;
        let mut problems = Problems::default();
        let url = match &changes.url {
            Some(url) => problems.check(self.check_url(url).await),
            None => None,
        };
        if let Some(description) = &changes.description {
            problems.check(check_text("description", description, MAX_DESCRIPTION));
        }
        let event_types = match &changes.event_types {
            Some(types) => Some(self.check_event_types(tenant_id, types, &mut problems).await?),
            None => None,
        };
        for (field, change) in [("filter", &changes.filter), ("transform", &changes.transform)] {
            if let Some(Some(text)) = change {
                problems.check(check_jq(field, text));
            }
        }
        let headers = match &changes.headers {
            Some(headers) => problems.check(check_headers(headers).and_then(|h| unmask(h, &existing.headers))),
            None => None,
        };
        if let Some(rate) = changes.rate_limit_per_second {
            problems.check(check_rate(rate));
        }
        let metadata = match &changes.metadata {
            Some(metadata) => problems.check(check_metadata(metadata)),
            None => None,
        };
        problems.finish().map_err(EndpointError::Invalid)?;
        let patch = EndpointPatch {
            url,
            description: changes.description,
            event_types,
            filter: changes.filter,
            transform: changes.transform,
            headers,
            rate_limit_per_second: changes.rate_limit_per_second,
            enabled: changes.enabled,
            fifo: changes.fifo,
            metadata,
            updated_at: Some(self.clock.now()),
        };
        let updated = self.store.update_endpoint(tenant_id.as_str(), id, &patch).await?;
        self.endpoints.invalidate(tenant_id);
        updated.ok_or(EndpointError::NotFound)
    }

    /// Deletes an endpoint and its secrets; `false` when there was none.
    pub async fn delete_endpoint(&self, tenant_id: &Id, id: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_endpoint(tenant_id.as_str(), id, self.clock.now()).await?;
        self.endpoints.invalidate(tenant_id);
        Ok(deleted)
    }

    /// Makes `secret` (or a new one of the current kind) the signing secret; the current one
    /// keeps signing for `grace` (the configured default when `None`, at most 7 days).
    pub async fn rotate_secret(
        &self,
        tenant_id: &Id,
        id: &str,
        secret: Option<&str>,
        grace: Option<std::time::Duration>,
    ) -> Result<WithSecret, EndpointError> {
        let endpoint = self.store.get_endpoint(tenant_id.as_str(), id).await?.ok_or(EndpointError::NotFound)?;
        let mut problems = Problems::default();
        if grace.is_some_and(|grace| grace > MAX_ROTATION_GRACE) {
            problems.push(FieldProblem::new("grace_period_seconds", "must be at most 604800 (7 days)"));
        }
        let given = secret.and_then(|text| problems.check(parse_secret(text)));
        problems.finish().map_err(EndpointError::Invalid)?;
        let secret = match given {
            Some(secret) => secret,
            None => SigningKind::of(&self.current_secret(&endpoint).await?).generate(),
        };
        let now = self.clock.now();
        let sealed = secrets::seal(&self.secrets, tenant_id, secret.to_text().as_bytes(), now);
        let grace = grace.unwrap_or(self.config.rotation_grace);
        let until = now + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::days(1));
        let rotated = self.store.rotate_endpoint_secret(tenant_id.as_str(), id, &sealed, until).await?;
        self.endpoints.invalidate(tenant_id);
        Ok(WithSecret { endpoint: rotated.ok_or(EndpointError::NotFound)?, secret })
    }

    /// Puts every failed message of the endpoint created at or after `since` back in line, due
    /// now, in batches; answers how many.
    pub async fn recover(
        &self,
        tenant_id: &Id,
        id: &str,
        since: switchboard_core::Timestamp,
    ) -> Result<u64, EndpointError> {
        self.store.get_endpoint(tenant_id.as_str(), id).await?.ok_or(EndpointError::NotFound)?;
        let now = self.clock.now();
        if since > now {
            return Err(EndpointError::Invalid(vec![FieldProblem::new("since", "must not be in the future")]));
        }
        const BATCH: u32 = 1000;
        let mut recovered = 0;
        loop {
            let done = self.store.recover_messages(tenant_id.as_str(), id, since, now, BATCH).await?;
            recovered += done;
            if done < u64::from(BATCH) {
                return Ok(recovered);
            }
        }
    }

    /// Sends a failed or delivered message again (a pending one is left as it is); `None` when
    /// there is no such message.
    pub async fn resend(&self, tenant_id: &Id, message_id: &str) -> Result<Option<Message>, StoreError> {
        self.store.resend_message(tenant_id.as_str(), message_id, self.clock.now()).await
    }

    async fn check_url(&self, url: &str) -> Result<String, FieldProblem> {
        if url.len() > MAX_URL {
            return Err(FieldProblem::new("url", format!("must be at most {MAX_URL} characters")));
        }
        let parsed =
            self.egress.vet_url(url).await.map_err(|e| FieldProblem::new("url", format!("{} ({})", e, e.code())))?;
        Ok(parsed.to_string())
    }

    /// Patterns must be well formed, and an exact name registered (or one the hub publishes).
    async fn check_event_types(
        &self,
        tenant_id: &Id,
        types: &[String],
        problems: &mut Problems,
    ) -> Result<Vec<String>, StoreError> {
        if types.len() > MAX_EVENT_TYPES {
            problems.push(FieldProblem::new("event_types", format!("at most {MAX_EVENT_TYPES} entries")));
            return Ok(Vec::new());
        }
        let mut checked = Vec::with_capacity(types.len());
        for (index, pattern) in types.iter().enumerate() {
            let field = format!("event_types[{index}]");
            if !patterns::is_valid_pattern(pattern) {
                problems.push(FieldProblem::new(field, "must be an event type name, `prefix.*` or `*`"));
                continue;
            }
            let exact = !pattern.ends_with('*');
            if exact
                && !operational::is_operational(pattern)
                && self.store.get_event_type(tenant_id.as_str(), pattern).await?.is_none()
            {
                problems.push(FieldProblem::new(field, format!("no event type named {pattern:?} is registered")));
                continue;
            }
            if !checked.contains(pattern) {
                checked.push(pattern.clone());
            }
        }
        Ok(checked)
    }
}

fn check_jq(field: &str, text: &str) -> Result<String, FieldProblem> {
    if text.trim().is_empty() || text.len() > MAX_JQ {
        return Err(FieldProblem::new(field, format!("must be a jq expression of 1 to {MAX_JQ} characters")));
    }
    JqProgram::compile(text).map_err(|e| FieldProblem::new(field, format!("is not valid jq: {e}")))?;
    Ok(text.to_string())
}

/// Headers we set ourselves, or that would break the request, cannot be configured.
fn check_headers(headers: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, FieldProblem> {
    if headers.len() > MAX_HEADERS {
        return Err(FieldProblem::new("headers", format!("at most {MAX_HEADERS} headers")));
    }
    let mut checked = BTreeMap::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(FieldProblem::new(field, "is not a valid header name"));
        }
        let reserved = lower.starts_with("webhook-")
            || matches!(
                lower.as_str(),
                "host" | "content-type" | "content-length" | "transfer-encoding" | "connection" | "user-agent"
            );
        if reserved {
            return Err(FieldProblem::new(field, "is set by Switchboard and cannot be configured"));
        }
        if value.len() > 4096 || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(FieldProblem::new(field, "must be visible ASCII of at most 4096 characters"));
        }
        checked.insert(lower, value.clone());
    }
    Ok(checked)
}

/// A masked value sent back unchanged keeps the header's current value.
fn unmask(
    mut headers: BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldProblem> {
    for (name, value) in headers.iter_mut() {
        if value == MASK {
            *value = current.get(name).cloned().ok_or_else(|| {
                FieldProblem::new(format!("headers.{name}"), "a masked value can only keep a header already set")
            })?;
        }
    }
    Ok(headers)
}

fn check_rate(rate: Option<u32>) -> Result<(), FieldProblem> {
    match rate {
        Some(0) | Some(100_001..) => Err(FieldProblem::new("rate_limit_per_second", "must be between 1 and 100000")),
        _ => Ok(()),
    }
}

fn check_metadata(metadata: &Map<String, Value>) -> Result<String, FieldProblem> {
    let text = Value::Object(metadata.clone()).to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(FieldProblem::new("metadata", "must be at most 16 KiB of JSON"));
    }
    Ok(text)
}

fn parse_secret(text: &str) -> Result<SigningSecret, FieldProblem> {
    SigningSecret::parse(text).map_err(|e| FieldProblem::new("secret", e.to_string()))
}
