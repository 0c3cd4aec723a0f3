//! Sealing values with the core secret box for storage, and re-encrypting them all after a
//! key rotation.

use switchboard_core::secret_box::Sealed;
use switchboard_core::{Id, IdKind, SecretBox, SecretBoxError, Timestamp};
use zeroize::Zeroizing;

use crate::{Page, Result, Store, StoredSecret};

/// Storage of values sealed by the core secret box.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// Stores a sealed secret, or reseals the one with its id; an id of another tenant is a
    /// conflict.
    async fn put_secret(&self, secret: &StoredSecret) -> Result<()>;
    /// `None` when the secret is not in the tenant.
    async fn get_secret(&self, tenant_id: &str, id: &str) -> Result<Option<StoredSecret>>;
    /// Secrets of a tenant not sealed with `primary_key_id`, after `after_id`, in id order.
    async fn secrets_sealed_with_other_keys(
        &self,
        tenant_id: &str,
        primary_key_id: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredSecret>>;
    /// Replaces a secret's key id and ciphertext if the row still holds exactly what was read
    /// (`as_read`), so a concurrent update is never overwritten by a re-encryption.
    async fn reseal_secret(&self, secret: &StoredSecret, as_read: &StoredSecret) -> Result<bool>;
    /// Secrets of every tenant not sealed with `primary_key_id`: what a rotation has left to do.
    async fn count_secrets_sealed_with_other_keys(&self, primary_key_id: &str) -> Result<u64>;
}

/// The associated data binding a ciphertext to its row: it cannot be moved to another row or
/// tenant and still decrypt.
fn context(tenant_id: &Id, secret_id: &Id) -> Vec<u8> {
    format!("switchboard/secret/{tenant_id}/{secret_id}").into_bytes()
}

/// Seals `plaintext` under a new `sec_…` id of the tenant, with the primary key, bound to
/// that id and tenant. The result is not stored yet.
pub fn seal(secrets: &SecretBox, tenant_id: &Id, plaintext: &[u8], now: Timestamp) -> StoredSecret {
    let id = Id::new(IdKind::Secret);
    let sealed = secrets.seal(plaintext, &context(tenant_id, &id));
    StoredSecret {
        id,
        tenant_id: tenant_id.clone(),
        key_id: sealed.key_id,
        ciphertext: sealed.ciphertext,
        updated_at: now,
    }
}

/// Decrypts a stored secret. Fails when its key is not in the ring, or when the ciphertext
/// was altered or moved to another row or tenant.
pub fn open(secrets: &SecretBox, stored: &StoredSecret) -> Result<Zeroizing<Vec<u8>>, SecretBoxError> {
    let sealed = Sealed { key_id: stored.key_id.clone(), ciphertext: stored.ciphertext.clone() };
    secrets.open(&sealed, &context(&stored.tenant_id, &stored.id))
}

/// Why [`reseal_all`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    /// A secret cannot be opened (its key is not in the ring, or it was tampered with).
    #[error("secret {id} of tenant {tenant_id} cannot be decrypted: {source}")]
    Undecryptable {
        /// The secret's id.
        id: Id,
        /// The tenant it belongs to.
        tenant_id: Id,
        /// Why the secret box refused it.
        source: SecretBoxError,
    },
}

/// Re-encrypts every secret not sealed with the primary key, tenant by tenant, reporting each
/// re-encrypted secret to `progress`. Safe to interrupt and run again: it only touches
/// secrets still sealed with an older key.
pub async fn reseal_all(
    store: &dyn Store,
    secrets: &SecretBox,
    now: Timestamp,
    progress: impl Fn(u64),
) -> Result<u64, RotationError> {
    let primary = secrets.ring().primary_id().to_string();
    let mut done = 0;
    let mut tenants_page = Page { limit: 100, before: None };
    loop {
        let tenants = store.list_tenants(&tenants_page).await?;
        for tenant in &tenants {
            let mut after: Option<String> = None;
            loop {
                let batch =
                    store.secrets_sealed_with_other_keys(tenant.id.as_str(), &primary, after.as_deref(), 200).await?;
                for stored in &batch {
                    let plaintext = open(secrets, stored).map_err(|source| RotationError::Undecryptable {
                        id: stored.id.clone(),
                        tenant_id: stored.tenant_id.clone(),
                        source,
                    })?;
                    let sealed = secrets.seal(&plaintext, &context(&stored.tenant_id, &stored.id));
                    let resealed = StoredSecret {
                        key_id: sealed.key_id,
                        ciphertext: sealed.ciphertext,
                        updated_at: now,
                        ..stored.clone()
                    };
                    if store.reseal_secret(&resealed, stored).await? {
                        done += 1;
                        progress(done);
                    }
                }
                match batch.last() {
                    Some(last) if batch.len() == 200 => after = Some(last.id.to_string()),
                    _ => break,
                }
            }
        }
        match tenants.last() {
            Some(last) if tenants.len() == 100 => tenants_page.before = Some(last.id.to_string()),
            _ => break,
        }
    }
    Ok(done)
}
