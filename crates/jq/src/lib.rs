//! jq programs (through jaq), evaluated where they cannot hurt the server.
//!
//! Whoever holds a write key can give a jq program, and jq can be told to allocate without
//! bound (`[range(1e11)]`) or to loop for as long as it likes (`last(range(1e15))`). jaq has
//! no fuel and no allocation cap, and a thread cannot be stopped from outside, so a deadline
//! in the server would stop the caller waiting but not the evaluation. Programs therefore run
//! in worker processes ([`sandbox`]): each lives under a hard address-space limit
//! ([`MEMORY_LIMIT_BYTES`], enforced by the kernel) and is killed when a program outlives
//! twice its time. A breach costs one worker process, which is started again; the server's
//! own memory never sees the program's data.
//!
//! Any binary that links this crate can be its own worker: the worker is the same executable
//! started again with an environment variable that a constructor ([`worker`]) checks before
//! `main`. So the `switchboard` binary, the benchmarks and every test binary work alike, with
//! nothing to install.
//!
//! Compiling stays in the server: it is linear in the program's text, which is bounded
//! ([`MAX_PROGRAM_BYTES`]), and it is where programs that could recurse without bound or
//! reach outside their input are refused ([`compile`]).

#![warn(missing_docs)]

mod compile;
mod sandbox;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use switchboard_core::Timestamp;

pub use sandbox::{SandboxStats, stats, warm_up};

/// The longest program text accepted.
pub const MAX_PROGRAM_BYTES: usize = 16 * 1024;
/// The most outputs a program may produce; more is an error.
pub const MAX_OUTPUTS: usize = 16;
/// The largest single result, in bytes of JSON.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The address space a worker may add to what it had when it started: the program's input,
/// its intermediate values and its outputs all live in it.
pub const MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// Why a jq program was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JqError {
    /// The program does not parse, names something undefined or something not allowed;
    /// `position` is a byte offset into the program text.
    #[error("{message} at position {position}")]
    Compile {
        /// What is wrong.
        message: String,
        /// Where, as a byte offset into the program text.
        position: usize,
    },
    /// The program raised an error (`error("…")`, a type error, …).
    #[error("{0}")]
    Runtime(String),
    /// The program ran longer than it was given.
    #[error("the program ran longer than {0:?}")]
    TimedOut(Duration),
    /// The program needed more memory than a worker may use.
    #[error("the program needed more than {} MiB of memory", .0 / (1024 * 1024))]
    OutOfMemory(u64),
    /// The program's results break the limits, or are not JSON.
    #[error("{0}")]
    Output(String),
    /// No worker could evaluate the program (it could not be started, or it crashed).
    #[error("jq is unavailable: {0}")]
    Unavailable(String),
}

/// A compiled jq program. Cheap to share.
///
/// A program that had to be killed (it outlived twice its time, or exceeded the memory
/// limit) is not run again: it answers the error that condemned it at once, so one runaway
/// text costs one worker once, not once per event. [`ProgramCache`] forgets the verdict after
/// a while.
#[derive(Clone)]
pub struct JqProgram {
    text: Result<Arc<str>, JqError>,
    condemned: Arc<OnceLock<JqError>>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqProgram")
    }
}

impl JqProgram {
    /// Checks and compiles a program; the compiled form is only proof that it compiles (the
    /// workers compile it again, once per text).
    pub fn compile(code: &str) -> Result<Self, JqError> {
        compile::check(code)?;
        Ok(Self { text: Ok(code.into()), condemned: Arc::default() })
    }

    /// Stands in for a stored program that no longer compiles (a newer jq dialect): every run
    /// fails with that error, so a filter matches nothing and a transform sends nothing.
    pub fn broken(error: JqError) -> Self {
        let message = format!("the stored program no longer compiles: {error}");
        Self { text: Err(JqError::Compile { message, position: 0 }), condemned: Arc::default() }
    }

    /// The error that condemned this program, if it was killed once.
    pub fn condemned(&self) -> Option<&JqError> {
        self.condemned.get()
    }

    /// Runs the program on `input` in a worker, giving up after `limit` (waiting for a free
    /// worker included).
    pub async fn run(&self, input: &Value, limit: Duration) -> Result<Vec<Value>, JqError> {
        let text = self.text.as_ref().map_err(Clone::clone)?;
        if let Some(error) = self.condemned.get() {
            return Err(error.clone());
        }
        let input = serde_json::to_vec(input).map_err(|e| JqError::Runtime(e.to_string()))?;
        let answer = sandbox::submit(sandbox::Job::new(text.clone(), input, limit, self.condemned.clone()));
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(JqError::Unavailable("the evaluation was abandoned".into())),
            Err(_) => Err(JqError::TimedOut(limit)),
        }
    }

    /// A filter passes when its first output is `true`; errors and timeouts do not pass.
    pub async fn is_true(&self, input: &Value, limit: Duration) -> bool {
        matches!(self.run(input, limit).await.as_deref(), Ok([Value::Bool(true), ..]))
    }

    /// A transform must yield exactly one value.
    pub async fn transform(&self, input: &Value, limit: Duration) -> Result<Value, JqError> {
        let mut outputs = self.run(input, limit).await?;
        match outputs.len() {
            1 => Ok(outputs.remove(0)),
            n => Err(JqError::Output(format!("a transform must yield exactly one value, not {n}"))),
        }
    }
}

/// Compiled programs by owner and text. One owner's uses of the same text share one program,
/// and so its verdict; another owner's runaway program cannot condemn it.
#[derive(Debug, Default)]
pub struct ProgramCache {
    /// By owner, then by text: looked up without allocating, on every delivery.
    programs: Mutex<HashMap<String, HashMap<String, Cached>>>,
}

#[derive(Debug)]
struct Cached {
    program: Result<JqProgram, JqError>,
    compiled_at: Timestamp,
}

/// Programs kept at most; beyond that the cache starts afresh (condemned programs included,
/// which then get one more chance each).
const CACHED_PROGRAMS: usize = 10_000;

/// How long a condemned program answers its verdict before it is given another chance: long
/// enough that a runaway program costs a worker a few times an hour at most, short enough
/// that a program killed on a bad day (a loaded machine) recovers on its own.
pub const CONDEMNED_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

impl ProgramCache {
    /// The program for `code` as `owner` (a tenant) uses it; `now` from the caller's clock.
    pub fn get(&self, owner: &str, code: &str, now: Timestamp) -> Result<JqProgram, JqError> {
        let mut programs = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = programs.get(owner).and_then(|texts| texts.get(code)) {
            let condemned = matches!(&cached.program, Ok(program) if program.condemned().is_some());
            if !condemned || now - cached.compiled_at < CONDEMNED_FOR {
                return cached.program.clone();
            }
        }
        let program = JqProgram::compile(code);
        let texts = programs.values().map(HashMap::len).sum::<usize>();
        if texts >= CACHED_PROGRAMS {
            programs.clear();
        }
        let cached = Cached { program: program.clone(), compiled_at: now };
        programs.entry(owner.to_string()).or_default().insert(code.to_string(), cached);
        program
    }
}
