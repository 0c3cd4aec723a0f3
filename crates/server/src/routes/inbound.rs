//! The universal webhook receiver, `POST /webhooks/{connection_id}`: no API key (the
//! provider's signature is the authentication). It verifies per the connection's manifest,
//! answers the provider's handshakes, and stores the webhook durably before the 2xx.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_connectors::manifest::{
    GenericSignature, HmacAlgorithm, SignatureEncoding, SignatureScheme, TimestampUnit, Webhooks,
};
use switchboard_core::{Id, IdKind};
use switchboard_store::{NewInbound, Stored};
use switchboard_webhooks::incoming::verify::{
    self, Algorithm, DEFAULT_TOLERANCE_SECS, Encoding, GenericHmac, Incoming, Rejection, Scheme,
};

use super::endpoints::{MASK, is_sensitive_header};
use crate::extract::read_body;
use crate::metrics::{InboundLabels, RejectionLabels};
use crate::middleware::Verbatim;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// Token buckets per connection and per source address (idle ones forgotten every minute,
/// so memory follows the active senders), and the addresses limited lately, for the stats.
pub struct InboundLimits {
    per_connection: Option<crate::auth::KeyRateLimiter>,
    per_source: Option<crate::auth::KeyRateLimiter>,
    limited_sources: moka::sync::Cache<String, ()>,
}

impl InboundLimits {
    pub fn new(per_connection: Option<std::num::NonZeroU32>, per_source: Option<std::num::NonZeroU32>) -> Self {
        Self {
            per_connection: per_connection.map(crate::auth::KeyRateLimiter::new),
            per_source: per_source.map(crate::auth::KeyRateLimiter::new),
            limited_sources: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
        }
    }

    pub fn forget_idle(&self) {
        for limiter in [&self.per_connection, &self.per_source].into_iter().flatten() {
            limiter.forget_idle();
        }
    }

    /// Distinct source addresses refused for their rate in the last hour.
    pub fn limited_sources(&self) -> u64 {
        self.limited_sources.run_pending_tasks();
        self.limited_sources.entry_count()
    }
}

fn too_many(wait: std::time::Duration) -> Response {
    let mut response = terse(StatusCode::TOO_MANY_REQUESTS, json!({"error": "too many requests"}));
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
    response
}

pub(crate) fn scheme(webhooks: &Webhooks) -> Option<Scheme> {
    Some(match webhooks.scheme {
        SignatureScheme::Stripe => Scheme::Stripe,
        SignatureScheme::Github => Scheme::Github,
        SignatureScheme::Slack => Scheme::Slack,
        SignatureScheme::Shopify => Scheme::Shopify,
        SignatureScheme::Twilio => Scheme::Twilio,
        SignatureScheme::StandardWebhooks => Scheme::StandardWebhooks,
        SignatureScheme::GenericHmac => Scheme::GenericHmac(generic(webhooks.signature.as_ref()?)),
    })
}

fn generic(signature: &GenericSignature) -> GenericHmac {
    GenericHmac {
        header: signature.header.to_ascii_lowercase(),
        algorithm: match signature.algorithm {
            HmacAlgorithm::Sha1 => Algorithm::Sha1,
            HmacAlgorithm::Sha256 => Algorithm::Sha256,
            HmacAlgorithm::Sha512 => Algorithm::Sha512,
        },
        encoding: match signature.encoding {
            SignatureEncoding::Hex => Encoding::Hex,
            SignatureEncoding::Base64 => Encoding::Base64,
        },
        prefix: signature.prefix.clone(),
        signed: signature.signed.clone(),
        timestamp_header: signature.timestamp_header.as_ref().map(|h| h.to_ascii_lowercase()),
        timestamp_in_millis: signature.timestamp_unit == TimestampUnit::Milliseconds,
    }
}

/// Where a manifest says a value lives: `header:Name`, or a JSON pointer into the body.
pub(crate) fn locate(location: &str, headers: &HeaderMap, body: Option<&Value>) -> Option<String> {
    match location.strip_prefix("header:") {
        Some(name) => headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string),
        None => body?.pointer(location).and_then(|v| match v {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }),
    }
}

fn masked_headers(headers: &HeaderMap) -> String {
    let map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(name, value)| {
            let shown = if is_sensitive_header(name.as_str()) {
                MASK.to_string()
            } else {
                value.to_str().unwrap_or("<binary>").to_string()
            };
            (name.as_str().to_string(), Value::String(shown))
        })
        .collect();
    Value::Object(map).to_string()
}

