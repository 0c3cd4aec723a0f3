//! Providers' handshakes: how a provider proves a webhook address before (or while) it sends
//! events to it, each answered exactly as the provider documents it.
//!
//! - Slack Events API: a signed POST `{"type":"url_verification","challenge":…}` → `{"challenge":…}`;
//! - Zoom: a signed POST `{"event":"endpoint.url_validation","payload":{"plainToken":…}}` →
//!   `{"plainToken":…,"encryptedToken": hex HMAC-SHA256(secret, plainToken)}`;
//! - Meta (Facebook, Instagram, WhatsApp): `GET ?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`
//!   → the challenge as text, when the verify token is the one configured (403 otherwise);
//! - Dropbox: `GET ?challenge=…` → the challenge as text, with `X-Content-Type-Options: nosniff`;
//! - Microsoft Graph: `POST ?validationToken=…` → the token as text, within 10 seconds.
//!
//! The signed ones are answered only after the POST verified: Zoom's answer is an HMAC under
//! the secret, and answering unsigned requests would sign whatever a stranger sends.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    SlackUrlVerification,
    ZoomUrlValidation,
    MetaHubChallenge,
    DropboxChallenge,
    MicrosoftGraphValidation,
}

/// How to answer a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Json(Value),
    /// `text/plain`, sniffing off: the challenge is echoed, never interpreted.
    Text(String),
    /// The request was a handshake that failed its check (Meta's verify token): 403.
    Refused,
}

/// A handshake that precedes verification: a GET (Meta, Dropbox) or Graph's validation POST,
/// none of which is signed. `query` is the raw query string; `verify_token` is Meta's.
pub fn answer_unsigned(
    handshakes: &[Handshake],
    method: &str,
    query: Option<&str>,
    verify_token: Option<&str>,
) -> Option<Answer> {
    // Every unsigned handshake travels in the query string; an ordinary webhook has none.
    let query = query.filter(|_| !handshakes.is_empty())?;
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    for handshake in handshakes {
        match (handshake, method) {
            (Handshake::MetaHubChallenge, "GET") => {
                let (Some(mode), Some(challenge)) = (param("hub.mode"), param("hub.challenge")) else { continue };
                let token_matches = match (param("hub.verify_token"), verify_token) {
                    (Some(given), Some(expected)) => bool::from(given.as_bytes().ct_eq(expected.as_bytes())),
                    _ => false,
                };
                return Some(if mode == "subscribe" && token_matches {
                    Answer::Text(challenge.to_string())
                } else {
                    Answer::Refused
                });
            }
            (Handshake::DropboxChallenge, "GET") => {
                if let Some(challenge) = param("challenge") {
                    return Some(Answer::Text(challenge.to_string()));
                }
            }
            (Handshake::MicrosoftGraphValidation, "POST") => {
                if let Some(token) = param("validationToken") {
                    return Some(Answer::Text(token.to_string()));
                }
            }
            _ => {}
        }
    }
    None
}

/// A handshake carried by a verified POST's JSON body (Slack, Zoom). `secret` is the current
/// signing secret.
pub fn answer_signed(handshakes: &[Handshake], body: &Value, secret: &str) -> Option<Answer> {
    for handshake in handshakes {
        match handshake {
            Handshake::SlackUrlVerification if body.get("type").and_then(Value::as_str) == Some("url_verification") => {
                let challenge = body.get("challenge").cloned().unwrap_or(Value::Null);
                return Some(Answer::Json(json!({"challenge": challenge})));
            }
            Handshake::ZoomUrlValidation
                if body.get("event").and_then(Value::as_str) == Some("endpoint.url_validation") =>
            {
                let plain = body.pointer("/payload/plainToken").and_then(Value::as_str)?;
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
                mac.update(plain.as_bytes());
                let encrypted = hex::encode(mac.finalize().into_bytes());
                return Some(Answer::Json(json!({"plainToken": plain, "encryptedToken": encrypted})));
            }
            _ => {}
        }
    }
    None
}

/// Whether a handshake reads the POST body (so the receiver parses it).
pub fn reads_body(handshakes: &[Handshake]) -> bool {
    handshakes.iter().any(|h| matches!(h, Handshake::SlackUrlVerification | Handshake::ZoomUrlValidation))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Handshake; 5] = [
        Handshake::SlackUrlVerification,
        Handshake::ZoomUrlValidation,
        Handshake::MetaHubChallenge,
        Handshake::DropboxChallenge,
        Handshake::MicrosoftGraphValidation,
    ];

    #[test]
    fn metas_challenge_is_echoed_only_with_the_verify_token() {
        // Meta's documented example request.
        let query = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
        let answer = answer_unsigned(&[Handshake::MetaHubChallenge], "GET", Some(query), Some("meatyhamhock"));
        assert_eq!(answer, Some(Answer::Text("1158201444".into())));
        let wrong = answer_unsigned(&[Handshake::MetaHubChallenge], "GET", Some(query), Some("another"));
        assert_eq!(wrong, Some(Answer::Refused));
        let unset = answer_unsigned(&[Handshake::MetaHubChallenge], "GET", Some(query), None);
        assert_eq!(unset, Some(Answer::Refused), "no token configured refuses every attempt");
        assert_eq!(answer_unsigned(&[Handshake::MetaHubChallenge], "GET", None, Some("t")), None);
    }

    #[test]
    fn dropbox_and_graph_challenges_are_echoed_decoded() {
        let dropbox = answer_unsigned(&ALL, "GET", Some("challenge=a%2Bb%20c"), None);
        assert_eq!(dropbox, Some(Answer::Text("a+b c".into())));
        let graph = answer_unsigned(&ALL, "POST", Some("validationToken=Validation%3a+Testing+client"), None);
        assert_eq!(graph, Some(Answer::Text("Validation: Testing client".into())));
        assert_eq!(answer_unsigned(&ALL, "GET", Some("validationToken=x"), None), None, "Graph validates by POST");
        assert_eq!(answer_unsigned(&[], "GET", Some("challenge=x"), None), None, "only declared handshakes");
    }

    #[test]
    fn zooms_validation_is_the_hmac_of_the_plain_token() {
        let body = json!({"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1654503849680_i64, "event": "endpoint.url_validation"});
        let Some(Answer::Json(answer)) = answer_signed(&ALL, &body, "secret_token") else { panic!("answered") };
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret_token").unwrap();
        mac.update(b"qgg8vlvZRS6UYooatFL8Aw");
        assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
        assert_eq!(answer["encryptedToken"], hex::encode(mac.finalize().into_bytes()));
        assert_eq!(answer_signed(&[Handshake::SlackUrlVerification], &body, "s"), None);
    }

    #[test]
    fn slacks_challenge_is_returned_as_json() {
        let body = json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
        let answer = answer_signed(&ALL, &body, "s");
        assert_eq!(
            answer,
            Some(Answer::Json(json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})))
        );
        assert_eq!(answer_signed(&ALL, &json!({"type": "event_callback"}), "s"), None);
    }
}
