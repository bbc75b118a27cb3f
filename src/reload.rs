//! The running config and how it is replaced: file watch (parent directory,
//! debounced), SIGHUP and `POST /admin/reload` all call [`ConfigHandle::reload`].
//!
//! Readers take one `Arc<Snapshot>` per request, so in-flight requests
//! finish on the config they started with while new ones see the new one.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
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
    /// Serializes reloads (readers never take it) and holds the version of
    /// the file that the last reload read, whatever triggered it, so that
    /// the file watch does not reload a version that is already loaded.
    reload_lock: Mutex<Option<FileVersion>>,
    /// The admin address bound at start; reloads cannot move it.
    admin_bound: String,
}

impl ConfigHandle {
    /// Loads the config file at start. A broken file falls back, loudly, to
    /// the last good config in the store; with none, start fails.
    pub fn open(path: &Path, health: Arc<HealthRegistry>, metrics: Arc<Metrics>) -> Result<Self> {
        // Taken before the read: an edit racing with it is then seen as new.
        let version = FileVersion::of(path);
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
        release_freed_memory();
        metrics.config_generation.set(1);
        let admin_bound = loaded.snapshot.server.admin_listen.clone();
        Ok(ConfigHandle {
            current: ArcSwap::from_pointee(loaded.snapshot),
            path: path.to_path_buf(),
            store,
            health,
            metrics,
            reload_lock: Mutex::new(version),
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
        let mut loaded_version = self.lock_reloads();
        self.reload_locked(&mut loaded_version)
    }

    /// Reloads unless the file is still the version the last reload read
    /// (the watch also sees opens and reads of the file, including the one
    /// every reload makes, and edits already loaded by SIGHUP or the API).
    fn reload_if_changed(&self) {
        let mut loaded_version = self.lock_reloads();
        if FileVersion::of(&self.path) != *loaded_version {
            let _ = self.reload_locked(&mut loaded_version);
        }
    }

    fn lock_reloads(&self) -> MutexGuard<'_, Option<FileVersion>> {
        self.reload_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reload_locked(&self, loaded_version: &mut Option<FileVersion>) -> Result<u64, ConfigError> {
        let started = Instant::now();
        let old = self.current.load_full();
        let next_generation = old.generation + 1;
        *loaded_version = FileVersion::of(&self.path);
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
        let result = match loaded {
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
                let new = Arc::new(loaded.snapshot);
                self.current.store(Arc::clone(&new));
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["ok"])
                    .inc();
                self.metrics.config_generation.set(next_generation as i64);
                info!(
                    generation = next_generation,
                    took_ms = started.elapsed().as_millis() as u64,
                    "config reloaded"
                );
                // After the swap, so requests see the new config without
                // waiting for the disk. Only validated text is ever saved,
                // so a crash before this line leaves the previous good one.
                if let Err(e) = self.store.save_last_good_config(&new.source_text) {
                    error!("cannot save the last good config: {e}");
                }
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
        };
        match result {
            Ok(_) => retire(old),
            // The parser's temporaries of the refused file.
            Err(_) => release_freed_memory(),
        }
        result
    }

    /// Watches the config file's directory (editors replace files by
    /// rename, which a watch on the file itself would miss) and reloads
    /// once a burst of events about the file has been quiet for
    /// [`DEBOUNCE`]. The returned watcher must be kept alive; dropping it
    /// ends the watch and its thread.
    pub fn watch(self: &Arc<Self>) -> Result<RecommendedWatcher> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let names = Arc::new(Mutex::new(watched_names(&self.path, &dir)));
        let (tx, rx) = mpsc::channel::<()>();
        let filter = Arc::clone(&names);
        // Runs on notify's thread for every event in the directory: an event
        // about another file (a log written next to the config) ends here,
        // without waking anything or touching the file system.
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let relevant = match &res {
                    Ok(event) => {
                        let names = filter.lock().unwrap_or_else(|e| e.into_inner());
                        event.need_rescan()
                            || event
                                .paths
                                .iter()
                                .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
                    }
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let handle = Arc::clone(self);
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let first = Instant::now();
                    while first.elapsed() < MAX_DEBOUNCE && rx.recv_timeout(DEBOUNCE).is_ok() {}
                    // The link chain may have changed (a ConfigMap swap).
                    *names.lock().unwrap_or_else(|e| e.into_inner()) =
                        watched_names(&handle.path, &dir);
                    handle.reload_if_changed();
                }
            })?;
        Ok(watcher)
    }
}

