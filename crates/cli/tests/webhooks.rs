//! Outgoing webhooks through real `switchboard` processes: the CLI's API commands, a kill -9
//! in the middle of a storm of events, and two processes sharing one PostgreSQL.

use crate::common;

use std::collections::{HashMap, VecDeque};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{BIN, Serve, client, command};
use serde_json::{Value, json};

/// A webhook receiver on loopback: counts each `webhook-id` it is sent and answers with the
/// queued statuses (200 once they run out).
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<HashMap<String, usize>>>,
    requests: Arc<AtomicUsize>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let receiver = Receiver::default();
        let state = receiver.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap| {
                let state = state.clone();
                async move {
                    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    *state.seen.lock().unwrap().entry(id).or_default() += 1;
                    state.requests.fetch_add(1, Ordering::SeqCst);
                    let status = state.answers.lock().unwrap().pop_front().unwrap_or(200);
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn distinct(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until every one of `ids` has arrived, or panics after `limit`.
    async fn wait_for_all(&self, ids: &[String], limit: Duration) {
        let started = Instant::now();
        loop {
            let missing = {
                let seen = self.seen.lock().unwrap();
                ids.iter().filter(|id| !seen.contains_key(*id)).count()
            };
            if missing == 0 {
                return;
            }
            assert!(started.elapsed() < limit, "{missing} of {} events never reached the receiver", ids.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `switchboard <args>` as an API client of `server`.
fn cli(server: &Serve, key: &str, args: &[&str]) -> Output {
    let mut cmd = command(std::path::Path::new("unused"));
    cmd.env("SWITCHBOARD_URL", &server.base).env("SWITCHBOARD_API_KEY", key).args(args);
    cmd.output().unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn register_event_type(server: &Serve, key: &str, name: &str) {
    let response = client()
        .post(server.url("/api/event-types"))
        .bearer_auth(key)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn create_endpoint(server: &Serve, key: &str, url: &str) -> String {
    let response = client()
        .post(server.url("/api/integrations/webhooks"))
        .bearer_auth(key)
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_cli_adds_endpoints_sends_events_and_resends_failed_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--allow-private-targets", "--retry-schedule", "1s"]);
    let server = Serve::start_with_args(cmd);
    let key = server.admin_key();
    let (receiver, url) = Receiver::start().await;
    register_event_type(&server, &key, "order.paid").await;

    let added = stdout_of(&cli(
        &server,
        &key,
        &["endpoints", "add", &url, "--event-type", "order.*", "--header", "X-Team=core"],
    ));
    assert!(added.contains("Signing secret (shown once): whsec_"), "{added}");
    let endpoint_id = added.split_whitespace().find(|w| w.starts_with("ep_")).unwrap().to_string();
    let listed = stdout_of(&cli(&server, &key, &["endpoints", "list"]));
    assert!(listed.contains(&endpoint_id) && listed.contains(&url) && listed.contains("order.*"), "{listed}");
    // `--json` prints the API's JSON as it was sent.
    let as_json = stdout_of(&cli(&server, &key, &["endpoints", "list", "--json"]));
    let page = client()
        .get(server.url("/api/integrations/webhooks?limit=100"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(as_json.trim_end(), page);

    // Two failures (the attempt and its one retry) leave the message failed.
    receiver.answers.lock().unwrap().extend([500, 500]);
    let event_id = stdout_of(&cli(&server, &key, &["events", "send", "order.paid", "--data", r#"{"n": 1}"#]));
    let event_id = event_id.trim();
    assert!(event_id.starts_with("evt_"), "{event_id}");
    let message = wait_for_message(&server, &key, event_id, "failed").await;
    assert_eq!(receiver.requests(), 2);

    let table =
        stdout_of(&cli(&server, &key, &["deliveries", "list", "--endpoint", &endpoint_id, "--status", "failed"]));
    let message_id = message["id"].as_str().unwrap();
    assert!(table.contains(message_id) && table.contains("failed") && table.contains("500"), "{table}");
    let resent = stdout_of(&cli(&server, &key, &["deliveries", "resend", message_id]));
    assert!(resent.contains(&format!("Queued {message_id}")), "{resent}");
    wait_for_message(&server, &key, event_id, "succeeded").await;
    assert_eq!(receiver.requests(), 3);

    let removed = stdout_of(&cli(&server, &key, &["endpoints", "rm", &endpoint_id]));
    assert!(removed.contains(&endpoint_id));
    assert!(!stdout_of(&cli(&server, &key, &["endpoints", "list"])).contains(&endpoint_id));

    // The server's refusals come through with the field named, and the exit code says so.
    let refused = cli(&server, &key, &["endpoints", "add", "ftp://example.com/hook"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("422") && stderr.contains("url:"), "{stderr}");
    let unauthenticated = cli(&server, "sk_wrong", &["endpoints", "list"]);
    assert!(String::from_utf8_lossy(&unauthenticated.stderr).contains("401"));
    assert_eq!(server.terminate(), 0);
}

/// Polls until the message of `event_id` has `status`, through the CLI's JSON output.
async fn wait_for_message(server: &Serve, key: &str, event_id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let listed: Value =
            serde_json::from_str(&stdout_of(&cli(server, key, &["deliveries", "list", "--event", event_id, "--json"])))
                .unwrap();
        if let Some(message) = listed["data"].as_array().and_then(|m| m.first())
            && message["status"] == status
        {
            return message.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the message of {event_id} never became {status}");
}

const STORM: usize = 10_000;

/// Posts the events numbered `pending` (the number is also the idempotency key) with 64 in
/// flight, counting answers in `answered`; returns (number, event id) of those accepted.
async fn post_events(
    base: &str,
    key: &str,
    pending: &[usize],
    answered: Option<Arc<AtomicUsize>>,
) -> Vec<(usize, String)> {
    let http = client();
    let limiter = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = pending
        .iter()
        .map(|&i| {
            let request = http
                .post(format!("{base}/api/events"))
                .bearer_auth(key)
                .header("Idempotency-Key", format!("storm-{i}"))
                .json(&json!({"event_type": "load.storm", "payload": {"i": i}}));
            let (limiter, answered) = (limiter.clone(), answered.clone());
            tokio::spawn(async move {
                let _permit = limiter.acquire_owned().await.unwrap();
                let response = request.send().await;
                if let Some(answered) = answered {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                match response {
                    Ok(response) if response.status() == 201 || response.status() == 200 => {
                        let body: Value = response.json().await.ok()?;
                        Some((i, body["id"].as_str()?.to_string()))
                    }
                    _ => None,
                }
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for task in tasks {
        if let Some(pair) = task.await.unwrap() {
            accepted.push(pair);
        }
    }
    accepted
}

/// The crash test: kill -9 during a storm of 10,000 events, restart, finish the storm
/// (retrying unanswered posts with their idempotency keys), and every event reaches the
/// receiver at least once.
#[tokio::test]
async fn kill_9_during_a_storm_loses_no_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let serve = || {
        let mut cmd = command(dir.path());
        // A short lease, so deliveries the killed process had claimed come due soon.
        cmd.args(["serve", "--allow-private-targets", "--delivery-lease-secs", "3", "--delivery-timeout-secs", "2"]);
        Serve::start_with_args(cmd)
    };
    let server = serve();
    let key = server.admin_key();
    let (receiver, url) = Receiver::start().await;
    register_event_type(&server, &key, "load.storm").await;
    create_endpoint(&server, &key, &url).await;

    let answered = Arc::new(AtomicUsize::new(0));
    let everything: Vec<usize> = (0..STORM).collect();
    let storm = {
        let (base, key, answered) = (server.base.clone(), key.clone(), answered.clone());
        tokio::spawn(async move { post_events(&base, &key, &everything, Some(answered)).await })
    };
    // Kill once a third of the storm is answered and deliveries are under way.
    let started = Instant::now();
    while answered.load(Ordering::SeqCst) < STORM / 3 || receiver.requests() == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "the storm stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let code = tokio::task::spawn_blocking(move || server.signal(nix::sys::signal::Signal::SIGKILL)).await.unwrap();
    assert_eq!(code, None, "killed by the signal");
    let before_restart = storm.await.unwrap();
    let delivered_before = receiver.distinct();
    assert!(before_restart.len() < STORM, "the kill came during the storm");

    let restarted = serve();
    let answered_ids: HashMap<usize, String> = before_restart.into_iter().collect();
    let unanswered: Vec<usize> = (0..STORM).filter(|i| !answered_ids.contains_key(i)).collect();
    let after_restart = post_events(&restarted.base, &key, &unanswered, None).await;
    assert_eq!(after_restart.len(), unanswered.len(), "every retried post is accepted");
    let ids: Vec<String> = answered_ids.into_values().chain(after_restart.into_iter().map(|(_, id)| id)).collect();
    assert_eq!(ids.len(), STORM);

    receiver.wait_for_all(&ids, Duration::from_secs(240)).await;
    let duplicates = receiver.requests() - receiver.distinct();
    eprintln!(
        "storm: {delivered_before} delivered before the kill, {} events in all, {duplicates} delivered twice",
        ids.len()
    );
    assert_eq!(restarted.terminate(), 0);
}

/// Two `serve` processes on one PostgreSQL share the delivery work without sending any
/// message twice.
#[tokio::test]
#[cfg_attr(not(switchboard_postgres), ignore = "set SWITCHBOARD_TEST_DATABASE_URL to run the PostgreSQL tests")]
async fn two_processes_on_postgresql_deliver_every_message_exactly_once() {
    let (_db, url) = common::postgres_url().await;
    let dir = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        let mut cmd = command(&dir.path().join(name));
        cmd.env("SWITCHBOARD_DATABASE_URL", &url)
            .env("SWITCHBOARD_MASTER_KEY", common::SHARED_MASTER_KEY)
            .args(["serve", "--allow-private-targets"]);
        Serve::start_with_args(cmd)
    };
    let (first, second) = (spawn("one"), spawn("two"));
    let key =
        [&first, &second].iter().find_map(|s| s.admin_line.clone()).unwrap()["Admin API key: ".len()..].to_string();
    let (receiver, receiver_url) = Receiver::start().await;
    register_event_type(&first, &key, "load.storm").await;
    create_endpoint(&first, &key, &receiver_url).await;
    // The second process learns of the new endpoint within its cache's lifetime (1 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    const EVENTS: usize = 2000;
    let (evens, odds): (Vec<usize>, Vec<usize>) = (0..EVENTS).partition(|i| i % 2 == 0);
    let (a, b) =
        tokio::join!(post_events(&first.base, &key, &evens, None), post_events(&second.base, &key, &odds, None));
    let ids: Vec<String> = a.into_iter().chain(b).map(|(_, id)| id).collect();
    assert_eq!(ids.len(), EVENTS);
    receiver.wait_for_all(&ids, Duration::from_secs(120)).await;
    // Anything sent twice would arrive right behind the first copy.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let twice: Vec<(String, usize)> =
        receiver.seen.lock().unwrap().iter().filter(|(_, n)| **n > 1).map(|(id, n)| (id.clone(), *n)).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(receiver.requests(), EVENTS);
    assert_eq!(first.terminate(), 0);
    assert_eq!(second.terminate(), 0);
}

#[test]
fn the_api_commands_document_their_flags() {
    let output = std::process::Command::new(BIN).args(["endpoints", "add", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in ["--event-type", "--filter", "--transform", "--header", "--rate-limit", "--fifo", "--url", "--api-key"]
    {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
