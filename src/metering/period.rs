//! Budget periods (`budget_period = "day" | "week" | "month"`): when the
//! current one started and when it ends, in UTC, and the spend of a key or
//! user by the day its requests were admitted on.
//!
//! A request counts in the period it was **admitted** in, even when it is
//! billed after the reset: its reservation was taken against that period's
//! budget, so its cost goes there too. A period therefore overdraws by at
//! most the requests admitted in it, like a lifetime budget, and a new
//! period starts with nothing spent and nothing reserved.

use chrono::{Datelike, Days, NaiveDate};

use crate::config::BudgetPeriod;

pub(super) const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Days since 1970-01-01 (UTC) at `ms`.
pub fn day_of(ms: u64) -> u32 {
    u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX)
}

/// The first day of the period that contains `day`, and the first day of
/// the next one (the reset).
pub fn bounds(period: BudgetPeriod, day: u32) -> (u32, u32) {
    match period {
        BudgetPeriod::Day => (day, day.saturating_add(1)),
        BudgetPeriod::Week => {
            // 1970-01-01 was a Thursday: Monday is 3 days before it.
            let since_monday = (day + 3) % 7;
            (
                day.saturating_sub(since_monday),
                day.saturating_add(7 - since_monday),
            )
        }
        BudgetPeriod::Month => {
            let date = date_of(day);
            let first = date.with_day(1).unwrap_or(date);
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(first);
            (day_number(first), day_number(next))
        }
    }
}

/// When the period containing `day` resets, as RFC 3339.
pub fn resets_at(period: BudgetPeriod, day: u32) -> String {
    let next = bounds(period, day).1;
    format!("{}T00:00:00Z", date_of(next).format("%Y-%m-%d"))
}

fn date_of(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_days(Days::new(u64::from(day))))
        .unwrap_or(NaiveDate::MAX)
}

fn day_number(date: NaiveDate) -> u32 {
    u32::try_from(date.num_days_from_ce() - 719_163).unwrap_or(0)
}

/// Days kept: any period fits (a month has at most 31 days).
const KEPT_DAYS: usize = 32;

/// Spend and in-flight reservations of one key or user by admission day,
/// for the last [`KEPT_DAYS`] days: a ring indexed by day, each slot
/// tagged with its day, so moving to a new day needs no work and any
/// period's sums are a scan of at most 31 slots, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySpend {
    slots: [DaySlot; KEPT_DAYS],
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct DaySlot {
    day: u32,
    spent: i64,
    reserved: i64,
}

impl Default for DaySpend {
    fn default() -> Self {
        DaySpend {
            slots: [DaySlot::default(); KEPT_DAYS],
        }
    }
}

impl DaySpend {
    /// The slot of `day`, emptied first if it still holds an older day;
    /// `None` for a day older than the ring keeps (nothing to count it in).
    fn slot(&mut self, day: u32) -> Option<&mut DaySlot> {
        let slot = &mut self.slots[day as usize % KEPT_DAYS];
        if slot.day < day {
            *slot = DaySlot {
                day,
                ..DaySlot::default()
            };
        }
        (slot.day == day).then_some(slot)
    }

    pub fn add_spent(&mut self, day: u32, nanos: i64) {
        if let Some(s) = self.slot(day) {
            s.spent = s.spent.saturating_add(nanos);
        }
    }

    pub fn add_reserved(&mut self, day: u32, nanos: i64) {
        if let Some(s) = self.slot(day) {
            s.reserved = s.reserved.saturating_add(nanos);
        }
    }

    /// (spent, reserved) of the days in `[first, end)`.
    pub fn sum(&self, first: u32, end: u32) -> (i64, i64) {
        self.slots
            .iter()
            .filter(|s| (first..end).contains(&s.day))
            .fold((0, 0), |(spent, reserved), s| {
                (
                    spent.saturating_add(s.spent),
                    reserved.saturating_add(s.reserved),
                )
            })
    }

