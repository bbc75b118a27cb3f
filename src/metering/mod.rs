//! Metering and billing (docs/api.md, "Billing"): token usage as the providers report it
//! (estimated when they do not), its exact cost, the sled ledger, budgets
//! and rate limits.
//!
//! Everything here keys off [`Usage`], the model name the client sent and
//! the group that served the request, so it is the same for every provider.
//!
//! A request's life: [`Metering::admit`] (budgets, rate limits; reserves
//! budget for the request) -> relay -> [`Metering::settle`] (exact cost,
//! spend, metrics, ledger). The [`Admission`] returned by `admit` gives its
//! reservation and concurrency slot back when dropped, so every path that
//! does not settle (error answers, failover exhaustion, client gone, a
//! cancelled task) releases exactly once.

mod charge;
pub mod cost;
mod grant;
pub mod ledger;
pub mod limits;
pub mod period;
pub mod report;
mod request_log;
mod shared;
pub mod writer;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rust_decimal::Decimal;

use crate::clock::Clock;
use crate::cluster::{Cluster, Lease};
use crate::config::{Group, Key, Price, Snapshot, TokenPrices};
use crate::errors::{ApiError, ErrorKind};
use crate::metrics::{Metrics, ModelSeries, TokenKind};
use crate::store::Store;
use crate::tokenizer::estimate_tokens;
use crate::usage::{Units, Usage};
use cost::{cost_at, cost_nanos, media_cost_nanos, usd_to_nanos};
use ledger::{Charge, Counts, Ledger};
use limits::{
    lock_rates, lock_spend, Account, Accounts, Budget, BudgetRefusal, ConcurrencySlot, KeyAccount,
    Spend,
};
use period::{day_of, DaySpend};
use shared::Plan;

/// Estimated input tokens of a request body, for answers that ended
/// without a usage report: the text of every `content`, `text`, `prompt`,
/// `input`, `system` and `instructions` string (OpenAI, Anthropic and
/// Gemini shapes), plus a few tokens of framing per message.
pub fn estimate_input_tokens(body: &[u8]) -> u64 {
    const TEXT_FIELDS: &[&str] = &[
        "content",
        "text",
        "prompt",
        "input",
        "system",
        "instructions",
    ];
    const PER_MESSAGE: u64 = 4;
    fn walk(v: &serde_json::Value, out: &mut u64) {
        match v {
            serde_json::Value::Object(map) => {
                if map.contains_key("role") {
                    *out += PER_MESSAGE;
                }
                for (k, v) in map {
                    match v {
                        serde_json::Value::String(s) if TEXT_FIELDS.contains(&k.as_str()) => {
                            *out += estimate_tokens(s)
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    match item {
                        // `"input": ["a", "b"]`, `"prompt": ["a"]`
                        serde_json::Value::String(s) => *out += estimate_tokens(s),
                        other => walk(other, out),
                    }
                }
            }
            _ => {}
        }
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    let mut n = 0;
    walk(&doc, &mut n);
    n
}

/// The usage to bill: the provider's report, or else an estimate from the
/// request body and the streamed text (`true` = estimated).
pub fn final_usage(reported: Option<Usage>, estimated_output: u64, body: &[u8]) -> (Usage, bool) {
    match reported {
        Some(u) => (u, false),
        None => (
            Usage {
                input: estimate_input_tokens(body),
                output: estimated_output,
                ..Usage::default()
            },
            true,
        ),
    }
}

/// Output tokens reserved against a budget when the request sets no
/// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
pub const DEFAULT_RESERVED_OUTPUT_TOKENS: u64 = 4096;

/// What is known of a request's cost before it is sent: the bound its
/// budget reservation is computed from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// Bytes of prompt: the body, or an upload's text fields.
    pub prompt_bytes: usize,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
    pub max_output: Option<u64>,
    /// The media the request asks for: images (`n`), characters to speak,
    /// the uploaded audio's duration (estimated for compressed formats).
    pub media: Units,
    /// The price of one image of the request's size and quality.
    pub image_price: Decimal,
}

/// The most a request can cost before it runs, in nano-USD: every prompt
/// byte counted as an input token (a token is at least one byte of text,
/// so this bounds the prompt), at the dearest input-side price of the base
/// and of every long-context tier the prompt could reach, plus
/// `max_output` output tokens at the dearest output price among those,
/// plus the media it asks for, at the highest of the `ratios` (failover
/// may end in any of the key's groups).
pub fn reservation_nanos(price: &Price, ratios: impl Iterator<Item = Decimal>, ask: &Ask) -> i64 {
    let body_tokens = ask.prompt_bytes as u64;
    let reachable = std::iter::once(price.base()).chain(
        price
            .tiers
            .iter()
            .filter(|t| t.above_input_tokens < body_tokens)
            .map(|t| t.prices),
    );
    let mut bound = TokenPrices::default();
    for p in reachable {
        let dearest_input = p
            .input
            .max(p.cached_input)
            .max(p.cache_write)
            .max(p.cache_write_1h);
        bound.input = bound.input.max(dearest_input);
        bound.output = bound.output.max(p.output);
    }
    let usage = Usage {
        input: body_tokens,
        output: ask.max_output.unwrap_or(DEFAULT_RESERVED_OUTPUT_TOKENS),
        ..Usage::default()
    };
    let ratio = ratios.max().unwrap_or(Decimal::ONE);
    match cost::media_usd(price, &ask.media, ask.image_price)
        .and_then(|media| media.checked_add(price.per_request))
    {
        Some(fixed) => cost_at(&bound, fixed, ratio, &usage),
        None => i64::MAX,
    }
}

/// What a request came to: the group and channel that served it (none
/// when no channel did) and what it used. Metering bills it, the relay
/// records it in metrics and the access log.
pub struct Served<'a> {
    /// The group whose channel served the request.
    pub group: Option<&'a Group>,
    pub channel: &'a str,
    pub model: &'a str,
    /// The (group, model) metric series, when already looked up.
    pub series: Option<&'a ModelSeries>,
    pub status: u16,
    /// Tokens as reported, or estimated when the answer carried no report.
    pub usage: Usage,
    pub estimated: bool,
    /// What a media request used besides tokens, and its image price.
    pub media: MediaUse,
}

/// The media units of a request (images, audio, characters) and the
/// per-image price of its size and quality ([`cost::media_price`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaUse {
    pub units: Units,
    pub image_price: Decimal,
}

