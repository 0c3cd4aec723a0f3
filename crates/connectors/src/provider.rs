//! A loaded manifest with its compiled parts: templates, the install form's schema and each
//! action's input schema.

use std::collections::HashMap;

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value};

use crate::manifest::{Action, Auth, ConfigType, Manifest};
use crate::template::Templates;

/// A problem with one field of a caller's input, named by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub detail: String,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), detail: detail.into() }
    }
}

/// Checked config values: the plain ones, and the secret ones to seal with the credentials.
pub type CheckedConfig = (Map<String, Value>, Map<String, Value>);

pub struct Provider {
    /// Where the manifest came from (`connectors/slack.yaml` or an operator's path).
    pub source: String,
    pub manifest: Manifest,
    pub templates: Templates,
    inputs: HashMap<String, jsonschema::Validator>,
    config: jsonschema::Validator,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("name", &self.manifest.name).field("source", &self.source).finish()
    }
}

impl Provider {
    pub(crate) fn new(
        source: String,
        manifest: Manifest,
        templates: Templates,
        inputs: HashMap<String, jsonschema::Validator>,
        config: jsonschema::Validator,
    ) -> Self {
        Self { source, manifest, templates, inputs, config }
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The auth mode a connection uses: the one asked for, or the manifest's only (first) one.
    pub fn auth(&self, mode: Option<&str>) -> Option<&Auth> {
        match mode {
            Some(mode) => self.manifest.auth.iter().find(|a| a.mode() == mode),
            None => self.manifest.auth.first(),
        }
    }

    pub fn action(&self, name: &str) -> Option<&Action> {
        self.manifest.actions.iter().find(|a| a.name == name)
    }

    /// The install form's values with defaults applied, checked field by field. Secret
    /// fields are returned apart, to be sealed with the credentials.
    pub fn check_config(&self, given: &Map<String, Value>) -> Result<CheckedConfig, Vec<FieldProblem>> {
        let mut values = given.clone();
        for field in &self.manifest.connection_config {
            if !values.contains_key(&field.name)
                && let Some(default) = &field.default
            {
                values.insert(field.name.clone(), default.clone());
            }
        }
        let document = Value::Object(values);
        let mut problems = Vec::new();
        for error in self.config.iter_errors(&document) {
            let fields = match &error.kind {
                ValidationErrorKind::Required { property } => vec![property.as_str().unwrap_or_default().to_string()],
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.clone(),
                _ => vec![error.instance_path.to_string().trim_start_matches('/').replace('/', ".")],
            };
            let detail = match &error.kind {
                ValidationErrorKind::AdditionalProperties { .. } => {
                    "is not a field of this provider's form".to_string()
                }
                _ => error.to_string(),
            };
            problems
                .extend(fields.into_iter().map(|f| FieldProblem::new(format!("config_overrides.{f}"), detail.clone())));
        }
        let Value::Object(mut values) = document else { unreachable!("built as an object") };
        for field in &self.manifest.connection_config {
            if field.kind == ConfigType::Url
                && let Some(Value::String(url)) = values.get(&field.name)
            {
                match url::Url::parse(url) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
                    _ => problems
                        .push(FieldProblem::new(format!("config_overrides.{}", field.name), "must be an http(s) URL")),
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut secrets = Map::new();
        for field in self.manifest.connection_config.iter().filter(|f| f.secret) {
            if let Some(value) = values.remove(&field.name) {
                secrets.insert(field.name.clone(), value);
            }
        }
        Ok((values, secrets))
    }

    /// Checks an action's input against its schema; problems name the JSON path.
    pub fn check_input(&self, action: &str, input: &Value) -> Result<(), Vec<FieldProblem>> {
        let Some(validator) = self.inputs.get(action) else { return Ok(()) };
        let problems: Vec<FieldProblem> = validator
            .iter_errors(input)
            .map(|e| {
                let path = e.instance_path.to_string();
                let field =
                    if path.is_empty() { "input".to_string() } else { format!("input{}", pointer_to_path(&path)) };
                FieldProblem::new(field, e.to_string())
            })
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// Credentials every connection of a provider that sends webhooks may hold, whatever its
    /// auth mode: the secret its webhooks are signed with, and the previous one during a
    /// rotation.
    pub fn webhook_credential_fields(&self) -> Vec<crate::manifest::CredentialField> {
        if self.manifest.webhooks.is_none() {
            return Vec::new();
        }
        let field = |name: &str, label: &str| crate::manifest::CredentialField {
            name: name.to_string(),
            label: label.to_string(),
            required: false,
        };
        vec![
            field(WEBHOOK_SECRET, "Webhook signing secret"),
            field(PREVIOUS_WEBHOOK_SECRET, "Previous webhook signing secret (during a rotation)"),
        ]
    }

    /// The names of the config fields whose values are secret.
    pub fn secret_config_fields(&self) -> impl Iterator<Item = &str> {
        self.manifest.connection_config.iter().filter(|f| f.secret).map(|f| f.name.as_str())
    }
}

/// The credential holding a connection's webhook signing secret.
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// The secret being rotated out, still accepted.
pub const PREVIOUS_WEBHOOK_SECRET: &str = "webhook_secret_previous";

/// `/items/0/sku` → `.items[0].sku`.
fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if token.chars().all(|c| c.is_ascii_digit()) && !token.is_empty() {
            path.push_str(&format!("[{token}]"));
        } else {
            path.push('.');
            path.push_str(&token);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    #[test]
    fn pointers_read_as_paths() {
        assert_eq!(super::pointer_to_path("/items/0/sku"), ".items[0].sku");
        assert_eq!(super::pointer_to_path("/a~1b"), ".a/b");
    }
}
