//! The writes the SQLite writer runs on its own thread, straight on the connection: no
//! statement crosses to the driver's thread and back. These are the units of the hot path:
//! publishing an event with its messages and jobs, and recording a batch of delivery
//! outcomes. Their SQL is PostgreSQL's (from [`crate::sql`]) where the dialects agree; a
//! batch of rows travels as one JSON parameter unpacked by `json_each`, so each statement's
//! text never changes and is prepared once.

use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::{Connection, params};
use switchboard_core::{Id, Timestamp, from_micros, to_micros};

use crate::model::{CreateEventOutcome, Event, NewEvent};
use crate::queue::NewJob;
use crate::sql::recording::{
    ADVANCE_COLUMNS, ADVANCE_HEAD, ADVANCE_TAIL, ATTEMPT_COLUMNS, Advance, Recording, announce_disabled, json_fields,
    to_json_text,
};
use crate::sql::{INSERT_EVENT, INSERT_JOB, INSERT_MESSAGE, SELECT_EVENT_BY_IDEMPOTENCY_KEY};
use crate::webhooks::{DeliveryRecord, EventWithMessages, NewMessage, RecordedDeliveries};
use crate::{Result, StoreError};

/// Inserts an event with its messages and jobs, unless its idempotency key was used before:
/// then nothing is written and the earlier event (or the conflict) is returned. PostgreSQL's
/// counterpart is `postgres::recording::insert_event`.
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
    insert_jobs(db, jobs)?;
    Ok(CreateEventOutcome::Created(event.into()))
}

fn insert_jobs(db: &Connection, jobs: &[NewJob]) -> Result<()> {
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
    Ok(())
}

/// Advances the batch's leased messages; answers each advanced message's id and attempts.
static ADVANCE: LazyLock<String> = LazyLock::new(|| {
    format!("{ADVANCE_HEAD}(SELECT {} FROM json_each($1)) AS v{ADVANCE_TAIL}", json_fields(&ADVANCE_COLUMNS))
});

static INSERT_ATTEMPTS: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = ATTEMPT_COLUMNS.split(',').map(str::trim).collect();
    format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) SELECT {} FROM json_each($1)", json_fields(&columns))
});

const MARK_FAILING: &str = "UPDATE endpoints SET failing_since = $1
     WHERE failing_since IS NULL AND id IN (SELECT value FROM json_each($2))";

const MARK_HEALTHY: &str = "UPDATE endpoints SET failing_since = NULL
     WHERE failing_since IS NOT NULL AND id IN (SELECT value FROM json_each($1))";

/// Disables endpoints for a reason at a time; with a third parameter, only those failing
/// since then or earlier.
const DISABLE: &str =
    "UPDATE endpoints SET enabled = FALSE, disabled_reason = $1, version = version + 1, updated_at = $2
     WHERE enabled AND deleted_at IS NULL
       AND ($3 IS NULL OR (failing_since IS NOT NULL AND failing_since <= $3))
       AND id IN (SELECT value FROM json_each($4))
     RETURNING tenant_id, id";

/// Records a batch of delivery outcomes, with the events they emit: messages move on,
/// attempts are kept, endpoints turn failing or healthy, and those gone or failing for too
/// long are disabled (and announced through the outbox, in this unit).
pub(super) fn record_deliveries(
    db: &Connection,
    records: &[DeliveryRecord],
    events: Vec<EventWithMessages>,
    disable_failing_before: Timestamp,
) -> Result<RecordedDeliveries> {
    let advances: Vec<Advance<'_>> = records.iter().map(Advance::of).collect();
    let mut counts = HashMap::with_capacity(records.len());
    let mut advance = db.prepare_cached(&ADVANCE)?;
    let mut advanced = advance.query(params![to_json_text(&advances)])?;
    while let Some(row) = advanced.next()? {
        counts.insert(row.get::<_, String>("id")?, row.get::<_, i32>("attempts")?);
    }
    let mut recording = Recording::of(records, &counts);
    if !recording.attempts.is_empty() {
        db.prepare_cached(&INSERT_ATTEMPTS)?.execute(params![to_json_text(&recording.attempts)])?;
    }
    let mut outcome = RecordedDeliveries { recorded: std::mem::take(&mut recording.recorded), disabled: Vec::new() };
    if let Some(now) = recording.now {
        // Failures first: an endpoint that also succeeded in this batch ends healthy.
        if !recording.failed.is_empty() {
            db.prepare_cached(MARK_FAILING)?.execute(params![to_micros(now), to_json_text(&recording.failed)])?;
        }
        if !recording.succeeded.is_empty() {
            db.prepare_cached(MARK_HEALTHY)?.execute(params![to_json_text(&recording.succeeded)])?;
        }
        for (reason, ids, failing_before) in recording.to_disable(disable_failing_before) {
            if ids.is_empty() {
                continue;
            }
            let mut disable = db.prepare_cached(DISABLE)?;
            let mut disabled = disable.query(params![
                reason.as_str(),
                to_micros(now),
                failing_before.map(to_micros),
                to_json_text(ids)
            ])?;
            while let Some(row) = disabled.next()? {
                let tenant_id = Id::from_trusted(row.get::<_, String>("tenant_id")?);
                let endpoint_id = Id::from_trusted(row.get::<_, String>("id")?);
                insert_jobs(db, &[announce_disabled(&tenant_id, &endpoint_id, reason, now)])?;
                outcome.disabled.push((tenant_id, endpoint_id, reason));
            }
        }
    }
    for emitted in events {
        insert_event(db, emitted.event, &emitted.messages, &[])?;
    }
    Ok(outcome)
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
