//! The hub as `serve` uses it: every service built once, every background worker a named
//! task that stops with the hub.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use switchboard_connectors::{Catalog, ConnectorsConfig};
use switchboard_core::{KeyRing, SecretBox, SystemClock};
use switchboard_egress::EgressConfig;
use switchboard_hub::{Hub, HubSettings};
use switchboard_inbound::InboundConfig;
use switchboard_store::Backend;
use switchboard_store::testing::TestDb;
use switchboard_webhooks::WebhookConfig;
use tokio_util::sync::CancellationToken;

switchboard_store::conformance_tests!(every_worker_is_named_and_stops_with_the_hub);

fn settings(inbound: InboundConfig) -> HubSettings {
    HubSettings {
        catalog: Arc::new(Catalog::load(&[]).unwrap()),
        connectors: ConnectorsConfig::default(),
        webhooks: WebhookConfig::default(),
        inbound,
        egress: EgressConfig::default(),
    }
}

async fn every_worker_is_named_and_stops_with_the_hub(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let secrets = Arc::new(SecretBox::new(KeyRing::generate()));
    let hub =
        Hub::build(settings(InboundConfig::default()), Arc::new(SystemClock), store.clone(), secrets.clone()).unwrap();
    let stop = CancellationToken::new();
    let running = hub.start(stop.clone());
    assert_eq!(
        running.names(),
        ["delivery", "retention", "token-refresh", "operational-events", "sweeper", "inbound-processing"]
    );
    stop.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    assert_eq!(running.join(deadline).await, Vec::<&str>::new(), "every worker stops when the hub does");

    // A process that only receives leaves processing to others.
    let receive_only = InboundConfig { processing: false, ..InboundConfig::default() };
    let hub = Hub::build(settings(receive_only), Arc::new(SystemClock), store, secrets).unwrap();
    let stop = CancellationToken::new();
    let running = hub.start(stop.clone());
    assert!(!running.names().contains(&"inbound-processing"));
    stop.cancel();
    assert!(running.join(tokio::time::Instant::now() + Duration::from_secs(10)).await.is_empty());
}
