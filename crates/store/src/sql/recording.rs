//! Recording delivery outcomes, the part both backends share: what each outcome does to its
//! message, the attempt rows, and which endpoints turned healthy, failing or gone. Each
//! backend writes a batch in its own way (PostgreSQL: multi-row `VALUES` with typed
//! parameters, see `postgres::recording`; SQLite: one JSON parameter unpacked by `json_each`
//! on its writer's thread, see `sqlite::direct`).

use std::collections::HashMap;

use switchboard_core::{Id, Timestamp, to_micros};

use crate::outbox::OperationalEvent;
use crate::queue::NewJob;
use crate::webhooks::{DeliveryRecord, DisabledReason, EndpointHealth, NewAttempt, NextStep};

/// What recording does to one message. The field names are the columns of the batch (`v`)
/// in `ADVANCE_HEAD`/`ADVANCE_TAIL`.
#[derive(serde::Serialize)]
pub(crate) struct Advance<'a> {
    pub(crate) id: &'a str,
    pub(crate) lease: &'a str,
    pub(crate) status: &'static str,
    /// Attempts made now: 0 or 1.
    pub(crate) made_n: i32,
    /// Steps forward in the retry schedule: 0 or 1.
    pub(crate) step: i32,
    pub(crate) next_at: Option<i64>,
    pub(crate) made: bool,
    pub(crate) code: Option<i32>,
    pub(crate) error: Option<&'a str>,
    pub(crate) at: i64,
}

pub(crate) const ADVANCE_COLUMNS: [&str; 10] =
    ["id", "lease", "status", "made_n", "step", "next_at", "made", "code", "error", "at"];

impl<'a> Advance<'a> {
    pub(crate) fn of(record: &'a DeliveryRecord) -> Self {
        let (status, next_at, step) = match &record.next {
            NextStep::Succeeded => ("succeeded", None, 0),
            NextStep::RetryAt { at, advance } => ("pending", Some(to_micros(*at)), i32::from(*advance)),
            NextStep::Failed => ("failed", None, 0),
        };
        let made = record.attempt.is_some();
        Self {
            id: record.message_id.as_str(),
            lease: record.lease_id.as_str(),
            status,
            made_n: i32::from(made),
            step,
            next_at,
            made,
            code: record.attempt.as_ref().and_then(|a| a.response_status).map(i32::from),
            error: record.error.as_deref(),
            at: to_micros(record.at),
        }
    }
}

/// Moves leased messages on, all in one statement: `ADVANCE_HEAD`, the batch as `v`,
/// `ADVANCE_TAIL`. A row whose lease is no longer the message's matches nothing.
pub(crate) const ADVANCE_HEAD: &str = "UPDATE messages SET
        status = v.status, attempts = messages.attempts + v.made_n,
        retry_index = messages.retry_index + v.step, next_attempt_at = v.next_at, lease_id = NULL,
        last_status_code = CASE WHEN v.made THEN v.code ELSE messages.last_status_code END,
        last_error = CASE WHEN v.made OR v.error IS NOT NULL THEN v.error ELSE messages.last_error END,
        updated_at = v.at
     FROM ";
pub(crate) const ADVANCE_TAIL: &str = " WHERE messages.id = v.id AND messages.lease_id = v.lease
     RETURNING messages.id AS id, messages.attempts AS attempts";

pub(crate) const ATTEMPT_COLUMNS: &str =
    "id, tenant_id, message_id, endpoint_id, attempt_number, succeeded, response_status,
    response_headers, response_body, error_kind, error, duration_us, created_at";

/// One attempt as stored; the field names are the columns of `attempts`.
#[derive(serde::Serialize)]
pub(crate) struct AttemptRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) tenant_id: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) endpoint_id: &'a str,
    pub(crate) attempt_number: i32,
    pub(crate) succeeded: bool,
    pub(crate) response_status: Option<i32>,
    pub(crate) response_headers: Option<&'a str>,
    pub(crate) response_body: Option<&'a str>,
    pub(crate) error_kind: Option<&'a str>,
    pub(crate) error: Option<&'a str>,
    pub(crate) duration_us: i64,
    pub(crate) created_at: i64,
}

