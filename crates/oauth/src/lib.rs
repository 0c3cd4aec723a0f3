//! OAuth2 as a client, for connections: what a connect flow sends the user to (RFC 6749
//! §4.1.1 with PKCE S256, RFC 7636), the token endpoint's grants (authorization code, refresh,
//! client credentials) and token revocation (RFC 7009). Every request goes through the egress
//! client, so the SSRF guard, breaker and timeouts apply.
//!
//! Providers bend the token endpoint's contract; [`token`] accepts what they document: GitHub
//! answers form-encoded and reports errors with HTTP 200, Slack wraps everything in
//! `ok: true|false`, HubSpot reports `{status, message}`, scopes come space- or
//! comma-separated, `expires_in` may be missing or a string.

#![warn(missing_docs)]

pub mod authorize;
pub mod token;

pub use authorize::{AuthorizationRequest, Pkce, hash_state, new_state};
pub use token::{ClientAuth, Endpoint, MAX_EXPIRES_IN_SECS, TokenClient, TokenError, TokenSet};
