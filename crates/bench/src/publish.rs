//! Scenario `publish`: concurrent clients POST /api/events for a fixed time; reports
//! accepted events per second, latency percentiles and the server's memory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::Backend;
use crate::server::{ADMIN_KEY, Costs, Meter, RunArgs, Server};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Serialize)]
pub struct Results {
    scenario: &'static str,
    backend: Backend,
    clients: usize,
    seconds: f64,
    accepted: u64,
    errors: u64,
    events_per_second: f64,
    latency_ms_p50: f64,
    latency_ms_p90: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    server_rss_idle_mib: f64,
    server_rss_peak_mib: f64,
    /// What one event cost the server (and PostgreSQL) while measured.
    cost_per_event: Costs,
}

pub async fn run(binary: &Path, args: Args) -> anyhow::Result<Results> {
    let args = args.run;
    let pg_schema = args.schema().await?;
    let url = pg_schema.as_ref().map(|s| s.url.clone());
    let server = Server::start(binary, url.as_deref(), &[])?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let response = client
        .post(format!("{}/api/event-types", server.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "bench.event", "schema": {"type": "object", "required": ["n"]}}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "creating the event type: {}", response.status());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kib();

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client_index in 0..args.clients {
        let (client, base) = (client.clone(), server.base.clone());
        let (measuring, stop, errors) = (measuring.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let sent = client
                    .post(format!("{base}/api/events"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&json!({"event_type": "bench.event", "payload": {"n": n, "client": client_index, "note": "a typical small event payload"}}))
                    .send()
                    .await;
                let ok = matches!(&sent, Ok(r) if r.status() == 201);
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        let _ = histogram.record(started.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let meter = Meter::start(&server, pg_schema.is_some());
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_rss = peak_rss.max(server.rss_kib());
    }
    measuring.store(false, Ordering::Relaxed);
    let used = meter.stop(&server);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for task in tasks {
        all.add(task.await?)?;
    }
    server.stop();
    if let Some(schema) = pg_schema {
        schema.drop().await;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let results = Results {
        scenario: "publish",
        backend: args.backend,
        clients: args.clients,
        seconds: elapsed,
        accepted: all.len(),
        errors: errors.load(Ordering::Relaxed),
        events_per_second: all.len() as f64 / elapsed,
        latency_ms_p50: ms(0.5),
        latency_ms_p90: ms(0.9),
        latency_ms_p99: ms(0.99),
        latency_ms_max: all.max() as f64 / 1000.0,
        server_rss_idle_mib: idle_rss as f64 / 1024.0,
        server_rss_peak_mib: peak_rss as f64 / 1024.0,
        cost_per_event: used.per(all.len() + errors.load(Ordering::Relaxed)),
    };
    eprintln!(
        "\n| scenario | backend | clients | events/s | p50 ms | p90 ms | p99 ms | errors | RSS idle / peak MiB |\n|---|---|---|---|---|---|---|---|---|\n| publish | {:?} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} / {:.1} |\n",
        results.backend,
        results.clients,
        results.events_per_second,
        results.latency_ms_p50,
        results.latency_ms_p90,
        results.latency_ms_p99,
        results.errors,
        results.server_rss_idle_mib,
        results.server_rss_peak_mib
    );
    eprintln!("per event: {}", results.cost_per_event);
    Ok(results)
}
