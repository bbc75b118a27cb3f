//! Validation and compilation of a parsed config into the [`Snapshot`]
//! that requests read, one table at a time. Each part checks its items,
//! points an error at the offending line, and builds its piece; the TOML
//! schema is in `schema.rs`.

mod channels;
mod cluster;
mod groups;
mod keys;
mod models;
mod routes;
mod server;
mod users;

pub use keys::{compile_managed_key, sha256_from_hex, FieldError};

use crate::config::{ConfigError, Loaded, RawConfig, Snapshot, Source};
use crate::health::HealthRegistry;

pub(super) fn compile(
    mut raw: RawConfig,
    src: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    health: &HealthRegistry,
    generation: u64,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    server::check(&mut raw.server, &raw.routing, src, env)?;
    let cluster = raw
        .cluster
        .as_ref()
        .map(|c| cluster::compile(c, &raw.server, src, env))
        .transpose()?;
    let groups = groups::compile(&raw.groups, src)?;
    let auto_groups = groups::auto_groups(&raw.routing.auto_groups, &groups, src)?;
    let models::Models {
        prices,
        max_output,
        aliases,
    } = models::compile(&raw.models, src)?;
    let channels = channels::compile(
        &raw.channels,
        &groups,
        &prices,
        src,
        env,
        health,
        &mut warnings,
    )?;
    let routes = routes::build(&groups, &channels, &raw.channels);
    let (users, users_by_token) = users::compile(&raw.users, &groups, src)?;
    let keys_by_hash = keys::compile(
        &raw.keys,
        &users,
        &groups,
        &auto_groups,
        src,
        env,
        &mut warnings,
    )?;
    users::check_tokens_are_not_keys(&raw.users, &users_by_token, &keys_by_hash, src)?;
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
            affinity: raw.routing.affinity,
            groups,
            prices,
            max_output,
            aliases,
            channels,
            routes,
            keys_by_hash,
            users,
            users_by_token,
            auto_groups,
            cluster,
        },
        warnings,
    })
}

/// The items of one `[[table]]` in a test's TOML text.
#[cfg(test)]
fn items<T: serde::de::DeserializeOwned>(table: &str, text: &str) -> Vec<std::sync::Arc<T>> {
    let mut doc: std::collections::BTreeMap<String, Vec<std::sync::Arc<T>>> =
        toml::from_str(text).unwrap();
    doc.remove(table).unwrap_or_default()
}
