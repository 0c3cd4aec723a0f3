//! Connections through real processes: `switchboard sandbox` prints how to reach its
//! simulators, `switchboard serve` takes those flags, and the `catalog` and `connections`
//! commands browse, install, configure, test, list and uninstall through the API.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Output, Stdio};

use common::{Serve, command};
use switchboard_sandbox::credentials as creds;

/// A running `switchboard sandbox` and what it printed.
struct SandboxProcess {
    child: Child,
    url: String,
    url_flags: Vec<String>,
    /// The install commands it prints, as CLI arguments.
    installs: Vec<Vec<String>>,
}

impl SandboxProcess {
    fn start() -> Self {
        let mut child = command(std::path::Path::new("unused"))
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
        let mut url = String::new();
        let mut url_flags = Vec::new();
        let mut installs = Vec::new();
        for line in lines.by_ref() {
            if let Some(address) = line.strip_prefix("Sandbox listening on ") {
                url = address.to_string();
            } else if let Some(flag) = line.trim().strip_prefix("--provider-url '") {
                url_flags.push(flag.trim_end_matches(" \\").trim_end_matches('\'').to_string());
            } else if let Some(install) = line.trim().strip_prefix("switchboard connections install ") {
                let args = ["connections", "install"].into_iter().chain(install.split_whitespace());
                installs.push(args.map(str::to_string).collect());
            } else if line.starts_with("Ctrl-C") {
                break;
            }
        }
        assert!(url.starts_with("http://127.0.0.1:"), "the sandbox printed its address");
        // Keep reading, so the sandbox never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url, url_flags, installs }
    }

