//! The authorization request (RFC 6749 §4.1.1): a random single-use `state`, a PKCE S256
//! challenge (RFC 7636 §4.2) and the URL the user is sent to.

use oauth2::{CsrfToken, PkceCodeChallenge};
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroizing;

/// A PKCE pair: the challenge goes in the authorization URL, the verifier (kept secret) in
/// the token request.
pub struct Pkce {
    /// The S256 challenge: the base64url SHA-256 of the verifier.
    pub challenge: String,
    /// The verifier: kept secret until the token request.
    pub verifier: Zeroizing<String>,
}

impl Pkce {
    /// 32 random bytes as the verifier; S256 only (RFC 9700 §2.1.1: `plain` is not used).
    pub fn generate() -> Self {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        Self { challenge: challenge.as_str().to_string(), verifier: Zeroizing::new(verifier.secret().clone()) }
    }
}

/// A fresh `state`: 16 random bytes, base64url (128 bits, unguessable).
pub fn new_state() -> Zeroizing<String> {
    Zeroizing::new(CsrfToken::new_random().secret().clone())
}

/// What is stored of a state: its SHA-256, hex. A leaked database row cannot be replayed.
pub fn hash_state(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// Everything the authorization URL carries.
pub struct AuthorizationRequest<'a> {
    /// The provider's authorization endpoint; its own query parameters are kept.
    pub endpoint: &'a Url,
    /// The client's id at the provider.
    pub client_id: &'a str,
    /// Where the provider sends the user back; the token request repeats it.
    pub redirect_uri: &'a str,
    /// The scopes asked for; with none, no `scope` parameter is sent.
    pub scopes: &'a [String],
    /// How the provider wants scopes joined (a space per RFC 6749 §3.3; Slack: a comma).
    pub scope_separator: &'a str,
    /// The single-use `state` ([`new_state`]), which the provider hands back with the code.
    pub state: &'a str,
    /// The PKCE challenge, sent with method `S256`; `None` sends none.
    pub pkce_challenge: Option<&'a str>,
    /// The provider's own parameters (Google's `access_type=offline`), after the standard ones.
    pub extra: &'a [(String, String)],
}

impl AuthorizationRequest<'_> {
    /// The URL to send the user to: the endpoint with the standard parameters, then `extra`, added
    /// to its query.
    pub fn url(&self) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("response_type", "code");
            query.append_pair("client_id", self.client_id);
            query.append_pair("redirect_uri", self.redirect_uri);
            if !self.scopes.is_empty() {
                query.append_pair("scope", &self.scopes.join(self.scope_separator));
            }
            query.append_pair("state", self.state);
            if let Some(challenge) = self.pkce_challenge {
                query.append_pair("code_challenge", challenge);
                query.append_pair("code_challenge_method", "S256");
            }
            for (name, value) in self.extra {
                query.append_pair(name, value);
            }
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn the_challenge_is_the_base64url_sha256_of_the_verifier() {
        let pkce = Pkce::generate();
        assert!((43..=128).contains(&pkce.verifier.len()), "RFC 7636 §4.1 length");
        let expected =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(pkce.verifier.as_bytes()));
        assert_eq!(pkce.challenge, expected);
        assert_ne!(Pkce::generate().verifier, pkce.verifier);
    }

    #[test]
    fn states_are_random_and_stored_hashed() {
        let (a, b) = (new_state(), new_state());
        assert_ne!(a, b);
        assert!(a.len() >= 22, "at least 128 bits");
        assert_eq!(hash_state(&a), hash_state(&a.clone()));
        assert_ne!(hash_state(&a), *a);
        assert_eq!(hash_state(&a).len(), 64);
    }

    #[test]
    fn the_url_carries_the_standard_parameters_then_the_providers() {
        let endpoint = Url::parse("https://accounts.example.com/o/oauth2/v2/auth?hl=en").unwrap();
        let scopes = vec!["a b".to_string(), "c".to_string()];
        let extra = vec![("access_type".to_string(), "offline".to_string())];
        let url = AuthorizationRequest {
            endpoint: &endpoint,
            client_id: "client 1",
            redirect_uri: "https://hub.example.com/oauth/callback",
            scopes: &scopes,
            scope_separator: ",",
            state: "s&t",
            pkce_challenge: Some("ch"),
            extra: &extra,
        }
        .url();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("hl"), Some("en"), "the endpoint's own query is kept");
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("client_id"), Some("client 1"));
        assert_eq!(get("redirect_uri"), Some("https://hub.example.com/oauth/callback"));
        assert_eq!(get("scope"), Some("a b,c"));
        assert_eq!(get("state"), Some("s&t"));
        assert_eq!((get("code_challenge"), get("code_challenge_method")), (Some("ch"), Some("S256")));
        assert_eq!(get("access_type"), Some("offline"));
    }
}
