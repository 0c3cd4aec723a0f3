//! Manifest templates (minijinja): base URLs and headers over the connection's `config`,
//! action paths, queries and bodies over the call's `input`.
//!
//! Each manifest's templates are compiled once when it loads, so a syntax error or a
//! reference to a config field the form does not declare is refused at load time. Values
//! substituted into a path are percent-encoded as one path segment each, so an input such as
//! `../admin` can never change which endpoint is called (a manifest may opt out for a value
//! it trusts with `| safe`, as the generic connector does for its configured health path).

use minijinja::{Environment, UndefinedBehavior, Value as TemplateValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Unreserved characters (RFC 3986) stay as they are; everything else is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Names starting with this are path templates: their values are encoded as segments.
const PATH_PREFIX: &str = "path:";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl From<minijinja::Error> for TemplateError {
    fn from(error: minijinja::Error) -> Self {
        // The detail carries the part of the template that failed.
        let mut text = error.kind().to_string();
        if let Some(detail) = error.detail() {
            text = format!("{text}: {detail}");
        }
        TemplateError(text)
    }
}

/// The compiled templates of one manifest.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_formatter(|out, state, value| {
            if state.name().starts_with(PATH_PREFIX) && !value.is_safe() {
                let text = value.to_string();
                write!(out, "{}", utf8_percent_encode(&text, SEGMENT)).map_err(minijinja::Error::from)
            } else {
                write!(out, "{value}").map_err(minijinja::Error::from)
            }
        });
        Self { env }
    }

    /// Compiles and keeps a template under `name`.
    pub fn add(&mut self, name: String, source: String) -> Result<(), TemplateError> {
        self.env.add_template_owned(name, source)?;
        Ok(())
    }

    /// Compiles a path template (its values are encoded as path segments).
    pub fn add_path(&mut self, name: &str, source: String) -> Result<(), TemplateError> {
        self.add(format!("{PATH_PREFIX}{name}"), source)
    }

    pub fn render(&self, name: &str, context: &Value) -> Result<String, TemplateError> {
        let template = self.env.get_template(name)?;
        Ok(template.render(TemplateValue::from(minijinja::value::Serde(context)))?)
    }

    pub fn render_path(&self, name: &str, context: &Value) -> Result<String, TemplateError> {
        self.render(&format!("{PATH_PREFIX}{name}"), context)
    }

    /// The undeclared variables a template reads, as dotted paths (`config.subdomain`).
    pub fn variables(&self, name: &str) -> Result<Vec<String>, TemplateError> {
        let template = self.env.get_template(name)?;
        Ok(template.undeclared_variables(true).into_iter().collect())
    }

    /// Checks a JSON body template: every string in it must parse.
    pub fn check_value(&self, template: &Value) -> Result<(), TemplateError> {
        match template {
            Value::String(text) => match whole_expression(text) {
                Some(expression) => self.env.compile_expression(expression).map(|_| ()).map_err(Into::into),
                None => self.env.template_from_str(text).map(|_| ()).map_err(Into::into),
            },
            Value::Array(items) => items.iter().try_for_each(|item| self.check_value(item)),
            Value::Object(fields) => fields.values().try_for_each(|item| self.check_value(item)),
            _ => Ok(()),
        }
    }

    /// Renders a JSON body template. A string that is exactly one `{{ expression }}` takes
    /// the expression's value (a number stays a number); a field whose value is undefined or
    /// null is left out, so optional inputs need no conditionals.
    pub fn render_value(&self, template: &Value, context: &Value) -> Result<Option<Value>, TemplateError> {
        let context = TemplateValue::from(minijinja::value::Serde(context));
        self.render_value_in(template, &context)
    }

    fn render_value_in(&self, template: &Value, context: &TemplateValue) -> Result<Option<Value>, TemplateError> {
        match template {
            Value::String(text) => match whole_expression(text) {
                Some(expression) => {
                    let value = self.env.compile_expression(expression)?.eval(context.clone())?;
                    if value.is_undefined() || value.is_none() {
                        return Ok(None);
                    }
                    let json = serde_json::to_value(&value).map_err(|e| TemplateError(e.to_string()))?;
                    Ok(Some(json))
                }
                None if text.contains("{{") || text.contains("{%") => {
                    Ok(Some(Value::String(self.env.render_str(text, context.clone())?)))
                }
                None => Ok(Some(template.clone())),
            },
            Value::Array(items) => {
                let mut rendered = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(value) = self.render_value_in(item, context)? {
                        rendered.push(value);
                    }
                }
                Ok(Some(Value::Array(rendered)))
            }
            Value::Object(fields) => {
                let mut rendered = serde_json::Map::with_capacity(fields.len());
                for (key, item) in fields {
                    if let Some(value) = self.render_value_in(item, context)? {
                        rendered.insert(key.clone(), value);
                    }
                }
                Ok(Some(Value::Object(rendered)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    /// Renders a string template where a missing value means "leave this out" (queries).
    pub fn render_optional(&self, source: &str, context: &Value) -> Result<Option<String>, TemplateError> {
        match self.render_value(&Value::String(source.to_string()), context)? {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Ok(Some(other.to_string())),
        }
    }
}

/// `Some(expression)` when the text is exactly one `{{ … }}` and nothing else.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn path_values_are_encoded_as_single_segments() {
        let mut templates = Templates::new();
        templates.add_path("get", "/repos/{{ input.owner }}/{{ input.repo }}".into()).unwrap();
        let path = templates.render_path("get", &json!({"input": {"owner": "../admin", "repo": "a b/c?d"}})).unwrap();
        assert_eq!(path, "/repos/..%2Fadmin/a%20b%2Fc%3Fd");
    }

    #[test]
    fn missing_values_fail_in_strings_and_are_left_out_of_bodies() {
        let mut templates = Templates::new();
        templates.add("base".into(), "https://{{ config.subdomain }}.example.com".into()).unwrap();
        assert!(templates.render("base", &json!({"config": {}})).is_err());

        let body = json!({"channel": "{{ input.channel }}", "count": "{{ input.count }}", "thread": "{{ input.thread }}",
                          "text": "Hi {{ input.name }}"});
        let rendered = templates
            .render_value(&body, &json!({"input": {"channel": "C1", "count": 3, "name": "Ann"}}))
            .unwrap()
            .unwrap();
        assert_eq!(rendered, json!({"channel": "C1", "count": 3, "text": "Hi Ann"}));
    }

    #[test]
    fn undeclared_variables_are_reported_as_dotted_paths() {
        let mut templates = Templates::new();
        templates.add("base".into(), "https://{{ config.subdomain }}.atlassian.net/{{ api_version }}".into()).unwrap();
        let mut variables = templates.variables("base").unwrap();
        variables.sort();
        assert_eq!(variables, vec!["api_version", "config.subdomain"]);
    }
}
