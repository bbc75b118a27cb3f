//! The TOML schema (docs/configuration.md), as serde structs.
//!
//! Every table denies unknown fields so that a typo is an error at load
//! instead of a silently ignored setting. Money and ratios are read as
//! exact decimals: the billing path never sees a binary float.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub routing: RoutingSection,
    // Shared with the parse cache, which keeps every item for the next
    // reload: handing one out is a reference count, not a deep copy.
    #[serde(default)]
    pub groups: Vec<Arc<GroupDef>>,
    #[serde(default)]
    pub models: Vec<Arc<ModelDef>>,
    #[serde(default)]
    pub channels: Vec<Arc<ChannelDef>>,
    #[serde(default)]
    pub users: Vec<Arc<UserDef>>,
    #[serde(default)]
    pub keys: Vec<Arc<KeyDef>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: String,
    pub admin_listen: String,
    pub admin_token: Option<String>,
    pub data_dir: String,
    pub max_body_bytes: usize,
    /// Longest request line (longer: 414) and longest header line (longer:
    /// 431) a client may send; a whole head is capped at 1 MiB.
    pub max_header_bytes: usize,
    /// TCP (+TLS) connect timeout to a channel, per attempt.
    pub upstream_connect_timeout_ms: u64,
    /// How long to wait for the upstream response head. Non-stream LLM
    /// answers only send their head when generation is done, so this is long.
    pub upstream_header_timeout_seconds: u64,
    /// Longest silence allowed between two reads of an upstream body
    /// (between SSE events of a stream).
    pub upstream_idle_timeout_seconds: u64,
    /// Worker threads of the client listener (0 = one per core).
    pub threads: usize,
    /// On SIGTERM: how long in-flight requests may still run.
    pub shutdown_grace_seconds: u64,
    /// Whole time a client has to send a request head, and how long a
    /// kept-alive connection may sit idle waiting for the next one
    /// (slowloris and idle connections cannot hold a socket longer).
    pub client_header_timeout_seconds: u64,
    /// Whole time a client has to send a request body.
    pub client_body_timeout_seconds: u64,
    /// Longest a single response write may wait for a client that stopped
    /// reading.
    pub client_write_timeout_seconds: u64,
    /// Most managed keys one user may hold (revoked ones do not count).
    pub max_keys_per_user: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:9191".into(),
            admin_token: None,
            data_dir: "/var/lib/tollgate".into(),
            max_body_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            upstream_connect_timeout_ms: 5_000,
            upstream_header_timeout_seconds: 600,
            upstream_idle_timeout_seconds: 300,
            threads: 0,
            shutdown_grace_seconds: 10,
            client_header_timeout_seconds: 30,
            client_body_timeout_seconds: 120,
            client_write_timeout_seconds: 300,
            max_keys_per_user: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub request_log_days: u32,
    pub flush_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            request_log_days: 7,
            flush_ms: 250,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub auto_groups: Vec<String>,
    pub max_attempts: u32,
    pub cooldown_seconds: u64,
    /// Upper bound of the exponential cooldown.
    pub max_cooldown_seconds: u64,
    /// Keep a session on the channel that served it last (prompt caches).
    pub affinity: bool,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            auto_groups: Vec::new(),
            max_attempts: 4,
            cooldown_seconds: 30,
            max_cooldown_seconds: 600,
            affinity: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    pub name: String,
    #[serde(deserialize_with = "decimal")]
    pub ratio: Decimal,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub connectivity: String,
    #[serde(default)]
    pub all_channels: bool,
    /// Any user may put this group on a key she creates.
    #[serde(default)]
    pub selectable: bool,
    /// Ratio by the `group` of the key's user, instead of `ratio`.
    #[serde(default, deserialize_with = "decimal_map")]
    pub user_ratios: BTreeMap<String, Decimal>,
}

/// Base prices in USD per 1M tokens, and optionally per request; and the
/// model's output limit for translated requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDef {
    pub name: String,
    #[serde(default, deserialize_with = "decimal")]
    pub input: Decimal,
    #[serde(default, deserialize_with = "decimal")]
    pub output: Decimal,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub cached_input: Option<Decimal>,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub cache_write: Option<Decimal>,
    /// Anthropic 1-hour cache writes (unset: `cache_write`).
    #[serde(default, deserialize_with = "opt_decimal")]
    pub cache_write_1h: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal")]
    pub per_request: Decimal,
    /// USD per image by size and quality: `{ "1024x1024" = 0.04,
    /// "1024x1536/high" = 0.25 }` (docs/configuration.md, "Media prices").
    #[serde(default, deserialize_with = "decimal_map")]
    pub per_image: BTreeMap<String, Decimal>,
    /// USD per 1M input image tokens (unset: `input`).
    #[serde(default, deserialize_with = "opt_decimal")]
    pub image_input: Option<Decimal>,
    /// USD per 1M output image tokens counted apart (Gemini; unset: `output`).
    #[serde(default, deserialize_with = "opt_decimal")]
    pub image_output: Option<Decimal>,
    /// USD per second of transcribed or translated audio.
    #[serde(default, deserialize_with = "opt_decimal")]
    pub per_second: Option<Decimal>,
    /// USD per 1,000 characters of speech input.
    #[serde(default, deserialize_with = "opt_decimal")]
    pub per_1k_chars: Option<Decimal>,
    /// The `max_tokens` sent to a channel that requires one (Anthropic
    /// Messages) when a client of another format gave none.
    pub max_output: Option<u64>,
    /// Other names clients may send for this model (`claude-opus-4-7[1m]`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Long-context prices, by the request's whole input.
    #[serde(default)]
    pub tiers: Vec<TierDef>,
}

