//! The usage ledger in sled (docs/api.md, "Ledger"): hourly aggregates per (key, user,
//! group, model, channel), running totals per key and per user, the same
//! per key and user and UTC day of admission (what budget periods are
//! checked against after a restart), and a per-request log with retention.
//!
//! Requests never touch sled: a settled charge goes into a bounded queue,
//! and every `[store] flush_ms` a background writer folds the queue into
//! sled, then flushes sled to disk. The per-request log is stored in
//! chunks of ~1 KiB, one sled value each (`request_log`): a sled insert
//! costs ~6k instructions, too much to pay per request. The aggregates and
//! totals of the whole batch go in one transaction: sled writes out its IO
//! buffer twice for every transaction (and wakes all 7 of its IO threads
//! each time), which at one transaction per 128 charges cost ~1.7 µs of CPU
//! per request. A crash loses at most the queue of the last window (whose
//! log entries may have reached the disk without its aggregates); a clean
//! shutdown drains it ([`Ledger::write_pending`] after the server stops).
//!
//! sled refuses most damaged logs, but opens without an error on files
//! that lost acknowledged writes (storage that rolled back, an older copy).
//! So the number of batches written is kept twice: in sled, inside each
//! batch's transaction, and in `ledger-mark` beside the store, written once
//! the batch is on disk. A store that holds fewer batches than the mark
//! lost some, and tollgate refuses to start on it (`check_mark`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use prometheus::{IntCounter, IntGauge};
use sled::Transactional;
use tokio::sync::mpsc;
use tracing::{error, warn};

pub use super::charge::{Charge, Counts};
use super::period::{day_of, DaySpend};
use super::request_log;
use crate::store::Store;

/// Charges that may wait for the writer; beyond that they are dropped
/// (and counted) rather than slowing requests down.
const QUEUE_CAPACITY: usize = 100_000;
pub(super) const MINUTE_MS: u64 = 60_000;
/// Batches written, in the totals tree (whose other keys start with `k` or
/// `u`).
const BATCHES_KEY: &[u8] = b"#batches";
/// The file beside the store that holds the batch count once on disk.
const MARK_FILE: &str = "ledger-mark";
/// Charges taken from the queue at a time; the writer yields the CPU after
/// each slice, so that a request thread on the same core waits for one
/// slice (~0.3 ms with the per-request log) at most, not for a whole batch
/// (~5 ms at 8,000 requests/s).
const CHARGES_PER_SLICE: usize = 128;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const HOURLY_TREE: &str = "usage_hourly";
const TOTALS_TREE: &str = "usage_totals";
/// Per key and user and UTC day of admission (budget periods).
const DAILY_TREE: &str = "usage_daily";
const REQUEST_LOG_TREE: &str = "request_log";

/// The dimensions of an aggregate row, in key order.
pub const DIMENSIONS: [&str; 5] = ["key", "user", "group", "model", "channel"];

/// Aggregate row key: hour start (ms, big-endian so rows sort by time),
/// then each dimension length-prefixed (names may contain any byte).
fn write_hourly_key(k: &mut Vec<u8>, hour_ms: u64, dims: [&str; 5]) {
    k.clear();
    k.extend_from_slice(&hour_ms.to_be_bytes());
    for d in dims {
        let len = u16::try_from(d.len()).unwrap_or(u16::MAX);
        k.extend_from_slice(&len.to_be_bytes());
        k.extend_from_slice(&d.as_bytes()[..usize::from(len)]);
    }
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
    let mut k = Vec::new();
    write_total_key(&mut k, kind, name);
    k
}

fn write_total_key(k: &mut Vec<u8>, kind: u8, name: &str) {
    k.clear();
    k.push(kind);
    k.extend_from_slice(name.as_bytes());
}

/// Daily row key: `k` or `u`, the name length-prefixed, then the day
/// (big-endian), so one account's days are one contiguous range.
fn write_daily_key(k: &mut Vec<u8>, kind: u8, name: &str, day: u32) {
    k.clear();
    k.push(kind);
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
    k.extend_from_slice(&day.to_be_bytes());
}

