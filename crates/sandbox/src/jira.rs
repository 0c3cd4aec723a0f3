//! Jira Cloud's REST API v3 (https://developer.atlassian.com/cloud/jira/platform/rest/v3/):
//! one site per subdomain (`/{subdomain}/rest/api/3/…` here), Basic auth with an e-mail and
//! an API token, offset pagination (`startAt`, `maxResults`, `total`), errors
//! `{errorMessages, errors}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::{JIRA_API_TOKEN, JIRA_EMAIL};
use crate::gate::basic;

/// The sites that exist in the sandbox.
const SITES: [&str; 2] = ["acme", "globex"];

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/{site}/rest/api/3/myself", get(myself))
        .route("/{site}/rest/api/3/search", get(search))
        .route("/{site}/rest/api/3/issue", post(create_issue))
        .route("/{site}/rest/api/3/issue/{key}", get(get_issue))
}

fn errors(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"errorMessages": [message], "errors": {}}))).into_response()
}

fn check(site: &str, headers: &HeaderMap) -> Result<(), Response> {
    if !SITES.contains(&site) {
        return Err(errors(StatusCode::NOT_FOUND, "Site temporarily unavailable"));
    }
    match basic(headers) {
        Some((email, token)) if email == JIRA_EMAIL && token == JIRA_API_TOKEN => Ok(()),
        _ => Err(errors(StatusCode::UNAUTHORIZED, "Client must be authenticated to access this resource.")),
    }
}

fn issues(state: &State, site: &str) -> Vec<Value> {
    let mut all: Vec<Value> = (1..=23)
        .map(|i| json!({"id": (10000 + i).to_string(), "key": format!("SB-{i}"), "fields": {"summary": format!("Issue {i} on {site}"), "status": {"name": "To Do"}}}))
        .collect();
    all.extend(state.stored(&format!("jira.{site}.issues")));
    all
}

async fn myself(Path(site): Path<String>, headers: HeaderMap) -> Response {
    if let Err(response) = check(&site, &headers) {
        return response;
    }
    axum::Json(json!({"accountId": "5b10a2844c20165700ede21g", "emailAddress": JIRA_EMAIL, "displayName": "Sandbox Developer", "active": true}))
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchParams {
    jql: Option<String>,
    start_at: Option<usize>,
    max_results: Option<usize>,
}

async fn search(
    AxumState(state): AxumState<Arc<State>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Response {
    if let Err(response) = check(&site, &headers) {
        return response;
    }
    if params.jql.as_deref().is_some_and(|jql| jql.contains("invalid")) {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"errorMessages": ["Error in the JQL Query: Expecting operator but got 'invalid'."], "warningMessages": []}))).into_response();
    }
    let all = issues(&state, &site);
    let start_at = params.start_at.unwrap_or(0);
    let max_results = params.max_results.unwrap_or(50).clamp(1, 100);
    axum::Json(json!({"startAt": start_at, "maxResults": max_results, "total": all.len(),
                      "issues": crate::gate::slice(&all, start_at, max_results)}))
    .into_response()
}

async fn get_issue(
    AxumState(state): AxumState<Arc<State>>,
    Path((site, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&site, &headers) {
        return response;
    }
    match issues(&state, &site).into_iter().find(|issue| issue["key"] == key.as_str()) {
        Some(issue) => axum::Json(issue).into_response(),
        None => errors(StatusCode::NOT_FOUND, "Issue does not exist or you do not have permission to see it."),
    }
}

async fn create_issue(
    AxumState(state): AxumState<Arc<State>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = check(&site, &headers) {
        return response;
    }
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fields = &input["fields"];
    let mut problems = serde_json::Map::new();
    if fields["summary"].as_str().is_none_or(str::is_empty) {
        problems.insert("summary".into(), json!("You must specify a summary of the issue."));
    }
    if fields["project"]["key"].as_str().is_none() {
        problems.insert("project".into(), json!("Specify a valid project ID or key"));
    }
    if !problems.is_empty() {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"errorMessages": [], "errors": problems}))).into_response();
    }
    let number = issues(&state, &site).len() + 1;
    let project = fields["project"]["key"].as_str().unwrap_or("SB");
    let key = format!("{project}-{number}");
    state.push(
        &format!("jira.{site}.issues"),
        json!({"id": (10000 + number).to_string(), "key": key, "fields": fields}),
    );
    (StatusCode::CREATED, axum::Json(json!({"id": (10000 + number).to_string(), "key": key, "self": format!("{}/{site}/rest/api/3/issue/{key}", state.base("jira"))})))
        .into_response()
}
