//! The HTTP layer: axum routes, API-key auth with scopes, problem+json errors, the OpenAPI
//! document and docs page, health and metrics endpoints.

pub mod auth;
pub mod extract;
pub mod listener;
pub mod lookups;
pub mod metrics;
mod middleware;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod schemas;
mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, header};
use axum::response::{Html, IntoResponse};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use problem::{ApiError, ApiResult, Problem};
pub use state::{AppState, DEFAULT_MAX_BODY_BYTES, ServerConfig};

use routes::{api_keys, endpoints, event_types, events, health, inbound, integrations, marketplace, messages, tenants};

/// The OpenAPI document describing every route of [`router`], as served.
pub fn openapi_document() -> serde_json::Value {
    api_routes().1
}

/// The routes and the document describing them, collected together.
fn api_routes() -> (Router<AppState>, serde_json::Value) {
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant))
        .routes(routes!(tenants::create_tenant_api_key))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::get_api_key, api_keys::revoke_api_key))
        .routes(routes!(event_types::create_event_type, event_types::list_event_types))
        .routes(routes!(event_types::get_event_type, event_types::update_event_type))
        .routes(routes!(events::create_event, events::list_events))
        .routes(routes!(events::get_event))
        .routes(routes!(messages::event_messages))
        .routes(routes!(messages::event_attempts))
        .routes(routes!(endpoints::create_endpoint, endpoints::list_endpoints))
        .routes(routes!(endpoints::get_endpoint, endpoints::update_endpoint, endpoints::delete_endpoint))
        .routes(routes!(endpoints::get_secret))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(messages::endpoint_messages))
        .routes(routes!(messages::endpoint_attempts))
        .routes(routes!(messages::endpoint_stats))
        .routes(routes!(messages::recover))
        .routes(routes!(messages::get_message))
        .routes(routes!(messages::message_attempts))
        .routes(routes!(messages::resend_message))
        .routes(routes!(marketplace::list_integrations))
        .routes(routes!(marketplace::get_integration))
        .routes(routes!(marketplace::install))
        .routes(routes!(marketplace::configure))
        .routes(routes!(marketplace::list_installed))
        .routes(routes!(marketplace::get_installed, marketplace::uninstall))
        .routes(routes!(integrations::all_health))
        .routes(routes!(integrations::test_connection))
        .routes(routes!(integrations::run_action))
        .routes(routes!(integrations::connection_health))
        .routes(routes!(integrations::proxy))
        .routes(routes!(integrations::oauth_start))
        .routes(routes!(integrations::oauth_callback))
        .routes(routes!(inbound::receive, inbound::challenge))
        .routes(routes!(inbound::log::stats))
        .routes(routes!(inbound::log::list))
        .routes(routes!(inbound::log::get_one))
        .routes(routes!(inbound::log::replay))
        .split_for_parts();
    (router, openapi::finish(doc))
}

/// The OpenAPI document as served, rendered once when the router is built.
struct Documentation {
    json: String,
    html: String,
}

/// The OpenAPI 3.1 document of this server
///
/// The machine-readable description of every route, generated from the handlers' annotations and
/// rendered once when the router is built; no API key is needed to fetch it. Operations that need a
/// key name the `api_key` bearer scheme (`Authorization: Bearer sk_…`) under `security`. Each
/// operation also lists the error responses it shares with others: 500 and 503 everywhere, 401, 403
/// and 429 where a key is needed, 400, 413, 415 and 422 where a JSON body is read, and 400 where
/// only query parameters are.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json(Extension(docs): Extension<Arc<Documentation>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], docs.json.clone())
}

/// Human-readable API documentation
///
/// An HTML page rendered from the same document as `/api/openapi.json`: every operation grouped by
/// tag with its description, parameters, body and responses, then the schemas. It is self-contained
/// (no external scripts), so it works on a machine without internet access. No API key is needed.
#[utoipa::path(get, path = "/api/docs", tag = "operations", responses((status = 200, description = "An HTML page", content_type = "text/html", body = String)))]
async fn docs_page(Extension(docs): Extension<Arc<Documentation>>) -> Html<String> {
    Html(docs.html.clone())
}

async fn fallback() -> ApiError {
    ApiError::not_found("route")
}

/// The whole application: routes, documentation and every middleware.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api_routes();
    let docs = Documentation {
        json: serde_json::to_string(&doc).expect("the OpenAPI document serialises"),
        html: openapi::docs_html(&doc),
    };
    api.fallback(fallback)
        .layer(Extension(Arc::new(docs)))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::enforce_timeout))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::track_metrics))
        .layer(axum::middleware::from_fn(middleware::normalize_problems))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
                })
                // A 5xx answer is not an error of this process by itself (a 503 while
                // draining, a provider's 502 passed on); real faults log their cause at ERROR
                // where they happen.
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::close_when_needed))
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(limiter) = state.limiter.clone() {
        // Idle keys' buckets are forgotten, so memory follows the keys in use.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.forget_idle();
            }
        });
    }
    // The peer address: the webhook receiver records it and rate-limits by it.
    let app = router(state).into_make_service_with_connect_info::<listener::PeerAddr>();
    axum::serve(listener::ProblemListener(listener), app).with_graceful_shutdown(shutdown).await
}
