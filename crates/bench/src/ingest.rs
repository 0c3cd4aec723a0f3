//! Scenario `ingest`: signed GitHub webhooks POSTed by `wrk` (an external load generator,
//! each request with its own delivery id, so none is a duplicate) to the receiver of a real
//! `switchboard serve`, and the same load against a trivial axum handler in the same run.
//! A 200 from the receiver means verified and durably stored. The two alternate for a few
//! rounds (this machine's speed drifts within a minute); reports the median round of each,
//! the median ratio, every round's figures, and how many webhooks were stored.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;

use crate::Backend;
use crate::server::{ADMIN_KEY, Costs, Meter, PgSchema, Server};

const SECRET: &str = "benchmark-webhook-secret";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// PostgreSQL URL (a fresh schema is created in it and dropped afterwards)
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// wrk connections
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds of each measured run
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds, each measuring the trivial handler and then the receiver
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run `serve --no-inbound-processing`: measure receiving alone, as a receive-only
    /// process beside processing ones would
    #[arg(long)]
    receive_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    requests_per_second: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    non_2xx: u64,
    /// What one webhook cost the server (and PostgreSQL) during the run; absent for the
    /// trivial handler, which runs in the bench itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_per_webhook: Option<Costs>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    scenario: &'static str,
    backend: Backend,
    connections: usize,
    receive_only: bool,
    /// The median round of each, by requests per second.
    trivial_handler: Run,
    receiver: Run,
    /// The median of the rounds' ratios.
    ratio: f64,
    /// Requests per second of each round: (trivial handler, receiver).
    rounds: Vec<(f64, f64)>,
    stored: u64,
    /// Of those, turned into hub events by the time the load stopped (processing runs
    /// beside the receiver and may trail it).
    processed: u64,
}

