//! The universal webhook receiver, `POST /webhooks/{connection_id}`: no API key (the
//! provider's signature is the authentication). HTTP adaptation only: the body read within
//! the connection's limit, the decision left to [`switchboard_inbound::Inbound`], its receipt
//! or refusal turned into an answer and metrics.

pub mod log;

use std::error::Error as _;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_inbound::handshake::Answer;
use switchboard_inbound::{RawWebhook, Refusal};

use crate::listener::PeerAddr;
use crate::metrics::{InboundLabels, RejectionLabels};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

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
    let admitted = state.inbound.admit(&connection_id, &peer.ip().to_string()).await.map_err(|r| refused(&state, r))?;
    let limit = admitted.max_body_bytes();
    let (parts, body) = request.into_parts();
    if crate::extract::declared_length(&parts.headers).is_some_and(|length| length > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(error) if error.source().is_some_and(|e| e.is::<http_body_util::LengthLimitError>()) => {
            return Err(ApiError::payload_too_large(limit));
        }
        Err(_) => return Err(ApiError::bad_request("The request body could not be read")),
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let webhook = RawWebhook { method: parts.method.as_str(), path_and_query, headers: &parts.headers, body };
    match state.inbound.receive(&admitted, webhook).await.map_err(|r| refused(&state, r))? {
        switchboard_inbound::Receipt::Handshake(answer) => handshake_response(&state, answer),
        switchboard_inbound::Receipt::Stored { webhooks, batch } => {
            for webhook in &webhooks {
                let outcome = match (webhook.duplicate, webhook.unsigned) {
                    (true, _) => "duplicate",
                    (false, true) => "unsigned",
                    (false, false) => "stored",
                };
                state.metrics.inbound.get_or_create(&InboundLabels { outcome }).inc();
            }
            let duplicate = webhooks.iter().all(|webhook| webhook.duplicate).then_some(true);
            let mut ids = webhooks.into_iter().map(|webhook| webhook.id.to_string());
            let receipt = match batch {
                true => Receipt { received: true, id: None, ids: Some(ids.collect()), duplicate },
                false => Receipt { received: true, id: ids.next(), ids: None, duplicate },
            };
            Ok((StatusCode::OK, Json(receipt)).into_response())
        }
    }
}

/// The answer to a webhook that was not taken, counted.
fn refused(state: &AppState, refusal: Refusal) -> ApiError {
    let outcome = |outcome| state.metrics.inbound.get_or_create(&InboundLabels { outcome }).inc();
    match refusal {
        Refusal::NoReceiver => ApiError::not_found("webhook receiver at this address"),
        Refusal::RateLimited { wait } => {
            outcome("rate_limited");
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::rate_limited(secs.max(1))
                .with_detail("Too many webhooks from this source or to this connection; retry later")
        }
        Refusal::Rejected { reason } => {
            outcome("rejected");
            state.metrics.inbound_rejections.get_or_create(&RejectionLabels { reason }).inc();
            ApiError::unauthorized("The webhook's signature could not be verified")
        }
        Refusal::BatchTooLarge { items, limit } => ApiError::batch_too_large(items, limit),
        Refusal::Misconfigured(reason) => ApiError::internal(&reason),
        Refusal::Store(error) => error.into(),
        Refusal::Connection(error) => error.into(),
    }
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
    let admitted = state.inbound.admit(&connection_id, &peer.ip().to_string()).await.map_err(|r| refused(&state, r))?;
    let answer = state.inbound.challenge(&admitted, request.uri().query()).map_err(|r| refused(&state, r))?;
    handshake_response(&state, answer)
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
