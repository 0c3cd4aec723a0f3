//! The one HTTP client every outbound call goes through.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Request, Response};
use url::{Host, Url};

use switchboard_core::{Clock, SystemClock};

use crate::breaker::{BreakerConfig, BreakerKey, CircuitBreakers};
use crate::policy::AddressPolicy;
use crate::ratelimit::{Quota, RateHeaders, RateLimits};
use crate::resolver::{DnsError, GuardedResolver, RefusedAddress, StaticHosts};
use crate::target::{TargetError, check_host, check_url};

/// How the [`EgressClient`] is built: address policy, connections, circuit breakers, retries.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Which addresses calls may reach (the SSRF guard).
    pub policy: AddressPolicy,
    /// The `User-Agent` sent with every request.
    pub user_agent: String,
    /// The longest establishing a connection may take.
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// Names answered without DNS; their addresses are checked like any others.
    pub static_hosts: StaticHosts,
    /// Time for circuit breakers and rate limits.
    pub clock: Arc<dyn Clock>,
    /// When circuits open and for how long.
    pub breaker: BreakerConfig,
    /// Retries and rate-limit waits for [`EgressClient::call`].
    pub retry: RetryPolicy,
}

/// How [`EgressClient::call`] retries and how long it may wait for a rate limit.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; it doubles per attempt, with jitter, up to `max_delay`.
    pub base_delay: Duration,
    /// The longest backoff between two attempts.
    pub max_delay: Duration,
    /// The longest a call waits for a rate-limit slot or a provider's `Retry-After`; beyond
    /// it the call fails at once, telling when to retry.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_wait: Duration::from_secs(10),
        }
    }
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            policy: AddressPolicy::default(),
            user_agent: concat!("Switchboard/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(10),
            max_idle_per_host: 512,
            static_hosts: StaticHosts::new(),
            clock: Arc::new(SystemClock),
            breaker: BreakerConfig::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// What went wrong with an outbound call, as recorded on attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The URL does not parse, is not http or https, or names no host.
    InvalidUrl,
    /// The target (or what its name resolved to) is refused by the address policy.
    ForbiddenAddress,
    /// The host name did not resolve.
    Dns,
    /// Connecting, or the request as a whole, took longer than allowed.
    Timeout,
    /// No connection could be made (refused, reset, unreachable).
    Connection,
    /// Anything else on the way: TLS, a broken response, a body that failed mid-way.
    Request,
}

impl ErrorKind {
    /// The stable code recorded on attempts (`timeout`, `dns_error`, …).
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

/// A failed outbound request. The message never contains the URL, whose query may carry
/// credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EgressError {
    /// What class of failure it is, for recording.
    pub kind: ErrorKind,
    /// What happened, with its causes.
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
    breakers: Arc<CircuitBreakers>,
    limits: Arc<RateLimits>,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
}

impl EgressClient {
    /// Builds the client from `config`; fails only if the underlying HTTP client cannot be built.
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
        Ok(Self {
            http,
            policy,
            resolver,
            breakers: Arc::new(CircuitBreakers::new(config.clock.clone(), config.breaker)),
            limits: Arc::new(RateLimits::new(config.clock.clone())),
            retry: config.retry,
            clock: config.clock,
        })
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

/// How [`EgressClient::call`] treats one provider call.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// The circuit breaker the call counts against: the tenant's, for the provider's API.
    pub breaker: BreakerKey,
    /// The rate limit's key (a connection or a provider); `None` for no limit.
    pub limit_key: Option<String>,
    /// The provider's documented quota for `limit_key`; `None` paces only by what responses say.
    pub quota: Option<Quota>,
    /// Which response headers tell the remaining budget.
    pub rate_headers: RateHeaders,
    /// Safe to send twice: GET, HEAD, PUT, DELETE, or a request with an idempotency key.
    pub idempotent: bool,
    /// The time each attempt may take, unless the request sets its own timeout.
    pub timeout: Duration,
}

