//! Received webhooks written in batches: `INSERT … ON CONFLICT` statements whose texts never
//! change, so each is prepared once (PostgreSQL reads a whole batch from one array per column;
//! SQLite takes plain parameters in chunks of a few fixed sizes). Duplicates within a batch are folded before the
//! statement (PostgreSQL refuses to update one row twice in a statement); a webhook is new
//! when the row returned for its key is the one it inserted.

use std::collections::HashMap;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use switchboard_core::{Id, to_micros};

use crate::{NewInbound, Result, Stored, Verification};

/// The webhooks to insert (one per dedupe key, each with the duplicates it folds), and for
/// every input the index of the row that carries it.
struct Folded {
    rows: Vec<NewInbound>,
    /// Later copies of each row within the batch.
    copies: Vec<i32>,
    carried_by: Vec<usize>,
}

fn fold(batch: Vec<NewInbound>) -> Folded {
    let mut rows: Vec<NewInbound> = Vec::with_capacity(batch.len());
    let mut copies = Vec::with_capacity(batch.len());
    let mut carried_by = Vec::with_capacity(batch.len());
    let mut by_key: HashMap<(String, String, String), usize> = HashMap::with_capacity(batch.len());
    for inbound in batch {
        let key = (inbound.tenant_id.to_string(), inbound.connection_id.to_string(), inbound.dedupe_key.clone());
        match by_key.get(&key) {
            Some(&row) => {
                copies[row] += 1;
                carried_by.push(row);
            }
            None => {
                by_key.insert(key, rows.len());
                carried_by.push(rows.len());
                rows.push(inbound);
                copies.push(0);
            }
        }
    }
    Folded { rows, copies, carried_by }
}

/// Each input's outcome from the id stored under each row's key: the first input carried by
/// a row it inserted is new, every other input a duplicate.
fn outcomes(folded: &Folded, stored_ids: &HashMap<(String, String, String), Id>) -> Result<Vec<Stored>> {
    let mut first_seen = vec![false; folded.rows.len()];
    folded
        .carried_by
        .iter()
        .map(|&row| {
            let inbound = &folded.rows[row];
            let key = (inbound.tenant_id.to_string(), inbound.connection_id.to_string(), inbound.dedupe_key.clone());
            let stored = stored_ids
                .get(&key)
                .ok_or_else(|| crate::StoreError::Commit("a batched webhook came back without its row".into()))?;
            let new = *stored == inbound.id && !std::mem::replace(&mut first_seen[row], true);
            Ok(if new { Stored::New(stored.clone()) } else { Stored::Duplicate(stored.clone()) })
        })
        .collect()
}

fn status(inbound: &NewInbound) -> &'static str {
    if inbound.verification.is_accepted() { "pending" } else { "rejected" }
}

fn rejection(inbound: &NewInbound) -> Option<&str> {
    match &inbound.verification {
        Verification::Rejected(reason) => Some(reason),
        _ => None,
    }
}

const CONFLICT: &str = "ON CONFLICT (tenant_id, connection_id, dedupe_key)
     DO UPDATE SET duplicates = inbound_webhooks.duplicates + excluded.duplicates + 1
     RETURNING id, tenant_id, connection_id, dedupe_key";

const COLUMNS: &str = "INSERT INTO inbound_webhooks (id, tenant_id, connection_id, received_at, source_ip, headers,
     body, verified, rejection, provider_event_id, dedupe_key, status, duplicates) ";

fn returned_ids<R: sqlx::Row>(rows: &[R]) -> Result<HashMap<(String, String, String), Id>>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|row| {
            let key = (row.try_get("tenant_id")?, row.try_get("connection_id")?, row.try_get("dedupe_key")?);
            Ok((key, Id::from_trusted(row.try_get::<String, _>("id")?)))
        })
        .collect()
}

/// SQLite takes rows as plain parameters, in chunks of fixed sizes so that only these few
/// statement texts exist and each is prepared once (reading rows out of one JSON parameter
/// cost more than the inserts: every column re-parsed its row's JSON).
const SQLITE_CHUNKS: [usize; 3] = [64, 8, 1];
const SQLITE_PLACEHOLDERS: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

fn sqlite_insert(rows: usize) -> &'static str {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        SQLITE_CHUNKS
            .iter()
            .map(|&n| format!("{COLUMNS} VALUES {} {CONFLICT}", vec![SQLITE_PLACEHOLDERS; n].join(", ")))
            .collect()
    });
    &texts[SQLITE_CHUNKS.iter().position(|&n| n == rows).expect("a chunk size")]
}

