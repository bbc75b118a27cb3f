//! Cluster mode (docs/cluster.md): nodes behind one load balancer share
//! budgets, reservations, rate windows, concurrency leases and channel
//! cooldowns through Redis or Valkey.
//!
//! A busy key far from its limits is admitted on this node's grants (its
//! share of the key's limits, reserved in Redis and renewed by the
//! background [`worker`] once per tick), with no round trip. Otherwise the
//! request path touches Redis at most twice: one script call at admission
//! ([`Cluster::admit`], awaited, with a bounded timeout) and one pipelined
//! batch at settlement, sent by the worker after the answer is out. Every
//! node publishes its *own absolute* totals (one hash field per node), so
//! publishing again is harmless and a Redis that comes back empty is
//! rebuilt from the nodes' sled ledgers.

mod grants;
mod journal;
mod keys;
pub mod scripts;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use arc_swap::ArcSwapOption;
use foldhash::HashMap;
use prometheus::{Histogram, HistogramOpts, IntGauge};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::config::{ClusterSettings, OnRedisError};
use crate::keys::registry::Registry;
use crate::metrics::Metrics;
use crate::store::Store;
pub use grants::{GrantAsk, Granted, OwnTotals, Round};
pub use scripts::Kind;
pub use worker::ClusterWorker;

/// Why the cluster refused a request (the same reasons as a single node's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    KeyExhausted,
    KeyHeld,
    UserExhausted,
    UserHeld,
    Concurrency,
    /// Seconds until the key's tokens per minute allow another request.
    Tpm(u64),
    /// Seconds until the key's requests per minute allow another.
    Rpm(u64),
}

impl Refusal {
    fn from_code(code: i64, wait: i64) -> Option<Refusal> {
        let wait = wait.max(1) as u64;
        Some(match code {
            1 => Refusal::KeyExhausted,
            2 => Refusal::KeyHeld,
            3 => Refusal::UserExhausted,
            4 => Refusal::UserHeld,
            5 => Refusal::Concurrency,
            6 => Refusal::Tpm(wait),
            7 => Refusal::Rpm(wait),
            _ => return None,
        })
    }
}

/// A budget as the cluster checks it: nano-USD, and for a budget per
/// period the admission days `[first, end)` it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBudget {
    pub nanos: i64,
    pub days: Option<(u32, u32)>,
}

/// What admission asks of the cluster for one request.
pub struct AdmitRequest<'a> {
    pub key: &'a str,
    pub user: Option<&'a str>,
    pub reserved: i64,
    pub key_budget: Option<SharedBudget>,
    pub user_budget: Option<SharedBudget>,
    /// For the spend figures returned when there is no budget.
    pub key_days: Option<(u32, u32)>,
    pub user_days: Option<(u32, u32)>,
    pub max_concurrent: u32,
    pub rpm: u32,
    pub tpm: u64,
}

/// A request admitted by the cluster: its lease (concurrency slot and
/// reservation) and the cluster-wide spend of the key and user that the
/// budgets were checked against.
pub struct Admitted {
    pub lease: Lease,
    pub key_spent: i64,
    pub user_spent: i64,
}

/// One running request's entry in Redis; renewed by the worker until the
/// request settles or is dropped, and expired by Redis if this node dies.
#[derive(Debug)]
pub struct Lease {
    id: u64,
}

/// An account's spend to read: lifetime (`None`) or the days `[first, end)`.
pub type SpendQuery<'a> = (Kind, &'a str, Option<(u32, u32)>);

/// Redis could not be asked in time (or is known to be down).
#[derive(Debug)]
pub struct Unavailable;

/// Where the worker reads the node's own totals when it re-publishes them
/// (metering, wired by the server).
pub trait OwnSpend: Send + Sync {
    /// Every account this node has spend of.
    fn all_accounts(&self) -> Vec<(Kind, String)>;
    fn own_totals(&self, kind: Kind, name: &str) -> OwnTotals;
    /// The publication and grant requests of these keys (and their
    /// users), for Redis generation `generation` ([`Cluster::generation`]).
    fn grant_round(&self, keys: &[String], generation: u64) -> Round;
    /// Redis's answers to a round's asks, in order; `None` when the round
    /// failed.
    fn apply_grants(&self, round: &Round, granted: Option<&[Granted]>, generation: u64);
}

