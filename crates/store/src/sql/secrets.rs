//! Sealed secrets: the `SecretStore` methods.

macro_rules! secrets_impl {
    ($store:ty, $db:ty) => {
        #[async_trait]
        impl crate::SecretStore for $store {
            async fn put_secret(&self, secret: &StoredSecret) -> Result<()> {
                let secret = secret.clone();
                self.write(move |c| Box::pin(async move { put_secret_in_unit(c, &secret).await })).await
            }

            async fn get_secret(&self, tenant_id: &str, secret_id: &str) -> Result<Option<StoredSecret>> {
                let (tenant_id, secret_id) = (tenant_id.to_string(), secret_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query("SELECT id, tenant_id, key_id, ciphertext, updated_at FROM secrets WHERE tenant_id = $1 AND id = $2")
                        .bind(&tenant_id)
                        .bind(&secret_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(secret_from).transpose()
                }))
                .await
            }

            async fn secrets_sealed_with_other_keys(
                &self,
                tenant_id: &str,
                primary_key_id: &str,
                after_id: Option<&str>,
                limit: u32,
            ) -> Result<Vec<StoredSecret>> {
                let (tenant_id, primary, after) = (tenant_id.to_string(), primary_key_id.to_string(), after_id.unwrap_or("").to_string());
                self.read(move |c| Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, tenant_id, key_id, ciphertext, updated_at FROM secrets
                         WHERE tenant_id = $1 AND key_id <> $2 AND id > $3 ORDER BY id LIMIT $4",
                    )
                    .bind(&tenant_id)
                    .bind(&primary)
                    .bind(&after)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *c)
                    .await?;
                    rows.iter().map(secret_from).collect()
                }))
                .await
            }

            async fn reseal_secret(&self, secret: &StoredSecret, as_read: &StoredSecret) -> Result<bool> {
                let (secret, as_read) = (secret.clone(), as_read.clone());
                self.write(move |c| Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE secrets SET key_id = $3, ciphertext = $4, updated_at = $5
                         WHERE tenant_id = $1 AND id = $2 AND key_id = $6 AND ciphertext = $7",
                    )
                    .bind(secret.tenant_id.as_str())
                    .bind(secret.id.as_str())
                    .bind(&secret.key_id)
                    .bind(&secret.ciphertext)
                    .bind(to_micros(secret.updated_at))
                    .bind(&as_read.key_id)
                    .bind(&as_read.ciphertext)
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }))
                .await
            }

            async fn count_secrets_sealed_with_other_keys(&self, primary_key_id: &str) -> Result<u64> {
                let primary = primary_key_id.to_string();
                self.read(move |c| Box::pin(async move {
                    // Per tenant, then summed: every query names its tenant.
                    let row = sqlx::query(
                        "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS total FROM (
                             SELECT COUNT(*) AS n FROM secrets s JOIN tenants t ON t.tenant_id = s.tenant_id
                             WHERE s.key_id <> $1 GROUP BY s.tenant_id) per_tenant",
                    )
                    .bind(&primary)
                    .fetch_one(&mut *c)
                    .await?;
                    Ok(row.try_get::<i64, _>("total")?.max(0) as u64)
                }))
                .await
            }
        }
    };
}

pub(crate) use secrets_impl;
