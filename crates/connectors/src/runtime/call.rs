//! Calling a provider through a connection: the one request path the proxy, actions and
//! health checks share. Auth is injected here, the egress client adds the breaker, rate
//! limits, timeout and retries, GET responses are cached per the manifest, and every
//! outcome feeds the connection's health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use switchboard_core::Id;
use switchboard_egress::{CallError, CallPolicy, Quota, RateHeaders};
use url::Url;
use zeroize::Zeroizing;

use super::resolve::{Injection, Resolved};
use super::{Connections, ConnectorError};
use crate::manifest::{RateLimitScope, ResetFormat};

/// Provider responses larger than this are refused rather than buffered.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Only responses up to this size are cached.
const MAX_CACHED_BYTES: usize = 1 << 20;

/// Request headers never forwarded to a provider: hop-by-hop headers, and the caller's own
/// credentials for Switchboard.
const NOT_FORWARDED: [&str; 12] = [
    "authorization",
    "host",
    "cookie",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "x-request-id",
];

/// Response headers never passed back.
const NOT_RETURNED: [&str; 7] =
    ["connection", "content-length", "transfer-encoding", "keep-alive", "set-cookie", "trailer", "upgrade"];

#[derive(Debug)]
pub struct ProxyRequest {
    pub method: Method,
    /// The provider path (and query) under the connection's base URL.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Skip the GET cache (the caller sent `Cache-Control: no-cache`).
    pub bypass_cache: bool,
    /// The proxy's own URL for this connection: `Link` targets under the base URL are
    /// rewritten to point through it. `None` leaves links as the provider wrote them.
    pub links_through: Option<String>,
}

/// Whether a proxied answer came from the response cache (`x-switchboard-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CacheState {
    /// Served from the cache; the provider was not called.
    Hit,
    /// Not cached (or expired): the provider answered, and the answer is cached if it may be.
    Miss,
    /// The caller asked to skip the cache (`Cache-Control: no-cache`).
    Bypass,
    /// The provider's manifest does not cache, or the request is not a GET.
    None,
}

impl CacheState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone)]
pub struct ProxyResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub cache: CacheState,
    /// Attempts made (retries included); zero for a cache hit.
    pub attempts: u32,
    /// The provider's error code inside a 2xx answer (Slack's `ok: false`), when the
    /// manifest declares that shape. Read once here, for every caller.
    pub provider_error: Option<String>,
}

impl ProxyResponse {
    /// Whether the provider refused or failed the call, by status or by its error shape.
    pub fn failed(&self) -> bool {
        !self.status.is_success() || self.provider_error.is_some()
    }

    /// The failure as a line for the connection's health: the provider's code, or the
    /// status and the start of the body.
    pub fn failure(&self) -> String {
        match &self.provider_error {
            Some(code) => format!("{}: {code}", self.status),
            None => format!("{}: {}", self.status, excerpt(&self.body)),
        }
    }
}

#[derive(Debug)]
pub(crate) struct CachedResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
}

impl CachedResponse {
    pub(crate) fn weight(&self) -> u32 {
        (self.body.len() + 512).min(u32::MAX as usize) as u32
    }
}

#[derive(Clone)]
pub(crate) struct Token {
    value: Arc<Zeroizing<String>>,
    expires: Instant,
}

