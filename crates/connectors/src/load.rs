//! Loading manifests: the bundled `connectors/` folder (embedded in the binary) and any
//! folders the operator adds. A manifest that does not load is refused with its file, the
//! path inside it and the reason; nothing half-valid reaches the catalog.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use include_dir::{Dir, include_dir};
use serde_json::{Value, json};

use crate::manifest::{Auth, ConfigType, Manifest, Pagination};
use crate::provider::Provider;
use crate::template::Templates;

static BUNDLED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../connectors");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {reason}")]
pub struct ManifestError {
    pub file: String,
    /// Where in the manifest, e.g. `actions[2].path`; `.` for the whole document.
    pub path: String,
    pub reason: String,
}

/// The manifests compiled into the binary.
pub fn bundled() -> Result<Vec<Arc<Provider>>, ManifestError> {
    let mut providers = Vec::new();
    for file in BUNDLED.files() {
        let name = file.path().to_string_lossy().to_string();
        if !is_manifest(&name) {
            continue;
        }
        let text = file.contents_utf8().ok_or_else(|| ManifestError {
            file: format!("connectors/{name}"),
            path: ".".into(),
            reason: "is not UTF-8".into(),
        })?;
        providers.push(Arc::new(load_str(&format!("connectors/{name}"), text)?));
    }
    Ok(providers)
}

/// Every manifest in a folder (not recursive).
pub fn load_dir(dir: &Path) -> Result<Vec<Arc<Provider>>, ManifestError> {
    let unreadable = |reason: String| ManifestError { file: dir.display().to_string(), path: ".".into(), reason };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(format!("cannot be read: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| is_manifest(&path.to_string_lossy()))
        .collect();
    paths.sort();
    let mut providers = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            file: file.clone(),
            path: ".".into(),
            reason: format!("cannot be read: {e}"),
        })?;
        providers.push(Arc::new(load_str(&file, &text)?));
    }
    Ok(providers)
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Parses, type-checks and cross-checks one manifest.
pub fn load_str(file: &str, text: &str) -> Result<Provider, ManifestError> {
    let error = |path: &str, reason: String| ManifestError { file: file.to_string(), path: path.to_string(), reason };
    let mut document: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let location = e.location().map(|l| format!("line {} column {}", l.line(), l.column()));
        error(&location.unwrap_or_else(|| ".".into()), format!("is not valid YAML: {e}"))
    })?;
    // `auth` may be one mode or a list of them.
    if let Some(auth) = document.get_mut("auth")
        && auth.is_object()
    {
        *auth = Value::Array(vec![auth.take()]);
    }
    let manifest: Manifest = serde_path_to_error::deserialize(&document).map_err(|e| {
        let path = e.path().to_string();
        error(if path.is_empty() { "." } else { &path }, e.into_inner().to_string())
    })?;
    let stem = Path::new(file).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    Checker { file, manifest: &manifest, templates: Templates::new(), validators: HashMap::new() }.check(&stem).map(
        |(templates, validators, config_validator)| {
            Provider::new(file.to_string(), manifest.clone(), templates, validators, config_validator)
        },
    )
}

struct Checker<'a> {
    file: &'a str,
    manifest: &'a Manifest,
    templates: Templates,
    validators: HashMap<String, jsonschema::Validator>,
}

type Checked = (Templates, HashMap<String, jsonschema::Validator>, jsonschema::Validator);

