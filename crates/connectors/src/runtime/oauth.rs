//! The OAuth2 connect flow of a connection (RFC 6749 §4.1 with PKCE, RFC 7636): `start`
//! stores a single-use state bound to the tenant and connection (only its hash, with the
//! PKCE verifier sealed) and returns the provider's authorization URL; `callback` uses the
//! state once, exchanges the code and stores the tokens sealed with the connection's other
//! credentials.

use chrono::TimeDelta;
use serde_json::{Map, Value};
use switchboard_core::{Id, Timestamp};
use switchboard_oauth::{
    AuthorizationRequest, ClientAuth, Endpoint, Pkce, TokenError, TokenSet, hash_state, new_state,
};
use switchboard_store::{AuthState, Connection, ConnectionHealthUpdate, NewTokens, OAuthState, TakenState, secrets};
use url::Url;
use zeroize::Zeroizing;

use super::resolve::Credentials;
use super::{Connections, ConnectorError};
use crate::manifest::{Auth, OAuth2, TokenAuthMethod};
use crate::provider::{FieldProblem, Provider};

/// How long a started flow may take to come back.
const STATE_LIFETIME: TimeDelta = TimeDelta::minutes(10);
const MAX_EXTRA_SCOPES: usize = 50;

/// What the caller may add to a flow.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Scopes requested besides the manifest's.
    pub extra_scopes: Vec<String>,
    /// User-token scopes besides the manifest's `user_scopes` (providers with a
    /// `user_scope_param`).
    pub extra_user_scopes: Vec<String>,
    /// Where the user's browser goes after the callback (with `connection_id` and `status`).
    pub return_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConnectStarted {
    pub authorization_url: Url,
    pub expires_at: Timestamp,
}

/// The provider's redirect back to us, as received.
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    /// The authorization server's issuer identifier (RFC 9207), when it sends one.
    pub iss: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Why a callback could not be tied to a flow. Nothing is stored for these.
#[derive(Debug, thiserror::Error)]
pub enum CallbackRefused {
    #[error("the request has no state")]
    MissingState,
    #[error("the state is not one this server issued")]
    UnknownState,
    #[error("the state has expired; start the connection again")]
    ExpiredState,
    #[error("the state was already used")]
    UsedState,
    #[error("the connection no longer exists")]
    ConnectionGone,
    #[error(transparent)]
    Store(#[from] switchboard_store::StoreError),
}

/// The end of a flow that was ours: connected, or the provider's or token endpoint's error,
/// which is also recorded on the connection.
#[derive(Debug, Clone)]
pub struct CallbackOutcome {
    pub tenant_id: Id,
    pub connection_id: Id,
    pub connection_name: String,
    pub return_url: Option<String>,
    /// `None` when connected.
    pub error: Option<String>,
}

/// A provider's OAuth2 endpoints after the operator's overrides.
pub(crate) struct OAuthUrls {
    pub authorization: Url,
    pub token: Url,
    pub revocation: Option<Url>,
    /// The issuer identifier its redirects must carry, if known.
    pub issuer: Option<String>,
}

impl Connections {
    pub(crate) fn oauth_spec(provider: &Provider, connection: &Connection) -> Result<OAuth2, ConnectorError> {
        match provider.auth(Some(&connection.auth_mode)) {
            Some(Auth::Oauth2(spec)) => Ok(spec.clone()),
            _ => Err(ConnectorError::Misconfigured(format!(
                "the connection uses {}, not oauth2; install it with auth_mode oauth2 to connect through the provider",
                connection.auth_mode
            ))),
        }
    }

    pub(crate) fn oauth_urls(&self, provider: &Provider, spec: &OAuth2) -> Result<OAuthUrls, ConnectorError> {
        let overrides = self.config.url_overrides.get(provider.name());
        let pick = |own: Option<&String>, manifest: &str| own.map(String::as_str).unwrap_or(manifest).to_string();
        let parse = |what: &str, text: String| {
            Url::parse(&text).map_err(|e| ConnectorError::Misconfigured(format!("the {what} URL {text:?}: {e}")))
        };
        Ok(OAuthUrls {
            authorization: parse(
                "authorization",
                pick(overrides.and_then(|o| o.authorization_url.as_ref()), &spec.authorization_url),
            )?,
            token: parse("token", pick(overrides.and_then(|o| o.token_url.as_ref()), &spec.token_url))?,
            revocation: match overrides.and_then(|o| o.revocation_url.clone()).or(spec.revocation_url.clone()) {
                Some(url) => Some(parse("revocation", url)?),
                None => None,
            },
            issuer: overrides.and_then(|o| o.issuer.clone()).or(spec.issuer.clone()),
        })
    }

