//! The universal webhook receiver, `POST /webhooks/{connection_id}`: no API key (the
//! provider's signature is the authentication). It verifies per the connection's manifest,
//! answers the provider's handshakes, and stores the webhook durably before the 2xx.

pub mod log;

use std::error::Error as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_connectors::WebhookTarget;
use switchboard_connectors::manifest::{
    GenericSignature, HmacAlgorithm, SignatureEncoding, SignatureScheme, TimestampUnit, WebhookHandshake, Webhooks,
};
use switchboard_core::{Id, IdKind};
use switchboard_store::{NewInbound, Stored, Verification};
use switchboard_webhooks::incoming::document::{self, BodyEncoding};
use switchboard_webhooks::incoming::handshake::{self, Answer, Handshake};
use switchboard_webhooks::incoming::verify::{
    self, Algorithm, DEFAULT_TOLERANCE_SECS, Encoding, GenericHmac, Incoming, Rejection, Scheme,
};

use super::endpoints::{MASK, is_sensitive_header};
use crate::listener::PeerAddr;
use crate::metrics::{InboundLabels, RejectionLabels};
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

fn too_many(wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::rate_limited(secs.max(1))
        .with_detail("Too many webhooks from this source or to this connection; retry later")
}

/// The scheme to verify by; `Ok(None)` for a provider that signs nothing, `Err` for a
/// `generic_hmac` manifest without its signature (the loader refuses those).
fn scheme(webhooks: &Webhooks) -> Result<Option<Scheme>, ApiError> {
    let missing = || ApiError::internal(&"a generic_hmac manifest without a signature");
    Ok(Some(match webhooks.scheme {
        SignatureScheme::Stripe => Scheme::Stripe,
        SignatureScheme::Github => Scheme::Github,
        SignatureScheme::Slack => Scheme::Slack,
        SignatureScheme::Shopify => Scheme::Shopify,
        SignatureScheme::Twilio => Scheme::Twilio,
        SignatureScheme::StandardWebhooks => Scheme::StandardWebhooks,
        SignatureScheme::GenericHmac => Scheme::GenericHmac(generic(webhooks.signature.as_ref().ok_or_else(missing)?)),
        SignatureScheme::None => return Ok(None),
    }))
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

/// The headers as a JSON object, credential-like values masked and repeated ones joined
/// with `, ` (as HTTP reads them), written straight out: this runs for every webhook.
fn masked_headers(headers: &HeaderMap) -> String {
    struct Masked<'a>(&'a HeaderMap);
    impl serde::Serialize for Masked<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.keys().map(|name| {
                let mut values = self.0.get_all(name).iter().map(|value| value.to_str().unwrap_or("<binary>"));
                let first = values.next().unwrap_or_default();
                let shown: std::borrow::Cow<'_, str> = match (is_sensitive_header(name.as_str()), values.next()) {
                    (true, _) => MASK.into(),
                    (false, None) => first.into(),
                    (false, Some(second)) => {
                        [first, second].into_iter().chain(values).collect::<Vec<_>>().join(", ").into()
                    }
                };
                (name.as_str(), shown)
            }))
        }
    }
    serde_json::to_string(&Masked(headers)).expect("strings serialise")
}

/// What the receiver answers a provider that delivered a webhook.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Receipt {
    /// Always true: the webhook is stored durably.
    pub received: bool,
    /// `inb_…`: the stored webhook (for a batch, see `ids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "inb_01jd8x2m7r0000000000000000")]
    pub id: Option<String>,
    /// For a provider that posts several events at once: each item's stored webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    /// Present and true when the webhook (every item of a batch) was received before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

