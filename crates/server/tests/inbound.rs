//! The universal webhook receiver over HTTP on both backends: verified per the connection's
//! manifest, stored before the 2xx with masked headers, duplicates acknowledged once,
//! refusals recorded with their reason, handshakes answered.

use crate::common;

use common::TestServer;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_core::Clock;
use switchboard_core::{Id, IdKind};
use switchboard_inbound::InboundConfig;
use switchboard_sandbox::credentials as creds;
use switchboard_store::{Backend, Idempotency, InboundFilter, InboundStatus, NewEvent, NewInbound, Page, Verification};

switchboard_store::conformance_tests!(
    stripe_webhooks_are_verified_stored_and_deduplicated,
    slacks_url_verification_is_answered_only_when_signed,
    without_a_secret_webhooks_are_refused_and_unknown_addresses_are_404,
    senders_are_rate_limited_per_connection_and_per_source_and_counted,
    handshakes_declared_by_manifests_are_answered_as_each_provider_documents,
    unsigned_webhooks_are_taken_only_by_connections_that_opt_in,
    a_connection_sets_its_own_body_limit,
    a_receive_only_server_stores_webhooks_and_leaves_them_pending,
    hubspot_batches_are_one_webhook_and_one_event_per_item,
    slack_forms_are_read_as_documents,
    replay_reaches_todays_subscribers_and_failures_are_never_silent,
    early_answers_close_a_kept_alive_connection_cleanly,
);

const STRIPE_SECRET: &str = "whsec_endpoint_secret_for_tests";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn hex_hmac(key: &str, content: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(content);
    hex::encode(mac.finalize().into_bytes())
}

/// The install of a GitHub connection whose webhook secret is `gh-secret`.
fn github_with_secret() -> Value {
    json!({
        "template_name": "github",
        "auth_mode": "bearer",
        "credentials": {"token": creds::GITHUB_TOKEN, "webhook_secret": "gh-secret"},
    })
}

/// GitHub's headers for `payload` signed with `gh-secret`, as event `event`.
fn github_signed(payload: &str, event: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-hub-signature-256", format!("sha256={}", hex_hmac("gh-secret", payload.as_bytes()))),
        ("x-github-event", event.to_string()),
    ]
}

