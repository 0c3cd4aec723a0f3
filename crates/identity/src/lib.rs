//! Who may call the hub: tenants and their API keys, minted, checked and stored here so that
//! every writer (the API, the operator's first start, later the dashboard) follows the same
//! rules. Users, roles, sessions, the audit log and the hub's own OAuth2 authorization server
//! belong here as they arrive.

use std::sync::Arc;

use switchboard_core::problem::{FieldProblem, Problems, check_label};
use switchboard_core::{Clock, Id, IdKind, Timestamp, api_key};
use switchboard_store::{ApiKey, NewApiKey, NewTenant, Scope, Store, StoreError, Tenant};

/// The longest tenant or key name, in characters.
pub const MAX_NAME: usize = 200;

/// A key as the caller asks for it, unchecked.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub name: String,
    /// The scopes asked for; the key gets the highest (`admin` ⊇ `write` ⊇ `read`).
    pub scopes: Vec<Scope>,
    /// When the key stops working; never when absent.
    pub expires_at: Option<Timestamp>,
}

/// A stored key with its token, which is shown this once.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The input is wrong; every problem found, by field.
    #[error("invalid input: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.detail)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldProblem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The identity service. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Identity {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Creates a tenant and its first key (named `admin`, admin scope, no expiry), both or
    /// neither.
    pub async fn create_tenant(&self, name: &str) -> Result<(Tenant, IssuedKey), IdentityError> {
        let name = check_label("name", name, MAX_NAME).map_err(|p| IdentityError::Invalid(vec![p]))?;
        let now = self.clock.now();
        let tenant = NewTenant { id: Id::new(IdKind::Tenant), name, created_at: now };
        let minted = api_key::mint();
        let key = NewApiKey::for_token(&tenant.id, "admin", Scope::Admin, &minted, None, now);
        let created = self.store.create_tenant(&tenant, Some(&key)).await?;
        Ok((created, IssuedKey { key: key.as_stored(), token: minted.token }))
    }

    /// Mints and stores a key in `tenant_id`.
    pub async fn create_api_key(&self, tenant_id: &Id, spec: KeySpec) -> Result<IssuedKey, IdentityError> {
        let now = self.clock.now();
        let mut problems = Problems::default();
        let name = problems.check(check_label("name", &spec.name, MAX_NAME));
        let scope = problems.check(
            spec.scopes
                .iter()
                .copied()
                .max()
                .ok_or_else(|| FieldProblem::new("scopes", "at least one of admin, write, read is required")),
        );
        if spec.expires_at.is_some_and(|at| at <= now) {
            problems.push(FieldProblem::new("expires_at", "must be in the future"));
        }
        let (Some(name), Some(scope)) = (name, scope) else {
            return Err(IdentityError::Invalid(problems.into_vec()));
        };
        problems.finish().map_err(IdentityError::Invalid)?;
        let minted = api_key::mint();
        let key = NewApiKey::for_token(tenant_id, name, scope, &minted, spec.expires_at, now);
        let key = self.store.create_api_key(&key).await?;
        Ok(IssuedKey { key, token: minted.token })
    }

    /// Revokes a key of `tenant_id`; `false` when there is no such unrevoked key.
    pub async fn revoke_api_key(&self, tenant_id: &Id, key_id: &str) -> Result<bool, StoreError> {
        self.store.revoke_api_key(tenant_id.as_str(), key_id, self.clock.now()).await
    }
}
