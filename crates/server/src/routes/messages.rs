//! Deliveries: messages (one event for one endpoint), their attempts, resending and
//! recovering, and per-endpoint statistics.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_core::{Id, IdKind};
use switchboard_store::{Attempt, AttemptFilter, Message, MessageFilter, MessageStatus, Scope};
use utoipa::{IntoParams, ToSchema};

use super::endpoints::find_endpoint;
use super::{ListResponse, PageParams, path_id};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    /// `msg_…`
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: MessageStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Message> for MessageOut {
    fn from(m: Message) -> Self {
        Self {
            id: m.id.to_string(),
            event_id: m.event_id.to_string(),
            endpoint_id: m.endpoint_id.to_string(),
            status: m.status,
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at.filter(|_| m.status == MessageStatus::Pending),
            last_status_code: m.last_status_code,
            last_error: m.last_error,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    /// `atmpt_…`
    pub id: String,
    pub message_id: String,
    pub endpoint_id: String,
    /// 1 for the first attempt of the message.
    pub attempt_number: i64,
    pub succeeded: bool,
    pub response_status: Option<i64>,
    /// A subset of the response headers.
    #[schema(value_type = Option<Object>)]
    pub response_headers: Option<serde_json::Value>,
    /// At most 4 KiB of the response body.
    pub response_body: Option<String>,
    /// Why the attempt failed before an answer could be had or made.
    pub error_kind: Option<switchboard_store::AttemptErrorKind>,
    pub error: Option<String>,
    pub duration_ms: f64,
    pub created_at: DateTime<Utc>,
}

impl From<Attempt> for AttemptOut {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id.to_string(),
            message_id: a.message_id.to_string(),
            endpoint_id: a.endpoint_id.to_string(),
            attempt_number: a.attempt_number,
            succeeded: a.succeeded,
            response_status: a.response_status,
            response_headers: a.response_headers.and_then(|h| serde_json::from_str(&h).ok()),
            response_body: a.response_body,
            error_kind: a.error_kind,
            error: a.error,
            duration_ms: a.duration_us as f64 / 1000.0,
            created_at: a.created_at,
        }
    }
}

/// An attempt's outcome, to filter by.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = r"^(msg_[0-7][0-9a-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
    /// Only messages in this state.
    #[param(inline)]
    pub status: Option<MessageStatus>,
    /// Only messages created strictly after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only messages created strictly before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

