//! The `switchboard` binary as an operator uses it: real processes, real files, signals.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use common::{BIN, Serve, client, command};

#[tokio::test]
async fn first_start_creates_data_dir_key_file_database_and_one_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(command(&data));
    let key = server.admin_key();
    assert!(key.starts_with("sk_") && key.len() >= 3 + 22, "{key}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the master key file is private");
    }
    // WAL mode leaves its side files next to the database.
    assert!(data.join("switchboard.db").exists() && data.join("switchboard.db-wal").exists());

    let response = client().get(server.url("/api/api-keys")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.terminate(), 0);

    let again = Serve::start(command(&data));
    assert!(again.admin_line.is_none(), "later starts print no key");
    let response = client().get(again.url("/api/api-keys")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200, "the first key still works");
    assert_eq!(again.terminate(), 0);
}

#[tokio::test]
async fn an_admin_key_from_the_environment_is_used_and_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let chosen = "sk_automation0000000000000000000001";
    let mut cmd = command(dir.path());
    cmd.env("SWITCHBOARD_ADMIN_KEY", chosen);
    let server = Serve::start(cmd);
    let line = server.admin_line.clone().unwrap();
    assert!(!line.contains(chosen), "{line}");
    let response = client().get(server.url("/api/events")).bearer_auth(chosen).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.terminate(), 0);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_every_acknowledged_event_survives() {
    let (acknowledged, stored) = stop_during_a_burst(nix::sys::signal::Signal::SIGTERM, Some(0)).await;
    assert_eq!(stored, acknowledged, "every event answered 201 is stored, and nothing else");
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_event() {
    let (acknowledged, stored) = stop_during_a_burst(nix::sys::signal::Signal::SIGKILL, None).await;
    // A request cut off after its commit but before its answer may be stored unacknowledged
    // (at-least-once); an acknowledged one is never missing.
    assert!(stored >= acknowledged, "{acknowledged} acknowledged, only {stored} stored");
    assert!(stored <= acknowledged + 64, "at most one batch of requests was in flight");
}

/// SIGTERM starts a drain: `/readyz` fails at once, every request that still arrives (on
/// kept-alive connections too) is answered, with `Connection: close`, and only then does the
/// listener stop. Nothing is dropped, and nothing is logged as an error.
#[tokio::test]
async fn sigterm_drains_before_stopping_and_drops_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let mut cmd = command(&dir.path().join("data"));
    cmd.env("SWITCHBOARD_DRAIN_SECS", "2").args(["serve", "--allow-private-targets"]);
    let server = Serve::start_logging_to(cmd, std::fs::File::create(&log_path).unwrap());
    let key = server.admin_key();
    let http = client();
    let created = http.post(server.url("/api/event-types")).bearer_auth(&key).json(&json!({"name": "drain.test"}));
    assert_eq!(created.send().await.unwrap().status(), 201);
    // Deliveries go on meanwhile, to a receiver that takes its time.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr().unwrap());
    let slow = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            "ok"
        }),
    );
    tokio::spawn(async move { axum::serve(receiver, slow).await });
    let endpoint = json!({"url": hook, "event_types": ["drain.test"]});
    let created = http.post(server.url("/api/integrations/webhooks")).bearer_auth(&key).json(&endpoint);
    assert_eq!(created.send().await.unwrap().status(), 201);

    // Senders on kept-alive connections, going on until told to stop.
    let (stop, signalled) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (answered, closing) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, key) = (http.clone(), server.url("/api/events"), key.clone());
            let (stop, signalled, answered, closing) =
                (stop.clone(), signalled.clone(), answered.clone(), closing.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let body = json!({"event_type": "drain.test", "payload": {}});
                    match http.post(&url).bearer_auth(&key).json(&body).send().await {
                        Ok(response) => {
                            assert_eq!(response.status(), 201);
                            answered.fetch_add(1, Ordering::SeqCst);
                            if signalled.load(Ordering::SeqCst)
                                && response.headers().get("connection").is_some_and(|v| v == "close")
                            {
                                closing.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(error) => failures.push(error.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    while answered.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    signalled.store(true, Ordering::SeqCst);
    let at_signal = answered.load(Ordering::SeqCst);
    // Within the drain: still serving, no longer ready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for sender in senders {
        failures.extend(sender.await.unwrap());
    }
    assert!(failures.is_empty(), "requests without an answer during the drain: {failures:?}");
    assert!(answered.load(Ordering::SeqCst) > at_signal + 16, "requests went on being served during the drain");
    assert!(closing.load(Ordering::SeqCst) > 0, "answers during the drain close their connections");
    let code = tokio::task::spawn_blocking(move || server.signal_exit()).await.unwrap();
    assert_eq!(code, Some(0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("ERROR"), "an orderly stop logs no error:\n{log}");
}

const BURST: usize = 2000;

/// Starts a burst of event posts, stops the server with `signal` part way, restarts it and
/// returns (events answered 201, events stored).
async fn stop_during_a_burst(signal: nix::sys::signal::Signal, expected_code: Option<i32>) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(command(dir.path()));
    let key = server.admin_key();
    let http = client();
    let response = http
        .post(server.url("/api/event-types"))
        .bearer_auth(&key)
        .json(&json!({"name": "load.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let limiter = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sends: Vec<_> = (0..BURST)
        .map(|i| {
            let request = http
                .post(server.url("/api/events"))
                .bearer_auth(&key)
                .json(&json!({"event_type": "load.test", "payload": {"i": i}}));
            let (limiter, answered) = (limiter.clone(), answered.clone());
            tokio::spawn(async move {
                let _permit = limiter.acquire_owned().await.unwrap();
                let status = request.send().await.map(|r| r.status().as_u16());
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                status
            })
        })
        .collect();
    // Stop once part of the burst is answered, however slow the machine: a fixed delay
    // stopped a loaded CI machine before the first answer.
    while answered.load(std::sync::atomic::Ordering::SeqCst) < BURST / 10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let code = tokio::task::spawn_blocking(move || server.signal(signal)).await.unwrap();
    assert_eq!(code, expected_code, "exit code after {signal}");
    let mut acknowledged = 0;
    for send in sends {
        if let Ok(201) = send.await.unwrap() {
            acknowledged += 1;
        }
    }
    assert!(0 < acknowledged && acknowledged < BURST, "the stop came during the burst: {acknowledged} acknowledged");

    let restarted = Serve::start(command(dir.path()));
    let mut stored = 0;
    let mut path = "/api/events?limit=100".to_string();
    loop {
        let page: Value = http.get(restarted.url(&path)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        stored += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/events?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(restarted.terminate(), 0);
    (acknowledged, stored)
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "SWITCHBOARD_LISTEN"),
        ("--data-dir", "SWITCHBOARD_DATA_DIR"),
        ("--database-url", "SWITCHBOARD_DATABASE_URL"),
        ("--config", "SWITCHBOARD_CONFIG"),
        ("--log-format", "SWITCHBOARD_LOG_FORMAT"),
        ("--max-body-bytes", "SWITCHBOARD_MAX_BODY_BYTES"),
        ("--request-timeout-secs", "SWITCHBOARD_REQUEST_TIMEOUT_SECS"),
        ("--rate-limit-per-key", "SWITCHBOARD_RATE_LIMIT_PER_KEY"),
        ("--shutdown-timeout-secs", "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS"),
        ("--db-max-connections", "SWITCHBOARD_DB_MAX_CONNECTIONS"),
        ("--connectors-dir", "SWITCHBOARD_CONNECTORS_DIRS"),
        ("--provider-url", "SWITCHBOARD_PROVIDER_URLS"),
        ("--public-url", "SWITCHBOARD_PUBLIC_URL"),
    ] {
        assert!(help.contains(flag) && help.contains(env), "{flag} / {env} missing from:\n{help}");
    }
    let top = String::from_utf8(Command::new(BIN).arg("--help").output().unwrap().stdout).unwrap();
    for command in ["serve", "migrate", "keys", "catalog", "connections", "sandbox"] {
        assert!(top.contains(command), "{command} missing from:\n{top}");
    }
}

/// `switchboard … | head`: the reader goes away, and the client ends quietly, without a panic.
#[tokio::test]
async fn a_client_whose_reader_goes_away_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(command(dir.path()));
    let key = server.admin_key();
    for args in [["catalog", "list", ""], ["catalog", "list", "--json"]] {
        let mut child = Command::new(BIN)
            .args(args.iter().filter(|a| !a.is_empty()))
            .args(["--url", &server.base, "--api-key", &key])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before anything is read: every write the client makes meets a broken pipe.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
    assert_eq!(server.terminate(), 0);
}

#[test]
fn migrate_creates_the_schema_and_bad_urls_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path()).arg("migrate").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("switchboard.db").exists());

    let output = command(dir.path()).args(["--database-url", "mysql://x:secretpw@h/db", "migrate"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected sqlite:// or postgres://"), "{stderr}");
    assert!(!stderr.contains("secretpw"), "the password is redacted: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, "max_body_bytes = 100\nrate_limit_per_key = 0\n").unwrap();
    let mut cmd = command(dir.path());
    cmd.arg("--config").arg(&config);
    let server = Serve::start(cmd);
    let key = server.admin_key();
    let big = json!({"name": "x".repeat(200)});
    let response = client().post(server.url("/api/event-types")).bearer_auth(&key).json(&big).send().await.unwrap();
    assert_eq!(response.status(), 413, "the file's body limit applies");
    assert_eq!(server.terminate(), 0);

    let mut cmd = command(dir.path());
    cmd.arg("--config").arg(&config).env("SWITCHBOARD_MAX_BODY_BYTES", "100000");
    let server = Serve::start(cmd);
    let response = client()
        .post(server.url("/api/event-types"))
        .bearer_auth(&key)
        .json(&json!({"name": "a.b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the environment overrides the file");
    assert_eq!(server.terminate(), 0);

    std::fs::write(&config, "listn = \"127.0.0.1:1\"\n").unwrap();
    let output = command(dir.path()).arg("--config").arg(&config).arg("migrate").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("listn"), "a typo in the file is named");
}

#[tokio::test]
async fn keys_rotate_re_encrypts_stored_secrets_with_a_new_primary_key() {
    use switchboard_core::{Clock, KeyRing, SecretBox, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path()).arg("migrate").output().unwrap();
    assert!(output.status.success());
    // First start writes the key file and the operator tenant.
    let server = Serve::start(command(dir.path()));
    assert_eq!(server.terminate(), 0);

    let key_file = dir.path().join("master.key");
    let old = SecretBox::new(KeyRing::load(&key_file).unwrap());
    let url = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let store = switchboard_store::open(&switchboard_store::OpenOptions::new(url.clone())).await.unwrap();
    let tenant = store.list_tenants(&Default::default()).await.unwrap().remove(0).id;
    let secret = switchboard_store::secrets::seal(&old, &tenant, b"s3cret", SystemClock.now());
    store.put_secret(&secret).await.unwrap();
    store.close().await;

    let output = command(dir.path()).args(["keys", "rotate"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("re-encrypted 1 secrets"));

    let ring = KeyRing::load(&key_file).unwrap();
    assert_eq!(ring.key_ids().count(), 2, "the old key is kept for decryption");
    let new = SecretBox::new(ring);
    let store = switchboard_store::open(&switchboard_store::OpenOptions::new(url)).await.unwrap();
    let stored = store.get_secret(tenant.as_str(), secret.id.as_str()).await.unwrap().unwrap();
    assert_eq!(stored.key_id, new.ring().primary_id());
    assert_eq!(&switchboard_store::secrets::open(&new, &stored).unwrap()[..], b"s3cret");
    store.close().await;
}

/// Two `serve` processes on one PostgreSQL database: one creates the admin key, both serve
/// the same data.
#[tokio::test]
#[cfg_attr(not(switchboard_postgres), ignore = "set SWITCHBOARD_TEST_DATABASE_URL to run the PostgreSQL tests")]
async fn two_serve_processes_share_one_postgresql() {
    let (_db, url) = common::postgres_url().await;
    let dir = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        let mut cmd = command(&dir.path().join(name));
        cmd.env("SWITCHBOARD_DATABASE_URL", &url).env("SWITCHBOARD_MASTER_KEY", common::SHARED_MASTER_KEY);
        Serve::start(cmd)
    };
    let (first, second) = (spawn("one"), spawn("two"));
    let printed: Vec<_> = [&first, &second].iter().filter_map(|s| s.admin_line.clone()).collect();
    assert_eq!(printed.len(), 1, "exactly one process creates the admin key");
    let key = printed[0]["Admin API key: ".len()..].to_string();
    let http = client();
    let response =
        http.post(first.url("/api/event-types")).bearer_auth(&key).json(&json!({"name": "x.y"})).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let event: Value = http
        .post(first.url("/api/events"))
        .bearer_auth(&key)
        .json(&json!({"event_type": "x.y", "payload": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = http
        .get(second.url(&format!("/api/events/{}", event["id"].as_str().unwrap())))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200);
    assert_eq!(first.terminate(), 0);
    assert_eq!(second.terminate(), 0);
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut parsed = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let serving = value["fields"]["message"] == "switchboard is serving";
        parsed.push(value);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        parsed.iter().any(|v| v["level"] == "INFO" && v["fields"]["message"] == "switchboard is serving"),
        "{parsed:?}"
    );
}
