//! Batches of delivery outcomes written in one statement each.

macro_rules! batches_impl {
    ($db:ty, $backend:expr) => {
        // A batch of rows goes to the database in one statement. SQLite gets it as one JSON
        // parameter unpacked by `json_each`: the statement text never changes, so it is
        // prepared once (preparing a new multi-row text for every batch size cost SQLite's
        // single writer more than the rows themselves). PostgreSQL gets multi-row VALUES with
        // typed parameters, which it plans and runs faster than it parses JSON.

        /// SQLite: rows from the JSON array of objects in `$1`, with these columns.
        fn json_rows(columns: &[&str]) -> String {
            let fields: Vec<String> = columns.iter().map(|name| format!("value->>'{name}' AS {name}")).collect();
            format!("(SELECT {} FROM json_each($1))", fields.join(", "))
        }

        /// ` IN (…)` over ids: a JSON array parameter on SQLite, one parameter each on PostgreSQL.
        fn push_id_list<'a>(q: &mut sqlx::QueryBuilder<'a, $db>, ids: &'a [String]) {
            match $backend {
                Backend::Sqlite => {
                    q.push(" IN (SELECT value FROM json_each(").push_bind(serde_json::json!(ids).to_string()).push("))");
                }
                Backend::Postgres => push_ids(q, ids.iter().map(String::as_str)),
            }
        }

        /// What recording does to one message: (id, lease, status, attempts made, retry-index
        /// step, next attempt, whether an attempt was made, its status code, the error, the time).
        type Advance<'a> = (&'a str, &'a str, &'static str, i32, i32, Option<i64>, bool, Option<i32>, Option<&'a str>, i64);

        fn advance_of(record: &DeliveryRecord) -> Advance<'_> {
            let (status, next_at, step) = match &record.next {
                NextStep::Succeeded => ("succeeded", None, 0),
                NextStep::RetryAt { at, advance } => ("pending", Some(to_micros(*at)), i32::from(*advance)),
                NextStep::Failed => ("failed", None, 0),
            };
            let made = record.attempt.is_some();
            let code = record.attempt.as_ref().and_then(|a| a.response_status).map(i32::from);
            (
                record.message_id.as_str(), record.lease_id.as_str(), status, i32::from(made), step, next_at, made, code,
                record.error.as_deref(), to_micros(record.at),
            )
        }

        const ADVANCE_COLUMNS: [&str; 10] = ["id", "lease", "status", "made_n", "step", "next_at", "made", "code", "error", "at"];

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

        /// Advances the messages of `records`; returns each recorded message's attempt count
        /// by id (a message whose lease was lost is absent).
        async fn advance_messages(c: &mut Conn, records: &[DeliveryRecord]) -> Result<std::collections::HashMap<String, i32>> {
            let rows: Vec<Advance<'_>> = records.iter().map(advance_of).collect();
            let mut counts = std::collections::HashMap::with_capacity(records.len());
            let mut statements = Vec::new();
            match $backend {
                Backend::Sqlite => {
                    let json: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|r| serde_json::json!({
                            "id": r.0, "lease": r.1, "status": r.2, "made_n": r.3, "step": r.4,
                            "next_at": r.5, "made": r.6, "code": r.7, "error": r.8, "at": r.9,
                        }))
                        .collect();
                    let sql = format!("{ADVANCE_HEAD}{} AS v{ADVANCE_TAIL}", json_rows(&ADVANCE_COLUMNS));
                    let batch = serde_json::Value::Array(json).to_string();
                    for row in sqlx::query(&sql).bind(batch).fetch_all(&mut *c).await? {
                        counts.insert(row.try_get::<String, _>("id")?, row.try_get::<i32, _>("attempts")?);
                    }
                }
                Backend::Postgres => {
                    for chunk in rows.chunks(VALUES_CHUNK) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(format!("{ADVANCE_HEAD}(VALUES "));
                        for (index, r) in chunk.iter().enumerate() {
                            q.push(if index == 0 { "(" } else { ", (" });
                            // Every value is cast: PostgreSQL would otherwise type them as text.
                            let mut values = q.separated(", ");
                            values.push("CAST(").push_bind_unseparated(r.0).push_unseparated(" AS TEXT)");
                            values.push("CAST(").push_bind_unseparated(r.1).push_unseparated(" AS TEXT)");
                            values.push("CAST(").push_bind_unseparated(r.2).push_unseparated(" AS TEXT)");
                            values.push("CAST(").push_bind_unseparated(r.3).push_unseparated(" AS INTEGER)");
                            values.push("CAST(").push_bind_unseparated(r.4).push_unseparated(" AS INTEGER)");
                            values.push("CAST(").push_bind_unseparated(r.5).push_unseparated(" AS BIGINT)");
                            values.push("CAST(").push_bind_unseparated(r.6).push_unseparated(" AS BOOLEAN)");
                            values.push("CAST(").push_bind_unseparated(r.7).push_unseparated(" AS INTEGER)");
                            values.push("CAST(").push_bind_unseparated(r.8).push_unseparated(" AS TEXT)");
                            values.push("CAST(").push_bind_unseparated(r.9).push_unseparated(" AS BIGINT)");
                            q.push(")");
                        }
                        q.push(format!(") AS v ({}){ADVANCE_TAIL}", ADVANCE_COLUMNS.join(", ")));
                        statements.push(q);
                    }
                }
            }
            for mut q in statements {
                for row in q.build().fetch_all(&mut *c).await? {
                    counts.insert(row.try_get::<String, _>("id")?, row.try_get::<i32, _>("attempts")?);
                }
            }
            Ok(counts)
        }

        async fn insert_attempts(c: &mut Conn, attempts: &[(&DeliveryRecord, &NewAttempt, i32)]) -> Result<()> {
            if attempts.is_empty() {
                return Ok(());
            }
            match $backend {
                Backend::Sqlite => {
                    let rows: Vec<serde_json::Value> = attempts
                        .iter()
                        .map(|(record, attempt, number)| {
                            serde_json::json!({
                                "id": attempt.id, "tenant_id": record.tenant_id, "message_id": record.message_id,
                                "endpoint_id": record.endpoint_id, "attempt_number": number,
                                "succeeded": record.next == NextStep::Succeeded, "response_status": attempt.response_status,
                                "response_headers": attempt.response_headers, "response_body": attempt.response_body,
                                "error_kind": attempt.error_kind, "error": attempt.error, "duration_us": attempt.duration_us,
                                "created_at": to_micros(attempt.created_at),
                            })
                        })
                        .collect();
                    let columns: Vec<&str> = ATTEMPT_COLUMNS.split(',').map(str::trim).collect();
                    let sql = format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) SELECT * FROM {}", json_rows(&columns));
                    sqlx::query(&sql).bind(serde_json::Value::Array(rows).to_string()).execute(&mut *c).await?;
                }
                Backend::Postgres => {
                    for chunk in attempts.chunks(INSERT_CHUNK) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) "));
                        q.push_values(chunk, |mut row, (record, attempt, number)| {
                            row.push_bind(attempt.id.as_str())
                                .push_bind(record.tenant_id.as_str())
                                .push_bind(record.message_id.as_str())
                                .push_bind(record.endpoint_id.as_str())
                                .push_bind(*number)
                                .push_bind(record.next == NextStep::Succeeded)
                                .push_bind(attempt.response_status.map(i32::from))
                                .push_bind(attempt.response_headers.as_deref())
                                .push_bind(attempt.response_body.as_deref())
                                .push_bind(attempt.error_kind.as_deref())
                                .push_bind(attempt.error.as_deref())
                                .push_bind(attempt.duration_us)
                                .push_bind(to_micros(attempt.created_at));
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
