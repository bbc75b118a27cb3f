//! The embedded sled store: every piece of durable state goes through here.
//!
//! sled holds an exclusive lock on its directory, so one tollgate process
//! owns a store; the CLI talks to the admin API instead of opening it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

const META_TREE: &str = "meta";
const LAST_GOOD_CONFIG: &[u8] = b"last_good_config";

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    path: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create data_dir {}: check the path and its permissions",
                dir.display()
            )
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    anyhow!(
                        "store {} is locked by another process (is another tollgate running \
                     with the same data_dir?)",
                        dir.display()
                    )
                }
                sled::Error::Io(io) => anyhow!(
                    "cannot open store {}: {io} (check permissions and free disk space)",
                    dir.display()
                ),
                other => anyhow!(
                    "store {} is unreadable: {other} (move it aside to start fresh; \
                     usage history in it would be lost)",
                    dir.display()
                ),
            })?;
        let meta = db.open_tree(META_TREE)?;
        Ok(Store {
            db,
            meta,
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn last_good_config(&self) -> Result<Option<String>> {
        Ok(self
            .meta
            .get(LAST_GOOD_CONFIG)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn save_last_good_config(&self, text: &str) -> Result<()> {
        if self.meta.get(LAST_GOOD_CONFIG)?.as_deref() != Some(text.as_bytes()) {
            self.meta.insert(LAST_GOOD_CONFIG, text.as_bytes())?;
            // On disk now, not at sled's next periodic flush: a crash soon
            // after a start or reload must still find this config.
            self.meta.flush()?;
        }
        Ok(())
    }

    /// Writes everything to disk; called on shutdown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
