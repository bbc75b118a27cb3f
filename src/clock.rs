//! Wall-clock time as the gateway counts it. A leaf: imports nothing from
//! the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wall clock that metering reads: the system's, or one set by hand,
/// so that a test can put requests on both sides of a budget reset
/// without waiting for midnight.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that shows `ms` until [`Clock::set_ms`] moves it.
    pub fn manual(ms: u64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(ms))),
        }
    }

    /// Moves a manual clock (and every clone of it); the system clock
    /// cannot be moved, so this does nothing to it.
    pub fn set_ms(&self, ms: u64) {
        if let Some(t) = &self.manual {
            t.store(ms, Ordering::Relaxed);
        }
    }

    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Relaxed),
            None => now_ms(),
        }
    }
}
