//! Settings: command-line flags, each also read from `SWITCHBOARD_<NAME>`, over an optional
//! TOML file, over defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard_inbound::InboundConfig;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use switchboard_egress::AddressPolicy;
use switchboard_webhooks::schedule::RetrySchedule;
use switchboard_webhooks::{AdmissionConfig, WebhookConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the data lives; shared by every command.
#[derive(Debug, Args, Clone, Default)]
pub struct StorageArgs {
    /// Directory for the SQLite database and the master key file [default: ./switchboard-data]
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// sqlite://FILE or postgres://… (also read from DATABASE_URL) [default: SQLite in the data dir]
    #[arg(long, env = "SWITCHBOARD_DATABASE_URL", value_name = "URL", global = true)]
    pub database_url: Option<String>,
    /// Database connections per process (PostgreSQL pool; SQLite readers) [default: 16]
    #[arg(long, env = "SWITCHBOARD_DB_MAX_CONNECTIONS", value_name = "N", global = true)]
    pub db_max_connections: Option<u32>,
    /// A TOML file with any of these settings (flags and environment take precedence)
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr: text or json [default: text]
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_name = "FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

/// Settings of `serve`.
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "SWITCHBOARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Largest accepted request body in bytes [default: 1048576]
    #[arg(long, env = "SWITCHBOARD_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds before a request is abandoned with a 503 [default: 30]
    #[arg(long, env = "SWITCHBOARD_REQUEST_TIMEOUT_SECS", value_name = "SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Requests per second allowed per API key; 0 for no limit [default: 0]
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_PER_KEY", value_name = "N")]
    pub rate_limit_per_key: Option<u32>,
    /// Seconds to finish in-flight requests and work after SIGTERM/SIGINT [default: 30]
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS", value_name = "SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Seconds to keep serving after SIGTERM before the listener stops: /readyz answers 503
    /// and every answer carries `Connection: close`, so a load balancer moves traffic away
    /// without a dropped request (SIGINT skips it) [default: 5]
    #[arg(long, env = "SWITCHBOARD_DRAIN_SECS", value_name = "SECS")]
    pub drain_secs: Option<u64>,
    /// Webhook deliveries in flight at once in this process [default: 256]
    #[arg(long, env = "SWITCHBOARD_DELIVERY_CONCURRENCY", value_name = "N")]
    pub delivery_concurrency: Option<usize>,
    /// Webhook deliveries in flight at once to one endpoint; the rest of its messages wait
    /// their turn without holding the other endpoints' slots [default: a quarter of
    /// --delivery-concurrency]
    #[arg(long, env = "SWITCHBOARD_DELIVERY_CONCURRENCY_PER_ENDPOINT", value_name = "N")]
    pub delivery_concurrency_per_endpoint: Option<usize>,
    /// Refuse a tenant's new events (429 with Retry-After) while this many of its messages
    /// are due and not yet delivered; 0 for no limit [default: 5000]
    #[arg(long, env = "SWITCHBOARD_MAX_DUE_MESSAGES_PER_TENANT", value_name = "N")]
    pub max_due_messages_per_tenant: Option<u64>,
    /// Seconds a webhook receiver has to answer [default: 15]
    #[arg(long, env = "SWITCHBOARD_DELIVERY_TIMEOUT_SECS", value_name = "SECS")]
    pub delivery_timeout_secs: Option<u64>,
    /// Seconds a claimed delivery stays with this process before another may take it [default: 60]
    #[arg(long, env = "SWITCHBOARD_DELIVERY_LEASE_SECS", value_name = "SECS")]
    pub delivery_lease_secs: Option<u64>,
    /// Waits between delivery attempts [default: 5s,5m,30m,2h,5h,10h,10h]
    #[arg(long, env = "SWITCHBOARD_RETRY_SCHEDULE", value_name = "LIST")]
    pub retry_schedule: Option<String>,
    /// Disable an endpoint that has only failed for this many hours [default: 120]
    #[arg(long, env = "SWITCHBOARD_DISABLE_FAILING_ENDPOINTS_AFTER_HOURS", value_name = "HOURS")]
    pub disable_failing_endpoints_after_hours: Option<u64>,
    /// Days events, messages and attempts are kept [default: 30]
    #[arg(long, env = "SWITCHBOARD_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u64>,
    /// Let webhook URLs reach loopback, private and link-local addresses (development only)
    #[arg(long, env = "SWITCHBOARD_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,
    /// Networks webhook URLs may reach even though they are private, e.g. 10.1.0.0/16,fd00::/8
    #[arg(long, env = "SWITCHBOARD_ALLOW_TARGET_NETWORKS", value_name = "CIDRS")]
    pub allow_target_networks: Option<String>,
    /// Incoming webhooks per second accepted per connection; 0 for no limit [default: 500]
    #[arg(long, env = "SWITCHBOARD_INBOUND_RATE_PER_CONNECTION", value_name = "N")]
    pub inbound_rate_per_connection: Option<u32>,
    /// Incoming webhooks per second accepted per source address; 0 for no limit [default: 500]
    #[arg(long, env = "SWITCHBOARD_INBOUND_RATE_PER_SOURCE", value_name = "N")]
    pub inbound_rate_per_source: Option<u32>,
    /// Only receive incoming webhooks; leave processing them into events to other `serve`
    /// processes on the same database
    #[arg(long, env = "SWITCHBOARD_NO_INBOUND_PROCESSING")]
    pub no_inbound_processing: bool,
    /// Seconds a process holds a batch of incoming webhooks it is processing; a batch held by
    /// a process that died is taken up by another after this [default: 60]
    #[arg(long, env = "SWITCHBOARD_INBOUND_LEASE_SECS", value_name = "SECS")]
    pub inbound_lease_secs: Option<u64>,
    /// A folder of extra connector manifests (YAML); repeatable. A manifest replaces a
    /// bundled one of the same name
    #[arg(long = "connectors-dir", env = "SWITCHBOARD_CONNECTORS_DIRS", value_name = "DIR", value_delimiter = ',')]
    pub connectors_dirs: Vec<PathBuf>,
    /// Reach a provider elsewhere: NAME=URL for its API base URL (a template over its
    /// config), NAME.authorization_url|token_url|revocation_url=URL for its OAuth endpoints;
    /// repeatable. `switchboard sandbox` prints these
    #[arg(
        long = "provider-url",
        env = "SWITCHBOARD_PROVIDER_URLS",
        value_name = "NAME[.FIELD]=URL",
        value_delimiter = ','
    )]
    pub provider_urls: Vec<String>,
    /// The URL users and providers reach this server at; OAuth redirects go to
    /// {public_url}/oauth/callback [default: http://<listen address>]
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
}

