//! Verifying incoming webhooks, byte for byte as each provider documents its scheme, on the
//! raw body. Every comparison of a signature is constant-time (`Mac::verify_slice`); every
//! secret of a rotation is tried.
//!
//! - Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`, HMAC-SHA256 over `{t}.{body}`
//!   keyed with the endpoint secret as given (its `whsec_` prefix included);
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
//! - Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{X-Slack-Request-Timestamp}:{body}">`;
//! - Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`;
//! - Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1 of the full URL followed by every form
//!   parameter's name and value, sorted by name>`; a JSON body is instead bound by the URL's
//!   `bodySHA256` parameter (hex SHA-256 of the body), the URL alone being signed;
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,` HMAC or
//!   `v1a,` Ed25519), as the outgoing side signs;
//! - generic HMAC: a manifest names the header, the algorithm, the encoding, a prefix, what is
//!   signed and an optional timestamp header.
//!
//! Timestamps (Stripe, Slack, Standard Webhooks, generic with a timestamp) must lie within
//! the tolerance of now, in the past or the future.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// The default timestamp tolerance (Stripe's, Slack's and Standard Webhooks' five minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Stripe,
    Github,
    Slack,
    Shopify,
    Twilio,
    StandardWebhooks,
    GenericHmac(GenericHmac),
}

impl Scheme {
    /// The header the signature travels in.
    pub fn signature_header(&self) -> &str {
        match self {
            Scheme::Stripe => "stripe-signature",
            Scheme::Github => "x-hub-signature-256",
            Scheme::Slack => "x-slack-signature",
            Scheme::Shopify => "x-shopify-hmac-sha256",
            Scheme::Twilio => "x-twilio-signature",
            Scheme::StandardWebhooks => "webhook-signature",
            Scheme::GenericHmac(spec) => spec.header.as_str(),
        }
    }
}

/// A provider's own HMAC scheme, as a manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericHmac {
    /// The header carrying the signature.
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Text before the signature in the header (`sha256=`).
    pub prefix: String,
    /// What is signed: `{body}`, or a template over `{body}`, `{timestamp}`, `{method}`,
    /// `{url}` and `{header:Name}` (e.g. `v0:{timestamp}:{body}`).
    pub signed: String,
    /// The header carrying the timestamp, checked against the tolerance.
    pub timestamp_header: Option<String>,
    /// The timestamp counts milliseconds (HubSpot) rather than seconds.
    pub timestamp_in_millis: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// What arrived: the method and the URL as the sender addressed it (Twilio and HubSpot sign
/// it), the headers, and the raw body.
pub struct Incoming<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Why a webhook was refused; `code()` is what the inbound record stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature header is missing")]
    MissingSignature,
    #[error("the signature header is malformed")]
    MalformedSignature,
    #[error("the timestamp is missing or malformed")]
    MissingTimestamp,
    #[error("the timestamp is older than the tolerance")]
    StaleTimestamp,
    #[error("the timestamp is further in the future than the tolerance")]
    FutureTimestamp,
    #[error("no signature matches")]
    SignatureMismatch,
    #[error("no secret is configured")]
    NoSecret,
    #[error("the provider does not sign, and the connection does not accept unsigned webhooks")]
    UnsignedRefused,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "missing_signature",
            Rejection::MalformedSignature => "malformed_signature",
            Rejection::MissingTimestamp => "missing_timestamp",
            Rejection::StaleTimestamp => "stale_timestamp",
            Rejection::FutureTimestamp => "future_timestamp",
            Rejection::SignatureMismatch => "signature_mismatch",
            Rejection::NoSecret => "no_secret",
            Rejection::UnsignedRefused => "unsigned_refused",
        }
    }
}

/// Verifies `incoming` under any of `secrets` (several during a rotation), at `now` (unix
/// seconds) with `tolerance_secs` for timestamps.
pub fn verify(
    scheme: &Scheme,
    secrets: &[&str],
    incoming: &Incoming<'_>,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Rejection> {
    if secrets.is_empty() {
        return Err(Rejection::NoSecret);
    }
    let header = |name: &str| incoming.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let fresh = |timestamp: i64| -> Result<(), Rejection> {
        if timestamp < now - tolerance_secs {
            Err(Rejection::StaleTimestamp)
        } else if timestamp > now + tolerance_secs {
            Err(Rejection::FutureTimestamp)
        } else {
            Ok(())
        }
    };
    let value = header(scheme.signature_header()).ok_or(Rejection::MissingSignature)?;
    match scheme {
        Scheme::Stripe => {
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for item in value.split(',') {
                match item.trim().split_once('=') {
                    Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
                    Some(("v1", hex_signature)) => signatures.push(hex_signature),
                    _ => {}
                }
            }
            let timestamp = timestamp.ok_or(Rejection::MissingTimestamp)?;
            if signatures.is_empty() {
                return Err(Rejection::MalformedSignature);
            }
            fresh(timestamp)?;
            let signed = [timestamp.to_string().as_bytes(), b".", incoming.body].concat();
            let candidates: Vec<Vec<u8>> = signatures.iter().filter_map(|s| hex::decode(s).ok()).collect();
            any_match(Algorithm::Sha256, secrets.iter().map(|s| s.as_bytes()), &signed, &candidates)
        }
        Scheme::Github => {
            let signature = value.strip_prefix("sha256=").ok_or(Rejection::MalformedSignature)?;
            let signature = hex::decode(signature).map_err(|_| Rejection::MalformedSignature)?;
            any_match(Algorithm::Sha256, secrets.iter().map(|s| s.as_bytes()), incoming.body, &[signature])
        }
        Scheme::Slack => {
            let timestamp = header("x-slack-request-timestamp")
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or(Rejection::MissingTimestamp)?;
            let signature = value.strip_prefix("v0=").ok_or(Rejection::MalformedSignature)?;
            let signature = hex::decode(signature).map_err(|_| Rejection::MalformedSignature)?;
            fresh(timestamp)?;
            let signed = [b"v0:", timestamp.to_string().as_bytes(), b":", incoming.body].concat();
            any_match(Algorithm::Sha256, secrets.iter().map(|s| s.as_bytes()), &signed, &[signature])
        }
        Scheme::Shopify => {
            let signature = STANDARD.decode(value).map_err(|_| Rejection::MalformedSignature)?;
            any_match(Algorithm::Sha256, secrets.iter().map(|s| s.as_bytes()), incoming.body, &[signature])
        }
        Scheme::Twilio => {
            let signature = STANDARD.decode(value).map_err(|_| Rejection::MalformedSignature)?;
            twilio(secrets, incoming, &signature)
        }
        Scheme::StandardWebhooks => {
            let id = header("webhook-id").ok_or(Rejection::MissingSignature)?;
            let timestamp =
                header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()).ok_or(Rejection::MissingTimestamp)?;
            fresh(timestamp)?;
            let verified = secrets
                .iter()
                .any(|secret| switchboard_core::signature::verify(value, secret, id, timestamp, incoming.body));
            if verified { Ok(()) } else { Err(Rejection::SignatureMismatch) }
        }
        Scheme::GenericHmac(spec) => {
            let encoded = value.strip_prefix(spec.prefix.as_str()).ok_or(Rejection::MalformedSignature)?;
            let signature = match spec.encoding {
                Encoding::Hex => hex::decode(encoded).map_err(|_| Rejection::MalformedSignature)?,
                Encoding::Base64 => STANDARD.decode(encoded).map_err(|_| Rejection::MalformedSignature)?,
            };
            let timestamp = match &spec.timestamp_header {
                Some(name) => {
                    let text = header(name).ok_or(Rejection::MissingTimestamp)?;
                    let value = text.parse::<i64>().map_err(|_| Rejection::MissingTimestamp)?;
                    fresh(if spec.timestamp_in_millis { value.div_euclid(1000) } else { value })?;
                    Some(text)
                }
                None => None,
            };
            let signed = signed_content(&spec.signed, incoming, timestamp);
            any_match(spec.algorithm, secrets.iter().map(|s| s.as_bytes()), &signed, &[signature])
        }
    }
}

/// Whether any secret's MAC of `content` equals any candidate, compared in constant time.
fn any_match<'a>(
    algorithm: Algorithm,
    secrets: impl Iterator<Item = &'a [u8]>,
    content: &[u8],
    candidates: &[Vec<u8>],
) -> Result<(), Rejection> {
    for secret in secrets {
        for candidate in candidates {
            let matched = match algorithm {
                Algorithm::Sha1 => mac::<Hmac<Sha1>>(secret, content).verify_slice(candidate).is_ok(),
                Algorithm::Sha256 => mac::<Hmac<Sha256>>(secret, content).verify_slice(candidate).is_ok(),
                Algorithm::Sha512 => mac::<Hmac<Sha512>>(secret, content).verify_slice(candidate).is_ok(),
            };
            if matched {
                return Ok(());
            }
        }
    }
    Err(Rejection::SignatureMismatch)
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], content: &[u8]) -> M {
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(content);
    mac
}

/// The generic scheme's signed content: the template with `{body}`, `{timestamp}` and
/// `{header:Name}` replaced (the body as raw bytes).
fn signed_content(template: &str, incoming: &Incoming<'_>, timestamp: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(incoming.body.len() + template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.extend_from_slice(&rest.as_bytes()[start..]);
            return out;
        };
        let name = &rest[start + 1..start + end];
        match name {
            "body" => out.extend_from_slice(incoming.body),
            "timestamp" => out.extend_from_slice(timestamp.unwrap_or("").as_bytes()),
            "method" => out.extend_from_slice(incoming.method.as_bytes()),
            "url" => out.extend_from_slice(incoming.url.as_bytes()),
            other => match other.strip_prefix("header:") {
                Some(header) => {
                    out.extend_from_slice(incoming.headers.get(header).map(|v| v.as_bytes()).unwrap_or_default())
                }
                None => out.extend_from_slice(&rest.as_bytes()[start..start + end + 1]),
            },
        }
        rest = &rest[start + end + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// Twilio signs the URL it called plus, for a form body, each parameter's name and value
/// sorted by name. Its libraries also accept the URL with the default port added or removed,
/// since proxies rewrite it.
fn twilio(secrets: &[&str], incoming: &Incoming<'_>, signature: &[u8]) -> Result<(), Rejection> {
    let url = url::Url::parse(incoming.url).map_err(|_| Rejection::MalformedSignature)?;
    let body_hash = url.query_pairs().find(|(k, _)| k == "bodySHA256").map(|(_, v)| v.into_owned());
    let mut params: Vec<(String, String)> = Vec::new();
    match &body_hash {
        Some(expected) => {
            if !hex::encode(Sha256::digest(incoming.body)).eq_ignore_ascii_case(expected) {
                return Err(Rejection::SignatureMismatch);
            }
        }
        None => params = url::form_urlencoded::parse(incoming.body).into_owned().collect(),
    }
    // Sorted by name, and a repeated name's values sorted too, as Twilio's libraries do.
    params.sort();
    let suffix: String = params.iter().map(|(k, v)| format!("{k}{v}")).collect();
    let candidates = twilio_urls(incoming.url, &url);
    for candidate in candidates {
        let content = format!("{candidate}{suffix}");
        if any_match(Algorithm::Sha1, secrets.iter().map(|s| s.as_bytes()), content.as_bytes(), &[signature.to_vec()])
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(Rejection::SignatureMismatch)
}

/// The URL exactly as received, as normalised, and with its scheme's default port.
fn twilio_urls(raw: &str, url: &url::Url) -> Vec<String> {
    let mut urls = vec![raw.to_string()];
    if url.as_str() != raw {
        urls.push(url.to_string());
    }
    let default_port = match url.scheme() {
        "https" => 443,
        "http" => 80,
        _ => return urls,
    };
    // `Url` hides a default port when printing, so the ported form is written by hand.
    if url.port().is_none() {
        let host = url.host_str().unwrap_or("");
        let rest = &url.as_str()[url.as_str().find(host).map(|i| i + host.len()).unwrap_or(0)..];
        urls.push(format!("{}://{}{}:{default_port}{rest}", url.scheme(), userinfo(url), host));
    }
    urls
}

fn userinfo(url: &url::Url) -> String {
    match (url.username(), url.password()) {
        ("", None) => String::new(),
        (user, None) => format!("{user}@"),
        (user, Some(password)) => format!("{user}:{password}@"),
    }
}

#[cfg(test)]
mod tests;
