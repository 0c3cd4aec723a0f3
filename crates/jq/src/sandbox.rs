//! The server's side: a few worker processes, each driven by a thread of its own.
//!
//! A job goes to whichever thread is free; that thread writes it to its worker and waits for
//! the answer for at most twice the job's time. A worker that does not answer by then is
//! killed (and the program condemned); one that dies on its own died of the memory limit (an
//! abort) or of something worse, and is started again for the next job. Waiting and killing
//! happen on plain threads, so neither the caller's runtime nor its shutdown is involved.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::worker::{FailureKind, Reply, WORKER_ENV};
use crate::{JqError, MAX_OUTPUT_BYTES, MAX_OUTPUTS, MEMORY_LIMIT_BYTES};

/// The longest answer a worker can give (its outputs are bounded), with room for the frame.
const MAX_REPLY_BYTES: usize = MAX_OUTPUTS * (MAX_OUTPUT_BYTES + 64) + 64 * 1024;

pub(crate) struct Job {
    program: Arc<str>,
    input: Vec<u8>,
    limit: Duration,
    /// Past this the caller has given up: the job is dropped instead of started.
    deadline: Instant,
    condemned: Arc<OnceLock<JqError>>,
    reply: oneshot::Sender<Result<Vec<Value>, JqError>>,
}

impl Job {
    pub(crate) fn new(
        program: Arc<str>,
        input: Vec<u8>,
        limit: Duration,
        condemned: Arc<OnceLock<JqError>>,
    ) -> (Self, oneshot::Receiver<Result<Vec<Value>, JqError>>) {
        let (reply, answer) = oneshot::channel();
        (Self { program, input, limit, deadline: Instant::now() + limit, condemned, reply }, answer)
    }
}

/// What the workers have done since this process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// Worker threads (each with at most one worker process).
    pub workers: u64,
    /// Worker processes started.
    pub started: u64,
    /// Programs evaluated to an answer (results or the program's own error).
    pub evaluated: u64,
    /// Workers killed because a program outlived twice its time.
    pub killed_for_time: u64,
    /// Workers that died at the memory limit.
    pub killed_for_memory: u64,
    /// Workers that died of anything else.
    pub crashed: u64,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    evaluated: AtomicU64,
    killed_for_time: AtomicU64,
    killed_for_memory: AtomicU64,
    crashed: AtomicU64,
}

struct Sandbox {
    jobs: Mutex<Sender<Job>>,
    workers: u64,
    counters: Arc<Counters>,
}

static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    // Keeps the worker module, and its constructor, in every binary that runs programs.
    std::hint::black_box(crate::worker::linked());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let (jobs, queue) = channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    let counters = Arc::new(Counters::default());
    for n in 0..workers {
        let (queue, counters) = (queue.clone(), counters.clone());
        std::thread::Builder::new()
            .name(format!("jq-{n}"))
            .spawn(move || drive(&queue, &counters))
            .expect("a thread for a jq worker");
    }
    Sandbox { jobs: Mutex::new(jobs), workers: workers as u64, counters }
});

/// Starts the workers now rather than at the first program.
pub fn warm_up() {
    LazyLock::force(&SANDBOX);
}

/// The workers' counters.
pub fn stats() -> SandboxStats {
    let sandbox = &*SANDBOX;
    let c = &sandbox.counters;
    SandboxStats {
        workers: sandbox.workers,
        started: c.started.load(Ordering::Relaxed),
        evaluated: c.evaluated.load(Ordering::Relaxed),
        killed_for_time: c.killed_for_time.load(Ordering::Relaxed),
        killed_for_memory: c.killed_for_memory.load(Ordering::Relaxed),
        crashed: c.crashed.load(Ordering::Relaxed),
    }
}

pub(crate) fn submit(
    (job, answer): (Job, oneshot::Receiver<Result<Vec<Value>, JqError>>),
) -> oneshot::Receiver<Result<Vec<Value>, JqError>> {
    // A send fails only if every worker thread is gone; the dropped job then closes `answer`.
    let _ = SANDBOX.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job);
    answer
}

