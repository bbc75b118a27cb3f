//! Per-key and per-user state that decides whether a request may start:
//! budgets with in-flight reservations, and the key's rate limits (rpm,
//! tpm, max_concurrent).
//!
//! State lives in maps keyed by key and user *name*, owned by the gateway
//! rather than by a config snapshot, so it survives reloads. Each request
//! does one hash lookup per account and takes that account's own small
//! lock: O(1), no scans.

use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::ledger::Counts;
use super::period::{bounds, DaySpend};
use crate::config::BudgetPeriod;

/// Spend and in-flight reservations of one key or one user, in nano-USD.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// Settled spend, including what the ledger held at start.
    pub totals: Counts,
    /// Sum of the reservations of requests still running.
    pub reserved: i64,
    /// The same by admission day, for budgets per period. Kept for every
    /// account, so a reload that gives a key a period finds its spend.
    pub days: DaySpend,
    /// Cluster mode: the other nodes' spend in the budget's scope (its
    /// period, or the lifetime), as last seen in Redis; 0 on a single node.
    pub others: i64,
    /// The same for the lifetime, for display.
    pub others_lifetime: i64,
    /// Cluster mode: this node's share of the budget (`metering::grant`),
    /// and the reservations of the requests running on it (the rest are
    /// each reserved in Redis).
    pub grant: Option<BudgetGrant>,
    pub granted_reserved: i64,
}

/// A budget in nano-USD, for the lifetime or per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub nanos: i64,
    pub period: Option<BudgetPeriod>,
}

/// Why a budget refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRefusal {
    /// Settled spend reached the budget: nothing left.
    Exhausted,
    /// What is left is held by requests still running; may free up soon.
    HeldInFlight,
}

impl Spend {
    /// Lifetime spend: this node's settled spend plus the other nodes'
    /// (cluster-wide in cluster mode; 0 from others on a single node).
    pub fn lifetime_nanos(&self) -> i64 {
        self.totals.cost_nanos + self.others_lifetime
    }

    /// (spent, reserved) that count against a budget of `period` on day
    /// `today`: lifetime sums, or the days of the current period (with the
    /// other nodes' spend in cluster mode).
    pub fn against(&self, period: Option<BudgetPeriod>, today: u32) -> (i64, i64) {
        let (spent, reserved) = match period {
            None => (self.totals.cost_nanos, self.reserved),
            Some(p) => {
                let (first, end) = bounds(p, today);
                self.days.sum(first, end)
            }
        };
        (spent.saturating_add(self.others), reserved)
    }

    /// Reserves `amount` for a request admitted on day `today` if the
    /// budget still has room once running requests are counted. A request
    /// is admitted while settled + reserved spend is below the budget, so
    /// when reservations cover actual costs, the final spend exceeds the
    /// budget by less than the last admitted request (per period).
    pub fn try_reserve(
        &mut self,
        budget: Option<Budget>,
        today: u32,
        amount: i64,
    ) -> Result<(), BudgetRefusal> {
        if let Some(budget) = budget {
            let (spent, reserved) = self.against(budget.period, today);
            if spent >= budget.nanos {
                return Err(BudgetRefusal::Exhausted);
            }
            if spent.saturating_add(reserved) >= budget.nanos {
                return Err(BudgetRefusal::HeldInFlight);
            }
        }
        self.reserved = self.reserved.saturating_add(amount);
        self.days.add_reserved(today, amount);
        Ok(())
    }

    /// Ends a request admitted on `day` that reserved `reserved`: the
    /// reservation goes, its counts (nothing for a request not billed)
    /// stay, in that day even when it ends on a later one.
    pub fn settle(&mut self, day: u32, reserved: i64, counts: &Counts) {
        self.reserved -= reserved;
        self.days.add_reserved(day, -reserved);
        self.totals.add(counts);
        self.days.add_spent(day, counts.cost_nanos);
    }
}

