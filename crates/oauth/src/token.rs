//! The token endpoint (RFC 6749 §4.1.3, §4.4, §6) and revocation (RFC 7009), as providers
//! really answer them.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Map, Value};
use switchboard_egress::{CallError, CallPolicy, EgressClient, RateHeaders};
use url::Url;
use zeroize::Zeroizing;

/// Token answers larger than this are not tokens.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form.
    Post,
}

/// A provider's token endpoint and the client that calls it.
pub struct Endpoint<'a> {
    /// The tenant whose calls these are (its circuit breaker counts them).
    pub tenant: &'a str,
    /// Where requests are posted: the token endpoint, or the revocation endpoint.
    pub url: &'a Url,
    /// The client's id at the provider.
    pub client_id: &'a str,
    /// The client's secret, sent as `auth` says.
    pub client_secret: &'a str,
    /// How the client id and secret are sent.
    pub auth: ClientAuth,
    /// The provider's own parameters for token requests.
    pub extra: Vec<(String, String)>,
}

/// The longest lifetime taken from a token answer (ten years): a larger one is read as this,
/// so that adding it to a time stays within every clock's range.
pub const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;

/// What a token endpoint granted.
pub struct TokenSet {
    /// The access token, wiped from memory when dropped.
    pub access_token: Zeroizing<String>,
    /// The token type as the provider gives it (`Bearer`, `bot`); `None` when absent.
    pub token_type: Option<String>,
    /// Seconds the access token lives, at most [`MAX_EXPIRES_IN_SECS`]; `None` when the
    /// provider does not say.
    pub expires_in: Option<u64>,
    /// `None` when the answer has none (keep the one you had).
    pub refresh_token: Option<Zeroizing<String>>,
    /// The scopes granted, when the answer lists them (RFC 6749 §5.1: else as requested).
    pub scopes: Option<Vec<String>>,
    /// A user token issued beside the app's (Slack's `authed_user.access_token`).
    pub user_access_token: Option<Zeroizing<String>>,
    /// The answer's other members (Salesforce's `instance_url`, Slack's `team`), without any
    /// member that looks like a credential.
    pub extra: Map<String, Value>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Why a token or revocation request failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The provider answered with an OAuth error (`invalid_grant`, `access_denied`, …).
    #[error("the provider refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// The HTTP status of the answer.
        status: u16,
        /// The OAuth error code (`unknown_error` when Slack gives none; HubSpot's statuses mapped).
        error: String,
        /// The provider's explanation, if it gave one.
        description: Option<String>,
    },
    /// The answer is not a token response (HTML, no `access_token`, …).
    #[error("the token endpoint's answer ({status}) is not a token response: {reason}")]
    Malformed {
        /// The HTTP status of the answer; 0 when the request could not be built (nothing was sent).
        status: u16,
        /// What is wrong with the answer (or the request).
        reason: String,
        /// The answer's first 300 bytes without control characters; empty when nothing was sent.
        excerpt: String,
    },
    /// The request or its answer failed on the way: DNS, connection, timeout, a refused address.
    #[error("the token endpoint could not be reached ({code}): {message}")]
    Unreachable {
        /// The egress error's code (`timeout`, `dns_error`, `forbidden_address`, …).
        code: &'static str,
        /// What happened.
        message: String,
    },
    /// The token endpoint's circuit is open after repeated failures; nothing was sent.
    #[error("the circuit for {target} is open after repeated failures")]
    CircuitOpen {
        /// The breaker's target: the endpoint's URL without its query.
        target: String,
        /// How long until a probe is let through.
        retry_after: Duration,
    },
    /// The token endpoint's rate limit is spent; nothing was sent.
    #[error("the token endpoint's rate limit is spent")]
    RateLimited {
        /// How long until the rate limit allows a call.
        retry_after: Duration,
    },
}

impl TokenError {
    /// Whether retrying the same grant cannot help: the grant or the client is refused.
    /// Network trouble, 5xx, garbage and rate limits are worth another try later.
    pub fn is_permanent(&self) -> bool {
        matches!(self, TokenError::Refused { error, .. }
            if matches!(error.as_str(), "invalid_grant" | "invalid_client" | "unauthorized_client" | "invalid_scope" | "access_denied"))
    }
}

