//! Outgoing webhooks: fan-out of events to endpoints, the delivery workers, the retry
//! schedule, per-endpoint rate limits, operational events and retention.
//!
//! - [`admission`]: refuses a tenant's new events while its deliveries are too far behind;
//! - [`fanout`]: which endpoints receive an event (type patterns, jq filters), computed when
//!   the event is published so its messages are stored in the same unit;
//! - `dispatcher`: claims due messages, sends them ([`delivery`]) and records outcomes in
//!   batches; `handoff` gives it the messages this process publishes without a claim, and
//!   `endpoint_slots` keeps one endpoint from taking every delivery slot; [`schedule`] says
//!   when a failure is tried again, [`limiter`] paces endpoints;
//! - [`operational`]: the hub's own events (`message.attempt.exhausted`, `endpoint.disabled`,
//!   `connection.auth_failed`, `inbound.processing_failed`);
//! - [`endpoints`]: the checked writes of endpoints and their secrets, resends and recovery;
//! - [`event_types`]: registering event types, their names and payload schemas checked;
//! - `retention`: prunes old events, messages and attempts;
//! - [`stats`]: per-endpoint success rate and latency.

pub mod admission;
mod config;
pub mod delivery;
mod dispatcher;
mod endpoint_slots;
pub mod endpoints;
pub mod event_types;
pub mod fanout;
mod handoff;
pub mod limiter;
pub mod metrics;
pub mod operational;
pub mod patterns;
mod retention;
pub mod schedule;
pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchboard_core::signature::SigningSecret;
use switchboard_core::{Clock, Id, SecretBox, Timestamp};
use switchboard_egress::EgressClient;
use switchboard_store::{CreateEventOutcome, Endpoint, Event, NewEvent, NewMessage, Store, StoreError, secrets};
use tokio_util::sync::CancellationToken;

pub use admission::{AdmissionConfig, Backlogged};
pub use config::WebhookConfig;
pub use endpoints::{EndpointChanges, EndpointError, EndpointSpec, SigningKind, WithSecret};
pub use event_types::EventTypeError;
pub use metrics::DeliveryMetrics;

use crate::fanout::EndpointCache;
use crate::limiter::EndpointLimiter;
use switchboard_jq::{JqProgram, ProgramCache};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the signing secret {0} is missing")]
    Missing(Id),
    #[error("the signing secret {0} cannot be decrypted")]
    Undecryptable(Id),
    #[error("the signing secret {0} is not a valid secret")]
    Malformed(Id),
}

/// The outgoing-webhooks service. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks(Arc<Inner>);

/// The service's parts, reachable only from inside the crate: other crates go through the
/// service's methods.
pub struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) secrets: Arc<SecretBox>,
    pub(crate) egress: EgressClient,
    pub(crate) config: WebhookConfig,
    pub(crate) metrics: DeliveryMetrics,
    endpoints: EndpointCache,
    handoff: handoff::Handoff,
    backlogs: admission::Backlogs,
    slots: endpoint_slots::EndpointSlots,
    limiter: EndpointLimiter,
    signing: Mutex<HashMap<Id, SigningSecret>>,
    programs: ProgramCache,
}