impl Served<'static> {
    /// A request the gateway refused before any channel answered it.
    pub fn refused(status: u16) -> Self {
        Served {
            group: None,
            channel: "",
            model: "",
            series: None,
            status,
            usage: Usage::default(),
            estimated: false,
            media: MediaUse::default(),
        }
    }
}

/// A request let through by [`Metering::admit`]. Dropping it without
/// [`Metering::settle`] releases its budget reservation and its slot.
pub struct Admission {
    key: Arc<KeyAccount>,
    user: Option<Arc<Account>>,
    reserved: i64,
    /// When it was admitted: its cost counts in that day's budget period.
    admitted_ms: u64,
    _slot: Option<ConcurrencySlot>,
    /// Cluster mode: the request's lease in Redis, when the cluster
    /// admitted it (not while Redis is down).
    lease: Option<(Arc<Cluster>, Lease)>,
    /// Cluster mode: admitted within this node's grants.
    on_grant: bool,
}

impl Admission {
    /// Settles the reservation with the actual cost (0 = just release).
    fn close(&mut self, counts: &Counts) {
        let reserved = std::mem::take(&mut self.reserved);
        let day = day_of(self.admitted_ms);
        for account in std::iter::once(&self.key.account).chain(self.user.as_deref()) {
            let mut spend = lock_spend(account);
            spend.settle(day, reserved, counts);
            if self.on_grant {
                spend.granted_reserved -= reserved;
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.reserved != 0 {
            self.close(&Counts::default());
        }
        if let Some((cluster, lease)) = self.lease.take() {
            cluster.release(lease);
        }
    }
}

pub struct Metering {
    ledger: Ledger,
    keys: Accounts<KeyAccount>,
    users: Accounts<Account>,
    metrics: Arc<Metrics>,
    /// Monotonic clock origin for rate limits.
    epoch: Instant,
    /// Wall clock: charge times and budget periods.
    clock: Clock,
    /// Cluster mode: budgets, limits and spend shared through Redis.
    cluster: Option<Arc<Cluster>>,
}

impl Metering {
    pub fn open(store: &Store, metrics: Arc<Metrics>) -> Result<Metering> {
        Metering::open_with_clock(store, metrics, Clock::system())
    }

    /// With a clock of the caller's (tests move a manual one across a
    /// budget reset).
    pub fn open_with_clock(store: &Store, metrics: Arc<Metrics>, clock: Clock) -> Result<Metering> {
        let ledger = Ledger::open(
            store,
            metrics.ledger_pending.clone(),
            metrics.ledger_dropped_total.clone(),
        )?;
        Ok(Metering {
            ledger,
            keys: Accounts::new(),
            users: Accounts::new(),
            metrics,
            epoch: Instant::now(),
            clock,
            cluster: None,
        })
    }

    /// Shares budgets, limits and spend with the other nodes.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Metering {
        self.cluster = cluster;
        self
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Today's number (days since 1970-01-01 UTC) on the metering clock.
    pub fn today(&self) -> u32 {
        day_of(self.clock.now_ms())
    }

    /// Spend as the ledger holds it, for an account used the first time.
    fn stored_spend(&self, kind: u8, name: &str, totals: Counts) -> Spend {
        Spend {
            totals,
            reserved: 0,
            others: 0,
            others_lifetime: 0,
            grant: None,
            granted_reserved: 0,
            days: self
                .ledger
                .daily_spend(kind, name, DaySpend::window(self.today())),
        }
    }

    fn key_account(&self, name: &str) -> Arc<KeyAccount> {
        self.keys.get(name, |a| {
            *lock_spend(&a.account) = self.stored_spend(b'k', name, self.ledger.key_totals(name));
        })
    }

    fn user_account(&self, name: &str) -> Arc<Account> {
        self.users.get(name, |a| {
            *lock_spend(a) = self.stored_spend(b'u', name, self.ledger.user_totals(name));
        })
    }

    /// Spend of a key (settled, including earlier runs) and its reservations.
    pub fn key_spend(&self, name: &str) -> Spend {
        self.key_account(name).account.snapshot()
    }

    pub fn user_spend(&self, name: &str) -> Spend {
        self.user_account(name).snapshot()
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Budgets first (no side effect but the reservation), then the key's
    /// concurrency, tpm and rpm. Any refusal releases what was taken. In
    /// cluster mode Redis decides (one round trip); while it cannot,
    /// `on_redis_error` says whether the node's own view decides or the
    /// request is refused.
    pub async fn admit(
        &self,
        snap: &Snapshot,
        key: &Key,
        model: &str,
        ask: &Ask,
    ) -> Result<Admission, ApiError> {
        let plan = self.plan(snap, key, model, ask);
        // A key without budgets or limits has nothing to ask Redis: its
        // spend is published at settlement all the same.
        let limited = plan.key_budget.is_some()
            || plan.user_budget.is_some()
            || key.max_concurrent.is_some()
            || key.rpm.is_some()
            || key.tpm.is_some();
        if let Some(cluster) = &self.cluster {
            if limited {
                if let Some(admission) = self.admit_granted(cluster, key, &plan, false) {
                    return Ok(admission);
                }
                if let Some(decided) = self.admit_shared(cluster, key, &plan).await {
                    return match decided {
                        Ok(lease) => Ok(self.take(plan, key, lease)),
                        // The script counts this node's whole share as
                        // taken; a share that grew while it ran may have
                        // room for the request.
                        Err(e) if e.kind == ErrorKind::RateLimited => {
                            self.admit_granted(cluster, key, &plan, true).ok_or(e)
                        }
                        Err(e) => Err(e),
                    };
                }
            } else if !cluster.is_up() && cluster.refuses_when_down() {
                return Err(shared::cluster_unavailable());
            }
        }
        self.admit_local(key, plan)
    }

    /// What a request asks of the budgets: the accounts, budgets and the
    /// reservation.
    fn plan(&self, snap: &Snapshot, key: &Key, model: &str, ask: &Ask) -> Plan {
        let key_acc = self.key_account(&key.name);
        let user_acc = key.user.as_deref().map(|u| self.user_account(u));
        let (key_budget, user_budget) = budgets(snap, key);
        let user = key.user.as_deref().and_then(|u| snap.users.get(u));
        let reserved = match (key_budget, user_budget, snap.prices.get(model)) {
            (None, None, _) | (_, _, None) => 0,
            (_, _, Some(price)) => reservation_nanos(
                price,
                key.groups
                    .iter()
                    .map(|&g| snap.groups[g].ratio_for(key.user_group.as_deref())),
                ask,
            ),
        };
        let admitted_ms = self.clock.now_ms();
        Plan {
            key_acc,
            user_acc,
            key_budget,
            user_budget,
            key_period: key.budget_period,
            user_period: user.and_then(|u| u.budget_period),
            reserved,
            admitted_ms,
            today: day_of(admitted_ms),
        }
    }

    /// Admission on this node's own view: a single node, or a cluster
    /// node while Redis is away (with the others' spend as last seen).
    fn admit_local(&self, key: &Key, plan: Plan) -> Result<Admission, ApiError> {
        let (today, reserved) = (plan.today, plan.reserved);
        lock_spend(&plan.key_acc.account)
            .try_reserve(plan.key_budget, today, reserved)
            .map_err(|r| budget_error(r, "this API key"))?;
        let mut admission = Admission {
            key: Arc::clone(&plan.key_acc),
            user: None,
            reserved: 0,
            admitted_ms: plan.admitted_ms,
            _slot: None,
            lease: None,
            on_grant: false,
        };
        // From here on, dropping `admission` gives back what it holds.
        admission.reserved = reserved;
        if let Some(user) = plan.user_acc {
            if let Err(r) = lock_spend(&user).try_reserve(plan.user_budget, today, reserved) {
                return Err(budget_error(r, "this user"));
            }
            admission.user = Some(user);
        }
        if let Some(max) = key.max_concurrent {
            admission._slot = Some(
                ConcurrencySlot::try_take(&plan.key_acc, max)
                    .ok_or_else(|| concurrency_error(max))?,
            );
        }
        if key.rpm.is_some() || key.tpm.is_some() {
            let now = self.now_ns();
            let mut rates = lock_rates(&plan.key_acc);
            if let Some(tpm) = key.tpm {
                rates
                    .check_tokens(now)
                    .map_err(|wait| tpm_error(tpm, wait))?;
            }
            if let Some(rpm) = key.rpm {
                rates
                    .take_request(rpm, now)
                    .map_err(|wait| rpm_error(rpm, wait))?;
            }
        }
        Ok(admission)
    }

    /// A request the cluster admitted: the same reservation and slot on
    /// this node's own view, without checks (Redis has decided).
    fn take(&self, plan: Plan, key: &Key, lease: (Arc<Cluster>, Lease)) -> Admission {
        let (today, reserved) = (plan.today, plan.reserved);
        let _ = lock_spend(&plan.key_acc.account).try_reserve(None, today, reserved);
        if let Some(user) = &plan.user_acc {
            let _ = lock_spend(user).try_reserve(None, today, reserved);
        }
        Admission {
            _slot: key
                .max_concurrent
                .and_then(|_| ConcurrencySlot::try_take(&plan.key_acc, u32::MAX)),
            key: plan.key_acc,
            user: plan.user_acc,
            reserved,
            admitted_ms: plan.admitted_ms,
            lease: Some(lease),
            on_grant: false,
        }
    }

    /// Bills a finished request: exact cost at the serving group's ratio,
    /// spend, metrics, ledger. Error answers (status >= 400) cost nothing.
    /// Returns the cost in nano-USD.
    pub fn settle(
        &self,
        mut admission: Admission,
        snap: &Snapshot,
        key: &Key,
        served: &Served<'_>,
    ) -> i64 {
        let Some(group) = served.group.filter(|_| served.status < 400) else {
            return 0;
        };
        let ratio = group.ratio_for(key.user_group.as_deref());
        let cost = snap
            .prices
            .get(served.model)
            .map_or(0, |p| match served.media {
                m if m.units.is_empty() => cost_nanos(p, ratio, &served.usage),
                m => media_cost_nanos(p, ratio, &served.usage, &m.units, m.image_price),
            });
        let charge = Charge {
            at_ms: self.clock.now_ms(),
            admitted_ms: admission.admitted_ms,
            key: key.name.clone(),
            user: key.user.clone().unwrap_or_default(),
            group: group.name.clone(),
            model: served.model.to_string(),
            channel: served.channel.to_string(),
            usage: served.usage,
            units: served.media.units,
            cost_nanos: cost,
            estimated: served.estimated,
        };
        admission.close(&Counts::of(&charge));
        if let Some(tpm) = key.tpm {
            lock_rates(&admission.key).spend_tokens(tpm, served.usage.total(), self.now_ns());
        }
        if let Some(cluster) = &self.cluster {
            if admission.lease.is_some() {
                self.publish(cluster, &mut admission, key, served.usage.total());
            } else {
                let tokens = served.usage.total();
                self.settled_unleased(cluster, &admission, key, budgets(snap, key), tokens);
            }
        }
        let looked_up;
        let series = match served.series {
            Some(series) => series,
            None => {
                looked_up = self.metrics.model_series(&group.name, served.model);
                &looked_up
            }
        };
        self.count(&charge, series);
        self.ledger.record(charge);
        cost
    }

    fn count(&self, c: &Charge, series: &ModelSeries) {
        let m = &self.metrics;
        let cost = u64::try_from(c.cost_nanos).unwrap_or(0);
        series.spend_nano_usd(m).inc_by(cost);
        if !c.user.is_empty() {
            m.user_spend_nano_usd_total
                .with_label_values(&[&c.user])
                .inc_by(cost);
        }
        let u = &c.usage;
        for (kind, n) in [
            (TokenKind::Input, u.input),
            (TokenKind::Output, u.output),
            (TokenKind::CachedInput, u.cached_input),
            (TokenKind::CacheWrite, u.cache_write),
            (TokenKind::CacheWrite1h, u.cache_write_1h),
            (TokenKind::Images, c.units.images),
            (TokenKind::ImageInput, c.units.image_input),
            (TokenKind::AudioMs, c.units.audio_ms),
            (TokenKind::Chars, c.units.chars),
            (TokenKind::ImageOutput, c.units.image_output),
        ] {
            if n > 0 {
                series.tokens(m, kind).inc_by(n);
            }
        }
    }

    /// Sets `tollgate_budget_remaining_usd` for every user with a budget
    /// (what is left of the current period's, for a budget per period).
    pub fn refresh_budget_gauges(&self, snap: &Snapshot) {
        let today = self.today();
        for user in snap.users.values() {
            if let Some(budget) = user.budget_usd {
                let (spent, _) = self
                    .user_spend(&user.name)
                    .against(user.budget_period, today);
                let left = usd_to_nanos(budget) - spent;
                self.metrics
                    .budget_remaining_usd
                    .with_label_values(&[&user.name])
                    .set(left as f64 / cost::NANOS_PER_USD as f64);
            }
        }
    }
}

/// The key's budget and its user's, in nano-USD.
fn budgets(snap: &Snapshot, key: &Key) -> (Option<Budget>, Option<Budget>) {
    let budget = |usd: Option<Decimal>, period| {
        usd.map(|b| Budget {
            nanos: usd_to_nanos(b),
            period,
        })
    };
    let user = key.user.as_deref().and_then(|u| snap.users.get(u));
    (
        budget(key.budget_usd, key.budget_period),
        user.and_then(|u| budget(u.budget_usd, u.budget_period)),
    )
}

fn concurrency_error(max: u32) -> ApiError {
    ApiError::new(
        ErrorKind::RateLimited,
        format!("this API key allows {max} concurrent requests"),
    )
    .with_retry_after(1)
}

fn tpm_error(tpm: u64, wait: u64) -> ApiError {
    ApiError::new(
        ErrorKind::RateLimited,
        format!("this API key allows {tpm} tokens per minute"),
    )
    .with_retry_after(wait)
}

fn rpm_error(rpm: u32, wait: u64) -> ApiError {
    ApiError::new(
        ErrorKind::RateLimited,
        format!("this API key allows {rpm} requests per minute"),
    )
    .with_retry_after(wait)
}

fn budget_error(refusal: BudgetRefusal, whose: &str) -> ApiError {
    match refusal {
        BudgetRefusal::Exhausted => ApiError::new(
            ErrorKind::InsufficientQuota,
            format!("the budget of {whose} is used up"),
        ),
        // Still within budget once running requests settle: a retry may pass.
        BudgetRefusal::HeldInFlight => ApiError::new(
            ErrorKind::RateLimited,
            format!("the rest of the budget of {whose} is held by requests still running"),
        )
        .with_retry_after(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn input_estimate_reads_the_text_of_every_dialect() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"Hello there"},
            {"role":"user","content":[{"type":"text","text":"Hello there"}]}]}"#;
        // two messages x 4 framing + 2 + 2
        assert_eq!(estimate_input_tokens(chat), 12);
        let anthropic = br#"{"model":"m","system":"Hello there","messages":[{"role":"user","content":"Hello there"}]}"#;
        assert_eq!(estimate_input_tokens(anthropic), 2 + 4 + 2);
        let gemini = br#"{"contents":[{"role":"user","parts":[{"text":"Hello there"}]}]}"#;
        assert_eq!(estimate_input_tokens(gemini), 4 + 2);
        let embeddings = br#"{"model":"m","input":["Hello there","abcdefgh"]}"#;
        assert_eq!(estimate_input_tokens(embeddings), 3);
        assert_eq!(estimate_input_tokens(b"not json"), 0);
    }

    #[test]
    fn reported_usage_wins_over_estimates() {
        let reported = Usage {
            input: 5,
            output: 6,
            ..Usage::default()
        };
        assert_eq!(final_usage(Some(reported), 99, b"{}"), (reported, false));
        let body = br#"{"messages":[{"role":"user","content":"Hello there"}]}"#;
        let (u, estimated) = final_usage(None, 7, body);
        assert!(estimated);
        assert_eq!((u.input, u.output), (6, 7));
    }

    fn ask(prompt_bytes: usize, max_output: Option<u64>) -> Ask {
        Ask {
            prompt_bytes,
            max_output,
            ..Ask::default()
        }
    }

    #[test]
    fn reservation_bounds_the_request() {
        let d = |s| Decimal::from_str(s).unwrap();
        let price = Price {
            input: d("2"),
            output: d("10"),
            cached_input: d("1"),
            cache_write: d("3"),
            cache_write_1h: d("3"),
            per_request: d("0.001"),
            tiers: Vec::new(),
            media: Default::default(),
        };
        // 1000 bytes at the dearest input price (3) + 50 output at 10,
        // per 1M: 3000 + 500 = 3500 -> 3.5e-3 USD, + 0.001 -> 4.5e-3; x1.5
        let r = reservation_nanos(
            &price,
            [d("0.5"), d("1.5")].into_iter(),
            &ask(1000, Some(50)),
        );
        assert_eq!(r, 6_750_000);
        // Without max_tokens: the documented default.
        let r = reservation_nanos(&price, [d("1")].into_iter(), &ask(0, None));
        assert_eq!(r, 4096 * 10 * 1000 + 1_000_000);
    }

    #[test]
    fn reservation_bounds_the_tiers_the_body_can_reach() {
        let d = |s| Decimal::from_str(s).unwrap();
        let tier = |above, input, output, write_1h| crate::config::PriceTier {
            above_input_tokens: above,
            prices: TokenPrices {
                input: d(input),
                output: d(output),
                cached_input: d("0"),
                cache_write: d("0"),
                cache_write_1h: d(write_1h),
            },
        };
        let price = Price {
            input: d("3"),
            output: d("15"),
            cached_input: d("0.3"),
            cache_write: d("3.75"),
            cache_write_1h: d("6"),
            per_request: d("0"),
            tiers: vec![tier(100, "6", "22.5", "12"), tier(1000, "7", "30", "7")],
            media: Default::default(),
        };
        // 100 bytes cannot be above 100 tokens: base prices, 1-hour writes
        // dearest: 100 x 6 + 10 x 15 = 750 per 1M -> 750,000 nano, x 0.4.
        let r = reservation_nanos(&price, [d("0.4")].into_iter(), &ask(100, Some(10)));
        assert_eq!(r, 300_000);
        // 101 bytes may be: the first tier's 1-hour writes (12) and output
        // (22.5): 101 x 12 + 10 x 22.5 = 1437 -> 1,437,000 nano.
        let r = reservation_nanos(&price, [d("1")].into_iter(), &ask(101, Some(10)));
        assert_eq!(r, 1_437_000);
        // Past both: the dearest of each kind, 12 and 30:
        // 2000 x 12 + 10 x 30 = 24300 -> 24,300,000 nano.
        let r = reservation_nanos(&price, [d("1")].into_iter(), &ask(2000, Some(10)));
        assert_eq!(r, 24_300_000);
    }

    #[test]
    fn reservation_counts_the_media_a_request_asks_for() {
        let d = |s| Decimal::from_str(s).unwrap();
        let price = Price {
            output: d("10"),
            per_request: d("0.001"),
            media: crate::config::MediaPrices {
                per_second: Some(d("0.0001")),
                per_1k_chars: Some(d("0.015")),
                ..Default::default()
            },
            ..Price::default()
        };
        let media = |images, audio_ms, chars| Ask {
            prompt_bytes: 10,
            max_output: Some(0),
            media: Units {
                images,
                audio_ms,
                chars,
                ..Units::default()
            },
            image_price: d("0.04"),
        };
        // 3 images at 0.04 + 0.001 per request = 0.121 USD, x 0.5.
        let r = reservation_nanos(&price, [d("0.5")].into_iter(), &media(3, 0, 0));
        assert_eq!(r, 60_500_000);
        // 90.5 s of audio at 0.0001/s + 2,500 chars at 0.015/1k + 0.001
        // = 0.00905 + 0.0375 + 0.001 = 0.04755 USD.
        let r = reservation_nanos(&price, [d("1")].into_iter(), &media(0, 90_500, 2_500));
        assert_eq!(r, 47_550_000);
    }
}
