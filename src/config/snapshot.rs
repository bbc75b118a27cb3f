//! The compiled configuration that requests read: one immutable snapshot
//! behind an `Arc`, loaded once per request with no lock, and replaced
//! whole by a reload. Built by [`super::compile`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use globset::GlobSet;
use ipnet::IpNet;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::{BudgetPeriod, ChannelType};
use crate::health::ChannelHealth;
use crate::providers::{self, Endpoint, OpenAiOp, Reach, Upstream};

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
    /// `[routing] affinity`.
    pub affinity: bool,
    pub groups: Vec<Group>,
    pub prices: BTreeMap<String, Price>,
    /// `[[models]] max_output`, for the models that set one.
    pub max_output: HashMap<String, u64>,
    /// `[[models]] aliases`: alias -> model.
    pub aliases: HashMap<String, String>,
    pub channels: Vec<Channel>,
    /// Per group index: model -> priority tiers, highest first.
    pub routes: Vec<HashMap<String, Vec<Tier>>>,
    pub keys_by_hash: HashMap<[u8; 32], Arc<Key>>,
    pub users: HashMap<String, User>,
    /// User names by the SHA-256 of their `token_sha256` user token.
    pub users_by_token: HashMap<[u8; 32], String>,
    /// `[routing] auto_groups` as group indexes, in order.
    pub auto_groups: Vec<usize>,
    /// `[cluster]`, checked; read once at start (a change needs a restart).
    pub cluster: Option<ClusterSettings>,
}

/// `[cluster]` as the node runs it (docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Expanded; may hold a password: never log it.
    pub redis_url: String,
    pub node: String,
    pub on_redis_error: super::OnRedisError,
    pub timeout: std::time::Duration,
    pub lease: std::time::Duration,
    pub admin_url: String,
    /// PEM CA file trusted for `rediss://` instead of the OS roots.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub ratio: Decimal,
    pub description: String,
    pub connectivity: String,
    pub all_channels: bool,
    /// Any user may put it on a key.
    pub selectable: bool,
    /// `user_ratios`: (user group, ratio), few, looked up by a scan.
    pub user_ratios: Vec<(String, Decimal)>,
}

impl Group {
    /// The ratio for a request of a user in `user_group` (none: a key
    /// without a user).
    pub fn ratio_for(&self, user_group: Option<&str>) -> Decimal {
        user_group
            .and_then(|ug| self.user_ratios.iter().find(|(g, _)| g == ug))
            .map_or(self.ratio, |(_, r)| *r)
    }
}

/// Base prices, USD per 1M tokens (per_request: USD per request), with
/// every fallback of an unset price already applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Price {
    pub input: Decimal,
    pub output: Decimal,
    pub cached_input: Decimal,
    pub cache_write: Decimal,
    pub cache_write_1h: Decimal,
    pub per_request: Decimal,
    /// Long-context tiers, by ascending threshold.
    pub tiers: Vec<PriceTier>,
    /// Prices of images, audio and speech (SPEC §13).
    pub media: MediaPrices,
}

/// Prices of the media endpoints. `None` is "not priced", which the
/// gateway tells from a deliberate 0: a media request to a model with no
/// price for it is refused, never served for free by accident
/// (`metering::cost::media_price`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPrices {
    /// USD per image by `"WxH/quality"` or `"WxH"` (or `"auto"`).
    pub per_image: BTreeMap<String, Decimal>,
    /// USD per 1M input image tokens (gpt-image-1 edits); the model's
    /// `input` price when unset.
    pub image_input: Decimal,
    /// USD per 1M output image tokens that the provider counts apart
    /// (Gemini); the model's `output` price when unset.
    pub image_output: Decimal,
    /// USD per second of transcribed audio.
    pub per_second: Option<Decimal>,
    /// USD per 1,000 characters of speech input.
    pub per_1k_chars: Option<Decimal>,
}

/// The token prices a request pays, USD per 1M tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenPrices {
    pub input: Decimal,
    pub output: Decimal,
    pub cached_input: Decimal,
    pub cache_write: Decimal,
    pub cache_write_1h: Decimal,
}

/// Prices for requests whose whole input is above `above_input_tokens`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTier {
    pub above_input_tokens: u64,
    pub prices: TokenPrices,
}

impl Price {
    /// The token prices below every tier.
    pub fn base(&self) -> TokenPrices {
        TokenPrices {
            input: self.input,
            output: self.output,
            cached_input: self.cached_input,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
        }
    }

    /// The token prices of a request of `whole_input` prompt tokens: the
    /// tier of the highest threshold it is strictly above, else the base.
    pub fn for_input(&self, whole_input: u64) -> TokenPrices {
        self.tiers
            .iter()
            .rev()
            .find(|t| whole_input > t.above_input_tokens)
            .map_or_else(|| self.base(), |t| t.prices)
    }
}

