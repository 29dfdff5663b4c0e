//! The issuer's signing keys, fetched from its JWKS at startup, cached, refreshed before they
//! go stale, and refreshed when a token names a key id we do not know. Fetches for unknown key
//! ids come from a small token bucket (`OAUTH_JWKS_REFRESHES_PER_MINUTE`, one fetch in flight,
//! every waiter served by it): a key the issuer rotated in is picked up within seconds, and a
//! flood of made-up `kid`s cannot hammer the issuer. A failed fetch keeps the keys we had, and
//! is remembered: a key we cannot find while the issuer is unreachable is an outage (503), not
//! a bad token (401).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Biggest JWKS document we accept.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How soon the background refresher tries again after a failed fetch.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// One verification key and the algorithms it may verify.
pub struct VerificationKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// The issuer's keys cannot be fetched, and the one asked for is not among those we have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerUnavailable;

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<VerificationKey>>,
    without_kid: Vec<Arc<VerificationKey>>,
    /// When the keys were last fetched successfully (`None`: never).
    fetched_at: Option<Instant>,
    /// Whether the last fetch attempt failed: the issuer is unreachable (or serves garbage).
    failing: bool,
    /// Fetch attempts so far: a request that waited for another's fetch does not fetch again.
    attempts: u64,
}

/// A token bucket: `capacity` fetches at once, refilled at `capacity` per minute.
struct Bucket {
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Bucket {
            capacity,
            tokens: capacity,
            updated: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.updated).as_secs_f64() * self.capacity / 60.0;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    max_age: Duration,
    keys: RwLock<Keys>,
    bucket: Mutex<Bucket>,
    /// Held while fetching: one fetch in flight.
    refreshing: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(url: String, refreshes_per_minute: u32, max_age: Duration) -> anyhow::Result<Self> {
        check_url(&url)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            url,
            client,
            max_age,
            keys: RwLock::new(Keys::default()),
            bucket: Mutex::new(Bucket::new(refreshes_per_minute)),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The key for `kid` (or the one key without an id when the token names none); `Ok(None)`
    /// when the issuer's current set does not have it; `Err` when it is not among the keys we
    /// have and the issuer cannot be asked.
    ///
    /// A known key is answered at once, even from a stale set (the background refresher and
    /// the issuer's health are another matter). An unknown key waits for the fetch in flight,
    /// or makes one if the bucket allows.
    pub async fn key(
        &self,
        kid: Option<&str>,
    ) -> Result<Option<Arc<VerificationKey>>, IssuerUnavailable> {
        if let Some(found) = self.lookup(kid) {
            return Ok(Some(found));
        }
        let seen = self.read().attempts;
        let _guard = self.refreshing.lock().await;
        // A fetch that ended while we waited answers for us too.
        if self.read().attempts == seen && self.bucket_allows() {
            self.fetch_logged().await;
        }
        if let Some(found) = self.lookup(kid) {
            return Ok(Some(found));
        }
        let keys = self.read();
        if keys.failing || keys.fetched_at.is_none() {
            Err(IssuerUnavailable)
        } else {
            Ok(None)
        }
    }

    /// Whether keys have been loaded (readiness).
    pub fn loaded(&self) -> bool {
        self.read().fetched_at.is_some()
    }

    /// Fetches the keys at startup and whenever they are about to go stale, forever; after a
    /// failure, again a moment later. Not limited by the bucket: it is one fetch per period.
    pub async fn refresh_forever(&self) {
        loop {
            let wait = {
                let _guard = self.refreshing.lock().await;
                if self.fetch_logged().await {
                    // Half the maximum age: tokens never meet a stale set in normal operation.
                    self.max_age / 2
                } else {
                    RETRY_AFTER_FAILURE
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn bucket_allows(&self) -> bool {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Finds the key among those we have, whatever their age: a key the issuer published stays
    /// good until a successful fetch says otherwise.
    fn lookup(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        let keys = self.read();
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None => match keys.without_kid.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
        }
    }

    /// Fetches; a failure is logged and remembered (the keys we had stay). Whether it worked.
    /// Counted in `usage_api_jwks_fetches_total{outcome="ok|error"}`.
    async fn fetch_logged(&self) -> bool {
        let result = self.fetch().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("usage_api_jwks_fetches_total", "outcome" => outcome).increment(1);
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.attempts += 1;
        match result {
            Ok(fresh) => {
                let attempts = keys.attempts;
                *keys = fresh;
                keys.attempts = attempts;
                true
            }
            Err(err) => {
                keys.failing = true;
                tracing::warn!(error = %err, url = %self.url, "JWKS fetch failed");
                false
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<Keys> {
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
        Ok(fresh)
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
