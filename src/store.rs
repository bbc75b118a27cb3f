//! The embedded sled store: every piece of durable state goes through here.
//!
//! sled holds an exclusive lock on its directory, so one tollgate process
//! owns a store; the CLI talks to the admin API instead of opening it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tracing::{error, info, warn};

const META_TREE: &str = "meta";
const LAST_GOOD_CONFIG: &[u8] = b"last_good_config";
/// When the store was created (ms since the epoch); see `check_marker`.
const STORE_MARKER: &[u8] = b"store_created_ms";
/// sled's page cache. The hot set is small (the current hour's aggregate
/// rows, the running totals, the newest request-log page); the rest of the
/// request log is append-only history that only admin queries read. sled
/// fills its cache with every page it writes and keeps ~1.4x the bound
/// resident, so the former 64 MiB grew RSS by ~0.4 KiB per logged request
/// for the first ~230,000 requests (~90 MiB). A smaller bound than 8 MiB
/// saved nothing (1 and 4 MiB measured the same: sled's LRU evicts per
/// shard, 256 of them, after batches of accesses); see also the ledger's
/// `LOG_CHUNK_BYTES`.
const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;
/// After a failed write (e.g. a full disk) sled refuses every later
/// operation until it is opened again; a reopen is tried at most this often.
const REOPEN_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Store {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

struct State {
    /// None while closed after a failed reopen.
    open: Option<Open>,
    last_reopen: Option<Instant>,
}

#[derive(Clone)]
struct Open {
    db: sled::Db,
    meta: sled::Tree,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        Ok(Store {
            state: Arc::new(Mutex::new(State {
                open: Some(open_db(dir)?),
                last_reopen: None,
            })),
            path: dir.to_path_buf(),
        })
    }

    /// Whether `dir` holds a store with data (without creating one).
    pub fn exists(dir: &Path) -> bool {
        std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0)
    }

    fn handles(&self) -> Result<Open> {
        self.lock().open.clone().ok_or_else(|| {
            anyhow!(
                "store {} is closed after a write error; it is reopened every {} s",
                self.path.display(),
                REOPEN_INTERVAL.as_secs()
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the store again after a failed write, at most every
    /// `REOPEN_INTERVAL`: sled keeps failing after one I/O error (a full
    /// disk) even when space is back, and only a fresh open clears that.
    /// What the failed writes did only in memory is gone with the old
    /// handle; the caller counted it as dropped. The old handle must be the
    /// last one (sled locks its files), so callers hold trees only briefly;
    /// if another is still in use, the open fails and the next try retries.
    pub fn reopen_after_failure(&self) {
        let mut state = self.lock();
        if state
            .last_reopen
            .is_some_and(|t| t.elapsed() < REOPEN_INTERVAL)
        {
            return;
        }
        state.last_reopen = Some(Instant::now());
        state.open = None;
        match open_db(&self.path) {
            Ok(open) => {
                info!(path = %self.path.display(), "store reopened after a write error");
                state.open = Some(open);
            }
            Err(e) => error!("cannot reopen the store: {e:#}"),
        }
    }
}

fn open_db(dir: &Path) -> Result<Open> {
    if dir.exists() && !dir.is_dir() {
        return Err(anyhow!(
            "data_dir {} exists but is not a directory: point data_dir at a directory",
            dir.display()
        ));
    }
    // Private: the store keeps the last good config as written, which may
    // hold literal secrets (admin_token, channel keys).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(dir, "cannot create data_dir", &e))?;
    let had_data = Store::exists(dir);
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_CAPACITY_BYTES)
        .flush_every_ms(Some(500))
        .open()
        .map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                anyhow!(
                    "store {} is locked by another process (is another tollgate running \
                 with the same data_dir?): stop it, or give this one its own data_dir",
                    dir.display()
                )
            }
            sled::Error::Io(io) => io_error(dir, "cannot open store", &io),
            other => corrupt(dir, &other.to_string()),
        })?;
    let meta = db.open_tree(META_TREE)?;
    let open = Open { db, meta };
    check_marker(&open, dir, had_data)?;
    restrict_permissions(dir);
    Ok(open)
}

