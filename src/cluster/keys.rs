//! Managed keys across nodes (SPEC §9, §11): a key created, changed or
//! revoked on one node is in force on every node within a second.
//!
//! Each node writes its registry's changes to one Redis hash (newest
//! `updated_ms` wins, in a script) and bumps a version counter; every node
//! reads the counter on each worker tick (250 ms) and, when it moved,
//! applies the hash to its own registry (`Registry::upsert` keeps the
//! newer record and is not echoed back). A revocation is a record too
//! (`revoked`), so it travels the same way. Each node's sled keeps its
//! registry, so an emptied Redis is refilled by the nodes' re-publishing.

use redis::aio::ConnectionManager;
use redis::Pipeline;

use super::scripts;
use crate::keys::registry::{KeyRecord, Registry};

/// Appends the publication of one record to a pipeline.
pub(super) fn put(pipe: &mut Pipeline, record: &KeyRecord) {
    let Ok(json) = serde_json::to_string(record) else {
        return;
    };
    pipe.cmd("EVALSHA")
        .arg(scripts::KEY_PUT.get_hash())
        .arg(3)
        .arg(scripts::KEYS)
        .arg(scripts::KEYS_AT)
        .arg(scripts::KEYS_VERSION)
        .arg(&record.name)
        .arg(record.updated_ms)
        .arg(json);
}

/// Every record of this node's registry, for a Redis that lost them.
pub(super) fn put_all(pipe: &mut Pipeline, registry: &Registry) -> usize {
    let records = registry.records();
    for r in &records {
        put(pipe, r);
    }
    records.len()
}

/// When the version moved since `seen`: reads every record and applies
/// the newer ones here. Returns the version now seen (unchanged on error).
pub(super) async fn pull(
    conn: &mut ConnectionManager,
    registry: &Registry,
    seen: i64,
) -> Option<i64> {
    let version: Option<i64> = redis::cmd("GET")
        .arg(scripts::KEYS_VERSION)
        .query_async(conn)
        .await
        .ok()?;
    let version = version.unwrap_or(0);
    if version == seen {
        return Some(seen);
    }
    let records: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(scripts::KEYS)
        .query_async(conn)
        .await
        .ok()?;
    let mut applied = 0;
    for (name, json) in records {
        match serde_json::from_str::<KeyRecord>(&json) {
            Ok(record) => match registry.upsert(record) {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(key = %name, "cluster: cannot store a managed key: {e:#}")
                }
            },
            Err(_) => {
                tracing::warn!(key = %name, "cluster: unreadable managed key record in Redis")
            }
        }
    }
    if applied > 0 {
        tracing::info!(
            applied,
            "cluster: managed keys changed on other nodes applied"
        );
    }
    Some(version)
}
