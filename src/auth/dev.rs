//! Development tokens: HS256 with `OAUTH_DEV_SECRET`, for `usage-api token` and `demo`.
//! The server accepts them only while that secret is configured.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use crate::config::AuthConfig;

pub const DEV_ISSUER: &str = "usage-api-dev";
pub const DEV_AUDIENCE: &str = "usage-api";

/// Mints a token for `organization` with `scopes`, valid for `ttl_secs`.
pub fn mint(
    config: &AuthConfig,
    organization: &str,
    scopes: &[String],
    ttl_secs: u64,
) -> anyhow::Result<String> {
    let secret = config.dev_secret.as_deref().ok_or_else(|| {
        anyhow::anyhow!("OAUTH_DEV_SECRET is not set: there is no development key to sign with")
    })?;
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = json!({
        "iss": config.issuer.as_deref().unwrap_or(DEV_ISSUER),
        "aud": config.audience.as_deref().unwrap_or(DEV_AUDIENCE),
        "sub": format!("dev:{organization}"),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_secs,
        "scope": scopes.join(" "),
    });
    claims[config.org_claim.as_str()] = json!(organization);
    Ok(encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
