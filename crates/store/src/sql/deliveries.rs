//! Messages (which are their own delivery queue) and attempts: the `DeliveryStore` methods.

macro_rules! deliveries_impl {
    ($store:ty, $db:ty, $backend:expr, $claim_lock:literal) => {
        const MESSAGE_COLUMNS: &str = "id, tenant_id, event_id, endpoint_id, status, fifo, attempts, retry_index,
            next_attempt_at, last_status_code, last_error, created_at, updated_at";

        fn message_from(row: &Row) -> Result<Message> {
            Ok(Message {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                event_id: id(row, "event_id")?,
                endpoint_id: id(row, "endpoint_id")?,
                status: named(row, "status")?,
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

        use crate::sql::recording::ATTEMPT_COLUMNS;

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
                error_kind: opt_named(row, "error_kind")?,
                error: row.try_get("error")?,
                duration_us: row.try_get("duration_us")?,
                created_at: time(row, "created_at")?,
            })
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

        #[async_trait]
        impl crate::DeliveryStore for $store {
            async fn claim_messages(&self, limit: u32, now: Timestamp, lease: chrono::Duration) -> Result<ClaimedBatch> {
                let lease_id = Id::new(switchboard_core::IdKind::Job).to_string();
                let expires = now + lease;
                // A lease lost with its commit only means the message is claimed again, so the
                // claim need not wait for durability. Its events and endpoints are read in the
                // same unit, from the same snapshot.
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

            async fn count_due_messages(&self, tenant_id: &str, now: Timestamp, cap: u64) -> Result<u64> {
                let tenant_id = tenant_id.to_string();
                let cap = i64::try_from(cap).unwrap_or(i64::MAX);
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT COUNT(*) AS due FROM (
                             SELECT 1 FROM messages
                             WHERE status = 'pending' AND next_attempt_at <= $2 AND tenant_id = $1
                             LIMIT $3) AS capped",
                    )
                    .bind(&tenant_id)
                    .bind(to_micros(now))
                    .bind(cap)
                    .fetch_one(&mut *c)
                    .await?;
                    Ok(u64::try_from(row.try_get::<i64, _>("due")?).unwrap_or(0))
                }))
                .await
            }

            async fn record_deliveries(
                &self,
                records: &[DeliveryRecord],
                events: &[EventWithMessages],
                disable_failing_before: Timestamp,
            ) -> Result<RecordedDeliveries> {
                let wakes = records.iter().any(|r| matches!(r.next, NextStep::RetryAt { .. }))
                    || events.iter().any(|e| !e.messages.is_empty());
                let recorded =
                    self.record_deliveries_unit(records.to_vec(), events.to_vec(), disable_failing_before).await?;
                if wakes {
                    self.signal.wake(crate::queue::Work::Messages);
                }
                if !recorded.disabled.is_empty() {
                    self.signal.wake(crate::queue::Work::Jobs);
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

            async fn add_missing_messages(
                &self,
                tenant_id: &str,
                event_id: &str,
                messages: &[NewMessage],
                now: Timestamp,
            ) -> Result<u64> {
                let (tenant_id, event_id, messages) = (tenant_id.to_string(), event_id.to_string(), messages.to_vec());
                let added = self.write(move |c| Box::pin(async move {
                    // Two replays of one event at once must not both add its new endpoints'
                    // messages: on PostgreSQL the event's row is locked for the unit (SQLite's
                    // single writer already runs one unit at a time).
                    if matches!($backend, Backend::Postgres) {
                        let exists = sqlx::query("SELECT 1 FROM events WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
                            .bind(&tenant_id)
                            .bind(&event_id)
                            .fetch_optional(&mut *c)
                            .await?;
                        if exists.is_none() {
                            return Ok(0);
                        }
                    }
                    let mut added = 0;
                    for message in &messages {
                        added += sqlx::query(
                            "INSERT INTO messages (id, tenant_id, event_id, endpoint_id, status, fifo, next_attempt_at, created_at, updated_at)
                             SELECT $1, $2, $3, $4, 'pending', $5, $6, $7, $7
                             WHERE EXISTS (SELECT 1 FROM events WHERE tenant_id = $2 AND id = $3)
                               AND NOT EXISTS (SELECT 1 FROM messages WHERE tenant_id = $2 AND event_id = $3 AND endpoint_id = $4)",
                        )
                        .bind(message.id.as_str())
                        .bind(&tenant_id)
                        .bind(&event_id)
                        .bind(message.endpoint_id.as_str())
                        .bind(message.fifo)
                        .bind(to_micros(message.next_attempt_at))
                        .bind(to_micros(now))
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                    }
                    Ok(added)
                }))
                .await?;
                if added > 0 {
                    self.signal.wake(crate::queue::Work::Messages);
                }
                Ok(added)
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
                self.signal.wake(crate::queue::Work::Messages);
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
                    self.signal.wake(crate::queue::Work::Messages);
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
    };
}

pub(crate) use deliveries_impl;
