//! Extractors that turn every kind of bad input into a problem naming the field: wrong content
//! type (415), oversize body (413), malformed JSON (400), unknown or mistyped fields (422),
//! bad query parameters (400).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;
use crate::state::AppState;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declared_json = declares_json(req.headers());
        if !declared_json {
            return Err(not_json());
        }
        parse_json(&read_body(req, state).await?).map(ApiJson)
    }
}

fn declares_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn not_json() -> ApiError {
    ApiError::unsupported_media_type("The request body must be JSON (Content-Type: application/json)")
        .with_field("Content-Type", "expected application/json")
}

/// A JSON body whose every field is optional: an empty body (or only whitespace, whatever
/// its `Content-Type`) means "no options", as for `POST …/rotate-secret` or an action
/// without input.
pub struct OptionalJson<T>(pub T);

impl<T> FromRequest<AppState> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declared_json = declares_json(req.headers());
        let body = read_body(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !declared_json {
            return Err(not_json());
        }
        parse_json(&body).map(OptionalJson)
    }
}

/// The whole request body, within the body limit (413 beyond it: at once when the declared
/// length says so, without waiting for a body that will be refused).
pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    if declared_length(req.headers()).is_some_and(|length| length > state.config.max_body_bytes as u64) {
        return Err(ApiError::payload_too_large(state.config.max_body_bytes));
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(state.config.max_body_bytes)
        } else {
            ApiError::bad_request("The request body could not be read")
        }
    })
}

/// Whole numbers in JSON bodies, read as JSON Schema reads `"type": "integer"` (and so the
/// client generators that read our document): `76` and `76.0` alike, never `76.5`. For
/// fields declared `#[serde(default, deserialize_with = "integral::optional")]`, or
/// `integral::present` for a PATCH field where `null` means "remove".
pub mod integral {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn whole<T: TryFrom<u64>, E: serde::de::Error>(value: Value) -> Result<T, E> {
        let number = match &value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64).map(|f| f as u64)
            }),
            _ => None,
        };
        number
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| E::custom(format!("must be a whole number within the field's range, not {value}")))
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
        Option::<Value>::deserialize(d)?.filter(|v| !v.is_null()).map(whole).transpose()
    }

    pub fn present<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Ok(Some(optional(d)?))
    }
}

/// The body's length as its `Content-Length` declares it.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Parses JSON, telling syntax errors (400) from well-formed JSON of the wrong shape (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::malformed("body", "the body is empty; a JSON object is expected")),
        // serde would also read a struct from a positional array; every body here is an object.
        Some(b'[') => return Err(ApiError::validation("body", "must be a JSON object, not an array")),
        Some(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(value) => Ok(value),
        Err(error) => {
            let mut field = field_name(error.path());
            let inner = error.into_inner();
            // A missing field is reported at its parent; name the field itself.
            if let Some(name) = missing_field(&inner) {
                field = if field == "body" { name } else { format!("{field}.{name}") };
            }
            match inner.classify() {
                serde_json::error::Category::Data => Err(ApiError::validation(field, clean_serde_message(&inner))),
                _ => Err(ApiError::malformed(
                    "body",
                    format!(
                        "invalid JSON: {} (line {}, column {})",
                        syntax_reason(&inner),
                        inner.line(),
                        inner.column()
                    ),
                )),
            }
        }
    }
}

/// `payload.items[0].sku` from a serde path; `body` for the document itself.
fn field_name(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    if out.is_empty() { "body".to_string() } else { out }
}

fn missing_field(error: &serde_json::Error) -> Option<String> {
    let text = error.to_string();
    let rest = text.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// What is wrong with malformed JSON, in words a caller can act on.
fn syntax_reason(error: &serde_json::Error) -> String {
    let reason = clean_serde_message(error);
    match reason.as_str() {
        "recursion limit exceeded" => "it is nested deeper than 128 levels".to_string(),
        "number out of range" => "a number is too large to represent (beyond ±1.8e308)".to_string(),
        _ => reason,
    }
}

/// serde's messages end with " at line 1 column 17"; the field name already says where.
fn clean_serde_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Query parameters, refused with a 400 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_deserializer(query);
        serde_path_to_error::deserialize::<_, T>(de).map(ApiQuery).map_err(|error| {
            let field = field_name(error.path());
            let detail = error.into_inner().to_string();
            let field = if field == "body" { query_field_from_message(&detail) } else { field };
            ApiError::malformed(field, detail)
        })
    }
}

fn serde_urlencoded_deserializer(query: &str) -> serde_urlencoded::Deserializer<'_> {
    serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()))
}

/// serde reports a missing or unknown parameter as "missing field `x`" without a path.
fn query_field_from_message(message: &str) -> String {
    message.split('`').nth(1).unwrap_or("query").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: u32,
    }

    fn field_errors(e: &ApiError) -> Vec<String> {
        e.to_problem().errors.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422_naming_the_field() {
        let e = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);

        let e = parse_json::<Body>(br#"{"name":"a","items":[{"sku":"x"}]}"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_errors(&e), vec!["items[0].sku"]);

        let e = parse_json::<Body>(br#"{"name":"a","items":[],"extra":1}"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.to_problem().errors[0].detail.contains("extra"), "{:?}", e.to_problem());

        let e = parse_json::<Body>(br#"{"items":[]}"#).unwrap_err();
        assert!(e.to_problem().errors[0].detail.contains("name"));

        let e = parse_json::<Body>(b"  ").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);

        let e = parse_json::<Body>(br#"["a", []]"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
