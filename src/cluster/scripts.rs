//! The Lua scripts that make admission and settlement atomic in Redis, and
//! the names of the Redis keys they touch (docs/cluster.md, "Data in
//! Redis"). Times come from Redis's own clock (`TIME`), so the nodes'
//! clocks need not agree.
//!
//! Amounts are integer nano-USD. Lua numbers are doubles: sums are exact
//! up to 2^53 nano-USD (about 9 million USD) per account.

use redis::Script;
use std::sync::LazyLock;

/// What the admission and grant scripts share: Redis's clock, sums, and
/// the accounts' live reservations. A node's grant (docs/cluster.md,
/// "Grants") is one field of the account's block hash: node ->
/// "expiry_ms budget slots".
macro_rules! prelude {
    () => {
        r#"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function hsum(k)
  local s = 0
  for _, v in ipairs(redis.call('HVALS', k)) do s = s + tonumber(v) end
  return s
end
local function held(leases, amounts)
  local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', now_ms)
  if #dead > 0 then
    redis.call('ZREM', leases, unpack(dead))
    redis.call('HDEL', amounts, unpack(dead))
  end
  return hsum(amounts)
end
local function blocks(k, skip)
  local b, s = 0, 0
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    local exp, nb, ns = string.match(all[i + 1], '^(%d+) (%d+) (%d+)$')
    if exp and tonumber(exp) > now_ms then
      if all[i] ~= skip then b = b + tonumber(nb); s = s + tonumber(ns) end
    else
      redis.call('HDEL', k, all[i])
    end
  end
  return b, s
end
"#
    };
}

/// Admission: budgets (settled + in-flight + the nodes' grants), the key's
/// concurrency leases and granted slots, tpm, then rpm. Checks everything
/// first, changes nothing on a refusal. Returns `{code, key_spent,
/// user_spent}`; code 0 = admitted, else a [`super::Refusal`] code with
/// the seconds to wait in the second field.
///
/// KEYS: 1 key spend, 2 key leases, 3 key held, 4 key rates, 5 user
/// spend, 6 user leases, 7 user held, 8 key blocks, 9 user blocks, then
/// the key's day hashes and the user's (budgets per period).
/// ARGV: 1 lease id, 2 lease ms, 3 reserved nanos, 4 key budget (-1 =
/// none), 5 user budget (-1), 6 max concurrent (0 = none), 7 rpm (0),
/// 8 tpm (0), 9 key day hashes (-1 = lifetime), 10 user day hashes (-1),
/// 11 has a user (0/1).
const ADMIT_LUA: &str = concat!(
    prelude!(),
    r#"
local lease, lease_ms, reserved = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n_kd, n_ud, has_user = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11] == '1'
local function spent(total, first, n)
  if n < 0 then return hsum(total) end
  local s = 0
  for i = first, first + n - 1 do s = s + hsum(KEYS[i]) end
  return s
end
local function check(budget, s, h, code)
  if budget < 0 then return 0 end
  if s >= budget then return code end
  if s + h >= budget then return code + 1 end
  return 0
end
local kb, k_slots = blocks(KEYS[8])
local ks = spent(KEYS[1], 10, n_kd)
local r = check(tonumber(ARGV[4]), ks, held(KEYS[2], KEYS[3]) + kb, 1)
if r > 0 then return {r, 1, 0} end
local us = 0
if has_user then
  local ub = blocks(KEYS[9])
  us = spent(KEYS[5], 10 + math.max(n_kd, 0), n_ud)
  r = check(tonumber(ARGV[5]), us, held(KEYS[6], KEYS[7]) + ub, 3)
  if r > 0 then return {r, 1, 0} end
end
local max_conc, rpm, tpm = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
if max_conc > 0 and redis.call('ZCARD', KEYS[2]) + k_slots >= max_conc then return {5, 1, 0} end
if tpm > 0 then
  local debt = tonumber(redis.call('HGET', KEYS[4], 't') or '0') - now_us
  if debt >= 60000000 then return {6, math.floor((debt - 60000000) / 1000000) + 1, 0} end
end
local rpm_tat
if rpm > 0 then
  local interval = math.floor(60000000 / rpm)
  local tat = math.max(tonumber(redis.call('HGET', KEYS[4], 'r') or '0'), now_us)
  if tat - now_us > 60000000 - interval then
    return {7, math.max(1, math.ceil((tat - now_us - 60000000 + interval) / 1000000)), 0}
  end
  rpm_tat = tat + interval