impl<'a> AttemptRow<'a> {
    fn of(record: &'a DeliveryRecord, attempt: &'a NewAttempt, number: i32) -> Self {
        Self {
            id: attempt.id.as_str(),
            tenant_id: record.tenant_id.as_str(),
            message_id: record.message_id.as_str(),
            endpoint_id: record.endpoint_id.as_str(),
            attempt_number: number,
            succeeded: record.next == NextStep::Succeeded,
            response_status: attempt.response_status.map(i32::from),
            response_headers: attempt.response_headers.as_deref(),
            response_body: attempt.response_body.as_deref(),
            error_kind: attempt.error_kind.map(crate::AttemptErrorKind::as_str),
            error: attempt.error.as_deref(),
            duration_us: attempt.duration_us,
            created_at: to_micros(attempt.created_at),
        }
    }
}

/// What a batch of outcomes writes once its messages have advanced.
pub(crate) struct Recording<'a> {
    /// Per record, whether its message was still leased to it (and so recorded).
    pub(crate) recorded: Vec<bool>,
    pub(crate) attempts: Vec<AttemptRow<'a>>,
    /// Endpoints whose delivery failed, succeeded, or found them gone (distinct, sorted).
    pub(crate) failed: Vec<String>,
    pub(crate) succeeded: Vec<String>,
    pub(crate) gone: Vec<String>,
    /// The latest outcome's time, when there was any.
    pub(crate) now: Option<Timestamp>,
}

impl<'a> Recording<'a> {
    /// `counts`: each advanced message's attempt count by id; a message whose lease was lost
    /// is absent, and its record writes nothing.
    pub(crate) fn of(records: &'a [DeliveryRecord], counts: &HashMap<String, i32>) -> Self {
        let mut recording = Recording {
            recorded: Vec::with_capacity(records.len()),
            attempts: Vec::new(),
            failed: Vec::new(),
            succeeded: Vec::new(),
            gone: Vec::new(),
            now: records.iter().map(|r| r.at).max(),
        };
        for record in records {
            let Some(count) = counts.get(record.message_id.as_str()) else {
                recording.recorded.push(false);
                continue;
            };
            recording.recorded.push(true);
            if let Some(attempt) = &record.attempt {
                recording.attempts.push(AttemptRow::of(record, attempt, *count));
            }
            let endpoints = match record.health {
                EndpointHealth::Unchanged => continue,
                EndpointHealth::Succeeded => &mut recording.succeeded,
                EndpointHealth::Failed => &mut recording.failed,
                EndpointHealth::Gone => &mut recording.gone,
            };
            endpoints.push(record.endpoint_id.to_string());
        }
        for endpoints in [&mut recording.failed, &mut recording.succeeded, &mut recording.gone] {
            endpoints.sort_unstable();
            endpoints.dedup();
        }
        recording
    }
}

impl Recording<'_> {
    /// The endpoints to disable, by reason: those gone, and those failing since
    /// `failing_before` or earlier (only failures of this batch are candidates). Failures are
    /// marked before successes, so an endpoint that also succeeded in the batch ends healthy
    /// and is not disabled.
    pub(crate) fn to_disable(&self, failing_before: Timestamp) -> [(DisabledReason, &[String], Option<Timestamp>); 2] {
        [(DisabledReason::Gone, &self.gone, None), (DisabledReason::Failing, &self.failed, Some(failing_before))]
    }
}

/// The job announcing an endpoint disabled now, enqueued in the unit that disabled it, so a
/// crash cannot lose the announcement.
pub(crate) fn announce_disabled(tenant_id: &Id, endpoint_id: &Id, reason: DisabledReason, now: Timestamp) -> NewJob {
    OperationalEvent::EndpointDisabled { endpoint_id: endpoint_id.clone(), reason, at: now }.to_job(tenant_id, now)
}

/// SQLite: the select list that reads these fields of each `json_each` row.
pub(crate) fn json_fields(columns: &[&str]) -> String {
    columns.iter().map(|name| format!("value->>'{name}' AS {name}")).collect::<Vec<_>>().join(", ")
}

pub(crate) fn to_json_text<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("plain rows serialise")
}