impl Checker<'_> {
    fn fail(&self, path: impl Into<String>, reason: impl Into<String>) -> ManifestError {
        ManifestError { file: self.file.to_string(), path: path.into(), reason: reason.into() }
    }

    fn check(mut self, stem: &str) -> Result<Checked, ManifestError> {
        let m = self.manifest;
        if !(2..=63).contains(&m.name.len()) || !is_identifier(&m.name, true) {
            return Err(
                self.fail("name", "must be 2 to 63 lower-case letters, digits, '-' or '_', starting with a letter")
            );
        }
        if m.name != stem {
            return Err(self.fail("name", format!("must equal the file name ({stem:?})")));
        }
        for (field, value) in [("display_name", &m.display_name), ("description", &m.description)] {
            if value.trim().is_empty() {
                return Err(self.fail(field, "must not be empty"));
            }
        }
        if m.categories.is_empty() {
            return Err(self.fail("categories", "must list at least one category"));
        }
        if let Some(docs) = &m.docs_url {
            check_http_url(docs).map_err(|reason| self.fail("docs_url", reason))?;
        }
        self.check_auth()?;
        let config_validator = self.check_config()?;
        let context_vars = self.config_variables();

        self.add("base_url", "base_url".into(), m.base_url.clone(), &context_vars)?;
        for (header, value) in &m.headers {
            self.add(&format!("headers.{header}"), format!("header:{header}"), value.clone(), &context_vars)?;
        }
        if let Some(limit) = &m.rate_limit {
            if limit.requests == 0 {
                return Err(self.fail("rate_limit.requests", "must be at least 1"));
            }
            if limit.per_seconds == 0 {
                return Err(self.fail("rate_limit.per_seconds", "must be at least 1"));
            }
        }
        for (name, pagination) in &m.pagination {
            self.check_pagination(name, pagination)?;
        }
        self.check_actions(&context_vars)?;
        if let Some(errors) = &m.errors {
            check_pointer(&errors.pointer).map_err(|r| self.fail("errors.pointer", r))?;
            if let Some(message) = &errors.message {
                check_pointer(message).map_err(|r| self.fail("errors.message", r))?;
            }
        }
        if let Some(webhooks) = &m.webhooks {
            use crate::manifest::SignatureScheme;
            match (&webhooks.scheme, &webhooks.signature) {
                (SignatureScheme::GenericHmac, None) => {
                    return Err(self.fail("webhooks.signature", "is required for the generic_hmac scheme"));
                }
                (SignatureScheme::GenericHmac, Some(signature)) => {
                    let headers = std::iter::once(("header", &signature.header))
                        .chain(signature.timestamp_header.iter().map(|h| ("timestamp_header", h)));
                    for (field, header) in headers {
                        if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                            return Err(self.fail(
                                format!("webhooks.signature.{field}"),
                                format!("{header:?} is not a header name"),
                            ));
                        }
                    }
                    if signature.signed.contains("{timestamp}") && signature.timestamp_header.is_none() {
                        return Err(
                            self.fail("webhooks.signature.signed", "uses {timestamp} without a timestamp_header")
                        );
                    }
                }
                (_, Some(_)) => {
                    return Err(self.fail("webhooks.signature", "only the generic_hmac scheme takes a signature"));
                }
                (_, None) => {}
            }
            let form = webhooks.form.clone().unwrap_or_default();
            let located = [
                ("event_type", Some(&webhooks.event_type)),
                ("event_id", webhooks.event_id.as_ref()),
                ("form.event_type", form.event_type.as_ref()),
                ("form.event_id", form.event_id.as_ref()),
            ];
            for (field, locations) in located {
                let Some(locations) = locations else { continue };
                if matches!(locations, crate::manifest::Locations::Many(many) if many.is_empty()) {
                    return Err(self.fail(format!("webhooks.{field}"), "must name at least one location"));
                }
                for location in locations.iter() {
                    if field.ends_with("event_id") && location.starts_with("literal:") {
                        return Err(self.fail(
                            format!("webhooks.{field}"),
                            "cannot be a literal: every webhook would be a duplicate",
                        ));
                    }
                    if location.strip_prefix("literal:").is_some_and(str::is_empty) {
                        return Err(self.fail(format!("webhooks.{field}"), "`literal:` must name the event type"));
                    }
                    if !location.starts_with("header:") && !location.starts_with("literal:") {
                        check_pointer(location).map_err(|r| self.fail(format!("webhooks.{field}"), r))?;
                    }
                }
            }
            if let Some(batch) = &webhooks.batch {
                check_pointer(batch).map_err(|r| self.fail("webhooks.batch", r))?;
                // A header is the request's, not an item's: every item would share one id.
                if webhooks.event_id.as_ref().is_some_and(|l| l.iter().any(|l| l.starts_with("header:"))) {
                    return Err(self.fail(
                        "webhooks.event_id",
                        "cannot be a header when `batch` is set: every item of a batch would have the same id",
                    ));
                }
            }
        }
        if let Some(health) = &m.health_check {
            self.add_path("health_check.path", "health_check", &health.path, &context_vars)?;
        }
        if let Some(version) = &m.api_version
            && version.header.is_some()
            && version.query.is_some()
        {
            return Err(self.fail("api_version", "sets both `header` and `query`; choose one"));
        }
        if let Some(cache) = &m.cache
            && cache.ttl_seconds == 0
        {
            return Err(self.fail("cache.ttl_seconds", "must be at least 1 (leave `cache` out to disable caching)"));
        }
        Ok((self.templates, self.validators, config_validator))
    }

    fn check_auth(&mut self) -> Result<(), ManifestError> {
        let m = self.manifest;
        if m.auth.is_empty() {
            return Err(self.fail("auth", "must declare at least one mode"));
        }
        let mut modes = BTreeSet::new();
        for (i, auth) in m.auth.iter().enumerate() {
            if !modes.insert(auth.mode()) {
                return Err(self.fail(format!("auth[{i}].mode"), format!("{:?} is declared twice", auth.mode())));
            }
            let urls: Vec<(&str, &str)> = match auth {
                Auth::Oauth2(oauth) => {
                    let mut urls =
                        vec![("authorization_url", oauth.authorization_url.as_str()), ("token_url", &oauth.token_url)];
                    if let Some(revocation) = &oauth.revocation_url {
                        urls.push(("revocation_url", revocation));
                    }
                    urls
                }
                Auth::Oauth2ClientCredentials(cc) => vec![("token_url", cc.token_url.as_str())],
                Auth::ApiKey(key) => {
                    if key.name.trim().is_empty() {
                        return Err(self.fail(format!("auth[{i}].name"), "must name the header or query parameter"));
                    }
                    let vars = self.config_variables();
                    self.add(&format!("auth[{i}].name"), "auth:api_key:name".into(), key.name.clone(), &vars)?;
                    let prefix = key.prefix.clone().unwrap_or_default();
                    self.add(&format!("auth[{i}].prefix"), "auth:api_key:prefix".into(), prefix, &vars)?;
                    Vec::new()
                }
                _ => Vec::new(),
            };
            let vars = self.config_variables();
            for (field, url) in urls {
                let path = format!("auth[{i}].{field}");
                self.add(&path, format!("auth:{}:{field}", auth.mode()), url.to_string(), &vars)?;
                if !url.contains("{{") {
                    check_http_url(url).map_err(|reason| self.fail(&path, reason))?;
                }
            }
        }
        Ok(())
    }

    /// The install form becomes a JSON Schema, so config values are checked per field.
    fn check_config(&self) -> Result<jsonschema::Validator, ManifestError> {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        for (i, field) in self.manifest.connection_config.iter().enumerate() {
            let path = format!("connection_config[{i}]");
            if !is_identifier(&field.name, false) {
                return Err(self.fail(format!("{path}.name"), "must be lower-case letters, digits and '_'"));
            }
            if properties.contains_key(&field.name)
                || field.name == "api_version" && self.manifest.api_version.is_some()
            {
                return Err(self.fail(format!("{path}.name"), format!("{:?} is declared twice", field.name)));
            }
            let mut schema = match field.kind {
                ConfigType::String => json!({"type": "string", "minLength": if field.required { 1 } else { 0 }}),
                ConfigType::Url => json!({"type": "string", "minLength": 1}),
                ConfigType::Integer => json!({"type": "integer"}),
                ConfigType::Boolean => json!({"type": "boolean"}),
                ConfigType::Enum => {
                    if field.values.is_empty() {
                        return Err(self.fail(format!("{path}.values"), "an enum field must list its values"));
                    }
                    json!({"enum": field.values})
                }
            };
            if let Some(pattern) = &field.pattern {
                if !matches!(field.kind, ConfigType::String) {
                    return Err(self.fail(format!("{path}.pattern"), "applies only to string fields"));
                }
                schema["pattern"] = json!(pattern);
            }
            if field.required {
                required.push(field.name.clone());
            }
            properties.insert(field.name.clone(), schema);
        }
        if self.manifest.api_version.is_some() {
            properties.insert("api_version".into(), json!({"type": "string", "minLength": 1}));
        }
        for field in crate::provider::webhook_config_fields(self.manifest) {
            if let Some(i) = self.manifest.connection_config.iter().position(|f| f.name == field.name) {
                return Err(self.fail(
                    format!("connection_config[{i}].name"),
                    format!("{:?} is the receiver's own setting for providers that send webhooks", field.name),
                ));
            }
            let schema = match field.kind {
                ConfigType::Integer => {
                    json!({"type": "integer", "minimum": 1024, "maximum": crate::provider::MAX_WEBHOOK_BODY_BYTES})
                }
                _ => json!({"type": "boolean"}),
            };
            properties.insert(field.name, schema);
        }
        let schema =
            json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
        let validator = switchboard_core::schema::compile(&schema)
            .map_err(|e| self.fail("connection_config", format!("does not form a valid schema: {e}")))?;
        for (i, field) in self.manifest.connection_config.iter().enumerate() {
            if let Some(default) = &field.default {
                let one = json!({ field.name.clone(): default });
                let errors: Vec<String> = validator
                    .iter_errors(&one)
                    .filter(|e| !matches!(e.kind(), jsonschema::error::ValidationErrorKind::Required { .. }))
                    .map(|e| e.to_string())
                    .collect();
                if let Some(reason) = errors.first() {
                    return Err(self.fail(format!("connection_config[{i}].default"), reason.clone()));
                }
            }
        }
        Ok(validator)
    }

    fn config_variables(&self) -> BTreeSet<String> {
        let mut vars: BTreeSet<String> =
            self.manifest.connection_config.iter().map(|f| format!("config.{}", f.name)).collect();
        if self.manifest.api_version.is_some() {
            vars.insert("api_version".into());
            vars.insert("config.api_version".into());
        }
        vars
    }

    fn add(
        &mut self,
        path: &str,
        name: String,
        source: String,
        allowed: &BTreeSet<String>,
    ) -> Result<(), ManifestError> {
        self.templates
            .add(name.clone(), source)
            .map_err(|e| self.fail(path, format!("is not a valid template: {e}")))?;
        self.check_variables(path, &name, allowed, false)
    }

    fn add_path(
        &mut self,
        path: &str,
        name: &str,
        source: &str,
        allowed: &BTreeSet<String>,
    ) -> Result<(), ManifestError> {
        if !source.starts_with('/') && !source.starts_with("{{") {
            return Err(self.fail(path, "must start with '/' (or with a template yielding one)"));
        }
        self.templates
            .add_path(name, source.to_string())
            .map_err(|e| self.fail(path, format!("is not a valid template: {e}")))?;
        self.check_variables(path, &format!("path:{name}"), allowed, true)
    }

    fn check_variables(
        &self,
        path: &str,
        name: &str,
        allowed: &BTreeSet<String>,
        input_allowed: bool,
    ) -> Result<(), ManifestError> {
        let variables = self.templates.variables(name).map_err(|e| self.fail(path, e.to_string()))?;
        for variable in variables {
            let ok = allowed.contains(&variable)
                || (input_allowed && (variable == "input" || variable.starts_with("input.")));
            if !ok {
                let known: Vec<&str> = allowed.iter().map(String::as_str).collect();
                return Err(self.fail(
                    path,
                    format!(
                        "uses {variable:?}, which is not declared (known: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_pagination(&self, name: &str, pagination: &Pagination) -> Result<(), ManifestError> {
        let path = format!("pagination.{name}");
        let (page_size, pointers): (u32, Vec<(&str, &Option<String>)>) = match pagination {
            Pagination::Cursor { next_cursor, cursor_from_last_item, has_more, page_size, .. } => {
                if next_cursor.is_none() && cursor_from_last_item.is_none() {
                    return Err(self.fail(&path, "a cursor style needs `next_cursor` or `cursor_from_last_item`"));
                }
                (
                    *page_size,
                    vec![
                        ("next_cursor", next_cursor),
                        ("cursor_from_last_item", cursor_from_last_item),
                        ("has_more", has_more),
                    ],
                )
            }
            Pagination::Offset { page_size, total, .. } => (*page_size, vec![("total", total)]),
            Pagination::Page { page_size, .. } | Pagination::LinkHeader { page_size, .. } => (*page_size, Vec::new()),
        };
        if page_size == 0 {
            return Err(self.fail(format!("{path}.page_size"), "must be at least 1"));
        }
        for (field, pointer) in pointers {
            if let Some(pointer) = pointer {
                check_pointer(pointer).map_err(|r| self.fail(format!("{path}.{field}"), r))?;
            }
        }
        Ok(())
    }

    fn check_actions(&mut self, context_vars: &BTreeSet<String>) -> Result<(), ManifestError> {
        let mut names = BTreeSet::new();
        for (i, action) in self.manifest.actions.iter().enumerate() {
            let path = format!("actions[{i}]");
            if !is_identifier(&action.name, false) {
                return Err(self.fail(format!("{path}.name"), "must be lower-case letters, digits and '_'"));
            }
            if !names.insert(action.name.clone()) {
                return Err(self.fail(format!("{path}.name"), format!("{:?} is declared twice", action.name)));
            }
            self.add_path(&format!("{path}.path"), &format!("action:{}", action.name), &action.path, context_vars)?;
            for (param, template) in &action.query {
                let mut allowed = context_vars.clone();
                allowed.insert("input".into());
                self.templates
                    .add(format!("query:{}:{param}", action.name), template.clone())
                    .map_err(|e| self.fail(format!("{path}.query.{param}"), format!("is not a valid template: {e}")))?;
                self.check_variables(
                    &format!("{path}.query.{param}"),
                    &format!("query:{}:{param}", action.name),
                    &allowed,
                    true,
                )?;
            }
            if action.input.get("type").and_then(Value::as_str) != Some("object") {
                return Err(self.fail(format!("{path}.input"), "must be a JSON Schema of `type: object`"));
            }
            let validator = switchboard_core::schema::compile(&action.input)
                .map_err(|e| self.fail(format!("{path}.input"), e.to_string()))?;
            self.validators.insert(action.name.clone(), validator);
            if let Some(body) = &action.body {
                self.templates
                    .check_value(body)
                    .map_err(|e| self.fail(format!("{path}.body"), format!("is not a valid template: {e}")))?;
            }
            if let Some(response) = &action.response {
                check_pointer(response).map_err(|r| self.fail(format!("{path}.response"), r))?;
            }
            if let Some(pagination) = &action.pagination {
                if !self.manifest.pagination.contains_key(pagination) {
                    let known: Vec<&str> = self.manifest.pagination.keys().map(String::as_str).collect();
                    return Err(self.fail(
                        format!("{path}.pagination"),
                        format!(
                            "names {pagination:?}, which `pagination` does not declare (declared: {})",
                            known.join(", ")
                        ),
                    ));
                }
                if action.response.is_none() {
                    return Err(self.fail(format!("{path}.response"), "a paginated action must select its items"));
                }
            }
        }
        Ok(())
    }
}

/// A lower-case letter, then lower-case letters, digits, `_` (and `-` where allowed).
fn is_identifier(name: &str, dash_allowed: bool) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (dash_allowed && c == '-'))
}

fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!("{pointer:?} is not a JSON pointer (it must be empty or start with '/')"))
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(()),
        Ok(_) => Err(format!("{url:?} is not an http(s) URL")),
        Err(e) => Err(format!("{url:?} is not a URL: {e}")),
    }
}
