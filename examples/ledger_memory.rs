//! Resident memory of the usage ledger as charges are written: the
//! measurement behind the store's cache size and the soak's warm-up.
//!
//!   cargo run --release --example ledger_memory -- CHARGES LOG_DAYS [DIR]
//!
//! Writes CHARGES soak-like charges in batches of 20 (the soak's ~80
//! requests/s at the default 250 ms window) and prints the process RSS
//! every 5,000. LOG_DAYS = 0 keeps no per-request log. The store lives in a
//! temporary directory, or in DIR (kept, so a second run shows the RSS of
//! opening a store that already holds a large log).

use std::path::Path;

use prometheus::{IntCounter, IntGauge};
use tollgate::metering::ledger::{Charge, Ledger};
use tollgate::store::Store;
use tollgate::usage::Usage;

const BATCH: u64 = 20;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn charge(n: u64) -> Charge {
    let at_ms = 1_800_000_000_000 + n * 12;
    Charge {
        at_ms,
        admitted_ms: at_ms,
        key: "soak".into(),
        user: String::new(),
        group: "default".into(),
        model: if n.is_multiple_of(20) {
            "soak-abort"
        } else {
            "soak-main"
        }
        .into(),
        channel: if n.is_multiple_of(3) {
            "flaky"
        } else {
            "steady"
        }
        .into(),
        usage: Usage {
            input: 1234,
            output: 321,
            cached_input: 0,
            cache_write: 0,
            cache_write_1h: 0,
        },
        units: Default::default(),
        cost_nanos: 1876,
        estimated: false,
    }
}

fn run(dir: &Path, charges: u64, log_days: u32) -> anyhow::Result<()> {
    let store = Store::open(dir)?;
    println!("opened: rss {} KiB", rss_kib());
    let ledger = Ledger::open(
        &store,
        IntGauge::new("pending", "pending")?,
        IntCounter::new("dropped", "dropped")?,
    )?;
    let mut written = 0;
    while written < charges {
        for i in 0..BATCH {
            ledger.record(charge(written + i));
        }
        ledger.write_pending(log_days);
        written += BATCH;
        if written.is_multiple_of(5_000) {
            println!("charges {written}: rss {} KiB", rss_kib());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(charges), Some(log_days)) = (
        args.first().and_then(|a| a.parse().ok()),
        args.get(1).and_then(|a| a.parse().ok()),
    ) else {
        anyhow::bail!("usage: ledger_memory CHARGES LOG_DAYS [DIR]");
    };
    match args.get(2) {
        Some(dir) => run(Path::new(dir), charges, log_days),
        None => run(tempfile::tempdir()?.path(), charges, log_days),
    }
}
