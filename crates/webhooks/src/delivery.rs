//! One attempt: build the Standard Webhooks request, send it through the egress client and
//! describe what happened.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use switchboard_core::signature::SigningSecret;
use switchboard_core::{Id, IdKind, Timestamp};
use switchboard_egress::{EgressClient, ErrorKind, TargetError, read_excerpt};
use switchboard_store::{AttemptErrorKind, Endpoint, Event, NewAttempt};

use crate::fanout::event_document;
use crate::schedule::{FailureHints, parse_retry_after};
use switchboard_jq::JqProgram;

/// The most of a response body kept on the attempt.
pub const BODY_EXCERPT_BYTES: usize = 4096;

/// Response headers worth keeping on an attempt.
const KEPT_HEADERS: &[&str] = &["content-type", "content-length", "retry-after", "location", "x-request-id", "server"];

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// 410: the receiver wants no more messages.
    Gone,
    Failed(FailureHints),
}

/// The Standard Webhooks body: `{"type", "timestamp", "data"}`, with the payload as stored.
pub fn standard_body(event: &Event) -> String {
    let timestamp = event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(
        r#"{{"type":{},"timestamp":{},"data":{}}}"#,
        serde_json::Value::String(event.event_type.clone()),
        serde_json::Value::String(timestamp),
        event.payload
    )
}

/// How long a transform may run for one delivery.
pub const TRANSFORM_TIME_LIMIT: Duration = Duration::from_secs(1);

/// The body an endpoint receives: the standard body, or what its transform makes of it.
pub async fn body_for(transform: Option<&JqProgram>, event: &Event) -> Result<String, String> {
    match transform {
        Some(program) => {
            let document = event_document(event.id.as_str(), &event.event_type, event.created_at, &event.payload);
            program
                .transform(&document, TRANSFORM_TIME_LIMIT)
                .await
                .map(|value| value.to_string())
                .map_err(|e| e.to_string())
        }
        None => Ok(standard_body(event)),
    }
}

/// `webhook-signature`: one signature per secret, space-separated.
pub fn signature_header(secrets: &[SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|secret| secret.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

pub struct Request<'a> {
    pub endpoint: &'a Endpoint,
    pub event: &'a Event,
    pub body: String,
    pub secrets: &'a [SigningSecret],
    pub now: Timestamp,
}

/// Sends one attempt and records what happened. Never fails: every failure is an attempt.
pub async fn send(egress: &EgressClient, timeout: Duration, request: Request<'_>) -> (NewAttempt, Verdict) {
    let Request { endpoint, event, body, secrets, now } = request;
    let started = Instant::now();
    let mut attempt = NewAttempt {
        id: Id::new(IdKind::Attempt),
        response_status: None,
        response_headers: None,
        response_body: None,
        error_kind: None,
        error: None,
        duration_us: 0,
        created_at: now,
    };
    let url = match egress.check_url(&endpoint.url) {
        Ok(url) => url,
        Err(error) => {
            attempt.error_kind = Some(match error {
                TargetError::Refused { .. } => AttemptErrorKind::ForbiddenAddress,
                _ => AttemptErrorKind::InvalidUrl,
            });
            attempt.error = Some(format!("the URL {error}"));
            return (attempt, Verdict::Failed(FailureHints::default()));
        }
    };
    let timestamp = now.timestamp();
    let mut headers = HeaderMap::with_capacity(endpoint.headers.len() + 4);
    for (name, value) in &endpoint.headers {
        // Checked when stored; a header that no longer parses is skipped, not fatal.
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            headers.insert(name, value);
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let signature = signature_header(secrets, event.id.as_str(), timestamp, body.as_bytes());
    for (name, value) in [
        ("webhook-id", event.id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        headers.insert(name, HeaderValue::try_from(value).expect("ids, digits and base64 are valid header values"));
    }
    let outgoing = egress.request(Method::POST, url).headers(headers).body(body).timeout(timeout).build();
    let response = match outgoing {
        Ok(outgoing) => egress.execute(outgoing).await,
        Err(error) => {
            attempt.error_kind = Some(AttemptErrorKind::RequestError);
            attempt.error = Some(error.to_string());
            return (attempt, Verdict::Failed(FailureHints::default()));
        }
    };
    let verdict = match response {
        Err(error) => {
            attempt.error_kind = Some(error_kind(error.kind));
            attempt.error = Some(error.message);
            Verdict::Failed(FailureHints { overloaded: error.kind == ErrorKind::Timeout, retry_after: None })
        }
        Ok(response) => {
            let status = response.status().as_u16();
            attempt.response_status = Some(status);
            let kept: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = response.headers().get(*name)?.to_str().ok()?;
                    Some((name.to_string(), serde_json::Value::String(value.to_string())))
                })
                .collect();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now));
            attempt.response_headers = Some(serde_json::Value::Object(kept).to_string());
            match read_excerpt(response, BODY_EXCERPT_BYTES).await {
                Ok((excerpt, _)) => attempt.response_body = Some(String::from_utf8_lossy(&excerpt).into_owned()),
                Err(error) => attempt.error = Some(format!("reading the response failed: {error}")),
            }
            match status {
                200..=299 => Verdict::Delivered,
                410 => Verdict::Gone,
                429 => Verdict::Failed(FailureHints { overloaded: true, retry_after }),
                503 => Verdict::Failed(FailureHints { overloaded: false, retry_after }),
                _ => Verdict::Failed(FailureHints::default()),
            }
        }
    };
    if verdict != Verdict::Delivered && attempt.error.is_none() {
        attempt.error = attempt.response_status.map(|s| format!("HTTP {s}"));
    }
    attempt.duration_us = started.elapsed().as_micros().min(i64::MAX as u128) as i64;
    (attempt, verdict)
}

/// An outbound call's failure as an attempt records it.
fn error_kind(kind: ErrorKind) -> AttemptErrorKind {
    match kind {
        ErrorKind::InvalidUrl => AttemptErrorKind::InvalidUrl,
        ErrorKind::ForbiddenAddress => AttemptErrorKind::ForbiddenAddress,
        ErrorKind::Dns => AttemptErrorKind::DnsError,
        ErrorKind::Timeout => AttemptErrorKind::Timeout,
        ErrorKind::Connection => AttemptErrorKind::ConnectionError,
        ErrorKind::Request => AttemptErrorKind::RequestError,
    }
}
