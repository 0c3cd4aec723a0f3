//! Event types: the names events may carry, each with an optional JSON Schema for payloads.
//! Names and schemas are checked here, so every writer registers them by the same rules.

use serde_json::Value;
use switchboard_core::problem::{FieldProblem, Problems, check_text};
use switchboard_core::{Id, IdKind};
use switchboard_store::{EventType, EventTypePatch, NewEventType, StoreError};

use crate::Webhooks;

/// The longest event type name, in bytes.
pub const MAX_NAME: usize = 128;
/// The longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum EventTypeError {
    #[error("the event type is not valid")]
    Invalid(Vec<FieldProblem>),
    #[error("an event type with this name already exists")]
    Taken,
    #[error("no such event type")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EventTypeError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(_) => Self::Taken,
            other => Self::Store(other),
        }
    }
}

/// Dot-separated segments of letters, digits, `_` and `-`, at most 128 bytes
/// (`video.generated`).
pub fn check_name(field: &str, name: &str) -> Result<(), FieldProblem> {
    let valid_segment =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.len() > MAX_NAME || !name.split('.').all(valid_segment) {
        return Err(FieldProblem::new(
            field,
            "must be 1 to 128 characters: dot-separated segments of letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

/// A schema must be an object that compiles within the bounds of `core::schema`.
fn check_schema(schema: &Value) -> Result<String, FieldProblem> {
    if !schema.is_object() {
        return Err(FieldProblem::new("schema", "must be a JSON Schema object"));
    }
    switchboard_core::schema::compile(schema).map_err(|reason| FieldProblem::new("schema", reason.to_string()))?;
    Ok(schema.to_string())
}

impl Webhooks {
    /// Registers an event type; a name taken in the tenant is [`EventTypeError::Taken`].
    pub async fn create_event_type(
        &self,
        tenant_id: &Id,
        name: String,
        description: String,
        schema: Option<&Value>,
    ) -> Result<EventType, EventTypeError> {
        let mut problems = Problems::default();
        problems.check(check_name("name", &name));
        problems.check(check_text("description", &description, MAX_DESCRIPTION));
        let schema = problems.check(schema.map(check_schema).transpose()).flatten();
        problems.finish().map_err(EventTypeError::Invalid)?;
        let new = NewEventType {
            id: Id::new(IdKind::EventType),
            tenant_id: tenant_id.clone(),
            name,
            description,
            schema,
            created_at: self.clock.now(),
        };
        Ok(self.store.create_event_type(&new).await?)
    }

    /// Changes an event type's description or schema (`Some(None)` removes the schema).
    pub async fn update_event_type(
        &self,
        tenant_id: &Id,
        name: &str,
        description: Option<String>,
        schema: Option<Option<&Value>>,
    ) -> Result<EventType, EventTypeError> {
        let mut problems = Problems::default();
        if let Some(description) = &description {
            problems.check(check_text("description", description, MAX_DESCRIPTION));
        }
        let schema = match schema {
            Some(Some(schema)) => problems.check(check_schema(schema)).map(Some),
            Some(None) => Some(None),
            None => None,
        };
        problems.finish().map_err(EventTypeError::Invalid)?;
        let patch = EventTypePatch { description, schema, updated_at: Some(self.clock.now()) };
        self.store.update_event_type(tenant_id.as_str(), name, &patch).await?.ok_or(EventTypeError::NotFound)
    }
}
