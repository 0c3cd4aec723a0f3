//! Outgoing webhooks end to end: the API, the delivery workers and a real receiver on
//! loopback, on both store backends.

use crate::common;

use std::time::Duration;

use common::webhooks::{Receiver, endpoint, message_of, message_where, publish};
use common::{TestServer, expect_problem};
use serde_json::{Value, json};
use switchboard_core::{Clock, signature};
use switchboard_store::Backend;

switchboard_store::conformance_tests!(
    deliveries_are_signed_per_standard_webhooks_and_recorded,
    failures_follow_the_retry_schedule_then_dead_letter_and_emit_an_operational_event,
    a_gone_endpoint_is_disabled,
    endpoints_refuse_bad_input_with_the_field_named,
    rotation_signs_with_both_secrets_during_the_grace_period,
    filters_and_transforms_shape_what_is_delivered,
    failed_messages_are_resent_and_recovered_and_counted_in_stats,
    private_targets_are_refused_unless_the_operator_allows_them,
    an_event_whose_subscribers_cannot_be_read_is_refused_not_stored_undeliverable,
    messages_published_here_skip_the_claim_while_the_workers_have_room,
    a_tenant_whose_deliveries_are_behind_is_asked_to_slow_down,
    a_slow_endpoint_holds_only_its_share_of_the_delivery_slots,
);

