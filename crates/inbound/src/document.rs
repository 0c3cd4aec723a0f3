//! What a webhook's body says, for the values a manifest locates in it (the event type, the
//! provider's event id): the body as a JSON document (a form-encoded body decoded into an
//! object of its fields), and the items of a batch, each with its own bytes.

use std::collections::HashSet;

use http::header::{CONTENT_TYPE, HeaderMap};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// JSON, or anything not declared as a form (providers often omit or misstate the type).
    Json,
    /// `application/x-www-form-urlencoded`: Slack's slash commands and interactivity, Twilio.
    Form,
}

impl BodyEncoding {
    pub fn of(headers: &HeaderMap) -> Self {
        let declared = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let media_type = declared.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") { Self::Form } else { Self::Json }
    }
}

/// The body as a document: parsed JSON, or a form decoded into an object whose members are
/// its fields (a string each, or an array of strings for a repeated field), with the fields
/// named in `json_fields` parsed as JSON where they are (Slack's `payload`). `None` when a
/// JSON body is not JSON.
pub fn document(body: &[u8], encoding: BodyEncoding, json_fields: &[String]) -> Option<Value> {
    match encoding {
        BodyEncoding::Json => serde_json::from_slice(body).ok(),
        BodyEncoding::Form => Some(form_document(body, json_fields)),
    }
}

fn form_document(body: &[u8], json_fields: &[String]) -> Value {
    let mut fields: Map<String, Value> = Map::new();
    let mut repeated: HashSet<String> = HashSet::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        let value = match json_fields.iter().any(|field| *field == name) {
            true => serde_json::from_str(&value).unwrap_or_else(|_| Value::String(value.into_owned())),
            false => Value::String(value.into_owned()),
        };
        match fields.get_mut(name.as_ref()) {
            None => {
                fields.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) if repeated.contains(name.as_ref()) => values.push(value),
            Some(first) => {
                *first = Value::Array(vec![first.take(), value]);
                repeated.insert(name.into_owned());
            }
        }
    }
    Value::Object(fields)
}

/// The most items one batch webhook may carry (HubSpot sends up to 100): each becomes a
/// stored webhook of its own, so a body of tiny items would otherwise cost thousands of writes.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// The elements of the array at `pointer` ("" for a body that is the array), each as the
/// exact bytes it has in the body; `None` when there is no array there.
pub fn batch_items<'a>(body: &'a [u8], pointer: &str) -> Option<Vec<&'a [u8]>> {
    let mut raw: &RawValue = serde_json::from_slice(body).ok()?;
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        // Owned keys: a member name written with escapes cannot be borrowed from the body.
        raw = match serde_json::from_str::<std::collections::HashMap<String, &RawValue>>(raw.get()) {
            Ok(mut members) => members.remove(segment.as_str())?,
            Err(_) => {
                let index: usize = segment.parse().ok()?;
                serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?.get(index).copied()?
            }
        };
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
    // Each item borrows from `body`: its bytes are a slice of it.
    Some(items.into_iter().map(|item| item.get().as_bytes()).collect())
}

/// Where a manifest says a value lives: `header:Name`, `literal:value`, or a JSON pointer
/// into the document.
pub fn locate(location: &str, headers: &HeaderMap, document: Option<&Value>) -> Option<String> {
    if let Some(value) = location.strip_prefix("literal:") {
        return Some(value.to_string());
    }
    match location.strip_prefix("header:") {
        Some(name) => headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string),
        None => document?.pointer(location).and_then(|v| match v {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }),
    }
}

/// The first of several locations that holds a value.
pub fn locate_first<'a>(
    locations: impl IntoIterator<Item = &'a str>,
    headers: &HeaderMap,
    document: Option<&Value>,
) -> Option<String> {
    locations.into_iter().find_map(|location| locate(location, headers, document))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn forms_become_objects_with_json_fields_parsed() {
        let body = b"command=%2Fdeploy&text=api+now&payload=%7B%22type%22%3A%22block_actions%22%7D&tag=a&tag=b";
        let document = document(body, BodyEncoding::Form, &["payload".to_string()]).unwrap();
        assert_eq!(
            document,
            json!({"command": "/deploy", "text": "api now", "payload": {"type": "block_actions"}, "tag": ["a", "b"]})
        );
        assert_eq!(locate("/payload/type", &HeaderMap::new(), Some(&document)).as_deref(), Some("block_actions"));
        // A field that is not JSON stays text.
        assert_eq!(document_of(b"payload=not+json"), json!({"payload": "not json"}));
    }

    fn document_of(body: &[u8]) -> Value {
        document(body, BodyEncoding::Form, &["payload".to_string()]).unwrap()
    }

    #[test]
    fn the_encoding_comes_from_the_content_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(BodyEncoding::of(&headers), BodyEncoding::Json);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=utf-8"));
        assert_eq!(BodyEncoding::of(&headers), BodyEncoding::Form);
    }

    #[test]
    fn batch_items_keep_their_exact_bytes() {
        let body = br#"[ {"eventId": 1, "subscriptionType":"contact.creation"},{"eventId":2} ]"#;
        let items = batch_items(body, "").unwrap();
        assert_eq!(items, [&br#"{"eventId": 1, "subscriptionType":"contact.creation"}"#[..], br#"{"eventId":2}"#]);
        let nested = br#"{"meta": {"n": 2}, "events": [ {"id": "a"} , {"id": "b"} ]}"#;
        assert_eq!(batch_items(nested, "/events").unwrap(), [&br#"{"id": "a"}"#[..], br#"{"id": "b"}"#]);
        assert_eq!(batch_items(br#"{"a": [[1, 2]]}"#, "/a/0").unwrap(), [&b"1"[..], b"2"]);
        assert!(batch_items(br#"{"events": {}}"#, "/events").is_none());
        // Member names written with escapes are found as what they say.
        assert_eq!(batch_items(br#"{"ev\u0065nts": [1]}"#, "/events").unwrap(), [&b"1"[..]]);
        assert!(batch_items(b"not json", "").is_none());
    }

    #[test]
    fn the_first_location_with_a_value_wins() {
        let document = json!({"payload": {"type": "view_submission"}});
        let headers = HeaderMap::new();
        let first = |locations: &[&str]| locate_first(locations.iter().copied(), &headers, Some(&document));
        assert_eq!(first(&["/event/type", "/payload/type"]).as_deref(), Some("view_submission"));
        assert_eq!(first(&["/event/type", "literal:slash_command"]).as_deref(), Some("slash_command"));
        assert_eq!(first(&["/event/type"]), None);
    }
}