/// Receives a provider's webhook for a connection.
#[utoipa::path(
    post,
    path = "/webhooks/{connection_id}",
    tag = "incoming webhooks",
    operation_id = "receive_webhook",
    description = "The address to give a provider for its webhooks. No API key: the provider's signature, verified on the raw body per the connection's manifest, is the authentication. The webhook is stored before the 2xx, de-duplicated by the provider's event id (or by signature and body), and processed into hub events afterwards. Handshakes that providers make by POST (Slack `url_verification`, Zoom `endpoint.url_validation`, Microsoft Graph `validationToken`) are answered in the provider's own terms. Batches (HubSpot) are stored one webhook per item.",
    params(("connection_id" = String, Path, description = "`conn_…`: the URL to give the provider", example = "conn_01jd8x2m7r0000000000000000")),
    request_body(
        description = "The provider's payload, verified byte for byte: JSON, or a form (Slack slash commands and interactivity, Twilio).",
        content(
            (serde_json::Value = "application/json", example = json!({"id": "evt_1", "type": "invoice.paid"})),
            (String = "application/x-www-form-urlencoded", example = "command=%2Fdeploy&text=api"),
        )
    ),
    responses(
        (status = 200, description = "Stored (or recognised as a duplicate); or a handshake answered in the provider's terms", body = Receipt, example = json!({"received": true, "id": "inb_01jd8x2m7r0000000000000000"})),
        (status = 401, description = "The signature did not verify (the reason is recorded with the stored webhook, not returned)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A handshake's verify token is not the connection's", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No webhooks are received at this address", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds the connection's size limit (1 MiB unless it sets `webhook_max_body_bytes`), or is a batch of more than 1,000 items", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The connection or the source address sends too fast; see `Retry-After`", body = crate::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    request: Request,
) -> ApiResult<Response> {
    let source = peer.ip().to_string();
    let target = admit(&state, &connection_id, &source).await?;
    let (connection, secrets, webhooks) = (&target.connection, &target.secrets, target.webhooks());
    let handshakes = handshakes(webhooks);
    if let Some(answer) = handshake::answer_unsigned(&handshakes, "POST", request.uri().query(), target.verify_token())
    {
        return handshake_response(&state, answer);
    }
    let scheme = scheme(webhooks)?;
    let settings = target.settings;
    let url = format!("{}{}", state.connections.config.public_url.trim_end_matches('/'), request.uri());
    let (parts, body) = request.into_parts();
    if crate::extract::declared_length(&parts.headers).is_some_and(|length| length > settings.max_body_bytes as u64) {
        return Err(ApiError::payload_too_large(settings.max_body_bytes));
    }
    let body = match axum::body::to_bytes(body, settings.max_body_bytes).await {
        Ok(body) => body,
        Err(error) if error.source().is_some_and(|e| e.is::<http_body_util::LengthLimitError>()) => {
            return Err(ApiError::payload_too_large(settings.max_body_bytes));
        }
        Err(_) => return Err(ApiError::bad_request("The request body could not be read")),
    };
    let headers = parts.headers;

    let now = state.clock.now();
    let secrets: Vec<&str> = secrets.iter().map(|s| s.as_str()).collect();
    // A secret, once set, is always required; unsigned webhooks are an explicit opt-in.
    let take_unsigned = settings.accept_unsigned && (secrets.is_empty() || scheme.is_none());
    let verification = match &scheme {
        _ if take_unsigned => Verification::Unsigned,
        None => Verification::Rejected(Rejection::UnsignedRefused.code().to_string()),
        Some(scheme) => {
            let incoming = Incoming { method: parts.method.as_str(), url: &url, headers: &headers, body: &body };
            match verify::verify(scheme, &secrets, &incoming, now.timestamp(), DEFAULT_TOLERANCE_SECS) {
                Ok(()) => Verification::Verified,
                Err(rejection) => Verification::Rejected(rejection.code().to_string()),
            }
        }
    };
    let stored_headers = masked_headers(&headers);
    let new_inbound = |body: Vec<u8>, verification: Verification, provider_event_id, dedupe_key| NewInbound {
        id: Id::new(IdKind::Inbound),
        tenant_id: connection.tenant_id.clone(),
        connection_id: connection.id.clone(),
        received_at: now,
        source_ip: Some(source.clone()),
        headers: stored_headers.clone(),
        body,
        verification,
        provider_event_id,
        dedupe_key,
    };
    if let Verification::Rejected(reason) = &verification {
        // Refused webhooks are each kept on their own, whole.
        let id = Id::new(IdKind::Inbound);
        let inbound =
            NewInbound { id: id.clone(), ..new_inbound(body.to_vec(), verification.clone(), None, id.to_string()) };
        state.store.store_inbound(inbound).await?;
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "rejected" }).inc();
        state.metrics.inbound_rejections.get_or_create(&RejectionLabels { reason: reason.clone() }).inc();
        return Err(ApiError::unauthorized("The webhook's signature could not be verified"));
    }

    let form = BodyEncoding::of(&headers) == BodyEncoding::Form;
    if !form
        && let Some(pointer) = &webhooks.batch
        && let Some(items) = document::batch_items(&body, pointer)
        && !items.is_empty()
    {
        if items.len() > document::MAX_BATCH_ITEMS {
            return Err(ApiError::batch_too_large(items.len(), document::MAX_BATCH_ITEMS));
        }
        // Each item is a webhook of its own: typed, de-duplicated and processed by itself.
        let inbounds = items.into_iter().map(|item| {
            let item_document: Option<Value> = serde_json::from_slice(item).ok();
            let provider_event_id = webhooks
                .event_id_locations(false)
                .and_then(|l| document::locate_first(l.iter(), &headers, item_document.as_ref()));
            let dedupe_key = match &provider_event_id {
                Some(event_id) => format!("event:{event_id}"),
                None => format!("sha256:{}", hex::encode(Sha256::digest(item))),
            };
            new_inbound(item.to_vec(), verification.clone(), provider_event_id, dedupe_key)
        });
        let stored = futures::future::try_join_all(inbounds.map(|inbound| state.store.store_inbound(inbound))).await?;
        let (mut ids, mut duplicates) = (Vec::with_capacity(stored.len()), 0);
        for stored in &stored {
            let outcome = match stored {
                Stored::New(id) => {
                    ids.push(id.to_string());
                    if verification == Verification::Unsigned { "unsigned" } else { "stored" }
                }
                Stored::Duplicate(id) => {
                    ids.push(id.to_string());
                    duplicates += 1;
                    "duplicate"
                }
            };
            state.metrics.inbound.get_or_create(&InboundLabels { outcome }).inc();
        }
        if duplicates < stored.len() {
            state.inbound_ready.notify_one();
        }
        let duplicate = (duplicates == stored.len()).then_some(true);
        return Ok(receipt(Receipt { received: true, id: None, ids: Some(ids), duplicate }));
    }

    // The body is parsed only when something must be read from it: a handshake, or an event
    // id the manifest locates in the body rather than in a header.
    let id_locations = webhooks.event_id_locations(form);
    let reads_body = handshake::reads_body(&handshakes) || id_locations.is_some_and(|l| l.reads_body());
    let body_document = reads_body
        .then(|| document::document(&body, BodyEncoding::of(&headers), webhooks.form_json_fields()))
        .flatten();
    // Slack and Zoom prove the address with a signed request before sending events.
    if verification == Verification::Verified
        && let Some(body_document) = &body_document
        && let Some(answer) = handshake::answer_signed(&handshakes, body_document, secrets[0])
    {
        return handshake_response(&state, answer);
    }
    let provider_event_id =
        id_locations.and_then(|l| document::locate_first(l.iter(), &headers, body_document.as_ref()));
    let dedupe_key = match &provider_event_id {
        Some(event_id) => format!("event:{event_id}"),
        None => {
            let signature =
                scheme.as_ref().and_then(|scheme| headers.get(scheme.signature_header())).map(|v| v.as_bytes());
            let mut hash = Sha256::new();
            hash.update(signature.unwrap_or_default());
            hash.update(b"\n");
            hash.update(&body);
            format!("sha256:{}", hex::encode(hash.finalize()))
        }
    };
    let stored = state
        .store
        .store_inbound(new_inbound(body.to_vec(), verification.clone(), provider_event_id, dedupe_key))
        .await?;
    let outcome = match (&stored, &verification) {
        (Stored::Duplicate(_), _) => "duplicate",
        (Stored::New(_), Verification::Unsigned) => "unsigned",
        (Stored::New(_), _) => "stored",
    };
    state.metrics.inbound.get_or_create(&InboundLabels { outcome }).inc();
    Ok(match stored {
        Stored::New(id) => {
            state.inbound_ready.notify_one();
            receipt(Receipt { received: true, id: Some(id.to_string()), ids: None, duplicate: None })
        }
        Stored::Duplicate(id) => {
            receipt(Receipt { received: true, id: Some(id.to_string()), ids: None, duplicate: Some(true) })
        }
    })
}