/// A selection of aggregate rows (`/admin/usage`, docs/operations.md).
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
    /// Also group by the UTC hour or day a row falls in (its label comes
    /// first in the grouped values).
    pub bucket: Option<Bucket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    /// `2026-12-07T13:00Z` for an hour, `2026-12-07` for a day (UTC): text
    /// that sorts in time order.
    fn label(self, hour_ms: u64) -> String {
        let t = chrono::DateTime::from_timestamp_millis(hour_ms as i64).unwrap_or_default();
        match self {
            Bucket::Hour => t.format("%Y-%m-%dT%H:00Z").to_string(),
            Bucket::Day => t.format("%Y-%m-%d").to_string(),
        }
    }
}

pub struct Ledger {
    tx: mpsc::Sender<Charge>,
    /// The writer's end. Held for the whole of a write, so the final drain
    /// at shutdown waits for a batch in progress instead of racing it.
    rx: Mutex<mpsc::Receiver<Charge>>,
    /// Trees are looked up per use, never kept: the store may be reopened
    /// after a write error (`Store::reopen_after_failure`).
    store: Store,
    pending: IntGauge,
    dropped: IntCounter,
    /// `MARK_FILE`, open for rewriting after every batch.
    mark: File,
}

impl Ledger {
    /// Fails if the store lost batches that were once on disk.
    pub fn open(store: &Store, pending: IntGauge, dropped: IntCounter) -> Result<Ledger> {
        for tree in [HOURLY_TREE, DAILY_TREE, REQUEST_LOG_TREE] {
            store.tree(tree)?;
        }
        let written = batches_written(&store.tree(TOTALS_TREE)?)?;
        let mark = check_mark(store.path(), written)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        Ok(Ledger {
            tx,
            rx: Mutex::new(rx),
            store: store.clone(),
            pending,
            dropped,
            mark,
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

    /// A tree for reading, or None (logged) while the store is closed.
    fn tree(&self, name: &str) -> Option<sled::Tree> {
        self.store
            .tree(name)
            .map_err(|e| error!("cannot read the usage ledger: {e:#}"))
            .ok()
    }

    /// Totals of a key (as stored; queued charges are not included).
    pub fn key_totals(&self, key: &str) -> Counts {
        self.read_total(&total_key(b'k', key))
    }

    pub fn user_totals(&self, user: &str) -> Counts {
        self.read_total(&total_key(b'u', user))
    }

    /// Spend of a key (`b'k'`) or user (`b'u'`) by admission day, for the
    /// days in `[first, end)` (as stored; queued charges are not included).
    pub fn daily_spend(&self, kind: u8, name: &str, (first, end): (u32, u32)) -> DaySpend {
        let mut days = DaySpend::default();
        let Some(daily) = self.tree(DAILY_TREE) else {
            return days;
        };
        let (mut from, mut to) = (Vec::new(), Vec::new());
        write_daily_key(&mut from, kind, name, first);
        write_daily_key(&mut to, kind, name, end);
        for (k, v) in daily.range(from..to).filter_map(|r| r.ok()) {
            let day = be_u32(&k[k.len() - 4..]);
            days.add_spent(day, Counts::from_bytes(&v).cost_nanos);
        }
        days
    }

    fn read_total(&self, k: &[u8]) -> Counts {
        match self.store.tree(TOTALS_TREE).and_then(|t| Ok(t.get(k)?)) {
            Ok(v) => v.map(|v| Counts::from_bytes(&v)).unwrap_or_default(),
            Err(e) => {
                error!("cannot read usage totals: {e}");
                Counts::default()
            }
        }
    }

    /// Writes every queued charge and flushes sled: the log a slice at a
    /// time (plain inserts, which leave sled's IO buffer to fill), then the
    /// batch's aggregates in one transaction.
    /// Blocking: call from a blocking thread. `log_days` = 0 keeps no
    /// per-request log.
    pub fn write_pending(&self, log_days: u32) {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        // Only what is queued now, so that a busy server cannot keep the
        // writer in here.
        let queued = rx.len();
        let mut sums = Sums::default();
        let mut taken = 0;
        let mut slice = Vec::with_capacity(CHARGES_PER_SLICE.min(queued));
        while taken < queued {
            slice.clear();
            while slice.len() < CHARGES_PER_SLICE && taken + slice.len() < queued {
                match rx.try_recv() {
                    Ok(c) => slice.push(c),
                    Err(_) => break,
                }
            }
            if slice.is_empty() {
                break;
            }
            taken += slice.len();
            self.pending.sub(slice.len() as i64);
            sums.add(&slice);
            if log_days > 0 {
                if let Err(e) = self.write_log(&slice) {
                    return self.failed(taken, &e);
                }
            }
            std::thread::yield_now();
        }
        if taken == 0 {
            return;
        }
        let written = match self.write_sums(&sums) {
            Ok(written) => written,
            Err(e) => return self.failed(taken, &e),
        };
        if let Err(e) = self.store.flush() {
            return self.failed(taken, &e);
        }
        self.mark_written(written);
    }

    /// The charges are on disk, so they are not reported as dropped if the
    /// mark cannot be written: a mark left behind only weakens the next
    /// start's check until the next batch rewrites it.
    fn mark_written(&self, written: u64) {
        if let Err(e) = write_mark(&self.mark, written) {
            error!("cannot update {MARK_FILE} in the store: {e}");
        }
    }

    /// Counts charges taken from the queue but not on disk as dropped.
    fn failed(&self, charges: usize, e: &anyhow::Error) {
        self.dropped.inc_by(charges as u64);
        error!("cannot write {charges} ledger records: {e}");
        self.store.reopen_after_failure();
    }

    /// Inserts the slice's per-request log chunks (in memory until the next
    /// flush).
    fn write_log(&self, slice: &[Charge]) -> Result<()> {
        let log = self.store.tree(REQUEST_LOG_TREE)?;
        for (minute, entries) in request_log::chunks(slice) {
            let mut k = minute.to_be_bytes().to_vec();
            k.extend_from_slice(&self.store.generate_id()?.to_be_bytes());
            log.insert(k, entries)?;
        }
        Ok(())
    }

    /// Adds a batch's sums to the stored aggregates and totals, and counts
    /// the batch, in one transaction (in memory until the next flush).
    /// Returns the count of batches ever written.
    fn write_sums(&self, sums: &Sums) -> Result<u64> {
        let trees = (
            self.store.tree(HOURLY_TREE)?,
            self.store.tree(TOTALS_TREE)?,
            self.store.tree(DAILY_TREE)?,
        );
        let written = (&trees.0, &trees.1, &trees.2)
            .transaction(|(h, t, d)| {
                for (tree, rows) in [(h, &sums.hourly), (t, &sums.totals), (d, &sums.daily)] {
                    for (k, add) in rows {
                        let mut v = tree
                            .get(k)?
                            .map(|v| Counts::from_bytes(&v))
                            .unwrap_or_default();
                        v.add(add);
                        tree.insert(k.as_slice(), &v.to_bytes()[..])?;
                    }
                }
                let written = t.get(BATCHES_KEY)?.map_or(0, |v| be_u64(&v)) + 1;
                t.insert(BATCHES_KEY, &written.to_be_bytes())?;
                Ok::<u64, sled::transaction::ConflictableTransactionError<()>>(written)
            })
            .map_err(|e| anyhow!("sled transaction failed: {e:?}"))?;
        Ok(written)
    }

    /// Removes per-request log chunks whose whole minute is older than
    /// `log_days` (all of them when 0). Returns how many entries went.
    pub fn prune(&self, log_days: u32, now_ms: u64) -> usize {
        let cutoff = now_ms.saturating_sub(u64::from(log_days) * DAY_MS);
        // Chunks are keyed by the start of their minute.
        let last_start = cutoff.saturating_sub(MINUTE_MS - 1);
        let Some(requests) = self.tree(REQUEST_LOG_TREE) else {
            return 0;
        };
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for item in requests.range(..last_start.to_be_bytes().to_vec()) {
            match item {
                Ok((k, v)) => {
                    batch.remove(k);
                    removed += request_log::count(&v);
                }
                Err(e) => {
                    error!("cannot read the request log: {e}");
                    break;
                }
            }
        }
        if removed > 0 {
            if let Err(e) = requests.apply_batch(batch) {
                error!("cannot prune the request log: {e}");
                return 0;
            }
        }
        removed
    }

    /// Per-request log entries in [from_ms, to_ms), at most `limit`: the
    /// oldest first, or with `newest` the newest first (read backwards, so
    /// the last few of a busy day cost no more than the first few).
    pub fn request_log(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
        newest: bool,
    ) -> Vec<serde_json::Value> {
        let first_minute = from_ms - from_ms % MINUTE_MS;
        let Some(requests) = self.tree(REQUEST_LOG_TREE) else {
            return Vec::new();
        };
        let chunks =
            requests.range(first_minute.to_be_bytes().to_vec()..to_ms.to_be_bytes().to_vec());
        let in_range = |entry: &serde_json::Value| {
            entry["at_ms"]
                .as_u64()
                .is_some_and(|at| (from_ms..to_ms).contains(&at))
        };
        if newest {
            chunks
                .rev()
                .filter_map(|r| r.ok())
                .flat_map(|(_, chunk)| request_log::read(&chunk).into_iter().rev())
                .filter(in_range)
                .take(limit)
                .collect()
        } else {
            chunks
                .filter_map(|r| r.ok())
                .flat_map(|(_, chunk)| request_log::read(&chunk))
                .filter(in_range)
                .take(limit)
                .collect()
        }
    }

    /// Sums aggregate rows selected by `q`, grouped by `q.group_by`.
    pub fn query(&self, q: &Query) -> Vec<(Vec<String>, Counts)> {
        let from_hour = q.from_ms - q.from_ms % HOUR_MS;
        let mut groups: BTreeMap<Vec<String>, Counts> = BTreeMap::new();
        let Some(hourly) = self.tree(HOURLY_TREE) else {
            return Vec::new();
        };
        let rows = hourly.range(from_hour.to_be_bytes().to_vec()..q.to_ms.to_be_bytes().to_vec());
        // Rows come in hour order: one label per hour, not per row.
        let mut label: (Option<u64>, String) = (None, String::new());
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
            let bucket = q.bucket.map(|b| {
                if label.0 != Some(hour) {
                    label = (Some(hour), b.label(hour));
                }
                label.1.clone()
            });
            let group: Vec<String> = bucket
                .into_iter()
                .chain(q.group_by.iter().map(|&i| dims[i].clone()))
                .collect();
            groups
                .entry(group)
                .or_default()
                .add(&Counts::from_bytes(&v));
        }
        groups.into_iter().collect()
    }
}

/// A batch's charges summed per aggregate row, per running total and per
/// admission day.
#[derive(Default)]
struct Sums {
    hourly: foldhash::HashMap<Vec<u8>, Counts>,
    totals: foldhash::HashMap<Vec<u8>, Counts>,
    daily: foldhash::HashMap<Vec<u8>, Counts>,
}

impl Sums {
    /// Keys are built in one reused buffer and copied only for a row the
    /// batch has not seen yet: a batch has few distinct rows, and building
    /// three keys per charge was a third of the writer's work.
    fn add(&mut self, charges: &[Charge]) {
        let mut k = Vec::new();
        for c in charges {
            let counts = Counts::of(c);
            let hour = c.at_ms - c.at_ms % HOUR_MS;
            let dims = [
                c.key.as_str(),
                c.user.as_str(),
                c.group.as_str(),
                c.model.as_str(),
                c.channel.as_str(),
            ];
            write_hourly_key(&mut k, hour, dims);
            add_counts(&mut self.hourly, &k, &counts);
            let day = day_of(c.admitted_ms);
            write_total_key(&mut k, b'k', &c.key);
            add_counts(&mut self.totals, &k, &counts);
            write_daily_key(&mut k, b'k', &c.key, day);
            add_counts(&mut self.daily, &k, &counts);
            if !c.user.is_empty() {
                write_total_key(&mut k, b'u', &c.user);
                add_counts(&mut self.totals, &k, &counts);
                write_daily_key(&mut k, b'u', &c.user, day);
                add_counts(&mut self.daily, &k, &counts);
            }
        }
    }
}

fn add_counts(rows: &mut foldhash::HashMap<Vec<u8>, Counts>, k: &[u8], counts: &Counts) {
    match rows.get_mut(k) {
        Some(row) => row.add(counts),
        None => {
            rows.insert(k.to_vec(), *counts);
        }
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

fn be_u32(bytes: &[u8]) -> u32 {
    bytes.try_into().map_or(0, u32::from_be_bytes)
}

fn batches_written(totals: &sled::Tree) -> Result<u64> {
    Ok(totals.get(BATCHES_KEY)?.map_or(0, |v| be_u64(&v)))
}

/// Compares the store's batch count with the mark beside it: fewer in the
/// store means its files lost acknowledged writes. Returns the mark,
/// updated.
fn check_mark(dir: &Path, written: u64) -> Result<File> {
    let path = dir.join(MARK_FILE);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    // Unreadable or empty (new store, or a crash while it was first
    // written): there is nothing to compare with, and it is rewritten.
    let marked = file
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| text.trim().parse::<u64>().ok());
    if let Some(marked) = marked.filter(|&m| m > written) {
        return Err(anyhow!(
            "store {} lost usage records: {marked} ledger batches were on disk but it now \
             holds {written} (its files lost writes that were acknowledged: damaged or \
             rolled-back storage, or an older copy). Restore the data directory from a \
             backup; or, to go on with what is left, delete {} and start again",
            dir.display(),
            path.display()
        ));
    }
    write_mark(&file, written)?;
    Ok(file)
}

/// One fixed-width write in place, so the mark is never seen half-empty.
fn write_mark(file: &File, written: u64) -> std::io::Result<()> {
    file.write_all_at(format!("{written:020}\n").as_bytes(), 0)
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::metering::charge::{COUNTS_LEN, COUNTS_LEN_V1, COUNTS_LEN_V2, COUNTS_LEN_V3};
    use crate::usage::{Units, Usage};

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

    pub(crate) fn charge(at_ms: u64, key: &str, group: &str, cost: i64) -> Charge {
        Charge {
            at_ms,
            admitted_ms: at_ms,
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
                cache_write_1h: 0,
            },
            units: Units::default(),
            cost_nanos: cost,
            estimated: false,
        }
    }

    fn hourly_key(hour_ms: u64, dims: [&str; 5]) -> Vec<u8> {
        let mut k = Vec::new();
        write_hourly_key(&mut k, hour_ms, dims);
        k
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
            cache_write_1h: 8,
            images: 9,
            image_input: 10,
            audio_ms: 11,
            chars: 12,
            image_output: 13,
        };
        assert_eq!(Counts::from_bytes(&c.to_bytes()), c);
    }

    #[test]
    fn counts_stored_before_one_hour_writes_still_load_and_grow() {
        let (_dir, l) = ledger();
        // A running total as an earlier version stored it: seven fields.
        let old = [1i64, 10, 5, 2, 3, 700, 0];
        let bytes: Vec<u8> = old.iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(bytes.len(), COUNTS_LEN_V1);
        let totals = l.store.tree(TOTALS_TREE).unwrap();
        totals.insert(total_key(b'k', "k1"), bytes).unwrap();
        let read = l.key_totals("k1");
        assert_eq!(
            (
                read.requests,
                read.cache_write,
                read.cost_nanos,
                read.cache_write_1h
            ),
            (1, 3, 700, 0)
        );
        let mut c = charge(HOUR_MS, "k1", "g", 50);
        c.usage.cache_write_1h = 4;
        l.record(c);
        l.write_pending(7);
        let read = l.key_totals("k1");
        assert_eq!(
            (
                read.requests,
                read.input,
                read.cost_nanos,
                read.cache_write_1h
            ),
            (2, 20, 750, 4)
        );
        let stored = totals.get(total_key(b'k', "k1")).unwrap().unwrap();
        assert_eq!(stored.len(), COUNTS_LEN, "rewritten in the current layout");
        // Anything else is unreadable and counts as nothing.
        assert_eq!(Counts::from_bytes(&[0u8; 12]), Counts::default());
    }

    #[test]
    fn counts_stored_before_media_units_still_load_and_grow() {
        let (_dir, l) = ledger();
        // A running total as the previous version stored it: eight fields.
        let old = [1i64, 10, 5, 2, 3, 700, 0, 4];
        let bytes: Vec<u8> = old.iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(bytes.len(), COUNTS_LEN_V2);
        let totals = l.store.tree(TOTALS_TREE).unwrap();
        totals.insert(total_key(b'k', "k1"), bytes).unwrap();
        let read = l.key_totals("k1");
        assert_eq!((read.cache_write_1h, read.images, read.audio_ms), (4, 0, 0));
        let mut c = charge(HOUR_MS, "k1", "g", 50);
        c.units = Units {
            images: 2,
            image_input: 64,
            audio_ms: 1500,
            chars: 11,
            image_output: 1290,
        };
        l.record(c);
        l.write_pending(7);
        let read = l.key_totals("k1");
        assert_eq!(
            (
                read.requests,
                read.cost_nanos,
                read.cache_write_1h,
                read.images,
                read.image_input,
                read.audio_ms,
                read.chars,
                read.image_output
            ),
            (2, 750, 4, 2, 64, 1500, 11, 1290)
        );
        let stored = totals.get(total_key(b'k', "k1")).unwrap().unwrap();
        assert_eq!(stored.len(), COUNTS_LEN, "rewritten in the current layout");
        // Twelve fields (before image_output) read with none of it.
        let v3: Vec<u8> = (1..=12i64).flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(v3.len(), COUNTS_LEN_V3);
        let read = Counts::from_bytes(&v3);
        assert_eq!((read.chars, read.image_output), (12, 0));
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
            bucket: None,
        };
        let rows = l.query(&q);
        assert_eq!(rows, vec![(vec![], Counts::of(&charge(0, "k2", "g2", 3)))]);
        // A second batch adds to the same rows.
        l.record(charge(HOUR_MS + 10, "k1", "g1", 1));
        l.write_pending(7);
        assert_eq!(l.key_totals("k1").cost_nanos, 158);
        assert_eq!(l.request_log(0, u64::MAX, 100, false).len(), 5);
        // By hour and by day, the label first.
        let by_hour = Query {
            to_ms: 10 * HOUR_MS,
            group_by: vec![0],
            bucket: Some(Bucket::Hour),
            ..Default::default()
        };
        let costs: Vec<(Vec<String>, i64)> = l
            .query(&by_hour)
            .into_iter()
            .map(|(dims, c)| (dims, c.cost_nanos))
            .collect();
        let row = |a: &str, b: &str, cost| (vec![a.to_string(), b.to_string()], cost);
        assert_eq!(
            costs,
            vec![
                row("1970-01-01T01:00Z", "k1", 151),
                row("1970-01-01T02:00Z", "k1", 7),
                row("1970-01-01T02:00Z", "k2", 3),
            ]
        );
        let by_day = Query {
            bucket: Some(Bucket::Day),
            group_by: vec![],
            ..by_hour
        };
        let rows = l.query(&by_day);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, vec!["1970-01-01".to_string()]);
        assert_eq!(rows[0].1.cost_nanos, 161);
        // The newest first, and the limit takes the newest.
        let newest = l.request_log(0, u64::MAX, 2, true);
        let at: Vec<u64> = newest
            .iter()
            .map(|e| e["at_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(at, vec![2 * HOUR_MS + 1, 2 * HOUR_MS]);
    }

    /// Replaces sled's files (not the mark) in `to` with those in `from`.
    fn copy_sled_files(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(to).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != MARK_FILE && entry.file_type().unwrap().is_file() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != MARK_FILE && entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    /// Opens the store in `dir` as soon as the handle dropped just before
    /// lets go of it: sled's own threads can hold its file lock a moment
    /// after the drop (seen in about one run of the whole suite in four).
    fn open_when_released(dir: &Path) -> Store {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Store::open(dir) {
                Ok(store) => return store,
                Err(e) if e.to_string().contains("is locked") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e:#}"),
            }
        }
    }

    #[test]
    fn a_store_that_lost_acknowledged_batches_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let older = tempfile::tempdir().unwrap();
        let open = |dir: &Path| {
            let store = open_when_released(dir);
            let ledger = Ledger::open(
                &store,
                IntGauge::new("p", "p").unwrap(),
                IntCounter::new("d", "d").unwrap(),
            );
            (store, ledger)
        };
        {
            let (_store, l) = open(dir.path());
            let l = l.unwrap();
            l.record(charge(HOUR_MS, "k1", "g", 100));
            l.write_pending(7);
            copy_sled_files(dir.path(), older.path());
            for i in 0..20 {
                l.record(charge(HOUR_MS + i, "k1", "g", 1));
                l.write_pending(7);
            }
        }
        // Restarting on an intact store is fine, any number of times.
        for _ in 0..2 {
            let (_store, l) = open(dir.path());
            assert_eq!(l.unwrap().key_totals("k1").cost_nanos, 120);
        }
        // The storage rolls back to the state after the first batch (an
        // older copy, or a disk that lost acknowledged writes): sled opens
        // it without an error.
        copy_sled_files(older.path(), dir.path());
        let (store, l) = open(dir.path());
        let err = format!("{:#}", l.err().expect("refused"));
        assert!(err.contains("lost usage records"), "{err}");
        assert!(err.contains("21 ledger batches were on disk but it now holds 1"));
        assert!(err.contains(&dir.path().join(MARK_FILE).display().to_string()));
        drop(store);
        // Deleting the mark accepts the loss.
        std::fs::remove_file(dir.path().join(MARK_FILE)).unwrap();
        let (_store, l) = open(dir.path());
        assert_eq!(l.unwrap().key_totals("k1").cost_nanos, 100);
    }

