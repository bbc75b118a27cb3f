//! Managed keys: the records (in the sled tree `managed_keys`, one JSON
//! document per key name) and their compiled form, the same [`Key`] a
//! `[[keys]]` item becomes.
//!
//! Every change bumps [`Registry::version`]; the compiled table is rebuilt
//! lazily by the first lookup that sees a new version or config generation,
//! so a change is in force on the next request, and a connection's key memo
//! (`crate::auth::KeyMemo`) compares the version with one atomic load.
//! Another module (cluster mode) applies changes made elsewhere with
//! [`Registry::upsert`] / [`Registry::remove`], lists them with
//! [`Registry::records`], and sees local changes through
//! [`Registry::subscribe`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use arc_swap::ArcSwap;
use foldhash::{HashMap, HashSet};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::{compile_managed_key, BudgetPeriod, Key, KeyDef, Snapshot, AUTO_GROUP};
use crate::store::Store;

const TREE: &str = "managed_keys";

/// The settings of a managed key: the fields of a `[[keys]]` item that a
/// user may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyFields {
    /// Ordered; none: the user's default group.
    pub groups: Option<Vec<String>>,
    /// Globs; none: every model.
    pub models: Option<Vec<String>>,
    pub budget_usd: Option<Decimal>,
    pub budget_period: Option<BudgetPeriod>,
    /// RFC 3339.
    pub expires: Option<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub allow_ips: Vec<String>,
}

/// A managed key as stored (and as cluster nodes exchange it). Only the
/// SHA-256 of the secret is kept, and its last 4 characters as a hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub user: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub hint: String,
    pub fields: KeyFields,
    pub disabled: bool,
    /// Revoked: kept so that its name, which labels its ledger rows, is
    /// never given to another key.
    #[serde(default)]
    pub revoked: bool,
    pub created_ms: u64,
    /// The record's version: newer wins.
    pub updated_ms: u64,
}

impl KeyRecord {
    /// The record as a `[[keys]]` item, for the config's compiler.
    pub fn key_def(&self) -> KeyDef {
        let f = &self.fields;
        KeyDef {
            name: self.name.clone(),
            user: Some(self.user.clone()),
            key_sha256: Some(self.sha256.clone()),
            key: None,
            groups: f.groups.clone(),
            models: f.models.clone(),
            budget_usd: f.budget_usd,
            budget_period: f.budget_period,
            expires: f.expires.as_deref().and_then(|e| e.parse().ok()),
            allow_ips: f.allow_ips.clone(),
            rpm: f.rpm,
            tpm: f.tpm,
            max_concurrent: f.max_concurrent,
        }
    }
}

/// The managed keys compiled against one config generation.
#[derive(Default)]
struct Compiled {
    generation: u64,
    version: u64,
    by_hash: HashMap<[u8; 32], Arc<Key>>,
}

pub struct Registry {
    store: Store,
    records: Mutex<BTreeMap<String, KeyRecord>>,
    /// Bumped (under the records lock) by every change.
    version: AtomicU64,
    compiled: ArcSwap<Compiled>,
    changes: broadcast::Sender<String>,
}

