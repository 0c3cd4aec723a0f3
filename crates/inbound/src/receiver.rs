//! The receive decision: which webhooks are let in (rate limits, a known receiver), how each
//! is verified or accepted unsigned, which handshakes are answered, and how it is stored
//! (one row per webhook, one per item of a batch, each with its dedupe key) before the 2xx.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_connectors::WebhookTarget;
use switchboard_connectors::manifest::{
    GenericSignature, HmacAlgorithm, InboundWebhooks, SignatureEncoding, SignatureScheme, TimestampUnit,
    WebhookHandshake,
};
use switchboard_core::rate::KeyedRateLimiter;
use switchboard_core::redact::{MASK, is_sensitive_header};
use switchboard_core::{Id, IdKind};
use switchboard_store::{NewInbound, Stored, Verification};

use crate::document::{self, BodyEncoding};
use crate::handshake::{self, Answer, Handshake};
use crate::verify::{self, Algorithm, DEFAULT_TOLERANCE_SECS, Encoding, GenericHmac, Incoming, Rejection, Scheme};
use crate::{Inbound, Refusal};

/// Token buckets per connection and per source address (idle ones forgotten by
/// [`Inbound::forget_idle`], so memory follows the active senders), and the addresses limited
/// lately, for the stats.
pub(crate) struct Limits {
    per_connection: Option<KeyedRateLimiter>,
    per_source: Option<KeyedRateLimiter>,
    limited_sources: moka::sync::Cache<String, ()>,
}

impl Limits {
    pub(crate) fn new(per_connection: Option<NonZeroU32>, per_source: Option<NonZeroU32>) -> Self {
        Self {
            per_connection: per_connection.map(KeyedRateLimiter::new),
            per_source: per_source.map(KeyedRateLimiter::new),
            limited_sources: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    pub(crate) fn forget_idle(&self) {
        for limiter in [&self.per_connection, &self.per_source].into_iter().flatten() {
            limiter.forget_idle();
        }
    }

    pub(crate) fn limited_sources(&self) -> u64 {
        self.limited_sources.run_pending_tasks();
        self.limited_sources.entry_count()
    }
}

/// A sender let in: the connection's webhook target, and where the request came from.
pub struct Admitted {
    target: Arc<WebhookTarget>,
    source: String,
}

impl Admitted {
    /// The largest body this connection takes (its `webhook_max_body_bytes`, 1 MiB unless set).
    pub fn max_body_bytes(&self) -> usize {
        self.target.settings.max_body_bytes
    }
}

/// A webhook as it arrived, its body read whole (within [`Admitted::max_body_bytes`]).
pub struct RawWebhook<'a> {
    pub method: &'a str,
    /// The request target as received (path and query): signatures that cover the URL
    /// (Twilio's) are checked against the public URL plus this.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// What became of a webhook that was let in.
#[derive(Debug)]
pub enum Receipt {
    /// Stored durably (or recognised as stored before): one entry per webhook, one per item
    /// for a batch.
    Stored { webhooks: Vec<StoredWebhook>, batch: bool },
    /// A handshake, to be answered in the provider's terms.
    Handshake(Answer),
}

/// One stored webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebhook {
    /// `inb_…`: this webhook's row, or the row of its first copy.
    pub id: Id,
    /// Received before: nothing new was stored.
    pub duplicate: bool,
    /// Accepted without a signature.
    pub unsigned: bool,
}

impl Inbound {
    /// Lets a sender in or not: the source's rate before anything is read, then a known
    /// receiver at this address, then the connection's rate.
    pub async fn admit(&self, connection_id: &str, source: &str) -> Result<Admitted, Refusal> {
        if let Some(Err(wait)) = self.limits.per_source.as_ref().map(|l| l.take(source)) {
            self.limits.limited_sources.insert(source.to_string(), ());
            return Err(Refusal::RateLimited { wait });
        }
        if Id::parse(IdKind::Connection, connection_id).is_err() {
            return Err(Refusal::NoReceiver);
        }
        let target = self.connections.webhook_target(connection_id).await?.ok_or(Refusal::NoReceiver)?;
        if let Some(Err(wait)) = self.limits.per_connection.as_ref().map(|l| l.take(target.connection.id.as_str())) {
            return Err(Refusal::RateLimited { wait });
        }
        Ok(Admitted { target, source: source.to_string() })
    }

    /// Answers a handshake a provider makes by GET (Meta's `hub.challenge`, Dropbox's
    /// `challenge`); [`Refusal::NoReceiver`] when the query is none this provider makes.
    pub fn challenge(&self, admitted: &Admitted, query: Option<&str>) -> Result<Answer, Refusal> {
        let handshakes = handshakes(admitted.target.webhooks());
        handshake::answer_unsigned(&handshakes, "GET", query, admitted.target.verify_token()).ok_or(Refusal::NoReceiver)
    }