impl std::ops::Deref for Webhooks {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        secrets: Arc<SecretBox>,
        egress: EgressClient,
        config: WebhookConfig,
    ) -> Self {
        Self(Arc::new(Inner {
            endpoints: EndpointCache::new(config.endpoint_cache_ttl),
            slots: endpoint_slots::EndpointSlots::new(config.per_endpoint()),
            store,
            clock,
            secrets,
            egress,
            config,
            metrics: DeliveryMetrics::default(),
            handoff: handoff::Handoff::default(),
            backlogs: admission::Backlogs::default(),
            limiter: EndpointLimiter::default(),
            signing: Mutex::new(HashMap::new()),
            programs: ProgramCache::default(),
        }))
    }

    /// The settings the service runs with.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Counters and histograms of fan-out and delivery, for `/metrics`.
    pub fn metrics(&self) -> &DeliveryMetrics {
        &self.metrics
    }

    /// Starts the delivery workers; they stop when `shutdown` is cancelled, after finishing
    /// (and recording) the deliveries in hand.
    pub fn start_delivery(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(dispatcher::run(self.clone(), shutdown))
    }

    /// Starts the retention job (hourly pruning of old events, messages and attempts) until
    /// `shutdown`.
    pub fn start_retention(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(retention::run(self.clone(), shutdown))
    }

    /// Stores an event with one message per endpoint that should receive it, in one unit.
    /// If the endpoints cannot be read, nothing is stored: an event accepted without its
    /// messages would never be delivered. When this process's delivery workers have room,
    /// the messages go to them straight after the commit, leased, without a claim.
    pub async fn publish(&self, event: NewEvent) -> Result<CreateEventOutcome, StoreError> {
        let (subscribers, mut messages) = self.fan_out_to_subscribers(&event).await?;
        let handing = self.handoff.lease(&mut messages, self.lease_ends());
        let outcome = self.store.create_event(&event, &messages, &[]).await?;
        if let CreateEventOutcome::Created(stored) = &outcome {
            self.published(stored, messages.len(), handing, &subscribers);
        }
        Ok(outcome)
    }

    /// Publishes many events in one unit (all or none), each fanned out as [`Self::publish`]
    /// does: how processed incoming webhooks become events.
    pub async fn publish_batch(&self, events: Vec<NewEvent>) -> Result<Vec<CreateEventOutcome>, StoreError> {
        let lease_ends = self.lease_ends();
        let mut batch = Vec::with_capacity(events.len());
        let mut handings = Vec::with_capacity(events.len());
        for event in events {
            let (subscribers, mut messages) = self.fan_out_to_subscribers(&event).await?;
            handings.push((messages.len(), self.handoff.lease(&mut messages, lease_ends), subscribers));
            batch.push((event, messages));
        }
        let outcomes = self.store.create_events(batch).await?;
        for (outcome, (fanned_out, handing, subscribers)) in outcomes.iter().zip(handings) {
            if let CreateEventOutcome::Created(stored) = outcome {
                self.published(stored, fanned_out, handing, &subscribers);
            }
        }
        Ok(outcomes)
    }

    /// What follows the commit of an event published here: the fan-out count, the tenant's
    /// backlog as admission sees it, and the hand-over of its leased messages.
    fn published(
        &self,
        stored: &Event,
        fanned_out: usize,
        handing: handoff::Handing<'_>,
        subscribers: &[fanout::Subscriber],
    ) {
        self.metrics.fanned_out.inc_by(fanned_out as u64);
        self.backlogs.published(&stored.tenant_id, fanned_out as u64);
        self.metrics.handed_over.inc_by(handing.hand(stored, subscribers));
    }

    /// Gives an event published before to the endpoints subscribed since: those that would
    /// receive it now and have no message of it get one (a replayed incoming webhook reaches
    /// today's subscribers; those that had it are not sent it twice). Returns how many.
    pub async fn deliver_to_new_subscribers(&self, stored: &Event) -> Result<u64, StoreError> {
        let event = NewEvent {
            id: stored.id.clone(),
            tenant_id: stored.tenant_id.clone(),
            event_type: stored.event_type.clone(),
            payload: stored.payload.clone(),
            idempotency: None,
            created_at: stored.created_at,
        };
        let messages = self.fan_out(&event).await?;
        if messages.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now();
        let added =
            self.store.add_missing_messages(stored.tenant_id.as_str(), stored.id.as_str(), &messages, now).await?;
        self.metrics.fanned_out.inc_by(added);
        Ok(added)
    }

    /// The messages `event` fans out to.
    pub(crate) async fn fan_out(&self, event: &NewEvent) -> Result<Vec<NewMessage>, StoreError> {
        Ok(self.fan_out_to_subscribers(event).await?.1)
    }

    /// The tenant's subscribers and the messages `event` fans out to among them.
    async fn fan_out_to_subscribers(
        &self,
        event: &NewEvent,
    ) -> Result<(Arc<Vec<fanout::Subscriber>>, Vec<NewMessage>), StoreError> {
        let subscribers =
            self.endpoints.subscribers(&*self.store, &self.programs, &event.tenant_id, self.clock.now()).await?;
        let messages = fanout::messages_for(event, &subscribers, self.clock.now()).await;
        Ok((subscribers, messages))
    }

    /// How long a message stays leased to the worker that claimed it (or was handed it).
    pub(crate) fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(60))
    }

    /// When a lease taken now ends.
    pub(crate) fn lease_ends(&self) -> Timestamp {
        self.clock.now() + self.lease()
    }

    /// The secret an endpoint signs with now (the newest).
    pub async fn current_secret(&self, endpoint: &Endpoint) -> Result<SigningSecret, SecretError> {
        self.secret(&endpoint.tenant_id, &endpoint.secret_id).await
    }

    /// The secrets an endpoint signs with now: the current one, and the previous one during
    /// its grace period.
    pub(crate) async fn signing_secrets(
        &self,
        endpoint: &Endpoint,
        now: Timestamp,
    ) -> Result<Vec<SigningSecret>, SecretError> {
        let mut secrets = vec![self.secret(&endpoint.tenant_id, &endpoint.secret_id).await?];
        if let (Some(previous), Some(until)) = (&endpoint.previous_secret_id, endpoint.previous_secret_expires_at)
            && until > now
        {
            secrets.push(self.secret(&endpoint.tenant_id, previous).await?);
        }
        Ok(secrets)
    }

    /// Secrets never change once stored (a rotation stores a new one), so their plaintext
    /// can be kept by id.
    async fn secret(&self, tenant_id: &Id, id: &Id) -> Result<SigningSecret, SecretError> {
        if let Some(secret) = self.signing.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(secret.clone());
        }
        let stored = self
            .store
            .get_secret(tenant_id.as_str(), id.as_str())
            .await?
            .ok_or_else(|| SecretError::Missing(id.clone()))?;
        let plaintext = secrets::open(&self.secrets, &stored).map_err(|_| SecretError::Undecryptable(id.clone()))?;
        let text = std::str::from_utf8(&plaintext).map_err(|_| SecretError::Malformed(id.clone()))?;
        let secret = SigningSecret::parse(text).map_err(|_| SecretError::Malformed(id.clone()))?;
        let mut cache = self.signing.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.clone(), secret.clone());
        Ok(secret)
    }

    /// The endpoint's compiled transform. One that no longer compiles (a newer jq dialect)
    /// fails every delivery rather than sending the untransformed body.
    pub(crate) fn transform_of(&self, endpoint: &Endpoint) -> Option<JqProgram> {
        let text = endpoint.transform.as_deref()?;
        Some(self.programs.get(endpoint.tenant_id.as_str(), text, self.clock.now()).unwrap_or_else(|error| {
            tracing::warn!(endpoint = %endpoint.id, %error, "endpoint transform does not compile");
            JqProgram::broken(error)
        }))
    }
}
