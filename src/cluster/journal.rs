//! The accounts whose spend a node still has to publish, kept in sled so
//! that an outage (or a restart during one) loses nothing. Publishing is
//! of absolute totals, so the journal holds names, not amounts: replaying
//! one twice publishes the same value twice.

use anyhow::Result;

use super::scripts::Kind;
use crate::store::Store;

const TREE: &str = "cluster_journal";

pub(super) struct Journal {
    store: Store,
}

fn entry(kind: Kind, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(kind.tag() as u8);
    k.extend_from_slice(name.as_bytes());
    k
}

impl Journal {
    pub fn open(store: &Store) -> Result<Journal> {
        store.tree(TREE)?;
        Ok(Journal {
            store: store.clone(),
        })
    }

    /// Remembers accounts to publish; returns how many are pending.
    pub fn add<'a>(&self, accounts: impl Iterator<Item = (Kind, &'a str)>) -> usize {
        let Ok(tree) = self.store.tree(TREE) else {
            return 0;
        };
        for (kind, name) in accounts {
            if let Err(e) = tree.insert(entry(kind, name), &[]) {
                tracing::error!("cluster journal: cannot write: {e}");
            }
        }
        tree.len()
    }

    pub fn pending(&self) -> Vec<(Kind, String)> {
        let Ok(tree) = self.store.tree(TREE) else {
            return Vec::new();
        };
        tree.iter()
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| {
                let kind = match k.first() {
                    Some(b'k') => Kind::Key,
                    Some(b'u') => Kind::User,
                    _ => return None,
                };
                Some((kind, String::from_utf8_lossy(&k[1..]).into_owned()))
            })
            .collect()
    }

    /// Forgets published accounts; returns how many are still pending.
    pub fn remove(&self, accounts: &[(Kind, String)]) -> usize {
        let Ok(tree) = self.store.tree(TREE) else {
            return 0;
        };
        for (kind, name) in accounts {
            let _ = tree.remove(entry(*kind, name));
        }
        tree.len()
    }

    pub fn len(&self) -> usize {
        self.store.tree(TREE).map_or(0, |t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_keeps_names_once_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let j = Journal::open(&store).unwrap();
        assert_eq!(j.add([(Kind::Key, "a"), (Kind::User, "a")].into_iter()), 2);
        assert_eq!(j.add([(Kind::Key, "a")].into_iter()), 2, "once per account");
        let mut pending = j.pending();
        pending.sort_by_key(|(k, _)| k.tag());
        assert_eq!(
            pending,
            vec![(Kind::Key, "a".to_string()), (Kind::User, "a".to_string())]
        );
        assert_eq!(j.remove(&pending[..1]), 1);
        assert_eq!(j.len(), 1);
    }
}