/// The TOML file: the same names as the flags, with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    db_max_connections: Option<u32>,
    log_format: Option<LogFormat>,
    listen: Option<SocketAddr>,
    max_body_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
    rate_limit_per_key: Option<u32>,
    shutdown_timeout_secs: Option<u64>,
    drain_secs: Option<u64>,
    delivery_concurrency: Option<usize>,
    max_due_messages_per_tenant: Option<u64>,
    delivery_concurrency_per_endpoint: Option<usize>,
    delivery_timeout_secs: Option<u64>,
    delivery_lease_secs: Option<u64>,
    retry_schedule: Option<String>,
    disable_failing_endpoints_after_hours: Option<u64>,
    retention_days: Option<u64>,
    allow_private_targets: Option<bool>,
    allow_target_networks: Option<String>,
    connectors_dirs: Option<Vec<PathBuf>>,
    inbound_rate_per_connection: Option<u32>,
    inbound_rate_per_source: Option<u32>,
    inbound_processing: Option<bool>,
    inbound_lease_secs: Option<u64>,
    /// `NAME[.FIELD]` → URL, as `--provider-url` takes them.
    provider_urls: Option<HashMap<String, String>>,
    public_url: Option<String>,
}

/// The settled configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub db_max_connections: u32,
    pub log_format: LogFormat,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub rate_limit_per_key: Option<NonZeroU32>,
    pub shutdown_timeout: Duration,
    pub drain: Duration,
    pub webhooks: WebhookConfig,
    pub egress_policy: AddressPolicy,
    pub connectors_dirs: Vec<PathBuf>,
    pub inbound: InboundConfig,
    pub provider_urls: HashMap<String, switchboard_connectors::ProviderUrls>,
    pub public_url: Option<String>,
}

