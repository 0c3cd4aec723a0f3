//! The HTTP API, end to end over loopback, on SQLite and on PostgreSQL.

use crate::common;

use std::collections::HashSet;
use std::num::NonZeroU32;

use common::{TestServer, blamed_fields, expect_problem};
use serde_json::{Value, json};
use switchboard_server::ServerConfig;
use switchboard_store::Backend;

switchboard_store::conformance_tests!(
    health_readiness_and_metrics_answer,
    every_client_error_is_a_problem_naming_the_field,
    a_database_failure_is_a_500_that_leaks_nothing,
    oversize_bodies_are_413_and_bursts_are_429,
    tenants_never_see_each_other,
    api_keys_are_shown_once_listed_masked_and_revocable,
    scopes_limit_what_a_key_may_do,
    events_validate_against_their_type_schema,
    idempotency_keys_replay_and_conflict,
    fifty_parallel_idempotent_requests_create_one_event,
    event_lists_page_and_filter,
    the_openapi_document_describes_every_route,
    errors_of_the_http_layer_and_of_json_syntax_are_problems_that_say_why,
    whole_numbers_written_with_a_fraction_of_zero_are_whole_numbers,
);

/// JSON Schema counts `5.0` as an integer, and so do the generators that read the document:
/// the server takes it where the document says integer, and refuses `5.5`.
async fn whole_numbers_written_with_a_fraction_of_zero_are_whole_numbers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    let endpoint = json!({"url": "https://example.com/hook", "rate_limit_per_second": 5.0});
    let response = server.post(&key, "/api/integrations/webhooks", &endpoint).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["rate_limit_per_second"], 5);
    let id = created["id"].as_str().unwrap();
    let rotate = json!({"grace_period_seconds": 60.0});
    assert_eq!(
        server.post(&key, &format!("/api/integrations/webhooks/{id}/rotate-secret"), &rotate).await.status(),
        200
    );
    let patch = server
        .client
        .patch(server.url(&format!("/api/integrations/webhooks/{id}")))
        .bearer_auth(&key)
        .json(&json!({"rate_limit_per_second": 7.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.json::<Value>().await.unwrap()["rate_limit_per_second"], 7);
    let fraction = json!({"url": "https://example.com/hook", "rate_limit_per_second": 5.5});
    let problem = expect_problem(server.post(&key, "/api/integrations/webhooks", &fraction).await, 422).await;
    assert_eq!(blamed_fields(&problem), ["rate_limit_per_second"]);

    // Install-form integers are stored as integers, so they read back as the number given.
    let install = json!({
        "template_name": "github",
        "auth_mode": "bearer",
        "config_overrides": {"webhook_max_body_bytes": 4096.0},
    });
    let installed: Value = server.post(&key, "/api/marketplace/install", &install).await.json().await.unwrap();
    assert_eq!(installed["config"]["webhook_max_body_bytes"], json!(4096), "{installed}");
}

async fn health_readiness_and_metrics_answer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let health: Value = server.client.get(server.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    server.event_type(&server.admin_key, "a.b", None).await;
    server.post(&server.admin_key, "/api/events", &json!({"event_type": "a.b", "payload": {}})).await;

    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"switchboard_http_requests_total{method="POST",route="/api/events",status="201"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"switchboard_events_total{outcome="created"} 1"#), "{metrics}");
    assert!(metrics.contains("switchboard_http_request_duration_seconds_bucket"), "{metrics}");
}

async fn every_client_error_is_a_problem_naming_the_field(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    server.event_type(&key, "user.created", None).await;
    let events = server.url("/api/events");

    // 400: malformed JSON.
    let response = server
        .client
        .post(&events)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"event_type\":")
        .send()
        .await
        .unwrap();
    assert_eq!(blamed_fields(&expect_problem(response, 400).await), vec!["body"]);
    // 401: no key, a bad key.
    let response = server.client.get(&events).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    expect_problem(response, 401).await;
    expect_problem(server.get("sk_not-a-real-key-at-all-0000000", "/api/events").await, 401).await;
    // 404: an unknown route, an unknown event, an id of the wrong kind.
    expect_problem(server.get(&key, "/api/nothing-here").await, 404).await;
    expect_problem(server.get(&key, "/api/events/evt_01jd0000000000000000000000").await, 404).await;
    expect_problem(server.get(&key, "/api/events/key_01jd0000000000000000000000").await, 404).await;
    // 405: wrong method, with Allow.
    let response = server.client.delete(&events).bearer_auth(&key).send().await.unwrap();
    assert!(response.headers()["allow"].to_str().unwrap().contains("POST"));
    expect_problem(response, 405).await;
    // 409: a duplicate event type.
    let problem =
        expect_problem(server.post(&key, "/api/event-types", &json!({"name": "user.created"})).await, 409).await;
    assert_eq!(blamed_fields(&problem), vec!["name"]);
    // 415: not JSON.
    let response = server
        .client
        .post(&events)
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(blamed_fields(&expect_problem(response, 415).await), vec!["Content-Type"]);
    // 422: unknown field, wrong type, unknown event type, bad name.
    let problem = expect_problem(
        server.post(&key, "/api/events", &json!({"event_type": "user.created", "payload": {}, "extra": 1})).await,
        422,
    )
    .await;
    assert!(problem["errors"][0]["detail"].as_str().unwrap().contains("extra"), "{problem}");
    assert_eq!(blamed_fields(&problem), vec!["extra"]);
    let problem = expect_problem(server.post(&key, "/api/events", &json!({"payload": {}})).await, 422).await;
    assert_eq!(blamed_fields(&problem), vec!["event_type"]);
    let problem =
        expect_problem(server.post(&key, "/api/events", &json!({"event_type": 5, "payload": {}})).await, 422).await;
    assert_eq!(blamed_fields(&problem), vec!["event_type"]);
    let problem = expect_problem(
        server.post(&key, "/api/events", &json!({"event_type": "nope.never", "payload": {}})).await,
        422,
    )
    .await;
    assert_eq!(blamed_fields(&problem), vec!["event_type"]);
    let problem = expect_problem(server.post(&key, "/api/event-types", &json!({"name": "bad name!"})).await, 422).await;
    assert_eq!(blamed_fields(&problem), vec!["name"]);
    let problem = expect_problem(
        server.post(&key, "/api/event-types", &json!({"name": "x.y", "schema": {"type": 12}})).await,
        422,
    )
    .await;
    assert_eq!(blamed_fields(&problem), vec!["schema"]);
    // 400: bad query parameters and headers name themselves.
    assert_eq!(blamed_fields(&expect_problem(server.get(&key, "/api/events?limit=0").await, 400).await), vec!["limit"]);
    assert_eq!(
        blamed_fields(&expect_problem(server.get(&key, "/api/events?limit=abc").await, 400).await),
        vec!["limit"]
    );
    assert_eq!(
        blamed_fields(&expect_problem(server.get(&key, "/api/events?cursor=zzz").await, 400).await),
        vec!["cursor"]
    );
    assert_eq!(blamed_fields(&expect_problem(server.get(&key, "/api/events?bogus=1").await, 400).await), vec!["bogus"]);
    let response = server
        .client
        .post(&events)
        .bearer_auth(&key)
        .header("idempotency-key", "")
        .json(&json!({"event_type": "user.created", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(blamed_fields(&expect_problem(response, 400).await), vec!["Idempotency-Key"]);

    // Control characters (NUL is refused by PostgreSQL) are the caller's mistake, never a 500.
    let problem = expect_problem(server.post(&key, "/api/tenants", &json!({"name": "a\u{0}b"})).await, 422).await;
    assert_eq!(blamed_fields(&problem), vec!["name"]);
    let problem =
        expect_problem(server.post(&key, "/api/api-keys", &json!({"name": "x\u{7}", "scopes": ["read"]})).await, 422)
            .await;
    assert_eq!(blamed_fields(&problem), vec!["name"]);
    let problem = expect_problem(
        server.post(&key, "/api/event-types", &json!({"name": "a.c", "description": "\u{0}"})).await,
        422,
    )
    .await;
    assert_eq!(blamed_fields(&problem), vec!["description"]);
    expect_problem(server.get(&key, "/api/event-types/a%00b").await, 404).await;
    assert_eq!(
        blamed_fields(&expect_problem(server.get(&key, "/api/events?event_type=%00").await, 400).await),
        vec!["event_type"]
    );
    // A body must be an object, even where serde could read an array positionally.
    let problem = expect_problem(server.post(&key, "/api/event-types", &json!(["a.d", ""])).await, 422).await;
    assert_eq!(blamed_fields(&problem), vec!["body"]);
    // Empty query values mean "not given".
    assert_eq!(server.get(&key, "/api/events?cursor=&event_type=").await.status(), 200);
    // The auth scheme is case-insensitive.
    let response = server.client.get(&events).header("authorization", format!("BEARER {key}")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // None of the refused requests wrote anything.
    let list: Value = server.get(&key, "/api/events").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

async fn a_database_failure_is_a_500_that_leaks_nothing(backend: Backend) {
    use sqlx::Connection;
    let server = TestServer::start(backend).await;
    server.event_type(&server.admin_key, "a.b", None).await;
    // Break the database under the running server.
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&server.db.options.url).await.unwrap();
            sqlx::query("DROP TABLE events").execute(&mut conn).await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&server.db.options.url).await.unwrap();
            let schema = server.db.options.pg_schema.clone().unwrap();
            sqlx::query(&format!("DROP TABLE {schema}.events")).execute(&mut conn).await.unwrap();
        }
    }
    let response = server.get(&server.admin_key, "/api/events").await;
    let problem = expect_problem(response, 500).await;
    let text = problem.to_string().to_lowercase();
    for leak in ["events", "table", "sqlite", "postgres", "relation", "sql"] {
        assert!(!text.replace("/api/events", "").contains(leak), "the 500 leaks {leak:?}: {problem}");
    }
}

async fn oversize_bodies_are_413_and_bursts_are_429(backend: Backend) {
    let config = ServerConfig { max_body_bytes: 2048, rate_limit_per_key: NonZeroU32::new(5), ..Default::default() };
    let server = TestServer::start_with(backend, config).await;
    server.event_type(&server.admin_key, "a.b", None).await;
    let (_, other) = server.new_tenant("other").await;
    let big = json!({"event_type": "a.b", "payload": {"blob": "x".repeat(4096)}});
    let problem = expect_problem(server.post(&server.admin_key, "/api/events", &big).await, 413).await;
    assert!(problem["detail"].as_str().unwrap().contains("2048"));

    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response = server.get(&server.admin_key, "/api/event-types").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            expect_problem(response, 429).await;
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "a burst past the quota is refused: {statuses:?}");
    // Another key has its own bucket.
    assert_eq!(server.get(&other, "/api/event-types").await.status(), 200);
}

