//! The connections service: installing providers, their credentials vault, and calling
//! providers through connections (`call.rs`: proxy and the shared request path with auth,
//! rate limits, breaker, retries and the GET cache; `action.rs`: actions and pagination;
//! `health.rs`: per-connection health).

mod action;
mod call;
mod health;
mod oauth;
mod proxy_paths;
mod refresh;
pub mod resolve;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use switchboard_core::{Clock, Id, IdKind, SecretBox};
use switchboard_egress::EgressClient;
use switchboard_store::{AuthState, Connection, Page, Store, StoreError, secrets};
use zeroize::Zeroizing;

pub use action::{ActionOutcome, TestOutcome};
pub use call::{CacheState, ProxyRequest, ProxyResponse};
pub use health::{ConnectionHealth, HealthBook, HealthReport};
pub use oauth::{CallbackOutcome, CallbackParams, CallbackRefused, ConnectOptions, ConnectStarted};

use crate::catalog::Catalog;
use crate::provider::{FieldProblem, Provider};
use resolve::{Credentials, Resolved, check_credentials, has_api_credentials};

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("no such connection")]
    NotFound,
    #[error("no provider named {name:?}")]
    UnknownProvider { name: String, suggestions: Vec<String> },
    #[error("the provider has no action {name:?}")]
    UnknownAction { name: String, known: Vec<String> },
    #[error("the request is invalid")]
    Invalid(Vec<FieldProblem>),
    #[error("the connection has no credentials yet: configure them first")]
    MissingCredentials,
    #[error("the connection cannot be used as configured: {0}")]
    Misconfigured(String),
    #[error("the provider has no health check")]
    NoHealthCheck,
    #[error("the circuit for {target} is open after repeated failures")]
    CircuitOpen { target: String, retry_after: Duration },
    #[error("the rate limit for this connection is spent")]
    RateLimited { retry_after: Duration },
    /// The provider answered, but with an error (or something that is not what it documents).
    #[error("the provider answered {status}: {message}")]
    Upstream { status: u16, message: String, excerpt: String },
    /// The provider could not be reached.
    #[error("the provider could not be reached ({code}): {message}")]
    Unreachable { code: &'static str, message: String },
    #[error("the stored credentials cannot be decrypted")]
    Undecryptable,
    /// The provider refused the connection's grant for good; a new connect flow restores it.
    #[error("the connection's authorization failed ({0}); connect it again")]
    AuthFailed(String),
    /// Refreshing the token failed recently; the next attempt waits.
    #[error("refreshing the token failed ({last_error}); the next attempt is in {retry_after:?}")]
    RefreshBackingOff { retry_after: Duration, last_error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectorError {
    pub fn invalid(field: &str, detail: &str) -> Self {
        ConnectorError::Invalid(vec![FieldProblem::new(field, detail)])
    }
}

#[derive(Debug, Clone)]
pub struct ConnectorsConfig {
    /// Per provider, URLs used instead of the manifest's (the sandbox, a regional endpoint,
    /// a test double).
    pub url_overrides: HashMap<String, ProviderUrls>,
    /// Timeout of each provider call.
    pub call_timeout: Duration,
    /// Bytes of GET responses kept in the cache.
    pub cache_bytes: u64,
    /// Switchboard's public base URL; the connect flow's redirect URI is
    /// `{public_url}/oauth/callback`, which operators register with providers.
    pub public_url: String,
    /// How often the refresher looks for tokens to refresh before they expire.
    pub refresh_every: Duration,
    /// Tokens with less than this left (and less than a quarter of their lifetime) are
    /// refreshed ahead of time.
    pub refresh_margin: Duration,
}

impl Default for ConnectorsConfig {
    fn default() -> Self {
        Self {
            url_overrides: HashMap::new(),
            call_timeout: Duration::from_secs(30),
            cache_bytes: 64 << 20,
            public_url: "http://127.0.0.1:8080".into(),
            refresh_every: Duration::from_secs(60),
            refresh_margin: Duration::from_secs(15 * 60),
        }
    }
}

impl ConnectorsConfig {
    pub fn redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.public_url.trim_end_matches('/'))
    }
}

