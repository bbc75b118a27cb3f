//! Upstream faults beyond plain failover: a head cut by a reset, streams
//! that stall or break off, broken bodies, a 429 storm, a client that reads
//! slowly or leaves, a channel host that does not resolve, and a TLS
//! upstream whose certificate does not verify. Every fault is on loopback
//! and every wait is bounded.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CLIENT_KEY: &str = "sk-faults-client";

/// Groups, a price and a key for `gpt-4o`, with the given channels
/// (name, base_url, priority, extra TOML lines).
fn config(channels: &[(&str, String, i32, &str)]) -> String {
    let mut text = format!(
        r#"
[routing]
cooldown_seconds = 1
max_cooldown_seconds = 60

[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "gpt-4o"
input = 2.5
output = 10

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        sha256_hex(CLIENT_KEY)
    );
    for (name, url, priority, extra) in channels {
        text.push_str(&format!(
            "\n[[channels]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{url}\"\n\
             api_key = \"sk-up-{name}\"\nmodels = [\"gpt-4o\"]\npriority = {priority}\n{extra}\n"
        ));
    }
    text
}

/// Tollgate with one channel, `only`, to the upstream on `port`.
fn one_channel_on(port: u16) -> Tollgate {
    Tollgate::start(&config(&[(
        "only",
        format!("http://127.0.0.1:{port}"),
        0,
        "",
    )]))
}

/// Starts tollgate with a 1 s upstream idle timeout (a stalled stream is
/// detected quickly) on `config(..)`.
fn start_short_idle(rest: &str) -> Tollgate {
    Tollgate::start_with(|port, admin, dir| {
        let head = server_section(port, admin, dir).replace(
            "upstream_idle_timeout_seconds = 5",
            "upstream_idle_timeout_seconds = 1",
        );
        format!("{head}\n{rest}")
    })
}

async fn chat(tg: &Tollgate, stream: bool) -> reqwest::Response {
    client()
        .post(tg.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(json!({"model": "gpt-4o", "stream": stream, "messages": []}).to_string())
        .send()
        .await
        .unwrap()
}

/// The body of a streamed answer and whether it ended cleanly (a broken
/// stream is left unterminated at the HTTP level).
async fn stream_text(resp: reqwest::Response) -> (String, bool) {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut received = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => return (String::from_utf8(received).unwrap(), false),
        }
    }
    (String::from_utf8(received).unwrap(), true)
}

async fn channels(tg: &Tollgate) -> Value {
    client()
        .get(tg.admin_url("/admin/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn channel<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel {name} in {all}"))
}

/// The value of one sample line of /metrics, e.g. `tollgate_channel_up{channel="a"}`.
async fn metric(tg: &Tollgate, series: &str) -> Option<f64> {
    let text = client()
        .get(tg.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The access-log lines of relayed requests.
fn request_lines(tg: &Tollgate) -> Vec<String> {
    tg.log()
        .lines()
        .filter(|l| l.contains(" request ") || l.ends_with(" request"))
        .map(str::to_string)
        .collect()
}

/// The access-log lines once there are `n` of them (they are written just
/// after the client got its answer).
async fn wait_request_lines(tg: &Tollgate, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = request_lines(tg);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_no_panic(tg: &Tollgate) {
    let log = tg.log();
    assert!(!log.contains("panicked"), "tollgate panicked:\n{log}");
}

/// A one-request-per-connection upstream whose answer is written by `answer`
/// after the request (head and Content-Length body) was read.
async fn raw_upstream<F, Fut>(answer: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_some() {
                    answer(stream).await;
                }
            });
        }
    });
    port
}

