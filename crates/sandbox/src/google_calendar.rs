//! Google Calendar API v3 (https://developers.google.com/calendar/api/v3/reference): OAuth
//! Bearer tokens, `pageToken`/`nextPageToken` pagination with `maxResults`, errors
//! `{error: {code, message, status}}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::GOOGLE_ACCESS_TOKEN;
use crate::gate::bearer;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/calendar/v3/users/me/calendarList", get(calendar_list))
        .route("/calendar/v3/calendars/{calendar}/events", get(list_events).post(create_event))
}

fn google_error(status: StatusCode, text: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": status.as_u16(), "message": message, "status": text}})))
        .into_response()
}

fn check(headers: &HeaderMap) -> Result<(), Response> {
    if bearer(headers) == Some(GOOGLE_ACCESS_TOKEN) {
        return Ok(());
    }
    Err(google_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    max_results: Option<usize>,
    page_token: Option<String>,
}

fn page(kind: &str, items: Vec<Value>, page: &Page) -> Value {
    let start =
        page.page_token.as_deref().and_then(|t| t.strip_prefix("tok_")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let max = page.max_results.unwrap_or(100).clamp(1, 250);
    let mut body = json!({"kind": kind, "items": crate::gate::slice(&items, start, max)});
    if start + max < items.len() {
        body["nextPageToken"] = json!(format!("tok_{}", start + max));
    }
    body
}

async fn calendar_list(headers: HeaderMap, Query(params): Query<Page>) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let calendars = (1..=4)
        .map(|i| json!({"kind": "calendar#calendarListEntry", "id": if i == 1 { "primary".to_string() } else { format!("cal{i}@group.calendar.google.com") }, "summary": format!("Calendar {i}")}))
        .collect();
    axum::Json(page("calendar#calendarList", calendars, &params)).into_response()
}

async fn list_events(
    AxumState(state): AxumState<Arc<State>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Page>,
) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let mut events: Vec<Value> = (1..=9)
        .map(|i| json!({"kind": "calendar#event", "id": format!("evt{i}"), "summary": format!("Meeting {i}"), "status": "confirmed"}))
        .collect();
    events.extend(state.stored(&format!("google.events.{calendar}")));
    axum::Json(page("calendar#events", events, &params)).into_response()
}

async fn create_event(
    AxumState(state): AxumState<Arc<State>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if input["start"].is_null() || input["end"].is_null() {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "Missing end time.");
    }
    let id = format!("created{}", state.stored(&format!("google.events.{calendar}")).len() + 1);
    let event = json!({"kind": "calendar#event", "id": id, "summary": input["summary"], "start": input["start"], "end": input["end"], "status": "confirmed"});
    state.push(&format!("google.events.{calendar}"), event.clone());
    axum::Json(event).into_response()
}
