//! Cluster grants on the node's side (docs/cluster.md, "Grants"): a busy
//! key's share of its budget, its user's budget, its concurrency slots
//! and its rpm window, reserved for this node in Redis, lets the node
//! admit without a round trip. Near a limit the shares stop growing, the
//! local checks fail, and admissions ask Redis one by one as before.
//!
//! The invariant: what this node may still commit beyond the spend it
//! published is never more than what Redis holds for it. So a node lowers
//! its own ceiling *before* asking for less, and Redis never grants less
//! than the node says it may already have committed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::limits::{
    lock, lock_rates, lock_spend, Account, Budget, BudgetGrant, ConcurrencySlot, GrantLimits,
    KeyAccount, KeyGrant,
};
use super::period::bounds;
use super::shared::{own_totals, Plan};
use super::{Admission, Metering, Spend};
use crate::cluster::{Cluster, GrantAsk, Granted, Kind, Round};
use crate::config::{BudgetPeriod, Key};

/// How long rpm tokens may wait to be used: a token counts in the shared
/// window from when it was granted, so using it later shifts at most this
/// much of a minute's requests.
const TOKEN_LIFE: Duration = Duration::from_secs(1);
/// How long a node asks for no more after Redis refused it more.
const QUIET: Duration = Duration::from_secs(1);
/// A budget grant asks for this many of the key's last reservations at
/// least, and grows only by this many at least ([`GrantAsk::floor`]).
const BUDGET_WANT: i64 = 64;
const BUDGET_FLOOR: i64 = 8;

/// The node's clock and Redis generation, against which grants hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    pub ns: u64,
    pub generation: u64,
}

impl Now {
    fn holds(self, generation: u64, until_ns: u64) -> bool {
        generation == self.generation && self.ns < until_ns
    }
}

impl GrantLimits {
    fn of(key: &Key, key_budget: Option<Budget>, user_budget: Option<Budget>) -> GrantLimits {
        GrantLimits {
            key_budget,
            user: key.user.clone(),
            user_budget,
            max_concurrent: key.max_concurrent,
            rpm: key.rpm,
            tpm: key.tpm,
        }
    }

    /// Limits of the key itself (not its user's budget) to share.
    fn key_side(&self) -> bool {
        self.key_budget.is_some() || self.rates()
    }

    /// The key's own checks that need a live grant besides its budget.
    fn rates(&self) -> bool {
        self.max_concurrent.is_some() || self.rpm.is_some() || self.tpm.is_some()
    }
}

impl KeyGrant {
    /// Keeps the key's limits for the worker's asks; compared first, so
    /// the request path allocates only when they changed.
    fn note(&mut self, key: &Key, key_budget: Option<Budget>, user_budget: Option<Budget>) {
        let same = self.limits.as_ref().is_some_and(|l| {
            l.key_budget == key_budget
                && l.user_budget == user_budget
                && l.user.as_deref() == key.user.as_deref()
                && (l.max_concurrent, l.rpm, l.tpm) == (key.max_concurrent, key.rpm, key.tpm)
        });
        if !same {
            self.limits = Some(GrantLimits::of(key, key_budget, user_budget));
        }
    }

    /// What the next budget asks want beyond what is running (`extra`),
    /// and the least growth worth having (`floor`). Saturating: a request
    /// may reserve up to `i64::MAX`, and an overflow would end the worker.
    fn budget_sizes(&self, now_ns: u64, elapsed: u64) -> (i64, i64) {
        let extra = if self.admitted == 0 || now_ns < self.tight_until_ns {
            0
        } else {
            BUDGET_WANT
                .saturating_mul(self.last_reserved)
                .max(per_second(self.reserved, elapsed))
        };
        (
            extra,
            BUDGET_FLOOR.saturating_mul(self.last_reserved).max(1),
        )
    }

    /// This node's slots until Redis answers, and the ask's (min, want):
    /// never more than `max` of them, whatever an older grant (made under
    /// a higher `max_concurrent`, before a reload) held, but always the
    /// requests running on them.
    fn slot_ask(&mut self, max: u32, in_flight: u32, live: bool) -> (u32, u32) {
        let peak = std::mem::take(&mut self.peak_in_flight);
        let want = if self.admitted > 0 {
            peak.saturating_mul(2).saturating_add(8)
        } else {
            in_flight
        };
        let left = if live { self.slots.min(max) } else { 0 };
        // Until Redis answers, no more slots than kept.
        self.slots = in_flight.max(left.min(want));
        (self.slots, want.max(self.slots))
    }