impl MessageQuery {
    fn filter(&self) -> ApiResult<MessageFilter> {
        Ok(MessageFilter {
            page: PageParams { limit: self.limit, cursor: self.cursor.clone() }.to_page(IdKind::Message)?,
            status: self.status,
            created_after: self.created_after,
            created_before: self.created_before,
            ..MessageFilter::default()
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = r"^(atmpt_[0-7][0-9a-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
    /// Only attempts with this outcome.
    #[param(inline)]
    pub status: Option<AttemptOutcome>,
    /// Only attempts made strictly after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only attempts made strictly before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

impl AttemptQuery {
    fn filter(&self) -> ApiResult<AttemptFilter> {
        Ok(AttemptFilter {
            page: PageParams { limit: self.limit, cursor: self.cursor.clone() }.to_page(IdKind::Attempt)?,
            succeeded: self.status.map(|status| matches!(status, AttemptOutcome::Succeeded)),
            created_after: self.created_after,
            created_before: self.created_before,
            ..AttemptFilter::default()
        })
    }
}

async fn messages(
    state: &AppState,
    caller: &Caller,
    filter: MessageFilter,
) -> ApiResult<Json<ListResponse<MessageOut>>> {
    let rows = state.store.list_messages(caller.tenant_id(), &filter).await?;
    Ok(Json(ListResponse::from_rows(rows, &filter.page, |m| m.id.to_string(), MessageOut::from)))
}

async fn attempts(
    state: &AppState,
    caller: &Caller,
    filter: AttemptFilter,
) -> ApiResult<Json<ListResponse<AttemptOut>>> {
    let rows = state.store.list_attempts(caller.tenant_id(), &filter).await?;
    Ok(Json(ListResponse::from_rows(rows, &filter.page, |a| a.id.to_string(), AttemptOut::from)))
}

/// Lists an endpoint's messages, newest first (read scope)
///
/// A message is one event for this endpoint, with its delivery `status` (`pending`, `succeeded` or
/// `failed`), the attempts made, the next attempt's time while pending, and the last response
/// status or error. Filter with `status` (`pending`, `succeeded` or `failed`) and `created_after` /
/// `created_before` (RFC 3339, both exclusive). `limit` is 1 to 100 (default 50); pass the previous
/// page's `next_cursor` as `cursor` to get the next page. An unknown endpoint is a 404.
#[utoipa::path(
    get,
    path = "/api/integrations/webhooks/{endpoint_id}/messages",
    tag = "deliveries",
    params(("endpoint_id" = String, Path, description = "`ep_…`"), MessageQuery),
    responses((status = 200, body = ListResponse<MessageOut>), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn endpoint_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
    ApiQuery(query): ApiQuery<MessageQuery>,
) -> ApiResult<Json<ListResponse<MessageOut>>> {
    caller.require(Scope::Read)?;
    let endpoint = find_endpoint(&state, &caller, &endpoint_id).await?;
    let filter = MessageFilter { endpoint_id: Some(endpoint.id.to_string()), ..query.filter()? };
    messages(&state, &caller, filter).await
}

/// Lists the attempts made to an endpoint, newest first (read scope)
///
/// Each attempt records whether it succeeded, the response status, a subset of the response
/// headers, at most 4 KiB of the response body, the duration, and on failure an `error_kind` such
/// as `timeout` or `connection_error`. Filter with `status` (`succeeded` or `failed`) and
/// `created_after` / `created_before` (RFC 3339, both exclusive). `limit` is 1 to 100 (default 50);
/// pass the previous page's `next_cursor` as `cursor` to get the next page. An unknown endpoint is
/// a 404.
#[utoipa::path(
    get,
    path = "/api/integrations/webhooks/{endpoint_id}/attempts",
    tag = "deliveries",
    params(("endpoint_id" = String, Path, description = "`ep_…`"), AttemptQuery),
    responses((status = 200, body = ListResponse<AttemptOut>), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn endpoint_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Json<ListResponse<AttemptOut>>> {
    caller.require(Scope::Read)?;
    let endpoint = find_endpoint(&state, &caller, &endpoint_id).await?;
    let filter = AttemptFilter { endpoint_id: Some(endpoint.id.to_string()), ..query.filter()? };
    attempts(&state, &caller, filter).await
}

async fn find_event_id(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Id> {
    let id = path_id(IdKind::Event, raw, "event")?;
    match state.store.get_event(caller.tenant_id(), id.as_str()).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::not_found("event")),
    }
}

/// Lists the messages an event fanned out to, newest first (read scope)
///
/// One message per endpoint the event was to be delivered to, with its delivery `status`
/// (`pending`, `succeeded` or `failed`), the attempts made and the last result. Filter with
/// `status` (`pending`, `succeeded` or `failed`) and `created_after` / `created_before` (RFC 3339,
/// both exclusive). `limit` is 1 to 100 (default 50); pass the previous page's `next_cursor` as
/// `cursor` to get the next page. An unknown event is a 404.
#[utoipa::path(
    get,
    path = "/api/events/{event_id}/messages",
    tag = "deliveries",
    params(("event_id" = String, Path, description = "`evt_…`"), MessageQuery),
    responses((status = 200, body = ListResponse<MessageOut>), (status = 404, description = "No such event in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn event_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(event_id): Path<String>,
    ApiQuery(query): ApiQuery<MessageQuery>,
) -> ApiResult<Json<ListResponse<MessageOut>>> {
    caller.require(Scope::Read)?;
    let id = find_event_id(&state, &caller, &event_id).await?;
    let filter = MessageFilter { event_id: Some(id.to_string()), ..query.filter()? };
    messages(&state, &caller, filter).await
}

/// Lists the attempts made for an event, to every endpoint (read scope)
///
/// Newest first, across every message of the event; each attempt names its message and endpoint and
/// records the response status, a subset of the response headers, at most 4 KiB of the response
/// body, the duration, or the error. Filter with `status` (`succeeded` or `failed`) and
/// `created_after` / `created_before` (RFC 3339, both exclusive). `limit` is 1 to 100 (default 50);
/// pass the previous page's `next_cursor` as `cursor` to get the next page. An unknown event is a
/// 404.
#[utoipa::path(
    get,
    path = "/api/events/{event_id}/attempts",
    tag = "deliveries",
    params(("event_id" = String, Path, description = "`evt_…`"), AttemptQuery),
    responses((status = 200, body = ListResponse<AttemptOut>), (status = 404, description = "No such event in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn event_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(event_id): Path<String>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Json<ListResponse<AttemptOut>>> {
    caller.require(Scope::Read)?;
    let id = find_event_id(&state, &caller, &event_id).await?;
    let filter = AttemptFilter { event_id: Some(id.to_string()), ..query.filter()? };
    attempts(&state, &caller, filter).await
}

async fn find_message(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Message> {
    let id = path_id(IdKind::Message, raw, "message")?;
    state.store.get_message(caller.tenant_id(), id.as_str()).await?.ok_or_else(|| ApiError::not_found("message"))
}

/// Gets one message (read scope)
///
/// A message is one event for one endpoint. Returns its `status` (`pending`, `succeeded`, or
/// `failed` when every attempt failed or the endpoint went away), the attempts made, the next
/// attempt's time while pending, and the last response status and error. An unknown `msg_…` id is a
/// 404.
#[utoipa::path(
    get,
    path = "/api/messages/{message_id}",
    tag = "deliveries",
    params(("message_id" = String, Path, description = "`msg_…`")),
    responses((status = 200, body = MessageOut), (status = 404, description = "No such message in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(message_id): Path<String>,
) -> ApiResult<Json<MessageOut>> {
    caller.require(Scope::Read)?;
    Ok(Json(find_message(&state, &caller, &message_id).await?.into()))
}

/// Lists the attempts of one message, newest first (read scope)
///
/// Each attempt has its number (1 for the first), whether it succeeded, the response status, a
/// subset of the response headers, at most 4 KiB of the response body and the duration, or the
/// error. Filter with `status` (`succeeded` or `failed`) and `created_after` / `created_before`
/// (RFC 3339, both exclusive). `limit` is 1 to 100 (default 50); pass the previous page's
/// `next_cursor` as `cursor` to get the next page. An unknown message is a 404.
#[utoipa::path(
    get,
    path = "/api/messages/{message_id}/attempts",
    tag = "deliveries",
    params(("message_id" = String, Path, description = "`msg_…`"), AttemptQuery),
    responses((status = 200, body = ListResponse<AttemptOut>), (status = 404, description = "No such message in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn message_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(message_id): Path<String>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Json<ListResponse<AttemptOut>>> {
    caller.require(Scope::Read)?;
    let message = find_message(&state, &caller, &message_id).await?;
    let filter = AttemptFilter { message_id: Some(message.id.to_string()), ..query.filter()? };
    attempts(&state, &caller, filter).await
}

/// Sends a message again now, with a fresh retry schedule (write scope)
///
/// A `succeeded` or `failed` message goes back to `pending`, due now, with its retry schedule
/// restarted; the 202 answer is the message as it now is. A message that is still pending is left
/// as it is and returned unchanged, so repeating the call before it is delivered changes nothing.
/// An unknown message is a 404.
#[utoipa::path(
    post,
    path = "/api/messages/{message_id}/resend",
    tag = "deliveries",
    params(("message_id" = String, Path, description = "`msg_…`")),
    responses((status = 202, body = MessageOut), (status = 404, description = "No such message in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn resend_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(message_id): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<MessageOut>)> {
    caller.require(Scope::Write)?;
    let id = path_id(IdKind::Message, &message_id, "message")?;
    let message = state
        .webhooks
        .resend(&caller.key.tenant_id, id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(message.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// Resend every failed message of the endpoint created at or after this time.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoverOut {
    /// How many failed messages were queued again.
    pub recovered: u64,
}

/// Resends every failed message of an endpoint since a time (write scope)
///
/// Every `failed` message of the endpoint created at or after `since` (RFC 3339, not in the future)
/// goes back to `pending`, due now, with a fresh retry schedule; pending and succeeded messages are
/// not touched. Use it once a receiver that was down, or an endpoint that was disabled, is back.
/// The 202 answer says how many messages were queued again. An unknown endpoint is a 404.
#[utoipa::path(
    post,
    path = "/api/integrations/webhooks/{endpoint_id}/recover",
    tag = "deliveries",
    params(("endpoint_id" = String, Path, description = "`ep_…`")),
    request_body = Recover,
    responses((status = 202, body = RecoverOut), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
    ApiJson(request): ApiJson<Recover>,
) -> ApiResult<(axum::http::StatusCode, Json<RecoverOut>)> {
    caller.require(Scope::Write)?;
    let id = path_id(IdKind::Endpoint, &endpoint_id, "endpoint")?;
    let recovered = state.webhooks.recover(&caller.key.tenant_id, id.as_str(), request.since).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(RecoverOut { recovered })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsOut {
    /// How many of the latest attempts the figures cover (at most 1000).
    pub attempts: u64,
    /// Successful attempts among them, 0 to 1.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Messages by status.
    pub messages: BTreeMap<String, u64>,
}

/// Delivery statistics of an endpoint over its latest attempts (read scope)
///
/// The figures cover the endpoint's latest attempts, at most 1000 (`attempts` says how many): the
/// success rate (0 to 1), the median and 99th-percentile durations in milliseconds, and the latest
/// failure's error and time. They are null when there are no attempts (the error also when none
/// failed). `messages` counts all the endpoint's messages by status. An unknown endpoint is a 404.
#[utoipa::path(
    get,
    path = "/api/integrations/webhooks/{endpoint_id}/stats",
    tag = "deliveries",
    params(("endpoint_id" = String, Path, description = "`ep_…`")),
    responses((status = 200, body = StatsOut), (status = 404, description = "No such endpoint in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn endpoint_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_id): Path<String>,
) -> ApiResult<Json<StatsOut>> {
    caller.require(Scope::Read)?;
    let endpoint = find_endpoint(&state, &caller, &endpoint_id).await?;
    let (samples, counts) = tokio::try_join!(
        state.store.recent_attempts(caller.tenant_id(), endpoint.id.as_str(), switchboard_webhooks::stats::SAMPLE),
        state.store.message_counts(caller.tenant_id(), endpoint.id.as_str()),
    )?;
    let stats = switchboard_webhooks::stats::summarise(&samples, counts);
    Ok(Json(StatsOut {
        attempts: stats.attempts,
        success_rate: stats.success_rate,
        p50_ms: stats.p50_ms,
        p99_ms: stats.p99_ms,
        last_error: stats.last_error,
        last_error_at: stats.last_error_at,
        messages: stats.messages,
    }))
}
