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

    /// What the server process has spent so far, over all its threads.
    pub fn spent(&self) -> Spent {
        Spent::of_process(self.child.id())
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

/// The kernel's clock ticks per second for `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time and context switches spent so far, read from /proc. Context switches are summed
/// over the process's live threads: a thread that exited takes its count with it, which
/// tokio's blocking pool can do after 10 s idle (never during load).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    /// User plus system CPU seconds, every thread.
    pub cpu_seconds: f64,
    /// Switches the threads asked for (waiting on a lock, a socket, a channel).
    pub voluntary: u64,
    /// Switches the scheduler imposed.
    pub involuntary: u64,
}

impl Spent {
    fn of_process(pid: u32) -> Self {
        let mut spent = Self { cpu_seconds: cpu_seconds(pid), ..Self::default() };
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
        for task in tasks {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                let count = |prefix: &str| line.strip_prefix(prefix).and_then(|v| v.trim().parse::<u64>().ok());
                if let Some(n) = count("voluntary_ctxt_switches:") {
                    spent.voluntary += n;
                } else if let Some(n) = count("nonvoluntary_ctxt_switches:") {
                    spent.involuntary += n;
                }
            }
        }
        spent
    }

    /// What every `postgres` process on this machine has spent (its backends, the writer,
    /// the WAL writer): the database's share of a PostgreSQL run.
    pub fn of_postgres() -> Self {
        let mut spent = Self::default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                spent.cpu_seconds += cpu_seconds(pid);
            }
        }
        spent
    }

    /// Per unit of work between `earlier` and now.
    pub fn per_unit(self, earlier: Spent, units: u64) -> CostPerUnit {
        let units = units.max(1) as f64;
        let voluntary = self.voluntary.saturating_sub(earlier.voluntary) as f64 / units;
        let involuntary = self.involuntary.saturating_sub(earlier.involuntary) as f64 / units;
        CostPerUnit {
            cpu_ms: (self.cpu_seconds - earlier.cpu_seconds) * 1000.0 / units,
            context_switches: voluntary + involuntary,
            voluntary,
            involuntary,
        }
    }
}

/// What one unit of a scenario's work (an event, a delivery, a webhook, a request) cost.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CostPerUnit {
    /// CPU milliseconds.
    pub cpu_ms: f64,
    /// Context switches, voluntary and involuntary.
    pub context_switches: f64,
    /// Of which voluntary.
    pub voluntary: f64,
    /// Of which involuntary.
    pub involuntary: f64,
}

impl std::fmt::Display for CostPerUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} ms CPU, {:.2} switches ({:.2} voluntary)", self.cpu_ms, self.context_switches, self.voluntary)
    }
}

/// The server's cost per unit, and the database's on PostgreSQL, over a measured window.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Costs {
    /// The `serve` process.
    pub server: CostPerUnit,
    /// Every `postgres` process, on PostgreSQL runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<CostPerUnit>,
}

/// Snapshots taken when a measured window opens.
pub struct Meter {
    server: Spent,
    database: Option<Spent>,
}

/// What a measured window spent, to divide by the units it did once they are counted.
pub struct Used {
    server: (Spent, Spent),
    database: Option<(Spent, Spent)>,
}

impl Meter {
    /// Starts measuring `server`, and PostgreSQL's processes when `postgres` is true.
    pub fn start(server: &Server, postgres: bool) -> Self {
        Self { server: server.spent(), database: postgres.then(Spent::of_postgres) }
    }

    /// Closes the window.
    pub fn stop(&self, server: &Server) -> Used {
        Used {
            server: (self.server, server.spent()),
            database: self.database.map(|earlier| (earlier, Spent::of_postgres())),
        }
    }
}

impl Used {
    /// The costs per unit of the window's work.
    pub fn per(&self, units: u64) -> Costs {
        Costs {
            server: self.server.1.per_unit(self.server.0, units),
            database: self.database.map(|(earlier, later)| later.per_unit(earlier, units)),
        }
    }
}

impl std::fmt::Display for Costs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server: {}", self.server)?;
        if let Some(database) = &self.database {
            write!(f, "; PostgreSQL: {:.3} ms CPU", database.cpu_ms)?;
        }
        Ok(())
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces, in parentheses: utime and stime
    // are the 14th and 15th fields, the 12th and 13th after it.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / TICKS_PER_SECOND
}
