//! Endpoints, messages and attempts, on SQLite and on PostgreSQL.

use std::collections::BTreeMap;

use chrono::Duration;
use switchboard_core::{Id, IdKind, Timestamp, from_micros};
use switchboard_store::testing::TestDb;
use switchboard_store::*;

switchboard_store::conformance_tests!(
    endpoints_are_created_updated_rotated_and_deleted_within_their_tenant,
    an_event_and_its_messages_commit_together,
    claims_honour_due_times_and_leases,
    fifo_messages_wait_for_the_earlier_ones_of_their_endpoint,
    recording_deliveries_moves_messages_and_tracks_endpoint_health,
    a_lost_lease_records_nothing,
    resend_and_recover_requeue_failed_messages,
    prune_removes_old_finished_rows_only,
    a_claim_only_hands_out_messages_whose_events_are_committed,
    each_kind_of_work_wakes_only_its_own_workers,
    a_message_handed_to_its_creator_is_stored_leased,
    due_messages_are_counted_per_tenant_up_to_a_cap,
);

fn t0() -> Timestamp {
    from_micros(1_760_000_000_000_000)
}

async fn tenant(store: &dyn Store) -> Id {
    let t = NewTenant { id: Id::new(IdKind::Tenant), name: "t".into(), created_at: t0() };
    store.create_tenant(&t, None).await.unwrap().id
}

fn secret(tenant_id: &Id, text: &str) -> StoredSecret {
    StoredSecret {
        id: Id::new(IdKind::Secret),
        tenant_id: tenant_id.clone(),
        key_id: "k1".into(),
        ciphertext: text.as_bytes().to_vec(),
        updated_at: t0(),
    }
}

async fn endpoint(store: &dyn Store, tenant_id: &Id, fifo: bool) -> Endpoint {
    let sealed = secret(tenant_id, "s1");
    let endpoint = Endpoint {
        id: Id::new(IdKind::Endpoint),
        tenant_id: tenant_id.clone(),
        url: "https://example.com/hook".into(),
        description: "d".into(),
        event_types: vec!["user.*".into()],
        filter: Some(".data.ok".into()),
        transform: None,
        headers: BTreeMap::from([("x-team".to_string(), "a".to_string())]),
        rate_limit_per_second: Some(10),
        enabled: true,
        disabled_reason: None,
        fifo,
        metadata: "{}".into(),
        secret_id: sealed.id.clone(),
        previous_secret_id: None,
        previous_secret_expires_at: None,
        failing_since: None,
        version: 1,
        created_at: t0(),
        updated_at: t0(),
    };
    store.create_endpoint(&endpoint, &sealed).await.unwrap()
}

fn event(tenant_id: &Id, key: Option<&str>) -> NewEvent {
    NewEvent {
        id: Id::new(IdKind::Event),
        tenant_id: tenant_id.clone(),
        event_type: "user.created".into(),
        payload: "{}".into(),
        idempotency: key.map(|k| Idempotency { key: k.into(), request_hash: "h".into() }),
        created_at: t0(),
    }
}

fn message_for(endpoint: &Endpoint, at: Timestamp) -> NewMessage {
    NewMessage {
        id: Id::new(IdKind::Message),
        endpoint_id: endpoint.id.clone(),
        fifo: endpoint.fifo,
        next_attempt_at: at,
        lease_id: None,
    }
}

/// Publishes one event to the endpoints, all due at `t0`; returns the message ids.
async fn publish(store: &dyn Store, tenant_id: &Id, endpoints: &[&Endpoint]) -> Vec<Id> {
    let messages: Vec<NewMessage> = endpoints.iter().map(|e| message_for(e, t0())).collect();
    let outcome = store.create_event(&event(tenant_id, None), &messages, &[]).await.unwrap();
    assert!(matches!(outcome, CreateEventOutcome::Created(_)));
    messages.into_iter().map(|m| m.id).collect()
}