    /// Whether the key's slots or tokens are running out: ask before they do.
    fn running_low(&self, key: &Key, in_flight: u32) -> bool {
        (key.rpm.is_some() && self.tokens.saturating_mul(4) < self.tokens_granted)
            || (key.max_concurrent.is_some() && in_flight.saturating_mul(4) >= self.slots * 3)
    }
}

/// `n` per `elapsed_ns`, as a rate per second (over at least 50 ms, so a
/// burst right after an ask does not look like a flood).
fn per_second(n: i64, elapsed_ns: u64) -> i64 {
    let elapsed = elapsed_ns.max(50_000_000);
    (i128::from(n) * 1_000_000_000 / i128::from(elapsed)).clamp(0, i128::from(i64::MAX)) as i64
}

fn scope_of(period: Option<BudgetPeriod>, today: u32) -> u32 {
    period.map_or(0, |p| bounds(p, today).0)
}

/// What a node asks of one budget: keep `min`, like `want`, and the own
/// spend both are counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BudgetAsk {
    pub base: i64,
    pub min: i64,
    pub want: i64,
}

impl Spend {
    fn live_grant(&self, budget: Budget, today: u32, now: Now) -> Option<BudgetGrant> {
        self.grant
            .filter(|g| now.holds(g.generation, g.until_ns))
            .filter(|g| g.scope == scope_of(budget.period, today))
    }

    /// This node's own spend and reservations in the budget's scope.
    fn own_against(&self, period: Option<BudgetPeriod>, today: u32) -> (i64, i64) {
        let (spent, reserved) = self.against(period, today);
        (spent.saturating_sub(self.others), reserved)
    }

    /// Reserves `amount` within this node's grant: admitted while its own
    /// spend and reservations are below the ceiling, as a single node
    /// admits below its budget (overdraw: at most the last request).
    pub(super) fn try_reserve_granted(
        &mut self,
        budget: Budget,
        today: u32,
        now: Now,
        amount: i64,
    ) -> bool {
        let Some(grant) = self.live_grant(budget, today, now) else {
            return false;
        };
        let (spent, _) = self.own_against(budget.period, today);
        if spent.saturating_add(self.granted_reserved) >= self.ceiling_within(budget, grant) {
            return false;
        }
        self.reserve_on_grant(today, amount);
        true
    }

    /// The grant's ceiling, but no more than the budget leaves beside the
    /// other nodes' spend: a grant made under a higher budget (before a
    /// reload lowered it) does not outlive it.
    fn ceiling_within(&self, budget: Budget, grant: BudgetGrant) -> i64 {
        grant.ceiling.min(budget.nanos.saturating_sub(self.others))
    }

    /// Reserves `amount` as a request running on this node's grants.
    pub(super) fn reserve_on_grant(&mut self, today: u32, amount: i64) {
        let _ = self.try_reserve(None, today, amount);
        self.granted_reserved = self.granted_reserved.saturating_add(amount);
    }

    /// The budget part of an ask, wanting `extra` beyond what is running.
    /// Until Redis answers, the node commits no more than it keeps.
    pub(super) fn budget_ask(
        &mut self,
        budget: Budget,
        today: u32,
        now: Now,
        extra: i64,
    ) -> BudgetAsk {
        let (base, _) = self.own_against(budget.period, today);
        // Requests admitted by the admission script hold their own
        // reservations in Redis: only those on the grant count here.
        let running = self.granted_reserved;
        let left = self
            .live_grant(budget, today, now)
            .map_or(0, |g| self.ceiling_within(budget, g).saturating_sub(base));
        let want = running.saturating_add(extra.max(0));
        let min = running.max(left.min(want));
        if let Some(g) = &mut self.grant {
            g.ceiling = g.ceiling.min(base.saturating_add(min));
        }
        BudgetAsk { base, min, want }
    }
}

impl Metering {
    fn grant_ttl(&self) -> Duration {
        // Redis keeps a grant for the lease from when it answers; the node
        // trusts it for half of that from before it asked.
        self.cluster
            .as_ref()
            .map_or(Duration::ZERO, |c| c.lease() / 2)
    }

