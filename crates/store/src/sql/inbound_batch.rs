//! Received webhooks written in batches: `INSERT … ON CONFLICT` statements whose texts never
//! change, so each is prepared once (PostgreSQL reads a whole batch from one array per column;
//! SQLite takes up to 64 rows of plain parameters). Duplicates within a batch are folded
//! before the statement (PostgreSQL refuses to update one row twice in a statement); a
//! webhook is new when the row stored under its key is the one it inserted.

use std::collections::HashMap;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use switchboard_core::{Id, to_micros};

use crate::{InboundStatus, NewInbound, Result, StoreError, Stored, Verification};

/// The webhooks to insert (one per dedupe key, each with the copies it folds), and for
/// every input the index of the row that carries it.
struct Folded {
    rows: Vec<NewInbound>,
    /// Later copies of each row within the batch.
    copies: Vec<i32>,
    carried_by: Vec<usize>,
}

type Key<'a> = (&'a str, &'a str, &'a str);

fn key(inbound: &NewInbound) -> Key<'_> {
    (inbound.tenant_id.as_str(), inbound.connection_id.as_str(), inbound.dedupe_key.as_str())
}

/// Folds copies into one row each, rows in key order: concurrent batches (PostgreSQL writes
/// several at once) then take their keys' locks in the same order and cannot deadlock on
/// copies of one another's webhooks.
fn fold(batch: Vec<NewInbound>) -> Folded {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    // Stable: of a key's copies, the first to arrive stays first.
    order.sort_by(|&a, &b| key(&batch[a]).cmp(&key(&batch[b])));
    let mut copies: Vec<i32> = Vec::with_capacity(batch.len());
    let mut carried_by = vec![0; batch.len()];
    let mut first = vec![false; batch.len()];
    {
        let mut previous: Option<Key<'_>> = None;
        for &input in &order {
            let this = key(&batch[input]);
            if previous == Some(this) {
                *copies.last_mut().expect("a row before its copy") += 1;
            } else {
                copies.push(0);
                first[input] = true;
                previous = Some(this);
            }
            carried_by[input] = copies.len() - 1;
        }
    }
    let mut inputs: Vec<Option<NewInbound>> = batch.into_iter().map(Some).collect();
    let rows = order.iter().filter(|&&input| first[input]).filter_map(|&input| inputs[input].take()).collect();
    Folded { rows, copies, carried_by }
}

/// Each input's outcome from the id stored under each row's key (`stored[row]`): the first
/// input carried by a row it inserted is new, every other input a duplicate.
fn outcomes(folded: &Folded, stored: &[Id]) -> Vec<Stored> {
    let mut first_seen = vec![false; folded.rows.len()];
    folded
        .carried_by
        .iter()
        .map(|&row| {
            let id = stored[row].clone();
            let new = id == folded.rows[row].id && !std::mem::replace(&mut first_seen[row], true);
            if new { Stored::New(id) } else { Stored::Duplicate(id) }
        })
        .collect()
}

/// For each returned row (`id, tenant_id, connection_id, dedupe_key`), the batch row with its
/// key and the id stored under it.
fn ids_by_row<R: sqlx::Row>(folded: &Folded, returned: &[R]) -> Result<Vec<(usize, Id)>>
where
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database> + sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let row_of: HashMap<Key<'_>, usize> = folded.rows.iter().enumerate().map(|(row, i)| (key(i), row)).collect();
    let mut ids = Vec::with_capacity(returned.len());
    for returned in returned {
        let returned_key: Key<'_> =
            (returned.try_get("tenant_id")?, returned.try_get("connection_id")?, returned.try_get("dedupe_key")?);
        if let Some(&row) = row_of.get(&returned_key) {
            ids.push((row, Id::from_trusted(returned.try_get::<String, _>("id")?)));
        }
    }
    Ok(ids)
}

fn status(inbound: &NewInbound) -> &'static str {
    let status = if inbound.verification.is_accepted() { InboundStatus::Pending } else { InboundStatus::Rejected };
    status.as_str()
}

fn rejection(inbound: &NewInbound) -> Option<&str> {
    match &inbound.verification {
        Verification::Rejected(reason) => Some(reason),
        _ => None,
    }
}

const COLUMNS: &str = "INSERT INTO inbound_webhooks (id, tenant_id, connection_id, received_at, source_ip, headers,
     body, verified, rejection, provider_event_id, dedupe_key, status, duplicates) ";

/// SQLite takes rows as plain parameters, up to this many per statement: one statement text
/// per row count, each prepared once (the writer's statement cache holds them all), so a
/// batch is usually a single round trip to SQLite's thread. Reading rows out of one JSON
/// parameter cost more than the inserts: every column re-parsed its row's JSON.
pub(crate) const SQLITE_MAX_ROWS: usize = 64;
const SQLITE_PLACEHOLDERS: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Rows meeting an earlier copy are skipped here and counted on it afterwards: a statement
/// that returned a row per webhook would hand each one across from SQLite's thread on its own.
fn sqlite_insert(rows: usize) -> &'static str {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        (1..=SQLITE_MAX_ROWS)
            .map(|n| {
                format!(
                    "{COLUMNS} VALUES {} ON CONFLICT (tenant_id, connection_id, dedupe_key) DO NOTHING",
                    vec![SQLITE_PLACEHOLDERS; n].join(", ")
                )
            })
            .collect()
    });
    &texts[rows - 1]
}

