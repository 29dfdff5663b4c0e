//! Position tokens: the `cursor` parameter that `next` and `prev` links carry beside `page`.
//!
//! A token says "page N starts right after (or ends right before) this row, in data version V".
//! It is opaque to clients (base64url), and signed with HMAC-SHA-256 under a key every replica
//! reads from the database, over the token and everything it is only valid with: the
//! organization, the page size, the filter and the order. A forged or altered token, or one
//! moved to another query, is refused with a 400; a genuine token of an older data version is
//! harmless: the page is then read by its number, so the page-number contract always holds.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::usage::digest;
use crate::usage::read::column::KeyValue;
use crate::usage::read::seek::Side;

/// Longest `cursor` accepted, in bytes; a link whose token would be longer carries none.
pub const MAX_CURSOR_BYTES: usize = 2048;
const MAC_BYTES: usize = 16;
const FORMAT: u8 = 1;

/// What a token holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    #[serde(rename = "f")]
    pub format: u8,
    /// The data version the position was taken at.
    #[serde(rename = "v")]
    pub data_version: i64,
    /// The database epoch of that version (absent in tokens of older releases: never current).
    #[serde(rename = "e", default)]
    pub epoch: u64,
    /// The page the token leads to.
    #[serde(rename = "p")]
    pub page: u32,
    #[serde(rename = "s")]
    pub side: Side,
    #[serde(rename = "k")]
    pub position: Vec<KeyValue>,
}

impl Token {
    pub fn new(version: (u64, i64), page: u32, side: Side, position: Vec<KeyValue>) -> Self {
        let (epoch, data_version) = version;
        Token {
            format: FORMAT,
            data_version,
            epoch,
            page,
            side,
            position,
        }
    }
}

/// Everything a token is valid only with.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub organization_id: &'a str,
    pub per_page: u32,
    pub filter: Option<&'a str>,
    pub order_by: Option<&'a str>,
}

/// The MAC over `payload` and its binding (`None` only for a key HMAC refuses, which the
/// migration's 32-byte key never is).
fn mac(key: &[u8], binding: &Binding, payload: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    let mut part = |bytes: &[u8]| digest::framed(&mut mac, bytes);
    part(b"usage-api page cursor");
    part(binding.organization_id.as_bytes());
    part(&binding.per_page.to_le_bytes());
    for text in [binding.filter, binding.order_by] {
        match text {
            Some(text) => part(text.as_bytes()),
            None => part(b"\xff"),
        }
    }
    part(payload);
    Some(mac)
}

/// Whether `text` has a `cursor`'s form (what openapi.yaml's pattern says: 1 to
/// `MAX_CURSOR_BYTES` URL-safe base64 characters), else why not. Checked for every request that
/// carries one, an export's included, even where the position itself is not needed.
pub fn check_form(text: &str) -> Result<(), String> {
    if text.len() > MAX_CURSOR_BYTES {
        return Err(format!("is longer than {MAX_CURSOR_BYTES} characters"));
    }
    let url_safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if text.is_empty() || !text.bytes().all(url_safe) {
        return Err("is not a position token (letters, digits, - and _)".to_owned());
    }
    Ok(())
}

/// The token as a `cursor` value, or `None` when it would be longer than a link may carry.
pub fn encode(key: &[u8], binding: &Binding, token: &Token) -> Option<String> {
    let text = seal(key, binding, &serde_json::to_vec(token).ok()?)?;
    (text.len() <= MAX_CURSOR_BYTES).then_some(text)
}

/// Any `payload`, signed for `binding` as `encode` signs a token (its truncated MAC, then the
/// payload, URL-safe base64), whatever its length. Public for the fuzz targets, which sign
/// arbitrary payloads to reach the decoding behind the signature.
pub fn seal(key: &[u8], binding: &Binding, payload: &[u8]) -> Option<String> {
    let tag = mac(key, binding, payload)?.finalize().into_bytes();
    let mut raw = Vec::with_capacity(MAC_BYTES + payload.len());
    raw.extend_from_slice(&tag[..MAC_BYTES]);
    raw.extend_from_slice(payload);
    Some(URL_SAFE_NO_PAD.encode(raw))
}

/// The token a `cursor` value holds, if this server issued it for exactly this query.
pub fn decode(key: &[u8], binding: &Binding, text: &str) -> Result<Token, &'static str> {
    const FOREIGN: &str = "is not a position this API issued for this query; \
                           drop it to read the page by its number";
    if text.len() > MAX_CURSOR_BYTES {
        return Err("is longer than 2048 characters");
    }
    let raw = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| "is not a position token")?;
    if raw.len() <= MAC_BYTES {
        return Err("is not a position token");
    }
    let (tag, payload) = raw.split_at(MAC_BYTES);
    mac(key, binding, payload)
        .ok_or(FOREIGN)?
        .verify_truncated_left(tag)
        .map_err(|_| FOREIGN)?;
    let token: Token = serde_json::from_slice(payload).map_err(|_| FOREIGN)?;
    if token.format != FORMAT {
        return Err(FOREIGN);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn binding(per_page: u32) -> Binding<'static> {
        Binding {
            organization_id: "org",
            per_page,
            filter: Some("month eq '2024-01'"),
            order_by: None,
        }
    }

    #[test]
    fn a_token_round_trips_only_with_its_key_and_query() {
        let token = Token::new(
            (5, 7),
            3,
            Side::After,
            vec![KeyValue::Id(uuid::Uuid::nil()), KeyValue::Maybe(None)],
        );
        let text = encode(KEY, &binding(50), &token).unwrap();
        assert_eq!(decode(KEY, &binding(50), &text), Ok(token));
        assert!(decode(KEY, &binding(25), &text).is_err());
        assert!(decode(b"another key, just as long as it", &binding(50), &text).is_err());
        let other_org = Binding {
            organization_id: "org2",
            ..binding(50)
        };
        assert!(decode(KEY, &other_org, &text).is_err());
        // Any single changed character is refused.
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            assert!(decode(KEY, &binding(50), &altered).is_err(), "{altered}");
        }
        assert_eq!(
            decode(KEY, &binding(50), "!!"),
            Err("is not a position token")
        );
        assert_eq!(
            decode(KEY, &binding(50), ""),
            Err("is not a position token")
        );
    }
}
