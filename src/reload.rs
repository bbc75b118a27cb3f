//! The running config and how it is replaced: file watch (parent directory,
//! debounced), SIGHUP and `POST /admin/reload` all call [`ConfigHandle::reload`].
//!
//! Readers take one `Arc<Snapshot>` per request, so in-flight requests
//! finish on the config they started with while new ones see the new one.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::config::{self, ConfigError, Snapshot};
use crate::health::HealthRegistry;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct ConfigHandle {
    current: ArcSwap<Snapshot>,
    path: PathBuf,
    store: Store,
    health: Arc<HealthRegistry>,
    metrics: Arc<Metrics>,
    /// Serializes reloads (readers never take it).
    reload_lock: Mutex<ReloadState>,
    /// The admin address bound at start; reloads cannot move it.
    admin_bound: String,
    /// Replaced snapshots that requests may still run on.
    retired: Mutex<Vec<Arc<Snapshot>>>,
    /// The thread every reload runs on (see [`ConfigHandle::reload`]),
    /// started by the first one.
    reload_thread: OnceLock<mpsc::Sender<Job>>,
    /// Called with each new snapshot after it is swapped in.
    on_reload: Mutex<Vec<ReloadHook>>,
    /// For the admin view; a lock of its own, so reading it never waits
    /// for a reload in progress.
    status: Mutex<ReloadStatus>,
}

/// When the running config was loaded, and why the last load was refused
/// if it was (cleared by the next good load).
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub loaded_at_ms: u64,
    /// (when, the error as logged).
    pub last_error: Option<(u64, String)>,
}

/// What another module does when a new config is in force (managed keys
/// recompile against it and warn about what they lost).
pub type ReloadHook = Box<dyn Fn(&Snapshot) + Send + Sync>;

type Job = Box<dyn FnOnce() + Send>;

/// What one reload leaves for the next.
struct ReloadState {
    /// The version of the file that the last reload read, whatever
    /// triggered it, so that the file watch does not reload a version that
    /// is already loaded.
    version: Option<FileVersion>,
    /// The items the last load parsed, so that a reload parses only what
    /// changed.
    parser: config::ParseCache,
    /// A loaded config not yet saved as the last good one: saving waits
    /// until the reload has answered (see [`ConfigHandle::finish_reloads`]).
    unsaved: Option<Arc<Snapshot>>,
    /// When a reload last parsed a file whose memory has not been handed
    /// back to the kernel yet (see [`RELEASE_AFTER`]).
    unreleased_since: Option<Instant>,
}

