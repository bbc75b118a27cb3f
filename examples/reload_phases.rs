//! Times the phases of a config reload, so the reload figures of the README
//! can be reproduced without a running gateway:
//!
//! ```sh
//! for v in 0 1; do
//!   cargo run --release --example bench_client -- config --key K --keys 10000 \
//!       --channels 500 --upstream 127.0.0.1:1 --variant $v > /tmp/big$v.toml
//! done
//! cargo run --release --example reload_phases -- /tmp/big0.toml /tmp/big1.toml [ROUNDS]
//! ```
//!
//! Phases: read the file; TOML parse of the whole text into the schema; the
//! whole load (parse, `${VAR}` expansion, validation and compile) with
//! nothing parsed before ("cold", as at start); the same after loading the
//! other file, as a reload that switches between the two does (the two
//! variants differ in every channel's weight: 500 of the 10,532 items are
//! parsed again); and saving the text as the last good config in a fresh
//! sled store. Prints the median and maximum of each over the rounds
//! (default 20), and the process RSS.

use std::time::{Duration, Instant};

use tollgate::config::{self, ParseCache, RawConfig};
use tollgate::health::HealthRegistry;
use tollgate::store::Store;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: reload_phases CONFIG.toml OTHER.toml [ROUNDS]";
    let path = args.next().expect(usage);
    let other = args.next().expect(usage);
    let rounds: usize = args.next().map_or(20, |n| n.parse().expect("ROUNDS"));
    let health = HealthRegistry::default();
    let data = std::env::temp_dir().join(format!("reload-phases-{}", std::process::id()));
    let store = Store::open(&data).expect("store");
    let other = std::fs::read_to_string(&other).expect("read OTHER");
    let env = |name: &str| std::env::var(name).ok();
    let load = |text: String, parser: &mut ParseCache| {
        config::load_text(&path, text, &env, &health, 1, parser).expect("valid config")
    };

    let mut times: [Vec<Duration>; 5] = Default::default();
    for round in 0..rounds {
        let t = Instant::now();
        let text = std::fs::read_to_string(&path).expect("read");
        times[0].push(t.elapsed());

        let t = Instant::now();
        let raw: RawConfig = toml::from_str(&text).expect("valid TOML");
        times[1].push(t.elapsed());
        drop(raw);

        // The loads own their text, as a reload owns what it read.
        let copy = text.clone();
        let t = Instant::now();
        drop(load(copy, &mut ParseCache::default()));
        times[2].push(t.elapsed());

        let mut parser = ParseCache::default();
        drop(load(other.clone(), &mut parser));
        let copy = text.clone();
        let t = Instant::now();
        let loaded = load(copy, &mut parser);
        times[3].push(t.elapsed());

        // Alternate two texts so every round really writes.
        let saved = format!("{}# round {round}\n", loaded.snapshot.source_text);
        let t = Instant::now();
        store.save_last_good_config(&saved).expect("save");
        times[4].push(t.elapsed());
    }
    for (name, mut v) in [
        "read",
        "toml parse of the whole text",
        "load, cold (parse+expand+validate+compile)",
        "load after loading OTHER",
        "last-good save",
    ]
    .into_iter()
    .zip(times)
    {
        v.sort();
        println!(
            "{name:<44} median {:>8.2} ms   max {:>8.2} ms",
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1])
        );
    }
    println!("RSS after {rounds} rounds: {} KiB", rss_kib());
    drop(store);
    let _ = std::fs::remove_dir_all(&data);
}
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
