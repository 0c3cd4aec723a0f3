//! What every simulator shares: request counting, injected failures, artificial latency and
//! the provider's quota, answered the way that provider answers it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub requests: u32,
    pub window: Duration,
}

/// A fixed window counter.
#[derive(Debug)]
pub(crate) struct Window {
    quota: Option<Quota>,
    started: Instant,
    used: u32,
}

impl Window {
    pub(crate) fn new(quota: Option<Quota>) -> Self {
        Self { quota, started: Instant::now(), used: 0 }
    }

    /// `Err(seconds until the window resets)` when the quota is spent.
    fn take(&mut self) -> Result<(u32, u32, u64), u64> {
        let Some(quota) = self.quota else { return Ok((u32::MAX, u32::MAX, 0)) };
        let now = Instant::now();
        if now.duration_since(self.started) >= quota.window {
            self.started = now;
            self.used = 0;
        }
        let reset_in = (quota.window - now.duration_since(self.started)).as_secs().max(1);
        if self.used >= quota.requests {
            return Err(reset_in);
        }
        self.used += 1;
        Ok((quota.requests, quota.requests - self.used, reset_in))
    }
}

pub(crate) fn wrap(router: Router<Arc<State>>, provider: &'static str, state: Arc<State>) -> Router<Arc<State>> {
    router.layer(axum::middleware::from_fn_with_state((state, provider), gate))
}

async fn gate(
    AxumState((state, provider)): AxumState<(Arc<State>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    *state.counts.lock().expect("sandbox lock").entry(provider.to_string()).or_default() += 1;
    let delay = *state.delay.lock().expect("sandbox lock");
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let injected = {
        let mut failures = state.failures.lock().expect("sandbox lock");
        match failures.get_mut(provider) {
            Some((left, status)) if *left > 0 => {
                *left -= 1;
                Some(*status)
            }
            _ => None,
        }
    };
    if let Some(status) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, [("content-type", "text/html")], "<html><body><h1>Service Unavailable</h1></body></html>")
            .into_response();
    }
    let request = with_issued_token(&state, provider, request);
    let taken = state.quotas.lock().expect("sandbox lock").get_mut(provider).map(Window::take);
    match taken {
        Some(Err(reset_in)) => limited(provider, reset_in),
        Some(Ok((limit, remaining, reset_in))) => {
            let mut response = next.run(request).await;
            if provider == "github" && limit != u32::MAX {
                github_rate_headers(response.headers_mut(), limit, remaining, reset_in);
            }
            if provider == "hubspot" && limit != u32::MAX {
                let headers = response.headers_mut();
                headers.insert("x-hubspot-ratelimit-max", HeaderValue::from(limit));
                headers.insert("x-hubspot-ratelimit-remaining", HeaderValue::from(remaining));
                headers.insert("x-hubspot-ratelimit-interval-milliseconds", HeaderValue::from_static("10000"));
            }
            response
        }
        None => next.run(request).await,
    }
}

/// A simulator checks its provider's fixed token; an access token the provider's
/// authorization server issued stands in for it while it is valid, and for a wrong one after
/// it expired or was revoked, so each simulator answers it in its own way.
fn with_issued_token(state: &State, provider: &str, mut request: Request) -> Request {
    let Some(token) = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
    else {
        return request;
    };
    let Some(valid) = state.oauth.lock().expect("sandbox lock").access_token_valid(provider, &token) else {
        return request;
    };
    let fixed = match provider {
        "github" => crate::credentials::GITHUB_TOKEN,
        "google-calendar" => crate::credentials::GOOGLE_ACCESS_TOKEN,
        "slack" => crate::credentials::SLACK_BOT_TOKEN,
        "hubspot" => crate::credentials::HUBSPOT_TOKEN,
        _ => return request,
    };
    let stand_in = if valid { format!("Bearer {fixed}") } else { "Bearer expired-or-revoked".to_string() };
    request.headers_mut().insert("authorization", HeaderValue::from_str(&stand_in).expect("ASCII"));
    request
}

fn epoch_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn github_rate_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset_in: u64) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-used", HeaderValue::from(limit - remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(epoch_seconds() + reset_in));
    headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
}

/// The provider's own answer to a spent quota.
fn limited(provider: &str, reset_in: u64) -> Response {
    let retry_after = [("retry-after", reset_in.to_string())];
    match provider {
        // GitHub: 403 (primary limit) with the budget headers and no Retry-After.
        "github" => {
            let mut response = (
                StatusCode::FORBIDDEN,
                axum::Json(json!({
                    "message": "API rate limit exceeded for user ID 1.",
                    "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
                })),
            )
                .into_response();
            github_rate_headers(response.headers_mut(), 5000, 0, reset_in);
            response
        }
        "slack" => (StatusCode::TOO_MANY_REQUESTS, retry_after, axum::Json(json!({"ok": false, "error": "ratelimited"}))).into_response(),
        // Stripe sends no Retry-After; its SDKs back off on their own.
        "stripe" => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": {"message": "Too many requests hit the API too quickly.", "type": "rate_limit_error", "code": "rate_limit"}})),
        )
            .into_response(),
        "hubspot" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("x-hubspot-ratelimit-remaining", "0".to_string()), ("x-hubspot-ratelimit-interval-milliseconds", "10000".to_string())],
            axum::Json(json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                              "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING", "category": "RATE_LIMITS"})),
        )
            .into_response(),
        "google-calendar" => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": {"code": 429, "message": "Rate Limit Exceeded", "status": "RESOURCE_EXHAUSTED",
                                        "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}]}})),
        )
            .into_response(),
        _ => (StatusCode::TOO_MANY_REQUESTS, retry_after, axum::Json(json!({"error": "rate_limited"}))).into_response(),
    }
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

/// `(user, password)` of an `Authorization: Basic` header.
pub(crate) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A page of `items` for offset-style paging.
pub(crate) fn slice<T: Clone>(items: &[T], offset: usize, limit: usize) -> Vec<T> {
    items.iter().skip(offset).take(limit).cloned().collect()
}