    /// Starts a connect flow: returns the URL to send the user's browser to.
    pub async fn oauth_start(
        &self,
        tenant_id: &Id,
        connection_id: &str,
        options: ConnectOptions,
    ) -> Result<ConnectStarted, ConnectorError> {
        let (connection, credentials) = self.connection_with_credentials(tenant_id, connection_id).await?;
        let provider = self.provider(&connection.provider)?.clone();
        let spec = Self::oauth_spec(&provider, &connection)?;
        let mut problems = Vec::new();
        check_scopes("scopes", &options.extra_scopes, &spec.scope_separator, &mut problems);
        check_scopes("user_scopes", &options.extra_user_scopes, &spec.scope_separator, &mut problems);
        if !options.extra_user_scopes.is_empty() && spec.user_scope_param.is_none() {
            problems.push(FieldProblem::new("user_scopes", format!("{} has no user tokens", provider.name())));
        }
        if let Some(url) = &options.return_url {
            let ok = url.len() <= 2048 && Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                problems.push(FieldProblem::new("return_url", "must be an http(s) URL of at most 2048 characters"));
            }
        }
        if !problems.is_empty() {
            return Err(ConnectorError::Invalid(problems));
        }
        let client_id = credentials.get("client_id").ok_or(ConnectorError::MissingCredentials)?;
        if !credentials.contains_key("client_secret") {
            return Err(ConnectorError::MissingCredentials);
        }
        let urls = self.oauth_urls(&provider, &spec)?;

        let mut scopes = spec.scopes.clone();
        for scope in options.extra_scopes {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        let now = self.clock.now();
        let state = new_state();
        let pkce = spec.pkce.then(Pkce::generate);
        let verifier = pkce.as_ref().map(|p| secrets::seal(&self.secrets, tenant_id, p.verifier.as_bytes(), now));
        let redirect_uri = self.config.redirect_uri();
        let pending = OAuthState {
            state_hash: hash_state(&state),
            tenant_id: tenant_id.clone(),
            connection_id: connection.id.clone(),
            redirect_uri: redirect_uri.clone(),
            return_url: options.return_url,
            scopes: scopes.clone(),
            created_at: now,
            expires_at: now + STATE_LIFETIME,
        };
        self.store.create_oauth_state(&pending, verifier.as_ref()).await?;
        let mut extra: Vec<(String, String)> =
            spec.authorization_params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut user_scopes = spec.user_scopes.clone();
        user_scopes.extend(options.extra_user_scopes.into_iter().filter(|s| !spec.user_scopes.contains(s)));
        if let (Some(param), false) = (&spec.user_scope_param, user_scopes.is_empty()) {
            extra.push((param.clone(), user_scopes.join(&spec.scope_separator)));
        }
        let authorization_url = AuthorizationRequest {
            endpoint: &urls.authorization,
            client_id,
            redirect_uri: &redirect_uri,
            scopes: &scopes,
            scope_separator: &spec.scope_separator,
            state: &state,
            pkce_challenge: pkce.as_ref().map(|p| p.challenge.as_str()),
            extra: &extra,
        }
        .url();
        Ok(ConnectStarted { authorization_url, expires_at: pending.expires_at })
    }

