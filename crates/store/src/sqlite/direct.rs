//! The writes the SQLite writer runs on its own thread, straight on the connection: no
//! statement crosses to the driver's thread and back. These are the units of the hot path
//! (publishing an event with its messages and jobs); their SQL text is the one PostgreSQL
//! runs, from [`crate::sql`].

use rusqlite::{Connection, params};
use switchboard_core::{Id, from_micros, to_micros};

use crate::model::{CreateEventOutcome, Event, NewEvent};
use crate::queue::NewJob;
use crate::sql::{INSERT_EVENT, INSERT_JOB, INSERT_MESSAGE, SELECT_EVENT_BY_IDEMPOTENCY_KEY};
use crate::webhooks::NewMessage;
use crate::{Result, StoreError};

/// Inserts an event with its messages and jobs, unless its idempotency key was used before:
/// then nothing is written and the earlier event (or the conflict) is returned. The same
/// unit as the shared `insert_event`, written for the writer's own thread.
pub(super) fn insert_event(
    db: &Connection,
    event: NewEvent,
    messages: &[NewMessage],
    jobs: &[NewJob],
) -> Result<CreateEventOutcome> {
    let key = event.idempotency.as_ref().map(|i| i.key.as_str());
    let request_hash = event.idempotency.as_ref().map(|i| i.request_hash.as_str());
    let inserted = db
        .prepare_cached(INSERT_EVENT)?
        .execute(params![
            event.id.as_str(),
            event.tenant_id.as_str(),
            event.event_type,
            event.payload,
            key,
            request_hash,
            to_micros(event.created_at),
        ])
        .map_err(|e| conflict_or(e, "an event with this id"))?;
    if inserted == 0 {
        let (Some(key), Some(request_hash)) = (key, request_hash) else {
            return Err(StoreError::Conflict("an event with this id"));
        };
        return Ok(db.prepare_cached(SELECT_EVENT_BY_IDEMPOTENCY_KEY)?.query_row(
            params![event.tenant_id.as_str(), key],
            |row| {
                if row.get::<_, Option<String>>("request_hash")?.as_deref() != Some(request_hash) {
                    return Ok(CreateEventOutcome::KeyReused);
                }
                Ok(CreateEventOutcome::Replayed(Event {
                    id: Id::from_trusted(row.get::<_, String>("id")?),
                    tenant_id: Id::from_trusted(row.get::<_, String>("tenant_id")?),
                    event_type: row.get("event_type")?,
                    payload: row.get("payload")?,
                    idempotency_key: row.get("idempotency_key")?,
                    created_at: from_micros(row.get("created_at")?),
                }))
            },
        )?);
    }
    let mut insert_message = db.prepare_cached(INSERT_MESSAGE)?;
    let created_at = to_micros(event.created_at);
    for message in messages {
        insert_message.execute(params![
            message.id.as_str(),
            event.tenant_id.as_str(),
            event.id.as_str(),
            message.endpoint_id.as_str(),
            message.fifo,
            to_micros(message.next_attempt_at),
            message.lease_id.as_deref(),
            created_at,
        ])?;
    }
    let mut insert_job = db.prepare_cached(INSERT_JOB)?;
    for job in jobs {
        insert_job.execute(params![
            job.id.as_str(),
            job.tenant_id.as_str(),
            job.queue,
            job.payload,
            to_micros(job.run_at),
        ])?;
    }
    Ok(CreateEventOutcome::Created(Event {
        id: event.id,
        tenant_id: event.tenant_id,
        event_type: event.event_type,
        payload: event.payload,
        idempotency_key: key.map(str::to_owned),
        created_at: event.created_at,
    }))
}

/// A broken uniqueness rule as a conflict naming `what`; any other failure as it is.
fn conflict_or(e: rusqlite::Error, what: &'static str) -> StoreError {
    let unique = e.sqlite_error().is_some_and(|failure| {
        matches!(
            failure.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    });
    if unique { StoreError::Conflict(what) } else { StoreError::from(e) }
}
