//! Validation and compilation of a parsed config into the immutable routing
//! snapshot that requests read (one `Arc` load per request, no locks).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::{expand_vars, ChannelType, ConfigError, Loaded, RawConfig, Source};
use crate::routing::{ChannelHealth, HealthRegistry};

/// The group name that expands to `routing.auto_groups`.
pub const AUTO_GROUP: &str = "auto";
/// The group a key falls back to when neither it nor its user names one.
pub const DEFAULT_GROUP: &str = "default";

pub struct Snapshot {
    pub generation: u64,
    /// The config text this snapshot was built from (kept as last-good).
    pub source_text: String,
    pub server: super::ServerSection,
    pub store: super::StoreSection,
    pub max_attempts: u32,
    pub cooldown_seconds: u64,
    pub max_cooldown_seconds: u64,
    pub groups: Vec<Group>,
    pub prices: BTreeMap<String, Price>,
    pub channels: Vec<Channel>,
    /// Per group index: model -> priority tiers, highest first.
    pub routes: Vec<HashMap<String, Vec<Tier>>>,
    pub keys_by_hash: HashMap<[u8; 32], Arc<Key>>,
    pub users: HashMap<String, User>,
}

pub struct Group {
    pub name: String,
    pub ratio: Decimal,
    pub description: String,
    pub connectivity: String,
    pub all_channels: bool,
}

/// Base prices, USD per 1M tokens (per_request: USD per request).
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub input: Decimal,
    pub output: Decimal,
    pub cached_input: Decimal,
    pub cache_write: Decimal,
    pub per_request: Decimal,
}

pub struct Channel {
    pub name: Arc<str>,
    pub kind: ChannelType,
    /// Where requests go; `None` for the in-process `mock` type.
    pub upstream: Option<Upstream>,
    pub api_key: String,
    pub model_map: BTreeMap<String, String>,
    pub models: Vec<String>,
    pub priority: i64,
    pub weight: u32,
    /// Configured and runnable (its `${VAR}`s are set).
    pub enabled: bool,
    pub health: Arc<ChannelHealth>,
    pub delay_ms: u64,
    /// Type-specific settings (Azure, Bedrock, Vertex).
    pub native: crate::providers::Native,
}

impl Channel {
    /// The model name to send upstream for a client-facing name.
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_map.get(model).map_or(model, String::as_str)
    }
}

/// A parsed `base_url`.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header value: the host (an IPv6 address in brackets),
    /// with the port unless it is the scheme's.
    pub authority: String,
    /// Path prefix without a trailing slash ("" or "/api").
    pub base_path: String,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub priority: i64,
    /// (channel index, weight)
    pub channels: Vec<(usize, u32)>,
}

pub struct Key {
    pub name: String,
    pub user: Option<String>,
    /// Ordered group indexes, `auto` expanded in place, duplicates dropped.
    pub groups: Vec<usize>,
    /// The key's groups as configured, for error messages.
    pub group_names: Vec<String>,
    pub models: Option<GlobSet>,
    pub expires_unix: Option<i64>,
    pub allow_ips: Vec<IpNet>,
    pub budget_usd: Option<Decimal>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
}

impl Key {
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|g| g.is_match(model))
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow_ips.is_empty() || self.allow_ips.iter().any(|net| net.contains(&ip))
    }
}

pub struct User {
    pub name: String,
    pub budget_usd: Option<Decimal>,
}

impl Snapshot {
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// Models a key may call: served in one of its groups and allowed by it.
    pub fn models_for_key(&self, key: &Key) -> Vec<&str> {
        let mut out: Vec<&str> = key
            .groups
            .iter()
            .flat_map(|&g| self.routes[g].keys().map(String::as_str))
            .filter(|m| key.allows_model(m))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        out.sort_unstable();
        out
    }

    /// Models served by a group, sorted.
    pub fn models_of_group(&self, group: usize) -> Vec<&str> {
        let mut out: Vec<&str> = self.routes[group].keys().map(String::as_str).collect();
        out.sort_unstable();
        out
    }
}

pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A `key_sha256` value's 64 hex digits (either case) as bytes. By hand,
/// from a table of digit values and without a branch per digit:
/// `hex::decode_to_slice` took ~1,000 instructions a key, 8% of a reload
/// of 10,000 keys.
fn sha256_from_hex(text: &str) -> Option<[u8; 32]> {
    /// Each byte's value as a hex digit; 0xff where it is none.
    const DIGIT: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut i = 0;
        while i < 16 {
            table[b"0123456789abcdef"[i] as usize] = i as u8;
            table[b"0123456789ABCDEF"[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    let digits: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut bytes = [0u8; 32];
    let mut seen = 0;
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let (high, low) = (DIGIT[pair[0] as usize], DIGIT[pair[1] as usize]);
        seen |= high | low;
        *byte = (high << 4) | low;
    }
    // A digit's value fits in 4 bits; 0xff does not.
    (seen < 16).then_some(bytes)
}

pub(super) fn compile(
    mut raw: RawConfig,
    src: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    health: &HealthRegistry,
    generation: u64,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let at = |table: &str, i: usize| src.line_of(table, Some(i));
    // The line of one field of the i-th item (its header if not written).
    let field = |table: &str, i: usize, name: &str| src.line_of_field(table, Some(i), name);

    // [server]
    for (field, value) in [
        ("listen", &raw.server.listen),
        ("admin_listen", &raw.server.admin_listen),
    ] {
        value.parse::<SocketAddr>().map_err(|_| {
            src.error(
                src.line_of_field("server", None, field),
                format!("[server] {field} = \"{value}\" is not an address like 127.0.0.1:8080"),
            )
        })?;
    }
    raw.server.admin_token = match raw.server.admin_token.take() {
        Some(t) => expand_vars(&t, env).ok().filter(|t| !t.is_empty()),
        None => None,
    };
    let admin: SocketAddr = raw.server.admin_listen.parse().expect("checked above");
    if !admin.ip().is_loopback() && raw.server.admin_token.is_none() {
        return Err(src.error(
            src.line_of_field("server", None, "admin_listen"),
            format!(
                "[server] admin_listen = \"{admin}\" is not a loopback address: set admin_token"
            ),
        ));
    }
    if raw.server.max_body_bytes == 0 {
        return Err(src.error(
            src.line_of_field("server", None, "max_body_bytes"),
            "[server] max_body_bytes must be > 0",
        ));
    }
    if raw.routing.max_attempts == 0 {
        return Err(src.error(
            src.line_of_field("routing", None, "max_attempts"),
            "[routing] max_attempts must be >= 1",
        ));
    }

    // [[groups]]
    let mut groups = Vec::new();
    for (i, g) in raw.groups.iter().enumerate() {
        let item = format!("[[groups]] \"{}\"", g.name);
        if g.name.is_empty() || g.name == AUTO_GROUP {
            return Err(src.error(
                field("groups", i, "name"),
                format!("{item}: reserved or empty name"),
            ));
        }
        if groups.iter().any(|x: &Group| x.name == g.name) {
            return Err(src.error(
                field("groups", i, "name"),
                format!("{item}: duplicate group name"),
            ));
        }
        if g.ratio <= Decimal::ZERO {
            return Err(src.error(
                field("groups", i, "ratio"),
                format!("{item}: ratio must be > 0, got {}", g.ratio),
            ));
        }
        groups.push(Group {
            name: g.name.clone(),
            ratio: g.ratio.normalize(),
            description: g.description.clone(),
            connectivity: g.connectivity.clone(),
            all_channels: g.all_channels,
        });
    }
    let group_idx = |name: &str| groups.iter().position(|g| g.name == name);
    let mut auto_groups = Vec::new();
    for name in &raw.routing.auto_groups {
        let idx = group_idx(name).ok_or_else(|| {
            src.error(
                src.line_of_field("routing", None, "auto_groups"),
                format!("[routing] auto_groups names unknown group \"{name}\""),
            )
        })?;
        auto_groups.push(idx);
    }

    // [[models]]
    let mut prices = BTreeMap::new();
    for (i, m) in raw.models.iter().enumerate() {
        let item = format!("[[models]] \"{}\"", m.name);
        let values = [
            m.input,
            m.output,
            m.cached_input.unwrap_or_default(),
            m.cache_write.unwrap_or_default(),
            m.per_request,
        ];
        if values.iter().any(|v| v.is_sign_negative()) {
            return Err(src.error(at("models", i), format!("{item}: prices must be >= 0")));
        }
        let price = Price {
            input: m.input,
            output: m.output,
            // Unset cache prices fall back to the input price: never free.
            cached_input: m.cached_input.unwrap_or(m.input),
            cache_write: m.cache_write.unwrap_or(m.input),
            per_request: m.per_request,
        };
        if prices.insert(m.name.clone(), price).is_some() {
            return Err(src.error(
                field("models", i, "name"),
                format!("{item}: duplicate model name"),
            ));
        }
    }

    // [[channels]]
    let mut channels: Vec<Channel> = Vec::with_capacity(raw.channels.len());
    // A set, not a scan of the channels so far: thousands of channels.
    let mut channel_names = HashSet::with_capacity(raw.channels.len());
    for (i, c) in raw.channels.iter().enumerate() {
        let item = format!("[[channels]] \"{}\"", c.name);
        if c.name.is_empty() {
            // The line is found on error only: finding it scans the whole text.
            return Err(src.error(at("channels", i), "[[channels]]: name must not be empty"));
        }
        if !channel_names.insert(c.name.as_str()) {
            return Err(src.error(
                field("channels", i, "name"),
                format!("{item}: duplicate channel name"),
            ));
        }
        for g in &c.groups {
            if group_idx(g).is_none() {
                return Err(src.error(
                    field("channels", i, "groups"),
                    format!("{item}: unknown group \"{g}\""),
                ));
            }
        }
        if c.weight == 0 {
            return Err(src.error(
                field("channels", i, "weight"),
                format!("{item}: weight must be > 0"),
            ));
        }
        let mut models: Vec<String> = match &c.models {
            Some(list) => list.clone(),
            None => prices.keys().cloned().collect(),
        };
        // A repeated name would enter the channel twice in its tier and
        // double its weight there.
        if let Some(m) = models
            .iter()
            .enumerate()
            .find_map(|(n, m)| models[..n].contains(m).then_some(m))
        {
            return Err(src.error(
                field("channels", i, "models"),
                format!("{item}: model \"{m}\" is listed twice"),
            ));
        }
        for client_name in c.model_map.keys() {
            if !models.contains(client_name) {
                models.push(client_name.clone());
            }
        }
        for m in &models {
            if !prices.contains_key(m) {
                let from = if c.model_map.contains_key(m) {
                    "model_map"
                } else {
                    "models"
                };
                return Err(src.error(
                    field("channels", i, from),
                    format!("{item}: serves model \"{m}\" which has no price in [[models]]"),
                ));
            }
        }
        let mut enabled = c.enabled;
        let mut expanded = |field: &str, value: &str| match expand_vars(value, env) {
            Ok(v) => v,
            Err(var) => {
                if enabled {
                    warnings.push(format!(
                        "{item}: ${{{var}}} in {field} is not set; channel disabled"
                    ));
                }
                enabled = false;
                String::new()
            }
        };
        let api_key = expanded("api_key", &c.api_key);
        // An unset `${VAR}` disables the channel (warned by `expanded`): its
        // type-specific settings are then left unchecked.
        let mut set_or_none = |f: &str, v: &str| {
            let set = expand_vars(v, env).is_ok();
            let value = expanded(f, v);
            set.then_some(value)
        };
        let native = crate::providers::native_settings(c, &mut set_or_none).map_err(|e| {
            src.error(
                field("channels", i, e.field),
                format!("{item}: {}", e.message),
            )
        })?;
        let mut base_url = expanded("base_url", &c.base_url);
        if c.base_url.is_empty() {
            base_url = crate::providers::default_base_url(c.kind, &native).unwrap_or_default();
        }
        let upstream = match c.kind {
            ChannelType::Mock => None,
            _ if !enabled => None,
            _ => Some(
                parse_base_url(&base_url, c.insecure_skip_verify).map_err(|why| {
                    src.error(
                        field("channels", i, "base_url"),
                        format!("{item}: base_url \"{base_url}\" {why}"),
                    )
                })?,
            ),
        };
        channels.push(Channel {
            name: Arc::from(c.name.as_str()),
            kind: c.kind,
            upstream,
            api_key,
            model_map: c.model_map.clone(),
            models,
            priority: c.priority,
            weight: c.weight,
            enabled,
            health: health.get(&health_key(c)),
            delay_ms: c.delay_ms,
            native,
        });
    }

    // Routing tables: group -> model -> tiers.
    let mut routes: Vec<HashMap<String, Vec<Tier>>> = vec![HashMap::new(); groups.len()];
    for (gi, group) in groups.iter().enumerate() {
        for (ci, ch) in channels.iter().enumerate() {
            let member = group.all_channels || raw.channels[ci].groups.contains(&group.name);
            if !ch.enabled || !member {
                continue;
            }
            for m in &ch.models {
                let tiers = routes[gi].entry(m.clone()).or_default();
                match tiers.iter_mut().find(|t| t.priority == ch.priority) {
                    Some(t) => t.channels.push((ci, ch.weight)),
                    None => tiers.push(Tier {
                        priority: ch.priority,
                        channels: vec![(ci, ch.weight)],
                    }),
                }
            }
        }
        for tiers in routes[gi].values_mut() {
            tiers.sort_by_key(|t| std::cmp::Reverse(t.priority));
        }
    }

    // [[users]]
    let mut users = HashMap::new();
    for (i, u) in raw.users.iter().enumerate() {
        let item = format!("[[users]] \"{}\"", u.name);
        if let Some(g) = &u.group {
            if g != AUTO_GROUP && group_idx(g).is_none() {
                return Err(src.error(
                    field("users", i, "group"),
                    format!("{item}: unknown group \"{g}\""),
                ));
            }
        }
        check_budget(u.budget_usd)
            .map_err(|e| src.error(field("users", i, "budget_usd"), format!("{item}: {e}")))?;
        let user = User {
            name: u.name.clone(),
            budget_usd: u.budget_usd,
        };
        if users.insert(u.name.clone(), user).is_some() {
            return Err(src.error(
                field("users", i, "name"),
                format!("{item}: duplicate user name"),
            ));
        }
    }

    // [[keys]]
    // Sized up front and without per-key copies: a config may hold many
    // thousands of keys, and reload time is mostly spent here and in parsing.
    let mut keys_by_hash = HashMap::with_capacity(raw.keys.len());
    let mut key_names = HashSet::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.iter().enumerate() {
        // An error about one field of the key (its line, or the header).
        let err = |name: &str, msg: String| {
            src.error(
                field("keys", i, name),
                format!("[[keys]] \"{}\": {msg}", k.name),
            )
        };
        if !key_names.insert(k.name.as_str()) {
            return Err(err("name", "duplicate key name".into()));
        }
        let hash = match (&k.key_sha256, &k.key) {
            (Some(hex_hash), None) => sha256_from_hex(hex_hash.trim())
                .ok_or_else(|| err("key_sha256", "key_sha256 must be 64 hex characters".into()))?,
            (None, Some(plain)) => {
                let secret = expand_vars(plain, env)
                    .map_err(|var| err("key", format!("${{{var}}} in key is not set")))?;
                warnings.push(format!(
                    "[[keys]] \"{}\": plaintext `key`; prefer key_sha256 (`tollgate key new`)",
                    k.name
                ));
                sha256(&secret)
            }
            _ => {
                return Err(err(
                    "key_sha256",
                    "set exactly one of key_sha256 or key".into(),
                ))
            }
        };
        let user = match &k.user {
            Some(u) => Some(
                users
                    .get(u)
                    .ok_or_else(|| err("user", format!("unknown user \"{u}\"")))?
                    .name
                    .clone(),
            ),
            None => None,
        };
        let group_names: Vec<String> = match (&k.groups, &k.user) {
            (Some(gs), _) => gs.clone(),
            (None, Some(u)) => vec![raw
                .users
                .iter()
                .find(|x| &x.name == u)
                .and_then(|x| x.group.clone())
                .unwrap_or_else(|| DEFAULT_GROUP.to_string())],
            (None, None) => vec![DEFAULT_GROUP.to_string()],
        };
        if group_names.is_empty() {
            return Err(err("groups", "groups must not be empty".into()));
        }
        let mut key_groups = Vec::new();
        for name in &group_names {
            let expanded = if name == AUTO_GROUP {
                if auto_groups.is_empty() {
                    return Err(err(
                        "groups",
                        "uses group \"auto\" but [routing] auto_groups is empty".into(),
                    ));
                }
                auto_groups.clone()
            } else {
                vec![group_idx(name)
                    .ok_or_else(|| err("groups", format!("unknown group \"{name}\"")))?]
            };
            for g in expanded {
                if !key_groups.contains(&g) {
                    key_groups.push(g);
                }
            }
        }
        let models = match &k.models {
            Some(patterns) => {
                let mut b = GlobSetBuilder::new();
                for p in patterns {
                    b.add(
                        Glob::new(p)
                            .map_err(|e| err("models", format!("models glob \"{p}\": {e}")))?,
                    );
                }
                Some(
                    b.build()
                        .map_err(|e| err("models", format!("models: {e}")))?,
                )
            }
            None => None,
        };
        let expires_unix = match &k.expires {
            Some(dt) => Some(
                chrono::DateTime::parse_from_rfc3339(&dt.to_string())
                    .map_err(|_| {
                        err(
                            "expires",
                            format!("expires = {dt} needs a full RFC 3339 date-time"),
                        )
                    })?
                    .timestamp(),
            ),
            None => None,
        };
        let mut allow_ips = Vec::new();
        for cidr in &k.allow_ips {
            let net = cidr
                .parse::<IpNet>()
                .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    err(
                        "allow_ips",
                        format!("allow_ips entry \"{cidr}\" is not a CIDR"),
                    )
                })?;
            allow_ips.push(net);
        }
        check_budget(k.budget_usd).map_err(|e| err("budget_usd", e))?;
        if k.rpm == Some(0) || k.tpm == Some(0) || k.max_concurrent == Some(0) {
            let zero = if k.rpm == Some(0) {
                "rpm"
            } else if k.tpm == Some(0) {
                "tpm"
            } else {
                "max_concurrent"
            };
            return Err(err(
                zero,
                "rpm, tpm and max_concurrent must be > 0 when set".into(),
            ));
        }
        let key = Key {
            name: k.name.clone(),
            user,
            groups: key_groups,
            group_names,
            models,
            expires_unix,
            allow_ips,
            budget_usd: k.budget_usd,
            rpm: k.rpm,
            tpm: k.tpm,
            max_concurrent: k.max_concurrent,
        };
        if keys_by_hash.insert(hash, Arc::new(key)).is_some() {
            let secret_field = if k.key.is_some() { "key" } else { "key_sha256" };
            return Err(err(
                secret_field,
                "the same secret is used by another key".into(),
            ));
        }
    }

    Ok(Loaded {
        snapshot: Snapshot {
            generation,
            // Set by `load_text`, which owns the text.
            source_text: String::new(),
            server: raw.server,
            store: raw.store,
            max_attempts: raw.routing.max_attempts,
            cooldown_seconds: raw.routing.cooldown_seconds,
            max_cooldown_seconds: raw.routing.max_cooldown_seconds.max(1),
            groups,
            prices,
            channels,
            routes,
            keys_by_hash,
            users,
        },
        warnings,
    })
}