/// This node's share of one account's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetGrant {
    /// The node may commit spend in the budget's scope up to this total of
    /// its own (spent + reserved).
    pub ceiling: i64,
    /// The scope's first day (0 = lifetime): a new period voids it.
    pub scope: u32,
    pub until_ns: u64,
    pub generation: u64,
}

/// A key's limits as last seen, for the worker's asks between requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantLimits {
    pub key_budget: Option<Budget>,
    pub user: Option<String>,
    pub user_budget: Option<Budget>,
    pub max_concurrent: Option<u32>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

/// This node's share of a key's slots and rpm window, and what the next
/// ask is sized by.
#[derive(Debug, Default)]
pub struct KeyGrant {
    pub(super) limits: Option<GrantLimits>,
    pub(super) slots: u32,
    pub(super) tokens: u32,
    pub(super) tokens_granted: u32,
    /// Unused tokens of a replaced grant, returned with the next ask.
    pub(super) give_back: u32,
    pub(super) tokens_until_ns: u64,
    pub(super) until_ns: u64,
    pub(super) generation: u64,
    /// Asked, not answered yet.
    pub(super) asked: bool,
    /// Ask no more (per request) before this: Redis had nothing to give.
    pub(super) quiet_until_ns: u64,
    /// Want no budget growth before this: Redis refused growth.
    pub(super) tight_until_ns: u64,
    /// Since the last ask (at `last_ask_ns`): admissions and their
    /// reservations, what the next ask is sized by.
    pub(super) last_ask_ns: u64,
    pub(super) admitted: u32,
    pub(super) reserved: i64,
    pub(super) last_reserved: i64,
    /// The most requests of the key running here at once since then.
    pub(super) peak_in_flight: u32,
    /// Tokens of requests settled here and not yet in the shared window.
    pub(super) unpublished_tokens: u64,
}

/// A key or user as metering sees it.
#[derive(Default)]
pub struct Account {
    pub spend: Mutex<Spend>,
}

impl Account {
    pub fn snapshot(&self) -> Spend {
        *lock(&self.spend)
    }
}

impl<A> Accounts<A> {
    /// The names of the accounts used so far.
    pub fn names(&self) -> Vec<String> {
        self.by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// A key's account plus its rate-limit state.
#[derive(Default)]
pub struct KeyAccount {
    pub account: Account,
    pub in_flight: AtomicU32,
    /// Of these, the ones running on this node's granted slots.
    pub granted_in_flight: AtomicU32,
    pub rates: Mutex<RateState>,
    /// Cluster mode: this node's share of the key's limits.
    pub grant: Mutex<KeyGrant>,
}

/// Generic cell rate algorithm state for rpm and tpm: each is the
/// theoretical arrival time (ns) at which the key is fully "paid up".
/// Exact, O(1), and with no window edges that let 2x through.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateState {
    rpm_tat_ns: u64,
    tpm_tat_ns: u64,
}

const MINUTE_NS: u64 = 60_000_000_000;

impl RateState {
    /// Admits one request under `rpm` at time `now_ns` (bursts of up to
    /// `rpm` requests, refilled evenly over a minute). `Err` holds the
    /// seconds until the next request would be admitted.
    pub fn take_request(&mut self, rpm: u32, now_ns: u64) -> Result<(), u64> {
        let interval = MINUTE_NS / u64::from(rpm);
        let tolerance = MINUTE_NS - interval;
        let tat = self.rpm_tat_ns.max(now_ns);
        if tat - now_ns > tolerance {
            return Err(seconds_ceil(tat - now_ns - tolerance));
        }
        self.rpm_tat_ns = tat + interval;
        Ok(())
    }

    /// Whether a request may start under `tpm`: it may while the tokens of
    /// the last minute (decaying evenly) are below `tpm`. Its own tokens
    /// count when it ends ([`RateState::spend_tokens`]).
    /// (A token costs a minute / tpm of "debt", so a debt of a minute or
    /// more means `tpm` tokens or more within the last minute.)
    pub fn check_tokens(&self, now_ns: u64) -> Result<(), u64> {
        let debt = self.tpm_tat_ns.saturating_sub(now_ns);
        if debt >= MINUTE_NS {
            return Err((debt - MINUTE_NS) / 1_000_000_000 + 1);
        }
        Ok(())
    }

