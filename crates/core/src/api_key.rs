//! API-key tokens: `sk_` followed by 192 random bits, shown once and stored only as a SHA-256
//! digest. A fast digest is enough because the token itself carries full entropy; no
//! dictionary can guess it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// What every API key starts with, so a key is recognisable wherever it turns up.
pub const TOKEN_PREFIX: &str = "sk_";

/// A freshly minted token: the full value (shown once) and what may be stored.
pub struct MintedToken {
    /// The full token (`sk_…`): shown once, never stored.
    pub token: String,
    /// Its SHA-256 digest in hex ([`hash`]): what is stored and looked up.
    pub hash: String,
    /// A display form ([`mask`]) that tells keys apart without revealing them.
    pub masked: String,
}

/// Mints a new token of 192 random bits from the operating system's generator.
pub fn mint() -> MintedToken {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    from_token(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Accepts an operator-supplied token (e.g. `SWITCHBOARD_ADMIN_KEY`) if it is long enough to
/// carry at least 128 bits.
pub fn from_supplied(token: &str) -> Result<MintedToken, &'static str> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Err("must start with sk_");
    }
    if token.len() < TOKEN_PREFIX.len() + 22 {
        return Err("must have at least 22 characters after sk_ (128 bits)");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces");
    }
    Ok(from_token(token.to_string()))
}

fn from_token(token: String) -> MintedToken {
    MintedToken { hash: hash(&token), masked: mask(&token), token }
}

/// The hex SHA-256 digest of `token`, the form in which keys are stored.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `sk_AbCd…wXyZ`: enough to tell keys apart in a list, too little to use.
pub fn mask(token: &str) -> String {
    let body = token.strip_prefix(TOKEN_PREFIX).unwrap_or(token);
    let head: String = body.chars().take(4).collect();
    let tail: String = body.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{TOKEN_PREFIX}{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_prefixed_unique_and_hash_to_their_digest() {
        let a = mint();
        let b = mint();
        assert!(a.token.starts_with("sk_"));
        assert_eq!(a.token.len(), 3 + 32);
        assert_ne!(a.token, b.token);
        assert_eq!(a.hash, hash(&a.token));
        assert!(!a.masked.contains(&a.token[3..20]));
    }

    #[test]
    fn supplied_tokens_must_carry_128_bits() {
        assert!(from_supplied("sk_short").is_err());
        assert!(from_supplied("pk_0123456789012345678901").is_err());
        assert!(from_supplied("sk_0123456789012345678901").is_ok());
    }
}