/// Health is kept per channel name and endpoint: a reload that changes
/// where or with which credentials a channel connects starts it afresh (a
/// fixed key or URL takes effect at once instead of after its cooldown),
/// while routing-only edits (groups, models, priority, ...) keep it.
fn health_key(c: &super::ChannelDef) -> String {
    // Every field is named, so that a new one has to be sorted in here.
    let super::ChannelDef {
        name,
        kind,
        base_url,
        api_key,
        insecure_skip_verify,
        api_version,
        azure_style,
        region,
        aws_access_key_id,
        aws_secret_access_key,
        aws_session_token,
        project,
        location,
        credentials_file,
        credentials_json,
        token_uri,
        groups: _,
        models: _,
        model_map: _,
        priority: _,
        weight: _,
        enabled: _,
        delay_ms: _,
    } = c;
    // Hashed: the key text must not hold the channel's credentials. Each
    // field is length-prefixed, so different endpoints never hash the
    // same bytes.
    let mut endpoint = Sha256::new();
    let mut field = |value: Option<&str>| match value {
        Some(v) => {
            endpoint.update((v.len() as u64 + 1).to_le_bytes());
            endpoint.update(v);
        }
        None => endpoint.update(0u64.to_le_bytes()),
    };
    field(Some(kind.as_str()));
    field(Some(base_url));
    field(Some(api_key));
    field(insecure_skip_verify.then_some("insecure"));
    for optional in [
        api_version,
        azure_style,
        region,
        aws_access_key_id,
        aws_secret_access_key,
        aws_session_token,
        project,
        location,
        credentials_file,
        credentials_json,
        token_uri,
    ] {
        field(optional.as_deref());
    }
    format!("{name}#{}", hex::encode(endpoint.finalize()))
}

