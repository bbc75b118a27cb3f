//! The config file watch reloads once per edit. inotify also reports opens
//! and reads of the file, and every reload reads it: those events must not
//! trigger another reload (they did: one edit made a reload every 300 ms,
//! forever).

mod common;

use std::time::{Duration, Instant};

use common::*;

const CONFIG: &str = r#"
[[groups]]
name = "default"
ratio = 1.0
"#;

async fn ok_reloads(tg: &Tollgate) -> u64 {
    let text = client()
        .get(tg.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"tollgate_config_reloads_total{result="ok"} "#))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_edit_is_one_reload() {
    let tg = Tollgate::start(CONFIG);
    assert_eq!(ok_reloads(&tg).await, 1, "the initial load");
    let text = std::fs::read_to_string(&tg.config_path).unwrap();
    tg.write_config_in_place(&format!("{text}\n# edited\n"));

    let deadline = Instant::now() + Duration::from_secs(5);
    while ok_reloads(&tg).await < 2 {
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several debounce windows (300 ms) later: still the one reload, even
    // after someone reads the file.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _ = std::fs::read_to_string(&tg.config_path).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(ok_reloads(&tg).await, 2, "log:\n{}", tg.log());
}

/// Only events about the config file lead to any work: files written next
/// to it (a log, an editor's swap file) must not even make tollgate look at
/// the config. To see that from outside, the config is edited through a hard
/// link in a subdirectory, which raises no event in the watched directory:
/// a reload after the unrelated writes could only come from looking at the
/// file because of them (as the watch did before it filtered by name).
#[tokio::test(flavor = "multi_thread")]
async fn writes_to_other_files_in_the_directory_do_not_reload() {
    let tg = Tollgate::start(CONFIG);
    assert_eq!(ok_reloads(&tg).await, 1, "the initial load");
    let dir = tg.config_path.parent().unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let alias = dir.join("sub").join("alias.toml");
    std::fs::hard_link(&tg.config_path, &alias).unwrap();
    let text = std::fs::read_to_string(&alias).unwrap();
    std::fs::write(
        &alias,
        format!("{text}\n# edited out of the watch's sight\n"),
    )
    .unwrap();

    let mut other = std::fs::File::create(dir.join("next-to-config.log")).unwrap();
    for n in 0..20 {
        use std::io::Write;
        writeln!(other, "line {n}").unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(dir.join(".tollgate.toml.swp"), "swap").unwrap();
    // Well past the debounce window (300 ms) after the last write.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(ok_reloads(&tg).await, 1, "log:\n{}", tg.log());

    // The watch still works: an event naming the file loads the new text.
    let edited = std::fs::read_to_string(&tg.config_path).unwrap();
    tg.write_config_in_place(&format!("{edited}# edited again\n"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while ok_reloads(&tg).await < 2 {
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
