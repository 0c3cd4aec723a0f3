//! The store conformance suite: every test runs against SQLite and against PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Duration;
use switchboard_core::{Clock, Id, IdKind, ManualClock, Timestamp, api_key, from_micros};
use switchboard_store::queue::{JobOutcome, WorkerConfig, run_worker};
use switchboard_store::testing::TestDb;
use switchboard_store::*;

switchboard_store::conformance_tests!(
    first_start_creates_one_operator_tenant_and_key,
    api_keys_authenticate_list_and_revoke_within_their_tenant,
    event_types_are_unique_per_tenant_and_versioned,
    events_are_isolated_between_tenants,
    idempotent_event_replays_the_first_and_refuses_a_different_body,
    parallel_idempotent_requests_create_exactly_one_event,
    events_created_in_one_batch_keep_each_ones_idempotency,
    a_rolled_back_unit_enqueues_nothing,
    event_listing_pages_newest_first_and_filters,
    concurrent_claimers_never_share_a_job,
    an_expired_lease_is_claimed_again_and_the_old_lease_is_void,
    retried_jobs_wait_until_their_time_and_dead_letters_stay_parked,
    workers_wake_on_enqueue_and_drain_on_shutdown,
    secrets_are_isolated_and_resealed_only_from_the_expected_key,
    rotation_reseals_every_secret_of_every_tenant,
    failing_units_roll_back_alone_inside_a_shared_commit,
    failing_events_roll_back_alone_beside_other_writes_in_a_shared_commit,
    a_panicking_handler_parks_its_job_and_the_worker_goes_on,
);

fn t0() -> Timestamp {
    from_micros(1_760_000_000_000_000)
}

async fn tenant(store: &dyn Store, name: &str) -> Id {
    let t = NewTenant { id: Id::new(IdKind::Tenant), name: name.into(), created_at: t0() };
    store.create_tenant(&t, None).await.unwrap().id
}

fn new_key(tenant_id: &Id, scope: Scope) -> (String, NewApiKey) {
    let minted = api_key::mint();
    let key = NewApiKey::for_token(tenant_id, format!("{scope} key"), scope, &minted, None, t0());
    (minted.token, key)
}

fn new_event(tenant_id: &Id, payload: &str, key: Option<(&str, &str)>) -> NewEvent {
    NewEvent {
        id: Id::new(IdKind::Event),
        tenant_id: tenant_id.clone(),
        event_type: "user.created".into(),
        payload: payload.into(),
        idempotency: key.map(|(key, hash)| Idempotency { key: key.into(), request_hash: hash.into() }),
        created_at: t0(),
    }
}

fn job(tenant_id: &Id, queue: &str, run_at: Timestamp) -> NewJob {
    NewJob { id: Id::new(IdKind::Job), tenant_id: tenant_id.clone(), queue: queue.into(), payload: "{}".into(), run_at }
}

async fn first_start_creates_one_operator_tenant_and_key(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let make = || {
        let t = NewTenant { id: Id::new(IdKind::Tenant), name: "default".into(), created_at: t0() };
        let (token, key) = new_key(&t.id, Scope::Admin);
        (t, token, key)
    };
    let (first, token, key) = make();
    let created = store.bootstrap_operator(&first, &key).await.unwrap().expect("first start creates the operator");
    assert!(created.is_operator);

    let (second, _, second_key) = make();
    assert_eq!(store.bootstrap_operator(&second, &second_key).await.unwrap(), None, "later starts create nothing");
    assert!(store.authenticate(&second_key.key_hash).await.unwrap().is_none(), "no key from a later start");

    let (found, is_operator) = store.authenticate(&api_key::hash(&token)).await.unwrap().unwrap();
    assert_eq!(found.tenant_id, first.id);
    assert!(is_operator);
    assert_eq!(found.scope, Scope::Admin);
}