/// Token prices for requests whose whole input (fresh, cached and
/// cache-write tokens) is above `above_input_tokens`; a price left out is
/// the model's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierDef {
    pub above_input_tokens: u64,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub input: Option<Decimal>,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub output: Option<Decimal>,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub cached_input: Option<Decimal>,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub cache_write: Option<Decimal>,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub cache_write_1h: Option<Decimal>,
}

/// How often a budget starts afresh: at 00:00 UTC every day, every Monday,
/// or on the 1st of every month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Week,
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    Openai,
    Azure,
    Anthropic,
    Gemini,
    Vertex,
    Bedrock,
    Mock,
}

impl ChannelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Openai => "openai",
            ChannelType::Azure => "azure",
            ChannelType::Anthropic => "anthropic",
            ChannelType::Gemini => "gemini",
            ChannelType::Vertex => "vertex",
            ChannelType::Bedrock => "bedrock",
            ChannelType::Mock => "mock",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ChannelType,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub api_key: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Client-facing model names served. Omitted: every priced model.
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Serve the client formats the type does not speak, by translation
    /// (docs/api.md, "Formats and channels").
    #[serde(default = "yes")]
    pub translate: bool,
    /// `openai`, `azure`: the host has `/v1/responses` (default true);
    /// false translates Responses requests to Chat Completions.
    pub responses: Option<bool>,
    /// `openai`: the host has `/v1/rerank` (Cohere/Jina-style, e.g. vLLM
    /// or a reranker behind an OpenAI-compatible server); default false.
    #[serde(default)]
    pub rerank: bool,
    /// Accept any upstream TLS certificate (self-signed test hosts only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `mock` only: pause before each streamed event, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// `azure`: the `api-version` query parameter (deployments style).
    pub api_version: Option<String>,
    /// `azure`: "deployments" (default) or "v1" (`/openai/v1/...`).
    pub azure_style: Option<String>,
    /// `bedrock`: AWS region, e.g. "us-east-1".
    pub region: Option<String>,
    /// `bedrock`: SigV4 credentials (or `api_key` for a Bedrock API key).
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_session_token: Option<String>,
    /// `vertex`: Google Cloud project (default: the service account's).
    pub project: Option<String>,
    /// `vertex`: region, e.g. "us-central1", or "global".
    pub location: Option<String>,
    /// `vertex`: service-account JSON, as a file path or inline text.
    pub credentials_file: Option<String>,
    pub credentials_json: Option<String>,
    /// `vertex`: where access tokens are minted (default: the service
    /// account's `token_uri`).
    pub token_uri: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDef {
    pub name: String,
    pub group: Option<String>,
    /// Groups she may put on her keys besides `group` and the selectable ones.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Hex SHA-256 of her user token (user API and console sign-in).
    pub token_sha256: Option<String>,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub budget_usd: Option<Decimal>,
    /// `budget_usd` per period instead of lifetime.
    pub budget_period: Option<BudgetPeriod>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDef {
    pub name: String,
    pub user: Option<String>,
    pub key_sha256: Option<String>,
    pub key: Option<String>,
    pub groups: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "opt_decimal")]
    pub budget_usd: Option<Decimal>,
    /// `budget_usd` per period instead of lifetime.
    pub budget_period: Option<BudgetPeriod>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub expires: Option<toml::value::Datetime>,
    #[serde(default)]
    pub allow_ips: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// A TOML number (or numeric string) as an exact decimal. Floats go through
/// their shortest round-trip text, so `0.3` becomes exactly 0.3.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

fn to_decimal<E: serde::de::Error>(n: Number) -> Result<Decimal, E> {
    let text = match n {
        Number::Int(i) => return Ok(Decimal::from(i)),
        Number::Float(f) if f.is_finite() => f.to_string(),
        Number::Float(f) => return Err(E::custom(format!("{f} is not a price or ratio"))),
        Number::Text(s) => s,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| E::custom(format!("`{text}` is not a decimal number")))
}

fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    to_decimal(Number::deserialize(d)?)
}

fn opt_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    Ok(Some(to_decimal(Number::deserialize(d)?)?))
}

fn decimal_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Decimal>, D::Error> {
    BTreeMap::<String, Number>::deserialize(d)?
        .into_iter()
        .map(|(name, n)| Ok((name, to_decimal(n)?)))
        .collect()
}

/// A date-time written bare (`2027-01-01T00:00:00Z`, a TOML datetime) or
/// quoted as in docs/configuration.md (`"2027-01-01T00:00:00Z"`).
fn opt_datetime<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<toml::value::Datetime>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum When {
        Bare(toml::value::Datetime),
        Quoted(String),
    }
    match When::deserialize(d)? {
        When::Bare(dt) => Ok(Some(dt)),
        When::Quoted(text) => text.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not a date-time like 2027-01-01T00:00:00Z"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expires(line: &str) -> Result<Option<toml::value::Datetime>, toml::de::Error> {
        let text = format!("name = \"k\"\nkey = \"s\"\n{line}");
        toml::from_str::<KeyDef>(&text).map(|k| k.expires)
    }

    #[test]
    fn expires_bare_or_quoted() {
        let bare = expires("expires = 2027-01-01T00:00:00Z").unwrap().unwrap();
        let quoted = expires("expires = \"2027-01-01T00:00:00Z\"")
            .unwrap()
            .unwrap();
        assert_eq!(bare, quoted);
        assert_eq!(quoted.to_string(), "2027-01-01T00:00:00Z");
        assert_eq!(expires("").unwrap(), None);
        let err = expires("expires = \"next year\"").unwrap_err().to_string();
        assert!(err.contains("`next year` is not a date-time"), "{err}");
    }
}
