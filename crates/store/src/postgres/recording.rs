//! PostgreSQL's units of the hot path: publishing an event with its messages and jobs, and
//! recording a batch of delivery outcomes, with multi-row `VALUES` and typed parameters
//! (which PostgreSQL plans and runs faster than it parses JSON). SQLite's counterparts run on
//! its writer's thread (`sqlite::direct`); the statements' text is shared in [`crate::sql`].

use std::collections::HashMap;

use sqlx::postgres::PgConnection;
use sqlx::{Postgres, QueryBuilder, Row as _};
use switchboard_core::{Timestamp, to_micros};

use super::{PgStore, event_from, insert_jobs, push_ids};
use crate::model::{CreateEventOutcome, NewEvent};
use crate::queue::NewJob;
use crate::sql::EventUnit;
use crate::sql::recording::{
    ADVANCE_COLUMNS, ADVANCE_HEAD, ADVANCE_TAIL, ATTEMPT_COLUMNS, Advance, AttemptRow, Recording, announce_disabled,
};
use crate::webhooks::{DeliveryRecord, EventWithMessages, NewMessage, RecordedDeliveries};
use crate::{Result, StoreError};

/// Rows per statement: well under PostgreSQL's limit on bound parameters.
const VALUES_CHUNK: usize = 500;

impl PgStore {
    /// Publishes events with their messages and jobs, in one transaction.
    pub(crate) async fn insert_events(&self, events: Vec<EventUnit>) -> Result<Vec<CreateEventOutcome>> {
        self.write(move |c| {
            Box::pin(async move {
                let mut outcomes = Vec::with_capacity(events.len());
                for (event, messages, jobs) in events {
                    outcomes.push(insert_event(c, event, &messages, &jobs).await?);
                }
                Ok(outcomes)
            })
        })
        .await
    }

    /// Records a batch of delivery outcomes, with the events they emit, in one transaction
    /// on the workers' pool.
    pub(crate) async fn record_deliveries_unit(
        &self,
        records: Vec<DeliveryRecord>,
        events: Vec<EventWithMessages>,
        disable_failing_before: Timestamp,
    ) -> Result<RecordedDeliveries> {
        self.worker_write(move |c| {
            Box::pin(async move { record_deliveries_in_unit(c, &records, events, disable_failing_before).await })
        })
        .await
    }
}

/// Inserts an event with its messages and jobs, unless its idempotency key was used before:
/// then nothing is written and the earlier event (or the conflict) is returned.
async fn insert_event(
    c: &mut PgConnection,
    event: NewEvent,
    messages: &[NewMessage],
    jobs: &[NewJob],
) -> Result<CreateEventOutcome> {
    let done = sqlx::query(crate::sql::INSERT_EVENT)
        .bind(event.id.as_str())
        .bind(event.tenant_id.as_str())
        .bind(&event.event_type)
        .bind(&event.payload)
        .bind(event.idempotency.as_ref().map(|i| i.key.as_str()))
        .bind(event.idempotency.as_ref().map(|i| i.request_hash.as_str()))
        .bind(to_micros(event.created_at))
        .execute(&mut *c)
        .await
        .map_err(|e| StoreError::conflict_or(e, "an event with this id"))?;
    if done.rows_affected() == 0 {
        let Some(idempotency) = &event.idempotency else {
            return Err(StoreError::Conflict("an event with this id"));
        };
        let row = sqlx::query(crate::sql::SELECT_EVENT_BY_IDEMPOTENCY_KEY)
            .bind(event.tenant_id.as_str())
            .bind(&idempotency.key)
            .fetch_one(&mut *c)
            .await?;
        let earlier_hash: Option<String> = row.try_get("request_hash")?;
        return Ok(if earlier_hash.as_deref() == Some(idempotency.request_hash.as_str()) {
            CreateEventOutcome::Replayed(event_from(&row)?)
        } else {
            CreateEventOutcome::KeyReused
        });
    }
    for chunk in messages.chunks(VALUES_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(crate::sql::INSERT_MESSAGES_HEAD);
        q.push_values(chunk, |mut row, m| {
            row.push_bind(m.id.as_str())
                .push_bind(event.tenant_id.as_str())
                .push_bind(event.id.as_str())
                .push_bind(m.endpoint_id.as_str())
                .push_bind("pending")
                .push_bind(m.fifo)
                .push_bind(to_micros(m.next_attempt_at))
                .push_bind(m.lease_id.as_deref())
                .push_bind(to_micros(event.created_at))
                .push_bind(to_micros(event.created_at));
        });
        q.build().execute(&mut *c).await?;
    }
    insert_jobs(c, jobs).await?;
    Ok(CreateEventOutcome::Created(event.into()))
}

