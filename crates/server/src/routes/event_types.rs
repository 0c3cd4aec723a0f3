//! Event types: the names events may carry, each with an optional JSON Schema for payloads.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_store::{EventType, Scope};
use switchboard_webhooks::event_types::check_name;
use utoipa::ToSchema;

use super::{EventTypePage, ListResponse, present};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventType {
    /// Dot-separated segments of letters, digits, `_` and `-`, e.g. `video.generated`.
    #[schema(max_length = 128, pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$")]
    pub description: String,
    /// A JSON Schema object (draft 2020-12 unless it says otherwise) that payloads of this
    /// type must satisfy. It must be self-contained: remote `$ref`s are not fetched.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEventType {
    #[schema(max_length = 2000, pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$")]
    pub description: Option<String>,
    /// A new schema, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Option<Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeOut {
    pub id: String,
    pub name: String,
    pub description: String,
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Increases with every change.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EventType> for EventTypeOut {
    fn from(t: EventType) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name,
            description: t.description,
            schema: t.schema.and_then(|s| serde_json::from_str(&s).ok()),
            version: t.version,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A name in a path that could never have been registered names nothing.
fn event_type_in_path(name: &str) -> ApiResult<&str> {
    check_name("name", name).map(|()| name).map_err(|_| ApiError::not_found("event type"))
}

/// Registers an event type (write scope)
///
/// Events may only carry a registered type. `name` is dot-separated segments of letters, digits,
/// `_` and `-`, at most 128 characters (e.g. `video.generated`), and is unique in the tenant: a
/// taken name is a 409. `description` is free text of at most 2000 characters. `schema`, when
/// given, is a JSON Schema object (draft 2020-12 unless it says otherwise) that every payload of
/// this type must satisfy; it must be self-contained, as remote `$ref`s are not fetched, and one
/// that does not compile is a 422.
#[utoipa::path(
    post,
    path = "/api/event-types",
    tag = "events",
    request_body = CreateEventType,
    responses((status = 201, body = EventTypeOut), (status = 409, description = "The name is taken", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn create_event_type(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateEventType>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    caller.require(Scope::Write)?;
    let created = state
        .webhooks
        .create_event_type(&caller.key.tenant_id, request.name, request.description, request.schema.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Lists event types, newest first (read scope)
///
/// Returns the tenant's registered event types with their descriptions, schemas and versions.
/// `limit` is 1 to 100 (default 50); pass the previous page's `next_cursor` as `cursor` to get the
/// next page (it is absent on the last page).
#[utoipa::path(
    get,
    path = "/api/event-types",
    tag = "events",
    params(EventTypePage),
    responses((status = 200, body = ListResponse<EventTypeOut>)),
    security(("api_key" = []))
)]
pub async fn list_event_types(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<EventTypePage>,
) -> ApiResult<Json<ListResponse<EventTypeOut>>> {
    caller.require(Scope::Read)?;
    let page = params.to_page()?;
    let rows = state.store.list_event_types(caller.tenant_id(), &page).await?;
    Ok(Json(ListResponse::from_rows(rows, &page, |t| t.id.to_string(), EventTypeOut::from)))
}

/// Gets one event type by name (read scope)
///
/// `name` is the registered name, e.g. `video.generated`. Returns the description, the schema (null
/// when it has none), `version` and timestamps. A name that is not registered in the caller's
/// tenant, or could never be, is a 404.
#[utoipa::path(
    get,
    path = "/api/event-types/{name}",
    tag = "events",
    params(("name" = String, Path, description = "The event type name")),
    responses((status = 200, body = EventTypeOut), (status = 404, description = "No such event type", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_event_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<EventTypeOut>> {
    caller.require(Scope::Read)?;
    let name = event_type_in_path(&name)?;
    let found =
        state.store.get_event_type(caller.tenant_id(), name).await?.ok_or_else(|| ApiError::not_found("event type"))?;
    Ok(Json(found.into()))
}

/// Changes an event type's description or schema (write scope)
///
/// Fields left out of the body stay as they are, and `schema: null` removes the schema; the name
/// cannot be changed. A new schema must be a JSON Schema object that compiles (422 otherwise) and
/// applies to events published from then on. Every change increases `version`. Other processes
/// sharing the database may validate against the previous schema for up to 5 seconds. An unknown
/// name is a 404.
#[utoipa::path(
    patch,
    path = "/api/event-types/{name}",
    tag = "events",
    params(("name" = String, Path, description = "The event type name")),
    request_body = UpdateEventType,
    responses((status = 200, body = EventTypeOut), (status = 404, description = "No such event type", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn update_event_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<UpdateEventType>,
) -> ApiResult<Json<EventTypeOut>> {
    caller.require(Scope::Write)?;
    let name = event_type_in_path(&name)?;
    let updated = state
        .webhooks
        .update_event_type(
            &caller.key.tenant_id,
            name,
            request.description,
            request.schema.as_ref().map(Option::as_ref),
        )
        .await?;
    state.lookups.forget_event_types();
    Ok(Json(updated.into()))
}