impl Connections {
    /// Forwards a request to the provider with the connection's auth (the proxy).
    pub async fn proxy(
        &self,
        tenant_id: &Id,
        connection_id: &str,
        request: ProxyRequest,
    ) -> Result<ProxyResponse, ConnectorError> {
        let path = request.path_and_query.split('?').next().unwrap_or_default();
        super::proxy_paths::check_proxy_path(path).map_err(|reason| ConnectorError::invalid("path", reason))?;
        let resolved = self.resolved(tenant_id, connection_id).await?;
        let url = resolved.url(&request.path_and_query)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            if !NOT_FORWARDED.contains(&name.as_str()) && !name.as_str().starts_with("x-switchboard-") {
                headers.append(name.clone(), value.clone());
            }
        }
        let mut response =
            self.send(&resolved, request.method, url, headers, request.body, request.bypass_cache).await?;
        for name in NOT_RETURNED {
            response.headers.remove(name);
        }
        if let Some(proxy) = &request.links_through {
            // A value that cannot be read or rewritten as text is passed on as it came.
            let links: Vec<HeaderValue> = response
                .headers
                .get_all(reqwest::header::LINK)
                .iter()
                .map(|value| {
                    value
                        .to_str()
                        .ok()
                        .and_then(|text| {
                            let rewritten = super::proxy_paths::rewrite_links(text, &resolved.base_url, proxy);
                            HeaderValue::from_str(&rewritten).ok()
                        })
                        .unwrap_or_else(|| value.clone())
                })
                .collect();
            if !links.is_empty() {
                response.headers.remove(reqwest::header::LINK);
                for link in links {
                    response.headers.append(reqwest::header::LINK, link);
                }
            }
        }
        Ok(response)
    }

    /// One provider call: cache lookup, auth, the egress client's protections, health.
    pub(crate) async fn send(
        &self,
        resolved: &Arc<Resolved>,
        method: Method,
        url: Url,
        extra_headers: HeaderMap,
        body: Bytes,
        bypass_cache: bool,
    ) -> Result<ProxyResponse, ConnectorError> {
        let ttl = resolved.provider.manifest.cache.as_ref().map(|c| Duration::from_secs(c.ttl_seconds.into()));
        let cache_key = (method == Method::GET && ttl.is_some()).then(|| {
            let accept = extra_headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
            format!("{}\n{}\n{accept}", resolved.connection.id, url)
        });
        let cache_state = match (&cache_key, bypass_cache) {
            (None, _) => CacheState::None,
            (Some(_), true) => CacheState::Bypass,
            (Some(key), false) => {
                if let Some(hit) = self.responses.get(key).filter(|hit| hit.expires > Instant::now()) {
                    return Ok(ProxyResponse {
                        status: hit.status,
                        headers: hit.headers.clone(),
                        body: hit.body.clone(),
                        cache: CacheState::Hit,
                        attempts: 0,
                        provider_error: None,
                    });
                }
                CacheState::Miss
            }
        };

        let started = Instant::now();
        let mut resolved = resolved.clone();
        if let Some(fresh) = self.oauth_before_call(&resolved).await? {
            resolved = fresh;
        }
        let mut outcome = self.call_once(&resolved, &method, &url, &extra_headers, &body).await;
        // A token the provider no longer accepts: a new one, and one more try.
        if matches!(&outcome, Ok((status, ..)) if *status == StatusCode::UNAUTHORIZED) {
            if matches!(resolved.injection, Injection::ClientCredentials { .. }) {
                self.tokens.invalidate(&resolved.connection.id);
                outcome = self.call_once(&resolved, &method, &url, &extra_headers, &body).await;
            } else if let Some(fresh) = self.oauth_after_rejection(&resolved).await? {
                resolved = fresh;
                outcome = self.call_once(&resolved, &method, &url, &extra_headers, &body).await;
            }
        }
        let resolved = &*resolved;
        let elapsed = started.elapsed();
        match outcome {
            Ok((status, headers, body, attempts)) => {
                let provider_error = self.reports_error(resolved, &body);
                let response = ProxyResponse { status, headers, body, cache: cache_state, attempts, provider_error };
                let failed = response.failed();
                self.note(resolved, elapsed, failed.then(|| response.failure()).as_deref(), Some(status));
                if let (Some(key), Some(ttl)) = (cache_key, ttl)
                    && status == StatusCode::OK
                    && response.body.len() <= MAX_CACHED_BYTES
                    && !failed
                {
                    let cached = CachedResponse {
                        status,
                        headers: response.headers.clone(),
                        body: response.body.clone(),
                        expires: Instant::now() + ttl,
                    };
                    self.responses.insert(key, Arc::new(cached));
                }
                Ok(response)
            }
            Err(error) => {
                self.note(resolved, elapsed, Some(&error.to_string()), None);
                Err(error)
            }
        }
    }

    async fn call_once(
        &self,
        resolved: &Resolved,
        method: &Method,
        url: &Url,
        extra_headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes, u32), ConnectorError> {
        // The caller's headers replace the manifest's of the same name, every value kept.
        let mut headers = resolved.headers.clone();
        for name in extra_headers.keys() {
            headers.remove(name);
        }
        for (name, value) in extra_headers {
            headers.append(name.clone(), value.clone());
        }
        match &resolved.injection {
            Injection::Header(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            Injection::ClientCredentials { .. } => {
                let token = self.client_credentials_token(resolved).await?;
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.as_str())).map_err(|_| {
                    ConnectorError::Misconfigured("the token holds characters a header cannot carry".into())
                })?;
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            Injection::None | Injection::Query(..) => {}
        }
        let idempotent = matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS)
            || headers.contains_key("idempotency-key");
        let request = self
            .egress
            .request(method.clone(), url.clone())
            .headers(headers)
            .body(body.clone())
            .build()
            .map_err(|e| ConnectorError::Misconfigured(format!("the request cannot be built: {e}")))?;
        let response = self.egress.call(request, &self.policy(resolved, idempotent)).await.map_err(from_call_error)?;
        let attempts = response.attempts;
        let response = response.response;
        let status = response.status();
        let headers = response.headers().clone();
        let (body, truncated) = switchboard_egress::read_excerpt(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| ConnectorError::Unreachable { code: e.kind.code(), message: e.message })?;
        if truncated {
            return Err(ConnectorError::Upstream {
                status: status.as_u16(),
                message: format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"),
                excerpt: String::new(),
            });
        }
        Ok((status, headers, Bytes::from(body), attempts))
    }

    pub(crate) fn policy(&self, resolved: &Resolved, idempotent: bool) -> CallPolicy {
        let manifest = &resolved.provider.manifest;
        let limit = manifest.rate_limit.as_ref();
        let limit_key = match limit.map(|l| l.scope) {
            Some(RateLimitScope::Provider) => format!("provider:{}", manifest.name),
            _ => format!("connection:{}", resolved.connection.id),
        };
        CallPolicy {
            breaker: resolved.breaker(),
            limit_key: Some(limit_key),
            quota: limit.map(|l| Quota { requests: l.requests, per: Duration::from_secs(l.per_seconds.into()) }),
            rate_headers: limit.map_or_else(RateHeaders::default, |l| RateHeaders {
                retry_after: l.retry_after_header.to_ascii_lowercase(),
                remaining: l.remaining_header.as_ref().map(|h| h.to_ascii_lowercase()),
                reset: l.reset_header.as_ref().map(|h| h.to_ascii_lowercase()),
                reset_is_epoch: l.reset_format == ResetFormat::EpochSeconds,
                also_limited_statuses: l.also_limited_statuses.clone(),
            }),
            idempotent,
            timeout: self.config.call_timeout,
        }
    }

    /// The provider's error code inside an answer (Slack's `ok: false`), if the manifest
    /// declares that shape.
    fn reports_error(&self, resolved: &Resolved, body: &[u8]) -> Option<String> {
        let shape = resolved.provider.manifest.errors.as_ref()?;
        let document: serde_json::Value = serde_json::from_slice(body).ok()?;
        if document.pointer(&shape.pointer)? != &shape.equals {
            return None;
        }
        let message = shape.message.as_deref().and_then(|p| document.pointer(p)).map(|v| match v {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        Some(message.unwrap_or_else(|| "the provider reported an error".into()))
    }

    fn note(&self, resolved: &Resolved, elapsed: Duration, error: Option<&str>, status: Option<StatusCode>) {
        let id = &resolved.connection.id;
        let persist = self.health.record(id, elapsed, error, status.map(|s| s.as_u16()));
        if let Some(update) = persist.map(|p| p.into_update(&resolved.connection.tenant_id, id, self.clock.now())) {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.record_connection_health(&[update]).await {
                    tracing::warn!(%error, "recording connection health failed");
                }
            });
        }
    }

    /// A token from the client-credentials grant (RFC 6749 §4.4), cached until a minute
    /// before it expires.
    async fn client_credentials_token(&self, resolved: &Resolved) -> Result<Arc<Zeroizing<String>>, ConnectorError> {
        let id = &resolved.connection.id;
        if let Some(token) = self.tokens.get(id).filter(|t| t.expires > Instant::now()) {
            return Ok(token.value);
        }
        let Injection::ClientCredentials { token_url, client_id, client_secret } = &resolved.injection else {
            return Err(ConnectorError::Misconfigured("not a client-credentials connection".into()));
        };
        let crate::manifest::Auth::Oauth2ClientCredentials(spec) = &resolved.auth else {
            return Err(ConnectorError::Misconfigured("not a client-credentials connection".into()));
        };
        let endpoint = switchboard_oauth::Endpoint {
            tenant: resolved.connection.tenant_id.as_str(),
            url: token_url,
            client_id,
            client_secret,
            auth: spec.token_auth_method.client_auth(),
            extra: spec.token_params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let scope = (!spec.scopes.is_empty()).then(|| spec.scopes.join(&spec.scope_separator));
        let granted = self.token_client.client_credentials(&endpoint, scope.as_deref()).await?;
        // Re-requested a minute before the provider's expiry (an hour when it does not say).
        let lifetime = granted.expires_in.unwrap_or(3600);
        let value = Arc::new(granted.access_token);
        let expires = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60).max(1));
        self.tokens.insert(id.clone(), Token { value: value.clone(), expires });
        Ok(value)
    }
}

pub(crate) fn from_call_error(error: CallError) -> ConnectorError {
    match error {
        CallError::CircuitOpen { target, retry_after } => ConnectorError::CircuitOpen { target, retry_after },
        CallError::RateLimited { retry_after } => ConnectorError::RateLimited { retry_after },
        CallError::Egress(e) => ConnectorError::Unreachable { code: e.kind.code(), message: e.message },
    }
}

/// The start of a body, as text, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    text.chars().filter(|c| !c.is_control() || *c == '\n').collect()
}