    /// Completes a connect flow from the provider's redirect.
    pub async fn oauth_callback(&self, params: &CallbackParams) -> Result<CallbackOutcome, CallbackRefused> {
        let state = params.state.as_deref().filter(|s| !s.is_empty()).ok_or(CallbackRefused::MissingState)?;
        let now = self.clock.now();
        let (pending, verifier) = match self.store.take_oauth_state(&hash_state(state), now).await? {
            TakenState::Taken(taken) => *taken,
            TakenState::Unknown => return Err(CallbackRefused::UnknownState),
            TakenState::Expired => return Err(CallbackRefused::ExpiredState),
            TakenState::AlreadyUsed => return Err(CallbackRefused::UsedState),
        };
        let connection = self
            .store
            .get_connection(pending.tenant_id.as_str(), pending.connection_id.as_str())
            .await?
            .ok_or(CallbackRefused::ConnectionGone)?;
        let mut outcome = CallbackOutcome {
            tenant_id: pending.tenant_id.clone(),
            connection_id: connection.id.clone(),
            connection_name: connection.name.clone(),
            return_url: pending.return_url.clone(),
            error: None,
        };
        let result = match (self.check_issuer(&connection, params.iss.as_deref()), &params.error, &params.code) {
            // The mix-up defence comes first: a redirect from another authorization server
            // has its code (and its error) ignored.
            (Err(error), _, _) => Err(error),
            (Ok(()), Some(error), _) => Err(match &params.error_description {
                Some(description) => format!("the provider answered {}: {}", echoed(error), echoed(description)),
                None => format!("the provider answered {}", echoed(error)),
            }),
            (Ok(()), None, None) => Err("the provider's redirect has neither a code nor an error".to_string()),
            (Ok(()), None, Some(code)) => self.exchange(&connection, &pending, verifier, code).await,
        };
        if let Err(error) = result {
            let update = ConnectionHealthUpdate {
                tenant_id: pending.tenant_id.clone(),
                connection_id: connection.id.clone(),
                last_success_at: None,
                last_error: Some((format!("connect: {error}"), now)),
                auth_state: None,
                test: None,
            };
            self.store.record_connection_health(&[update]).await?;
            outcome.error = Some(error);
        }
        Ok(outcome)
    }

    /// RFC 9207: the redirect's `iss` must be the issuer of the server the flow started at,
    /// and a server that always sends it must have sent it. Without a known issuer an `iss`
    /// cannot be checked, and is let be.
    fn check_issuer(&self, connection: &Connection, iss: Option<&str>) -> Result<(), String> {
        let provider = self.provider(&connection.provider).map_err(|e| e.to_string())?;
        let spec = Self::oauth_spec(provider, connection).map_err(|e| e.to_string())?;
        let expected = self.oauth_urls(provider, &spec).map_err(|e| e.to_string())?.issuer;
        match (expected, iss) {
            (Some(expected), Some(iss)) if iss != expected => Err(format!(
                "the redirect came from the authorization server {:?}, not {expected:?} (an authorization server \
                 mix-up); its code was not used",
                echoed(iss)
            )),
            (_, None) if spec.authorization_response_iss_parameter_supported => Err(
                "the redirect has no `iss` although the authorization server always sends one; its code was not used"
                    .to_string(),
            ),
            _ => Ok(()),
        }
    }

    /// Exchanges the code and stores the tokens; the error is a sentence for the user.
    async fn exchange(
        &self,
        connection: &Connection,
        pending: &OAuthState,
        verifier: Option<switchboard_store::StoredSecret>,
        code: &str,
    ) -> Result<(), String> {
        let provider = self.provider(&connection.provider).map_err(|e| e.to_string())?.clone();
        let spec = Self::oauth_spec(&provider, connection).map_err(|e| e.to_string())?;
        let urls = self.oauth_urls(&provider, &spec).map_err(|e| e.to_string())?;
        let verifier = match verifier {
            Some(sealed) => Some(Zeroizing::new(
                String::from_utf8(
                    secrets::open(&self.secrets, &sealed).map_err(|_| "the flow's verifier is unreadable")?.to_vec(),
                )
                .map_err(|_| "the flow's verifier is unreadable")?,
            )),
            None => None,
        };
        let mut credentials = self.credentials(connection).await.map_err(|e| e.to_string())?;
        let granted = {
            let endpoint = token_endpoint(connection, &urls.token, &credentials, &spec)?;
            self.token_client
                .exchange_code(&endpoint, code, &pending.redirect_uri, verifier.as_deref().map(String::as_str))
                .await
                .map_err(|e| describe(&e))?
        };
        // A reconnect replaces a grant: once the new tokens are stored, the old one is revoked
        // (where the provider revokes grants one by one), so no forgotten grant stays alive.
        let replaced = credentials.clone();
        let stored = self
            .store_tokens(connection, &mut credentials, granted, &pending.scopes, None)
            .await
            .map_err(|e| e.to_string())?;
        let replaced_token = |name: &str| replaced.get(name).filter(|old| credentials.get(name) != Some(*old));
        if let Some(updated) = stored
            && spec.revoke_replaced_grant
            && (replaced_token("refresh_token").is_some() || replaced_token("access_token").is_some())
        {
            let mut old = credentials.clone();
            for name in ["refresh_token", "access_token"] {
                match replaced_token(name) {
                    Some(token) => old.insert(name.to_string(), token.clone()),
                    None => old.remove(name),
                };
            }
            if let Err(error) = self.revoke_tokens(&updated, &old).await {
                tracing::warn!(connection = %updated.id, %error, "revoking the grant a reconnect replaced failed");
            }
        }
        Ok(())
    }