pub struct Channel {
    pub name: Arc<str>,
    /// The `type` as written; the provider with its settings is in `upstream`.
    pub kind: ChannelType,
    /// How to reach the channel; `None` while it is disabled (`enabled =
    /// false`, or a `${VAR}` it needs is unset).
    pub upstream: Option<Upstream>,
    pub models: Vec<String>,
    pub priority: i64,
    pub weight: u32,
    /// Serves other formats than its own by translation.
    pub translate: bool,
    /// An OpenAI-format host with `/v1/responses`.
    pub responses: bool,
    /// An OpenAI-compatible host with `/v1/rerank`.
    pub rerank: bool,
    pub health: Arc<ChannelHealth>,
    /// Delay before each event of an in-process (`mock`) answer.
    pub delay_ms: u64,
}

impl Channel {
    /// Configured and runnable (its `${VAR}`s are set).
    pub fn enabled(&self) -> bool {
        self.upstream.is_some()
    }

    /// Whether and how the channel serves `endpoint` for the client-facing
    /// `model` (a Vertex channel's format depends on the model it maps to).
    pub fn reach(&self, endpoint: Endpoint, model: &str) -> Option<Reach> {
        if endpoint == Endpoint::OpenAi(OpenAiOp::Rerank)
            && self.kind != ChannelType::Mock
            && !self.rerank
        {
            return None;
        }
        let upstream_model = self
            .upstream
            .as_ref()
            .map_or(model, |u| u.upstream_model(model));
        providers::reach(
            self.kind,
            self.translate,
            self.responses,
            endpoint,
            upstream_model,
        )
    }
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub priority: i64,
    /// (channel index, weight)
    pub channels: Vec<(usize, u32)>,
}

#[derive(Debug)]
pub struct Key {
    pub name: String,
    pub user: Option<String>,
    /// Ordered group indexes, `auto` expanded in place, duplicates dropped.
    pub groups: Vec<usize>,
    /// The key's groups as configured, for error messages.
    pub group_names: Vec<String>,
    pub models: Option<GlobSet>,
    /// The `models` globs as written, for listings.
    pub model_patterns: Vec<String>,
    pub expires_unix: Option<i64>,
    pub allow_ips: Vec<IpNet>,
    pub budget_usd: Option<Decimal>,
    pub budget_period: Option<BudgetPeriod>,
    /// The `group` of the key's user (`default` when she names none), for
    /// `[[groups]] user_ratios`; none for a key without a user.
    pub user_group: Option<String>,
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

#[derive(Debug)]
pub struct User {
    pub name: String,
    /// The group of her keys that name none (`default` when unset).
    pub group: Option<String>,
    /// `groups`: what she may pick besides `group` and the selectable ones.
    pub groups: Vec<String>,
    /// SHA-256 of her user token, if she has one.
    pub token_sha256: Option<[u8; 32]>,
    pub budget_usd: Option<Decimal>,
    pub budget_period: Option<BudgetPeriod>,
}

impl User {
    /// Her default group: `group`, else `default`.
    pub fn default_group(&self) -> &str {
        self.group.as_deref().unwrap_or(DEFAULT_GROUP)
    }
}

impl Snapshot {
    /// The groups `user` may put on a key, in order: her default group, her
    /// `groups`, then the selectable groups; each once, and only groups
    /// that exist (`auto` when `[routing] auto_groups` is set).
    pub fn pickable_groups<'a>(&'a self, user: &'a User) -> Vec<&'a str> {
        let selectable = self.groups.iter().filter(|g| g.selectable);
        let mut out: Vec<&str> = Vec::new();
        let names = std::iter::once(user.default_group())
            .chain(user.groups.iter().map(String::as_str))
            .chain(selectable.map(|g| g.name.as_str()));
        for name in names {
            let exists = if name == AUTO_GROUP {
                !self.auto_groups.is_empty()
            } else {
                self.group_index(name).is_some()
            };
            if exists && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// The model a client's name stands for (itself, or the model of an
    /// alias), and whether the name asks for the 1M-token context window:
    /// an alias ending in `[1m]`, as Claude Code writes `opus[1m]`.
    pub fn resolve_model<'a>(&'a self, requested: &'a str) -> (&'a str, bool) {
        match self.aliases.get(requested) {
            Some(model) => (model, requested.ends_with("[1m]")),
            None => (requested, false),
        }
    }

    /// The aliases of `model`, sorted.
    pub fn aliases_of(&self, model: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .aliases
            .iter()
            .filter(|(_, m)| *m == model)
            .map(|(alias, _)| alias.as_str())
            .collect();
        out.sort_unstable();
        out
    }

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

/// A successfully loaded configuration and the warnings worth logging.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
}