    /// `serve` pointed at the simulators with the flags the sandbox printed.
    fn serve(&self, data_dir: &std::path::Path) -> Serve {
        let mut cmd = command(data_dir);
        cmd.args(["serve", "--allow-target-networks", "127.0.0.1/32"]);
        for flag in &self.url_flags {
            cmd.args(["--provider-url", flag]);
        }
        Serve::start_with_args(cmd)
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(server: &Serve, key: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = command(std::path::Path::new("unused"))
        .env("SWITCHBOARD_URL", &server.base)
        .env("SWITCHBOARD_API_KEY", key)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout_of(output: Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn connection_id(text: &str) -> String {
    text.split_whitespace().find(|w| w.starts_with("conn_")).expect("a connection id").to_string()
}

/// Every install command the sandbox prints works as printed, and its connection passes its
/// test against the simulator.
#[tokio::test]
async fn the_sandbox_prints_install_commands_that_work() {
    let sandbox = SandboxProcess::start();
    assert_eq!(sandbox.installs.len(), 8, "{:?}", sandbox.installs);
    let dir = tempfile::tempdir().unwrap();
    let server = sandbox.serve(dir.path());
    let key = server.admin_key();
    for install in &sandbox.installs {
        let args: Vec<&str> = install.iter().map(String::as_str).collect();
        let installed = stdout_of(cli(&server, &key, &args, ""));
        let tested = stdout_of(cli(&server, &key, &["connections", "test", &connection_id(&installed)], ""));
        assert!(tested.starts_with("ok: the provider answered 200"), "{args:?}: {tested}");
    }
    assert_eq!(server.terminate(), 0);
}

#[tokio::test]
async fn the_cli_installs_configures_and_tests_connections_against_the_sandbox() {
    let sandbox = SandboxProcess::start();
    assert!(sandbox.url_flags.len() > 6, "{:?}", sandbox.url_flags);
    let dir = tempfile::tempdir().unwrap();
    let server = sandbox.serve(dir.path());
    let key = server.admin_key();

    let catalog = stdout_of(cli(&server, &key, &["catalog", "list", "--sort", "name"], ""));
    let names: Vec<&str> = catalog.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["github", "google-calendar", "hubspot", "jira", "rest", "slack", "stripe", "total-battle"]);
    let gaming = stdout_of(cli(&server, &key, &["catalog", "list", "--category", "gaming"], ""));
    assert_eq!(gaming.lines().count(), 2, "{gaming}");
    assert!(gaming.contains("total-battle"));
    let jira = stdout_of(cli(&server, &key, &["catalog", "show", "jira"], ""));
    for expected in ["Jira Cloud", "subdomain", "required", "basic", "search_issues", "create_issue"] {
        assert!(jira.contains(expected), "{expected} missing from:\n{jira}");
    }
    let unknown = cli(&server, &key, &["catalog", "show", "jria"], "");
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("404") && stderr.contains("jira"), "{stderr}");

    // A secret can come from standard input rather than the command line.
    let installed = stdout_of(cli(
        &server,
        &key,
        &["connections", "install", "github", "--auth-mode", "bearer", "--name", "Our org", "--credential", "token=-"],
        &format!("{}\n", creds::GITHUB_TOKEN),
    ));
    let github = connection_id(&installed);
    assert!(installed.contains("Our org") && installed.contains("configured"), "{installed}");
    let tested = stdout_of(cli(&server, &key, &["connections", "test", &github], ""));
    assert!(tested.starts_with("ok: the provider answered 200"), "{tested}");

    // Jira's subdomain goes through the install form into the base URL.
    let installed = stdout_of(cli(&server, &key, &["connections", "install", "jira", "--set", "subdomain=acme"], ""));
    let jira = connection_id(&installed);
    assert!(installed.contains("credentials still needed: username,password"), "{installed}");
    let failed = cli(&server, &key, &["connections", "test", &jira], "");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("409"));
    let configured = stdout_of(cli(
        &server,
        &key,
        &[
            "connections",
            "configure",
            &jira,
            "--credential",
            &format!("username={}", creds::JIRA_EMAIL),
            "--credential",
            &format!("password={}", creds::JIRA_API_TOKEN),
        ],
        "",
    ));
    assert!(!configured.contains("still needed"), "{configured}");
    stdout_of(cli(&server, &key, &["connections", "test", &jira], ""));

    // The generic REST connector takes any base URL.
    let base_url = format!("base_url={}/rest", sandbox.url);
    let token = format!("token={}", creds::REST_TOKEN);
    let rest = connection_id(&stdout_of(cli(
        &server,
        &key,
        &[
            "connections",
            "install",
            "rest",
            "--set",
            &base_url,
            "--set",
            "health_path=/health",
            "--auth-mode",
            "bearer",
            "--credential",
            &token,
        ],
        "",
    )));
    stdout_of(cli(&server, &key, &["connections", "test", &rest], ""));

    // Wrong credentials: the provider's refusal, and a failing exit code.
    stdout_of(cli(&server, &key, &["connections", "configure", &github, "--credential", "token=ghp_wrong"], ""));
    let refused = cli(&server, &key, &["connections", "test", &github], "");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(said.starts_with("failed") && said.contains("401"), "{said}");

    // An OAuth2 connection: `connect` prints the URL a browser follows to the callback.
    let oauth_app = [
        "--credential".to_string(),
        format!("client_id={}", creds::OAUTH_CLIENT_ID),
        "--credential".to_string(),
        format!("client_secret={}", creds::OAUTH_CLIENT_SECRET),
    ];
    let mut args = vec!["connections", "install", "hubspot", "--auth-mode", "oauth2"];
    args.extend(oauth_app.iter().map(String::as_str));
    let hubspot = connection_id(&stdout_of(cli(&server, &key, &args, "")));
    let printed = stdout_of(cli(&server, &key, &["connections", "connect", &hubspot, "--scope", "crm.lists.read"], ""));
    let url = printed.lines().find(|l| l.starts_with("http")).expect("an authorization URL").to_string();
    assert!(url.contains("crm.lists.read") && url.contains("code_challenge="), "{url}");
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
    stdout_of(cli(&server, &key, &["connections", "test", &hubspot], ""));

    let listed = stdout_of(cli(&server, &key, &["connections", "list"], ""));
    assert!(listed.contains(&github) && listed.contains(&jira) && listed.contains("rejected"), "{listed}");
    assert!(!listed.contains("ghp_wrong") && !listed.contains(creds::JIRA_API_TOKEN));
    let json = stdout_of(cli(&server, &key, &["connections", "list", "--json"], ""));
    assert!(!json.contains("ghp_wrong") && !json.contains(creds::JIRA_API_TOKEN), "{json}");

    stdout_of(cli(&server, &key, &["connections", "rm", &github], ""));
    assert!(!stdout_of(cli(&server, &key, &["connections", "list"], "")).contains(&github));

    // Bad install input comes back per field.
    let refused = cli(&server, &key, &["connections", "install", "jira", "--set", "subdomain=no way"], "");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("422") && stderr.contains("config_overrides.subdomain"), "{stderr}");
    assert_eq!(server.terminate(), 0);
    drop(sandbox);
}

#[test]
fn serve_refuses_a_base_url_override_for_an_unknown_provider() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--provider-url", "githib=http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("githib"), "{stderr}");
}

