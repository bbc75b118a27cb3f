//! Graceful stop. On SIGTERM the client listener takes no new request
//! (idle connections close; a request that still arrives gets a 503), the
//! requests in flight finish, for at most `shutdown_grace_seconds`, and
//! the process exits as soon as none is left: at once when idle.
//!
//! Pingora's own graceful stop sleeps the whole grace period whatever is
//! running, then cancels what is left, so an idle gateway took ~11.5 s to
//! stop. Here the waiting happens in the signal watch handed to Pingora,
//! before it starts its stop, which is then given a grace period of 0.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::reload::ConfigHandle;

/// `true` once the drain started: a flag for the per-request checks (a
/// plain load), and a channel for the connections that wait on it.
static DRAINING: AtomicBool = AtomicBool::new(false);
static STARTED: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);
/// Requests being served on the client listener.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// How often the drain looks whether requests are left.
const POLL: Duration = Duration::from_millis(10);

pub fn draining() -> bool {
    DRAINING.load(Ordering::SeqCst)
}

/// Resolves once the drain has started.
pub async fn started() {
    let mut rx = STARTED.subscribe();
    let _ = rx.wait_for(|draining| *draining).await;
}

/// A request in flight on the client listener, until dropped.
pub struct InFlight(());

/// Counts a request in flight until the guard is dropped.
pub fn in_flight() -> InFlight {
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    InFlight(())
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The shutdown signals, as Pingora's own watch maps them (SIGINT fast,
/// SIGQUIT upgrade), except that SIGTERM first drains.
pub struct SignalWatch {
    pub config: Arc<ConfigHandle>,
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            warn!("cannot listen for SIGTERM/SIGINT/SIGQUIT");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
        }
        let grace = Duration::from_secs(self.config.load().server.shutdown_grace_seconds);
        // Set before the count is read; a request counts itself before it
        // reads the flag (SeqCst both): one of the two sees the other.
        DRAINING.store(true, Ordering::SeqCst);
        STARTED.send_replace(true);
        let left = IN_FLIGHT.load(Ordering::SeqCst);
        info!(
            "SIGTERM: taking no new requests; {left} in flight may finish within {} s",
            grace.as_secs()
        );
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left = IN_FLIGHT.load(Ordering::SeqCst);
            if left == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!("shutdown grace period over: {left} request(s) still in flight are cut off");
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}
