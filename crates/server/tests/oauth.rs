//! OAuth2 connections over HTTP against the sandbox's authorization servers, on both store
//! backends: the connect flow driven like a browser (following redirects), single-use and
//! expiring states, provider and token-endpoint errors, and revocation at uninstall.

use crate::common;

use common::{TestServer, blamed_fields, expect_problem};
use serde_json::{Value, json};
use switchboard_core::Clock;
use switchboard_sandbox::{Quirks, credentials as creds};
use switchboard_store::Backend;

switchboard_store::conformance_tests!(
    a_browser_connects_google_calendar_and_the_connection_works,
    states_are_single_use_expire_and_cannot_be_forged,
    provider_and_token_endpoint_errors_are_shown_and_recorded_but_store_no_tokens,
    a_return_url_receives_the_outcome,
    starting_a_flow_checks_the_connection_and_the_input,
    uninstalling_revokes_the_grant_at_the_provider,
    tokens_are_refreshed_before_they_expire_after_a_401_and_ahead_of_time,
    twenty_concurrent_calls_with_an_expired_token_cause_one_refresh,
    a_revoked_grant_fails_auth_at_once_and_reconnecting_restores_it,
    refreshes_that_may_succeed_later_back_off,
    short_lived_tokens_are_refreshed_once_per_lifetime,
    reconnecting_revokes_the_grant_it_replaces,
    a_provider_without_expiry_or_pkce_connects_too,
    a_redirect_from_another_authorization_server_is_refused_before_its_code_is_used,
);

async fn a_redirect_from_another_authorization_server_is_refused_before_its_code_is_used(backend: Backend) {
    let server = TestServer::start(backend).await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // The callback URL Google's server sends the browser to, with its `iss` changed (or gone).
    let callback_with = |id: String, iss: Option<&'static str>| {
        let (server, no_redirects) = (&server, &no_redirects);
        async move {
            let started = server.start_connect(&id, json!({})).await;
            let redirect = no_redirects.get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
            let mut callback = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
            let sent = param(&query(callback.as_str()), "iss");
            assert_eq!(sent, Some(format!("{}/oauth/google-calendar", server.sandbox.url())), "Google names itself");
            let pairs: Vec<(String, String)> =
                query(callback.as_str()).into_iter().filter(|(k, _)| k != "iss").collect();
            callback.query_pairs_mut().clear().extend_pairs(&pairs);
            if let Some(iss) = iss {
                callback.query_pairs_mut().append_pair("iss", iss);
            }
            callback.to_string()
        }
    };
    for (iss, reason) in [(Some("https://attacker.example"), "mix-up"), (None, "no `iss`")] {
        let id = server.google().await;
        let callback = callback_with(id.clone(), iss).await;
        let issued = server.sandbox.unredeemed_codes("google-calendar");
        let page = browser().get(&callback).send().await.unwrap();
        assert_eq!(page.status(), 400);
        assert!(page.text().await.unwrap().contains(reason), "{callback}");
        let unredeemed = server.sandbox.unredeemed_codes("google-calendar");
        assert_eq!(unredeemed, issued, "the code was never sent to a token endpoint");
        let row = server.connection(&id).await;
        assert_eq!(row["oauth"]["connected"], false, "{row}");
        assert!(row["last_error"].as_str().unwrap().contains(reason), "{row}");
    }
}

/// A browser: follows redirects, keeps nothing between requests.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(5)).build().unwrap()
}

