//! The usage ledger in sled (SPEC §4): hourly aggregates per (key, user,
//! group, model, channel), running totals per key and per user, and a
//! per-request log with retention.
//!
//! Requests never touch sled: a settled charge goes into a bounded queue,
//! and a background writer folds the queue into one sled transaction every
//! `[store] flush_ms`, then flushes sled to disk. A crash loses at most the
//! queue of the last window; a clean shutdown drains it
//! ([`Ledger::write_pending`] after the server stops).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use anyhow::Result;
use prometheus::{IntCounter, IntGauge};
use serde::Serialize;
use serde_json::json;
use sled::Transactional;
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::Usage;
use crate::store::Store;

/// Charges that may wait for the writer; beyond that they are dropped
/// (and counted) rather than slowing requests down.
const QUEUE_CAPACITY: usize = 100_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// One billed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub at_ms: u64,
    pub key: String,
    /// "" when the key has no user.
    pub user: String,
    pub group: String,
    pub model: String,
    pub channel: String,
    pub usage: Usage,
    pub cost_nanos: i64,
    pub estimated: bool,
}

/// Summed usage: what the ledger stores per aggregate row and per total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: i64,
    pub input: i64,
    pub output: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    pub cost_nanos: i64,
    /// Requests whose usage was estimated (the provider reported none).
    pub estimated: i64,
}

const COUNTS_LEN: usize = 7 * 8;

impl Counts {
    pub fn of(c: &Charge) -> Counts {
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Counts {
            requests: 1,
            input: tokens(c.usage.input),
            output: tokens(c.usage.output),
            cached_input: tokens(c.usage.cached_input),
            cache_write: tokens(c.usage.cache_write),
            cost_nanos: c.cost_nanos,
            estimated: i64::from(c.estimated),
        }
    }

    fn fields(&self) -> [i64; 7] {
        [
            self.requests,
            self.input,
            self.output,
            self.cached_input,
            self.cache_write,
            self.cost_nanos,
            self.estimated,
        ]
    }

    pub fn add(&mut self, other: &Counts) {
        let (a, b) = (self.fields(), other.fields());
        let sum: [i64; 7] = std::array::from_fn(|i| a[i].saturating_add(b[i]));
        *self = Counts::from_fields(&sum);
    }

    fn from_fields(f: &[i64]) -> Counts {
        Counts {
            requests: f[0],
            input: f[1],
            output: f[2],
            cached_input: f[3],
            cache_write: f[4],
            cost_nanos: f[5],
            estimated: f[6],
        }
    }

    fn to_bytes(self) -> [u8; COUNTS_LEN] {
        let mut out = [0u8; COUNTS_LEN];
        for (i, v) in self.fields().iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    fn from_bytes(b: &[u8]) -> Counts {
        if b.len() != COUNTS_LEN {
            return Counts::default();
        }
        let f: Vec<i64> = b
            .chunks_exact(8)
            .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Counts::from_fields(&f)
    }
}

/// The dimensions of an aggregate row, in key order.
pub const DIMENSIONS: [&str; 5] = ["key", "user", "group", "model", "channel"];

/// Aggregate row key: hour start (ms, big-endian so rows sort by time),
/// then each dimension length-prefixed (names may contain any byte).
fn hourly_key(hour_ms: u64, dims: [&str; 5]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + dims.iter().map(|d| d.len() + 2).sum::<usize>());
    k.extend_from_slice(&hour_ms.to_be_bytes());
    for d in dims {
        let len = u16::try_from(d.len()).unwrap_or(u16::MAX);
        k.extend_from_slice(&len.to_be_bytes());
        k.extend_from_slice(&d.as_bytes()[..usize::from(len)]);
    }
    k
}

fn parse_hourly_key(k: &[u8]) -> Option<(u64, [String; 5])> {
    let hour = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let mut rest = &k[8..];
    let mut dims: [String; 5] = Default::default();
    for d in &mut dims {
        let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        *d = String::from_utf8_lossy(rest.get(2..2 + len)?).into_owned();
        rest = &rest[2 + len..];
    }
    Some((hour, dims))
}

