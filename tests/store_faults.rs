//! A store that cannot be opened stops tollgate with an error that names
//! the path and says what to do; it never starts over on an empty store
//! silently. (Kill and restart under load: see the ledger tests.) A listen
//! address in use stops it the same way.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn minimal(data_dir: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
         data_dir = \"{}\"\nshutdown_grace_seconds = 0\n",
        free_port(),
        free_port(),
        data_dir.display()
    )
}

/// Runs tollgate on `data_dir` and expects it to refuse to start.
fn refused(data_dir: &Path) -> String {
    let (code, stderr) = run_to_exit(&minimal(data_dir), Duration::from_secs(15));
    assert_eq!(code, Some(1), "tollgate did not refuse: {stderr}");
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "the error does not name the path: {stderr}"
    );
    stderr
}

/// Starts and stops tollgate once so that `data_dir` holds a real store.
fn make_store(data_dir: &Path) {
    let (code, stderr) = run_to_exit(&minimal(data_dir), Duration::from_secs(2));
    assert_eq!(code, None, "tollgate did not start: {stderr}");
    assert!(data_dir.join("db").exists());
}

#[test]
fn a_store_locked_by_another_tollgate_is_refused() {
    let tg = Tollgate::start("");
    let data = tg.dir.path().join("data");
    let stderr = refused(&data);
    assert!(
        stderr.contains("is locked by another process") && stderr.contains("own data_dir"),
        "{stderr}"
    );
    // The running one is untouched.
    let healthy = std::net::TcpStream::connect(("127.0.0.1", tg.admin_port)).is_ok();
    assert!(healthy);
    assert!(!tg.log().contains("ERROR"), "{}", tg.log());
}

#[test]
fn a_garbage_store_is_refused_every_time_not_started_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_store(&data);
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("db"), &garbage).unwrap();
    for _ in 0..2 {
        let stderr = refused(&data);
        assert!(
            stderr.contains("is unreadable") && stderr.contains("move it aside"),
            "{stderr}"
        );
    }
}

#[test]
fn a_corrupt_store_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_store(&data);
    // (sled rewrites a conf file that is merely empty or short.)
    std::fs::write(data.join("conf"), [0xffu8; 100]).unwrap();
    let stderr = refused(&data);
    assert!(
        stderr.contains("is unreadable") && stderr.contains("restore it from a backup"),
        "{stderr}"
    );
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, b"not a directory").unwrap();
    let stderr = refused(&data);
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert_eq!(std::fs::read(&data).unwrap(), b"not a directory");
}

/// Mounts a tmpfs (root only); unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(at: &'a Path, options: &str) -> Option<Tmpfs<'a>> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(at))
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_read_only_data_dir_is_refused() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a read-only file system needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _ro = Tmpfs::mount(&data, "ro,size=1m").expect("mount a read-only tmpfs");
    let stderr = refused(&data);
    assert!(
        stderr.contains("Read-only file system") && stderr.contains("point data_dir at writable"),
        "{stderr}"
    );
}

/// Fills the file system of `dir` with a file `dir/filler`.
fn fill_disk(dir: &Path) {
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
}

fn one_key_mock_config(port: u16, admin: u16, data: &Path, secret: &str) -> String {
    format!(
        "{}\n[[groups]]\nname = \"default\"\nratio = 1.0\nall_channels = true\n\n\
         [[models]]\nname = \"m\"\ninput = 1\noutput = 1\n\n\
         [[channels]]\nname = \"mock\"\ntype = \"mock\"\nmodels = [\"m\"]\n\n\
         [[keys]]\nname = \"k\"\nkey_sha256 = \"{}\"\n",
        server_section(port, admin, data),
        sha256_hex(secret)
    )
}

/// Requests the ledger holds (as written to the store).
async fn ledger_requests(tg: &Tollgate) -> u64 {
    tg.admin_json("/admin/usage").await["total"]["requests"]
        .as_u64()
        .unwrap()
}