/// Work for the background worker, in the order it was queued.
enum Op {
    /// A request settled (or was let go): publish its accounts' totals,
    /// count its tokens, drop its lease.
    Settle {
        lease: Option<(u64, LeaseAccounts)>,
        totals: Vec<OwnTotals>,
        tokens: Option<(String, u64, u64)>,
    },
    Cooldown(String),
    /// A key's grant ran low or is missing: renew it now.
    Want(String),
}

/// Whose leases a running request holds.
#[derive(Debug, Clone)]
struct LeaseAccounts {
    key: String,
    user: Option<String>,
}

/// Called with (channel, cooldown ms left, failures, reason) when another
/// node reports a failing channel.
pub type CooldownSink = Box<dyn Fn(&str, u64, u32, String) + Send + Sync>;

pub struct Cluster {
    settings: ClusterSettings,
    /// Set by the worker once connected; the request path only clones it.
    conn: ArcSwapOption<ConnectionManager>,
    up: AtomicBool,
    next_lease: AtomicU64,
    /// Running requests' leases: renewed by the worker.
    leases: Mutex<HashMap<u64, LeaseAccounts>>,
    /// Keys with spend to publish or a grant to renew at the next tick.
    touched: Mutex<foldhash::HashSet<String>>,
    /// Bumped whenever Redis is lost: grants of an older generation are
    /// void (their reservations may be gone).
    generation: AtomicU64,
    ops: mpsc::UnboundedSender<Op>,
    ops_rx: Mutex<Option<mpsc::UnboundedReceiver<Op>>>,
    journal: journal::Journal,
    source: std::sync::OnceLock<Arc<dyn OwnSpend>>,
    on_cooldown: std::sync::OnceLock<CooldownSink>,
    /// Managed keys, shared with the other nodes.
    keys: std::sync::OnceLock<Arc<Registry>>,
    /// Lease ids are unique across this node's restarts.
    boot: u64,
    metrics: ClusterMetrics,
}

struct ClusterMetrics {
    up: IntGauge,
    pending: IntGauge,
    roundtrip: Histogram,
}

impl ClusterMetrics {
    fn register(m: &Metrics) -> Result<ClusterMetrics> {
        let up = IntGauge::new(
            "tollgate_cluster_up",
            "1 while this node reaches the cluster's Redis, 0 while it runs on its own view",
        )?;
        let pending = IntGauge::new(
            "tollgate_cluster_pending_deltas",
            "Accounts whose spend this node still has to publish to Redis (journaled in sled)",
        )?;
        let roundtrip = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_cluster_roundtrip_seconds",
                "Redis round trips of this node: admission scripts and settlement batches",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        m.register(Box::new(up.clone()))?;
        m.register(Box::new(pending.clone()))?;
        m.register(Box::new(roundtrip.clone()))?;
        Ok(ClusterMetrics {
            up,
            pending,
            roundtrip,
        })
    }
}

