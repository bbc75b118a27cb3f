//! The OpenAI relay against a real loopback upstream: request shaping,
//! non-stream and stream pass-through, and the answer to a WebSocket
//! upgrade on `/v1/responses`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: &str) -> String {
    format!(
        r#"
[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "gpt-4o"
input = 2.5
output = 10

[[models]]
name = "gpt-4o-latest"
input = 2.5
output = 10

[[channels]]
name = "up"
type = "openai"
base_url = "{upstream}/prefix"
api_key = "sk-upstream-secret"
models = ["gpt-4o"]
model_map = {{ "gpt-4o-latest" = "gpt-4o-2024-11-20" }}

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        sha256_hex("sk-client")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn non_stream_request_is_shaped_for_the_channel() {
    let up =
        MockUpstream::start(|_| Reply::json(200, chat_completion("gpt-4o", "hi", 10, 2))).await;
    let tg = Tollgate::start(&config(&up.base_url()));
    let resp = client()
        .post(tg.url("/v1/chat/completions?trace=1"))
        .header("authorization", "Bearer sk-client")
        .header("x-custom", "kept")
        .body(r#"{"model": "gpt-4o-latest", "messages": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hi");

    let got = &up.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/prefix/v1/chat/completions?trace=1");
    assert_eq!(
        got.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert_eq!(
        got.header("host"),
        Some(format!("127.0.0.1:{}", up.port).as_str())
    );
    assert_eq!(
        got.body,
        br#"{"model": "gpt-4o-2024-11-20", "messages": []}"#.to_vec(),
        "only the mapped model name changes"
    );
    assert!(!tg.log().contains("sk-client") && !tg.log().contains("sk-upstream-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_injects_usage_upstream_and_hides_it_from_the_client() {
    let up = MockUpstream::start(|_| Reply::Sse {
        events: chat_stream(&["Hel", "lo"], Some((9, 2))),
        gap: std::time::Duration::ZERO,
    })
    .await;
    let tg = Tollgate::start(&config(&up.base_url()));
    let text = client()
        .post(tg.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-client")
        .body(json!({"model": "gpt-4o", "stream": true, "messages": []}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected: String = chat_stream(&["Hel", "lo"], None).concat();
    assert_eq!(
        text, expected,
        "client sees exactly the stream without the usage chunk"
    );
    assert_eq!(
        up.requests()[0].json()["stream_options"]["include_usage"],
        true
    );
}

/// Sends a raw request on a fresh connection and reads the answer until
/// the gateway closes the connection (at most 5 s).
async fn raw_exchange(port: u16, request: &str) -> (String, bool) {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    (String::from_utf8(out).unwrap(), read.is_ok())
}

/// Codex opens `/v1/responses` as a WebSocket first. Only 426 makes it
/// fall back to HTTP at once (other statuses it retries for seconds with
/// backoff): the gateway answers exactly that, before any key check,
/// sends nothing upstream, and closes the connection.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_on_responses_is_refused_with_426() {
    let up = MockUpstream::start(|_| Reply::json(200, json!({}))).await;
    let tg = Tollgate::start(&config(&up.base_url()));
    let upgrade = |credentials: &str| {
        format!(
            "GET /v1/responses HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: Upgrade\r\n\
             upgrade: websocket\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             openai-beta: responses_websockets=2026-02-06\r\n{credentials}\r\n"
        )
    };
    for credentials in ["authorization: Bearer sk-client\r\n", ""] {
        let (answer, closed) = raw_exchange(tg.port, &upgrade(credentials)).await;
        assert!(closed, "the connection closes after the answer:\n{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "HTTP/1.1 426 Upgrade Required");
        assert!(lines.contains(&"connection: close"), "{head}");
        assert!(lines.contains(&"content-type: application/json"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("sec-websocket-accept"));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            json!({"error": {
                "message": "WebSocket is not supported on /v1/responses: POST the request over HTTP",
                "type": "invalid_request_error",
                "param": null,
                "code": "websocket_unsupported",
            }})
        );
    }
    assert_eq!(up.count(), 0, "nothing reaches the upstream");
    // The access log is written by a thread of its own: wait for it.
    let statuses = || -> Vec<String> {
        access_log_lines(&tg)
            .iter()
            .map(|line| line["status"].clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while statuses().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses(), ["426", "426"]);

    // A plain GET of the same path is still an unknown endpoint.
    let (answer, _) = raw_exchange(
        tg.port,
        "GET /v1/responses HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
}
