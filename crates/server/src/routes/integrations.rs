//! Using a connection: its health check, its actions, the proxy to the provider's API, its
//! health, and connecting it through the provider's OAuth2 flow.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_connectors::ProxyRequest;
use switchboard_connectors::runtime::{CallbackParams, CallbackRefused, ConnectOptions, HealthReport, TestOutcome};
use switchboard_core::{Id, IdKind};
use switchboard_store::Scope;
use utoipa::{IntoParams, ToSchema};

use super::{ConnectionPage, ListResponse, path_id};
use crate::auth::Caller;
use crate::extract::{ApiQuery, OptionalJson, read_body};
use crate::middleware::Verbatim;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ActionPath {
    connection_id: String,
    action: String,
}

#[derive(Debug, Deserialize)]
pub struct ProxyPath {
    connection_id: String,
    #[allow(dead_code)]
    path: String,
}

fn connection_id(raw: &str) -> ApiResult<Id> {
    path_id(IdKind::Connection, raw, "connection")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// Whether the provider accepted the connection's credentials.
    pub ok: bool,
    /// The provider's HTTP status; absent when it could not be reached.
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// The provider's error, or why it could not be reached.
    pub error: Option<String>,
}

impl From<TestOutcome> for TestResult {
    fn from(outcome: TestOutcome) -> Self {
        Self { ok: outcome.ok, status: outcome.status, latency_ms: outcome.latency_ms, error: outcome.error }
    }
}

