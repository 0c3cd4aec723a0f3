//! JSON Schemas that callers give (an event type's payload schema; later a sync model or an
//! inline schema), compiled within bounds.
//!
//! Compiling a validator costs memory in proportion to the schema, and with some validators
//! far more than that (jsonschema 0.26 spent about 1 GB on a 1.3 KB schema nested 120 levels
//! deep). So a schema is measured before it is compiled: its nesting and its size are capped,
//! and patterns use the linear-time `regex` engine with size limits, so no pattern can make
//! validation backtrack for long. External references are never fetched (the validator is
//! built without any resolver that reaches the network or the disk).

use serde_json::Value;

/// The deepest a schema document may nest (objects and arrays, counted from the root).
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// The largest schema document, in bytes of compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// The largest compiled form of one `pattern`, and of its lazy DFA's cache.
const MAX_PATTERN_BYTES: usize = 256 * 1024;

/// Why a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The document nests deeper than [`MAX_SCHEMA_DEPTH`].
    #[error("is nested deeper than {MAX_SCHEMA_DEPTH} levels")]
    TooDeep,
    /// The document is larger than [`MAX_SCHEMA_BYTES`].
    #[error("is larger than {MAX_SCHEMA_BYTES} bytes")]
    TooLarge,
    /// Not a valid JSON Schema, or a pattern beyond the size limits; holds the validator's message.
    #[error("is not a valid JSON Schema: {0}")]
    Invalid(String),
}

/// Measures, then compiles `schema` (draft 2020-12 unless it says otherwise).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, SchemaError> {
    check_bounds(schema)?;
    jsonschema::options()
        .with_pattern_options(
            jsonschema::PatternOptions::regex().size_limit(MAX_PATTERN_BYTES).dfa_size_limit(MAX_PATTERN_BYTES),
        )
        .build(schema)
        .map_err(|e| SchemaError::Invalid(e.to_string()))
}

/// Depth first, without recursion, stopping at the first bound crossed.
fn check_bounds(schema: &Value) -> Result<(), SchemaError> {
    let mut bytes = 0usize;
    let mut pending = vec![(schema, 1usize)];
    while let Some((value, depth)) = pending.pop() {
        // A rough measure of the compact text: each value's own characters plus a separator.
        bytes += 1 + match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(n) => n.to_string().len(),
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                if depth > MAX_SCHEMA_DEPTH {
                    return Err(SchemaError::TooDeep);
                }
                pending.extend(items.iter().map(|item| (item, depth + 1)));
                2
            }
            Value::Object(members) => {
                if depth > MAX_SCHEMA_DEPTH {
                    return Err(SchemaError::TooDeep);
                }
                pending.extend(members.values().map(|member| (member, depth + 1)));
                members.keys().map(|key| key.len() + 3).sum::<usize>() + 2
            }
        };
        if bytes > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(keyword: &str, depth: usize) -> Value {
        (0..depth).fold(json!({"type": "string"}), |inner, _| json!({ keyword: inner }))
    }

    #[test]
    fn depth_is_bounded_whatever_the_keyword() {
        for keyword in ["items", "not", "additionalProperties"] {
            // `nested(_, n)` is n + 1 objects deep.
            assert!(compile(&nested(keyword, MAX_SCHEMA_DEPTH - 1)).is_ok(), "{keyword}");
            assert_eq!(compile(&nested(keyword, MAX_SCHEMA_DEPTH)).err(), Some(SchemaError::TooDeep), "{keyword}");
            assert_eq!(compile(&nested(keyword, 120)).err(), Some(SchemaError::TooDeep), "{keyword}");
        }
        let arrays = (0..40).fold(json!({"type": "string"}), |inner, _| json!({"anyOf": [inner]}));
        assert_eq!(compile(&arrays).err(), Some(SchemaError::TooDeep), "arrays count as levels");
    }

    #[test]
    fn size_is_bounded() {
        let properties: serde_json::Map<String, Value> =
            (0..2000).map(|n| (format!("property_{n:05}"), json!({"type": "string", "maxLength": 10}))).collect();
        let wide = json!({"type": "object", "properties": properties});
        assert!(wide.to_string().len() > MAX_SCHEMA_BYTES);
        assert_eq!(compile(&wide).err(), Some(SchemaError::TooLarge));
        let long_text = json!({"description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert_eq!(compile(&long_text).err(), Some(SchemaError::TooLarge));
    }

    #[test]
    fn ordinary_schemas_compile_and_validate() {
        let schema = json!({"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string", "pattern": "^ord_[0-9a-z]+$"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}}
        }, "$defs": {"item": {"type": "object", "properties": {"sku": {"type": "string"}}}}});
        let validator = compile(&schema).unwrap();
        assert!(validator.is_valid(&json!({"id": "ord_1", "items": [{"sku": "a"}]})));
        assert!(!validator.is_valid(&json!({"id": "x"})));
        assert!(!validator.is_valid(&json!({"id": "ord_1", "items": [{"sku": 1}]})));
    }

    #[test]
    fn invalid_schemas_remote_references_and_backtracking_patterns_are_refused() {
        assert!(matches!(compile(&json!({"type": "strang"})), Err(SchemaError::Invalid(_))));
        assert!(matches!(compile(&json!({"$ref": "https://example.com/s.json"})), Err(SchemaError::Invalid(_))));
        // Look-arounds and back-references need a backtracking engine; the linear one
        // refuses them.
        assert!(matches!(compile(&json!({"pattern": "^(?=a)a$"})), Err(SchemaError::Invalid(_))));
        assert!(matches!(compile(&json!({"pattern": "^(a+)\\1$"})), Err(SchemaError::Invalid(_))));
        // A pattern whose compiled form would be huge is refused too.
        assert!(matches!(compile(&json!({"pattern": "\\w{3000}"})), Err(SchemaError::Invalid(_))));
    }
}
