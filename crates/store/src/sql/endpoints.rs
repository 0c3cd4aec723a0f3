//! Endpoints (subscriptions) and their signing secrets: the `EndpointStore` methods.

macro_rules! endpoints_impl {
    ($store:ty, $db:ty) => {
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
                disabled_reason: opt_named(row, "disabled_reason")?,
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

        fn to_json<T: serde::Serialize>(value: &T) -> String {
            serde_json::to_string(value).expect("plain data serialises")
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
        impl crate::EndpointStore for $store {
            async fn create_endpoint(&self, endpoint: &Endpoint, secret: &StoredSecret) -> Result<Endpoint> {
                let (endpoint, secret) = (endpoint.clone(), secret.clone());
                self.write(move |c| Box::pin(async move {
                    put_secret_in_unit(c, &secret).await?;
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
                    .bind(endpoint.disabled_reason.map(crate::DisabledReason::as_str))
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
                            q.push(", enabled = FALSE, disabled_reason = 'manual'");
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
                    put_secret_in_unit(c, &secret).await?;
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
        }
    };
}

pub(crate) use endpoints_impl;