/// Reads one HTTP/1.1 request (head + Content-Length body); returns the body.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn healthy_upstream() -> impl Fn(&Received) -> Reply + Send + Sync + 'static {
    |_| Reply::json(200, chat_completion("gpt-4o", "fine", 10, 2))
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_during_the_response_head_fails_over() {
    let broken = raw_upstream(|mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-ty").await;
        let _ = s.flush().await;
        // SO_LINGER 0: the close is a TCP reset, not a clean FIN.
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await;
    let good = MockUpstream::start(healthy_upstream()).await;
    let tg = Tollgate::start(&config(&[
        ("broken", format!("http://127.0.0.1:{broken}"), 10, ""),
        ("good", good.base_url(), 0, ""),
    ]));
    let resp = chat(&tg, false).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "fine");
    let all = channels(&tg).await;
    let broken_state = channel(&all, "broken");
    assert_eq!(broken_state["state"], "cooldown", "{all}");
    assert_eq!(broken_state["consecutive_failures"], 1);
    assert!(broken_state["last_error"]
        .as_str()
        .unwrap()
        .starts_with("io:"));
    assert_eq!(channel(&all, "good")["state"], "up");
    assert_eq!(
        metric(&tg, r#"tollgate_channel_up{channel="broken"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&tg, r#"tollgate_channel_up{channel="good"}"#).await,
        Some(1.0)
    );
    assert_no_panic(&tg);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_the_upstream_dropped_is_retried_on_a_fresh_one() {
    // Every connection answers its first request (keep-alive) and then
    // reads the next one and closes without a word: the race of a server
    // closing an idle connection just as it is reused.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                r.fetch_add(1, Ordering::SeqCst);
                let body = chat_completion("gpt-4o", "fresh", 10, 2).to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                if read_request(&mut stream).await.is_some() {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let tg = one_channel_on(port);
    for i in 0..3 {
        let resp = chat(&tg, false).await;
        assert_eq!(resp.status(), 200, "request {i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "fresh");
    }
    // Requests 2 and 3 each went to a pooled connection first, then to a
    // new one: 5 requests reached the upstream over 3 connections.
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    assert_eq!(requests.load(Ordering::SeqCst), 5);
    let all = channels(&tg).await;
    assert_eq!(channel(&all, "only")["state"], "up", "{all}");
    assert_eq!(channel(&all, "only")["consecutive_failures"], 0);
    assert_no_panic(&tg);
}

/// An upstream on keep-alive connections that answers the n-th request it
/// reads (over all connections, from 0) with `script(n)`: the bytes to
/// write, and whether to close the connection after them. Counts
/// connections and requests.
async fn scripted_upstream(
    script: impl Fn(usize) -> (Vec<u8>, bool) + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r, script) = (connections.clone(), requests.clone(), Arc::new(script));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (r, script) = (r.clone(), script.clone());
            tokio::spawn(async move {
                while read_request(&mut stream).await.is_some() {
                    let (answer, close) = script(r.fetch_add(1, Ordering::SeqCst));
                    if stream.write_all(&answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (port, connections, requests)
}

/// A chat completion whose message is `text`, framed by Content-Length,
/// with `extra` header lines.
fn completion_answer(text: &str, extra: &str) -> Vec<u8> {
    let body = chat_completion("gpt-4o", text, 10, 2).to_string();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    );
    [head, body].concat().into_bytes()
}

/// A pooled connection that breaks off after part of an answer's head:
/// the upstream may have acted on the request, so it is not sent again
/// (it could be billed twice); the channel fails instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_cut_inside_the_answer_head_is_not_sent_again() {
    let (port, _, requests) = scripted_upstream(|n| match n {
        1 => (b"HTTP/1.1 200 OK\r\ncontent-ty".to_vec(), true),
        _ => (completion_answer("fine", ""), false),
    })
    .await;
    let tg = one_channel_on(port);
    assert_eq!(chat(&tg, false).await.status(), 200);
    let resp = chat(&tg, false).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable", "{body}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    assert_no_panic(&tg);
}

/// An upstream that says it keeps idle connections for 2 s
/// (`keep-alive: timeout=2`) gets a pooled connection back within a second,
/// and a new one after that, even though it never closes the old one.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_is_not_kept_past_the_upstreams_keep_alive_timeout() {
    let (port, connections, _) = scripted_upstream(|_| {
        (
            completion_answer("fine", "keep-alive: timeout=2\r\n"),
            false,
        )
    })
    .await;
    let tg = one_channel_on(port);
    assert_eq!(chat(&tg, false).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(chat(&tg, false).await.status(), 200);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(chat(&tg, false).await.status(), 200);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_no_panic(&tg);
}

/// Answers, in order, over as few connections as the gateway reuses: a
/// Content-Length body after interim 1xx answers, a chunked stream with
/// chunk extensions and trailers, a chunked body that asks to close, a
/// body delimited by the close, a Content-Length body followed by stray
/// bytes, and one more Content-Length body.
#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_body_framing_is_relayed_whole_and_reused_only_when_allowed() {
    let json = |text: &str| chat_completion("gpt-4o", text, 10, 2).to_string();
    let (port, connections, requests) = scripted_upstream(move |n| match n {
        0 => {
            let interim = "HTTP/1.1 100 Continue\r\n\r\n\
                           HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n";
            let answer = completion_answer("by length", "");
            ([interim.as_bytes(), &answer].concat(), false)
        }
        1 => {
            let stream = [
                SSE_HEAD.to_vec(),
                b"16;ext=1\r\ndata: {\"choices\":[]}\n\n\r\n".to_vec(),
                chunk("data: [DONE]\n\n"),
                b"0\r\nx-trailer: t\r\n\r\n".to_vec(),
            ];
            (stream.concat(), false)
        }
        2 => {
            let body = json("chunked, then close");
            let (a, b) = body.split_at(body.len() / 2);
            let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            // The connection stays open: reusing it would be the gateway's fault.
            (
                [&head[..], &chunk(a), &chunk(b), b"0\r\n\r\n"].concat(),
                false,
            )
        }
        3 => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n";
            ([head, &json("until close")].concat().into_bytes(), true)
        }
        // Past the body: not a next answer, and the connection cannot be
        // trusted with one.
        4 => {
            let answer = completion_answer("by length", "");
            ([&answer[..], b"HTTP/1.1 200 OK\r\n"].concat(), false)
        }
        _ => (completion_answer("by length", ""), false),
    })
    .await;
    let tg = one_channel_on(port);
    let content = |body: Value| body["choices"][0]["message"]["content"].clone();
    let resp = chat(&tg, false).await;
    assert_eq!(content(resp.json().await.unwrap()), "by length");
    let (text, clean) = stream_text(chat(&tg, true).await).await;
    assert!(clean);
    assert_eq!(text, "data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
    let resp = chat(&tg, false).await;
    assert_eq!(content(resp.json().await.unwrap()), "chunked, then close");
    let resp = chat(&tg, false).await;
    assert_eq!(content(resp.json().await.unwrap()), "until close");
    for _ in 0..2 {
        let resp = chat(&tg, false).await;
        assert_eq!(content(resp.json().await.unwrap()), "by length");
    }
    // Answers 0-2 shared a connection; the close-delimited one needed a
    // new one, and so did the next answer and the one after the stray
    // bytes.
    assert_eq!(requests.load(Ordering::SeqCst), 6);
    assert_eq!(connections.load(Ordering::SeqCst), 4);
    assert_no_panic(&tg);
}

/// The text of the error event the client gets when a stream breaks off.
fn broken_stream_event(message: &str) -> String {
    let body = json!({"error": {"message": message, "type": "server_error",
        "param": null, "code": "upstream_stream_broken"}});
    format!("data: {body}\n\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_stalls_ends_with_an_error_event_and_is_estimated() {
    let events = chat_stream(&["Hel", "lo"], Some((9, 2)));
    let first = events[0].clone();
    // The second event comes 4 s after the first: past the 1 s idle timeout.
    let up = MockUpstream::start(move |_| Reply::Sse {
        events: events.clone(),
        gap: Duration::from_secs(4),
    })
    .await;
    let tg = start_short_idle(&config(&[("up", up.base_url(), 0, "")]));
    let started = Instant::now();
    let resp = chat(&tg, true).await;
    assert_eq!(resp.status(), 200);
    let (text, clean) = stream_text(resp).await;
    assert!(!clean, "a broken stream must not end like a whole one");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        text,
        first + &broken_stream_event("the provider stopped sending; the answer is incomplete")
    );
    // The usage chunk never came: the request is billed on an estimate.
    let lines = wait_request_lines(&tg, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("estimated=true") && lines[0].contains("output=1"),
        "{}",
        lines[0]
    );
    assert_no_panic(&tg);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_inside_an_event_ends_with_an_error_event() {
    let whole = chat_stream(&["Hel"], None).remove(0);
    let answer = whole.clone();
    let port = raw_upstream(move |mut s| {
        let answer = answer.clone();
        async move {
            let mut out = SSE_HEAD.to_vec();
            out.extend(chunk(&answer));
            out.extend(chunk("data: {\"choi"));
            let _ = s.write_all(&out).await;
            let _ = s.flush().await;
        }
    })
    .await;
    let tg = Tollgate::start(&config(&[(
        "up",
        format!("http://127.0.0.1:{port}"),
        0,
        "",
    )]));
    let error = broken_stream_event("the provider's stream broke off; the answer is incomplete");
    // The gateway holds events back to strip its usage chunk: the fragment
    // never reached the client and is dropped.
    let (text, clean) = stream_text(chat(&tg, true).await).await;
    assert_eq!(text, format!("{whole}{error}"));
    assert!(!clean);
    // The client asked for usage itself: events pass through as they come,
    // so it holds the fragment; blank lines close it before the error.
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(
            json!({"model": "gpt-4o", "stream": true,
                "stream_options": {"include_usage": true}, "messages": []})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let (text, _) = stream_text(resp).await;
    assert_eq!(text, format!("{whole}data: {{\"choi\n\n{error}"));
    let lines = wait_request_lines(&tg, 2).await;
    assert!(lines.len() == 2 && lines.iter().all(|l| l.contains("estimated=true")));
    assert_no_panic(&tg);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_json_body_reaches_the_client_as_truncated() {
    let port = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"id\":\"x\",\"choi",
            )
            .await;
    })
    .await;
    let tg = Tollgate::start(&config(&[(
        "up",
        format!("http://127.0.0.1:{port}"),
        0,
        "",
    )]));
    let resp = chat(&tg, false).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a cut body must not look complete to the client"
    );
    assert!(wait_request_lines(&tg, 1).await[0].contains("estimated=true"));
    // The gateway still serves the next request.
    assert_eq!(
        client()
            .get(tg.url("/api/pricing"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_no_panic(&tg);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_json_answer_is_passed_on_unbilled() {
    let up = MockUpstream::start(|_| Reply::Full {
        status: 200,
        headers: vec![("content-type".into(), "text/html".into())],
        body: b"<html>maintenance</html>".to_vec(),
    })
    .await;
    let tg = Tollgate::start(&config(&[("up", up.base_url(), 0, "")]));
    let resp = chat(&tg, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "<html>maintenance</html>");
    let line = &wait_request_lines(&tg, 1).await[0];
    assert!(
        line.contains("estimated=true") && line.contains("input=0") && line.contains("output=0"),
        "{line}"
    );
    assert_no_panic(&tg);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_moves_traffic_away_until_retry_after_passes() {
    let storm = Arc::new(AtomicBool::new(true));
    let raging = storm.clone();
    let primary = MockUpstream::start(move |_| {
        if raging.load(Ordering::SeqCst) {
            Reply::json(429, json!({"error": {"message": "slow down"}}))
                .with_header("retry-after", "3")
        } else {
            Reply::json(200, chat_completion("gpt-4o", "primary", 10, 2))
        }
    })
    .await;
    let backup =
        MockUpstream::start(|_| Reply::json(200, chat_completion("gpt-4o", "backup", 10, 2))).await;
    let tg = Tollgate::start(&config(&[
        ("primary", primary.base_url(), 10, ""),
        ("backup", backup.base_url(), 0, ""),
    ]));
    let answered_by = |v: Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let storm_started = Instant::now();
    for _ in 0..10 {
        let resp = chat(&tg, false).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(answered_by(resp.json().await.unwrap()), "backup");
    }
    assert!(storm_started.elapsed() < Duration::from_millis(2500));
    assert_eq!(primary.count(), 1, "the cooling channel is left alone");
    let all = channels(&tg).await;
    assert_eq!(channel(&all, "primary")["state"], "cooldown");
    // Retry-After (3 s) wins over the 1 s base cooldown.
    let remaining = channel(&all, "primary")["cooldown_remaining_seconds"]
        .as_u64()
        .unwrap();
    assert!((2..=3).contains(&remaining), "{all}");
    assert_eq!(
        metric(&tg, r#"tollgate_channel_up{channel="primary"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(
            &tg,
            r#"tollgate_upstream_failures_total{channel="primary",reason="429"}"#
        )
        .await,
        Some(1.0)
    );

    storm.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(storm_started.elapsed())).await;
    for _ in 0..3 {
        let resp = chat(&tg, false).await;
        assert_eq!(answered_by(resp.json().await.unwrap()), "primary");
    }
    assert_eq!(primary.count(), 4);
    assert_eq!(backup.count(), 10);
    assert_eq!(channel(&channels(&tg).await, "primary")["state"], "up");
    assert_eq!(
        metric(&tg, r#"tollgate_channel_up{channel="primary"}"#).await,
        Some(1.0)
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A ~16 KiB chat stream event of prose, as models write it (one 16 KiB
/// word would test the tokenizer's worst case instead, which the fuzz
/// target covers).
fn prose_event() -> String {
    let content = "the quick brown fox jumps over the lazy dog. ".repeat(16 * 1024 / 45);
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": content}}]})
    )
}

/// An upstream that streams `events` prose events as fast as it may, then
/// usage (5 in, 3 out); `sent` counts the event bytes it has written.
async fn flooding_upstream(events: usize, sent: Arc<AtomicUsize>) -> u16 {
    let event = prose_event();
    raw_upstream(move |mut s| {
        let (event, sent) = (event.clone(), sent.clone());
        async move {
            if s.write_all(SSE_HEAD).await.is_err() {
                return;
            }
            let framed = chunk(&event);
            for _ in 0..events {
                if s.write_all(&framed).await.is_err() {
                    return;
                }
                sent.fetch_add(event.len(), Ordering::SeqCst);
            }
            let mut end = chunk(&chat_stream(&[], Some((5, 3))).concat());
            end.extend_from_slice(b"0\r\n\r\n");
            let _ = s.write_all(&end).await;
        }
    })
    .await
}

/// A streamed chat request with usage asked for, as raw bytes, with
/// `extra` header lines.
fn raw_stream_request(extra: &str) -> String {
    let body = json!({"model": "gpt-4o", "stream": true,
        "stream_options": {"include_usage": true}, "messages": []})
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_pauses_the_upstream_and_memory_stays_bounded() {
    const EVENTS: usize = 4096;
    let total = EVENTS * prose_event().len();
    let written = Arc::new(AtomicUsize::new(0));
    let port = flooding_upstream(EVENTS, written.clone()).await;
    let tg = Tollgate::start(&config(&[(
        "up",
        format!("http://127.0.0.1:{port}"),
        0,
        "",
    )]));
    // Warm up allocators and pools, then take the baseline.
    assert_eq!(
        client()
            .get(tg.url("/api/pricing"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let baseline = rss_kib(tg.pid());

    let mut conn = TcpStream::connect(("127.0.0.1", tg.port)).await.unwrap();
    conn.write_all(raw_stream_request("connection: close\r\n").as_bytes())
        .await
        .unwrap();
    // The client reads nothing for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during_pause = written.load(Ordering::SeqCst);
    let rss_paused = rss_kib(tg.pid());
    // Only socket buffers fill up (a few MiB), not the 64 MiB answer.
    assert!(
        during_pause < 16 * 1024 * 1024,
        "the upstream was not paused: {during_pause} of {total} bytes sent"
    );
    assert!(
        rss_paused < baseline + 32 * 1024,
        "RSS grew from {baseline} KiB to {rss_paused} KiB"
    );
    // Then it reads everything, slowly at first.
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut peak = rss_paused;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "stream did not finish");
        let n = conn.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        received += n;
        if received < total / 8 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            peak = peak.max(rss_kib(tg.pid()));
        }
    }
    assert!(received > total, "received {received} of {total}");
    assert!(
        peak < baseline + 32 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
    eprintln!(
        "slow client: upstream sent {during_pause} B during the pause; RSS {baseline} -> {rss_paused} (peak {peak}) KiB"
    );
    let line = &wait_request_lines(&tg, 1).await[0];
    assert!(
        line.contains("output=3") && line.contains("estimated=false"),
        "{line}"
    );
    assert_no_panic(&tg);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout_and_still_billed() {
    // 16 MiB of events: far more than the socket buffers between tollgate
    // and a client that reads nothing (~4 MiB here).
    const EVENTS: usize = 1024;
    let port = flooding_upstream(EVENTS, Arc::default()).await;
    let rest = config(&[("up", format!("http://127.0.0.1:{port}"), 0, "")]);
    let tg = Tollgate::start_with(|port, admin, dir| {
        let server = server_section(port, admin, dir).replacen(
            "[server]\n",
            "[server]\nclient_write_timeout_seconds = 1\n",
            1,
        );
        format!("{server}\n{rest}")
    });
    let mut conn = TcpStream::connect(("127.0.0.1", tg.port)).await.unwrap();
    conn.write_all(raw_stream_request("").as_bytes())
        .await
        .unwrap();
    let sent = Instant::now();
    // The client reads nothing. Once a write has waited a second, tollgate
    // gives up on it and closes its side (after reading the upstream to its
    // end for the usage).
    while established_on(tg.port) > 0 {
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "the connection to a client that reads nothing is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = sent.elapsed();
    assert!(
        closed_after >= Duration::from_secs(1),
        "closed after {closed_after:?}, before the write timeout"
    );
    // What the client gets is the start of the answer, then the end of the
    // connection, never the whole of it.
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("no end of the connection after {received} bytes"),
        }
    }
    assert!(
        received < EVENTS * 16 * 1024 / 2,
        "received {received} bytes: the answer was not cut off"
    );
    let line = &wait_request_lines(&tg, 1).await[0];
    assert!(
        line.contains("output=3") && line.contains("estimated=false"),
        "billed from the upstream's usage: {line}"
    );
    eprintln!("stopped reader: closed after {closed_after:?}, {received} bytes received");
    assert_no_panic(&tg);
}

/// Established TCP connections whose local port is `port` (IPv4 loopback).
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local_port = cols[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local_port, 16).ok() == Some(port) && cols[3] == "01"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_stream_is_billed_from_the_drained_stream() {
    let words: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
    let words_ref: Vec<&str> = words.iter().map(String::as_str).collect();
    let events = chat_stream(&words_ref, Some((11, 20)));
    let up = MockUpstream::start(move |_| Reply::Sse {
        events: events.clone(),
        gap: Duration::from_millis(50),
    })
    .await;
    let tg = Tollgate::start(&config(&[("up", up.base_url(), 0, "")]));
    {
        let resp = chat(&tg, true).await;
        let mut stream = resp.bytes_stream();
        use futures_util::StreamExt;
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: "));
        // The client's is then the only connection open; a rare second
        // one, seen once in ~10 runs of this binary, is waited out.
        let deadline = Instant::now() + Duration::from_secs(2);
        while established_on(tg.port) != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(established_on(tg.port), 1);
        // Dropping the stream closes the client connection mid-answer.
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (request_lines(&tg).is_empty() || established_on(tg.port) > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(established_on(tg.port), 0, "client connections left open");
    let line = &wait_request_lines(&tg, 1).await[0];
    // The upstream was read to its end: real usage, not an estimate.
    assert!(
        line.contains("input=11") && line.contains("output=20") && line.contains("estimated=false"),
        "{line}"
    );
    assert_no_panic(&tg);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_channel_host_cools_down_and_fails_over() {
    let good = MockUpstream::start(healthy_upstream()).await;
    let tg = Tollgate::start(&config(&[
        (
            "nowhere",
            "http://does-not-exist.invalid".to_string(),
            10,
            "",
        ),
        ("good", good.base_url(), 0, ""),
    ]));
    let resp = chat(&tg, false).await;
    assert_eq!(resp.status(), 200);
    let all = channels(&tg).await;
    let nowhere = channel(&all, "nowhere");
    assert_eq!(nowhere["state"], "cooldown", "{all}");
    assert!(nowhere["last_error"]
        .as_str()
        .unwrap()
        .starts_with("dns: cannot resolve does-not-exist.invalid"));
    assert_eq!(
        metric(
            &tg,
            r#"tollgate_upstream_failures_total{channel="nowhere",reason="dns"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(&tg, r#"tollgate_channel_up{channel="nowhere"}"#).await,
        Some(0.0)
    );
    assert_eq!(good.count(), 1);
    assert_no_panic(&tg);
}

/// An HTTPS provider on 127.0.0.1 with a freshly generated self-signed
/// certificate; counts the requests it answered.
async fn self_signed_upstream() -> (u16, Arc<AtomicUsize>) {
    use tokio_rustls::rustls;
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                while read_request(&mut tls).await.is_some() {
                    count.fetch_add(1, Ordering::SeqCst);
                    if answer_json(&mut tls).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, served)
}

async fn answer_json<S: AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<()> {
    let body = chat_completion("gpt-4o", "over tls", 10, 2).to_string();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.flush().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_upstream_is_refused_unless_the_channel_skips_verification() {
    let (port, served) = self_signed_upstream().await;
    let url = format!("https://127.0.0.1:{port}");
    // Only the verifying channel: the certificate is refused.
    let tg = Tollgate::start(&config(&[("strict", url.clone(), 10, "")]));
    let resp = chat(&tg, false).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert_eq!(served.load(Ordering::SeqCst), 0, "no request crossed TLS");
    let all = channels(&tg).await;
    assert_eq!(channel(&all, "strict")["state"], "cooldown");
    drop(tg);

    // With an opted-out channel behind it, the request goes through there.
    let tg = Tollgate::start(&config(&[
        ("strict", url.clone(), 10, ""),
        ("lax", url, 0, "insecure_skip_verify = true"),
    ]));
    let resp = chat(&tg, false).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "over tls");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // A prompt far larger than one TLS record: head and body are written
    // in parts, and the upstream reads exactly Content-Length bytes.
    let prompt = "long prompt ".repeat(100_000);
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    let all = channels(&tg).await;
    assert_eq!(channel(&all, "strict")["state"], "cooldown");
    assert_eq!(channel(&all, "lax")["state"], "up");
    assert_eq!(
        metric(&tg, r#"tollgate_channel_up{channel="strict"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&tg, r#"tollgate_channel_up{channel="lax"}"#).await,
        Some(1.0)
    );
    assert_no_panic(&tg);
}