impl Registry {
    /// Loads the records from the store.
    pub fn open(store: &Store) -> Result<Registry> {
        let mut records = BTreeMap::new();
        for item in store.tree(TREE)?.iter() {
            let (_, value) = item?;
            let record: KeyRecord = serde_json::from_slice(&value)?;
            records.insert(record.name.clone(), record);
        }
        Ok(Registry {
            store: store.clone(),
            records: Mutex::new(records),
            version: AtomicU64::new(1),
            compiled: ArcSwap::from_pointee(Compiled::default()),
            changes: broadcast::channel(1024).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, KeyRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes with every change of a record.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The managed key with this secret hash, compiled against `snap`.
    pub fn lookup(&self, snap: &Snapshot, hash: &[u8; 32]) -> Option<Arc<Key>> {
        let compiled = self.compiled.load();
        if compiled.generation == snap.generation && compiled.version == self.version() {
            return compiled.by_hash.get(hash).cloned();
        }
        let (fresh, _) = self.compile(snap);
        let key = fresh.by_hash.get(hash).cloned();
        // A request still on an older config does not replace the table.
        if fresh.generation >= compiled.generation {
            self.compiled.store(Arc::new(fresh));
        }
        key
    }

    /// Compiles every record against `snap` now, for a reload, returning
    /// what the keys lost (warnings naming them).
    pub fn refresh(&self, snap: &Snapshot) -> Vec<String> {
        let (fresh, warnings) = self.compile(snap);
        self.compiled.store(Arc::new(fresh));
        warnings
    }

    fn compile(&self, snap: &Snapshot) -> (Compiled, Vec<String>) {
        let records = self.lock();
        let version = self.version();
        let toml_names: HashSet<&str> = snap
            .keys_by_hash
            .values()
            .map(|k| k.name.as_str())
            .collect();
        let mut by_hash = HashMap::default();
        let mut warnings = Vec::new();
        for r in records.values().filter(|r| !r.revoked) {
            match compile_record(r, snap, &toml_names, &mut warnings) {
                Some((hash, key)) if !r.disabled => {
                    by_hash.insert(hash, Arc::new(key));
                }
                _ => {}
            }
        }
        let compiled = Compiled {
            generation: snap.generation,
            version,
            by_hash,
        };
        (compiled, warnings)
    }

    /// Every record, revoked ones included, by name.
    pub fn records(&self) -> Vec<KeyRecord> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<KeyRecord> {
        self.lock().get(name).cloned()
    }

    /// Stores a record made here (created, changed, revoked) and tells the
    /// subscribers its name.
    pub fn save(&self, record: KeyRecord) -> Result<()> {
        let name = record.name.clone();
        self.put(record)?;
        let _ = self.changes.send(name);
        Ok(())
    }

    /// Creates `record` unless its name is taken (by any record, revoked
    /// ones included) or its user holds `max` live keys: checked and
    /// stored under one lock, so two concurrent creations cannot both pass.
    pub fn create(&self, record: KeyRecord, max: usize) -> Result<Result<(), CreateRefusal>> {
        let mut records = self.lock();
        if records.contains_key(&record.name) {
            return Ok(Err(CreateRefusal::NameTaken));
        }
        let held = records
            .values()
            .filter(|r| r.user == record.user && !r.revoked)
            .count();
        if held >= max {
            return Ok(Err(CreateRefusal::TooMany(held)));
        }
        self.write(&mut records, record.clone())?;
        drop(records);
        let _ = self.changes.send(record.name);
        Ok(Ok(()))
    }

    /// Applies a record created or changed elsewhere (cluster mode): kept
    /// if it is newer than the one held. Not echoed to subscribers.
    pub fn upsert(&self, record: KeyRecord) -> Result<bool> {
        let newer = self
            .lock()
            .get(&record.name)
            .is_none_or(|held| held.updated_ms < record.updated_ms);
        if newer {
            self.put(record)?;
        }
        Ok(newer)
    }

    /// Forgets a record entirely (cluster mode); revoking keeps it.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut records = self.lock();
        self.store.tree(TREE)?.remove(name.as_bytes())?;
        records.remove(name);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Names of the records changed here, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn put(&self, record: KeyRecord) -> Result<()> {
        let mut records = self.lock();
        self.write(&mut records, record)
    }

    /// Writes through to disk before the change is in force: a key shown
    /// to its user survives a crash right after.
    fn write(&self, records: &mut BTreeMap<String, KeyRecord>, record: KeyRecord) -> Result<()> {
        let tree = self.store.tree(TREE)?;
        tree.insert(record.name.as_bytes(), serde_json::to_vec(&record)?)?;
        tree.flush()?;
        records.insert(record.name.clone(), record);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// Why a key was not created.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateRefusal {
    NameTaken,
    /// The user's live keys.
    TooMany(usize),
}

/// A record compiled against the config, minus what the config no longer
/// has (groups, its user), with a warning naming the key for each loss;
/// `None` when nothing usable is left.
fn compile_record(
    r: &KeyRecord,
    snap: &Snapshot,
    toml_names: &HashSet<&str>,
    warnings: &mut Vec<String>,
) -> Option<([u8; 32], Key)> {
    let who = format!("managed key \"{}\" (user \"{}\")", r.name, r.user);
    if toml_names.contains(r.name.as_str()) {
        warnings.push(format!(
            "{who}: a [[keys]] item now has this name; the managed key stops working"
        ));
        return None;
    }
    if !snap.users.contains_key(&r.user) {
        warnings.push(format!(
            "{who}: its user is no longer in the config; the key stops working (kept in the \
             store, it works again if the user comes back)"
        ));
        return None;
    }
    let mut def = r.key_def();
    if let Some(groups) = &mut def.groups {
        let (kept, lost): (Vec<String>, Vec<String>) = groups.drain(..).partition(|g| {
            if g == AUTO_GROUP {
                !snap.auto_groups.is_empty()
            } else {
                snap.group_index(g).is_some()
            }
        });
        if !lost.is_empty() {
            warnings.push(format!(
                "{who}: groups {lost:?} are no longer in the config; the key stops routing to them"
            ));
        }
        if kept.is_empty() {
            warnings.push(format!(
                "{who}: none of its groups is left; the key stops working"
            ));
            return None;
        }
        *groups = kept;
    }
    for model in def.models.iter().flatten() {
        let literal = !model.contains(['*', '?', '[', '{']);
        if literal && !snap.prices.contains_key(model) && !snap.aliases.contains_key(model) {
            warnings.push(format!(
                "{who}: model \"{model}\" is no longer in the config; the key cannot call it"
            ));
        }
    }
    let hash = hex_hash(&r.sha256)?;
    match compile_managed_key(&def, snap) {
        Ok(key) => Some((hash, key)),
        Err((field, message)) => {
            warnings.push(format!("{who}: {field}: {message}; the key stops working"));
            None
        }
    }
}

fn hex_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}