/// Calls token endpoints through the egress client.
#[derive(Clone)]
pub struct TokenClient {
    egress: EgressClient,
    timeout: Duration,
}

impl TokenClient {
    /// A client whose calls go through `egress`, each allowed `timeout`.
    pub fn new(egress: EgressClient, timeout: Duration) -> Self {
        Self { egress, timeout }
    }

    /// RFC 6749 §4.1.3 (with the PKCE verifier of RFC 7636 §4.5).
    pub async fn exchange_code(
        &self,
        endpoint: &Endpoint<'_>,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<TokenSet, TokenError> {
        let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        self.grant(endpoint, &form).await
    }

    /// RFC 6749 §6.
    pub async fn refresh(&self, endpoint: &Endpoint<'_>, refresh_token: &str) -> Result<TokenSet, TokenError> {
        self.grant(endpoint, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    /// RFC 6749 §4.4.
    pub async fn client_credentials(
        &self,
        endpoint: &Endpoint<'_>,
        scope: Option<&str>,
    ) -> Result<TokenSet, TokenError> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.grant(endpoint, &form).await
    }

    /// RFC 7009 §2.1. A 200 is success whatever the body says, except Slack's `ok: false`.
    pub async fn revoke(&self, endpoint: &Endpoint<'_>, token: &str, hint: &str) -> Result<(), TokenError> {
        let form = [("token", token), ("token_type_hint", hint)];
        let (status, _, body) = self.post(endpoint, &form).await?;
        let refused = serde_json::from_slice::<Value>(&body).ok().and_then(|v| oauth_error(&v));
        match (status, refused) {
            (200..=299, None) => Ok(()),
            (_, Some((error, description))) => Err(TokenError::Refused { status, error, description }),
            _ => Err(TokenError::Malformed { status, reason: "revocation failed".into(), excerpt: excerpt(&body) }),
        }
    }

    async fn grant(&self, endpoint: &Endpoint<'_>, form: &[(&str, &str)]) -> Result<TokenSet, TokenError> {
        let (status, content_type, body) = self.post(endpoint, form).await?;
        parse(status, &content_type, &body)
    }

    async fn post(&self, endpoint: &Endpoint<'_>, form: &[(&str, &str)]) -> Result<(u16, String, Vec<u8>), TokenError> {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.extend(endpoint.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut builder = self.egress.request(Method::POST, endpoint.url.clone()).header("accept", "application/json");
        match endpoint.auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: each part form-encoded before they are joined.
                let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = Zeroizing::new(format!("{}:{}", encode(endpoint.client_id), encode(endpoint.client_secret)));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
                let mut value =
                    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| TokenError::Malformed {
                        status: 0,
                        reason: "the client credentials cannot be sent in a header".into(),
                        excerpt: String::new(),
                    })?;
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
            ClientAuth::Post => {
                fields.push(("client_id", endpoint.client_id));
                fields.push(("client_secret", endpoint.client_secret));
            }
        }
        let request = builder.form(&fields).build().map_err(|e| TokenError::Malformed {
            status: 0,
            reason: format!("the token request cannot be built: {e}"),
            excerpt: String::new(),
        })?;
        let policy = CallPolicy {
            breaker: switchboard_egress::BreakerKey::new(endpoint.tenant, endpoint.url),
            limit_key: None,
            quota: None,
            rate_headers: RateHeaders::default(),
            // A grant is not repeated: a code is single-use and a refresh may rotate.
            idempotent: false,
            timeout: self.timeout,
        };
        let response = self.egress.call(request, &policy).await.map_err(|error| match error {
            CallError::CircuitOpen { target, retry_after } => TokenError::CircuitOpen { target, retry_after },
            CallError::RateLimited { retry_after } => TokenError::RateLimited { retry_after },
            CallError::Egress(e) => TokenError::Unreachable { code: e.kind.code(), message: e.message },
        })?;
        let response = response.response;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let (body, truncated) = switchboard_egress::read_excerpt(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| TokenError::Unreachable { code: e.kind.code(), message: e.message })?;
        if truncated {
            return Err(TokenError::Malformed {
                status,
                reason: "the answer is too large".into(),
                excerpt: excerpt(&body),
            });
        }
        Ok((status, content_type, body))
    }
}

