//! The OpenAPI 3.1 document, generated from the handlers' annotations and finished here (the
//! security scheme, the errors every operation can answer, unique operation ids, examples),
//! and a docs page rendered from that same document.

mod examples;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::problem::{FieldError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard API",
        description = "Switchboard is a self-hosted integration hub. Authenticate with `Authorization: Bearer sk_…`. \
                       Every error is an RFC 9457 problem document (`application/problem+json`). Lists are \
                       paginated newest first with an opaque `cursor`."
    ),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "events", description = "Event types and the events the product publishes"),
        (name = "webhooks", description = "Outgoing webhook endpoints: subscriptions, signing secrets"),
        (name = "deliveries", description = "Messages (an event for an endpoint), attempts, resends and statistics"),
        (name = "marketplace", description = "The catalog of providers; installing, configuring and uninstalling connections"),
        (name = "integrations", description = "Using a connection: health check, actions, the proxy to the provider's API, health"),
        (name = "incoming webhooks", description = "The universal receiver of providers' webhooks, verified per the connection's manifest"),
        (name = "api keys", description = "API keys of the caller's tenant"),
        (name = "tenants", description = "Tenants, for the operator"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The errors every operation can answer, by the trait that causes them.
const COMMON: &[(&str, &str, &str)] = &[
    ("500", "Internal", "An internal error; details are in the server log, never in the response"),
    ("503", "Unavailable", "The request timed out or the server is shutting down"),
];
const AUTHENTICATED: &[(&str, &str, &str)] = &[
    ("401", "Unauthorized", "The API key is missing, invalid, revoked or expired"),
    ("403", "Forbidden", "The API key lacks the scope this operation needs"),
    ("429", "RateLimited", "Too many requests for this API key; see Retry-After"),
];
const WITH_BODY: &[(&str, &str, &str)] = &[
    ("400", "BadRequest", "The body is not well-formed JSON"),
    ("413", "PayloadTooLarge", "The body exceeds the size limit"),
    ("415", "UnsupportedMediaType", "The body is not application/json"),
    ("422", "Validation", "A field is missing, unknown or invalid; `errors` names each"),
];
const WITH_QUERY: &[(&str, &str, &str)] = &[("400", "BadRequest", "A query parameter is invalid; `errors` names it")];

/// Adds the security scheme and the shared error responses to the generated document, makes
/// operation ids unique and gives every operation examples; the document as served.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> Value {
    // axum's catch-all `{*path}` is an ordinary `{path}` parameter in OpenAPI.
    let wildcard: Vec<String> = doc.paths.paths.keys().filter(|p| p.contains("{*")).cloned().collect();
    for path in wildcard {
        let item = doc.paths.paths.remove(&path).expect("listed above");
        doc.paths.paths.insert(path.replace("{*", "{"), item);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("sk_…").build()),
    );
    for (_, name, description) in COMMON.iter().chain(AUTHENTICATED).chain(WITH_BODY).chain(WITH_QUERY) {
        let response = ResponseBuilder::new()
            .description(*description)
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        components.responses.insert(name.to_string(), RefOr::T(response));
    }
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            add_errors(operation);
        }
    }
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
    unique_operation_ids(&mut doc);
    examples::add(&mut doc);
    doc
}

/// Client generators name methods by operation id, so each must be unique; an operation
/// that serves several methods (the proxy) gets the method appended to its id.
fn unique_operation_ids(doc: &mut Value) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in doc["paths"].as_object().into_iter().flatten().map(|(_, item)| item) {
        for operation in item.as_object().into_iter().flatten().map(|(_, op)| op) {
            if let Some(id) = operation["operationId"].as_str() {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    for item in doc["paths"].as_object_mut().into_iter().flatten().map(|(_, item)| item) {
        for (method, operation) in item.as_object_mut().into_iter().flatten() {
            let Some(id) = operation["operationId"].as_str().map(str::to_string) else { continue };
            if seen.get(&id).is_some_and(|n| *n > 1) {
                operation["operationId"] = Value::String(format!("{id}_{method}"));
            }
        }
    }
}

fn add_errors(operation: &mut Operation) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    let has_query = operation
        .parameters
        .as_ref()
        .is_some_and(|ps| ps.iter().any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)));
    let mut sets = vec![COMMON];
    if authenticated {
        sets.push(AUTHENTICATED);
    }
    if has_body {
        sets.push(WITH_BODY);
    } else if has_query {
        sets.push(WITH_QUERY);
    }
    for (status, name, _) in sets.into_iter().flatten() {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
    }
}

/// A self-contained HTML page describing every operation (no external scripts, so it works
/// on a machine without internet access).
pub fn docs_html(spec: &Value) -> String {
    let mut by_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(paths) = spec["paths"].as_object() {
        for (path, item) in paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                by_tag.entry(tag).or_default().push(render_operation(method, path, op));
            }
        }
    }
    let mut body = String::new();
    for (tag, ops) in by_tag {
        body.push_str(&format!("<h2>{}</h2>\n{}", escape(&tag), ops.join("\n")));
    }
    let schemas = serde_json::to_string_pretty(&spec["components"]["schemas"]).unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Switchboard API</title><style>{STYLE}</style></head><body>\
         <h1>Switchboard API</h1><p>{}</p><p>Machine-readable: <a href=\"/api/openapi.json\">/api/openapi.json</a> (OpenAPI {}).</p>\
         {body}<h2>Schemas</h2><pre>{}</pre></body></html>",
        escape(spec["info"]["description"].as_str().unwrap_or("")),
        escape(spec["openapi"].as_str().unwrap_or("")),
        escape(&schemas)
    )
}

fn render_operation(method: &str, path: &str, op: &Value) -> String {
    let mut html = format!(
        "<section><h3><span class=\"m\">{}</span> <code>{}</code></h3><p>{}</p>",
        method.to_uppercase(),
        escape(path),
        escape(op["description"].as_str().or(op["summary"].as_str()).unwrap_or(""))
    );
    if let Some(params) = op["parameters"].as_array() {
        html.push_str("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>");
        for p in params {
            html.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or("")),
                escape(p["in"].as_str().unwrap_or("")),
                escape(p["description"].as_str().unwrap_or(""))
            ));
        }
        html.push_str("</table>");
    }
    if let Some(schema) = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str() {
        html.push_str(&format!("<p>Body: <code>{}</code></p>", escape(schema.rsplit('/').next().unwrap_or(schema))));
    }
    if let Some(responses) = op["responses"].as_object() {
        html.push_str("<ul>");
        for (status, response) in responses {
            let description = response["description"]
                .as_str()
                .or(response["$ref"].as_str().and_then(|r| r.rsplit('/').next()))
                .unwrap_or("");
            html.push_str(&format!("<li><b>{}</b> {}</li>", escape(status), escape(description)));
        }
        html.push_str("</ul>");
    }
    html.push_str("</section>");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
section{border-top:1px solid #ddd;padding:.5rem 0}.m{font-family:monospace;background:#eef;padding:0 .3rem}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}pre{background:#f6f6f6;padding:1rem;overflow:auto}";
