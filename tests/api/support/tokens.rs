//! Real signed tokens: the fixture key pairs in `keys/`, and claims builders.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://issuer.usage.test/";
pub const AUDIENCE: &str = "usage-api";
pub const READ: &str = "express-accounts-usage:read";
pub const WRITE: &str = "express-accounts-usage:write";
pub const TRIGGERS: &str = "express-accounts-usage:triggers";

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/support/keys");

pub fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).expect("fixture key")
}

/// The public JWKs of the fixture keys, by key id (`rsa-1`, `rsa-2`, `ec-1`, `ed-1`).
pub fn public_jwk(kid: &str) -> Value {
    let all: Value = serde_json::from_slice(&key_file("jwks.json")).unwrap();
    all[kid].clone()
}

/// The algorithm and private key of a fixture key id.
pub fn private_key(kid: &str) -> (Algorithm, EncodingKey) {
    let pem = key_file(&format!("{kid}.pem"));
    match kid {
        k if k.starts_with("rsa") => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
        "ec-1" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
        "ed-1" => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).unwrap()),
        other => panic!("no fixture key {other}"),
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Valid claims for `org` with the read scope.
pub fn claims(org: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "client-1",
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
        "scope": READ,
        "org_id": org,
    })
}

/// Signs `claims` with the fixture key `kid`, naming it in the header.
pub fn sign(kid: &str, claims: &Value) -> String {
    let (algorithm, key) = private_key(kid);
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &key).unwrap()
}

/// A valid read token for `org`, RS256.
pub fn token(org: &str) -> String {
    sign("rsa-1", &claims(org))
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A valid token for `org` that may send events (and not read).
pub fn writer(org: &str) -> String {
    let mut c = claims(org);
    c["scope"] = serde_json::json!(WRITE);
    sign("rsa-1", &c)
}

/// A valid token for `org` that may manage usage triggers (and nothing else).
pub fn triggers(org: &str) -> String {
    let mut c = claims(org);
    c["scope"] = serde_json::json!(TRIGGERS);
    sign("rsa-1", &c)
}