async fn api_keys_authenticate_list_and_revoke_within_their_tenant(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store, "a").await, tenant(&*store, "b").await);
    let (token, key) = new_key(&a, Scope::Read);
    let stored = store.create_api_key(&key).await.unwrap();
    assert!(stored.masked.starts_with("sk_") && !stored.masked.contains(&token[3..]));

    let (found, is_operator) = store.authenticate(&api_key::hash(&token)).await.unwrap().unwrap();
    assert_eq!(found.id, key.id);
    assert!(!is_operator);

    let listed = store.list_api_keys(a.as_str(), &Page::default()).await.unwrap();
    assert_eq!(listed.iter().map(|k| &k.id).collect::<Vec<_>>(), vec![&key.id]);
    assert!(store.list_api_keys(b.as_str(), &Page::default()).await.unwrap().is_empty());

    assert!(!store.revoke_api_key(b.as_str(), key.id.as_str(), t0()).await.unwrap(), "another tenant cannot revoke it");
    assert!(store.revoke_api_key(a.as_str(), key.id.as_str(), t0()).await.unwrap());
    assert!(!store.revoke_api_key(a.as_str(), key.id.as_str(), t0()).await.unwrap(), "revoking twice is a no-op");
    let (revoked, _) = store.authenticate(&api_key::hash(&token)).await.unwrap().unwrap();
    assert!(!revoked.is_usable_at(t0()));

    let (_, duplicate) = new_key(&a, Scope::Read);
    let duplicate = NewApiKey { key_hash: key.key_hash.clone(), ..duplicate };
    assert!(matches!(store.create_api_key(&duplicate).await, Err(StoreError::Conflict(_))));
}

async fn event_types_are_unique_per_tenant_and_versioned(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store, "a").await, tenant(&*store, "b").await);
    let et = |tenant_id: &Id| NewEventType {
        id: Id::new(IdKind::EventType),
        tenant_id: tenant_id.clone(),
        name: "user.created".into(),
        description: "a user signed up".into(),
        schema: Some(r#"{"type":"object"}"#.into()),
        created_at: t0(),
    };
    let created = store.create_event_type(&et(&a)).await.unwrap();
    assert_eq!(created.version, 1);
    assert!(matches!(store.create_event_type(&et(&a)).await, Err(StoreError::Conflict(_))));
    store.create_event_type(&et(&b)).await.expect("the same name in another tenant is fine");

    let patch =
        EventTypePatch { schema: Some(None), updated_at: Some(t0() + Duration::seconds(1)), ..Default::default() };
    let updated = store.update_event_type(a.as_str(), "user.created", &patch).await.unwrap().unwrap();
    assert_eq!(
        (updated.version, updated.schema.as_deref(), updated.description.as_str()),
        (2, None, "a user signed up")
    );
    assert_eq!(store.get_event_type(a.as_str(), "user.created").await.unwrap().unwrap(), updated);
    assert!(store.get_event_type(b.as_str(), "user.created").await.unwrap().unwrap().schema.is_some());
    assert!(store.update_event_type(a.as_str(), "nope", &patch).await.unwrap().is_none());
}

async fn events_are_isolated_between_tenants(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store, "a").await, tenant(&*store, "b").await);
    let CreateEventOutcome::Created(event) = store.create_event(&new_event(&a, "{}", None), &[], &[]).await.unwrap()
    else {
        panic!("expected a new event")
    };
    assert_eq!(store.get_event(a.as_str(), event.id.as_str()).await.unwrap().unwrap(), event);
    assert!(store.get_event(b.as_str(), event.id.as_str()).await.unwrap().is_none());
    assert!(store.list_events(b.as_str(), &EventFilter::default()).await.unwrap().is_empty());
}

async fn idempotent_event_replays_the_first_and_refuses_a_different_body(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let b = tenant(&*store, "b").await;
    let first = new_event(&a, r#"{"n":1}"#, Some(("k1", "hash-1")));
    let CreateEventOutcome::Created(created) =
        store.create_event(&first, &[], &[job(&a, "fanout", t0())]).await.unwrap()
    else {
        panic!("expected a new event")
    };
    let again = new_event(&a, r#"{"n":1}"#, Some(("k1", "hash-1")));
    assert_eq!(
        store.create_event(&again, &[], &[job(&a, "fanout", t0())]).await.unwrap(),
        CreateEventOutcome::Replayed(created.clone())
    );
    let different = new_event(&a, r#"{"n":2}"#, Some(("k1", "hash-2")));
    assert_eq!(
        store.create_event(&different, &[], &[job(&a, "fanout", t0())]).await.unwrap(),
        CreateEventOutcome::KeyReused
    );
    let (found, hash) = store.find_idempotent_event(a.as_str(), "k1").await.unwrap().unwrap();
    assert_eq!((found, hash.as_str()), (created.clone(), "hash-1"));
    assert!(store.find_idempotent_event(b.as_str(), "k1").await.unwrap().is_none());
    let other_tenant = new_event(&b, r#"{"n":2}"#, Some(("k1", "hash-2")));
    assert!(matches!(store.create_event(&other_tenant, &[], &[]).await.unwrap(), CreateEventOutcome::Created(_)));

    assert_eq!(store.list_events(a.as_str(), &EventFilter::default()).await.unwrap().len(), 1);
    let jobs = store.claim("fanout", 10, t0(), Duration::seconds(30)).await.unwrap();
    assert_eq!(jobs.len(), 1, "replays and conflicts enqueue nothing");
}

async fn parallel_idempotent_requests_create_exactly_one_event(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move {
                store.create_event(&new_event(&a, "{}", Some(("same", "h"))), &[], &[]).await.unwrap()
            })
        })
        .collect();
    let mut created = 0;
    let mut ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            CreateEventOutcome::Created(e) => {
                created += 1;
                ids.insert(e.id);
            }
            CreateEventOutcome::Replayed(e) => {
                ids.insert(e.id);
            }
            CreateEventOutcome::KeyReused => panic!("same body must replay"),
        }
    }
    assert_eq!((created, ids.len()), (1, 1));
    assert_eq!(store.list_events(a.as_str(), &EventFilter::default()).await.unwrap().len(), 1);
}

