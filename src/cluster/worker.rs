//! The cluster's background work: connecting (with backoff), noticing
//! Redis come and go, publishing settlements in pipelined batches,
//! renewing the leases of running requests, re-publishing this node's
//! totals when Redis lost them, and listening for other nodes' events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use redis::aio::ConnectionManager;
use redis::Client;
use tokio::sync::broadcast;

use super::grants::{self, evalsha, raise, Granted, OwnTotals};
use super::scripts::{self, Kind};
use super::{Cluster, Op};

/// How often the worker checks Redis and refreshes this node's entry.
const TICK: Duration = Duration::from_millis(250);
/// A node entry (its admin URL) outlives a few missed ticks.
const NODE_TTL_MS: u64 = 5_000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Accounts per pipeline when re-publishing everything.
const CHUNK: usize = 500;

pub struct ClusterWorker {
    pub cluster: Arc<Cluster>,
}

/// The worker's own state between ticks.
struct State {
    client: Option<Client>,
    next_connect: Instant,
    backoff: Duration,
    /// Whether this process has published all its totals since it started.
    published_all: bool,
    last_renew: Instant,
    /// The managed-key version last applied from Redis.
    keys_seen: i64,
}

#[async_trait]
impl BackgroundService for ClusterWorker {
    /// Runs until the process exits: settlements queued during the
    /// shutdown grace period are still published as they come, and the
    /// spend of requests settled on grants is published as soon as the
    /// shutdown begins, then at every tick.
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let c = &self.cluster;
        let Some(mut rx) = c.ops_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let client = match redis_client(&c.settings) {
            Ok(client) => Some(client),
            Err(e) => {
                // The URL is not logged: it may hold a password.
                tracing::error!("cluster: [cluster] redis_url is not usable: {:?}", e.kind());
                None
            }
        };
        if let Some(client) = client.clone() {
            tokio::spawn(listen(Arc::clone(c), client));
        }
        let mut state = State {
            client,
            next_connect: Instant::now(),
            backoff: TICK,
            published_all: false,
            last_renew: Instant::now(),
            keys_seen: -1,
        };
        let mut changes = c.keys.get().map(|r| r.subscribe());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                op = rx.recv() => {
                    let Some(op) = op else { return };
                    let mut ops = vec![op];
                    while ops.len() < 1024 {
                        match rx.try_recv() {
                            Ok(op) => ops.push(op),
                            Err(_) => break,
                        }
                    }
                    let wanted = take_wanted(&mut ops);
                    if !ops.is_empty() {
                        self.publish(ops).await;
                    }
                    if !wanted.is_empty() {
                        self.grant_round(wanted).await;
                    }
                }
                _ = tick.tick() => {
                    self.heartbeat(&mut state).await;
                    self.grant_round(Vec::new()).await;
                }
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    self.grant_round(Vec::new()).await;
                }
                name = next_change(&mut changes) => match name {
                    Err(broadcast::error::RecvError::Closed) => changes = None,
                    name => self.key_changed(name).await,
                },
            }
        }
    }
}

impl ClusterWorker {
    pub(super) fn conn(&self) -> Option<ConnectionManager> {
        self.cluster
            .conn
            .load_full()
            .map(|c| ConnectionManager::clone(&c))
    }

    /// Timeout of background calls: they may carry many requests' work.
    pub(super) fn batch_timeout(&self) -> Duration {
        (self.cluster.settings.timeout * 4).max(Duration::from_millis(500))
    }

