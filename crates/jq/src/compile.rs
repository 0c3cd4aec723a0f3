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
}
