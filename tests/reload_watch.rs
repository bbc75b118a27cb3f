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