impl ConfigHandle {
    /// Loads the config file at start. A broken file falls back, loudly, to
    /// the last good config in the store; with none, start fails.
    pub fn open(path: &Path, health: Arc<HealthRegistry>, metrics: Arc<Metrics>) -> Result<Self> {
        // Taken before the read: an edit racing with it is then seen as new.
        let version = FileVersion::of(path);
        let mut parser = config::ParseCache::default();
        let first = config::load_file(path, &health, 1, &mut parser);
        let mut status = ReloadStatus {
            loaded_at_ms: now_ms(),
            last_error: None,
        };
        let (store, loaded) = match first {
            Ok(loaded) => {
                metrics
                    .config_reloads_total
                    .with_label_values(&["ok"])
                    .inc();
                let store = Store::open(Path::new(&loaded.snapshot.server.data_dir))?;
                (store, loaded)
            }
            Err(e) => {
                metrics
                    .config_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                let (data_dir, whence) = fallback_data_dir(path);
                let none_there = || {
                    anyhow!(
                        "{e}\n(no last good config to fall back to in {}, {whence})",
                        data_dir.display()
                    )
                };
                // Not created for a broken file: a store that is not there
                // holds no last good config.
                if !Store::exists(&data_dir) {
                    return Err(none_there());
                }
                let store = Store::open(&data_dir)?;
                let Some(text) = store.last_good_config()? else {
                    return Err(none_there());
                };
                error!(
                    "CONFIG FILE IS BROKEN, STARTING ON THE LAST GOOD CONFIG FROM THE STORE \
                     IN {} ({whence}): {e}",
                    data_dir.display()
                );
                status.last_error = Some((now_ms(), e.to_string()));
                let loaded = config::load_text(
                    "<last good config>",
                    text,
                    &|name| std::env::var(name).ok(),
                    &health,
                    1,
                    &mut parser,
                )?;
                (store, loaded)
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
            reload_lock: Mutex::new(ReloadState {
                version,
                parser,
                unsaved: None,
                unreleased_since: None,
            }),
            admin_bound,
            retired: Mutex::new(Vec::new()),
            reload_thread: OnceLock::new(),
            on_reload: Mutex::new(Vec::new()),
            status: Mutex::new(status),
        })
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_status(&self, result: &Result<u64, ConfigError>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => {
                status.loaded_at_ms = now_ms();
                status.last_error = None;
            }
            Err(e) => status.last_error = Some((now_ms(), e.to_string())),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Calls `hook` with every snapshot a reload swaps in, on the reload
    /// thread, right after the swap.
    pub fn on_reload(&self, hook: ReloadHook) {
        self.on_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    pub fn health(&self) -> &HealthRegistry {
        &self.health
    }

    /// Re-reads the file; a bad file keeps the running config.
    ///
    /// Every reload runs on one thread, and the snapshots it replaces are
    /// freed there too: reloads on whichever thread asked (a blocking pool
    /// thread, the watch) left the parser's temporaries and the old
    /// snapshot, tens of MiB for a big config, in that thread's malloc
    /// arena each time (RSS grew with every reload, 695 MiB after ten of a
    /// 10,000-key config under load, with glibc malloc). On one thread, all
    /// of it goes back to the kernel once the old snapshot is freed and
    /// reloads have paused (see [`RELEASE_AFTER`]).
    pub fn reload(self: &Arc<Self>) -> Result<u64, ConfigError> {
        self.on_reload_thread(|handle| handle.reload_locked(&mut handle.lock_reloads()))
    }

    /// Reloads unless the file is still the version the last reload read
    /// (the watch also sees opens and reads of the file, including the one
    /// every reload makes, and edits already loaded by SIGHUP or the API).
    fn reload_if_changed(self: &Arc<Self>) {
        self.on_reload_thread(|handle| {
            let mut state = handle.lock_reloads();
            if FileVersion::of(&handle.path) != state.version {
                let _ = handle.reload_locked(&mut state);
            }
        });
    }

    /// Runs `work` on the reload thread and waits for its result.
    fn on_reload_thread<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&ConfigHandle) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        let handle = Arc::clone(self);
        let job: Job = Box::new(move || {
            let _ = tx.send(work(&handle));
            handle.finish_reloads();
        });
        let thread = self
            .reload_thread
            .get_or_init(|| spawn_reload_thread(Arc::downgrade(self)));
        if let Err(mpsc::SendError(job)) = thread.send(job) {
            // The thread could not be started: reload on this one, and
            // free what no request runs on any more here too.
            job();
            self.free_retired();
        }
        rx.recv().expect("a reload panicked")
    }

    /// Whether the memory that reloads freed is due to go back to the
    /// kernel: a reload has run, and none for [`RELEASE_AFTER`]. Clears it.
    fn release_due(&self) -> bool {
        let mut state = self.lock_reloads();
        let due = state
            .unreleased_since
            .is_some_and(|at| at.elapsed() >= RELEASE_AFTER);
        if due {
            state.unreleased_since = None;
        }
        due
    }

    /// The work a reload leaves until it has answered: the new config is
    /// live already. Saving it as the last good config writes and syncs the
    /// whole text (1.4 MB for 10,000 keys: a few ms, and tens when the disk
    /// is busy); freeing the items the parse replaced takes a few ms more.
    /// Later reloads wait for both (they take the same lock), so saves
    /// happen in the order of the loads. Also called at shutdown, so that a
    /// reload that has answered is the last good config after a restart.
    pub fn finish_reloads(&self) {
        let mut state = self.lock_reloads();
        if let Some(snapshot) = state.unsaved.take() {
            // Only validated text is ever saved, so a crash before this
            // line leaves the previous good one.
            if let Err(e) = self.store.save_last_good_config(&snapshot.source_text) {
                error!("cannot save the last good config: {e}");
            }
        }
        state.parser.free_replaced();
    }

    /// Frees the replaced snapshots that no request runs on any more;
    /// true when none is left.
    fn free_retired(&self) -> bool {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        // ArcSwap turned every reader's borrow into a counted reference
        // when the snapshot was swapped out: the count is exact.
        retired.retain(|snapshot| Arc::strong_count(snapshot) > 1);
        retired.is_empty()
    }

    fn lock_reloads(&self) -> MutexGuard<'_, ReloadState> {
        self.reload_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reload_locked(&self, state: &mut ReloadState) -> Result<u64, ConfigError> {
        let started = Instant::now();
        state.unreleased_since = Some(started);
        let old = self.current.load_full();
        let next_generation = old.generation + 1;
        state.version = FileVersion::of(&self.path);
        let loaded =
            config::load_file(&self.path, &self.health, next_generation, &mut state.parser)
                .and_then(|l| {
                    admin_stays_guarded(&self.admin_bound, &l.snapshot.server).map_err(
                        |message| ConfigError {
                            file: self.path.display().to_string(),
                            line: None,
                            message,
                        },
                    )?;
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
                for hook in self
                    .on_reload
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                {
                    hook(&new);
                }
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
                state.unsaved = Some(new);
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
        self.set_status(&result);
        if result.is_ok() {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
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

/// How long the reload thread waits after a reload before it hands the
/// freed memory back to the kernel. A reload touches tens of MiB for a big
/// config: taken fresh from the kernel, their page faults doubled the time
/// of a 10,000-key reload (13 -> 26 ms), so a burst of reloads (an editor's
/// saves, a script provisioning keys) reuses what the one before freed, and
/// only a reload after a quiet spell pays the faults. The reload thread
/// looks once a second, so the memory goes back 5–6 s after the last
/// reload started (later while a request still runs on a replaced config).
const RELEASE_AFTER: Duration = Duration::from_secs(5);

/// The reload thread: runs reloads, frees replaced snapshots once the
/// requests that started on them are done (streams may take minutes), so
/// that neither the last of those requests nor the reload pays for it, and
/// then, [`RELEASE_AFTER`] the last reload, hands the memory back to the
/// kernel.
fn spawn_reload_thread(handle: Weak<ConfigHandle>) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    // On failure `rx` is dropped with the closure and jobs run on the caller.
    let _ = std::thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(job) => job(),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let Some(handle) = handle.upgrade() else {
                return;
            };
            if handle.free_retired() && handle.release_due() {
                release_freed_memory();
            }
        });
    tx
}

/// Returns the free memory of every allocator arena to the kernel: after
/// the first load (on the main thread) and after reloads, the parser's
/// temporaries and the freed snapshot (tens of MiB for a big config), which
/// jemalloc would otherwise keep for its decay time or until the next
/// allocation wakes its purging. Takes a few milliseconds.
fn release_freed_memory() {
    // MALLCTL_ARENAS_ALL in jemalloc's headers: the purge applies to all
    // arenas.
    const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a purge takes no argument and returns nothing; it only hands
    // unused pages back to the kernel.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
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

/// The data_dir a config file that does not load names, so that its last
/// good config can still be found, and where that came from (for the
/// error). Read line by line, whatever else the file holds: the
/// `[server]` table's `data_dir` (or a dotted `server.data_dir`), its
/// value a TOML string; bytes that are not UTF-8 elsewhere do not hide it.
/// Without one, the default data_dir.
fn fallback_data_dir(path: &Path) -> (PathBuf, String) {
    let file = path.display();
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let mut table = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_start_matches('[').split(']').next();
            table = name.unwrap_or("").trim().to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key: Vec<&str> = key
            .split('.')
            .map(|k| k.trim().trim_matches(['"', '\'']))
            .collect();
        let named = match key[..] {
            ["data_dir"] => table == "server",
            ["server", "data_dir"] => table.is_empty(),
            _ => false,
        };
        if !named {
            continue;
        }
        let value = format!("v = {}", value.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("v")?.as_str().map(str::to_string))
            .filter(|v| !v.is_empty());
        if let Some(dir) = value {
            return (
                PathBuf::from(dir),
                format!("the data_dir on line {} of {file}", n + 1),
            );
        }
    }
    (
        PathBuf::from(config::ServerSection::default().data_dir),
        format!("the default data_dir, as {file} names none that can be read"),
    )
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
    fn a_replaced_snapshot_is_freed_once_its_last_request_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.toml");
        let data = dir.path().join("data");
        let text = format!(
            "[server]\ndata_dir = \"{}\"\n[[groups]]\nname = \"default\"\nratio = 1\n",
            data.display()
        );
        std::fs::write(&path, text).unwrap();
        let handle =
            Arc::new(ConfigHandle::open(&path, Arc::default(), Arc::new(Metrics::new())).unwrap());
        let in_flight = handle.load();
        let old = Arc::downgrade(&in_flight);
        assert_eq!(handle.reload().unwrap(), 2);
        assert_eq!(handle.load().generation, 2);
        assert_eq!(old.strong_count(), 2, "kept while a request runs on it");
        drop(in_flight);
        let deadline = Instant::now() + Duration::from_secs(5);
        while old.strong_count() > 0 {
            assert!(Instant::now() < deadline, "never freed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_broken_files_data_dir_is_found_however_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        let found = |text: &[u8]| {
            std::fs::write(&path, text).unwrap();
            let (dir, whence) = fallback_data_dir(&path);
            (dir.display().to_string(), whence)
        };
        for text in [
            &b"[server]\ndata_dir = '/srv/tg'\n[[groups]\n"[..],
            b"[server]\ndata_dir=\"/srv/tg\" # state\nx = \"\xff\"\n",
            b"server.data_dir = \"/srv/tg\"\n[groups\n",
            b"# data_dir = \"/old\"\n[ server ]\nlisten = 1\n\"data_dir\" = \"/srv/tg\"\n[",
        ] {
            let (dir, whence) = found(text);
            assert_eq!(dir, "/srv/tg", "{}", String::from_utf8_lossy(text));
            assert!(whence.starts_with("the data_dir on line "), "{whence}");
        }
        // In another table, or not a string: not the server's data_dir.
        for text in [
            &b"[store]\ndata_dir = \"/x\"\n"[..],
            b"[server]\ndata_dir = 5\n",
            b"\xff",
        ] {
            let (dir, whence) = found(text);
            assert_eq!(dir, "/var/lib/tollgate");
            assert!(whence.contains("the default data_dir"), "{whence}");
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
