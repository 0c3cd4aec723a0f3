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
use switchboard_identity::Identity;
use switchboard_inbound::{Inbound, InboundConfig};
use switchboard_store::outbox::{OPERATIONAL_EVENTS_QUEUE, OperationalEvent};
use switchboard_store::queue::{JobOutcome, WorkerConfig, run_worker};
use switchboard_store::{Idempotency, Job, NewEvent, Store};
use switchboard_webhooks::{WebhookConfig, Webhooks, operational};
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
    identity: Identity,
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
        let identity = Identity::new(store.clone(), clock.clone());
        Ok(Self { store, clock, secrets, identity, webhooks, connections, inbound })
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

    /// Tenants and their API keys.
    pub fn identity(&self) -> &Identity {
        &self.identity
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
    /// - `operational-events`: the operational events other services enqueue, published as
    ///   hub events from the durable job queue;
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

    /// Publishes the operational events other services enqueue (the outbox's
    /// [`OPERATIONAL_EVENTS_QUEUE`]) as hub events, on the durable job queue: at least once,
    /// and exactly once as an event (the job's id is the event's idempotency key).
    fn start_operational_events(&self, stop: CancellationToken) -> JoinHandle<()> {
        let (webhooks, clock) = (self.webhooks.clone(), self.clock.clone());
        let handler = move |job: Job| {
            let (webhooks, clock) = (webhooks.clone(), clock.clone());
            async move { publish_operational_event(&webhooks, &*clock, job).await }
        };
        let config = WorkerConfig::new(OPERATIONAL_EVENTS_QUEUE);
        tokio::spawn(run_worker(self.store.clone(), self.clock.clone(), config, stop, handler))
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

async fn publish_operational_event(webhooks: &Webhooks, clock: &dyn Clock, job: Job) -> JobOutcome {
    let event = match serde_json::from_str::<OperationalEvent>(&job.payload) {
        Ok(OperationalEvent::ConnectionAuthFailed { connection_id, provider, reason, at }) => {
            operational::connection_auth_failed(&job.tenant_id, &connection_id, &provider, &reason, at)
        }
        Ok(OperationalEvent::EndpointDisabled { endpoint_id, reason, at }) => {
            operational::endpoint_disabled(&job.tenant_id, &endpoint_id, reason, at)
        }
        Err(error) => return JobOutcome::DeadLetter(format!("not an operational event: {error}")),
    };
    let event = NewEvent {
        idempotency: Some(Idempotency { key: format!("job:{}", job.id), request_hash: String::new() }),
        ..event
    };
    match webhooks.publish(event).await {
        Ok(_) => JobOutcome::Done,
        Err(error) => {
            // 2 s doubling to 10 minutes: the store is unavailable, not the event wrong.
            let backoff = chrono::TimeDelta::seconds(1 << job.attempts.clamp(1, 9)).min(chrono::TimeDelta::minutes(10));
            tracing::warn!(%error, job = %job.id, "publishing an operational event failed; retrying");
            JobOutcome::RetryAt(clock.now() + backoff, error.to_string())
        }
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
