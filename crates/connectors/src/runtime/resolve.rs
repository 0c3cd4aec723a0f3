//! A connection made ready to call: its base URL rendered from its config, the manifest's
//! headers, and its credentials opened from the vault and turned into what each request
//! carries (an `Authorization` header or a query parameter).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use switchboard_store::Connection;
use url::Url;
use zeroize::Zeroizing;

use crate::manifest::{Auth, KeyLocation};
use crate::provider::{FieldProblem, PREVIOUS_WEBHOOK_SECRET, Provider, WEBHOOK_SECRET};
use crate::runtime::ConnectorError;

/// Credentials as set through `configure`: field name → value. Zeroed when dropped.
pub type Credentials = BTreeMap<String, Zeroizing<String>>;

/// Checks credentials against the auth mode: unknown ones refused, webhook secrets in a form
/// the provider's scheme can use, and the mode's required fields present once any of the
/// mode's own fields is set (a connection that only receives webhooks needs only its
/// signing secret). Secret config fields may be set here too.
pub fn check_credentials(
    auth: &Auth,
    provider: &Provider,
    given: &Map<String, Value>,
) -> Result<Credentials, Vec<FieldProblem>> {
    let api_fields = auth.credential_fields();
    let api_given = given.keys().any(|name| api_fields.iter().any(|f| &f.name == name));
    let mut fields = api_fields;
    fields.extend(provider.webhook_credential_fields());
    let secret_config: Vec<&str> = provider.secret_config_fields().collect();
    let mut problems = Vec::new();
    let mut credentials = Credentials::new();
    for (name, value) in given {
        let known = fields.iter().any(|f| &f.name == name) || secret_config.contains(&name.as_str());
        if !known {
            let expected: Vec<&str> =
                fields.iter().map(|f| f.name.as_str()).chain(secret_config.iter().copied()).collect();
            problems.push(FieldProblem::new(
                format!("credentials.{name}"),
                format!(
                    "is not a credential of auth mode {} (expected: {})",
                    auth.mode(),
                    if expected.is_empty() { "none".to_string() } else { expected.join(", ") }
                ),
            ));
            continue;
        }
        match value {
            Value::String(text) if !text.is_empty() => {
                let is_signing_secret = [WEBHOOK_SECRET, PREVIOUS_WEBHOOK_SECRET].contains(&name.as_str());
                match provider.check_webhook_secret(text) {
                    Err(reason) if is_signing_secret => {
                        problems.push(FieldProblem::new(format!("credentials.{name}"), reason));
                    }
                    _ => {
                        credentials.insert(name.clone(), Zeroizing::new(text.clone()));
                    }
                }
            }
            _ => problems.push(FieldProblem::new(format!("credentials.{name}"), "must be a non-empty string")),
        }
    }
    for field in fields.iter().filter(|f| f.required && api_given) {
        if !given.contains_key(&field.name) {
            problems.push(FieldProblem::new(
                format!("credentials.{}", field.name),
                format!("is required for auth mode {}", auth.mode()),
            ));
        }
    }
    if problems.is_empty() { Ok(credentials) } else { Err(problems) }
}

/// Whether `credentials` hold every field the auth mode requires (so calls can be made):
/// the connection's `auth_state` is then `configured`, else `missing_credentials`.
pub fn has_api_credentials(auth: &Auth, credentials: &Credentials) -> bool {
    auth.credential_fields().iter().filter(|f| f.required).all(|f| credentials.contains_key(&f.name))
}

/// What a request through the connection carries for authentication.
#[derive(Clone)]
pub enum Injection {
    None,
    Header(HeaderName, HeaderValue),
    Query(String, Zeroizing<String>),
    /// Client credentials: the token is fetched (and cached) on demand.
    ClientCredentials {
        token_url: Url,
        client_id: Zeroizing<String>,
        client_secret: Zeroizing<String>,
    },
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        match self {
            Injection::None => f.write_str("None"),
            Injection::Header(name, _) => write!(f, "Header({name})"),
            Injection::Query(name, _) => write!(f, "Query({name})"),
            Injection::ClientCredentials { token_url, .. } => write!(f, "ClientCredentials({token_url})"),
        }
    }
}

