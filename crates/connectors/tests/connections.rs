//! Connections against the sandbox's simulators over real HTTP, on both store backends:
//! install and configure, every auth mode, actions with every pagination style, the proxy
//! with its cache, provider errors, retries, rate limits and the circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use switchboard_connectors::{
    CacheState, Catalog, Connections, ConnectorError, ConnectorsConfig, Install, ProviderUrls, ProxyRequest,
};
use switchboard_core::{Id, IdKind, KeyRing, SecretBox, SystemClock};
use switchboard_egress::{AddressPolicy, BreakerConfig, EgressClient, EgressConfig, RetryPolicy};
use switchboard_sandbox::{Sandbox, credentials as creds};
use switchboard_store::testing::TestDb;
use switchboard_store::{AuthState, Backend, NewTenant, Store};

struct World {
    connections: Connections,
    sandbox: Sandbox,
    store: Arc<dyn Store>,
    tenant: Id,
    _db: TestDb,
}

async fn world(backend: Backend) -> World {
    let loopback = AddressPolicy { allow_private: false, allowed_networks: vec!["127.0.0.1/32".parse().unwrap()] };
    world_with_policy(backend, loopback).await
}

async fn world_with_policy(backend: Backend, policy: AddressPolicy) -> World {
    world_with(backend, policy, Catalog::load(&[]).unwrap()).await
}

async fn world_with(backend: Backend, policy: AddressPolicy, catalog: Catalog) -> World {
    let (db, store) = TestDb::store_for(backend).await;
    let sandbox = Sandbox::start().await.unwrap();
    let egress = EgressClient::new(EgressConfig {
        policy,
        // A name for the sandbox, so a guarded world can reach loopback only through DNS.
        static_hosts: [("sandbox.example".to_string(), vec!["127.0.0.1".parse().unwrap()])].into_iter().collect(),
        breaker: BreakerConfig {
            failure_threshold: 4,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(60),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_wait: Duration::from_secs(2),
        },
        ..EgressConfig::default()
    })
    .unwrap();
    let config = ConnectorsConfig {
        url_overrides: ProviderUrls::from_pairs(sandbox.url_overrides()).unwrap(),
        ..ConnectorsConfig::default()
    };
    let tenant = NewTenant { id: Id::new(IdKind::Tenant), name: "acme".into(), created_at: chrono::Utc::now() };
    let tenant = store.create_tenant(&tenant, None).await.unwrap().id;
    let connections = Connections::new(
        Arc::new(catalog),
        store.clone(),
        Arc::new(SecretBox::new(KeyRing::generate())),
        egress,
        Arc::new(SystemClock),
        config,
    );
    World { connections, sandbox, store, tenant, _db: db }
}

