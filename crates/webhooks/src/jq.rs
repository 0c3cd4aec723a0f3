//! jq filters and transforms (through jaq), with bounded work.
//!
//! jaq has no fuel or interruption, and unbounded recursion overflows the stack, which aborts
//! the whole process. So programs are refused at compile time when they could recurse
//! without bound (`def`, `recurse(f)`, `repeat`, `while`, `until`) or reach outside their
//! input (`env`, `input`, `halt`, `debug`…); recursion over the input itself (`..`) is
//! bounded by the input's depth. What remains can still loop for long (`last(range(1e12))`):
//! evaluation runs on a thread of its own under a deadline; a program that misses it is
//! reported as timed out, and one still running after twice its time is never run again
//! ("poisoned"). [`ProgramCache`] shares one
//! compiled program (and its poison) among all who use the same text, so a runaway text
//! holds at most one thread, and at most [`MAX_THREADS`] evaluations exist at once: when
//! runaways hold them all, jq fails fast instead of the process filling up with threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;
use serde_json::Value;

type Data = data::JustLut<Val>;
type Filter = jaq_core::Filter<Data>;

/// The most outputs a program may produce; more is an error.
const MAX_OUTPUTS: usize = 16;
/// The largest transform result, in bytes of JSON.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The most evaluations running at once in this process.
pub const MAX_THREADS: usize = 32;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_THREADS);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JqError {
    /// The program does not parse or names something undefined; `position` is a byte
    /// offset into the program text.
    #[error("{message} at position {position}")]
    Compile { message: String, position: usize },
    #[error("{0}")]
    Runtime(String),
    #[error("the program ran longer than {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Output(String),
}

/// A compiled jq program. Cheap to share.
#[derive(Clone)]
pub struct JqProgram {
    filter: Option<Arc<Filter>>,
    poisoned: Arc<AtomicBool>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqProgram")
    }
}

fn offset(code: &str, at: &str) -> usize {
    (at.as_ptr() as usize).saturating_sub(code.as_ptr() as usize).min(code.len())
}

