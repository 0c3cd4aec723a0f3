//! The inbound-webhook store on both backends: stored once with duplicates counted, the raw
//! body kept byte for byte, claimed once under a lease, processed, failed, replayed.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;
use switchboard_core::{Id, IdKind, Timestamp, from_micros};
use switchboard_store::testing::TestDb;
use switchboard_store::*;

switchboard_store::conformance_tests!(
    webhooks_are_stored_once_with_duplicates_counted_and_kept_byte_for_byte,
    pending_webhooks_are_claimed_once_then_processed_failed_or_replayed,
    concurrent_webhooks_share_batches_and_duplicates_within_a_batch_are_counted_once,
    a_storm_of_redeliveries_in_any_order_is_stored_once_per_webhook,
    a_webhook_is_claimable_while_pending_and_unleased,
);

fn t0() -> Timestamp {
    from_micros(1_760_000_000_000_000)
}

async fn tenant(store: &dyn Store) -> Id {
    let tenant = NewTenant { id: Id::new(IdKind::Tenant), name: "acme".into(), created_at: t0() };
    store.create_tenant(&tenant, None).await.unwrap().id
}

fn webhook(tenant_id: &Id, connection: &str, dedupe: &str, verified: bool) -> NewInbound {
    let id = Id::new(IdKind::Inbound);
    NewInbound {
        id: id.clone(),
        tenant_id: tenant_id.clone(),
        connection_id: Id::from_trusted(connection.to_string()),
        received_at: t0(),
        source_ip: Some("203.0.113.9".into()),
        headers: r#"{"stripe-signature":"********"}"#.into(),
        body: vec![b'{', 0xff, 0x00, b'}'],
        verification: if verified {
            Verification::Verified
        } else {
            Verification::Rejected("signature_mismatch".to_string())
        },
        provider_event_id: Some(dedupe.to_string()),
        dedupe_key: if verified { dedupe.to_string() } else { id.to_string() },
    }
}

/// The processing loop asks before it claims, so an idle hub reads instead of writing.
async fn a_webhook_is_claimable_while_pending_and_unleased(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    assert!(!store.inbound_claimable(t0()).await.unwrap(), "nothing stored");
    store.store_inbound(webhook(&a, "conn_1", "evt_rejected", false)).await.unwrap();
    assert!(!store.inbound_claimable(t0()).await.unwrap(), "a rejected webhook is never processed");
    store.store_inbound(webhook(&a, "conn_1", "evt_1", true)).await.unwrap();
    assert!(store.inbound_claimable(t0()).await.unwrap());
    let lease_until = t0() + Duration::seconds(60);
    assert_eq!(store.claim_inbound(10, lease_until, t0()).await.unwrap().len(), 1);
    assert!(!store.inbound_claimable(t0() + Duration::seconds(59)).await.unwrap(), "leased");
    assert!(store.inbound_claimable(lease_until).await.unwrap(), "the lease ran out");
}