pub(crate) async fn insert_sqlite(conn: &mut SqliteConnection, batch: Vec<NewInbound>) -> Result<Vec<Stored>> {
    let folded = fold(batch);
    let mut returned = Vec::with_capacity(folded.rows.len());
    let mut rest: &[NewInbound] = &folded.rows;
    let mut copies: &[i32] = &folded.copies;
    while !rest.is_empty() {
        let n = *SQLITE_CHUNKS.iter().find(|&&n| n <= rest.len()).expect("chunks end with 1");
        let mut query = sqlx::query(sqlite_insert(n));
        for (inbound, copies) in rest[..n].iter().zip(&copies[..n]) {
            query = query
                .bind(inbound.id.as_str())
                .bind(inbound.tenant_id.as_str())
                .bind(inbound.connection_id.as_str())
                .bind(to_micros(inbound.received_at))
                .bind(inbound.source_ip.as_deref())
                .bind(inbound.headers.as_str())
                .bind(inbound.body.as_slice())
                .bind(inbound.verification == Verification::Verified)
                .bind(rejection(inbound))
                .bind(inbound.provider_event_id.as_deref())
                .bind(inbound.dedupe_key.as_str())
                .bind(status(inbound))
                .bind(*copies);
        }
        returned.extend(query.fetch_all(&mut *conn).await?);
        rest = &rest[n..];
        copies = &copies[n..];
    }
    outcomes(&folded, &returned_ids(&returned)?)
}

pub(crate) async fn insert_postgres(conn: &mut PgConnection, batch: Vec<NewInbound>) -> Result<Vec<Stored>> {
    let folded = fold(batch);
    let column = |f: &dyn Fn(&NewInbound) -> String| folded.rows.iter().map(f).collect::<Vec<String>>();
    let optional = |f: &dyn Fn(&NewInbound) -> Option<String>| folded.rows.iter().map(f).collect::<Vec<_>>();
    let sql = format!(
        "{COLUMNS} SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
             $7::bytea[], $8::bool[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int4[]) {CONFLICT}"
    );
    let returned = sqlx::query(&sql)
        .bind(column(&|i| i.id.to_string()))
        .bind(column(&|i| i.tenant_id.to_string()))
        .bind(column(&|i| i.connection_id.to_string()))
        .bind(folded.rows.iter().map(|i| to_micros(i.received_at)).collect::<Vec<i64>>())
        .bind(optional(&|i| i.source_ip.clone()))
        .bind(column(&|i| i.headers.clone()))
        .bind(folded.rows.iter().map(|i| i.body.clone()).collect::<Vec<Vec<u8>>>())
        .bind(folded.rows.iter().map(|i| i.verification == Verification::Verified).collect::<Vec<bool>>())
        .bind(optional(&|i| rejection(i).map(str::to_string)))
        .bind(optional(&|i| i.provider_event_id.clone()))
        .bind(column(&|i| i.dedupe_key.clone()))
        .bind(column(&|i| status(i).to_string()))
        .bind(&folded.copies)
        .fetch_all(&mut *conn)
        .await?;
    outcomes(&folded, &returned_ids(&returned)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{IdKind, from_micros};

    fn webhook(key: &str) -> NewInbound {
        NewInbound {
            id: Id::new(IdKind::Inbound),
            tenant_id: Id::from_trusted("ten_1".into()),
            connection_id: Id::from_trusted("conn_1".into()),
            received_at: from_micros(0),
            source_ip: None,
            headers: "{}".into(),
            body: Vec::new(),
            verification: Verification::Verified,
            provider_event_id: None,
            dedupe_key: key.into(),
        }
    }

    #[test]
    fn copies_within_a_batch_fold_into_one_row_and_only_the_first_is_new() {
        let batch = vec![webhook("a"), webhook("b"), webhook("a"), webhook("a")];
        let first_a = batch[0].id.clone();
        let folded = fold(batch);
        assert_eq!(
            (folded.rows.len(), folded.copies.clone(), folded.carried_by.clone()),
            (2, vec![2, 0], vec![0, 1, 0, 0])
        );
        let key = |k: &str| ("ten_1".to_string(), "conn_1".to_string(), k.to_string());
        // `a` was inserted by this batch; `b` already existed under another id.
        let earlier_b = Id::new(IdKind::Inbound);
        let stored = HashMap::from([(key("a"), first_a.clone()), (key("b"), earlier_b.clone())]);
        assert_eq!(
            outcomes(&folded, &stored).unwrap(),
            [
                Stored::New(first_a.clone()),
                Stored::Duplicate(earlier_b),
                Stored::Duplicate(first_a.clone()),
                Stored::Duplicate(first_a)
            ]
        );
    }
}
