//! Generates the client from the product's openapi.yaml with progenitor, into OUT_DIR (never
//! committed): src/main.rs `include!`s it.
//!
//! Two adaptations to progenitor 0.15's model of an operation (one request body type, one
//! success type, one error type), where it stops with a panic on a document that is valid
//! OpenAPI 3.0; everything else is read as is:
//! - a request body offered in several media types (sendUsageEvents takes JSON, NDJSON or CSV)
//!   is generated with its `application/json` body, the one a typed client sends; the
//!   streaming text bodies are for `usage-api ingest` and curl;
//! - the bodiless `304 Not Modified` of a conditional read is left out of the error type (a
//!   caller sending `If-None-Match` meets it as `Error::UnexpectedResponse` with status 304).
use std::{env, fs, path::PathBuf};

use serde_json::Value;

fn main() {
    let spec_path =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../openapi.yaml");
    println!("cargo:rerun-if-changed={}", spec_path.display());
    let text = fs::read_to_string(&spec_path).expect("reading openapi.yaml");
    let mut spec: Value = serde_yaml::from_str(&text).expect("openapi.yaml is YAML");
    json_bodies_only(&mut spec);
    without_not_modified(&mut spec);
    let spec: openapiv3::OpenAPI =
        serde_json::from_value(spec).expect("openapi.yaml is OpenAPI 3.0");

    let mut settings = progenitor::GenerationSettings::default();
    settings.with_interface(progenitor::InterfaceStyle::Builder);
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator
        .generate_tokens(&spec)
        .expect("progenitor generates the client");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("client.rs");
    fs::write(out, tokens.to_string()).expect("writing the generated client");
}

/// Every operation object of the document.
fn operations(spec: &mut Value) -> impl Iterator<Item = &mut Value> {
    spec.get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|path| path.values_mut())
}

/// Keeps only `application/json` in request bodies that offer it among several media types.
fn json_bodies_only(spec: &mut Value) {
    for operation in operations(spec) {
        let Some(content) = operation
            .pointer_mut("/requestBody/content")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if content.len() > 1 && content.contains_key("application/json") {
            content.retain(|media_type, _| media_type == "application/json");
        }
    }
}

/// Drops the `304` answers, which have no body while every other error has an `Error` one.
fn without_not_modified(spec: &mut Value) {
    for operation in operations(spec) {
        if let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        {
            responses.remove("304");
        }
    }
}
