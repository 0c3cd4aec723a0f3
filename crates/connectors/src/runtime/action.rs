//! Actions (a manifest's named operations, with input schemas and templates), their
//! pagination, and the health check.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use switchboard_core::Id;
use switchboard_store::{AuthState, ConnectionHealthUpdate};
use url::Url;

use super::call::excerpt;
use super::resolve::{Resolved, within_base};
use super::{Connections, ConnectorError};
use crate::manifest::{Action, Pagination};
use crate::provider::Provider;

/// Pages fetched by a paginated action unless the caller asks for fewer or more.
pub const DEFAULT_MAX_PAGES: u32 = 10;
pub const MAX_PAGES: u32 = 100;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionOutcome {
    /// The selected result; for a paginated action, the items of every page fetched.
    pub data: Value,
    /// Pages fetched (1 for an action without pagination).
    pub pages: u32,
    /// More pages exist beyond `max_pages`.
    pub has_more: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub ok: bool,
    /// The provider's HTTP status, when it answered.
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl Connections {
    /// The declaration of one of the connection's actions.
    pub async fn action(&self, tenant_id: &Id, connection_id: &str, name: &str) -> Result<Action, ConnectorError> {
        let provider = self.provider_of(tenant_id, connection_id).await?;
        provider.action(name).cloned().ok_or_else(|| unknown_action(&provider, name))
    }

    /// The connection's provider: from its resolved form when it can be resolved (cached),
    /// else from its row (a connection without credentials still has a provider).
    async fn provider_of(&self, tenant_id: &Id, connection_id: &str) -> Result<Arc<Provider>, ConnectorError> {
        match self.resolved(tenant_id, connection_id).await {
            Ok(resolved) => Ok(resolved.provider.clone()),
            Err(error @ (ConnectorError::NotFound | ConnectorError::Store(_))) => Err(error),
            Err(_) => Ok(self.provider(&self.get(tenant_id, connection_id).await?.provider)?.clone()),
        }
    }

    pub async fn run_action(
        &self,
        tenant_id: &Id,
        connection_id: &str,
        name: &str,
        input: Value,
        max_pages: Option<u32>,
    ) -> Result<ActionOutcome, ConnectorError> {
        let resolved = match self.resolved(tenant_id, connection_id).await {
            Ok(resolved) => resolved,
            // What the caller got wrong (an action the provider lacks, its input) is said
            // before what the connection lacks (credentials not set yet, say).
            Err(error @ (ConnectorError::NotFound | ConnectorError::Store(_))) => return Err(error),
            Err(error) => {
                let provider = self.provider_of(tenant_id, connection_id).await?;
                if provider.action(name).is_none() {
                    return Err(unknown_action(&provider, name));
                }
                provider.check_input(name, &input).map_err(ConnectorError::Invalid)?;
                return Err(error);
            }
        };
        let Some(action) = resolved.provider.action(name) else {
            return Err(unknown_action(&resolved.provider, name));
        };
        resolved.provider.check_input(name, &input).map_err(ConnectorError::Invalid)?;
        let max_pages = match max_pages {
            Some(n) if !(1..=MAX_PAGES).contains(&n) => {
                return Err(ConnectorError::invalid("max_pages", &format!("must be between 1 and {MAX_PAGES}")));
            }
            Some(n) => n,
            None => DEFAULT_MAX_PAGES,
        };
        let mut context = resolved.context.clone();
        context["input"] = input.clone();
        let templates = &resolved.provider.templates;
        let path = templates
            .render_path(&format!("action:{name}"), &context)
            .map_err(|e| ConnectorError::invalid("input", &format!("the action's path cannot be built: {e}")))?;
        let mut url = resolved.url(&path)?;
        for (param, template) in &action.query {
            // A parameter whose value is missing or null is left out.
            let value = templates.render_optional(template, &context).ok().flatten().filter(|v| !v.is_empty());
            if let Some(value) = value {
                url.query_pairs_mut().append_pair(param, &value);
            }
        }
        let (headers, body) = request_body(action, &input, &context, templates)?;
        let pagination = action.pagination.as_ref().and_then(|p| resolved.provider.manifest.pagination.get(p));
        match pagination {
            None => {
                let document = self.fetch(&resolved, action.method.as_reqwest(), url, headers, body).await?.1;
                Ok(ActionOutcome { data: select(action, document)?, pages: 1, has_more: false })
            }
            Some(style) => self.paginate(&resolved, action, style, url, max_pages).await,
        }
    }

    /// One call whose answer must be a success in JSON.
    async fn fetch(
        &self,
        resolved: &Arc<Resolved>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(HeaderMap, Value), ConnectorError> {
        let response = self.send(resolved, method, url, headers, body, false).await?;
        let status = response.status.as_u16();
        if let Some(code) = &response.provider_error {
            return Err(ConnectorError::Upstream { status, message: code.clone(), excerpt: excerpt(&response.body) });
        }
        if !response.status.is_success() {
            return Err(ConnectorError::Upstream {
                status,
                message: format!("the provider answered {}", response.status),
                excerpt: excerpt(&response.body),
            });
        }
        if response.body.is_empty() || response.status == StatusCode::NO_CONTENT {
            return Ok((response.headers, Value::Null));
        }
        let document = serde_json::from_slice(&response.body).map_err(|e| ConnectorError::Upstream {
            status,
            message: format!("the provider's answer is not JSON: {e}"),
            excerpt: excerpt(&response.body),
        })?;
        Ok((response.headers, document))
    }

    async fn paginate(
        &self,
        resolved: &Arc<Resolved>,
        action: &Action,
        style: &Pagination,
        first: Url,
        max_pages: u32,
    ) -> Result<ActionOutcome, ConnectorError> {
        let mut items = Vec::new();
        let mut url = first;
        let page_size = match style {
            Pagination::Cursor { page_size, .. }
            | Pagination::Offset { page_size, .. }
            | Pagination::Page { page_size, .. }
            | Pagination::LinkHeader { page_size, .. } => *page_size,
        };
        let limit_param = match style {
            Pagination::Cursor { limit_param, .. }
            | Pagination::Page { limit_param, .. }
            | Pagination::LinkHeader { limit_param, .. } => limit_param.clone(),
            Pagination::Offset { limit_param, .. } => Some(limit_param.clone()),
        };
        if let Some(param) = &limit_param {
            set_param(&mut url, param, &page_size.to_string());
        }
        let mut offset: u64 = 0;
        let mut page_number = match style {
            Pagination::Page { first_page, .. } => {
                set_param(&mut url, page_param(style), &first_page.to_string());
                *first_page
            }
            Pagination::Offset { offset_param, .. } => {
                set_param(&mut url, offset_param, "0");
                0
            }
            _ => 0,
        };
        let mut pages = 0;
        loop {
            let (headers, document) =
                self.fetch(resolved, Method::GET, url.clone(), HeaderMap::new(), Bytes::new()).await?;
            pages += 1;
            let page_items = match select(action, document.clone())? {
                Value::Array(page_items) => page_items,
                Value::Null => Vec::new(),
                other => {
                    return Err(ConnectorError::Upstream {
                        status: 200,
                        message: "the provider's page does not hold a list where the manifest says".into(),
                        excerpt: excerpt(other.to_string().as_bytes()),
                    });
                }
            };
            let count = page_items.len() as u64;
            let last_item = page_items.last().cloned();
            items.extend(page_items);
            let next: Option<Url> = match style {
                Pagination::Cursor { cursor_param, next_cursor, cursor_from_last_item, has_more, .. } => {
                    let more = has_more.as_ref().map(|p| document.pointer(p).and_then(Value::as_bool).unwrap_or(false));
                    let cursor = match (next_cursor, cursor_from_last_item) {
                        (Some(pointer), _) => document.pointer(pointer).and_then(scalar),
                        (None, Some(pointer)) => {
                            last_item.as_ref().and_then(|item| item.pointer(pointer)).and_then(scalar)
                        }
                        (None, None) => None,
                    };
                    cursor.filter(|c| !c.is_empty() && more != Some(false)).map(|c| {
                        let mut next = url.clone();
                        set_param(&mut next, cursor_param, &c);
                        next
                    })
                }
                Pagination::Offset { offset_param, total, .. } => {
                    offset += count;
                    let total = total.as_ref().and_then(|p| document.pointer(p)).and_then(Value::as_u64);
                    let done = count == 0
                        || count < u64::from(page_size) && total.is_none()
                        || total.is_some_and(|t| offset >= t);
                    (!done).then(|| {
                        let mut next = url.clone();
                        set_param(&mut next, offset_param, &offset.to_string());
                        next
                    })
                }
                Pagination::Page { .. } => (count >= u64::from(page_size)).then(|| {
                    page_number += 1;
                    let mut next = url.clone();
                    set_param(&mut next, page_param(style), &page_number.to_string());
                    next
                }),
                Pagination::LinkHeader { .. } => next_link(&headers, &resolved.base_url),
            };
            match next {
                Some(next) if pages < max_pages => url = next,
                Some(_) => return Ok(ActionOutcome { data: Value::Array(items), pages, has_more: true }),
                None => return Ok(ActionOutcome { data: Value::Array(items), pages, has_more: false }),
            }
        }
    }

    /// Runs the manifest's health check and records the outcome on the connection.
    pub async fn test(&self, tenant_id: &Id, connection_id: &str) -> Result<TestOutcome, ConnectorError> {
        let resolved = self.resolved(tenant_id, connection_id).await?;
        let check = resolved.provider.manifest.health_check.clone().ok_or(ConnectorError::NoHealthCheck)?;
        let path = resolved
            .provider
            .templates
            .render_path("health_check", &resolved.context)
            .map_err(|e| ConnectorError::Misconfigured(format!("the health check path: {e}")))?;
        let url = resolved.url(&path)?;
        let started = Instant::now();
        let result = self.send(&resolved, check.method.as_reqwest(), url, HeaderMap::new(), Bytes::new(), true).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let outcome = match result {
            Ok(response) => TestOutcome {
                ok: !response.failed(),
                status: Some(response.status.as_u16()),
                latency_ms,
                error: response.failed().then(|| response.failure()),
            },
            Err(ConnectorError::Unreachable { code, message }) => {
                TestOutcome { ok: false, status: None, latency_ms, error: Some(format!("{code}: {message}")) }
            }
            Err(other) => return Err(other),
        };
        let rejected = matches!(outcome.status, Some(401 | 403))
            || outcome.error.as_deref().is_some_and(|e| e.contains("invalid_auth") || e.contains("not_authed"));
        let now = self.clock.now();
        let update = ConnectionHealthUpdate {
            tenant_id: tenant_id.clone(),
            connection_id: resolved.connection.id.clone(),
            last_success_at: outcome.ok.then_some(now),
            last_error: outcome.error.clone().map(|e| (e, now)),
            // A failure that is not the provider refusing the credentials changes nothing.
            auth_state: if outcome.ok {
                Some(AuthState::Ok)
            } else if rejected {
                Some(AuthState::Rejected)
            } else {
                None
            },
            test: Some((now, outcome.ok)),
        };
        self.store.record_connection_health(&[update]).await?;
        Ok(outcome)
    }
}

fn unknown_action(provider: &Provider, name: &str) -> ConnectorError {
    let known = provider.manifest.actions.iter().map(|a| a.name.clone()).collect();
    ConnectorError::UnknownAction { name: name.to_string(), known }
}

fn page_param(style: &Pagination) -> &str {
    match style {
        Pagination::Page { page_param, .. } => page_param,
        _ => "page",
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Replaces (or adds) one query parameter, keeping the others in order.
fn set_param(url: &mut Url, name: &str, value: &str) {
    let others: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != name).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (k, v) in &others {
        pairs.append_pair(k, v);
    }
    pairs.append_pair(name, value);
}

/// The `rel="next"` target of an RFC 8288 `Link` header, if it stays on the provider's
/// base URL (a link elsewhere is never followed with the connection's credentials).
fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    let header = headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=").map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next")).unwrap_or(false)
        });
        if !is_next {
            continue;
        }
        let next = base.join(target).ok()?;
        return within_base(base, &next).then_some(next);
    }
    None
}