    async fn heartbeat(&self, state: &mut State) {
        let c = &self.cluster;
        if c.conn.load().is_none() {
            if Instant::now() < state.next_connect {
                return;
            }
            let Some(client) = state.client.clone() else {
                return;
            };
            match connect(client, c.settings.timeout).await {
                Some(conn) => {
                    c.conn.store(Some(Arc::new(conn)));
                    state.backoff = TICK;
                }
                None => {
                    state.next_connect = Instant::now() + state.backoff;
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                    c.set_up(false);
                    return;
                }
            }
        }
        let Some(mut conn) = self.conn() else { return };
        let node_key = scripts::node_key(&c.settings.node);
        let mut refresh = redis::cmd("SET");
        refresh
            .arg(&node_key)
            .arg(&c.settings.admin_url)
            .arg("XX")
            .arg("PX")
            .arg(NODE_TTL_MS);
        let refresh = refresh.query_async::<Option<String>>(&mut conn);
        let known = match tokio::time::timeout(c.settings.timeout * 2, refresh).await {
            Ok(Ok(v)) => v.is_some(),
            _ => {
                c.set_up(false);
                return;
            }
        };
        if !known {
            // Redis lost this node's entry, so perhaps everything (a
            // FLUSHALL, a failover to an empty replica) with the
            // connection kept: the grants it held may be gone.
            c.void_grants();
        }
        if !known || !state.published_all || !c.is_up() {
            if !self
                .recover(&mut conn, !known || !state.published_all)
                .await
            {
                c.set_up(false);
                return;
            }
            state.published_all = true;
            let mut register = redis::cmd("SET");
            register
                .arg(&node_key)
                .arg(&c.settings.admin_url)
                .arg("PX")
                .arg(NODE_TTL_MS);
            let register = register.query_async::<()>(&mut conn);
            if !matches!(
                tokio::time::timeout(self.batch_timeout(), register).await,
                Ok(Ok(()))
            ) {
                c.set_up(false);
                return;
            }
            c.set_up(true);
        }
        if let Some(registry) = c.keys.get() {
            let pull = super::keys::pull(&mut conn, registry, state.keys_seen);
            if let Ok(Some(seen)) = tokio::time::timeout(self.batch_timeout(), pull).await {
                state.keys_seen = seen;
            }
        }
        if state.last_renew.elapsed() >= c.settings.lease / 3 {
            state.last_renew = Instant::now();
            self.renew(&mut conn).await;
        }
    }