async fn dropped(tg: &Tollgate) -> u64 {
    metric_value(&tg.metrics().await, "tollgate_ledger_dropped_total", &[]).unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_writes_again_once_a_full_disk_has_space() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small file system needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _small = Tmpfs::mount(&data, "size=2m").expect("mount a 2 MiB tmpfs");
    let secret = "sk-disk-back";
    let tg = Tollgate::start_with(|port, admin, _| one_key_mock_config(port, admin, &data, secret));
    let http = client();
    let mut sent = 0;
    for _ in 0..3 {
        assert_eq!(chat(&http, &tg, secret, "m").await.0, 200);
        sent += 1;
    }
    fill_disk(&data);
    while dropped(&tg).await == 0 {
        assert!(sent < 200, "a full disk never failed a ledger write");
        assert_eq!(chat(&http, &tg, secret, "m").await.0, 200);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = ledger_requests(&tg).await;
    std::fs::remove_file(data.join("filler")).unwrap();

    // The store is reopened within its retry interval (5 s); until then
    // charges are still dropped, and counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ledger_requests(&tg).await == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the ledger never wrote again after space came back:\n{}",
            tg.log()
        );
        assert_eq!(chat(&http, &tg, secret, "m").await.0, 200);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for _ in 0..5 {
        assert_eq!(chat(&http, &tg, secret, "m").await.0, 200);
        sent += 1;
    }
    // Every request is either in the ledger or counted as dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (stored, lost) = (ledger_requests(&tg).await, dropped(&tg).await);
        if stored + lost == sent {
            assert!(stored >= before + 6, "{stored} {before}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ledger {stored} + dropped {lost} != sent {sent}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = tg.log();
    assert!(log.contains("store reopened after a write error"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_counted_and_logged_while_requests_keep_flowing() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small file system needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _small = Tmpfs::mount(&data, "size=2m").expect("mount a 2 MiB tmpfs");
    let tg = Tollgate::start_with(|port, admin, _| {
        one_key_mock_config(port, admin, &data, "sk-disk-full")
    });
    fill_disk(&data);

    // sled's last written page may still have room for a few small
    // batches; the writes after it fail.
    let mut sent = 0;
    while dropped(&tg).await == 0 {
        assert!(sent < 200, "a full disk never failed a ledger write");
        let (status, _) = chat(&client(), &tg, "sk-disk-full", "m").await;
        assert_eq!(status, 200, "requests must keep flowing on a full disk");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let (status, _) = chat(&client(), &tg, "sk-disk-full", "m").await;
        assert_eq!(status, 200, "requests must keep flowing on a full disk");
    }
    let log = tg.log();
    assert!(
        log.contains("cannot write") && log.contains("No space left on device"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    drop(tg);
}

/// Replaces sled's files in `to` with those of `from` (the ledger mark stays).
fn roll_back_sled_files(from: &Path, to: &Path) {
    for (dir, remove) in [(to, true), (from, false)] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == "ledger-mark" || !entry.file_type().unwrap().is_file() {
                continue;
            }
            if remove {
                std::fs::remove_file(entry.path()).unwrap();
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_lost_acknowledged_usage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let older = dir.path().join("older");
    make_store(&data);
    std::fs::create_dir(&older).unwrap();
    roll_back_sled_files(&data, &older);

    let secret = "sk-rolled-back";
    let tg = Tollgate::start_with(|port, admin, _| one_key_mock_config(port, admin, &data, secret));
    for _ in 0..3 {
        assert_eq!(chat(&client(), &tg, secret, "m").await.0, 200);
    }
    // The mark counts ledger batches once they are on disk.
    let mark = data.join("ledger-mark");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ledger_requests(&tg).await < 3 || std::fs::read_to_string(&mark).unwrap().trim() == "0" {
        assert!(std::time::Instant::now() < deadline, "no batch was written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tg);

    // The disk hands back the store as it was before those requests: sled
    // opens it without complaint, tollgate does not.
    roll_back_sled_files(&older, &data);
    let stderr = refused(&data);
    assert!(
        stderr.contains("lost usage records") && stderr.contains(&mark.display().to_string()),
        "{stderr}"
    );
    // Deleting the mark, as the error says, accepts the loss.
    std::fs::remove_file(&mark).unwrap();
    make_store(&data);
}

#[test]
fn a_listen_address_in_use_stops_start_with_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n",
        free_port(),
        dir.path().join("data").display()
    );
    let (code, stderr) = run_to_exit(&config, Duration::from_secs(15));
    assert_eq!(code, Some(1), "tollgate did not refuse: {stderr}");
    assert!(
        stderr.contains(&format!(
            "[server] listen = \"{addr}\": cannot listen there"
        )) && stderr.contains("choose another address"),
        "{stderr}"
    );
}

/// Modes of everything under `dir` that are not private (dirs 0700,
/// files 0600), as "path mode" lines.
fn shared_modes(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    if mode != 0o700 {
        out.push(format!("{} {mode:o}", dir.display()));
    }
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(shared_modes(&path));
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if mode != 0o600 {
                out.push(format!("{} {mode:o}", path.display()));
            }
        }
    }
    out
}

/// The store keeps the last good config as written, literal secrets and
/// all: data_dir is created 0700 and everything in it 0600, outside
/// systemd too (it used to be 0755/0644 under the usual umask); a store
/// made before is tightened at start, and a shared data_dir is warned about.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_is_private_to_tollgates_user() {
    use std::os::unix::fs::PermissionsExt;
    // What a shell's umask gives files and directories the test creates.
    let old_umask = unsafe { libc::umask(0o022) };
    let rest = "[[groups]]\nname = \"default\"\nratio = 1\nall_channels = true\n\
                [[models]]\nname = \"m\"\ninput = 1\n[[channels]]\nname = \"mock\"\ntype = \"mock\"\n\
                [[keys]]\nname = \"k\"\nkey = \"sk-private-store\"\n";
    let mut tg = Tollgate::start(rest);
    let data = tg.dir.path().join("data");
    let (status, _) = chat(&client(), &tg, "sk-private-store", "m").await;
    assert_eq!(status, 200);
    // A reload with a large config: sled keeps it in a blob file of its own.
    let big = format!(
        "{}\n# {}\n",
        std::fs::read_to_string(&tg.config_path).unwrap(),
        "x".repeat(200_000)
    );
    tg.write_config_by_rename(&big);
    assert_eq!(
        client()
            .post(tg.admin_url("/admin/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tg.signal("TERM");
    assert!(tg.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        std::fs::read_dir(data.join("blobs")).unwrap().count() > 0,
        "a blob was written"
    );
    assert_eq!(shared_modes(&data), Vec::<String>::new());

    // An older store, made readable by others: tightened at the next start,
    // and the shared directory itself named in a warning.
    for e in std::fs::read_dir(&data).unwrap().flatten() {
        let mode = if e.path().is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    tg.kill_and_restart();
    let shared = shared_modes(&data);
    assert_eq!(
        shared,
        [format!("{} 755", data.display())],
        "only data_dir itself is left"
    );
    assert!(
        tg.log().contains("may be read by other users"),
        "{}",
        tg.log()
    );
    unsafe { libc::umask(old_umask) };
}
