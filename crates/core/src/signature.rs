//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`. Symmetric signatures are
//! `v1,<base64 HMAC-SHA256>` under a `whsec_<base64>` secret (the decoded bytes are the key);
//! asymmetric ones are `v1a,<base64 Ed25519 signature>` under a `whsk_` signing key whose
//! public half (`whpk_`) receivers verify with. Several signatures in one header are
//! separated by spaces (during a secret rotation both the old and the new one sign).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, Verifier};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a symmetric (HMAC-SHA256) secret's text form.
pub const SYMMETRIC_PREFIX: &str = "whsec_";
/// The prefix of an Ed25519 signing key's text form.
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
/// The prefix of an Ed25519 public key's text form, which receivers verify with.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// The accepted length of a symmetric secret, in decoded bytes.
pub const SYMMETRIC_LENGTH: std::ops::RangeInclusive<usize> = 24..=64;

/// Why a secret's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// The text starts with no known prefix; holds the prefix to use (`whsec_`).
    #[error("must start with {0}")]
    Prefix(&'static str),
    /// What follows the prefix is not standard base64, or a `whsk_` key's public half does not
    /// match its seed.
    #[error("must be {prefix} followed by standard base64")]
    Base64 {
        /// The prefix the text starts with.
        prefix: &'static str,
    },
    /// The decoded key has a length that is not accepted.
    #[error("must decode to {min} to {max} bytes, not {actual}")]
    Length {
        /// The fewest decoded bytes accepted.
        min: usize,
        /// The most decoded bytes accepted.
        max: usize,
        /// How many bytes the text decoded to.
        actual: usize,
    },
}

/// A secret that signs messages: HMAC-SHA256 (`v1`) or Ed25519 (`v1a`).
#[derive(Clone)]
pub enum SigningSecret {
    /// An HMAC-SHA256 key: the decoded bytes of a `whsec_` secret.
    Symmetric(Zeroizing<Vec<u8>>),
    /// An Ed25519 signing key (`whsk_`).
    Asymmetric(Box<ed25519_dalek::SigningKey>),
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningSecret::Symmetric(_) => f.write_str("SigningSecret::Symmetric(***)"),
            SigningSecret::Asymmetric(_) => f.write_str("SigningSecret::Asymmetric(***)"),
        }
    }
}

impl SigningSecret {
    /// A new random `whsec_` secret of 32 bytes.
    pub fn generate_symmetric() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SigningSecret::Symmetric(bytes)
    }

    /// A new random Ed25519 signing key.
    pub fn generate_asymmetric() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        SigningSecret::Asymmetric(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads a `whsec_…` or `whsk_…` secret.
    pub fn parse(text: &str) -> Result<Self, SecretFormatError> {
        if let Some(encoded) = text.strip_prefix(SYMMETRIC_PREFIX) {
            let bytes = Zeroizing::new(
                STANDARD.decode(encoded).map_err(|_| SecretFormatError::Base64 { prefix: SYMMETRIC_PREFIX })?,
            );
            if !SYMMETRIC_LENGTH.contains(&bytes.len()) {
                return Err(SecretFormatError::Length {
                    min: *SYMMETRIC_LENGTH.start(),
                    max: *SYMMETRIC_LENGTH.end(),
                    actual: bytes.len(),
                });
            }
            return Ok(SigningSecret::Symmetric(bytes));
        }
        if let Some(encoded) = text.strip_prefix(SIGNING_KEY_PREFIX) {
            let bytes = Zeroizing::new(
                STANDARD.decode(encoded).map_err(|_| SecretFormatError::Base64 { prefix: SIGNING_KEY_PREFIX })?,
            );
            // The seed alone (32 bytes) or the seed followed by the public key (64 bytes).
            let seed: [u8; 32] = match bytes.len() {
                32 | 64 => bytes[..32].try_into().expect("length checked"),
                actual => return Err(SecretFormatError::Length { min: 32, max: 64, actual }),
            };
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            if bytes.len() == 64 && bytes[32..] != key.verifying_key().to_bytes() {
                return Err(SecretFormatError::Base64 { prefix: SIGNING_KEY_PREFIX });
            }
            return Ok(SigningSecret::Asymmetric(Box::new(key)));
        }
        Err(SecretFormatError::Prefix(SYMMETRIC_PREFIX))
    }

    /// The secret as the user sees it once: `whsec_…` or `whsk_…`.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(match self {
            SigningSecret::Symmetric(bytes) => format!("{SYMMETRIC_PREFIX}{}", STANDARD.encode(bytes.as_slice())),
            SigningSecret::Asymmetric(key) => format!("{SIGNING_KEY_PREFIX}{}", STANDARD.encode(key.to_bytes())),
        })
    }

    /// For asymmetric signing, the `whpk_…` key receivers verify with.
    pub fn public_key(&self) -> Option<String> {
        match self {
            SigningSecret::Symmetric(_) => None,
            SigningSecret::Asymmetric(key) => {
                Some(format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(key.verifying_key().to_bytes())))
            }
        }
    }

    /// One signature, `v1,…` or `v1a,…`, over `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            SigningSecret::Symmetric(key) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
                feed(&mut |part| mac.update(part), id, timestamp, body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            }
            SigningSecret::Asymmetric(key) => {
                let mut content = Vec::with_capacity(id.len() + body.len() + 24);
                feed(&mut |part| content.extend_from_slice(part), id, timestamp, body);
                format!("v1a,{}", STANDARD.encode(key.sign(&content).to_bytes()))
            }
        }
    }
}

