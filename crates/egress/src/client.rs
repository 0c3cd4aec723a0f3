//! The one HTTP client every outbound call goes through.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Request, Response};
use url::{Host, Url};

use crate::policy::AddressPolicy;
use crate::resolver::{DnsError, GuardedResolver, RefusedAddress, StaticHosts};
use crate::target::{TargetError, check_host, check_url};

#[derive(Debug, Clone)]
pub struct EgressConfig {
    pub policy: AddressPolicy,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// Names answered without DNS; their addresses are checked like any others.
    pub static_hosts: StaticHosts,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            policy: AddressPolicy::default(),
            user_agent: concat!("Switchboard/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(10),
            max_idle_per_host: 512,
            static_hosts: StaticHosts::new(),
        }
    }
}

/// What went wrong with an outbound call, as recorded on attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidUrl,
    /// The target (or what its name resolved to) is refused by the address policy.
    ForbiddenAddress,
    Dns,
    Timeout,
    Connection,
    /// Anything else on the way: TLS, a broken response, a body that failed mid-way.
    Request,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::ForbiddenAddress => "forbidden_address",
            ErrorKind::Dns => "dns_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection_error",
            ErrorKind::Request => "request_error",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EgressError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EgressError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    fn from_target(error: TargetError) -> Self {
        let kind = match error {
            TargetError::Refused { .. } => ErrorKind::ForbiddenAddress,
            _ => ErrorKind::InvalidUrl,
        };
        Self::new(kind, error.to_string())
    }

    fn from_reqwest(error: reqwest::Error) -> Self {
        // The resolver's own errors travel inside the client's error chain.
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<RefusedAddress>() {
                return Self::new(ErrorKind::ForbiddenAddress, refused.to_string());
            }
            if let Some(dns) = cause.downcast_ref::<DnsError>() {
                return Self::new(ErrorKind::Dns, dns.to_string());
            }
            source = cause.source();
        }
        let kind = if error.is_timeout() {
            ErrorKind::Timeout
        } else if error.is_connect() {
            ErrorKind::Connection
        } else {
            ErrorKind::Request
        };
        Self::new(kind, describe(&error))
    }
}

/// The error with its causes, without the URL (which may carry credentials in its query).
fn describe(error: &reqwest::Error) -> String {
    let mut text = match error.source() {
        Some(_) if error.is_timeout() => "timed out".to_string(),
        _ => error.to_string(),
    };
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// An HTTP client that refuses targets the address policy forbids, follows no redirects and
/// ignores proxy settings from the environment (a proxy would resolve names on our behalf,
/// unchecked). Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct EgressClient {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
    resolver: GuardedResolver,
}

impl EgressClient {
    pub fn new(config: EgressConfig) -> Result<Self, EgressError> {
        let policy = Arc::new(config.policy);
        let static_hosts =
            config.static_hosts.into_iter().map(|(name, ips)| (name.to_ascii_lowercase(), ips)).collect();
        let resolver = GuardedResolver { policy: policy.clone(), static_hosts: Arc::new(static_hosts) };
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(config.user_agent)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| EgressError::new(ErrorKind::Request, format!("building the HTTP client failed: {e}")))?;
        Ok(Self { http, policy, resolver })
    }

    /// Checks a URL a user supplies, without DNS.
    pub fn check_url(&self, url: &str) -> Result<Url, TargetError> {
        check_url(url, &self.policy)
    }

    /// Checks a URL a user supplies and, for a host name, what it resolves to now. A name
    /// that does not resolve (yet) is accepted: every call checks again when it connects.
    pub async fn vet_url(&self, url: &str) -> Result<Url, TargetError> {
        let parsed = self.check_url(url)?;
        if let (Some(Host::Domain(name)), false) = (parsed.host(), self.policy.allow_private) {
            let lookup = tokio::time::timeout(Duration::from_secs(3), self.resolver.resolve_checked(name)).await;
            if let Ok(Err(error)) = lookup
                && let Some(RefusedAddress(refusal)) = error.downcast_ref::<RefusedAddress>()
            {
                return Err(refusal.clone());
            }
        }
        Ok(parsed)
    }

    /// A request builder on the guarded client; send it with [`EgressClient::execute`].
    pub fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends a request. IP-literal hosts are checked here (no resolution happens for them);
    /// names are checked by the resolver on every new connection.
    pub async fn execute(&self, request: Request) -> Result<Response, EgressError> {
        check_host(request.url(), &self.policy).map_err(EgressError::from_target)?;
        self.http.execute(request).await.map_err(EgressError::from_reqwest)
    }
}

/// Reads at most `limit` bytes of a response body; the rest is discarded. Returns the bytes
/// and whether the body was longer.
pub async fn read_excerpt(mut response: Response, limit: usize) -> Result<(Vec<u8>, bool), EgressError> {
    let mut excerpt = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(EgressError::from_reqwest)? {
        let room = limit - excerpt.len();
        if chunk.len() > room {
            excerpt.extend_from_slice(&chunk[..room]);
            return Ok((excerpt, true));
        }
        excerpt.extend_from_slice(&chunk);
    }
    Ok((excerpt, false))
}