fn request(method: reqwest::Method, path: &str, body: &'static str, bypass_cache: bool) -> ProxyRequest {
    ProxyRequest {
        method,
        path_and_query: path.into(),
        headers: Default::default(),
        body: body.into(),
        bypass_cache,
        links_through: None,
    }
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

impl World {
    async fn install(&self, template: &str, mode: Option<&str>, config: Value, credentials: Option<Value>) -> String {
        let install = Install {
            template_name: template.into(),
            config_overrides: object(config),
            auth_mode: mode.map(str::to_string),
            credentials: credentials.map(object),
            custom_name: None,
        };
        self.connections.install(&self.tenant, install).await.unwrap().id.to_string()
    }

    async fn total_battle(&self) -> String {
        let config = json!({"base_url": format!("{}/total-battle", self.sandbox.url())});
        self.install("total-battle", None, config, Some(json!({"api_key": creds::TOTAL_BATTLE_API_KEY}))).await
    }

    async fn action(
        &self,
        id: &str,
        name: &str,
        input: Value,
    ) -> Result<switchboard_connectors::runtime::ActionOutcome, ConnectorError> {
        self.connections.run_action(&self.tenant, id, name, input, Some(100)).await
    }

    async fn get(&self, id: &str, path: &str) -> switchboard_connectors::ProxyResponse {
        let request = request(reqwest::Method::GET, path, "", false);
        self.connections.proxy(&self.tenant, id, request).await.unwrap()
    }
}

async fn every_auth_mode_reaches_its_provider(backend: Backend) {
    let w = world(backend).await;
    let rest = format!("{}/rest", w.sandbox.url());
    let cases: Vec<(&str, Option<&str>, Value, Option<Value>)> = vec![
        ("slack", Some("bearer"), json!({}), Some(json!({"token": creds::SLACK_BOT_TOKEN}))),
        (
            "slack",
            Some("oauth2"),
            json!({}),
            Some(json!({"client_id": "c", "client_secret": "s", "access_token": creds::SLACK_BOT_TOKEN})),
        ),
        ("github", Some("bearer"), json!({}), Some(json!({"token": creds::GITHUB_TOKEN}))),
        ("stripe", None, json!({}), Some(json!({"token": creds::STRIPE_SECRET_KEY}))),
        ("hubspot", Some("bearer"), json!({}), Some(json!({"token": creds::HUBSPOT_TOKEN}))),
        (
            "jira",
            None,
            json!({"subdomain": "acme"}),
            Some(json!({"username": creds::JIRA_EMAIL, "password": creds::JIRA_API_TOKEN})),
        ),
        (
            "google-calendar",
            None,
            json!({}),
            Some(json!({"client_id": "c", "client_secret": "s", "access_token": creds::GOOGLE_ACCESS_TOKEN})),
        ),
        (
            "total-battle",
            None,
            json!({"base_url": format!("{}/total-battle", w.sandbox.url())}),
            Some(json!({"api_key": creds::TOTAL_BATTLE_API_KEY})),
        ),
        ("rest", Some("none"), json!({"base_url": format!("{rest}/public"), "health_path": "/health"}), None),
        (
            "rest",
            Some("bearer"),
            json!({"base_url": rest, "health_path": "/health"}),
            Some(json!({"token": creds::REST_TOKEN})),
        ),
        (
            "rest",
            Some("basic"),
            json!({"base_url": rest, "health_path": "/health"}),
            Some(json!({"username": creds::REST_USERNAME, "password": creds::REST_PASSWORD})),
        ),
        (
            "rest",
            Some("api_key"),
            json!({"base_url": rest, "health_path": "/health", "api_key_header": "Authorization", "api_key_prefix": "ApiKey "}),
            Some(json!({"api_key": creds::REST_API_KEY})),
        ),
        (
            "rest",
            Some("oauth2_client_credentials"),
            json!({"base_url": rest, "health_path": "/health", "token_url": format!("{rest}/oauth/token")}),
            Some(json!({"client_id": creds::REST_CLIENT_ID, "client_secret": creds::REST_CLIENT_SECRET})),
        ),
    ];
    for (provider, mode, config, credentials) in cases {
        let id = w.install(provider, mode, config, credentials).await;
        let outcome = w.connections.test(&w.tenant, &id).await.unwrap();
        assert!(outcome.ok, "{provider} ({mode:?}) health check: {outcome:?}");
        let stored = w.connections.get(&w.tenant, &id).await.unwrap();
        assert_eq!(stored.auth_state, AuthState::Ok, "{provider} ({mode:?})");
        assert_eq!(stored.last_test_ok, Some(true));
    }
}

async fn wrong_credentials_fail_the_test_in_each_providers_own_way(backend: Backend) {
    let w = world(backend).await;
    // Slack answers HTTP 200 with ok: false; GitHub 401.
    let slack = w.install("slack", Some("bearer"), json!({}), Some(json!({"token": "xoxb-wrong"}))).await;
    let outcome = w.connections.test(&w.tenant, &slack).await.unwrap();
    assert!(!outcome.ok);
    assert_eq!(outcome.status, Some(200));
    assert!(outcome.error.as_deref().unwrap().contains("invalid_auth"), "{outcome:?}");
    assert_eq!(w.connections.get(&w.tenant, &slack).await.unwrap().auth_state, AuthState::Rejected);

    let github = w.install("github", Some("bearer"), json!({}), Some(json!({"token": "ghp_wrong"}))).await;
    let outcome = w.connections.test(&w.tenant, &github).await.unwrap();
    assert_eq!(outcome.status, Some(401));
    assert!(outcome.error.as_deref().unwrap().contains("Bad credentials"));

    // Rotating the credential fixes it, and the secret is never shown again.
    let rotated =
        w.connections.configure(&w.tenant, &github, &object(json!({"token": creds::GITHUB_TOKEN}))).await.unwrap();
    assert!(rotated.credential_fields.contains_key("token"));
    assert!(w.connections.test(&w.tenant, &github).await.unwrap().ok);
    let stored = format!("{:?}", w.store.get_connection(w.tenant.as_str(), &github).await.unwrap().unwrap());
    assert!(!stored.contains(creds::GITHUB_TOKEN), "the row holds no plaintext credential");
}

async fn actions_follow_every_pagination_style(backend: Backend) {
    let w = world(backend).await;
    let slack = w.install("slack", Some("bearer"), json!({}), Some(json!({"token": creds::SLACK_BOT_TOKEN}))).await;
    let github = w.install("github", Some("bearer"), json!({}), Some(json!({"token": creds::GITHUB_TOKEN}))).await;
    let stripe = w.install("stripe", None, json!({}), Some(json!({"token": creds::STRIPE_SECRET_KEY}))).await;
    let jira = w
        .install(
            "jira",
            None,
            json!({"subdomain": "acme"}),
            Some(json!({"username": creds::JIRA_EMAIL, "password": creds::JIRA_API_TOKEN})),
        )
        .await;
    let tb = w.total_battle().await;

    // Cursor (Slack's next_cursor), with page size 200: one page of 7.
    let channels = w.action(&slack, "list_channels", json!({})).await.unwrap();
    assert_eq!(channels.data.as_array().unwrap().len(), 7);
    // Link header: 45 repositories at 100 a page.
    let repos = w.action(&github, "list_repos", json!({})).await.unwrap();
    assert_eq!(repos.data.as_array().unwrap().len(), 45);
    // Cursor from the last item (Stripe's starting_after): 25 customers.
    let customers = w.action(&stripe, "list_customers", json!({})).await.unwrap();
    assert_eq!(customers.data.as_array().unwrap().len(), 25);
    // Offset with a total (Jira): 23 issues at 50 a page.
    let issues = w.action(&jira, "search_issues", json!({"jql": "project = SB"})).await.unwrap();
    assert_eq!(issues.data.as_array().unwrap().len(), 23);
    // Page numbers (Total Battle): 42 players at 50 a page.
    let players = w.action(&tb, "list_players", json!({})).await.unwrap();
    assert_eq!(players.data.as_array().unwrap().len(), 42);
    let ids: std::collections::BTreeSet<u64> =
        players.data.as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 42, "no page fetched twice");

    // Small pages through a stingier limit: max_pages stops early and says so.
    let limited = w.connections.run_action(&w.tenant, &github, "list_repos", json!({}), Some(1)).await.unwrap();
    assert_eq!(limited.pages, 1);
    assert!(!limited.has_more, "45 fit one page of 100");
}