fn receipt(receipt: Receipt) -> Response {
    (StatusCode::OK, Json(receipt)).into_response()
}

/// Answers the handshakes providers make by GET: Meta's `hub.challenge` (with the verify
/// token) and Dropbox's `challenge`.
#[utoipa::path(
    get,
    path = "/webhooks/{connection_id}",
    tag = "incoming webhooks",
    operation_id = "answer_webhook_challenge",
    description = "Meta (`hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`) and Dropbox (`challenge=…`) prove a webhook address by GET before sending to it; the challenge is echoed as text.",
    params(
        ("connection_id" = String, Path, description = "`conn_…`: the URL given to the provider", example = "conn_01jd8x2m7r0000000000000000"),
        ("hub.challenge" = Option<String>, Query, description = "Meta's challenge, echoed"),
        ("hub.verify_token" = Option<String>, Query, description = "Must equal the connection's `webhook_verify_token`"),
        ("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("challenge" = Option<String>, Query, description = "Dropbox's challenge, echoed"),
    ),
    responses(
        (status = 200, description = "The challenge, echoed as text", content_type = "text/plain", body = String, example = json!("1158201444")),
        (status = 403, description = "Meta's verify token is not the connection's `webhook_verify_token`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No webhooks are received at this address, or its provider makes no such handshake", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The source address sends too fast; see `Retry-After`", body = crate::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn challenge(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    request: Request,
) -> ApiResult<Response> {
    let target = admit(&state, &connection_id, &peer.ip().to_string()).await?;
    let handshakes = handshakes(target.webhooks());
    match handshake::answer_unsigned(&handshakes, "GET", request.uri().query(), target.verify_token()) {
        Some(answer) => handshake_response(&state, answer),
        None => Err(no_receiver()),
    }
}

/// Rate limits (the source's before anything is read, the connection's once it is known) and
/// the connection's webhook target.
async fn admit(state: &AppState, connection_id: &str, source: &str) -> ApiResult<Arc<WebhookTarget>> {
    if let Some(Err(wait)) = state.inbound_limits.per_source.as_ref().map(|l| l.take(source)) {
        state.inbound_limits.limited_sources.insert(source.to_string(), ());
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "rate_limited" }).inc();
        return Err(too_many(wait));
    }
    if Id::parse(IdKind::Connection, connection_id).is_err() {
        return Err(no_receiver());
    }
    let Some(target) = state.connections.webhook_target(connection_id).await? else {
        return Err(no_receiver());
    };
    if let Some(Err(wait)) = state.inbound_limits.per_connection.as_ref().map(|l| l.take(target.connection.id.as_str()))
    {
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "rate_limited" }).inc();
        return Err(too_many(wait));
    }
    Ok(target)
}