/// Rows (`[tenant_id, connection_id, dedupe_key, id, copies]`) whose key holds another
/// webhook: each adds itself and its copies to that one's duplicates.
const SQLITE_COUNT_ON_EARLIER_COPIES: &str =
    "UPDATE inbound_webhooks SET duplicates = duplicates + (copy.value ->> 4) + 1
     FROM json_each(?) AS copy
     WHERE inbound_webhooks.tenant_id = copy.value ->> 0 AND inbound_webhooks.connection_id = copy.value ->> 1
         AND inbound_webhooks.dedupe_key = copy.value ->> 2 AND inbound_webhooks.id <> copy.value ->> 3
     RETURNING inbound_webhooks.id, inbound_webhooks.tenant_id, inbound_webhooks.connection_id,
         inbound_webhooks.dedupe_key";

pub(crate) async fn insert_sqlite(conn: &mut SqliteConnection, batch: Vec<NewInbound>) -> Result<Vec<Stored>> {
    let folded = fold(batch);
    let mut inserted = 0;
    let mut rest: &[NewInbound] = &folded.rows;
    let mut copies: &[i32] = &folded.copies;
    while !rest.is_empty() {
        let n = rest.len().min(SQLITE_MAX_ROWS);
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
        inserted += query.execute(&mut *conn).await?.rows_affected() as usize;
        rest = &rest[n..];
        copies = &copies[n..];
    }
    // Usually every row was new. Otherwise the rows that met an earlier copy count themselves
    // (and the copies they fold) on it, in one statement that returns only those.
    let mut stored: Vec<Id> = folded.rows.iter().map(|inbound| inbound.id.clone()).collect();
    if inserted < folded.rows.len() {
        let rows: Vec<(&str, &str, &str, &str, i32)> = folded
            .rows
            .iter()
            .zip(&folded.copies)
            .map(|(inbound, &copies)| {
                let (tenant_id, connection_id, dedupe_key) = key(inbound);
                (tenant_id, connection_id, dedupe_key, inbound.id.as_str(), copies)
            })
            .collect();
        let rows = serde_json::to_string(&rows).map_err(|e| StoreError::Commit(e.to_string()))?;
        let earlier = sqlx::query(SQLITE_COUNT_ON_EARLIER_COPIES).bind(rows).fetch_all(&mut *conn).await?;
        for (row, id) in ids_by_row(&folded, &earlier)? {
            stored[row] = id;
        }
    }
    Ok(outcomes(&folded, &stored))
}

/// One array per column; copies of a stored webhook count themselves on it.
fn postgres_insert() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{COLUMNS} SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                 $7::bytea[], $8::bool[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int4[])
             ON CONFLICT (tenant_id, connection_id, dedupe_key)
             DO UPDATE SET duplicates = inbound_webhooks.duplicates + excluded.duplicates + 1
             RETURNING id, tenant_id, connection_id, dedupe_key"
        )
    })
}

pub(crate) async fn insert_postgres(conn: &mut PgConnection, batch: Vec<NewInbound>) -> Result<Vec<Stored>> {
    let folded = fold(batch);
    // Columns borrow from the rows: nothing is copied before the driver encodes it.
    let rows = &folded.rows;
    let text = |f: fn(&NewInbound) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let optional = |f: fn(&NewInbound) -> Option<&str>| rows.iter().map(f).collect::<Vec<Option<&str>>>();
    let returned = sqlx::query(postgres_insert())
        .bind(text(|i| i.id.as_str()))
        .bind(text(|i| i.tenant_id.as_str()))
        .bind(text(|i| i.connection_id.as_str()))
        .bind(rows.iter().map(|i| to_micros(i.received_at)).collect::<Vec<i64>>())
        .bind(optional(|i| i.source_ip.as_deref()))
        .bind(text(|i| i.headers.as_str()))
        .bind(rows.iter().map(|i| i.body.as_slice()).collect::<Vec<&[u8]>>())
        .bind(rows.iter().map(|i| i.verification == Verification::Verified).collect::<Vec<bool>>())
        .bind(optional(rejection))
        .bind(optional(|i| i.provider_event_id.as_deref()))
        .bind(text(|i| i.dedupe_key.as_str()))
        .bind(text(status))
        .bind(&folded.copies)
        .fetch_all(&mut *conn)
        .await?;
    let mut stored: Vec<Option<Id>> = vec![None; folded.rows.len()];
    for (row, id) in ids_by_row(&folded, &returned)? {
        stored[row] = Some(id);
    }
    let stored = stored
        .into_iter()
        .collect::<Option<Vec<Id>>>()
        .ok_or_else(|| StoreError::Commit("a batched webhook came back without its row".into()))?;
    Ok(outcomes(&folded, &stored))
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
        let batch = vec![webhook("b"), webhook("a"), webhook("b"), webhook("b")];
        let first_b = batch[0].id.clone();
        let folded = fold(batch);
        let keys: Vec<&str> = folded.rows.iter().map(|row| row.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["a", "b"], "rows in key order");
        assert_eq!(folded.rows[1].id, first_b, "the first copy to arrive is the one inserted");
        assert_eq!((folded.copies.clone(), folded.carried_by.clone()), (vec![0, 2], vec![1, 0, 1, 1]));
        // `b` was inserted by this batch; `a` already existed under another id.
        let earlier_a = Id::new(IdKind::Inbound);
        assert_eq!(
            outcomes(&folded, &[earlier_a.clone(), first_b.clone()]),
            [
                Stored::New(first_b.clone()),
                Stored::Duplicate(earlier_a),
                Stored::Duplicate(first_b.clone()),
                Stored::Duplicate(first_b)
            ]
        );
    }
}