fn attempt(status: Option<u16>, at: Timestamp) -> NewAttempt {
    NewAttempt {
        id: Id::new(IdKind::Attempt),
        response_status: status,
        response_headers: Some("{}".into()),
        response_body: Some("ok".into()),
        error_kind: status.is_none().then_some(AttemptErrorKind::Timeout),
        error: None,
        duration_us: 1500,
        created_at: at,
    }
}

fn record(claimed: &ClaimedMessage, status: Option<u16>, next: NextStep, health: EndpointHealth) -> DeliveryRecord {
    let m = &claimed.message;
    DeliveryRecord {
        tenant_id: m.tenant_id.clone(),
        message_id: m.id.clone(),
        endpoint_id: m.endpoint_id.clone(),
        lease_id: claimed.lease_id.clone(),
        attempt: Some(attempt(status, t0())),
        error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
        next,
        health,
        at: t0(),
    }
}

async fn claim(store: &dyn Store, at: Timestamp) -> Vec<ClaimedMessage> {
    store.claim_messages(100, at, Duration::seconds(30)).await.unwrap().messages
}

async fn endpoints_are_created_updated_rotated_and_deleted_within_their_tenant(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store).await, tenant(&*store).await);
    let created = endpoint(&*store, &a, false).await;
    assert_eq!(store.get_endpoint(a.as_str(), created.id.as_str()).await.unwrap(), Some(created.clone()));
    assert_eq!(store.get_endpoint(b.as_str(), created.id.as_str()).await.unwrap(), None, "another tenant's");
    assert!(store.update_endpoint(b.as_str(), created.id.as_str(), &EndpointPatch::default()).await.unwrap().is_none());

    let patch = EndpointPatch {
        url: Some("https://example.org/new".into()),
        filter: Some(None),
        rate_limit_per_second: Some(None),
        enabled: Some(false),
        updated_at: Some(t0() + Duration::seconds(1)),
        ..EndpointPatch::default()
    };
    let updated = store.update_endpoint(a.as_str(), created.id.as_str(), &patch).await.unwrap().unwrap();
    assert_eq!((updated.url.as_str(), updated.filter.as_deref()), ("https://example.org/new", None));
    assert_eq!((updated.enabled, updated.disabled_reason, updated.version), (false, Some(DisabledReason::Manual), 2));
    assert_eq!(updated.headers, created.headers, "untouched fields stay");
    assert!(store.enabled_endpoints(a.as_str()).await.unwrap().is_empty());
    let enabled = EndpointPatch { enabled: Some(true), ..EndpointPatch::default() };
    store.update_endpoint(a.as_str(), created.id.as_str(), &enabled).await.unwrap().unwrap();
    assert_eq!(store.enabled_endpoints(a.as_str()).await.unwrap().len(), 1);

    let new_secret = secret(&a, "s2");
    let expires = t0() + Duration::hours(24);
    let rotated =
        store.rotate_endpoint_secret(a.as_str(), created.id.as_str(), &new_secret, expires).await.unwrap().unwrap();
    assert_eq!(rotated.secret_id, new_secret.id);
    assert_eq!(rotated.previous_secret_id.as_ref(), Some(&created.secret_id));
    assert_eq!(rotated.previous_secret_expires_at, Some(expires));
    // A second rotation drops the oldest secret.
    let third = secret(&a, "s3");
    store.rotate_endpoint_secret(a.as_str(), created.id.as_str(), &third, expires).await.unwrap().unwrap();
    assert!(store.get_secret(a.as_str(), created.secret_id.as_str()).await.unwrap().is_none());
    assert!(store.get_secret(a.as_str(), new_secret.id.as_str()).await.unwrap().is_some());

    let pending = publish(&*store, &a, &[&created]).await;
    assert!(!store.delete_endpoint(b.as_str(), created.id.as_str(), t0()).await.unwrap());
    assert!(store.delete_endpoint(a.as_str(), created.id.as_str(), t0()).await.unwrap());
    assert!(store.get_endpoint(a.as_str(), created.id.as_str()).await.unwrap().is_none());
    assert!(store.list_endpoints(a.as_str(), &Page::default()).await.unwrap().is_empty());
    assert!(store.get_secret(a.as_str(), third.id.as_str()).await.unwrap().is_none(), "secrets go with it");
    // A claim brings each message's event and endpoint: this one marked deleted.
    let batch = store.claim_messages(100, t0(), Duration::seconds(30)).await.unwrap();
    assert_eq!(batch.messages.iter().map(|m| m.message.id.clone()).collect::<Vec<_>>(), pending);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].id, batch.messages[0].message.event_id);
    assert_eq!((batch.endpoints[0].0.id.clone(), batch.endpoints[0].1), (created.id.clone(), true));
}

