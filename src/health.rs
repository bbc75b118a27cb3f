//! Channel health: a circuit breaker per channel with exponential cooldown
//! and one probe request after it. A leaf: imports nothing from the crate.
//!
//! Health lives outside the config snapshot, keyed by channel name (and
//! endpoint), so that cooldowns survive reloads.

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Health of one channel: a circuit breaker with exponential cooldown and a
/// single probe request once the cooldown has passed.
#[derive(Default)]
pub struct ChannelHealth {
    consecutive_failures: AtomicU32,
    cooldown_until_ms: AtomicU64,
    probe_in_flight: AtomicBool,
    last_error: Mutex<Option<String>>,
    last_hour: LastHour,
}

/// Attempts and failed attempts per minute over the last hour, for the
/// admin view: a ring of 60 one-minute slots, each an atomic holding the
/// minute it counts (high 32 bits) and its count (low 32 bits), so that
/// recording is one atomic update and needs no lock and no clearing task.
struct LastHour {
    attempts: [AtomicU64; 60],
    failures: [AtomicU64; 60],
}

impl Default for LastHour {
    fn default() -> Self {
        LastHour {
            attempts: std::array::from_fn(|_| AtomicU64::new(0)),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Counts one event in the slot of `minute`, starting the slot afresh if
/// it still counts a minute an hour or more ago.
fn bump(slots: &[AtomicU64; 60], minute: u64) {
    let slot = &slots[(minute % 60) as usize];
    let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(if v >> 32 != minute {
            minute << 32 | 1
        } else if v & 0xffff_ffff == 0xffff_ffff {
            v
        } else {
            v + 1
        })
    });
}

/// The events of the 60 minutes up to and including `minute`.
fn sum(slots: &[AtomicU64; 60], minute: u64) -> u64 {
    slots
        .iter()
        .map(|slot| slot.load(Ordering::Relaxed))
        .filter(|v| (v >> 32) + 60 > minute && v >> 32 <= minute)
        .map(|v| v & 0xffff_ffff)
        .sum()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Up,
    /// Cooldown over: the next request is a probe.
    ProbeReady,
    Cooling,
}

impl ChannelHealth {
    pub fn availability(&self, now_ms: u64) -> Availability {
        if self.consecutive_failures.load(Ordering::Acquire) == 0 {
            Availability::Up
        } else if now_ms < self.cooldown_until_ms.load(Ordering::Acquire)
            || self.probe_in_flight.load(Ordering::Acquire)
        {
            Availability::Cooling
        } else {
            Availability::ProbeReady
        }
    }

    /// Takes the channel for a request; `false` if it is cooling down or
    /// another request already holds its probe.
    pub fn try_acquire(&self, now_ms: u64) -> bool {
        match self.availability(now_ms) {
            Availability::Up => true,
            Availability::Cooling => false,
            Availability::ProbeReady => self
                .probe_in_flight
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    pub fn record_success(&self, now_ms: u64) {
        bump(&self.last_hour.attempts, now_ms / 60_000);
        if self.consecutive_failures.swap(0, Ordering::AcqRel) != 0 {
            self.cooldown_until_ms.store(0, Ordering::Release);
        }
        self.probe_in_flight.store(false, Ordering::Release);
    }

    /// Starts (or extends) a cooldown: `base × 2^(failures-1)`, capped at
    /// `max`, and never shorter than the upstream's Retry-After.
    pub fn record_failure(
        &self,
        now_ms: u64,
        base: Duration,
        max: Duration,
        retry_after: Option<Duration>,
        reason: String,
    ) {
        let minute = now_ms / 60_000;
        bump(&self.last_hour.attempts, minute);
        bump(&self.last_hour.failures, minute);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let cooldown = cooldown_for(failures, base, max, retry_after);
        self.cooldown_until_ms
            .store(now_ms + cooldown.as_millis() as u64, Ordering::Release);
        self.probe_in_flight.store(false, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Attempts on this channel and how many of them failed, in the hour
    /// up to `now_ms` (by whole minutes).
    pub fn last_hour(&self, now_ms: u64) -> (u64, u64) {
        let minute = now_ms / 60_000;
        (
            sum(&self.last_hour.attempts, minute),
            sum(&self.last_hour.failures, minute),
        )
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Acquire)
    }

    pub fn cooldown_until_ms(&self) -> u64 {
        self.cooldown_until_ms.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub fn cooldown_for(
    failures: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    exp.min(max).max(retry_after.unwrap_or_default())
}

/// Channel health by channel name; shared by every config generation.
#[derive(Default)]
pub struct HealthRegistry {
    by_name: Mutex<HashMap<String, Arc<ChannelHealth>>>,
}

impl HealthRegistry {
    pub fn get(&self, channel: &str) -> Arc<ChannelHealth> {
        self.by_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(channel.to_string())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_doubles_caps_and_respects_retry_after() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(600);
        assert_eq!(cooldown_for(1, base, max, None), Duration::from_secs(30));
        assert_eq!(cooldown_for(2, base, max, None), Duration::from_secs(60));
        assert_eq!(cooldown_for(3, base, max, None), Duration::from_secs(120));
        assert_eq!(cooldown_for(10, base, max, None), max);
        assert_eq!(cooldown_for(40, base, max, None), max);
        let ra = Some(Duration::from_secs(90));
        assert_eq!(cooldown_for(1, base, max, ra), Duration::from_secs(90));
        assert_eq!(cooldown_for(3, base, max, ra), Duration::from_secs(120));
    }

    #[test]
    fn one_probe_after_cooldown_then_recovery() {
        let h = ChannelHealth::default();
        assert!(h.try_acquire(0));
        let s = Duration::from_secs(1);
        h.record_failure(1_000, s, s * 10, None, "503".into());
        assert_eq!(h.availability(1_500), Availability::Cooling);
        assert!(!h.try_acquire(1_500));
        assert_eq!(h.availability(2_000), Availability::ProbeReady);
        assert!(
            h.try_acquire(2_000),
            "first request after cooldown is the probe"
        );
        assert!(!h.try_acquire(2_000), "only one probe at a time");
        h.record_failure(2_100, s, s * 10, None, "503".into());
        assert_eq!(h.cooldown_until_ms(), 4_100, "second failure doubles");
        assert!(h.try_acquire(4_100));
        h.record_success(2_200);
        assert_eq!(h.availability(4_200), Availability::Up);
        assert!(h.try_acquire(4_200) && h.try_acquire(4_200));
    }

    #[test]
    fn last_hour_counts_attempts_and_failures_by_minute() {
        let h = ChannelHealth::default();
        let s = Duration::from_secs(1);
        let t0 = 1_000 * 60_000; // minute 1000
        h.record_success(t0);
        h.record_success(t0 + 59_999);
        h.record_failure(t0 + 30 * 60_000, s, s, None, "503".into());
        h.record_success(t0 + 59 * 60_000);
        assert_eq!(h.last_hour(t0 + 59 * 60_000), (4, 1));
        // An hour after minute 1000, its slot no longer counts.
        assert_eq!(h.last_hour(t0 + 60 * 60_000), (2, 1));
        // Minute 1060 reuses minute 1000's slot: it starts afresh.
        h.record_failure(t0 + 60 * 60_000, s, s, None, "503".into());
        assert_eq!(h.last_hour(t0 + 60 * 60_000), (3, 2));
        assert_eq!(h.last_hour(t0 + 200 * 60_000), (0, 0));
        // A reader behind the writers' clock does not count the future.
        assert_eq!(h.last_hour(t0 + 30 * 60_000), (1, 1));
    }
}