async fn webhooks_are_stored_once_with_duplicates_counted_and_kept_byte_for_byte(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (a, b) = (tenant(&*store).await, tenant(&*store).await);
    let first = webhook(&a, "conn_1", "evt_1", true);
    let Stored::New(id) = store.store_inbound(first).await.unwrap() else { panic!("the first is new") };
    for _ in 0..2 {
        assert_eq!(
            store.store_inbound(webhook(&a, "conn_1", "evt_1", true)).await.unwrap(),
            Stored::Duplicate(id.clone())
        );
    }
    // The same provider event id on another connection or tenant is another webhook.
    assert!(matches!(store.store_inbound(webhook(&a, "conn_2", "evt_1", true)).await.unwrap(), Stored::New(_)));
    assert!(matches!(store.store_inbound(webhook(&b, "conn_1", "evt_1", true)).await.unwrap(), Stored::New(_)));
    // Refused webhooks are kept, each on its own.
    for _ in 0..2 {
        assert!(matches!(store.store_inbound(webhook(&a, "conn_1", "evt_x", false)).await.unwrap(), Stored::New(_)));
    }

    // A connection that accepts unsigned webhooks: processed, but told apart from verified.
    let unsigned = NewInbound { verification: Verification::Unsigned, ..webhook(&a, "conn_3", "evt_u", true) };
    let Stored::New(unsigned_id) = store.store_inbound(unsigned).await.unwrap() else { panic!("new") };
    let unsigned = store.get_inbound(a.as_str(), unsigned_id.as_str()).await.unwrap().unwrap();
    assert_eq!((unsigned.verification(), unsigned.status.as_str()), (Verification::Unsigned, "pending"));

    let stored = store.get_inbound(a.as_str(), id.as_str()).await.unwrap().unwrap();
    assert_eq!(stored.body, vec![b'{', 0xff, 0x00, b'}']);
    assert_eq!(
        (stored.duplicates, stored.status.as_str(), stored.verification()),
        (2, "pending", Verification::Verified)
    );
    assert_eq!(stored.source_ip.as_deref(), Some("203.0.113.9"));
    assert!(store.get_inbound(b.as_str(), id.as_str()).await.unwrap().is_none(), "tenants are isolated");

    let counts = store.inbound_counts(a.as_str()).await.unwrap();
    assert_eq!((counts.received, counts.verified, counts.unsigned, counts.duplicates, counts.pending), (5, 2, 1, 2, 3));
    assert_eq!(counts.rejected_by_reason.get("signature_mismatch"), Some(&2));

    let page = Page { limit: 10, before: None };
    let filter = InboundFilter { connection_id: Some("conn_1".into()), status: Some(InboundStatus::Rejected) };
    assert_eq!(store.list_inbound(a.as_str(), &filter, &page).await.unwrap().len(), 2);
    let all = store.list_inbound(a.as_str(), &InboundFilter::default(), &page).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
}

async fn pending_webhooks_are_claimed_once_then_processed_failed_or_replayed(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    for n in 0..6 {
        store.store_inbound(webhook(&a, "conn_1", &format!("evt_{n}"), true)).await.unwrap();
    }
    store.store_inbound(webhook(&a, "conn_1", "bad", false)).await.unwrap();
    let store: Arc<dyn Store> = store;
    let lease = t0() + Duration::seconds(30);
    let claims: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_inbound(3, lease, t0()).await.unwrap() })
        })
        .collect();
    let mut seen = HashSet::new();
    for claim in claims {
        for inbound in claim.await.unwrap() {
            assert!(seen.insert(inbound.id.clone()), "claimed twice: {}", inbound.id);
            assert_eq!(inbound.attempts, 1);
        }
    }
    assert_eq!(seen.len(), 6, "every verified webhook, and no rejected one");
    assert!(store.claim_inbound(10, lease, t0()).await.unwrap().is_empty(), "all leased");

    let ids: Vec<Id> = seen.into_iter().collect();
    let event = Id::new(IdKind::Event);
    let processed = InboundOutcome::Processed { event_type: "stripe.invoice.paid".into(), event_id: event.clone() };
    let retry = InboundOutcome::Failed { error: "the events API refused it".into(), retry: true };
    let give_up = InboundOutcome::Failed { error: "unparseable".into(), retry: false };
    let finished: Vec<FinishedInbound> = [processed, retry, give_up]
        .into_iter()
        .zip(&ids)
        .map(|(outcome, id)| FinishedInbound { tenant_id: a.clone(), id: id.clone(), outcome })
        .collect();
    store.finish_inbound(&finished, t0()).await.unwrap();

    let done = store.get_inbound(a.as_str(), ids[0].as_str()).await.unwrap().unwrap();
    assert_eq!(
        (done.status.as_str(), done.event_id.as_ref(), done.processed_at),
        ("processed", Some(&event), Some(t0()))
    );
    assert_eq!(done.event_type.as_deref(), Some("stripe.invoice.paid"));
    // The retried one is claimable at once; the three still leased come back after the lease.
    let again = store.claim_inbound(10, lease, t0()).await.unwrap();
    assert_eq!(again.iter().map(|i| &i.id).collect::<Vec<_>>(), vec![&ids[1]]);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(store.claim_inbound(10, t0() + Duration::seconds(90), lease).await.unwrap().len(), 4);
    assert_eq!(store.get_inbound(a.as_str(), ids[2].as_str()).await.unwrap().unwrap().status, InboundStatus::Failed);

    // Replay puts a processed webhook back; a rejected one cannot be replayed.
    let replayed = store.replay_inbound(a.as_str(), ids[0].as_str()).await.unwrap().unwrap();
    assert_eq!(replayed.status, InboundStatus::Pending);
    let rejected = store
        .list_inbound(
            a.as_str(),
            &InboundFilter { status: Some(InboundStatus::Rejected), ..Default::default() },
            &Page { limit: 5, before: None },
        )
        .await
        .unwrap();
    assert!(store.replay_inbound(a.as_str(), rejected[0].id.as_str()).await.unwrap().is_none());
    let counts = store.inbound_counts(a.as_str()).await.unwrap();
    assert_eq!((counts.pending, counts.failed, counts.processed), (5, 1, 0));
}