    /// After Redis was away (or lost its data): load the scripts, publish
    /// every total of this node when `all`, and the journaled ones.
    async fn recover(&self, conn: &mut ConnectionManager, all: bool) -> bool {
        let c = &self.cluster;
        let timeout = self.batch_timeout();
        for code in scripts::ALL {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(code);
            let load = load.query_async::<String>(conn);
            if !matches!(tokio::time::timeout(timeout, load).await, Ok(Ok(_))) {
                return false;
            }
        }
        if let Some(registry) = c.keys.get() {
            let mut pipe = redis::pipe();
            if super::keys::put_all(&mut pipe, registry) > 0 {
                let sent = pipe.query_async::<()>(conn);
                if !matches!(tokio::time::timeout(timeout, sent).await, Ok(Ok(()))) {
                    return false;
                }
            }
        }
        let Some(source) = c.source.get() else {
            return true;
        };
        let journaled = c.journal.pending();
        let mut accounts = if all {
            source.all_accounts()
        } else {
            Vec::new()
        };
        accounts.extend(journaled.iter().cloned());
        accounts.sort_by(|a, b| (a.0.tag(), &a.1).cmp(&(b.0.tag(), &b.1)));
        accounts.dedup();
        for chunk in accounts.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for (kind, name) in chunk {
                raise(&mut pipe, &c.settings.node, &source.own_totals(*kind, name));
            }
            let sent = pipe.query_async::<()>(conn);
            if !matches!(tokio::time::timeout(timeout, sent).await, Ok(Ok(()))) {
                return false;
            }
        }
        if all {
            tracing::info!(
                accounts = accounts.len(),
                "cluster: this node's totals published"
            );
        }
        let left = c.journal.remove(&journaled);
        c.metrics.pending.set(left as i64);
        true
    }

    /// Publishes queued settlements and events in one pipeline; while
    /// Redis is down (or when this fails), journals the accounts instead.
    async fn publish(&self, ops: Vec<Op>) {
        let c = &self.cluster;
        let batch = Batch::of(ops, |id| c.lease_id_text(id));
        let mut pipe = redis::pipe();
        for t in batch.totals.values() {
            raise(&mut pipe, &c.settings.node, t);
        }
        for ((key, tpm), n) in &batch.tokens {
            evalsha(
                &mut pipe,
                &scripts::SPEND_TOKENS,
                &[scripts::rates_key(key)],
            )
            .arg(*tpm)
            .arg(*n);
        }
        for ((kind, name), members) in &batch.ended {
            pipe.cmd("ZREM")
                .arg(scripts::leases_key(*kind, name))
                .arg(members);
            pipe.cmd("HDEL")
                .arg(scripts::held_key(*kind, name))
                .arg(members);
        }
        for event in &batch.events {
            pipe.cmd("PUBLISH").arg(scripts::EVENTS).arg(event);
        }
        let touched: Vec<(Kind, String)> = batch.totals.into_keys().collect();
        let sent = match self.conn().filter(|_| c.is_up()) {
            Some(mut conn) => {
                let started = Instant::now();
                let q = pipe.query_async::<()>(&mut conn);
                let ok = matches!(
                    tokio::time::timeout(self.batch_timeout(), q).await,
                    Ok(Ok(()))
                );
                c.metrics.roundtrip.observe(started.elapsed().as_secs_f64());
                ok
            }
            None => false,
        };
        if !sent && !touched.is_empty() {
            c.set_up(false);
            let pending = c.journal.add(touched.iter().map(|(k, n)| (*k, n.as_str())));
            c.metrics.pending.set(pending as i64);
        }
    }

    /// Publishes a managed key changed on this node at once. Missed (Redis
    /// down, or too many changes at once) it is published with all the
    /// others when Redis is back.
    async fn key_changed(&self, name: Result<String, broadcast::error::RecvError>) {
        let c = &self.cluster;
        let (Ok(name), Some(registry)) = (name, c.keys.get()) else {
            // Lagged: republish everything on the next recovery.
            c.set_up(false);
            return;
        };
        let (Some(record), Some(mut conn)) =
            (registry.get(&name), self.conn().filter(|_| c.is_up()))
        else {
            return;
        };
        let mut pipe = redis::pipe();
        super::keys::put(&mut pipe, &record);
        let sent = pipe.query_async::<()>(&mut conn);
        if !matches!(
            tokio::time::timeout(self.batch_timeout(), sent).await,
            Ok(Ok(()))
        ) {
            c.set_up(false);
        }
    }

    /// Publishes the totals of the keys touched since the last round (and
    /// `wanted`), and renews their grants, in one pipeline. While Redis is
    /// away the accounts are journaled instead.
    pub(super) async fn grant_round(&self, wanted: Vec<String>) {
        let c = &self.cluster;
        let mut names = std::mem::take(&mut *c.touched.lock().unwrap_or_else(|e| e.into_inner()));
        names.extend(wanted);
        if names.is_empty() {
            return;
        }
        let Some(source) = c.source.get() else { return };
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        names.dedup();
        let generation = c.generation();
        let round = source.grant_round(&names, generation);
        if round.is_empty() {
            return;
        }
        let conn = self.conn().filter(|_| c.is_up());
        let answer = match conn {
            Some(mut conn) => {
                let mut pipe = redis::pipe();
                for t in &round.totals {
                    raise(&mut pipe, &c.settings.node, t);
                    pipe.ignore();
                }
                for (key, tpm, n) in &round.tokens {
                    evalsha(
                        &mut pipe,
                        &scripts::SPEND_TOKENS,
                        &[scripts::rates_key(key)],
                    )
                    .arg(*tpm)
                    .arg(*n)
                    .ignore();
                }
                for ask in &round.asks {
                    grants::grant(&mut pipe, &c.settings.node, c.settings.lease, ask);
                }
                let started = Instant::now();
                let q = pipe.query_async::<Vec<(i64, i64, i64, i64, i64)>>(&mut conn);
                let answer = tokio::time::timeout(self.batch_timeout(), q).await;
                c.metrics.roundtrip.observe(started.elapsed().as_secs_f64());
                match answer {
                    Ok(Ok(v)) if v.len() == round.asks.len() => Some(v),
                    _ => None,
                }
            }
            None => None,
        };
        let granted: Option<Vec<Granted>> = answer.map(|v| {
            v.into_iter()
                .map(|(budget, slots, tokens, debt, spent)| Granted {
                    budget,
                    slots: slots.clamp(0, i64::from(u32::MAX)) as u32,
                    tokens: tokens.clamp(0, i64::from(u32::MAX)) as u32,
                    tpm_debt_us: debt.max(0) as u64,
                    spent,
                })
                .collect()
        });
        if granted.is_none() {
            c.set_up(false);
            let accounts = round.totals.iter().map(|t| (t.kind, t.name.as_str()));
            let pending = c.journal.add(accounts);
            c.metrics.pending.set(pending as i64);
        }
        source.apply_grants(&round, granted.as_deref(), generation);
    }

    /// Moves the running requests' leases on, in one script call.
    async fn renew(&self, conn: &mut ConnectionManager) {
        let c = &self.cluster;
        let running: Vec<(u64, super::LeaseAccounts)> = c
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        if running.is_empty() {
            return;
        }
        let mut inv = scripts::RENEW.prepare_invoke();
        let mut ids = Vec::new();
        for (id, a) in &running {
            let owners = std::iter::once((Kind::Key, a.key.as_str()))
                .chain(a.user.as_deref().map(|u| (Kind::User, u)));
            for (kind, name) in owners {
                inv.key(scripts::leases_key(kind, name))
                    .key(scripts::held_key(kind, name));
                ids.push(c.lease_id_text(*id));
            }
        }
        inv.arg(c.settings.lease.as_millis() as u64);
        for id in ids {
            inv.arg(id);
        }
        let call = inv.invoke_async::<()>(conn);
        if !matches!(
            tokio::time::timeout(self.batch_timeout(), call).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("cluster: could not renew {} leases", running.len());
        }
    }
}