fn terse(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Verbatim);
    response
}

/// Receives a provider's webhook for a connection.
#[utoipa::path(
    post,
    path = "/webhooks/{connection_id}",
    tag = "incoming webhooks",
    params(("connection_id" = String, Path, description = "`conn_…`: the URL to give the provider")),
    request_body(content = String, description = "The provider's payload, verified byte for byte", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or recognised as a duplicate), or a handshake answered"),
        (status = 401, description = "The signature did not verify; the reason is recorded, not returned"),
        (status = 404, description = "No webhooks are received at this address"),
        (status = 413, description = "The body exceeds the size limit"),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> ApiResult<Response> {
    let not_found = || terse(StatusCode::NOT_FOUND, json!({"error": "not found"}));
    let source = peer.ip().to_string();
    if let Some(Err(wait)) = state.inbound_limits.per_source.as_ref().map(|l| l.take(&source)) {
        state.inbound_limits.limited_sources.insert(source, ());
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "rate_limited" }).inc();
        return Ok(too_many(wait));
    }
    if Id::parse(IdKind::Connection, &connection_id).is_err() {
        return Ok(not_found());
    }
    let Some(target) = state.connections.webhook_target(&connection_id).await? else {
        return Ok(not_found());
    };
    let (connection, provider, secrets) = (&target.connection, &target.provider, &target.secrets);
    if let Some(Err(wait)) = state.inbound_limits.per_connection.as_ref().map(|l| l.take(connection.id.as_str())) {
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "rate_limited" }).inc();
        return Ok(too_many(wait));
    }
    let webhooks = provider.manifest.webhooks.as_ref().expect("webhook_target returns providers with webhooks");
    let scheme = scheme(webhooks).ok_or_else(|| ApiError::internal(&"a generic_hmac manifest without a signature"))?;
    let method = request.method().to_string();
    let url = format!("{}{}", state.connections.config.public_url.trim_end_matches('/'), request.uri());
    let headers = request.headers().clone();
    let body = read_body(request, &state).await?;

    let now = state.clock.now();
    let secrets: Vec<&str> = secrets.iter().map(|s| s.as_str()).collect();
    let incoming = Incoming { method: &method, url: &url, headers: &headers, body: &body };
    let verdict = verify::verify(&scheme, &secrets, &incoming, now.timestamp(), DEFAULT_TOLERANCE_SECS);
    // The body is parsed only when something must be read from it: a handshake, or an event
    // id the manifest locates in the body rather than in a header.
    let is_slack = matches!(webhooks.scheme, SignatureScheme::Slack);
    let id_in_body = webhooks.event_id.as_deref().is_some_and(|l| !l.starts_with("header:"));
    let document: Option<Value> = if is_slack || id_in_body { serde_json::from_slice(&body).ok() } else { None };

    // Slack's Events API proves the URL with a signed challenge before sending anything.
    if verdict.is_ok()
        && is_slack
        && document.as_ref().and_then(|d| d.get("type")).and_then(Value::as_str) == Some("url_verification")
    {
        let challenge = document.as_ref().and_then(|d| d.get("challenge")).cloned().unwrap_or(Value::Null);
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "handshake" }).inc();
        return Ok(terse(StatusCode::OK, json!({"challenge": challenge})));
    }

    let id = Id::new(IdKind::Inbound);
    let provider_event_id =
        webhooks.event_id.as_deref().and_then(|location| locate(location, &headers, document.as_ref()));
    let dedupe_key = match (&verdict, &provider_event_id) {
        // Refused webhooks are each kept on their own.
        (Err(_), _) => id.to_string(),
        (Ok(()), Some(event_id)) => format!("event:{event_id}"),
        (Ok(()), None) => {
            let signature = signature_header(&scheme).and_then(|name| headers.get(name)).map(|v| v.as_bytes());
            let mut hash = Sha256::new();
            hash.update(signature.unwrap_or_default());
            hash.update(b"\n");
            hash.update(&body);
            format!("sha256:{}", hex::encode(hash.finalize()))
        }
    };
    let inbound = NewInbound {
        id,
        tenant_id: connection.tenant_id.clone(),
        connection_id: connection.id.clone(),
        received_at: now,
        source_ip: Some(source),
        headers: masked_headers(&headers),
        body: body.to_vec(),
        verified: verdict.is_ok(),
        rejection: verdict.err().map(|r: Rejection| r.code().to_string()),
        provider_event_id,
        dedupe_key,
    };
    let stored = state.store.store_inbound(&inbound).await?;
    if matches!(stored, Stored::New(_)) && inbound.verified {
        state.inbound_ready.notify_one();
    }
    let outcome = match (&stored, inbound.verified) {
        (_, false) => "rejected",
        (Stored::New(_), true) => "stored",
        (Stored::Duplicate(_), true) => "duplicate",
    };
    state.metrics.inbound.get_or_create(&InboundLabels { outcome }).inc();
    if let Some(reason) = &inbound.rejection {
        state.metrics.inbound_rejections.get_or_create(&RejectionLabels { reason: reason.clone() }).inc();
    }
    if !inbound.verified {
        return Ok(terse(StatusCode::UNAUTHORIZED, json!({"error": "the webhook could not be verified"})));
    }
    Ok(match stored {
        Stored::New(id) => terse(StatusCode::OK, json!({"received": true, "id": id})),
        Stored::Duplicate(id) => terse(StatusCode::OK, json!({"received": true, "id": id, "duplicate": true})),
    })
}

