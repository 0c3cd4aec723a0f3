//! Pruning: events, messages and attempts older than the retention are deleted in batches,
//! so the database does not grow forever and no single unit holds the writer for long.

use std::time::Duration;

use switchboard_store::Pruned;
use tokio_util::sync::CancellationToken;

use crate::Webhooks;

const BATCH: u32 = 1000;

pub(crate) async fn run(service: Webhooks, shutdown: CancellationToken) {
    loop {
        if let Err(error) = prune_all(&service, &shutdown).await {
            tracing::warn!(%error, "pruning old deliveries failed; trying again at the next interval");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(service.config.retention_interval) => {}
        }
    }
}

/// Prunes everything older than the retention; returns the totals.
pub async fn prune_all(
    service: &Webhooks,
    shutdown: &CancellationToken,
) -> Result<Pruned, switchboard_store::StoreError> {
    let retention = chrono::Duration::from_std(service.config.retention).unwrap_or(chrono::Duration::days(30));
    let mut total = Pruned::default();
    loop {
        let before = service.clock.now() - retention;
        let pruned = service.store.prune(before, BATCH).await?;
        total.events += pruned.events;
        total.messages += pruned.messages;
        total.attempts += pruned.attempts;
        let more = [pruned.events, pruned.messages, pruned.attempts].iter().any(|n| *n == u64::from(BATCH));
        if !more || shutdown.is_cancelled() {
            if total != Pruned::default() {
                tracing::info!(
                    events = total.events,
                    messages = total.messages,
                    attempts = total.attempts,
                    "pruned old deliveries"
                );
            }
            return Ok(total);
        }
        // Leave room for other writers between batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