async fn actions_validate_input_and_build_bodies(backend: Backend) {
    let w = world(backend).await;
    let slack = w.install("slack", Some("bearer"), json!({}), Some(json!({"token": creds::SLACK_BOT_TOKEN}))).await;
    let posted = w.action(&slack, "post_message", json!({"channel": "C0001", "text": "hello"})).await.unwrap();
    assert_eq!(posted.data["text"], "hello");
    assert_eq!(w.sandbox.stored("slack.messages").len(), 1);

    match w.action(&slack, "post_message", json!({"channel": "C0001", "text": 5})).await {
        Err(ConnectorError::Invalid(problems)) => assert_eq!(problems[0].field, "input.text"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    match w.action(&slack, "post_mesage", json!({})).await {
        Err(ConnectorError::UnknownAction { known, .. }) => assert!(known.contains(&"post_message".to_string())),
        other => panic!("expected an unknown action, got {other:?}"),
    }

    // Stripe wants forms; the simulator refuses JSON.
    let stripe = w.install("stripe", None, json!({}), Some(json!({"token": creds::STRIPE_SECRET_KEY}))).await;
    let customer =
        w.action(&stripe, "create_customer", json!({"email": "new@example.com", "name": "New"})).await.unwrap();
    assert_eq!(customer.data["email"], "new@example.com");

    // A body template: GitHub issues, with the path built from input (encoded as segments).
    let github = w.install("github", Some("bearer"), json!({}), Some(json!({"token": creds::GITHUB_TOKEN}))).await;
    let issue =
        w.action(&github, "create_issue", json!({"owner": "acme", "repo": "site", "title": "Broken"})).await.unwrap();
    assert_eq!(issue.data["number"], 1);
    match w.action(&github, "create_issue", json!({"owner": "acme", "repo": "site", "title": ""})).await {
        Err(ConnectorError::Invalid(problems)) => assert_eq!(problems[0].field, "input.title"),
        other => panic!("expected a validation error, got {other:?}"),
    }

    // A provider error inside a 200 is an upstream error with the provider's code.
    let wrong = w.install("slack", Some("bearer"), json!({}), Some(json!({"token": "xoxb-wrong"}))).await;
    match w.action(&wrong, "post_message", json!({"channel": "C1", "text": "x"})).await {
        Err(ConnectorError::Upstream { status: 200, message, .. }) => assert_eq!(message, "invalid_auth"),
        other => panic!("expected an upstream error, got {other:?}"),
    }
}

async fn install_refuses_bad_config_and_credentials_per_field(backend: Backend) {
    let w = world(backend).await;
    let install = |template: &str, config: Value, credentials: Option<Value>, mode: Option<&str>| Install {
        template_name: template.into(),
        config_overrides: object(config),
        credentials: credentials.map(object),
        auth_mode: mode.map(str::to_string),
        custom_name: None,
    };
    match w
        .connections
        .install(
            &w.tenant,
            install("jira", json!({"subdomain": "Not Valid!", "colour": 1}), Some(json!({"username": "a"})), None),
        )
        .await
    {
        Err(ConnectorError::Invalid(problems)) => {
            let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
            assert!(fields.contains(&"config_overrides.subdomain"), "{problems:?}");
            assert!(fields.contains(&"config_overrides.colour"), "{problems:?}");
            assert!(fields.contains(&"credentials.password"), "{problems:?}");
        }
        other => panic!("expected field problems, got {other:?}"),
    }
    match w.connections.install(&w.tenant, install("slakc", json!({}), None, None)).await {
        Err(ConnectorError::UnknownProvider { suggestions, .. }) => {
            assert_eq!(suggestions.first().map(String::as_str), Some("slack"))
        }
        other => panic!("expected an unknown provider, got {other:?}"),
    }
    match w.connections.install(&w.tenant, install("slack", json!({}), Some(json!({"token": "t"})), None)).await {
        Err(ConnectorError::Invalid(problems)) => assert_eq!(problems[0].field, "auth_mode"),
        other => panic!("expected auth_mode to be required, got {other:?}"),
    }
    let connections =
        w.connections.list(&w.tenant, &switchboard_store::Page { limit: 10, before: None }).await.unwrap();
    assert!(connections.is_empty(), "nothing was stored by refused installs");
}

async fn the_proxy_injects_auth_caches_gets_and_never_forwards_our_key(backend: Backend) {
    let w = world(backend).await;
    let rest = format!("{}/rest", w.sandbox.url());
    let id =
        w.install("rest", Some("bearer"), json!({"base_url": rest}), Some(json!({"token": creds::REST_TOKEN}))).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", "Bearer sb_our_api_key".parse().unwrap());
    headers.insert("x-custom", "kept".parse().unwrap());
    let echo = ProxyRequest { headers, ..request(reqwest::Method::POST, "/echo/a/b?x=1", "payload", false) };
    let response = w.connections.proxy(&w.tenant, &id, echo).await.unwrap();
    let echoed: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(echoed["path"], "/echo/a/b", "the simulator sees the path under its own prefix");
    assert_eq!(echoed["query"], "x=1");
    assert_eq!(echoed["body"], "payload");
    assert_eq!(echoed["headers"]["authorization"], format!("Bearer {}", creds::REST_TOKEN));
    assert_eq!(echoed["headers"]["x-custom"], "kept");

    let escape = request(reqwest::Method::GET, "/../../slack/api/auth.test", "", false);
    assert!(matches!(w.connections.proxy(&w.tenant, &id, escape).await, Err(ConnectorError::Invalid(_))));

    // Total Battle caches reads for 60 s: a second GET is served without the provider.
    let tb = w.total_battle().await;
    let before = w.sandbox.requests("total-battle");
    let first = w.get(&tb, "/players/7").await;
    let second = w.get(&tb, "/players/7").await;
    assert_eq!((first.cache, second.cache), (CacheState::Miss, CacheState::Hit));
    assert_eq!(first.body, second.body);
    assert_eq!(w.sandbox.requests("total-battle") - before, 1);
    let bypass = request(reqwest::Method::GET, "/players/7", "", true);
    assert_eq!(w.connections.proxy(&w.tenant, &tb, bypass).await.unwrap().cache, CacheState::Bypass);
    assert_eq!(w.sandbox.requests("total-battle") - before, 2);
}

async fn failures_are_retried_then_the_circuit_opens(backend: Backend) {
    let w = world(backend).await;
    let rest = format!("{}/rest", w.sandbox.url());
    let id =
        w.install("rest", Some("bearer"), json!({"base_url": rest}), Some(json!({"token": creds::REST_TOKEN}))).await;
    // Two 503s, then success: a GET is retried and succeeds on the third attempt.
    w.sandbox.fail_next("rest", 2, 503);
    let response = w.get(&id, "/items/1").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.attempts, 3);
    // A POST is not retried on a 503.
    w.sandbox.fail_next("rest", 1, 503);
    let post = request(reqwest::Method::POST, "/items", "{}", false);
    assert_eq!(w.connections.proxy(&w.tenant, &id, post).await.unwrap().status, 503);
    // Enough failures open the circuit: calls fail fast without reaching the provider.
    w.sandbox.fail_next("rest", 100, 503);
    let _ = w.get(&id, "/items/1").await;
    let before = w.sandbox.requests("rest");
    let items = request(reqwest::Method::GET, "/items/1", "", false);
    match w.connections.proxy(&w.tenant, &id, items).await {
        Err(ConnectorError::CircuitOpen { retry_after, .. }) => assert!(retry_after > Duration::ZERO),
        other => panic!("expected an open circuit, got {other:?}"),
    }
    assert_eq!(w.sandbox.requests("rest"), before, "an open circuit sends nothing");
    let health = w.connections.health_report(&w.tenant, &id).await.unwrap().live.unwrap();
    assert!(health.errors >= 2 && health.error_rate > 0.0, "{health:?}");
    assert!(health.p50_ms.is_some_and(|p50| p50 > 0.0) && health.p99_ms >= health.p50_ms, "{health:?}");
    // The last error is the open circuit itself.
    assert!(health.last_success_at.is_some() && health.last_error.as_deref().is_some_and(|e| e.contains("circuit")));
    // Errors reach the connection row too (written off the request path).
    let mut stored = w.connections.get(&w.tenant, &id).await.unwrap();
    for _ in 0..100 {
        if stored.last_error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = w.connections.get(&w.tenant, &id).await.unwrap();
    }
    assert!(stored.last_error.as_deref().is_some_and(|e| e.contains("503") || e.contains("circuit")), "{stored:?}");
    assert!(stored.last_success_at.is_some());
}

async fn a_tenant_configured_base_url_passes_the_ssrf_guard(backend: Backend) {
    // The guard's default policy: loopback (where the sandbox listens) is refused.
    let w = world_with_policy(backend, AddressPolicy::default()).await;
    // Written as an address, or a token URL likewise: refused at install, naming the field.
    let loopback = format!("{}/rest", w.sandbox.url());
    for (mode, config, field) in [
        ("bearer", json!({"base_url": loopback}), "config_overrides.base_url"),
        ("bearer", json!({"base_url": "http://[::ffff:7f00:1]/rest"}), "config_overrides.base_url"),
        (
            "oauth2_client_credentials",
            json!({"base_url": "https://api.example.com", "token_url": "http://169.254.169.254/token"}),
            "config_overrides.token_url",
        ),
    ] {
        let install = Install {
            template_name: "rest".into(),
            config_overrides: object(config),
            auth_mode: Some(mode.into()),
            ..Install::default()
        };
        match w.connections.install(&w.tenant, install).await {
            Err(ConnectorError::Invalid(problems)) => {
                assert_eq!(problems[0].field, field, "{problems:?}");
                assert!(problems[0].detail.contains("SSRF"), "{problems:?}");
            }
            other => panic!("expected a refusal naming {field}, got {other:?}"),
        }
    }
    // A name that resolves to loopback is checked where it resolves: at the call.
    let port = url::Url::parse(&w.sandbox.url()).unwrap().port().unwrap();
    let id = w
        .install(
            "rest",
            Some("bearer"),
            json!({"base_url": format!("http://sandbox.example:{port}/rest"), "health_path": "/health"}),
            Some(json!({"token": creds::REST_TOKEN})),
        )
        .await;
    let outcome = w.connections.test(&w.tenant, &id).await.unwrap();
    assert!(!outcome.ok);
    assert!(outcome.error.as_deref().is_some_and(|e| e.starts_with("forbidden_address")), "{outcome:?}");
    assert_eq!(w.sandbox.requests("rest"), 0, "nothing reached the address");
}

async fn a_providers_rate_limit_answer_blocks_the_connection(backend: Backend) {
    let w = world(backend).await;
    w.sandbox.set_quota("slack", Some(switchboard_sandbox::Quota { requests: 2, window: Duration::from_secs(60) }));
    let slack = w.install("slack", Some("bearer"), json!({}), Some(json!({"token": creds::SLACK_BOT_TOKEN}))).await;
    for _ in 0..2 {
        w.action(&slack, "post_message", json!({"channel": "C1", "text": "x"})).await.unwrap();
    }
    // The third gets Slack's 429 with Retry-After (about 60 s, beyond the 2 s we may wait).
    match w.action(&slack, "post_message", json!({"channel": "C1", "text": "x"})).await {
        Err(ConnectorError::Upstream { status: 429, message, .. }) => assert_eq!(message, "ratelimited"),
        other => panic!("expected Slack's 429, got {other:?}"),
    }
    let before = w.sandbox.requests("slack");
    match w.action(&slack, "post_message", json!({"channel": "C1", "text": "x"})).await {
        Err(ConnectorError::RateLimited { retry_after }) => {
            assert!(retry_after > Duration::from_secs(30), "{retry_after:?}")
        }
        other => panic!("expected a local rate limit, got {other:?}"),
    }
    assert_eq!(w.sandbox.requests("slack"), before, "a blocked connection does not call the provider");
}

switchboard_store::conformance_tests!(
    every_auth_mode_reaches_its_provider,
    wrong_credentials_fail_the_test_in_each_providers_own_way,
    actions_follow_every_pagination_style,
    actions_validate_input_and_build_bodies,
    install_refuses_bad_config_and_credentials_per_field,
    the_proxy_injects_auth_caches_gets_and_never_forwards_our_key,
    failures_are_retried_then_the_circuit_opens,
    a_tenant_configured_base_url_passes_the_ssrf_guard,
    a_providers_rate_limit_answer_blocks_the_connection,
    webhook_signing_secrets_are_credentials_of_providers_that_send_webhooks,
    a_connection_that_only_receives_needs_only_its_signing_secret,
    standard_webhooks_secrets_are_checked_when_set,
);

async fn a_connection_that_only_receives_needs_only_its_signing_secret(backend: Backend) {
    let w = world(backend).await;
    // Stripe without its API key: the signing secret alone is enough to receive.
    let stripe = w.install("stripe", None, json!({}), None).await;
    let secret = object(json!({"webhook_secret": "whsec_only"}));
    let configured = w.connections.configure(&w.tenant, &stripe, &secret).await.unwrap();
    assert_eq!(configured.auth_state, AuthState::MissingCredentials, "no API calls can be made yet");
    let target = w.connections.webhook_target(&stripe).await.unwrap().unwrap();
    assert_eq!(target.secrets.iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["whsec_only"]);
    let call = w.connections.proxy(&w.tenant, &stripe, request(reqwest::Method::GET, "/balance", "", false)).await;
    assert!(matches!(call, Err(ConnectorError::MissingCredentials)), "{call:?}");
    // The API key can come later, and then calls work.
    let key = object(json!({"token": creds::STRIPE_SECRET_KEY}));
    assert_eq!(w.connections.configure(&w.tenant, &stripe, &key).await.unwrap().auth_state, AuthState::Configured);
    assert_eq!(w.get(&stripe, "/balance").await.status, 200);

    // GitHub (OAuth or a token: no mode named) and Jira (basic) install with the secret alone.
    let github = w.install("github", None, json!({}), Some(json!({"webhook_secret": "gh"}))).await;
    let oauth = w.install("github", Some("oauth2"), json!({}), Some(json!({"webhook_secret": "gh"}))).await;
    let jira = w.install("jira", None, json!({"subdomain": "acme"}), Some(json!({"webhook_secret": "j"}))).await;
    for id in [&github, &oauth, &jira] {
        assert_eq!(w.connections.get(&w.tenant, id).await.unwrap().auth_state, AuthState::MissingCredentials);
        assert!(w.connections.webhook_target(id).await.unwrap().is_some());
    }
    // Half of an API credential is still refused, naming what is missing.
    match w.connections.configure(&w.tenant, &jira, &object(json!({"username": "ana@acme.test"}))).await {
        Err(ConnectorError::Invalid(problems)) => {
            assert_eq!(problems.iter().map(|p| p.field.as_str()).collect::<Vec<_>>(), ["credentials.password"])
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn standard_webhooks_secrets_are_checked_when_set(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.yaml"),
        "name: acme\ndisplay_name: Acme\ndescription: Sends Standard Webhooks.\ncategories: [custom]\n\
         auth:\n  mode: none\nbase_url: https://api.acme.example\n\
         webhooks:\n  scheme: standard_webhooks\n  event_type: /type\n  event_id: header:webhook-id\n",
    )
    .unwrap();
    let policy = AddressPolicy { allow_private: false, allowed_networks: vec![] };
    let w = world_with(backend, policy, Catalog::load(&[dir.path().to_path_buf()]).unwrap()).await;
    let acme = w.install("acme", None, json!({}), None).await;
    for wrong in ["my webhook secret", "whsec_not*base64", "whsec_", "whpk_c2hvcnQ="] {
        match w.connections.configure(&w.tenant, &acme, &object(json!({"webhook_secret": wrong}))).await {
            Err(ConnectorError::Invalid(problems)) => {
                assert_eq!(problems[0].field, "credentials.webhook_secret", "{wrong}");
                assert!(problems[0].detail.contains("Standard Webhooks secret"), "{wrong}: {}", problems[0].detail);
            }
            other => panic!("{wrong}: expected a refusal, got {other:?}"),
        }
    }
    // What the standard's libraries accept: with or without the prefix.
    for right in ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        w.connections.configure(&w.tenant, &acme, &object(json!({"webhook_secret": right}))).await.unwrap();
    }
}

async fn webhook_signing_secrets_are_credentials_of_providers_that_send_webhooks(backend: Backend) {
    let w = world(backend).await;
    let stripe = w.install("stripe", None, json!({}), Some(json!({"token": creds::STRIPE_SECRET_KEY}))).await;
    let secrets = object(json!({"webhook_secret": "whsec_new", "webhook_secret_previous": "whsec_old"}));
    w.connections.configure(&w.tenant, &stripe, &secrets).await.unwrap();
    let target = w.connections.webhook_target(&stripe).await.unwrap().unwrap();
    assert_eq!((&target.connection.tenant_id, target.provider.name()), (&w.tenant, "stripe"));
    let held: Vec<&str> = target.secrets.iter().map(|s| s.as_str()).collect();
    assert_eq!(held, ["whsec_new", "whsec_old"], "current first");
    // The API token is untouched by setting the webhook secrets.
    assert_eq!(w.get(&stripe, "/balance").await.status, 200);

    // A provider that sends no webhooks has no such credential, and no receiver target.
    let config = json!({"base_url": format!("{}/rest", w.sandbox.url())});
    let rest = w.install("rest", Some("bearer"), config, Some(json!({"token": creds::REST_TOKEN}))).await;
    match w.connections.configure(&w.tenant, &rest, &object(json!({"webhook_secret": "x"}))).await {
        Err(ConnectorError::Invalid(problems)) => assert_eq!(problems[0].field, "credentials.webhook_secret"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(w.connections.webhook_target(&rest).await.unwrap().is_none());
    assert!(w.connections.webhook_target("conn_01jd0000000000000000000000").await.unwrap().is_none());
}