    /// Whether the tokens of the last minute are below half of `tpm`:
    /// what a node admits on its own view of a shared window, which may
    /// miss the other nodes' last fraction of a second.
    pub fn tokens_below_half(&self, now_ns: u64) -> bool {
        self.tpm_tat_ns.saturating_sub(now_ns) < MINUTE_NS / 2
    }

    /// Takes in the shared window's debt as Redis reported it (it holds
    /// this node's published tokens too, hence the max, not a sum).
    pub fn merge_shared_debt(&mut self, now_ns: u64, debt_ns: u64) {
        self.tpm_tat_ns = self.tpm_tat_ns.max(now_ns.saturating_add(debt_ns));
    }

    pub fn spend_tokens(&mut self, tpm: u64, tokens: u64, now_ns: u64) {
        let per_token = MINUTE_NS as u128 / u128::from(tpm.max(1));
        let cost = (per_token * u128::from(tokens)).min(u128::from(u64::MAX / 2)) as u64;
        self.tpm_tat_ns = self.tpm_tat_ns.max(now_ns).saturating_add(cost);
    }
}

fn seconds_ceil(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere never leaves these plain counters half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn lock_spend(a: &Account) -> std::sync::MutexGuard<'_, Spend> {
    lock(&a.spend)
}

pub(super) fn lock_rates(k: &KeyAccount) -> std::sync::MutexGuard<'_, RateState> {
    lock(&k.rates)
}

/// Accounts by name, created on first use with the totals `load` reads
/// from the ledger.
pub struct Accounts<A> {
    by_name: RwLock<HashMap<String, Arc<A>>>,
}