impl TestServer {
    /// An installed Google Calendar connection with the sandbox's OAuth app.
    async fn google(&self) -> String {
        let body = json!({
            "template_name": "google-calendar",
            "credentials": {"client_id": creds::OAUTH_CLIENT_ID, "client_secret": creds::OAUTH_CLIENT_SECRET},
        });
        let response = self.post(&self.admin_key, "/api/marketplace/install", &body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    async fn start_connect(&self, id: &str, body: Value) -> Value {
        let response = self.post(&self.admin_key, &format!("/api/integrations/{id}/oauth/start"), &body).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    async fn connection(&self, id: &str) -> Value {
        self.get(&self.admin_key, &format!("/api/marketplace/installed/{id}")).await.json().await.unwrap()
    }
}

fn query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

async fn a_browser_connects_google_calendar_and_the_connection_works(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.google().await;
    let before = server.connection(&id).await;
    assert_eq!(
        (before["oauth"]["connected"].as_bool(), before["auth_state"].as_str()),
        (Some(false), Some("configured"))
    );

    let started =
        server.start_connect(&id, json!({"scopes": ["https://www.googleapis.com/auth/calendar.readonly"]})).await;
    let url = started["authorization_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/oauth/google-calendar/o/oauth2/v2/auth?", server.sandbox.url())), "{url}");
    let pairs = query(url);
    assert_eq!(param(&pairs, "response_type").as_deref(), Some("code"));
    assert_eq!(param(&pairs, "client_id").as_deref(), Some(creds::OAUTH_CLIENT_ID));
    assert_eq!(param(&pairs, "redirect_uri"), Some(server.url("/oauth/callback")));
    assert_eq!(started["redirect_uri"], server.url("/oauth/callback"));
    assert_eq!(
        param(&pairs, "scope").as_deref(),
        Some("https://www.googleapis.com/auth/calendar https://www.googleapis.com/auth/calendar.readonly")
    );
    assert_eq!(param(&pairs, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param(&pairs, "code_challenge").map(|c| c.len()), Some(43));
    assert_eq!(
        (param(&pairs, "access_type").as_deref(), param(&pairs, "prompt").as_deref()),
        (Some("offline"), Some("consent"))
    );
    assert!(param(&pairs, "state").unwrap().len() >= 22);

    // The browser goes to the provider, which sends it back to our callback.
    let page = browser().get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.url().as_str().starts_with(&server.url("/oauth/callback?")));
    let text = page.text().await.unwrap();
    assert!(text.contains("Connected") && text.contains(&id), "{text}");

    let after = server.connection(&id).await;
    assert_eq!(after["auth_state"], "ok", "{after}");
    let oauth = &after["oauth"];
    assert_eq!((oauth["connected"].as_bool(), oauth["has_refresh_token"].as_bool()), (Some(true), Some(true)));
    let expected_expiry = server.clock.now() + chrono::Duration::seconds(3599);
    assert_eq!(
        oauth["expires_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
        expected_expiry
    );
    assert_eq!(oauth["scopes"].as_array().unwrap().len(), 2, "{oauth}");
    assert!(after["credentials_set"]["access_token"].is_string());
    assert!(!after.to_string().contains("ya29."), "no token in the answer: {after}");

    // The stored token works against the provider.
    let calendars =
        server.post(&server.admin_key, &format!("/api/integrations/{id}/actions/list_calendars"), &json!({})).await;
    assert_eq!(calendars.status(), 200, "{}", calendars.text().await.unwrap());
    let tested: Value =
        server.post(&server.admin_key, &format!("/api/integrations/{id}/test"), &json!({})).await.json().await.unwrap();
    assert_eq!(tested["ok"], true, "{tested}");
}

async fn states_are_single_use_expire_and_cannot_be_forged(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.google().await;
    let started = server.start_connect(&id, json!({})).await;
    // Stop at the provider's redirect to see the callback URL.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirect = no_redirects.get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
    let callback = redirect.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(browser().get(&callback).send().await.unwrap().status(), 200);
    let tokens_set = server.connection(&id).await["credentials_set"]["access_token"].clone();

    // A replayed callback changes nothing.
    let replay = browser().get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert_eq!(replay.headers()["content-type"], "text/html; charset=utf-8");
    assert!(replay.text().await.unwrap().contains("already used"));
    assert_eq!(server.connection(&id).await["credentials_set"]["access_token"], tokens_set);

    for (url, reason) in [
        (server.url("/oauth/callback?code=abc"), "no state"),
        (server.url("/oauth/callback?code=abc&state=forged-state-0000000000"), "not one this server issued"),
    ] {
        let page = browser().get(&url).send().await.unwrap();
        assert_eq!(page.status(), 400);
        assert!(page.text().await.unwrap().contains(reason), "{url}");
    }

    // A state older than 10 minutes is refused, and the code is never exchanged.
    let other = server.google().await;
    let started = server.start_connect(&other, json!({})).await;
    let redirect = no_redirects.get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
    let callback = redirect.headers()["location"].to_str().unwrap().to_string();
    server.clock.advance(chrono::Duration::minutes(10));
    let page = browser().get(&callback).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("expired"));
    let untouched = server.connection(&other).await;
    assert_eq!((untouched["oauth"]["connected"].as_bool(), untouched["last_error"].as_str()), (Some(false), None));
}

async fn provider_and_token_endpoint_errors_are_shown_and_recorded_but_store_no_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.google().await;
    let connect = || async {
        let started = server.start_connect(&id, json!({})).await;
        browser().get(started["authorization_url"].as_str().unwrap()).send().await.unwrap()
    };

