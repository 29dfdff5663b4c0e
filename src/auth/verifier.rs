//! The rules an access token must pass: a signature by a key of the issuer's JWKS with an
//! algorithm the server allows (never the one the token asks for), an access token's `typ` (RFC
//! 9068 §4: never an ID token), `exp` always, `nbf` when present, `iss` and `aud` always (with a
//! JWKS, `serve` refuses to start without them), and an organization claim that can be stored.
//! HS256 is accepted only with the development secret, never beside a JWKS, and only verified
//! with it.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use quick_cache::sync::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::dev::{DEV_AUDIENCE, DEV_ISSUER};
use super::jwks::{IssuerUnavailable, JwksCache, VerificationKey};
use crate::config::AuthConfig;
use crate::usage::model::OrganizationId;

/// Longest token we even look at.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Tokens remembered after verification (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 10_000;

/// Who a request speaks for: what a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub organization_id: OrganizationId,
    pub scopes: Vec<String>,
    pub subject: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token is not acceptable (401), with a reason safe to tell.
    Invalid(String),
    /// Its key is unknown and the issuer cannot be asked now (503).
    IssuerUnavailable,
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Invalid(reason)
    }
}

pub struct Verifier {
    config: AuthConfig,
    jwks: Option<JwksCache>,
    dev_key: Option<DecodingKey>,
    /// Verified tokens by SHA-256, with their principal and `exp`: a client repeating its token
    /// costs one hash, not a signature check. An entry is used only until the token expires
    /// (with the same leeway as verification); bounded, least useful entries go first.
    verified: Cache<[u8; 32], Verified>,
}

/// A token that passed, as remembered.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    exp: i64,
    /// The JWKS key that verified it (`None`: the development secret). The token is taken from
    /// memory only while the issuer's current key set still holds this very key, so a retired
    /// or rotated key stops its tokens as soon as the set is refreshed.
    key: Option<(Option<String>, Arc<VerificationKey>)>,
}