    /// Seals the new tokens with the connection's other credentials and records their
    /// metadata. A token answer without a refresh token keeps the one held (RFC 6749 §6).
    pub(crate) async fn store_tokens(
        &self,
        connection: &Connection,
        credentials: &mut Credentials,
        granted: TokenSet,
        requested_scopes: &[String],
        lease_owner: Option<&str>,
    ) -> Result<Option<Connection>, ConnectorError> {
        let now = self.clock.now();
        credentials.insert("access_token".into(), granted.access_token);
        if let Some(refresh) = granted.refresh_token {
            credentials.insert("refresh_token".into(), refresh);
        }
        let mut fields = connection.credential_fields.clone();
        fields.insert("access_token".into(), now);
        if let Some(user_token) = granted.user_access_token {
            credentials.insert("user_access_token".into(), user_token);
            fields.insert("user_access_token".into(), now);
        }
        if credentials.contains_key("refresh_token") {
            fields.entry("refresh_token".into()).or_insert(now);
        }
        let config = self.config_with_token_values(connection, &granted.extra);
        let tokens = NewTokens {
            credentials: self.seal(&connection.tenant_id, credentials, now),
            fields,
            // `expires_in` is at most ten years (the token parser's bound).
            expires_at: granted.expires_in.map(|secs| now + TimeDelta::seconds(secs as i64)),
            scopes: granted.scopes.unwrap_or_else(|| requested_scopes.to_vec()),
            refreshed_at: lease_owner.map(|_| now),
            lease_owner: lease_owner.map(str::to_string),
            auth_state: AuthState::Ok,
            config,
        };
        let updated =
            self.store.set_connection_tokens(connection.tenant_id.as_str(), connection.id.as_str(), &tokens).await?;
        self.forget_resolved(&connection.id);
        Ok(updated)
    }

    /// Revokes the connection's grant (RFC 7009): the refresh token if there is one, which
    /// ends the grant, else the access token. Nothing to do without tokens or an endpoint.
    pub(crate) async fn revoke_grant(&self, connection: &Connection) -> Result<(), String> {
        let credentials = self.credentials(connection).await.map_err(|e| e.to_string())?;
        self.revoke_tokens(connection, &credentials).await
    }

    /// Revokes the grant `credentials` hold (their refresh token, else their access token).
    async fn revoke_tokens(&self, connection: &Connection, credentials: &Credentials) -> Result<(), String> {
        let Some(provider) = self.catalog.get(&connection.provider) else { return Ok(()) };
        let Ok(spec) = Self::oauth_spec(provider, connection) else { return Ok(()) };
        let urls = self.oauth_urls(provider, &spec).map_err(|e| e.to_string())?;
        let Some(revocation) = urls.revocation else { return Ok(()) };
        let (token, hint) = match (credentials.get("refresh_token"), credentials.get("access_token")) {
            (Some(refresh), _) => (refresh, "refresh_token"),
            (None, Some(access)) => (access, "access_token"),
            (None, None) => return Ok(()),
        };
        let endpoint = token_endpoint(connection, &revocation, credentials, &spec)?;
        self.token_client.revoke(&endpoint, token, hint).await.map_err(|e| describe(&e))
    }