impl Settings {
    pub fn resolve(storage: &StorageArgs, serve: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &storage.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir =
            storage.data_dir.clone().or(file.data_dir.clone()).unwrap_or_else(|| PathBuf::from("./switchboard-data"));
        let database_url = storage
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()))
            .or(file.database_url.clone())
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("switchboard.db").display()));
        let max_body_bytes =
            serve.max_body_bytes.or(file.max_body_bytes).unwrap_or(switchboard_server::DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            bail!("max_body_bytes must be positive");
        }
        Ok(Self {
            data_dir,
            database_url,
            db_max_connections: storage.db_max_connections.or(file.db_max_connections).unwrap_or(16).max(1),
            log_format: storage.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            listen: serve.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            max_body_bytes,
            request_timeout: Duration::from_secs(
                serve.request_timeout_secs.or(file.request_timeout_secs).unwrap_or(30).max(1),
            ),
            rate_limit_per_key: NonZeroU32::new(serve.rate_limit_per_key.or(file.rate_limit_per_key).unwrap_or(0)),
            shutdown_timeout: Duration::from_secs(
                serve.shutdown_timeout_secs.or(file.shutdown_timeout_secs).unwrap_or(30),
            ),
            drain: Duration::from_secs(serve.drain_secs.or(file.drain_secs).unwrap_or(5)),
            webhooks: webhook_config(serve, &file)?,
            egress_policy: egress_policy(serve, &file)?,
            connectors_dirs: match serve.connectors_dirs.is_empty() {
                true => file.connectors_dirs.clone().unwrap_or_default(),
                false => serve.connectors_dirs.clone(),
            },
            provider_urls: provider_urls(serve, &file)?,
            inbound: InboundConfig {
                per_connection: NonZeroU32::new(
                    serve.inbound_rate_per_connection.or(file.inbound_rate_per_connection).unwrap_or(500),
                ),
                per_source: NonZeroU32::new(
                    serve.inbound_rate_per_source.or(file.inbound_rate_per_source).unwrap_or(500),
                ),
                processing: !serve.no_inbound_processing && file.inbound_processing.unwrap_or(true),
                lease: Duration::from_secs(serve.inbound_lease_secs.or(file.inbound_lease_secs).unwrap_or(60).max(1)),
            },
            public_url: serve
                .public_url
                .clone()
                .or(file.public_url.clone())
                .map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

fn webhook_config(serve: &ServeArgs, file: &FileConfig) -> anyhow::Result<WebhookConfig> {
    let defaults = WebhookConfig::default();
    let mut schedule = defaults.schedule.clone();
    if let Some(text) = serve.retry_schedule.as_ref().or(file.retry_schedule.as_ref()) {
        schedule.delays = RetrySchedule::parse_delays(text).map_err(|e| anyhow::anyhow!("retry_schedule: {e}"))?;
    }
    let timeout = Duration::from_secs(serve.delivery_timeout_secs.or(file.delivery_timeout_secs).unwrap_or(15).max(1));
    let lease = Duration::from_secs(serve.delivery_lease_secs.or(file.delivery_lease_secs).unwrap_or(60).max(1));
    if lease <= timeout {
        bail!("delivery_lease_secs ({}) must exceed delivery_timeout_secs ({})", lease.as_secs(), timeout.as_secs());
    }
    let hours = serve.disable_failing_endpoints_after_hours.or(file.disable_failing_endpoints_after_hours);
    let admission = match serve.max_due_messages_per_tenant.or(file.max_due_messages_per_tenant) {
        Some(0) => AdmissionConfig { max_due_per_tenant: None, ..defaults.admission.clone() },
        Some(limit) => AdmissionConfig { max_due_per_tenant: Some(limit), ..defaults.admission.clone() },
        None => defaults.admission.clone(),
    };
    Ok(WebhookConfig {
        admission,
        concurrency_per_endpoint: serve.delivery_concurrency_per_endpoint.or(file.delivery_concurrency_per_endpoint),
        schedule,
        request_timeout: timeout,
        concurrency: serve.delivery_concurrency.or(file.delivery_concurrency).unwrap_or(defaults.concurrency).max(1),
        lease,
        disable_after: hours.map(|h| Duration::from_secs(h * 3600)).unwrap_or(defaults.disable_after),
        retention: serve
            .retention_days
            .or(file.retention_days)
            .map(|d| Duration::from_secs(d.max(1) * 86_400))
            .unwrap_or(defaults.retention),
        ..defaults
    })
}

fn egress_policy(serve: &ServeArgs, file: &FileConfig) -> anyhow::Result<AddressPolicy> {
    let networks = match serve.allow_target_networks.as_ref().or(file.allow_target_networks.as_ref()) {
        Some(text) => text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| part.trim().parse().with_context(|| format!("allow_target_networks: {part:?} is not a CIDR")))
            .collect::<anyhow::Result<_>>()?,
        None => Vec::new(),
    };
    Ok(AddressPolicy {
        allow_private: serve.allow_private_targets || file.allow_private_targets.unwrap_or(false),
        allowed_networks: networks,
    })
}

fn provider_urls(
    serve: &ServeArgs,
    file: &FileConfig,
) -> anyhow::Result<HashMap<String, switchboard_connectors::ProviderUrls>> {
    let pairs: Vec<(String, String)> = if serve.provider_urls.is_empty() {
        file.provider_urls.clone().unwrap_or_default().into_iter().collect()
    } else {
        serve
            .provider_urls
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((name, url)) if !name.trim().is_empty() && !url.trim().is_empty() => {
                    Ok((name.trim().to_string(), url.trim().to_string()))
                }
                _ => bail!("provider_url: {pair:?} must be NAME[.FIELD]=URL"),
            })
            .collect::<anyhow::Result<_>>()?
    };
    switchboard_connectors::ProviderUrls::from_pairs(pairs).map_err(|e| anyhow::anyhow!("provider_url: {e}"))
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}
