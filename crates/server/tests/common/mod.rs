//! A real server on a loopback port, backed by a throwaway SQLite file or PostgreSQL schema,
//! with a clock the test controls.

#![allow(dead_code)]

pub mod webhooks;

use std::sync::Arc;

use serde_json::Value;
use switchboard_connectors::{Catalog, Connections, ConnectorsConfig, ProviderUrls};
use switchboard_core::{Clock, Id, IdKind, KeyRing, ManualClock, SecretBox, api_key, from_micros};
use switchboard_egress::{AddressPolicy, EgressConfig, StaticHosts};
use switchboard_hub::{Hub, HubSettings};
use switchboard_inbound::InboundConfig;
use switchboard_sandbox::Sandbox;
use switchboard_server::{AppState, ServerConfig};
use switchboard_store::testing::TestDb;
use switchboard_store::{Backend, NewApiKey, NewTenant, Scope, Store};
use switchboard_webhooks::WebhookConfig;
use switchboard_webhooks::schedule::RetrySchedule;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub base: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub clock: ManualClock,
    pub db: TestDb,
    /// The provider simulators every connection calls.
    pub sandbox: Sandbox,
    /// The server's connections service, for driving background work without waiting.
    pub connections: Connections,
    stop: CancellationToken,
}

/// What a test server is started with; the default is what most tests want.
struct Setup {
    config: ServerConfig,
    inbound: InboundConfig,
    policy: AddressPolicy,
    static_hosts: StaticHosts,
    connectors_dirs: Vec<std::path::PathBuf>,
    webhooks: WebhookConfig,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            config: ServerConfig::default(),
            inbound: InboundConfig::default(),
            // Receivers run on loopback.
            policy: AddressPolicy::allow_all(),
            static_hosts: StaticHosts::new(),
            connectors_dirs: Vec::new(),
            webhooks: WebhookConfig {
                schedule: RetrySchedule { jitter: 0.0, ..RetrySchedule::default() },
                request_timeout: std::time::Duration::from_secs(2),
                // Retention runs often in real time; what it prunes follows the test's clock.
                retention_interval: std::time::Duration::from_millis(100),
                ..WebhookConfig::default()
            },
        }
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, ServerConfig::default()).await
    }

    pub async fn start_with(backend: Backend, config: ServerConfig) -> Self {
        Self::start_configured(backend, Setup { config, ..Setup::default() }).await
    }

    /// A server whose incoming webhooks are received (and processed, or not) as `inbound` says.
    pub async fn start_with_inbound(backend: Backend, inbound: InboundConfig) -> Self {
        Self::start_configured(backend, Setup { inbound, ..Setup::default() }).await
    }

    /// A server whose outgoing webhooks run with the tests' settings changed by `change`.
    pub async fn start_with_webhooks(backend: Backend, change: impl FnOnce(&mut WebhookConfig)) -> Self {
        let mut setup = Setup::default();
        change(&mut setup.webhooks);
        Self::start_configured(backend, setup).await
    }

    /// A server whose catalog adds the operator manifests in `tests/connectors/`.
    pub async fn start_with_test_connectors(backend: Backend) -> Self {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/connectors");
        Self::start_configured(backend, Setup { connectors_dirs: vec![dir], ..Setup::default() }).await
    }

    /// A server whose SSRF guard refuses private targets, as in production.
    pub async fn start_guarded(backend: Backend) -> Self {
        Self::start_guarded_resolving(backend, &[]).await
    }

    /// A guarded server whose resolver answers these names with these addresses.
    pub async fn start_guarded_resolving(backend: Backend, hosts: &[(&str, &str)]) -> Self {
        let static_hosts = hosts.iter().map(|(name, ip)| (name.to_string(), vec![ip.parse().unwrap()])).collect();
        Self::start_configured(backend, Setup { policy: AddressPolicy::default(), static_hosts, ..Setup::default() })
            .await
    }

    async fn start_configured(backend: Backend, setup: Setup) -> Self {
        let Setup { config, inbound, policy, static_hosts, connectors_dirs, webhooks: webhook_config } = setup;
        let db = TestDb::for_backend(backend);
        let store = db.open().await;
        let clock = ManualClock::new(from_micros(1_760_000_000_000_000));
        let minted = api_key::mint();
        let tenant = NewTenant { id: Id::new(IdKind::Tenant), name: "default".into(), created_at: clock.now() };
        let key = NewApiKey::for_token(&tenant.id, "admin", Scope::Admin, &minted, None, clock.now());
        store.bootstrap_operator(&tenant, &key).await.unwrap().expect("fresh database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let sandbox = Sandbox::start().await.unwrap();
        let settings = HubSettings {
            catalog: Arc::new(Catalog::load(&connectors_dirs).unwrap()),
            connectors: ConnectorsConfig {
                url_overrides: ProviderUrls::from_pairs(sandbox.url_overrides()).unwrap(),
                public_url: base.clone(),
                // Tests run the refresher's passes themselves, on the manual clock.
                refresh_every: std::time::Duration::from_secs(24 * 3600),
                ..ConnectorsConfig::default()
            },
            webhooks: webhook_config,
            inbound,
            egress: EgressConfig { policy, static_hosts, ..EgressConfig::default() },
        };
        let secrets = Arc::new(SecretBox::new(KeyRing::generate()));
        // The production wiring: every service and every background worker, as `serve` has them.
        let hub = Hub::build(settings, Arc::new(clock.clone()), store.clone(), secrets).unwrap();
        let state = AppState::new(&hub, config);
        let stop = CancellationToken::new();
        tokio::spawn(switchboard_server::serve(listener, state, stop.clone().cancelled_owned()));
        hub.start(stop.clone());
        let connections = hub.connections().clone();
        Self {
            base,
            admin_key: minted.token,
            client: reqwest::Client::new(),
            store,
            clock,
            db,
            sandbox,
            connections,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(key).send().await.unwrap()
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(key).json(body).send().await.unwrap()
    }

    pub async fn patch(&self, key: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client.patch(self.url(path)).bearer_auth(key).json(body).send().await.unwrap()
    }

    /// Creates a tenant through the API and returns (tenant id, its admin token).
    pub async fn new_tenant(&self, name: &str) -> (String, String) {
        let response = self.post(&self.admin_key.clone(), "/api/tenants", &serde_json::json!({"name": name})).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (body["tenant"]["id"].as_str().unwrap().to_string(), body["api_key"]["token"].as_str().unwrap().to_string())
    }

    /// Creates a key of `scope` in the admin's tenant and returns its token.
    pub async fn key_with_scope(&self, scope: &str) -> String {
        let body = serde_json::json!({"name": format!("{scope} key"), "scopes": [scope]});
        let response = self.post(&self.admin_key, "/api/api-keys", &body).await;
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
    }

    pub async fn event_type(&self, key: &str, name: &str, schema: Option<Value>) {
        let mut body = serde_json::json!({"name": name});
        if let Some(schema) = schema {
            body["schema"] = schema;
        }
        let response = self.post(key, "/api/event-types", &body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Asserts the response is a problem document with this status, and returns it.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(content_type, "application/problem+json");
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("urn:switchboard:problem:"), "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    body
}

/// The names of the fields a problem document blames.
pub fn blamed_fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().into_iter().flatten().map(|e| e["field"].as_str().unwrap().to_string()).collect()
}
