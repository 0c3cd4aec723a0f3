//! The universal webhook receiver, `POST /webhooks/{connection_id}`: no API key (the
//! provider's signature is the authentication). It verifies per the connection's manifest,
//! answers the provider's handshakes, and stores the webhook durably before the 2xx.

pub mod log;

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_connectors::WebhookTarget;
use switchboard_connectors::manifest::{
    GenericSignature, HmacAlgorithm, SignatureEncoding, SignatureScheme, TimestampUnit, WebhookHandshake, Webhooks,
};
use switchboard_core::{Id, IdKind};
use switchboard_store::{NewInbound, Stored, Verification};
use switchboard_webhooks::incoming::handshake::{self, Answer, Handshake};
use switchboard_webhooks::incoming::verify::{
    self, Algorithm, DEFAULT_TOLERANCE_SECS, Encoding, GenericHmac, Incoming, Rejection, Scheme,
};

use super::endpoints::{MASK, is_sensitive_header};
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

/// Where a manifest says a value lives: `header:Name`, `literal:value`, or a JSON pointer
/// into the body.
pub(crate) fn locate(location: &str, headers: &HeaderMap, body: Option<&Value>) -> Option<String> {
    if let Some(value) = location.strip_prefix("literal:") {
        return Some(value.to_string());
    }
    match location.strip_prefix("header:") {
        Some(name) => headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string),
        None => body?.pointer(location).and_then(|v| match v {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }),
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

fn terse(status: StatusCode, body: Value) -> Response {
    verbatim((status, Json(body)))
}

/// The receiver answers providers in their own terms, never as a problem document.
fn verbatim(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
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
        (status = 413, description = "The body exceeds the connection's size limit (1 MiB unless it sets `webhook_max_body_bytes`)"),
        (status = 429, description = "The connection or the source address sends too fast; see `Retry-After`"),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> ApiResult<Response> {
    let source = peer.ip().to_string();
    let target = match admit(&state, &connection_id, &source).await? {
        Ok(target) => target,
        Err(refusal) => return Ok(refusal),
    };
    let (connection, secrets, webhooks) = (&target.connection, &target.secrets, target.webhooks());
    let handshakes = handshakes(webhooks);
    if let Some(answer) = handshake::answer_unsigned(&handshakes, "POST", request.uri().query(), target.verify_token())
    {
        return Ok(handshake_response(&state, answer));
    }
    let scheme = scheme(webhooks)?;
    let settings = target.settings;
    let url = format!("{}{}", state.connections.config.public_url.trim_end_matches('/'), request.uri());
    let (parts, body) = request.into_parts();
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
    // The body is parsed only when something must be read from it: a handshake, or an event
    // id the manifest locates in the body rather than in a header.
    let handshake_in_body = handshake::reads_body(&handshakes);
    let id_in_body = webhooks.event_id.as_deref().is_some_and(|l| !l.starts_with("header:"));
    let document: Option<Value> =
        if handshake_in_body || id_in_body { serde_json::from_slice(&body).ok() } else { None };

    // Slack and Zoom prove the address with a signed request before sending events.
    if verification == Verification::Verified
        && let Some(document) = &document
        && let Some(answer) = handshake::answer_signed(&handshakes, document, secrets[0])
    {
        return Ok(handshake_response(&state, answer));
    }

    let id = Id::new(IdKind::Inbound);
    let provider_event_id =
        webhooks.event_id.as_deref().and_then(|location| locate(location, &headers, document.as_ref()));
    let dedupe_key = match (&verification, &provider_event_id) {
        // Refused webhooks are each kept on their own.
        (Verification::Rejected(_), _) => id.to_string(),
        (_, Some(event_id)) => format!("event:{event_id}"),
        (_, None) => {
            let signature =
                scheme.as_ref().and_then(|scheme| headers.get(scheme.signature_header())).map(|v| v.as_bytes());
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
        verification,
        provider_event_id,
        dedupe_key,
    };
    let verification = inbound.verification.clone();
    let stored = state.store.store_inbound(inbound).await?;
    if matches!(stored, Stored::New(_)) && verification.is_accepted() {
        state.inbound_ready.notify_one();
    }
    let outcome = match (&stored, &verification) {
        (_, Verification::Rejected(_)) => "rejected",
        (Stored::Duplicate(_), _) => "duplicate",
        (Stored::New(_), Verification::Unsigned) => "unsigned",
        (Stored::New(_), Verification::Verified) => "stored",
    };
    state.metrics.inbound.get_or_create(&InboundLabels { outcome }).inc();
    if let Verification::Rejected(reason) = &verification {
        state.metrics.inbound_rejections.get_or_create(&RejectionLabels { reason: reason.clone() }).inc();
        return Ok(terse(StatusCode::UNAUTHORIZED, json!({"error": "the webhook could not be verified"})));
    }
    Ok(match stored {
        Stored::New(id) => terse(StatusCode::OK, json!({"received": true, "id": id})),
        Stored::Duplicate(id) => terse(StatusCode::OK, json!({"received": true, "id": id, "duplicate": true})),
    })
}

/// Answers the handshakes providers make by GET: Meta's `hub.challenge` (with the verify
/// token) and Dropbox's `challenge`.
#[utoipa::path(
    get,
    path = "/webhooks/{connection_id}",
    tag = "incoming webhooks",
    params(("connection_id" = String, Path, description = "`conn_…`: the URL given to the provider")),
    responses(
        (status = 200, description = "The challenge, echoed as text", content_type = "text/plain", body = String),
        (status = 403, description = "Meta's verify token is not the connection's `webhook_verify_token`"),
        (status = 404, description = "No webhooks are received at this address, or its provider makes no such handshake"),
    )
)]
pub async fn challenge(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> ApiResult<Response> {
    let target = match admit(&state, &connection_id, &peer.ip().to_string()).await? {
        Ok(target) => target,
        Err(refusal) => return Ok(refusal),
    };
    let handshakes = handshakes(target.webhooks());
    Ok(match handshake::answer_unsigned(&handshakes, "GET", request.uri().query(), target.verify_token()) {
        Some(answer) => handshake_response(&state, answer),
        None => not_found(),
    })
}

/// Rate limits (the source's before anything is read, the connection's once it is known) and
/// the connection's webhook target; a refusal is the response to send.
async fn admit(state: &AppState, connection_id: &str, source: &str) -> ApiResult<Result<Arc<WebhookTarget>, Response>> {
    if let Some(Err(wait)) = state.inbound_limits.per_source.as_ref().map(|l| l.take(source)) {
        state.inbound_limits.limited_sources.insert(source.to_string(), ());
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "rate_limited" }).inc();
        return Ok(Err(too_many(wait)));
    }
    if Id::parse(IdKind::Connection, connection_id).is_err() {
        return Ok(Err(not_found()));
    }
    let Some(target) = state.connections.webhook_target(connection_id).await? else {
        return Ok(Err(not_found()));
    };
    if let Some(Err(wait)) = state.inbound_limits.per_connection.as_ref().map(|l| l.take(target.connection.id.as_str()))
    {
        state.metrics.inbound.get_or_create(&InboundLabels { outcome: "rate_limited" }).inc();
        return Ok(Err(too_many(wait)));
    }
    Ok(Ok(target))
}

fn not_found() -> Response {
    terse(StatusCode::NOT_FOUND, json!({"error": "not found"}))
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

fn handshake_response(state: &AppState, answer: Answer) -> Response {
    state.metrics.inbound.get_or_create(&InboundLabels { outcome: "handshake" }).inc();
    match answer {
        Answer::Json(body) => terse(StatusCode::OK, body),
        Answer::Text(text) => verbatim((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
            text,
        )),
        Answer::Refused => terse(StatusCode::FORBIDDEN, json!({"error": "forbidden"})),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

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