async fn a_rolled_back_unit_enqueues_nothing(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let event = new_event(&a, "{}", None);
    store.create_event(&event, &[], &[job(&a, "q", t0())]).await.unwrap();
    // Same event id again: the insert fails after nothing else, so the unit rolls back whole.
    let duplicate = NewEvent { payload: r#"{"dup":true}"#.into(), ..event.clone() };
    let doomed = job(&a, "q", t0());
    assert!(matches!(
        store.create_event(&duplicate, &[], std::slice::from_ref(&doomed)).await,
        Err(StoreError::Conflict(_))
    ));

    let claimed = store.claim("q", 10, t0() + Duration::hours(1), Duration::seconds(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_ne!(claimed[0].id, doomed.id);
    assert_eq!(store.queue_depth("q").await.unwrap(), QueueDepth { pending: 0, leased: 1, dead: 0 });
}

async fn event_listing_pages_newest_first_and_filters(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut e = new_event(&a, &format!(r#"{{"i":{i}}}"#), None);
        e.created_at = t0() + Duration::seconds(i);
        if i % 2 == 0 {
            e.event_type = "order.paid".into();
        }
        ids.push(e.id.clone());
        store.create_event(&e, &[], &[]).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut page = Page { limit: 3, before: None };
    loop {
        let batch =
            store.list_events(a.as_str(), &EventFilter { page: page.clone(), ..Default::default() }).await.unwrap();
        seen.extend(batch.iter().map(|e| e.id.clone()));
        if batch.len() < 3 {
            break;
        }
        page.before = Some(batch.last().unwrap().id.to_string());
    }
    ids.reverse();
    assert_eq!(seen, ids, "pages walk every event once, newest first");

    let paid = EventFilter { event_type: Some("order.paid".into()), ..Default::default() };
    assert_eq!(store.list_events(a.as_str(), &paid).await.unwrap().len(), 4);
    let window = EventFilter {
        created_after: Some(t0() + Duration::seconds(1)),
        created_before: Some(t0() + Duration::seconds(4)),
        ..Default::default()
    };
    assert_eq!(store.list_events(a.as_str(), &window).await.unwrap().len(), 2);
}

async fn concurrent_claimers_never_share_a_job(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let jobs: Vec<_> = (0..300).map(|_| job(&a, "work", t0())).collect();
    store.enqueue(&jobs).await.unwrap();
    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim("work", 7, t0(), Duration::seconds(60)).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    for job in batch {
                        assert!(store.ack(&job.lease).await.unwrap());
                        mine.push(job.id);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 300, "every job claimed");
    assert_eq!(unique.len(), 300, "no job claimed twice");
}

async fn an_expired_lease_is_claimed_again_and_the_old_lease_is_void(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    store.enqueue(&[job(&a, "q", t0())]).await.unwrap();
    let lease = Duration::seconds(30);
    let first = store.claim("q", 1, t0(), lease).await.unwrap().remove(0);
    assert_eq!(first.attempts, 1);
    assert!(
        store.claim("q", 1, t0() + Duration::seconds(29), lease).await.unwrap().is_empty(),
        "leased jobs are not claimable"
    );
    assert_eq!(store.next_due("q").await.unwrap(), Some(t0() + lease));

    // The first worker "crashed"; after the lease expires someone else gets the job.
    let second = store.claim("q", 1, t0() + Duration::seconds(31), lease).await.unwrap().remove(0);
    assert_eq!((second.id.clone(), second.attempts), (first.id.clone(), 2));
    assert!(!store.ack(&first.lease).await.unwrap(), "the expired lease can no longer ack");
    assert!(store.extend_lease(&second.lease, t0() + Duration::minutes(5)).await.unwrap());
    assert!(store.ack(&second.lease).await.unwrap());
    assert_eq!(store.queue_depth("q").await.unwrap(), QueueDepth::default());
}

async fn retried_jobs_wait_until_their_time_and_dead_letters_stay_parked(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    store.enqueue(&[job(&a, "q", t0()), job(&a, "q", t0())]).await.unwrap();
    let mut claimed = store.claim("q", 2, t0(), Duration::seconds(30)).await.unwrap();
    let (retried, parked) = (claimed.remove(0), claimed.remove(0));
    let later = t0() + Duration::minutes(5);
    assert!(store.retry_at(&retried.lease, later, "HTTP 503").await.unwrap());
    assert!(store.dead_letter(&parked.lease, t0(), "gave up").await.unwrap());
    assert_eq!(store.queue_depth("q").await.unwrap(), QueueDepth { pending: 1, leased: 0, dead: 1 });

    assert!(store.claim("q", 5, later - Duration::seconds(1), Duration::seconds(30)).await.unwrap().is_empty());
    let again = store.claim("q", 5, later, Duration::seconds(30)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((&again[0].id, again[0].attempts, again[0].last_error.as_deref()), (&retried.id, 2, Some("HTTP 503")));
    assert!(store.ack(&again[0].lease).await.unwrap());
    assert!(
        store.claim("q", 5, later + Duration::days(30), Duration::seconds(30)).await.unwrap().is_empty(),
        "dead letters are never claimed"
    );
}

async fn workers_wake_on_enqueue_and_drain_on_shutdown(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let clock = Arc::new(ManualClock::new(t0()));
    let handled = Arc::new(AtomicUsize::new(0));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = WorkerConfig::new("wake");
    // A long idle wait proves the wake-up comes from the signal, not from polling.
    config.max_idle_wait = std::time::Duration::from_secs(3600);
    let worker = tokio::spawn(run_worker(store.clone(), clock.clone() as Arc<dyn Clock>, config, shutdown.clone(), {
        let handled = handled.clone();
        move |_job| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                handled.fetch_add(1, Ordering::SeqCst);
                JobOutcome::Done
            }
        }
    }));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let jobs: Vec<_> = (0..20).map(|_| job(&a, "wake", t0())).collect();
    store.enqueue(&jobs).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while handled.load(Ordering::SeqCst) < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers did not wake: {} handled",
            handled.load(Ordering::SeqCst)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Jobs in hand when shutdown starts are finished before the worker returns.
    store.enqueue(&(0..5).map(|_| job(&a, "wake", t0())).collect::<Vec<_>>()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), worker).await.expect("drained in time").unwrap();
    let depth = store.queue_depth("wake").await.unwrap();
    assert_eq!(depth.leased, 0, "no job is left leased after a graceful stop");
    assert_eq!(handled.load(Ordering::SeqCst) as u64 + depth.pending, 25);
}

async fn secrets_are_isolated_and_resealed_only_from_the_expected_key(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store, "a").await, tenant(&*store, "b").await);
    let secret = StoredSecret {
        id: Id::new(IdKind::Secret),
        tenant_id: a.clone(),
        key_id: "mk_old".into(),
        ciphertext: vec![1, 2, 3],
        updated_at: t0(),
    };
    store.put_secret(&secret).await.unwrap();
    assert_eq!(store.get_secret(a.as_str(), secret.id.as_str()).await.unwrap().unwrap(), secret);
    assert!(store.get_secret(b.as_str(), secret.id.as_str()).await.unwrap().is_none());
    let hijack = StoredSecret { tenant_id: b.clone(), ciphertext: vec![0], ..secret.clone() };
    assert!(
        matches!(store.put_secret(&hijack).await, Err(StoreError::Conflict(_))),
        "another tenant cannot overwrite it"
    );

    assert_eq!(store.count_secrets_sealed_with_other_keys("mk_new").await.unwrap(), 1);
    let stale = store.secrets_sealed_with_other_keys(a.as_str(), "mk_new", None, 10).await.unwrap();
    assert_eq!(stale, vec![secret.clone()]);
    let resealed = StoredSecret { key_id: "mk_new".into(), ciphertext: vec![9], ..secret.clone() };
    // Someone rewrote the secret (same key) after the rotation read it: the reseal must not win.
    let changed = StoredSecret { ciphertext: vec![4, 5, 6], ..secret.clone() };
    store.put_secret(&changed).await.unwrap();
    assert!(!store.reseal_secret(&resealed, &secret).await.unwrap(), "a changed secret is not overwritten");
    assert!(store.reseal_secret(&resealed, &changed).await.unwrap());
    assert_eq!(store.count_secrets_sealed_with_other_keys("mk_new").await.unwrap(), 0);
}

/// Two stores on one PostgreSQL database stand for two `serve` processes: an enqueue in one
/// wakes the workers of the other through LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(switchboard_postgres), ignore = "set SWITCHBOARD_TEST_DATABASE_URL to run the PostgreSQL tests")]
async fn postgres_notify_wakes_workers_of_another_process() {
    let db = TestDb::postgres();
    let (producer, consumer) = (db.open().await, db.open().await);
    let a = tenant(&*producer, "a").await;
    let mut signal = consumer.work_signal(switchboard_store::queue::Work::Jobs);
    signal.borrow_and_update();
    producer.enqueue(&[job(&a, "x", t0())]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), signal.changed())
        .await
        .expect("the other process is notified")
        .unwrap();
    assert_eq!(consumer.claim("x", 1, t0(), Duration::seconds(5)).await.unwrap().len(), 1);
}