/// Quiet time after the last event about the config file before a reload:
/// editors and deploy tools write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest a reload waits for a file that keeps changing.
const MAX_DEBOUNCE: Duration = Duration::from_secs(3);

/// The names in the watched directory whose events concern the config: the
/// file's own, and for a symlinked file the in-directory entries its link
/// chain goes through (Kubernetes ConfigMaps: `tollgate.toml ->
/// ..data/tollgate.toml`, and `..data` is the link swapped on update).
fn watched_names(path: &Path, dir: &Path) -> HashSet<OsString> {
    let mut names: HashSet<OsString> = path.file_name().map(OsString::from).into_iter().collect();
    let mut current = path.to_path_buf();
    // Bounded: a link loop must not hang the watch.
    for _ in 0..8 {
        let Ok(target) = std::fs::read_link(&current) else {
            break;
        };
        let resolved = if target.is_relative() {
            let parent = current.parent().filter(|p| !p.as_os_str().is_empty());
            parent.unwrap_or(Path::new(".")).join(&target)
        } else {
            target
        };
        let first = resolved
            .strip_prefix(dir)
            .ok()
            .and_then(|rest| rest.components().next());
        if let Some(Component::Normal(name)) = first {
            names.insert(name.to_os_string());
        }
        current = resolved;
    }
    names
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

/// Requests that started on a replaced snapshot finish on it (streams may
/// take minutes). It is freed on a thread of its own once they are done,
/// rather than by whichever request lets go of it last: that keeps the work
/// of freeing a big config off the request path, and lets its memory go back
/// to the kernel instead of staying in the request thread's malloc arena.
fn retire(old: Arc<Snapshot>) {
    let freeing = std::thread::Builder::new()
        .name("config-retire".into())
        .spawn(move || {
            // ArcSwap turned every reader's borrow into a counted reference
            // when the snapshot was swapped out: the count is exact.
            let mut wait = Duration::from_millis(10);
            while Arc::strong_count(&old) > 1 {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            drop(old);
            release_freed_memory();
        });
    if freeing.is_err() {
        // No thread: the snapshot was dropped with the closure.
        release_freed_memory();
    }
}

/// A reload frees the parser's temporaries and the old snapshot (tens of
/// MiB for a big config) in the malloc arena of whichever thread ran it;
/// glibc keeps freed memory in its arenas, so without this RSS grows with
/// every reload that lands on another thread. Takes a few milliseconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

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

    #[test]
    fn a_retired_snapshot_is_freed_once_its_last_request_lets_go() {
        let loaded = config::load_text(
            "t.toml",
            "[[groups]]\nname = \"default\"\nratio = 1\n",
            &|_| None,
            &HealthRegistry::default(),
            1,
        )
        .unwrap();
        let old = Arc::new(loaded.snapshot);
        let freed = Arc::downgrade(&old);
        let in_flight = Arc::clone(&old);
        retire(old);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(freed.strong_count(), 2, "still held: a request runs on it");
        drop(in_flight);
        let deadline = Instant::now() + Duration::from_secs(5);
        while freed.strong_count() > 0 {
            assert!(Instant::now() < deadline, "never freed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn watched_names_follow_the_link_chain_inside_the_directory() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let names = |file: &str| {
            let mut v: Vec<String> = watched_names(&dir.join(file), dir)
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        std::fs::write(dir.join("plain.toml"), "").unwrap();
        assert_eq!(names("plain.toml"), ["plain.toml"]);
        // The Kubernetes ConfigMap layout: only `..data` changes on update.
        std::fs::create_dir(dir.join("v1")).unwrap();
        std::fs::write(dir.join("v1/k8s.toml"), "").unwrap();
        symlink("v1", dir.join("..data")).unwrap();
        symlink("..data/k8s.toml", dir.join("k8s.toml")).unwrap();
        assert_eq!(names("k8s.toml"), ["..data", "k8s.toml"]);
        // A link out of the directory adds nothing there; a loop ends.
        symlink("/nonexistent/x.toml", dir.join("out.toml")).unwrap();
        assert_eq!(names("out.toml"), ["out.toml"]);
        symlink("loop.toml", dir.join("loop.toml")).unwrap();
        assert_eq!(names("loop.toml"), ["loop.toml"]);
        assert_eq!(names("missing.toml"), ["missing.toml"]);
    }
}