/// The same answer for an unknown connection, another tenant's, or one whose provider sends
/// no webhooks: nothing to learn by probing addresses.
fn no_receiver() -> ApiError {
    ApiError::not_found("webhook receiver at this address")
}

fn handshakes(webhooks: &Webhooks) -> Vec<Handshake> {
    webhooks
        .handshakes
        .iter()
        .map(|handshake| match handshake {
            WebhookHandshake::SlackUrlVerification => Handshake::SlackUrlVerification,
            WebhookHandshake::ZoomUrlValidation => Handshake::ZoomUrlValidation,
            WebhookHandshake::MetaHubChallenge => Handshake::MetaHubChallenge,
            WebhookHandshake::DropboxChallenge => Handshake::DropboxChallenge,
            WebhookHandshake::MicrosoftGraphValidation => Handshake::MicrosoftGraphValidation,
        })
        .collect()
}

fn handshake_response(state: &AppState, answer: Answer) -> ApiResult<Response> {
    state.metrics.inbound.get_or_create(&InboundLabels { outcome: "handshake" }).inc();
    match answer {
        Answer::Json(body) => Ok((StatusCode::OK, Json(body)).into_response()),
        Answer::Text(text) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
            text,
        )
            .into_response()),
        Answer::Refused => Err(ApiError::forbidden("The verify token is not this connection's")),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_headers_mask_credentials_and_keep_every_value_of_a_repeated_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", HeaderValue::from_static("sha256=abc"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        headers.insert("x-note", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let stored: Value = serde_json::from_str(&masked_headers(&headers)).unwrap();
        assert_eq!(
            stored,
            json!({
                "x-hub-signature-256": MASK,
                "content-type": "application/json",
                "x-forwarded-for": "10.0.0.1, 10.0.0.2",
                "x-note": "<binary>",
            })
        );
    }
}
