//! The OpenAPI document as client generators and readers meet it: unique operation ids, a
//! summary and a description for every operation, and examples that fit their schemas.
//! (That every documented route is routed is checked against a live server in `api.rs`;
//! CI also validates the document and compiles clients generated from it.)

use std::collections::HashSet;

use serde_json::{Value, json};

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    all
}

#[test]
fn every_operation_has_a_unique_id_a_summary_and_a_description() {
    let doc = switchboard_server::openapi_document();
    let mut ids = HashSet::new();
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no id"));
        assert!(ids.insert(id.to_string()), "{method} {path}: operation id {id} is used twice");
        for field in ["summary", "description"] {
            let text = operation[field].as_str().unwrap_or_default();
            assert!(text.trim().len() >= 10, "{method} {path} has no {field}: {text:?}");
        }
        assert_ne!(
            operation["summary"], operation["description"],
            "{method} {path}: the description repeats the summary"
        );
    }
    assert!(ids.contains("proxy_get") && ids.contains("proxy_delete"), "{ids:?}");
}

/// A validator for `schema`, whose `$ref`s point into the document's components.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let rooted = json!({"components": doc["components"], "allOf": [schema]});
    jsonschema::validator_for(&rooted).unwrap_or_else(|e| panic!("{e}: {schema}"))
}

#[test]
fn every_body_answer_and_path_parameter_has_an_example_that_fits_its_schema() {
    let doc = switchboard_server::openapi_document();
    let mut checked = 0;
    for (method, path, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
            let example = &parameter["example"];
            assert!(!example.is_null(), "{method} {path}: parameter {} has no example", parameter["name"]);
            let errors: Vec<String> =
                validator(&doc, &parameter["schema"]).iter_errors(example).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{method} {path} {}: {errors:?}", parameter["name"]);
        }
        let mut contents = vec![("request", &operation["requestBody"]["content"])];
        for (status, response) in operation["responses"].as_object().unwrap() {
            if status.starts_with('2') {
                contents.push(("response", &response["content"]));
            }
        }
        for (what, content) in contents {
            for (media_type, entry) in content.as_object().into_iter().flatten() {
                let example = &entry["example"];
                assert!(!example.is_null(), "{method} {path}: the {what} ({media_type}) has no example");
                if media_type.contains("json") {
                    let errors: Vec<String> =
                        validator(&doc, &entry["schema"]).iter_errors(example).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{method} {path} {what}: {example} does not fit: {errors:?}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 60, "only {checked} JSON examples");
}

#[test]
fn values_of_any_type_are_documented_as_such() {
    let doc = switchboard_server::openapi_document();
    let schemas = &doc["components"]["schemas"];
    // A paginated action's result is an array; a config field's default a boolean, a number
    // or a string: neither is typed as an object.
    for (schema, property) in [("ActionResult", "data"), ("ConfigFieldOut", "default")] {
        let declared = &schemas[schema]["properties"][property];
        assert!(declared.get("type").is_none() && declared.get("$ref").is_none(), "{schema}.{property}: {declared}");
    }
}

#[test]
fn documented_id_patterns_take_the_ids_the_server_makes_and_refuse_others() {
    use switchboard_core::{Id, IdKind};
    let doc = switchboard_server::openapi_document();
    let kinds = [
        IdKind::Tenant,
        IdKind::ApiKey,
        IdKind::Event,
        IdKind::EventType,
        IdKind::Endpoint,
        IdKind::Message,
        IdKind::Attempt,
        IdKind::Connection,
        IdKind::Inbound,
    ];
    let mut checked = 0;
    for (method, path, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let Some(pattern) = parameter["schema"]["pattern"].as_str() else { continue };
            let Some(kind) = kinds.iter().find(|k| pattern.contains(&format!("{}_", k.prefix()))) else { continue };
            let accepts = |text: &str| jsonschema::is_valid(&json!({"pattern": pattern}), &json!(text));
            let real = Id::new(*kind).to_string();
            assert!(accepts(&real), "{method} {path} {}: {pattern} refuses {real}", parameter["name"]);
            let other = kinds.iter().find(|k| k != &kind).unwrap();
            assert!(!accepts(Id::new(*other).as_str()), "{method} {path}: {pattern} takes another kind's id");
            assert!(!accepts(&format!("{}_nope", kind.prefix())), "{method} {path}: {pattern}");
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} id parameters have a pattern");
}

#[test]
fn filters_are_enumerations_and_pages_are_bounded() {
    let doc = switchboard_server::openapi_document();
    let parameter = |path: &str, name: &str| -> Value {
        let parameters = doc["paths"][path]["get"]["parameters"].as_array().unwrap().clone();
        parameters.into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{path} {name}"))
    };
    let values = |schema: &Value| -> Vec<String> {
        let schema = match schema["$ref"].as_str() {
            Some(reference) => doc["components"]["schemas"][reference.rsplit('/').next().unwrap()].clone(),
            None => schema.clone(),
        };
        let list = schema["enum"].as_array().or_else(|| schema["oneOf"][0]["enum"].as_array());
        let mut values: Vec<String> =
            list.unwrap_or_else(|| panic!("{schema}")).iter().map(|v| v.as_str().unwrap().to_string()).collect();
        values.retain(|v| !v.is_empty());
        values
    };
    for (path, name, expected) in [
        ("/api/events/{event_id}/messages", "status", vec!["pending", "succeeded", "failed"]),
        ("/api/messages/{message_id}/attempts", "status", vec!["succeeded", "failed"]),
        ("/api/integrations/{connection_id}/inbound", "status", vec!["pending", "processed", "failed", "rejected"]),
        ("/api/marketplace/integrations", "sort", vec!["popularity", "name", "category"]),
    ] {
        let schema = &parameter(path, name)["schema"];
        let found = values(schema);
        assert_eq!(found, expected, "{path} {name}: {schema}");
    }
    let categories = values(&parameter("/api/marketplace/integrations", "category")["schema"]);
    assert!(categories.contains(&"crm".to_string()) && categories.len() == 15, "{categories:?}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for parameter in item["get"]["parameters"].as_array().into_iter().flatten().filter(|p| p["name"] == "limit") {
            assert_eq!(
                (parameter["schema"]["minimum"].as_u64(), parameter["schema"]["maximum"].as_u64()),
                (Some(1), Some(100)),
                "{path}"
            );
        }
    }
}
