//! One way to hash several parts into a key: each part prefixed with its length, so that no two
//! different lists of parts feed the hash the same bytes. Cache keys, entity tags and the
//! position tokens' MAC all frame their parts like this.

use sha2::digest::Update;
use sha2::{Digest, Sha256};

/// Feeds `part` to `state`, prefixed with its length.
pub fn framed(state: &mut impl Update, part: &[u8]) {
    state.update(&(part.len() as u64).to_le_bytes());
    state.update(part);
}

/// SHA-256 over the framed `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        framed(&mut hash, part);
    }
    hash.finalize().into()
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_framed_so_boundaries_matter() {
        assert_ne!(sha256(&[b"ab", b"c"]), sha256(&[b"a", b"bc"]));
        assert_eq!(sha256(&[b"ab", b"c"]), sha256(&[b"ab", b"c"]));
        assert_eq!(hex(&[0x00, 0x9f, 0xff]), "009fff");
    }
}
