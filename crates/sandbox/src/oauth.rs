//! The providers' OAuth2 authorization servers, each at its real paths under
//! `/oauth/{provider}`, with the quirks their documentation describes:
//!
//! - GitHub (`/login/oauth/authorize`, `/login/oauth/access_token`): answers
//!   form-encoded unless asked for JSON, reports errors with HTTP 200 (`error=bad_verification_code`),
//!   comma-separated scopes, expiring user tokens (8 h) whose refresh tokens rotate;
//! - Google (`/o/oauth2/v2/auth`, `/token`, `/revoke`): a refresh token only with
//!   `access_type=offline`, never again on refresh; `invalid_grant` after revocation, which
//!   ends every grant the user gave the app, not only the token's; its issuer identifier as
//!   `iss` in every redirect (RFC 9207);
//! - Slack (`/oauth/v2/authorize`, `/api/oauth.v2.access`, `/api/auth.revoke`): HTTP 200 with
//!   `ok: false` for errors, a bot token plus an `authed_user`, no expiry (rotation off);
//! - HubSpot (`/oauth/authorize`, `/oauth/v1/token`): 30-minute tokens, the same refresh
//!   token back on refresh, errors as `{status, message}`.
//!
//! The authorization endpoint approves at once (the user "consents") and redirects with a
//! code, unless a test asked it to deny. Codes are single-use, live 10 minutes, and bind the
//! client, the redirect URI and the PKCE challenge (S256 only).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::State;
use crate::credentials::{OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET};

/// Providers with an authorization server here.
pub const OAUTH_PROVIDERS: [&str; 4] = ["github", "google-calendar", "slack", "hubspot"];

/// How a provider's token endpoint behaves; tests may change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quirks {
    /// Lifetime of access tokens; `None`: they never expire and no `expires_in` is sent.
    pub expires_in: Option<u64>,
    /// A refresh token is issued (with the code, and on refresh if `rotate_refresh_tokens`).
    pub refresh_tokens: bool,
    /// A refresh returns a new refresh token and voids the old one.
    pub rotate_refresh_tokens: bool,
    /// The token endpoint answers an HTML error page instead of JSON (a misconfigured proxy).
    pub answer_html: bool,
    /// The token endpoint's success answer lacks `access_token`.
    pub omit_access_token: bool,
}

impl Quirks {
    /// How the provider documents its token endpoint.
    pub fn default_for(provider: &str) -> Self {
        let base = Quirks {
            expires_in: Some(3600),
            refresh_tokens: true,
            rotate_refresh_tokens: false,
            answer_html: false,
            omit_access_token: false,
        };
        match provider {
            "github" => Quirks { expires_in: Some(28_800), rotate_refresh_tokens: true, ..base },
            "google-calendar" => Quirks { expires_in: Some(3599), ..base },
            "slack" => Quirks { expires_in: None, refresh_tokens: false, ..base },
            "hubspot" => Quirks { expires_in: Some(1800), ..base },
            _ => base,
        }
    }
}

#[derive(Debug)]
struct Grant {
    provider: &'static str,
    client_id: String,
    redirect_uri: String,
    scopes: String,
    user_scopes: Option<String>,
    challenge: Option<String>,
    offline: bool,
    issued: Instant,
}

/// Tokens belong to the grant a code began; a refresh continues its grant.
#[derive(Debug)]
struct AccessToken {
    provider: &'static str,
    grant: u64,
    expires: Option<Instant>,
    revoked: bool,
}

#[derive(Debug)]
struct RefreshToken {
    provider: &'static str,
    grant: u64,
    scopes: String,
    valid: bool,
}

/// Everything the authorization servers remember.
#[derive(Debug, Default)]
pub(crate) struct OAuthServers {
    codes: HashMap<String, Grant>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    quirks: HashMap<String, Quirks>,
    deny_next: HashSet<String>,
    refreshes: HashMap<String, u64>,
    counter: u64,
}

impl OAuthServers {
    fn quirks(&self, provider: &str) -> Quirks {
        self.quirks.get(provider).cloned().unwrap_or_else(|| Quirks::default_for(provider))
    }