impl JqProgram {
    pub fn compile(code: &str) -> Result<Self, JqError> {
        check_identifiers(code)?;
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs::<Data>().chain(jaq_std::funs::<Data>()).chain(jaq_json::funs::<Data>());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errors| {
            let (_, error) = errors.into_iter().next().expect("an error list is never empty");
            match error {
                jaq_core::load::Error::Io(e) => {
                    JqError::Compile { message: e.first().map(|(_, m)| m.clone()).unwrap_or_default(), position: 0 }
                }
                jaq_core::load::Error::Lex(e) => {
                    let (expected, at) = &e[0];
                    JqError::Compile { message: format!("expected {}", expected.as_str()), position: offset(code, at) }
                }
                jaq_core::load::Error::Parse(e) => {
                    let (expected, at) = &e[0];
                    let found = if at.is_empty() { "end of input".to_string() } else { format!("{at:?}") };
                    JqError::Compile {
                        message: format!("expected {} but found {found}", expected.as_str()),
                        position: offset(code, at),
                    }
                }
            }
        })?;
        let filter = Compiler::default().with_funs(funs).compile(modules).map_err(|errors| {
            let (_, undefined) = errors.into_iter().next().expect("an error list is never empty");
            let (name, what) = &undefined[0];
            JqError::Compile { message: format!("undefined {} {name:?}", what.as_str()), position: offset(code, name) }
        })?;
        Ok(Self { filter: Some(Arc::new(filter)), poisoned: Arc::new(AtomicBool::new(false)) })
    }

    /// A program that never yields anything: stands in for one that no longer compiles.
    pub fn never() -> Self {
        Self { filter: None, poisoned: Arc::new(AtomicBool::new(false)) }
    }

    /// Runs the program to completion on this thread.
    fn run_here(filter: &Filter, input: Value) -> Result<Vec<Value>, JqError> {
        let input: Val = serde_json::from_value(input).map_err(|e| JqError::Runtime(e.to_string()))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
        let mut outputs = Vec::new();
        for output in filter.id.run((ctx, input)) {
            // Not jaq's `unwrap_valr`: it exits the process on `halt`.
            let value = output.map_err(|exception| match exception.get_err() {
                Ok(error) => JqError::Runtime(error.into_val().to_string()),
                Err(_) => JqError::Runtime("the program stopped abnormally".into()),
            })?;
            if outputs.len() == MAX_OUTPUTS {
                return Err(JqError::Output(format!("the program yields more than {MAX_OUTPUTS} values")));
            }
            let text = value.to_string();
            if text.len() > MAX_OUTPUT_BYTES {
                return Err(JqError::Output(format!("a result is larger than {MAX_OUTPUT_BYTES} bytes")));
            }
            outputs.push(serde_json::from_str(&text).map_err(|e| JqError::Output(format!("not JSON: {e}")))?);
        }
        Ok(outputs)
    }

    /// Runs the program on a blocking thread, giving up after `limit`.
    pub async fn run(&self, input: Value, limit: Duration) -> Result<Vec<Value>, JqError> {
        let Some(filter) = self.filter.clone() else { return Ok(Vec::new()) };
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(JqError::TimedOut(limit));
        }
        let deadline = tokio::time::Instant::now() + limit;
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, RUNNING.acquire()).await else {
            return Err(JqError::Runtime("every jq thread is busy; try again later".into()));
        };
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        // A thread of its own, not the runtime's blocking pool: a runtime waits for its
        // blocking tasks when it shuts down, and a runaway program would hold that up.
        let spawned = std::thread::Builder::new().name("jq".into()).spawn(move || {
            let _ = reply.send(Self::run_here(&filter, input));
            drop(permit);
        });
        if let Err(error) = spawned {
            return Err(JqError::Runtime(format!("no thread to run the program: {error}")));
        }
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(JqError::Runtime("the program crashed".into())),
            Err(_) => {
                // A program still running after twice its time is a runaway, and is never
                // run again. The grace keeps a program that merely waited for a CPU on a
                // busy machine from being condemned.
                let poisoned = self.poisoned.clone();
                tokio::spawn(async move {
                    if tokio::time::timeout(limit, answer).await.is_err() {
                        poisoned.store(true, Ordering::Relaxed);
                    }
                });
                Err(JqError::TimedOut(limit))
            }
        }
    }

    /// A filter passes when its first output is `true`; errors and timeouts do not pass.
    pub async fn is_true(&self, input: Value, limit: Duration) -> bool {
        matches!(self.run(input, limit).await.as_deref(), Ok([Value::Bool(true), ..]))
    }

    /// A transform must yield exactly one value.
    pub async fn transform(&self, input: Value, limit: Duration) -> Result<Value, JqError> {
        let mut outputs = self.run(input, limit).await?;
        match outputs.len() {
            1 => Ok(outputs.remove(0)),
            n => Err(JqError::Output(format!("a transform must yield exactly one value, not {n}"))),
        }
    }
}

/// Compiled programs by their text, shared by every endpoint that uses the same text.
#[derive(Debug, Default)]
pub struct ProgramCache {
    programs: Mutex<HashMap<String, Result<JqProgram, JqError>>>,
}

/// Programs kept at most; beyond that the cache starts afresh (poisoned programs included,
/// which then get one more chance each).
const CACHED_PROGRAMS: usize = 10_000;

impl ProgramCache {
    pub fn get(&self, code: &str) -> Result<JqProgram, JqError> {
        let mut programs = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(program) = programs.get(code) {
            return program.clone();
        }
        let program = JqProgram::compile(code);
        if programs.len() >= CACHED_PROGRAMS {
            programs.clear();
        }
        programs.insert(code.to_string(), program.clone());
        program
    }
}

/// Names a program may not use: unbounded recursion, or access beyond its input.
const FORBIDDEN: &[&str] = &[
    "def",
    "recurse",
    "recurse_down",
    "repeat",
    "while",
    "until",
    "env",
    "$ENV",
    "input",
    "inputs",
    "halt",
    "halt_error",
    "debug",
    "stderr",
    "input_filename",
    "$__loc__",
    "import",
    "include",
];