/// Makes the store's own files 0600 (directories 0700), for stores created
/// before it was private; new files are created so under the process umask
/// (`server::run`). The data_dir itself is left as the operator made it
/// (it may be shared, e.g. `.`), with a warning if others may read it.
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ours = |name: &str| {
        matches!(name, "db" | "conf" | "blobs" | "ledger-mark") || name.starts_with("snap.")
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(ours) {
                paths.push(e.path());
            }
        }
    }
    if let Ok(blobs) = std::fs::read_dir(dir.join("blobs")) {
        paths.extend(blobs.flatten().map(|e| e.path()));
    }
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let private = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.file_type().is_symlink() || meta.mode() & 0o077 == 0 {
            continue;
        }
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private)) {
            warn!(
                "cannot make {} private ({e}): chmod {private:o} it",
                path.display()
            );
        }
    }
    if let Ok(meta) = std::fs::metadata(dir) {
        if meta.mode() & 0o077 != 0 {
            warn!(
                "data_dir {} may be read by other users (mode {:o}); the store keeps the last \
                 good config, literal secrets included: chmod 700 it",
                dir.display(),
                meta.mode() & 0o777
            );
        }
    }
}

/// A store is marked when created. A store that had data files but opens
/// with no records at all lost them to corruption (sled recovers an
/// unreadable log as empty): refuse it rather than start over on top of it.
/// Unmarked stores with records predate the marker: mark them.
fn check_marker(open: &Open, dir: &Path, had_data: bool) -> Result<()> {
    if open.meta.contains_key(STORE_MARKER)? {
        return Ok(());
    }
    let empty = open
        .db
        .tree_names()
        .iter()
        .filter_map(|name| open.db.open_tree(name).ok())
        .all(|tree| tree.is_empty());
    if had_data && empty {
        return Err(corrupt(dir, "its data files hold no readable records"));
    }
    open.meta.insert(
        STORE_MARKER,
        crate::clock::now_ms().to_be_bytes().as_slice(),
    )?;
    open.db.flush()?;
    Ok(())
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn last_good_config(&self) -> Result<Option<String>> {
        Ok(self
            .handles()?
            .meta
            .get(LAST_GOOD_CONFIG)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn save_last_good_config(&self, text: &str) -> Result<()> {
        let meta = self.handles()?.meta;
        if meta.get(LAST_GOOD_CONFIG)?.as_deref() != Some(text.as_bytes()) {
            meta.insert(LAST_GOOD_CONFIG, text.as_bytes())?;
            // On disk now, not at sled's next periodic flush: a crash soon
            // after a start or reload must still find this config.
            meta.flush()?;
            // sled frees the replaced copy through crossbeam-epoch, whose
            // per-thread bag holds deferred frees until 64 pile up: a
            // thread that seldom writes (reloads) kept every old copy of a
            // big config alive. Hand them to the collector now (sled's own
            // re-export, so it is the collector sled uses).
            sled::crossbeam_pin().flush();
        }
        Ok(())
    }

    /// A named tree (created if missing). Hold it only for one operation:
    /// see `reopen_after_failure`.
    pub fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.handles()?.db.open_tree(name)?)
    }

    /// A unique, increasing id (persisted across restarts).
    pub fn generate_id(&self) -> Result<u64> {
        Ok(self.handles()?.db.generate_id()?)
    }

    /// Writes everything to disk; called on shutdown.
    pub fn flush(&self) -> Result<()> {
        self.handles()?.db.flush()?;
        Ok(())
    }
}

/// An I/O failure on the store, with what the operator can do about it.
fn io_error(dir: &Path, what: &str, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => {
            "tollgate's user may not write there: fix the ownership or point data_dir elsewhere"
        }
        ErrorKind::ReadOnlyFilesystem => {
            "the file system is read-only: point data_dir at writable storage"
        }
        ErrorKind::StorageFull => "the disk is full: free some space",
        _ => "check the path, its permissions and free disk space",
    };
    anyhow!("{what} {}: {e}: {hint}", dir.display())
}

fn corrupt(dir: &Path, why: &str) -> anyhow::Error {
    anyhow!(
        "store {} is unreadable ({why}): restore it from a backup, or move it aside \
         (mv {0} {0}.corrupt) to start with an empty store (its usage history is then \
         not in the new one)",
        dir.display()
    )
}