/// A connection ready to call. Built once and cached by the service.
#[derive(Debug)]
pub struct Resolved {
    pub connection: Connection,
    pub provider: Arc<Provider>,
    pub auth: Auth,
    /// The template context: `config` (with secret values) and `api_version`.
    pub context: Value,
    pub base_url: Url,
    /// The manifest's headers and the API-version header.
    pub headers: HeaderMap,
    /// The API version as a query parameter, when the manifest sends it that way.
    pub version_query: Option<(String, String)>,
    pub injection: Injection,
}

impl Resolved {
    /// The circuit breaker guarding this connection's calls: its tenant's, for its base URL.
    pub fn breaker(&self) -> switchboard_egress::BreakerKey {
        switchboard_egress::BreakerKey::new(self.connection.tenant_id.as_str(), &self.base_url)
    }

    /// The URL of `path_and_query` under the base URL. The path is appended to the base
    /// path and must stay under it once normalised (`..`, `%2e%2e` and the like resolved),
    /// so a caller cannot leave the provider's API.
    pub fn url(&self, path_and_query: &str) -> Result<Url, ConnectorError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base_url.clone();
        url.set_path(&format!("{}/{}", self.base_url.path().trim_end_matches('/'), path.trim_start_matches('/')));
        if !within_base(&self.base_url, &url) {
            return Err(ConnectorError::invalid("path", "must stay under the provider's base URL"));
        }
        url.set_query(query.filter(|q| !q.is_empty()));
        if let Some((name, value)) = &self.version_query {
            url.query_pairs_mut().append_pair(name, value);
        }
        if let Injection::Query(name, value) = &self.injection {
            url.query_pairs_mut().append_pair(name, value);
        }
        Ok(url)
    }
}

/// Whether `candidate` is on the base URL's origin and under its path (on a segment
/// boundary: `/api` does not contain `/apiary`). Nothing outside it is ever sent the
/// connection's credentials.
pub(crate) fn within_base(base: &Url, candidate: &Url) -> bool {
    let base_path = base.path().trim_end_matches('/');
    let path = candidate.path();
    candidate.scheme() == base.scheme()
        && candidate.host() == base.host()
        && candidate.port_or_known_default() == base.port_or_known_default()
        && (path == base_path || path.starts_with(&format!("{base_path}/")))
}

/// Builds the ready-to-call form of a connection.
pub fn resolve(
    connection: Connection,
    provider: Arc<Provider>,
    credentials: Credentials,
    base_url_override: Option<&str>,
) -> Result<Resolved, ConnectorError> {
    let auth = provider.auth(Some(&connection.auth_mode)).cloned().ok_or_else(|| {
        ConnectorError::Misconfigured(format!(
            "auth mode {} is no longer offered by {}",
            connection.auth_mode,
            provider.name()
        ))
    })?;
    let config: Map<String, Value> = serde_json::from_str(&connection.config).unwrap_or_default();
    let context = context(&provider, config, &credentials);
    let misconfigured = |what: &str, e: &dyn std::fmt::Display| ConnectorError::Misconfigured(format!("{what}: {e}"));
    let base_url = base_url(&provider, &context, base_url_override)?;

    let mut headers = HeaderMap::new();
    for name in provider.manifest.headers.keys() {
        let value =
            provider.templates.render(&format!("header:{name}"), &context).map_err(|e| misconfigured(name, &e))?;
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| misconfigured(name, &e))?,
            HeaderValue::from_str(&value).map_err(|e| misconfigured(name, &e))?,
        );
    }
    let mut version_query = None;
    let api_version = context["api_version"].as_str().map(str::to_string);
    if let (Some(spec), Some(version)) = (&provider.manifest.api_version, &api_version) {
        if let Some(header) = &spec.header {
            headers.insert(
                HeaderName::from_bytes(header.as_bytes()).map_err(|e| misconfigured(header, &e))?,
                HeaderValue::from_str(version).map_err(|e| misconfigured("api_version", &e))?,
            );
        }
        if let Some(query) = &spec.query {
            version_query = Some((query.clone(), version.clone()));
        }
    }

    let injection = injection(&auth, &provider, &credentials, &context)?;
    Ok(Resolved { connection, provider, auth, context, base_url, headers, version_query, injection })
}