    #[test]
    fn a_large_queue_is_written_in_slices_each_charge_once_in_one_batch() {
        let (dir, l) = ledger();
        let n = 2 * CHARGES_PER_SLICE + 3;
        for i in 0..n as u64 {
            l.record(charge(HOUR_MS + i, "k", "g", 2));
        }
        l.write_pending(7);
        assert_eq!(l.key_totals("k").requests, n as i64);
        assert_eq!(l.key_totals("k").cost_nanos, 2 * n as i64);
        assert_eq!(l.request_log(0, u64::MAX, 10 * n, false).len(), n);
        assert_eq!(l.pending.get(), 0);
        let mark = std::fs::read_to_string(dir.path().join(MARK_FILE)).unwrap();
        assert_eq!(
            mark.trim().parse::<u64>().unwrap(),
            1,
            "the aggregates of all slices go in one transaction"
        );
    }

    #[test]
    fn log_retention_prunes_old_entries() {
        let (_dir, l) = ledger();
        let now = 100 * DAY_MS;
        l.record(charge(now - 8 * DAY_MS, "k", "g", 1));
        l.record(charge(now - 6 * DAY_MS, "k", "g", 1));
        l.write_pending(7);
        assert_eq!(l.prune(7, now), 1);
        let left = l.request_log(0, u64::MAX, 10, false);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["at_ms"], now - 6 * DAY_MS);
        // days = 0: no new log entries, and the old ones go.
        l.record(charge(now, "k", "g", 1));
        l.write_pending(0);
        assert_eq!(l.prune(0, now + 1), 1);
        assert!(l.request_log(0, u64::MAX, 10, false).is_empty());
        assert_eq!(l.key_totals("k").requests, 3, "aggregates stay");
    }

    #[test]
    fn a_store_with_json_chunks_of_an_earlier_version_reads_and_prunes_them_with_new_ones() {
        let (_dir, l) = ledger();
        let t = 1_000 * MINUTE_MS;
        let old = format!(
            "{{\"at_ms\":{},\"key\":\"old\",\"user\":\"\",\"group\":\"g\",\"model\":\"m\",\"channel\":\"c\",\"input\":1,\"output\":2,\"cached_input\":0,\"cache_write\":0,\"cost_nanos\":3,\"estimated\":false}}\n{{\"at_ms\":{},\"key\":\"old\",\"user\":\"\",\"group\":\"g\",\"model\":\"m\",\"channel\":\"c\",\"input\":1,\"output\":2,\"cached_input\":0,\"cache_write\":0,\"cost_nanos\":3,\"estimated\":false}}",
            t + 1_000,
            t + 2_000
        );
        let mut k = t.to_be_bytes().to_vec();
        k.extend_from_slice(&l.store.generate_id().unwrap().to_be_bytes());
        l.store
            .tree(REQUEST_LOG_TREE)
            .unwrap()
            .insert(k, old.as_bytes())
            .unwrap();
        l.record(charge(t + 3_000, "new", "g", 7));
        l.record(charge(t + MINUTE_MS, "new", "g", 7));
        l.write_pending(7);
        let log = l.request_log(0, u64::MAX, 10, false);
        let seen: Vec<(u64, &str)> = log
            .iter()
            .map(|e| (e["at_ms"].as_u64().unwrap(), e["key"].as_str().unwrap()))
            .collect();
        let want = [
            (t + 1_000, "old"),
            (t + 2_000, "old"),
            (t + 3_000, "new"),
            (t + MINUTE_MS, "new"),
        ];
        assert_eq!(seen, want);
        assert_eq!(log[0]["cost_nanos"], 3);
        assert_eq!(log[2]["cost_nanos"], 7);
        // The first minute holds two old entries and one new one.
        assert_eq!(l.prune(7, t + MINUTE_MS + 7 * DAY_MS), 3);
        assert_eq!(l.request_log(0, u64::MAX, 10, false).len(), 1);
    }

    #[test]
    fn log_chunks_are_read_and_pruned_by_entry_time() {
        let (_dir, l) = ledger();
        let t = 1_000 * MINUTE_MS;
        for at in [t + 5_000, t + 30_000, t + MINUTE_MS + 10_000] {
            l.record(charge(at, "k", "g", 1));
        }
        l.write_pending(7);
        let at = |v: Vec<serde_json::Value>| -> Vec<u64> {
            v.iter().map(|e| e["at_ms"].as_u64().unwrap()).collect()
        };
        assert_eq!(
            at(l.request_log(t + 20_000, t + MINUTE_MS, 10, false)),
            vec![t + 30_000]
        );
        assert_eq!(
            at(l.request_log(0, u64::MAX, 2, false)),
            vec![t + 5_000, t + 30_000]
        );
        // Retention ends at t + 40 s: the first minute still holds a newer
        // entry, so nothing goes; at t + 60 s the whole first minute goes.
        let days_7 = 7 * DAY_MS;
        assert_eq!(l.prune(7, t + 40_000 + days_7), 0);
        assert_eq!(l.prune(7, t + MINUTE_MS + days_7), 2);
        assert_eq!(
            at(l.request_log(0, u64::MAX, 10, false)),
            vec![t + MINUTE_MS + 10_000]
        );
    }
}