/// Where to reach a provider instead of the URLs its manifest names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderUrls {
    /// A template over the connection's config, like the manifest's `base_url`.
    pub base_url: Option<String>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub revocation_url: Option<String>,
    /// The authorization server's issuer identifier, when it is elsewhere too.
    pub issuer: Option<String>,
}

impl ProviderUrls {
    /// Reads `NAME=URL` (the API base URL) and `NAME.FIELD=URL` pairs (`authorization_url`,
    /// `token_url`, `revocation_url`, `issuer`), as `--provider-url` and the sandbox give them.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<HashMap<String, ProviderUrls>, String> {
        let mut all: HashMap<String, ProviderUrls> = HashMap::new();
        for (key, url) in pairs {
            let (provider, field) = key.split_once('.').unwrap_or((key.as_str(), "base_url"));
            let urls = all.entry(provider.to_string()).or_default();
            let slot = match field {
                "base_url" => &mut urls.base_url,
                "authorization_url" => &mut urls.authorization_url,
                "token_url" => &mut urls.token_url,
                "revocation_url" => &mut urls.revocation_url,
                "issuer" => &mut urls.issuer,
                other => {
                    return Err(format!(
                        "{key}: {other:?} is not base_url, authorization_url, token_url, revocation_url or issuer"
                    ));
                }
            };
            *slot = Some(url);
        }
        Ok(all)
    }
}

/// A new connection, as `install` takes it.
#[derive(Debug, Clone, Default)]
pub struct Install {
    pub template_name: String,
    pub config_overrides: Map<String, Value>,
    pub custom_name: Option<String>,
    pub auth_mode: Option<String>,
    pub credentials: Option<Map<String, Value>>,
}

/// A connection as the webhook receiver needs it: its provider (which sends webhooks) and its
/// signing secrets, current first.
pub struct WebhookTarget {
    pub connection: Connection,
    pub provider: Arc<Provider>,
    pub secrets: Vec<Zeroizing<String>>,
    /// The token Meta's `hub.challenge` handshake must carry.
    pub verify_token: Option<Zeroizing<String>>,
    pub settings: crate::provider::WebhookSettings,
}

impl WebhookTarget {
    /// The provider's webhook declaration (a target exists only for providers that have one).
    pub fn webhooks(&self) -> &crate::manifest::InboundWebhooks {
        self.provider.manifest.webhooks.as_ref().expect("webhook targets are made only for providers with webhooks")
    }

    pub fn verify_token(&self) -> Option<&str> {
        self.verify_token.as_ref().map(|token| token.as_str())
    }
}

/// The connections service. Cheap to clone.
#[derive(Clone)]
pub struct Connections(Arc<Inner>);

/// The service's parts, reachable only from inside the crate: other crates go through the
/// service's methods.
pub struct Inner {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) secrets: Arc<SecretBox>,
    pub(crate) egress: EgressClient,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: ConnectorsConfig,
    pub(crate) health: HealthBook,
    token_client: switchboard_oauth::TokenClient,
    /// Who holds refresh leases taken by this process.
    process_id: String,
    refresh_locks: moka::sync::Cache<Id, Arc<tokio::sync::Mutex<()>>>,
    resolved: moka::sync::Cache<Id, Arc<Resolved>>,
    webhook_targets: moka::sync::Cache<String, Arc<WebhookTarget>>,
    tokens: moka::sync::Cache<Id, call::Token>,
    responses: moka::sync::Cache<String, Arc<call::CachedResponse>>,
}