    /// Admission within this node's grants, with no Redis call; `None`
    /// when a grant is missing, void or too small (then Redis decides,
    /// and the grant is asked for).
    /// `retry`: the same request again after the admission script refused
    /// it, already counted in what the next ask is sized by.
    pub(super) fn admit_granted(
        &self,
        cluster: &Cluster,
        key: &Key,
        plan: &Plan,
        retry: bool,
    ) -> Option<Admission> {
        let now = Now {
            ns: self.now_ns(),
            generation: cluster.generation(),
        };
        let acc = &plan.key_acc;
        let mut g = lock(&acc.grant);
        g.note(key, plan.key_budget, plan.user_budget);
        if !retry {
            g.admitted = g.admitted.saturating_add(1);
            g.reserved = g.reserved.saturating_add(plan.reserved);
            g.last_reserved = plan.reserved;
        }
        let admitted = cluster
            .is_up()
            .then(|| self.take_granted(&mut g, acc, key, plan, now))
            .flatten();
        let in_flight = acc.in_flight.load(Ordering::Acquire);
        g.peak_in_flight = g.peak_in_flight.max(in_flight);
        let low =
            admitted.is_none() || g.running_low(key, acc.granted_in_flight.load(Ordering::Acquire));
        if low && !g.asked && now.ns >= g.quiet_until_ns {
            g.asked = true;
            cluster.want_grant(&key.name);
        }
        admitted
    }

    fn take_granted(
        &self,
        g: &mut KeyGrant,
        acc: &Arc<KeyAccount>,
        key: &Key,
        plan: &Plan,
        now: Now,
    ) -> Option<Admission> {
        let limits = g.limits.as_ref()?;
        if limits.rates() && !now.holds(g.generation, g.until_ns) {
            return None;
        }
        if key.rpm.is_some() && (g.tokens == 0 || now.ns >= g.tokens_until_ns) {
            return None;
        }
        if key.tpm.is_some() && !lock_rates(acc).tokens_below_half(now.ns) {
            return None;
        }
        let (today, reserved) = (plan.today, plan.reserved);
        let reserve = |account: &Account, budget: Option<Budget>| {
            let mut spend = lock_spend(account);
            match budget {
                Some(b) => spend.try_reserve_granted(b, today, now, reserved),
                None => {
                    spend.reserve_on_grant(today, reserved);
                    true
                }
            }
        };
        if !reserve(&acc.account, plan.key_budget) {
            return None;
        }
        // From here on, dropping `admission` gives back what it holds.
        let mut admission = Admission {
            key: Arc::clone(acc),
            user: None,
            reserved,
            admitted_ms: plan.admitted_ms,
            _slot: None,
            lease: None,
            on_grant: true,
        };
        if let Some(user) = &plan.user_acc {
            if !reserve(user, plan.user_budget) {
                return None;
            }
            admission.user = Some(Arc::clone(user));
        }
        if let Some(max) = key.max_concurrent {
            // Slots granted under a higher limit (before a reload) count
            // up to the key's limit only.
            admission._slot = Some(ConcurrencySlot::try_take_granted(acc, g.slots.min(max))?);
        }
        if key.rpm.is_some() {
            g.tokens -= 1;
        }
        Some(admission)
    }

    /// A request admitted without a lease settled: its spend (and tokens)
    /// are published with the next round.
    pub(super) fn settled_unleased(
        &self,
        cluster: &Cluster,
        admission: &Admission,
        key: &Key,
        (key_budget, user_budget): (Option<Budget>, Option<Budget>),
        tokens: u64,
    ) {
        let mut g = lock(&admission.key.grant);
        g.note(key, key_budget, user_budget);
        if key.tpm.is_some() {
            g.unpublished_tokens = g.unpublished_tokens.saturating_add(tokens);
        }
        drop(g);
        cluster.touch(&key.name);
    }

