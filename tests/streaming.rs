//! Streaming pass-through timing and connection reuse on both sides.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
"#,
        sha256_hex("sk-s")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_event_reaches_the_client_as_the_upstream_sends_it() {
    const GAP: Duration = Duration::from_millis(300);
    let words = ["one", "two", "three", "four", "five"];
    let up = MockUpstream::start(move |_| Reply::Sse {
        events: chat_stream(&words, Some((5, 5))),
        gap: GAP,
    })
    .await;
    let tg = Tollgate::start(&config(&up.base_url()));
    let started = Instant::now();
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-s")
        .body(json!({"model": "m", "stream": true, "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    // Arrival time of each complete event.
    let mut arrivals = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while arrivals.len() < text.matches("\n\n").count() {
            arrivals.push(started.elapsed());
        }
    }
    let end = started.elapsed();
    assert_eq!(text, chat_stream(&words, None).concat());
    // 5 words, the (hidden) usage chunk and [DONE]: 6 events, 5 gaps.
    assert_eq!(arrivals.len(), 6);
    assert!(end >= GAP * 5, "the upstream took {:?} to finish", GAP * 5);
    assert!(
        arrivals[0] + GAP * 3 < end,
        "first event at {:?}, end at {end:?}: events must not wait for the end",
        arrivals[0]
    );
    for i in 1..5 {
        assert!(
            arrivals[i] - arrivals[0] >= GAP * i as u32 - Duration::from_millis(100),
            "event {i} arrived at {:?}, first at {:?}: events are not batched",
            arrivals[i],
            arrivals[0]
        );
    }
}

/// One HTTP/1.1 response read off a raw connection: status and body.
/// Handles Content-Length and chunked bodies.
async fn read_response(conn: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).await.unwrap();
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>().unwrap());
        }
        if h.starts_with("transfer-encoding:") && h.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).await.unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length.expect("content-length"), 0);
        conn.read_exact(&mut body).await.unwrap();
    }
    (status, String::from_utf8(body).unwrap())
}

fn raw_request(body: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-s\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn client_and_upstream_connections_are_reused() {
    let (up, upstream_connections) = MockUpstream::start_counted(|req| {
        if req.json()["stream"] == true {
            Reply::Sse {
                events: chat_stream(&["a", "b"], Some((1, 2))),
                gap: Duration::ZERO,
            }
        } else {
            Reply::json(200, chat_completion("m", "hello", 1, 1))
        }
    })
    .await;
    let tg = Tollgate::start(&config(&up.base_url()));
    let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", tg.port)).await.unwrap());
    const N: usize = 10;
    for i in 0..N {
        let stream = i % 2 == 1;
        let body = json!({"model": "m", "stream": stream, "messages": []}).to_string();
        conn.get_mut()
            .write_all(raw_request(&body).as_bytes())
            .await
            .unwrap();
        let (status, text) = read_response(&mut conn).await;
        assert_eq!(status, 200, "request {i} on the same client connection");
        if stream {
            assert_eq!(text, chat_stream(&["a", "b"], None).concat());
        } else {
            assert!(text.contains("hello"), "{text}");
        }
    }
    // Gateway errors keep the connection too.
    conn.get_mut()
        .write_all(raw_request(r#"{"model": "nope"}"#).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut conn).await.0, 404);
    conn.get_mut()
        .write_all(raw_request(r#"{"model": "m"}"#).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut conn).await.0, 200);

    assert_eq!(up.count(), N + 1);
    let opened = upstream_connections.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        opened,
        1,
        "{} upstream requests used {opened} connections",
        N + 1
    );
}
