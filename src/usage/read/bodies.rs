//! Encoded answers remembered between requests: an answer that has not changed is not read or
//! encoded again.
//!
//! An entry is keyed by everything that shapes the answer except the organization's data
//! version (the organization, the request's parameters, the public URL), and holds the newest
//! answer served with the validator it was served under. The validator is the answer's strong
//! entity tag, made of the data version and freshness (`read::Version`) and the same request
//! parameters: a request reads its organization's version (one statement), computes the tag,
//! and when it equals the entry's, the entry is the answer, byte for byte, that reading and
//! encoding would produce. Nothing is ever invalidated: an entry of an older version simply
//! no longer matches and is replaced by the next answer. Bounded by bytes; every replica keeps
//! its own.

use std::sync::Arc;

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::usage::digest;

/// Bytes of encoded answers kept at most (the bodies; keys and tags add about 100 bytes each).
pub const BODY_BYTES: u64 = 32 << 20;
/// Answers kept at most, whatever their size.
const BODY_ENTRIES: usize = 20_000;

/// An answer as served: its strong entity tag and its encoded body.
#[derive(Debug)]
pub struct Body {
    pub tag: String,
    pub bytes: Bytes,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<[u8; 32], Arc<Body>> for ByLength {
    fn weight(&self, _key: &[u8; 32], body: &Arc<Body>) -> u64 {
        body.bytes.len() as u64 + body.tag.len() as u64 + 64
    }
}

pub struct BodyCache {
    entries: Cache<[u8; 32], Arc<Body>, ByLength>,
}

impl Default for BodyCache {
    fn default() -> Self {
        Self::with_capacity(BODY_BYTES)
    }
}

impl BodyCache {
    pub fn with_capacity(bytes: u64) -> Self {
        BodyCache {
            entries: Cache::with_weighter(BODY_ENTRIES, bytes, ByLength),
        }
    }

    /// The key of an answer: `parts` are everything that shapes it but the data version, the
    /// first naming the kind of answer (e.g. `b"usage list v1"`).
    pub fn key(parts: &[&[u8]]) -> [u8; 32] {
        digest::sha256(parts)
    }

    /// The newest answer served for `key`, whatever its version: the caller compares its tag.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Body>> {
        self.entries.get(key)
    }

    /// The answer `tag` stands for under `key`, when that is the one remembered.
    pub fn get_current(&self, key: &[u8; 32], tag: &str) -> Option<Arc<Body>> {
        self.get(key).filter(|body| body.tag == tag)
    }

    pub fn remember(&self, key: [u8; 32], tag: String, bytes: Bytes) {
        self.entries.insert(key, Arc::new(Body { tag, bytes }));
    }

    /// Bytes held now (bodies and tags): `/metrics` and the tests.
    pub fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

/// Counts a lookup of a remembered answer (`usage_api_remembered_answers_total`): `hit`
/// (served), `stale` (remembered for an older version: read again) or `miss` (none).
pub fn counted(route: &'static str, outcome: &'static str) {
    metrics::counter!("usage_api_remembered_answers_total", "route" => route, "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_answers_only_its_own_tag_and_the_cache_keeps_its_bound() {
        let cache = BodyCache::with_capacity(10_000);
        let key = BodyCache::key(&[b"usage list v1", b"org"]);
        cache.remember(key, "\"a\"".into(), Bytes::from_static(b"{}"));
        assert_eq!(
            cache.get_current(&key, "\"a\"").map(|b| b.bytes.clone()),
            Some(Bytes::from_static(b"{}"))
        );
        assert!(
            cache.get_current(&key, "\"b\"").is_none(),
            "another version"
        );
        let other = BodyCache::key(&[b"usage list v1", b"org2"]);
        assert!(cache.get(&other).is_none(), "another organization");
        cache.remember(key, "\"b\"".into(), Bytes::from_static(b"[]"));
        assert!(cache.get_current(&key, "\"a\"").is_none(), "replaced");
        for n in 0u32..100 {
            let key = BodyCache::key(&[b"usage list v1", &n.to_le_bytes()]);
            cache.remember(key, "\"t\"".into(), Bytes::from(vec![b' '; 1_000]));
        }
        assert!(cache.weight() <= 10_000, "{}", cache.weight());
    }
}
