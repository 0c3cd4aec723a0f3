//! Batches of delivery outcomes written in one statement each.

macro_rules! batches_impl {
    ($db:ty, $backend:expr) => {
        // A batch of rows goes to the database in one statement. SQLite gets it as one JSON
        // parameter unpacked by `json_each`: the statement text never changes, so it is
        // prepared once (preparing a new multi-row text for every batch size cost SQLite's
        // single writer more than the rows themselves). PostgreSQL gets multi-row VALUES with
        // typed parameters, which it plans and runs faster than it parses JSON.

        /// SQLite: the select list that reads these fields of each `json_each` row.
        fn json_fields(columns: &[&str]) -> String {
            columns.iter().map(|name| format!("value->>'{name}' AS {name}")).collect::<Vec<_>>().join(", ")
        }

        /// ` IN (…)` over ids: a JSON array parameter on SQLite, one parameter each on PostgreSQL.
        fn push_id_list<'a>(q: &mut sqlx::QueryBuilder<'a, $db>, ids: &'a [String]) {
            match $backend {
                Backend::Sqlite => {
                    q.push(" IN (SELECT value FROM json_each(")
                        .push_bind(serde_json::json!(ids).to_string())
                        .push("))");
                }
                Backend::Postgres => push_ids(q, ids.iter().map(String::as_str)),
            }
        }

        /// What recording does to one message. The field names are the columns of the
        /// batch (`v`) in `ADVANCE_HEAD`/`ADVANCE_TAIL`.
        #[derive(serde::Serialize)]
        struct Advance<'a> {
            id: &'a str,
            lease: &'a str,
            status: &'static str,
            /// Attempts made now: 0 or 1.
            made_n: i32,
            /// Steps forward in the retry schedule: 0 or 1.
            step: i32,
            next_at: Option<i64>,
            made: bool,
            code: Option<i32>,
            error: Option<&'a str>,
            at: i64,
        }

        const ADVANCE_COLUMNS: [&str; 10] =
            ["id", "lease", "status", "made_n", "step", "next_at", "made", "code", "error", "at"];

        impl<'a> Advance<'a> {
            fn of(record: &'a DeliveryRecord) -> Self {
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
        const ADVANCE_HEAD: &str = "UPDATE messages SET
                status = v.status, attempts = messages.attempts + v.made_n,
                retry_index = messages.retry_index + v.step, next_attempt_at = v.next_at, lease_id = NULL,
                last_status_code = CASE WHEN v.made THEN v.code ELSE messages.last_status_code END,
                last_error = CASE WHEN v.made OR v.error IS NOT NULL THEN v.error ELSE messages.last_error END,
                updated_at = v.at
             FROM ";
        const ADVANCE_TAIL: &str = " WHERE messages.id = v.id AND messages.lease_id = v.lease
             RETURNING messages.id AS id, messages.attempts AS attempts";

        /// Rows per PostgreSQL statement: well under its limit on bound parameters.
        const VALUES_CHUNK: usize = 500;

        fn to_json_text<T: serde::Serialize>(rows: &[T]) -> String {
            serde_json::to_string(rows).expect("plain rows serialise")
        }

        /// Advances the messages of `records`; returns each recorded message's attempt count
        /// by id (a message whose lease was lost is absent).
        async fn advance_messages(
            c: &mut Conn,
            records: &[DeliveryRecord],
        ) -> Result<std::collections::HashMap<String, i32>> {
            let rows: Vec<Advance<'_>> = records.iter().map(Advance::of).collect();
            let mut statements = Vec::new();
            match $backend {
                Backend::Sqlite => {
                    let mut q = sqlx::QueryBuilder::<$db>::new(ADVANCE_HEAD);
                    q.push("(SELECT ").push(json_fields(&ADVANCE_COLUMNS)).push(" FROM json_each(");
                    q.push_bind(to_json_text(&rows)).push(format!(")) AS v{ADVANCE_TAIL}"));
                    statements.push(q);
                }
                Backend::Postgres => {
                    for chunk in rows.chunks(VALUES_CHUNK) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(format!("{ADVANCE_HEAD}(VALUES "));
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
                        statements.push(q);
                    }
                }
            }
            let mut counts = std::collections::HashMap::with_capacity(records.len());
            for mut q in statements {
                for row in q.build().fetch_all(&mut *c).await? {
                    counts.insert(row.try_get::<String, _>("id")?, row.try_get::<i32, _>("attempts")?);
                }
            }
            Ok(counts)
        }

        /// One attempt as stored; the field names are the columns of `attempts`.
        #[derive(serde::Serialize)]
        struct AttemptRow<'a> {
            id: &'a str,
            tenant_id: &'a str,
            message_id: &'a str,
            endpoint_id: &'a str,
            attempt_number: i32,
            succeeded: bool,
            response_status: Option<i32>,
            response_headers: Option<&'a str>,
            response_body: Option<&'a str>,
            error_kind: Option<&'a str>,
            error: Option<&'a str>,
            duration_us: i64,
            created_at: i64,
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

        async fn insert_attempts(c: &mut Conn, attempts: &[(&DeliveryRecord, &NewAttempt, i32)]) -> Result<()> {
            let rows: Vec<AttemptRow<'_>> =
                attempts.iter().map(|(record, attempt, n)| AttemptRow::of(record, attempt, *n)).collect();
            if rows.is_empty() {
                return Ok(());
            }
            match $backend {
                Backend::Sqlite => {
                    let columns: Vec<&str> = ATTEMPT_COLUMNS.split(',').map(str::trim).collect();
                    let sql = format!(
                        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) SELECT {} FROM json_each($1)",
                        json_fields(&columns)
                    );
                    sqlx::query(&sql).bind(to_json_text(&rows)).execute(&mut *c).await?;
                }
                Backend::Postgres => {
                    for chunk in rows.chunks(VALUES_CHUNK) {
                        let mut q =
                            sqlx::QueryBuilder::<$db>::new(format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) "));
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
                }
            }
            Ok(())
        }
    };
}

pub(crate) use batches_impl;
