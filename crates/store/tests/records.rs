//! The records store on both backends: change detection by hash, soft deletes, and a change
//! order that a cursor follows without skipping or repeating a change, even while writers
//! write.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use switchboard_core::{Id, IdKind, Timestamp, from_micros};
use switchboard_store::records::{NewRecord, RecordCounts, RecordFilter, RecordStream};
use switchboard_store::testing::TestDb;
use switchboard_store::*;

switchboard_store::conformance_tests!(
    unchanged_records_are_not_rewritten_and_every_change_comes_later_in_the_order,
    a_cursor_never_skips_or_repeats_a_change_while_writers_write,
    a_batch_too_large_is_refused_and_writes_nothing,
    a_full_refresh_finds_what_it_did_not_see,
);

fn t(seconds: i64) -> Timestamp {
    from_micros(1_760_000_000_000_000 + seconds * 1_000_000)
}

async fn stream(store: &dyn Store, model: &str) -> RecordStream {
    let tenant = NewTenant { id: Id::new(IdKind::Tenant), name: "acme".into(), created_at: t(0) };
    let tenant_id = store.create_tenant(&tenant, None).await.unwrap().id;
    RecordStream { tenant_id, connection_id: Id::from_trusted("conn_github".to_string()), model: model.into() }
}

fn record(id: &str, title: &str) -> NewRecord {
    let data = format!(r#"{{"id":"{id}","title":"{title}"}}"#);
    NewRecord { external_id: id.into(), hash: format!("h:{title}"), data, version: None }
}

fn all(after_seq: Option<i64>) -> RecordFilter {
    RecordFilter { after_seq, include_deleted: true, limit: 1000, ..RecordFilter::default() }
}

async fn unchanged_records_are_not_rewritten_and_every_change_comes_later_in_the_order(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let issues = stream(&*store, "issue").await;
    let run = Id::new(IdKind::Job);
    let first = vec![record("1", "a"), record("2", "b"), record("3", "c"), record("2", "b2")];
    let counts = store.write_records(&issues, first, Some(&run), None, t(1)).await.unwrap();
    assert_eq!(counts, RecordCounts { added: 3, ..RecordCounts::default() }, "the last of one id's records wins");
    let stored = store.list_records(&issues, &all(None)).await.unwrap();
    assert_eq!(stored.iter().map(|r| r.external_id.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_eq!(stored[1].hash, "h:b2");
    assert_eq!(stored[0].run_id.as_ref(), Some(&run));
    let cursor = stored.last().unwrap().change_seq;

    // Nothing new: nothing is written, so nothing comes after the cursor.
    let again = vec![record("1", "a"), record("2", "b2"), record("3", "c")];
    let counts = store.write_records(&issues, again, None, None, t(2)).await.unwrap();
    assert_eq!(counts, RecordCounts { unchanged: 3, ..RecordCounts::default() });
    assert!(store.list_records(&issues, &all(Some(cursor))).await.unwrap().is_empty());
    assert_eq!(store.list_records(&issues, &all(None)).await.unwrap()[0].updated_at, t(1), "not rewritten");

    // One edit and one deletion come after the cursor, in the order they were made.
    let counts =
        store.write_records(&issues, vec![record("1", "a2"), record("4", "d")], None, None, t(3)).await.unwrap();
    assert_eq!(counts, RecordCounts { added: 1, updated: 1, ..RecordCounts::default() });
    assert_eq!(store.delete_records(&issues, vec!["3".into(), "404".into()], None, t(4)).await.unwrap(), 1);
    assert_eq!(store.delete_records(&issues, vec!["3".into()], None, t(5)).await.unwrap(), 0, "deleted once");
    let changes = store.list_records(&issues, &all(Some(cursor))).await.unwrap();
    assert_eq!(changes.iter().map(|r| r.external_id.as_str()).collect::<Vec<_>>(), ["1", "4", "3"]);
    assert_eq!((changes[0].first_seen_at, changes[0].updated_at), (t(1), t(3)));
    assert_eq!(changes[2].deleted_at, Some(t(4)));
    let live = RecordFilter { include_deleted: false, ..all(Some(cursor)) };
    assert_eq!(store.list_records(&issues, &live).await.unwrap().len(), 2, "tombstones only when asked for");
    let recent = RecordFilter { modified_after: Some(t(3)), ..all(None) };
    assert_eq!(store.list_records(&issues, &recent).await.unwrap().len(), 1);

    // A deleted record found again is back, as an update.
    let counts = store.write_records(&issues, vec![record("3", "c")], None, None, t(6)).await.unwrap();
    assert_eq!(counts, RecordCounts { updated: 1, ..RecordCounts::default() });
    let back = store.list_records(&issues, &all(None)).await.unwrap().pop().unwrap();
    assert_eq!((back.external_id.as_str(), back.deleted_at), ("3", None));

    // Streams are apart: another model, another connection, another tenant see nothing.
    let other_model = RecordStream { model: "pull".into(), ..issues.clone() };
    let other_tenant = stream(&*store, "issue").await;
    assert!(store.list_records(&other_model, &all(None)).await.unwrap().is_empty());
    assert!(store.list_records(&other_tenant, &all(None)).await.unwrap().is_empty());
}

/// Four writers edit 40 records over and over while a reader follows the cursor. Every
/// change the reader sees comes after the previous one, none twice, and what it saw last of
/// each record is what is stored at the end: nothing was skipped.
async fn a_cursor_never_skips_or_repeats_a_change_while_writers_write(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let issues = stream(&*store, "issue").await;
    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (store, issues) = (store.clone(), issues.clone());
            tokio::spawn(async move {
                for round in 0..25 {
                    let batch = (0..10)
                        .map(|i| record(&format!("{}", (writer * 7 + round + i) % 40), &format!("w{writer}r{round}")))
                        .collect();
                    store.write_records(&issues, batch, None, None, t(round)).await.unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let (store, issues, writing) = (store.clone(), issues.clone(), writing.clone());
        tokio::spawn(async move {
            let (mut cursor, mut seen_last) = (0_i64, HashMap::new());
            loop {
                let done = !writing.load(Ordering::SeqCst);
                let page = store.list_records(&issues, &RecordFilter { limit: 7, ..all(Some(cursor)) }).await.unwrap();
                for change in &page {
                    assert!(change.change_seq > cursor, "changes come in order, each once");
                    cursor = change.change_seq;
                    seen_last.insert(change.external_id.clone(), change.hash.clone());
                }
                if done && page.is_empty() {
                    return seen_last;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let seen_last = reader.await.unwrap();
    let stored: HashMap<String, String> =
        store.list_records(&issues, &all(None)).await.unwrap().into_iter().map(|r| (r.external_id, r.hash)).collect();
    assert_eq!(stored.len(), 40);
    assert_eq!(seen_last, stored, "the reader saw every record's latest change");
}

async fn a_batch_too_large_is_refused_and_writes_nothing(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let issues = stream(&*store, "issue").await;
    let batch = (0..=records::MAX_RECORD_BATCH).map(|i| record(&i.to_string(), "x")).collect();
    assert!(matches!(store.write_records(&issues, batch, None, None, t(1)).await, Err(StoreError::Invalid(_))));
    assert!(store.list_records(&issues, &all(None)).await.unwrap().is_empty());
}

/// A full refresh marks every record it fetched as seen, changed or not; what it did not see
/// is what the provider deleted.
async fn a_full_refresh_finds_what_it_did_not_see(backend: Backend) {
    let (_db, store) = TestDb::store_for(backend).await;
    let issues = stream(&*store, "issue").await;
    let first: Vec<_> = (1..=5).map(|i| record(&i.to_string(), "a")).collect();
    store.write_records(&issues, first, None, None, t(1)).await.unwrap();
    let (refresh, other_run) = (Id::new(IdKind::SyncRun), Id::new(IdKind::SyncRun));
    // Two pages: nothing changed on the first, one record on the second; 2 and 4 are gone.
    let counts = store
        .write_records(&issues, vec![record("1", "a"), record("3", "a")], None, Some(&refresh), t(2))
        .await
        .unwrap();
    assert_eq!(counts, RecordCounts { unchanged: 2, ..RecordCounts::default() });
    store.write_records(&issues, vec![record("5", "b")], Some(&refresh), Some(&refresh), t(2)).await.unwrap();
    store.write_records(&issues, vec![record("2", "a")], None, Some(&other_run), t(2)).await.unwrap();
    let other_model = RecordStream { model: "pull".into(), ..issues.clone() };
    store.write_records(&other_model, vec![record("4", "a")], None, Some(&refresh), t(2)).await.unwrap();

    let unseen = store.unseen_records(&issues, &refresh, 100).await.unwrap();
    assert_eq!(unseen, ["2", "4"], "seen by another run or in another model does not count");
    assert_eq!(store.unseen_records(&issues, &refresh, 1).await.unwrap(), ["2"], "bounded");
    assert_eq!(store.delete_records(&issues, unseen, Some(&refresh), t(3)).await.unwrap(), 2);
    assert!(store.unseen_records(&issues, &refresh, 100).await.unwrap().is_empty(), "deleted records are not live");

    store.forget_seen(&issues.tenant_id, &refresh).await.unwrap();
    assert_eq!(store.unseen_records(&issues, &refresh, 100).await.unwrap(), ["1", "3", "5"], "forgotten");
}