/// Runs the provider's health check on a connection (write scope)
///
/// Sends the provider's health check (a cheap request that proves the credentials work) and records
/// the outcome on the connection: on success `auth_state` becomes `ok`, and when the provider
/// refuses the credentials (a 401 or 403) it becomes `rejected`. A provider that refuses answers
/// 200 with `ok: false`, its status and its error; a provider that cannot be reached too, without a
/// status. A 409 means the connection has no credentials yet or the provider has no health check;
/// an unknown connection is a 404.
#[utoipa::path(
    post,
    path = "/api/integrations/{connection_id}/test",
    tag = "integrations",
    params(("connection_id" = String, Path, description = "`conn_…`")),
    responses((status = 200, body = TestResult), (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json"), (status = 409, description = "The connection has no credentials yet, or the provider no health check", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn test_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<TestResult>> {
    caller.require(Scope::Write)?;
    let id = connection_id(&raw_id)?;
    Ok(Json(state.connections.test(&caller.key.tenant_id, id.as_str()).await?.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunAction {
    /// The action's input; it must satisfy the action's `input_schema`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    /// For paginated actions: at most this many pages are fetched (1 to 100, default 10).
    #[serde(default, deserialize_with = "crate::extract::integral::optional")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_pages: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    /// The result the manifest selects: any JSON value (an object, or for a paginated action
    /// an array of every page's items).
    #[schema(value_type = Value)]
    pub data: Value,
    /// Pages fetched.
    pub pages: u32,
    /// Whether the provider has more pages than `max_pages` allowed.
    pub has_more: bool,
}

/// Runs one of the provider's actions (write scope; read scope for GET actions)
///
/// `action` is an action name from the provider's detail. The body is optional: `input` must
/// satisfy the action's input schema (a 422 names the JSON path), and for a paginated action
/// `max_pages` (1 to 100, default 10) caps the pages fetched. `data` is the result the action
/// selects or, for a paginated action, every page's items, with `has_more` saying whether the
/// provider had more pages. The provider's failure is a 502 carrying its status, message and a body
/// excerpt in `upstream`; an open circuit is a 503 and a timeout a 504.
#[utoipa::path(
    post,
    path = "/api/integrations/{connection_id}/actions/{action}",
    tag = "integrations",
    params(("connection_id" = String, Path, description = "`conn_…`"), ("action" = String, Path, description = "The action's name, from the integration's detail")),
    request_body = RunAction,
    responses(
        (status = 200, body = ActionResult),
        (status = 404, description = "No such connection in this tenant, or no such action", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The connection has no credentials yet", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider failed; `upstream` has its status, message and a body excerpt", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider's circuit is open after repeated failures; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 504, description = "The provider did not answer in time", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn run_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(ActionPath { connection_id: raw_id, action }): Path<ActionPath>,
    OptionalJson(request): OptionalJson<RunAction>,
) -> ApiResult<Json<ActionResult>> {
    caller.require(Scope::Read)?;
    let id = connection_id(&raw_id)?;
    let declared = state.connections.action(&caller.key.tenant_id, id.as_str(), &action).await?;
    if declared.method.as_reqwest() != Method::GET {
        caller.require(Scope::Write)?;
    }
    let input = request.input.unwrap_or_else(|| Value::Object(Default::default()));
    let outcome =
        state.connections.run_action(&caller.key.tenant_id, id.as_str(), &action, input, request.max_pages).await?;
    Ok(Json(ActionResult { data: outcome.data, pages: outcome.pages, has_more: outcome.has_more }))
}

/// Proxies a request to the provider's API (read scope for GET and HEAD, write otherwise)
///
/// The request goes to `path`, with its query string, under the connection's base URL, with the
/// connection's auth injected; GET and HEAD need the read scope, other methods the write scope. The
/// request body and headers are forwarded as given, except Switchboard's own `Authorization`
/// header, `Cookie`, `x-switchboard-*` and hop-by-hop headers; a path with `.` or `..` segments is
/// refused. The provider's status, headers and body come back as it sent them, marked with
/// `x-switchboard-cache` (`hit`, `miss`, `bypass` or `none`) and `x-switchboard-attempts`, and
/// `Link` targets under the base URL are rewritten to go through the proxy. GET answers are cached
/// for the provider's TTL unless the request says `Cache-Control: no-cache` (or `no-store`).
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/api/integrations/{connection_id}/proxy/{*path}",
    tag = "integrations",
    params(("connection_id" = String, Path, description = "`conn_…`"), ("path" = String, Path, description = "The provider path, slashes included, e.g. `users/42/repos`; the query string is forwarded as given")),
    responses(
        (status = 200, description = "The provider's answer (any status it gives is passed back as is)", headers(("x-switchboard-cache" = String, description = "hit, miss, bypass or none"), ("x-switchboard-attempts" = u32, description = "Attempts made, retries included"))),
        (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The connection has no credentials yet", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider could not be reached", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider's circuit is open after repeated failures; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 504, description = "The provider did not answer in time", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn proxy(
    State(state): State<AppState>,
    caller: Caller,
    Path(ProxyPath { connection_id: raw_id, .. }): Path<ProxyPath>,
    request: Request,
) -> ApiResult<Response> {
    let (method, uri, headers) = (request.method().clone(), request.uri().clone(), request.headers().clone());
    caller.require(if matches!(method, Method::GET | Method::HEAD) { Scope::Read } else { Scope::Write })?;
    let id = connection_id(&raw_id)?;
    // The path as the caller encoded it: the provider decides what its escapes mean.
    let prefix = format!("/api/integrations/{raw_id}/proxy");
    let rest = uri.path().strip_prefix(&prefix).ok_or_else(|| ApiError::not_found("route"))?;
    let path_and_query = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    };
    let bypass_cache = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-cache" | "no-store")));
    let body = read_body(request, &state).await?;
    let public = state.connections.config().public_url.trim_end_matches('/');
    let links_through = Some(format!("{public}{prefix}"));
    let request = ProxyRequest { method, path_and_query, headers, body, bypass_cache, links_through };
    let answer = state.connections.proxy(&caller.key.tenant_id, id.as_str(), request).await?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response.headers_mut().insert("x-switchboard-cache", HeaderValue::from_static(answer.cache.as_str()));
    response.headers_mut().insert("x-switchboard-attempts", HeaderValue::from(answer.attempts));
    response.extensions_mut().insert(Verbatim);
    Ok(response)
}

/// A connection's health: what every process recorded on it, this process's live figures,
/// and the circuit of the provider host it calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// `conn_…`
    pub id: String,
    pub provider: String,
    pub name: String,
    /// How far the credentials got: `missing_credentials`, `configured`, `ok` (the provider
    /// accepted them), `rejected` (it refused them) or `auth_failed` (it refused the OAuth2
    /// grant for good: connect again).
    pub auth_state: switchboard_store::AuthState,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_test_at: Option<DateTime<Utc>>,
    pub last_test_ok: Option<bool>,
    /// Calls through the connection seen by this process since it started.
    pub calls: u64,
    pub errors: u64,
    /// Errors over calls, 0 to 1.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// This tenant's circuit breaker for the provider's API; absent until the connection can
    /// be called.
    pub circuit: Option<CircuitOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitOut {
    /// The provider API the breaker guards: the connection's base URL. Each tenant has
    /// breakers of its own, so only this tenant's calls move it.
    pub target: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub consecutive_failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    /// While open: when the next probe is let through.
    pub retry_at: Option<DateTime<Utc>>,
}

fn health_out(report: HealthReport) -> HealthOut {
    let connection = report.connection;
    let live = report.live;
    // The row holds what every process saw; this process's memory may know something newer.
    let latest = |stored: Option<DateTime<Utc>>, live: Option<DateTime<Utc>>| stored.max(live);
    let live_error = live.as_ref().and_then(|l| l.last_error.clone().zip(l.last_error_at));
    let (last_error, last_error_at) = match (connection.last_error.zip(connection.last_error_at), live_error) {
        (Some(stored), Some(live)) => Some(if live.1 >= stored.1 { live } else { stored }),
        (stored, live) => stored.or(live),
    }
    .unzip();
    HealthOut {
        id: connection.id.to_string(),
        provider: connection.provider,
        name: connection.name,
        auth_state: connection.auth_state,
        last_success_at: latest(connection.last_success_at, live.as_ref().and_then(|l| l.last_success_at)),
        last_error,
        last_error_at,
        last_test_at: connection.last_test_at,
        last_test_ok: connection.last_test_ok,
        calls: live.as_ref().map_or(0, |l| l.calls),
        errors: live.as_ref().map_or(0, |l| l.errors),
        error_rate: live.as_ref().map_or(0.0, |l| l.error_rate),
        p50_ms: live.as_ref().and_then(|l| l.p50_ms),
        p99_ms: live.as_ref().and_then(|l| l.p99_ms),
        circuit: report.circuit.map(|c| CircuitOut {
            target: c.target,
            state: c.state.as_str().to_string(),
            consecutive_failures: c.consecutive_failures,
            opened_at: c.opened_at,
            retry_at: c.retry_at,
        }),
    }
}

/// Gets one connection's health (read scope)
///
/// Combines what every process recorded on the connection (`auth_state`, last success, last error,
/// last test) with the live figures of the process that answers, counted since it started (calls,
/// errors, error rate, p50 and p99 latency), and this tenant's circuit breaker for the provider
/// API, absent until the connection can be called. An unknown connection is a 404.
#[utoipa::path(
    get,
    path = "/api/integrations/{connection_id}/health",
    tag = "integrations",
    params(("connection_id" = String, Path, description = "`conn_…`")),
    responses((status = 200, body = HealthOut), (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn connection_health(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<HealthOut>> {
    caller.require(Scope::Read)?;
    let id = connection_id(&raw_id)?;
    Ok(Json(health_out(state.connections.health_report(&caller.key.tenant_id, id.as_str()).await?)))
}

/// Lists every connection's health, newest connection first (read scope)
///
/// One entry per connection of the tenant, as `GET /api/integrations/{connection_id}/health`
/// returns it: the recorded state, the answering process's live call figures, and the circuit
/// breaker. `limit` is 1 to 100 (default 50); pass the previous page's `next_cursor` as `cursor` to
/// get the next page (it is absent on the last page).
#[utoipa::path(
    get,
    path = "/api/integrations/health",
    tag = "integrations",
    params(ConnectionPage),
    responses((status = 200, body = ListResponse<HealthOut>)),
    security(("api_key" = []))
)]
pub async fn all_health(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ConnectionPage>,
) -> ApiResult<Json<ListResponse<HealthOut>>> {
    caller.require(Scope::Read)?;
    let page = params.to_page()?;
    let rows = state.connections.list(&caller.key.tenant_id, &page).await?;
    let list = ListResponse::from_rows(rows, &page, |c| c.id.to_string(), |c| c);
    let mut data = Vec::with_capacity(list.data.len());
    for connection in list.data {
        data.push(health_out(state.connections.health_of(connection).await));
    }
    Ok(Json(ListResponse { data, next_cursor: list.next_cursor }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartConnect {
    /// Scopes to request besides the provider's (e.g. a Slack `users:read.email`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// User-token scopes, for providers that issue a user token beside the app's (Slack's
    /// `user_scope`); the user token is kept as the credential `user_access_token`.
    #[serde(default)]
    pub user_scopes: Vec<String>,
    /// Where the browser goes after the callback, with `connection_id` and `status`
    /// (`connected` or `error`, then `error`) in its query; without it the callback shows a
    /// small page.
    #[schema(max_length = 2048)]
    pub return_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectStartedOut {
    /// Send the user's browser here. It carries a single-use `state` and, unless the
    /// provider refuses PKCE, an S256 code challenge.
    pub authorization_url: String,
    /// The flow must come back to `/oauth/callback` before this.
    pub expires_at: DateTime<Utc>,
    /// The redirect URI the flow uses; register it with the provider's OAuth app.
    pub redirect_uri: String,
}

/// Starts connecting an OAuth2 connection: returns the authorization URL (write scope)
///
/// The connection needs its OAuth app's `client_id` and `client_secret` first
/// (`POST /api/marketplace/configure`); without them, or for a connection that is not OAuth2, the
/// answer is a 409. The body is optional: `scopes` and `user_scopes` add to the provider's scopes,
/// and `return_url` (http or https) is where the browser goes after the callback. Send the user's
/// browser to `authorization_url`; the flow must come back to `/oauth/callback` before `expires_at`
/// (10 minutes later), and `redirect_uri` is the URI to register with the provider's OAuth app.
#[utoipa::path(
    post,
    path = "/api/integrations/{connection_id}/oauth/start",
    tag = "integrations",
    params(("connection_id" = String, Path, description = "`conn_…`")),
    request_body = StartConnect,
    responses(
        (status = 200, body = ConnectStartedOut),
        (status = 404, description = "No such connection in this tenant", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not an OAuth2 connection, or its client_id/client_secret are not set", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn oauth_start(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    OptionalJson(request): OptionalJson<StartConnect>,
) -> ApiResult<Json<ConnectStartedOut>> {
    caller.require(Scope::Write)?;
    let id = connection_id(&raw_id)?;
    let options = ConnectOptions {
        extra_scopes: request.scopes,
        extra_user_scopes: request.user_scopes,
        return_url: request.return_url,
    };
    let started = state.connections.oauth_start(&caller.key.tenant_id, id.as_str(), options).await?;
    Ok(Json(ConnectStartedOut {
        authorization_url: started.authorization_url.to_string(),
        expires_at: started.expires_at,
        redirect_uri: state.connections.config().redirect_uri(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The state issued by `oauth/start` (a callback without one is refused).
    #[param(required = true, min_length = 1)]
    pub state: Option<String>,
    /// The authorization server's issuer identifier (RFC 9207), checked against the
    /// provider's when the server sends it.
    pub iss: Option<String>,
    /// The authorization code, on success.
    pub code: Option<String>,
    /// The provider's error (`access_denied`, …), on failure.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The OAuth2 redirect URI providers send the user back to (no API key)
///
/// No API key: the single-use `state` issued by `oauth/start` is the proof. A state that is
/// missing, unknown, expired or already used is a 400 and changes nothing. Otherwise the code is
/// exchanged and the tokens stored encrypted; the outcome (or the provider's error, also recorded
/// on the connection) is shown as a small page, or the browser is sent (303) to the flow's
/// `return_url` with `connection_id` and `status` (`connected` or `error`, then `error`) in its
/// query.
#[utoipa::path(
    get,
    path = "/oauth/callback",
    tag = "integrations",
    params(CallbackQuery),
    responses(
        (status = 200, description = "Connected", content_type = "text/html", body = String),
        (status = 303, description = "Sent on to the flow's return_url with connection_id and status"),
        (status = 400, description = "The state is not valid, or the provider or its token endpoint refused", content_type = "text/html", body = String),
    )
)]
pub async fn oauth_callback(State(state): State<AppState>, Query(query): Query<CallbackQuery>) -> Response {
    let params = CallbackParams {
        state: query.state,
        iss: query.iss,
        code: query.code,
        error: query.error,
        error_description: query.error_description,
    };
    match state.connections.oauth_callback(&params).await {
        Err(CallbackRefused::Store(error)) => ApiError::from(error).into_response(),
        Err(refused) => page(StatusCode::BAD_REQUEST, "Connection failed", &refused.to_string()),
        Ok(outcome) => match (&outcome.return_url, &outcome.error) {
            (Some(return_url), error) => {
                let mut target = match url::Url::parse(return_url) {
                    Ok(url) => url,
                    Err(_) => return page(StatusCode::BAD_REQUEST, "Connection failed", "the return URL is invalid"),
                };
                target.query_pairs_mut().append_pair("connection_id", outcome.connection_id.as_str());
                match error {
                    None => target.query_pairs_mut().append_pair("status", "connected"),
                    Some(error) => target.query_pairs_mut().append_pair("status", "error").append_pair("error", error),
                };
                Redirect::to(target.as_str()).into_response()
            }
            (None, None) => page(
                StatusCode::OK,
                "Connected",
                &format!(
                    "{} ({}) is connected. You can close this window.",
                    outcome.connection_name, outcome.connection_id
                ),
            ),
            (None, Some(error)) => page(
                StatusCode::BAD_REQUEST,
                "Connection failed",
                &format!("{} ({}): {error}", outcome.connection_name, outcome.connection_id),
            ),
        },
    }
}

/// A minimal self-contained HTML page.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{title}</h1><p>{}</p></body></html>",
        escape(message),
        title = escape(title)
    );
    let mut response =
        // The page's URL holds the code: never cached, never sent on as a referrer.
        (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            body,
        )
            .into_response();
    response.extensions_mut().insert(Verbatim);
    response
}