pub async fn run(binary: &Path, args: Args) -> anyhow::Result<Results> {
    which_wrk()?;
    let body = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/api"},"pusher":{"name":"bench"}}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        format!(
            r#"wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-github-event"] = "push"
wrk.headers["x-hub-signature-256"] = "{signature}"
local counter = 0
local thread_id = 0
-- Every run sends delivery ids of its own (its number comes as the script's argument), so
-- a later round is not a replay of an earlier one's.
local run = "0"
init = function(args)
  run = args[1] or "0"
end
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("prefix", "t" .. thread_id .. "-")
end
request = function()
  counter = counter + 1
  wrk.headers["x-github-delivery"] = "r" .. run .. "-" .. prefix .. counter
  return wrk.format()
end
"#
        ),
    )?;

    // The baseline: a handler that reads the body and answers 200, on this machine, now.
    let trivial = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let trivial_url = format!("http://{}/hook", trivial.local_addr()?);
    let app = axum::Router::new().route("/hook", axum::routing::post(|_body: axum::body::Bytes| async { "ok" }));
    tokio::spawn(async move { axum::serve(trivial, app).await });

    let pg = match args.backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgSchema::create(&args.postgres_url).await?),
    };
    let mut extra: Vec<String> =
        ["--inbound-rate-per-connection", "0", "--inbound-rate-per-source", "0"].map(String::from).to_vec();
    if args.receive_only {
        extra.push("--no-inbound-processing".into());
    }
    let server = Server::start(binary, pg.as_ref().map(|s| s.url.as_str()), &extra)?;
    let http = reqwest::Client::new();
    let install = json!({
        "template_name": "github",
        "auth_mode": "bearer",
        "credentials": {"token": "ghp_unused", "webhook_secret": SECRET},
    });
    let response = http
        .post(format!("{}/api/marketplace/install", server.base))
        .bearer_auth(ADMIN_KEY)
        .json(&install)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "installing the connection: {}", response.text().await?);
    let connection: serde_json::Value = response.json().await?;
    let id = connection["id"].as_str().context("the connection has an id")?.to_string();
    let receiver_url = format!("{}/webhooks/{id}", server.base);
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds.max(1) {
        let trivial = wrk(&args, script.path(), &trivial_url, round)?;
        let meter = Meter::start(&server, pg.is_some());
        let mut receiver = wrk(&args, script.path(), &receiver_url, round)?;
        let webhooks = (receiver.requests_per_second * args.seconds as f64) as u64;
        receiver.cost_per_webhook = Some(meter.stop(&server).per(webhooks));
        rounds.push((trivial, receiver));
    }
    let stats: serde_json::Value =
        http.get(format!("{}/webhooks/stats", server.base)).bearer_auth(ADMIN_KEY).send().await?.json().await?;
    server.stop();
    if let Some(schema) = pg {
        schema.drop().await;
    }
    let median_run = |pick: fn(&(Run, Run)) -> &Run| {
        let mut runs: Vec<Run> = rounds.iter().map(|round| pick(round).clone()).collect();
        runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
        runs[runs.len() / 2].clone()
    };
    let (trivial_handler, receiver) = (median_run(|r| &r.0), median_run(|r| &r.1));
    let mut ratios: Vec<f64> = rounds.iter().map(|(t, r)| r.requests_per_second / t.requests_per_second).collect();
    ratios.sort_by(f64::total_cmp);
    let results = Results {
        scenario: "ingest",
        backend: args.backend,
        connections: args.connections,
        receive_only: args.receive_only,
        ratio: ratios[ratios.len() / 2],
        rounds: rounds.iter().map(|(t, r)| (t.requests_per_second, r.requests_per_second)).collect(),
        stored: stats["received"].as_u64().unwrap_or(0),
        processed: stats["processed"].as_u64().unwrap_or(0),
        trivial_handler,
        receiver,
    };
    eprintln!(
        "\n| target | backend | connections | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|---|---|\n| trivial handler | - | {c} | {:.0} | {:.2} | {:.2} | {} |\n| receiver | {:?} | {c} | {:.0} | {:.2} | {:.2} | {} |\n\nmedian rounds; receiver at {:.0} % of the trivial handler (median of {} rounds: {}); {} webhooks stored, {} processed meanwhile\n",
        results.trivial_handler.requests_per_second,
        results.trivial_handler.latency_ms_p50,
        results.trivial_handler.latency_ms_p99,
        results.trivial_handler.non_2xx,
        results.backend,
        results.receiver.requests_per_second,
        results.receiver.latency_ms_p50,
        results.receiver.latency_ms_p99,
        results.receiver.non_2xx,
        results.ratio * 100.0,
        results.rounds.len(),
        results.rounds.iter().map(|(t, r)| format!("{:.0} %", r / t * 100.0)).collect::<Vec<_>>().join(", "),
        results.stored,
        results.processed,
        c = results.connections,
    );
    if let Some(cost) = &results.receiver.cost_per_webhook {
        eprintln!("per webhook (median round): {cost}");
    }
    Ok(results)
}

fn which_wrk() -> anyhow::Result<()> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!("wrk is not installed (apt-get install wrk)"),
    }
}

/// Runs wrk with the script (told which run this is) and reads its summary.
fn wrk(args: &Args, script: &Path, url: &str, run: usize) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args(["-t", &args.threads.to_string(), "-c", &args.connections.to_string()])
        .args(["-d", &format!("{}s", args.seconds), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .args(["--", &run.to_string()])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let number_after = |label: &str| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    };
    let millis = |value: String| -> f64 {
        let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(value.len()));
        let number: f64 = number.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => number / 1000.0,
            "s" => number * 1000.0,
            _ => number,
        }
    };
    let requests_per_second =
        number_after("Requests/sec:").and_then(|v| v.parse().ok()).context(format!("wrk said:\n{text}"))?;
    let non_2xx = text
        .lines()
        .find(|l| l.trim_start().starts_with("Non-2xx"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Run {
        requests_per_second,
        latency_ms_p50: number_after("50%").map(millis).unwrap_or(f64::NAN),
        latency_ms_p99: number_after("99%").map(millis).unwrap_or(f64::NAN),
        non_2xx,
        cost_per_webhook: None,
    })
}
