//! First-start work: the data dir, the master key ring, the database and the first admin key;
//! and master key rotation.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use switchboard_core::{Id, IdKind, KeyRing, SecretBox, Timestamp, api_key};
use switchboard_store::{NewApiKey, NewTenant, OpenOptions, Scope, Store};

use crate::config::Settings;

pub const MASTER_KEY_ENV: &str = "SWITCHBOARD_MASTER_KEY";
pub const ADMIN_KEY_ENV: &str = "SWITCHBOARD_ADMIN_KEY";

fn key_file(settings: &Settings) -> PathBuf {
    settings.data_dir.join("master.key")
}

fn ensure_data_dir(settings: &Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))
}

/// The key ring from `SWITCHBOARD_MASTER_KEY`, else from the key file, which is created (mode
/// 0600) on the first start.
pub fn load_or_create_key_ring(settings: &Settings) -> anyhow::Result<SecretBox> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return Ok(SecretBox::new(
            KeyRing::parse(&text).with_context(|| format!("{MASTER_KEY_ENV} is not a valid key ring"))?,
        ));
    }
    ensure_data_dir(settings)?;
    let path = key_file(settings);
    if !path.exists() {
        let ring = KeyRing::generate();
        // Two processes starting together both get here; exactly one file wins and both use it.
        if ring.save_new(&path)? {
            tracing::info!(path = %path.display(), key_id = ring.primary_id(), "created a master key file; back it up: stored secrets cannot be read without it");
            return Ok(SecretBox::new(ring));
        }
    }
    Ok(SecretBox::new(KeyRing::load(&path)?))
}

pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    if settings.is_sqlite() {
        ensure_data_dir(settings)?;
    }
    let mut options = OpenOptions::new(settings.database_url.clone());
    options.max_connections = settings.db_max_connections;
    switchboard_store::open(&options)
        .await
        .with_context(|| format!("opening the database {}", switchboard_store::redact_url(&settings.database_url)))
}

/// Creates the operator tenant and its admin key on the first start and prints the key once.
pub async fn first_admin_key(store: &dyn Store, now: Timestamp) -> anyhow::Result<()> {
    let supplied = std::env::var(ADMIN_KEY_ENV).ok().filter(|v| !v.is_empty());
    let minted = match &supplied {
        Some(value) => api_key::from_supplied(value).map_err(|reason| anyhow::anyhow!("{ADMIN_KEY_ENV} {reason}"))?,
        None => api_key::mint(),
    };
    let tenant = NewTenant { id: Id::new(IdKind::Tenant), name: "default".into(), created_at: now };
    let key = NewApiKey::for_token(&tenant.id, "first admin key", Scope::Admin, &minted, None, now);
    if store.bootstrap_operator(&tenant, &key).await?.is_some() {
        match supplied {
            // The operator chose it; echoing it would only put it in more logs.
            Some(_) => println!("Admin API key: {} (from {ADMIN_KEY_ENV})", minted.masked),
            None => println!("Admin API key: {}", minted.token),
        }
    }
    Ok(())
}

/// Puts a new key in front of the key file, then re-encrypts every stored secret with it.
/// The file is written first, so an interruption leaves every secret readable; running the
/// command again adds another key and finishes the job.
pub async fn rotate_keys(settings: &Settings) -> anyhow::Result<()> {
    if std::env::var(MASTER_KEY_ENV).is_ok() {
        bail!(
            "{MASTER_KEY_ENV} is set: rotation rewrites the key file, so unset it and keep the key ring in {}",
            key_file(settings).display()
        );
    }
    let path = key_file(settings);
    let mut ring = KeyRing::load(&path).with_context(|| format!("reading the key file {}", path.display()))?;
    let new_id = ring.rotate();
    ring.save(&path)?;
    let secrets = SecretBox::new(ring);
    let store = open_store(settings).await?;
    let total = store.count_secrets_sealed_with_other_keys(&new_id).await?;
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("re-encrypting {bar:40} {pos}/{len} secrets ({eta})")
            .expect("valid template"),
    );
    let now = chrono_now();
    let done = switchboard_store::secrets::reseal_all(&*store, &secrets, now, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    store.close().await;
    println!(
        "New master key {new_id} is primary; re-encrypted {done} secrets. Older keys stay in {} until you remove them.",
        path.display()
    );
    Ok(())
}

fn chrono_now() -> Timestamp {
    use switchboard_core::Clock;
    switchboard_core::SystemClock.now()
}