async fn tenants_never_see_each_other(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = server.admin_key.clone();
    let (b_id, b) = server.new_tenant("beta").await;
    server.event_type(&a, "order.paid", None).await;
    let created: Value = server
        .post(&a, "/api/events", &json!({"event_type": "order.paid", "payload": {"n": 1}}))
        .await
        .json()
        .await
        .unwrap();
    let event_path = format!("/api/events/{}", created["id"].as_str().unwrap());

    expect_problem(server.get(&b, &event_path).await, 404).await;
    let list: Value = server.get(&b, "/api/events").await.json().await.unwrap();
    assert!(list["data"].as_array().unwrap().is_empty());
    expect_problem(server.get(&b, "/api/event-types/order.paid").await, 404).await;
    // Tenant b has no such event type, so it cannot publish one.
    expect_problem(server.post(&b, "/api/events", &json!({"event_type": "order.paid", "payload": {}})).await, 422)
        .await;
    // Keys of another tenant cannot be read or revoked.
    let a_keys: Value = server.get(&a, "/api/api-keys").await.json().await.unwrap();
    let a_key_id = a_keys["data"][0]["id"].as_str().unwrap().to_string();
    expect_problem(server.get(&b, &format!("/api/api-keys/{a_key_id}")).await, 404).await;
    let response =
        server.client.delete(server.url(&format!("/api/api-keys/{a_key_id}"))).bearer_auth(&b).send().await.unwrap();
    expect_problem(response, 404).await;
    // Only the operator manages tenants.
    expect_problem(server.post(&b, "/api/tenants", &json!({"name": "gamma"})).await, 403).await;
    expect_problem(server.get(&b, &format!("/api/tenants/{b_id}")).await, 403).await;
    let tenant: Value = server.get(&a, &format!("/api/tenants/{b_id}")).await.json().await.unwrap();
    assert_eq!(tenant["name"], "beta");
}