    /// Codes issued for `provider` and not yet redeemed.
    pub(crate) fn unredeemed_codes(&self, provider: &str) -> usize {
        self.codes.values().filter(|grant| grant.provider == provider).count()
    }

    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}{:06}", self.counter, rand::random::<u32>() % 1_000_000)
    }

    /// Whether an access token this server issued for `provider` is usable now; `None` when
    /// it issued no such token.
    pub(crate) fn access_token_valid(&self, provider: &str, token: &str) -> Option<bool> {
        let issued = self.access.get(token).filter(|t| t.provider == provider)?;
        Some(!issued.revoked && issued.expires.is_none_or(|at| at > Instant::now()))
    }

    pub(crate) fn set_quirks(&mut self, provider: &str, quirks: Quirks) {
        self.quirks.insert(provider.to_string(), quirks);
    }

    pub(crate) fn deny_next(&mut self, provider: &str) {
        self.deny_next.insert(provider.to_string());
    }

    pub(crate) fn refreshes(&self, provider: &str) -> u64 {
        self.refreshes.get(provider).copied().unwrap_or(0)
    }

    /// Makes every access token of the provider expire now (the next API call answers 401).
    pub(crate) fn expire_access_tokens(&mut self, provider: &str) {
        for token in self.access.values_mut().filter(|t| t.provider == provider) {
            token.expires = Some(Instant::now());
        }
    }

    /// Revokes every token of the provider, as a user removing the app would.
    pub(crate) fn revoke_all(&mut self, provider: &str) {
        for token in self.access.values_mut().filter(|t| t.provider == provider) {
            token.revoked = true;
        }
        for token in self.refresh.values_mut().filter(|t| t.provider == provider) {
            token.valid = false;
        }
    }

    pub(crate) fn revoked_tokens(&self, provider: &str) -> usize {
        self.access.values().filter(|t| t.provider == provider && t.revoked).count()
    }
}

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/github/login/oauth/authorize", get(|s, q| authorize(s, q, "github")))
        .route("/github/login/oauth/access_token", post(|s, h, b| token(s, h, b, "github")))
        .route("/google-calendar/o/oauth2/v2/auth", get(|s, q| authorize(s, q, "google-calendar")))
        .route("/google-calendar/token", post(|s, h, b| token(s, h, b, "google-calendar")))
        .route("/google-calendar/revoke", post(|s, h, b| revoke(s, h, b, "google-calendar")))
        .route("/slack/oauth/v2/authorize", get(|s, q| authorize(s, q, "slack")))
        .route("/slack/api/oauth.v2.access", post(|s, h, b| token(s, h, b, "slack")))
        .route("/slack/api/auth.revoke", post(|s, h, b| revoke(s, h, b, "slack")))
        .route("/hubspot/oauth/authorize", get(|s, q| authorize(s, q, "hubspot")))
        .route("/hubspot/oauth/v1/token", post(|s, h, b| token(s, h, b, "hubspot")))
}

/// Where a connection's OAuth URLs point to reach these servers, per provider:
/// (authorization URL, token URL, revocation URL).
pub(crate) fn urls(base: &str, provider: &str) -> Option<(String, String, Option<String>)> {
    let root = format!("{base}/oauth/{provider}");
    Some(match provider {
        "github" => (format!("{root}/login/oauth/authorize"), format!("{root}/login/oauth/access_token"), None),
        "google-calendar" => {
            (format!("{root}/o/oauth2/v2/auth"), format!("{root}/token"), Some(format!("{root}/revoke")))
        }
        "slack" => (
            format!("{root}/oauth/v2/authorize"),
            format!("{root}/api/oauth.v2.access"),
            Some(format!("{root}/api/auth.revoke")),
        ),
        "hubspot" => (format!("{root}/oauth/authorize"), format!("{root}/oauth/v1/token"), None),
        _ => return None,
    })
}

/// The issuer identifier a provider's authorization server puts in its redirects (RFC 9207),
/// for those that do: Google.
pub(crate) fn issuer(base: &str, provider: &str) -> Option<String> {
    (provider == "google-calendar").then(|| format!("{}/oauth/{provider}", base.trim_end_matches('/')))
}

type Params = Query<BTreeMap<String, String>>;

/// RFC 6749 §4.1.1–4.1.2: a bad client or redirect URI is shown to the user, never
/// redirected to; anything else goes back to the client as `error=…&state=…`.
async fn authorize(AxumState(state): AxumState<Arc<State>>, Query(params): Params, provider: &'static str) -> Response {
    let get = |name: &str| params.get(name).map(String::as_str);
    if get("client_id") != Some(OAUTH_CLIENT_ID) {
        return (StatusCode::BAD_REQUEST, "<html><body>Unknown client_id</body></html>").into_response();
    }
    let Some(redirect_uri) = get("redirect_uri").and_then(|uri| url::Url::parse(uri).ok()) else {
        return (StatusCode::BAD_REQUEST, "<html><body>Missing or invalid redirect_uri</body></html>").into_response();
    };
    let issuer = issuer(&state.base(""), provider);
    let back = |pairs: &[(&str, &str)]| {
        let mut target = redirect_uri.clone();
        target.query_pairs_mut().extend_pairs(pairs);
        if let Some(state) = get("state") {
            target.query_pairs_mut().append_pair("state", state);
        }
        // Google names itself in every redirect (RFC 9207).
        if let Some(issuer) = &issuer {
            target.query_pairs_mut().append_pair("iss", issuer);
        }
        Redirect::to(target.as_str()).into_response()
    };
    if get("response_type") != Some("code") {
        return back(&[("error", "unsupported_response_type")]);
    }
    let challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (None, _) => None,
        (Some(challenge), Some("S256")) => Some(challenge.to_string()),
        (Some(_), _) => return back(&[("error", "invalid_request"), ("error_description", "only S256 is supported")]),
    };
    let mut servers = state.oauth.lock().expect("sandbox lock");
    if servers.deny_next.remove(provider) {
        return back(&[("error", "access_denied"), ("error_description", "The user denied access")]);
    }
    let code = servers.next("code-");
    let grant = Grant {
        provider,
        client_id: OAUTH_CLIENT_ID.to_string(),
        redirect_uri: redirect_uri.to_string(),
        scopes: get("scope").unwrap_or("").to_string(),
        user_scopes: get("user_scope").map(str::to_string),
        challenge,
        // Google issues a refresh token only to offline requests.
        offline: provider != "google-calendar" || get("access_type") == Some("offline"),
        issued: Instant::now(),
    };
    servers.codes.insert(code.clone(), grant);
    back(&[("code", &code)])
}

