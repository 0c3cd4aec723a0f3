//! Scenario `deliver`: events published through the API fan out to N endpoints on a local
//! receiver that answers 200. Reports events created and deliveries received per second, and
//! the time from the start of each create request to the receiver holding its delivery.
//!
//! Two ways to load it: `--clients N` publish as fast as they can (throughput), or `--rate R`
//! offers R events per second on an open loop whatever the answers (latency at a given load).
//! A publisher told to slow down (429) waits its `Retry-After`; those answers are counted as
//! `deferred`, not as errors.
//!
//! With `--slow-ms MS`, a second tenant publishes as fast as it can to an endpoint that takes
//! MS to answer, side by side: the measured latency is still the first tenant's, so the
//! figures show what a slow neighbour costs it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use anyhow::Context as _;

use crate::Backend;
use crate::server::{ADMIN_KEY, Costs, Meter, RunArgs, Server};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Endpoints every event goes to
    #[arg(long, default_value_t = 1)]
    fanout: usize,
    /// Offer this many events per second instead of --clients publishing as fast as they
    /// are answered (open loop)
    #[arg(long)]
    rate: Option<u64>,
    /// Passed to serve as --delivery-concurrency
    #[arg(long)]
    delivery_concurrency: Option<usize>,
    /// Passed to serve as --max-due-messages-per-tenant
    #[arg(long)]
    max_due_messages_per_tenant: Option<u64>,
    /// A second tenant's endpoint answers after this many milliseconds, loaded side by side
    #[arg(long)]
    slow_ms: Option<u64>,
    /// After the backlog drained, wait this long and read the server's RSS again (memory
    /// given back)
    #[arg(long, default_value_t = 0)]
    settle_secs: u64,
    /// Closed-loop clients publishing to the slow tenant
    #[arg(long, default_value_t = 16)]
    slow_clients: usize,
}

/// What the slow neighbour got, when there is one.
#[derive(Debug, Serialize)]
pub struct SlowNeighbour {
    answer_ms: u64,
    deliveries_per_second: f64,
    /// Its publishes answered 429 (its deliveries were behind).
    deferred: u64,
}

#[derive(Debug, Serialize)]
pub struct Results {
    scenario: &'static str,
    backend: Backend,
    fanout: usize,
    /// `clients=64` or `rate=500/s`.
    load: String,
    seconds: f64,
    events_per_second: f64,
    deliveries_per_second: f64,
    /// Create request started → delivery received, for deliveries received in the window.
    latency_ms_p50: f64,
    latency_ms_p90: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    /// Deliveries owed but not yet received when the window closed.
    backlog_at_end: i64,
    /// Publishes answered 429 because the tenant's deliveries were behind.
    deferred: u64,
    slow_neighbour: Option<SlowNeighbour>,
    /// Seconds after the load stopped until every delivery arrived (None: not within 60 s).
    drain_seconds: Option<f64>,
    errors: u64,
    server_rss_idle_mib: f64,
    server_rss_peak_mib: f64,
    /// RSS `--settle-secs` after the backlog drained; `None` without it.
    server_rss_settled_mib: Option<f64>,
    /// What one delivered message cost the server (and PostgreSQL) while measured, its
    /// event's publishing included.
    cost_per_delivery: Costs,
}

