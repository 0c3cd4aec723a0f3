//! Each scheme against the vectors its provider publishes (documentation or the official
//! SDK's own tests), and against signatures computed here independently; tampering, wrong
//! secrets, timestamps out of tolerance, missing headers and rotation.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
        .collect()
}

fn check(
    scheme: &Scheme,
    secrets: &[&str],
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    verify(scheme, secrets, &Incoming { method: "POST", url, headers, body }, now, DEFAULT_TOLERANCE_SECS)
}

fn hmac_hex(key: &[u8], content: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(content);
    hex::encode(mac.finalize().into_bytes())
}

const URL: &str = "https://hub.example.com/webhooks/conn_1";

#[test]
fn github_matches_its_documented_example() {
    // docs.github.com, "Validating webhook deliveries".
    let secret = "It's a Secret to Everybody";
    let good =
        headers(&[("x-hub-signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")]);
    assert_eq!(check(&Scheme::Github, &[secret], URL, &good, b"Hello, World!", 0), Ok(()));
    // octokit/webhooks-methods' own test.
    let octokit =
        headers(&[("x-hub-signature-256", "sha256=4864d2759938a15468b5df9ade20bf161da9b4f737ea61794142f3484236bda3")]);
    assert_eq!(check(&Scheme::Github, &["mysecret"], URL, &octokit, br#"{"foo":"bar"}"#, 0), Ok(()));
    assert_eq!(check(&Scheme::Github, &[secret], URL, &good, b"Hello, World?", 0), Err(Rejection::SignatureMismatch));
    assert_eq!(check(&Scheme::Github, &["wrong"], URL, &good, b"Hello, World!", 0), Err(Rejection::SignatureMismatch));
    assert_eq!(check(&Scheme::Github, &["wrong", secret], URL, &good, b"Hello, World!", 0), Ok(()), "rotation");
    let sha1 = headers(&[("x-hub-signature-256", "sha1=abc")]);
    assert_eq!(check(&Scheme::Github, &[secret], URL, &sha1, b"x", 0), Err(Rejection::MalformedSignature));
    assert_eq!(check(&Scheme::Github, &[secret], URL, &HeaderMap::new(), b"x", 0), Err(Rejection::MissingSignature));
    assert_eq!(check(&Scheme::Github, &[], URL, &good, b"x", 0), Err(Rejection::NoSecret));
}

#[test]
fn slack_matches_its_documented_example_within_five_minutes() {
    // api.slack.com "Verifying requests from Slack" (as python-slack-sdk's tests carry it).
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let signed = headers(&[
        ("x-slack-request-timestamp", "1531420618"),
        ("x-slack-signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
    ]);
    assert_eq!(check(&Scheme::Slack, &[secret], URL, &signed, body, 1531420618 + 299), Ok(()));
    assert_eq!(check(&Scheme::Slack, &[secret], URL, &signed, body, 1531420618 + 301), Err(Rejection::StaleTimestamp));
    assert_eq!(check(&Scheme::Slack, &[secret], URL, &signed, body, 1531420618 - 301), Err(Rejection::FutureTimestamp));
    assert_eq!(
        check(&Scheme::Slack, &[secret], URL, &signed, &body[1..], 1531420618),
        Err(Rejection::SignatureMismatch)
    );
    let no_time = headers(&[("x-slack-signature", "v0=a2114d57")]);
    assert_eq!(check(&Scheme::Slack, &[secret], URL, &no_time, body, 1531420618), Err(Rejection::MissingTimestamp));
}

#[test]
fn stripe_signs_timestamp_dot_body_with_the_secret_as_given() {
    // Stripe's SDKs sign at test time; the scheme (stripe-go ComputeSignature): HMAC-SHA256,
    // keyed with the whole secret string, over "{t}.{payload}", hex, as `v1=`.
    let secret = "whsec_test_secret";
    let payload = b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
    let t = 1_700_000_000_i64;
    let good = hmac_hex(secret.as_bytes(), &[t.to_string().as_bytes(), b".", payload].concat());
    let header = |v: &str| headers(&[("stripe-signature", v)]);
    assert_eq!(check(&Scheme::Stripe, &[secret], URL, &header(&format!("t={t},v1={good}")), payload, t), Ok(()));
    // Several v1 values (a secret being rolled) and a v0 the SDKs ignore.
    let rolled = format!("t={t},v1={},v1={good},v0=deadbeef", "0".repeat(64));
    assert_eq!(check(&Scheme::Stripe, &[secret], URL, &header(&rolled), payload, t), Ok(()));
    // The prefix is part of the key: a key without it does not verify.
    let unprefixed = hmac_hex(b"test_secret", &[t.to_string().as_bytes(), b".", payload].concat());
    let wrong = header(&format!("t={t},v1={unprefixed}"));
    assert_eq!(check(&Scheme::Stripe, &[secret], URL, &wrong, payload, t), Err(Rejection::SignatureMismatch));
    let fine = header(&format!("t={t},v1={good}"));
    assert_eq!(check(&Scheme::Stripe, &[secret], URL, &fine, payload, t + 301), Err(Rejection::StaleTimestamp));
    assert_eq!(check(&Scheme::Stripe, &[secret], URL, &fine, payload, t - 301), Err(Rejection::FutureTimestamp));
    assert_eq!(
        check(&Scheme::Stripe, &[secret], URL, &header(&format!("v1={good}")), payload, t),
        Err(Rejection::MissingTimestamp)
    );
    assert_eq!(
        check(&Scheme::Stripe, &[secret], URL, &header(&format!("t={t}")), payload, t),
        Err(Rejection::MalformedSignature)
    );
    let tampered = header(&format!("t={},v1={good}", t + 1));
    assert_eq!(check(&Scheme::Stripe, &[secret], URL, &tampered, payload, t), Err(Rejection::SignatureMismatch));
}

#[test]
fn shopify_matches_its_librarys_test() {
    // Shopify/shopify-api-js webhooks/__tests__/validate.test.ts, key `test_secret_key`.
    let signed = headers(&[("x-shopify-hmac-sha256", "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=")]);
    assert_eq!(check(&Scheme::Shopify, &["test_secret_key"], URL, &signed, br#"{"foo": "bar"}"#, 0), Ok(()));
    assert_eq!(
        check(&Scheme::Shopify, &["test_secret_key"], URL, &signed, br#"{"foo":"bar"}"#, 0),
        Err(Rejection::SignatureMismatch)
    );
    let garbage = headers(&[("x-shopify-hmac-sha256", "not base64!")]);
    assert_eq!(check(&Scheme::Shopify, &["k"], URL, &garbage, b"", 0), Err(Rejection::MalformedSignature));
}

#[test]
fn twilio_matches_its_librarys_tests_for_forms_ports_and_json() {
    // twilio/twilio-python tests/unit/test_request_validator.py.
    let token = "12345";
    let form = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    let signed = |signature: &str| headers(&[("x-twilio-signature", signature)]);
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(check(&Scheme::Twilio, &[token], url, &signed("RSOYDt4T1cUTdK1PDd93/VVr8B8="), form, 0), Ok(()));
    // The port: a signature over the URL with :443 verifies for the URL with or without it.
    let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
    assert_eq!(check(&Scheme::Twilio, &[token], with_port, &signed("kvajT1Ptam85bY51eRf/AJRuM3w="), form, 0), Ok(()));
    assert_eq!(check(&Scheme::Twilio, &[token], url, &signed("kvajT1Ptam85bY51eRf/AJRuM3w="), form, 0), Ok(()));
    assert_eq!(check(&Scheme::Twilio, &[token], with_port, &signed("RSOYDt4T1cUTdK1PDd93/VVr8B8="), form, 0), Ok(()));
    // A name given twice: its values are sorted too.
    let repeated = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
    assert_eq!(check(&Scheme::Twilio, &[token], url, &signed("IK+Dwps556ElfBT0I3Rgjkr1wJU="), repeated, 0), Ok(()));
    // A JSON body is bound by bodySHA256 in the signed URL.
    let body = br#"{"property": "value", "boolean": true}"#;
    let json_url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    assert_eq!(check(&Scheme::Twilio, &[token], json_url, &signed("a9nBmqA0ju/hNViExpshrM61xv4="), body, 0), Ok(()));
    let tampered = br#"{"property": "value", "boolean": false}"#;
    assert_eq!(
        check(&Scheme::Twilio, &[token], json_url, &signed("a9nBmqA0ju/hNViExpshrM61xv4="), tampered, 0),
        Err(Rejection::SignatureMismatch)
    );
    assert_eq!(
        check(&Scheme::Twilio, &[token], url, &signed("RSOYDt4T1cUTdK1PDd93/VVr8B8="), b"CallSid=CA1", 0),
        Err(Rejection::SignatureMismatch)
    );
}

#[test]
fn standard_webhooks_verify_as_the_outgoing_side_signs() {
    // The Standard Webhooks test vector.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let signed = headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ]);
    let body = br#"{"test": 2432232314}"#;
    assert_eq!(check(&Scheme::StandardWebhooks, &[secret], URL, &signed, body, 1614265330), Ok(()));
    assert_eq!(
        check(&Scheme::StandardWebhooks, &[secret], URL, &signed, body, 1614265330 + 301),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        check(&Scheme::StandardWebhooks, &[secret], URL, &signed, b"{}", 1614265330),
        Err(Rejection::SignatureMismatch)
    );
}

#[test]
fn a_generic_scheme_signs_what_its_template_says() {
    let spec = GenericHmac {
        header: "x-acme-signature".into(),
        algorithm: Algorithm::Sha512,
        encoding: Encoding::Base64,
        prefix: "sig=".into(),
        signed: "{timestamp}|{header:x-acme-event}|{body}".into(),
        timestamp_header: Some("x-acme-time".into()),
        timestamp_in_millis: false,
    };
    let mut mac = Hmac::<Sha512>::new_from_slice(b"s3cret").unwrap();
    mac.update(b"1700000000|order.paid|{\"n\":1}");
    let signature = format!("sig={}", STANDARD.encode(mac.finalize().into_bytes()));
    let signed =
        headers(&[("x-acme-signature", &signature), ("x-acme-time", "1700000000"), ("x-acme-event", "order.paid")]);
    let scheme = Scheme::GenericHmac(spec.clone());
    assert_eq!(check(&scheme, &["s3cret"], URL, &signed, br#"{"n":1}"#, 1_700_000_000), Ok(()));
    assert_eq!(
        check(&scheme, &["s3cret"], URL, &signed, br#"{"n":2}"#, 1_700_000_000),
        Err(Rejection::SignatureMismatch)
    );
    assert_eq!(check(&scheme, &["s3cret"], URL, &signed, br#"{"n":1}"#, 1_700_000_400), Err(Rejection::StaleTimestamp));
    let other_event =
        headers(&[("x-acme-signature", &signature), ("x-acme-time", "1700000000"), ("x-acme-event", "order.refunded")]);
    assert_eq!(
        check(&scheme, &["s3cret"], URL, &other_event, br#"{"n":1}"#, 1_700_000_000),
        Err(Rejection::SignatureMismatch)
    );

    // Hex SHA-1 of the body alone, with no prefix.
    let sha1 = GenericHmac {
        algorithm: Algorithm::Sha1,
        encoding: Encoding::Hex,
        prefix: String::new(),
        signed: "{body}".into(),
        timestamp_header: None,
        ..spec
    };
    let mut mac = Hmac::<Sha1>::new_from_slice(b"k").unwrap();
    mac.update(b"payload");
    let signed = headers(&[("x-acme-signature", &hex::encode(mac.finalize().into_bytes()))]);
    assert_eq!(check(&Scheme::GenericHmac(sha1), &["k"], URL, &signed, b"payload", 0), Ok(()));
}

#[test]
fn hubspots_v3_signature_as_a_generic_scheme() {
    // HubSpot's documented v3 scheme: base64 HMAC-SHA256 of method + URI + body + the
    // millisecond timestamp, keyed with the app's client secret; at most five minutes old.
    let spec = GenericHmac {
        header: "x-hubspot-signature-v3".into(),
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Base64,
        prefix: String::new(),
        signed: "{method}{url}{body}{timestamp}".into(),
        timestamp_header: Some("x-hubspot-request-timestamp".into()),
        timestamp_in_millis: true,
    };
    let body = br#"[{"eventId":1,"subscriptionType":"contact.creation"}]"#;
    let millis = "1700000000123";
    let mut mac = Hmac::<Sha256>::new_from_slice(b"client-secret").unwrap();
    mac.update(format!("POST{URL}{}{millis}", std::str::from_utf8(body).unwrap()).as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    let signed = headers(&[("x-hubspot-signature-v3", &signature), ("x-hubspot-request-timestamp", millis)]);
    let scheme = Scheme::GenericHmac(spec);
    assert_eq!(check(&scheme, &["client-secret"], URL, &signed, body, 1_700_000_000), Ok(()));
    assert_eq!(check(&scheme, &["client-secret"], URL, &signed, body, 1_700_000_301), Err(Rejection::StaleTimestamp));
    let elsewhere = "https://hub.example.com/webhooks/conn_2";
    assert_eq!(
        check(&scheme, &["client-secret"], elsewhere, &signed, body, 1_700_000_000),
        Err(Rejection::SignatureMismatch)
    );
}