    server.sandbox.deny_next_authorization("google-calendar");
    let page = connect().await;
    assert_eq!(page.status(), 400);
    let text = page.text().await.unwrap();
    assert!(text.contains("access_denied") && text.contains("The user denied access"), "{text}");
    let row = server.connection(&id).await;
    assert!(row["last_error"].as_str().unwrap().contains("access_denied"), "{row}");
    assert_eq!((row["oauth"]["connected"].as_bool(), row["auth_state"].as_str()), (Some(false), Some("configured")));

    let html = Quirks { answer_html: true, ..Quirks::default_for("google-calendar") };
    server.sandbox.set_oauth_quirks("google-calendar", html);
    let text = connect().await.text().await.unwrap();
    assert!(text.contains("not a token response") && text.contains("502 Bad Gateway"), "{text}");

    let no_token = Quirks { omit_access_token: true, ..Quirks::default_for("google-calendar") };
    server.sandbox.set_oauth_quirks("google-calendar", no_token);
    let text = connect().await.text().await.unwrap();
    assert!(text.contains("no access_token"), "{text}");
    server.sandbox.set_oauth_quirks("google-calendar", Quirks::default_for("google-calendar"));

    // A wrong client secret: the token endpoint refuses the client.
    let body = json!({"integration_id": id, "credentials": {"client_secret": "not-the-secret"}});
    assert_eq!(server.post(&server.admin_key, "/api/marketplace/configure", &body).await.status(), 200);
    let text = connect().await.text().await.unwrap();
    assert!(text.contains("invalid_client"), "{text}");
    let row = server.connection(&id).await;
    assert!(row["last_error"].as_str().unwrap().contains("invalid_client"), "{row}");
    assert_eq!(row["oauth"]["connected"], false, "no tokens were stored: {row}");
}

async fn a_return_url_receives_the_outcome(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.google().await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let follow_to_us = |started: Value| {
        let no_redirects = no_redirects.clone();
        async move {
            let to_provider = no_redirects.get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
            let callback = to_provider.headers()["location"].to_str().unwrap().to_string();
            let ours = no_redirects.get(&callback).send().await.unwrap();
            assert_eq!(ours.status(), 303);
            ours.headers()["location"].to_str().unwrap().to_string()
        }
    };
    let started =
        server.start_connect(&id, json!({"return_url": "https://app.example.com/settings?tab=integrations"})).await;
    let location = follow_to_us(started).await;
    let pairs = query(&location);
    assert!(location.starts_with("https://app.example.com/settings?"), "{location}");
    assert_eq!(param(&pairs, "tab").as_deref(), Some("integrations"));
    assert_eq!(param(&pairs, "connection_id"), Some(id.clone()));
    assert_eq!(param(&pairs, "status").as_deref(), Some("connected"));

    server.sandbox.deny_next_authorization("google-calendar");
    let started = server.start_connect(&id, json!({"return_url": "https://app.example.com/done"})).await;
    let pairs = query(&follow_to_us(started).await);
    assert_eq!(param(&pairs, "status").as_deref(), Some("error"));
    assert!(param(&pairs, "error").unwrap().contains("access_denied"));
}

async fn starting_a_flow_checks_the_connection_and_the_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    let id = server.google().await;
    for (body, field) in [
        (json!({"scopes": ["two words"]}), "scopes[0]"),
        (json!({"scopes": [""]}), "scopes[0]"),
        (json!({"return_url": "javascript:alert(1)"}), "return_url"),
        (json!({"user_scopes": ["users:read"]}), "user_scopes"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let problem =
            expect_problem(server.post(&key, &format!("/api/integrations/{id}/oauth/start"), &body).await, 422).await;
        assert_eq!(blamed_fields(&problem), [field], "{body}");
    }

    // Without the OAuth app's secret there is nothing to exchange a code with.
    let body = json!({"template_name": "google-calendar", "credentials": {"client_id": creds::OAUTH_CLIENT_ID}});
    let response = server.post(&key, "/api/marketplace/install", &body).await;
    expect_problem(response, 422).await;
    let bare: Value = server
        .post(&key, "/api/marketplace/install", &json!({"template_name": "google-calendar"}))
        .await
        .json()
        .await
        .unwrap();
    let problem = expect_problem(
        server.post(&key, &format!("/api/integrations/{}/oauth/start", bare["id"].as_str().unwrap()), &json!({})).await,
        409,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("credentials"), "{problem}");

    // A connection with a static token has no flow.
    let body = json!({"template_name": "github", "auth_mode": "bearer", "credentials": {"token": creds::GITHUB_TOKEN}});
    let github: Value = server.post(&key, "/api/marketplace/install", &body).await.json().await.unwrap();
    let problem = expect_problem(
        server
            .post(&key, &format!("/api/integrations/{}/oauth/start", github["id"].as_str().unwrap()), &json!({}))
            .await,
        409,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("not oauth2"), "{problem}");

    // Another tenant cannot start a flow on this connection.
    let (_, intruder) = server.new_tenant("intruder").await;
    expect_problem(server.post(&intruder, &format!("/api/integrations/{id}/oauth/start"), &json!({})).await, 404).await;
}

