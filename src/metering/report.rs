//! Usage as JSON: the calling key's `/api/usage`, the OpenAI legacy
//! billing endpoints, and the admin `/admin/usage` query.
//!
//! Amounts are shown both as USD numbers (for people and dashboards) and as
//! exact integer nano-USD (`*_nano_usd`) for anything that adds them up.

use serde_json::{json, Value};

use super::cost::{nanos_to_usd, usd_to_nanos};
use super::ledger::{Bucket, Counts, Query, DIMENSIONS};
use super::limits::Spend;
use super::{period, Metering};
use crate::clock::now_ms;
use crate::config::{BudgetPeriod, Key, Snapshot};

/// What OpenAI-style clients are shown as the limit of a key without any
/// budget (the convention of one-api/new-api).
const UNLIMITED_USD: i64 = 100_000_000;

/// An exact decimal as the nearest JSON number (via its text, so the
/// number shown is the one closest to the exact amount).
pub fn number(d: rust_decimal::Decimal) -> Value {
    d.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Nano-USD as the nearest JSON number of USD.
pub fn usd(nanos: i64) -> Value {
    number(nanos_to_usd(nanos))
}

fn tokens(c: &Counts) -> Value {
    json!({
        "input": c.input,
        "output": c.output,
        "cached_input": c.cached_input,
        "cache_write": c.cache_write,
        "cache_write_1h": c.cache_write_1h,
        "total": c.tokens(),
    })
}

/// One budget as `/api/usage` shows it: its period, the spend that counts
/// against it, and what is left.
struct BudgetState {
    period: Option<BudgetPeriod>,
    /// Settled spend in the current period (lifetime without a period).
    spent: i64,
    left: Option<i64>,
}

fn budget_state(
    spend: &Spend,
    budget: Option<rust_decimal::Decimal>,
    period: Option<BudgetPeriod>,
    today: u32,
) -> BudgetState {
    let (spent, _) = spend.against(period, today);
    BudgetState {
        period,
        spent,
        left: budget.map(|b| usd_to_nanos(b) - spent),
    }
}

impl BudgetState {
    /// The budget's period fields, merged into a usage object.
    fn fields(&self, today: u32) -> serde_json::Map<String, Value> {
        let (period, spent_usd, spent_nanos, resets) = match self.period {
            Some(p) => (
                json!(p.as_str()),
                usd(self.spent),
                json!(self.spent),
                json!(period::resets_at(p, today)),
            ),
            None => (Value::Null, Value::Null, Value::Null, Value::Null),
        };
        let mut out = serde_json::Map::new();
        out.insert("budget_period".into(), period);
        out.insert("period_spent_usd".into(), spent_usd);
        out.insert("period_spent_nano_usd".into(), spent_nanos);
        out.insert("budget_resets_at".into(), resets);
        out
    }
}

/// Budget state of a key and its user's (when she has a budget), and what
/// is left across both (None when neither has a budget).
fn budgets(
    m: &Metering,
    snap: &Snapshot,
    key: &Key,
    today: u32,
) -> (BudgetState, Option<BudgetState>, Option<i64>) {
    let mine = budget_state(
        &m.key_spend(&key.name),
        key.budget_usd,
        key.budget_period,
        today,
    );
    let user = key
        .user
        .as_deref()
        .and_then(|name| snap.users.get(name))
        .map(|u| budget_state(&m.user_spend(&u.name), u.budget_usd, u.budget_period, today));
    let left = [Some(&mine), user.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|b| b.left)
        .min();
    (mine, user, left.map(|l| l.max(0)))
}

/// `GET /api/usage`: the calling key's spend, budget left, tokens, requests.
pub fn key_usage(m: &Metering, snap: &Snapshot, key: &Key) -> Value {
    let today = m.today();
    let key_spend = m.key_spend(&key.name);
    let spent = key_spend.totals;
    let spent_nanos = key_spend.lifetime_nanos();
    let (mine, user_budget, left) = budgets(m, snap, key, today);
    let user = key.user.as_deref().map(|name| {
        let user_spend = m.user_spend(name);
        let s = user_spend.totals;
        let user_nanos = user_spend.lifetime_nanos();
        let budget = snap.users.get(name).and_then(|u| u.budget_usd);
        let mut user = json!({
            "name": name,
            "spent_usd": usd(user_nanos),
            "spent_nano_usd": user_nanos,
            "budget_usd": budget.map(|b| usd(usd_to_nanos(b))),
            "requests": s.requests,
        });
        if let (Some(fields), Some(b)) = (user.as_object_mut(), &user_budget) {
            fields.extend(b.fields(today));
        }
        user
    });
    let mut doc = json!({
        "object": "usage",
        "key": key.name,
        "requests": spent.requests,
        "estimated_requests": spent.estimated,
        "tokens": tokens(&spent),
        "spent_usd": usd(spent_nanos),
        "spent_nano_usd": spent_nanos,
        "budget_usd": key.budget_usd.map(|b| usd(usd_to_nanos(b))),
        "remaining_usd": left.map(usd),
        "remaining_nano_usd": left,
        "user": user,
    });
    if let Some(fields) = doc.as_object_mut() {
        fields.extend(mine.fields(today));
    }
    doc
}

/// `GET /v1/dashboard/billing/subscription` (OpenAI legacy). The limit is
/// what the key has spent plus what it has left, so that clients showing
/// `hard_limit_usd - total_usage` show the real balance.
pub fn billing_subscription(m: &Metering, snap: &Snapshot, key: &Key) -> Value {
    let spend = m.key_spend(&key.name);
    let (_, _, left) = budgets(m, snap, key, m.today());
    let limit = match left {
        Some(l) => usd(spend.lifetime_nanos() + l),
        None => json!(UNLIMITED_USD),
    };
    json!({
        "object": "billing_subscription",
        "has_payment_method": true,
        "soft_limit_usd": limit,
        "hard_limit_usd": limit,
        "system_hard_limit_usd": limit,
        "access_until": key.expires_unix.unwrap_or(0),
        "plan": {"title": "tollgate", "id": "tollgate"},
    })
}

/// `GET /v1/dashboard/billing/usage` (OpenAI legacy): the key's lifetime
/// spend in cents (budgets are lifetime, so the date range is not used).
pub fn billing_usage(m: &Metering, key: &Key) -> Value {
    let spend = m.key_spend(&key.name);
    let spent = spend.lifetime_nanos();
    // 1 cent = 1e7 nano-USD.
    let cents = number(rust_decimal::Decimal::new(spent, 7).normalize());
    json!({"object": "list", "total_usage": cents})
}

/// Reads a time parameter: unix seconds, RFC 3339, or an age such as
/// `24h`, `7d`, `30m`, `90s` (that long before `now_ms`). Returns ms.
pub fn parse_time(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return u64::try_from(t.timestamp_millis()).map_err(|_| format!("`{text}` is before 1970"));
    }
    let ago = parse_age(text)
        .ok_or_else(|| format!("`{text}` is not unix seconds, RFC 3339, or an age like 24h"))?;
    Ok(now_ms.saturating_sub(ago))
}