fn feed(sink: &mut dyn FnMut(&[u8]), id: &str, timestamp: i64, body: &[u8]) {
    sink(id.as_bytes());
    sink(b".");
    sink(timestamp.to_string().as_bytes());
    sink(b".");
    sink(body);
}

/// What a receiver verifies with: an HMAC key or an Ed25519 public key.
enum VerificationKey {
    Hmac(Zeroizing<Vec<u8>>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Reads a receiver's secret the way the Standard Webhooks libraries do: `whpk_<base64>` is
/// an Ed25519 public key; anything else is `whsec_<base64>` for HMAC, the prefix optional
/// (the libraries strip it when present) and the key any non-empty length.
fn verification_key(secret: &str) -> Result<VerificationKey, SecretFormatError> {
    if let Some(encoded) = secret.strip_prefix(PUBLIC_KEY_PREFIX) {
        let bytes = STANDARD.decode(encoded).map_err(|_| SecretFormatError::Base64 { prefix: PUBLIC_KEY_PREFIX })?;
        let bytes = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| SecretFormatError::Length {
            min: 32,
            max: 32,
            actual: bytes.len(),
        })?;
        return ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(VerificationKey::Ed25519)
            .map_err(|_| SecretFormatError::Base64 { prefix: PUBLIC_KEY_PREFIX });
    }
    let encoded = secret.strip_prefix(SYMMETRIC_PREFIX).unwrap_or(secret);
    let bytes =
        Zeroizing::new(STANDARD.decode(encoded).map_err(|_| SecretFormatError::Base64 { prefix: SYMMETRIC_PREFIX })?);
    if bytes.is_empty() {
        return Err(SecretFormatError::Length { min: 1, max: usize::MAX, actual: 0 });
    }
    Ok(VerificationKey::Hmac(bytes))
}

/// Whether `secret` can verify Standard Webhooks signatures, and if not, why: checked when a
/// receiver's secret is set, so a mistyped one is refused then rather than failing every
/// webhook afterwards.
pub fn check_verification_secret(secret: &str) -> Result<(), SecretFormatError> {
    verification_key(secret).map(|_| ())
}

/// Whether any signature in a `webhook-signature` header verifies under `secret` (read as
/// [`check_verification_secret`] describes). Comparisons are constant-time.
pub fn verify(header: &str, secret: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
    match verification_key(secret) {
        Ok(VerificationKey::Ed25519(key)) => {
            let mut content = Vec::with_capacity(id.len() + body.len() + 24);
            feed(&mut |part| content.extend_from_slice(part), id, timestamp, body);
            signatures(header, "v1a").any(|sig| {
                <[u8; 64]>::try_from(sig.as_slice())
                    .is_ok_and(|sig| key.verify(&content, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok())
            })
        }
        Ok(VerificationKey::Hmac(key)) => signatures(header, "v1").any(|sig| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
            feed(&mut |part| mac.update(part), id, timestamp, body);
            mac.verify_slice(&sig).is_ok()
        }),
        Err(_) => false,
    }
}

/// The decoded signatures of one version in a space-separated header.
fn signatures<'a>(header: &'a str, version: &'a str) -> impl Iterator<Item = Vec<u8>> + 'a {
    header.split(' ').filter_map(move |entry| {
        let (v, encoded) = entry.split_once(',')?;
        (v == version).then(|| STANDARD.decode(encoded).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks test vector, as used by its reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn symmetric_signatures_match_the_standard_webhooks_test_vector() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), EXPECTED);
        assert_eq!(secret.to_text().as_str(), SECRET);
        assert!(verify(EXPECTED, SECRET, ID, TIMESTAMP, BODY));
        assert!(verify(&format!("v1,bm90IGl0 {EXPECTED}"), SECRET, ID, TIMESTAMP, BODY), "rotation: any may match");
        assert!(!verify(EXPECTED, SECRET, ID, TIMESTAMP + 1, BODY));
        assert!(!verify(EXPECTED, SECRET, ID, TIMESTAMP, br#"{"test": 2432232315}"#));
    }

    #[test]
    fn asymmetric_signatures_match_the_reference_vector() {
        // From the Standard Webhooks Go library's asymmetric signing test: the seed is the
        // ASCII text "TESTSIGNINGKEYDONOTUSETHISFORANY".
        let secret = SigningSecret::parse("whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=").unwrap();
        let expected = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==";
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), expected);
        assert_eq!(secret.public_key().unwrap(), "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=");
        assert!(verify(expected, &secret.public_key().unwrap(), ID, TIMESTAMP, BODY));
    }

    #[test]
    fn asymmetric_signatures_verify_with_the_public_key_only() {
        let secret = SigningSecret::generate_asymmetric();
        let public = secret.public_key().unwrap();
        let header = secret.sign(ID, TIMESTAMP, BODY);
        assert!(header.starts_with("v1a,"));
        assert!(verify(&header, &public, ID, TIMESTAMP, BODY));
        assert!(!verify(&header, &public, ID, TIMESTAMP, b"{}"));
        let other = SigningSecret::generate_asymmetric().public_key().unwrap();
        assert!(!verify(&header, &other, ID, TIMESTAMP, BODY));
        // The text form reads back to the same key.
        let again = SigningSecret::parse(&secret.to_text()).unwrap();
        assert_eq!(again.public_key().unwrap(), public);
    }

    #[test]
    fn malformed_secrets_are_refused_with_a_reason() {
        assert_eq!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretFormatError::Prefix("whsec_")
        );
        assert!(matches!(SigningSecret::parse("whsec_not*base64").unwrap_err(), SecretFormatError::Base64 { .. }));
        assert_eq!(
            SigningSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretFormatError::Length { min: 24, max: 64, actual: 5 }
        );
        let generated = SigningSecret::generate_symmetric();
        assert!(SigningSecret::parse(&generated.to_text()).is_ok());
    }

    #[test]
    fn receivers_read_secrets_as_the_standard_libraries_do() {
        // The libraries strip `whsec_` when present, so the bare base64 verifies alike.
        let bare = SECRET.strip_prefix(SYMMETRIC_PREFIX).unwrap();
        assert!(verify(EXPECTED, bare, ID, TIMESTAMP, BODY));
        assert_eq!(check_verification_secret(bare), Ok(()));
        assert_eq!(check_verification_secret(SECRET), Ok(()));
        // Any key length the libraries take (ours require 24 to 64 bytes only for our own).
        assert_eq!(check_verification_secret("whsec_c2hvcnQ="), Ok(()));
        assert_eq!(
            check_verification_secret("whsec_not*base64"),
            Err(SecretFormatError::Base64 { prefix: SYMMETRIC_PREFIX })
        );
        assert_eq!(check_verification_secret("my webhook secret"), Err(SecretFormatError::Base64 { prefix: "whsec_" }));
        assert!(check_verification_secret("whsec_").is_err());
        assert!(check_verification_secret("whpk_c2hvcnQ=").is_err());
        let public = SigningSecret::generate_asymmetric().public_key().unwrap();
        assert_eq!(check_verification_secret(&public), Ok(()));
    }
}
