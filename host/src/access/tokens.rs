//! API tokens: `sw_<id>_<secret>`, where `<id>` (16 hex digits) names the
//! token in listings and revocations, and `<secret>` (64 hex digits, 256
//! random bits from the operating system) is what proves it. Only the
//! SHA-256 of the secret is stored; a presented secret is hashed and compared
//! with the stored hash in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A freshly minted token: shown once, then only its hash is kept.
pub struct MintedToken {
    /// Its id.
    pub id: String,
    /// The whole token, as a client presents it.
    pub token: String,
    /// The SHA-256 of its secret, hex.
    pub secret_hash: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| format!("no randomness from the operating system: {error}"))?;
    Ok(hex(&buffer))
}

/// Mints a new token.
pub fn mint() -> Result<MintedToken, String> {
    let (id, secret) = (random_hex(8)?, random_hex(32)?);
    Ok(MintedToken { token: format!("sw_{id}_{secret}"), secret_hash: hash_secret(&secret), id })
}

/// The SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The id and secret of a presented token, if it has the shape of one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix("sw_")?.split_once('_')?;
    let is_hex = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex(id, 16) && is_hex(secret, 64)).then_some((id, secret))
}

/// Whether `secret` is the one whose hash is `stored_hash`, in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_parses_back_and_matches_only_its_hash() {
        let minted = mint().unwrap();
        let (id, secret) = parse(&minted.token).expect("its own shape");
        assert_eq!(id, minted.id);
        assert!(secret_matches(secret, &minted.secret_hash));
        let other = mint().unwrap();
        assert_ne!(other.id, minted.id);
        assert!(!secret_matches(secret, &other.secret_hash));
        assert!(!minted.token.contains(&minted.secret_hash), "the hash is not the secret");
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let minted = mint().unwrap();
        assert!(parse(&minted.token[..minted.token.len() - 1]).is_none());
        assert!(parse(&minted.token.replacen("sw_", "xx_", 1)).is_none());
        assert!(parse("sw_0123456789abcdef").is_none());
        assert!(parse(&format!("sw_0123456789abcdeg_{}", "0".repeat(64))).is_none());
        assert!(parse("").is_none());
    }
}
