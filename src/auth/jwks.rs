//! The issuer's signing keys, fetched from its JWKS, cached, and refreshed when a token names a
//! key id we do not know — at most once per `min_refresh`, so a flood of made-up `kid`s cannot
//! hammer the issuer. A failed refresh keeps the keys we had.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Biggest JWKS document we accept.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// One verification key and the algorithms it may verify.
pub struct VerificationKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<VerificationKey>>,
    without_kid: Vec<Arc<VerificationKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    min_refresh: Duration,
    max_age: Duration,
    keys: RwLock<Keys>,
    refreshing: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(url: String, min_refresh: Duration, max_age: Duration) -> anyhow::Result<Self> {
        check_url(&url)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            url,
            client,
            min_refresh,
            max_age,
            keys: RwLock::new(Keys::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The key for `kid` (or the one key without an id when the token names none).
    ///
    /// A known key is answered at once; when the cache is stale one request refreshes it
    /// (rate-limited) while the others go on with the keys we have. An unknown key waits for a
    /// refresh, if the rate limit allows one.
    pub async fn key(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        if let Some(found) = self.lookup(kid, false) {
            return Some(found);
        }
        if let Some(stale) = self.lookup(kid, true) {
            if let Ok(_guard) = self.refreshing.try_lock() {
                self.refresh_if_allowed().await;
            }
            return self.lookup(kid, true).or(Some(stale));
        }
        let _guard = self.refreshing.lock().await;
        // Another request may have refreshed while we waited.
        if let Some(found) = self.lookup(kid, false) {
            return Some(found);
        }
        self.refresh_if_allowed().await;
        self.lookup(kid, true)
    }

    async fn refresh_if_allowed(&self) {
        if self.may_fetch() {
            if let Err(err) = self.fetch().await {
                tracing::warn!(error = %err, url = %self.url, "JWKS refresh failed");
            }
        }
    }

    /// Finds the key; unless `any_age`, a stale cache answers nothing so that it gets refreshed.
    fn lookup(&self, kid: Option<&str>, any_age: bool) -> Option<Arc<VerificationKey>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let fresh = keys
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.max_age);
        if !fresh && !any_age {
            return None;
        }
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None => match keys.without_kid.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
        }
    }

    fn may_fetch(&self) -> bool {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.last_attempt
            .is_none_or(|at| at.elapsed() >= self.min_refresh)
    }

    async fn fetch(&self) -> anyhow::Result<()> {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .last_attempt = Some(Instant::now());
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?;
        let too_large = || anyhow::anyhow!("JWKS document is larger than {MAX_JWKS_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)?;
        let mut fresh = Keys {
            fetched_at: Some(Instant::now()),
            last_attempt: Some(Instant::now()),
            ..Keys::default()
        };
        for jwk in &set.keys {
            let Some(key) = verification_key(jwk) else {
                continue;
            };
            let key = Arc::new(key);
            match &jwk.common.key_id {
                Some(kid) => {
                    fresh.by_kid.insert(kid.clone(), key);
                }
                None => fresh.without_kid.push(key),
            }
        }
        tracing::info!(keys = set.keys.len(), url = %self.url, "JWKS fetched");
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// Keys decide who is who: they are fetched over https, or plain http only from this machine.
fn check_url(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).map_err(|err| anyhow::anyhow!("OAUTH_JWKS_URL: {err}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => anyhow::bail!("OAUTH_JWKS_URL must be https (plain http only on loopback)"),
    }
}

/// Turns a JWK into a verification key, or skips it: symmetric keys, encryption keys and keys of
/// unknown types never verify anything.
fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let mut algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = match declared {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            _ => return None,
        };
        algorithms.retain(|a| *a == declared);
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    (!algorithms.is_empty()).then_some(VerificationKey { key, algorithms })
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn keys_come_over_https_or_from_this_machine() {
        assert!(check_url("https://issuer.example/.well-known/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:8081/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://[::1]:9/jwks").is_ok());
        assert!(check_url("http://issuer.example/jwks").is_err());
        assert!(check_url("file:///etc/jwks.json").is_err());
        assert!(check_url("not a url").is_err());
    }
}