async fn api_keys_are_shown_once_listed_masked_and_revocable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin_key.clone();
    let expires = "2030-01-01T00:00:00Z";
    let created: Value = server
        .post(&admin, "/api/api-keys", &json!({"name": "ci", "scopes": ["read"], "expires_at": expires}))
        .await
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("sk_") && token.len() >= 3 + 22);
    assert_eq!(created["scopes"], json!(["read"]));

    let listed = server.get(&admin, "/api/api-keys").await.text().await.unwrap();
    assert!(!listed.contains(&token), "the token is never listed");
    assert!(!listed.contains(&token[3..]), "nor its body");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let entry = listed["data"].as_array().unwrap().iter().find(|k| k["id"] == created["id"]).unwrap().clone();
    assert!(entry["masked"].as_str().unwrap().contains('…'));
    assert!(entry.get("token").is_none());

    assert_eq!(server.get(&token, "/api/events").await.status(), 200);
    // Expiry follows the server clock.
    server.clock.set(chrono::DateTime::parse_from_rfc3339(expires).unwrap().into());
    expect_problem(server.get(&token, "/api/events").await, 401).await;
    server.clock.set(switchboard_core::from_micros(1_760_000_000_000_000));
    assert_eq!(server.get(&token, "/api/events").await.status(), 200);

    let id = created["id"].as_str().unwrap();
    let response =
        server.client.delete(server.url(&format!("/api/api-keys/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), 204);
    expect_problem(server.get(&token, "/api/events").await, 401).await;
    let revoked: Value = server.get(&admin, &format!("/api/api-keys/{id}")).await.json().await.unwrap();
    assert!(revoked["revoked_at"].is_string());

    let problem =
        expect_problem(server.post(&admin, "/api/api-keys", &json!({"name": "x", "scopes": []})).await, 422).await;
    assert_eq!(blamed_fields(&problem), vec!["scopes"]);
    let problem =
        expect_problem(server.post(&admin, "/api/api-keys", &json!({"name": "x", "scopes": ["root"]})).await, 422)
            .await;
    assert_eq!(blamed_fields(&problem), vec!["scopes[0]"]);
}

async fn scopes_limit_what_a_key_may_do(backend: Backend) {
    let server = TestServer::start(backend).await;
    let read = server.key_with_scope("read").await;
    let write = server.key_with_scope("write").await;
    server.event_type(&write, "a.b", None).await;
    let event = json!({"event_type": "a.b", "payload": {}});
    let problem = expect_problem(server.post(&read, "/api/events", &event).await, 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("write"));
    assert_eq!(server.post(&write, "/api/events", &event).await.status(), 201);
    assert_eq!(server.get(&read, "/api/events").await.status(), 200);
    expect_problem(server.get(&write, "/api/api-keys").await, 403).await;
    expect_problem(server.post(&write, "/api/api-keys", &json!({"name": "x", "scopes": ["admin"]})).await, 403).await;
    expect_problem(server.get(&write, "/api/tenants").await, 403).await;
}

async fn events_validate_against_their_type_schema(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    let schema = json!({
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}}}
    });
    server.event_type(&key, "order.placed", Some(schema)).await;
    let bad = json!({"event_type": "order.placed", "payload": {"items": [{"sku": "a"}, {"sku": 7}]}});
    let problem = expect_problem(server.post(&key, "/api/events", &bad).await, 422).await;
    assert_eq!(blamed_fields(&problem), vec!["payload.items[1].sku"]);
    let good = json!({"event_type": "order.placed", "payload": {"items": [{"sku": "a"}]}});
    let created: Value = server.post(&key, "/api/events", &good).await.json().await.unwrap();
    assert_eq!(created["payload"], good["payload"]);
    let fetched: Value =
        server.get(&key, &format!("/api/events/{}", created["id"].as_str().unwrap())).await.json().await.unwrap();
    assert_eq!(fetched, created);

    // Dropping the schema accepts what it used to refuse; the version moves on.
    let updated: Value = server
        .client
        .patch(server.url("/api/event-types/order.placed"))
        .bearer_auth(&key)
        .json(&json!({"schema": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((updated["version"].as_i64(), updated["schema"].is_null()), (Some(2), true));
    assert_eq!(server.post(&key, "/api/events", &bad).await.status(), 201);
}

async fn idempotency_keys_replay_and_conflict(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    server.event_type(&key, "a.b", None).await;
    let send = |body: Value| {
        server
            .client
            .post(server.url("/api/events"))
            .bearer_auth(&key)
            .header("idempotency-key", "order-42")
            .json(&body)
            .send()
    };
    let first = send(json!({"event_type": "a.b", "payload": {"x": 1, "y": 2}})).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();
    // Same request (keys in another order are the same JSON): same response.
    let again = send(json!({"event_type": "a.b", "payload": {"y": 2, "x": 1}})).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let problem = expect_problem(send(json!({"event_type": "a.b", "payload": {"x": 2}})).await.unwrap(), 409).await;
    assert_eq!(blamed_fields(&problem), vec!["Idempotency-Key"]);
    let list: Value = server.get(&key, "/api/events").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // After the type gains a schema the first request no longer satisfies, its retry is still
    // answered as it was the first time.
    let response = server
        .client
        .patch(server.url("/api/event-types/a.b"))
        .bearer_auth(&key)
        .json(&json!({"schema": {"type": "object", "required": ["z"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let retry = send(json!({"event_type": "a.b", "payload": {"x": 1, "y": 2}})).await.unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
}

async fn fifty_parallel_idempotent_requests_create_one_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    server.event_type(&key, "a.b", None).await;
    let requests = (0..50).map(|_| {
        server
            .client
            .post(server.url("/api/events"))
            .bearer_auth(&key)
            .header("idempotency-key", "same")
            .json(&json!({"event_type": "a.b", "payload": {"n": 1}}))
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut ids = HashSet::new();
    let mut replays = 0;
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        replays += usize::from(response.headers().contains_key("idempotent-replayed"));
        ids.insert(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    assert_eq!((ids.len(), replays), (1, 49));
    let list: Value = server.get(&key, "/api/events").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

async fn event_lists_page_and_filter(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    server.event_type(&key, "a.one", None).await;
    server.event_type(&key, "a.two", None).await;
    let mut created = Vec::new();
    for i in 0..7 {
        let event_type = if i % 3 == 0 { "a.two" } else { "a.one" };
        let body: Value = server
            .post(&key, "/api/events", &json!({"event_type": event_type, "payload": {"i": i}}))
            .await
            .json()
            .await
            .unwrap();
        created.push(body["id"].as_str().unwrap().to_string());
        server.clock.advance(chrono::Duration::seconds(10));
    }
    let mut seen = Vec::new();
    let mut path = "/api/events?limit=3".to_string();
    loop {
        let page: Value = server.get(&key, &path).await.json().await.unwrap();
        seen.extend(page["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/events?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created, "every event once, newest first");

    let two: Value = server.get(&key, "/api/events?event_type=a.two").await.json().await.unwrap();
    assert_eq!(two["data"].as_array().unwrap().len(), 3);
    let after = "2025-10-09T08:53:35Z"; // between the 2nd and 3rd event
    let window: Value = server.get(&key, &format!("/api/events?created_after={after}")).await.json().await.unwrap();
    assert_eq!(window["data"].as_array().unwrap().len(), 5, "{window}");
    let problem = expect_problem(server.get(&key, "/api/events?created_after=yesterday").await, 400).await;
    assert_eq!(blamed_fields(&problem), vec!["created_after"]);
}

async fn the_openapi_document_describes_every_route(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = server.client.get(server.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/api/events",
        "/api/events/{event_id}",
        "/api/event-types",
        "/api/event-types/{name}",
        "/api/api-keys",
        "/api/api-keys/{key_id}",
        "/api/tenants",
        "/api/tenants/{tenant_id}",
        "/api/tenants/{tenant_id}/api-keys",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/openapi.json",
        "/api/docs",
        "/api/integrations/webhooks",
        "/api/integrations/webhooks/{endpoint_id}",
        "/api/integrations/webhooks/{endpoint_id}/secret",
        "/api/integrations/webhooks/{endpoint_id}/rotate-secret",
        "/api/integrations/webhooks/{endpoint_id}/recover",
        "/api/integrations/webhooks/{endpoint_id}/stats",
        "/api/integrations/webhooks/{endpoint_id}/messages",
        "/api/integrations/webhooks/{endpoint_id}/attempts",
        "/api/events/{event_id}/messages",
        "/api/events/{event_id}/attempts",
        "/api/messages/{message_id}",
        "/api/messages/{message_id}/attempts",
        "/api/messages/{message_id}/resend",
        "/api/marketplace/integrations",
        "/api/marketplace/integrations/{name}",
        "/api/marketplace/install",
        "/api/marketplace/configure",
        "/api/marketplace/installed",
        "/api/marketplace/installed/{connection_id}",
        "/api/integrations/health",
        "/api/integrations/{connection_id}/test",
        "/api/integrations/{connection_id}/actions/{action}",
        "/api/integrations/{connection_id}/proxy/{path}",
        "/api/integrations/{connection_id}/health",
        "/api/integrations/{connection_id}/oauth/start",
        "/oauth/callback",
        "/webhooks/{connection_id}",
        "/webhooks/stats",
        "/api/integrations/{connection_id}/inbound",
        "/api/integrations/{connection_id}/inbound/{inbound_id}",
        "/api/integrations/{connection_id}/inbound/{inbound_id}/replay",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    let create_event = &doc["paths"]["/api/events"]["post"];
    for status in ["201", "400", "401", "403", "409", "413", "415", "422", "429", "500"] {
        assert!(create_event["responses"].get(status).is_some(), "POST /api/events does not document {status}");
    }
    assert!(create_event["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Idempotency-Key"));
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    // Every documented operation exists: the server answers it with something other than
    // "no such route" or "wrong method".
    let sample = |path: &str| {
        path.replace("{event_id}", "evt_01jd0000000000000000000000")
            .replace("{key_id}", "key_01jd0000000000000000000000")
            .replace("{tenant_id}", "ten_01jd0000000000000000000000")
            .replace("{name}", "a.b")
            .replace("{endpoint_id}", "ep_01jd0000000000000000000000")
            .replace("{message_id}", "msg_01jd0000000000000000000000")
            .replace("{connection_id}", "conn_01jd0000000000000000000000")
            .replace("{action}", "list")
            .replace("{path}", "a/b")
            .replace("{inbound_id}", "inb_01jd0000000000000000000000")
    };
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let request = server
                .client
                .request(method.to_uppercase().parse().unwrap(), server.url(&sample(path)))
                .bearer_auth(&server.admin_key);
            let response = request.header("content-type", "application/json").body("{}").send().await.unwrap();
            assert_ne!(response.status(), 405, "{method} {path}");
            if response.status() == 404 {
                let problem: Value = response.json().await.unwrap();
                assert_ne!(problem["detail"], "No such route", "{method} {path} is documented but not routed");
            }
        }
    }
    let docs = server.client.get(server.url("/api/docs")).send().await.unwrap().text().await.unwrap();
    assert!(docs.contains("/api/events/{event_id}") && docs.contains("<html"));
}

/// Writes `request` on a fresh connection and reads the answer to its end (the server closes
/// the connection after these answers): (head, body).
async fn raw(server: &TestServer, request: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

async fn errors_of_the_http_layer_and_of_json_syntax_are_problems_that_say_why(backend: Backend) {
    let server = TestServer::start(backend).await;
    let many_headers: String = (0..150).map(|n| format!("x-h{n}: v\r\n")).collect();
    let long_target = format!("/api/events?q={}", "a".repeat(70_000));
    for (request, status) in [
        (b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n".to_vec(), 400),
        (format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n").into_bytes(), 431),
        (format!("GET {long_target} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes(), 414),
    ] {
        let (head, body) = raw(&server, &request).await;
        assert!(head.starts_with(&format!("http/1.1 {status} ")), "{head}");
        assert!(head.contains("content-type: application/problem+json"), "{head}");
        let problem: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(problem["status"], status, "{problem}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{problem}");
    }

    // JSON that is too deep or holds an impossible number says so, not just where.
    let key = server.admin_key.clone();
    server.event_type(&key, "deep.json", None).await;
    let deep = format!(r#"{{"event_type":"deep.json","payload":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    let huge = r#"{"event_type":"deep.json","payload":{"n":1e400}}"#;
    for (body, reason) in [(deep.as_str(), "nested deeper than 128"), (huge, "too large")] {
        let response = server
            .client
            .post(server.url("/api/events"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, 400).await;
        assert!(problem["detail"].as_str().unwrap().contains(reason), "{problem}");
    }
}
