//! HubSpot's CRM API v3 (https://developers.hubspot.com/docs/api/crm): private-app or OAuth
//! Bearer tokens; `{results, paging: {next: {after}}}` pages; errors
//! `{status: "error", message, category}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::HUBSPOT_TOKEN;
use crate::gate::bearer;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new().route("/crm/v3/objects/contacts", get(list_contacts).post(create_contact))
}

fn check(headers: &HeaderMap) -> Result<(), Response> {
    if bearer(headers) == Some(HUBSPOT_TOKEN) {
        return Ok(());
    }
    Err((
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"status": "error", "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                          "correlationId": "00000000-0000-0000-0000-000000000000", "category": "INVALID_AUTHENTICATION"})),
    )
        .into_response())
}

fn contacts(state: &State) -> Vec<Value> {
    let mut all: Vec<Value> = (1..=12)
        .map(|i| json!({"id": i.to_string(), "properties": {"email": format!("contact{i}@example.com"), "firstname": format!("First{i}")},
                        "archived": false}))
        .collect();
    all.extend(state.stored("hubspot.contacts"));
    all
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_contacts(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let all = contacts(&state);
    let limit = page.limit.unwrap_or(10).clamp(1, 100);
    let start = page.after.as_deref().and_then(|a| a.parse::<usize>().ok()).unwrap_or(0);
    let results = crate::gate::slice(&all, start, limit);
    let mut body = json!({"results": results});
    if start + limit < all.len() {
        let after = (start + limit).to_string();
        body["paging"] = json!({"next": {"after": after, "link": format!("{}/crm/v3/objects/contacts?after={after}", state.base("hubspot"))}});
    }
    axum::Json(body).into_response()
}

async fn create_contact(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let properties = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("properties").cloned());
    let Some(properties) = properties.filter(Value::is_object) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "error", "message": "Invalid input JSON: `properties` is required", "category": "VALIDATION_ERROR"})),
        )
            .into_response();
    };
    let id = (contacts(&state).len() + 1).to_string();
    let contact = json!({"id": id, "properties": properties, "archived": false});
    state.push("hubspot.contacts", contact.clone());
    (StatusCode::CREATED, axum::Json(contact)).into_response()
}
