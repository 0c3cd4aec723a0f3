//! A loaded manifest with its compiled parts: templates, the install form's schema and each
//! action's input schema.

use std::collections::HashMap;

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value};

use crate::manifest::{Action, Auth, ConfigField, ConfigType, Manifest, WebhookHandshake};
use crate::template::Templates;

pub use switchboard_core::FieldProblem;

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
            let fields = match error.kind() {
                ValidationErrorKind::Required { property } => vec![property.as_str().unwrap_or_default().to_string()],
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.clone(),
                _ => vec![error.instance_path().to_string().trim_start_matches('/').replace('/', ".")],
            };
            let detail = match error.kind() {
                ValidationErrorKind::AdditionalProperties { .. } => {
                    "is not a field of this provider's form".to_string()
                }
                _ => error.to_string(),
            };
            problems
                .extend(fields.into_iter().map(|f| FieldProblem::new(format!("config_overrides.{f}"), detail.clone())));
        }
        let Value::Object(mut values) = document else { unreachable!("built as an object") };
        // JSON Schema counts 76.0 as an integer; store it as one, so it reads back as one.
        let integer_fields: Vec<String> = self
            .manifest
            .connection_config
            .iter()
            .cloned()
            .chain(self.webhook_config_fields())
            .filter(|f| f.kind == ConfigType::Integer)
            .map(|f| f.name)
            .collect();
        for name in integer_fields {
            if let Some(Value::Number(n)) = values.get(&name)
                && n.as_i64().is_none()
                && let Some(whole) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            {
                values.insert(name, Value::from(whole as i64));
            }
        }
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
                let path = e.instance_path().to_string();
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
        let mut fields = vec![
            field(WEBHOOK_SECRET, "Webhook signing secret"),
            field(PREVIOUS_WEBHOOK_SECRET, "Previous webhook signing secret (during a rotation)"),
        ];
        if self.manifest.webhooks.iter().any(|w| w.handshakes.contains(&WebhookHandshake::MetaHubChallenge)) {
            fields.push(field(WEBHOOK_VERIFY_TOKEN, "Webhook verify token (the one entered at the provider)"));
        }
        fields
    }

    /// Whether `secret` can verify this provider's webhooks, checked when it is set: a
    /// Standard Webhooks secret must be base64 (after an optional `whsec_`), or every
    /// webhook would be refused later.
    pub fn check_webhook_secret(&self, secret: &str) -> Result<(), String> {
        match self.manifest.webhooks.as_ref().map(|webhooks| webhooks.scheme) {
            Some(crate::manifest::SignatureScheme::StandardWebhooks) => {
                switchboard_core::signature::check_verification_secret(secret).map_err(|e| {
                    format!("is not a Standard Webhooks secret: it {e} (the prefix may be left out), or whpk_ and a public key")
                })
            }
            _ => Ok(()),
        }
    }

    /// Install-form settings every connection of a provider that sends webhooks has.
    pub fn webhook_config_fields(&self) -> Vec<ConfigField> {
        webhook_config_fields(&self.manifest)
    }

    /// Whether a connection accepts webhooks without a signing secret (its
    /// `webhook_accept_unsigned` setting), and the largest body it takes.
    pub fn webhook_settings(&self, config: &Map<String, Value>) -> WebhookSettings {
        WebhookSettings {
            accept_unsigned: config.get(WEBHOOK_ACCEPT_UNSIGNED).and_then(Value::as_bool).unwrap_or(false),
            max_body_bytes: config
                .get(WEBHOOK_MAX_BODY_BYTES)
                .and_then(Value::as_u64)
                .map_or(DEFAULT_WEBHOOK_BODY_BYTES, |n| n as usize),
        }
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
/// The credential Meta's `hub.challenge` handshake must carry.
pub const WEBHOOK_VERIFY_TOKEN: &str = "webhook_verify_token";
/// The config setting that lets a connection without a secret take webhooks unverified.
pub const WEBHOOK_ACCEPT_UNSIGNED: &str = "webhook_accept_unsigned";
/// The config setting that overrides the receiver's body limit for one connection.
pub const WEBHOOK_MAX_BODY_BYTES: &str = "webhook_max_body_bytes";
/// The receiver's body limit unless a connection sets its own: 1 MiB.
pub const DEFAULT_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;
/// The largest body limit a connection may set: GitHub's 25 MB payload cap.
pub const MAX_WEBHOOK_BODY_BYTES: u64 = 25 * 1024 * 1024;

/// The install-form settings of webhooks, for a manifest that declares them.
pub fn webhook_config_fields(manifest: &Manifest) -> Vec<ConfigField> {
    if manifest.webhooks.is_none() {
        return Vec::new();
    }
    let field = |name: &str, label: &str, description: String, kind: ConfigType, default: Value| ConfigField {
        name: name.to_string(),
        label: label.to_string(),
        description: Some(description),
        kind,
        required: false,
        secret: false,
        default: Some(default),
        pattern: None,
        values: Vec::new(),
    };
    vec![
        field(
            WEBHOOK_ACCEPT_UNSIGNED,
            "Accept unsigned webhooks",
            "Take webhooks unverified while no signing secret is set (for providers that cannot sign)".into(),
            ConfigType::Boolean,
            Value::Bool(false),
        ),
        field(
            WEBHOOK_MAX_BODY_BYTES,
            "Largest webhook body (bytes)",
            format!("Larger webhooks are refused with 413; 1024 to {MAX_WEBHOOK_BODY_BYTES}"),
            ConfigType::Integer,
            Value::from(DEFAULT_WEBHOOK_BODY_BYTES),
        ),
    ]
}

/// A connection's own webhook settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSettings {
    pub accept_unsigned: bool,
    pub max_body_bytes: usize,
}

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