async fn an_event_and_its_messages_commit_together(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let (e1, e2) = (endpoint(&*store, &a, false).await, endpoint(&*store, &a, false).await);
    let first = event(&a, Some("k"));
    let messages = [message_for(&e1, t0()), message_for(&e2, t0())];
    store.create_event(&first, &messages, &[]).await.unwrap();
    // A replay of the same idempotency key creates no further messages.
    let replay = event(&a, Some("k"));
    let again = [message_for(&e1, t0())];
    assert!(matches!(store.create_event(&replay, &again, &[]).await.unwrap(), CreateEventOutcome::Replayed(_)));
    let filter = MessageFilter { event_id: Some(first.id.to_string()), ..MessageFilter::default() };
    let stored = store.list_messages(a.as_str(), &filter).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|m| m.status == MessageStatus::Pending && m.attempts == 0));
    assert!(store.get_message(a.as_str(), again[0].id.as_str()).await.unwrap().is_none());

    // A unit that fails (a duplicate message id) leaves neither the event nor any message.
    let doomed = event(&a, None);
    let duplicate = [message_for(&e1, t0()), NewMessage { id: messages[0].id.clone(), ..message_for(&e2, t0()) }];
    assert!(store.create_event(&doomed, &duplicate, &[]).await.is_err());
    assert!(store.get_event(a.as_str(), doomed.id.as_str()).await.unwrap().is_none());
    assert!(store.get_message(a.as_str(), duplicate[0].id.as_str()).await.unwrap().is_none());
}

async fn claims_honour_due_times_and_leases(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let e = endpoint(&*store, &a, false).await;
    let later = [message_for(&e, t0() + Duration::seconds(60))];
    store.create_event(&event(&a, None), &later, &[]).await.unwrap();
    let ids = publish(&*store, &a, &[&e, &e]).await;

    let claimed = claim(&*store, t0()).await;
    assert_eq!(claimed.iter().map(|c| c.message.id.clone()).collect::<Vec<_>>(), ids, "only the due ones, in order");
    assert!(claim(&*store, t0()).await.is_empty(), "leased messages are not claimed twice");
    assert_eq!(store.next_message_due().await.unwrap(), Some(t0() + Duration::seconds(30)));
    // After the lease expires (the worker died), they come due again, with the later one.
    let again = claim(&*store, t0() + Duration::seconds(61)).await;
    assert_eq!(again.len(), 3);
}

async fn fifo_messages_wait_for_the_earlier_ones_of_their_endpoint(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let (fifo, other) = (endpoint(&*store, &a, true).await, endpoint(&*store, &a, false).await);
    let first = publish(&*store, &a, &[&fifo, &other]).await;
    let second = publish(&*store, &a, &[&fifo, &other]).await;

    let claimed = claim(&*store, t0()).await;
    let ids: Vec<_> = claimed.iter().map(|c| c.message.id.clone()).collect();
    assert_eq!(ids, vec![first[0].clone(), first[1].clone(), second[1].clone()], "the second FIFO message waits");
    // The head fails and is scheduled for later: the next one still waits.
    let head = claimed.iter().find(|c| c.message.id == first[0]).unwrap();
    let retry = NextStep::RetryAt { at: t0() + Duration::seconds(5), advance: true };
    store.record_deliveries(&[record(head, Some(500), retry, EndpointHealth::Failed)], &[], t0()).await.unwrap();
    assert!(claim(&*store, t0() + Duration::seconds(1)).await.is_empty());
    let head = claim(&*store, t0() + Duration::seconds(5)).await;
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].message.id, first[0]);
    store
        .record_deliveries(&[record(&head[0], Some(200), NextStep::Succeeded, EndpointHealth::Succeeded)], &[], t0())
        .await
        .unwrap();
    let next = claim(&*store, t0() + Duration::seconds(5)).await;
    assert_eq!(next.iter().map(|c| c.message.id.clone()).collect::<Vec<_>>(), vec![second[0].clone()]);
}

