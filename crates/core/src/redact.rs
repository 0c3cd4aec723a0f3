//! Keeping credentials out of what is shown: header values whose names suggest a secret are
//! replaced by [`MASK`] wherever headers are stored or returned (an endpoint's custom
//! headers, a stored incoming webhook's request headers).

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

/// What a masked value reads as.
pub const MASK: &str = "********";

/// Whether a (lower-case) header name suggests its value is a credential or a signature.
/// Every stored webhook asks this of each of its headers: one automaton over all the words
/// instead of a substring search per word.
pub fn is_sensitive_header(name: &str) -> bool {
    static SENSITIVE: LazyLock<AhoCorasick> = LazyLock::new(|| {
        AhoCorasick::new(["auth", "token", "secret", "key", "cookie", "password", "signature", "hmac", "session"])
            .expect("fixed words build an automaton")
    });
    SENSITIVE.is_match(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_suggest_a_credential_are_sensitive() {
        for name in ["authorization", "x-api-key", "stripe-signature", "x-hub-signature-256", "cookie", "x-session-id"]
        {
            assert!(is_sensitive_header(name), "{name}");
        }
        for name in ["content-type", "user-agent", "x-github-event", "x-request-id"] {
            assert!(!is_sensitive_header(name), "{name}");
        }
    }
}
