//! Faithful local simulators of providers' HTTP APIs, built from their public documentation:
//! their auth, error shapes, pagination and rate-limit answers. Every provider lives under
//! its own prefix on one port (`/slack/api/…`, `/github/…`), so a test or `switchboard
//! sandbox` points a connection at `{sandbox}/{provider}` and calls it like the real thing.
//!
//! A [`Sandbox`] is also the test's view into the simulators: how many requests each got,
//! failures to inject (a provider answering 503, or refusing connections), and quotas.

// Checks return the provider's refusal itself as the error; a simulator does not mind its size.
#![allow(clippy::result_large_err)]

mod gate;
mod github;
mod google_calendar;
mod hubspot;
mod jira;
mod oauth;
mod rest;
mod slack;
mod stripe;
mod total_battle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;

pub use gate::Quota;
pub use oauth::{OAUTH_PROVIDERS, Quirks};

/// Credentials the simulators accept.
pub mod credentials {
    pub const SLACK_BOT_TOKEN: &str = "xoxb-sandbox-token";
    pub const GITHUB_TOKEN: &str = "ghp_sandboxtoken";
    pub const STRIPE_SECRET_KEY: &str = "sk_test_sandbox";
    pub const HUBSPOT_TOKEN: &str = "pat-sandbox";
    pub const JIRA_EMAIL: &str = "dev@example.com";
    pub const JIRA_API_TOKEN: &str = "jira-sandbox-token";
    pub const GOOGLE_ACCESS_TOKEN: &str = "ya29.sandbox";
    pub const REST_TOKEN: &str = "rest-token";
    pub const REST_USERNAME: &str = "rest-user";
    pub const REST_PASSWORD: &str = "rest-pass";
    pub const REST_API_KEY: &str = "rest-key";
    pub const REST_CLIENT_ID: &str = "rest-client";
    pub const REST_CLIENT_SECRET: &str = "rest-secret";
    pub const TOTAL_BATTLE_API_KEY: &str = "tb-sandbox-key";
    /// The OAuth client every simulated authorization server knows.
    pub const OAUTH_CLIENT_ID: &str = "sandbox-client-id";
    pub const OAUTH_CLIENT_SECRET: &str = "sandbox-client-secret";
}

/// The simulated providers, by the name of their manifest.
pub const PROVIDERS: [&str; 8] =
    ["slack", "github", "stripe", "hubspot", "jira", "google-calendar", "rest", "total-battle"];

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The sandbox's own base URL (for absolute links such as GitHub's `Link` header).
    pub base_url: Mutex<String>,
    pub counts: Mutex<HashMap<String, u64>>,
    /// Answer the next n requests of a provider with this status.
    pub failures: Mutex<HashMap<String, (u32, u16)>>,
    pub quotas: Mutex<HashMap<String, gate::Window>>,
    /// Data the simulators keep (created customers, issues, messages).
    pub data: Mutex<HashMap<String, Vec<serde_json::Value>>>,
    /// Access tokens issued by client-credentials grants.
    pub issued_tokens: Mutex<Vec<String>>,
    /// Artificial latency per request.
    pub delay: Mutex<Option<Duration>>,
    /// The providers' authorization servers.
    pub oauth: Mutex<oauth::OAuthServers>,
}

impl State {
    pub(crate) fn base(&self, provider: &str) -> String {
        format!("{}/{provider}", self.base_url.lock().expect("sandbox lock"))
    }

    pub(crate) fn push(&self, kind: &str, value: serde_json::Value) {
        self.data.lock().expect("sandbox lock").entry(kind.to_string()).or_default().push(value);
    }

    pub(crate) fn stored(&self, kind: &str) -> Vec<serde_json::Value> {
        self.data.lock().expect("sandbox lock").get(kind).cloned().unwrap_or_default()
    }
}

/// A running sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    state: Arc<State>,
    address: SocketAddr,
}

