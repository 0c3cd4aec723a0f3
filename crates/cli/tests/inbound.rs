//! Incoming webhooks through a real `switchboard serve`: a `kill -9` in the middle of a burst
//! loses none of the webhooks that were acknowledged.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Serve, client, command};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const BURST: usize = 5000;
const SECRET: &str = "github-webhook-secret";

#[tokio::test]
async fn kill_9_during_a_burst_of_webhooks_loses_none_that_got_a_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    // Batches in processing are held 2 s: those the killed process held are taken up soon.
    cmd.args(["serve", "--inbound-rate-per-connection", "0", "--inbound-rate-per-source", "0"]);
    cmd.args(["--inbound-lease-secs", "2"]);
    let server = Serve::start_with_args(cmd);
    let key = server.admin_key();
    let http = client();
    let install = json!({
        "template_name": "github",
        "auth_mode": "bearer",
        "credentials": {"token": "ghp_unused", "webhook_secret": SECRET},
    });
    let installed: Value = http
        .post(server.url("/api/marketplace/install"))
        .bearer_auth(&key)
        .json(&install)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = installed["id"].as_str().unwrap().to_string();

    let limiter = Arc::new(tokio::sync::Semaphore::new(64));
    let answered = Arc::new(AtomicUsize::new(0));
    let sends: Vec<_> = (0..BURST)
        .map(|i| {
            let body = format!(r#"{{"ref":"refs/heads/main","n":{i}}}"#);
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(body.as_bytes());
            let delivery = format!("delivery-{i}");
            let request = http
                .post(server.url(&format!("/webhooks/{id}")))
                .header("x-hub-signature-256", format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
                .header("x-github-event", "push")
                .header("x-github-delivery", &delivery)
                .body(body);
            let (limiter, answered) = (limiter.clone(), answered.clone());
            tokio::spawn(async move {
                let _permit = limiter.acquire_owned().await.unwrap();
                let status = request.send().await.map(|r| r.status().as_u16());
                answered.fetch_add(1, Ordering::SeqCst);
                (delivery, status)
            })
        })
        .collect();
    while answered.load(Ordering::SeqCst) < BURST / 10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let code = tokio::task::spawn_blocking(move || server.signal(nix::sys::signal::Signal::SIGKILL)).await.unwrap();
    assert_eq!(code, None, "killed");
    let mut acknowledged = HashSet::new();
    for send in sends {
        if let (delivery, Ok(200)) = send.await.unwrap() {
            acknowledged.insert(delivery);
        }
    }
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < BURST,
        "the kill came during the burst: {}",
        acknowledged.len()
    );

    let mut cmd = command(dir.path());
    cmd.args(["serve", "--inbound-lease-secs", "2"]);
    let restarted = Serve::start_with_args(cmd);
    let mut stored = HashSet::new();
    let mut path = format!("/api/integrations/{id}/inbound?limit=100");
    loop {
        let page: Value = http.get(restarted.url(&path)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        for inbound in page["data"].as_array().unwrap() {
            stored.insert(inbound["provider_event_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/integrations/{id}/inbound?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "{} acknowledged webhooks are missing, e.g. {:?}", missing.len(), missing.first());
    assert!(stored.len() <= acknowledged.len() + 64, "at most the requests in flight were stored unacknowledged");
    // Every stored webhook is processed, those leased by the killed process included, long
    // before a fixed 60 s lease would have let them go.
    let mut stats = Value::Null;
    for _ in 0..150 {
        stats =
            http.get(restarted.url("/webhooks/stats")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if stats["processed"].as_u64() == Some(stored.len() as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["processed"].as_u64(), Some(stored.len() as u64), "{stats}");
    assert_eq!(restarted.terminate(), 0);
}