/// A batch of queued work, merged: publications are absolute totals, so
/// only the highest of an account's counts; tokens of one key add up;
/// ended leases of one account go in one `ZREM` and one `HDEL`.
#[derive(Default)]
struct Batch {
    totals: BTreeMap<(Kind, String), OwnTotals>,
    tokens: BTreeMap<(String, u64), u64>,
    ended: BTreeMap<(Kind, String), Vec<String>>,
    events: Vec<String>,
}

impl Batch {
    fn of(ops: Vec<Op>, lease_id: impl Fn(u64) -> String) -> Batch {
        let mut b = Batch::default();
        for op in ops {
            match op {
                Op::Settle {
                    lease,
                    totals,
                    tokens,
                } => {
                    for t in totals {
                        b.total(t);
                    }
                    if let Some((key, tpm, n)) = tokens {
                        *b.tokens.entry((key, tpm)).or_default() += n;
                    }
                    if let Some((id, accounts)) = lease {
                        let member = lease_id(id);
                        let owners = std::iter::once((Kind::Key, accounts.key))
                            .chain(accounts.user.map(|u| (Kind::User, u)));
                        for owner in owners {
                            b.ended.entry(owner).or_default().push(member.clone());
                        }
                    }
                }
                Op::Cooldown(event) => b.events.push(event),
                Op::Want(_) => {}
            }
        }
        b
    }

    /// Keeps the highest total and the highest count of each day.
    fn total(&mut self, t: OwnTotals) {
        let held = self
            .totals
            .entry((t.kind, t.name.clone()))
            .or_insert_with(|| OwnTotals {
                days: Vec::new(),
                ..t.clone()
            });
        held.total = held.total.max(t.total);
        for (day, n) in t.days {
            match held.days.iter_mut().find(|(d, _)| *d == day) {
                Some((_, held_n)) => *held_n = (*held_n).max(n),
                None => held.days.push((day, n)),
            }
        }
    }
}

/// Takes the keys whose grants are wanted at once out of a batch of ops.
fn take_wanted(ops: &mut Vec<Op>) -> Vec<String> {
    let mut wanted = Vec::new();
    ops.retain_mut(|op| match op {
        Op::Want(name) => {
            wanted.push(std::mem::take(name));
            false
        }
        _ => true,
    });
    wanted
}

/// The client of `redis_url`; with `ca_file`, trusting that CA (PEM)
/// instead of the OS store for `rediss://`.
fn redis_client(settings: &crate::config::ClusterSettings) -> redis::RedisResult<Client> {
    let Some(ca_file) = &settings.ca_file else {
        return Client::open(settings.redis_url.as_str());
    };
    let pem = std::fs::read(ca_file).map_err(redis::RedisError::from)?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(settings.redis_url.as_str(), certs)
}