/// `90s`, `30m`, `24h`, `7d` in ms.
pub fn parse_age(text: &str) -> Option<u64> {
    let (n, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

/// Parses the `/admin/usage` query string: filters `group`, `user`, `key`,
/// `model`, `channel`; `from`, `to`; `group_by` (or `by`), comma-separated.
pub fn parse_query(query: &str, now_ms: u64) -> Result<Query, String> {
    let mut q = Query {
        from_ms: 0,
        to_ms: now_ms + 3_600_000,
        ..Query::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "from" => q.from_ms = parse_time(&value, now_ms)?,
            "to" => q.to_ms = parse_time(&value, now_ms)?,
            "group_by" | "by" => {
                for dim in value.split(',').filter(|d| !d.is_empty()) {
                    let bucket = match dim {
                        "hour" => Some(Bucket::Hour),
                        "day" => Some(Bucket::Day),
                        _ => None,
                    };
                    if let Some(b) = bucket {
                        if q.bucket.is_some_and(|had| had != b) {
                            return Err("group by `hour` or by `day`, not both".into());
                        }
                        q.bucket = Some(b);
                        continue;
                    }
                    let i = dimension(dim)?;
                    if !q.group_by.contains(&i) {
                        q.group_by.push(i);
                    }
                }
            }
            other => {
                let i = dimension(other).map_err(|_| format!("unknown parameter `{other}`"))?;
                q.filters[i] = Some(value);
            }
        }
    }
    if q.from_ms > q.to_ms {
        return Err("`from` is after `to`".into());
    }
    Ok(q)
}

fn dimension(name: &str) -> Result<usize, String> {
    DIMENSIONS.iter().position(|d| *d == name).ok_or_else(|| {
        format!(
            "`{name}` is not one of {}, hour, day",
            DIMENSIONS.join(", ")
        )
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi * 16 + lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn counts_json(c: &Counts) -> serde_json::Map<String, Value> {
    let mut row = serde_json::Map::new();
    row.insert("requests".into(), json!(c.requests));
    row.insert("input".into(), json!(c.input));
    row.insert("output".into(), json!(c.output));
    row.insert("cached_input".into(), json!(c.cached_input));
    row.insert("cache_write".into(), json!(c.cache_write));
    row.insert("cache_write_1h".into(), json!(c.cache_write_1h));
    // Media units only where a row has any: token-only rows keep their shape.
    for (name, n) in [
        ("images", c.images),
        ("image_input", c.image_input),
        ("audio_ms", c.audio_ms),
        ("chars", c.chars),
        ("image_output", c.image_output),
    ] {
        if n != 0 {
            row.insert(name.into(), json!(n));
        }
    }
    row.insert("estimated".into(), json!(c.estimated));
    row.insert("cost_usd".into(), usd(c.cost_nanos));
    row.insert("cost_nano_usd".into(), json!(c.cost_nanos));
    row
}

/// The names of a query's grouped values, in the order the ledger gives
/// them: the time bucket first.
fn group_by_names(q: &Query) -> Vec<&'static str> {
    let dims = q.group_by.iter().map(|&i| DIMENSIONS[i]);
    q.bucket
        .map(Bucket::as_str)
        .into_iter()
        .chain(dims)
        .collect()
}

/// One grouped row: its values by name, then its counts.
fn row_json(q: &Query, values: Vec<String>, counts: &Counts) -> serde_json::Map<String, Value> {
    let mut row = serde_json::Map::new();
    for (name, value) in group_by_names(q).into_iter().zip(values) {
        row.insert(name.to_string(), Value::String(value));
    }
    row.extend(counts_json(counts));
    row
}

/// `GET /api/usage/daily`: the usage of `user`'s keys per UTC day, the 30
/// days up to `now_ms` (today included), by key, model and group; `days`
/// lists the 30 days, oldest first, so that a chart shows days without use.
pub fn user_daily(m: &Metering, user: &str, now_ms: u64) -> Value {
    const DAY_MS: u64 = 86_400_000;
    let first = (now_ms - now_ms % DAY_MS).saturating_sub(29 * DAY_MS);
    let q = Query {
        from_ms: first,
        to_ms: now_ms + 3_600_000,
        filters: [None, Some(user.to_string()), None, None, None],
        group_by: vec![0, 3, 2],
        bucket: Some(Bucket::Day),
    };
    let rows: Vec<Value> = m
        .ledger()
        .query(&q)
        .into_iter()
        .map(|(values, counts)| Value::Object(row_json(&q, values, &counts)))
        .collect();
    let days: Vec<String> = (0..30)
        .filter_map(|i| chrono::DateTime::from_timestamp_millis((first + i * DAY_MS) as i64))
        .map(|t| t.format("%Y-%m-%d").to_string())
        .collect();
    json!({"user": user, "days": days, "rows": rows})
}

/// `GET /admin/usage`: rows of the ledger, filtered and grouped.
pub fn admin_usage(m: &Metering, query: &str) -> Result<Value, String> {
    let q = parse_query(query, now_ms())?;
    let rows = m.ledger().query(&q);
    let mut total = Counts::default();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(dims, counts)| {
            total.add(&counts);
            Value::Object(row_json(&q, dims, &counts))
        })
        .collect();
    Ok(json!({
        "from_ms": q.from_ms,
        "to_ms": q.to_ms,
        "group_by": group_by_names(&q),
        "rows": rows,
        "total": Value::Object(counts_json(&total)),
    }))
}

/// `GET /admin/requests`: the per-request log, oldest first. Parameters:
/// `from`, `to` (as for `/admin/usage`; default: the last 24 hours),
/// `limit` (default 100, at most 10000) and `order` (`oldest`, the
/// default, or `newest`: the newest first, and the limit keeps those).
pub fn admin_requests(m: &Metering, query: &str) -> Result<Value, String> {
    let now = now_ms();
    let (mut from, mut to, mut limit) = (now.saturating_sub(86_400_000), now + 1, 100usize);
    let mut newest = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "from" => from = parse_time(&value, now)?,
            "to" => to = parse_time(&value, now)?,
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .map_err(|_| format!("limit `{value}` is not a number"))?
                    .min(10_000)
            }
            "order" => {
                newest = match value.as_str() {
                    "oldest" => false,
                    "newest" => true,
                    _ => return Err(format!("order `{value}` is not `oldest` or `newest`")),
                }
            }
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok(json!({"requests": m.ledger().request_log(from, to, limit, newest)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_time("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert!(parse_time("yesterday", now).is_err());
        assert_eq!(parse_age("90s"), Some(90_000));
        assert_eq!(parse_age("h"), None);
    }

    #[test]
    fn admin_query_parameters() {
        let q = parse_query("group=claude&model=gpt%2D4o&by=group,model&from=10", 5000).unwrap();
        assert_eq!(q.filters[2].as_deref(), Some("claude"));
        assert_eq!(q.filters[3].as_deref(), Some("gpt-4o"));
        assert_eq!(q.group_by, vec![2, 3]);
        assert_eq!(q.from_ms, 10_000);
        assert!(parse_query("group_by=colour", 0)
            .unwrap_err()
            .contains("colour"));
        assert!(parse_query("colour=red", 0).is_err());
        assert!(parse_query("from=20&to=10", 0).is_err());
        let q = parse_query("group_by=day,group", 0).unwrap();
        assert_eq!(q.bucket, Some(Bucket::Day));
        assert_eq!(q.group_by, vec![2]);
        assert_eq!(group_by_names(&q), vec!["day", "group"]);
        assert!(parse_query("by=hour,day", 0)
            .unwrap_err()
            .contains("not both"));
    }
}
