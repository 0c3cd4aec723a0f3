//! Incoming webhooks: the `InboundStore` methods.

macro_rules! inbound_impl {
    ($store:ty, $db:ty, $backend:expr, $claim_lock:literal) => {
        const INBOUND_COLUMNS: &str = "id, tenant_id, connection_id, received_at, source_ip, headers, body, verified,
            rejection, provider_event_id, duplicates, status, event_type, event_id, attempts, last_error, processed_at";

        /// Picked ids are materialised first (see `CLAIM_SQL`), then leased.
        const CLAIM_INBOUND_SQL: &str = concat!(
            "WITH picked AS MATERIALIZED (
                 SELECT id FROM inbound_webhooks
                 WHERE status = 'pending' AND (lease_until IS NULL OR lease_until <= $2)
                 ORDER BY id LIMIT $3 ",
            $claim_lock,
            ")
             UPDATE inbound_webhooks SET lease_until = $1, attempts = attempts + 1
             WHERE id IN (SELECT id FROM picked)
             RETURNING id, tenant_id, connection_id, received_at, source_ip, headers, body, verified, rejection,
                 provider_event_id, duplicates, status, event_type, event_id, attempts, last_error, processed_at"
        );

        fn inbound_from(row: &Row) -> Result<crate::InboundWebhook> {
            Ok(crate::InboundWebhook {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                connection_id: id(row, "connection_id")?,
                received_at: time(row, "received_at")?,
                source_ip: row.try_get("source_ip")?,
                headers: row.try_get("headers")?,
                body: row.try_get("body")?,
                verified: row.try_get("verified")?,
                rejection: row.try_get("rejection")?,
                provider_event_id: row.try_get("provider_event_id")?,
                duplicates: row.try_get::<i32, _>("duplicates")?.max(0) as u32,
                status: named(row, "status")?,
                event_type: row.try_get("event_type")?,
                event_id: row.try_get::<Option<String>, _>("event_id")?.map(Id::from_trusted),
                attempts: row.try_get::<i32, _>("attempts")?.max(0) as u32,
                last_error: row.try_get("last_error")?,
                processed_at: opt_time(row, "processed_at")?,
            })
        }

        #[async_trait]
        impl crate::InboundStore for $store {
            async fn store_inbound(&self, inbound: crate::NewInbound) -> Result<crate::Stored> {
                // Concurrent receivers share one statement and one commit; each is answered
                // after that commit.
                let writer = self.writer();
                self.inbound_batches
                    .submit(inbound, move |batch| {
                        let writer = writer.clone();
                        async move { writer.write_statement(move |c| Box::pin(insert_inbound_batch(c, batch))).await }
                    })
                    .await
            }

            async fn claim_inbound(&self, limit: u32, lease_until: Timestamp, now: Timestamp) -> Result<Vec<crate::InboundWebhook>> {
                self.worker_write(move |c| Box::pin(async move {
                    let rows = sqlx::query(CLAIM_INBOUND_SQL)
                        .bind(to_micros(lease_until))
                        .bind(to_micros(now))
                        .bind(i64::from(limit))
                        .fetch_all(&mut *c)
                        .await?;
                    rows.iter().map(inbound_from).collect()
                }))
                .await
            }

            async fn inbound_claimable(&self, now: Timestamp) -> Result<bool> {
                self.worker_read(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT EXISTS (SELECT 1 FROM inbound_webhooks
                             WHERE status = 'pending' AND (lease_until IS NULL OR lease_until <= $1)) AS claimable",
                    )
                    .bind(to_micros(now))
                    .fetch_one(&mut *c)
                    .await?;
                    Ok(row.try_get::<bool, _>("claimable")?)
                }))
                .await
            }

            async fn finish_inbound(&self, finished: &[crate::FinishedInbound], now: Timestamp) -> Result<()> {
                // One statement for the whole batch, its rows in one JSON parameter.
                let rows: Vec<serde_json::Value> = finished
                    .iter()
                    .map(|done| {
                        use crate::InboundStatus::{Failed, Pending, Processed};
                        let (status, event_type, event_id, error) = match &done.outcome {
                            crate::InboundOutcome::Processed { event_type, event_id } => {
                                (Processed, Some(event_type.as_str()), Some(event_id.as_str()), None)
                            }
                            crate::InboundOutcome::Failed { error, retry: true } => (Pending, None, None, Some(error.as_str())),
                            crate::InboundOutcome::Failed { error, retry: false } => (Failed, None, None, Some(error.as_str())),
                        };
                        serde_json::json!({
                            "tenant_id": done.tenant_id.as_str(), "id": done.id.as_str(), "status": status.as_str(),
                            "event_type": event_type, "event_id": event_id, "error": error,
                        })
                    })
                    .collect();
                let rows = serde_json::Value::Array(rows).to_string();
                let batch = match $backend {
                    Backend::Sqlite => "(SELECT value->>'tenant_id' AS tenant_id, value->>'id' AS id, value->>'status' AS status,
                            value->>'event_type' AS event_type, value->>'event_id' AS event_id, value->>'error' AS error
                        FROM json_each($1)) AS v",
                    Backend::Postgres => "jsonb_to_recordset($1::jsonb)
                        AS v(tenant_id text, id text, status text, event_type text, event_id text, error text)",
                };
                let sql = format!(
                    "UPDATE inbound_webhooks SET status = v.status, event_type = COALESCE(v.event_type, inbound_webhooks.event_type),
                         event_id = COALESCE(v.event_id, inbound_webhooks.event_id), last_error = v.error, lease_until = NULL,
                         processed_at = CASE WHEN v.status = 'pending' THEN inbound_webhooks.processed_at ELSE $2 END
                     FROM {batch}
                     WHERE inbound_webhooks.tenant_id = v.tenant_id AND inbound_webhooks.id = v.id"
                );
                self.worker_write(move |c| Box::pin(async move {
                    sqlx::query(&sql).bind(rows).bind(to_micros(now)).execute(&mut *c).await?;
                    Ok(())
                }))
                .await
            }

            async fn get_inbound(&self, tenant_id: &str, id: &str) -> Result<Option<crate::InboundWebhook>> {
                let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {INBOUND_COLUMNS} FROM inbound_webhooks WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(inbound_from).transpose()
                }))
                .await
            }

            async fn list_inbound(
                &self,
                tenant_id: &str,
                filter: &crate::InboundFilter,
                page: &Page,
            ) -> Result<Vec<crate::InboundWebhook>> {
                let (tenant_id, filter, page) = (tenant_id.to_string(), filter.clone(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {INBOUND_COLUMNS} FROM inbound_webhooks WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    if let Some(connection_id) = &filter.connection_id {
                        q.push(" AND connection_id = ").push_bind(connection_id.as_str());
                    }
                    if let Some(status) = &filter.status {
                        q.push(" AND status = ").push_bind(status.as_str());
                    }
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(inbound_from).collect()
                }))
                .await
            }

            async fn replay_inbound(&self, tenant_id: &str, id: &str) -> Result<Option<crate::InboundWebhook>> {
                let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
                self.write(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "UPDATE inbound_webhooks SET status = 'pending', lease_until = NULL, last_error = NULL
                         WHERE tenant_id = $1 AND id = $2 AND status <> 'rejected' RETURNING {INBOUND_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&id)
                    .fetch_optional(&mut *c)
                    .await?;
                    row.as_ref().map(inbound_from).transpose()
                }))
                .await
            }

            async fn inbound_counts(&self, tenant_id: &str) -> Result<crate::InboundCounts> {
                let tenant_id = tenant_id.to_string();
                self.read(move |c| Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT status, rejection, verified, COUNT(*) AS n, COALESCE(SUM(duplicates), 0) AS dups
                         FROM inbound_webhooks WHERE tenant_id = $1 GROUP BY status, rejection, verified",
                    )
                    .bind(&tenant_id)
                    .fetch_all(&mut *c)
                    .await?;
                    let mut counts = crate::InboundCounts::default();
                    for row in &rows {
                        let n = row.try_get::<i64, _>("n")?.max(0) as u64;
                        counts.duplicates += row.try_get::<i64, _>("dups")?.max(0) as u64;
                        counts.received += n;
                        let status: crate::InboundStatus = named(row, "status")?;
                        if status == crate::InboundStatus::Rejected {
                            let reason: Option<String> = row.try_get("rejection")?;
                            *counts.rejected_by_reason.entry(reason.unwrap_or_else(|| "unknown".into())).or_default() += n;
                            continue;
                        }
                        if row.try_get::<bool, _>("verified")? {
                            counts.verified += n;
                        } else {
                            counts.unsigned += n;
                        }
                        match status {
                            crate::InboundStatus::Pending => counts.pending += n,
                            crate::InboundStatus::Processed => counts.processed += n,
                            crate::InboundStatus::Failed | crate::InboundStatus::Rejected => counts.failed += n,
                        }
                    }
                    Ok(counts)
                }))
                .await
            }
        }
    };
}

pub(crate) use inbound_impl;
