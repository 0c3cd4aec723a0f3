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