/// Running-total key of a key (`k`) or user (`u`).
fn total_key(kind: u8, name: &str) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(name.as_bytes());
    k
}

/// A selection of aggregate rows (SPEC §5 `/admin/usage`).
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Inclusive start and exclusive end, ms since the epoch; rows are
    /// hourly, so a row counts when its hour starts in [from, to).
    pub from_ms: u64,
    pub to_ms: u64,
    /// Per dimension (index into [`DIMENSIONS`]): the required value.
    pub filters: [Option<String>; 5],
    /// Dimensions to group by; empty = one total row.
    pub group_by: Vec<usize>,
}

pub struct Ledger {
    tx: mpsc::Sender<Charge>,
    /// The writer's end. Held for the whole of a write, so the final drain
    /// at shutdown waits for a batch in progress instead of racing it.
    rx: Mutex<mpsc::Receiver<Charge>>,
    store: Store,
    hourly: sled::Tree,
    totals: sled::Tree,
    requests: sled::Tree,
    pending: IntGauge,
    dropped: IntCounter,
}

impl Ledger {
    pub fn open(store: &Store, pending: IntGauge, dropped: IntCounter) -> Result<Ledger> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        Ok(Ledger {
            tx,
            rx: Mutex::new(rx),
            store: store.clone(),
            hourly: store.tree("usage_hourly")?,
            totals: store.tree("usage_totals")?,
            requests: store.tree("request_log")?,
            pending,
            dropped,
        })
    }

    /// Queues a charge for the writer; never blocks.
    pub fn record(&self, charge: Charge) {
        match self.tx.try_send(charge) {
            Ok(()) => self.pending.inc(),
            Err(_) => {
                self.dropped.inc();
                warn!("ledger queue full: a charge was dropped (is the disk slow or full?)");
            }
        }
    }

    /// Totals of a key (as stored; queued charges are not included).
    pub fn key_totals(&self, key: &str) -> Counts {
        self.read_total(&total_key(b'k', key))
    }

    pub fn user_totals(&self, user: &str) -> Counts {
        self.read_total(&total_key(b'u', user))
    }

    fn read_total(&self, k: &[u8]) -> Counts {
        match self.totals.get(k) {
            Ok(v) => v.map(|v| Counts::from_bytes(&v)).unwrap_or_default(),
            Err(e) => {
                error!("cannot read usage totals: {e}");
                Counts::default()
            }
        }
    }

    /// Writes every queued charge in one transaction and flushes sled.
    /// Blocking: call from a blocking thread. `log_days` = 0 keeps no
    /// per-request log.
    pub fn write_pending(&self, log_days: u32) {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        while let Ok(c) = rx.try_recv() {
            batch.push(c);
        }
        if batch.is_empty() {
            return;
        }
        self.pending.sub(batch.len() as i64);
        if let Err(e) = self.write_batch(&batch, log_days) {
            self.dropped.inc_by(batch.len() as u64);
            error!("cannot write {} ledger records: {e}", batch.len());
        }
    }

    fn write_batch(&self, batch: &[Charge], log_days: u32) -> Result<()> {
        let mut hourly: BTreeMap<Vec<u8>, Counts> = BTreeMap::new();
        let mut totals: HashMap<Vec<u8>, Counts> = HashMap::new();
        for c in batch {
            let counts = Counts::of(c);
            let hour = c.at_ms - c.at_ms % HOUR_MS;
            let dims = [
                c.key.as_str(),
                c.user.as_str(),
                c.group.as_str(),
                c.model.as_str(),
                c.channel.as_str(),
            ];
            hourly
                .entry(hourly_key(hour, dims))
                .or_default()
                .add(&counts);
            totals
                .entry(total_key(b'k', &c.key))
                .or_default()
                .add(&counts);
            if !c.user.is_empty() {
                totals
                    .entry(total_key(b'u', &c.user))
                    .or_default()
                    .add(&counts);
            }
        }
        let mut log = Vec::new();
        if log_days > 0 {
            for c in batch {
                let id = self.store.generate_id()?;
                let mut k = c.at_ms.to_be_bytes().to_vec();
                k.extend_from_slice(&id.to_be_bytes());
                log.push((k, log_entry(c)));
            }
        }
        (&self.hourly, &self.totals, &self.requests)
            .transaction(|(h, t, r)| {
                for (k, add) in &hourly {
                    let mut v = h
                        .get(k)?
                        .map(|v| Counts::from_bytes(&v))
                        .unwrap_or_default();
                    v.add(add);
                    h.insert(k.as_slice(), &v.to_bytes()[..])?;
                }
                for (k, add) in &totals {
                    let mut v = t
                        .get(k)?
                        .map(|v| Counts::from_bytes(&v))
                        .unwrap_or_default();
                    v.add(add);
                    t.insert(k.as_slice(), &v.to_bytes()[..])?;
                }
                for (k, v) in &log {
                    r.insert(k.as_slice(), v.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| anyhow::anyhow!("sled transaction failed: {e:?}"))?;
        self.store.flush()?;
        Ok(())
    }

    /// Removes per-request log entries older than `log_days` (all of them
    /// when 0). Returns how many were removed.
    pub fn prune(&self, log_days: u32, now_ms: u64) -> usize {
        let cutoff = now_ms.saturating_sub(u64::from(log_days) * DAY_MS);
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for item in self.requests.range(..cutoff.to_be_bytes().to_vec()) {
            match item {
                Ok((k, _)) => {
                    batch.remove(k);
                    removed += 1;
                }
                Err(e) => {
                    error!("cannot read the request log: {e}");
                    break;
                }
            }
        }
        if removed > 0 {
            if let Err(e) = self.requests.apply_batch(batch) {
                error!("cannot prune the request log: {e}");
                return 0;
            }
        }
        removed
    }

    /// Per-request log entries in [from_ms, to_ms), oldest first, at most
    /// `limit`.
    pub fn request_log(&self, from_ms: u64, to_ms: u64, limit: usize) -> Vec<serde_json::Value> {
        self.requests
            .range(from_ms.to_be_bytes().to_vec()..to_ms.to_be_bytes().to_vec())
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .take(limit)
            .collect()
    }

    /// Sums aggregate rows selected by `q`, grouped by `q.group_by`.
    pub fn query(&self, q: &Query) -> Vec<(Vec<String>, Counts)> {
        let from_hour = q.from_ms - q.from_ms % HOUR_MS;
        let mut groups: BTreeMap<Vec<String>, Counts> = BTreeMap::new();
        let rows = self
            .hourly
            .range(from_hour.to_be_bytes().to_vec()..q.to_ms.to_be_bytes().to_vec());
        for item in rows {
            let Ok((k, v)) = item else { continue };
            let Some((hour, dims)) = parse_hourly_key(&k) else {
                continue;
            };
            if hour >= q.to_ms {
                continue;
            }
            let matches = q
                .filters
                .iter()
                .zip(&dims)
                .all(|(want, have)| want.as_ref().is_none_or(|w| w == have));
            if !matches {
                continue;
            }
            let group: Vec<String> = q.group_by.iter().map(|&i| dims[i].clone()).collect();
            groups
                .entry(group)
                .or_default()
                .add(&Counts::from_bytes(&v));
        }
        groups.into_iter().collect()
    }
}

fn log_entry(c: &Charge) -> Vec<u8> {
    json!({
        "at_ms": c.at_ms,
        "key": c.key,
        "user": c.user,
        "group": c.group,
        "model": c.model,
        "channel": c.channel,
        "input": c.usage.input,
        "output": c.usage.output,
        "cached_input": c.usage.cached_input,
        "cache_write": c.usage.cache_write,
        "cost_nanos": c.cost_nanos,
        "estimated": c.estimated,
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let l = Ledger::open(
            &store,
            IntGauge::new("p", "p").unwrap(),
            IntCounter::new("d", "d").unwrap(),
        )
        .unwrap();
        (dir, l)
    }

    fn charge(at_ms: u64, key: &str, group: &str, cost: i64) -> Charge {
        Charge {
            at_ms,
            key: key.into(),
            user: "alice".into(),
            group: group.into(),
            model: "gpt-4o".into(),
            channel: "up".into(),
            usage: Usage {
                input: 10,
                output: 5,
                cached_input: 2,
                cache_write: 0,
            },
            cost_nanos: cost,
            estimated: false,
        }
    }

    #[test]
    fn keys_round_trip_and_sort_by_hour() {
        let k = hourly_key(7 * HOUR_MS, ["k", "", "g\0x", "m", "c"]);
        let (hour, dims) = parse_hourly_key(&k).unwrap();
        assert_eq!(hour, 7 * HOUR_MS);
        assert_eq!(dims, ["k", "", "g\0x", "m", "c"].map(String::from));
        assert!(hourly_key(HOUR_MS, ["z"; 5]) < hourly_key(2 * HOUR_MS, ["a"; 5]));
        let c = Counts {
            requests: 1,
            input: 2,
            output: 3,
            cached_input: 4,
            cache_write: 5,
            cost_nanos: -6,
            estimated: 7,
        };
        assert_eq!(Counts::from_bytes(&c.to_bytes()), c);
    }

    #[test]
    fn batches_aggregate_per_hour_and_total() {
        let (_dir, l) = ledger();
        l.record(charge(HOUR_MS + 5, "k1", "g1", 100));
        l.record(charge(HOUR_MS + 9, "k1", "g1", 50));
        l.record(charge(2 * HOUR_MS, "k1", "g2", 7));
        l.record(charge(2 * HOUR_MS + 1, "k2", "g2", 3));
        l.write_pending(7);
        assert_eq!(l.key_totals("k1").cost_nanos, 157);
        assert_eq!(l.key_totals("k1").requests, 3);
        assert_eq!(l.user_totals("alice").cost_nanos, 160);
        assert_eq!(l.user_totals("alice").cached_input, 8);
        let all = Query {
            from_ms: 0,
            to_ms: 10 * HOUR_MS,
            group_by: vec![2],
            ..Default::default()
        };
        let rows = l.query(&all);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, vec!["g1".to_string()]);
        assert_eq!(rows[0].1.cost_nanos, 150);
        assert_eq!(rows[0].1.requests, 2);
        assert_eq!(rows[1].1.cost_nanos, 10);
        // Hour filter and a dimension filter.
        let q = Query {
            from_ms: 2 * HOUR_MS,
            to_ms: 3 * HOUR_MS,
            filters: [Some("k2".into()), None, None, None, None],
            group_by: vec![],
        };
        let rows = l.query(&q);
        assert_eq!(rows, vec![(vec![], Counts::of(&charge(0, "k2", "g2", 3)))]);
        // A second batch adds to the same rows.
        l.record(charge(HOUR_MS + 10, "k1", "g1", 1));
        l.write_pending(7);
        assert_eq!(l.key_totals("k1").cost_nanos, 158);
        assert_eq!(l.request_log(0, u64::MAX, 100).len(), 5);
    }

    #[test]
    fn log_retention_prunes_old_entries() {
        let (_dir, l) = ledger();
        let now = 100 * DAY_MS;
        l.record(charge(now - 8 * DAY_MS, "k", "g", 1));
        l.record(charge(now - 6 * DAY_MS, "k", "g", 1));
        l.write_pending(7);
        assert_eq!(l.prune(7, now), 1);
        let left = l.request_log(0, u64::MAX, 10);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["at_ms"], now - 6 * DAY_MS);
        // days = 0: no new log entries, and the old ones go.
        l.record(charge(now, "k", "g", 1));
        l.write_pending(0);
        assert_eq!(l.prune(0, now + 1), 1);
        assert!(l.request_log(0, u64::MAX, 10).is_empty());
        assert_eq!(l.key_totals("k").requests, 3, "aggregates stay");
    }
}
