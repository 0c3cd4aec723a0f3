//! A generic REST API for the generic connector: every auth mode (Bearer, Basic, an API key
//! in a header or the query, client-credentials tokens from `/oauth/token`, and none under
//! `/public`), page pagination over plain arrays, and helpers for proxy tests: `/echo/…`
//! answers with what it received, `/status/{code}` with that status, `/garbage` with junk.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::{REST_API_KEY, REST_CLIENT_ID, REST_CLIENT_SECRET, REST_PASSWORD, REST_TOKEN, REST_USERNAME};
use crate::gate::{basic, bearer};

pub(crate) fn router(state: Arc<State>) -> Router<Arc<State>> {
    let api = Router::new()
        .route("/health", get(health))
        .route("/items", get(list_items).post(create_item))
        .route("/items/{id}", get(get_item))
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/status/{code}", any(status))
        .route("/garbage", get(garbage));
    Router::new()
        .route("/oauth/token", post(token))
        .nest("/public", api.clone())
        .merge(api.route_layer(axum::middleware::from_fn_with_state(state, authenticate_layer)))
}

async fn authenticate_layer(
    AxumState(state): AxumState<Arc<State>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let query_key = request
        .uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "api_key" && v == REST_API_KEY))
        .unwrap_or(false);
    let issued = |token: &str| state.issued_tokens.lock().expect("sandbox lock").iter().any(|t| t == token);
    let ok = match bearer(headers) {
        Some(token) => token == REST_TOKEN || issued(token),
        None => {
            basic(headers).is_some_and(|(u, p)| u == REST_USERNAME && p == REST_PASSWORD)
                || headers
                    .iter()
                    .any(|(_, v)| v.to_str().is_ok_and(|v| v == REST_API_KEY || v == format!("ApiKey {REST_API_KEY}")))
                || query_key
        }
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer realm=\"sandbox\"")],
            axum::Json(json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    next.run(request).await
}

/// RFC 6749 §4.4: the client authenticates with Basic or with form fields.
async fn token(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let no_store = [("cache-control", "no-store"), ("pragma", "no-cache")];
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (StatusCode::BAD_REQUEST, no_store, axum::Json(json!({"error": "unsupported_grant_type"})))
            .into_response();
    }
    let client = basic(&headers).or_else(|| Some((form.get("client_id")?.clone(), form.get("client_secret")?.clone())));
    if client != Some((REST_CLIENT_ID.to_string(), REST_CLIENT_SECRET.to_string())) {
        return (StatusCode::UNAUTHORIZED, no_store, axum::Json(json!({"error": "invalid_client"}))).into_response();
    }
    let mut issued = state.issued_tokens.lock().expect("sandbox lock");
    let token = format!("rest-cc-{}", issued.len() + 1);
    issued.push(token.clone());
    (no_store, axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))).into_response()
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

fn items(state: &State) -> Vec<Value> {
    let mut all: Vec<Value> = (1..=57).map(|i| json!({"id": i, "name": format!("item {i}")})).collect();
    all.extend(state.stored("rest.items"));
    all
}

#[derive(Deserialize)]
struct Page {
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn list_items(AxumState(state): AxumState<Arc<State>>, Query(page): Query<Page>) -> axum::Json<Value> {
    let per_page = page.per_page.unwrap_or(20).clamp(1, 100);
    let current = page.page.unwrap_or(1).max(1);
    axum::Json(Value::Array(crate::gate::slice(&items(&state), (current - 1) * per_page, per_page)))
}

async fn get_item(AxumState(state): AxumState<Arc<State>>, Path(id): Path<u64>) -> Response {
    match items(&state).into_iter().find(|item| item["id"] == id) {
        Some(item) => axum::Json(item).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"error": "not_found"}))).into_response(),
    }
}

async fn create_item(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    let Ok(Value::Object(mut item)) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "expected a JSON object"}))).into_response();
    };
    item.insert("id".into(), json!(items(&state).len() + 1));
    state.push("rest.items", Value::Object(item.clone()));
    (StatusCode::CREATED, axum::Json(Value::Object(item))).into_response()
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.to_str().unwrap_or("<binary>").to_string()))
        .collect();
    let body_text =
        String::from_utf8(body.to_vec()).unwrap_or_else(|_| base64::engine::general_purpose::STANDARD.encode(&body));
    axum::Json(
        json!({"method": method.as_str(), "path": uri.path(), "query": uri.query(), "headers": headers, "body": body_text}),
    )
}

async fn status(Path(code): Path<u16>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(json!({"status": code}))).into_response()
}

async fn garbage() -> Response {
    ([("content-type", "application/json")], "\u{1}<<not json at all>>").into_response()
}
