//! Examples for every operation of the document: its JSON request body, its success answers
//! and its path parameters (an id parameter also gets the pattern of its kind). An example an
//! annotation gives is kept; the others are made from the schema itself (its fields'
//! examples, defaults, enums, formats and bounds, and the id prefixes their descriptions
//! name), so they always fit the schema they illustrate — a test validates every one against
//! it.

use serde_json::{Map, Value, json};

/// How deep a schema is followed (each nested value or reference a level); deeper parts are
/// left out of the example.
const MAX_DEPTH: usize = 24;

/// Adds the missing examples to every operation of `doc`.
pub fn add(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].clone();
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut().filter_map(Value::as_object_mut) {
            for parameter in operation.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                if parameter["in"] != "path" {
                    continue;
                }
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                let description = parameter["description"].as_str().unwrap_or_default().to_string();
                // An id parameter says what the server parses: its kind's prefix and a ULID.
                if let Some(prefix) = id_prefix(&description)
                    && parameter["schema"].get("pattern").is_none()
                {
                    parameter["schema"]["pattern"] = json!(format!("^{prefix}[0-7][0-9a-hjkmnp-tv-z]{{25}}$"));
                }
                if parameter.get("example").is_none() {
                    parameter["example"] = parameter_example(&name, &description, &parameter["schema"], &schemas);
                }
            }
            if let Some(content) = operation.get_mut("requestBody").and_then(|body| body.get_mut("content")) {
                add_to_content(content, &schemas);
            }
            let responses = operation.get_mut("responses").and_then(Value::as_object_mut);
            for (status, response) in responses.into_iter().flatten() {
                if status.starts_with('2')
                    && let Some(content) = response.get_mut("content")
                {
                    add_to_content(content, &schemas);
                }
            }
        }
    }
}

fn add_to_content(content: &mut Value, schemas: &Value) {
    for (media_type, entry) in content.as_object_mut().into_iter().flatten() {
        if entry.get("example").is_some() || entry.get("examples").is_some() {
            continue;
        }
        let Some(schema) = entry.get("schema").cloned() else { continue };
        let example = if media_type.contains("json") {
            of_schema(&schema, schemas, "", 0)
        } else {
            Some(text_example(media_type))
        };
        if let Some(example) = example {
            entry["example"] = example;
        }
    }
}

fn text_example(media_type: &str) -> Value {
    match media_type {
        "application/openmetrics-text" => {
            json!("# TYPE switchboard_events counter\nswitchboard_events_total{outcome=\"created\"} 1\n# EOF\n")
        }
        "text/html" => json!("<!doctype html><html><body>…</body></html>"),
        "application/x-www-form-urlencoded" => json!("name=value"),
        _ => json!("text"),
    }
}

/// A path parameter: an id of the kind its description names (`` `evt_…` ``), else from its
/// schema.
fn parameter_example(name: &str, description: &str, schema: &Value, schemas: &Value) -> Value {
    if let Some(prefix) = id_prefix(description) {
        return json!(format!("{prefix}01jd8x2m7r0000000000000000"));
    }
    match name {
        "name" => json!("order.paid"),
        "action" => json!("post_message"),
        "path" => json!("users/42/repos"),
        _ => of_schema(schema, schemas, name, 0).unwrap_or(json!("value")),
    }
}

/// `evt_` from a description such as "`evt_…`" or "the event (`evt_…`)".
fn id_prefix(description: &str) -> Option<&str> {
    let start = description.find('`')? + 1;
    let rest = &description[start..];
    let end = rest.find('…').or_else(|| rest.find("..."))?;
    let prefix = &rest[..end];
    (prefix.ends_with('_') && prefix[..prefix.len() - 1].bytes().all(|b| b.is_ascii_lowercase())).then_some(prefix)
}

