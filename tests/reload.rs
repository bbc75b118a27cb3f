//! Hot reload (docs/operations.md): file edits (rename and in place), SIGHUP and
//! POST /admin/reload; bad edits refused and counted; in-flight requests
//! finish on their snapshot; last-good config at start; the admin token.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn config(upstream: &str) -> String {
    format!(
        r#"
[[groups]]
name = "default"
ratio = 1
all_channels = true

[[models]]
name = "m"
input = 1
output = 1

[[channels]]
name = "up"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream"

[[keys]]
name = "k"
key_sha256 = "{}"

[[keys]]
name = "leaving"
key_sha256 = "{}"
"#,
        sha256_hex("sk-r"),
        sha256_hex("sk-leaving")
    )
}

/// `POST /admin/reload`.
async fn admin_reload(tg: &Tollgate) -> reqwest::Response {
    client()
        .post(tg.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap()
}

fn current_config(tg: &Tollgate) -> String {
    std::fs::read_to_string(&tg.config_path).unwrap()
}

async fn served_by(tg: &Tollgate) -> String {
    let (status, body) = chat(&client(), tg, "sk-r", "m").await;
    assert_eq!(status, 200, "{body}");
    match body["choices"][0]["message"]["content"].as_str() {
        Some(content) => content.to_string(),
        None => panic!("200 without content: {body}; log:\n{}", tg.log()),
    }
}

async fn reloads(tg: &Tollgate, result: &str) -> f64 {
    metric_sum(
        &tg.metrics().await,
        "tollgate_config_reloads_total",
        &[("result", result)],
    )
}

/// Polls until `tollgate_config_reloads_total{result}` reaches `n`.
async fn wait_reloads(tg: &Tollgate, result: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(tg, result).await < n {
        assert!(
            Instant::now() < deadline,
            "no {result} reload; log:\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_and_in_place_edits_are_picked_up() {
    let one = marked_upstream("one").await;
    let two = marked_upstream("two").await;
    let tg = Tollgate::start(&config(&one.base_url()));
    assert_eq!(tg.generation().await, 1);
    assert_eq!(served_by(&tg).await, "one");

    let text = current_config(&tg);
    tg.write_config_by_rename(&text.replace(&one.base_url(), &two.base_url()));
    assert_eq!(tg.wait_generation(2, Duration::from_secs(5)).await, 2);
    assert_eq!(served_by(&tg).await, "two", "rename edit applied");

    tg.write_config_in_place(&text);
    assert_eq!(tg.wait_generation(3, Duration::from_secs(5)).await, 3);
    assert_eq!(served_by(&tg).await, "one", "in-place edit applied");
    let metrics = tg.metrics().await;
    assert_eq!(metric_sum(&metrics, "tollgate_config_generation", &[]), 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_edit_is_refused_counted_and_the_old_config_keeps_serving() {
    let one = marked_upstream("one").await;
    let two = marked_upstream("two").await;
    let tg = Tollgate::start(&config(&one.base_url()));
    let good = current_config(&tg);
    assert_eq!(reloads(&tg, "error").await, 0.0);

    // Valid TOML, invalid config: a channel of an unknown group, and a
    // base_url change that must not leak into the running config.
    let broken = good.replace(&one.base_url(), &two.base_url()).replace(
        "api_key = \"sk-upstream\"",
        "api_key = \"sk-upstream\"\ngroups = [\"nope\"]",
    );
    tg.write_config_by_rename(&broken);
    wait_reloads(&tg, "error", 1.0).await;
    assert_eq!(tg.generation().await, 1);
    assert_eq!(served_by(&tg).await, "one");
    assert!(
        tg.log().contains("unknown group \"nope\""),
        "the reason is logged"
    );

    // Not TOML at all, written in place.
    tg.write_config_in_place("[[groups]\nname = ");
    wait_reloads(&tg, "error", 2.0).await;
    // An empty file (an editor that truncated and has not written yet).
    tg.write_config_in_place("");
    wait_reloads(&tg, "error", 3.0).await;
    assert_eq!(tg.generation().await, 1);
    assert_eq!(served_by(&tg).await, "one");

    // /admin/reload on the broken file says why.
    let resp = admin_reload(&tg).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("empty"), "{body}");
    assert_eq!(reloads(&tg, "error").await, 4.0);

    // Fixing the file recovers.
    tg.write_config_by_rename(&good.replace(&one.base_url(), &two.base_url()));
    assert_eq!(tg.wait_generation(2, Duration::from_secs(5)).await, 2);
    assert_eq!(served_by(&tg).await, "two");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_admin_reload_reload() {
    let one = marked_upstream("one").await;
    let tg = Tollgate::start(&config(&one.base_url()));
    // Before its handler is installed a HUP is ignored (not fatal).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tg.log().contains("SIGHUP handler installed") {
        assert!(
            Instant::now() < deadline,
            "no SIGHUP handler; log:\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tg.signal("HUP");
    assert_eq!(tg.wait_generation(2, Duration::from_secs(5)).await, 2);
    let resp = admin_reload(&tg).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"generation": 3}));
    assert_eq!(tg.generation().await, 3);
    assert_eq!(reloads(&tg, "ok").await, 3.0, "start + SIGHUP + admin");
    assert_eq!(served_by(&tg).await, "one");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_during_reloads_all_succeed_on_their_snapshot() {
    let up = MockUpstream::start(|_| Reply::Sse {
        events: chat_stream(&["a", "b", "c"], Some((1, 3))),
        gap: Duration::from_millis(100),
    })
    .await;
    // 200 connections open at once on a loaded 2-core machine: a 1 s
    // connect timeout (the harness default) could trip and cool the only
    // channel down, which is not what this test is about.
    let rest = config(&up.base_url());
    let tg = Tollgate::start_with(|p, a, d| {
        server_section(p, a, d).replace(
            "upstream_connect_timeout_ms = 1000",
            "upstream_connect_timeout_ms = 10000",
        ) + &rest
    });
    let good = current_config(&tg);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let expected = chat_stream(&["a", "b", "c"], None).concat();
    let stream_request = |secret: &'static str| {
        let http = http.clone();
        let url = tg.url("/v1/chat/completions");
        async move {
            let resp = http
                .post(url)
                .bearer_auth(secret)
                .body(json!({"model": "m", "stream": true, "messages": []}).to_string())
                .send()
                .await?;
            let status = resp.status().as_u16();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        }
    };

    // A request of the key that the next config removes.
    let leaving = tokio::spawn(stream_request("sk-leaving"));
    let all = futures_util::future::join_all((0..200).map(|_| stream_request("sk-r")));
    let reloading = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let without = good.replace(
            &format!(
                "[[keys]]\nname = \"leaving\"\nkey_sha256 = \"{}\"\n",
                sha256_hex("sk-leaving")
            ),
            "",
        );
        assert_ne!(without, good);
        tg.write_config_by_rename(&without);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let resp = admin_reload(&tg).await;
            assert_eq!(resp.status(), 200);
        }
    };
    let (results, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(all, reloading)
    })
    .await
    .expect("bounded: 200 requests finish within 30 s");
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok((200, text)) if *text == expected))
        .count();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !matches!(r, Ok((200, text)) if *text == expected))
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(
        ok,
        200,
        "every request during the reloads succeeds; failed: {failed:?}\nlog:\n{}",
        tg.log()
    );
    // Start + three admin reloads; the file watch skips the renamed file
    // when an admin reload has already loaded that version of it.
    assert!(tg.wait_generation(4, Duration::from_secs(5)).await >= 4);

    let (status, text) = leaving.await.unwrap().unwrap();
    assert_eq!(
        (status, text),
        (200, expected),
        "in flight: finishes on its snapshot"
    );
    let (status, _) = chat(&client(), &tg, "sk-leaving", "m").await;
    assert_eq!(status, 401, "new requests see the new config");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_at_start_uses_the_last_good_config_loudly() {
    let one = marked_upstream("one").await;
    let mut tg = Tollgate::start(&config(&one.base_url()));
    // Killed right after start: the last good config must already be on disk.
    crash_and_restart_on_a_broken_file(&mut tg);
    assert_eq!(served_by(&tg).await, "one");
    assert_eq!(reloads(&tg, "error").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_config_becomes_the_last_good_one() {
    let one = marked_upstream("one").await;
    let two = marked_upstream("two").await;
    let mut tg = Tollgate::start(&config(&one.base_url()));
    let moved = current_config(&tg).replace(&one.base_url(), &two.base_url());
    tg.write_config_by_rename(&moved);
    let resp = admin_reload(&tg).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(served_by(&tg).await, "two");
    // Saved right after the reload answered, not before: reloads run one
    // after the other, so a second one's answer means the save is done.
    assert_eq!(admin_reload(&tg).await.status(), 200);
    crash_and_restart_on_a_broken_file(&mut tg);
    assert_eq!(served_by(&tg).await, "two");
}

/// Breaks the config file, kills tollgate and starts it again: it must
/// come up on the last good config from its store, and say so.
fn crash_and_restart_on_a_broken_file(tg: &mut Tollgate) {
    let broken = current_config(tg).replace("[[keys]]", "[[keys]\n");
    std::fs::write(&tg.config_path, broken).unwrap();
    tg.kill_and_restart();
    std::thread::sleep(Duration::from_millis(300));
    tg.assert_running();
    assert!(
        tg.log()
            .contains("CONFIG FILE IS BROKEN, STARTING ON THE LAST GOOD CONFIG"),
        "{}",
        tg.log()
    );
}

#[test]
fn a_broken_file_at_start_without_a_last_good_config_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    let text = format!(
        "{}\n[[groups]]\nname = \"default\"\nratio = 0\n",
        server_section(free_port(), free_port(), &dir.path().join("data"))
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ratio must be > 0"), "{stderr}");
    // Where it looked, and why there; no store is made for a broken file.
    let data = dir.path().join("data");
    let looked = format!(
        "no last good config to fall back to in {}, the data_dir on line 4 of {}",
        data.display(),
        path.display()
    );
    assert!(stderr.contains(&looked), "{stderr}");
    assert!(!data.exists());
}

/// A broken file is searched for its own data_dir, however that is
/// written (a TOML literal string; bytes that are not UTF-8 elsewhere in
/// the file), and tollgate starts on the last good config stored there. It
/// used to look in /var/lib/tollgate (creating it), or in a directory named
/// after the quotes.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_finds_its_own_data_dir_however_it_is_written() {
    let one = marked_upstream("one").await;
    let rest = config(&one.base_url());
    let mut tg = Tollgate::start_with(|port, admin, dir| {
        let head = server_section(port, admin, dir);
        let literal = head.replacen(
            &format!("data_dir = \"{}\"", dir.display()),
            &format!("data_dir = '{}'  # a literal string", dir.display()),
            1,
        );
        assert_ne!(literal, head);
        format!("{literal}\n{rest}")
    });
    assert_eq!(served_by(&tg).await, "one");
    let good = current_config(&tg);
    for broken in [
        good.replace("[[keys]]", "[[keys]\n").into_bytes(),
        [good.as_bytes(), b"\nnote = \"caf\xe9\"\n"].concat(),
    ] {
        std::fs::write(&tg.config_path, broken).unwrap();
        tg.kill_and_restart();
        std::thread::sleep(Duration::from_millis(300));
        tg.assert_running();
        let log = tg.log();
        assert!(
            log.contains("STARTING ON THE LAST GOOD CONFIG FROM THE STORE"),
            "{log}"
        );
        assert_eq!(served_by(&tg).await, "one");
    }
    assert!(!tg.dir.path().join("'").exists());
}

#[test]
fn a_non_loopback_admin_listener_without_a_token_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    let text = server_section(free_port(), free_port(), &dir.path().join("data"))
        .replace("admin_listen = \"127.0.0.1:", "admin_listen = \"0.0.0.0:");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a loopback address: set admin_token"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_guards_admin_paths_and_metrics() {
    const TOKEN: &str = "adm-secret-token";
    let one = marked_upstream("one").await;
    let rest = config(&one.base_url());
    let tg = Tollgate::start_with(|p, a, d| {
        format!(
            "{}admin_token = \"{TOKEN}\"\n{rest}",
            server_section(p, a, d)
        )
    });
    let http = client();
    let status = |resp: reqwest::Response| resp.status().as_u16();
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/admin/channels"),
        ("POST", "/admin/reload"),
    ] {
        let req = |token: Option<&str>| {
            let r = http.request(method.parse().unwrap(), tg.admin_url(path));
            match token {
                Some(t) => r.bearer_auth(t),
                None => r,
            }
        };
        assert_eq!(status(req(None).send().await.unwrap()), 401, "{path}");
        assert_eq!(
            status(req(Some("adm-secret")).send().await.unwrap()),
            401,
            "{path}: a prefix of the token"
        );
        let resp = req(Some(TOKEN)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(!resp.text().await.unwrap().contains(TOKEN));
    }
    let health = http.get(tg.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/healthz needs no token");
    assert!(!tg.log().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn channel_health_survives_a_reload() {
    let down =
        MockUpstream::start(|_| Reply::json(503, json!({"error": {"message": "down"}}))).await;
    let good = marked_upstream("good").await;
    let text = config(&down.base_url()).replacen(
        "[[keys]]",
        &format!(
            "[[channels]]\nname = \"spare\"\ntype = \"openai\"\nbase_url = \"{}\"\npriority = -1\n\n[[keys]]",
            good.base_url()
        ),
        1,
    );
    let tg = Tollgate::start(&text);
    assert_eq!(served_by(&tg).await, "good");
    let resp = admin_reload(&tg).await;
    assert_eq!(resp.status(), 200);
    let channels = tg.admin_json("/admin/channels").await;
    assert_eq!(channels["generation"], 2);
    assert_eq!(channels["channels"][0]["name"], "up");
    assert_eq!(channels["channels"][0]["state"], "cooldown", "{channels}");
    assert_eq!(channels["channels"][0]["consecutive_failures"], 1);
    assert_eq!(served_by(&tg).await, "good");
    assert_eq!(down.count(), 1, "still cooling down after the reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn fixing_a_channel_endpoint_ends_its_cooldown() {
    let down =
        MockUpstream::start(|_| Reply::json(401, json!({"error": {"message": "bad key"}}))).await;
    let fixed = marked_upstream("fixed").await;
    let tg = Tollgate::start(&config(&down.base_url()));
    let (status, _) = chat(&client(), &tg, "sk-r", "m").await;
    assert_eq!(status, 502);
    let channels = tg.admin_json("/admin/channels").await;
    assert_eq!(channels["channels"][0]["state"], "cooldown");

    // Routing-only edit: the cooldown stays.
    let text = current_config(&tg);
    tg.write_config_by_rename(&text.replace(
        "api_key = \"sk-upstream\"",
        "api_key = \"sk-upstream\"\npriority = 3",
    ));
    tg.wait_generation(2, Duration::from_secs(5)).await;
    let channels = tg.admin_json("/admin/channels").await;
    assert_eq!(channels["channels"][0]["state"], "cooldown", "{channels}");

    // New endpoint: a fresh start.
    tg.write_config_by_rename(&text.replace(&down.base_url(), &fixed.base_url()));
    tg.wait_generation(3, Duration::from_secs(5)).await;
    let channels = tg.admin_json("/admin/channels").await;
    assert_eq!(channels["channels"][0]["state"], "up", "{channels}");
    assert_eq!(served_by(&tg).await, "fixed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_config_is_reloaded_when_its_link_target_is_swapped() {
    use std::os::unix::fs::symlink;
    let one = marked_upstream("one").await;
    let two = marked_upstream("two").await;
    let three = marked_upstream("three").await;
    let tg = Tollgate::start(&config(&one.base_url()));
    let text = current_config(&tg);
    let dir = tg.config_path.parent().unwrap().to_path_buf();

    // The Kubernetes ConfigMap layout: tollgate.toml -> ..data/tollgate.toml,
    // ..data -> a versioned directory that is swapped atomically.
    for (version, upstream) in [("v1", &two), ("v2", &three)] {
        std::fs::create_dir(dir.join(version)).unwrap();
        std::fs::write(
            dir.join(version).join("tollgate.toml"),
            text.replace(&one.base_url(), &upstream.base_url()),
        )
        .unwrap();
    }
    symlink("v1", dir.join("..data")).unwrap();
    symlink("..data/tollgate.toml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), &tg.config_path).unwrap();
    assert_eq!(tg.wait_generation(2, Duration::from_secs(5)).await, 2);
    assert_eq!(served_by(&tg).await, "two");

    // Only `..data` changes now; no event names tollgate.toml.
    symlink("v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert_eq!(tg.wait_generation(3, Duration::from_secs(5)).await, 3);
    assert_eq!(served_by(&tg).await, "three");
}

/// SIGHUP's number on Linux (signal(7)).
const SIGHUP: i32 = 1;

#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_during_startup_does_not_kill_the_process() {
    let one = marked_upstream("one").await;
    let rest = config(&one.base_url());
    for delay_ms in [20, 100, 200, 300] {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let path = dir.path().join("tollgate.toml");
        let text = server_section(port, admin, &dir.path().join("data")) + &rest;
        std::fs::write(&path, text).unwrap();
        let log = dir.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let status = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        // A signal that lands before `main` runs (a loaded machine can take
        // 20 ms to exec) kills any program: not what this test is about.
        use std::os::unix::process::ExitStatusExt;
        if status.and_then(|s| s.signal()) == Some(SIGHUP) && stderr.is_empty() {
            continue;
        }
        assert_eq!(
            status, None,
            "SIGHUP {delay_ms} ms after start killed tollgate; its stderr:\n{stderr}"
        );
    }
}