impl Verifier {
    pub fn new(mut config: AuthConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.jwks_url.is_some() || config.dev_secret.is_some(),
            "no way to verify tokens: set OAUTH_JWKS_URL (or OAUTH_DEV_SECRET for development)"
        );
        config.check()?;
        if config.jwks_url.is_none() {
            // Development tokens are checked like any other: `usage-api token` signs these.
            config.issuer.get_or_insert_with(|| DEV_ISSUER.to_owned());
            config
                .audience
                .get_or_insert_with(|| DEV_AUDIENCE.to_owned());
        }
        let jwks = config
            .jwks_url
            .clone()
            .map(|url| JwksCache::new(url, config.jwks_refreshes_per_minute, config.jwks_max_age))
            .transpose()?;
        let dev_key = config
            .dev_secret
            .as_deref()
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()));
        Ok(Self {
            config,
            jwks,
            dev_key,
            verified: Cache::new(VERIFIED_TOKENS),
        })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether tokens can be verified: the issuer's keys are loaded (or none are needed).
    pub fn ready(&self) -> bool {
        self.jwks.as_ref().is_none_or(JwksCache::loaded)
    }

    /// Keeps the issuer's keys loaded and fresh, forever (the server runs it in the
    /// background from startup); returns at once without a JWKS.
    pub async fn refresh_keys_forever(&self) {
        if let Some(jwks) = &self.jwks {
            jwks.refresh_forever().await;
        }
    }

    /// Verifies `token` and returns who it speaks for, or the reason it is refused. A token
    /// verified before and not yet expired is answered from memory.
    pub async fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Invalid("the token is too large".to_owned()));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(i64::MAX);
        if let Some(known) = self.verified.get(&digest) {
            if now <= known.exp.saturating_add(leeway) && self.key_still_current(&known).await {
                return Ok(known.principal);
            }
        }
        let (verified, exp) = self.verify_signed(token).await?;
        if let Some(exp) = exp {
            self.verified.insert(
                digest,
                Verified {
                    exp,
                    ..verified.clone()
                },
            );
        }
        Ok(verified.principal)
    }

    async fn key_still_current(&self, known: &Verified) -> bool {
        match (&known.key, &self.jwks) {
            (None, _) => self.dev_key.is_some(),
            (Some((kid, key)), Some(jwks)) => jwks
                .key(kid.as_deref())
                .await
                .ok()
                .flatten()
                .is_some_and(|current| Arc::ptr_eq(&current, key)),
            (Some(_), None) => false,
        }
    }

    /// The full check: signature, algorithm, claims. Returns the principal and the token's
    /// `exp` when it is a whole number of seconds.
    async fn verify_signed(&self, token: &str) -> Result<(Verified, Option<i64>), Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the token is malformed or uses an unsupported algorithm".to_owned())?;
        check_type(header.typ.as_deref())?;
        let algorithm = header.alg;
        let mut jwks_key: Option<Arc<VerificationKey>> = None;
        let key: &DecodingKey = if algorithm == Algorithm::HS256 {
            self.dev_key
                .as_ref()
                .ok_or_else(|| "the algorithm HS256 is not accepted".to_owned())?
        } else {
            if !self.config.algorithms.contains(&algorithm) {
                return Err(format!("the algorithm {algorithm:?} is not accepted").into());
            }
            let jwks = self
                .jwks
                .as_ref()
                .ok_or_else(|| format!("the algorithm {algorithm:?} is not accepted"))?;
            let found = jwks_key.insert(
                jwks.key(header.kid.as_deref())
                    .await
                    .map_err(|IssuerUnavailable| Refusal::IssuerUnavailable)?
                    .ok_or_else(|| "the token's signing key is unknown".to_owned())?,
            );
            if !found.algorithms.contains(&algorithm) {
                return Err("the token's algorithm does not match its key"
                    .to_owned()
                    .into());
            }
            &found.key
        };
        let claims =
            jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation(algorithm))
                .map_err(|err| reason(err.kind()))?
                .claims;
        let exp = claims.get("exp").and_then(Value::as_i64);
        let verified = Verified {
            principal: self.principal(&claims)?,
            exp: exp.unwrap_or(0),
            key: jwks_key.map(|key| (header.kid.clone(), key)),
        };
        Ok((verified, exp))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.config.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, String> {
        let claim = &self.config.org_claim;
        let organization_id = match claims.get(claim) {
            // Stored and compared as text: no control character (Postgres text cannot even
            // hold NUL), and no longer than the database's organization ids.
            Some(Value::String(org)) => match OrganizationId::parse(org) {
                Some(org) => org,
                None => return Err(format!("the token has no valid '{claim}' claim")),
            },
            _ => return Err(format!("the token has no valid '{claim}' claim")),
        };
        let mut scopes: Vec<String> = Vec::new();
        if let Some(Value::String(scope)) = claims.get("scope") {
            scopes.extend(scope.split_whitespace().map(str::to_owned));
        }
        match claims.get("scp") {
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            Some(Value::String(scp)) => scopes.extend(scp.split_whitespace().map(str::to_owned)),
            _ => {}
        }
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        Ok(Principal {
            organization_id,
            scopes,
            subject,
        })
    }
}

/// RFC 9068 §4: an access token is typed `at+jwt`; plain `JWT` and no type are accepted for
/// issuers that do not type their tokens. Anything else (an ID token, a logout token…) is not
/// an access token.
fn check_type(typ: Option<&str>) -> Result<(), String> {
    match typ {
        None => Ok(()),
        Some(typ)
            if ["at+jwt", "application/at+jwt", "JWT"]
                .iter()
                .any(|allowed| typ.eq_ignore_ascii_case(allowed)) =>
        {
            Ok(())
        }
        Some(_) => Err("the token is not an access token (its typ header)".to_owned()),
    }
}

/// A reason safe to tell the caller (it names no key material and no internals).
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature is invalid".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no '{claim}' claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's '{claim}' claim is malformed"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted".to_owned(),
        _ => "the token is invalid".to_owned(),
    }
}
