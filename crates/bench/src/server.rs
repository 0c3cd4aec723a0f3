//! A `switchboard serve` child process on a loopback port, with its resident memory readable
//! from /proc.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// What every scenario takes: where the data lives and how long to measure.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: crate::Backend,
    /// PostgreSQL URL (a fresh schema is created in it and dropped afterwards)
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub postgres_url: String,
    /// Concurrent clients
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of measured load
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of unmeasured warm-up
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
}

impl RunArgs {
    /// A throwaway PostgreSQL schema when the backend is PostgreSQL.
    pub async fn schema(&self) -> anyhow::Result<Option<PgSchema>> {
        Ok(match self.backend {
            crate::Backend::Sqlite => None,
            crate::Backend::Postgres => Some(PgSchema::create(&self.postgres_url).await?),
        })
    }
}

pub const ADMIN_KEY: &str = "sk_benchmark0000000000000000000000000";

pub struct Server {
    child: Child,
    pub base: String,
    _data: tempfile::TempDir,
}

impl Server {
    /// Starts `serve` with `extra` flags after the defaults.
    pub fn start(binary: &Path, database_url: Option<&str>, extra: &[String]) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)
            .env("RUST_LOG", "warn")
            // Stopping between runs needs no drain.
            .env("SWITCHBOARD_DRAIN_SECS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("Listening on ") {
                        break address.to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    bail!("switchboard exited before listening");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self { child, base, _data: data })
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway schema, so a run never sees another run's rows.
pub struct PgSchema {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgSchema {
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let name = format!("sbbench_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&mut conn).await?;
        sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&mut conn).await?;
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-c%20search_path%3D{name}");
        Ok(Self { admin_url: admin_url.to_string(), name, url })
    }

    pub async fn drop(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).execute(&mut conn).await;
        }
    }
}
