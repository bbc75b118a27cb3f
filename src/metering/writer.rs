//! The ledger's writer: queued charges to sled, and the request log's
//! hourly pruning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tracing::info;

use super::Metering;
use crate::clock::now_ms;
use crate::config::StoreSection;

/// Writes queued charges to sled every `[store] flush_ms` (and at once when
/// shutdown starts), and prunes the request log hourly. The last charges
/// are written after the server has stopped (see `server::run`).
pub struct LedgerWriter {
    pub metering: Arc<Metering>,
    /// The `[store]` settings in force, read again before every batch so
    /// that a reload changes them (the writer knows nothing of reloads).
    pub settings: Box<dyn Fn() -> StoreSection + Send + Sync>,
}

const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[async_trait]
impl BackgroundService for LedgerWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_prune: Option<Instant> = None;
        loop {
            let store = (self.settings)();
            let wait = Duration::from_millis(store.flush_ms.max(1));
            if *shutdown.borrow() {
                // Keep writing through the grace period; the runtime ends
                // this task, and the final drain after the server stops
                // writes whatever is left.
                tokio::time::sleep(wait).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
            let metering = Arc::clone(&self.metering);
            let prune = last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
            let _ = tokio::task::spawn_blocking(move || {
                metering.ledger.write_pending(store.request_log_days);
                if prune {
                    let removed = metering.ledger.prune(store.request_log_days, now_ms());
                    if removed > 0 {
                        info!(removed, "request log pruned");
                    }
                }
            })
            .await;
            if prune {
                last_prune = Some(Instant::now());
            }
        }
    }
}
