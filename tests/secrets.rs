//! Secrets stay secret: client keys, channel keys, the admin token and
//! prompt text never show up in tollgate's logs (even at debug level), in
//! any answer it gives, in /metrics, /admin/channels or its store; keys are
//! configured and matched by hash only; the admin listener refuses to start
//! on a public address without a token.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CLIENT: &str = "sk-client-CANARY-c1a2b3";
const WRONG: &str = "sk-wrong-CANARY-d4e5f6";
const UP_BAD: &str = "sk-upbad-CANARY-a7b8c9";
const UP_GOOD: &str = "sk-upgood-CANARY-d0e1f2";
const ADMIN: &str = "admin-CANARY-a3b4c5";
const PROMPT: &str = "PROMPT-CANARY-quux-42";
const SECRETS: [&str; 6] = [CLIENT, WRONG, UP_BAD, UP_GOOD, ADMIN, PROMPT];

/// The config as written to disk: channel keys and the admin token come
/// from the environment, the client key only as its hash.
fn config(bad: &str, good: &str) -> String {
    format!(
        r#"
[routing]
cooldown_seconds = 1

[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "gpt-4o"
input = 2.5
output = 10

[[models]]
name = "only-bad"
input = 1
output = 1

[[channels]]
name = "bad"
type = "openai"
base_url = "{bad}"
api_key = "${{TG_TEST_UP_BAD}}"
models = ["gpt-4o", "only-bad"]
priority = 10

[[channels]]
name = "good"
type = "openai"
base_url = "{good}"
api_key = "${{TG_TEST_UP_GOOD}}"
models = ["gpt-4o"]

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        sha256_hex(CLIENT)
    )
}

fn head(port: u16, admin: u16, dir: &std::path::Path) -> String {
    server_section(port, admin, dir).replacen(
        "[server]\n",
        "[server]\nadmin_token = \"${TG_TEST_ADMIN}\"\nmax_body_bytes = 4096\n",
        1,
    )
}

fn chat_body(stream: bool) -> String {
    json!({"model": "gpt-4o", "stream": stream,
        "messages": [{"role": "user", "content": format!("please keep {PROMPT} private")}]})
    .to_string()
}

/// Every file under `dir`, concatenated.
fn files_under(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

/// Sends a request, checks its status, returns its body.
async fn send(req: reqwest::RequestBuilder, expect: u16) -> String {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, expect, "{text}");
    text
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_prompt_text_leaks_anywhere() {
    // Like the real API, this provider quotes the key it refuses.
    let bad = MockUpstream::start(|req| {
        let presented = req.header("authorization").unwrap_or("").to_string();
        Reply::json(
            401,
            json!({"error": {"message": format!("Incorrect API key provided: {presented}"),
                "type": "invalid_request_error", "code": "invalid_api_key"}}),
        )
    })
    .await;
    let good = MockUpstream::start(|req| {
        if req.json()["stream"] == true {
            Reply::Sse {
                events: chat_stream(&["fine"], Some((12, 1))),
                gap: Duration::ZERO,
            }
        } else {
            Reply::json(200, chat_completion("gpt-4o", "fine", 12, 1))
        }
    })
    .await;
    let rest = config(&bad.base_url(), &good.base_url());
    let tg = Tollgate::start_with_env(
        |port, admin, dir| format!("{}\n{rest}", head(port, admin, dir)),
        &[
            ("RUST_LOG", "debug"),
            ("TG_TEST_UP_BAD", UP_BAD),
            ("TG_TEST_UP_GOOD", UP_GOOD),
            ("TG_TEST_ADMIN", ADMIN),
        ],
    );
    let http = client();
    let mut answers: Vec<String> = Vec::new();
    let relay = |body: String| {
        http.post(tg.url("/v1/chat/completions"))
            .bearer_auth(CLIENT)
            .header("x-note", PROMPT)
            .body(body)
    };

    // Every channel refuses its key: a gateway error, not the provider's text.
    let only_bad = json!({"model": "only-bad", "messages": [{"role": "user", "content": PROMPT}]});
    answers.push(send(relay(only_bad.to_string()), 502).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Failover past the refusing channel, non-stream and stream.
    answers.push(send(relay(chat_body(false)), 200).await);
    // (The refusing channel now cools down for 2 s: the stream goes straight
    // to the good one.)
    answers.push(send(relay(chat_body(true)), 200).await);
    // Client-side errors.
    answers.push(
        send(
            http.post(tg.url("/v1/chat/completions"))
                .bearer_auth(WRONG)
                .body(chat_body(false)),
            401,
        )
        .await,
    );
    answers.push(
        send(
            relay(format!(
                "{{\"model\": \"gpt-4o\", \"messages\": [\"{PROMPT}"
            )),
            400,
        )
        .await,
    );
    answers.push(
        send(
            relay(format!("{{\"model\": \"{}\"}}", "x".repeat(5000) + PROMPT)),
            413,
        )
        .await,
    );
    answers.push(
        send(
            relay(json!({"model": "no-such-model", "messages": [PROMPT]}).to_string()),
            404,
        )
        .await,
    );
    answers.push(send(http.get(tg.url("/v1/models")).bearer_auth(CLIENT), 200).await);
    // Admin: refused without the token, then reloads, a broken one included.
    answers.push(send(http.get(tg.admin_url("/metrics")), 401).await);
    answers.push(
        send(
            http.post(tg.admin_url("/admin/reload")).bearer_auth(ADMIN),
            200,
        )
        .await,
    );
    let broken = format!(
        "{}\n{}\n[[channels]]\nname = \"typo\"\napi_key = \"{UP_BAD}\nbase_url = \"http://x\"\n",
        head(tg.port, tg.admin_port, &tg.dir.path().join("data")),
        config(&bad.base_url(), &good.base_url())
    );
    tg.write_config_by_rename(&broken);
    answers.push(
        send(
            http.post(tg.admin_url("/admin/reload")).bearer_auth(ADMIN),
            400,
        )
        .await,
    );
    answers.push(
        send(
            http.get(tg.admin_url("/admin/channels")).bearer_auth(ADMIN),
            200,
        )
        .await,
    );
    answers.push(send(http.get(tg.admin_url("/metrics")).bearer_auth(ADMIN), 200).await);
    assert!(answers.last().unwrap().contains("tollgate_requests_total"));

    // The secrets were really in play.
    assert!(bad
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {UP_BAD}"))));
    assert_eq!(bad.count(), 2);
    assert_eq!(good.count(), 2);
    assert!(good.requests()[0]
        .body
        .windows(PROMPT.len())
        .any(|w| w == PROMPT.as_bytes()));

    // Malformed heads that carry the secrets, on both listeners: a 400, and
    // nothing of the head in the log, even at debug level (Pingora's admin
    // session logged the whole head at ERROR).
    for (port, path, secret) in [
        (tg.admin_port, "/metrics", ADMIN),
        (tg.port, "/v1/models", CLIENT),
    ] {
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}\r\n\
             x-api-key: {secret}\r\nx-note: {PROMPT}\r\nBad Header: x\r\n\r\n"
        );
        let answer = raw_exchange(port, head.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        answers.push(answer);
    }

    // Stop cleanly so that the store is flushed, then look everywhere.
    tg.signal("TERM");
    let mut tg = tg;
    assert!(tg.wait_exit(Duration::from_secs(10)).is_some());
    let log = tg.log();
    assert!(log.contains("DEBUG"), "the log ran at debug level");
    let store = files_under(&tg.dir.path().join("data"));
    assert!(!store.is_empty());
    for secret in SECRETS {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        for a in &answers {
            assert!(!a.contains(secret), "{secret} in an answer: {a}");
        }
        assert!(!contains(&store, secret), "{secret} in the store");
    }
}

/// Sends `request` on a fresh connection; everything answered until the
/// server closed it.
async fn raw_exchange(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = conn.read_to_end(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The client's tollgate key is never forwarded in the query, whatever the
/// path and channel type: `?key=` (where Gemini clients send it) and any
/// other parameter that holds it are dropped, the rest goes on.
#[tokio::test(flavor = "multi_thread")]
async fn the_clients_key_never_goes_upstream_in_the_query() {
    let up = MockUpstream::start(|r| {
        if r.path.contains(":generateContent") {
            Reply::json(
                200,
                json!({"candidates": [], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}),
            )
        } else if r.path.starts_with("/v1/messages") {
            Reply::json(
                200,
                json!({"type": "message", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}),
            )
        } else {
            Reply::json(200, chat_completion("gpt-4o", "ok", 3, 1))
        }
    })
    .await;
    let base = up.base_url();
    let rest = format!(
        r#"
[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "gpt-4o"
input = 1

[[models]]
name = "claude-x"
input = 1

[[models]]
name = "gemini-x"
input = 1

[[channels]]
name = "openai"
type = "openai"
base_url = "{base}"
api_key = "sk-up-openai-1"
models = ["gpt-4o"]

[[channels]]
name = "anthropic"
type = "anthropic"
base_url = "{base}"
api_key = "sk-up-anthropic-1"
models = ["claude-x"]

[[channels]]
name = "gemini"
type = "gemini"
base_url = "{base}"
api_key = "sk-up-gemini-1"
models = ["gemini-x"]

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        sha256_hex(CLIENT)
    );
    let tg = Tollgate::start(&rest);
    let http = client();
    let chat = json!({"model": "gpt-4o", "messages": []}).to_string();
    let claude = json!({"model": "claude-x", "max_tokens": 5, "messages": []}).to_string();
    let encoded = CLIENT.replace('-', "%2D");
    for (path, header, body, kept) in [
        (
            format!("/v1/chat/completions?key={CLIENT}&x=1"),
            "authorization",
            &chat,
            "?x=1",
        ),
        (
            format!("/v1/chat/completions?api_key={encoded}"),
            "authorization",
            &chat,
            "",
        ),
        (
            format!("/v1/messages?beta=true&key={CLIENT}"),
            "x-api-key",
            &claude,
            "?beta=true",
        ),
        (
            format!("/v1beta/models/gemini-x:generateContent?key={CLIENT}&alt=json"),
            "",
            &chat,
            "?alt=json",
        ),
    ] {
        let mut req = http.post(tg.url(&path)).body(body.clone());
        req = match header {
            "authorization" => req.bearer_auth(CLIENT),
            "" => req,
            name => req.header(name, CLIENT),
        };
        send(req, 200).await;
        let got = up.requests().last().unwrap().path.clone();
        assert!(
            !got.contains(CLIENT) && !got.contains(&encoded),
            "{path} -> {got}"
        );
        assert!(
            got.ends_with(kept) && got.matches('?').count() <= 1,
            "{path} -> {got}"
        );
    }
    assert_eq!(up.count(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_stored_and_matched_by_hash_only() {
    let up = MockUpstream::start(|_| Reply::json(200, chat_completion("gpt-4o", "ok", 1, 1))).await;
    let tg = Tollgate::start_with_env(
        |port, admin, dir| {
            format!(
                "{}\n{}",
                head(port, admin, dir),
                config(&up.base_url(), &up.base_url())
            )
        },
        &[
            ("TG_TEST_UP_BAD", UP_BAD),
            ("TG_TEST_UP_GOOD", UP_GOOD),
            ("TG_TEST_ADMIN", ADMIN),
        ],
    );
    let config_text = std::fs::read_to_string(&tg.config_path).unwrap();
    assert!(!config_text.contains(CLIENT) && config_text.contains(&sha256_hex(CLIENT)));
    let (status, _) = chat(&client(), &tg, CLIENT, "gpt-4o").await;
    assert_eq!(status, 200);
    // Same hash prefix, different secret; case changed; padded: all unknown.
    for other in [
        CLIENT.to_uppercase(),
        format!("{CLIENT}x"),
        CLIENT[..CLIENT.len() - 1].to_string(),
        sha256_hex(CLIENT),
    ] {
        let (status, body) = chat(&client(), &tg, &other, "gpt-4o").await;
        assert_eq!(status, 401, "{other}");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
}

#[test]
fn a_public_admin_listener_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let public = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"0.0.0.0:{}\"\ndata_dir = \"{}\"\n",
        free_port(),
        free_port(),
        dir.path().join("data").display()
    );
    let (code, stderr) = run_to_exit(&public, Duration::from_secs(10));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("admin_listen = \"0.0.0.0:") && stderr.contains("set admin_token"),
        "{stderr}"
    );
    // An empty token (an unset variable) is no token.
    let (code, stderr) = run_to_exit(
        &format!("{public}admin_token = \"${{TG_TEST_SURELY_UNSET_TOKEN}}\"\n"),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("set admin_token"), "{stderr}");
    // With a token it starts (and keeps running until stopped).
    let (code, stderr) = run_to_exit(
        &format!("{public}admin_token = \"t0ken\"\n"),
        Duration::from_secs(2),
    );
    assert_eq!(code, None, "exited: {stderr}");
}