    /// One round's publication and asks (see [`crate::cluster::OwnSpend`]).
    pub(super) fn build_round(&self, names: &[String], generation: u64) -> Round {
        let now = Now {
            ns: self.now_ns(),
            generation,
        };
        let today = self.today();
        let mut round = Round::default();
        // Users of the keys in this round: their budget, and the sizes
        // their keys' traffic asks for.
        let mut users: BTreeMap<String, (Option<Budget>, i64, i64)> = BTreeMap::new();
        for name in names {
            let Some(acc) = self.keys.existing(name) else {
                continue;
            };
            // Totals are read after the ask: spend only grows, so what is
            // published is at least the base the grant is counted from.
            let totals = |acc: &KeyAccount| own_totals(Kind::Key, name, &acc.account.snapshot());
            let mut g = lock(&acc.grant);
            let Some(limits) = g.limits.clone() else {
                round.totals.push(totals(&acc));
                continue;
            };
            let elapsed = now.ns.saturating_sub(g.last_ask_ns);
            g.last_ask_ns = now.ns;
            let (extra, floor) = g.budget_sizes(now.ns, elapsed);
            if let Some(user) = &limits.user {
                let entry = users
                    .entry(user.clone())
                    .or_insert((limits.user_budget, 0, 1));
                entry.1 = entry.1.max(extra);
                entry.2 = entry.2.max(floor);
            }
            if let Some(tpm) = limits.tpm {
                let n = std::mem::take(&mut g.unpublished_tokens);
                if n > 0 {
                    round.tokens.push((name.clone(), tpm, n));
                }
            }
            if limits.key_side() {
                round.asks.push(self.key_ask(
                    &acc,
                    &mut g,
                    &limits,
                    name,
                    (extra, floor, elapsed),
                    now,
                    today,
                ));
            }
            g.admitted = 0;
            g.reserved = 0;
            drop(g);
            round.totals.push(totals(&acc));
        }
        for (user, (budget, extra, floor)) in users {
            let acc = self.user_account(&user);
            if let Some(budget) = budget {
                let b = lock_spend(&acc).budget_ask(budget, today, now, extra);
                round.asks.push(budget_ask_of(
                    Kind::User,
                    &user,
                    budget,
                    b,
                    floor,
                    now,
                    today,
                ));
            }
            round
                .totals
                .push(own_totals(Kind::User, &user, &acc.snapshot()));
        }
        round
    }

    #[allow(clippy::too_many_arguments)]
    fn key_ask(
        &self,
        acc: &KeyAccount,
        g: &mut KeyGrant,
        limits: &GrantLimits,
        name: &str,
        (extra, floor, elapsed): (i64, i64, u64),
        now: Now,
        today: u32,
    ) -> GrantAsk {
        let mut ask = match limits.key_budget {
            Some(budget) => {
                let b = lock_spend(&acc.account).budget_ask(budget, today, now, extra);
                budget_ask_of(Kind::Key, name, budget, b, floor, now, today)
            }
            None => GrantAsk::new(Kind::Key, name, now.ns),
        };
        let live = now.holds(g.generation, g.until_ns);
        let busy = g.admitted > 0;
        if let Some(max) = limits.max_concurrent {
            // Requests admitted by the script hold their own leases.
            let in_flight = acc.granted_in_flight.load(Ordering::Acquire);
            (ask.min_slots, ask.want_slots) = g.slot_ask(max, in_flight, live);
            ask.max_concurrent = max;
        }
        if let Some(rpm) = limits.rpm {
            ask.rpm = rpm;
            ask.give_back = std::mem::take(&mut g.give_back);
            ask.want_tokens = if busy {
                let rate = per_second(i64::from(g.admitted), elapsed);
                rate.max(16).min(i64::from(rpm)) as u32
            } else {
                0
            };
        }
        ask.tpm = limits.tpm.is_some();
        ask
    }

