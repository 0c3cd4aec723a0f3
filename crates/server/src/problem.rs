//! Every error the API returns is an RFC 9457 problem document (`application/problem+json`).
//! [`ApiError`] is how handlers and extractors produce one; the normalising middleware turns
//! any other error response (a 405 from the router, a panic) into one as well.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard_connectors::ConnectorError;
use switchboard_core::FieldProblem;
use switchboard_identity::IdentityError;
use switchboard_store::StoreError;
use switchboard_webhooks::{EndpointError, EventTypeError};
use utoipa::ToSchema;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:switchboard:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The `x-request-id` of the request, for finding it in the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Which fields were wrong and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// When a provider called through a connection failed: what it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
}

/// A provider's failed answer, as far as it can be shown: its status, its own error message
/// and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct Upstream {
    pub status: u16,
    pub message: String,
    pub body_excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct FieldError {
    /// The field: a body path such as `payload.items[0].sku`, a query parameter, or a header.
    pub field: String,
    pub detail: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_secs: Option<u64>,
    // Boxed: rarely present, and every handler's error type carries it.
    upstream: Option<Box<Upstream>>,
}

impl ApiError {
    fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self { status, slug, detail: detail.into(), errors: Vec::new(), retry_after_secs: None, upstream: None }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// A malformed part of the request (400) that names the field.
    pub fn malformed(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::new(StatusCode::BAD_REQUEST, "bad-request", format!("The request is malformed: {detail}"))
            .with_field(field, detail)
    }

    /// Well-formed but invalid input (422).
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::validation_many(vec![FieldError { field: field.into(), detail: detail.into() }])
    }

    /// The problems a service found in the input, every one (422).
    pub fn invalid(problems: Vec<FieldProblem>) -> Self {
        Self::validation_many(problems.into_iter().map(|p| FieldError { field: p.field, detail: p.detail }).collect())
    }

    pub fn validation_many(errors: Vec<FieldError>) -> Self {
        let summary = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        Self { errors, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", summary) }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", format!("No such {what}"))
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", format!("The request body exceeds {limit} bytes"))
    }

    pub fn batch_too_large(items: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("The batch holds {items} items; at most {limit} are taken in one request"),
        )
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", detail)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests for this API key; retry later",
            )
        }
    }

    /// The tenant's deliveries are too far behind for more events now.
    pub fn backlogged(backlogged: &switchboard_webhooks::Backlogged) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "deliveries-behind", backlogged.to_string())
            .with_retry_after(backlogged.retry_after)
    }

    pub fn timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "The request took too long; its outcome is unknown. Retry it with the same Idempotency-Key",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// A 500. The cause is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "An internal error occurred; it has been logged")
    }

    /// Answers with `Retry-After`, rounded up to whole seconds (at least one).
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn with_field(mut self, field: impl Into<String>, detail: impl Into<String>) -> Self {
        self.errors.push(FieldError { field: field.into(), detail: detail.into() });
        self
    }

    pub fn to_problem(&self) -> Problem {
        Problem {
            upstream: self.upstream.as_deref().cloned(),
            ..problem_for(self.status, self.slug, Some(self.detail.clone()), self.errors.clone())
        }
    }
}

/// The problem document for a status, with our URI scheme and the standard reason as title.
pub fn problem_for(status: StatusCode, slug: &str, detail: Option<String>, errors: Vec<FieldError>) -> Problem {
    Problem {
        kind: format!("urn:switchboard:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        instance: None,
        request_id: None,
        errors,
        upstream: None,
    }
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = problem_response(self.status, &self.to_problem());
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<FieldProblem> for ApiError {
    fn from(problem: FieldProblem) -> Self {
        Self::validation(problem.field, problem.detail)
    }
}

impl From<EndpointError> for ApiError {
    fn from(error: EndpointError) -> Self {
        match error {
            EndpointError::Invalid(problems) => Self::invalid(problems),
            EndpointError::NotFound => Self::not_found("endpoint"),
            EndpointError::Store(error) => error.into(),
            EndpointError::Secret(error) => Self::internal(&error),
        }
    }
}

impl From<EventTypeError> for ApiError {
    fn from(error: EventTypeError) -> Self {
        match error {
            EventTypeError::Invalid(problems) => Self::invalid(problems),
            EventTypeError::Taken => ApiError::conflict("An event type with this name already exists")
                .with_field("name", "already exists in this tenant"),
            EventTypeError::NotFound => Self::not_found("event type"),
            EventTypeError::Store(error) => error.into(),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Invalid(problems) => Self::invalid(problems),
            IdentityError::Store(error) => error.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            StoreError::Closed => ApiError::unavailable("The server is shutting down"),
            other => ApiError::internal(&other),
        }
    }
}

impl From<ConnectorError> for ApiError {
    fn from(error: ConnectorError) -> Self {
        let detail = error.to_string();
        match error {
            ConnectorError::NotFound => ApiError::not_found("connection"),
            ConnectorError::UnknownProvider { name, suggestions } => {
                let hint = match suggestions.as_slice() {
                    [] => String::new(),
                    names => format!("; did you mean {}?", names.join(", ")),
                };
                Self::new(StatusCode::NOT_FOUND, "not-found", format!("No integration named {name:?}{hint}"))
            }
            ConnectorError::UnknownAction { name, known } => Self::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("No action named {name:?}; this integration offers: {}", known.join(", ")),
            ),
            ConnectorError::Invalid(problems) => ApiError::invalid(problems),
            ConnectorError::MissingCredentials | ConnectorError::NoHealthCheck => {
                Self::new(StatusCode::CONFLICT, "conflict", detail)
            }
            ConnectorError::Misconfigured(_) => Self::new(StatusCode::CONFLICT, "misconfigured", detail),
            ConnectorError::CircuitOpen { retry_after, .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "circuit-open", detail).with_retry_after(retry_after)
            }
            ConnectorError::RateLimited { retry_after } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "provider-rate-limited",
                "The provider's rate limit for this connection is spent; retry later",
            )
            .with_retry_after(retry_after),
            ConnectorError::Upstream { status, message, excerpt } => Self {
                upstream: Some(Box::new(Upstream { status, message, body_excerpt: excerpt })),
                ..Self::new(StatusCode::BAD_GATEWAY, "upstream", detail)
            },
            ConnectorError::Unreachable { code, .. } => {
                let status = if code == "timeout" { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
                Self::new(status, "unreachable", detail)
            }
            ConnectorError::AuthFailed(_) => Self::new(StatusCode::CONFLICT, "auth-failed", detail),
            ConnectorError::RefreshBackingOff { retry_after, .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "refresh-backing-off", detail).with_retry_after(retry_after)
            }
            ConnectorError::Undecryptable => ApiError::internal(&detail),
            ConnectorError::Store(store) => store.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
