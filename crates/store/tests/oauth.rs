//! The OAuth store on both backends: connect-flow states are single-use and expire, and only
//! the holder of a connection's refresh lease writes refreshed tokens.

use std::sync::Arc;

use chrono::Duration;
use switchboard_core::{Id, IdKind, Timestamp, from_micros};
use switchboard_store::testing::TestDb;
use switchboard_store::*;

switchboard_store::conformance_tests!(
    connect_flow_states_are_single_use_and_expire,
    only_the_lease_holder_writes_refreshed_tokens,
    one_of_many_concurrent_lease_attempts_wins,
);

fn t0() -> Timestamp {
    from_micros(1_760_000_000_000_000)
}

fn secret(tenant_id: &Id, bytes: &[u8]) -> StoredSecret {
    StoredSecret {
        id: Id::new(IdKind::Secret),
        tenant_id: tenant_id.clone(),
        key_id: "mk_test".into(),
        ciphertext: bytes.to_vec(),
        updated_at: t0(),
    }
}

/// A tenant with one OAuth2 connection.
async fn connection(store: &dyn Store) -> (Id, Id) {
    let tenant = NewTenant { id: Id::new(IdKind::Tenant), name: "acme".into(), created_at: t0() };
    let tenant_id = store.create_tenant(&tenant, None).await.unwrap().id;
    let connection = Connection {
        id: Id::new(IdKind::Connection),
        tenant_id: tenant_id.clone(),
        provider: "github".into(),
        name: "GitHub".into(),
        auth_mode: "oauth2".into(),
        config: "{}".into(),
        credentials_secret_id: None,
        credential_fields: Default::default(),
        auth_state: AuthState::Configured,
        last_success_at: None,
        last_error: None,
        last_error_at: None,
        last_test_at: None,
        last_test_ok: None,
        version: 1,
        created_at: t0(),
        updated_at: t0(),
        token: TokenState::default(),
    };
    let id = store.create_connection(&connection, None).await.unwrap().id;
    (tenant_id, id)
}

fn state(tenant_id: &Id, connection_id: &Id, hash: &str) -> OAuthState {
    OAuthState {
        state_hash: hash.into(),
        tenant_id: tenant_id.clone(),
        connection_id: connection_id.clone(),
        redirect_uri: "http://127.0.0.1:8080/oauth/callback".into(),
        return_url: None,
        scopes: vec!["repo".into()],
        created_at: t0(),
        expires_at: t0() + Duration::minutes(10),
    }
}

fn tokens(tenant_id: &Id, owner: Option<&str>, expires_at: Timestamp) -> NewTokens {
    NewTokens {
        credentials: secret(tenant_id, b"sealed tokens"),
        fields: [("access_token".to_string(), t0())].into_iter().collect(),
        expires_at: Some(expires_at),
        scopes: vec!["repo".into(), "read:user".into()],
        refreshed_at: owner.map(|_| t0()),
        lease_owner: owner.map(str::to_string),
        auth_state: AuthState::Ok,
        config: None,
    }
}

async fn connect_flow_states_are_single_use_and_expire(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (tenant, conn) = connection(&*store).await;
    let verifier = secret(&tenant, b"sealed verifier");
    store.create_oauth_state(&state(&tenant, &conn, "h1"), Some(&verifier)).await.unwrap();
    store.create_oauth_state(&state(&tenant, &conn, "h2"), None).await.unwrap();

    match store.take_oauth_state("h1", t0() + Duration::minutes(1)).await.unwrap() {
        TakenState::Taken(taken) => {
            assert_eq!(taken.0, state(&tenant, &conn, "h1"));
            assert_eq!(taken.1, Some(verifier.clone()));
        }
        other => panic!("expected the state with its verifier, got {other:?}"),
    }
    assert!(store.get_secret(tenant.as_str(), verifier.id.as_str()).await.unwrap().is_none(), "the verifier is gone");
    assert_eq!(store.take_oauth_state("h1", t0() + Duration::minutes(2)).await.unwrap(), TakenState::AlreadyUsed);
    assert_eq!(store.take_oauth_state("h2", t0() + Duration::minutes(10)).await.unwrap(), TakenState::Expired);
    assert_eq!(store.take_oauth_state("nope", t0()).await.unwrap(), TakenState::Unknown);

    let pending = secret(&tenant, b"another verifier");
    store.create_oauth_state(&state(&tenant, &conn, "h3"), Some(&pending)).await.unwrap();
    assert_eq!(store.prune_oauth_states(t0() + Duration::minutes(11)).await.unwrap(), 3);
    assert!(store.get_secret(tenant.as_str(), pending.id.as_str()).await.unwrap().is_none());
    assert_eq!(store.take_oauth_state("h3", t0()).await.unwrap(), TakenState::Unknown);
}

