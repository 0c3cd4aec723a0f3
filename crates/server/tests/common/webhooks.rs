//! Outgoing-webhook helpers: a receiver on loopback, and API shortcuts that wait for
//! deliveries to settle.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

use super::TestServer;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the receiver answers: a status, and a `Retry-After` value to send with it.
type Answer = (u16, Option<&'static str>);

/// A webhook receiver on loopback that records every request and answers with the queued
/// answers (200 once they run out).
#[derive(Clone, Default)]
pub struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    /// How long each answer takes.
    latency: Arc<Mutex<Duration>>,
}

impl Receiver {
    pub async fn start() -> (Self, String) {
        let receiver = Receiver::default();
        let state = receiver.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    state.received.lock().unwrap().push(Received { headers, body });
                    let latency = *state.latency.lock().unwrap();
                    tokio::time::sleep(latency).await;
                    let (status, retry_after) = state.answers.lock().unwrap().pop_front().unwrap_or((200, None));
                    let mut response = StatusCode::from_u16(status).unwrap().into_response();
                    if let Some(value) = retry_after {
                        response.headers_mut().insert("retry-after", HeaderValue::from_static(value));
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    pub fn answer_with(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses.iter().map(|s| (*s, None)));
    }

    pub fn answer_with_retry_after(&self, status: u16, retry_after: &'static str) {
        self.answers.lock().unwrap().push_back((status, Some(retry_after)));
    }

    /// Makes every answer from now on take `latency`.
    pub fn answer_after(&self, latency: Duration) {
        *self.latency.lock().unwrap() = latency;
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (briefly, on real time) until `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            if self.count() >= n {
                return self.all();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} deliveries, saw {}", self.count());
    }

    /// Asserts that no more than `n` requests arrive within a short while.
    pub async fn stays_at(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(self.count(), n, "more deliveries than expected");
    }
}

pub async fn endpoint(server: &TestServer, body: Value) -> Value {
    let response = server.post(&server.admin_key, "/api/integrations/webhooks", &body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

pub async fn publish(server: &TestServer, event_type: &str, payload: Value) -> String {
    let response =
        server.post(&server.admin_key, "/api/events", &json!({"event_type": event_type, "payload": payload})).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Polls the API until the message of `event_id` reaches `status`.
pub async fn message_of(server: &TestServer, event_id: &str, status: &str) -> Value {
    message_where(server, event_id, |m| m["status"] == status).await
}

/// Polls the API until the message of `event_id` satisfies `wanted`.
pub async fn message_where(server: &TestServer, event_id: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        let list: Value =
            server.get(&server.admin_key, &format!("/api/events/{event_id}/messages")).await.json().await.unwrap();
        if let Some(message) = list["data"].as_array().and_then(|m| m.first()) {
            if wanted(message) {
                return message.clone();
            }
            last = message.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the message of {event_id} never got there; last seen: {last}");
}