fn check_budget(budget: Option<Decimal>) -> Result<(), String> {
    match budget {
        Some(b) if b.is_sign_negative() => Err(format!("budget_usd must be >= 0, got {b}")),
        _ => Ok(()),
    }
}

pub(crate) fn parse_base_url(
    url: &str,
    insecure_skip_verify: bool,
) -> Result<Upstream, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with http:// or https://"),
    };
    let host = uri.host().ok_or("has no host")?;
    if uri.query().is_some() {
        return Err("must not have a query string");
    }
    let default_port = if tls { 443 } else { 80 };
    let port = uri.port_u16().unwrap_or(default_port);
    Ok(Upstream {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        authority: if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        },
        base_path: uri.path().trim_end_matches('/').to_string(),
        insecure_skip_verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_read_from_hex_like_the_hex_crate_reads_them() {
        let secret = sha256("sk-x");
        let lower = hex::encode(secret);
        assert_eq!(sha256_from_hex(&lower), Some(secret));
        assert_eq!(sha256_from_hex(&lower.to_uppercase()), Some(secret));
        for bad in [
            &lower[1..],
            &format!("{lower}0"),
            &format!("g{}", &lower[1..]),
            "",
        ] {
            assert_eq!(sha256_from_hex(bad), None, "{bad}");
        }
        let mut all_digits = "0123456789abcdefABCDEF".repeat(3);
        all_digits.truncate(64);
        let mut expected = [0u8; 32];
        hex::decode_to_slice(&all_digits, &mut expected).unwrap();
        assert_eq!(sha256_from_hex(&all_digits), Some(expected));
        // Every ASCII byte, as a high and as a low digit.
        for b in 0u8..128 {
            for at in [0, 63] {
                let mut text = lower.clone().into_bytes();
                text[at] = b;
                let text = String::from_utf8(text).unwrap();
                let mut by_hex = [0u8; 32];
                let by_hex = hex::decode_to_slice(&text, &mut by_hex).map(|_| by_hex);
                assert_eq!(sha256_from_hex(&text), by_hex.ok(), "{text}");
            }
        }
    }

    #[test]
    fn health_follows_the_endpoint_not_the_routing() {
        let def = |extra: &str| -> super::super::ChannelDef {
            toml::from_str(&format!(
                "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://a\"\napi_key = \"k1\"\n{extra}"
            ))
            .unwrap()
        };
        let base = health_key(&def(""));
        assert_eq!(
            base,
            health_key(&def("priority = 5\nweight = 3\ngroups = [\"g\"]"))
        );
        assert_eq!(base, health_key(&def("models = [\"m\"]\nenabled = false")));
        assert!(base.starts_with("c#") && !base.contains("k1"));
        let other_key: super::super::ChannelDef = toml::from_str(
            "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://a\"\napi_key = \"k2\"",
        )
        .unwrap();
        assert_ne!(base, health_key(&other_key));
        let other_url: super::super::ChannelDef = toml::from_str(
            "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://b\"\napi_key = \"k1\"",
        )
        .unwrap();
        assert_ne!(base, health_key(&other_url));
        for endpoint_edit in [
            "insecure_skip_verify = true",
            "region = \"us-east-1\"",
            "credentials_json = \"{}\"",
            "token_uri = \"\"",
        ] {
            assert_ne!(base, health_key(&def(endpoint_edit)), "{endpoint_edit}");
        }
        let shifted: super::super::ChannelDef = toml::from_str(
            "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://ak\"\napi_key = \"1\"",
        )
        .unwrap();
        assert_ne!(base, health_key(&shifted), "text moved between fields");
    }

    #[test]
    fn base_url_parts() {
        let u = parse_base_url("https://openrouter.ai/api/", false).unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("openrouter.ai", 443, "/api")
        );
        assert_eq!(u.authority, "openrouter.ai");
        let u = parse_base_url("http://127.0.0.1:9000", false).unwrap();
        assert_eq!((u.port, u.base_path.as_str()), (9000, ""));
        assert_eq!(u.authority, "127.0.0.1:9000");
        let u = parse_base_url("http://[::1]:9000/v", false).unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:9000")
        );
        let u = parse_base_url("https://[::1]:443", false).unwrap();
        assert_eq!(u.authority, "[::1]");
        assert!(parse_base_url("ftp://x", false).is_err());
        assert!(parse_base_url("https://x/?a=1", false).is_err());
    }
}
