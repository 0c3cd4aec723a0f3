//! The marketplace and connections over HTTP, against the sandbox's provider simulators, on
//! both store backends: browsing the catalog, installing and configuring, credentials never
//! shown, tests, actions, the proxy with its cache, health, circuits, and tenant isolation.

use crate::common;

use common::{TestServer, blamed_fields, expect_problem};
use serde_json::{Value, json};
use switchboard_sandbox::credentials as creds;
use switchboard_store::Backend;

switchboard_store::conformance_tests!(
    the_catalog_is_browsed_searched_sorted_and_paged,
    a_provider_shows_its_auth_form_and_actions,
    install_and_configure_check_every_field_and_never_show_credentials,
    connections_are_invisible_to_other_tenants,
    actions_validate_input_and_report_provider_failures,
    a_failing_provider_opens_its_circuit_visible_in_health_and_metrics,
    client_errors_and_a_tenants_own_base_url_trip_no_one_elses_circuit,
    the_proxy_injects_auth_caches_gets_and_respects_scopes,
);

impl TestServer {
    async fn install(&self, key: &str, body: Value) -> Value {
        let response = self.post(key, "/api/marketplace/install", &body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    async fn rest_connection(&self, key: &str) -> String {
        let body = json!({
            "template_name": "rest",
            "auth_mode": "bearer",
            "config_overrides": {"base_url": format!("{}/rest", self.sandbox.url()), "health_path": "/health"},
            "credentials": {"token": creds::REST_TOKEN},
        });
        self.install(key, body).await["id"].as_str().unwrap().to_string()
    }

    async fn names(&self, query: &str) -> Vec<String> {
        let response = self.get(&self.admin_key, &format!("/api/marketplace/integrations{query}")).await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        page["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
    }
}

async fn the_catalog_is_browsed_searched_sorted_and_paged(backend: Backend) {
    let server = TestServer::start(backend).await;
    let by_name = server.names("?sort=name").await;
    assert_eq!(by_name, ["github", "google-calendar", "hubspot", "jira", "rest", "slack", "stripe", "total-battle"]);

    // Popularity counts installs across tenants.
    let (_, other_key) = server.new_tenant("other").await;
    server.install(&other_key, json!({"template_name": "stripe"})).await;
    server.install(&server.admin_key.clone(), json!({"template_name": "stripe"})).await;
    server.install(&other_key, json!({"template_name": "jira", "config_overrides": {"subdomain": "acme"}})).await;
    let popular = server.names("").await;
    assert_eq!(&popular[..2], ["stripe", "jira"]);
    let listing: Value = server.get(&server.admin_key, "/api/marketplace/integrations").await.json().await.unwrap();
    assert_eq!(listing["data"][0]["installs"], 2);

    assert_eq!(server.names("?category=gaming").await, ["total-battle"]);
    assert_eq!(server.names("?search=calendar").await, ["google-calendar"]);
    assert_eq!(server.names("?search=issues%20jira").await, ["jira"]);
    assert!(server.names("?search=nothing-like-this").await.is_empty());

    // Pages of three cover the catalog exactly once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/marketplace/integrations?sort=name&limit=3&cursor={cursor}");
        let page: Value = server.get(&server.admin_key, &path).await.json().await.unwrap();
        seen.extend(page["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, by_name);

    for (query, field) in [
        ("?category=games", "category"),
        ("?sort=stars", "sort"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?cursor=abc", "cursor"),
        ("?colour=red", "colour"),
    ] {
        let response = server.get(&server.admin_key, &format!("/api/marketplace/integrations{query}")).await;
        let problem = expect_problem(response, 400).await;
        assert_eq!(blamed_fields(&problem), [field], "{query}");
    }
}

async fn a_provider_shows_its_auth_form_and_actions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let github: Value =
        server.get(&server.admin_key, "/api/marketplace/integrations/github").await.json().await.unwrap();
    let modes: Vec<&str> = github["auth"].as_array().unwrap().iter().map(|a| a["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["oauth2", "bearer"]);
    assert_eq!(github["auth"][0]["scopes"], json!(["repo", "read:user"]));
    assert_eq!(github["auth"][1]["credential_fields"][0]["name"], "token");
    assert_eq!(github["auth"][1]["credential_fields"][0]["required"], true);
    let create_issue =
        github["actions_detail"].as_array().unwrap().iter().find(|a| a["name"] == "create_issue").unwrap();
    assert_eq!(create_issue["method"], "POST");
    assert!(create_issue["input_schema"]["required"].as_array().unwrap().contains(&json!("title")));
    assert_eq!(github["pagination"]["link"], "link_header");
    assert_eq!(github["has_health_check"], true);
    assert_eq!(github["webhook_scheme"], "github");
    assert_eq!(github["webhook_credential_fields"][0]["name"], "webhook_secret");
    assert_eq!(github["source"], "connectors/github.yaml");

    let jira: Value = server.get(&server.admin_key, "/api/marketplace/integrations/jira").await.json().await.unwrap();
    let subdomain = &jira["connection_config"][0];
    assert_eq!((subdomain["name"].as_str(), subdomain["required"].as_bool()), (Some("subdomain"), Some(true)));
    assert!(subdomain["pattern"].is_string());
    let total_battle: Value =
        server.get(&server.admin_key, "/api/marketplace/integrations/total-battle").await.json().await.unwrap();
    assert!(total_battle["cache_ttl_seconds"].as_u64().unwrap() > 0);

    let problem = expect_problem(server.get(&server.admin_key, "/api/marketplace/integrations/githb").await, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("github"), "{problem}");
}

async fn install_and_configure_check_every_field_and_never_show_credentials(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();

    // Every problem of an install at once, each with its field; nothing is stored.
    let response = server
        .post(
            &key,
            "/api/marketplace/install",
            &json!({"template_name": "jira", "config_overrides": {"subdomain": "not a subdomain!", "colour": "red"},
                    "custom_name": "  ", "credentials": {"username": creds::JIRA_EMAIL}}),
        )
        .await;
    let problem = expect_problem(response, 422).await;
    let mut fields = blamed_fields(&problem);
    fields.sort();
    assert_eq!(
        fields,
        ["config_overrides.colour", "config_overrides.subdomain", "credentials.password", "custom_name"],
        "{problem}"
    );
    let installed: Value = server.get(&key, "/api/marketplace/installed").await.json().await.unwrap();
    assert!(installed["data"].as_array().unwrap().is_empty());

    let problem =
        expect_problem(server.post(&key, "/api/marketplace/install", &json!({"template_name": "strpe"})).await, 404)
            .await;
    assert!(problem["detail"].as_str().unwrap().contains("stripe"), "{problem}");
    let problem = expect_problem(
        server
            .post(&key, "/api/marketplace/install", &json!({"template_name": "slack", "credentials": {"token": "x"}}))
            .await,
        422,
    )
    .await;
    assert_eq!(blamed_fields(&problem), ["auth_mode"]);

    // Installed without credentials, then configured.
    let stripe = server.install(&key, json!({"template_name": "stripe", "custom_name": "Payments"})).await;
    let id = stripe["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("conn_"), "{stripe}");
    assert_eq!(
        (stripe["name"].as_str(), stripe["auth_state"].as_str()),
        (Some("Payments"), Some("missing_credentials"))
    );
    assert_eq!(stripe["credentials_missing"], json!(["token"]));
    let problem =
        expect_problem(server.post(&key, &format!("/api/integrations/{id}/test"), &json!({})).await, 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("credentials"), "{problem}");

    for (body, field) in [
        (json!({"integration_id": id, "credentials": {"token": ""}}), "credentials.token"),
        (json!({"integration_id": id, "credentials": {"token": 5}}), "credentials.token"),
        (json!({"integration_id": "ep_nope", "credentials": {"token": "x"}}), "integration_id"),
        (json!({"integration_id": id}), "credentials"),
    ] {
        let problem = expect_problem(server.post(&key, "/api/marketplace/configure", &body).await, 422).await;
        assert_eq!(blamed_fields(&problem), [field], "{body}");
    }
    let body = json!({"integration_id": id, "credentials": {"token": creds::STRIPE_SECRET_KEY}});
    let configured: Value = server.post(&key, "/api/marketplace/configure", &body).await.json().await.unwrap();
    assert_eq!(configured["auth_state"], "configured");
    assert!(configured["credentials_set"]["token"].is_string(), "{configured}");
    assert_eq!(configured["credentials_missing"], json!([]));

    let tested: Value =
        server.post(&key, &format!("/api/integrations/{id}/test"), &json!({})).await.json().await.unwrap();
    assert_eq!((tested["ok"].as_bool(), tested["status"].as_u64()), (Some(true), Some(200)), "{tested}");
    let shown: Value = server.get(&key, &format!("/api/marketplace/installed/{id}")).await.json().await.unwrap();
    assert_eq!((shown["auth_state"].as_str(), shown["last_test_ok"].as_bool()), (Some("ok"), Some(true)));

    // A wrong key is the provider's refusal, recorded, not an error of ours.
    let body = json!({"integration_id": id, "credentials": {"token": "sk_test_wrong"}});
    assert_eq!(server.post(&key, "/api/marketplace/configure", &body).await.status(), 200);
    let tested: Value =
        server.post(&key, &format!("/api/integrations/{id}/test"), &json!({})).await.json().await.unwrap();
    assert_eq!((tested["ok"].as_bool(), tested["status"].as_u64()), (Some(false), Some(401)), "{tested}");
    let shown: Value = server.get(&key, &format!("/api/marketplace/installed/{id}")).await.json().await.unwrap();
    assert_eq!(shown["auth_state"], "rejected");

    // No answer anywhere carries a credential.
    let mut answers = Vec::new();
    for path in [
        format!("/api/marketplace/installed/{id}"),
        "/api/marketplace/installed".to_string(),
        format!("/api/integrations/{id}/health"),
        "/api/integrations/health".to_string(),
    ] {
        answers.push(server.get(&key, &path).await.text().await.unwrap());
    }
    for answer in answers {
        assert!(!answer.contains(creds::STRIPE_SECRET_KEY) && !answer.contains("sk_test_wrong"), "{answer}");
    }

    // Uninstalling deletes the sealed credentials with the connection.
    let keys: Value = server.get(&key, "/api/api-keys").await.json().await.unwrap();
    let tenant = keys["data"][0]["tenant_id"].as_str().unwrap().to_string();
    let row = server.store.get_connection(&tenant, &id).await.unwrap().unwrap();
    let secret_id = row.credentials_secret_id.unwrap();
    assert!(server.store.get_secret(&tenant, secret_id.as_str()).await.unwrap().is_some());
    let uninstall = server.client.delete(server.url(&format!("/api/marketplace/installed/{id}"))).bearer_auth(&key);
    assert_eq!(uninstall.send().await.unwrap().status(), 204);
    expect_problem(server.get(&key, &format!("/api/marketplace/installed/{id}")).await, 404).await;
    assert!(server.store.get_secret(&tenant, secret_id.as_str()).await.unwrap().is_none());
}

async fn connections_are_invisible_to_other_tenants(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = server.rest_connection(&server.admin_key.clone()).await;
    let (_, intruder) = server.new_tenant("intruder").await;
    for (method, path) in [
        ("GET", format!("/api/marketplace/installed/{id}")),
        ("DELETE", format!("/api/marketplace/installed/{id}")),
        ("POST", format!("/api/integrations/{id}/test")),
        ("POST", format!("/api/integrations/{id}/actions/list")),
        ("GET", format!("/api/integrations/{id}/proxy/echo")),
        ("GET", format!("/api/integrations/{id}/health")),
    ] {
        let request = server.client.request(method.parse().unwrap(), server.url(&path)).bearer_auth(&intruder);
        let response = request.header("content-type", "application/json").body("{}").send().await.unwrap();
        let problem = expect_problem(response, 404).await;
        assert_eq!(problem["detail"], "No such connection", "{method} {path}");
    }
    let body = json!({"integration_id": id, "credentials": {"token": "stolen"}});
    expect_problem(server.post(&intruder, "/api/marketplace/configure", &body).await, 404).await;
    let theirs: Value = server.get(&intruder, "/api/marketplace/installed").await.json().await.unwrap();
    assert!(theirs["data"].as_array().unwrap().is_empty());
    assert_eq!(server.sandbox.requests("rest"), 0, "nothing reached the provider");
    let mine: Value =
        server.get(&server.admin_key, &format!("/api/marketplace/installed/{id}")).await.json().await.unwrap();
    assert_eq!(mine["credentials_set"].as_object().unwrap().len(), 1);
}

async fn actions_validate_input_and_report_provider_failures(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    let body = json!({"template_name": "github", "auth_mode": "bearer", "credentials": {"token": creds::GITHUB_TOKEN}});
    let github = server.install(&key, body).await["id"].as_str().unwrap().to_string();
    let action = |name: &str| format!("/api/integrations/{github}/actions/{name}");

    let repos: Value = server.post(&key, &action("list_repos"), &json!({})).await.json().await.unwrap();
    assert_eq!(repos["data"].as_array().unwrap().len(), 45, "{repos}");

    let input = json!({"input": {"owner": "acme", "repo": "api", "title": "Broken build", "body": "CI is red"}});
    let created: Value = server.post(&key, &action("create_issue"), &input).await.json().await.unwrap();
    assert_eq!(created["data"]["title"], "Broken build", "{created}");

    let problem = expect_problem(
        server
            .post(&key, &action("create_issue"), &json!({"input": {"owner": "acme", "repo": "api", "title": 7}}))
            .await,
        422,
    )
    .await;
    assert_eq!(blamed_fields(&problem), ["input.title"]);
    let problem = expect_problem(server.post(&key, &action("list_repos"), &json!({"max_pages": 0})).await, 422).await;
    assert_eq!(blamed_fields(&problem), ["max_pages"]);
    let problem = expect_problem(server.post(&key, &action("delete_everything"), &json!({})).await, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("create_issue"), "{problem}");
    // Without a body an action runs with no input.
    let bare = server.client.post(server.url(&action("get_user"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(bare.status(), 200);

    // On a connection without credentials yet, the caller's own mistakes come first.
    let bare_install = json!({"template_name": "github", "auth_mode": "bearer"});
    let unset = server.install(&key, bare_install).await["id"].as_str().unwrap().to_string();
    let unset_action = |name: &str| format!("/api/integrations/{unset}/actions/{name}");
    expect_problem(server.post(&key, &unset_action("delete_everything"), &json!({})).await, 404).await;
    let problem =
        expect_problem(server.post(&key, &unset_action("create_issue"), &json!({"input": {}})).await, 422).await;
    assert!(blamed_fields(&problem).iter().any(|f| f.starts_with("input")), "{problem}");
    expect_problem(server.post(&key, &unset_action("get_user"), &json!({})).await, 409).await;

    // A read key may run GET actions only.
    let reader = server.key_with_scope("read").await;
    assert_eq!(server.post(&reader, &action("get_user"), &json!({})).await.status(), 200);
    expect_problem(server.post(&reader, &action("create_issue"), &input).await, 403).await;

    // The provider failing is a 502 with its status and an excerpt, never a 500 of ours.
    server.sandbox.fail_next("github", 1, 500);
    let problem = expect_problem(server.post(&key, &action("create_issue"), &input).await, 502).await;
    assert_eq!(problem["upstream"]["status"], 500, "{problem}");
    assert!(problem["upstream"]["body_excerpt"].is_string());

    // Paginated actions stop at max_pages and say whether there is more.
    let rest = server.rest_connection(&key).await;
    let list = format!("/api/integrations/{rest}/actions/list");
    let body = json!({"input": {"resource": "items"}, "max_pages": 2});
    let items: Value = server.post(&key, &list, &body).await.json().await.unwrap();
    assert_eq!((items["pages"].as_u64(), items["has_more"].as_bool()), (Some(2), Some(true)), "{items}");
    assert_eq!(items["data"].as_array().unwrap().len(), 50);
    let body = json!({"input": {"resource": "items"}});
    let items: Value = server.post(&key, &list, &body).await.json().await.unwrap();
    assert_eq!((items["pages"].as_u64(), items["has_more"].as_bool()), (Some(3), Some(false)), "{items}");
    let ids: std::collections::BTreeSet<u64> =
        items["data"].as_array().unwrap().iter().map(|i| i["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 57, "every item once");

    // Garbage from the provider is typed too.
    let response = server.get(&key, &format!("/api/integrations/{rest}/proxy/garbage")).await;
    assert_eq!(response.status(), 200, "the proxy passes the provider's answer back as is");
    let problem = expect_problem(
        server
            .post(&key, &format!("/api/integrations/{rest}/actions/list"), &json!({"input": {"resource": "garbage"}}))
            .await,
        502,
    )
    .await;
    assert!(problem["upstream"]["body_excerpt"].as_str().unwrap().len() <= 1024, "{problem}");
}

async fn a_failing_provider_opens_its_circuit_visible_in_health_and_metrics(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    let body =
        json!({"template_name": "slack", "auth_mode": "bearer", "credentials": {"token": creds::SLACK_BOT_TOKEN}});
    let slack = server.install(&key, body.clone()).await["id"].as_str().unwrap().to_string();
    let post = format!("/api/integrations/{slack}/actions/post_message");
    let message = json!({"input": {"channel": "C0001", "text": "hi"}});
    assert_eq!(server.post(&key, &post, &message).await.status(), 200);

    let health: Value = server.get(&key, &format!("/api/integrations/{slack}/health")).await.json().await.unwrap();
    assert_eq!((health["calls"].as_u64(), health["errors"].as_u64()), (Some(1), Some(0)), "{health}");
    assert!(health["p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(health["circuit"]["state"], "closed");

    // Posting is not idempotent, so each failure is one call: five open the circuit.
    server.sandbox.fail_next("slack", 5, 503);
    for _ in 0..5 {
        expect_problem(server.post(&key, &post, &message).await, 502).await;
    }
    let before = server.sandbox.requests("slack");
    let response = server.post(&key, &post, &message).await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let problem = expect_problem(response, 503).await;
    assert_eq!(problem["type"], "urn:switchboard:problem:circuit-open");
    assert_eq!(server.sandbox.requests("slack"), before, "an open circuit sends nothing");

    let health: Value = server.get(&key, &format!("/api/integrations/{slack}/health")).await.json().await.unwrap();
    assert_eq!(health["circuit"]["state"], "open", "{health}");
    assert_eq!(health["errors"], 6);
    assert!(health["last_error"].as_str().unwrap().contains("circuit"), "{health}");
    assert_eq!(health["circuit"]["target"], format!("{}/slack/api", server.sandbox.url()), "{health}");
    let summary: Value = server.get(&key, "/api/integrations/health").await.json().await.unwrap();
    assert_eq!(summary["data"][0]["id"], slack.as_str());
    assert_eq!(summary["data"][0]["circuit"]["state"], "open");

    // The circuit is this tenant's, for Slack's API alone: GitHub on the same sandbox host,
    // and another tenant's Slack, go on working.
    let github =
        json!({"template_name": "github", "auth_mode": "bearer", "credentials": {"token": creds::GITHUB_TOKEN}});
    let github = server.install(&key, github).await["id"].as_str().unwrap().to_string();
    assert_eq!(server.post(&key, &format!("/api/integrations/{github}/test"), &json!({})).await.status(), 200);
    let (_, other) = server.new_tenant("other").await;
    let theirs = server.install(&other, body).await["id"].as_str().unwrap().to_string();
    assert_eq!(
        server.post(&other, &format!("/api/integrations/{theirs}/actions/post_message"), &message).await.status(),
        200
    );

    // `/metrics` counts circuits by state, naming no tenant and no API.
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"switchboard_circuits{state="open"} 1"#), "{metrics}");
    assert!(!metrics.contains("ten_") && !metrics.contains("/slack"), "{metrics}");
}

async fn client_errors_and_a_tenants_own_base_url_trip_no_one_elses_circuit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    let rest = server.rest_connection(&key).await;
    let proxy = |path: &str| format!("/api/integrations/{rest}/proxy{path}");
    // Client errors say nothing about the API's health: any number of them opens nothing.
    for status in [401, 403, 404, 422, 401, 403, 404, 422] {
        let response = server.get(&key, &proxy(&format!("/status/{status}"))).await;
        assert_eq!(response.status().as_u16(), status);
    }
    let health: Value = server.get(&key, &format!("/api/integrations/{rest}/health")).await.json().await.unwrap();
    assert_eq!(health["circuit"]["state"], "closed", "{health}");
    // Server errors at the tenant's own base URL open its circuit, and only its own.
    for _ in 0..8 {
        server.get(&key, &proxy("/status/500")).await;
    }
    expect_problem(server.get(&key, &proxy("/status/200")).await, 503).await;
    let slack =
        json!({"template_name": "slack", "auth_mode": "bearer", "credentials": {"token": creds::SLACK_BOT_TOKEN}});
    let slack = server.install(&key, slack).await["id"].as_str().unwrap().to_string();
    let message = json!({"input": {"channel": "C0001", "text": "hi"}});
    let sent = server.post(&key, &format!("/api/integrations/{slack}/actions/post_message"), &message).await;
    assert_eq!(sent.status(), 200, "another API on the same host is not affected");
    let (_, other) = server.new_tenant("other").await;
    let theirs = server.rest_connection(&other).await;
    let response = server.get(&other, &format!("/api/integrations/{theirs}/proxy/status/200")).await;
    assert_eq!(response.status(), 200, "another tenant's connection to the same URL is not affected");
}

async fn the_proxy_injects_auth_caches_gets_and_respects_scopes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.admin_key.clone();
    let rest = server.rest_connection(&key).await;
    let proxy = |path: &str| server.url(&format!("/api/integrations/{rest}/proxy{path}"));

    let response = server
        .client
        .post(proxy("/echo/a/b%20c?x=1&y=two"))
        .bearer_auth(&key)
        .header("x-custom", "kept")
        .header("content-type", "text/plain")
        .body("raw body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchboard-cache"], "none");
    assert_eq!(response.headers()["x-switchboard-attempts"], "1");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/a/b%20c", "the caller's escapes are kept");
    assert_eq!(echo["query"], "x=1&y=two");
    assert_eq!(echo["body"], "raw body");
    assert_eq!(echo["headers"]["authorization"], format!("Bearer {}", creds::REST_TOKEN));
    assert_eq!(echo["headers"]["x-custom"], "kept");
    assert!(!echo.to_string().contains(&key), "our API key never reaches the provider");

    // The body limit holds for proxied bodies too.
    let response =
        server.client.post(proxy("/echo")).bearer_auth(&key).body(vec![b'x'; 1_100_000]).send().await.unwrap();
    expect_problem(response, 413).await;

    // The provider's own statuses come back unchanged.
    let response = server.client.get(proxy("/status/418")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 418);
    let teapot: Value = response.json().await.unwrap();
    assert_eq!(teapot["status"], 418, "the provider's own body, not a problem of ours: {teapot}");
    assert!(teapot.get("type").is_none(), "{teapot}");
    // Escaping the base URL is refused before anything is sent, however it is spelled.
    let before = server.sandbox.requests("rest");
    // (The client's URL parser already resolves `%2e%2e`, so that one never reaches the proxy.)
    let response = server.client.get(proxy("/%2e%2e/total-battle/players")).bearer_auth(&key).send().await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    for path in [
        "/echo/..%2f..%2ftotal-battle/players",
        "/echo/..%2F..%2Ftotal-battle/players",
        "/echo/..%5c..%5ctotal-battle",
        "/echo/..%252f..%252ftotal-battle",
        "/echo/%252e%252e/total-battle",
    ] {
        let response = server.client.get(proxy(path)).bearer_auth(&key).send().await.unwrap();
        let problem = expect_problem(response, 422).await;
        assert_eq!(common::blamed_fields(&problem), ["path"], "{path}: {problem}");
    }
    assert_eq!(server.sandbox.requests("rest"), before);

    // A provider's Link header points back through the proxy, so `next` can be followed.
    let github =
        json!({"template_name": "github", "auth_mode": "bearer", "credentials": {"token": creds::GITHUB_TOKEN}});
    let github = server.install(&key, github).await["id"].as_str().unwrap().to_string();
    let through = server.url(&format!("/api/integrations/{github}/proxy"));
    let first = server.client.get(format!("{through}/user/repos?per_page=1")).bearer_auth(&key).send().await.unwrap();
    let link = first.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains(&format!("<{through}/user/repos?per_page=1&page=2>; rel=\"next\"")), "{link}");
    assert!(!link.contains(&server.sandbox.url()), "{link}");
    let next = link.split(',').find(|l| l.contains("rel=\"next\"")).unwrap();
    let next = next.trim().trim_start_matches('<').split('>').next().unwrap();
    let second = server.client.get(next).bearer_auth(&key).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(second.headers()["link"].to_str().unwrap().contains("rel=\"prev\""));

    // Total Battle's reads are cached for the manifest's TTL, unless the caller says no-cache.
    let body = json!({
        "template_name": "total-battle",
        "config_overrides": {"base_url": format!("{}/total-battle", server.sandbox.url())},
        "credentials": {"api_key": creds::TOTAL_BATTLE_API_KEY},
    });
    let game = server.install(&key, body).await["id"].as_str().unwrap().to_string();
    let players = server.url(&format!("/api/integrations/{game}/proxy/players?page=1"));
    let mut caches = Vec::new();
    for no_cache in [false, false, true] {
        let mut request = server.client.get(&players).bearer_auth(&key);
        if no_cache {
            request = request.header("cache-control", "no-cache");
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        caches.push(response.headers()["x-switchboard-cache"].to_str().unwrap().to_string());
    }
    assert_eq!(caches, ["miss", "hit", "bypass"]);
    assert_eq!(server.sandbox.requests("total-battle"), 2);

    // Reading through the proxy needs read scope; writing needs write scope.
    let reader = server.key_with_scope("read").await;
    assert_eq!(server.client.get(proxy("/echo")).bearer_auth(&reader).send().await.unwrap().status(), 200);
    let response = server.client.post(proxy("/echo")).bearer_auth(&reader).body("x").send().await.unwrap();
    expect_problem(response, 403).await;
    let response = server.client.get(proxy("/echo")).send().await.unwrap();
    expect_problem(response, 401).await;
}
