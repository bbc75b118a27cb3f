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
    /// Who chose its groups. Records stored before this field read as
    /// `user`: whether the admin made them cannot be told, and the user's
    /// permissions are the safe bound.
    #[serde(default)]
    pub groups_set_by: SetBy,
}

/// Who chose a managed key's groups: its user's routes only the groups she
/// may pick under the current config; the admin's are kept while they exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetBy {
    #[default]
    User,
    Admin,
}

/// A key's stored groups sorted by whether it routes them under a config.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GroupsInForce {
    pub kept: Vec<String>,
    /// No longer in the config.
    pub vanished: Vec<String>,
    /// In the config, but its user may no longer pick them (user-set only).
    pub not_pickable: Vec<String>,
}

impl GroupsInForce {
    /// Stored groups the key does not route now, in the key's order.
    pub fn inactive(&self, stored: &[String]) -> Vec<String> {
        stored
            .iter()
            .filter(|g| !self.kept.contains(g))
            .cloned()
            .collect()
    }
}

impl KeyRecord {
    /// Its stored groups (none: its user's default group, always hers)
    /// split by what `snap` lets it route: a group must exist, and on a key
    /// whose user chose the groups she must still be allowed to pick it.
    pub fn groups_in_force(&self, snap: &Snapshot) -> Option<GroupsInForce> {
        let groups = self.fields.groups.as_ref()?;
        let pickable = snap
            .users
            .get(&self.user)
            .map(|u| snap.pickable_groups(u))
            .unwrap_or_default();
        let mut out = GroupsInForce::default();
        for g in groups {
            let exists = if g == AUTO_GROUP {
                !snap.auto_groups.is_empty()
            } else {
                snap.group_index(g).is_some()
            };
            let list = if !exists {
                &mut out.vanished
            } else if self.groups_set_by == SetBy::User && !pickable.contains(&g.as_str()) {
                &mut out.not_pickable
            } else {
                &mut out.kept
            };
            list.push(g.clone());
        }
        Some(out)
    }

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
        self.compiled_for(snap).by_hash.get(hash).cloned()
    }

    /// The table for `snap` at the current version, compiled by the first
    /// caller that needs it; the others wait for it on the lock instead of
    /// each compiling every key again.
    fn compiled_for(&self, snap: &Snapshot) -> Arc<Compiled> {
        let records = self.lock();
        let compiled = self.compiled.load_full();
        if compiled.generation == snap.generation && compiled.version == self.version() {
            return compiled;
        }
        let (fresh, _) = compile(&records, self.version(), snap);
        let fresh = Arc::new(fresh);
        // A request still on an older config does not replace the table.
        if fresh.generation >= compiled.generation {
            self.compiled.store(Arc::clone(&fresh));
        }
        fresh
    }

    /// Compiles every record against `snap` now, for a reload, returning
    /// what the keys lost (warnings naming them).
    pub fn refresh(&self, snap: &Snapshot) -> Vec<String> {
        let records = self.lock();
        let (fresh, warnings) = compile(&records, self.version(), snap);
        self.compiled.store(Arc::new(fresh));
        warnings
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
    /// ones included) or its user is past a limit: checked and stored
    /// under one lock, so two concurrent creations cannot both pass.
    pub fn create(
        &self,
        record: KeyRecord,
        limits: CreateLimits,
    ) -> Result<Result<(), CreateRefusal>> {
        let mut records = self.lock();
        if records.contains_key(&record.name) {
            return Ok(Err(CreateRefusal::NameTaken));
        }
        let theirs = || records.values().filter(|r| r.user == record.user);
        let held = theirs().filter(|r| !r.revoked).count();
        if held >= limits.live {
            return Ok(Err(CreateRefusal::TooMany(held)));
        }
        if let Some(per_day) = limits.per_day {
            let since = record.created_ms.saturating_sub(DAY_MS);
            let mut recent: Vec<u64> = theirs()
                .map(|r| r.created_ms)
                .filter(|&t| t > since)
                .collect();
            if recent.len() >= per_day.max(1) {
                // Allowed again once all but `per_day - 1` are a day old.
                recent.sort_unstable();
                let frees = recent[recent.len() - per_day.max(1)] + DAY_MS;
                let wait_ms = frees.saturating_sub(record.created_ms);
                return Ok(Err(CreateRefusal::TooManyToday(wait_ms.div_ceil(1000))));
            }
        }
        self.write(&mut records, record.clone())?;
        drop(records);
        let _ = self.changes.send(record.name);
        Ok(Ok(()))
    }

    /// Changes the record `name` as `change` says, given the record held
    /// (none: no such name), all under the records lock: a change computed
    /// from a record read earlier could undo one made meanwhile (a `PATCH`
    /// racing a `DELETE` would bring a revoked key back). `change` refusing
    /// stores nothing; the outer error is the store's.
    pub fn update<E>(
        &self,
        name: &str,
        change: impl FnOnce(Option<&KeyRecord>) -> std::result::Result<KeyRecord, E>,
    ) -> Result<std::result::Result<KeyRecord, E>> {
        let mut records = self.lock();
        let changed = match change(records.get(name)) {
            Ok(changed) => changed,
            Err(e) => return Ok(Err(e)),
        };
        self.write(&mut records, changed.clone())?;
        drop(records);
        let _ = self.changes.send(changed.name.clone());
        Ok(Ok(changed))
    }

    /// Applies a record created or changed elsewhere (cluster mode): kept
    /// if it is newer than the one held (compared and stored under one
    /// lock). Not echoed to subscribers.
    pub fn upsert(&self, record: KeyRecord) -> Result<bool> {
        let mut records = self.lock();
        let newer = records
            .get(&record.name)
            .is_none_or(|held| held.updated_ms < record.updated_ms);
        if newer {
            self.write(&mut records, record)?;
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
    /// A write that cannot be flushed is undone in the tree too, so that
    /// a change refused to its caller does not come back after a restart.
    fn write(&self, records: &mut BTreeMap<String, KeyRecord>, record: KeyRecord) -> Result<()> {
        let tree = self.store.tree(TREE)?;
        let key = record.name.as_bytes();
        let before = tree.insert(key, serde_json::to_vec(&record)?)?;
        if let Err(e) = tree.flush() {
            let _ = match before {
                Some(value) => tree.insert(key, value).map(|_| ()),
                None => tree.remove(key).map(|_| ()),
            };
            return Err(e.into());
        }
        records.insert(record.name.clone(), record);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// The live records compiled against `snap` (`version`: the registry's,
/// read under the records lock), and the warnings of what they lost.
fn compile(
    records: &BTreeMap<String, KeyRecord>,
    version: u64,
    snap: &Snapshot,
) -> (Compiled, Vec<String>) {
    let toml_names: HashSet<&str> = snap
        .keys_by_hash
        .values()
        .map(|k| k.name.as_str())
        .collect();
    let mut by_hash = HashMap::default();
    let mut warnings = Vec::new();
    for r in records.values().filter(|r| !r.revoked) {
        if let Some((hash, key)) = compile_record(r, snap, &toml_names, &mut warnings) {
            if !r.disabled {
                by_hash.insert(hash, Arc::new(key));
            }
        }
    }
    let compiled = Compiled {
        generation: snap.generation,
        version,
        by_hash,
    };
    (compiled, warnings)
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// How many keys a user may create.
#[derive(Debug, Clone, Copy)]
pub struct CreateLimits {
    /// Live (not revoked) keys held at once.
    pub live: usize,
    /// Keys created in the last 24 hours, revoked ones included; none: no
    /// limit. Revoked records are kept for good (their names stay taken),
    /// so without it a user creating and revoking keys in a loop would
    /// grow the store and every scan of it without bound.
    pub per_day: Option<usize>,
}

/// Why a key was not created.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateRefusal {
    NameTaken,
    /// The user's live keys.
    TooMany(usize),
    /// Too many created in the last 24 hours; the seconds until one more
    /// may be.
    TooManyToday(u64),
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
    if let Some(split) = r.groups_in_force(snap) {
        let lost = &split.vanished;
        if !lost.is_empty() {
            warnings.push(format!(
                "{who}: groups {lost:?} are no longer in the config; the key stops routing to them"
            ));
        }
        let lost = &split.not_pickable;
        if !lost.is_empty() {
            warnings.push(format!(
                "{who}: its user may no longer pick groups {lost:?}; the key stops routing to \
                 them (kept in the store, routed again if she may pick them again)"
            ));
        }
        if split.kept.is_empty() {
            warnings.push(format!(
                "{who}: none of its groups is left; the key stops working"
            ));
            return None;
        }
        def.groups = Some(split.kept);
    }
    for model in def.models.iter().flatten() {
        let literal = !model.contains(['*', '?', '[', '{']);
        if literal && !snap.prices.contains_key(model) && !snap.aliases.contains_key(model) {
            warnings.push(format!(
                "{who}: model \"{model}\" is no longer in the config; the key cannot call it"
            ));
        }
    }
    let hash = crate::config::sha256_from_hex(&r.sha256)?;
    match compile_managed_key(&def, snap) {
        Ok(key) => Some((hash, key)),
        Err((field, message)) => {
            warnings.push(format!("{who}: {field}: {message}; the key stops working"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, user: &str, updated_ms: u64) -> KeyRecord {
        KeyRecord {
            name: name.into(),
            user: user.into(),
            sha256: hex::encode(crate::config::sha256(name)),
            hint: "abcd".into(),
            fields: KeyFields::default(),
            disabled: false,
            revoked: false,
            created_ms: 1,
            updated_ms,
            groups_set_by: SetBy::User,
        }
    }

    fn live(n: usize) -> CreateLimits {
        CreateLimits {
            live: n,
            per_day: None,
        }
    }

    #[test]
    fn a_user_creates_a_bounded_number_of_keys_a_day_revoked_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&Store::open(dir.path()).unwrap()).unwrap();
        let limits = CreateLimits {
            live: 2,
            per_day: Some(3),
        };
        let at = |name: &str, user: &str, ms: u64| {
            let mut r = record(name, user, ms);
            r.created_ms = ms;
            r
        };
        for (i, ms) in [1_000, 2_000, 3_000].into_iter().enumerate() {
            let name = format!("k{i}");
            registry
                .create(at(&name, "u", ms), limits)
                .unwrap()
                .unwrap();
            let mut revoked = registry.get(&name).unwrap();
            revoked.revoked = true;
            registry.save(revoked).unwrap();
        }
        // None live, but three made today: the first is a day old at 1,000 + DAY.
        let refused = registry.create(at("k3", "u", 10_000), limits).unwrap();
        assert_eq!(
            refused,
            Err(CreateRefusal::TooManyToday((DAY_MS - 9_000) / 1000))
        );
        assert_eq!(
            registry.create(at("k3", "v", 10_000), limits).unwrap(),
            Ok(())
        );
        let next_day = at("k4", "u", DAY_MS + 1_000);
        assert_eq!(registry.create(next_day, limits).unwrap(), Ok(()));
        // The admin's creations have no daily limit.
        assert_eq!(
            registry
                .create(at("k5", "u", DAY_MS + 1_001), live(2))
                .unwrap(),
            Ok(())
        );
    }

    fn snapshot(generation: u64, groups: &[&str]) -> Snapshot {
        let mut text = String::from("[[models]]\nname = \"m\"\ninput = 1\n");
        for g in groups {
            text.push_str(&format!("[[groups]]\nname = \"{g}\"\nratio = 1\n"));
        }
        text.push_str("[[users]]\nname = \"u\"\ngroup = \"a\"\n");
        crate::config::test_snapshot(text, generation)
    }

    #[test]
    fn records_persist_and_changes_from_elsewhere_apply_when_newer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let registry = Registry::open(&store).unwrap();
        let mut changes = registry.subscribe();
        assert_eq!(
            registry.create(record("k", "u", 5), live(2)).unwrap(),
            Ok(())
        );
        assert_eq!(changes.try_recv().unwrap(), "k");
        let v = registry.version();
        // Elsewhere: an older record is ignored, a newer one applied, and
        // neither is echoed to the subscribers.
        assert!(!registry.upsert(record("k", "other", 4)).unwrap());
        assert!(registry.upsert(record("k", "u2", 6)).unwrap());
        assert!(changes.try_recv().is_err());
        assert!(registry.version() > v);
        assert_eq!(registry.get("k").unwrap().user, "u2");
        registry.save(record("gone", "u", 1)).unwrap();
        registry.remove("gone").unwrap();
        drop(registry);
        let reopened = Registry::open(&store).unwrap();
        let names: Vec<(String, String)> = reopened
            .records()
            .into_iter()
            .map(|r| (r.name, r.user))
            .collect();
        assert_eq!(names, [("k".to_string(), "u2".to_string())]);
    }

    #[test]
    fn an_update_sees_the_record_as_held_when_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let registry = Registry::open(&store).unwrap();
        registry
            .create(record("k", "u", 1), live(5))
            .unwrap()
            .unwrap();
        let mut changes = registry.subscribe();
        let revoke = |held: Option<&KeyRecord>| {
            let mut r = held.cloned().ok_or("missing")?;
            r.revoked = true;
            Ok::<_, &str>(r)
        };
        assert!(registry.update("k", revoke).unwrap().unwrap().revoked);
        assert_eq!(changes.try_recv().unwrap(), "k");
        // A change made after the revocation starts from the revoked record.
        let disable = |held: Option<&KeyRecord>| {
            let mut r = held.cloned().ok_or("missing")?;
            r.disabled = true;
            Ok::<_, &str>(r)
        };
        let changed = registry.update("k", disable).unwrap().unwrap();
        assert!(changed.revoked && changed.disabled);
        assert_eq!(changes.try_recv().unwrap(), "k");
        // Refused: nothing stored, nobody told.
        let refused = registry.update("none", |held| held.cloned().ok_or("missing"));
        assert_eq!(refused.unwrap(), Err("missing"));
        assert!(registry.get("none").is_none() && changes.try_recv().is_err());
        drop(registry);
        let reopened = Registry::open(&store).unwrap().get("k").unwrap();
        assert!(reopened.revoked && reopened.disabled);
    }

    #[test]
    fn names_stay_taken_and_users_have_a_cap() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&Store::open(dir.path()).unwrap()).unwrap();
        registry
            .create(record("a", "u", 1), live(2))
            .unwrap()
            .unwrap();
        let mut revoked = record("b", "u", 1);
        revoked.revoked = true;
        registry.save(revoked).unwrap();
        let taken = registry.create(record("b", "v", 1), live(2)).unwrap();
        assert_eq!(taken, Err(CreateRefusal::NameTaken));
        registry
            .create(record("c", "u", 1), live(2))
            .unwrap()
            .unwrap();
        let full = registry.create(record("d", "u", 1), live(2)).unwrap();
        assert_eq!(full, Err(CreateRefusal::TooMany(2)));
        registry
            .create(record("d", "v", 1), live(2))
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_reload_drops_what_a_key_lost_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&Store::open(dir.path()).unwrap()).unwrap();
        let mut both = record("both", "u", 1);
        both.fields.groups = Some(vec!["a".into(), "b".into()]);
        both.fields.models = Some(vec!["gone-model".into(), "m*".into()]);
        // Set by the admin: `u` may not pick `b`, and this is about what the config lost.
        both.groups_set_by = SetBy::Admin;
        let orphan = record("orphan", "nobody", 1);
        registry.save(both).unwrap();
        registry.save(orphan).unwrap();
        let full = snapshot(1, &["a", "b"]);
        let warnings = registry.refresh(&full);
        assert_eq!(
            warnings,
            [
                "managed key \"both\" (user \"u\"): model \"gone-model\" is no longer in the \
                 config; the key cannot call it",
                "managed key \"orphan\" (user \"nobody\"): its user is no longer in the config; \
                 the key stops working (kept in the store, it works again if the user comes back)"
            ]
        );
        let hash = crate::config::sha256("both");
        assert_eq!(registry.lookup(&full, &hash).unwrap().groups, [0, 1]);
        let less = snapshot(2, &["a"]);
        let warnings = registry.refresh(&less);
        assert!(warnings.iter().any(|w| w
            == "managed key \"both\" (user \"u\"): groups [\"b\"] are no longer in the config; \
                the key stops routing to them"));
        assert_eq!(registry.lookup(&less, &hash).unwrap().groups, [0]);
        // A request still on the older config sees the key as it was then.
        assert_eq!(registry.lookup(&full, &hash).unwrap().groups, [0, 1]);
        assert_eq!(registry.lookup(&less, &hash).unwrap().groups, [0]);
    }

    /// `cheap` selectable or not; `u` (default group `a`) may also pick
    /// her `groups`.
    fn picking(generation: u64, cheap_selectable: bool, hers: &str) -> Snapshot {
        let text = format!(
            "[routing]\nauto_groups = [\"a\"]\n[[models]]\nname = \"m\"\ninput = 1\n\
             [[groups]]\nname = \"a\"\nratio = 1\n[[groups]]\nname = \"mine\"\nratio = 1\n\
             [[groups]]\nname = \"cheap\"\nratio = 1\nselectable = {cheap_selectable}\n\
             [[users]]\nname = \"u\"\ngroup = \"a\"\ngroups = [{hers}]\n"
        );
        crate::config::test_snapshot(text, generation)
    }

    #[test]
    fn a_users_key_routes_only_the_groups_she_may_pick_now() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&Store::open(dir.path()).unwrap()).unwrap();
        let groups = |r: &mut KeyRecord, g: &[&str]| {
            r.fields.groups = Some(g.iter().map(|g| g.to_string()).collect());
        };
        let mut users = record("users", "u", 1);
        groups(&mut users, &["cheap", "auto", "mine"]);
        let mut only = record("only-cheap", "u", 1);
        groups(&mut only, &["cheap"]);
        let mut admins = record("admins", "u", 1);
        groups(&mut admins, &["cheap"]);
        admins.groups_set_by = SetBy::Admin;
        for r in [&users, &only, &admins] {
            registry.save(r.clone()).unwrap();
        }
        let both = r#""mine", "auto""#;
        let open = picking(1, true, both);
        assert!(registry.refresh(&open).is_empty());
        let compiled = |snap: &Snapshot, name: &str| {
            registry
                .lookup(snap, &crate::config::sha256(name))
                .map(|k| k.group_names.clone())
        };
        let names = |g: &[&str]| Some(g.iter().map(|g| g.to_string()).collect::<Vec<_>>());
        assert_eq!(compiled(&open, "users"), names(&["cheap", "auto", "mine"]));
        // `cheap` no longer selectable: her keys drop it, in order, with a
        // warning each; the admin's keeps it.
        let closed = picking(2, false, both);
        assert_eq!(
            registry.refresh(&closed),
            [
                "managed key \"only-cheap\" (user \"u\"): its user may no longer pick groups \
                 [\"cheap\"]; the key stops routing to them (kept in the store, routed again if \
                 she may pick them again)",
                "managed key \"only-cheap\" (user \"u\"): none of its groups is left; the key \
                 stops working",
                "managed key \"users\" (user \"u\"): its user may no longer pick groups \
                 [\"cheap\"]; the key stops routing to them (kept in the store, routed again if \
                 she may pick them again)",
            ]
        );
        assert_eq!(compiled(&closed, "users"), names(&["auto", "mine"]));
        assert_eq!(compiled(&closed, "only-cheap"), None);
        assert_eq!(compiled(&closed, "admins"), names(&["cheap"]));
        let split = users.groups_in_force(&closed).unwrap();
        assert_eq!(split.not_pickable, ["cheap"]);
        assert_eq!(
            split.inactive(&users.fields.groups.clone().unwrap()),
            ["cheap"]
        );
        // The stored record keeps the group: routed again once she may pick it.
        let reopened = picking(3, true, both);
        assert!(registry.refresh(&reopened).is_empty());
        assert_eq!(compiled(&reopened, "only-cheap"), names(&["cheap"]));
        assert_eq!(registry.get("only-cheap").unwrap(), only);
        // Out of her `groups`: `auto` goes too, and comes back with them.
        let fewer = picking(4, true, "");
        assert_eq!(
            registry.refresh(&fewer),
            [
                "managed key \"users\" (user \"u\"): its user may no longer pick groups \
              [\"auto\", \"mine\"]; the key stops routing to them (kept in the store, routed \
              again if she may pick them again)"
            ]
        );
        assert_eq!(compiled(&fewer, "users"), names(&["cheap"]));
        let again = picking(5, true, both);
        assert_eq!(compiled(&again, "users"), names(&["cheap", "auto", "mine"]));
    }

    #[test]
    fn records_stored_before_groups_set_by_read_as_set_by_their_user() {
        let old = r#"{"name":"k","user":"u","sha256":"00","hint":"abcd","fields":{"groups":["g"]},
            "disabled":false,"revoked":false,"created_ms":1,"updated_ms":2}"#;
        let r: KeyRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.groups_set_by, SetBy::User);
        let mut admin = r.clone();
        admin.groups_set_by = SetBy::Admin;
        let text = serde_json::to_string(&admin).unwrap();
        assert!(text.contains(r#""groups_set_by":"admin""#), "{text}");
        assert_eq!(serde_json::from_str::<KeyRecord>(&text).unwrap(), admin);
    }
}