async fn deliveries_are_signed_per_standard_webhooks_and_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (receiver, url) = Receiver::start().await;
    server.event_type(&server.admin_key, "video.generated", None).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let created = endpoint(
        &server,
        json!({"url": url, "event_types": ["video.*"], "secret": secret,
               "headers": {"X-Team": "media", "Authorization": "Bearer s3cret"}}),
    )
    .await;
    assert_eq!(created["secret"], secret, "the secret is shown on creation");
    assert_eq!(created["headers"], json!({"x-team": "media", "authorization": "********"}), "credentials are masked");
    let shown: Value = server
        .get(&server.admin_key, &format!("/api/integrations/webhooks/{}", created["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert!(shown.get("secret").is_none(), "and not afterwards");

    let event_id = publish(&server, "video.generated", json!({"video": 42})).await;
    let received = receiver.wait_for(1).await;
    let request = &received[0];
    let (id, timestamp) = (request.header("webhook-id"), request.header("webhook-timestamp"));
    assert_eq!(id, event_id, "webhook-id is the event id");
    let timestamp: i64 = timestamp.parse().unwrap();
    assert!(signature::verify(request.header("webhook-signature"), secret, id, timestamp, &request.body));
    assert_eq!(request.header("x-team"), "media");
    assert_eq!(request.header("authorization"), "Bearer s3cret");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "video.generated");
    assert_eq!(body["data"], json!({"video": 42}));
    assert!(body["timestamp"].as_str().unwrap().starts_with("2025-"), "{body}");

    // Sending the mask back keeps the credential; a mask for a header never set is refused.
    let path = format!("/api/integrations/webhooks/{}", created["id"].as_str().unwrap());
    let patch = |headers: Value| {
        server.client.patch(server.url(&path)).bearer_auth(&server.admin_key).json(&json!({"headers": headers})).send()
    };
    let patched: Value =
        patch(json!({"authorization": "********", "x-team": "video"})).await.unwrap().json().await.unwrap();
    assert_eq!(patched["headers"], json!({"x-team": "video", "authorization": "********"}));
    let problem = expect_problem(patch(json!({"x-api-key": "********"})).await.unwrap(), 422).await;
    assert_eq!(common::blamed_fields(&problem), vec!["headers.x-api-key".to_string()]);
    publish(&server, "video.generated", json!({"video": 43})).await;
    let second = receiver.wait_for(2).await.remove(1);
    assert_eq!((second.header("authorization"), second.header("x-team")), ("Bearer s3cret", "video"));

    let message = message_of(&server, &event_id, "succeeded").await;
    assert_eq!(message["attempts"], 1);
    let attempts: Value = server
        .get(&server.admin_key, &format!("/api/messages/{}/attempts", message["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(attempts["data"][0]["response_status"], 200);
    assert_eq!(attempts["data"][0]["succeeded"], true);
}

async fn failures_follow_the_retry_schedule_then_dead_letter_and_emit_an_operational_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (receiver, url) = Receiver::start().await;
    let (watcher, watcher_url) = Receiver::start().await;
    server.event_type(&server.admin_key, "order.paid", None).await;
    endpoint(&server, json!({"url": url, "event_types": ["order.paid"]})).await;
    endpoint(&server, json!({"url": watcher_url, "event_types": ["message.attempt.exhausted"]})).await;
    receiver.answer_with(&[500; 8]);
    let event_id = publish(&server, "order.paid", json!({"n": 1})).await;
    receiver.wait_for(1).await;
    // Each retry waits for its step of the schedule (no jitter in tests): nothing earlier.
    let steps = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
    for (index, seconds) in steps.iter().enumerate() {
        // The attempt is recorded (and the next one scheduled) shortly after the receiver saw it.
        message_where(&server, &event_id, |m| m["status"] == "pending" && m["attempts"] == index as i64 + 1).await;
        server.clock.advance(chrono::Duration::seconds(seconds - 1));
        server.store.wake_workers();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(receiver.count(), index + 1, "attempt {} came early", index + 2);
        server.clock.advance(chrono::Duration::seconds(1));
        server.store.wake_workers();
        receiver.wait_for(index + 2).await;
    }
    let message = message_of(&server, &event_id, "failed").await;
    assert_eq!((message["attempts"].as_i64(), message["last_status_code"].as_i64()), (Some(8), Some(500)));
    // The dead letter is announced through the events API, to whoever subscribed.
    let announced = watcher.wait_for(1).await;
    let body: Value = serde_json::from_slice(&announced[0].body).unwrap();
    assert_eq!(body["type"], "message.attempt.exhausted");
    assert_eq!(body["data"]["event_id"], event_id.as_str());
    assert_eq!(body["data"]["attempts"], 8);
}

async fn a_gone_endpoint_is_disabled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (receiver, url) = Receiver::start().await;
    server.event_type(&server.admin_key, "user.deleted", None).await;
    let created = endpoint(&server, json!({"url": url})).await;
    receiver.answer_with(&[410]);
    let event_id = publish(&server, "user.deleted", json!({})).await;
    let message = message_of(&server, &event_id, "failed").await;
    assert_eq!(message["attempts"], 1, "410 is not retried");
    let path = format!("/api/integrations/webhooks/{}", created["id"].as_str().unwrap());
    for _ in 0..100 {
        let shown: Value = server.get(&server.admin_key, &path).await.json().await.unwrap();
        if shown["enabled"] == false {
            assert_eq!(shown["disabled_reason"], "gone");
            // A later event is not sent to it (it received only the one request).
            publish(&server, "user.deleted", json!({})).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(receiver.count(), 1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the endpoint was not disabled");
}

async fn endpoints_refuse_bad_input_with_the_field_named(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.event_type(&server.admin_key, "a.b", None).await;
    let cases = [
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "https://example.com/", "event_types": ["nope.registered"]}), "event_types[0]"),
        (json!({"url": "https://example.com/", "event_types": ["a.*", "bad*"]}), "event_types[1]"),
        (json!({"url": "https://example.com/", "filter": ".a | ("}), "filter"),
        (json!({"url": "https://example.com/", "transform": "def f: f; f"}), "transform"),
        (json!({"url": "https://example.com/", "secret": "whsec_c2hvcnQ="}), "secret"),
        (json!({"url": "https://example.com/", "secret": "plain"}), "secret"),
        (json!({"url": "https://example.com/", "headers": {"webhook-id": "x"}}), "headers.webhook-id"),
        (json!({"url": "https://example.com/", "rate_limit_per_second": 0}), "rate_limit_per_second"),
    ];
    for (body, field) in cases {
        let problem =
            expect_problem(server.post(&server.admin_key, "/api/integrations/webhooks", &body).await, 422).await;
        let fields = common::blamed_fields(&problem);
        assert_eq!(fields, vec![field.to_string()], "{body}: {problem}");
    }
    let problem = expect_problem(
        server
            .post(
                &server.admin_key,
                "/api/integrations/webhooks",
                &json!({"url": "https://example.com/", "filter": ".a | ("}),
            )
            .await,
        422,
    )
    .await;
    assert!(problem.to_string().contains("position"), "jq errors say where: {problem}");
    // Every wrong field is named at once, not only the first.
    let many = json!({
        "url": "ftp://example.com/",
        "event_types": ["nope.registered"],
        "transform": "def f: f; f",
        "headers": {"content-type": "text/plain"},
        "metadata": {"big": "x".repeat(17 * 1024)},
    });
    let problem = expect_problem(server.post(&server.admin_key, "/api/integrations/webhooks", &many).await, 422).await;
    let mut fields = common::blamed_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["event_types[0]", "headers.content-type", "metadata", "transform", "url"], "{problem}");
    let list: Value = server.get(&server.admin_key, "/api/integrations/webhooks").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "nothing was written");
    // A change is checked the same way, and a wrong one changes nothing.
    let created: Value = server
        .post(
            &server.admin_key,
            "/api/integrations/webhooks",
            &json!({"url": "https://example.com/", "headers": {"x-api-key": "k"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/integrations/webhooks/{}", created["id"].as_str().unwrap());
    let wrong =
        json!({"description": "fine", "filter": ".a | (", "headers": {"x-api-key": "********", "x-new": "********"}});
    let problem = expect_problem(server.patch(&server.admin_key, &path, &wrong).await, 422).await;
    let mut fields = common::blamed_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["filter", "headers.x-new"], "{problem}");
    let unchanged: Value = server.get(&server.admin_key, &path).await.json().await.unwrap();
    assert_eq!(unchanged["description"], "", "{unchanged}");
}

async fn rotation_signs_with_both_secrets_during_the_grace_period(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (receiver, url) = Receiver::start().await;
    server.event_type(&server.admin_key, "a.b", None).await;
    let created = endpoint(&server, json!({"url": url})).await;
    let (id, old) = (created["id"].as_str().unwrap(), created["secret"].as_str().unwrap().to_string());
    // No body at all means no options.
    let rotated = server
        .client
        .post(server.url(&format!("/api/integrations/webhooks/{id}/rotate-secret")))
        .bearer_auth(&server.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    let fetched: Value =
        server.get(&server.admin_key, &format!("/api/integrations/webhooks/{id}/secret")).await.json().await.unwrap();
    assert_eq!(fetched["secret"], new.as_str());

    publish(&server, "a.b", json!({})).await;
    let first = receiver.wait_for(1).await.remove(0);
    let signatures = first.header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    let ts: i64 = first.header("webhook-timestamp").parse().unwrap();
    for secret in [&old, &new] {
        assert!(signature::verify(signatures, secret, first.header("webhook-id"), ts, &first.body));
    }
    // After the grace period only the new secret signs.
    server.clock.advance(chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    publish(&server, "a.b", json!({})).await;
    let second = receiver.wait_for(2).await.remove(1);
    let signatures = second.header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 1);
    let ts: i64 = second.header("webhook-timestamp").parse().unwrap();
    assert!(signature::verify(signatures, &new, second.header("webhook-id"), ts, &second.body));
    assert!(!signature::verify(signatures, &old, second.header("webhook-id"), ts, &second.body));

    // A body of whitespace is no options too, whatever its type; text that is not JSON is 415.
    let rotate = |content_type: &'static str, body: &'static str| {
        server
            .client
            .post(server.url(&format!("/api/integrations/webhooks/{id}/rotate-secret")))
            .bearer_auth(&server.admin_key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(rotate("application/json", " \n").await.unwrap().status(), 200);
    assert_eq!(rotate("text/plain", "").await.unwrap().status(), 200);
    expect_problem(rotate("text/plain", "key=whsec_x").await.unwrap(), 415).await;
}

async fn filters_and_transforms_shape_what_is_delivered(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (receiver, url) = Receiver::start().await;
    server.event_type(&server.admin_key, "order.paid", None).await;
    endpoint(
        &server,
        json!({
            "url": url,
            "filter": ".data.amount >= 100",
            "transform": "{text: \"Order \\(.data.id) paid\", kind: .type}",
        }),
    )
    .await;
    publish(&server, "order.paid", json!({"id": "o1", "amount": 5})).await;
    let big = publish(&server, "order.paid", json!({"id": "o2", "amount": 500})).await;
    let received = receiver.wait_for(1).await;
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body, json!({"text": "Order o2 paid", "kind": "order.paid"}));
    assert_eq!(received[0].header("webhook-id"), big);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.count(), 1, "the filtered-out event was not delivered");
}

async fn failed_messages_are_resent_and_recovered_and_counted_in_stats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (receiver, url) = Receiver::start().await;
    server.event_type(&server.admin_key, "a.b", None).await;
    // Subscribed to `a.b` only: an endpoint taking every type would also get the
    // `endpoint.disabled` its 410s cause, whenever the outbox publishes it.
    let created = endpoint(&server, json!({"url": url, "event_types": ["a.b"]})).await;
    let path = format!("/api/integrations/webhooks/{}", created["id"].as_str().unwrap());
    let enable = || async {
        let response = server
            .client
            .patch(server.url(&path))
            .bearer_auth(&server.admin_key)
            .json(&json!({"enabled": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };
    // A 410 fails the message and disables the endpoint; re-enabled, a resend delivers it.
    receiver.answer_with(&[410]);
    let first = publish(&server, "a.b", json!({"n": 1})).await;
    let failed = message_of(&server, &first, "failed").await;
    enable().await;
    let resent = server
        .post(&server.admin_key, &format!("/api/messages/{}/resend", failed["id"].as_str().unwrap()), &json!({}))
        .await;
    assert_eq!(resent.status(), 202);
    let delivered = message_of(&server, &first, "succeeded").await;
    assert_eq!(delivered["attempts"], 2);

    // Recover resends every failed message since a time, and only those.
    receiver.answer_with(&[410]);
    let second = publish(&server, "a.b", json!({"n": 2})).await;
    message_of(&server, &second, "failed").await;
    enable().await;
    let since = server.clock.now().to_rfc3339();
    let recovered: Value = server
        .post(&server.admin_key, &format!("{path}/recover"), &json!({"since": since}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recovered["recovered"], 1);
    message_of(&server, &second, "succeeded").await;
    assert_eq!(receiver.count(), 4);

    let stats: Value = server.get(&server.admin_key, &format!("{path}/stats")).await.json().await.unwrap();
    assert_eq!(stats["attempts"], 4);
    assert_eq!(stats["success_rate"], 0.5);
    assert_eq!(stats["messages"]["succeeded"], 2);
    assert_eq!(stats["last_error"], "HTTP 410");
    // `/metrics` answers without a key: totals only, nothing that names an endpoint.
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchboard_webhook_attempts_total{outcome=\"failed\"} 2"), "{metrics}");
    assert!(metrics.contains("switchboard_webhook_attempts_total{outcome=\"succeeded\"} 2"), "{metrics}");
    for series in
        ["switchboard_webhook_attempt_duration_seconds_bucket", "switchboard_webhook_last_failure_timestamp_seconds"]
    {
        assert!(metrics.lines().any(|l| l.starts_with(series)), "{series} not in /metrics");
    }
    assert!(!metrics.contains(created["id"].as_str().unwrap()) && !metrics.contains("ep_"), "{metrics}");
}

async fn private_targets_are_refused_unless_the_operator_allows_them(backend: Backend) {
    let server = TestServer::start_guarded(backend).await;
    for (url, reason) in [
        ("http://127.0.0.1:9/hook", "loopback_address"),
        ("http://2130706433/hook", "loopback_address"),
        ("http://localhost/hook", "loopback_address"),
        ("http://10.0.0.8/hook", "private_address"),
        ("http://169.254.169.254/latest/meta-data", "cloud_metadata_address"),
        ("http://[::ffff:127.0.0.1]/", "ipv4_embedded_in_ipv6"),
    ] {
        let problem = expect_problem(
            server.post(&server.admin_key, "/api/integrations/webhooks", &json!({"url": url})).await,
            422,
        )
        .await;
        assert_eq!(common::blamed_fields(&problem), vec!["url".to_string()]);
        assert!(problem.to_string().contains(reason), "{url}: {problem}");
    }
    // A public target is accepted, and cannot be moved to a private one later.
    let created = endpoint(&server, json!({"url": "https://93.184.216.34/hook"})).await;
    let path = format!("/api/integrations/webhooks/{}", created["id"].as_str().unwrap());
    let response = server
        .client
        .patch(server.url(&path))
        .bearer_auth(&server.admin_key)
        .json(&json!({"url": "http://192.168.1.1/"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 422).await;
    assert!(problem.to_string().contains("private_address"), "{problem}");
}

/// Accepting an event whose fan-out could not be computed would store it with no messages:
/// it would never be delivered. Such a publish fails whole instead, and can be retried.
async fn an_event_whose_subscribers_cannot_be_read_is_refused_not_stored_undeliverable(backend: Backend) {
    use sqlx::Connection;
    let server = TestServer::start(backend).await;
    server.event_type(&server.admin_key, "a.b", None).await;
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&server.db.options.url).await.unwrap();
            sqlx::query("DROP TABLE endpoints").execute(&mut conn).await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&server.db.options.url).await.unwrap();
            let schema = server.db.options.pg_schema.clone().unwrap();
            sqlx::query(&format!("DROP TABLE {schema}.endpoints")).execute(&mut conn).await.unwrap();
        }
    }
    let response = server.post(&server.admin_key, "/api/events", &json!({"event_type": "a.b", "payload": {}})).await;
    expect_problem(response, 500).await;
    let list: Value = server.get(&server.admin_key, "/api/events").await.json().await.unwrap();
    assert_eq!(list["data"], json!([]), "nothing was stored");
}

/// A counter's value in `/metrics`.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn messages_published_here_skip_the_claim_while_the_workers_have_room(backend: Backend) {
    // One delivery at a time, one more waiting: the rest of a burst waits for a claim.
    let server = TestServer::start_with_webhooks(backend, |config| config.concurrency = 1).await;
    let (receiver, url) = Receiver::start().await;
    receiver.answer_after(Duration::from_millis(150));
    server.event_type(&server.admin_key, "order.paid", None).await;
    endpoint(&server, json!({"url": url, "event_types": ["order.paid"]})).await;
    let mut events = Vec::new();
    for n in 0..6 {
        events.push(publish(&server, "order.paid", json!({"n": n})).await);
    }
    receiver.wait_for(6).await;
    for event_id in &events {
        message_of(&server, event_id, "succeeded").await;
    }
    receiver.stays_at(6).await;
    let mut delivered: Vec<String> = receiver.all().iter().map(|r| r.header("webhook-id").to_string()).collect();
    delivered.sort();
    events.sort();
    assert_eq!(delivered, events, "each event delivered once");
    let handed = metric(&server, "switchboard_webhook_messages_handed_over_total").await;
    let claimed = metric(&server, "switchboard_webhook_messages_claimed_total").await;
    assert!(handed >= 1, "the first message went straight to the idle workers");
    assert!(claimed >= 1, "the overflow was claimed");
    assert_eq!(handed + claimed, 6, "every message came one way or the other, once");
}

async fn a_tenant_whose_deliveries_are_behind_is_asked_to_slow_down(backend: Backend) {
    let server = TestServer::start_with_webhooks(backend, |config| {
        config.concurrency = 1;
        config.admission.max_due_per_tenant = Some(3);
    })
    .await;
    let (receiver, url) = Receiver::start().await;
    receiver.answer_after(Duration::from_millis(300));
    server.event_type(&server.admin_key, "order.paid", None).await;
    endpoint(&server, json!({"url": url, "event_types": ["order.paid"]})).await;
    let mut accepted = Vec::new();
    for n in 0..3 {
        accepted.push(publish(&server, "order.paid", json!({"n": n})).await);
    }
    let refused =
        server.post(&server.admin_key, "/api/events", &json!({"event_type": "order.paid", "payload": {}})).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let problem = expect_problem(refused, 429).await;
    assert!(problem["type"].as_str().unwrap().ends_with("deliveries-behind"), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("the limit is 3"), "{problem}");

    // Once the count is stale it is made again: the two handed to the busy workers are in
    // flight or leased, so one at most is due, and the tenant may publish again.
    server.clock.advance(chrono::Duration::seconds(1));
    accepted.push(publish(&server, "order.paid", json!({"n": 3})).await);
    receiver.wait_for(4).await;
    for event_id in &accepted {
        message_of(&server, event_id, "succeeded").await;
    }
    let outcomes = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(outcomes.contains("switchboard_events_total{outcome=\"deferred\"} 1"), "{outcomes}");
}

async fn a_slow_endpoint_holds_only_its_share_of_the_delivery_slots(backend: Backend) {
    let server = TestServer::start_with_webhooks(backend, |config| {
        config.concurrency = 4;
        config.concurrency_per_endpoint = Some(1);
    })
    .await;
    let (slow, slow_url) = Receiver::start().await;
    let (fast, fast_url) = Receiver::start().await;
    slow.answer_after(Duration::from_millis(600));
    server.event_type(&server.admin_key, "report.built", None).await;
    server.event_type(&server.admin_key, "order.paid", None).await;
    endpoint(&server, json!({"url": slow_url, "event_types": ["report.built"]})).await;
    endpoint(&server, json!({"url": fast_url, "event_types": ["order.paid"]})).await;
    let mut reports = Vec::new();
    for n in 0..4 {
        reports.push(publish(&server, "report.built", json!({"n": n})).await);
    }
    slow.wait_for(1).await;
    // Without the share, the slow endpoint's four messages would hold all four slots for
    // 600 ms; with it, the others wait their turn and the order goes out at once.
    let published = std::time::Instant::now();
    let order = publish(&server, "order.paid", json!({"n": 1})).await;
    fast.wait_for(1).await;
    assert!(published.elapsed() < Duration::from_millis(400), "the order waited {:?}", published.elapsed());
    assert_eq!(slow.count(), 1, "one slow delivery at a time");
    message_of(&server, &order, "succeeded").await;

    // The slow endpoint's other messages were put back for a second, their retries untouched.
    message_where(&server, &reports[3], |m| m["status"] == "pending" && m["attempts"] == 0).await;
    // Each second (on the test's clock) one more goes; the others are put back again.
    for _ in 0..50 {
        if slow.count() == 4 {
            break;
        }
        server.clock.advance(chrono::Duration::seconds(1));
        server.store.wake_workers();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    slow.stays_at(4).await;
    for report in &reports {
        let message = message_where(&server, report, |m| m["status"] == "succeeded").await;
        assert_eq!(message["attempts"], 1, "put back is not a failed attempt: {message}");
    }
    assert!(metric(&server, "switchboard_webhook_messages_put_back_total").await >= 3);
}
