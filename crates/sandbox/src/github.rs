//! GitHub's REST API (https://docs.github.com/rest): `Authorization: Bearer|token <token>`,
//! a User-Agent is required, 401 `Bad credentials`, 422 `Validation Failed`, RFC 8288 `Link`
//! pagination (`per_page`, `page`), and rate-limit headers on every answer (see `gate.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::credentials::GITHUB_TOKEN;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/user", get(user))
        .route("/user/repos", get(repos))
        .route("/repos/{owner}/{repo}/issues", get(list_issues).post(create_issue))
}

fn check(headers: &HeaderMap) -> Result<(), Response> {
    if headers.get("user-agent").is_none() {
        return Err((
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
        )
            .into_response());
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")).map(str::trim));
    match token {
        Some(GITHUB_TOKEN) => Ok(()),
        Some(_) => Err((StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}))).into_response()),
        None => Err((StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest", "status": "401"}))).into_response()),
    }
}

async fn user(headers: HeaderMap) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    axum::Json(json!({"login": "sandbox-user", "id": 1, "type": "User", "name": "Sandbox User"})).into_response()
}

#[derive(Deserialize)]
struct Page {
    page: Option<usize>,
    per_page: Option<usize>,
}

/// One page, with `Link` to the next and last pages as GitHub sends it.
fn paged(state: &State, path: &str, items: Vec<Value>, page: &Page) -> Response {
    let per_page = page.per_page.unwrap_or(30).clamp(1, 100);
    let current = page.page.unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let slice = crate::gate::slice(&items, (current - 1) * per_page, per_page);
    let base = format!("{}{path}", state.base("github"));
    let mut links = Vec::new();
    if current < last {
        links.push(format!("<{base}?per_page={per_page}&page={}>; rel=\"next\"", current + 1));
        links.push(format!("<{base}?per_page={per_page}&page={last}>; rel=\"last\""));
    }
    if current > 1 {
        links.push(format!("<{base}?per_page={per_page}&page=1>; rel=\"first\""));
        links.push(format!("<{base}?per_page={per_page}&page={}>; rel=\"prev\"", current - 1));
    }
    let mut response = axum::Json(Value::Array(slice)).into_response();
    if !links.is_empty() {
        response.headers_mut().insert("link", links.join(", ").parse().expect("a link header is ASCII"));
    }
    response
}

async fn repos(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap, Query(page): Query<Page>) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let repos = (1..=45)
        .map(|i| json!({"id": i, "name": format!("repo-{i}"), "full_name": format!("sandbox-user/repo-{i}"), "private": i % 5 == 0}))
        .collect();
    paged(&state, "/user/repos", repos, &page)
}

async fn list_issues(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let key = format!("github.issues.{owner}/{repo}");
    paged(&state, &format!("/repos/{owner}/{repo}/issues"), state.stored(&key), &page)
}

async fn create_issue(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = check(&headers) {
        return response;
    }
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "Problems parsing JSON"}))).into_response();
    };
    let Some(title) = input.get("title").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"message": "Validation Failed", "errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}],
                              "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue"})),
        )
            .into_response();
    };
    let key = format!("github.issues.{owner}/{repo}");
    let number = state.stored(&key).len() + 1;
    let issue = json!({"number": number, "title": title, "body": input.get("body"), "state": "open",
                       "html_url": format!("https://github.com/{owner}/{repo}/issues/{number}")});
    state.push(&key, issue.clone());
    (StatusCode::CREATED, axum::Json(issue)).into_response()
}
