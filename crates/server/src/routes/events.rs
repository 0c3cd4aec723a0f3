//! Events: what the product publishes. An accepted event is durable before the 2xx.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use switchboard_core::{Id, IdKind};
use switchboard_store::{CreateEventOutcome, Event, EventFilter, Idempotency, NewEvent, Scope};
use switchboard_webhooks::event_types::check_name;
use utoipa::{IntoParams, ToSchema};

use super::{ListResponse, PageParams, path_id};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::metrics::EventLabels;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    /// A registered event type name.
    #[schema(max_length = 128, pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]
    pub event_type: String,
    /// Any JSON value; validated against the event type's schema when it has one.
    #[schema(value_type = serde_json::Value)]
    pub payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    /// `evt_…`, sortable by creation time.
    pub id: String,
    pub event_type: String,
    #[schema(value_type = serde_json::Value)]
    pub payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<Event> for EventOut {
    type Error = ApiError;
    fn try_from(e: Event) -> ApiResult<Self> {
        Ok(Self {
            id: e.id.to_string(),
            event_type: e.event_type,
            payload: RawValue::from_string(e.payload)
                .map_err(|err| ApiError::internal(&format!("stored payload is not JSON: {err}")))?,
            idempotency_key: e.idempotency_key,
            created_at: e.created_at,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = r"^(evt_[0-7][0-9a-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
    /// Only events of this type (empty: every type).
    #[param(max_length = 128, pattern = r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$")]
    pub event_type: Option<String>,
    /// Only events created strictly after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only events created strictly before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::malformed(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_string()))
}

/// Publishes an event (write scope)
///
/// `event_type` must be registered in the tenant (the names of events Switchboard publishes itself
/// are reserved), and `payload`, any JSON value, must satisfy the type's schema when it has one;
/// otherwise a 422 names each failing field. The event and one message per endpoint that should
/// receive it are stored together before the 201, so an accepted event is durable. With an
/// `Idempotency-Key` header (1 to 255 visible ASCII characters), a repeat of the same request (same
/// `event_type` and `payload`, key order aside) returns the first response with
/// `Idempotent-Replayed: true`, even if the event type or its schema has changed since; the same
/// key with a different request is a 409.
///
/// While too many of the tenant's messages are due and not yet delivered (5,000 unless the
/// operator set `--max-due-messages-per-tenant`), new events are refused with a 429 and
/// `Retry-After`, so a burst cannot leave every later event waiting behind a backlog; messages
/// waiting for a scheduled retry do not count.
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "events",
    request_body = CreateEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 visible ASCII characters", pattern = r"^[\x21-\x7E]{1,255}$")),
    responses(
        (status = 201, body = EventOut, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier identical request"))),
        (status = 409, description = "The idempotency key was used with a different request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests for this API key, or too many of the tenant's messages are due and undelivered (`deliveries-behind`); see `Retry-After`", body = crate::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security(("api_key" = []))
)]
pub async fn create_event(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateEvent>,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let key = idempotency_key(&headers)?;
    // serde_json maps are sorted, so this text is canonical: equal payloads hash equally.
    let payload = request.payload.to_string();
    let idempotency = key.map(|key| Idempotency { key, request_hash: request_hash(&request.event_type, &payload) });
    if let Err(refusal) = validate(&state, caller.tenant_id(), &request).await {
        state.metrics.events.get_or_create(&EventLabels { outcome: "rejected" }).inc();
        // A request accepted earlier is answered as it was, even if its event type or schema
        // has changed since.
        let earlier = match &idempotency {
            Some(idempotency) => state.store.find_idempotent_event(caller.tenant_id(), &idempotency.key).await?,
            None => None,
        };
        if let (Some((event, hash)), Some(idempotency)) = (earlier, &idempotency) {
            let outcome = match hash == idempotency.request_hash {
                true => CreateEventOutcome::Replayed(event),
                false => CreateEventOutcome::KeyReused,
            };
            return respond(&state, outcome);
        }
        return Err(refusal);
    }
    let event = NewEvent {
        id: Id::new(IdKind::Event),
        tenant_id: caller.key.tenant_id.clone(),
        event_type: request.event_type,
        payload,
        idempotency,
        created_at: state.clock.now(),
    };
    if let Err(backlogged) = state.webhooks.admit(&caller.key.tenant_id).await {
        state.metrics.events.get_or_create(&EventLabels { outcome: "deferred" }).inc();
        return Err(ApiError::backlogged(&backlogged));
    }
    // The write runs in its own task: if the request is abandoned (timeout, client gone) the
    // write still either commits whole or not at all, never half-way.
    let webhooks = state.webhooks.clone();
    let outcome = tokio::spawn(async move { webhooks.publish(event).await })
        .await
        .map_err(|e| ApiError::internal(&format!("event write task failed: {e}")))??;
    respond(&state, outcome)
}

/// The event type must exist in the tenant and the payload must satisfy its schema.
async fn validate(state: &AppState, tenant_id: &str, request: &CreateEvent) -> ApiResult<()> {
    check_name("event_type", &request.event_type)?;
    if switchboard_webhooks::operational::is_operational(&request.event_type) {
        return Err(ApiError::validation("event_type", "is reserved for events Switchboard publishes itself"));
    }
    let event_type =
        state.lookups.event_type(&*state.store, tenant_id, &request.event_type).await?.ok_or_else(|| {
            ApiError::validation("event_type", format!("no event type named {:?} is registered", request.event_type))
        })?;
    if let Some(schema) = &event_type.schema {
        state
            .schemas
            .validate(tenant_id, &event_type.name, event_type.version, schema, &request.payload)
            .map_err(ApiError::validation_many)?;
    }
    Ok(())
}

fn request_hash(event_type: &str, canonical_payload: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(event_type.as_bytes());
    digest.update([0]);
    digest.update(canonical_payload.as_bytes());
    hex::encode(digest.finalize())
}

fn respond(state: &AppState, outcome: CreateEventOutcome) -> ApiResult<Response> {
    let (event, replayed) = match outcome {
        CreateEventOutcome::Created(event) => (event, false),
        CreateEventOutcome::Replayed(event) => (event, true),
        CreateEventOutcome::KeyReused => {
            return Err(ApiError::conflict("This Idempotency-Key was already used with a different request")
                .with_field("Idempotency-Key", "already used with a different request"));
        }
    };
    let outcome = if replayed { "replayed" } else { "created" };
    state.metrics.events.get_or_create(&EventLabels { outcome }).inc();
    let mut response = (StatusCode::CREATED, Json(EventOut::try_from(event)?)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Lists events, newest first (read scope)
///
/// Optional filters: `event_type` (an exact name; empty means no filter) and `created_after` /
/// `created_before` (RFC 3339, both exclusive). A malformed parameter is a 400 naming it. `limit`
/// is 1 to 100 (default 50); pass the previous page's `next_cursor` as `cursor` to get the next
/// page (it is absent on the last page).
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(EventQuery),
    responses((status = 200, body = ListResponse<EventOut>)),
    security(("api_key" = []))
)]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> ApiResult<Json<ListResponse<EventOut>>> {
    caller.require(Scope::Read)?;
    let page = PageParams { limit: query.limit, cursor: query.cursor }.to_page(IdKind::Event)?;
    // An empty filter is no filter; a name that could never be registered is refused.
    let event_type = query.event_type.filter(|t| !t.is_empty());
    if let Some(event_type) = &event_type {
        check_name("event_type", event_type)
            .map_err(|_| ApiError::malformed("event_type", "dot-separated segments of letters, digits, '_' and '-'"))?;
    }
    let filter = EventFilter {
        page: page.clone(),
        event_type,
        created_after: query.created_after,
        created_before: query.created_before,
    };
    let rows = state.store.list_events(caller.tenant_id(), &filter).await?;
    let list = ListResponse::from_rows(rows, &page, |e| e.id.to_string(), |e| e);
    Ok(Json(ListResponse {
        data: list.data.into_iter().map(EventOut::try_from).collect::<ApiResult<_>>()?,
        next_cursor: list.next_cursor,
    }))
}

/// Gets one event (read scope)
///
/// Returns the event's type, payload, creation time and, when it was published with one, its
/// idempotency key. Its deliveries are listed under `/api/events/{event_id}/messages` and
/// `/api/events/{event_id}/attempts`. An `evt_…` id that is malformed or names no event of the
/// caller's tenant is a 404.
#[utoipa::path(
    get,
    path = "/api/events/{event_id}",
    tag = "events",
    params(("event_id" = String, Path, description = "The event id (`evt_…`)")),
    responses((status = 200, body = EventOut), (status = 404, description = "No such event in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(event_id): Path<String>,
) -> ApiResult<Json<EventOut>> {
    caller.require(Scope::Read)?;
    let id = path_id(IdKind::Event, &event_id, "event")?;
    let event =
        state.store.get_event(caller.tenant_id(), id.as_str()).await?.ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Json(event.try_into()?))
}