/// After a key rotation every secret of every tenant is re-encrypted with the new key and
/// still opens to the same plaintext.
async fn rotation_reseals_every_secret_of_every_tenant(backend: Backend) {
    use switchboard_core::{KeyRing, SecretBox};
    let (_db, store) = TestDb::store_for(backend).await;
    let mut ring = KeyRing::generate();
    let old = SecretBox::new(KeyRing::parse(&ring.to_text()).unwrap());
    let mut sealed = Vec::new();
    for name in ["a", "b"] {
        let t = tenant(&*store, name).await;
        for i in 0..3 {
            let secret = secrets::seal(&old, &t, format!("{name}-{i}").as_bytes(), t0());
            store.put_secret(&secret).await.unwrap();
            sealed.push((secret, format!("{name}-{i}")));
        }
    }
    let new_id = ring.rotate();
    let new = SecretBox::new(ring);
    let reported = std::sync::Mutex::new(Vec::new());
    let count = secrets::reseal_all(&*store, &new, t0(), |n| reported.lock().unwrap().push(n)).await.unwrap();
    assert_eq!(count, 6);
    assert_eq!(*reported.lock().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    for (secret, plaintext) in sealed {
        let now = store.get_secret(secret.tenant_id.as_str(), secret.id.as_str()).await.unwrap().unwrap();
        assert_eq!(now.key_id, new_id);
        assert_eq!(&secrets::open(&new, &now).unwrap()[..], plaintext.as_bytes());
    }
    assert_eq!(secrets::reseal_all(&*store, &new, t0(), |_| {}).await.unwrap(), 0, "a second run has nothing to do");
}

/// Units that fail halfway leave nothing behind, even when they share a group commit with
/// units that succeed.
async fn failing_units_roll_back_alone_inside_a_shared_commit(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let owner = tenant(&*store, "owner").await;
    let (_, taken) = new_key(&owner, Scope::Read);
    store.create_api_key(&taken).await.unwrap();
    let attempts: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let taken_hash = taken.key_hash.clone();
            tokio::spawn(async move {
                let t = NewTenant { id: Id::new(IdKind::Tenant), name: format!("t{i}"), created_at: t0() };
                let (_, mut key) = new_key(&t.id, Scope::Admin);
                if i % 2 == 0 {
                    // The tenant row goes in first; the key then collides and must undo it.
                    key.key_hash = taken_hash;
                }
                (i, store.create_tenant(&t, Some(&key)).await)
            })
        })
        .collect();
    for attempt in attempts {
        let (i, result) = attempt.await.unwrap();
        assert_eq!(result.is_ok(), i % 2 == 1, "attempt {i}: {result:?}");
    }
    let tenants = store.list_tenants(&Page { limit: 100, before: None }).await.unwrap();
    assert_eq!(tenants.len(), 1 + 20, "only the owner and the 20 whole units remain");
    assert!(tenants.iter().all(|t| t.name == "owner" || t.name[1..].parse::<u32>().unwrap() % 2 == 1));
}

