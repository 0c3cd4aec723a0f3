//! Records and their change streams: the `RecordStore` methods.

macro_rules! records_impl {
    ($store:ty, $db:ty, $backend:expr) => {
        const RECORD_COLUMNS: &str =
            "external_id, data, hash, version, first_seen_at, updated_at, deleted_at, run_id, change_seq";

        fn record_from(row: &Row) -> Result<crate::records::Record> {
            Ok(crate::records::Record {
                external_id: row.try_get("external_id")?,
                data: row.try_get("data")?,
                hash: row.try_get("hash")?,
                version: row.try_get("version")?,
                first_seen_at: time(row, "first_seen_at")?,
                updated_at: time(row, "updated_at")?,
                deleted_at: opt_time(row, "deleted_at")?,
                run_id: row.try_get::<Option<String>, _>("run_id")?.map(Id::from_trusted),
                change_seq: row.try_get("change_seq")?,
            })
        }

        /// Holds the stream's row until the unit commits, so its writers take turns: on
        /// PostgreSQL with a row lock (SQLite's single writer takes turns already). Creating a
        /// stream is its only write.
        async fn lock_stream(c: &mut Conn, stream: &crate::records::RecordStream) -> Result<()> {
            sqlx::query(
                "INSERT INTO record_streams (tenant_id, connection_id, model, last_seq) VALUES ($1, $2, $3, 0)
                 ON CONFLICT DO NOTHING",
            )
            .bind(stream.tenant_id.as_str())
            .bind(stream.connection_id.as_str())
            .bind(&stream.model)
            .execute(&mut *c)
            .await?;
            if matches!($backend, Backend::Postgres) {
                sqlx::query(
                    "SELECT last_seq FROM record_streams WHERE tenant_id = $1 AND connection_id = $2 AND model = $3
                     FOR UPDATE",
                )
                .bind(stream.tenant_id.as_str())
                .bind(stream.connection_id.as_str())
                .bind(&stream.model)
                .execute(&mut *c)
                .await?;
            }
            Ok(())
        }

        /// Takes the next `count` places of the stream's change order; answers the first.
        async fn take_seqs(c: &mut Conn, stream: &crate::records::RecordStream, count: usize) -> Result<i64> {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            let row = sqlx::query(
                "UPDATE record_streams SET last_seq = last_seq + $4
                 WHERE tenant_id = $1 AND connection_id = $2 AND model = $3 RETURNING last_seq",
            )
            .bind(stream.tenant_id.as_str())
            .bind(stream.connection_id.as_str())
            .bind(&stream.model)
            .bind(count)
            .fetch_one(&mut *c)
            .await?;
            Ok(row.try_get::<i64, _>("last_seq")? - count + 1)
        }

        /// The stored hash and whether deleted, of those of `ids` the stream has.
        async fn stored_states(
            c: &mut Conn,
            stream: &crate::records::RecordStream,
            ids: &[String],
        ) -> Result<std::collections::HashMap<String, (String, bool)>> {
            let mut q = sqlx::QueryBuilder::<$db>::new("SELECT external_id, hash, deleted_at FROM records WHERE tenant_id = ");
            q.push_bind(stream.tenant_id.as_str()).push(" AND connection_id = ").push_bind(stream.connection_id.as_str());
            q.push(" AND model = ").push_bind(stream.model.as_str()).push(" AND external_id");
            push_id_list(&mut q, ids);
            let mut states = std::collections::HashMap::with_capacity(ids.len());
            for row in q.build().fetch_all(&mut *c).await? {
                let deleted = row.try_get::<Option<i64>, _>("deleted_at")?.is_some();
                states.insert(row.try_get::<String, _>("external_id")?, (row.try_get::<String, _>("hash")?, deleted));
            }
            Ok(states)
        }

        /// Marks `ids` seen by the full-refresh run `run_id`, in one statement (the ids as one
        /// JSON array).
        async fn mark_seen(c: &mut Conn, stream: &crate::records::RecordStream, run_id: &str, ids: &[String]) -> Result<()> {
            let ids_list = match $backend {
                Backend::Sqlite => "json_each($5) AS ids",
                Backend::Postgres => "jsonb_array_elements_text(CAST($5 AS JSONB)) AS ids (value)",
            };
            // `WHERE true`: SQLite would read `ON CONFLICT` as the join's constraint otherwise.
            let query = format!(
                "INSERT INTO records_seen (tenant_id, run_id, connection_id, model, external_id)
                 SELECT $1, $2, $3, $4, ids.value FROM {ids_list} WHERE true
                 ON CONFLICT DO NOTHING"
            );
            sqlx::query(&query)
                .bind(stream.tenant_id.as_str())
                .bind(run_id)
                .bind(stream.connection_id.as_str())
                .bind(&stream.model)
                .bind(serde_json::json!(ids).to_string())
                .execute(&mut *c)
                .await?;
            Ok(())
        }

        #[async_trait]
        impl crate::records::RecordStore for $store {
            async fn write_records(
                &self,
                stream: &crate::records::RecordStream,
                records: Vec<crate::records::NewRecord>,
                run_id: Option<&Id>,
                seen_by: Option<&Id>,
                at: Timestamp,
            ) -> Result<crate::records::RecordCounts> {
                crate::records::check_batch(records.len())?;
                if records.is_empty() {
                    return Ok(crate::records::RecordCounts::default());
                }
                let records = crate::records::last_of_each(records);
                let (stream, run_id, seen_by) = (stream.clone(), run_id.map(Id::to_string), seen_by.map(Id::to_string));
                self.write(move |c| Box::pin(async move {
                    lock_stream(c, &stream).await?;
                    let ids: Vec<String> = records.iter().map(|r| r.external_id.clone()).collect();
                    if let Some(seen_by) = &seen_by {
                        mark_seen(c, &stream, seen_by, &ids).await?;
                    }
                    let stored = stored_states(c, &stream, &ids).await?;
                    let mut counts = crate::records::RecordCounts::default();
                    let mut changed = Vec::with_capacity(records.len());
                    for record in records {
                        match stored.get(&record.external_id) {
                            None => counts.added += 1,
                            Some((hash, deleted)) if *deleted || *hash != record.hash => counts.updated += 1,
                            Some(_) => {
                                counts.unchanged += 1;
                                continue;
                            }
                        }
                        changed.push(record);
                    }
                    if changed.is_empty() {
                        return Ok(counts);
                    }
                    let first = take_seqs(c, &stream, changed.len()).await?;
                    for (seq, record) in (first..).zip(changed) {
                        sqlx::query(
                            "INSERT INTO records (tenant_id, connection_id, model, external_id, data, hash, version,
                                 first_seen_at, updated_at, deleted_at, run_id, change_seq)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL, $9, $10)
                             ON CONFLICT (tenant_id, connection_id, model, external_id) DO UPDATE SET
                                 data = excluded.data, hash = excluded.hash, version = excluded.version,
                                 updated_at = excluded.updated_at, deleted_at = NULL, run_id = excluded.run_id,
                                 change_seq = excluded.change_seq",
                        )
                        .bind(stream.tenant_id.as_str())
                        .bind(stream.connection_id.as_str())
                        .bind(&stream.model)
                        .bind(&record.external_id)
                        .bind(&record.data)
                        .bind(&record.hash)
                        .bind(record.version.as_deref())
                        .bind(to_micros(at))
                        .bind(run_id.as_deref())
                        .bind(seq)
                        .execute(&mut *c)
                        .await?;
                    }
                    Ok(counts)
                }))
                .await
            }

            async fn delete_records(
                &self,
                stream: &crate::records::RecordStream,
                external_ids: Vec<String>,
                run_id: Option<&Id>,
                at: Timestamp,
            ) -> Result<u64> {
                crate::records::check_batch(external_ids.len())?;
                if external_ids.is_empty() {
                    return Ok(0);
                }
                let (stream, run_id) = (stream.clone(), run_id.map(Id::to_string));
                self.write(move |c| Box::pin(async move {
                    lock_stream(c, &stream).await?;
                    let stored = stored_states(c, &stream, &external_ids).await?;
                    let mut live: Vec<&String> = stored.iter().filter(|(_, (_, deleted))| !deleted).map(|(id, _)| id).collect();
                    if live.is_empty() {
                        return Ok(0);
                    }
                    live.sort_unstable();
                    let first = take_seqs(c, &stream, live.len()).await?;
                    for (seq, external_id) in (first..).zip(&live) {
                        sqlx::query(
                            "UPDATE records SET deleted_at = $5, updated_at = $5, run_id = $6, change_seq = $7
                             WHERE tenant_id = $1 AND connection_id = $2 AND model = $3 AND external_id = $4",
                        )
                        .bind(stream.tenant_id.as_str())
                        .bind(stream.connection_id.as_str())
                        .bind(&stream.model)
                        .bind(external_id.as_str())
                        .bind(to_micros(at))
                        .bind(run_id.as_deref())
                        .bind(seq)
                        .execute(&mut *c)
                        .await?;
                    }
                    Ok(live.len() as u64)
                }))
                .await
            }

            async fn unseen_records(&self, stream: &crate::records::RecordStream, run_id: &Id, limit: u32) -> Result<Vec<String>> {
                let (stream, run_id) = (stream.clone(), run_id.to_string());
                self.worker_read(move |c| Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT r.external_id FROM records r
                         WHERE r.tenant_id = $1 AND r.connection_id = $2 AND r.model = $3 AND r.deleted_at IS NULL
                           AND NOT EXISTS (SELECT 1 FROM records_seen s
                                           WHERE s.run_id = $4 AND s.model = r.model AND s.external_id = r.external_id)
                         ORDER BY r.external_id LIMIT $5",
                    )
                    .bind(stream.tenant_id.as_str())
                    .bind(stream.connection_id.as_str())
                    .bind(&stream.model)
                    .bind(&run_id)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *c)
                    .await?;
                    rows.iter().map(|row| Ok(row.try_get::<String, _>("external_id")?)).collect()
                }))
                .await
            }

            async fn forget_seen(&self, tenant_id: &Id, run_id: &Id) -> Result<()> {
                let (tenant_id, run_id) = (tenant_id.to_string(), run_id.to_string());
                self.worker_write(move |c| Box::pin(async move {
                    sqlx::query("DELETE FROM records_seen WHERE tenant_id = $1 AND run_id = $2")
                        .bind(&tenant_id)
                        .bind(&run_id)
                        .execute(&mut *c)
                        .await?;
                    Ok(())
                }))
                .await
            }

            async fn list_records(
                &self,
                stream: &crate::records::RecordStream,
                filter: &crate::records::RecordFilter,
            ) -> Result<Vec<crate::records::Record>> {
                let (stream, filter) = (stream.clone(), filter.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = "));
                    q.push_bind(stream.tenant_id.as_str()).push(" AND connection_id = ").push_bind(stream.connection_id.as_str());
                    q.push(" AND model = ").push_bind(stream.model.as_str());
                    q.push(" AND change_seq > ").push_bind(filter.after_seq.unwrap_or(0));
                    if let Some(after) = filter.modified_after {
                        q.push(" AND updated_at > ").push_bind(to_micros(after));
                    }
                    if !filter.include_deleted {
                        q.push(" AND deleted_at IS NULL");
                    }
                    q.push(" ORDER BY change_seq LIMIT ").push_bind(i64::from(filter.limit));
                    q.build().fetch_all(&mut *c).await?.iter().map(record_from).collect()
                }))
                .await
            }
        }
    };
}

pub(crate) use records_impl;