fn select(action: &Action, document: Value) -> Result<Value, ConnectorError> {
    match action.response.as_deref() {
        None | Some("") => Ok(document),
        Some(pointer) => document.pointer(pointer).cloned().ok_or_else(|| ConnectorError::Upstream {
            status: 200,
            message: format!("the provider's answer has nothing at {pointer}"),
            excerpt: excerpt(document.to_string().as_bytes()),
        }),
    }
}

fn request_body(
    action: &Action,
    input: &Value,
    context: &Value,
    templates: &crate::template::Templates,
) -> Result<(HeaderMap, Bytes), ConnectorError> {
    let mut headers = HeaderMap::new();
    let body = match (&action.body, action.method) {
        (Some(template), _) => templates
            .render_value(template, context)
            .map_err(|e| ConnectorError::invalid("input", &format!("the action's body cannot be built: {e}")))?
            .unwrap_or(Value::Null),
        (None, crate::manifest::Method::Post | crate::manifest::Method::Put | crate::manifest::Method::Patch) => {
            input.clone()
        }
        (None, _) => return Ok((headers, Bytes::new())),
    };
    if action.form {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        if let Value::Object(fields) = &body {
            for (key, value) in fields {
                match value {
                    Value::String(text) => form.append_pair(key, text),
                    Value::Null => continue,
                    other => form.append_pair(key, &other.to_string()),
                };
            }
        }
        headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
        Ok((headers, Bytes::from(form.finish())))
    } else {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        Ok((headers, Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_are_followed_only_on_the_providers_origin() {
        let base = Url::parse("https://api.github.com").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            HeaderValue::from_static("<https://api.github.com/user/repos?page=2>; rel=\"next\", <https://api.github.com/user/repos?page=5>; rel=\"last\""),
        );
        assert_eq!(next_link(&headers, &base).unwrap().as_str(), "https://api.github.com/user/repos?page=2");
        headers.insert("link", HeaderValue::from_static("<https://evil.example/steal>; rel=\"next\""));
        assert_eq!(next_link(&headers, &base), None);

        let under_api = Url::parse("https://example.com/api").unwrap();
        headers.insert("link", HeaderValue::from_static("</apiary/x?page=2>; rel=\"next\""));
        assert_eq!(next_link(&headers, &under_api), None, "a path prefix is not a segment boundary");
        headers.insert("link", HeaderValue::from_static("</api/x?page=2>; rel=\"next\""));
        assert_eq!(next_link(&headers, &under_api).unwrap().as_str(), "https://example.com/api/x?page=2");
    }
}