end
local exp = now_ms + lease_ms
redis.call('ZADD', KEYS[2], exp, lease)
redis.call('PEXPIRE', KEYS[2], lease_ms + 1000)
if reserved > 0 then
  redis.call('HSET', KEYS[3], lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[3], lease_ms + 1000)
end
if has_user then
  redis.call('ZADD', KEYS[6], exp, lease)
  redis.call('PEXPIRE', KEYS[6], lease_ms + 1000)
  if reserved > 0 then
    redis.call('HSET', KEYS[7], lease, ARGV[3])
    redis.call('PEXPIRE', KEYS[7], lease_ms + 1000)
  end
end
if rpm_tat then
  redis.call('HSET', KEYS[4], 'r', string.format('%.0f', rpm_tat))
  redis.call('PEXPIRE', KEYS[4], 3600000)
end
return {0, ks, us}
"#
);

/// A node's grant for one account (docs/cluster.md, "Grants"): the share
/// of the budget, of the concurrency slots and of the rpm window it may
/// use without asking. The node keeps at least `min` of what it held (it
/// may already have committed that), and gets more only out of a quarter
/// of what is free, and only while that quarter is worth sharing
/// (`floor`): near a limit a grant stops growing and admissions ask Redis
/// one by one.
/// Returns `{budget, slots, rpm tokens, tpm debt us, spent in scope}`.
///
/// KEYS: 1 blocks, 2 leases, 3 held, 4 rates, 5.. the spend hashes of the
/// budget's scope (lifetime, or the period's days).
/// ARGV: 1 node, 2 lease ms, 3 budget (-1 = none), 4 min budget, 5 wanted
/// budget, 6 floor, 7 max concurrent (0 = none), 8 min slots, 9 wanted
/// slots, 10 rpm (0 = none), 11 wanted rpm tokens, 12 rpm tokens given
/// back, 13 tpm (0/1).
const GRANT_LUA: &str = concat!(
    prelude!(),
    r#"
local node, lease_ms = ARGV[1], tonumber(ARGV[2])
local budget, min_b, want_b, floor_b = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local max_conc, min_s, want_s = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local rpm, want_k, back_k = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local function share(free, min, want, floor)
  local quarter = math.floor(free / 4)
  if quarter < floor then return min end
  return min + math.max(0, math.min(want - min, quarter))
end
local others_b, others_s = blocks(KEYS[1], node)
local h = held(KEYS[2], KEYS[3])
local spent = 0
for i = 5, #KEYS do spent = spent + hsum(KEYS[i]) end
local gb, gs, gk, debt = 0, 0, 0, 0
if budget >= 0 then
  gb = share(budget - spent - h - others_b - min_b, min_b, want_b, floor_b)
end
if max_conc > 0 then
  gs = share(max_conc - redis.call('ZCARD', KEYS[2]) - others_s - min_s, min_s, want_s, 4)
end
if rpm > 0 then
  local interval = math.floor(60000000 / rpm)
  local tat = math.max(tonumber(redis.call('HGET', KEYS[4], 'r') or '0') - back_k * interval, now_us)
  local quarter = math.floor((now_us + 60000000 - tat) / interval / 4)
  if quarter >= 4 then gk = math.min(want_k, quarter) end
  redis.call('HSET', KEYS[4], 'r', string.format('%.0f', tat + gk * interval))
  redis.call('PEXPIRE', KEYS[4], 3600000)
end
if ARGV[13] == '1' then
  debt = math.max(0, tonumber(redis.call('HGET', KEYS[4], 't') or '0') - now_us)
end
if gb > 0 or gs > 0 then
  redis.call('HSET', KEYS[1], node, string.format('%.0f %.0f %.0f', now_ms + lease_ms, gb, gs))
  redis.call('PEXPIRE', KEYS[1], lease_ms + 1000)
else
  redis.call('HDEL', KEYS[1], node)
end
return {gb, gs, gk, debt, spent}
"#
);

/// Publishes a node's own absolute totals of one account: its lifetime
/// spend and its spend of some days. A field only ever grows, so an old
/// or repeated publish changes nothing (replays are idempotent).
/// KEYS: 1 spend hash, 2.. day hashes. ARGV: 1 node, 2 total, 3.. day totals.
const RAISE_LUA: &str = r#"
local node = ARGV[1]
for i = 1, #KEYS do
  local cur = tonumber(redis.call('HGET', KEYS[i], node) or '0')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[i], node, ARGV[i + 1]) end
  if i > 1 then redis.call('EXPIRE', KEYS[i], 3456000) end
end
return 0
"#;

