//! Running `switchboard` as a child process: a served instance with its address and first
//! admin key, stopped by signal or reaped on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

pub fn command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("SWITCHBOARD_") || name == "DATABASE_URL" {
            cmd.env_remove(name);
        }
    }
    // No drain after SIGTERM unless a test asks for one: stops are instant.
    cmd.arg("--data-dir").arg(data_dir).env("RUST_LOG", "warn").env("SWITCHBOARD_DRAIN_SECS", "0");
    cmd
}

/// A running `switchboard serve`.
pub struct Serve {
    pub child: Child,
    pub base: String,
    pub admin_line: Option<String>,
}

impl Serve {
    pub fn start(mut cmd: Command) -> Self {
        cmd.arg("serve");
        Self::start_with_args(cmd)
    }

    /// Starts `cmd`, which already names `serve` and any of its flags.
    pub fn start_with_args(cmd: Command) -> Self {
        Self::start_logging_to(cmd, Stdio::inherit())
    }

    /// Like [`Self::start_with_args`], with the process's log (stderr) going to `log`.
    pub fn start_logging_to(mut cmd: Command, log: impl Into<Stdio>) -> Self {
        let mut child = cmd.args(["--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Owned from here on, so the child is reaped even if the wait below fails.
        let mut serve = Self { child, base: String::new(), admin_line: None };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx.recv_timeout(Duration::from_secs(60)).expect("serve printed its address");
            if line.starts_with("Admin API key:") {
                assert!(serve.admin_line.is_none(), "the admin key is printed once");
                serve.admin_line = Some(line);
            } else if let Some(address) = line.strip_prefix("Listening on ") {
                serve.base = address.to_string();
                return serve;
            }
        }
    }

    pub fn admin_key(&self) -> String {
        self.admin_line.as_ref().expect("first start prints the admin key")["Admin API key: ".len()..].to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(self) -> i32 {
        self.signal(nix::sys::signal::Signal::SIGTERM).expect("exited, not killed")
    }

    /// Sends `signal` and returns the exit code (`None` when the signal killed it).
    pub fn signal(self, signal: nix::sys::signal::Signal) -> Option<i32> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
        self.signal_exit()
    }

    /// Waits up to 15 s for the process to exit after a signal sent already, and returns its
    /// exit code (`None` when the signal killed it).
    pub fn signal_exit(mut self) -> Option<i32> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not stop within 15 s of its signal");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A fresh PostgreSQL schema for `serve` processes to share, as a database URL.
pub async fn postgres_url() -> (switchboard_store::testing::TestDb, String) {
    let db = switchboard_store::testing::TestDb::postgres();
    db.open().await.close().await; // creates the schema
    let schema = db.options.pg_schema.clone().unwrap();
    let url = format!("{}?options=-c%20search_path%3D{schema}", db.options.url);
    (db, url)
}

/// A master key ring for processes that must share one.
pub const SHARED_MASTER_KEY: &str = "mk_test:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