async fn recording_deliveries_moves_messages_and_tracks_endpoint_health(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let (ok, flaky, gone) =
        (endpoint(&*store, &a, false).await, endpoint(&*store, &a, false).await, endpoint(&*store, &a, false).await);
    let ids = publish(&*store, &a, &[&ok, &flaky, &gone]).await;
    let claimed = claim(&*store, t0()).await;
    let by_endpoint = |e: &Endpoint| claimed.iter().find(|c| c.message.endpoint_id == e.id).unwrap();
    let retry = NextStep::RetryAt { at: t0() + Duration::seconds(5), advance: true };
    let exhausted = NewEvent { event_type: "message.attempt.exhausted".into(), ..event(&a, None) };
    let records = [
        record(by_endpoint(&ok), Some(200), NextStep::Succeeded, EndpointHealth::Succeeded),
        record(by_endpoint(&flaky), None, retry, EndpointHealth::Failed),
        record(by_endpoint(&gone), Some(410), NextStep::Failed, EndpointHealth::Gone),
    ];
    let emitted = EventWithMessages { event: exhausted.clone(), messages: vec![message_for(&ok, t0())] };
    let outcome = store.record_deliveries(&records, &[emitted], t0() - Duration::days(5)).await.unwrap();
    assert_eq!(outcome.recorded, vec![true, true, true]);
    assert_eq!(outcome.disabled, vec![(a.clone(), gone.id.clone(), DisabledReason::Gone)]);

    let message = |id: &Id| {
        let store = store.clone();
        let (a, id) = (a.clone(), id.clone());
        async move { store.get_message(a.as_str(), id.as_str()).await.unwrap().unwrap() }
    };
    let delivered = message(&ids[0]).await;
    assert_eq!((delivered.status, delivered.attempts, delivered.next_attempt_at), (MessageStatus::Succeeded, 1, None));
    let waiting = message(&ids[1]).await;
    assert_eq!((waiting.status, waiting.attempts, waiting.retry_index), (MessageStatus::Pending, 1, 1));
    assert_eq!(waiting.next_attempt_at, Some(t0() + Duration::seconds(5)));
    let dead = message(&ids[2]).await;
    assert_eq!(
        (dead.status, dead.last_status_code, dead.last_error.as_deref()),
        (MessageStatus::Failed, Some(410), Some("HTTP 410"))
    );

    let attempts = store
        .list_attempts(a.as_str(), &AttemptFilter { message_id: Some(ids[1].to_string()), ..AttemptFilter::default() })
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].attempt_number, attempts[0].succeeded, attempts[0].error_kind),
        (1, false, Some(AttemptErrorKind::Timeout))
    );
    let per_event = AttemptFilter { event_id: Some(delivered.event_id.to_string()), ..AttemptFilter::default() };
    assert_eq!(store.list_attempts(a.as_str(), &per_event).await.unwrap().len(), 3);

    let flaky_now = store.get_endpoint(a.as_str(), flaky.id.as_str()).await.unwrap().unwrap();
    assert_eq!(flaky_now.failing_since, Some(t0()), "the failure clock started");
    assert!(store.get_endpoint(a.as_str(), ok.id.as_str()).await.unwrap().unwrap().failing_since.is_none());
    let gone_now = store.get_endpoint(a.as_str(), gone.id.as_str()).await.unwrap().unwrap();
    assert_eq!((gone_now.enabled, gone_now.disabled_reason), (false, Some(DisabledReason::Gone)));
    assert!(store.get_event(a.as_str(), exhausted.id.as_str()).await.unwrap().is_some(), "operational event stored");

    // Five days of failures later, the next failure disables the endpoint.
    let later = t0() + Duration::days(5) + Duration::seconds(1);
    let claimed = claim(&*store, later).await;
    let flaky_claim = claimed.iter().find(|c| c.message.endpoint_id == flaky.id).unwrap();
    let mut failure =
        record(flaky_claim, Some(500), NextStep::RetryAt { at: later, advance: true }, EndpointHealth::Failed);
    failure.at = later;
    let outcome = store.record_deliveries(&[failure], &[], later - Duration::days(5)).await.unwrap();
    assert_eq!(outcome.disabled, vec![(a.clone(), flaky.id.clone(), DisabledReason::Failing)]);
    assert!(store.enabled_endpoints(a.as_str()).await.unwrap().iter().all(|e| e.id == ok.id));
    // Each disabling was announced through the outbox, in its own unit.
    let announced = store.claim(outbox::OPERATIONAL_EVENTS_QUEUE, 10, later, Duration::seconds(30)).await.unwrap();
    let announced: Vec<outbox::OperationalEvent> =
        announced.iter().map(|job| serde_json::from_str(&job.payload).unwrap()).collect();
    assert_eq!(
        announced,
        [
            outbox::OperationalEvent::EndpointDisabled {
                endpoint_id: gone.id.clone(),
                reason: DisabledReason::Gone,
                at: t0()
            },
            outbox::OperationalEvent::EndpointDisabled {
                endpoint_id: flaky.id.clone(),
                reason: DisabledReason::Failing,
                at: later
            },
        ]
    );
}