/// Counts a finished request's tokens in the key's shared tpm window.
/// KEYS: 1 key rates. ARGV: 1 tpm, 2 tokens.
const SPEND_TOKENS_LUA: &str = r#"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = math.max(tonumber(redis.call('HGET', KEYS[1], 't') or '0'), now_us)
tat = tat + math.floor(60000000 * tonumber(ARGV[2]) / math.max(tonumber(ARGV[1]), 1))
redis.call('HSET', KEYS[1], 't', string.format('%.0f', tat))
redis.call('PEXPIRE', KEYS[1], 3600000)
return 0
"#;

/// Moves the expiry of running requests' leases on. KEYS: pairs of
/// (leases, held) of each account; ARGV: 1 lease ms, then one lease id per
/// pair.
const RENEW_LUA: &str = r#"
local t = redis.call('TIME')
local lease_ms = tonumber(ARGV[1])
local exp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease_ms
for i = 1, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], 'XX', exp, ARGV[(i + 1) / 2 + 1])
  redis.call('PEXPIRE', KEYS[i], lease_ms + 1000)
  redis.call('PEXPIRE', KEYS[i + 1], lease_ms + 1000)
end
return 0
"#;

/// Stores a managed key's record unless Redis holds a newer one, and
/// bumps the version that nodes poll. KEYS: 1 records, 2 their times,
/// 3 version. ARGV: 1 name, 2 updated ms, 3 the record (JSON).
const KEY_PUT_LUA: &str = r#"
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= held then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[3])
return 1
"#;

pub static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT_LUA));
pub static RAISE: LazyLock<Script> = LazyLock::new(|| Script::new(RAISE_LUA));
pub static SPEND_TOKENS: LazyLock<Script> = LazyLock::new(|| Script::new(SPEND_TOKENS_LUA));
pub static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_LUA));
pub static KEY_PUT: LazyLock<Script> = LazyLock::new(|| Script::new(KEY_PUT_LUA));
pub static GRANT: LazyLock<Script> = LazyLock::new(|| Script::new(GRANT_LUA));

/// Every script's code, for `SCRIPT LOAD` after Redis (re)starts: the
/// settlement pipeline calls them by hash.
pub const ALL: [&str; 6] = [
    ADMIT_LUA,
    GRANT_LUA,
    RAISE_LUA,
    SPEND_TOKENS_LUA,
    RENEW_LUA,
    KEY_PUT_LUA,
];

/// Managed keys: name -> record (JSON), name -> its `updated_ms`, and a
/// counter bumped by every change.
pub const KEYS: &str = "tg:keys";
pub const KEYS_AT: &str = "tg:keys:at";
pub const KEYS_VERSION: &str = "tg:keys:version";

/// `k` for a key, `u` for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Key,
    User,
}

impl Kind {
    pub fn tag(self) -> char {
        match self {
            Kind::Key => 'k',
            Kind::User => 'u',
        }
    }
}

/// The Redis keys of one account. Names are config names (no secrets).
pub fn spend_key(kind: Kind, name: &str) -> String {
    format!("tg:spend:{}:{name}", kind.tag())
}

pub fn day_key(kind: Kind, name: &str, day: u32) -> String {
    format!("tg:day:{}:{name}:{day}", kind.tag())
}

pub fn leases_key(kind: Kind, name: &str) -> String {
    format!("tg:lease:{}:{name}", kind.tag())
}

pub fn held_key(kind: Kind, name: &str) -> String {
    format!("tg:held:{}:{name}", kind.tag())
}

pub fn blocks_key(kind: Kind, name: &str) -> String {
    format!("tg:block:{}:{name}", kind.tag())
}

pub fn rates_key(key: &str) -> String {
    format!("tg:rate:k:{key}")
}

pub fn node_key(node: &str) -> String {
    format!("tg:node:{node}")
}

/// The pub/sub channel of cooldowns (and other events).
pub const EVENTS: &str = "tg:events";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_kind() {
        assert_eq!(spend_key(Kind::Key, "a"), "tg:spend:k:a");
        assert_eq!(spend_key(Kind::User, "a"), "tg:spend:u:a");
        assert_eq!(day_key(Kind::User, "bob", 20_000), "tg:day:u:bob:20000");
        assert_eq!(leases_key(Kind::Key, "a"), "tg:lease:k:a");
        assert_eq!(held_key(Kind::User, "a"), "tg:held:u:a");
        assert_eq!(rates_key("a"), "tg:rate:k:a");
        assert_eq!(blocks_key(Kind::User, "a"), "tg:block:u:a");
        assert_eq!(node_key("edge-1"), "tg:node:edge-1");
    }
}