/// The header a scheme's signature travels in, for hashing duplicates without an event id.
fn signature_header(scheme: &Scheme) -> Option<&str> {
    Some(match scheme {
        Scheme::Stripe => "stripe-signature",
        Scheme::Github => "x-hub-signature-256",
        Scheme::Slack => "x-slack-signature",
        Scheme::Shopify => "x-shopify-hmac-sha256",
        Scheme::Twilio => "x-twilio-signature",
        Scheme::StandardWebhooks => "webhook-signature",
        Scheme::GenericHmac(spec) => spec.header.as_str(),
    })
}

/// What the receiver and the processing did for the caller's tenant.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InboundStats {
    /// Webhooks received and stored (duplicates not included).
    pub received: u64,
    pub verified: u64,
    /// Refused webhooks by reason code (`signature_mismatch`, `stale_timestamp`, `no_secret`, …).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Deliveries recognised as a webhook already stored.
    pub duplicates: u64,
    /// Verified webhooks waiting to be processed: the queue's depth.
    pub pending: u64,
    pub processed: u64,
    pub failed: u64,
    /// Processing loops in this process.
    pub processing_workers: u32,
    /// Distinct source addresses this process refused for their rate in the last hour.
    pub rate_limited_sources: u64,
}

/// Statistics of incoming webhooks (read scope).
#[utoipa::path(
    get,
    path = "/webhooks/stats",
    tag = "incoming webhooks",
    responses((status = 200, body = InboundStats)),
    security(("api_key" = []))
)]
pub async fn stats(State(state): State<AppState>, caller: crate::auth::Caller) -> ApiResult<Json<InboundStats>> {
    caller.require(switchboard_store::Scope::Read)?;
    let counts = state.store.inbound_counts(caller.tenant_id()).await?;
    Ok(Json(InboundStats {
        received: counts.received,
        verified: counts.verified,
        rejected: counts.rejected_by_reason,
        duplicates: counts.duplicates,
        pending: counts.pending,
        processed: counts.processed,
        failed: counts.failed,
        processing_workers: 1,
        rate_limited_sources: state.inbound_limits.limited_sources(),
    }))
}

/// A stored incoming webhook.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InboundOut {
    /// `inb_…`
    pub id: String,
    pub connection_id: String,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub source_ip: Option<String>,
    /// The request's headers; credential-like values are masked.
    #[schema(value_type = Object)]
    pub headers: Value,
    pub verified: bool,
    /// Why it was refused.
    pub rejection: Option<String>,
    pub provider_event_id: Option<String>,
    /// Later deliveries of the same webhook, acknowledged without being stored again.
    pub duplicates: u32,
    /// `pending`, `processed`, `failed` or `rejected`.
    pub status: String,
    pub event_type: Option<String>,
    /// The hub event it became.
    pub event_id: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The raw body as text (bytes that are not UTF-8 are replaced); only on a single record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

