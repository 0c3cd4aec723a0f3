//! Connections and their credentials: the `ConnectionStore` methods.

macro_rules! connections_impl {
    ($store:ty, $db:ty, $backend:expr) => {
        const INSERT_COLUMNS: &str = "id, tenant_id, provider, name, auth_mode, config, credentials_secret_id,
            credential_fields, auth_state, last_success_at, last_error, last_error_at, last_test_at, last_test_ok,
            version, created_at, updated_at";
        const CONNECTION_COLUMNS: &str = "id, tenant_id, provider, name, auth_mode, config, credentials_secret_id,
            credential_fields, auth_state, last_success_at, last_error, last_error_at, last_test_at, last_test_ok,
            version, created_at, updated_at, token_expires_at, token_issued_at, token_scopes, last_refresh_at,
            refresh_failures, refresh_retry_at";

        fn connection_from(row: &Row) -> Result<crate::Connection> {
            let fields: std::collections::BTreeMap<String, i64> = json_column(row, "credential_fields")?;
            Ok(crate::Connection {
                id: id(row, "id")?,
                tenant_id: id(row, "tenant_id")?,
                provider: row.try_get("provider")?,
                name: row.try_get("name")?,
                auth_mode: row.try_get("auth_mode")?,
                config: row.try_get("config")?,
                credentials_secret_id: row.try_get::<Option<String>, _>("credentials_secret_id")?.map(Id::from_trusted),
                credential_fields: fields.into_iter().map(|(k, v)| (k, from_micros(v))).collect(),
                auth_state: named(row, "auth_state")?,
                last_success_at: opt_time(row, "last_success_at")?,
                last_error: row.try_get("last_error")?,
                last_error_at: opt_time(row, "last_error_at")?,
                last_test_at: opt_time(row, "last_test_at")?,
                last_test_ok: row.try_get("last_test_ok")?,
                version: row.try_get("version")?,
                created_at: time(row, "created_at")?,
                updated_at: time(row, "updated_at")?,
                token: crate::TokenState {
                    expires_at: opt_time(row, "token_expires_at")?,
                    issued_at: opt_time(row, "token_issued_at")?,
                    scopes: json_column(row, "token_scopes")?,
                    last_refresh_at: opt_time(row, "last_refresh_at")?,
                    refresh_failures: row.try_get::<i32, _>("refresh_failures")?.max(0) as u32,
                    refresh_retry_at: opt_time(row, "refresh_retry_at")?,
                },
            })
        }

        fn fields_json(fields: &std::collections::BTreeMap<String, Timestamp>) -> String {
            let micros: std::collections::BTreeMap<&String, i64> = fields.iter().map(|(k, v)| (k, to_micros(*v))).collect();
            to_json(&micros)
        }

        #[async_trait]
        impl crate::ConnectionStore for $store {
            async fn create_connection(
                &self,
                connection: &crate::Connection,
                credentials: Option<&StoredSecret>,
            ) -> Result<crate::Connection> {
                let (connection, credentials) = (connection.clone(), credentials.cloned());
                self.write(move |c| Box::pin(async move {
                    if let Some(secret) = &credentials {
                        put_secret_in_unit(c, secret).await?;
                    }
                    sqlx::query(&format!(
                        "INSERT INTO connections ({INSERT_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
                    ))
                    .bind(connection.id.as_str())
                    .bind(connection.tenant_id.as_str())
                    .bind(&connection.provider)
                    .bind(&connection.name)
                    .bind(&connection.auth_mode)
                    .bind(&connection.config)
                    .bind(connection.credentials_secret_id.as_ref().map(|i| i.as_str()))
                    .bind(fields_json(&connection.credential_fields))
                    .bind(connection.auth_state.as_str())
                    .bind(connection.last_success_at.map(to_micros))
                    .bind(connection.last_error.as_deref())
                    .bind(connection.last_error_at.map(to_micros))
                    .bind(connection.last_test_at.map(to_micros))
                    .bind(connection.last_test_ok)
                    .bind(connection.version)
                    .bind(to_micros(connection.created_at))
                    .bind(to_micros(connection.updated_at))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::conflict_or(e, "a connection with this id"))?;
                    Ok(connection)
                }))
                .await
            }

            async fn get_connection(&self, tenant_id: &str, id: &str) -> Result<Option<crate::Connection>> {
                let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(connection_from).transpose()
                }))
                .await
            }

            async fn get_connection_with_credentials(
                &self,
                tenant_id: &str,
                id: &str,
            ) -> Result<Option<(crate::Connection, Option<StoredSecret>)>> {
                let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
                self.read(move |c| Box::pin(async move {
                    let columns: Vec<String> = CONNECTION_COLUMNS.split(',').map(|col| format!("c.{}", col.trim())).collect();
                    let row = sqlx::query(&format!(
                        "SELECT {}, s.key_id AS secret_key_id, s.ciphertext AS secret_ciphertext,
                             s.updated_at AS secret_updated_at
                         FROM connections c
                         LEFT JOIN secrets s ON s.tenant_id = c.tenant_id AND s.id = c.credentials_secret_id
                         WHERE c.tenant_id = $1 AND c.id = $2",
                        columns.join(", ")
                    ))
                    .bind(&tenant_id)
                    .bind(&id)
                    .fetch_optional(&mut *c)
                    .await?;
                    let Some(row) = row else { return Ok(None) };
                    let connection = connection_from(&row)?;
                    let secret = match (&connection.credentials_secret_id, row.try_get::<Option<String>, _>("secret_key_id")?) {
                        (Some(secret_id), Some(key_id)) => Some(StoredSecret {
                            id: secret_id.clone(),
                            tenant_id: connection.tenant_id.clone(),
                            key_id,
                            ciphertext: row.try_get("secret_ciphertext")?,
                            updated_at: time(&row, "secret_updated_at")?,
                        }),
                        _ => None,
                    };
                    Ok(Some((connection, secret)))
                }))
                .await
            }

            async fn find_connection(&self, id: &str) -> Result<Option<crate::Connection>> {
                let id = id.to_string();
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = $1"))
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(connection_from).transpose()
                }))
                .await
            }

            async fn list_connections(&self, tenant_id: &str, page: &Page) -> Result<Vec<crate::Connection>> {
                let (tenant_id, page) = (tenant_id.to_string(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(connection_from).collect()
                }))
                .await
            }

            async fn delete_connection(&self, tenant_id: &str, id: &str) -> Result<bool> {
                let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
                self.write(move |c| Box::pin(async move {
                    let row = sqlx::query("DELETE FROM connections WHERE tenant_id = $1 AND id = $2 RETURNING credentials_secret_id")
                        .bind(&tenant_id)
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                    let Some(row) = row else { return Ok(false) };
                    if let Some(secret) = row.try_get::<Option<String>, _>("credentials_secret_id")? {
                        delete_secret(c, &tenant_id, &secret).await?;
                    }
                    Ok(true)
                }))
                .await
            }

            async fn set_connection_credentials(
                &self,
                tenant_id: &str,
                id: &str,
                credentials: &StoredSecret,
                fields: &std::collections::BTreeMap<String, Timestamp>,
                auth_state: crate::AuthState,
            ) -> Result<Option<crate::Connection>> {
                let (tenant_id, id, credentials) = (tenant_id.to_string(), id.to_string(), credentials.clone());
                let fields = fields_json(fields);
                self.write(move |c| Box::pin(async move {
                    let previous = sqlx::query("SELECT credentials_secret_id FROM connections WHERE tenant_id = $1 AND id = $2")
                        .bind(&tenant_id)
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                    let Some(previous) = previous else { return Ok(None) };
                    put_secret_in_unit(c, &credentials).await?;
                    let row = sqlx::query(&format!(
                        "UPDATE connections SET credentials_secret_id = $3, credential_fields = $4, auth_state = $5,
                             version = version + 1, updated_at = $6
                         WHERE tenant_id = $1 AND id = $2 RETURNING {CONNECTION_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&id)
                    .bind(credentials.id.as_str())
                    .bind(&fields)
                    .bind(auth_state.as_str())
                    .bind(to_micros(credentials.updated_at))
                    .fetch_one(&mut *c)
                    .await?;
                    if let Some(old) = previous.try_get::<Option<String>, _>("credentials_secret_id")?
                        && old != credentials.id.as_str()
                    {
                        delete_secret(c, &tenant_id, &old).await?;
                    }
                    connection_from(&row).map(Some)
                }))
                .await
            }

            async fn record_connection_health(&self, updates: &[crate::ConnectionHealthUpdate]) -> Result<()> {
                let updates = updates.to_vec();
                self.worker_write(move |c| Box::pin(async move {
                    for u in &updates {
                        sqlx::query(
                            "UPDATE connections SET
                                 last_success_at = CASE WHEN $3 IS NULL THEN last_success_at
                                     ELSE MAX_OF(COALESCE(last_success_at, 0), $3) END,
                                 last_error = COALESCE($4, last_error),
                                 last_error_at = COALESCE($5, last_error_at),
                                 auth_state = COALESCE($6, auth_state),
                                 last_test_at = COALESCE($7, last_test_at),
                                 last_test_ok = COALESCE($8, last_test_ok)
                             WHERE tenant_id = $1 AND id = $2"
                                .replace("MAX_OF", if matches!($backend, Backend::Sqlite) { "MAX" } else { "GREATEST" })
                                .as_str(),
                        )
                        .bind(u.tenant_id.as_str())
                        .bind(u.connection_id.as_str())
                        .bind(u.last_success_at.map(to_micros))
                        .bind(u.last_error.as_ref().map(|(message, _)| message.as_str()))
                        .bind(u.last_error.as_ref().map(|(_, at)| to_micros(*at)))
                        .bind(u.auth_state.map(crate::AuthState::as_str))
                        .bind(u.test.map(|(at, _)| to_micros(at)))
                        .bind(u.test.map(|(_, ok)| ok))
                        .execute(&mut *c)
                        .await?;
                    }
                    Ok(())
                }))
                .await
            }

            async fn installs_per_provider(&self) -> Result<std::collections::HashMap<String, u64>> {
                self.read(move |c| Box::pin(async move {
                    let rows = sqlx::query("SELECT provider, COUNT(*) AS installs FROM connections GROUP BY provider")
                        .fetch_all(&mut *c)
                        .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get::<String, _>("provider")?, row.try_get::<i64, _>("installs")?.max(0) as u64)))
                        .collect()
                }))
                .await
            }
        }
    };
}

pub(crate) use connections_impl;