    /// Redis's answers to a round: the new shares, and the keys holding
    /// one are renewed at the next tick.
    pub(super) fn apply_round(&self, round: &Round, granted: Option<&[Granted]>, generation: u64) {
        let Some(cluster) = &self.cluster else { return };
        let now_ns = self.now_ns();
        let quiet = now_ns.saturating_add(QUIET.as_nanos() as u64);
        let Some(granted) = granted else {
            self.answered(round);
            return;
        };
        for (ask, got) in round.asks.iter().zip(granted) {
            let until_ns = ask
                .asked_ns
                .saturating_add(self.grant_ttl().as_nanos() as u64);
            if ask.budget.is_some() {
                let apply = |account: &Account| {
                    let mut spend = lock_spend(account);
                    spend.grant = Some(BudgetGrant {
                        ceiling: ask.base.saturating_add(got.budget),
                        scope: ask.days.map_or(0, |d| d.0),
                        until_ns,
                        generation,
                    });
                    spend.others = got.spent.saturating_sub(ask.base).max(0);
                    if ask.days.is_none() {
                        spend.others_lifetime = spend.others;
                    }
                };
                match ask.kind {
                    Kind::Key => {
                        if let Some(acc) = self.keys.existing(&ask.name) {
                            apply(&acc.account);
                        }
                    }
                    Kind::User => apply(&self.user_account(&ask.name)),
                }
            }
            if ask.kind == Kind::User {
                // Renewed with the keys of hers that are in a round; with
                // nothing to give, they ask no more (per request) for a while.
                for key in round.totals.iter().filter(|t| t.kind == Kind::Key) {
                    let Some(acc) = self.keys.existing(&key.name) else {
                        continue;
                    };
                    let mut g = lock(&acc.grant);
                    let user = g.limits.as_ref().and_then(|l| l.user.as_deref());
                    if user != Some(ask.name.as_str()) {
                        continue;
                    }
                    if got.budget > 0 {
                        cluster.touch(&key.name);
                    } else {
                        g.quiet_until_ns = g.quiet_until_ns.max(quiet);
                    }
                }
                continue;
            }
            let Some(acc) = self.keys.existing(&ask.name) else {
                continue;
            };
            let mut g = lock(&acc.grant);
            g.asked = false;
            g.generation = generation;
            g.until_ns = until_ns;
            g.slots = got.slots;
            // The last grant's tokens served until now; what is left of
            // them goes back with the next ask.
            if now_ns < g.tokens_until_ns {
                g.give_back = g.give_back.saturating_add(g.tokens);
            }
            g.tokens = got.tokens;
            g.tokens_granted = got.tokens;
            g.tokens_until_ns = ask.asked_ns.saturating_add(TOKEN_LIFE.as_nanos() as u64);
            if ask.want_budget > ask.min_budget && got.budget <= ask.min_budget {
                g.tight_until_ns = quiet;
            }
            let holds = got.budget > 0 || got.slots > 0 || got.tokens > 0 || g.give_back > 0;
            if !holds && !ask.tpm {
                g.quiet_until_ns = quiet;
            }
            drop(g);
            if ask.tpm {
                lock_rates(&acc).merge_shared_debt(now_ns, got.tpm_debt_us.saturating_mul(1000));
            }
            if holds {
                cluster.touch(&ask.name);
            }
        }
        self.answered(round);
    }

    /// Every key of a round may ask again, also one with no ask of its own
    /// (a key limited only by its user's budget): left `asked`, it would
    /// never ask again and run on the admission script for good.
    fn answered(&self, round: &Round) {
        for t in round.totals.iter().filter(|t| t.kind == Kind::Key) {
            if let Some(acc) = self.keys.existing(&t.name) {
                lock(&acc.grant).asked = false;
            }
        }
    }
}

