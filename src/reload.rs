//! The running config and how it is replaced: file watch (parent directory,
//! debounced), SIGHUP and `POST /admin/reload` all call [`ConfigHandle::reload`].
//!
//! Readers take one `Arc<Snapshot>` per request, so in-flight requests
//! finish on the config they started with while new ones see the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use arc_swap::ArcSwap;
use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult, Debouncer};
use tracing::{error, info, warn};

use crate::config::{self, ConfigError, Snapshot};
use crate::metrics::Metrics;
use crate::routing::HealthRegistry;
use crate::store::Store;

pub struct ConfigHandle {
    current: ArcSwap<Snapshot>,
    path: PathBuf,
    store: Store,
    health: Arc<HealthRegistry>,
    metrics: Arc<Metrics>,
    /// Serializes reloads; readers never take it.
    reload_lock: Mutex<()>,
    /// The admin address bound at start; reloads cannot move it.
    admin_bound: String,
}

impl ConfigHandle {
    /// Loads the config file at start. A broken file falls back, loudly, to
    /// the last good config in the store; with none, start fails.
    pub fn open(path: &Path, health: Arc<HealthRegistry>, metrics: Arc<Metrics>) -> Result<Self> {
        let first = config::load_file(path, &health, 1);
        let data_dir = match &first {
            Ok(loaded) => PathBuf::from(&loaded.snapshot.server.data_dir),
            Err(_) => fallback_data_dir(path),
        };
        let store = Store::open(&data_dir)?;
        let loaded = match first {
            Ok(loaded) => {
                metrics
                    .config_reloads_total
                    .with_label_values(&["ok"])
                    .inc();
                loaded
            }
            Err(e) => {
                metrics
                    .config_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                let Some(text) = store.last_good_config()? else {
                    bail!(
                        "{e}\n(no last good config in {} to fall back to)",
                        data_dir.display()
                    );
                };
                error!(
                    "CONFIG FILE IS BROKEN, STARTING ON THE LAST GOOD CONFIG FROM THE STORE: {e}"
                );
                config::load_text(
                    "<last good config>",
                    &text,
                    &|name| std::env::var(name).ok(),
                    &health,
                    1,
                )?
            }
        };
        for w in &loaded.warnings {
            warn!("{w}");
        }
        store.save_last_good_config(&loaded.snapshot.source_text)?;
        metrics.config_generation.set(1);
        let admin_bound = loaded.snapshot.server.admin_listen.clone();
        Ok(ConfigHandle {
            current: ArcSwap::from_pointee(loaded.snapshot),
            path: path.to_path_buf(),
            store,
            health,
            metrics,
            reload_lock: Mutex::new(()),
            admin_bound,
        })
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn health(&self) -> &HealthRegistry {
        &self.health
    }

    /// Re-reads the file; a bad file keeps the running config.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let _serial = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load();
        let next_generation = old.generation + 1;
        let loaded = config::load_file(&self.path, &self.health, next_generation).and_then(|l| {
            admin_stays_guarded(&self.admin_bound, &l.snapshot.server).map_err(|message| {
                ConfigError {
                    file: self.path.display().to_string(),
                    line: None,
                    message,
                }
            })?;
            Ok(l)
        });
        match loaded {
            Ok(loaded) => {
                let new = &loaded.snapshot;
                if new.server.listen != old.server.listen
                    || new.server.admin_listen != old.server.admin_listen
                    || new.server.data_dir != old.server.data_dir
                {
                    warn!("listen, admin_listen and data_dir changes take effect after a restart");
                }
                for w in &loaded.warnings {
                    warn!("{w}");
                }
                if let Err(e) = self.store.save_last_good_config(&new.source_text) {
                    error!("cannot save the last good config: {e}");
                }
                self.current.store(Arc::new(loaded.snapshot));
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["ok"])
                    .inc();
                self.metrics.config_generation.set(next_generation as i64);
                info!(generation = next_generation, "config reloaded");
                Ok(next_generation)
            }
            Err(e) => {
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                error!(
                    "config reload refused, keeping generation {}: {e}",
                    old.generation
                );
                Err(e)
            }
        }
    }

    /// Watches the config file's directory (editors replace files by
    /// rename, which a watch on the file itself would miss). The returned
    /// watcher must be kept alive.
    pub fn watch(self: &Arc<Self>) -> Result<Debouncer<notify::RecommendedWatcher>> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let handle = Arc::clone(self);
        let path = self.path.clone();
        let mut seen = FileVersion::of(&path);
        let mut debouncer = new_debouncer(
            Duration::from_millis(300),
            move |res: DebounceEventResult| {
                if res.is_err() {
                    return;
                }
                // Any event in the directory counts, not only events named
                // like the file: a symlinked config (Kubernetes ConfigMaps
                // swap a `..data` link) changes without one. What decides
                // is the file's own version (stat follows links). inotify
                // also reports opens and reads, including the one `reload`
                // itself makes: reload only when the file changed, or every
                // reload would trigger the next one.
                let now = FileVersion::of(&path);
                if now != seen {
                    seen = now;
                    let _ = handle.reload();
                }
            },
        )?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(debouncer)
    }
}

/// Identifies one version of a file without opening it (opening would
/// raise another watch event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileVersion {
    /// `None` while the file does not exist.
    fn of(path: &Path) -> Option<FileVersion> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(FileVersion {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The admin listener stays on the address it was started on until a
/// restart, so a reload must not drop the token that guards it there, even
/// if the new file moves `admin_listen` to loopback.
fn admin_stays_guarded(bound: &str, new: &config::ServerSection) -> Result<(), String> {
    let public = bound
        .parse::<std::net::SocketAddr>()
        .map_or(true, |a| !a.ip().is_loopback());
    if public && new.admin_token.is_none() {
        return Err(format!(
            "the admin listener runs on {bound} (not loopback) until a restart: \
             admin_token cannot be removed"
        ));
    }
    Ok(())
}

/// The data_dir named in a config file that does not load, so that its
/// last good config can still be found.
fn fallback_data_dir(path: &Path) -> PathBuf {
    let default = config::ServerSection::default().data_dir;
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k.trim() == "data_dir").then(|| {
                    v.split('#')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches('"')
                        .to_string()
                })
            })
        })
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_cannot_unguard_a_public_admin_listener() {
        let server = |admin: &str, token: Option<&str>| config::ServerSection {
            admin_listen: admin.into(),
            admin_token: token.map(str::to_string),
            ..config::ServerSection::default()
        };
        let open_loopback = server("127.0.0.1:9191", None);
        assert!(admin_stays_guarded("0.0.0.0:9191", &open_loopback).is_err());
        assert!(admin_stays_guarded("[::]:9191", &open_loopback).is_err());
        assert!(admin_stays_guarded("0.0.0.0:9191", &server("0.0.0.0:9191", Some("t"))).is_ok());
        assert!(admin_stays_guarded("127.0.0.1:9191", &open_loopback).is_ok());
    }
}