async fn concurrent_webhooks_share_batches_and_duplicates_within_a_batch_are_counted_once(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let store: Arc<dyn Store> = store;
    // 150 keys, each delivered three times at once: copies land in the same batch or in
    // later ones, and either way one is new and two are duplicates of it.
    let writes: Vec<_> = (0..450)
        .map(|n| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move {
                let mut inbound = webhook(&a, "conn_1", &format!("evt_{}", n % 150), true);
                if n % 150 == 7 {
                    inbound.body = Vec::new();
                }
                (n % 150, store.store_inbound(inbound).await.unwrap())
            })
        })
        .collect();
    let mut by_key: std::collections::HashMap<usize, Vec<Stored>> = Default::default();
    for write in writes {
        let (key, stored) = write.await.unwrap();
        by_key.entry(key).or_default().push(stored);
    }
    assert_eq!(by_key.len(), 150);
    for (key, outcomes) in &by_key {
        let new: Vec<&Id> =
            outcomes.iter().filter_map(|o| if let Stored::New(id) = o { Some(id) } else { None }).collect();
        assert_eq!(new.len(), 1, "key {key}: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| matches!(o, Stored::New(id) | Stored::Duplicate(id) if id == new[0])),
            "key {key}: {outcomes:?}"
        );
        let stored = store.get_inbound(a.as_str(), new[0].as_str()).await.unwrap().unwrap();
        assert_eq!(stored.duplicates, 2, "key {key}");
        if *key == 7 {
            assert_eq!(stored.body, Vec::<u8>::new(), "an empty body stays empty");
        } else {
            assert_eq!(stored.body, vec![b'{', 0xff, 0x00, b'}']);
        }
    }
    let counts = store.inbound_counts(a.as_str()).await.unwrap();
    assert_eq!((counts.received, counts.duplicates, counts.pending), (150, 300, 150));
}

/// A provider redelivering everything at once: copies of the same few webhooks arrive in
/// every order, spread over batches that PostgreSQL writes concurrently (each batch's rows
/// go in key order, so that no two batches wait on each other's keys in a cycle).
async fn a_storm_of_redeliveries_in_any_order_is_stored_once_per_webhook(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let a = tenant(&*store).await;
    let store: Arc<dyn Store> = store;
    let (keys, copies) = (40_u64, 15_u64);
    // A fixed permutation of 0..600 (multiplying by a number coprime with it).
    let arrivals: Vec<u64> = (0..keys * copies).map(|n| (n * 367) % (keys * copies) % keys).collect();
    let writes: Vec<_> = arrivals
        .into_iter()
        .map(|key| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move {
                let stored = store.store_inbound(webhook(&a, "conn_1", &format!("evt_{key:02}"), true)).await;
                (key, stored.expect("no write fails, deadlocks included"))
            })
        })
        .collect();
    let mut new_per_key: std::collections::HashMap<u64, usize> = Default::default();
    for write in writes {
        let (key, stored) = write.await.unwrap();
        *new_per_key.entry(key).or_default() += usize::from(matches!(stored, Stored::New(_)));
    }
    assert!(new_per_key.values().all(|&new| new == 1), "one new per webhook: {new_per_key:?}");
    let counts = store.inbound_counts(a.as_str()).await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (keys, keys * (copies - 1)));
}