/// Why [`EgressClient::call`] has no answer to return.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The API's circuit is open; the attempt was not sent.
    #[error("the circuit for {target} is open after repeated failures; retry in {retry_after:?}")]
    CircuitOpen {
        /// The API (its base URL).
        target: String,
        /// How long until a probe is let through.
        retry_after: Duration,
    },
    /// The rate limit would hold the call longer than the retry policy's `max_wait`; the attempt
    /// was not sent.
    #[error("the rate limit allows the next call in {retry_after:?}")]
    RateLimited {
        /// How long until the rate limit allows the call.
        retry_after: Duration,
    },
    /// The request failed, after any retries it was allowed.
    #[error(transparent)]
    Egress(#[from] EgressError),
}

/// A provider's answer, with how many attempts it took.
#[derive(Debug)]
pub struct CallResponse {
    /// The last answer, whatever its status.
    pub response: Response,
    /// Attempts made, the first included.
    pub attempts: u32,
}

impl EgressClient {
    /// Sends a provider call with every protection: the host's circuit breaker, the rate
    /// limit (the quota and what earlier responses said), a timeout, and retries with
    /// exponential backoff and jitter: a refused connection (nothing was sent) and a rate
    /// limit are retried for any method; timeouts and 500/502/503/504 only for idempotent
    /// calls. The last answer is returned as it is, whatever its status.
    pub async fn call(&self, mut request: Request, policy: &CallPolicy) -> Result<CallResponse, CallError> {
        if request.timeout().is_none() {
            *request.timeout_mut() = Some(policy.timeout);
        }
        let mut attempt = 1;
        let mut next = Some(request);
        while let Some(current) = next.take() {
            if let Err(open) = self.breakers.permit(&policy.breaker) {
                let retry_after = (open.retry_at - self.clock.now()).to_std().unwrap_or_default();
                return Err(CallError::CircuitOpen { target: policy.breaker.target.clone(), retry_after });
            }
            if let Some(key) = &policy.limit_key {
                match self.limits.acquire(key, policy.quota, self.retry.max_wait) {
                    Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                    Ok(_) => {}
                    Err(retry_after) => return Err(CallError::RateLimited { retry_after }),
                }
            }
            // A copy for the next attempt; a streaming body cannot be sent twice.
            next = if attempt < self.retry.max_attempts { current.try_clone() } else { None };
            let can_retry = next.is_some();
            match self.execute(current).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    self.breakers.record(&policy.breaker, !matches!(status, 500..=599));
                    let blocked = policy
                        .limit_key
                        .as_deref()
                        .and_then(|key| self.limits.observe(key, status, response.headers(), &policy.rate_headers));
                    let limited = status == 429 || blocked.is_some();
                    let transient = matches!(status, 500 | 502 | 503 | 504) && policy.idempotent;
                    if can_retry && (limited || transient) {
                        // A block learnt by the limiter is waited out there on the next turn;
                        // anything else backs off here.
                        let delay = blocked.unwrap_or_else(|| self.backoff(attempt));
                        if delay <= self.retry.max_wait {
                            if blocked.is_none() {
                                tokio::time::sleep(delay).await;
                            }
                            attempt += 1;
                            continue;
                        }
                    }
                    return Ok(CallResponse { response, attempts: attempt });
                }
                Err(error) => {
                    let host_trouble = matches!(
                        error.kind,
                        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Dns | ErrorKind::Request
                    );
                    if host_trouble {
                        self.breakers.record(&policy.breaker, false);
                    }
                    let retryable = error.kind == ErrorKind::Connection
                        || (policy.idempotent && matches!(error.kind, ErrorKind::Timeout | ErrorKind::Request));
                    if can_retry && retryable {
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(CallError::Egress(error));
                }
            }
        }
        unreachable!("every turn either returns or prepares the next attempt")
    }

    /// `base × 2^(attempt-1)`, capped, then a random point in its upper half.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self.retry.base_delay.saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let capped = exponential.min(self.retry.max_delay);
        capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// The circuit breakers, for snapshots and metrics.
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.breakers
    }

    /// The outbound rate limits, shared by every clone.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.limits
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