/// The templates' context for a connection: its config (secret values included) and API
/// version.
pub(crate) fn context(provider: &Provider, mut config: Map<String, Value>, credentials: &Credentials) -> Value {
    for name in provider.secret_config_fields() {
        if let Some(value) = credentials.get(name) {
            config.insert(name.to_string(), Value::String(value.to_string()));
        }
    }
    let api_version = provider.manifest.api_version.as_ref().map(|v| {
        config.get("api_version").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.default.clone())
    });
    json!({"config": config, "api_version": api_version})
}

/// The connection's base URL: the manifest's (or the operator's override), rendered.
pub(crate) fn base_url(
    provider: &Provider,
    context: &Value,
    base_url_override: Option<&str>,
) -> Result<Url, ConnectorError> {
    let misconfigured = |what: &str, e: &dyn std::fmt::Display| ConnectorError::Misconfigured(format!("{what}: {e}"));
    let base = match base_url_override {
        Some(template) => {
            let mut templates = crate::template::Templates::new();
            templates
                .add("override".into(), template.to_string())
                .map_err(|e| misconfigured("the base URL override", &e))?;
            templates.render("override", context).map_err(|e| misconfigured("the base URL override", &e))?
        }
        None => provider.templates.render("base_url", context).map_err(|e| misconfigured("base_url", &e))?,
    };
    let base_url = Url::parse(&base).map_err(|e| misconfigured("the base URL", &e))?;
    if !matches!(base_url.scheme(), "http" | "https") {
        return Err(ConnectorError::Misconfigured("the base URL must be http(s)".into()));
    }
    Ok(base_url)
}

/// The client-credentials token URL, for a mode that fetches its own tokens.
pub(crate) fn client_credentials_token_url(provider: &Provider, context: &Value) -> Result<Url, ConnectorError> {
    let url = provider
        .templates
        .render("auth:oauth2_client_credentials:token_url", context)
        .map_err(|e| ConnectorError::Misconfigured(format!("token_url: {e}")))?;
    Url::parse(&url).map_err(|e| ConnectorError::Misconfigured(format!("token_url: {e}")))
}

fn injection(
    auth: &Auth,
    provider: &Provider,
    credentials: &Credentials,
    context: &Value,
) -> Result<Injection, ConnectorError> {
    let get = |name: &str| credentials.get(name).cloned().ok_or(ConnectorError::MissingCredentials);
    let sensitive = |value: String| -> Result<HeaderValue, ConnectorError> {
        let mut header = HeaderValue::from_str(&value)
            .map_err(|_| ConnectorError::Misconfigured("a credential holds characters a header cannot carry".into()))?;
        header.set_sensitive(true);
        Ok(header)
    };
    Ok(match auth {
        Auth::None => Injection::None,
        Auth::Bearer(_) => {
            Injection::Header(reqwest::header::AUTHORIZATION, sensitive(format!("Bearer {}", *get("token")?))?)
        }
        Auth::Oauth2(_) => match credentials.get("access_token") {
            Some(token) => Injection::Header(reqwest::header::AUTHORIZATION, sensitive(format!("Bearer {}", **token))?),
            None => return Err(ConnectorError::MissingCredentials),
        },
        Auth::Basic(_) => {
            let pair = format!("{}:{}", *get("username")?, *get("password")?);
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
            Injection::Header(reqwest::header::AUTHORIZATION, sensitive(format!("Basic {encoded}"))?)
        }
        Auth::ApiKey(key) => {
            let render = |name: &str| {
                provider
                    .templates
                    .render(name, context)
                    .map_err(|e| ConnectorError::Misconfigured(format!("the API key's {name}: {e}")))
            };
            let name = render("auth:api_key:name")?;
            let prefix = render("auth:api_key:prefix")?;
            let value = format!("{prefix}{}", *get("api_key")?);
            match key.location {
                KeyLocation::Header => Injection::Header(
                    HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|_| ConnectorError::Misconfigured(format!("{name:?} is not a header name")))?,
                    sensitive(value)?,
                ),
                KeyLocation::Query => Injection::Query(name, Zeroizing::new(value)),
            }
        }
        Auth::Oauth2ClientCredentials(_) => Injection::ClientCredentials {
            token_url: client_credentials_token_url(provider, context)?,
            client_id: get("client_id")?,
            client_secret: get("client_secret")?,
        },
    })
}