    /// Verifies a webhook and stores it before its sender is answered; refused webhooks are
    /// stored too (whole, with their reason), and answered [`Refusal::Rejected`].
    pub async fn receive(&self, admitted: &Admitted, webhook: RawWebhook<'_>) -> Result<Receipt, Refusal> {
        let target = &*admitted.target;
        let webhooks = target.webhooks();
        let handshakes = handshakes(webhooks);
        let query = webhook.path_and_query.split_once('?').map(|(_, query)| query);
        if let Some(answer) = handshake::answer_unsigned(&handshakes, webhook.method, query, target.verify_token()) {
            return Ok(Receipt::Handshake(answer));
        }
        let scheme = scheme(webhooks)?;
        let settings = &target.settings;
        let (headers, body) = (webhook.headers, &webhook.body);
        let now = self.clock.now();
        let secrets: Vec<&str> = target.secrets.iter().map(|s| s.as_str()).collect();
        // A secret, once set, is always required; unsigned webhooks are an explicit opt-in.
        let take_unsigned = settings.accept_unsigned && (secrets.is_empty() || scheme.is_none());
        let verification = match &scheme {
            _ if take_unsigned => Verification::Unsigned,
            None => Verification::Rejected(Rejection::UnsignedRefused.code().to_string()),
            Some(scheme) => {
                let url =
                    format!("{}{}", self.connections.config().public_url.trim_end_matches('/'), webhook.path_and_query);
                let incoming = Incoming { method: webhook.method, url: &url, headers, body };
                match verify::verify(scheme, &secrets, &incoming, now.timestamp(), DEFAULT_TOLERANCE_SECS) {
                    Ok(()) => Verification::Verified,
                    Err(rejection) => Verification::Rejected(rejection.code().to_string()),
                }
            }
        };
        let stored_headers = masked_headers(headers);
        let connection = &target.connection;
        let new_inbound = |body: Vec<u8>, provider_event_id, dedupe_key| NewInbound {
            id: Id::new(IdKind::Inbound),
            tenant_id: connection.tenant_id.clone(),
            connection_id: connection.id.clone(),
            received_at: now,
            source_ip: Some(admitted.source.clone()),
            headers: stored_headers.clone(),
            body,
            verification: verification.clone(),
            provider_event_id,
            dedupe_key,
        };
        if let Verification::Rejected(reason) = &verification {
            // Refused webhooks are each kept on their own, whole.
            let id = Id::new(IdKind::Inbound);
            let inbound = NewInbound { id: id.clone(), ..new_inbound(body.to_vec(), None, id.to_string()) };
            self.store.store_inbound(inbound).await?;
            return Err(Refusal::Rejected { reason: reason.clone() });
        }
        let unsigned = verification == Verification::Unsigned;

        let form = BodyEncoding::of(headers) == BodyEncoding::Form;
        if !form
            && let Some(pointer) = &webhooks.batch
            && let Some(items) = document::batch_items(body, pointer)
            && !items.is_empty()
        {
            if items.len() > document::MAX_BATCH_ITEMS {
                return Err(Refusal::BatchTooLarge { items: items.len(), limit: document::MAX_BATCH_ITEMS });
            }
            // Each item is a webhook of its own: typed, de-duplicated and processed by itself.
            let inbounds = items.into_iter().map(|item| {
                let item_document: Option<Value> = serde_json::from_slice(item).ok();
                let provider_event_id = webhooks
                    .event_id_locations(false)
                    .and_then(|l| document::locate_first(l.iter(), headers, item_document.as_ref()));
                let dedupe_key = match &provider_event_id {
                    Some(event_id) => format!("event:{event_id}"),
                    None => format!("sha256:{}", hex::encode(Sha256::digest(item))),
                };
                new_inbound(item.to_vec(), provider_event_id, dedupe_key)
            });
            let stored =
                futures::future::try_join_all(inbounds.map(|inbound| self.store.store_inbound(inbound))).await?;
            let webhooks: Vec<StoredWebhook> =
                stored.into_iter().map(|stored| stored_webhook(stored, unsigned)).collect();
            if webhooks.iter().any(|webhook| !webhook.duplicate) {
                self.wake_processing();
            }
            return Ok(Receipt::Stored { webhooks, batch: true });
        }

        // The body is parsed only when something must be read from it: a handshake, or an
        // event id the manifest locates in the body rather than in a header.
        let id_locations = webhooks.event_id_locations(form);
        let reads_body = handshake::reads_body(&handshakes) || id_locations.is_some_and(|l| l.reads_body());
        let body_document = reads_body
            .then(|| document::document(body, BodyEncoding::of(headers), webhooks.form_json_fields()))
            .flatten();
        // Slack and Zoom prove the address with a signed request before sending events.
        if verification == Verification::Verified
            && let Some(body_document) = &body_document
            && let Some(answer) = handshake::answer_signed(&handshakes, body_document, secrets[0])
        {
            return Ok(Receipt::Handshake(answer));
        }
        let provider_event_id =
            id_locations.and_then(|l| document::locate_first(l.iter(), headers, body_document.as_ref()));
        let dedupe_key = match &provider_event_id {
            Some(event_id) => format!("event:{event_id}"),
            None => {
                let signature =
                    scheme.as_ref().and_then(|scheme| headers.get(scheme.signature_header())).map(|v| v.as_bytes());
                let mut hash = Sha256::new();
                hash.update(signature.unwrap_or_default());
                hash.update(b"\n");
                hash.update(body);
                format!("sha256:{}", hex::encode(hash.finalize()))
            }
        };
        let stored = self.store.store_inbound(new_inbound(body.to_vec(), provider_event_id, dedupe_key)).await?;
        let stored = stored_webhook(stored, unsigned);
        if !stored.duplicate {
            self.wake_processing();
        }
        Ok(Receipt::Stored { webhooks: vec![stored], batch: false })
    }
}

fn stored_webhook(stored: Stored, unsigned: bool) -> StoredWebhook {
    match stored {
        Stored::New(id) => StoredWebhook { id, duplicate: false, unsigned },
        Stored::Duplicate(id) => StoredWebhook { id, duplicate: true, unsigned },
    }
}

/// The scheme to verify by; `Ok(None)` for a provider that signs nothing, `Err` for a
/// `generic_hmac` manifest without its signature (the loader refuses those).
fn scheme(webhooks: &InboundWebhooks) -> Result<Option<Scheme>, Refusal> {
    let missing = || Refusal::Misconfigured("a generic_hmac manifest without a signature".into());
    Ok(Some(match webhooks.scheme {
        SignatureScheme::Stripe => Scheme::Stripe,
        SignatureScheme::Github => Scheme::Github,
        SignatureScheme::Slack => Scheme::Slack,
        SignatureScheme::Shopify => Scheme::Shopify,
        SignatureScheme::Twilio => Scheme::Twilio,
        SignatureScheme::StandardWebhooks => Scheme::StandardWebhooks,
        SignatureScheme::GenericHmac => Scheme::GenericHmac(generic(webhooks.signature.as_ref().ok_or_else(missing)?)),
        SignatureScheme::None => return Ok(None),
    }))
}

fn generic(signature: &GenericSignature) -> GenericHmac {
    GenericHmac {
        header: signature.header.to_ascii_lowercase(),
        algorithm: match signature.algorithm {
            HmacAlgorithm::Sha1 => Algorithm::Sha1,
            HmacAlgorithm::Sha256 => Algorithm::Sha256,
            HmacAlgorithm::Sha512 => Algorithm::Sha512,
        },
        encoding: match signature.encoding {
            SignatureEncoding::Hex => Encoding::Hex,
            SignatureEncoding::Base64 => Encoding::Base64,
        },
        prefix: signature.prefix.clone(),
        signed: signature.signed.clone(),
        timestamp_header: signature.timestamp_header.as_ref().map(|h| h.to_ascii_lowercase()),
        timestamp_in_millis: signature.timestamp_unit == TimestampUnit::Milliseconds,
    }
}

fn handshakes(webhooks: &InboundWebhooks) -> Vec<Handshake> {
    webhooks
        .handshakes
        .iter()
        .map(|handshake| match handshake {
            WebhookHandshake::SlackUrlVerification => Handshake::SlackUrlVerification,
            WebhookHandshake::ZoomUrlValidation => Handshake::ZoomUrlValidation,
            WebhookHandshake::MetaHubChallenge => Handshake::MetaHubChallenge,
            WebhookHandshake::DropboxChallenge => Handshake::DropboxChallenge,
            WebhookHandshake::MicrosoftGraphValidation => Handshake::MicrosoftGraphValidation,
        })
        .collect()
}

/// The headers as a JSON object, credential-like values masked and repeated ones joined
/// with `, ` (as HTTP reads them), written straight out: this runs for every webhook.
fn masked_headers(headers: &HeaderMap) -> String {
    struct Masked<'a>(&'a HeaderMap);
    impl serde::Serialize for Masked<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.keys().map(|name| {
                let mut values = self.0.get_all(name).iter().map(|value| value.to_str().unwrap_or("<binary>"));
                let first = values.next().unwrap_or_default();
                let shown: std::borrow::Cow<'_, str> = match (is_sensitive_header(name.as_str()), values.next()) {
                    (true, _) => MASK.into(),
                    (false, None) => first.into(),
                    (false, Some(second)) => {
                        [first, second].into_iter().chain(values).collect::<Vec<_>>().join(", ").into()
                    }
                };
                (name.as_str(), shown)
            }))
        }
    }
    serde_json::to_string(&Masked(headers)).expect("strings serialise")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_headers_mask_credentials_and_keep_every_value_of_a_repeated_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", HeaderValue::from_static("sha256=abc"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        headers.insert("x-note", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let stored: Value = serde_json::from_str(&masked_headers(&headers)).unwrap();
        assert_eq!(
            stored,
            json!({
                "x-hub-signature-256": MASK,
                "content-type": "application/json",
                "x-forwarded-for": "10.0.0.1, 10.0.0.2",
                "x-note": "<binary>",
            })
        );
    }
}