async fn a_lost_lease_records_nothing(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let e = endpoint(&*store, &a, false).await;
    let ids = publish(&*store, &a, &[&e]).await;
    let stale = claim(&*store, t0()).await;
    let fresh = claim(&*store, t0() + Duration::seconds(31)).await;
    let outcome = store
        .record_deliveries(&[record(&stale[0], Some(200), NextStep::Succeeded, EndpointHealth::Succeeded)], &[], t0())
        .await
        .unwrap();
    assert_eq!(outcome.recorded, vec![false]);
    let filter = AttemptFilter { message_id: Some(ids[0].to_string()), ..AttemptFilter::default() };
    assert!(store.list_attempts(a.as_str(), &filter).await.unwrap().is_empty());
    let outcome = store
        .record_deliveries(&[record(&fresh[0], Some(200), NextStep::Succeeded, EndpointHealth::Succeeded)], &[], t0())
        .await
        .unwrap();
    assert_eq!(outcome.recorded, vec![true]);
}

async fn resend_and_recover_requeue_failed_messages(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store).await, tenant(&*store).await);
    let e = endpoint(&*store, &a, false).await;
    for _ in 0..3 {
        publish(&*store, &a, &[&e]).await;
    }
    let claimed = claim(&*store, t0()).await;
    let failures: Vec<_> =
        claimed.iter().map(|c| record(c, Some(500), NextStep::Failed, EndpointHealth::Failed)).collect();
    store.record_deliveries(&failures, &[], t0() - Duration::days(5)).await.unwrap();

    let now = t0() + Duration::minutes(1);
    assert!(store.resend_message(b.as_str(), claimed[0].message.id.as_str(), now).await.unwrap().is_none());
    let resent = store.resend_message(a.as_str(), claimed[0].message.id.as_str(), now).await.unwrap().unwrap();
    assert_eq!((resent.status, resent.retry_index, resent.next_attempt_at), (MessageStatus::Pending, 0, Some(now)));
    assert_eq!(resent.attempts, 1, "earlier attempts stay counted");

    assert_eq!(store.recover_messages(b.as_str(), e.id.as_str(), t0(), now, 100).await.unwrap(), 0);
    assert_eq!(
        store.recover_messages(a.as_str(), e.id.as_str(), t0() + Duration::seconds(1), now, 100).await.unwrap(),
        0
    );
    assert_eq!(store.recover_messages(a.as_str(), e.id.as_str(), t0(), now, 1).await.unwrap(), 1, "bounded by limit");
    assert_eq!(store.recover_messages(a.as_str(), e.id.as_str(), t0(), now, 100).await.unwrap(), 1);
    assert_eq!(claim(&*store, now).await.len(), 3);
    let counts = store.message_counts(a.as_str(), e.id.as_str()).await.unwrap();
    assert_eq!(counts.get("pending"), Some(&3));
}

