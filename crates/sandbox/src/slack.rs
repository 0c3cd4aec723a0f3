//! Slack's Web API (https://api.slack.com/web): `Authorization: Bearer xoxb-…`; every answer is
//! HTTP 200 with `ok: true|false` (errors such as `invalid_auth` arrive with a 200);
//! cursor pagination through `response_metadata.next_cursor` ("" on the last page).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::SLACK_BOT_TOKEN;
use crate::gate::bearer;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/api/auth.test", post(auth_test).get(auth_test))
        .route("/api/chat.postMessage", post(post_message))
        .route("/api/conversations.list", get(conversations))
        .route("/api/users.list", get(users))
}

fn check(headers: &HeaderMap) -> Result<(), axum::Json<Value>> {
    match bearer(headers) {
        None => Err(axum::Json(json!({"ok": false, "error": "not_authed"}))),
        Some(SLACK_BOT_TOKEN) => Ok(()),
        Some(_) => Err(axum::Json(json!({"ok": false, "error": "invalid_auth"}))),
    }
}

async fn auth_test(headers: HeaderMap) -> axum::Json<Value> {
    if let Err(error) = check(&headers) {
        return error;
    }
    axum::Json(json!({"ok": true, "url": "https://sandbox.slack.com/", "team": "Sandbox", "user": "switchboard",
                      "team_id": "T0SANDBOX", "user_id": "U0SANDBOX", "bot_id": "B0SANDBOX"}))
}

/// Slack takes JSON (`application/json`) or form-encoded arguments.
async fn post_message(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    if let Err(error) = check(&headers) {
        return error;
    }
    let is_json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let args: Value = if is_json {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) => return axum::Json(json!({"ok": false, "error": "invalid_json"})),
        }
    } else {
        let pairs: serde_json::Map<String, Value> =
            url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect();
        Value::Object(pairs)
    };
    let Some(channel) = args.get("channel").and_then(Value::as_str).filter(|c| !c.is_empty()) else {
        return axum::Json(json!({"ok": false, "error": "channel_not_found"}));
    };
    let text = args.get("text").and_then(Value::as_str).unwrap_or("");
    if text.is_empty() && args.get("blocks").is_none() {
        return axum::Json(json!({"ok": false, "error": "no_text"}));
    }
    let ts = format!("1700000000.{:06}", state.stored("slack.messages").len() + 1);
    let message = json!({"type": "message", "text": text, "user": "U0SANDBOX", "ts": ts, "bot_id": "B0SANDBOX"});
    state.push("slack.messages", json!({"channel": channel, "message": message}));
    axum::Json(json!({"ok": true, "channel": channel, "ts": ts, "message": message}))
}

#[derive(Deserialize)]
struct Page {
    cursor: Option<String>,
    limit: Option<usize>,
}

fn page_of(items: Vec<Value>, page: &Page, key: &str) -> Value {
    let offset = page
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|text| text.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
        .unwrap_or(0);
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let next = if offset + limit < items.len() {
        base64::engine::general_purpose::STANDARD.encode(format!("offset:{}", offset + limit))
    } else {
        String::new()
    };
    json!({"ok": true, key: crate::gate::slice(&items, offset, limit), "response_metadata": {"next_cursor": next}})
}

async fn conversations(headers: HeaderMap, Query(page): Query<Page>) -> axum::Json<Value> {
    if let Err(error) = check(&headers) {
        return error;
    }
    let channels = (1..=7)
        .map(|i| json!({"id": format!("C{i:04}"), "name": format!("channel-{i}"), "is_channel": true, "is_archived": false, "num_members": i * 3}))
        .collect();
    axum::Json(page_of(channels, &page, "channels"))
}

async fn users(headers: HeaderMap, Query(page): Query<Page>) -> axum::Json<Value> {
    if let Err(error) = check(&headers) {
        return error;
    }
    let members = (1..=5)
        .map(|i| json!({"id": format!("U{i:04}"), "name": format!("user{i}"), "real_name": format!("User {i}"), "deleted": false}))
        .collect();
    axum::Json(page_of(members, &page, "members"))
}