fn inbound_out(inbound: switchboard_store::Inbound, with_body: bool) -> InboundOut {
    InboundOut {
        id: inbound.id.to_string(),
        connection_id: inbound.connection_id.to_string(),
        received_at: inbound.received_at,
        source_ip: inbound.source_ip,
        headers: serde_json::from_str(&inbound.headers).unwrap_or(Value::Null),
        verified: inbound.verified,
        rejection: inbound.rejection,
        provider_event_id: inbound.provider_event_id,
        duplicates: inbound.duplicates,
        status: inbound.status,
        event_type: inbound.event_type,
        event_id: inbound.event_id.map(|id| id.to_string()),
        attempts: inbound.attempts,
        last_error: inbound.last_error,
        processed_at: inbound.processed_at,
        body: with_body.then(|| String::from_utf8_lossy(&inbound.body).into_owned()),
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboundParams {
    /// `pending`, `processed`, `failed` or `rejected`.
    pub status: Option<String>,
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A connection's incoming webhooks, newest first (read scope).
#[utoipa::path(
    get,
    path = "/api/integrations/{connection_id}/inbound",
    tag = "incoming webhooks",
    params(("connection_id" = String, Path, description = "`conn_…`"), InboundParams),
    responses((status = 200, body = super::ListResponse<InboundOut>), (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    Path(connection_id): Path<String>,
    crate::extract::ApiQuery(params): crate::extract::ApiQuery<InboundParams>,
) -> ApiResult<Json<super::ListResponse<InboundOut>>> {
    caller.require(switchboard_store::Scope::Read)?;
    let id = super::path_id(IdKind::Connection, &connection_id, "connection")?;
    state.connections.get(&caller.key.tenant_id, id.as_str()).await?;
    if let Some(status) = &params.status
        && !matches!(status.as_str(), "pending" | "processed" | "failed" | "rejected")
    {
        return Err(ApiError::malformed("status", "must be pending, processed, failed or rejected"));
    }
    let page = super::PageParams { limit: params.limit, cursor: params.cursor }.to_page(IdKind::Inbound)?;
    let filter = switchboard_store::InboundFilter { connection_id: Some(id.to_string()), status: params.status };
    let rows = state.store.list_inbound(caller.tenant_id(), &filter, &page).await?;
    Ok(Json(super::ListResponse::from_rows(rows, &page, |i| i.id.to_string(), |i| inbound_out(i, false))))
}

/// One incoming webhook, with its body (read scope).
#[utoipa::path(
    get,
    path = "/api/integrations/{connection_id}/inbound/{inbound_id}",
    tag = "incoming webhooks",
    params(("connection_id" = String, Path, description = "`conn_…`"), ("inbound_id" = String, Path, description = "`inb_…`")),
    responses((status = 200, body = InboundOut), (status = 404, description = "No such webhook in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    Path((connection_id, inbound_id)): Path<(String, String)>,
) -> ApiResult<Json<InboundOut>> {
    caller.require(switchboard_store::Scope::Read)?;
    let inbound = find(&state, &caller, &connection_id, &inbound_id).await?;
    Ok(Json(inbound_out(inbound, true)))
}

async fn find(
    state: &AppState,
    caller: &crate::auth::Caller,
    connection_id: &str,
    inbound_id: &str,
) -> ApiResult<switchboard_store::Inbound> {
    let id = super::path_id(IdKind::Inbound, inbound_id, "incoming webhook")?;
    state
        .store
        .get_inbound(caller.tenant_id(), id.as_str())
        .await?
        .filter(|inbound| inbound.connection_id.as_str() == connection_id)
        .ok_or_else(|| ApiError::not_found("incoming webhook"))
}

/// Processes a stored, verified webhook again (write scope): after a manifest or
/// subscription change, say. Processing is idempotent per webhook: one that became an event
/// finds that event again.
#[utoipa::path(
    post,
    path = "/api/integrations/{connection_id}/inbound/{inbound_id}/replay",
    tag = "incoming webhooks",
    params(("connection_id" = String, Path, description = "`conn_…`"), ("inbound_id" = String, Path, description = "`inb_…`")),
    responses((status = 202, body = InboundOut), (status = 404, description = "No such webhook in this tenant", body = crate::problem::Problem, content_type = "application/problem+json"), (status = 409, description = "A refused webhook cannot be replayed", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    Path((connection_id, inbound_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<InboundOut>)> {
    caller.require(switchboard_store::Scope::Write)?;
    let inbound = find(&state, &caller, &connection_id, &inbound_id).await?;
    let replayed = state
        .store
        .replay_inbound(caller.tenant_id(), inbound.id.as_str())
        .await?
        .ok_or_else(|| ApiError::conflict("A webhook that failed verification cannot be replayed"))?;
    state.inbound_ready.notify_one();
    Ok((StatusCode::ACCEPTED, Json(inbound_out(replayed, false))))
}
