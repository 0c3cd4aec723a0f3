//! The worker's side: a process that evaluates one program at a time, under a hard limit.
//!
//! [`sandbox`](crate::sandbox) starts the running executable again with [`WORKER_ENV`] set to
//! the memory limit; the constructor below sees it before `main` (before a test harness, a
//! CLI parser or a runtime could start) and turns the process into a worker. The loop keeps
//! to what is safe before `main`: plain reads and writes on file descriptors 0 and 1,
//! allocation, and no panic escaping (one is caught and answered as an error).
//!
//! The address-space limit is set relative to what the process already maps, so it bounds
//! what a program adds whatever the executable's size. When an allocation hits it, Rust
//! aborts the process: the sandbox reads that as "out of memory".
//!
//! Protocol, one JSON document per line each way:
//! `{"program": "…", "input": …}` → `{"outputs": [… ]}` or `{"error": "…", "kind": "compile" | "runtime" | "output"}`,
//! each with `"retire": true` when the worker is about to exit because it once held more
//! memory than it should keep between programs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use jaq_core::{Ctx, Vars};
use jaq_json::Val;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::compile::{Filter, compile};
use crate::{MAX_OUTPUT_BYTES, MAX_OUTPUTS};

/// Set (to the memory limit in bytes) in a worker's environment.
pub(crate) const WORKER_ENV: &str = "SWITCHBOARD_JQ_WORKER";

/// A worker whose resident memory once grew this much beyond where it started exits after
/// answering: what one large evaluation took is given back to the system for certain, not
/// left to the allocator's judgement (a fragmented heap keeps what it once held).
const RETIRE_ABOVE_BYTES: u64 = 64 * 1024 * 1024;
/// Compiled programs kept by one worker.
const CACHED_PROGRAMS: usize = 256;

#[derive(Deserialize)]
pub(crate) struct Request<'a> {
    #[serde(borrow)]
    program: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    input: &'a RawValue,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<Box<RawValue>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    #[serde(default)]
    pub retire: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailureKind {
    Compile,
    Runtime,
    Output,
}

/// Referenced by the sandbox so the linker keeps this module, constructor included.
pub(crate) fn linked() -> bool {
    std::hint::black_box(true)
}

#[ctor::ctor(unsafe)]
fn become_a_worker_when_asked() {
    if let Some(limit) = std::env::var_os(WORKER_ENV) {
        let limit = limit.to_str().and_then(|text| text.parse().ok()).unwrap_or(crate::MEMORY_LIMIT_BYTES);
        // jaq's stack, reserved before the address-space limit is set from what is mapped.
        let serving = std::thread::Builder::new().stack_size(crate::compile::STACK_BYTES).spawn(move || serve(limit));
        if let Ok(serving) = serving {
            let _ = serving.join();
        }
        // SAFETY: `_exit` ends the process without running anything else of the host binary.
        unsafe { nix::libc::_exit(0) }
    }
}

fn serve(memory_limit: u64) {
    confine(memory_limit);
    let started_resident = resident_bytes();
    // SAFETY: descriptors 0 and 1 are the pipes the sandbox gave this process; they are
    // never closed here (ManuallyDrop), only read and written.
    let input = ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let mut output = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let mut lines = BufReader::new(&*input);
    let mut line = Vec::new();
    let mut programs: HashMap<String, Filter> = HashMap::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut reply = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(&line, &mut programs))) {
            Ok(reply) => reply,
            Err(_) => failure(FailureKind::Runtime, "the program stopped abnormally".into()),
        };
        reply.retire = peak_resident_bytes().saturating_sub(started_resident) > RETIRE_ABOVE_BYTES;
        let Ok(mut text) = serde_json::to_vec(&reply) else { return };
        text.push(b'\n');
        if output.write_all(&text).is_err() || reply.retire {
            return;
        }
    }
}

/// Limits this process: no core dumps, a hard address-space cap, and death with the server.
fn confine(memory_limit: u64) {
    use nix::sys::resource::{Resource, setrlimit};
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    let cap = mapped_bytes().saturating_add(memory_limit);
    // Soft and hard alike, so nothing in the worker can raise it again.
    let _ = setrlimit(Resource::RLIMIT_AS, cap, cap);
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

/// (mapped, resident) bytes of this process, from `/proc/self/statm`.
fn statm() -> (u64, u64) {
    // SAFETY: sysconf only reads a constant of the system.
    let page = u64::try_from(unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut pages = text.split_whitespace().map(|field| field.parse::<u64>().unwrap_or(0));
    let mapped = pages.next().unwrap_or(0);
    let resident = pages.next().unwrap_or(0);
    (mapped * page, resident * page)
}

fn mapped_bytes() -> u64 {
    statm().0
}

fn resident_bytes() -> u64 {
    statm().1
}

/// The most this process has ever had resident (`VmHWM`).
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.map_or_else(resident_bytes, |kib| kib * 1024)
}

fn failure(kind: FailureKind, error: String) -> Reply {
    Reply { outputs: None, error: Some(error), kind: Some(kind), retire: false }
}

fn answer(line: &[u8], programs: &mut HashMap<String, Filter>) -> Reply {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => return failure(FailureKind::Runtime, format!("malformed request: {e}")),
    };
    let program = &*request.program;
    if !programs.contains_key(program) {
        let filter = match compile(program) {
            Ok(filter) => filter,
            Err(e) => return failure(FailureKind::Compile, e.to_string()),
        };
        if programs.len() >= CACHED_PROGRAMS {
            programs.clear();
        }
        programs.insert(program.to_string(), filter);
    }
    let filter = &programs[program];
    match evaluate(filter, request.input) {
        Ok(outputs) => Reply { outputs: Some(outputs), error: None, kind: None, retire: false },
        Err((kind, error)) => failure(kind, error),
    }
}

fn evaluate(filter: &Filter, input: &RawValue) -> Result<Vec<Box<RawValue>>, (FailureKind, String)> {
    let input: Val = serde_json::from_str(input.get()).map_err(|e| (FailureKind::Runtime, e.to_string()))?;
    let ctx = Ctx::<crate::compile::Data>::new(&filter.lut, Vars::new([]));
    let mut outputs = Vec::new();
    for output in filter.id.run((ctx, input)) {
        // Not jaq's `unwrap_valr`: it exits the process on `halt`.
        let value = output.map_err(|exception| match exception.get_err() {
            Ok(error) => (FailureKind::Runtime, error.into_val().to_string()),
            Err(_) => (FailureKind::Runtime, "the program stopped abnormally".into()),
        })?;
        if outputs.len() == MAX_OUTPUTS {
            return Err((FailureKind::Output, format!("the program yields more than {MAX_OUTPUTS} values")));
        }
        let text = value.to_string();
        if text.len() > MAX_OUTPUT_BYTES {
            return Err((FailureKind::Output, format!("a result is larger than {MAX_OUTPUT_BYTES} bytes")));
        }
        let raw = RawValue::from_string(text).map_err(|e| (FailureKind::Output, format!("not JSON: {e}")))?;
        outputs.push(raw);
    }
    Ok(outputs)
}