impl std::ops::Deref for Connections {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Connections {
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
        egress: EgressClient,
        clock: Arc<dyn Clock>,
        config: ConnectorsConfig,
    ) -> Self {
        // Other processes' changes show within 5 s; this process's at once.
        let resolved = moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(5)).build();
        let tokens = moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(3600)).build();
        let responses = moka::sync::Cache::builder()
            .weigher(|_: &String, value: &Arc<call::CachedResponse>| value.weight())
            .max_capacity(config.cache_bytes)
            .time_to_live(Duration::from_secs(24 * 3600))
            .build();
        Self(Arc::new(Inner {
            catalog,
            store,
            secrets,
            health: HealthBook::new(clock.clone()),
            token_client: switchboard_oauth::TokenClient::new(egress.clone(), config.call_timeout),
            process_id: Id::new(IdKind::Job).to_string(),
            refresh_locks: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            egress,

            clock,
            config,
            resolved,
            webhook_targets: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
            tokens,
            responses,
        }))
    }

    /// Refreshes tokens before they expire (every `refresh_every`, those with a quarter of
    /// their lifetime left, at most `refresh_margin`) and prunes expired connect-flow states,
    /// until `stop`.
    pub fn start_refresher(&self, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
        let connections = self.clone();
        let margin = self.config.refresh_margin;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(connections.config.refresh_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(error) = connections.refresh_expiring(margin).await {
                    tracing::warn!(%error, "the token refresher's pass failed");
                }
                let expired = connections.clock.now() - chrono::TimeDelta::hours(1);
                if let Err(error) = connections.store.prune_oauth_states(expired).await {
                    tracing::warn!(%error, "pruning connect-flow states failed");
                }
            }
        })
    }

    /// Every manifest this process knows.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The settings the service runs with.
    pub fn config(&self) -> &ConnectorsConfig {
        &self.config
    }

    /// How many circuit breakers of outbound calls are in each state, for metrics.
    pub fn circuit_counts(&self) -> [(switchboard_egress::CircuitState, u64); 3] {
        self.egress.breakers().count_by_state()
    }

    pub fn provider(&self, name: &str) -> Result<&Arc<Provider>, ConnectorError> {
        self.catalog.get(name).ok_or_else(|| ConnectorError::UnknownProvider {
            name: name.to_string(),
            suggestions: self.catalog.close_names(name),
        })
    }

    /// Installs a provider for a tenant: checks the config against the manifest's form and,
    /// if given, the credentials against the auth mode, then stores both in one unit.
    pub async fn install(&self, tenant_id: &Id, install: Install) -> Result<Connection, ConnectorError> {
        let provider = self.provider(&install.template_name)?.clone();
        let mut problems = Vec::new();
        let modes = || provider.manifest.auth.iter().map(|a| a.mode()).collect::<Vec<_>>().join(", ");
        let auth = provider.auth(install.auth_mode.as_deref()).cloned();
        if auth.is_none() {
            problems.push(FieldProblem::new("auth_mode", format!("must be one of: {}", modes())));
        }
        // With API credentials the mode must be explicit: guessing could store a token as the
        // wrong kind. Webhook secrets alone belong to no mode.
        let mode_guessed = provider.manifest.auth.len() > 1 && install.auth_mode.is_none();
        let webhook_fields: Vec<String> = provider.webhook_credential_fields().into_iter().map(|f| f.name).collect();
        let api_credentials_given =
            install.credentials.iter().flat_map(|given| given.keys()).any(|name| !webhook_fields.contains(name));
        let mode_guessed = mode_guessed && api_credentials_given;
        if mode_guessed {
            problems.push(FieldProblem::new("auth_mode", format!("is required with credentials; one of: {}", modes())));
        }
        let name = match install.custom_name.as_deref().map(str::trim) {
            Some("") => {
                problems.push(FieldProblem::new("custom_name", "must not be empty"));
                String::new()
            }
            Some(name) if name.chars().count() > 200 || name.chars().any(char::is_control) => {
                problems.push(FieldProblem::new(
                    "custom_name",
                    "must be at most 200 characters without control characters",
                ));
                String::new()
            }
            Some(name) => name.to_string(),
            None => provider.manifest.display_name.clone(),
        };
        let (config, secret_config) = match provider.check_config(&install.config_overrides) {
            Ok(split) => split,
            Err(more) => {
                problems.extend(more);
                Default::default()
            }
        };
        let mut credentials = Credentials::new();
        if let (Some(auth), Some(given), false) = (&auth, &install.credentials, mode_guessed) {
            match check_credentials(auth, &provider, given) {
                Ok(checked) => credentials = checked,
                Err(more) => problems.extend(more),
            }
        }
        if problems.is_empty() {
            let mut with_secrets = credentials.clone();
            for (name, value) in &secret_config {
                with_secrets.insert(
                    name.clone(),
                    Zeroizing::new(value.as_str().map_or_else(|| value.to_string(), str::to_string)),
                );
            }
            problems.extend(self.check_targets(&provider, auth.as_ref(), config.clone(), &with_secrets));
        }
        if !problems.is_empty() {
            return Err(ConnectorError::Invalid(problems));
        }
        let auth = auth.expect("no problems means the mode was found");
        for (name, value) in secret_config {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            credentials.insert(name, Zeroizing::new(text));
        }
        let now = self.clock.now();
        let id = Id::new(IdKind::Connection);
        let sealed = (!credentials.is_empty()).then(|| self.seal(tenant_id, &credentials, now));
        let complete = has_api_credentials(&auth, &credentials);
        let connection = Connection {
            id,
            tenant_id: tenant_id.clone(),
            provider: provider.name().to_string(),
            name,
            auth_mode: auth.mode().to_string(),
            config: Value::Object(config).to_string(),
            credentials_secret_id: sealed.as_ref().map(|s| s.id.clone()),
            credential_fields: credentials.keys().map(|k| (k.clone(), now)).collect(),
            auth_state: if complete { AuthState::Configured } else { AuthState::MissingCredentials },
            last_success_at: None,
            last_error: None,
            last_error_at: None,
            last_test_at: None,
            last_test_ok: None,
            version: 1,
            created_at: now,
            updated_at: now,
            token: Default::default(),
        };
        Ok(self.store.create_connection(&connection, sealed.as_ref()).await?)
    }

    /// Sets (or rotates) a connection's credentials. Fields not given keep their values, so
    /// one credential can be rotated alone.
    pub async fn configure(
        &self,
        tenant_id: &Id,
        id: &str,
        given: &Map<String, Value>,
    ) -> Result<Connection, ConnectorError> {
        let (connection, stored) = self.connection_with_credentials(tenant_id, id).await?;
        let provider = self.provider(&connection.provider)?.clone();
        let auth = provider.auth(Some(&connection.auth_mode)).ok_or_else(|| {
            ConnectorError::Misconfigured(format!("auth mode {} is no longer offered", connection.auth_mode))
        })?;
        // Fields not given keep their stored values.
        let mut complete: Map<String, Value> =
            stored.iter().map(|(name, value)| (name.clone(), Value::String(value.to_string()))).collect();
        complete.extend(given.clone());
        let merged = check_credentials(auth, &provider, &complete).map_err(ConnectorError::Invalid)?;
        let config = serde_json::from_str(&connection.config).unwrap_or_default();
        let problems = self.check_targets(&provider, Some(auth), config, &merged);
        if !problems.is_empty() {
            return Err(ConnectorError::Invalid(problems));
        }
        let now = self.clock.now();
        let mut fields = connection.credential_fields.clone();
        fields.extend(given.keys().map(|name| (name.clone(), now)));
        let sealed = self.seal(tenant_id, &merged, now);
        // Setting webhook secrets alone leaves the API side as it was (connected, rejected…).
        let api_fields = auth.credential_fields();
        let state = if !given.keys().any(|name| api_fields.iter().any(|f| &f.name == name)) {
            connection.auth_state
        } else if has_api_credentials(auth, &merged) {
            AuthState::Configured
        } else {
            AuthState::MissingCredentials
        };
        let updated = self
            .store
            .set_connection_credentials(tenant_id.as_str(), id, &sealed, &fields, state)
            .await?
            .ok_or(ConnectorError::NotFound)?;
        self.forget(&updated.id);
        Ok(updated)
    }

    /// Checks the URLs a connection will call, as its config renders them, against the SSRF
    /// guard (as endpoint URLs are when created): a base URL or token URL the tenant gives
    /// that the guard refuses is refused now, naming the field, not at the first call.
    fn check_targets(
        &self,
        provider: &Provider,
        auth: Option<&crate::manifest::Auth>,
        config: Map<String, Value>,
        credentials: &Credentials,
    ) -> Vec<FieldProblem> {
        let context = resolve::context(provider, config, credentials);
        let override_url = self.config.url_overrides.get(provider.name()).and_then(|urls| urls.base_url.as_deref());
        let mut targets =
            vec![(resolve::base_url(provider, &context, override_url), provider.manifest.base_url.as_str())];
        if let Some(crate::manifest::Auth::Oauth2ClientCredentials(spec)) = auth {
            targets.push((resolve::client_credentials_token_url(provider, &context), spec.token_url.as_str()));
        }
        let mut problems = Vec::new();
        for (url, template) in targets {
            // A URL that does not render yet (a field left empty) fails at its first call.
            let Ok(url) = url else { continue };
            if let Err(refused) = self.egress.check_url(url.as_str()) {
                // Blame the config field the template reads, when it reads one.
                let field = provider
                    .manifest
                    .connection_config
                    .iter()
                    .find(|f| template.contains(&format!("config.{}", f.name)))
                    .map_or_else(|| "base_url".to_string(), |f| format!("config_overrides.{}", f.name));
                problems.push(FieldProblem::new(field, format!("{url} {refused} (refused by the SSRF guard)")));
            }
        }
        problems
    }

    pub async fn get(&self, tenant_id: &Id, id: &str) -> Result<Connection, ConnectorError> {
        self.store.get_connection(tenant_id.as_str(), id).await?.ok_or(ConnectorError::NotFound)
    }

    /// What the webhook receiver needs of a connection named in its URL: the connection, its
    /// provider (which must send webhooks) and its signing secrets, current first. `None`
    /// for an unknown connection or a provider without webhooks, alike.
    pub async fn webhook_target(&self, id: &str) -> Result<Option<Arc<WebhookTarget>>, ConnectorError> {
        // Kept 5 s like resolved connections: a burst of webhooks reads the row once.
        if let Some(target) = self.webhook_targets.get(id) {
            return Ok(Some(target));
        }
        let Some(connection) = self.store.find_connection(id).await? else { return Ok(None) };
        let Some(provider) = self.catalog.get(&connection.provider).cloned() else { return Ok(None) };
        if provider.manifest.webhooks.is_none() {
            return Ok(None);
        }
        let (connection, mut credentials) = self.connection_with_credentials(&connection.tenant_id, id).await?;
        let secrets = [crate::provider::WEBHOOK_SECRET, crate::provider::PREVIOUS_WEBHOOK_SECRET]
            .into_iter()
            .filter_map(|name| credentials.remove(name))
            .collect();
        let verify_token = credentials.remove(crate::provider::WEBHOOK_VERIFY_TOKEN);
        let config = serde_json::from_str(&connection.config).unwrap_or_default();
        let settings = provider.webhook_settings(&config);
        let target = Arc::new(WebhookTarget { connection, provider, secrets, verify_token, settings });
        self.webhook_targets.insert(id.to_string(), target.clone());
        Ok(Some(target))
    }

    pub async fn list(&self, tenant_id: &Id, page: &Page) -> Result<Vec<Connection>, ConnectorError> {
        Ok(self.store.list_connections(tenant_id.as_str(), page).await?)
    }

    /// Deletes a connection and its credentials; an OAuth2 grant is first revoked at the
    /// provider where it has a revocation endpoint (best effort: a provider that fails to
    /// answer does not keep the connection alive here).
    pub async fn uninstall(&self, tenant_id: &Id, id: &str) -> Result<(), ConnectorError> {
        let connection = self.get(tenant_id, id).await?;
        if let Err(error) = self.revoke_grant(&connection).await {
            tracing::warn!(connection = %connection.id, %error, "revoking the OAuth grant at uninstall failed");
        }
        if !self.store.delete_connection(tenant_id.as_str(), id).await? {
            return Err(ConnectorError::NotFound);
        }
        self.forget(&Id::from_trusted(id.to_string()));
        Ok(())
    }

    /// Drops the ready-to-call form of a connection, so its next call reads it anew.
    fn forget_resolved(&self, id: &Id) {
        self.resolved.invalidate(id);
        self.webhook_targets.invalidate(id.as_str());
    }

    fn forget(&self, id: &Id) {
        self.forget_resolved(id);
        self.tokens.invalidate(id);
        self.health.forget(id);
    }

    fn seal(
        &self,
        tenant_id: &Id,
        credentials: &Credentials,
        now: switchboard_core::Timestamp,
    ) -> switchboard_store::StoredSecret {
        let plain: BTreeMap<&String, &str> = credentials.iter().map(|(k, v)| (k, v.as_str())).collect();
        let json = Zeroizing::new(serde_json::to_vec(&plain).expect("strings serialise"));
        secrets::seal(&self.secrets, tenant_id, &json, now)
    }

    async fn credentials(&self, connection: &Connection) -> Result<Credentials, ConnectorError> {
        let Some(secret_id) = &connection.credentials_secret_id else { return Ok(Credentials::new()) };
        let sealed = self
            .store
            .get_secret(connection.tenant_id.as_str(), secret_id.as_str())
            .await?
            .ok_or(ConnectorError::Undecryptable)?;
        self.open_credentials(&sealed)
    }

    /// The connection with its credentials, read in one statement so that they belong
    /// together even while a refresh in another process replaces them.
    async fn connection_with_credentials(
        &self,
        tenant_id: &Id,
        id: &str,
    ) -> Result<(Connection, Credentials), ConnectorError> {
        let (connection, sealed) = self
            .store
            .get_connection_with_credentials(tenant_id.as_str(), id)
            .await?
            .ok_or(ConnectorError::NotFound)?;
        let credentials = match (&connection.credentials_secret_id, sealed) {
            (None, _) => Credentials::new(),
            (Some(_), Some(sealed)) => self.open_credentials(&sealed)?,
            (Some(_), None) => return Err(ConnectorError::Undecryptable),
        };
        Ok((connection, credentials))
    }

    fn open_credentials(&self, sealed: &switchboard_store::StoredSecret) -> Result<Credentials, ConnectorError> {
        let plain = secrets::open(&self.secrets, sealed).map_err(|_| ConnectorError::Undecryptable)?;
        let map: BTreeMap<String, String> =
            serde_json::from_slice(&plain).map_err(|_| ConnectorError::Undecryptable)?;
        Ok(map.into_iter().map(|(k, v)| (k, Zeroizing::new(v))).collect())
    }

    /// The connection ready to call, from the cache or built now.
    pub(crate) async fn resolved(&self, tenant_id: &Id, id: &str) -> Result<Arc<Resolved>, ConnectorError> {
        let key = Id::from_trusted(id.to_string());
        if let Some(resolved) = self.resolved.get(&key)
            && &resolved.connection.tenant_id == tenant_id
        {
            return Ok(resolved);
        }
        let (connection, credentials) = self.connection_with_credentials(tenant_id, id).await?;
        let provider = self.provider(&connection.provider)?.clone();
        let override_url = self.config.url_overrides.get(provider.name()).and_then(|urls| urls.base_url.as_deref());
        let resolved = Arc::new(resolve::resolve(connection, provider, credentials, override_url)?);
        self.resolved.insert(key, resolved.clone());
        Ok(resolved)
    }
}