async fn record_deliveries_in_unit(
    c: &mut PgConnection,
    records: &[DeliveryRecord],
    events: Vec<EventWithMessages>,
    disable_failing_before: Timestamp,
) -> Result<RecordedDeliveries> {
    let counts = advance_messages(c, records).await?;
    let mut recording = Recording::of(records, &counts);
    insert_attempts(c, &recording.attempts).await?;
    let mut outcome = RecordedDeliveries { recorded: std::mem::take(&mut recording.recorded), disabled: Vec::new() };
    if let Some(now) = recording.now {
        // Failures first: an endpoint that also succeeded in this batch ends healthy.
        if !recording.failed.is_empty() {
            let mut q = QueryBuilder::<Postgres>::new("UPDATE endpoints SET failing_since = ");
            q.push_bind(to_micros(now)).push(" WHERE failing_since IS NULL AND id");
            push_ids(&mut q, recording.failed.iter().map(String::as_str));
            q.build().execute(&mut *c).await?;
        }
        if !recording.succeeded.is_empty() {
            let mut q = QueryBuilder::<Postgres>::new(
                "UPDATE endpoints SET failing_since = NULL WHERE failing_since IS NOT NULL AND id",
            );
            push_ids(&mut q, recording.succeeded.iter().map(String::as_str));
            q.build().execute(&mut *c).await?;
        }
        for (reason, ids, failing_before) in recording.to_disable(disable_failing_before) {
            if ids.is_empty() {
                continue;
            }
            let mut q = QueryBuilder::<Postgres>::new("UPDATE endpoints SET enabled = FALSE, disabled_reason = ");
            q.push_bind(reason.as_str()).push(", version = version + 1, updated_at = ").push_bind(to_micros(now));
            q.push(" WHERE enabled AND deleted_at IS NULL");
            if let Some(before) = failing_before {
                q.push(" AND failing_since IS NOT NULL AND failing_since <= ").push_bind(to_micros(before));
            }
            q.push(" AND id");
            push_ids(&mut q, ids.iter().map(String::as_str));
            q.push(" RETURNING tenant_id, id");
            for row in q.build().fetch_all(&mut *c).await? {
                let tenant_id = switchboard_core::Id::from_trusted(row.try_get::<String, _>("tenant_id")?);
                let endpoint_id = switchboard_core::Id::from_trusted(row.try_get::<String, _>("id")?);
                insert_jobs(&mut *c, &[announce_disabled(&tenant_id, &endpoint_id, reason, now)]).await?;
                outcome.disabled.push((tenant_id, endpoint_id, reason));
            }
        }
    }
    for emitted in events {
        insert_event(c, emitted.event, &emitted.messages, &[]).await?;
    }
    Ok(outcome)
}

/// Advances the messages of `records`; returns each recorded message's attempt count by id
/// (a message whose lease was lost is absent).
async fn advance_messages(c: &mut PgConnection, records: &[DeliveryRecord]) -> Result<HashMap<String, i32>> {
    let rows: Vec<Advance<'_>> = records.iter().map(Advance::of).collect();
    let mut counts = HashMap::with_capacity(records.len());
    for chunk in rows.chunks(VALUES_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(format!("{ADVANCE_HEAD}(VALUES "));
        for (index, r) in chunk.iter().enumerate() {
            q.push(if index == 0 { "(" } else { ", (" });
            // Every value is cast: PostgreSQL would otherwise type them as text.
            let mut values = q.separated(", ");
            values.push("CAST(").push_bind_unseparated(r.id).push_unseparated(" AS TEXT)");
            values.push("CAST(").push_bind_unseparated(r.lease).push_unseparated(" AS TEXT)");
            values.push("CAST(").push_bind_unseparated(r.status).push_unseparated(" AS TEXT)");
            values.push("CAST(").push_bind_unseparated(r.made_n).push_unseparated(" AS INTEGER)");
            values.push("CAST(").push_bind_unseparated(r.step).push_unseparated(" AS INTEGER)");
            values.push("CAST(").push_bind_unseparated(r.next_at).push_unseparated(" AS BIGINT)");
            values.push("CAST(").push_bind_unseparated(r.made).push_unseparated(" AS BOOLEAN)");
            values.push("CAST(").push_bind_unseparated(r.code).push_unseparated(" AS INTEGER)");
            values.push("CAST(").push_bind_unseparated(r.error).push_unseparated(" AS TEXT)");
            values.push("CAST(").push_bind_unseparated(r.at).push_unseparated(" AS BIGINT)");
            q.push(")");
        }
        q.push(format!(") AS v ({}){ADVANCE_TAIL}", ADVANCE_COLUMNS.join(", ")));
        for row in q.build().fetch_all(&mut *c).await? {
            counts.insert(row.try_get::<String, _>("id")?, row.try_get::<i32, _>("attempts")?);
        }
    }
    Ok(counts)
}

async fn insert_attempts(c: &mut PgConnection, rows: &[AttemptRow<'_>]) -> Result<()> {
    for chunk in rows.chunks(VALUES_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) "));
        q.push_values(chunk, |mut row, a| {
            row.push_bind(a.id)
                .push_bind(a.tenant_id)
                .push_bind(a.message_id)
                .push_bind(a.endpoint_id)
                .push_bind(a.attempt_number)
                .push_bind(a.succeeded)
                .push_bind(a.response_status)
                .push_bind(a.response_headers)
                .push_bind(a.response_body)
                .push_bind(a.error_kind)
                .push_bind(a.error)
                .push_bind(a.duration_us)
                .push_bind(a.created_at);
        });
        q.build().execute(&mut *c).await?;
    }
    Ok(())
}
