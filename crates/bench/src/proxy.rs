//! Scenario `proxy`: the overhead of `/api/integrations/{id}/proxy/…`. A `switchboard sandbox`
//! process plays the provider (the generic REST simulator, bearer auth); the same request is
//! sent to it directly and through a connection's proxy, in the same run, with the same
//! load: one client in sequence for latency, many concurrent clients for throughput.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::server::{ADMIN_KEY, Costs, Meter, Server};

/// The token the sandbox's REST simulator accepts (`switchboard sandbox` prints it too).
const REST_TOKEN: &str = "rest-token";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent clients of the throughput phases
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds measured per phase
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of unmeasured warm-up per phase
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// The provider path requested (under the REST simulator)
    #[arg(long, default_value = "/items/7")]
    path: String,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    requests_per_second: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    errors: u64,
    /// What one proxied request cost the server; absent for direct requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_per_request: Option<Costs>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    scenario: &'static str,
    path: String,
    /// One client, requests in sequence.
    direct_sequential: Phase,
    proxied_sequential: Phase,
    added_ms_p50: f64,
    added_ms_p99: f64,
    /// `clients` concurrent clients.
    clients: usize,
    direct_concurrent: Phase,
    proxied_concurrent: Phase,
    throughput_ratio: f64,
}

/// A `switchboard sandbox` child process.
struct Sandbox {
    child: Child,
    url: String,
    flags: Vec<String>,
}

impl Sandbox {
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting switchboard sandbox")?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let (mut url, mut flags) = (None, Vec::new());
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("Ctrl-C stops the sandbox") => break,
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("Sandbox listening on ") {
                        url = Some(address.to_string());
                    } else if let Some(flag) = line.trim().strip_prefix("--provider-url '") {
                        flags.push("--provider-url".to_string());
                        flags.push(flag.trim_end_matches(" \\").trim_end_matches('\'').to_string());
                    }
                }
                _ => {
                    let _ = child.kill();
                    bail!("the sandbox exited before printing its address");
                }
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let url = url.context("the sandbox printed no address")?;
        Ok(Self { child, url, flags })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(binary: &Path, args: Args) -> anyhow::Result<Results> {
    let sandbox = Sandbox::start(binary)?;
    let mut extra = vec!["--allow-target-networks".to_string(), "127.0.0.1/32".to_string()];
    extra.extend(sandbox.flags.iter().cloned());
    let server = Server::start(binary, None, &extra)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let install = json!({
        "template_name": "rest",
        "auth_mode": "bearer",
        "config_overrides": {"base_url": format!("{}/rest", sandbox.url)},
        "credentials": {"token": REST_TOKEN},
    });
    let response = client
        .post(format!("{}/api/marketplace/install", server.base))
        .bearer_auth(ADMIN_KEY)
        .json(&install)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "installing the connection: {}", response.text().await?);
    let connection: serde_json::Value = response.json().await?;
    let id = connection["id"].as_str().context("the connection has an id")?;

    let direct_url = Arc::new(format!("{}/rest{}", sandbox.url, args.path));
    let proxied_url = Arc::new(format!("{}/api/integrations/{id}/proxy{}", server.base, args.path));
    let direct = |client: &reqwest::Client, url: &str| client.get(url).bearer_auth(REST_TOKEN);
    let proxied = |client: &reqwest::Client, url: &str| client.get(url).bearer_auth(ADMIN_KEY);

    let direct_sequential = drive(&client, 1, &args, direct_url.clone(), direct, None).await?;
    let proxied_sequential = drive(&client, 1, &args, proxied_url.clone(), proxied, Some(&server)).await?;
    let direct_concurrent = drive(&client, args.clients, &args, direct_url, direct, None).await?;
    let proxied_concurrent = drive(&client, args.clients, &args, proxied_url, proxied, Some(&server)).await?;
    server.stop();
    drop(sandbox);

    let results = Results {
        scenario: "proxy",
        path: args.path,
        added_ms_p50: proxied_sequential.latency_ms_p50 - direct_sequential.latency_ms_p50,
        added_ms_p99: proxied_sequential.latency_ms_p99 - direct_sequential.latency_ms_p99,
        throughput_ratio: proxied_concurrent.requests_per_second / direct_concurrent.requests_per_second,
        direct_sequential,
        proxied_sequential,
        clients: args.clients,
        direct_concurrent,
        proxied_concurrent,
    };
    let row = |name: &str, clients: usize, phase: &Phase| {
        format!(
            "| {name} | {clients} | {:.0} | {:.3} | {:.3} | {} |",
            phase.requests_per_second, phase.latency_ms_p50, phase.latency_ms_p99, phase.errors
        )
    };
    eprintln!(
        "\n| path | clients | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n{}\n{}\n{}\n{}\n\nadded p50 {:.3} ms, p99 {:.3} ms; throughput through the proxy {:.0} % of direct\n",
        row("direct", 1, &results.direct_sequential),
        row("proxy", 1, &results.proxied_sequential),
        row("direct", results.clients, &results.direct_concurrent),
        row("proxy", results.clients, &results.proxied_concurrent),
        results.added_ms_p50,
        results.added_ms_p99,
        results.throughput_ratio * 100.0
    );
    for (phase, label) in [(&results.proxied_sequential, "1 client"), (&results.proxied_concurrent, "concurrent")] {
        if let Some(cost) = &phase.cost_per_request {
            eprintln!("per proxied request ({label}): {cost}");
        }
    }
    Ok(results)
}

/// `clients` loops each sending `request(url)` and expecting a 200, for the warm-up and then
/// the measured seconds; what `server` spent meanwhile, per request, when it is given.
async fn drive(
    client: &reqwest::Client,
    clients: usize,
    args: &Args,
    url: Arc<String>,
    request: fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    server: Option<&Server>,
) -> anyhow::Result<Phase> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.clone());
        let (measuring, stop, errors) = (measuring.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = match request(&client, &url).send().await {
                    // The body is read: a proxied answer is only complete once it has arrived.
                    Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
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
    let meter = server.map(|server| Meter::start(server, false));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let used = meter.zip(server).map(|(meter, server)| meter.stop(server));
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for task in tasks {
        all.add(task.await?)?;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Ok(Phase {
        requests_per_second: all.len() as f64 / elapsed,
        latency_ms_p50: ms(0.5),
        latency_ms_p99: ms(0.99),
        errors: errors.load(Ordering::Relaxed),
        cost_per_request: used.map(|used| used.per(all.len() + errors.load(Ordering::Relaxed))),
    })
}
