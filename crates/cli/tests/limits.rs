//! Hostile input against a real `serve` held under a memory cap, as an out-of-memory killer
//! would hold it: one request must never take the process down.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use common::{Serve, client, command};

/// The most the server may ever have resident. An idle debug build holds about 30 MiB.
const CAP_BYTES: u64 = 256 * 1024 * 1024;

/// Watches a process's resident memory and kills it past the cap, like a cgroup's
/// out-of-memory killer; then answers whether it had to, and the process's peak.
struct MemoryCap {
    pid: u32,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl MemoryCap {
    fn watch(server: &Serve) -> Self {
        let pid = server.child.id();
        let (killed, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (k, s) = (killed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match status_kib(pid, "VmRSS:") {
                    Some(kib) if kib * 1024 > CAP_BYTES => {
                        k.store(true, Ordering::Relaxed);
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        return;
                    }
                    Some(_) => {}
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self { pid, killed, stop }
    }

    /// Fails if the server was killed or ever held more than the cap.
    fn assert_held(&self) {
        assert!(!self.killed.load(Ordering::Relaxed), "the server went past {} MiB and was killed", CAP_BYTES >> 20);
        let peak = status_kib(self.pid, "VmHWM:").expect("the server is alive") * 1024;
        assert!(peak < CAP_BYTES, "the server's peak was {} MiB", peak >> 20);
    }

    fn resident_bytes(&self) -> u64 {
        status_kib(self.pid, "VmRSS:").expect("the server is alive") * 1024
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix(field))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

async fn post(server: &Serve, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = client().post(server.url(path)).bearer_auth(key).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_jq_program_that_allocates_without_bound_costs_the_server_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--allow-private-targets", "--retry-schedule", "1s"]);
    let server = Serve::start_with_args(cmd);
    let cap = MemoryCap::watch(&server);
    let key = server.admin_key();
    assert_eq!(post(&server, &key, "/api/event-types", &json!({"name": "order.paid"})).await.0, 201);
    let endpoint = |extra: Value| {
        let mut body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["order.paid"]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let (status, filtered) =
        post(&server, &key, "/api/integrations/webhooks", &endpoint(json!({"filter": "[range(1e11)] | length > 0"})))
            .await;
    assert_eq!(status, 201, "{filtered}");
    let (status, transformed) =
        post(&server, &key, "/api/integrations/webhooks", &endpoint(json!({"transform": "[range(3e8)] | length"})))
            .await;
    assert_eq!(status, 201, "{transformed}");

    // The filter runs while the event is published, the transform when it is delivered.
    let (status, event) =
        post(&server, &key, "/api/events", &json!({"event_type": "order.paid", "payload": {"n": 1}})).await;
    assert_eq!(status, 201, "{event}");
    let attempts_url =
        server.url(&format!("/api/integrations/webhooks/{}/attempts", transformed["id"].as_str().unwrap()));
    let mut attempt = Value::Null;
    for _ in 0..300 {
        let page: Value = client().get(&attempts_url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if let Some(first) = page["data"].as_array().and_then(|a| a.first()) {
            attempt = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped at the worker's memory limit or at its time limit, whichever came first.
    assert_eq!(attempt["error_kind"], "transform_error", "{attempt}");
    let error = attempt["error"].as_str().unwrap();
    assert!(error.contains("memory") || error.contains("longer than"), "{attempt}");
    let messages_url = server.url(&format!("/api/integrations/webhooks/{}/messages", filtered["id"].as_str().unwrap()));
    let page: Value = client().get(&messages_url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["data"], json!([]), "the filter did not pass: no message");

    // Still serving, never past the cap.
    let (status, _) = post(&server, &key, "/api/events", &json!({"event_type": "order.paid", "payload": {}})).await;
    assert_eq!(status, 201);
    cap.assert_held();
    assert_eq!(server.terminate(), 0);
}

/// `{keyword: {keyword: … {"type": "string"}}}`, `levels` deep.
fn nested(keyword: &str, levels: usize) -> Value {
    (0..levels).fold(json!({"type": "string"}), |inner, _| json!({ keyword: inner }))
}

#[tokio::test]
async fn deeply_nested_schemas_are_refused_and_a_thousand_schemas_keep_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(command(dir.path()));
    let cap = MemoryCap::watch(&server);
    let key = server.admin_key();

    // 1.3 KB nested 120 levels cost about 1 GB each to compile; three killed the server.
    for keyword in ["items", "not", "additionalProperties"] {
        for levels in [120, 40] {
            let name = format!("deep.{keyword}.{levels}");
            let (status, problem) =
                post(&server, &key, "/api/event-types", &json!({"name": name, "schema": nested(keyword, levels)}))
                    .await;
            assert_eq!(status, 422, "{problem}");
            assert_eq!(problem["errors"][0]["field"], "schema", "{problem}");
            assert!(problem["errors"][0]["detail"].as_str().unwrap().contains("nested deeper"), "{problem}");
        }
    }

    // A thousand distinct, ordinary schemas (twelve levels of objects each), each compiled
    // for an event of its type: the server's memory stays flat.
    let schema = |n: usize| {
        (0..12).fold(json!({"type": "string", "maxLength": 64}), |inner, level| {
            json!({"type": "object", "properties": {format!("f{n}_{level}"): inner}, "required": [format!("f{n}_{level}")]})
        })
    };
    let payload = |n: usize| (0..12).fold(json!("leaf"), |inner, level| json!({format!("f{n}_{level}"): inner}));
    let mut after_first_hundred = 0;
    for n in 0..1000 {
        let name = format!("shape.n{n}");
        let (status, body) = post(&server, &key, "/api/event-types", &json!({"name": name, "schema": schema(n)})).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) =
            post(&server, &key, "/api/events", &json!({"event_type": name, "payload": payload(n)})).await;
        assert_eq!(status, 201, "{body}");
        if n == 99 {
            after_first_hundred = cap.resident_bytes();
        }
    }
    let (status, problem) =
        post(&server, &key, "/api/events", &json!({"event_type": "shape.n7", "payload": payload(8)})).await;
    assert_eq!(status, 422, "the schemas are enforced: {problem}");
    let grown = cap.resident_bytes().saturating_sub(after_first_hundred);
    assert!(grown < 32 << 20, "900 more schemas grew the server by {} MiB", grown >> 20);
    cap.assert_held();
    assert_eq!(server.terminate(), 0);
}
