//! Checks response bodies against the schemas of `openapi.yaml`.
//!
//! The spec is OpenAPI 3.0.3, whose schema dialect is a variant of JSON Schema draft 4/7 with
//! `nullable`. It is read once, every `nullable: true` is turned into a `"null"` member of `type`,
//! and the result is validated as JSON Schema draft 7 (where, as in OpenAPI 3.0, the siblings of a
//! `$ref` are ignored).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The spec as JSON, exactly as written.
fn spec() -> &'static Value {
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
#[allow(dead_code)]
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

#[test]
fn spec_parses_and_lists_every_error_code() {
    let spec = spec();
    assert_eq!(
        spec["openapi"],
        json!("3.0.3"),
        "openapi.yaml must stay OpenAPI 3.0.3"
    );
    let listed = spec
        .pointer("/components/schemas/Error/properties/code/enum")
        .and_then(Value::as_array)
        .expect("components.schemas.Error.properties.code.enum is missing");
    let mut listed: Vec<&str> = listed
        .iter()
        .map(|code| code.as_str().expect("every error code is a string"))
        .collect();
    listed.sort_unstable();
    let mut expected = usage_api::error::ApiError::CODES.to_vec();
    expected.sort_unstable();
    assert_eq!(
        listed, expected,
        "Error.code must list exactly the codes of ApiError::code"
    );
}

fn panic_message(result: std::thread::Result<()>) -> Option<String> {
    let payload = result.err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    )
}

fn rejected(schema: &str, body: &Value) -> String {
    let result = catch_unwind(AssertUnwindSafe(|| assert_matches_schema(schema, body)));
    panic_message(result).unwrap_or_else(|| panic!("{schema} accepted a wrong body: {body}"))
}

#[test]
fn validator_rejects_a_wrong_body() {
    let record = json!({
        "id": "8f3e643c16671acaf60e8bceddbc1877",
        "account_id": "5ea75fe7aa224700012eae40",
        "product_id": "TD-LIC-APP-RC-101910",
        "aggr_product_id": "TD-USG-TEL-UG-102213",
        "month": "2023-08",
        "type": "NUMBER",
        "description": "SIP Number",
        "currency": "USD",
        "direction": null,
        "resolution": null,
        "unit": "NUMBERS",
        "price": 1,
        "wallet_name": "contact center",
        "number_of_units": 5,
        "total_amount": 0.0000000001,
        "_links": {
            "self": { "href": "https://usage.example/express/usage/month/8f3e643c16671acaf60e8bceddbc1877" }
        }
    });
    assert_matches_schema("UsageRecord", &record);

    let mut missing_id = record.clone();
    missing_id.as_object_mut().unwrap().remove("id");
    let message = rejected("UsageRecord", &missing_id);
    assert!(message.contains("\"id\""), "{message}");

    let mut string_price = record.clone();
    string_price["price"] = json!("1");
    let message = rejected("UsageRecord", &string_price);
    assert!(message.contains("at /price"), "{message}");

    let mut wrong_enum = record.clone();
    wrong_enum["direction"] = json!("inbound");
    let message = rejected("UsageRecord", &wrong_enum);
    assert!(message.contains("at /direction"), "{message}");

    let mut extra = record;
    extra["organization_id"] = json!("org-1");
    rejected("UsageRecord", &extra);

    let unknown = catch_unwind(|| assert_matches_schema("NoSuchSchema", &json!({})));
    assert!(panic_message(unknown).is_some_and(|m| m.contains("UsageRecord")));
}

/// The examples of the spec are bodies too: each must match its schema.
#[test]
fn spec_examples_match_their_schemas() {
    let examples = spec()
        .pointer("/components/examples")
        .and_then(Value::as_object)
        .expect("openapi.yaml has no components.examples");
    for (name, example) in examples {
        let schema = match name.as_str() {
            "UsageRecord" | "UsagePage" => name.as_str(),
            _ => "Error",
        };
        let value = example
            .get("value")
            .unwrap_or_else(|| panic!("example {name} has no value"));
        assert_matches_schema(schema, value);
    }
}