impl TestServer {
    async fn connection_with_secret(&self, body: Value) -> String {
        let response = self.post(&self.admin_key, "/api/marketplace/install", &body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    async fn deliver(&self, id: &str, headers: &[(&str, String)], body: &str) -> reqwest::Response {
        let mut request = self.client.post(self.url(&format!("/webhooks/{id}"))).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap()
    }
}

async fn stripe_webhooks_are_verified_stored_and_deduplicated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server
        .connection_with_secret(json!({
            "template_name": "stripe",
            "credentials": {"token": creds::STRIPE_SECRET_KEY, "webhook_secret": STRIPE_SECRET},
        }))
        .await;
    let body = r#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid","data":{"object":{"id":"in_1"}}}"#;
    let t = server.clock.now().timestamp();
    let signature = hex_hmac(STRIPE_SECRET, format!("{t}.{body}").as_bytes());
    let signed = [("stripe-signature", format!("t={t},v1={signature}")), ("content-type", "application/json".into())];

    let first = server.deliver(&id, &signed, body).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert!(first["id"].as_str().unwrap().starts_with("inb_"), "{first}");
    let again: Value = server.deliver(&id, &signed, body).await.json().await.unwrap();
    assert_eq!(
        (again["id"].clone(), again["duplicate"].clone()),
        (first["id"].clone(), json!(true)),
        "acknowledged once"
    );

    let tampered = server.deliver(&id, &signed, &body.replace("invoice.paid", "invoice.voided")).await;
    assert_eq!(tampered.status(), 401);
    let text = tampered.text().await.unwrap();
    assert!(!text.contains("mismatch") && !text.contains(STRIPE_SECRET), "terse: {text}");
    server.clock.advance(chrono::Duration::minutes(6));
    assert_eq!(server.deliver(&id, &signed, body).await.status(), 401, "a stale timestamp");

    let connection = server.store.find_connection(&id).await.unwrap().unwrap();
    let tenant = connection.tenant_id.as_str();
    let counts = server.store.inbound_counts(tenant).await.unwrap();
    assert_eq!((counts.received, counts.verified, counts.duplicates), (3, 1, 1));
    assert_eq!(counts.rejected_by_reason.get("signature_mismatch"), Some(&1));
    assert_eq!(counts.rejected_by_reason.get("stale_timestamp"), Some(&1));
    let stored = server.store.get_inbound(tenant, first["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.body, body.as_bytes(), "the raw body, byte for byte");
    assert_eq!(stored.provider_event_id.as_deref(), Some("evt_1NG8Du2eZvKYlo2CUI79vXWy"));
    let headers: Value = serde_json::from_str(&stored.headers).unwrap();
    assert_eq!(headers["stripe-signature"], "********", "{headers}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(stored.source_ip.as_deref(), Some("127.0.0.1"));

    // From the queue it becomes a hub event with the connection attached, once.
    let events = wait_for_events(&server, "stripe.invoice.paid", 1).await;
    let event = &events[0];
    assert_eq!(event["payload"]["connection_id"], id.as_str());
    assert_eq!(event["payload"]["provider"], "stripe");
    assert_eq!(event["payload"]["provider_event_id"], "evt_1NG8Du2eZvKYlo2CUI79vXWy");
    assert_eq!(event["payload"]["data"]["data"]["object"]["id"], "in_1");
    // The event is published, then the webhook recorded as processed: wait for the record.
    let inbound_id = first["id"].as_str().unwrap();
    wait_for_status(&server, &format!("/api/integrations/{id}/inbound/{inbound_id}"), "processed", 1).await;
    let processed = server.store.get_inbound(tenant, inbound_id).await.unwrap().unwrap();
    assert_eq!(processed.status, InboundStatus::Processed);
    assert_eq!(processed.event_id.as_ref().map(|e| e.as_str()), event["id"].as_str());
    assert_eq!(processed.event_type.as_deref(), Some("stripe.invoice.paid"));

    // Inspection: statistics, the connection's log, one record with its body, replay.
    let key = server.admin_key.clone();
    let stats: Value = server.get(&key, "/webhooks/stats").await.json().await.unwrap();
    assert_eq!(
        (stats["received"].as_u64(), stats["processed"].as_u64(), stats["duplicates"].as_u64()),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(stats["rejected"]["signature_mismatch"], 1, "{stats}");
    let log: Value =
        server.get(&key, &format!("/api/integrations/{id}/inbound?status=rejected")).await.json().await.unwrap();
    let reasons: Vec<&str> = log["data"].as_array().unwrap().iter().map(|i| i["rejection"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["stale_timestamp", "signature_mismatch"], "newest first");
    let inbound_path = format!("/api/integrations/{id}/inbound/{}", first["id"].as_str().unwrap());
    let one: Value = server.get(&key, &inbound_path).await.json().await.unwrap();
    assert_eq!(one["body"], body);
    assert_eq!(one["headers"]["stripe-signature"], "********");
    let replayed = server.post(&key, &format!("{inbound_path}/replay"), &json!({})).await;
    assert_eq!(replayed.status(), 202);
    let mut again = Value::Null;
    for _ in 0..100 {
        again = server.get(&key, &inbound_path).await.json().await.unwrap();
        if again["status"] == "processed" && again["attempts"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!((again["status"].as_str(), again["attempts"].as_u64()), (Some("processed"), Some(2)), "{again}");
    assert_eq!(again["event_id"], one["event_id"]);
    assert_eq!(wait_for_events(&server, "stripe.invoice.paid", 1).await.len(), 1, "replaying finds the same event");
    let rejected_id = log["data"][0]["id"].as_str().unwrap();
    let refused = server.post(&key, &format!("/api/integrations/{id}/inbound/{rejected_id}/replay"), &json!({})).await;
    common::expect_problem(refused, 409).await;
    common::expect_problem(server.get(&key, &format!("/api/integrations/{id}/inbound?status=odd")).await, 400).await;
    let (_, intruder) = server.new_tenant("intruder").await;
    common::expect_problem(server.get(&intruder, &inbound_path).await, 404).await;
    common::expect_problem(server.get(&intruder, &format!("/api/integrations/{id}/inbound")).await, 404).await;
}

/// The events of a type, once `n` of them exist (processing runs in the background).
async fn wait_for_events(server: &TestServer, event_type: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let page: Value =
            server.get(&server.admin_key, &format!("/api/events?event_type={event_type}")).await.json().await.unwrap();
        let events = page["data"].as_array().cloned().unwrap_or_default();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} {event_type} events appeared");
}

async fn slacks_url_verification_is_answered_only_when_signed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server
        .connection_with_secret(json!({
            "template_name": "slack",
            "auth_mode": "bearer",
            "credentials": {"token": creds::SLACK_BOT_TOKEN, "webhook_secret": SLACK_SECRET},
        }))
        .await;
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let t = server.clock.now().timestamp();
    let signature = format!("v0={}", hex_hmac(SLACK_SECRET, format!("v0:{t}:{body}").as_bytes()));
    let headers = [("x-slack-request-timestamp", t.to_string()), ("x-slack-signature", signature)];
    let answer = server.deliver(&id, &headers, body).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let forged = [("x-slack-request-timestamp", t.to_string()), ("x-slack-signature", "v0=00".to_string())];
    assert_eq!(server.deliver(&id, &forged, body).await.status(), 401);

    // An event callback is stored, keyed by its event_id.
    let event = r#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"}}"#;
    let signature = format!("v0={}", hex_hmac(SLACK_SECRET, format!("v0:{t}:{event}").as_bytes()));
    let headers = [("x-slack-request-timestamp", t.to_string()), ("x-slack-signature", signature)];
    assert_eq!(server.deliver(&id, &headers, event).await.status(), 200);
    let tenant = server.store.find_connection(&id).await.unwrap().unwrap().tenant_id;
    let filter = InboundFilter { connection_id: Some(id.clone()), status: None };
    let stored = server.store.list_inbound(tenant.as_str(), &filter, &Page { limit: 10, before: None }).await.unwrap();
    let verified: Vec<_> = stored.iter().filter(|i| i.verification() == Verification::Verified).collect();
    assert_eq!(verified.len(), 1, "the handshake is answered, not stored");
    assert_eq!(verified[0].provider_event_id.as_deref(), Some("Ev08MFMKH6"));
    let events = wait_for_events(&server, "slack.app_mention", 1).await;
    assert_eq!(events[0]["payload"]["data"]["event"]["text"], "hi");
}

async fn without_a_secret_webhooks_are_refused_and_unknown_addresses_are_404(backend: Backend) {
    let server = TestServer::start(backend).await;
    let github = server
        .connection_with_secret(
            json!({"template_name": "github", "auth_mode": "bearer", "credentials": {"token": creds::GITHUB_TOKEN}}),
        )
        .await;
    let headers =
        [("x-hub-signature-256", format!("sha256={}", hex_hmac("guess", b"{}"))), ("x-github-event", "push".into())];
    assert_eq!(server.deliver(&github, &headers, "{}").await.status(), 401);
    let tenant = server.store.find_connection(&github).await.unwrap().unwrap().tenant_id;
    let counts = server.store.inbound_counts(tenant.as_str()).await.unwrap();
    assert_eq!(counts.rejected_by_reason.get("no_secret"), Some(&1));

    // With its secret set, GitHub's event type comes from its header: `github.push`.
    let configure = json!({"integration_id": github, "credentials": {"webhook_secret": "gh-secret"}});
    assert_eq!(server.post(&server.admin_key, "/api/marketplace/configure", &configure).await.status(), 200);
    let payload = r#"{"ref":"refs/heads/main"}"#;
    let mut signed = github_signed(payload, "push");
    signed.push(("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string()));
    assert_eq!(server.deliver(&github, &signed, payload).await.status(), 200);
    let events = wait_for_events(&server, "github.push", 1).await;
    assert_eq!(events[0]["payload"]["provider_event_id"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(events[0]["payload"]["data"]["ref"], "refs/heads/main");

    // Unknown, malformed, and providers that send no webhooks all look the same.
    let rest = server
        .connection_with_secret(json!({"template_name": "rest", "auth_mode": "none", "config_overrides": {"base_url": "https://api.example.com"}}))
        .await;
    let mut problems = Vec::new();
    for address in [rest.as_str(), "conn_01jd0000000000000000000000", "not-an-id"] {
        let mut problem = common::expect_problem(server.deliver(address, &headers, "{}").await, 404).await;
        problem.as_object_mut().unwrap().retain(|name, _| !["instance", "request_id"].contains(&name.as_str()));
        problems.push(problem);
    }
    assert!(problems.windows(2).all(|pair| pair[0] == pair[1]), "{problems:?}");
    let oversize = "x".repeat(1_100_000);
    common::expect_problem(server.deliver(&github, &headers, &oversize).await, 413).await;
    let refused = common::expect_problem(server.deliver(&github, &headers, "{}").await, 401).await;
    assert!(!refused.to_string().contains("mismatch"), "the reason is recorded, not told: {refused}");
}

async fn handshakes_declared_by_manifests_are_answered_as_each_provider_documents(backend: Backend) {
    let server = TestServer::start_with_test_connectors(backend).await;
    let install = |provider: &str, credentials: Value| json!({"template_name": provider, "credentials": credentials});

    // Meta: GET with hub.mode, hub.challenge and the verify token entered at Meta.
    let whatsapp = server
        .connection_with_secret(install(
            "whatsapp",
            json!({"token": "t", "webhook_secret": "app-secret", "webhook_verify_token": "meatyhamhock"}),
        ))
        .await;
    let meta = |query: &str| server.client.get(server.url(&format!("/webhooks/{whatsapp}?{query}"))).send();
    let answer = meta("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock").await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(answer.text().await.unwrap(), "1158201444");
    let wrong = meta("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess").await.unwrap();
    let problem = common::expect_problem(wrong, 403).await;
    assert!(!problem.to_string().contains("1158201444"));
    // Its events are signed like GitHub's, with the app secret.
    let change =
        r#"{"object":"whatsapp_business_account","entry":[{"id":"102","changes":[{"field":"messages","value":{}}]}]}"#;
    let signed = [("x-hub-signature-256", format!("sha256={}", hex_hmac("app-secret", change.as_bytes())))];
    assert_eq!(server.deliver(&whatsapp, &signed, change).await.status(), 200);
    wait_for_events(&server, "whatsapp.messages", 1).await;

    // Dropbox: GET ?challenge= echoed, sniffing off; its one kind of notification.
    let dropbox =
        server.connection_with_secret(install("dropbox", json!({"token": "t", "webhook_secret": "dbx"}))).await;
    let echo = server.client.get(server.url(&format!("/webhooks/{dropbox}?challenge=a%2Bb%20c"))).send().await.unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(echo.headers()["x-content-type-options"], "nosniff");
    assert_eq!(echo.text().await.unwrap(), "a+b c");
    let notification = r#"{"list_folder":{"accounts":["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]}}"#;
    let signed = [("x-dropbox-signature", hex_hmac("dbx", notification.as_bytes()))];
    assert_eq!(server.deliver(&dropbox, &signed, notification).await.status(), 200);
    wait_for_events(&server, "dropbox.list_folder", 1).await;
    // A GET without a declared handshake is not an address.
    let plain = server.client.get(server.url(&format!("/webhooks/{whatsapp}"))).send().await.unwrap();
    common::expect_problem(plain, 404).await;

    // Microsoft Graph: POST ?validationToken= echoed as text; the body is not read.
    let graph = server
        .connection_with_secret(json!({"template_name": "microsoft-graph", "credentials": {"token": "t"}, "config_overrides": {"webhook_accept_unsigned": true}}))
        .await;
    let validation = server
        .client
        .post(server.url(&format!("/webhooks/{graph}?validationToken=Validation%3a+Testing+client+application")))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(validation.status(), 200);
    assert_eq!(validation.text().await.unwrap(), "Validation: Testing client application");

    // Zoom: a signed endpoint.url_validation is answered with the plain token's HMAC, an
    // unsigned one is refused (it would sign whatever a stranger sends).
    let zoom =
        server.connection_with_secret(install("zoom", json!({"token": "t", "webhook_secret": "zoom-secret"}))).await;
    let body = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let t = server.clock.now().timestamp();
    let zoom_headers = |body: &str| {
        [
            ("x-zm-request-timestamp", t.to_string()),
            ("x-zm-signature", format!("v0={}", hex_hmac("zoom-secret", format!("v0:{t}:{body}").as_bytes()))),
        ]
    };
    let answer: Value = server.deliver(&zoom, &zoom_headers(body), body).await.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": hex_hmac("zoom-secret", b"qgg8vlvZRS6UYooatFL8Aw")})
    );
    let forged = [("x-zm-request-timestamp", t.to_string()), ("x-zm-signature", "v0=00".to_string())];
    assert_eq!(server.deliver(&zoom, &forged, body).await.status(), 401);
    let started = r#"{"event":"meeting.started","payload":{"object":{"id":"85746065432"}},"event_ts":1654503849680}"#;
    assert_eq!(server.deliver(&zoom, &zoom_headers(started), started).await.status(), 200);
    wait_for_events(&server, "zoom.meeting.started", 1).await;

    // Handshakes are answered, not stored; the catalog shows them.
    let tenant = server.store.find_connection(&zoom).await.unwrap().unwrap().tenant_id;
    let counts = server.store.inbound_counts(tenant.as_str()).await.unwrap();
    assert_eq!((counts.verified, counts.rejected_by_reason.values().sum::<u64>()), (3, 1));
    let detail: Value =
        server.get(&server.admin_key, "/api/marketplace/integrations/whatsapp").await.json().await.unwrap();
    assert_eq!(detail["webhook_handshakes"], json!(["meta_hub_challenge"]));
    let credential_names: Vec<&str> =
        detail["webhook_credential_fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(credential_names.contains(&"webhook_verify_token"), "{credential_names:?}");
}

async fn unsigned_webhooks_are_taken_only_by_connections_that_opt_in(backend: Backend) {
    let server = TestServer::start_with_test_connectors(backend).await;
    let payload = r#"{"ref":"refs/heads/main"}"#;
    let push = [("x-github-event", "push".to_string())];
    let opted_in = server
        .connection_with_secret(json!({
            "template_name": "github",
            "auth_mode": "bearer",
            "credentials": {"token": creds::GITHUB_TOKEN},
            "config_overrides": {"webhook_accept_unsigned": true},
        }))
        .await;
    let accepted: Value = server.deliver(&opted_in, &push, payload).await.json().await.unwrap();
    let inbound_path = format!("/api/integrations/{opted_in}/inbound/{}", accepted["id"].as_str().unwrap());
    let record: Value = server.get(&server.admin_key, &inbound_path).await.json().await.unwrap();
    assert_eq!((record["verification"].as_str(), record["rejection"].as_str()), (Some("unsigned"), None));
    let events = wait_for_events(&server, "github.push", 1).await;
    assert_eq!(events[0]["payload"]["connection_id"], opted_in.as_str());
    let stats: Value = server.get(&server.admin_key, "/webhooks/stats").await.json().await.unwrap();
    assert_eq!((stats["unsigned"].as_u64(), stats["verified"].as_u64()), (Some(1), Some(0)), "{stats}");

    // Once a secret is set it is required, opt-in or not.
    let configure = json!({"integration_id": opted_in, "credentials": {"webhook_secret": "gh-secret"}});
    assert_eq!(server.post(&server.admin_key, "/api/marketplace/configure", &configure).await.status(), 200);
    assert_eq!(server.deliver(&opted_in, &push, r#"{"ref":"refs/heads/dev"}"#).await.status(), 401);

    // A provider that signs nothing: refused unless the connection opts in.
    let graph =
        server.connection_with_secret(json!({"template_name": "microsoft-graph", "credentials": {"token": "t"}})).await;
    let notification = r#"{"value":[{"changeType":"created","clientState":"s","resource":"Users/1/Messages/2"}]}"#;
    assert_eq!(server.deliver(&graph, &[], notification).await.status(), 401);
    let tenant = server.store.find_connection(&graph).await.unwrap().unwrap().tenant_id;
    let counts = server.store.inbound_counts(tenant.as_str()).await.unwrap();
    assert_eq!(counts.rejected_by_reason.get("unsigned_refused"), Some(&1), "{counts:?}");
    assert_eq!(counts.rejected_by_reason.get("missing_signature"), Some(&1), "{counts:?}");

    // The setting is typed at install.
    let refused = server
        .post(
            &server.admin_key,
            "/api/marketplace/install",
            &json!({"template_name": "github", "auth_mode": "bearer", "config_overrides": {"webhook_accept_unsigned": "yes"}}),
        )
        .await;
    let problem = common::expect_problem(refused, 422).await;
    assert!(problem.to_string().contains("config_overrides.webhook_accept_unsigned"), "{problem}");
}

async fn a_connection_sets_its_own_body_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let with_limit = |limit: u64| {
        let mut install = github_with_secret();
        install["config_overrides"] = json!({"webhook_max_body_bytes": limit});
        install
    };
    let server = &server;
    let deliver = |id: String, size: usize| async move {
        let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(size));
        server.deliver(&id, &github_signed(&payload, "push"), &payload).await.status().as_u16()
    };
    let small = server.connection_with_secret(with_limit(2048)).await;
    assert_eq!(deliver(small.clone(), 1000).await, 200);
    assert_eq!(deliver(small, 3000).await, 413);
    // Larger than the 1 MiB default and than the API's own body limit.
    let large = server.connection_with_secret(with_limit(3 * 1024 * 1024)).await;
    assert_eq!(deliver(large, 2 * 1024 * 1024).await, 200);

    let refused = server.post(&server.admin_key, "/api/marketplace/install", &with_limit(100)).await;
    let problem = common::expect_problem(refused, 422).await;
    assert!(problem.to_string().contains("config_overrides.webhook_max_body_bytes"), "{problem}");
    let too_big = server.post(&server.admin_key, "/api/marketplace/install", &with_limit(1 << 30)).await;
    common::expect_problem(too_big, 422).await;
}

async fn senders_are_rate_limited_per_connection_and_per_source_and_counted(backend: Backend) {
    let config = InboundConfig {
        per_connection: std::num::NonZeroU32::new(3),
        per_source: std::num::NonZeroU32::new(8),
        ..Default::default()
    };
    let server = TestServer::start_with_inbound(backend, config).await;
    let id = server.connection_with_secret(github_with_secret()).await;
    let payload = r#"{"zen":"Keep it logically awesome."}"#;
    let signed = github_signed(payload, "ping");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = server.deliver(&id, &signed, payload).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry_after >= 1);
            common::expect_problem(response, 429).await;
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "three a second per connection");

    // The source's own budget (8) runs out across addresses, known or not.
    let mut limited = 0;
    for _ in 0..6 {
        if server.deliver("conn_01jd0000000000000000000000", &signed, payload).await.status() == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 3, "5 + 3 answered, then the source is limited");
    let stats: Value = server.get(&server.admin_key, "/webhooks/stats").await.json().await.unwrap();
    assert_eq!(stats["rate_limited_sources"], 1, "{stats}");

    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"switchboard_inbound_webhooks_total{outcome="stored"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"switchboard_inbound_webhooks_total{outcome="duplicate"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"switchboard_inbound_webhooks_total{outcome="rate_limited"} 5"#), "{metrics}");
}

async fn a_receive_only_server_stores_webhooks_and_leaves_them_pending(backend: Backend) {
    let config = InboundConfig { processing: false, ..Default::default() };
    let server = TestServer::start_with_inbound(backend, config).await;
    let id = server.connection_with_secret(github_with_secret()).await;
    let payload = r#"{"zen":"Design for failure."}"#;
    let signed = github_signed(payload, "ping");
    assert_eq!(server.deliver(&id, &signed, payload).await.status(), 200);
    // Long enough for a processing loop to have picked it up, were there one.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stats: Value = server.get(&server.admin_key, "/webhooks/stats").await.json().await.unwrap();
    assert_eq!(
        (stats["processing_workers"].as_u64(), stats["pending"].as_u64(), stats["processed"].as_u64()),
        (Some(0), Some(1), Some(0)),
        "{stats}"
    );
}

/// HubSpot's v3 signature over `method + url + body + timestamp`, with the client secret.
fn hubspot_signed(server: &TestServer, id: &str, body: &str) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let timestamp = server.clock.now().timestamp_millis().to_string();
    let url = server.url(&format!("/webhooks/{id}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(b"hs-client-secret").unwrap();
    mac.update(format!("POST{url}{body}{timestamp}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("x-hubspot-signature-v3", signature),
        ("x-hubspot-request-timestamp", timestamp),
        ("content-type", "application/json".into()),
    ]
}

fn hubspot_event(event_id: u64, kind: &str) -> Value {
    json!({"eventId": event_id, "subscriptionId": 25, "portalId": 33, "appId": 1160452, "occurredAt": 1462216307945_u64,
           "subscriptionType": kind, "attemptNumber": 0, "objectId": 1246965, "changeSource": "CRM", "changeFlag": "NEW"})
}

async fn hubspot_batches_are_one_webhook_and_one_event_per_item(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The client secret alone: this connection only receives.
    let id = server
        .connection_with_secret(
            json!({"template_name": "hubspot", "credentials": {"webhook_secret": "hs-client-secret"}}),
        )
        .await;
    let (server, id) = (&server, id.as_str());
    let deliver = |events: Vec<Value>| {
        let body = Value::Array(events).to_string();
        let headers = hubspot_signed(server, id, &body);
        async move { server.deliver(id, &headers, &body).await.json::<Value>().await.unwrap() }
    };
    let first = deliver(vec![hubspot_event(1, "contact.creation"), hubspot_event(2, "contact.deletion")]).await;
    assert_eq!(first["ids"].as_array().map(Vec::len), Some(2), "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");
    let created = wait_for_events(server, "hubspot.contact.creation", 1).await;
    assert_eq!(created[0]["payload"]["provider_event_id"], "1");
    assert_eq!(created[0]["payload"]["data"]["objectId"], 1246965);
    let deleted = wait_for_events(server, "hubspot.contact.deletion", 1).await;
    assert_eq!(deleted[0]["payload"]["provider_event_id"], "2");

    // A batch is a duplicate only when every item was seen; new items in it are kept.
    let again = deliver(vec![hubspot_event(1, "contact.creation")]).await;
    assert_eq!(again["duplicate"], true, "{again}");
    let mixed = deliver(vec![hubspot_event(1, "contact.creation"), hubspot_event(3, "contact.propertyChange")]).await;
    assert!(mixed.get("duplicate").is_none(), "{mixed}");
    assert_eq!(mixed["ids"][0], first["ids"][0], "the item seen before answers with its first record");
    wait_for_events(server, "hubspot.contact.propertyChange", 1).await;
    let repeated =
        deliver(vec![hubspot_event(3, "contact.propertyChange"), hubspot_event(1, "contact.creation")]).await;
    assert_eq!(repeated["duplicate"], true, "{repeated}");

    // Each item is stored with its own bytes and the batch's (masked) headers.
    let tenant = server.store.find_connection(id).await.unwrap().unwrap().tenant_id;
    let counts = server.store.inbound_counts(tenant.as_str()).await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (3, 4), "{counts:?}");
    let item = server.store.get_inbound(tenant.as_str(), first["ids"][1].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&item.body).unwrap(), hubspot_event(2, "contact.deletion"));
    assert!(item.headers.contains(r#""x-hubspot-signature-v3":"********""#), "{}", item.headers);
    // A forged batch is refused whole, and stored once as it came.
    let body = Value::Array(vec![hubspot_event(9, "contact.creation")]).to_string();
    let forged = [("x-hubspot-signature-v3", "AAAA".to_string()), ("x-hubspot-request-timestamp", "1".to_string())];
    common::expect_problem(server.deliver(id, &forged, &body).await, 401).await;

    // A batch of more items than are taken at once is refused whole, before any is stored.
    let body = Value::Array((100..1101).map(|n| hubspot_event(n, "contact.creation")).collect()).to_string();
    let problem =
        common::expect_problem(server.deliver(id, &hubspot_signed(server, id, &body), &body).await, 413).await;
    assert!(problem["detail"].as_str().unwrap().contains("1001 items"), "{problem}");
    let after = server.store.inbound_counts(tenant.as_str()).await.unwrap();
    assert_eq!(
        (after.received, after.duplicates),
        (counts.received + 1, counts.duplicates),
        "only the forgery was added"
    );
}

/// Slack's signature over `v0:{timestamp}:{body}`.
fn slack_signed(server: &TestServer, body: &str, content_type: &str) -> Vec<(&'static str, String)> {
    let t = server.clock.now().timestamp();
    vec![
        ("x-slack-request-timestamp", t.to_string()),
        ("x-slack-signature", format!("v0={}", hex_hmac(SLACK_SECRET, format!("v0:{t}:{body}").as_bytes()))),
        ("content-type", content_type.to_string()),
    ]
}

async fn slack_forms_are_read_as_documents(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server
        .connection_with_secret(json!({"template_name": "slack", "credentials": {"webhook_secret": SLACK_SECRET}}))
        .await;
    let form = "application/x-www-form-urlencoded";
    // A slash command, as Slack posts it.
    let command = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example&channel_id=C2147483705\
        &channel_name=test&user_id=U2147483697&user_name=Steve&command=%2Fdeploy&text=api+to+prod\
        &response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1234%2F5678&trigger_id=13345224609.738474920.8088930838d88f008e0";
    let answer = server.deliver(&id, &slack_signed(&server, command, form), command).await;
    assert_eq!(answer.status(), 200);
    let events = wait_for_events(&server, "slack.slash_command", 1).await;
    let data = &events[0]["payload"]["data"];
    assert_eq!((data["command"].as_str(), data["text"].as_str()), (Some("/deploy"), Some("api to prod")), "{data}");
    // An interaction: its JSON is in the `payload` field, and its type names the event.
    let interaction = json!({"type": "block_actions", "trigger_id": "12466734323.1395872398",
        "actions": [{"action_id": "approve", "value": "deploy-42"}], "user": {"id": "U2147483697"}});
    let body = format!("payload={}", url_escape(&interaction.to_string()));
    assert_eq!(server.deliver(&id, &slack_signed(&server, &body, form), &body).await.status(), 200);
    let events = wait_for_events(&server, "slack.block_actions", 1).await;
    assert_eq!(events[0]["payload"]["data"]["payload"]["actions"][0]["value"], "deploy-42");
    // The form's signature covers its bytes like any body's.
    let mut forged = slack_signed(&server, command, form);
    forged[1].1 = "v0=00".into();
    common::expect_problem(server.deliver(&id, &forged, command).await, 401).await;
    // Both were published, then recorded as processed.
    let mut stats = Value::Null;
    for _ in 0..200 {
        stats = server.get(&server.admin_key, "/webhooks/stats").await.json().await.unwrap();
        if stats["processed"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!((stats["processed"].as_u64(), stats["failed"].as_u64()), (Some(2), Some(0)), "{stats}");
}

fn url_escape(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn replay_reaches_todays_subscribers_and_failures_are_never_silent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server
        .connection_with_secret(json!({"template_name": "stripe", "credentials": {"webhook_secret": STRIPE_SECRET}}))
        .await;
    let stripe = |body: &str| {
        let t = server.clock.now().timestamp();
        let signature = hex_hmac(STRIPE_SECRET, format!("{t}.{body}").as_bytes());
        vec![("stripe-signature", format!("t={t},v1={signature}"))]
    };
    let key = server.admin_key.clone();

    // Processed while nobody subscribed.
    let body = r#"{"id":"evt_replay","object":"event","type":"charge.refunded","data":{"object":{}}}"#;
    let received: Value = server.deliver(&id, &stripe(body), body).await.json().await.unwrap();
    let event = wait_for_events(&server, "stripe.charge.refunded", 1).await.remove(0);
    let (receiver, url) = common::webhooks::Receiver::start().await;
    let endpoint = common::webhooks::endpoint(&server, json!({"url": url, "event_types": ["stripe.*"]})).await;
    assert_eq!(endpoint["id"].as_str().map(|id| id.starts_with("ep_")), Some(true));

    // The replay finds the same event and gives it to the endpoint subscribed since, once.
    let inbound_path = format!("/api/integrations/{id}/inbound/{}", received["id"].as_str().unwrap());
    for round in 1..=2 {
        assert_eq!(server.post(&key, &format!("{inbound_path}/replay"), &json!({})).await.status(), 202);
        wait_for_status(&server, &inbound_path, "processed", round + 1).await;
    }
    let delivered = receiver.wait_for(1).await;
    assert_eq!(delivered[0].header("webhook-id"), event["id"].as_str().unwrap());
    receiver.stays_at(1).await;
    let messages: Value = server
        .get(&key, &format!("/api/events/{}/messages", event["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(messages["data"].as_array().map(Vec::len), Some(1), "{messages}");
    assert_eq!(wait_for_events(&server, "stripe.charge.refunded", 1).await.len(), 1);

    // A webhook acknowledged but impossible to type is failed, counted, announced, and can
    // be replayed (once the manifest or the data is put right).
    let untyped = r#"{"id":"evt_untyped","object":"event","data":{}}"#;
    let received: Value = server.deliver(&id, &stripe(untyped), untyped).await.json().await.unwrap();
    let failed_path = format!("/api/integrations/{id}/inbound/{}", received["id"].as_str().unwrap());
    let failed = wait_for_status(&server, &failed_path, "failed", 1).await;
    assert!(failed["last_error"].as_str().unwrap().contains("/type"), "{failed}");
    let stats: Value = server.get(&key, "/webhooks/stats").await.json().await.unwrap();
    assert_eq!(stats["failed"], 1, "{stats}");
    let alarms = wait_for_events(&server, "inbound.processing_failed", 1).await;
    assert_eq!(alarms[0]["payload"]["inbound_id"], received["id"]);
    assert_eq!(alarms[0]["payload"]["connection_id"], id.as_str());
    assert!(alarms[0]["payload"]["error"].as_str().unwrap().contains("/type"));
    assert_eq!(server.post(&key, &format!("{failed_path}/replay"), &json!({})).await.status(), 202);
    wait_for_status(&server, &failed_path, "failed", 2).await;
    assert_eq!(wait_for_events(&server, "inbound.processing_failed", 2).await.len(), 2, "each failed attempt says so");

    // A webhook published before as another event (the manifest read it differently then)
    // becomes the event it reads as now.
    let connection = server.store.find_connection(&id).await.unwrap().unwrap();
    let tenant_id = connection.tenant_id;
    let inbound_id = Id::new(IdKind::Inbound);
    let earlier = NewEvent {
        id: Id::new(IdKind::Event),
        tenant_id: tenant_id.clone(),
        event_type: "stripe.unknown".into(),
        payload: "{}".into(),
        idempotency: Some(Idempotency { key: format!("inbound:{inbound_id}"), request_hash: "earlier reading".into() }),
        created_at: server.clock.now(),
    };
    server.store.create_event(&earlier, &[], &[]).await.unwrap();
    let reread = r#"{"id":"evt_reread","object":"event","type":"charge.captured","data":{"object":{}}}"#;
    server
        .store
        .store_inbound(NewInbound {
            id: inbound_id.clone(),
            tenant_id,
            connection_id: connection.id,
            received_at: server.clock.now(),
            source_ip: None,
            headers: "{}".into(),
            body: reread.as_bytes().to_vec(),
            verification: Verification::Verified,
            provider_event_id: Some("evt_reread".into()),
            dedupe_key: "event:evt_reread".into(),
        })
        .await
        .unwrap();
    wait_for_status(&server, &format!("/api/integrations/{id}/inbound/{inbound_id}"), "processed", 1).await;
    let captured = wait_for_events(&server, "stripe.charge.captured", 1).await;
    assert_eq!(captured[0]["payload"]["inbound_id"], inbound_id.as_str());
}

/// The stored webhook once it has this status after `attempts` processing attempts.
async fn wait_for_status(server: &TestServer, path: &str, status: &str, attempts: u64) -> Value {
    let mut record = Value::Null;
    for _ in 0..200 {
        record = server.get(&server.admin_key, path).await.json().await.unwrap();
        if record["status"] == status && record["attempts"] == attempts {
            return record;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("not {status} after {attempts} attempts: {record}");
}

/// Sends raw HTTP/1.1 on one connection and returns the head of the first answer.
async fn raw_exchange(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed without an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&answer).to_string();
    head[..head.find("\r\n\r\n").unwrap()].to_ascii_lowercase()
}

async fn early_answers_close_a_kept_alive_connection_cleanly(backend: Backend) {
    let config = InboundConfig { per_connection: std::num::NonZeroU32::new(2), ..Default::default() };
    let server = TestServer::start_with_inbound(backend, config).await;
    let id = server.connection_with_secret(github_with_secret()).await;
    let body = "x".repeat(2000);
    // Answered before the body is read: the sender is told the connection will close.
    let unknown = format!(
        "POST /webhooks/conn_01jd0000000000000000000000 HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let head = raw_exchange(&server, &unknown).await;
    assert!(head.starts_with("http/1.1 404") && head.contains("connection: close"), "{head}");
    let oversize =
        "POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000000\r\n\r\n{";
    let head = raw_exchange(
        &server,
        &oversize.replace("host: x", &format!("host: x\r\nauthorization: Bearer {}", server.admin_key)),
    )
    .await;
    assert!(head.starts_with("http/1.1 413") && head.contains("connection: close"), "{head}");
    // A request read to its end keeps the connection.
    let health = raw_exchange(&server, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(health.starts_with("http/1.1 200") && !health.contains("connection: close"), "{health}");

    // A burst on kept-alive connections: every request gets its answer, 200 or 429.
    let payload = r#"{"zen":"Avoid administrative distraction."}"#;
    let signed = github_signed(payload, "ping");
    let sends = (0..120).map(|_| server.deliver(&id, &signed, payload));
    let statuses: Vec<u16> = futures::future::join_all(sends).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&429));
}