impl Cluster {
    pub fn new(
        settings: ClusterSettings,
        store: &Store,
        metrics: &Metrics,
    ) -> Result<Arc<Cluster>> {
        let metrics = ClusterMetrics::register(metrics)?;
        let journal = journal::Journal::open(store)?;
        metrics.pending.set(journal.len() as i64);
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Cluster {
            settings,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            next_lease: AtomicU64::new(1),
            leases: Mutex::new(HashMap::default()),
            touched: Mutex::new(foldhash::HashSet::default()),
            generation: AtomicU64::new(1),
            ops: tx,
            ops_rx: Mutex::new(Some(rx)),
            journal,
            source: std::sync::OnceLock::new(),
            on_cooldown: std::sync::OnceLock::new(),
            keys: std::sync::OnceLock::new(),
            boot: crate::clock::now_ms(),
            metrics,
        }))
    }

    /// Where re-publishing reads this node's own totals.
    pub fn set_source(&self, source: Arc<dyn OwnSpend>) {
        let _ = self.source.set(source);
    }

    /// What to do with another node's cooldown report.
    pub fn set_cooldown_sink(&self, sink: CooldownSink) {
        let _ = self.on_cooldown.set(sink);
    }

    /// The managed keys to share (created or revoked on any node, in
    /// force on all within a second).
    pub fn set_keys(&self, registry: Arc<Registry>) {
        let _ = self.keys.set(registry);
    }

    /// How long Redis keeps a lease or a grant its node stops renewing.
    pub fn lease(&self) -> std::time::Duration {
        self.settings.lease
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn refuses_when_down(&self) -> bool {
        self.settings.on_redis_error == OnRedisError::Refuse
    }

    pub fn mode(&self) -> &'static str {
        match self.settings.on_redis_error {
            OnRedisError::Local => "local",
            OnRedisError::Refuse => "refuse",
        }
    }

    /// Grants are valid only in the generation they were made in.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Publishes this key's (and its user's) totals at the next tick, and
    /// renews its grant.
    pub fn touch(&self, key: &str) {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        if !touched.contains(key) {
            touched.insert(key.to_string());
        }
    }

    /// Asks the worker for this key's grant now, not at the next tick.
    pub fn want_grant(&self, key: &str) {
        let _ = self.ops.send(Op::Want(key.to_string()));
    }

    /// Makes every grant made so far void (see [`Cluster::generation`]).
    fn void_grants(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn set_up(&self, up: bool) {
        if !up {
            self.void_grants();
        }
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::info!(node = %self.settings.node, "cluster: Redis reachable, shared state in force");
            } else {
                tracing::warn!(node = %self.settings.node, mode = self.mode(), "cluster: Redis unreachable or slow, running on this node's own view");
            }
        }
        self.metrics.up.set(i64::from(up));
    }

    fn lease_id_text(&self, id: u64) -> String {
        format!("{}:{:x}:{id:x}", self.settings.node, self.boot)
    }

    /// The admission script, in one round trip bounded by `timeout_ms`. A
    /// timeout or error marks the cluster down until the worker reaches
    /// Redis again.
    pub async fn admit(
        &self,
        req: &AdmitRequest<'_>,
    ) -> Result<Result<Admitted, Refusal>, Unavailable> {
        let Some(conn) = self.conn.load_full().filter(|_| self.is_up()) else {
            return Err(Unavailable);
        };
        let mut conn = ConnectionManager::clone(&conn);
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let mut inv = scripts::ADMIT.prepare_invoke();
        let (k, u) = (req.key, req.user.unwrap_or(""));
        inv.key(scripts::spend_key(Kind::Key, k))
            .key(scripts::leases_key(Kind::Key, k))
            .key(scripts::held_key(Kind::Key, k))
            .key(scripts::rates_key(k))
            .key(scripts::spend_key(Kind::User, u))
            .key(scripts::leases_key(Kind::User, u))
            .key(scripts::held_key(Kind::User, u))
            .key(scripts::blocks_key(Kind::Key, k))
            .key(scripts::blocks_key(Kind::User, u));
        let days = |d: Option<(u32, u32)>| d.map_or(-1, |(a, b)| i64::from(b.saturating_sub(a)));
        let key_days = req.key_budget.map_or(req.key_days, |b| b.days);
        let user_days = req.user_budget.map_or(req.user_days, |b| b.days);
        for (kind, name, range) in [(Kind::Key, k, key_days), (Kind::User, u, user_days)] {
            if let Some((first, end)) = range {
                for day in first..end {
                    inv.key(scripts::day_key(kind, name, day));
                }
            }
        }
        inv.arg(self.lease_id_text(id))
            .arg(self.settings.lease.as_millis() as u64)
            .arg(req.reserved)
            .arg(req.key_budget.map_or(-1, |b| b.nanos))
            .arg(req.user_budget.map_or(-1, |b| b.nanos))
            .arg(req.max_concurrent)
            .arg(req.rpm)
            .arg(req.tpm)
            .arg(days(key_days))
            .arg(if req.user.is_some() {
                days(user_days)
            } else {
                -1
            })
            .arg(u8::from(req.user.is_some()));
        let started = Instant::now();
        let call = inv.invoke_async::<(i64, i64, i64)>(&mut conn);
        let answer = tokio::time::timeout(self.settings.timeout, call).await;
        self.metrics
            .roundtrip
            .observe(started.elapsed().as_secs_f64());
        let (code, a, b) = match answer {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!("cluster: admission failed: {:?}", e.kind());
                self.set_up(false);
                return Err(Unavailable);
            }
            Err(_) => {
                tracing::warn!(
                    "cluster: Redis did not answer the admission within {} ms",
                    self.settings.timeout.as_millis()
                );
                self.set_up(false);
                return Err(Unavailable);
            }
        };
        if let Some(refusal) = Refusal::from_code(code, a) {
            return Ok(Err(refusal));
        }
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                LeaseAccounts {
                    key: k.to_string(),
                    user: req.user.map(str::to_string),
                },
            );
        Ok(Ok(Admitted {
            lease: Lease { id },
            key_spent: a,
            user_spent: b,
        }))
    }

    /// Queues a finished request's publication: the accounts' own totals
    /// (absolute), its tokens for the shared tpm window, and the end of its
    /// lease. Sent by the worker in one pipelined batch; never blocks.
    pub fn settle(
        &self,
        lease: Option<Lease>,
        totals: Vec<OwnTotals>,
        tokens: Option<(&str, u64, u64)>,
    ) {
        let lease = lease.and_then(|l| self.take_lease(l));
        let tokens = tokens.map(|(k, tpm, n)| (k.to_string(), tpm, n));
        let _ = self.ops.send(Op::Settle {
            lease,
            totals,
            tokens,
        });
    }

    /// Gives back a lease of a request that was not billed.
    pub fn release(&self, lease: Lease) {
        if let Some(lease) = self.take_lease(lease) {
            let _ = self.ops.send(Op::Settle {
                lease: Some(lease),
                totals: Vec::new(),
                tokens: None,
            });
        }
    }

    fn take_lease(&self, lease: Lease) -> Option<(u64, LeaseAccounts)> {
        let accounts = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lease.id)?;
        Some((lease.id, accounts))
    }

    /// Tells the other nodes that a channel is cooling down here for
    /// `left_ms` more, after `failures` failures in a row.
    pub fn publish_cooldown(&self, channel: &str, left_ms: u64, failures: u32, reason: &str) {
        let event = serde_json::json!({
            "type": "cooldown",
            "node": self.settings.node,
            "channel": channel,
            "left_ms": left_ms,
            "failures": failures,
            "reason": reason,
        });
        let _ = self.ops.send(Op::Cooldown(event.to_string()));
    }

    /// The cluster-wide spend of accounts (lifetime, or the days given), for
    /// `/api/usage`: one pipelined round trip, bounded by `timeout_ms`.
    pub async fn spent(&self, accounts: &[SpendQuery<'_>]) -> Option<Vec<i64>> {
        let conn = self.conn.load_full().filter(|_| self.is_up())?;
        let mut conn = ConnectionManager::clone(&conn);
        let mut pipe = redis::pipe();
        let mut ranges = Vec::new();
        for &(kind, name, days) in accounts {
            let start = ranges
                .iter()
                .map(|&(_, n): &(usize, usize)| n)
                .sum::<usize>();
            let keys: Vec<String> = match days {
                None => vec![scripts::spend_key(kind, name)],
                Some((first, end)) => (first..end)
                    .map(|d| scripts::day_key(kind, name, d))
                    .collect(),
            };
            for k in &keys {
                pipe.cmd("HVALS").arg(k);
            }
            ranges.push((start, keys.len()));
        }
        let answer = tokio::time::timeout(
            self.settings.timeout,
            pipe.query_async::<Vec<Vec<i64>>>(&mut conn),
        )
        .await;
        let values = match answer {
            Ok(Ok(v)) => v,
            _ => return None,
        };
        Some(
            ranges
                .iter()
                .map(|&(start, n)| values[start..start + n].iter().flatten().sum())
                .collect(),
        )
    }

    /// The admin URLs of the nodes registered in Redis (this one included),
    /// by node name.
    pub async fn nodes(&self) -> Option<Vec<(String, String)>> {
        let conn = self.conn.load_full().filter(|_| self.is_up())?;
        worker::registered_nodes(ConnectionManager::clone(&conn), self.settings.timeout * 10).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_match_the_admission_script() {
        assert_eq!(Refusal::from_code(0, 5), None);
        assert_eq!(Refusal::from_code(1, 1), Some(Refusal::KeyExhausted));
        assert_eq!(Refusal::from_code(4, 1), Some(Refusal::UserHeld));
        assert_eq!(Refusal::from_code(5, 1), Some(Refusal::Concurrency));
        assert_eq!(Refusal::from_code(6, 13), Some(Refusal::Tpm(13)));
        assert_eq!(Refusal::from_code(7, 0), Some(Refusal::Rpm(1)));
    }
}