/// Scans the program's identifiers (outside string literals, inside interpolations).
fn check_identifiers(code: &str) -> Result<(), JqError> {
    let bytes = code.as_bytes();
    let (mut i, mut in_string, mut interpolation_depth) = (0, false, Vec::<usize>::new());
    let mut parens = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' if bytes.get(i + 1) == Some(&b'(') => {
                    interpolation_depth.push(parens);
                    parens += 1;
                    in_string = false;
                    i += 2;
                }
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                parens += 1;
                i += 1;
            }
            b')' => {
                parens = parens.saturating_sub(1);
                if interpolation_depth.last() == Some(&parens) {
                    interpolation_depth.pop();
                    in_string = true;
                }
                i += 1;
            }
            b if b.is_ascii_alphabetic() || b == b'_' || b == b'$' => {
                let start = i;
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
                    i += 1;
                }
                let word = &code[start..i];
                // `.name` is a field access, not a call.
                let is_field = start > 0 && bytes[start - 1] == b'.';
                if !is_field && FORBIDDEN.contains(&word) {
                    return Err(JqError::Compile {
                        message: format!("{word:?} is not allowed here (unbounded work or access beyond the input)"),
                        position: start,
                    });
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn filters_and_transforms_run_on_json() {
        let filter = JqProgram::compile(".data.amount > 10").unwrap();
        assert!(filter.is_true(json!({"data": {"amount": 12}}), LIMIT).await);
        assert!(!filter.is_true(json!({"data": {"amount": 2}}), LIMIT).await);
        let transform = JqProgram::compile(r#"{kind: .type, total: (.data.items | map(.price) | add)}"#).unwrap();
        let input = json!({"type": "order.paid", "data": {"items": [{"price": 2}, {"price": 3.5}]}});
        assert_eq!(transform.transform(input, LIMIT).await.unwrap(), json!({"kind": "order.paid", "total": 5.5}));
    }

    #[test]
    fn compile_errors_say_what_and_where() {
        let Err(JqError::Compile { message, position }) = JqProgram::compile(".foo | bar(") else { panic!() };
        assert!(position >= 7, "{message} at {position}");
        let Err(JqError::Compile { message, position }) = JqProgram::compile(".a | nosuchfn") else { panic!() };
        assert!(message.contains("nosuchfn"), "{message}");
        assert_eq!(position, 5);
    }

    #[test]
    fn programs_that_could_recurse_forever_or_escape_are_refused() {
        for (code, word, position) in [
            ("def f: f; f", "def", 0),
            (".a | recurse(.b)", "recurse", 5),
            ("[repeat(1)]", "repeat", 1),
            ("until(false; .)", "until", 0),
            ("env.HOME", "env", 0),
            ("$ENV.PATH", "$ENV", 0),
            (r#""\(halt)""#, "halt", 3),
        ] {
            let Err(JqError::Compile { message, position: at }) = JqProgram::compile(code) else { panic!("{code}") };
            assert!(message.contains(word), "{code}: {message}");
            assert_eq!(at, position, "{code}");
        }
        // The same words as field names or inside strings are fine, and `..` is allowed.
        assert!(JqProgram::compile(r#".env, .def, "until", [..] | length"#).is_ok());
    }

    #[tokio::test]
    async fn runtime_errors_and_runaway_programs_are_contained() {
        let failing = JqProgram::compile(r#"error("boom")"#).unwrap();
        assert!(matches!(failing.run(json!(null), LIMIT).await, Err(JqError::Runtime(m)) if m.contains("boom")));
        let many = JqProgram::compile("range(100)").unwrap();
        assert!(matches!(many.run(json!(null), LIMIT).await, Err(JqError::Output(_))));
        assert!(matches!(many.transform(json!(null), LIMIT).await, Err(JqError::Output(_))));
        let endless = JqProgram::compile("last(range(1e15))").unwrap();
        let short = Duration::from_millis(50);
        assert_eq!(endless.run(json!(null), short).await, Err(JqError::TimedOut(short)));
        wait_until_poisoned(&endless).await;
        assert!(!endless.is_true(json!(null), short).await, "a poisoned program is not run again");
    }

    async fn wait_until_poisoned(program: &JqProgram) {
        for _ in 0..500 {
            if program.poisoned.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the runaway program was not poisoned");
    }

    #[tokio::test]
    async fn one_text_is_one_program_so_its_poison_is_shared() {
        let cache = ProgramCache::default();
        let short = Duration::from_millis(50);
        let first = cache.get("last(range(1e15)) | . + 1").unwrap();
        assert_eq!(first.run(json!(null), short).await, Err(JqError::TimedOut(short)));
        wait_until_poisoned(&first).await;
        let again = cache.get("last(range(1e15)) | . + 1").unwrap();
        assert!(again.poisoned.load(Ordering::Relaxed), "the same text comes back poisoned");
        assert!(matches!(cache.get(".a | ("), Err(JqError::Compile { .. })));
    }
}
