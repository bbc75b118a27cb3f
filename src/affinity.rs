//! Session affinity: which channel served a session last, so that the next
//! turn of a Claude Code or Codex session goes to the same channel (and so
//! the same provider account) and the provider's prompt cache keeps
//! hitting. A cache read costs a tenth of fresh input; weighted random
//! alone would spread a session over every channel of its tier.
//!
//! A leaf: it maps (key, session id) to a channel name with the time of
//! last use, and knows nothing of the config, so it survives reloads (a
//! channel that a reload removed is simply not found among the
//! candidates any more).
//!
//! Memory is bounded without a scan: each shard keeps two generations of
//! entries. Entries are written to the current one; it becomes the
//! previous one (and the previous one is dropped) every [`IDLE_MS`], or
//! earlier when it is full. A lookup that finds a fresh entry in the
//! previous generation moves it back. So an entry idle for an hour is
//! gone after two rotations at most, and no more than `capacity` entries
//! exist; when more sessions than that are active within an hour, the
//! least recently used ones lose their affinity early.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

/// A session's affinity ends after an hour without requests.
pub const IDLE_MS: u64 = 3_600_000;

/// Sessions kept by default. An entry is 33 bytes in its table (hash,
/// shared channel name, time; the name's `Arc` is the snapshot's), and the
/// 32 tables (16 shards × 2 generations) of at most 3,125 entries each
/// have 4,096 buckets: ~4.3 MB when full.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Shards, so that concurrent requests rarely wait on one lock.
const SHARDS: usize = 16;

pub struct Affinity {
    shards: Box<[Mutex<Shard>]>,
    /// Entries one generation of one shard may hold.
    per_generation: usize,
    hasher: RandomState,
}

#[derive(Default)]
struct Shard {
    current: HashMap<u64, Entry>,
    previous: HashMap<u64, Entry>,
    rotated_at_ms: u64,
}

#[derive(Clone)]
struct Entry {
    channel: Arc<str>,
    last_used_ms: u64,
}

/// A session, scoped by the key that sent it: the same id sent with two
/// keys is two sessions. Hashed with a per-process random key, so the map
/// holds neither the id nor the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId(u64);

impl Default for Affinity {
    fn default() -> Self {
        Affinity::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Affinity {
    /// At most `capacity` sessions are remembered at a time.
    pub fn with_capacity(capacity: usize) -> Self {
        Affinity {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_generation: (capacity / (2 * SHARDS)).max(1),
            hasher: RandomState::new(),
        }
    }

    pub fn session(&self, key: &str, session: &str) -> SessionId {
        SessionId(self.hasher.hash_one((key, session)))
    }

    /// The channel that served the session last, unless that was more
    /// than [`IDLE_MS`] ago.
    pub fn get(&self, id: SessionId, now_ms: u64) -> Option<Arc<str>> {
        let mut shard = self.shard(id);
        let fresh = |e: &Entry| now_ms.saturating_sub(e.last_used_ms) <= IDLE_MS;
        if let Some(e) = shard.current.get(&id.0) {
            return fresh(e).then(|| e.channel.clone());
        }
        let entry = shard.previous.remove(&id.0).filter(fresh)?;
        let channel = entry.channel.clone();
        shard.insert(id.0, entry, now_ms, self.per_generation);
        Some(channel)
    }

    /// Records that `channel` served the session at `now_ms`.
    pub fn set(&self, id: SessionId, channel: &Arc<str>, now_ms: u64) {
        let entry = Entry {
            channel: channel.clone(),
            last_used_ms: now_ms,
        };
        let mut shard = self.shard(id);
        shard.previous.remove(&id.0);
        shard.insert(id.0, entry, now_ms, self.per_generation);
    }

    /// Sessions remembered (fresh or not yet dropped).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                s.current.len() + s.previous.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: SessionId) -> std::sync::MutexGuard<'_, Shard> {
        // The low bits pick the shard; HashMap uses the hash's high bits.
        self.shards[id.0 as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shard {
    fn insert(&mut self, hash: u64, entry: Entry, now_ms: u64, per_generation: usize) {
        let full = self.current.len() >= per_generation && !self.current.contains_key(&hash);
        if full || now_ms.saturating_sub(self.rotated_at_ms) >= IDLE_MS {
            self.previous = std::mem::take(&mut self.current);
            self.rotated_at_ms = now_ms;
        }
        self.current.insert(hash, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000_000;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_session_is_scoped_by_its_key() {
        let a = Affinity::default();
        let alice = a.session("alice", "s1");
        a.set(alice, &name("east"), T0);
        assert_eq!(a.get(alice, T0 + 1).as_deref(), Some("east"));
        assert_eq!(a.get(a.session("bob", "s1"), T0 + 1), None);
        assert_eq!(a.get(a.session("alice", "s2"), T0 + 1), None);
    }

    #[test]
    fn affinity_ends_after_an_idle_hour_and_use_renews_it() {
        let a = Affinity::default();
        let s = a.session("k", "s");
        a.set(s, &name("east"), T0);
        assert_eq!(a.get(s, T0 + IDLE_MS).as_deref(), Some("east"));
        assert_eq!(a.get(s, T0 + IDLE_MS + 1), None);
        // A request that is served renews it.
        a.set(s, &name("east"), T0 + IDLE_MS);
        assert_eq!(a.get(s, T0 + 2 * IDLE_MS).as_deref(), Some("east"));
    }

    #[test]
    fn the_latest_channel_wins() {
        let a = Affinity::default();
        let s = a.session("k", "s");
        a.set(s, &name("east"), T0);
        a.set(s, &name("west"), T0 + 5);
        assert_eq!(a.get(s, T0 + 6).as_deref(), Some("west"));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn memory_stays_bounded_and_recent_sessions_survive() {
        let capacity = 3_200;
        let a = Affinity::with_capacity(capacity);
        let first = a.session("k", "session-0");
        a.set(first, &name("east"), T0);
        for i in 1..50_000 {
            let s = a.session("k", &format!("session-{i}"));
            a.set(s, &name("west"), T0 + i);
            if i % 1_000 == 0 {
                // Kept alive by use, it survives every rotation.
                assert_eq!(a.get(first, T0 + i).as_deref(), Some("east"), "{i}");
            }
            assert!(a.len() <= capacity, "{} > {capacity}", a.len());
        }
        let last = a.session("k", "session-49999");
        assert_eq!(a.get(last, T0 + 50_000).as_deref(), Some("west"));
    }

    #[test]
    fn idle_entries_are_dropped_by_time_even_when_nothing_is_full() {
        let a = Affinity::with_capacity(1_000_000);
        for i in 0..1_000 {
            a.set(a.session("old", &format!("{i}")), &name("east"), T0);
        }
        // Two rotations later the idle entries are gone, not just hidden
        // (500 inserts per step reach all 16 shards but with ~1e-14 odds).
        for step in 1..=2 {
            for i in 0..500 {
                let s = a.session(&format!("new{step}"), &format!("{i}"));
                a.set(s, &name("east"), T0 + step * IDLE_MS);
            }
        }
        assert_eq!(a.len(), 1_000);
        assert_eq!(a.get(a.session("old", "7"), T0 + 2 * IDLE_MS), None);
    }
}
