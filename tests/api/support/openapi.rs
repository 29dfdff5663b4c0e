//! Checks response bodies against the schemas of `openapi.yaml`.
//!
//! The spec is OpenAPI 3.0.3, whose schema dialect is a variant of JSON Schema draft 4/7 with
//! `nullable`. It is read once, every `nullable: true` is turned into a `"null"` member of `type`,
//! and the result is validated as JSON Schema draft 7 (where, as in OpenAPI 3.0, the siblings of a
//! `$ref` are ignored).

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The spec as JSON, exactly as written.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"));
        serde_yaml_ng::from_str::<Value>(&text)
            .unwrap_or_else(|err| panic!("{path} is not valid YAML: {err}"))
    })
}

/// `components.schemas` of the spec, converted to JSON Schema.
fn json_schemas() -> &'static Value {
    static SCHEMAS: OnceLock<Value> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut schemas = spec()
            .pointer("/components/schemas")
            .cloned()
            .expect("openapi.yaml has no components.schemas");
        to_json_schema(&mut schemas);
        schemas
    })
}

/// Rewrites OpenAPI 3.0's `nullable` into JSON Schema, in place, everywhere below `value`:
/// `{type: X, nullable: true}` becomes `{type: [X, "null"]}`; `nullable: false` is dropped.
fn to_json_schema(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Bool(nullable)) = object.get("nullable") {
                let nullable = *nullable;
                object.remove("nullable");
                if nullable {
                    make_nullable(object);
                }
            }
            object.values_mut().for_each(to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

fn make_nullable(object: &mut Map<String, Value>) {
    match object.get_mut("type") {
        Some(Value::String(name)) => {
            let name = std::mem::take(name);
            object.insert("type".to_owned(), json!([name, "null"]));
        }
        Some(Value::Array(names)) => {
            if !names.iter().any(|n| n == "null") {
                names.push(json!("null"));
            }
        }
        // Without a `type`, null is already allowed unless an `enum` leaves it out.
        _ => {
            if let Some(Value::Array(values)) = object.get_mut("enum") {
                if !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
            }
        }
    }
}

/// Panics with a readable message unless `body` matches components.schemas.<schema> of openapi.yaml.
pub fn assert_matches_schema(schema: &str, body: &serde_json::Value) {
    let schemas = json_schemas();
    if schemas.get(schema).is_none() {
        let known: Vec<&str> = schemas
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        panic!(
            "openapi.yaml has no schema '{schema}'; it has {}",
            known.join(", ")
        );
    }
    let root = json!({
        "$ref": format!("#/components/schemas/{schema}"),
        "components": { "schemas": schemas },
    });
    let validator = jsonschema::draft7::new(&root)
        .unwrap_or_else(|err| panic!("schema '{schema}' of openapi.yaml does not compile: {err}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|err| {
            let at = err.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            format!("  at {at}: {err} (schema {})", err.schema_path())
        })
        .collect();
    if !errors.is_empty() {
        let pretty = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
        panic!(
            "body does not match schema '{schema}' of openapi.yaml ({} error{}):\n{}\nbody:\n{pretty}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n")
        );
    }
}
