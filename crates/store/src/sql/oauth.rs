//! OAuth2 connect flows and token refresh: the `OAuthStore` methods.

macro_rules! oauth_impl {
    ($store:ty, $db:ty) => {
        const STATE_COLUMNS: &str = "state_hash, tenant_id, connection_id, verifier_secret_id, redirect_uri, return_url,
            scopes, created_at, expires_at, used_at";

        fn oauth_state_from(row: &Row) -> Result<crate::OAuthState> {
            Ok(crate::OAuthState {
                state_hash: row.try_get("state_hash")?,
                tenant_id: id(row, "tenant_id")?,
                connection_id: id(row, "connection_id")?,
                redirect_uri: row.try_get("redirect_uri")?,
                return_url: row.try_get("return_url")?,
                scopes: json_column(row, "scopes")?,
                created_at: time(row, "created_at")?,
                expires_at: time(row, "expires_at")?,
            })
        }

        #[async_trait]
        impl crate::OAuthStore for $store {
            async fn create_oauth_state(
                &self,
                state: &crate::OAuthState,
                verifier: Option<&StoredSecret>,
            ) -> Result<()> {
                let (state, verifier) = (state.clone(), verifier.cloned());
                self.write(move |c| Box::pin(async move {
                    if let Some(secret) = &verifier {
                        put_secret_in_unit(c, secret).await?;
                    }
                    sqlx::query(&format!(
                        "INSERT INTO oauth_states ({STATE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"
                    ))
                    .bind(&state.state_hash)
                    .bind(state.tenant_id.as_str())
                    .bind(state.connection_id.as_str())
                    .bind(verifier.as_ref().map(|v| v.id.as_str()))
                    .bind(&state.redirect_uri)
                    .bind(state.return_url.as_deref())
                    .bind(to_json(&state.scopes))
                    .bind(to_micros(state.created_at))
                    .bind(to_micros(state.expires_at))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::conflict_or(e, "a pending authorization with this state"))?;
                    Ok(())
                }))
                .await
            }

            async fn take_oauth_state(&self, state_hash: &str, now: Timestamp) -> Result<crate::TakenState> {
                let state_hash = state_hash.to_string();
                self.write(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {STATE_COLUMNS} FROM oauth_states WHERE state_hash = $1"))
                        .bind(&state_hash)
                        .fetch_optional(&mut *c)
                        .await?;
                    let Some(row) = row else { return Ok(crate::TakenState::Unknown) };
                    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
                        return Ok(crate::TakenState::AlreadyUsed);
                    }
                    let state = oauth_state_from(&row)?;
                    if state.expires_at <= now {
                        return Ok(crate::TakenState::Expired);
                    }
                    // Whoever marks it used first has it; a concurrent second use finds it used.
                    let marked = sqlx::query("UPDATE oauth_states SET used_at = $2 WHERE state_hash = $1 AND used_at IS NULL")
                        .bind(&state_hash)
                        .bind(to_micros(now))
                        .execute(&mut *c)
                        .await?;
                    if marked.rows_affected() == 0 {
                        return Ok(crate::TakenState::AlreadyUsed);
                    }
                    let verifier = match row.try_get::<Option<String>, _>("verifier_secret_id")? {
                        Some(secret_id) => {
                            let secret = sqlx::query("SELECT id, tenant_id, key_id, ciphertext, updated_at FROM secrets WHERE tenant_id = $1 AND id = $2")
                                .bind(state.tenant_id.as_str())
                                .bind(&secret_id)
                                .fetch_optional(&mut *c)
                                .await?;
                            delete_secret(c, state.tenant_id.as_str(), &secret_id).await?;
                            secret.as_ref().map(secret_from).transpose()?
                        }
                        None => None,
                    };
                    Ok(crate::TakenState::Taken(Box::new((state, verifier))))
                }))
                .await
            }

            async fn prune_oauth_states(&self, before: Timestamp) -> Result<u64> {
                self.worker_write(move |c| Box::pin(async move {
                    let verifiers = sqlx::query(
                        "SELECT tenant_id, verifier_secret_id FROM oauth_states WHERE expires_at < $1 AND verifier_secret_id IS NOT NULL",
                    )
                    .bind(to_micros(before))
                    .fetch_all(&mut *c)
                    .await?;
                    for row in &verifiers {
                        let tenant_id: String = row.try_get("tenant_id")?;
                        let secret_id: String = row.try_get("verifier_secret_id")?;
                        delete_secret(c, &tenant_id, &secret_id).await?;
                    }
                    let done = sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
                        .bind(to_micros(before))
                        .execute(&mut *c)
                        .await?;
                    Ok(done.rows_affected())
                }))
                .await
            }

            async fn set_connection_tokens(
                &self,
                tenant_id: &str,
                id: &str,
                tokens: &crate::NewTokens,
            ) -> Result<Option<crate::Connection>> {
                let (tenant_id, id, tokens) = (tenant_id.to_string(), id.to_string(), tokens.clone());
                self.write(move |c| Box::pin(async move {
                    let previous = sqlx::query(
                        "SELECT credentials_secret_id, refresh_lease_owner FROM connections WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(&tenant_id)
                    .bind(&id)
                    .fetch_optional(&mut *c)
                    .await?;
                    let Some(previous) = previous else { return Ok(None) };
                    if let Some(owner) = &tokens.lease_owner
                        && previous.try_get::<Option<String>, _>("refresh_lease_owner")?.as_ref() != Some(owner)
                    {
                        return Ok(None);
                    }
                    put_secret_in_unit(c, &tokens.credentials).await?;
                    let row = sqlx::query(&format!(
                        "UPDATE connections SET credentials_secret_id = $3, credential_fields = $4, auth_state = $5,
                             token_expires_at = $6, token_issued_at = $9, token_scopes = $7,
                             last_refresh_at = COALESCE($8, last_refresh_at),
                             refresh_failures = 0, refresh_retry_at = NULL, refresh_lease_until = NULL,
                             refresh_lease_owner = NULL, version = version + 1, updated_at = $9,
                             config = COALESCE($10, config)
                         WHERE tenant_id = $1 AND id = $2 RETURNING {CONNECTION_COLUMNS}"
                    ))
                    .bind(&tenant_id)
                    .bind(&id)
                    .bind(tokens.credentials.id.as_str())
                    .bind(fields_json(&tokens.fields))
                    .bind(tokens.auth_state.as_str())
                    .bind(tokens.expires_at.map(to_micros))
                    .bind(to_json(&tokens.scopes))
                    .bind(tokens.refreshed_at.map(to_micros))
                    .bind(to_micros(tokens.credentials.updated_at))
                    .bind(tokens.config.as_deref())
                    .fetch_one(&mut *c)
                    .await?;
                    if let Some(old) = previous.try_get::<Option<String>, _>("credentials_secret_id")?
                        && old != tokens.credentials.id.as_str()
                    {
                        delete_secret(c, &tenant_id, &old).await?;
                    }
                    connection_from(&row).map(Some)
                }))
                .await
            }

            async fn record_refresh_failure(
                &self,
                tenant_id: &str,
                id: &str,
                failure: &crate::RefreshFailure,
            ) -> Result<()> {
                let (tenant_id, id, failure) = (tenant_id.to_string(), id.to_string(), failure.clone());
                let enqueued = self.write(move |c| Box::pin(async move {
                    let recorded = sqlx::query(
                        "UPDATE connections SET refresh_failures = refresh_failures + 1, refresh_retry_at = $3,
                             last_error = $4, last_error_at = $5, auth_state = COALESCE($6, auth_state),
                             refresh_lease_until = NULL, refresh_lease_owner = NULL
                         WHERE tenant_id = $1 AND id = $2 AND refresh_lease_owner = $7",
                    )
                    .bind(&tenant_id)
                    .bind(&id)
                    .bind(failure.retry_at.map(to_micros))
                    .bind(&failure.error)
                    .bind(to_micros(failure.at))
                    .bind(failure.auth_state.map(crate::AuthState::as_str))
                    .bind(&failure.lease_owner)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
                        == 1;
                    if recorded {
                        insert_jobs(&mut *c, &failure.jobs).await?;
                    }
                    Ok(recorded && !failure.jobs.is_empty())
                }))
                .await?;
                if enqueued {
                    self.signal.wake(crate::queue::Work::Jobs);
                }
                Ok(())
            }

            async fn lease_refresh(
                &self,
                tenant_id: &str,
                id: &str,
                owner: &str,
                until: Timestamp,
                now: Timestamp,
            ) -> Result<bool> {
                let (tenant_id, id, owner) = (tenant_id.to_string(), id.to_string(), owner.to_string());
                self.write(move |c| Box::pin(async move {
                    // On PostgreSQL a concurrent lease waits for this row's lock, then re-checks
                    // the condition against the committed row and finds it held.
                    let done = sqlx::query(
                        "UPDATE connections SET refresh_lease_owner = $3, refresh_lease_until = $4
                         WHERE tenant_id = $1 AND id = $2
                           AND (refresh_lease_until IS NULL OR refresh_lease_until <= $5)",
                    )
                    .bind(&tenant_id)
                    .bind(&id)
                    .bind(&owner)
                    .bind(to_micros(until))
                    .bind(to_micros(now))
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }))
                .await
            }

            async fn release_refresh(&self, tenant_id: &str, id: &str, owner: &str) -> Result<()> {
                let (tenant_id, id, owner) = (tenant_id.to_string(), id.to_string(), owner.to_string());
                self.write(move |c| Box::pin(async move {
                    sqlx::query(
                        "UPDATE connections SET refresh_lease_owner = NULL, refresh_lease_until = NULL
                         WHERE tenant_id = $1 AND id = $2 AND refresh_lease_owner = $3",
                    )
                    .bind(&tenant_id)
                    .bind(&id)
                    .bind(&owner)
                    .execute(&mut *c)
                    .await?;
                    Ok(())
                }))
                .await
            }

            async fn connections_due_for_refresh(
                &self,
                now: Timestamp,
                margin: chrono::TimeDelta,
                limit: u32,
            ) -> Result<Vec<(Id, Id)>> {
                let margin = margin.num_microseconds().unwrap_or(i64::MAX);
                self.worker_read(move |c| Box::pin(async move {
                    // Left before expiry < min(margin, a quarter of the lifetime); the first
                    // test uses the expiry index.
                    let rows = sqlx::query(
                        "SELECT tenant_id, id FROM connections
                         WHERE token_expires_at IS NOT NULL AND token_expires_at < $1 + $2 AND auth_mode = 'oauth2'
                           AND token_expires_at - $1 < CASE
                               WHEN token_issued_at IS NOT NULL AND (token_expires_at - token_issued_at) / 4 < $2
                               THEN (token_expires_at - token_issued_at) / 4 ELSE $2 END
                           AND auth_state <> 'auth_failed'
                           AND (refresh_retry_at IS NULL OR refresh_retry_at <= $1)
                           AND (refresh_lease_until IS NULL OR refresh_lease_until <= $1)
                         ORDER BY token_expires_at LIMIT $3",
                    )
                    .bind(to_micros(now))
                    .bind(margin)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *c)
                    .await?;
                    rows.iter().map(|row| Ok((id(row, "tenant_id")?, id(row, "id")?))).collect()
                }))
                .await
            }
        }
    };
}

pub(crate) use oauth_impl;