impl<A: Default> Accounts<A> {
    pub fn new() -> Self {
        Accounts {
            by_name: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, name: &str, init: impl FnOnce(&A)) -> Arc<A> {
        if let Some(a) = self
            .by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Arc::clone(a);
        }
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(name.to_string()).or_insert_with(|| {
            let a = A::default();
            init(&a);
            Arc::new(a)
        }))
    }

    pub fn existing(&self, name: &str) -> Option<Arc<A>> {
        self.by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

impl<A: Default> Default for Accounts<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// Holds one concurrency slot of a key until dropped.
pub struct ConcurrencySlot {
    key: Arc<KeyAccount>,
    /// Taken out of this node's granted slots (cluster mode).
    granted: bool,
}

impl ConcurrencySlot {
    /// Takes a slot if fewer than `max` requests of this key are running.
    pub fn try_take(key: &Arc<KeyAccount>, max: u32) -> Option<ConcurrencySlot> {
        take_below(&key.in_flight, max)?;
        Some(ConcurrencySlot {
            key: Arc::clone(key),
            granted: false,
        })
    }

    /// Takes one of the `slots` the cluster granted this node, if fewer
    /// than that many of this key's requests here run on them.
    pub fn try_take_granted(key: &Arc<KeyAccount>, slots: u32) -> Option<ConcurrencySlot> {
        take_below(&key.granted_in_flight, slots)?;
        key.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(ConcurrencySlot {
            key: Arc::clone(key),
            granted: true,
        })
    }
}

fn take_below(count: &AtomicU32, max: u32) -> Option<()> {
    let before = count.fetch_add(1, Ordering::AcqRel);
    if before >= max {
        count.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(())
}

impl Drop for ConcurrencySlot {
    fn drop(&mut self) {
        self.key.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.granted {
            self.key.granted_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn rpm_admits_exactly_rpm_at_once_then_refills_evenly() {
        let mut r = RateState::default();
        let t0 = 1000 * SEC;
        for i in 0..5 {
            assert_eq!(r.take_request(5, t0), Ok(()), "request {i}");
        }
        assert_eq!(r.take_request(5, t0), Err(12), "6th waits one interval");
        assert_eq!(r.take_request(5, t0 + 11 * SEC), Err(1));
        assert_eq!(r.take_request(5, t0 + 12 * SEC), Ok(()));
        assert!(r.take_request(5, t0 + 12 * SEC).is_err());
        // After a quiet minute the full burst is back.
        let t1 = t0 + 200 * SEC;
        for _ in 0..5 {
            assert!(r.take_request(5, t1).is_ok());
        }
        assert!(r.take_request(5, t1).is_err());
    }

    #[test]
    fn tpm_admits_while_below_the_limit() {
        let mut r = RateState::default();
        let t0 = 1000 * SEC;
        // 30 tokens per request, tpm 100: admitted at 0, 30, 60, 90 used.
        for i in 0..4 {
            assert_eq!(r.check_tokens(t0), Ok(()), "request {i}");
            r.spend_tokens(100, 30, t0);
        }
        // 120 used: 20 over, which decays at 100/min -> 12 s.
        assert_eq!(r.check_tokens(t0), Err(13));
        assert_eq!(r.check_tokens(t0 + 12 * SEC), Err(1));
        assert_eq!(r.check_tokens(t0 + 13 * SEC), Ok(()));
    }

    #[test]
    fn budget_reservations_bound_overdraw() {
        let mut s = Spend::default();
        // budget 100, each request reserves 30.
        let budget = Some(Budget {
            nanos: 100,
            period: None,
        });
        assert!(s.try_reserve(budget, 9, 30).is_ok());
        assert!(s.try_reserve(budget, 9, 30).is_ok());
        assert!(s.try_reserve(budget, 9, 30).is_ok());
        assert!(
            s.try_reserve(budget, 9, 30).is_ok(),
            "90 < 100 still admits"
        );
        assert_eq!(
            s.try_reserve(budget, 9, 30),
            Err(BudgetRefusal::HeldInFlight)
        );
        s.reserved = 0;
        s.totals.cost_nanos = 100;
        assert_eq!(s.try_reserve(budget, 9, 1), Err(BudgetRefusal::Exhausted));
        assert!(s.try_reserve(None, 9, 1).is_ok());
    }

    #[test]
    fn a_daily_budget_counts_requests_in_the_day_they_were_admitted() {
        let mut s = Spend::default();
        let daily = Some(Budget {
            nanos: 100,
            period: Some(BudgetPeriod::Day),
        });
        let (monday, tuesday) = (20_794, 20_795);
        assert!(s.try_reserve(daily, monday, 60).is_ok());
        assert!(s.try_reserve(daily, monday, 60).is_ok(), "60 < 100");
        assert_eq!(
            s.try_reserve(daily, monday, 60),
            Err(BudgetRefusal::HeldInFlight)
        );
        // After midnight: a new day with nothing spent or held.
        assert!(s.try_reserve(daily, tuesday, 60).is_ok());
        // Monday's two requests end on Tuesday, costing 70 and 50: Monday
        // overdraws by less than one request, Tuesday is untouched.
        let cost = |n| Counts {
            requests: 1,
            cost_nanos: n,
            ..Counts::default()
        };
        s.settle(monday, 60, &cost(70));
        s.settle(monday, 60, &cost(50));
        assert_eq!(s.against(Some(BudgetPeriod::Day), monday), (120, 0));
        assert_eq!(s.against(Some(BudgetPeriod::Day), tuesday), (0, 60));
        assert_eq!(s.against(None, tuesday), (120, 60), "lifetime sums");
        assert_eq!(
            s.try_reserve(daily, monday, 1),
            Err(BudgetRefusal::Exhausted)
        );
        assert!(s.try_reserve(daily, tuesday, 30).is_ok(), "60 + 0 < 100");
    }

    #[test]
    fn concurrency_slots_are_returned_on_drop() {
        let key = Arc::new(KeyAccount::default());
        let a = ConcurrencySlot::try_take(&key, 2).unwrap();
        let _b = ConcurrencySlot::try_take(&key, 2).unwrap();
        assert!(ConcurrencySlot::try_take(&key, 2).is_none());
        drop(a);
        assert!(ConcurrencySlot::try_take(&key, 2).is_some());
    }
}