/// Publishing (which SQLite's writer runs on its own thread) shares group commits with every
/// other kind of write: an event that fails after its row went in leaves nothing, and takes
/// nothing of its neighbours with it.
async fn failing_events_roll_back_alone_beside_other_writes_in_a_shared_commit(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let owner = tenant(&*store, "owner").await;
    let writes: Vec<_> = (0..60)
        .map(|i| {
            let (store, owner) = (store.clone(), owner.clone());
            tokio::spawn(async move {
                let ok = match i % 3 {
                    0 => {
                        // The event row goes in, then its second job collides with its first.
                        let twice = job(&owner, "q", t0());
                        let event = new_event(&owner, "{}", None);
                        store.create_event(&event, &[], &[twice.clone(), twice]).await.is_ok()
                    }
                    1 => {
                        store.create_event(&new_event(&owner, "{}", None), &[], &[job(&owner, "q", t0())]).await.is_ok()
                    }
                    _ => {
                        let t = NewTenant { id: Id::new(IdKind::Tenant), name: format!("t{i}"), created_at: t0() };
                        store.create_tenant(&t, None).await.is_ok()
                    }
                };
                (i, ok)
            })
        })
        .collect();
    for write in writes {
        let (i, ok) = write.await.unwrap();
        assert_eq!(ok, i % 3 != 0, "write {i}");
    }
    let events = store
        .list_events(owner.as_str(), &EventFilter { page: Page { limit: 100, before: None }, ..EventFilter::default() })
        .await
        .unwrap();
    assert_eq!(events.len(), 20, "only the whole events remain");
    assert_eq!(store.queue_depth("q").await.unwrap(), QueueDepth { pending: 20, leased: 0, dead: 0 });
    assert_eq!(store.list_tenants(&Page { limit: 100, before: None }).await.unwrap().len(), 1 + 20);
}

