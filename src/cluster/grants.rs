//! Grants (docs/cluster.md, "Grants"): each node holds a share of a
//! busy account's budget, concurrency slots and rpm window, reserved for
//! it in Redis, and admits requests within that share without a round
//! trip. Once per tick (or at once when a share runs low) the worker
//! publishes the node's totals and renews, grows or shrinks every share
//! in one pipeline.

use std::time::Duration;

use redis::Pipeline;

use super::scripts::{self, Kind};

/// A node's own absolute spend of one account: lifetime and by day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnTotals {
    pub kind: Kind,
    pub name: String,
    pub total: i64,
    pub days: Vec<(u32, i64)>,
}

/// One account's request for a grant, built by metering under the
/// account's locks.
#[derive(Debug, Clone)]
pub struct GrantAsk {
    pub kind: Kind,
    pub name: String,
    /// nano-USD; `None` = no budget to share.
    pub budget: Option<i64>,
    /// The budget's scope: the admission days `[first, end)`, or lifetime.
    pub days: Option<(u32, u32)>,
    /// What the node keeps whatever Redis finds free (it may have
    /// committed it already), what it would like, and the least growth
    /// worth having.
    pub min_budget: i64,
    pub want_budget: i64,
    pub floor: i64,
    pub max_concurrent: u32,
    pub min_slots: u32,
    pub want_slots: u32,
    pub rpm: u32,
    pub want_tokens: u32,
    /// Unused rpm tokens of the last grant, returned to the window.
    pub give_back: u32,
    /// Read the key's shared tpm window.
    pub tpm: bool,
    /// Metering's own: the node's spend in scope when it asked (what the
    /// granted budget adds to), and when it asked (ns, metering clock).
    pub base: i64,
    pub asked_ns: u64,
}

impl GrantAsk {
    /// An ask for nothing yet: the caller sets the parts it shares.
    pub fn new(kind: Kind, name: &str, asked_ns: u64) -> GrantAsk {
        GrantAsk {
            kind,
            name: name.to_string(),
            budget: None,
            days: None,
            min_budget: 0,
            want_budget: 0,
            floor: 1,
            max_concurrent: 0,
            min_slots: 0,
            want_slots: 0,
            rpm: 0,
            want_tokens: 0,
            give_back: 0,
            tpm: false,
            base: 0,
            asked_ns,
        }
    }
}

/// Redis's answer to a [`GrantAsk`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Granted {
    pub budget: i64,
    pub slots: u32,
    pub tokens: u32,
    pub tpm_debt_us: u64,
    /// The cluster-wide spend in the budget's scope.
    pub spent: i64,
}

/// One tick's publication: totals to raise, tokens to count, grants to
/// renew. Built by metering ([`super::OwnSpend::grant_round`]).
#[derive(Debug, Default)]
pub struct Round {
    pub totals: Vec<OwnTotals>,
    /// (key, tpm, tokens) of requests settled under a grant.
    pub tokens: Vec<(String, u64, u64)>,
    pub asks: Vec<GrantAsk>,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.totals.is_empty() && self.tokens.is_empty() && self.asks.is_empty()
    }
}

/// Appends the grant script of one ask to a pipeline.
pub(super) fn grant(pipe: &mut Pipeline, node: &str, lease: Duration, ask: &GrantAsk) {
    let kind = ask.kind;
    let name = ask.name.as_str();
    let mut keys = vec![
        scripts::blocks_key(kind, name),
        scripts::leases_key(kind, name),
        scripts::held_key(kind, name),
        match kind {
            Kind::Key => scripts::rates_key(name),
            // Never written: a user has no rate window.
            Kind::User => format!("tg:rate:u:{name}"),
        },
    ];
    match ask.days {
        None => keys.push(scripts::spend_key(kind, name)),
        Some((first, end)) => keys.extend((first..end).map(|d| scripts::day_key(kind, name, d))),
    }
    evalsha(pipe, &scripts::GRANT, &keys)
        .arg(node)
        .arg(lease.as_millis() as u64)
        .arg(ask.budget.unwrap_or(-1))
        .arg(ask.min_budget)
        .arg(ask.want_budget)
        .arg(ask.floor.max(1))
        .arg(ask.max_concurrent)
        .arg(ask.min_slots)
        .arg(ask.want_slots)
        .arg(ask.rpm)
        .arg(ask.want_tokens)
        .arg(ask.give_back)
        .arg(u8::from(ask.tpm));
}

/// Appends `EVALSHA` of a script (loaded at every (re)connect) to a pipeline.
pub(super) fn evalsha<'p>(
    pipe: &'p mut Pipeline,
    script: &redis::Script,
    keys: &[String],
) -> &'p mut Pipeline {
    let cmd = pipe.cmd("EVALSHA").arg(script.get_hash()).arg(keys.len());
    for k in keys {
        cmd.arg(k);
    }
    cmd
}

/// Publishes one account's own totals (lifetime and by day).
pub(super) fn raise(pipe: &mut Pipeline, node: &str, t: &OwnTotals) {
    let mut keys = vec![scripts::spend_key(t.kind, &t.name)];
    keys.extend(
        t.days
            .iter()
            .map(|(d, _)| scripts::day_key(t.kind, &t.name, *d)),
    );
    let cmd = evalsha(pipe, &scripts::RAISE, &keys).arg(node).arg(t.total);
    for (_, n) in &t.days {
        cmd.arg(*n);
    }
}