/// One worker thread: takes jobs, keeps one worker process alive for them.
fn drive(queue: &Mutex<Receiver<Job>>, counters: &Counters) {
    let mut worker = Worker::start(counters).ok();
    loop {
        let job = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if Instant::now() >= job.deadline || job.reply.is_closed() {
            continue;
        }
        let process = match worker.take() {
            Some(process) => process,
            None => match Worker::start(counters) {
                Ok(process) => process,
                Err(error) => {
                    let _ = job.reply.send(Err(JqError::Unavailable(format!("no worker process: {error}"))));
                    continue;
                }
            },
        };
        let (result, kept) = process.evaluate(&job, counters);
        if let Err(error @ (JqError::TimedOut(_) | JqError::OutOfMemory(_))) = &result
            && job.condemned.set(error.clone()).is_ok()
        {
            tracing::warn!(%error, "a jq program was stopped; it answers this error at once for a while");
        }
        let _ = job.reply.send(result);
        worker = kept;
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Worker {
    fn start(counters: &Counters) -> std::io::Result<Self> {
        // The running executable, even if its file was replaced since (an upgrade in place).
        let executable = if cfg!(target_os = "linux") {
            std::path::PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe()?
        };
        let mut child = Command::new(executable)
            .arg0("switchboard-jq-worker")
            // A worker needs nothing from the server's environment, which may hold secrets.
            .env_clear()
            .env(WORKER_ENV, MEMORY_LIMIT_BYTES.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // An abort at the memory limit prints a line; the sandbox reports it instead.
            .stderr(Stdio::null())
            .spawn()?;
        counters.started.fetch_add(1, Ordering::Relaxed);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Ok(Self { child, stdin, stdout })
    }

    /// Runs one job; gives the worker back if it can take another.
    fn evaluate(mut self, job: &Job, counters: &Counters) -> (Result<Vec<Value>, JqError>, Option<Self>) {
        let kill_at = Instant::now() + job.limit * 2;
        let mut request = Vec::with_capacity(job.input.len() + job.program.len() + 32);
        request.extend_from_slice(br#"{"program":"#);
        serde_json::to_writer(&mut request, &*job.program).expect("a string serialises");
        request.extend_from_slice(br#","input":"#);
        request.extend_from_slice(&job.input);
        request.extend_from_slice(b"}\n");
        if self.stdin.write_all(&request).is_err() {
            return (Err(self.died(counters)), None);
        }
        let line = match self.read_line(kill_at) {
            Ok(Some(line)) => line,
            Ok(None) => return (Err(self.died(counters)), None),
            Err(()) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                counters.killed_for_time.fetch_add(1, Ordering::Relaxed);
                return (Err(JqError::TimedOut(job.limit)), None);
            }
        };
        let reply: Reply = match serde_json::from_slice(&line) {
            Ok(reply) => reply,
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (Err(JqError::Unavailable(format!("the worker answered nonsense: {e}"))), None);
            }
        };
        counters.evaluated.fetch_add(1, Ordering::Relaxed);
        let kept = if reply.retire {
            let _ = self.child.wait();
            None
        } else {
            Some(self)
        };
        (outcome(reply), kept)
    }

    /// The next line from the worker; `Ok(None)` if it died, `Err` if it is still silent at
    /// `kill_at`.
    fn read_line(&mut self, kill_at: Instant) -> Result<Option<Vec<u8>>, ()> {
        let mut line = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let left = kill_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(());
            }
            let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Ok(None),
            }
            match self.stdout.read(&mut chunk) {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => {
                    line.extend_from_slice(&chunk[..n]);
                    if line.last() == Some(&b'\n') {
                        return Ok(Some(line));
                    }
                    if line.len() > MAX_REPLY_BYTES {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Reaps a worker that stopped answering, and says why it stopped.
    fn died(mut self, counters: &Counters) -> JqError {
        // Its pipe closed because it is exiting; give it a moment to finish before judging.
        let mut status = None;
        for _ in 0..100 {
            match self.child.try_wait() {
                Ok(Some(exited)) => {
                    status = Some(exited);
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        let Some(status) = status else {
            // Still alive but no longer making sense (an answer too long): not the memory limit.
            let _ = self.child.kill();
            let _ = self.child.wait();
            counters.crashed.fetch_add(1, Ordering::Relaxed);
            return JqError::Unavailable("the worker stopped answering sensibly".into());
        };
        match status.signal() {
            // Rust aborts when an allocation fails at the address-space limit; the kernel's
            // out-of-memory killer sends SIGKILL.
            Some(signal) if signal == nix::libc::SIGABRT || signal == nix::libc::SIGKILL => {
                counters.killed_for_memory.fetch_add(1, Ordering::Relaxed);
                JqError::OutOfMemory(MEMORY_LIMIT_BYTES)
            }
            other => {
                counters.crashed.fetch_add(1, Ordering::Relaxed);
                let how = other.map_or_else(|| format!("exited with {status}"), |signal| format!("signal {signal}"));
                JqError::Unavailable(format!("the worker stopped ({how})"))
            }
        }
    }
}

fn outcome(reply: Reply) -> Result<Vec<Value>, JqError> {
    if let Some(error) = reply.error {
        return Err(match reply.kind {
            Some(FailureKind::Output) => JqError::Output(error),
            Some(FailureKind::Compile) => JqError::Compile { message: error, position: 0 },
            Some(FailureKind::Runtime) | None => JqError::Runtime(error),
        });
    }
    reply
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|raw| serde_json::from_str(raw.get()).map_err(|e| JqError::Output(format!("not JSON: {e}"))))
        .collect()
}
