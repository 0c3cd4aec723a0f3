//! What services answer when a caller's input is wrong: one problem per field, named by its
//! path (`headers.x-api-key`, `event_types[2]`, `input.title`), which the HTTP layer turns into
//! a problem+json document.

/// A problem with one field of a caller's input, named by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field's path (`headers.x-api-key`, `event_types[2]`).
    pub field: String,
    /// What is wrong, worded to follow the field's name ("must be 1 to 80 characters").
    pub detail: String,
}

impl FieldProblem {
    /// A problem `detail` with the field at path `field`.
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), detail: detail.into() }
    }
}

/// A name or label: trimmed, 1 to `max` characters, no control characters; answers the
/// trimmed value.
pub fn check_label(field: &str, value: &str, max: usize) -> Result<String, FieldProblem> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(FieldProblem::new(field, format!("must be 1 to {max} characters")));
    }
    check_no_control_characters(field, trimmed)?;
    Ok(trimmed.to_string())
}

/// Free text (a description): at most `max` characters, newlines and tabs allowed, no other
/// control characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), FieldProblem> {
    if value.chars().count() > max {
        return Err(FieldProblem::new(field, format!("must be at most {max} characters")));
    }
    check_no_control_characters(field, &value.replace(['\n', '\t', '\r'], " "))
}

fn check_no_control_characters(field: &str, value: &str) -> Result<(), FieldProblem> {
    if value.chars().any(char::is_control) {
        return Err(FieldProblem::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Collects a caller's input problems, so a service answers every wrong field at once
/// instead of the first.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldProblem>);

impl Problems {
    /// Keeps the problem of a failed check; answers the checked value otherwise.
    pub fn check<T>(&mut self, result: Result<T, FieldProblem>) -> Option<T> {
        result.map_err(|problem| self.0.push(problem)).ok()
    }

    /// Adds a problem found by other means.
    pub fn push(&mut self, problem: FieldProblem) {
        self.0.push(problem);
    }

    /// `Ok` when nothing was wrong, otherwise every problem found.
    pub fn finish(self) -> Result<(), Vec<FieldProblem>> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(self.0),
        }
    }

    /// Every problem found, for an answer that cannot go on (a value a failed check did not
    /// produce); empty only if nothing failed.
    pub fn into_vec(self) -> Vec<FieldProblem> {
        self.0
    }
}