/// An example of `schema`, or `None` for a part that is only ever `null`.
fn of_schema(schema: &Value, schemas: &Value, name: &str, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let target = reference.strip_prefix("#/components/schemas/")?;
        return of_schema(&schemas[target], schemas, name, depth + 1);
    }
    for given in ["example", "default", "const"] {
        if let Some(value) = schema.get(given).filter(|v| !v.is_null()) {
            return Some(value.clone());
        }
    }
    if let Some(first) = schema["examples"].as_array().and_then(|e| e.first()) {
        return Some(first.clone());
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.iter().find(|v| !v.is_null())) {
        return Some(first.clone());
    }
    for combinator in ["allOf", "oneOf", "anyOf"] {
        if let Some(parts) = schema[combinator].as_array() {
            let mut parts = parts.iter().filter(|part| part["type"] != "null");
            if combinator == "allOf" {
                // Every part holds: merge the parts' objects.
                let mut merged = Map::new();
                let mut other = None;
                for part in parts {
                    match of_schema(part, schemas, name, depth + 1) {
                        Some(Value::Object(members)) => merged.extend(members),
                        found => other = other.or(found),
                    }
                }
                return if merged.is_empty() { other } else { Some(Value::Object(merged)) };
            }
            return parts.find_map(|part| of_schema(part, schemas, name, depth + 1));
        }
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.as_str(),
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).find(|k| *k != "null").unwrap_or("null"),
        // No type: any JSON value.
        _ if schema.as_object().is_some_and(|s| !s.contains_key("properties")) => return Some(json!({})),
        _ => "object",
    };
    Some(match kind {
        "null" => return None,
        "boolean" => json!(false),
        "integer" => json!(integer(schema)),
        "number" => json!(schema["minimum"].as_f64().unwrap_or(0.5)),
        "string" => json!(string(schema, name)),
        "array" => {
            let minimum = schema["minItems"].as_u64().unwrap_or(0);
            match of_schema(&schema["items"], schemas, name, depth + 1) {
                Some(item) => Value::Array(vec![item; minimum.max(1) as usize]),
                None => json!([]),
            }
        }
        _ => {
            let mut object = Map::new();
            for (property, subschema) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(value) = of_schema(subschema, schemas, property, depth + 1) {
                    object.insert(property.clone(), value);
                }
            }
            Value::Object(object)
        }
    })
}

fn integer(schema: &Value) -> i64 {
    let minimum = schema["minimum"].as_i64().or_else(|| schema["exclusiveMinimum"].as_i64().map(|m| m + 1));
    let maximum = schema["maximum"].as_i64();
    match (minimum, maximum) {
        (Some(low), _) => low.max(1).min(maximum.unwrap_or(i64::MAX)),
        (None, Some(high)) => high.min(1),
        (None, None) => 1,
    }
}

fn string(schema: &Value, name: &str) -> String {
    let description = schema["description"].as_str().unwrap_or_default();
    if let Some(prefix) = id_prefix(description) {
        return format!("{prefix}01jd8x2m7r0000000000000000");
    }
    let text = match schema["format"].as_str() {
        // A time a request sets is in the future (an expiry); one an answer reports, past.
        Some("date-time") if name.ends_with("expires_at") => "2031-01-01T00:00:00Z".to_string(),
        Some("date-time") => "2026-11-30T09:30:00Z".to_string(),
        Some("date") => "2026-11-30".to_string(),
        Some("uri") | Some("url") => "https://example.com/hook".to_string(),
        Some("uuid") => "0b8e9a64-2c61-4a57-9c1e-5f1a2e3b4c5d".to_string(),
        _ => match name {
            "url" | "return_url" | "authorization_url" | "redirect_uri" => "https://example.com/hook".to_string(),
            "event_type" | "name" => "order.paid".to_string(),
            "event_types" => "order.*".to_string(),
            "filter" => ".data.amount > 100".to_string(),
            "transform" => "{id, type, amount: .data.amount}".to_string(),
            "template_name" | "provider" => "stripe".to_string(),
            "description" => "Orders paid in the web shop".to_string(),
            "secret" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            _ => name.to_string(),
        },
    };
    let minimum = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let maximum = schema["maxLength"].as_u64().map_or(usize::MAX, |m| m as usize);
    let mut text = if text.is_empty() { "value".to_string() } else { text };
    while text.chars().count() < minimum {
        text.push('x');
    }
    text.chars().take(maximum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_take_the_prefix_their_description_names() {
        assert_eq!(id_prefix("`evt_…`"), Some("evt_"));
        assert_eq!(id_prefix("The endpoint (`ep_…`) to deliver to"), Some("ep_"));
        assert_eq!(id_prefix("`conn_…`: the URL to give the provider"), Some("conn_"));
        assert_eq!(id_prefix("Any text"), None);
    }

    #[test]
    fn examples_follow_types_bounds_enums_and_references() {
        let schemas = json!({"Kind": {"type": "string", "enum": ["a", "b"]}});
        let schema = json!({"type": "object", "properties": {
            "id": {"type": "string", "description": "`msg_…`"},
            "count": {"type": "integer", "minimum": 5},
            "kind": {"$ref": "#/components/schemas/Kind"},
            "gone": {"type": "null"},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 3}},
            "when": {"type": ["string", "null"], "format": "date-time"},
        }});
        assert_eq!(
            of_schema(&schema, &schemas, "", 0).unwrap(),
            json!({"id": "msg_01jd8x2m7r0000000000000000", "count": 5, "kind": "a", "tags": ["tags"],
                   "when": "2026-11-30T09:30:00Z"})
        );
    }
}
