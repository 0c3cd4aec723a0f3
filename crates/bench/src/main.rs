//! `switchboard-bench`: starts a real `switchboard serve` process, drives a scenario against
//! it over loopback and prints the figures as a table and as JSON. Figures are for
//! BENCHMARKS.md; nothing here is a pass/fail test.

mod deliver;
mod ingest;
mod proxy;
mod publish;
mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "switchboard-bench", about = "Benchmarks Switchboard's hot paths against a real server")]
struct Cli {
    /// The switchboard binary to run [default: next to this binary]
    #[arg(long, global = true)]
    switchboard: Option<PathBuf>,
    /// Write the results as JSON to this file as well
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// POST /api/events from concurrent clients (publishing events)
    Publish(publish::Args),
    /// Signed webhooks POSTed to the receiver by wrk, against a trivial handler in the same
    /// run (verified and durably stored per second)
    Ingest(ingest::Args),
    /// Events fanned out as webhooks to a local receiver (the outgoing delivery path)
    Deliver(deliver::Args),
    /// Requests to a sandbox provider through a connection's proxy vs. sent directly
    Proxy(proxy::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let binary = match cli.switchboard {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("switchboard"),
    };
    anyhow::ensure!(
        binary.exists(),
        "no switchboard binary at {} (build it with cargo build --release)",
        binary.display()
    );
    let results = match cli.scenario {
        Scenario::Publish(args) => serde_json::to_value(publish::run(&binary, args).await?)?,
        Scenario::Ingest(args) => serde_json::to_value(ingest::run(&binary, args).await?)?,
        Scenario::Deliver(args) => serde_json::to_value(deliver::run(&binary, args).await?)?,
        Scenario::Proxy(args) => serde_json::to_value(proxy::run(&binary, args).await?)?,
    };
    let json = serde_json::to_string_pretty(&results)?;
    println!("{json}");
    if let Some(path) = cli.json {
        std::fs::write(path, json)?;
    }
    Ok(())
}
