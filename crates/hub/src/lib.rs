//! The composition root: [`Hub::build`] makes every service once, from one set of settings,
//! and [`Hub::start`] runs all their background work as named tasks under one shutdown.
//!
//! `switchboard serve` and the server's test harness both go through here, so the tests run
//! the production wiring rather than a copy of it. The HTTP layer (`server`) holds the
//! services a [`Hub`] built and owns no background work of its own beyond HTTP's.

use std::sync::Arc;
use std::time::Duration;

use switchboard_connectors::{Catalog, Connections, ConnectorsConfig};
use switchboard_core::{Clock, SecretBox};
use switchboard_egress::{EgressClient, EgressConfig};
use switchboard_inbound::{Inbound, InboundConfig};
use switchboard_store::Store;
use switchboard_webhooks::{WebhookConfig, Webhooks};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything the services are configured with.
pub struct HubSettings {
    /// The providers the connections runtime knows.
    pub catalog: Arc<Catalog>,
    pub connectors: ConnectorsConfig,
    pub webhooks: WebhookConfig,
    pub inbound: InboundConfig,
    /// Every outbound call (deliveries, provider calls, token endpoints) goes through one
    /// client built from this.
    pub egress: EgressConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the outbound HTTP client: {0}")]
    Egress(String),
}

/// Every service, built once. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    secrets: Arc<SecretBox>,
    webhooks: Webhooks,
    connections: Connections,
    inbound: Inbound,
}

impl Hub {
    pub fn build(
        settings: HubSettings,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
    ) -> Result<Self, HubError> {
        let egress = EgressClient::new(settings.egress).map_err(|e| HubError::Egress(e.to_string()))?;
        let connections = Connections::new(
            settings.catalog,
            store.clone(),
            secrets.clone(),
            egress.clone(),
            clock.clone(),
            settings.connectors,
        );
        let webhooks = Webhooks::new(store.clone(), clock.clone(), secrets.clone(), egress, settings.webhooks);
        let inbound =
            Inbound::new(store.clone(), clock.clone(), connections.clone(), webhooks.clone(), settings.inbound);
        Ok(Self { store, clock, secrets, webhooks, connections, inbound })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn secrets(&self) -> &Arc<SecretBox> {
        &self.secrets
    }

    /// Outgoing webhooks: endpoints, publishing events, deliveries.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Installed connections: the catalog, credentials, calls, OAuth.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Incoming webhooks: receiving, processing, replay.
    pub fn inbound(&self) -> &Inbound {
        &self.inbound
    }

    /// Starts every background worker, each a named task, until `stop` is cancelled:
    /// - `delivery`: outgoing webhooks, claimed and sent;
    /// - `retention`: old events, messages and attempts pruned;
    /// - `inbound-processing`: stored incoming webhooks into events (unless this process
    ///   only receives);
    /// - `token-refresh`: OAuth tokens renewed before they expire, stale connect flows pruned;
    /// - `operational-events`: events services raise for each other published as hub events;
    /// - `sweeper`: idle senders' rate-limit state forgotten.
    pub fn start(&self, stop: CancellationToken) -> Running {
        let mut tasks = vec![
            ("delivery", self.webhooks.start_delivery(stop.clone())),
            ("retention", self.webhooks.start_retention(stop.clone())),
            ("token-refresh", self.connections.start_refresher(stop.clone())),
            ("operational-events", self.start_operational_events(stop.clone())),
            ("sweeper", self.start_sweeper(stop.clone())),
        ];
        if let Some(processing) = self.inbound.start(stop) {
            tasks.push(("inbound-processing", processing));
        }
        Running { tasks }
    }

    /// Publishes what connections raise (a connection whose auth failed) as hub events.
    fn start_operational_events(&self, stop: CancellationToken) -> JoinHandle<()> {
        let mut events = self.connections.subscribe();
        let webhooks = self.webhooks.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(switchboard_connectors::runtime::ConnectionEvent::AuthFailed {
                        tenant_id,
                        connection_id,
                        provider,
                        reason,
                        at,
                    }) => {
                        let event = switchboard_webhooks::operational::connection_auth_failed(
                            &tenant_id,
                            &connection_id,
                            &provider,
                            &reason,
                            at,
                        );
                        if let Err(error) = webhooks.publish(event).await {
                            tracing::error!(%error, connection = %connection_id, "publishing connection.auth_failed failed");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "connection events were dropped");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// Forgets idle webhook senders' token buckets every minute, so memory follows the
    /// active ones.
    fn start_sweeper(&self, stop: CancellationToken) -> JoinHandle<()> {
        let inbound = self.inbound.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => inbound.forget_idle(),
                }
            }
        })
    }
}

/// The background workers [`Hub::start`] started.
pub struct Running {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    /// The workers' names, in the order they were started.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }

    /// Waits for every worker to finish (once the stop was cancelled) until `deadline`;
    /// returns the names of those still running then. Work they hold (a delivery's lease, a
    /// claimed batch of webhooks) is taken up again after its lease expires.
    pub async fn join(self, deadline: tokio::time::Instant) -> Vec<&'static str> {
        let mut unfinished = Vec::new();
        for (name, task) in self.tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(worker = name, %error, "a background worker failed"),
                Err(_) => unfinished.push(name),
            }
        }
        unfinished
    }
}
