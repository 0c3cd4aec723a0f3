//! Compiled JSON Schemas of event types, cached by (tenant, name, version) so the hot path
//! compiles a schema once per change, not once per event.
//!
//! The cache is bounded by the schemas' size (a compiled validator is roughly proportional to
//! its text, which [`switchboard_core::schema`] caps), so any number of event types costs at
//! most [`CACHE_BYTES`] of validators; the least used are compiled again when needed.

use std::sync::Arc;

use moka::sync::Cache;
use serde_json::Value;

use crate::problem::FieldError;

/// The schema text, in bytes, whose validators are kept at most.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;

pub struct SchemaCache {
    /// (tenant id, event type name) → the schema of one version, compiled.
    compiled: Cache<(String, String), Compiled>,
}

#[derive(Clone)]
struct Compiled {
    version: i64,
    text_bytes: u32,
    validator: Arc<jsonschema::Validator>,
}

impl Default for SchemaCache {
    fn default() -> Self {
        Self {
            compiled: Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_, compiled: &Compiled| compiled.text_bytes)
                .build(),
        }
    }
}

impl SchemaCache {
    /// Validates `payload`; errors name the failing path under `payload`.
    pub fn validate(
        &self,
        tenant_id: &str,
        name: &str,
        version: i64,
        schema_text: &str,
        payload: &Value,
    ) -> Result<(), Vec<FieldError>> {
        let validator = self.validator(tenant_id, name, version, schema_text).map_err(|detail| {
            vec![FieldError {
                field: "event_type".into(),
                detail: format!("the event type's schema cannot be used: {detail}"),
            }]
        })?;
        let errors: Vec<FieldError> = validator
            .iter_errors(payload)
            .take(20)
            .map(|e| FieldError { field: payload_field(&e.instance_path().to_string()), detail: e.to_string() })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn validator(
        &self,
        tenant_id: &str,
        name: &str,
        version: i64,
        schema_text: &str,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let key = (tenant_id.to_string(), name.to_string());
        if let Some(compiled) = self.compiled.get(&key).filter(|compiled| compiled.version == version) {
            return Ok(compiled.validator);
        }
        let schema: Value = serde_json::from_str(schema_text).map_err(|e| e.to_string())?;
        let validator = Arc::new(switchboard_core::schema::compile(&schema).map_err(|e| e.to_string())?);
        let text_bytes = u32::try_from(schema_text.len()).unwrap_or(u32::MAX);
        self.compiled.insert(key, Compiled { version, text_bytes, validator: validator.clone() });
        Ok(validator)
    }
}

/// `/items/0/sku` → `payload.items[0].sku`.
fn payload_field(pointer: &str) -> String {
    let mut out = String::from("payload");
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            out.push('.');
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_name_the_payload_path_and_versions_invalidate_the_cache() {
        let cache = SchemaCache::default();
        let v1 = json!({"type":"object","properties":{"items":{"type":"array","items":{"type":"object","properties":{"sku":{"type":"string"}}}}}}).to_string();
        let errors = cache.validate("t", "order.paid", 1, &v1, &json!({"items":[{"sku": 5}]})).unwrap_err();
        assert_eq!(errors[0].field, "payload.items[0].sku");
        assert!(cache.validate("t", "order.paid", 1, &v1, &json!({"items":[{"sku":"a"}]})).is_ok());

        let v2 = json!({"type":"object","required":["id"]}).to_string();
        let errors = cache.validate("t", "order.paid", 2, &v2, &json!({})).unwrap_err();
        assert_eq!(errors[0].field, "payload");
        assert!(errors[0].detail.contains("id"));
    }
}