/// The next local managed-key change; never, without managed keys.
async fn next_change(
    changes: &mut Option<broadcast::Receiver<String>>,
) -> Result<String, broadcast::error::RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn connect(client: Client, timeout: Duration) -> Option<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(timeout.max(Duration::from_millis(500)))
        .set_response_timeout(timeout.max(Duration::from_millis(500)) * 4)
        .set_number_of_retries(2)
        .set_max_delay(1_000);
    let made = ConnectionManager::new_with_config(client, config);
    match tokio::time::timeout(Duration::from_secs(3), made).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => {
            tracing::warn!("cluster: cannot connect to Redis: {:?}", e.kind());
            None
        }
        Err(_) => {
            tracing::warn!("cluster: Redis did not accept a connection in time");
            None
        }
    }
}

/// Other nodes' events (cooldowns), on a pub/sub connection of its own,
/// reconnected with backoff for as long as the process runs.
async fn listen(cluster: Arc<Cluster>, client: Client) {
    let mut backoff = TICK;
    loop {
        let connected =
            tokio::time::timeout(Duration::from_secs(3), client.get_async_pubsub()).await;
        if let Ok(Ok(mut pubsub)) = connected {
            if pubsub.subscribe(scripts::EVENTS).await.is_ok() {
                backoff = TICK;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(text) = msg.get_payload::<String>() {
                        on_event(&cluster, &text);
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn on_event(cluster: &Cluster, text: &str) {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let node = event["node"].as_str().unwrap_or("");
    if node == cluster.settings.node || event["type"] != "cooldown" {
        return;
    }
    let (Some(channel), Some(left_ms)) = (event["channel"].as_str(), event["left_ms"].as_u64())
    else {
        return;
    };
    let failures = event["failures"]
        .as_u64()
        .unwrap_or(1)
        .min(u64::from(u32::MAX)) as u32;
    let reason = format!("{node}: {}", event["reason"].as_str().unwrap_or("failing"));
    if let Some(sink) = cluster.on_cooldown.get() {
        sink(channel, left_ms, failures, reason);
    }
}

/// Node name -> admin URL of every registered node.
pub(super) async fn registered_nodes(
    mut conn: ConnectionManager,
    timeout: Duration,
) -> Option<Vec<(String, String)>> {
    let work = async {
        let mut names: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("tg:node:*")
                .arg("COUNT")
                .arg(200)
                .query_async(&mut conn)
                .await?;
            names.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let urls: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&names)
            .query_async(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>(
            names
                .into_iter()
                .zip(urls)
                .filter_map(|(k, u)| Some((k.trim_start_matches("tg:node:").to_string(), u?)))
                .collect(),
        )
    };
    tokio::time::timeout(timeout, work).await.ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::LeaseAccounts;

    #[test]
    fn a_batch_keeps_the_highest_totals_and_merges_tokens_and_leases() {
        let settle = |total: i64, day_total: i64, id: u64| Op::Settle {
            lease: Some((
                id,
                LeaseAccounts {
                    key: "k".into(),
                    user: Some("u".into()),
                },
            )),
            totals: vec![OwnTotals {
                kind: Kind::Key,
                name: "k".into(),
                total,
                days: vec![(7, day_total)],
            }],
            tokens: Some(("k".into(), 100, 30)),
        };
        let ops = vec![
            settle(200, 20, 1),
            settle(100, 10, 2),
            Op::Cooldown("e".into()),
        ];
        let b = Batch::of(ops, |id| format!("n:{id}"));
        let t = &b.totals[&(Kind::Key, "k".to_string())];
        assert_eq!((t.total, t.days.clone()), (200, vec![(7, 20)]));
        assert_eq!(b.tokens[&("k".to_string(), 100)], 60);
        assert_eq!(b.ended[&(Kind::Key, "k".to_string())], ["n:1", "n:2"]);
        assert_eq!(b.ended[&(Kind::User, "u".to_string())], ["n:1", "n:2"]);
        assert_eq!(b.events, ["e"]);
    }
}
