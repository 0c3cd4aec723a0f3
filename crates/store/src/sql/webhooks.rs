//! Endpoints, messages and attempts: the `WebhookStore` methods.

macro_rules! webhooks_impl {
    ($store:ty, $db:ty, $backend:expr, $claim_lock:literal) => {
        const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, filter_jq, transform_jq, headers,
            rate_limit_per_second, enabled, disabled_reason, fifo, metadata, secret_id, previous_secret_id,
            previous_secret_expires_at, failing_since, version, created_at, updated_at, deleted_at";

        fn json_column<T: serde::de::DeserializeOwned>(row: &Row, column: &str) -> Result<T> {
            let text: String = row.try_get(column)?;
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
        }

        fn endpoint_from(row: &Row) -> Result<Endpoint> {
            Ok(Endpoint {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                url: row.try_get("url")?,
                description: row.try_get("description")?,
                event_types: json_column(row, "event_types")?,
                filter: row.try_get("filter_jq")?,
                transform: row.try_get("transform_jq")?,
                headers: json_column(row, "headers")?,
                rate_limit_per_second: row.try_get::<Option<i32>, _>("rate_limit_per_second")?.map(|n| n.max(0) as u32),
                enabled: row.try_get("enabled")?,
                disabled_reason: row.try_get("disabled_reason")?,
                fifo: row.try_get("fifo")?,
                metadata: row.try_get("metadata")?,
                secret_id: id(row, "secret_id")?,
                previous_secret_id: row.try_get::<Option<String>, _>("previous_secret_id")?.map(Id::from_trusted),
                previous_secret_expires_at: opt_time(row, "previous_secret_expires_at")?,
                failing_since: opt_time(row, "failing_since")?,
                version: row.try_get("version")?,
                created_at: time(row, "created_at")?,
                updated_at: time(row, "updated_at")?,
            })
        }

        const MESSAGE_COLUMNS: &str = "id, tenant_id, event_id, endpoint_id, status, fifo, attempts, retry_index,
            next_attempt_at, last_status_code, last_error, created_at, updated_at";

        fn message_from(row: &Row) -> Result<Message> {
            let status: String = row.try_get("status")?;
            Ok(Message {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                event_id: id(row, "event_id")?,
                endpoint_id: id(row, "endpoint_id")?,
                status: status.parse().map_err(StoreError::Corrupt)?,
                fifo: row.try_get("fifo")?,
                attempts: i64::from(row.try_get::<i32, _>("attempts")?),
                retry_index: i64::from(row.try_get::<i32, _>("retry_index")?),
                next_attempt_at: opt_time(row, "next_attempt_at")?,
                last_status_code: row.try_get::<Option<i32>, _>("last_status_code")?.map(i64::from),
                last_error: row.try_get("last_error")?,
                created_at: time(row, "created_at")?,
                updated_at: time(row, "updated_at")?,
            })
        }

        const ATTEMPT_COLUMNS: &str = "id, tenant_id, message_id, endpoint_id, attempt_number, succeeded, response_status,
            response_headers, response_body, error_kind, error, duration_us, created_at";

        fn attempt_from(row: &Row) -> Result<Attempt> {
            Ok(Attempt {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                message_id: id(row, "message_id")?,
                endpoint_id: id(row, "endpoint_id")?,
                attempt_number: i64::from(row.try_get::<i32, _>("attempt_number")?),
                succeeded: row.try_get("succeeded")?,
                response_status: row.try_get::<Option<i32>, _>("response_status")?.map(i64::from),
                response_headers: row.try_get("response_headers")?,
                response_body: row.try_get("response_body")?,
                error_kind: row.try_get("error_kind")?,
                error: row.try_get("error")?,
                duration_us: row.try_get("duration_us")?,
                created_at: time(row, "created_at")?,
            })
        }

        fn to_json<T: serde::Serialize>(value: &T) -> String {
            serde_json::to_string(value).expect("plain data serialises")
        }

        /// ` IN ($a, $b, …)` over ids.
        fn push_ids<'a>(q: &mut sqlx::QueryBuilder<'a, $db>, ids: impl IntoIterator<Item = &'a str>) {
            q.push(" IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(id);
            }
            list.push_unseparated(")");
        }

        fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
            let mut ids: Vec<String> = ids.map(str::to_string).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        }

        /// Events by id across tenants: delivery workers serve every tenant, and each row
        /// carries its own.
        async fn select_events(c: &mut Conn, ids: &[String]) -> Result<Vec<Event>> {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE id"));
            push_id_list(&mut q, ids);
            q.build().fetch_all(&mut *c).await?.iter().map(event_from).collect()
        }

        /// Endpoints by id across tenants, with whether each was deleted.
        async fn select_endpoints(c: &mut Conn, ids: &[String]) -> Result<Vec<(Endpoint, bool)>> {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id"));
            push_id_list(&mut q, ids);
            q.build()
                .fetch_all(&mut *c)
                .await?
                .iter()
                .map(|row| Ok((endpoint_from(row)?, row.try_get::<Option<i64>, _>("deleted_at")?.is_some())))
                .collect()
        }

        /// The picked ids are materialised first (see `CLAIM_SQL`). A FIFO message waits while
        /// an earlier message of its endpoint is pending, leased or not.
        const CLAIM_MESSAGES_SQL: &str = concat!(
            "WITH picked AS MATERIALIZED (
                 SELECT m.id FROM messages m
                 WHERE m.status = 'pending' AND m.next_attempt_at <= $3
                   AND (NOT m.fifo OR NOT EXISTS (
                       SELECT 1 FROM messages p
                       WHERE p.endpoint_id = m.endpoint_id AND p.status = 'pending' AND p.id < m.id))
                 ORDER BY m.next_attempt_at, m.id LIMIT $4 ",
            $claim_lock,
            ")
             UPDATE messages SET lease_id = $1, next_attempt_at = $2
             WHERE id IN (SELECT id FROM picked)
             RETURNING id, tenant_id, event_id, endpoint_id, status, fifo, attempts, retry_index,
                 next_attempt_at, last_status_code, last_error, created_at, updated_at"
        );

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

        async fn delete_secret(c: &mut Conn, tenant_id: &str, secret_id: &str) -> Result<()> {
            sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(secret_id)
                .execute(&mut *c)
                .await?;
            Ok(())
        }

        #[async_trait]
        impl crate::WebhookStore for $store {
            async fn create_endpoint(&self, endpoint: &Endpoint, secret: &StoredSecret) -> Result<Endpoint> {
                let (endpoint, secret) = (endpoint.clone(), secret.clone());
                self.write(move |c| Box::pin(async move {
                    insert_secret(c, &secret).await?;
                    sqlx::query(&format!(
                        "INSERT INTO endpoints ({ENDPOINT_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, NULL)"
                    ))
                    .bind(endpoint.id.as_str())
                    .bind(endpoint.tenant_id.as_str())
                    .bind(&endpoint.url)
                    .bind(&endpoint.description)
                    .bind(to_json(&endpoint.event_types))
                    .bind(endpoint.filter.as_deref())
                    .bind(endpoint.transform.as_deref())
                    .bind(to_json(&endpoint.headers))
                    .bind(endpoint.rate_limit_per_second.map(|n| n.min(i32::MAX as u32) as i32))
                    .bind(endpoint.enabled)
                    .bind(endpoint.disabled_reason.as_deref())
                    .bind(endpoint.fifo)
                    .bind(&endpoint.metadata)
                    .bind(endpoint.secret_id.as_str())
                    .bind(endpoint.previous_secret_id.as_ref().map(|i| i.as_str()))
                    .bind(endpoint.previous_secret_expires_at.map(to_micros))
                    .bind(endpoint.failing_since.map(to_micros))
                    .bind(endpoint.version)
                    .bind(to_micros(endpoint.created_at))
                    .bind(to_micros(endpoint.updated_at))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::conflict_or(e, "an endpoint with this id"))?;
                    Ok(endpoint)
                }))
                .await
            }

            async fn get_endpoint(&self, tenant_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
                let (tenant_id, endpoint_id) = (tenant_id.to_string(), endpoint_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
                    ))
                    .bind(&tenant_id)
                    .bind(&endpoint_id)
                    .fetch_optional(&mut *c)
                    .await?;
                    row.as_ref().map(endpoint_from).transpose()
                }))
                .await
            }

            async fn list_endpoints(&self, tenant_id: &str, page: &Page) -> Result<Vec<Endpoint>> {
                let (tenant_id, page) = (tenant_id.to_string(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE deleted_at IS NULL AND tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(endpoint_from).collect()
                }))
                .await
            }

            async fn enabled_endpoints(&self, tenant_id: &str) -> Result<Vec<Endpoint>> {
                let tenant_id = tenant_id.to_string();
                self.read(move |c| Box::pin(async move {
                    let rows = sqlx::query(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND deleted_at IS NULL AND enabled ORDER BY id"
                    ))
                    .bind(&tenant_id)
                    .fetch_all(&mut *c)
                    .await?;
                    rows.iter().map(endpoint_from).collect()
                }))
                .await
            }

            async fn update_endpoint(&self, tenant_id: &str, endpoint_id: &str, patch: &EndpointPatch) -> Result<Option<Endpoint>> {
                let (tenant_id, endpoint_id, patch) = (tenant_id.to_string(), endpoint_id.to_string(), patch.clone());
                self.write(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE endpoints SET version = version + 1");
                    if let Some(url) = &patch.url {
                        q.push(", url = ").push_bind(url.as_str());
                    }
                    if let Some(description) = &patch.description {
                        q.push(", description = ").push_bind(description.as_str());
                    }
                    if let Some(event_types) = &patch.event_types {
                        q.push(", event_types = ").push_bind(to_json(event_types));
                    }
                    if let Some(filter) = &patch.filter {
                        q.push(", filter_jq = ").push_bind(filter.as_deref());
                    }
                    if let Some(transform) = &patch.transform {
                        q.push(", transform_jq = ").push_bind(transform.as_deref());
                    }
                    if let Some(headers) = &patch.headers {
                        q.push(", headers = ").push_bind(to_json(headers));
                    }
                    if let Some(rate) = &patch.rate_limit_per_second {
                        q.push(", rate_limit_per_second = ").push_bind(rate.map(|n| n.min(i32::MAX as u32) as i32));
                    }
                    match patch.enabled {
                        Some(true) => {
                            q.push(", enabled = TRUE, disabled_reason = NULL, failing_since = NULL");
                        }
                        Some(false) => {
                            q.push(", enabled = FALSE, disabled_reason = ")
                                .push_bind(patch.disabled_reason.clone().unwrap_or_else(|| "manual".into()));
                        }
                        None => {}
                    }
                    if let Some(fifo) = patch.fifo {
                        q.push(", fifo = ").push_bind(fifo);
                    }
                    if let Some(metadata) = &patch.metadata {
                        q.push(", metadata = ").push_bind(metadata.as_str());
                    }
                    if let Some(at) = patch.updated_at {
                        q.push(", updated_at = ").push_bind(to_micros(at));
                    }
                    q.push(" WHERE tenant_id = ").push_bind(tenant_id.as_str());
                    q.push(" AND id = ").push_bind(endpoint_id.as_str());
                    q.push(format!(" AND deleted_at IS NULL RETURNING {ENDPOINT_COLUMNS}"));
                    let row = q.build().fetch_optional(&mut *c).await?;
                    row.as_ref().map(endpoint_from).transpose()
                }))
                .await
            }

            async fn delete_endpoint(&self, tenant_id: &str, endpoint_id: &str, at: Timestamp) -> Result<bool> {
                let (tenant_id, endpoint_id) = (tenant_id.to_string(), endpoint_id.to_string());
                self.write(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE endpoints SET deleted_at = $3, enabled = FALSE, version = version + 1, updated_at = $3
                         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
                         RETURNING secret_id, previous_secret_id",
                    )
                    .bind(&tenant_id)
                    .bind(&endpoint_id)
                    .bind(to_micros(at))
                    .fetch_optional(&mut *c)
                    .await?;
                    let Some(row) = row else { return Ok(false) };
                    let secret_id: String = row.try_get("secret_id")?;
                    let previous: Option<String> = row.try_get("previous_secret_id")?;
                    for secret in std::iter::once(secret_id).chain(previous) {
                        delete_secret(c, &tenant_id, &secret).await?;
                    }
                    Ok(true)
                }))
                .await
            }

            async fn rotate_endpoint_secret(
                &self,
                tenant_id: &str,
                endpoint_id: &str,
                secret: &StoredSecret,
                previous_expires_at: Timestamp,
            ) -> Result<Option<Endpoint>> {
                let (tenant_id, endpoint_id, secret) = (tenant_id.to_string(), endpoint_id.to_string(), secret.clone());
                self.write(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT previous_secret_id FROM endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
                    )
                    .bind(&tenant_id)
                    .bind(&endpoint_id)
                    .fetch_optional(&mut *c)
                    .await?;
                    let Some(row) = row else { return Ok(None) };
                    if let Some(oldest) = row.try_get::<Option<String>, _>("previous_secret_id")? {
                        delete_secret(c, &tenant_id, &oldest).await?;
                    }
                    insert_secret(c, &secret).await?;
                    let row = sqlx::query(&format!(
                        "UPDATE endpoints SET previous_secret_id = secret_id, previous_secret_expires_at = $3,
                             secret_id = $4, version = version + 1, updated_at = $5
                         WHERE tenant_id = $1 AND id = $2
                         RETURNING {ENDPOINT_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&endpoint_id)
                    .bind(to_micros(previous_expires_at))
                    .bind(secret.id.as_str())
                    .bind(to_micros(secret.updated_at))
                    .fetch_one(&mut *c)
                    .await?;
                    Ok(Some(endpoint_from(&row)?))
                }))
                .await
            }

            async fn claim_messages(&self, limit: u32, now: Timestamp, lease: chrono::Duration) -> Result<ClaimedBatch> {
                let lease_id = Id::new(switchboard_core::IdKind::Job).to_string();
                let expires = now + lease;
                // A lease lost with its commit only means the message is claimed again, so the
                // batch need not wait for durability. Events and endpoints are read in the
                // same unit: they may have been written by the same, uncommitted batch.
                self.worker_write_unconfirmed(move |c| Box::pin(async move {
                    let rows = sqlx::query(CLAIM_MESSAGES_SQL)
                        .bind(&lease_id)
                        .bind(to_micros(expires))
                        .bind(to_micros(now))
                        .bind(i64::from(limit))
                        .fetch_all(&mut *c)
                        .await?;
                    let mut messages = rows
                        .iter()
                        .map(|row| Ok(ClaimedMessage { message: message_from(row)?, lease_id: lease_id.clone() }))
                        .collect::<Result<Vec<_>>>()?;
                    messages.sort_by(|a, b| a.message.id.cmp(&b.message.id));
                    let event_ids = distinct(messages.iter().map(|m| m.message.event_id.as_str()));
                    let endpoint_ids = distinct(messages.iter().map(|m| m.message.endpoint_id.as_str()));
                    let events = select_events(c, &event_ids).await?;
                    let endpoints = select_endpoints(c, &endpoint_ids).await?;
                    Ok(ClaimedBatch { messages, events, endpoints })
                }))
                .await
            }

            async fn next_message_due(&self) -> Result<Option<Timestamp>> {
                self.worker_read(move |c| Box::pin(async move {
                    let row = sqlx::query("SELECT MIN(next_attempt_at) AS due FROM messages WHERE status = 'pending'")
                        .fetch_one(&mut *c)
                        .await?;
                    Ok(row.try_get::<Option<i64>, _>("due")?.map(from_micros))
                }))
                .await
            }

            async fn record_deliveries(
                &self,
                records: &[DeliveryRecord],
                events: &[EventWithMessages],
                disable_failing_before: Timestamp,
            ) -> Result<RecordedDeliveries> {
                let (records, events) = (records.to_vec(), events.to_vec());
                let wakes = records.iter().any(|r| matches!(r.next, NextStep::RetryAt { .. }))
                    || events.iter().any(|e| !e.messages.is_empty());
                let recorded = self.worker_write(move |c| Box::pin(async move {
                    record_deliveries_in_unit(c, &records, events, disable_failing_before).await
                }))
                .await?;
                if wakes {
                    self.signal.wake();
                }
                Ok(recorded)
            }

            async fn get_message(&self, tenant_id: &str, message_id: &str) -> Result<Option<Message>> {
                let (tenant_id, message_id) = (tenant_id.to_string(), message_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&message_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(message_from).transpose()
                }))
                .await
            }

            async fn list_messages(&self, tenant_id: &str, filter: &MessageFilter) -> Result<Vec<Message>> {
                let (tenant_id, filter) = (tenant_id.to_string(), filter.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    if let Some(endpoint_id) = &filter.endpoint_id {
                        q.push(" AND endpoint_id = ").push_bind(endpoint_id.as_str());
                    }
                    if let Some(event_id) = &filter.event_id {
                        q.push(" AND event_id = ").push_bind(event_id.as_str());
                    }
                    if let Some(status) = filter.status {
                        q.push(" AND status = ").push_bind(status.as_str());
                    }
                    push_created_between(&mut q, filter.created_after, filter.created_before);
                    push_page(&mut q, &filter.page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(message_from).collect()
                }))
                .await
            }

            async fn list_attempts(&self, tenant_id: &str, filter: &AttemptFilter) -> Result<Vec<Attempt>> {
                let (tenant_id, filter) = (tenant_id.to_string(), filter.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    if let Some(endpoint_id) = &filter.endpoint_id {
                        q.push(" AND endpoint_id = ").push_bind(endpoint_id.as_str());
                    }
                    if let Some(message_id) = &filter.message_id {
                        q.push(" AND message_id = ").push_bind(message_id.as_str());
                    }
                    if let Some(event_id) = &filter.event_id {
                        q.push(" AND message_id IN (SELECT id FROM messages WHERE tenant_id = ")
                            .push_bind(tenant_id.as_str())
                            .push(" AND event_id = ")
                            .push_bind(event_id.as_str())
                            .push(")");
                    }
                    if let Some(succeeded) = filter.succeeded {
                        q.push(" AND succeeded = ").push_bind(succeeded);
                    }
                    push_created_between(&mut q, filter.created_after, filter.created_before);
                    push_page(&mut q, &filter.page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(attempt_from).collect()
                }))
                .await
            }

            async fn resend_message(&self, tenant_id: &str, message_id: &str, now: Timestamp) -> Result<Option<Message>> {
                let (tenant_id, message_id) = (tenant_id.to_string(), message_id.to_string());
                let message = self.write(move |c| Box::pin(async move {
                    sqlx::query(
                        "UPDATE messages SET status = 'pending', retry_index = 0, next_attempt_at = $3, lease_id = NULL, updated_at = $3
                         WHERE tenant_id = $1 AND id = $2 AND status <> 'pending'",
                    )
                    .bind(&tenant_id)
                    .bind(&message_id)
                    .bind(to_micros(now))
                    .execute(&mut *c)
                    .await?;
                    let row = sqlx::query(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&message_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(message_from).transpose()
                }))
                .await?;
                self.signal.wake();
                Ok(message)
            }

            async fn recover_messages(
                &self,
                tenant_id: &str,
                endpoint_id: &str,
                since: Timestamp,
                now: Timestamp,
                limit: u32,
            ) -> Result<u64> {
                let (tenant_id, endpoint_id) = (tenant_id.to_string(), endpoint_id.to_string());
                let recovered = self.write(move |c| Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE messages SET status = 'pending', retry_index = 0, next_attempt_at = $4, lease_id = NULL, updated_at = $4
                         WHERE id IN (
                             SELECT id FROM messages
                             WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'failed' AND created_at >= $3
                             ORDER BY id LIMIT $5)",
                    )
                    .bind(&tenant_id)
                    .bind(&endpoint_id)
                    .bind(to_micros(since))
                    .bind(to_micros(now))
                    .bind(i64::from(limit))
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected())
                }))
                .await?;
                if recovered > 0 {
                    self.signal.wake();
                }
                Ok(recovered)
            }

            async fn recent_attempts(&self, tenant_id: &str, endpoint_id: &str, limit: u32) -> Result<Vec<AttemptSample>> {
                let (tenant_id, endpoint_id) = (tenant_id.to_string(), endpoint_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT succeeded, duration_us, COALESCE(error, error_kind) AS error, created_at FROM attempts
                         WHERE tenant_id = $1 AND endpoint_id = $2 ORDER BY id DESC LIMIT $3",
                    )
                    .bind(&tenant_id)
                    .bind(&endpoint_id)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *c)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(AttemptSample {
                                succeeded: row.try_get("succeeded")?,
                                duration_us: row.try_get("duration_us")?,
                                error: row.try_get("error")?,
                                created_at: time(row, "created_at")?,
                            })
                        })
                        .collect()
                }))
                .await
            }

            async fn message_counts(&self, tenant_id: &str, endpoint_id: &str) -> Result<std::collections::BTreeMap<String, u64>> {
                let (tenant_id, endpoint_id) = (tenant_id.to_string(), endpoint_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT status, COUNT(*) AS n FROM messages WHERE tenant_id = $1 AND endpoint_id = $2 GROUP BY status",
                    )
                    .bind(&tenant_id)
                    .bind(&endpoint_id)
                    .fetch_all(&mut *c)
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get::<String, _>("status")?, row.try_get::<i64, _>("n")?.max(0) as u64)))
                        .collect()
                }))
                .await
            }

            async fn prune(&self, before: Timestamp, limit: u32) -> Result<Pruned> {
                self.worker_write(move |c| Box::pin(async move {
                    use switchboard_core::IdKind;
                    // Ids start with their creation time, so "older than" is an index range.
                    let bound = |kind| Id::lower_bound(kind, before);
                    let attempts = sqlx::query("DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE id < $1 LIMIT $2)")
                        .bind(bound(IdKind::Attempt))
                        .bind(i64::from(limit))
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                    let messages = sqlx::query(
                        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE id < $1 AND status <> 'pending' LIMIT $2)",
                    )
                    .bind(bound(IdKind::Message))
                    .bind(i64::from(limit))
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                    let events = sqlx::query(
                        "DELETE FROM events WHERE id IN (
                             SELECT e.id FROM events e WHERE e.id < $1 AND NOT EXISTS (
                                 SELECT 1 FROM messages m WHERE m.tenant_id = e.tenant_id AND m.event_id = e.id AND m.status = 'pending')
                             LIMIT $2)",
                    )
                    .bind(bound(IdKind::Event))
                    .bind(i64::from(limit))
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                    Ok(Pruned { events, messages, attempts })
                }))
                .await
            }
        }

        async fn record_deliveries_in_unit(
            c: &mut Conn,
            records: &[DeliveryRecord],
            events: Vec<EventWithMessages>,
            disable_failing_before: Timestamp,
        ) -> Result<RecordedDeliveries> {
            let mut outcome = RecordedDeliveries::default();
            let counts = advance_messages(c, records).await?;
            let mut attempts = Vec::new();
            let (mut failed, mut succeeded, mut gone) = (Vec::new(), Vec::new(), Vec::new());
            for record in records {
                let Some(count) = counts.get(record.message_id.as_str()) else {
                    outcome.recorded.push(false);
                    continue;
                };
                outcome.recorded.push(true);
                if let Some(attempt) = &record.attempt {
                    attempts.push((record, attempt, *count));
                }
                match record.health {
                    EndpointHealth::Unchanged => {}
                    EndpointHealth::Succeeded => succeeded.push(record.endpoint_id.as_str()),
                    EndpointHealth::Failed => failed.push(record.endpoint_id.as_str()),
                    EndpointHealth::Gone => gone.push(record.endpoint_id.as_str()),
                }
            }
            insert_attempts(c, &attempts).await?;
            let now = records.iter().map(|r| r.at).max();
            if let Some(now) = now {
                // Failures first: an endpoint that also succeeded in this batch ends healthy.
                if !failed.is_empty() {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE endpoints SET failing_since = ");
                    q.push_bind(to_micros(now)).push(" WHERE failing_since IS NULL AND id");
                    push_ids(&mut q, failed.iter().copied());
                    q.build().execute(&mut *c).await?;
                }
                if !succeeded.is_empty() {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE endpoints SET failing_since = NULL WHERE failing_since IS NOT NULL AND id");
                    push_ids(&mut q, succeeded.iter().copied());
                    q.build().execute(&mut *c).await?;
                }
                for (reason, ids, condition) in [
                    ("gone", &gone, ""),
                    ("failing", &failed, " AND failing_since IS NOT NULL AND failing_since <= "),
                ] {
                    if ids.is_empty() {
                        continue;
                    }
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE endpoints SET enabled = FALSE, disabled_reason = ");
                    q.push_bind(reason).push(", version = version + 1, updated_at = ").push_bind(to_micros(now));
                    q.push(" WHERE enabled AND deleted_at IS NULL");
                    if !condition.is_empty() {
                        q.push(condition).push_bind(to_micros(disable_failing_before));
                    }
                    q.push(" AND id");
                    push_ids(&mut q, ids.iter().copied());
                    q.push(" RETURNING tenant_id, id");
                    for row in q.build().fetch_all(&mut *c).await? {
                        outcome.disabled.push((id(&row, "tenant_id")?, id(&row, "id")?, reason.to_string()));
                    }
                }
            }
            for emitted in events {
                insert_event(c, emitted.event, &emitted.messages, &[]).await?;
            }
            Ok(outcome)
        }
    };
}

pub(crate) use webhooks_impl;
