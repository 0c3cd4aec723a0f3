//! Inspecting incoming webhooks: statistics, a connection's inbound log, one stored webhook
//! with its body, and replay into processing.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use switchboard_core::IdKind;

use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// What the receiver and the processing did for the caller's tenant.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InboundStats {
    /// Webhooks received and stored (duplicates not included).
    pub received: u64,
    pub verified: u64,
    /// Accepted without a signature, by connections that accept unsigned webhooks.
    pub unsigned: u64,
    /// Refused webhooks by reason code (`signature_mismatch`, `stale_timestamp`, `no_secret`, …).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Deliveries recognised as a webhook already stored.
    pub duplicates: u64,
    /// Accepted webhooks waiting to be processed: the queue's depth.
    pub pending: u64,
    pub processed: u64,
    pub failed: u64,
    /// Processing loops in this process.
    pub processing_workers: u32,
    /// Distinct source addresses this process refused for their rate in the last hour.
    pub rate_limited_sources: u64,
}

/// Statistics of incoming webhooks (read scope)
///
/// Counts for the caller's tenant, read from the database: webhooks received, verified, accepted
/// unsigned, refused (by reason code such as `signature_mismatch`), recognised as duplicates, and
/// by processing state (`pending`, `processed`, `failed`). Two figures describe only the process
/// that answers: `processing_workers` (its processing loops) and `rate_limited_sources` (distinct
/// source addresses it refused for their rate in the last hour).
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
        unsigned: counts.unsigned,
        rejected: counts.rejected_by_reason,
        duplicates: counts.duplicates,
        pending: counts.pending,
        processed: counts.processed,
        failed: counts.failed,
        processing_workers: state.inbound.processing_workers(),
        rate_limited_sources: state.inbound.limited_sources(),
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
    /// `verified`, `unsigned` (accepted without a secret) or `rejected`.
    pub verification: String,
    /// Why it was refused.
    pub rejection: Option<String>,
    pub provider_event_id: Option<String>,
    /// Later deliveries of the same webhook, acknowledged without being stored again.
    pub duplicates: u32,
    pub status: switchboard_store::InboundStatus,
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

fn inbound_out(inbound: switchboard_store::InboundWebhook, with_body: bool) -> InboundOut {
    let verification = inbound.verification().as_str().to_string();
    InboundOut {
        id: inbound.id.to_string(),
        connection_id: inbound.connection_id.to_string(),
        received_at: inbound.received_at,
        source_ip: inbound.source_ip,
        headers: serde_json::from_str(&inbound.headers).unwrap_or(Value::Null),
        verification,
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
    /// Only webhooks in this state.
    #[param(inline)]
    pub status: Option<switchboard_store::InboundStatus>,
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = r"^(inb_[0-7][0-9a-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
}

/// Lists a connection's incoming webhooks, newest first (read scope)
///
/// Each stored webhook shows when and from which address it arrived, its headers (credential-like
/// values masked), its verification (`verified`, `unsigned` or `rejected`, with the reason), later
/// duplicate deliveries, and its processing `status` and resulting event; the body is only in the
/// single record. Filter with `status` (`pending`, `processed`, `failed` or `rejected`). `limit` is
/// 1 to 100 (default 50); pass the previous page's `next_cursor` as `cursor` to get the next page.
/// An unknown connection is a 404.
#[utoipa::path(
    get,
    path = "/api/integrations/{connection_id}/inbound",
    tag = "incoming webhooks",
    params(("connection_id" = String, Path, description = "`conn_…`"), InboundParams),
    responses((status = 200, body = crate::routes::ListResponse<InboundOut>), (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: crate::auth::Caller,
    Path(connection_id): Path<String>,
    crate::extract::ApiQuery(params): crate::extract::ApiQuery<InboundParams>,
) -> ApiResult<Json<crate::routes::ListResponse<InboundOut>>> {
    caller.require(switchboard_store::Scope::Read)?;
    let id = crate::routes::path_id(IdKind::Connection, &connection_id, "connection")?;
    state.connections.get(&caller.key.tenant_id, id.as_str()).await?;
    let page = crate::routes::PageParams { limit: params.limit, cursor: params.cursor }.to_page(IdKind::Inbound)?;
    let filter = switchboard_store::InboundFilter { connection_id: Some(id.to_string()), status: params.status };
    let rows = state.store.list_inbound(caller.tenant_id(), &filter, &page).await?;
    Ok(Json(crate::routes::ListResponse::from_rows(rows, &page, |i| i.id.to_string(), |i| inbound_out(i, false))))
}

/// Gets one incoming webhook, with its body (read scope)
///
/// Returns the stored webhook as listed, plus its raw body as text (bytes that are not UTF-8 are
/// replaced). An `inb_…` id that names no webhook of the caller's tenant, or one received for
/// another connection than the one in the path, is a 404.
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
) -> ApiResult<switchboard_store::InboundWebhook> {
    let id = crate::routes::path_id(IdKind::Inbound, inbound_id, "incoming webhook")?;
    state
        .store
        .get_inbound(caller.tenant_id(), id.as_str())
        .await?
        .filter(|inbound| inbound.connection_id.as_str() == connection_id)
        .ok_or_else(|| ApiError::not_found("incoming webhook"))
}

/// Processes a stored, accepted webhook again (write scope)
///
/// Puts the webhook back in the processing queue as `pending`: after a manifest or subscription
/// change, say. Processing is idempotent per webhook: one that became an event finds that event
/// again, and endpoints subscribed since receive it while those that had it are not sent it twice.
/// The 202 answer is the webhook as queued. A webhook that failed verification cannot be replayed
/// (409); an unknown one is a 404.
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
        .inbound
        .replay(caller.tenant_id(), inbound.id.as_str())
        .await?
        .ok_or_else(|| ApiError::conflict("A webhook that failed verification cannot be replayed"))?;
    Ok((StatusCode::ACCEPTED, Json(inbound_out(replayed, false))))
}
