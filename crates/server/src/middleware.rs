//! Cross-cutting request handling: problem normalisation, metrics, timeouts.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::{RequestLabels, RouteLabels};
use crate::problem::ApiError;
use crate::problem::{PROBLEM_CONTENT_TYPE, Problem, problem_for, problem_response};
use crate::state::AppState;

/// Tells an HTTP/1 client to close its connection after this answer (`Connection: close`)
/// when the connection cannot or should not carry another request:
/// - the answer was decided before the request's body was read to its end (a 404, 413 or 429
///   given early): the unread bytes would otherwise be taken for the next request, or the
///   server would close the connection under a sender already writing its next request;
/// - the process is draining before a stop: clients reconnect, behind a load balancer to
///   another instance, instead of finding their kept-alive connection closed mid-request.
pub async fn close_when_needed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.version() > axum::http::Version::HTTP_11 {
        return next.run(request).await;
    }
    let read_to_end = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let has_body = !http_body::Body::is_end_stream(request.body());
    let request = match has_body {
        true => request.map(|body| Body::new(Watched { inner: body, read_to_end: read_to_end.clone() })),
        false => request,
    };
    let mut response = next.run(request).await;
    let unread = has_body && !read_to_end.load(std::sync::atomic::Ordering::Relaxed);
    if unread || state.is_draining() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that notes when it has been read to its end.
struct Watched {
    inner: Body,
    read_to_end: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read_to_end.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Problem bodies are small; anything larger is not one of ours and is replaced.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// Makes every error response a problem document carrying the request path and id, whoever
/// produced it: our handlers, axum's router (405), a layer (413) or the panic catcher.
/// Marks an error response that is not ours to rewrite: a provider's answer passed back by
/// the proxy, or a page shown to a browser.
#[derive(Debug, Clone, Copy)]
pub struct Verbatim;

pub async fn normalize_problems(request: Request, next: Next) -> Response {
    // Kept as cheap handles: they become strings only for an error response.
    let uri = request.uri().clone();
    let request_id = request.headers().get("x-request-id").cloned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.extensions().get::<Verbatim>().is_some() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let is_problem =
        parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes());
    let mut problem = match is_problem {
        true => axum::body::to_bytes(body, MAX_PROBLEM_BYTES)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Problem>(&bytes).ok()),
        false => None,
    }
    .unwrap_or_else(|| generic_problem(status));
    problem.instance = Some(uri.path().to_string());
    problem.request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string);
    let rebuilt = problem_response(status, &problem);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    Response::from_parts(parts, rebuilt.into_body())
}

fn generic_problem(status: StatusCode) -> Problem {
    let (slug, detail) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method-not-allowed", "This method is not allowed on this path; see the Allow header")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "The request body is too large"),
        StatusCode::NOT_FOUND => ("not-found", "No such resource"),
        s if s.is_server_error() => ("internal", "An internal error occurred; it has been logged"),
        _ => ("http-error", "The request could not be served"),
    };
    problem_for(status, slug, Some(detail.to_string()), Vec::new())
}

/// Counts and times every request by its route template (never the raw path, which would
/// make label cardinality unbounded).
pub async fn track_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let labels = RouteLabels { method, route };
    state.metrics.request_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    let RouteLabels { method, route } = labels;
    state.metrics.requests.get_or_create(&RequestLabels { method, route, status: response.status().as_u16() }).inc();
    response
}

/// Abandons a request that runs longer than the configured timeout.
pub async fn enforce_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// A panic becomes a plain 500 problem; its message goes to the log only.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic");
    ApiError::internal(&format!("handler panicked: {message}")).into_response()
}