async fn prune_removes_old_finished_rows_only(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let e = endpoint(&*store, &a, false).await;
    let done = publish(&*store, &a, &[&e]).await;
    let claimed = claim(&*store, t0()).await;
    store
        .record_deliveries(&[record(&claimed[0], Some(200), NextStep::Succeeded, EndpointHealth::Succeeded)], &[], t0())
        .await
        .unwrap();
    let still_pending = publish(&*store, &a, &[&e]).await;

    // Nothing is older than a cutoff in the past.
    assert_eq!(store.prune(t0() - Duration::days(1), 100).await.unwrap(), Pruned::default());
    let cutoff = chrono::Utc::now() + Duration::seconds(1);
    let pruned = store.prune(cutoff, 100).await.unwrap();
    assert_eq!(pruned, Pruned { events: 1, messages: 1, attempts: 1 });
    assert!(store.get_message(a.as_str(), done[0].as_str()).await.unwrap().is_none());
    assert!(store.get_message(a.as_str(), still_pending[0].as_str()).await.unwrap().is_some());
    let events = store.list_events(a.as_str(), &EventFilter::default()).await.unwrap();
    assert_eq!(events.len(), 1, "the event with a pending message stays");
}

/// Claims may answer before their own commit (a lost lease is harmless), but never with a
/// message whose event is still uncommitted: that event could yet be rolled back, and its
/// webhook would then announce something that never happened. Checked by reading each
/// claimed message's event from another connection right away, while publishers and the
/// claimer run concurrently.
async fn a_claim_only_hands_out_messages_whose_events_are_committed(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let tenant_id = tenant(&*store).await;
    let endpoint = endpoint(&*store, &tenant_id, false).await;
    const EVENTS: usize = 400;
    let publishers: Vec<_> = (0..8)
        .map(|_| {
            let (store, tenant_id, endpoint) = (store.clone(), tenant_id.clone(), endpoint.clone());
            tokio::spawn(async move {
                for _ in 0..EVENTS / 8 {
                    publish(&*store, &tenant_id, &[&endpoint]).await;
                }
            })
        })
        .collect();
    let mut claimed = 0;
    while claimed < EVENTS {
        let batch = store.claim_messages(50, t0(), Duration::seconds(30)).await.unwrap();
        for message in &batch.messages {
            let event = store.get_event(tenant_id.as_str(), message.message.event_id.as_str()).await.unwrap();
            assert!(event.is_some(), "{} was claimed before its event was committed", message.message.id);
        }
        assert_eq!(batch.events.len(), batch.messages.len(), "each claimed message comes with its event");
        claimed += batch.messages.len();
        tokio::task::yield_now().await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
}

/// Delivery and the job workers wait on separate signals: a published message wakes
/// delivery only, an enqueued job the job workers only.
async fn each_kind_of_work_wakes_only_its_own_workers(backend: Backend) {
    use switchboard_store::queue::Work;
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let e = endpoint(&*store, &a, false).await;
    let (mut messages, mut jobs) = (store.work_signal(Work::Messages), store.work_signal(Work::Jobs));
    messages.borrow_and_update();
    jobs.borrow_and_update();
    publish(&*store, &a, &[&e]).await;
    assert!(messages.has_changed().unwrap(), "a new message wakes delivery");
    assert!(!jobs.has_changed().unwrap(), "a new message does not wake the job workers");
    messages.borrow_and_update();
    let job = NewJob {
        id: Id::new(IdKind::Job),
        tenant_id: a.clone(),
        queue: "q".into(),
        payload: "{}".into(),
        run_at: t0(),
    };
    store.enqueue(&[job]).await.unwrap();
    assert!(jobs.has_changed().unwrap(), "a job wakes the job workers");
    assert!(!messages.has_changed().unwrap(), "a job does not wake delivery");
}

async fn a_message_handed_to_its_creator_is_stored_leased(backend: Backend) {
    use switchboard_store::queue::Work;
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let e = endpoint(&*store, &a, false).await;
    let mut wakes = store.work_signal(Work::Messages);
    wakes.borrow_and_update();
    let lease_ends = t0() + Duration::seconds(60);
    let handed = NewMessage { lease_id: Some("lease_local".into()), ..message_for(&e, lease_ends) };
    store.create_event(&event(&a, None), std::slice::from_ref(&handed), &[]).await.unwrap();
    assert!(!wakes.has_changed().unwrap(), "a message its creator delivers wakes no claim");
    assert!(claim(&*store, t0()).await.is_empty(), "no claim takes it while its lease runs");

    // Its creator records the outcome under the lease it was created with.
    let stored = store.get_message(a.as_str(), handed.id.as_str()).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.next_attempt_at), (MessageStatus::Pending, Some(lease_ends)));
    let claimed = ClaimedMessage { message: stored, lease_id: "lease_local".into() };
    let failed = NextStep::RetryAt { at: t0() + Duration::seconds(5), advance: true };
    let outcome = store
        .record_deliveries(&[record(&claimed, Some(500), failed, EndpointHealth::Failed)], &[], t0())
        .await
        .unwrap();
    assert_eq!(outcome.recorded, vec![true]);
    let retried = claim(&*store, t0() + Duration::seconds(5)).await;
    assert_eq!(retried.len(), 1, "its retry is claimed like any other");
    let delivered = record(&retried[0], Some(200), NextStep::Succeeded, EndpointHealth::Succeeded);
    store.record_deliveries(&[delivered], &[], t0()).await.unwrap();

    // A creator that dies before recording only delays the message until its lease ends.
    let orphan = NewMessage { id: Id::new(IdKind::Message), ..handed };
    store.create_event(&event(&a, None), std::slice::from_ref(&orphan), &[]).await.unwrap();
    assert!(claim(&*store, lease_ends - Duration::seconds(1)).await.is_empty());
    let recovered = claim(&*store, lease_ends).await;
    assert_eq!(recovered.iter().map(|c| c.message.id.clone()).collect::<Vec<_>>(), vec![orphan.id]);
}