/// A grant ask with only a budget part.
fn budget_ask_of(
    kind: Kind,
    name: &str,
    budget: Budget,
    b: BudgetAsk,
    floor: i64,
    now: Now,
    today: u32,
) -> GrantAsk {
    GrantAsk {
        budget: Some(budget.nanos),
        days: budget.period.map(|p| bounds(p, today)),
        min_budget: b.min,
        want_budget: b.want,
        floor,
        base: b.base,
        ..GrantAsk::new(kind, name, now.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Now = Now {
        ns: 1_000,
        generation: 7,
    };
    const LIFETIME: Budget = Budget {
        nanos: 1_000_000,
        period: None,
    };

    fn grant(ceiling: i64) -> Option<BudgetGrant> {
        Some(BudgetGrant {
            ceiling,
            scope: 0,
            until_ns: 2_000,
            generation: 7,
        })
    }

    #[test]
    fn a_grant_admits_while_own_spend_and_reservations_are_below_its_ceiling() {
        let mut s = Spend::default();
        assert!(!s.try_reserve_granted(LIFETIME, 9, NOW, 30), "no grant");
        s.grant = grant(100);
        s.totals.cost_nanos = 40;
        // The other nodes' spend is in their own grants, not in this one.
        s.others = 500_000;
        assert!(s.try_reserve_granted(LIFETIME, 9, NOW, 30), "40 < 100");
        assert!(s.try_reserve_granted(LIFETIME, 9, NOW, 30), "70 < 100");
        assert!(!s.try_reserve_granted(LIFETIME, 9, NOW, 30), "100 is not");
        assert_eq!((s.reserved, s.granted_reserved), (60, 60));
        // A request the admission script let in is reserved in Redis, not
        // on the grant.
        s.reserved += 500;
        assert!(!s.try_reserve_granted(LIFETIME, 9, NOW, 30), "still 100");
        s.granted_reserved = 0;
        assert!(s.try_reserve_granted(LIFETIME, 9, NOW, 30), "40 < 100");
        s.reserved = 0;
        s.granted_reserved = 0;
        let later = Now { ns: 2_000, ..NOW };
        let after_an_outage = Now {
            generation: 8,
            ..NOW
        };
        assert!(!s.try_reserve_granted(LIFETIME, 9, later, 1), "expired");
        assert!(!s.try_reserve_granted(LIFETIME, 9, after_an_outage, 1));
        let daily = Budget {
            period: Some(BudgetPeriod::Day),
            ..LIFETIME
        };
        assert!(
            !s.try_reserve_granted(daily, 9, NOW, 1),
            "a grant of another scope"
        );
        assert_eq!(s.reserved, 0);
    }

    #[test]
    fn an_ask_keeps_what_is_committed_and_commits_no_more_until_answered() {
        let mut s = Spend {
            grant: grant(1_000),
            reserved: 250,
            granted_reserved: 200,
            ..Spend::default()
        };
        s.totals.cost_nanos = 100;
        // Busy: keeps 700 of the 900 left (running 200 + 500 wanted).
        let ask = s.budget_ask(LIFETIME, 9, NOW, 500);
        assert_eq!(
            ask,
            BudgetAsk {
                base: 100,
                min: 700,
                want: 700
            }
        );
        assert_eq!(s.grant.unwrap().ceiling, 800);
        // Idle: keeps only what is running.
        let ask = s.budget_ask(LIFETIME, 9, NOW, 0);
        assert_eq!(
            ask,
            BudgetAsk {
                base: 100,
                min: 200,
                want: 200
            }
        );
        assert_eq!(s.grant.unwrap().ceiling, 300);
        // What is running is kept even beyond a void grant.
        let void = Now {
            generation: 8,
            ..NOW
        };
        let ask = s.budget_ask(LIFETIME, 9, void, 50);
        assert_eq!(
            ask,
            BudgetAsk {
                base: 100,
                min: 200,
                want: 250
            }
        );
    }

    fn metering(dir: &std::path::Path) -> Metering {
        let store = crate::store::Store::open(dir).unwrap();
        Metering::open(&store, Arc::new(crate::metrics::Metrics::new())).unwrap()
    }

    #[test]
    fn a_huge_reservation_sizes_the_next_ask_without_overflow() {
        // A request may reserve up to i64::MAX (a media price overflow,
        // an enormous max_tokens): the worker's round must not panic.
        let dir = tempfile::tempdir().unwrap();
        let m = metering(dir.path());
        let acc = m.key_account("k");
        {
            let mut g = lock(&acc.grant);
            g.limits = Some(GrantLimits {
                key_budget: Some(LIFETIME),
                ..GrantLimits::default()
            });
            g.admitted = 1;
            g.reserved = i64::MAX;
            g.last_reserved = i64::MAX;
        }
        let round = m.build_round(&["k".to_string()], 1);
        assert_eq!(round.asks.len(), 1);
        assert_eq!(round.asks[0].floor, i64::MAX);
        assert_eq!(round.asks[0].want_budget, i64::MAX);
    }

    #[test]
    fn slots_granted_under_a_higher_limit_are_not_kept_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let m = metering(dir.path());
        let acc = m.key_account("k");
        {
            let mut g = lock(&acc.grant);
            // Granted 40 slots while max_concurrent was 100; a reload
            // lowered it to 10. The key is busy.
            g.limits = Some(GrantLimits {
                max_concurrent: Some(10),
                ..GrantLimits::default()
            });
            g.slots = 40;
            g.generation = 1;
            g.until_ns = u64::MAX;
            g.admitted = 5;
            g.peak_in_flight = 30;
        }
        acc.granted_in_flight.store(3, Ordering::Release);
        let round = m.build_round(&["k".to_string()], 1);
        let ask = &round.asks[0];
        assert_eq!(ask.max_concurrent, 10);
        assert_eq!(ask.min_slots, 10, "keeps no more than the limit");
        assert_eq!(lock(&acc.grant).slots, 10);
        // The requests running on the grant are kept even above a limit.
        acc.granted_in_flight.store(12, Ordering::Release);
        lock(&acc.grant).admitted = 1;
        let round = m.build_round(&["k".to_string()], 1);
        assert_eq!(round.asks[0].min_slots, 12);
    }

    #[test]
    fn a_grant_made_under_a_higher_budget_does_not_outlive_a_lower_one() {
        let mut s = Spend {
            grant: grant(900_000),
            others: 100_000,
            ..Spend::default()
        };
        s.totals.cost_nanos = 40_000;
        // A reload lowered the budget from 1,000,000 to 150,000: with the
        // others' 100,000 this node has 10,000 left, not 860,000.
        let lowered = Budget {
            nanos: 150_000,
            period: None,
        };
        assert!(s.try_reserve_granted(lowered, 9, NOW, 5_000), "40k < 50k");
        assert!(s.try_reserve_granted(lowered, 9, NOW, 5_000), "45k < 50k");
        assert!(!s.try_reserve_granted(lowered, 9, NOW, 5_000), "50k is not");
        // The next ask keeps what is running, not the old ceiling.
        let ask = s.budget_ask(lowered, 9, NOW, 1_000_000);
        assert_eq!(ask.min, 10_000);
        assert_eq!(s.grant.unwrap().ceiling, 50_000);
    }

    /// A node of a cluster whose Redis is not reached (no round trips).
    fn clustered(dir: &std::path::Path) -> Metering {
        let store = crate::store::Store::open(dir).unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let settings = crate::config::ClusterSettings {
            redis_url: "redis://127.0.0.1:1".into(),
            node: "a".into(),
            on_redis_error: crate::config::OnRedisError::Local,
            timeout: Duration::from_millis(50),
            lease: Duration::from_secs(10),
            admin_url: String::new(),
            ca_file: None,
        };
        let cluster = Cluster::new(settings, &store, &metrics).unwrap();
        Metering::open(&store, metrics)
            .unwrap()
            .with_cluster(Some(cluster))
    }

    #[test]
    fn a_retry_on_the_grant_counts_the_request_once() {
        let dir = tempfile::tempdir().unwrap();
        let m = clustered(dir.path());
        let snap = crate::config::test_snapshot(
            r#"[server]
data_dir = "/nonexistent"
[[groups]]
name = "g"
ratio = 1
[[models]]
name = "m"
per_request = 1
[[channels]]
name = "c"
type = "mock"
groups = ["g"]
[[keys]]
name = "k"
key = "sk-k"
groups = ["g"]
budget_usd = 100
rpm = 1000
"#,
            1,
        );
        let key = Arc::clone(snap.keys_by_hash.values().next().unwrap());
        let plan = m.plan(&snap, &key, "m", &crate::metering::Ask::default());
        let cluster = Arc::clone(m.cluster.as_ref().unwrap());
        assert!(m.admit_granted(&cluster, &key, &plan, false).is_none());
        // The admission script refused it; metering tries the grant again.
        assert!(m.admit_granted(&cluster, &key, &plan, true).is_none());
        let g = lock(&plan.key_acc.grant);
        assert_eq!((g.admitted, g.reserved), (1, plan.reserved));
        assert!(plan.reserved > 0);
    }

    #[test]
    fn a_key_limited_only_by_its_users_budget_may_ask_again() {
        let dir = tempfile::tempdir().unwrap();
        let m = clustered(dir.path());
        let acc = m.key_account("k");
        {
            let mut g = lock(&acc.grant);
            g.limits = Some(GrantLimits {
                user: Some("u".into()),
                user_budget: Some(LIFETIME),
                ..GrantLimits::default()
            });
            // admit_granted found no grant and asked for one.
            g.asked = true;
        }
        let round = m.build_round(&["k".to_string()], 1);
        assert_eq!(round.asks.len(), 1, "the user's budget only");
        m.apply_round(&round, Some(&[Granted::default()]), 1);
        assert!(!lock(&acc.grant).asked, "answered");
        // Nothing was given: no ask per request for a while.
        assert!(lock(&acc.grant).quiet_until_ns > m.now_ns());
        lock(&acc.grant).asked = true;
        let round = m.build_round(&["k".to_string()], 1);
        m.apply_round(&round, None, 1);
        assert!(!lock(&acc.grant).asked, "failed: may ask again");
    }

    #[test]
    fn asks_are_sized_by_the_rate_since_the_last_one() {
        assert_eq!(per_second(100, 250_000_000), 400);
        assert_eq!(per_second(5, 1_000_000), 100, "over 50 ms at least");
        assert_eq!(per_second(0, 0), 0);
    }
}