#[test]
fn serve_refuses_a_broken_manifest_naming_the_file_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let connectors = dir.path().join("connectors");
    std::fs::create_dir(&connectors).unwrap();
    std::fs::write(
        connectors.join("broken.yaml"),
        "name: broken\ndisplay_name: Broken\ndescription: x\ncategories: [custom]\nauth: {mode: none}\nbase_url: https://example.com\nactions:\n  - {name: a, method: GET, path: /x, pagination: nope}\n",
    )
    .unwrap();
    let output = command(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--connectors-dir"])
        .arg(&connectors)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.yaml") && stderr.contains("actions[0].pagination"), "{stderr}");
}

#[tokio::test]
async fn an_operator_folder_adds_providers_to_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let connectors = dir.path().join("connectors");
    std::fs::create_dir(&connectors).unwrap();
    std::fs::write(
        connectors.join("internal-crm.yaml"),
        "name: internal-crm\ndisplay_name: Internal CRM\ndescription: Our own customer database\ncategories: [crm]\n\
         auth: {mode: bearer}\nbase_url: https://crm.internal.example\n\
         actions:\n  - {name: list_accounts, method: GET, path: /accounts}\n",
    )
    .unwrap();
    let mut cmd = command(dir.path());
    cmd.arg("serve").arg("--connectors-dir").arg(&connectors);
    let server = Serve::start_with_args(cmd);
    let key = server.admin_key();
    let crm = stdout_of(cli(&server, &key, &["catalog", "list", "--category", "crm"], ""));
    assert!(crm.contains("internal-crm") && crm.contains("hubspot"), "{crm}");
    let shown = stdout_of(cli(&server, &key, &["catalog", "show", "internal-crm"], ""));
    assert!(shown.contains("Internal CRM") && shown.contains("list_accounts"), "{shown}");
    assert_eq!(server.terminate(), 0);
}

/// Two `serve` processes on one PostgreSQL, both calling through a connection whose token
/// the provider stopped accepting: exactly one refresh happens, and both use its token.
#[tokio::test]
#[cfg_attr(not(switchboard_postgres), ignore = "set SWITCHBOARD_TEST_DATABASE_URL to run the PostgreSQL tests")]
async fn two_serve_processes_on_one_postgresql_refresh_a_token_once() {
    let (_db, database_url) = common::postgres_url().await;
    let sandbox = switchboard_sandbox::Sandbox::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        let mut cmd = command(&dir.path().join(name));
        cmd.env("SWITCHBOARD_DATABASE_URL", &database_url)
            .env("SWITCHBOARD_MASTER_KEY", common::SHARED_MASTER_KEY)
            .args(["serve", "--allow-target-networks", "127.0.0.1/32"]);
        for (key, url) in sandbox.url_overrides() {
            cmd.arg("--provider-url").arg(format!("{key}={url}"));
        }
        Serve::start_with_args(cmd)
    };
    let (one, two) = (spawn("one"), spawn("two"));
    let key = [&one, &two].iter().find_map(|s| s.admin_line.clone()).unwrap()["Admin API key: ".len()..].to_string();
    let http = common::client();
    let install = serde_json::json!({
        "template_name": "github",
        "auth_mode": "oauth2",
        "credentials": {"client_id": creds::OAUTH_CLIENT_ID, "client_secret": creds::OAUTH_CLIENT_SECRET},
    });
    let installed: serde_json::Value = http
        .post(one.url("/api/marketplace/install"))
        .bearer_auth(&key)
        .json(&install)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = installed["id"].as_str().unwrap().to_string();
    let started: serde_json::Value = http
        .post(one.url(&format!("/api/integrations/{id}/oauth/start")))
        .bearer_auth(&key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connected = http.get(started["authorization_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(connected.status(), 200, "{}", connected.text().await.unwrap());

    sandbox.expire_access_tokens("github");
    let mut calls = Vec::new();
    for n in 0..20 {
        let base = if n % 2 == 0 { one.base.clone() } else { two.base.clone() };
        let (http, key, id) = (http.clone(), key.clone(), id.clone());
        calls.push(tokio::spawn(async move {
            let url = format!("{base}/api/integrations/{id}/proxy/user");
            http.get(url).bearer_auth(&key).header("cache-control", "no-cache").send().await.unwrap().status()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(sandbox.refreshes("github"), 1, "one refresh across both processes");
    assert_eq!(one.terminate(), 0);
    assert_eq!(two.terminate(), 0);
}
