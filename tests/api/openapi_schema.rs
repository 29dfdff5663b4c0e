//! openapi.yaml itself: it parses, lists every error code, rejects wrong bodies, and its
//! examples match their schemas (the validator is `support::openapi`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Value};

use crate::support::openapi::{assert_matches_schema, spec};

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

/// Every `$ref` of `value` (recursively).
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

#[test]
fn every_operation_answers_something_and_every_reference_resolves() {
    let spec = spec();
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    const OTHER_KEYS: [&str; 4] = ["parameters", "summary", "description", "servers"];
    let paths = spec["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (path, item) in paths {
        for (key, operation) in item.as_object().expect("a path item is an object") {
            let key = key.as_str();
            assert!(
                METHODS.contains(&key) || OTHER_KEYS.contains(&key),
                "{path}: '{key}' is neither an operation nor a path-item field"
            );
            if METHODS.contains(&key) {
                let responses = operation["responses"].as_object();
                assert!(
                    responses.is_some_and(|r| !r.is_empty()),
                    "{key} {path} has no responses"
                );
            }
        }
    }
    let mut targets = Vec::new();
    refs(spec, &mut targets);
    assert!(targets.len() > 50, "only {} references", targets.len());
    for target in targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target} is not a local reference"));
        assert!(spec.pointer(pointer).is_some(), "{target} does not resolve");
    }
}

#[actix_web::test]
async fn the_category_enum_is_the_catalogue_the_server_serves() {
    let app = crate::support::TestApp::spawn().await;
    let reply = app
        .get(
            "/express/usage/categories",
            &crate::support::tokens::token("org-a"),
        )
        .await;
    let served: Vec<&str> = reply.body["_embedded"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    let listed: Vec<&str> = spec()
        .pointer("/components/schemas/CategorySlug/enum")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        listed, served,
        "CategorySlug lists the catalogue, in its order"
    );
}