impl Sandbox {
    /// Starts every simulator on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().expect("a constant address")).await
    }

    pub async fn bind(address: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State::default());
        *state.base_url.lock().expect("sandbox lock") = format!("http://{address}");
        for provider in PROVIDERS {
            state
                .quotas
                .lock()
                .expect("sandbox lock")
                .insert(provider.to_string(), gate::Window::new(default_quota(provider)));
        }
        let app = router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, address })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Requests a provider's simulator has received.
    pub fn requests(&self, provider: &str) -> u64 {
        self.state.counts.lock().expect("sandbox lock").get(provider).copied().unwrap_or(0)
    }

    /// The next `count` requests to `provider` are answered with `status` (after counting).
    pub fn fail_next(&self, provider: &str, count: u32, status: u16) {
        self.state.failures.lock().expect("sandbox lock").insert(provider.to_string(), (count, status));
    }

    /// Replaces a provider's quota (`None`: unlimited).
    pub fn set_quota(&self, provider: &str, quota: Option<Quota>) {
        self.state.quotas.lock().expect("sandbox lock").insert(provider.to_string(), gate::Window::new(quota));
    }

    /// Adds latency to every answer.
    pub fn set_delay(&self, delay: Option<Duration>) {
        *self.state.delay.lock().expect("sandbox lock") = delay;
    }

    /// What a simulator has stored of a kind (`slack.messages`, `stripe.customers`, …).
    pub fn stored(&self, kind: &str) -> Vec<serde_json::Value> {
        self.state.stored(kind)
    }

    /// Where connections reach this sandbox instead of the real providers, as
    /// `--provider-url` takes it: `NAME=URL` for a provider's API base URL (a template over
    /// its config), `NAME.authorization_url=URL` (and `token_url`, `revocation_url`) for its
    /// authorization server.
    pub fn url_overrides(&self) -> Vec<(String, String)> {
        let url = self.url();
        let mut overrides: Vec<(String, String)> = vec![
            ("slack".into(), format!("{url}/slack/api")),
            ("github".into(), format!("{url}/github")),
            ("stripe".into(), format!("{url}/stripe/v1")),
            ("hubspot".into(), format!("{url}/hubspot")),
            ("jira".into(), format!("{url}/jira/{{{{ config.subdomain }}}}/rest/api/{{{{ api_version }}}}")),
            ("google-calendar".into(), format!("{url}/google-calendar/calendar/v3")),
        ];
        for provider in OAUTH_PROVIDERS {
            let (authorize, token, revoke) = oauth::urls(&url, provider).expect("every OAuth provider has URLs");
            overrides.push((format!("{provider}.authorization_url"), authorize));
            overrides.push((format!("{provider}.token_url"), token));
            if let Some(revoke) = revoke {
                overrides.push((format!("{provider}.revocation_url"), revoke));
            }
            if let Some(issuer) = oauth::issuer(&url, provider) {
                overrides.push((format!("{provider}.issuer"), issuer));
            }
        }
        overrides
    }

    /// Changes how a provider's token endpoint answers.
    pub fn set_oauth_quirks(&self, provider: &str, quirks: Quirks) {
        self.state.oauth.lock().expect("sandbox lock").set_quirks(provider, quirks);
    }

    /// Authorization codes the provider issued that no token request has redeemed.
    pub fn unredeemed_codes(&self, provider: &str) -> usize {
        self.state.oauth.lock().expect("sandbox lock").unredeemed_codes(provider)
    }

    /// The next authorization request to the provider is denied (`error=access_denied`).
    pub fn deny_next_authorization(&self, provider: &str) {
        self.state.oauth.lock().expect("sandbox lock").deny_next(provider);
    }

    /// Refresh-token grants the provider's token endpoint has answered successfully.
    pub fn refreshes(&self, provider: &str) -> u64 {
        self.state.oauth.lock().expect("sandbox lock").refreshes(provider)
    }

    /// Every access token issued for the provider expires now.
    pub fn expire_access_tokens(&self, provider: &str) {
        self.state.oauth.lock().expect("sandbox lock").expire_access_tokens(provider);
    }

    /// The user revokes the app: every token of the provider stops working.
    pub fn revoke_all(&self, provider: &str) {
        self.state.oauth.lock().expect("sandbox lock").revoke_all(provider);
    }

    /// Access tokens of the provider that were revoked (through its revocation endpoint or
    /// `revoke_all`).
    pub fn revoked_tokens(&self, provider: &str) -> usize {
        self.state.oauth.lock().expect("sandbox lock").revoked_tokens(provider)
    }
}

/// Quotas like the providers' documented ones, scaled so that tests can exceed them.
fn default_quota(provider: &str) -> Option<Quota> {
    let quota = |requests, seconds| Some(Quota { requests, window: Duration::from_secs(seconds) });
    match provider {
        "slack" => quota(100, 60),
        "github" => quota(5000, 3600),
        "stripe" => quota(100, 1),
        "hubspot" => quota(100, 10),
        "jira" => quota(100, 60),
        "google-calendar" => quota(600, 60),
        "total-battle" => quota(600, 60),
        _ => None,
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .nest("/slack", gate::wrap(slack::router(), "slack", state.clone()))
        .nest("/github", gate::wrap(github::router(), "github", state.clone()))
        .nest("/stripe", gate::wrap(stripe::router(), "stripe", state.clone()))
        .nest("/hubspot", gate::wrap(hubspot::router(), "hubspot", state.clone()))
        .nest("/jira", gate::wrap(jira::router(), "jira", state.clone()))
        .nest("/google-calendar", gate::wrap(google_calendar::router(), "google-calendar", state.clone()))
        .nest("/rest", gate::wrap(rest::router(state.clone()), "rest", state.clone()))
        .nest("/total-battle", gate::wrap(total_battle::router(), "total-battle", state.clone()))
        .nest("/oauth", oauth::router())
        .with_state(state)
}