/// A handler that panics does not take the worker down; its job is parked, not retried
/// forever.
async fn a_panicking_handler_parks_its_job_and_the_worker_goes_on(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let clock = Arc::new(ManualClock::new(t0()));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let worker =
        tokio::spawn(run_worker(store.clone(), clock as Arc<dyn Clock>, WorkerConfig::new("p"), shutdown.clone(), {
            let handled = handled.clone();
            move |job: switchboard_store::Job| {
                let handled = handled.clone();
                async move {
                    if job.payload.contains("boom") {
                        panic!("handler bug");
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    JobOutcome::Done
                }
            }
        }));
    let mut boom = job(&a, "p", t0());
    boom.payload = r#"{"boom":true}"#.into();
    store.enqueue(&[boom, job(&a, "p", t0())]).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.queue_depth("p").await.unwrap() != (QueueDepth { pending: 0, leased: 0, dead: 1 }) {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", store.queue_depth("p").await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    shutdown.cancel();
    worker.await.unwrap();
}

async fn events_created_in_one_batch_keep_each_ones_idempotency(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store, "a").await;
    let earlier = new_event(&a, r#"{"n":0}"#, Some(("inbound:0", "h0")));
    let CreateEventOutcome::Created(earlier) = store.create_event(&earlier, &[], &[]).await.unwrap() else {
        panic!("created")
    };
    let batch = vec![
        (new_event(&a, r#"{"n":1}"#, Some(("inbound:1", "h1"))), Vec::new()),
        (new_event(&a, r#"{"n":0}"#, Some(("inbound:0", "h0"))), Vec::new()),
        (new_event(&a, r#"{"n":9}"#, Some(("inbound:0", "other"))), Vec::new()),
    ];
    let first_id = batch[0].0.id.clone();
    let outcomes = store.create_events(batch).await.unwrap();
    assert!(matches!(&outcomes[0], CreateEventOutcome::Created(e) if e.id == first_id), "{outcomes:?}");
    assert!(matches!(&outcomes[1], CreateEventOutcome::Replayed(e) if e.id == earlier.id), "{outcomes:?}");
    assert!(matches!(&outcomes[2], CreateEventOutcome::KeyReused), "{outcomes:?}");
    let page = Page { limit: 10, before: None };
    let filter = EventFilter { page, event_type: None, created_after: None, created_before: None };
    let listed = store.list_events(a.as_str(), &filter).await.unwrap();
    assert_eq!(listed.len(), 2, "one new event beside the earlier one");
}
