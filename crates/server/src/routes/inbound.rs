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

use crate::extract::read_body;
use crate::middleware::Verbatim;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// Header values of these names are stored masked.
const MASKED: [&str; 6] = ["authorization", "cookie", "signature", "hmac", "token", "secret"];

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
fn locate(location: &str, headers: &HeaderMap, body: Option<&Value>) -> Option<String> {
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
            let shown = if MASKED.iter().any(|word| name.as_str().contains(word)) {
                "********".to_string()
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
    if Id::parse(IdKind::Connection, &connection_id).is_err() {
        return Ok(not_found());
    }
    let Some((connection, provider, secrets)) = state.connections.webhook_target(&connection_id).await? else {
        return Ok(not_found());
    };
    let webhooks = provider.manifest.webhooks.clone().expect("webhook_target returns providers with webhooks");
    let scheme = scheme(&webhooks).ok_or_else(|| ApiError::internal(&"a generic_hmac manifest without a signature"))?;
    let method = request.method().to_string();
    let url = format!("{}{}", state.connections.config.public_url.trim_end_matches('/'), request.uri());
    let headers = request.headers().clone();
    let body = read_body(request, &state).await?;

    let now = state.clock.now();
    let secrets: Vec<&str> = secrets.iter().map(|s| s.as_str()).collect();
    let incoming = Incoming { method: &method, url: &url, headers: &headers, body: &body };
    let verdict = verify::verify(&scheme, &secrets, &incoming, now.timestamp(), DEFAULT_TOLERANCE_SECS);
    let document: Option<Value> = serde_json::from_slice(&body).ok();

    // Slack's Events API proves the URL with a signed challenge before sending anything.
    if verdict.is_ok()
        && matches!(webhooks.scheme, SignatureScheme::Slack)
        && document.as_ref().and_then(|d| d.get("type")).and_then(Value::as_str) == Some("url_verification")
    {
        let challenge = document.as_ref().and_then(|d| d.get("challenge")).cloned().unwrap_or(Value::Null);
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
        source_ip: Some(peer.ip().to_string()),
        headers: masked_headers(&headers),
        body: body.to_vec(),
        verified: verdict.is_ok(),
        rejection: verdict.err().map(|r: Rejection| r.code().to_string()),
        provider_event_id,
        dedupe_key,
    };
    let stored = state.store.store_inbound(&inbound).await?;
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
