//! Compiling a program: its text bounded, names that could recurse without bound or reach
//! outside the input refused, then jaq's loader and compiler.
//!
//! What remains can still loop for long or allocate without bound; that is the workers'
//! business ([`crate::sandbox`]). Recursion over the input itself (`..`) is bounded by the
//! input's depth.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, data};
use jaq_json::Val;

use crate::{JqError, MAX_PROGRAM_BYTES};

pub(crate) type Data = data::JustLut<Val>;
pub(crate) type Filter = jaq_core::Filter<Data>;

fn offset(code: &str, at: &str) -> usize {
    (at.as_ptr() as usize).saturating_sub(code.as_ptr() as usize).min(code.len())
}

/// The stack jaq gets to parse, compile and run a program: its parser and evaluator recurse
/// once per level of nesting (a pipe, an operator, a binding), and a program of
/// [`MAX_PROGRAM_BYTES`] can nest a few thousand levels. Only the pages touched are used.
pub(crate) const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Checks that `code` compiles, on a thread with jaq's stack, whatever the caller's stack.
pub(crate) fn check(code: &str) -> Result<(), JqError> {
    std::thread::scope(|scope| {
        let compiling = std::thread::Builder::new()
            .name("jq-compile".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, || compile(code).map(drop))
            .map_err(|e| JqError::Unavailable(format!("no thread to compile on: {e}")))?;
        compiling.join().unwrap_or_else(|_| Err(JqError::Unavailable("compiling stopped abnormally".into())))
    })
}

/// Compiles on the calling thread, which needs [`STACK_BYTES`] of stack.
pub(crate) fn compile(code: &str) -> Result<Filter, JqError> {
    if code.len() > MAX_PROGRAM_BYTES {
        return Err(JqError::Compile {
            message: format!("the program is longer than {MAX_PROGRAM_BYTES} bytes"),
            position: MAX_PROGRAM_BYTES,
        });
    }
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
    Compiler::default().with_funs(funs).compile(modules).map_err(|errors| {
        let (_, undefined) = errors.into_iter().next().expect("an error list is never empty");
        let (name, what) = &undefined[0];
        JqError::Compile { message: format!("undefined {} {name:?}", what.as_str()), position: offset(code, name) }
    })
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

/// How deeply brackets may nest: jaq's parser recurses once per level, and a program of
/// [`MAX_PROGRAM_BYTES`] opening brackets would overflow the stack of the thread compiling it.
const MAX_NESTING: usize = 64;

fn too_deep(nesting: usize, position: usize) -> Result<(), JqError> {
    if nesting > MAX_NESTING {
        return Err(JqError::Compile { message: format!("brackets nest deeper than {MAX_NESTING} levels"), position });
    }
    Ok(())
}

/// Scans the program's identifiers (outside string literals, inside interpolations).
fn check_identifiers(code: &str) -> Result<(), JqError> {
    let bytes = code.as_bytes();
    let (mut i, mut in_string, mut interpolation_depth) = (0, false, Vec::<usize>::new());
    let (mut parens, mut nesting) = (0usize, 0usize);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' if bytes.get(i + 1) == Some(&b'(') => {
                    interpolation_depth.push(parens);
                    parens += 1;
                    nesting += 1;
                    too_deep(nesting, i)?;
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
                nesting += 1;
                too_deep(nesting, i)?;
                i += 1;
            }
            b'[' | b'{' => {
                nesting += 1;
                too_deep(nesting, i)?;
                i += 1;
            }
            b']' | b'}' => {
                nesting = nesting.saturating_sub(1);
                i += 1;
            }
            b')' => {
                parens = parens.saturating_sub(1);
                nesting = nesting.saturating_sub(1);
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
    use super::*;

    #[test]
    fn compile_errors_say_what_and_where() {
        let Err(JqError::Compile { message, position }) = compile(".foo | bar(") else { panic!() };
        assert!(position >= 7, "{message} at {position}");
        let Err(JqError::Compile { message, position }) = compile(".a | nosuchfn") else { panic!() };
        assert!(message.contains("nosuchfn"), "{message}");
        assert_eq!(position, 5);
        let long = format!(".a{}", " ".repeat(MAX_PROGRAM_BYTES));
        let Err(JqError::Compile { message, .. }) = compile(&long) else { panic!() };
        assert!(message.contains("longer than"), "{message}");
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
            let Err(JqError::Compile { message, position: at }) = compile(code) else { panic!("{code}") };
            assert!(message.contains(word), "{code}: {message}");
            assert_eq!(at, position, "{code}");
        }
        // The same words as field names or inside strings are fine, and `..` is allowed.
        assert!(compile(r#".env, .def, "until", [..] | length"#).is_ok());
    }

    #[test]
    fn programs_as_long_as_allowed_compile_or_fail_without_exhausting_the_stack() {
        let fill = |unit: &str, tail: &str| {
            let mut code = unit.repeat((MAX_PROGRAM_BYTES - tail.len()) / unit.len());
            code.push_str(tail);
            code
        };
        let shapes = [
            fill("(", ""),
            fill("[", ""),
            fill("{a:", ""),
            fill("\"\\(", ""),
            fill(". | ", "."),
            fill("- ", "1"),
            fill("1 + ", "1"),
            fill("if . then ", "."),
            fill(". as $x | ", "."),
            fill("try ", "."),
            fill("reduce . as $x (0; ", ""),
            fill(".a", ""),
            fill(".[0]", ""),
        ];
        // Called from a thread with as little stack as tokio's workers (2 MiB).
        let compiled = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || shapes.iter().map(|code| check(code).is_ok()).collect::<Vec<_>>())
            .unwrap()
            .join()
            .expect("compiling overflowed the stack");
        assert_eq!(compiled, [false, false, false, false, true, true, true, false, true, true, false, true, true]);
        let Err(JqError::Compile { message, position }) = check(&"[".repeat(65)) else { panic!() };
        assert!(message.contains("deeper than 64"), "{message}");
        assert_eq!(position, 64);
        assert!(check(&format!("{}1{}", "[".repeat(64), "]".repeat(64))).is_ok());
    }
}