/// The receiver's view: deliveries counted and timed while measuring.
struct Receiver {
    epoch: Instant,
    measuring: AtomicBool,
    received: AtomicU64,
    received_in_window: AtomicU64,
    slow_received_in_window: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Receiver {
    fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(Self {
            epoch,
            measuring: AtomicBool::new(false),
            received: AtomicU64::new(0),
            received_in_window: AtomicU64::new(0),
            slow_received_in_window: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
        })
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The body is `{"type","timestamp","data":{"t":…}}`, `t` the create request's start.
    fn record(&self, body: &[u8]) {
        let now = self.micros();
        self.received.fetch_add(1, Ordering::Relaxed);
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        self.received_in_window.fetch_add(1, Ordering::Relaxed);
        let sent = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["data"]["t"].as_u64());
        if let Some(sent) = sent {
            let _ = self.latency.lock().unwrap_or_else(|p| p.into_inner()).record(now.saturating_sub(sent).max(1));
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

async fn start_receiver(receiver: Arc<Receiver>, slow: Duration) -> anyhow::Result<String> {
    let fast = receiver.clone();
    let app = Router::new()
        .route(
            "/hook/{n}",
            post(move |body: Bytes| {
                fast.record(&body);
                async {}
            }),
        )
        .route(
            "/slow",
            post(move || {
                let receiver = receiver.clone();
                async move {
                    tokio::time::sleep(slow).await;
                    if receiver.measuring.load(Ordering::Relaxed) {
                        receiver.slow_received_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

pub async fn run(binary: &Path, args: Args) -> anyhow::Result<Results> {
    let pg_schema = args.run.schema().await?;
    let mut extra = vec!["--allow-private-targets".to_string()];
    if let Some(concurrency) = args.delivery_concurrency {
        extra.extend(["--delivery-concurrency".to_string(), concurrency.to_string()]);
    }
    if let Some(limit) = args.max_due_messages_per_tenant {
        extra.extend(["--max-due-messages-per-tenant".to_string(), limit.to_string()]);
    }
    let server = Server::start(binary, pg_schema.as_ref().map(|s| s.url.as_str()), &extra)?;
    let epoch = Instant::now();
    let receiver = Receiver::new(epoch);
    let receiver_base = start_receiver(receiver.clone(), Duration::from_millis(args.slow_ms.unwrap_or(0))).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let call = |path: &str, body: serde_json::Value| {
        client.post(format!("{}{path}", server.base)).bearer_auth(ADMIN_KEY).json(&body).send()
    };
    let response = call("/api/event-types", json!({"name": "bench.delivered"})).await?;
    anyhow::ensure!(response.status() == 201, "creating the event type: {}", response.status());
    for n in 0..args.fanout {
        let response = call("/api/integrations/webhooks", json!({"url": format!("{receiver_base}/hook/{n}")})).await?;
        anyhow::ensure!(response.status() == 201, "creating an endpoint: {}", response.text().await?);
    }
    let url = format!("{}/api/events", server.base);
    let stop = Arc::new(AtomicBool::new(false));
    let slow_counts = Arc::new(Counts::default());
    if args.slow_ms.is_some() {
        let key = slow_tenant(&client, &server.base, &receiver_base).await?;
        let slow = Publisher { client: client.clone(), url: url.clone(), key, epoch, counts: slow_counts.clone() };
        for _ in 0..args.slow_clients {
            let (slow, stop) = (slow.clone(), stop.clone());
            tokio::spawn(async move { slow.closed_loop(stop).await });
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // endpoint caches settle
    let idle_rss = server.rss_kib();

    let counts = Arc::new(Counts::default());
    let publisher =
        Publisher { client: client.clone(), url, key: ADMIN_KEY.to_string(), epoch, counts: counts.clone() };
    let load = match args.rate {
        Some(rate) => {
            let (publisher, stop) = (publisher.clone(), stop.clone());
            tokio::spawn(async move { publisher.open_loop(rate, stop).await });
            format!("rate={rate}/s")
        }
        None => {
            for _ in 0..args.run.clients {
                let (publisher, stop) = (publisher.clone(), stop.clone());
                tokio::spawn(async move { publisher.closed_loop(stop).await });
            }
            format!("clients={}", args.run.clients)
        }
    };
    tokio::time::sleep(Duration::from_secs(args.run.warmup)).await;
    let created_before = counts.created.load(Ordering::Relaxed);
    receiver.measuring.store(true, Ordering::Relaxed);
    let meter = Meter::start(&server, pg_schema.is_some());
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(args.run.seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_rss = peak_rss.max(server.rss_kib());
    }
    receiver.measuring.store(false, Ordering::Relaxed);
    let used = meter.stop(&server);
    let elapsed = started.elapsed().as_secs_f64();
    let created_in_window = counts.created.load(Ordering::Relaxed) - created_before;
    stop.store(true, Ordering::Relaxed);
    // Publishers finish the requests they have in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let owed = |created: u64| (created * args.fanout as u64) as i64 - receiver.received.load(Ordering::Relaxed) as i64;
    let backlog_at_end = owed(counts.created.load(Ordering::Relaxed));
    let drain_started = Instant::now();
    let mut drain_seconds = None;
    while drain_started.elapsed() < Duration::from_secs(60) {
        if owed(counts.created.load(Ordering::Relaxed)) <= 0 {
            drain_seconds = Some(drain_started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_rss = match args.settle_secs {
        0 => None,
        settle => {
            tokio::time::sleep(Duration::from_secs(settle)).await;
            Some(server.rss_kib() as f64 / 1024.0)
        }
    };
    server.stop();
    if let Some(schema) = pg_schema {
        schema.drop().await;
    }
    let latency = receiver.latency.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let results = Results {
        scenario: "deliver",
        backend: args.run.backend,
        fanout: args.fanout,
        load,
        seconds: elapsed,
        events_per_second: created_in_window as f64 / elapsed,
        deliveries_per_second: receiver.received_in_window.load(Ordering::Relaxed) as f64 / elapsed,
        latency_ms_p50: ms(0.5),
        latency_ms_p90: ms(0.9),
        latency_ms_p99: ms(0.99),
        latency_ms_max: latency.max() as f64 / 1000.0,
        backlog_at_end,
        deferred: counts.deferred.load(Ordering::Relaxed),
        slow_neighbour: args.slow_ms.map(|answer_ms| SlowNeighbour {
            answer_ms,
            deliveries_per_second: receiver.slow_received_in_window.load(Ordering::Relaxed) as f64 / elapsed,
            deferred: slow_counts.deferred.load(Ordering::Relaxed),
        }),
        drain_seconds,
        errors: counts.errors.load(Ordering::Relaxed),
        server_rss_idle_mib: idle_rss as f64 / 1024.0,
        server_rss_peak_mib: peak_rss as f64 / 1024.0,
        server_rss_settled_mib: settled_rss,
        cost_per_delivery: used.per(receiver.received_in_window.load(Ordering::Relaxed)),
    };
    eprintln!(
        "\n| scenario | backend | fan-out | load | events/s | deliveries/s | p50 ms | p90 ms | p99 ms | backlog | drain s | errors | RSS idle / peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n| deliver | {:?} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.1} / {:.1} |\n",
        results.backend,
        results.fanout,
        results.load,
        results.events_per_second,
        results.deliveries_per_second,
        results.latency_ms_p50,
        results.latency_ms_p90,
        results.latency_ms_p99,
        results.backlog_at_end,
        results.drain_seconds.map(|s| format!("{s:.1}")).unwrap_or_else(|| "> 60".into()),
        results.errors,
        results.server_rss_idle_mib,
        results.server_rss_peak_mib
    );
    eprintln!("per delivery (publishing included): {}", results.cost_per_delivery);
    eprintln!("deferred (429): {}", results.deferred);
    if let Some(settled) = results.server_rss_settled_mib {
        eprintln!("RSS {}s after the backlog drained: {settled:.1} MiB", args.settle_secs);
    }
    if let Some(slow) = &results.slow_neighbour {
        eprintln!(
            "slow neighbour ({} ms answers): {:.0} deliveries/s, {} publishes deferred",
            slow.answer_ms, slow.deliveries_per_second, slow.deferred
        );
    }
    Ok(results)
}

/// What a set of publishers got.
#[derive(Default)]
struct Counts {
    created: AtomicU64,
    deferred: AtomicU64,
    errors: AtomicU64,
}

/// Creates the slow neighbour: a tenant of its own with one event type and one endpoint that
/// answers slowly; returns its API key.
async fn slow_tenant(client: &reqwest::Client, base: &str, receiver_base: &str) -> anyhow::Result<String> {
    let created: serde_json::Value = client
        .post(format!("{base}/api/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "slow neighbour"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = created["api_key"]["token"].as_str().context("the new tenant's key")?.to_string();
    for (path, body) in [
        ("/api/event-types", json!({"name": "bench.delivered"})),
        ("/api/integrations/webhooks", json!({"url": format!("{receiver_base}/slow")})),
    ] {
        client.post(format!("{base}{path}")).bearer_auth(&key).json(&body).send().await?.error_for_status()?;
    }
    Ok(key)
}

#[derive(Clone)]
struct Publisher {
    client: reqwest::Client,
    url: String,
    key: String,
    epoch: Instant,
    counts: Arc<Counts>,
}

impl Publisher {
    /// Publishes one event; returns how long the server asked to wait before the next.
    async fn publish(&self) -> Option<Duration> {
        let t = self.epoch.elapsed().as_micros() as u64;
        let sent = self
            .client
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(
                &json!({"event_type": "bench.delivered", "payload": {"t": t, "note": "a typical small event payload"}}),
            )
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 201 => {
                self.counts.created.fetch_add(1, Ordering::Relaxed);
                None
            }
            Ok(response) if response.status() == 429 => {
                self.counts.deferred.fetch_add(1, Ordering::Relaxed);
                let seconds = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                Some(Duration::from_secs(seconds.unwrap_or(1)))
            }
            _ => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn closed_loop(self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            if let Some(wait) = self.publish().await {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Starts `rate` publishes a second, each on its own task, whether or not earlier ones
    /// were answered.
    async fn open_loop(self, rate: u64, stop: Arc<AtomicBool>) {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                sent += 1;
                let publisher = self.clone();
                tokio::spawn(async move { publisher.publish().await });
            }
        }
    }
}