/// The client's credentials: HTTP Basic (RFC 6749 §2.3.1) or the form's fields.
fn client(headers: &HeaderMap, form: &BTreeMap<String, String>) -> Option<(String, String)> {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let decode =
                |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            Some((decode(id)?, decode(secret)?))
        });
    basic.or_else(|| Some((form.get("client_id")?.clone(), form.get("client_secret")?.clone())))
}

/// An error answer in the provider's own shape.
fn failure(provider: &str, headers: &HeaderMap, status: StatusCode, error: &str, description: &str) -> Response {
    let no_store = [("cache-control", "no-store")];
    match provider {
        "github" => {
            let body = json!({"error": error, "error_description": description});
            github_answer(headers, StatusCode::OK, body)
        }
        "slack" => (no_store, axum::Json(json!({"ok": false, "error": error}))).into_response(),
        "hubspot" => {
            let status_code = match error {
                "invalid_grant" => "BAD_REFRESH_TOKEN",
                "invalid_client" => "BAD_CLIENT_ID",
                _ => "BAD_AUTH_CODE",
            };
            (
                status,
                no_store,
                axum::Json(json!({"status": status_code, "message": description, "correlationId": "sandbox"})),
            )
                .into_response()
        }
        _ => (status, no_store, axum::Json(json!({"error": error, "error_description": description}))).into_response(),
    }
}

/// GitHub answers `application/x-www-form-urlencoded` unless the client accepts JSON.
fn github_answer(headers: &HeaderMap, status: StatusCode, body: Value) -> Response {
    let wants_json = headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if wants_json {
        return (status, axum::Json(body)).into_response();
    }
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in body.as_object().into_iter().flatten() {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        form.append_pair(name, &text);
    }
    (status, [("content-type", "application/x-www-form-urlencoded; charset=utf-8")], form.finish()).into_response()
}

