//! The guarded client against real sockets on loopback.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use switchboard_egress::{AddressPolicy, EgressClient, EgressConfig, ErrorKind, StaticHosts, read_excerpt};

/// A receiver on 127.0.0.1 that counts its hits; `/redirect` answers 302 to `location`.
async fn receiver(location: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "x".repeat(10_000) }
            }),
        )
        .route(
            "/redirect",
            get(move || {
                let location = location.clone();
                async move {
                    let mut headers = HeaderMap::new();
                    headers.insert("location", location.parse().unwrap());
                    (StatusCode::FOUND, headers)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, hits)
}

fn client(policy: AddressPolicy, static_hosts: &[(&str, &str)]) -> EgressClient {
    let static_hosts: StaticHosts =
        static_hosts.iter().map(|(name, ip)| (name.to_string(), vec![ip.parse::<IpAddr>().unwrap()])).collect();
    EgressClient::new(EgressConfig { policy, static_hosts, ..EgressConfig::default() }).unwrap()
}

async fn get_status(client: &EgressClient, url: &str) -> Result<u16, ErrorKind> {
    let request = client.request(reqwest::Method::GET, url.parse().unwrap()).build().unwrap();
    client.execute(request).await.map(|r| r.status().as_u16()).map_err(|e| e.kind)
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_when_connecting() {
    let (address, hits) = receiver(String::new()).await;
    let guarded = client(AddressPolicy::default(), &[("rebind.example", "127.0.0.1")]);
    let url = format!("http://rebind.example:{}/", address.port());
    assert_eq!(get_status(&guarded, &url).await, Err(ErrorKind::ForbiddenAddress));
    let refusal = guarded.vet_url(&url).await.unwrap_err();
    assert_eq!(refusal.code(), "loopback_address");
    assert!(refusal.to_string().contains("resolved to 127.0.0.1"), "{refusal}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the refused target was reached");

    // The same name through a client whose operator allows loopback reaches the receiver.
    let allowed = AddressPolicy { allow_private: false, allowed_networks: vec!["127.0.0.0/8".parse().unwrap()] };
    let open = client(allowed, &[("rebind.example", "127.0.0.1")]);
    assert_eq!(get_status(&open, &url).await, Ok(200));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ip_literals_are_refused_before_any_connection() {
    let (address, hits) = receiver(String::new()).await;
    let guarded = client(AddressPolicy::default(), &[]);
    for host in ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1"] {
        let url = format!("http://{host}:{}/", address.port());
        assert_eq!(get_status(&guarded, &url).await, Err(ErrorKind::ForbiddenAddress), "{url}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let (private, private_hits) = receiver(String::new()).await;
    let (public, _) = receiver(format!("http://127.0.0.1:{}/", private.port())).await;
    let open = client(AddressPolicy::allow_all(), &[]);
    let url = format!("http://127.0.0.1:{}/redirect", public.port());
    assert_eq!(get_status(&open, &url).await, Ok(302));
    assert_eq!(private_hits.load(Ordering::SeqCst), 0, "the redirect target was reached");
}

#[tokio::test]
async fn unreachable_and_unresolvable_targets_have_their_own_error_kinds() {
    let open = client(AddressPolicy::allow_all(), &[]);
    // Bind and drop a listener so the port is (almost certainly) closed.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    assert_eq!(get_status(&open, &format!("http://127.0.0.1:{port}/")).await, Err(ErrorKind::Connection));
    assert_eq!(get_status(&open, "http://no-such-host.invalid/").await, Err(ErrorKind::Dns));
}

#[tokio::test]
async fn excerpts_stop_at_the_limit() {
    let (address, _) = receiver(String::new()).await;
    let open = client(AddressPolicy::allow_all(), &[]);
    let request = open.request(reqwest::Method::GET, format!("http://127.0.0.1:{}/", address.port()).parse().unwrap());
    let response = open.execute(request.build().unwrap()).await.unwrap();
    let (excerpt, truncated) = read_excerpt(response, 4096).await.unwrap();
    assert_eq!(excerpt.len(), 4096);
    assert!(truncated);
}
