//! Received webhooks written in batches: `INSERT … ON CONFLICT` statements whose texts never
//! change, so each is prepared once (PostgreSQL reads a whole batch from one array per column;
//! SQLite takes plain parameters in chunks of a few fixed sizes). Duplicates within a batch
//! are folded before the statement (PostgreSQL refuses to update one row twice in a
//! statement); a webhook is new when the row stored under its key is the one it inserted.

use std::collections::HashMap;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use switchboard_core::{Id, to_micros};

use crate::{NewInbound, Result, StoreError, Stored, Verification};

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

fn fold(batch: Vec<NewInbound>) -> Folded {
    let mut copies: Vec<i32> = Vec::with_capacity(batch.len());
    let mut carried_by = Vec::with_capacity(batch.len());
    let mut first = Vec::with_capacity(batch.len());
    {
        let mut row_of: HashMap<Key<'_>, usize> = HashMap::with_capacity(batch.len());
        for inbound in &batch {
            let row = *row_of.entry(key(inbound)).or_insert(copies.len());
            first.push(row == copies.len());
            if row == copies.len() {
                copies.push(0);
            } else {
                copies[row] += 1;
            }
            carried_by.push(row);
        }
    }
    let rows = batch.into_iter().zip(first).filter_map(|(inbound, first)| first.then_some(inbound)).collect();
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

fn status(inbound: &NewInbound) -> &'static str {
    if inbound.verification.is_accepted() { "pending" } else { "rejected" }
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

/// Rows meeting an earlier copy are skipped and looked up afterwards: a statement that
/// returned a row per webhook would hand each one across from SQLite's thread on its own.
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
    // Usually every row was new. Otherwise each row that met an earlier copy finds it and
    // counts itself (and the copies it folds) on it.
    let mut stored: Vec<Id> = folded.rows.iter().map(|inbound| inbound.id.clone()).collect();
    if inserted < folded.rows.len() {
        for ((inbound, copies), stored) in folded.rows.iter().zip(&folded.copies).zip(&mut stored) {
            let (tenant_id, connection_id, dedupe_key) = key(inbound);
            let id: String = sqlx::query_scalar(
                "SELECT id FROM inbound_webhooks WHERE tenant_id = ? AND connection_id = ? AND dedupe_key = ?",
            )
            .bind(tenant_id)
            .bind(connection_id)
            .bind(dedupe_key)
            .fetch_one(&mut *conn)
            .await?;
            if id != inbound.id.as_str() {
                sqlx::query("UPDATE inbound_webhooks SET duplicates = duplicates + ? WHERE id = ?")
                    .bind(copies + 1)
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
                *stored = Id::from_trusted(id);
            }
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
    let row_of: HashMap<Key<'_>, usize> = folded.rows.iter().enumerate().map(|(row, i)| (key(i), row)).collect();
    let mut stored: Vec<Option<Id>> = vec![None; folded.rows.len()];
    for returned in &returned {
        use sqlx::Row;
        let returned_key: Key<'_> =
            (returned.try_get("tenant_id")?, returned.try_get("connection_id")?, returned.try_get("dedupe_key")?);
        if let Some(&row) = row_of.get(&returned_key) {
            stored[row] = Some(Id::from_trusted(returned.try_get::<String, _>("id")?));
        }
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
        let batch = vec![webhook("a"), webhook("b"), webhook("a"), webhook("a")];
        let first_a = batch[0].id.clone();
        let folded = fold(batch);
        assert_eq!(
            (folded.rows.len(), folded.copies.clone(), folded.carried_by.clone()),
            (2, vec![2, 0], vec![0, 1, 0, 0])
        );
        // `a` was inserted by this batch; `b` already existed under another id.
        let earlier_b = Id::new(IdKind::Inbound);
        assert_eq!(
            outcomes(&folded, &[first_a.clone(), earlier_b.clone()]),
            [
                Stored::New(first_a.clone()),
                Stored::Duplicate(earlier_b),
                Stored::Duplicate(first_a.clone()),
                Stored::Duplicate(first_a)
            ]
        );
    }
}
