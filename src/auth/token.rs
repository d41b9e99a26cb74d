//! Bearer tokens: minted from the OS CSPRNG, stored only as their SHA-256.

use base64::Engine as _;
use ring::rand::SecureRandom as _;

/// What every token starts with, so a leaked one is recognisable (secret scanners).
pub const PREFIX: &str = "pmt_";
/// Random bytes in a token.
const BYTES: usize = 32;

/// The SHA-256 of a token's bytes.
#[must_use]
pub fn sha256(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex of a hash, as `token_sha256` is written.
#[must_use]
pub fn hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parse 64 hex digits.
#[must_use]
pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A fresh token: [`PREFIX`] and 32 CSPRNG bytes in unpadded base64url.
///
/// # Errors
/// The OS random source failed.
pub fn mint() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; BYTES];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of "test" is the well-known value; hex round-trips; tokens differ.
    #[test]
    fn hash_hex_mint() {
        let h = sha256(b"test");
        assert_eq!(
            hex(&h),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(parse_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hex("xyz"), None);
        assert_eq!(parse_hex(&"g".repeat(64)), None);
        let (a, b) = (mint().unwrap(), mint().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
    }
}