    /// Values of the token answer that the provider's form declares (Salesforce's
    /// `instance_url`) go into the connection's config, so templates can use them.
    fn config_with_token_values(&self, connection: &Connection, extra: &Map<String, Value>) -> Option<String> {
        let provider = self.catalog.get(&connection.provider)?;
        let mut config: Map<String, Value> = serde_json::from_str(&connection.config).unwrap_or_default();
        let mut changed = false;
        for field in &provider.manifest.connection_config {
            if let Some(Value::String(value)) = extra.get(&field.name)
                && !field.secret
                && config.get(&field.name) != Some(&Value::String(value.clone()))
            {
                config.insert(field.name.clone(), Value::String(value.clone()));
                changed = true;
            }
        }
        changed.then(|| Value::Object(config).to_string())
    }
}

/// Scope tokens (RFC 6749 §3.3): printable, no spaces or separators.
fn check_scopes(field: &str, scopes: &[String], separator: &str, problems: &mut Vec<FieldProblem>) {
    if scopes.len() > MAX_EXTRA_SCOPES {
        problems.push(FieldProblem::new(field, format!("at most {MAX_EXTRA_SCOPES} scopes")));
    }
    for (index, scope) in scopes.iter().enumerate() {
        let bad = scope.is_empty()
            || scope.len() > 200
            || scope.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
            || scope.contains(separator);
        if bad {
            problems.push(FieldProblem::new(
                format!("{field}[{index}]"),
                "must be a scope token (RFC 6749 §3.3: printable, no spaces or separators)",
            ));
        }
    }
}

pub(crate) fn token_endpoint<'a>(
    connection: &'a Connection,
    url: &'a Url,
    credentials: &'a Credentials,
    spec: &'a OAuth2,
) -> Result<Endpoint<'a>, String> {
    let get = |name: &str| credentials.get(name).map(|v| v.as_str()).ok_or(format!("the connection has no {name}"));
    Ok(Endpoint {
        tenant: connection.tenant_id.as_str(),
        url,
        client_id: get("client_id")?,
        client_secret: get("client_secret")?,
        auth: spec.token_auth_method.client_auth(),
        extra: spec.token_params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

impl TokenAuthMethod {
    pub(crate) fn client_auth(self) -> ClientAuth {
        match self {
            TokenAuthMethod::ClientSecretBasic => ClientAuth::Basic,
            TokenAuthMethod::ClientSecretPost => ClientAuth::Post,
        }
    }
}

impl From<TokenError> for ConnectorError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::CircuitOpen { target, retry_after } => ConnectorError::CircuitOpen { target, retry_after },
            TokenError::RateLimited { retry_after } => ConnectorError::RateLimited { retry_after },
            TokenError::Unreachable { code, message } => ConnectorError::Unreachable { code, message },
            TokenError::Refused { status, .. } => {
                ConnectorError::Upstream { status, message: error.to_string(), excerpt: String::new() }
            }
            TokenError::Malformed { status, ref excerpt, .. } => {
                ConnectorError::Upstream { status, message: error.to_string(), excerpt: excerpt.clone() }
            }
        }
    }
}

/// A token endpoint failure as the user and the connection's record see it.
pub(crate) fn describe(error: &TokenError) -> String {
    match error {
        TokenError::Malformed { excerpt, .. } if !excerpt.is_empty() => format!("{error}; it begins: {excerpt}"),
        other => other.to_string(),
    }
}

/// What a redirect said, as far as it is worth repeating in an error: whoever sent the
/// browser here chose it, and it goes into the connection's record and a return URL.
fn echoed(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_a_redirect_said_is_repeated_only_in_part() {
        assert_eq!(super::echoed("access_denied"), "access_denied");
        let long = "é".repeat(1000);
        let echoed = super::echoed(&long);
        assert_eq!(echoed.chars().count(), 201, "200 characters and an ellipsis");
        assert!(echoed.ends_with('…'));
    }
}