/// Reads a token endpoint's answer, in JSON or form encoding, success or error, in the
/// shapes providers use.
pub fn parse(status: u16, content_type: &str, body: &[u8]) -> Result<TokenSet, TokenError> {
    let malformed = |reason: &str| TokenError::Malformed { status, reason: reason.into(), excerpt: excerpt(body) };
    let document = if content_type.contains("application/x-www-form-urlencoded") {
        Value::Object(url::form_urlencoded::parse(body).into_owned().map(|(k, v)| (k, Value::String(v))).collect())
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(document) => document,
            Err(_) => return Err(malformed("it is neither JSON nor form-encoded")),
        }
    };
    let Value::Object(mut members) = document else { return Err(malformed("it is not an object")) };
    if let Some((error, description)) = oauth_error(&Value::Object(members.clone())) {
        return Err(TokenError::Refused { status, error, description });
    }
    if !(200..300).contains(&status) {
        return Err(malformed("an error status without an OAuth error"));
    }
    let text = |value: Value| match value {
        Value::String(text) => Some(text),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    let Some(access_token) = members.remove("access_token").and_then(text).filter(|t| !t.is_empty()) else {
        return Err(malformed("it has no access_token"));
    };
    let expires_in = members
        .remove("expires_in")
        .and_then(text)
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(|secs| secs.min(MAX_EXPIRES_IN_SECS));
    let refresh_token = members.remove("refresh_token").and_then(text).filter(|t| !t.is_empty()).map(Zeroizing::new);
    let scopes = members
        .remove("scope")
        .and_then(text)
        .map(|scope| scope.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_string).collect());
    let token_type = members.remove("token_type").and_then(text);
    let user_access_token = match members.get_mut("authed_user") {
        Some(Value::Object(user)) => user.remove("access_token").and_then(text).filter(|t| !t.is_empty()),
        _ => None,
    }
    .map(Zeroizing::new);
    if let Some(Value::Object(user)) = members.get_mut("authed_user") {
        user.retain(|name, _| !looks_secret(name));
    }
    members.remove("ok");
    members.retain(|name, _| !looks_secret(name));
    Ok(TokenSet {
        access_token: Zeroizing::new(access_token),
        token_type,
        expires_in,
        refresh_token,
        scopes,
        user_access_token,
        extra: members,
    })
}

/// RFC 6749 §5.2 `error`, Slack's `ok: false` + `error`, or HubSpot's `status` + `message`.
fn oauth_error(document: &Value) -> Option<(String, Option<String>)> {
    let text = |name: &str| document.get(name).and_then(Value::as_str).map(str::to_string);
    if let Some(error) = text("error") {
        return Some((error, text("error_description")));
    }
    if document.get("ok") == Some(&Value::Bool(false)) {
        return Some(("unknown_error".into(), None));
    }
    // HubSpot: {"status": "BAD_REFRESH_TOKEN", "message": "…"} with a 400.
    let status = text("status").filter(|s| s.chars().all(|c| c.is_ascii_uppercase() || c == '_') && s.len() > 2)?;
    let error = match status.as_str() {
        "BAD_REFRESH_TOKEN" | "BAD_AUTH_CODE" | "EXPIRED_AUTH_CODE" => "invalid_grant".to_string(),
        "BAD_CLIENT_ID" | "BAD_CLIENT_SECRET" => "invalid_client".to_string(),
        other => other.to_ascii_lowercase(),
    };
    Some((error, text("message")))
}

fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "password", "signature"].iter().any(|word| name.contains(word))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(content_type: &str, body: &str) -> TokenSet {
        parse(200, content_type, body.as_bytes()).unwrap()
    }

    #[test]
    fn a_standard_json_answer() {
        let set = ok(
            "application/json;charset=UTF-8",
            r#"{"access_token":"at","token_type":"Bearer","expires_in":3599,"refresh_token":"rt","scope":"a b","id_token":"x.y.z","instance_url":"https://eu1.example.com"}"#,
        );
        assert_eq!(*set.access_token, "at");
        assert_eq!((set.expires_in, set.token_type.as_deref()), (Some(3599), Some("Bearer")));
        assert_eq!(set.refresh_token.as_deref().map(String::as_str), Some("rt"));
        assert_eq!(set.scopes, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(set.extra.get("instance_url").and_then(Value::as_str), Some("https://eu1.example.com"));
        assert!(!set.extra.contains_key("id_token"), "credentials are not kept among the extras");
    }

    #[test]
    fn githubs_form_encoded_answer_and_its_errors_with_200() {
        let set = ok(
            "application/x-www-form-urlencoded; charset=utf-8",
            "access_token=gho_16C7&scope=repo%2Cgist&token_type=bearer",
        );
        assert_eq!(*set.access_token, "gho_16C7");
        assert_eq!(set.scopes, Some(vec!["repo".to_string(), "gist".to_string()]));
        assert_eq!((set.expires_in, set.refresh_token.is_none()), (None, true));
        let error = parse(
            200,
            "application/x-www-form-urlencoded",
            b"error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.",
        )
        .unwrap_err();
        assert!(
            matches!(&error, TokenError::Refused { status: 200, error, description: Some(d) } if error == "bad_verification_code" && d.contains("incorrect"))
        );
    }

    #[test]
    fn slack_hubspot_and_rfc_errors() {
        let slack = parse(200, "application/json", br#"{"ok":false,"error":"invalid_code"}"#).unwrap_err();
        assert!(matches!(slack, TokenError::Refused { ref error, .. } if error == "invalid_code"));
        let set = ok(
            "application/json",
            r#"{"ok":true,"access_token":"xoxb-1","token_type":"bot","scope":"chat:write,channels:read","team":{"id":"T1"},
                "authed_user":{"id":"U1","scope":"users:read","access_token":"xoxp-1","token_type":"user"}}"#,
        );
        assert_eq!(set.scopes.unwrap().len(), 2);
        assert_eq!(set.user_access_token.as_deref().map(String::as_str), Some("xoxp-1"));
        assert!(set.extra.contains_key("team") && !set.extra.contains_key("ok"));
        assert_eq!(set.extra["authed_user"], serde_json::json!({"id": "U1", "scope": "users:read"}));
        let hubspot = parse(
            400,
            "application/json",
            br#"{"status":"BAD_REFRESH_TOKEN","message":"missing or invalid refresh token","correlationId":"c"}"#,
        )
        .unwrap_err();
        assert!(hubspot.is_permanent(), "{hubspot}");
        let rfc = parse(
            400,
            "application/json",
            br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
        .unwrap_err();
        assert!(rfc.is_permanent());
        assert!(rfc.to_string().contains("invalid_grant (Token has been expired or revoked.)"));
    }

    #[test]
    fn garbage_is_malformed_not_a_token() {
        let html = parse(502, "text/html", b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert!(matches!(&html, TokenError::Malformed { status: 502, excerpt, .. } if excerpt.contains("Bad Gateway")));
        assert!(!html.is_permanent());
        let missing = parse(200, "application/json", br#"{"token_type":"bearer","expires_in":3600}"#).unwrap_err();
        assert!(matches!(&missing, TokenError::Malformed { reason, .. } if reason.contains("access_token")));
        let status_only = parse(500, "application/json", br#"{"message":"oops"}"#).unwrap_err();
        assert!(matches!(status_only, TokenError::Malformed { status: 500, .. }));
        let string_expiry = ok("application/json", r#"{"access_token":"a","expires_in":"3600"}"#);
        assert_eq!(string_expiry.expires_in, Some(3600));
        let forever = ok("application/json", r#"{"access_token":"a","expires_in":18446744073709551615}"#);
        assert_eq!(forever.expires_in, Some(MAX_EXPIRES_IN_SECS));
    }
}