async fn only_the_lease_holder_writes_refreshed_tokens(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (tenant, conn) = connection(&*store).await;
    let (t, c) = (tenant.as_str(), conn.as_str());
    let soon = t0() + Duration::minutes(5);

    // A connect flow needs no lease.
    let set = store.set_connection_tokens(t, c, &tokens(&tenant, None, soon)).await.unwrap().unwrap();
    assert_eq!((set.token.expires_at, set.token.issued_at), (Some(soon), Some(t0())));
    assert_eq!(set.token.scopes, ["repo", "read:user"]);
    assert_eq!((set.auth_state.as_str(), set.token.last_refresh_at), ("ok", None));
    // Due once less than a quarter of its five minutes, and less than the margin, is left.
    let due = |now: Timestamp, margin: Duration| {
        let store = store.clone();
        async move { store.connections_due_for_refresh(now, margin, 10).await.unwrap() }
    };
    let minute_left = t0() + Duration::minutes(4);
    assert!(due(t0(), Duration::minutes(15)).await.is_empty(), "five minutes left of five");
    assert!(due(t0() + Duration::minutes(3), Duration::minutes(15)).await.is_empty(), "two left: not a quarter");
    assert_eq!(due(minute_left, Duration::minutes(15)).await, vec![(tenant.clone(), conn.clone())]);
    assert!(due(minute_left, Duration::seconds(30)).await.is_empty(), "the margin caps the quarter");

    let lease_end = minute_left + Duration::seconds(30);
    assert!(store.lease_refresh(t, c, "a", lease_end, minute_left).await.unwrap());
    assert!(!store.lease_refresh(t, c, "b", lease_end, minute_left).await.unwrap());
    assert!(due(minute_left, Duration::minutes(15)).await.is_empty(), "leased");
    assert!(store.set_connection_tokens(t, c, &tokens(&tenant, Some("b"), soon)).await.unwrap().is_none());
    let later = t0() + Duration::hours(1);
    let refreshed = store.set_connection_tokens(t, c, &tokens(&tenant, Some("a"), later)).await.unwrap().unwrap();
    assert_eq!((refreshed.token.expires_at, refreshed.token.last_refresh_at), (Some(later), Some(t0())));
    // The old credentials went with the replacement.
    assert!(store.get_secret(t, set.credentials_secret_id.unwrap().as_str()).await.unwrap().is_none());
    // The lease went with the write: another process may lease at once.
    assert!(store.lease_refresh(t, c, "b", t0() + Duration::seconds(30), t0()).await.unwrap());

    // A failure backs off: the refresher leaves the connection alone until then.
    let failure = RefreshFailure {
        error: "temporarily_unavailable".into(),
        at: t0(),
        retry_at: Some(t0() + Duration::minutes(52)),
        auth_state: None,
        lease_owner: "b".into(),
        jobs: Vec::new(),
    };
    store.record_refresh_failure(t, c, &failure).await.unwrap();
    let row = store.get_connection(t, c).await.unwrap().unwrap();
    assert_eq!((row.token.refresh_failures, row.last_error.as_deref()), (1, Some("temporarily_unavailable")));
    let margin = Duration::minutes(15);
    assert!(due(t0() + Duration::minutes(51), margin).await.is_empty(), "backing off");
    assert_eq!(due(t0() + Duration::minutes(52), margin).await.len(), 1);
    let at = t0() + Duration::minutes(52);
    assert!(store.lease_refresh(t, c, "a", at + Duration::minutes(1), at).await.unwrap());
    // Failing for good enqueues its announcement in the same unit, and only when recorded.
    let announcement = outbox::OperationalEvent::ConnectionAuthFailed {
        connection_id: conn.clone(),
        provider: "github".into(),
        reason: "invalid_grant".into(),
        at,
    };
    let failed = RefreshFailure {
        auth_state: Some(AuthState::AuthFailed),
        lease_owner: "someone else".into(),
        jobs: vec![announcement.to_job(&tenant, at)],
        ..failure
    };
    store.record_refresh_failure(t, c, &failed).await.unwrap();
    assert_eq!(store.queue_depth(outbox::OPERATIONAL_EVENTS_QUEUE).await.unwrap().pending, 0, "the lease was lost");
    assert_eq!(store.get_connection(t, c).await.unwrap().unwrap().token.refresh_failures, 1);
    let failed = RefreshFailure { lease_owner: "a".into(), ..failed };
    store.record_refresh_failure(t, c, &failed).await.unwrap();
    let row = store.get_connection(t, c).await.unwrap().unwrap();
    assert_eq!((row.token.refresh_failures, row.auth_state.as_str()), (2, "auth_failed"));
    assert_eq!(store.queue_depth(outbox::OPERATIONAL_EVENTS_QUEUE).await.unwrap().pending, 1);
    let jobs = store.claim(outbox::OPERATIONAL_EVENTS_QUEUE, 10, at, Duration::seconds(30)).await.unwrap();
    assert_eq!(serde_json::from_str::<outbox::OperationalEvent>(&jobs[0].payload).unwrap(), announcement);
    assert!(due(t0() + Duration::minutes(58), margin).await.is_empty(), "failed for good");
}

async fn one_of_many_concurrent_lease_attempts_wins(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let (tenant, conn) = connection(&*store).await;
    let store: Arc<dyn Store> = store;
    let mut attempts = Vec::new();
    for n in 0..10 {
        let (store, tenant, conn) = (store.clone(), tenant.clone(), conn.clone());
        attempts.push(tokio::spawn(async move {
            let owner = format!("process-{n}");
            store
                .lease_refresh(tenant.as_str(), conn.as_str(), &owner, t0() + Duration::seconds(30), t0())
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for attempt in attempts {
        won += usize::from(attempt.await.unwrap());
    }
    assert_eq!(won, 1);
    // An expired lease can be taken over.
    assert!(
        store
            .lease_refresh(
                tenant.as_str(),
                conn.as_str(),
                "late",
                t0() + Duration::minutes(2),
                t0() + Duration::minutes(1)
            )
            .await
            .unwrap()
    );
}