async fn uninstalling_revokes_the_grant_at_the_provider(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.google().await;
    let started = server.start_connect(&id, json!({})).await;
    assert_eq!(browser().get(started["authorization_url"].as_str().unwrap()).send().await.unwrap().status(), 200);
    assert_eq!(server.sandbox.revoked_tokens("google-calendar"), 0);
    let deleted =
        server.client.delete(server.url(&format!("/api/marketplace/installed/{id}"))).bearer_auth(&server.admin_key);
    assert_eq!(deleted.send().await.unwrap().status(), 204);
    assert_eq!(server.sandbox.revoked_tokens("google-calendar"), 1, "the refresh token's grant ended at the provider");
    expect_problem(server.get(&server.admin_key, &format!("/api/marketplace/installed/{id}")).await, 404).await;
}

async fn connect(server: &TestServer, id: &str) {
    let started = server.start_connect(id, json!({})).await;
    let page = browser().get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
}

async fn install_oauth(server: &TestServer, template: &str) -> String {
    let body = json!({
        "template_name": template,
        "auth_mode": "oauth2",
        "credentials": {"client_id": creds::OAUTH_CLIENT_ID, "client_secret": creds::OAUTH_CLIENT_SECRET},
    });
    let response = server.post(&server.admin_key, "/api/marketplace/install", &body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

async fn action(server: &TestServer, id: &str, name: &str) -> reqwest::Response {
    server.post(&server.admin_key, &format!("/api/integrations/{id}/actions/{name}"), &json!({})).await
}

/// A GET through the proxy that skips the response cache, so it always reaches the provider.
async fn uncached(server: &TestServer, id: &str, path: &str) -> reqwest::StatusCode {
    let url = server.url(&format!("/api/integrations/{id}/proxy{path}"));
    let request = server.client.get(url).bearer_auth(&server.admin_key).header("cache-control", "no-cache");
    request.send().await.unwrap().status()
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn tokens_are_refreshed_before_they_expire_after_a_401_and_ahead_of_time(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.google().await;
    connect(&server, &id).await;
    assert_eq!(server.sandbox.refreshes("google-calendar"), 0);

    // 50 s before expiry a call refreshes first (Google omits the refresh token: it is kept).
    server.clock.advance(chrono::Duration::seconds(3549));
    assert_eq!(action(&server, &id, "list_calendars").await.status(), 200);
    assert_eq!(server.sandbox.refreshes("google-calendar"), 1);
    let row = server.connection(&id).await;
    assert_eq!(time(&row["oauth"]["last_refresh_at"]), server.clock.now());
    assert_eq!(time(&row["oauth"]["expires_at"]), server.clock.now() + chrono::Duration::seconds(3599));
    assert_eq!(row["oauth"]["has_refresh_token"], true);

    // The provider refuses the token before its time: one refresh, one more try.
    server.sandbox.expire_access_tokens("google-calendar");
    assert_eq!(uncached(&server, &id, "/users/me/calendarList").await, 200);
    assert_eq!(server.sandbox.refreshes("google-calendar"), 2, "the kept refresh token still works");

    // The refresher renews tokens expiring within its margin, without any call.
    server.clock.advance(chrono::Duration::minutes(50));
    assert_eq!(server.connections.refresh_expiring(std::time::Duration::from_secs(5 * 60)).await.unwrap(), 0);
    assert_eq!(server.connections.refresh_expiring(std::time::Duration::from_secs(15 * 60)).await.unwrap(), 1);
    assert_eq!(server.sandbox.refreshes("google-calendar"), 3);
    assert_eq!(server.connections.refresh_expiring(std::time::Duration::from_secs(15 * 60)).await.unwrap(), 0);
}

async fn twenty_concurrent_calls_with_an_expired_token_cause_one_refresh(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = install_oauth(&server, "github").await;
    connect(&server, &id).await;
    server.clock.advance(chrono::Duration::hours(8));
    let calls: Vec<_> = (0..20).map(|_| action(&server, &id, "get_user")).collect();
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(server.sandbox.refreshes("github"), 1);

    // GitHub rotated the refresh token; the new one was stored and works next time.
    server.clock.advance(chrono::Duration::hours(8));
    assert_eq!(uncached(&server, &id, "/user").await, 200);
    assert_eq!(server.sandbox.refreshes("github"), 2);
}

async fn a_revoked_grant_fails_auth_at_once_and_reconnecting_restores_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = install_oauth(&server, "hubspot").await;
    connect(&server, &id).await;
    assert_eq!(action(&server, &id, "list_contacts").await.status(), 200);
    server.sandbox.revoke_all("hubspot");

    // `invalid_grant` is final: auth_failed at the first refusal, an operational event, and
    // calls that fail fast.
    let problem = expect_problem(action(&server, &id, "list_contacts").await, 409).await;
    assert_eq!(problem["type"], "urn:switchboard:problem:auth-failed");
    assert!(problem["detail"].as_str().unwrap().contains("invalid_grant"), "{problem}");
    let requests = server.sandbox.requests("hubspot");
    expect_problem(action(&server, &id, "list_contacts").await, 409).await;
    assert_eq!(server.sandbox.requests("hubspot"), requests, "nothing is sent for a failed connection");
    let row = server.connection(&id).await;
    assert_eq!((row["oauth"]["refresh_failures"].as_u64(), row["auth_state"].as_str()), (Some(1), Some("auth_failed")));
    assert_eq!(row["oauth"]["connected"], false, "a refused grant connects nothing: {row}");
    let mut events = Value::Null;
    for _ in 0..100 {
        events =
            server.get(&server.admin_key, "/api/events?event_type=connection.auth_failed").await.json().await.unwrap();
        if !events["data"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let event = &events["data"][0];
    assert_eq!(event["payload"]["connection_id"], id.as_str(), "{events}");
    assert_eq!(event["payload"]["provider"], "hubspot");
    assert!(event["payload"]["reason"].as_str().unwrap().contains("invalid_grant"));

    // Connecting again restores it.
    connect(&server, &id).await;
    assert_eq!(action(&server, &id, "list_contacts").await.status(), 200);
    let row = server.connection(&id).await;
    assert_eq!((row["oauth"]["refresh_failures"].as_u64(), row["auth_state"].as_str()), (Some(0), Some("ok")));
    assert_eq!(row["oauth"]["connected"], true);
}

async fn refreshes_that_may_succeed_later_back_off(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = install_oauth(&server, "hubspot").await;
    connect(&server, &id).await;
    // A token endpoint behind a broken proxy: not an answer about the grant.
    let broken = Quirks { answer_html: true, ..Quirks::default_for("hubspot") };
    server.sandbox.set_oauth_quirks("hubspot", broken);
    server.clock.advance(chrono::Duration::minutes(30));
    for wait in [30, 60] {
        let response = action(&server, &id, "list_contacts").await;
        let retry_after: i64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert_eq!(retry_after, wait);
        expect_problem(response, 503).await;
        // Within the backoff the token endpoint is left alone.
        expect_problem(action(&server, &id, "list_contacts").await, 503).await;
        server.clock.advance(chrono::Duration::seconds(wait));
    }
    let row = server.connection(&id).await;
    assert_eq!((row["oauth"]["refresh_failures"].as_u64(), row["auth_state"].as_str()), (Some(2), Some("ok")));
    server.sandbox.set_oauth_quirks("hubspot", Quirks::default_for("hubspot"));
    assert_eq!(action(&server, &id, "list_contacts").await.status(), 200);
    assert_eq!(server.connection(&id).await["oauth"]["refresh_failures"], 0);
}

async fn short_lived_tokens_are_refreshed_once_per_lifetime(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fifteen_seconds = Quirks { expires_in: Some(15), ..Quirks::default_for("github") };
    server.sandbox.set_oauth_quirks("github", fifteen_seconds);
    let id = install_oauth(&server, "github").await;
    connect(&server, &id).await;

    // A token that lives 15 s is not stale at birth: thirty calls at once refresh nothing.
    let calls: Vec<_> = (0..30).map(|_| uncached(&server, &id, "/user")).collect();
    assert!(futures::future::join_all(calls).await.iter().all(|status| *status == 200));
    assert_eq!(server.sandbox.refreshes("github"), 0);
    // A call a second for thirty seconds: one refresh per lifetime (at 14 s and 28 s).
    for _ in 0..30 {
        server.clock.advance(chrono::Duration::seconds(1));
        assert_eq!(uncached(&server, &id, "/user").await, 200);
    }
    assert_eq!(server.sandbox.refreshes("github"), 2);
    // Thirty calls at once after it expired: one refresh.
    server.clock.advance(chrono::Duration::seconds(20));
    let calls: Vec<_> = (0..30).map(|_| uncached(&server, &id, "/user")).collect();
    assert!(futures::future::join_all(calls).await.iter().all(|status| *status == 200));
    assert_eq!(server.sandbox.refreshes("github"), 3);

    // The refresher renews a five-minute token about once per lifetime, not at every pass.
    let five_minutes = Quirks { expires_in: Some(300), ..Quirks::default_for("github") };
    server.sandbox.set_oauth_quirks("github", five_minutes);
    connect(&server, &id).await;
    let before = server.sandbox.refreshes("github");
    for _ in 0..10 {
        server.clock.advance(chrono::Duration::seconds(60));
        server.connections.refresh_expiring(std::time::Duration::from_secs(15 * 60)).await.unwrap();
    }
    assert_eq!(server.sandbox.refreshes("github") - before, 2, "at 4 and 8 minutes, a quarter of a lifetime left");
}

async fn reconnecting_revokes_the_grant_it_replaces(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Slack revokes one token at a time: the replaced bot token is revoked, the new one works.
    let slack = install_oauth(&server, "slack").await;
    connect(&server, &slack).await;
    connect(&server, &slack).await;
    assert_eq!(server.sandbox.revoked_tokens("slack"), 1);
    assert_eq!(server.connection(&slack).await["oauth"]["connected"], true);
    // Google's revocation would end the new grant too: the manifest leaves the old one alone.
    let google = server.google().await;
    connect(&server, &google).await;
    connect(&server, &google).await;
    assert_eq!(server.sandbox.revoked_tokens("google-calendar"), 0);
    assert_eq!(uncached(&server, &google, "/users/me/calendarList").await, 200);
    assert_eq!(server.connection(&google).await["oauth"]["connected"], true);
}

async fn a_provider_without_expiry_or_pkce_connects_too(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = install_oauth(&server, "slack").await;
    let started = server.start_connect(&id, json!({"user_scopes": ["search:read", "users:read"]})).await;
    let pairs = query(started["authorization_url"].as_str().unwrap());
    assert_eq!(param(&pairs, "code_challenge"), None, "Slack's manifest turns PKCE off");
    assert_eq!(param(&pairs, "scope").as_deref(), Some("chat:write,channels:read,users:read"));
    assert_eq!(
        param(&pairs, "user_scope").as_deref(),
        Some("search:read,users:read"),
        "user scopes apart from the bot's"
    );
    assert_eq!(browser().get(started["authorization_url"].as_str().unwrap()).send().await.unwrap().status(), 200);
    let row = server.connection(&id).await;
    assert!(row["oauth"]["expires_at"].is_null(), "{row}");
    assert_eq!(row["config"]["bot_user_id"], "U0BOT", "a value of the token answer the form declares: {row}");
    assert!(row["credentials_set"]["user_access_token"].is_string(), "Slack's user token is kept too: {row}");
    assert!(!row.to_string().contains("xoxp-"), "{row}");
    assert_eq!(row["oauth"]["has_refresh_token"], false);
    server.clock.advance(chrono::Duration::days(30));
    let posted = server
        .post(
            &server.admin_key,
            &format!("/api/integrations/{id}/actions/post_message"),
            &json!({"input": {"channel": "C0001", "text": "hi"}}),
        )
        .await;
    assert_eq!(posted.status(), 200, "{}", posted.text().await.unwrap());
    assert_eq!(server.sandbox.refreshes("slack"), 0);
}