async fn token(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
    provider: &'static str,
) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let fail = |status, error: &str, description: &str| failure(provider, &headers, status, error, description);
    let mut servers = state.oauth.lock().expect("sandbox lock");
    let quirks = servers.quirks(provider);
    if quirks.answer_html {
        return (StatusCode::BAD_GATEWAY, [("content-type", "text/html")], "<html><body>502 Bad Gateway</body></html>")
            .into_response();
    }
    if client(&headers, &form) != Some((OAUTH_CLIENT_ID.to_string(), OAUTH_CLIENT_SECRET.to_string())) {
        return fail(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed");
    }
    let mut user_scopes = None;
    let (scopes, issue_refresh, grant) = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(grant) = form.get("code").and_then(|code| servers.codes.remove(code)) else {
                let error = if provider == "github" { "bad_verification_code" } else { "invalid_grant" };
                return fail(StatusCode::BAD_REQUEST, error, "The code is unknown, used or expired");
            };
            // A code is redeemed only by the client it was issued to (RFC 6749 §4.1.3).
            let same_client = client(&headers, &form).is_some_and(|(id, _)| id == grant.client_id);
            if grant.provider != provider || !same_client || grant.issued.elapsed() > Duration::from_secs(600) {
                return fail(StatusCode::BAD_REQUEST, "invalid_grant", "The code is unknown, used or expired");
            }
            if form.get("redirect_uri") != Some(&grant.redirect_uri) {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "redirect_uri does not match the authorization request",
                );
            }
            if let Some(challenge) = &grant.challenge {
                let Some(verifier) = form.get("code_verifier") else {
                    return fail(StatusCode::BAD_REQUEST, "invalid_grant", "code_verifier is required");
                };
                let computed =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                if &computed != challenge {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "code_verifier does not match the challenge",
                    );
                }
            }
            user_scopes = grant.user_scopes;
            servers.counter += 1;
            (grant.scopes, quirks.refresh_tokens && grant.offline, servers.counter)
        }
        Some("refresh_token") => {
            let given = form.get("refresh_token").cloned().unwrap_or_default();
            let Some(stored) = servers.refresh.get_mut(&given).filter(|t| t.provider == provider && t.valid) else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The refresh token is invalid, expired or revoked",
                );
            };
            let (scopes, grant) = (stored.scopes.clone(), stored.grant);
            if quirks.rotate_refresh_tokens {
                stored.valid = false;
            }
            *servers.refreshes.entry(provider.to_string()).or_default() += 1;
            (scopes, quirks.rotate_refresh_tokens, grant)
        }
        _ => return fail(StatusCode::BAD_REQUEST, "unsupported_grant_type", "grant_type is not supported"),
    };

    let access_token = servers.next(match provider {
        "github" => "ghu_",
        "google-calendar" => "ya29.",
        "slack" => "xoxb-",
        _ => "at-",
    });
    let expires = quirks.expires_in.map(|secs| Instant::now() + Duration::from_secs(secs));
    servers.access.insert(access_token.clone(), AccessToken { provider, grant, expires, revoked: false });
    let user_token = user_scopes.as_ref().map(|_| {
        let token = servers.next("xoxp-");
        servers.access.insert(token.clone(), AccessToken { provider, grant, expires, revoked: false });
        token
    });
    let refresh_token = issue_refresh.then(|| {
        let token = servers.next("rt-");
        servers.refresh.insert(token.clone(), RefreshToken { provider, grant, scopes: scopes.clone(), valid: true });
        token
    });
    // HubSpot hands the same refresh token back on every refresh.
    let refresh_token = match (provider, form.get("grant_type").map(String::as_str)) {
        ("hubspot", Some("refresh_token")) => form.get("refresh_token").cloned(),
        _ => refresh_token,
    };
    drop(servers);

    let mut answer = json!({"access_token": access_token, "token_type": "bearer"});
    if let Some(secs) = quirks.expires_in {
        answer["expires_in"] = json!(secs);
    }
    if let Some(token) = refresh_token {
        answer["refresh_token"] = json!(token);
    }
    match provider {
        "github" => {
            answer["scope"] = json!(scopes.replace(' ', ","));
            if quirks.refresh_tokens {
                answer["refresh_token_expires_in"] = json!(15_897_600);
            }
        }
        "slack" => {
            answer["ok"] = json!(true);
            answer["token_type"] = json!("bot");
            answer["scope"] = json!(scopes);
            answer["bot_user_id"] = json!("U0BOT");
            answer["team"] = json!({"id": "T0SANDBOX", "name": "Sandbox"});
            answer["authed_user"] = json!({"id": "U0USER", "scope": "", "token_type": "user"});
            if let Some(user_scopes) = &user_scopes {
                answer["authed_user"]["scope"] = json!(user_scopes);
                answer["authed_user"]["access_token"] = json!(user_token);
            }
        }
        "google-calendar" => {
            answer["token_type"] = json!("Bearer");
            answer["scope"] = json!(scopes);
        }
        _ => {}
    }
    if quirks.omit_access_token {
        answer.as_object_mut().expect("an object").remove("access_token");
    }
    if provider == "github" {
        return github_answer(&headers, StatusCode::OK, answer);
    }
    ([("cache-control", "no-store"), ("pragma", "no-cache")], axum::Json(answer)).into_response()
}

/// RFC 7009 (Google: `token` in the form or query; Slack: the bearer token itself).
async fn revoke(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
    provider: &'static str,
) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let token = form.get("token").map(String::as_str).or(bearer).unwrap_or("").to_string();
    let mut servers = state.oauth.lock().expect("sandbox lock");
    let mut found = false;
    if let Some(access) = servers.access.get_mut(&token).filter(|t| t.provider == provider) {
        access.revoked = true;
        found = true;
    }
    if let Some(refresh) = servers.refresh.get_mut(&token).filter(|t| t.provider == provider) {
        // Revoking a refresh token ends its grant (RFC 7009 §2.1), and no other.
        refresh.valid = false;
        found = true;
        let grant = refresh.grant;
        for access in servers.access.values_mut().filter(|t| t.provider == provider && t.grant == grant) {
            access.revoked = true;
        }
    }
    if provider == "google-calendar" && found {
        // Google's revocation removes the app's access altogether.
        servers.revoke_all(provider);
    }
    match (provider, found) {
        ("slack", true) => axum::Json(json!({"ok": true, "revoked": true})).into_response(),
        ("slack", false) => axum::Json(json!({"ok": false, "error": "invalid_auth"})).into_response(),
        // RFC 7009 §2.2: an unknown token is not an error.
        _ => StatusCode::OK.into_response(),
    }
}
