//! The bearer token of write endpoints: reading it from an `Authorization`
//! header (RFC 6750: the scheme is case-insensitive, then one or more
//! spaces) and comparing it in constant time, and what a configured token
//! must look like.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest token `serve` accepts.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// Whether `presented` is the `expected` token. Both are hashed first, so
/// the comparison takes the same time whatever they hold, their lengths too.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    presented.ct_eq(&expected).into()
}

/// Why a token cannot be configured, if it cannot: too short, or with
/// whitespace or control characters that no header could carry (a stray
/// newline from a file).
pub fn check_token(token: &str) -> Result<(), String> {
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the bearer token contains whitespace or a control character (a trailing newline?): \
                    no request could present it"
            .into());
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("the bearer token must be at least {MIN_TOKEN_LEN} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_spaces_may_repeat() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdeF", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdef ", "0123456789abcdef"));
        assert!(!token_matches("", "0123456789abcdef"));
    }

    #[test]
    fn a_token_with_whitespace_or_too_short_is_refused() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("0123456789abcdef\n").unwrap_err().contains("trailing newline"));
        assert!(check_token(" 0123456789abcdef").is_err());
        assert!(check_token("short").unwrap_err().contains("at least 16"));
    }
}