    /// The days with spend, oldest ring slot first: what a cluster node
    /// publishes for budgets per period.
    pub fn spent_days(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.spent != 0)
            .map(|s| (s.day, s.spent))
    }

    /// The days the ring holds, counting back from `today`: what to read
    /// from the ledger when an account is first used.
    pub fn window(today: u32) -> (u32, u32) {
        (
            today.saturating_sub(KEPT_DAYS as u32 - 1),
            today.saturating_add(1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str) -> u32 {
        day_number(NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn periods_start_at_midnight_utc_on_monday_and_the_first() {
        // 2026-12-07 is a Monday.
        let monday = day("2026-12-07");
        assert_eq!(day_of(monday as u64 * DAY_MS), monday);
        assert_eq!(day_of(monday as u64 * DAY_MS - 1), monday - 1);
        assert_eq!(bounds(BudgetPeriod::Day, monday), (monday, monday + 1));
        for d in monday..monday + 7 {
            assert_eq!(bounds(BudgetPeriod::Week, d), (monday, monday + 7));
        }
        assert_eq!(bounds(BudgetPeriod::Week, monday - 1), (monday - 7, monday));
        assert_eq!(
            bounds(BudgetPeriod::Month, day("2026-12-31")),
            (day("2026-12-01"), day("2027-01-01"))
        );
        assert_eq!(
            bounds(BudgetPeriod::Month, day("2028-02-29")),
            (day("2028-02-01"), day("2028-03-01"))
        );
        assert_eq!(resets_at(BudgetPeriod::Day, monday), "2026-12-08T00:00:00Z");
        assert_eq!(
            resets_at(BudgetPeriod::Week, monday + 6),
            "2026-12-14T00:00:00Z"
        );
        assert_eq!(
            resets_at(BudgetPeriod::Month, monday),
            "2027-01-01T00:00:00Z"
        );
        // The first week of the epoch starts on the Monday before it.
        assert_eq!(bounds(BudgetPeriod::Week, 0), (0, 4));
    }

    #[test]
    fn the_ring_sums_any_period_and_forgets_old_days() {
        let mut d = DaySpend::default();
        let today = day("2026-12-07");
        d.add_spent(today - 1, 10);
        d.add_spent(today, 5);
        d.add_reserved(today, 7);
        d.add_reserved(today, -7);
        d.add_reserved(today, 3);
        assert_eq!(d.sum(today, today + 1), (5, 3));
        assert_eq!(d.sum(today - 6, today + 1), (15, 3));
        // 32 days later the slot of `today` is reused; an admission day
        // older than the ring is counted nowhere (never in a current period).
        d.add_spent(today + 32, 1);
        assert_eq!(d.sum(today, today + 1), (0, 0));
        d.add_spent(today, 100);
        assert_eq!(d.sum(0, u32::MAX), (11, 0));
        assert_eq!(DaySpend::window(today), (today - 31, today + 1));
    }

    /// Metering on a real store with a clock the test moves, and the
    /// config it meters for.
    mod budgets {
        use std::sync::Arc;

        use super::*;
        use crate::clock::Clock;
        use crate::config::{Key, Snapshot};
        use crate::errors::ErrorKind;
        use crate::metering::{report, Admission, Metering, Served};
        use crate::metrics::Metrics;
        use crate::store::Store;
        use crate::usage::Usage;

        /// 2026-12-07, a Monday, 23:59:59 UTC.
        const MONDAY_LATE: u64 = 20_794 * DAY_MS + DAY_MS - 1_000;
        const TUESDAY_EARLY: u64 = 20_795 * DAY_MS + 1_000;
        const USD: i64 = 1_000_000_000;

        /// Every request costs exactly 1 USD (`per_request`) at ratio 1,
        /// and reserves exactly that (no tokens, no output allowed).
        fn snapshot(key_budget: &str, user_budget: &str) -> Snapshot {
            load(snapshot_text(key_budget, user_budget))
        }

        fn snapshot_text(key_budget: &str, user_budget: &str) -> String {
            format!(
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
[[users]]
name = "bob"
{user_budget}
[[keys]]
name = "k"
user = "bob"
key = "sk-k"
groups = ["g"]
{key_budget}
"#
            )
        }

        fn load(text: String) -> Snapshot {
            crate::config::test_snapshot(text, 1)
        }

        fn key(snap: &Snapshot) -> Arc<Key> {
            Arc::clone(snap.keys_by_hash.values().next().unwrap())
        }

        fn open(dir: &std::path::Path, clock: &Clock) -> Metering {
            let store = Store::open(dir).unwrap();
            Metering::open_with_clock(&store, Arc::new(Metrics::new()), clock.clone()).unwrap()
        }

        fn admit(m: &Metering, snap: &Snapshot) -> Result<Admission, ErrorKind> {
            // Without a cluster, admission never waits.
            let ask = crate::metering::Ask {
                max_output: Some(0),
                ..Default::default()
            };
            futures_util::FutureExt::now_or_never(m.admit(snap, &key(snap), "m", &ask))
                .expect("a single node admits at once")
                .map_err(|e| e.kind)
        }

        fn settle(m: &Metering, snap: &Snapshot, a: Admission) -> i64 {
            let served = Served {
                group: Some(&snap.groups[0]),
                channel: "c",
                model: "m",
                series: None,
                status: 200,
                usage: Usage::default(),
                estimated: false,
                media: crate::metering::MediaUse::default(),
            };
            m.settle(a, snap, &key(snap), &served)
        }

        #[test]
        fn a_daily_budget_resets_at_midnight_with_requests_in_flight_across_it() {
            let dir = tempfile::tempdir().unwrap();
            let clock = Clock::manual(MONDAY_LATE);
            let snap = snapshot("budget_usd = 2.5\nbudget_period = \"day\"", "");
            let m = open(dir.path(), &clock);
            // Monday 23:59:59: three requests of 1 USD are admitted (held:
            // 0, 1, 2 USD < 2.5), the fourth waits for them.
            let monday: Vec<Admission> = (0..3).map(|_| admit(&m, &snap).unwrap()).collect();
            assert_eq!(admit(&m, &snap).err(), Some(ErrorKind::RateLimited));
            // Midnight passes while they run: Tuesday starts afresh.
            clock.set_ms(TUESDAY_EARLY);
            let tuesday = admit(&m, &snap).unwrap();
            for a in monday {
                assert_eq!(settle(&m, &snap, a), USD);
            }
            // Monday's three count on Monday (0.5 USD over its budget: less
            // than one request), not against Tuesday's budget.
            let usage = report::key_usage(&m, &snap, &key(&snap));
            assert_eq!(usage["budget_period"], "day");
            assert_eq!(usage["period_spent_nano_usd"], 0);
            assert_eq!(usage["spent_nano_usd"], 3 * USD, "lifetime");
            assert_eq!(usage["remaining_nano_usd"], 2 * USD + USD / 2);
            assert_eq!(usage["budget_resets_at"], "2026-12-09T00:00:00Z");
            assert_eq!(usage["user"]["budget_period"], serde_json::Value::Null);
            assert_eq!(settle(&m, &snap, tuesday), USD);
            let usage = report::key_usage(&m, &snap, &key(&snap));
            assert_eq!(usage["period_spent_nano_usd"], USD);
            assert_eq!(usage["period_spent_usd"], 1.0);
            // The ledger keeps the days apart: a restart sees Tuesday's 1 USD.
            m.ledger().write_pending(7);
            drop(m);
            let m = open(dir.path(), &clock);
            let usage = report::key_usage(&m, &snap, &key(&snap));
            assert_eq!(usage["period_spent_nano_usd"], USD);
            assert_eq!(usage["spent_nano_usd"], 4 * USD);
            let held: Vec<Admission> = (0..2).map(|_| admit(&m, &snap).unwrap()).collect();
            assert_eq!(
                admit(&m, &snap).err(),
                Some(ErrorKind::RateLimited),
                "1 spent + 2 held"
            );
            drop(held);
            let a = admit(&m, &snap).unwrap();
            settle(&m, &snap, a);
            assert!(admit(&m, &snap).is_ok(), "2 < 2.5 USD");
            // Wednesday: afresh again, on the same process.
            clock.set_ms(TUESDAY_EARLY + DAY_MS);
            let usage = report::key_usage(&m, &snap, &key(&snap));
            assert_eq!(usage["period_spent_nano_usd"], 0);
            assert_eq!(usage["budget_resets_at"], "2026-12-10T00:00:00Z");
        }

        #[test]
        fn a_weekly_user_budget_resets_on_monday_and_a_spent_period_refuses() {
            let dir = tempfile::tempdir().unwrap();
            // Sunday 2026-12-06, 12:00 UTC.
            let clock = Clock::manual(20_793 * DAY_MS + DAY_MS / 2);
            let snap = snapshot("", "budget_usd = 1.5\nbudget_period = \"week\"");
            let m = open(dir.path(), &clock);
            let a = admit(&m, &snap).unwrap();
            settle(&m, &snap, a);
            let a = admit(&m, &snap).unwrap();
            settle(&m, &snap, a);
            // 2 USD spent of 1.5: the rest of the week is refused.
            assert_eq!(admit(&m, &snap).err(), Some(ErrorKind::InsufficientQuota));
            let usage = report::key_usage(&m, &snap, &key(&snap));
            assert_eq!(usage["remaining_nano_usd"], 0);
            assert_eq!(usage["user"]["budget_period"], "week");
            assert_eq!(usage["user"]["period_spent_nano_usd"], 2 * USD);
            assert_eq!(usage["user"]["budget_resets_at"], "2026-12-07T00:00:00Z");
            assert_eq!(
                usage["budget_period"],
                serde_json::Value::Null,
                "the key has none"
            );
            // Monday 00:00:00.000 exactly: the new week.
            clock.set_ms(20_794 * DAY_MS);
            let usage = report::key_usage(&m, &snap, &key(&snap));
            assert_eq!(usage["user"]["period_spent_nano_usd"], 0);
            assert_eq!(usage["remaining_nano_usd"], USD + USD / 2);
            assert_eq!(usage["user"]["budget_resets_at"], "2026-12-14T00:00:00Z");
            assert!(admit(&m, &snap).is_ok());
        }

        #[test]
        fn a_user_group_ratio_prices_the_reservation_and_the_bill() {
            let dir = tempfile::tempdir().unwrap();
            let clock = Clock::manual(MONDAY_LATE);
            // Group g: ratio 1, but 0.25 for users in group "vip" (bob).
            let text = snapshot_text("budget_usd = 2", "group = \"vip\"").replacen(
                "ratio = 1\n",
                "ratio = 1\nuser_ratios = { vip = 0.25 }\n[[groups]]\nname = \"vip\"\nratio = 1\n",
                1,
            );
            let snap = load(text);
            let m = open(dir.path(), &clock);
            let a = admit(&m, &snap).unwrap();
            assert_eq!(m.key_spend("k").reserved, USD / 4, "reserved at 0.25");
            assert_eq!(settle(&m, &snap, a), USD / 4, "billed at 0.25");
            assert_eq!(m.key_spend("k").reserved, 0);
        }

        #[test]
        fn a_reload_that_gives_a_key_a_period_finds_its_spend_by_day() {
            let dir = tempfile::tempdir().unwrap();
            let clock = Clock::manual(MONDAY_LATE);
            let lifetime = snapshot("budget_usd = 100", "");
            let m = open(dir.path(), &clock);
            let a = admit(&m, &lifetime).unwrap();
            settle(&m, &lifetime, a);
            clock.set_ms(TUESDAY_EARLY);
            let a = admit(&m, &lifetime).unwrap();
            settle(&m, &lifetime, a);
            let held = admit(&m, &lifetime).unwrap();
            // A reload makes the budget 1.5 USD a day: Tuesday holds 1 USD
            // spent and 1 USD reserved, so the next request waits.
            let daily = snapshot("budget_usd = 1.5\nbudget_period = \"day\"", "");
            assert_eq!(admit(&m, &daily).err(), Some(ErrorKind::RateLimited));
            drop(held);
            assert!(admit(&m, &daily).is_ok());
            let usage = report::key_usage(&m, &daily, &key(&daily));
            assert_eq!(usage["period_spent_nano_usd"], USD);
            assert_eq!(usage["spent_nano_usd"], 2 * USD);
        }
    }
}
