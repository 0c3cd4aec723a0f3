//! Tenants, API keys, event types and events: the `Store` methods.

macro_rules! domain_impl {
    ($store:ty, $db:ty, $backend:expr) => {
        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                self.read(|c| Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&mut *c).await?;
                    Ok(())
                }))
                .await
            }

            async fn close(&self) {
                self.shutdown().await
            }

            async fn bootstrap_operator(&self, tenant: &NewTenant, key: &NewApiKey) -> Result<Option<Tenant>> {
                let (tenant, key) = (tenant.clone(), key.clone());
                self.write(move |c| Box::pin(async move {
                    if insert_tenant(c, &tenant, true).await? == 0 {
                        return Ok(None);
                    }
                    insert_api_key(c, &key).await?;
                    Ok(Some(Tenant { id: tenant.id, name: tenant.name, is_operator: true, created_at: tenant.created_at }))
                }))
                .await
            }

            async fn create_tenant(&self, tenant: &NewTenant, first_key: Option<&NewApiKey>) -> Result<Tenant> {
                let (tenant, key) = (tenant.clone(), first_key.cloned());
                self.write(move |c| Box::pin(async move {
                    if insert_tenant(c, &tenant, false).await? == 0 {
                        return Err(StoreError::Conflict("a tenant with this id"));
                    }
                    if let Some(key) = &key {
                        insert_api_key(c, key).await?;
                    }
                    Ok(Tenant { id: tenant.id, name: tenant.name, is_operator: false, created_at: tenant.created_at })
                }))
                .await
            }

            async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>> {
                let tenant_id = tenant_id.to_string();
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query("SELECT id, name, is_operator, created_at FROM tenants WHERE tenant_id = $1")
                        .bind(&tenant_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(tenant_from).transpose()
                }))
                .await
            }

            async fn list_tenants(&self, page: &Page) -> Result<Vec<Tenant>> {
                let page = page.clone();
                self.read(move |c| Box::pin(async move {
                    // Listing tenants is the operator's view across tenants.
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id, name, is_operator, created_at FROM tenants WHERE tenant_id = id");
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(tenant_from).collect()
                }))
                .await
            }

            async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKey> {
                let key = key.clone();
                self.write(move |c| Box::pin(async move {
                    insert_api_key(c, &key).await?;
                    Ok(key.as_stored())
                }))
                .await
            }

            async fn list_api_keys(&self, tenant_id: &str, page: &Page) -> Result<Vec<ApiKey>> {
                let (tenant_id, page) = (tenant_id.to_string(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(api_key_from).collect()
                }))
                .await
            }

            async fn get_api_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<ApiKey>> {
                let (tenant_id, key_id) = (tenant_id.to_string(), key_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&key_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(api_key_from).transpose()
                }))
                .await
            }

            async fn revoke_api_key(&self, tenant_id: &str, key_id: &str, at: Timestamp) -> Result<bool> {
                let (tenant_id, key_id) = (tenant_id.to_string(), key_id.to_string());
                self.write(move |c| Box::pin(async move {
                    let done = sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
                        .bind(&tenant_id)
                        .bind(&key_id)
                        .bind(to_micros(at))
                        .execute(&mut *c)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }))
                .await
            }

            async fn authenticate(&self, key_hash: &str) -> Result<Option<(ApiKey, bool)>> {
                let key_hash = key_hash.to_string();
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT k.id, k.tenant_id, k.name, k.scope, k.masked, k.expires_at, k.revoked_at, k.created_at, t.is_operator
                         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id AND t.tenant_id = k.tenant_id
                         WHERE k.key_hash = $1",
                    )
                    .bind(&key_hash)
                    .fetch_optional(&mut *c)
                    .await?;
                    match row {
                        Some(row) => Ok(Some((api_key_from(&row)?, row.try_get("is_operator")?))),
                        None => Ok(None),
                    }
                }))
                .await
            }

            async fn create_event_type(&self, et: &NewEventType) -> Result<EventType> {
                let et = et.clone();
                self.write(move |c| Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO event_types (id, tenant_id, name, description, schema, version, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
                    )
                    .bind(et.id.as_str())
                    .bind(et.tenant_id.as_str())
                    .bind(&et.name)
                    .bind(&et.description)
                    .bind(et.schema.as_deref())
                    .bind(to_micros(et.created_at))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::conflict_or(e, "an event type with this name"))?;
                    Ok(EventType {
                        id: et.id,
                        tenant_id: et.tenant_id,
                        name: et.name,
                        description: et.description,
                        schema: et.schema,
                        version: 1,
                        created_at: et.created_at,
                        updated_at: et.created_at,
                    })
                }))
                .await
            }

            async fn update_event_type(&self, tenant_id: &str, name: &str, patch: &EventTypePatch) -> Result<Option<EventType>> {
                let (tenant_id, name, patch) = (tenant_id.to_string(), name.to_string(), patch.clone());
                self.write(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE event_types SET version = version + 1");
                    if let Some(description) = &patch.description {
                        q.push(", description = ").push_bind(description.as_str());
                    }
                    if let Some(schema) = &patch.schema {
                        q.push(", schema = ").push_bind(schema.as_deref());
                    }
                    if let Some(at) = patch.updated_at {
                        q.push(", updated_at = ").push_bind(to_micros(at));
                    }
                    q.push(" WHERE tenant_id = ").push_bind(tenant_id.as_str());
                    q.push(" AND name = ").push_bind(name.as_str());
                    q.push(format!(" RETURNING {EVENT_TYPE_COLUMNS}"));
                    let row = q.build().fetch_optional(&mut *c).await?;
                    row.as_ref().map(event_type_from).transpose()
                }))
                .await
            }

            async fn get_event_type(&self, tenant_id: &str, name: &str) -> Result<Option<EventType>> {
                let (tenant_id, name) = (tenant_id.to_string(), name.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE tenant_id = $1 AND name = $2"))
                        .bind(&tenant_id)
                        .bind(&name)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(event_type_from).transpose()
                }))
                .await
            }

            async fn list_event_types(&self, tenant_id: &str, page: &Page) -> Result<Vec<EventType>> {
                let (tenant_id, page) = (tenant_id.to_string(), page.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    push_page(&mut q, &page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(event_type_from).collect()
                }))
                .await
            }

            async fn create_event(&self, event: &NewEvent, messages: &[NewMessage], jobs: &[NewJob]) -> Result<CreateEventOutcome> {
                // Messages handed to this process's own workers (leased already) need no wake-up.
                let wakes_messages = messages.iter().any(|m| m.lease_id.is_none());
                let wakes_jobs = !jobs.is_empty();
                let outcome = self
                    .insert_events(vec![(event.clone(), messages.to_vec(), jobs.to_vec())])
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt("publishing an event answered nothing".into()))?;
                if matches!(outcome, CreateEventOutcome::Created(_)) {
                    if wakes_messages {
                        self.signal.wake(crate::queue::Work::Messages);
                    }
                    if wakes_jobs {
                        self.signal.wake(crate::queue::Work::Jobs);
                    }
                }
                Ok(outcome)
            }

            async fn create_events(&self, events: Vec<(NewEvent, Vec<NewMessage>)>) -> Result<Vec<CreateEventOutcome>> {
                let wakes = events.iter().any(|(_, messages)| messages.iter().any(|m| m.lease_id.is_none()));
                let outcomes = self
                    .insert_events(events.into_iter().map(|(event, messages)| (event, messages, Vec::new())).collect())
                    .await?;
                if wakes && outcomes.iter().any(|o| matches!(o, CreateEventOutcome::Created(_))) {
                    self.signal.wake(crate::queue::Work::Messages);
                }
                Ok(outcomes)
            }

            async fn find_idempotent_event(&self, tenant_id: &str, key: &str) -> Result<Option<(Event, String)>> {
                let (tenant_id, key) = (tenant_id.to_string(), key.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND idempotency_key = $2"))
                        .bind(&tenant_id)
                        .bind(&key)
                        .fetch_optional(&mut *c)
                        .await?;
                    match row {
                        Some(row) => Ok(Some((event_from(&row)?, row.try_get::<Option<String>, _>("request_hash")?.unwrap_or_default()))),
                        None => Ok(None),
                    }
                }))
                .await
            }

            async fn get_event(&self, tenant_id: &str, event_id: &str) -> Result<Option<Event>> {
                let (tenant_id, event_id) = (tenant_id.to_string(), event_id.to_string());
                self.read(move |c| Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND id = $2"))
                        .bind(&tenant_id)
                        .bind(&event_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    row.as_ref().map(event_from).transpose()
                }))
                .await
            }

            async fn list_events(&self, tenant_id: &str, filter: &EventFilter) -> Result<Vec<Event>> {
                let (tenant_id, filter) = (tenant_id.to_string(), filter.clone());
                self.read(move |c| Box::pin(async move {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = "));
                    q.push_bind(tenant_id.as_str());
                    if let Some(event_type) = &filter.event_type {
                        q.push(" AND event_type = ").push_bind(event_type.as_str());
                    }
                    push_created_between(&mut q, filter.created_after, filter.created_before);
                    push_page(&mut q, &filter.page);
                    let rows = q.build().fetch_all(&mut *c).await?;
                    rows.iter().map(event_from).collect()
                }))
                .await
            }
        }
    };
}

pub(crate) use domain_impl;
