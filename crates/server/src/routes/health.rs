use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Liveness: the process is up
///
/// Answers 200 with `{"status": "ok"}` whenever the process can answer at all. It checks nothing
/// else, not even the database: use `/readyz` to know whether the process can serve. No API key is
/// needed.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the process can serve, its database answers
///
/// Answers 200 with `{"status": "ready"}` when the database answers a ping within 2 seconds. It
/// answers 503 when the database fails or is slower than that, and also while the process is
/// draining before it stops, so that a load balancer sends new requests elsewhere. No API key is
/// needed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "The database does not answer, or the process is draining before it stops", body = crate::problem::Problem, content_type = "application/problem+json"))
)]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    if state.is_draining() {
        return Err(ApiError::unavailable("This process is stopping: send new requests elsewhere"));
    }
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            Err(ApiError::unavailable("The database does not answer"))
        }
        Err(_) => Err(ApiError::unavailable("The database did not answer within 2 seconds")),
    }
}

/// Prometheus metrics (OpenMetrics text)
///
/// This process's metrics in the OpenMetrics text format, named `switchboard_…`: HTTP requests and
/// their durations by route template, outgoing webhook deliveries, events submitted through the
/// API, incoming webhooks by outcome and rejection reason, and circuit breakers by state (counted
/// at each scrape). No API key is needed, so no series names a tenant, a connection or a URL a
/// tenant configured. Each process keeps its own registry: scrape every instance.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.observe_circuits(&state.connections.circuit_counts());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