async fn due_messages_are_counted_per_tenant_up_to_a_cap(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store).await, tenant(&*store).await);
    let (ea, eb) = (endpoint(&*store, &a, false).await, endpoint(&*store, &b, false).await);
    publish(&*store, &a, &[&ea, &ea, &ea]).await;
    publish(&*store, &b, &[&eb, &eb]).await;
    let retry_later = message_for(&ea, t0() + Duration::seconds(60));
    let handed = NewMessage { lease_id: Some("lease_local".into()), ..message_for(&ea, t0() + Duration::seconds(120)) };
    store.create_event(&event(&a, None), &[retry_later, handed], &[]).await.unwrap();

    let count = |tenant: Id, at: Timestamp, cap: u64| {
        let store = store.clone();
        async move { store.count_due_messages(tenant.as_str(), at, cap).await.unwrap() }
    };
    assert_eq!(count(a.clone(), t0(), 100).await, 3, "a retry still to come and a leased message are not due");
    assert_eq!(count(a.clone(), t0(), 2).await, 2, "counting stops at the cap");
    assert_eq!(count(b.clone(), t0(), 100).await, 2, "each tenant its own");
    assert_eq!(count(a.clone(), t0() + Duration::seconds(60), 100).await, 4, "the retry once it is due");
    assert_eq!(count(a.clone(), t0() + Duration::seconds(120), 100).await, 5, "the lease once it ran out");
}
