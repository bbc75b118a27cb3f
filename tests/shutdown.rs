//! SIGTERM: an idle gateway stops at once; requests in flight finish within
//! `shutdown_grace_seconds`, while new ones are turned away; what is still
//! running when the grace period ends is cut off.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;

const KEY: &str = "sk-shutdown-client";

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
        sha256_hex(KEY)
    )
}

/// Tollgate with `shutdown_grace_seconds = grace` (the harness uses 0).
fn start(upstream: &str, grace: u64) -> Tollgate {
    let rest = config(upstream);
    Tollgate::start_with(|port, admin, dir| {
        let head = server_section(port, admin, dir).replacen(
            "shutdown_grace_seconds = 0",
            &format!("shutdown_grace_seconds = {grace}"),
            1,
        );
        format!("{head}\n{rest}")
    })
}

/// An upstream that streams `events` chat chunks, `gap` apart.
async fn slow_stream(events: usize, gap: Duration) -> MockUpstream {
    let words: Vec<&str> = std::iter::repeat_n("word", events).collect();
    let events = chat_stream(&words, Some((5, events as u64)));
    MockUpstream::start(move |_| Reply::Sse {
        events: events.clone(),
        gap,
    })
    .await
}

/// Stops tollgate with SIGTERM; how long it took to exit (cleanly).
fn stop(tg: &mut Tollgate) -> Duration {
    let started = Instant::now();
    tg.signal("TERM");
    let status = tg.wait_exit(Duration::from_secs(30)).expect("exited");
    assert!(status.success(), "{status}");
    started.elapsed()
}

/// Nothing in flight: gone at once, not after the grace period (it took
/// ~11.5 s with the default 10 s grace).
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_gateway_stops_at_once_on_sigterm() {
    let up = slow_stream(1, Duration::ZERO).await;
    let mut tg = start(&up.base_url(), 10);
    // Served a request first: kept-alive connections count as idle.
    let http = client();
    let (status, _) = chat(&http, &tg, KEY, "m").await;
    assert_eq!(status, 200);
    let took = stop(&mut tg);
    eprintln!("idle gateway exited {took:?} after SIGTERM");
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    assert!(tg
        .log()
        .contains("tollgate stopped; ledger and store flushed"));
}

/// A stream in flight at SIGTERM runs to its end and is billed; meanwhile
/// new requests are refused and /readyz says not ready; the process exits
/// as soon as the stream is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_flight_finishes_and_then_the_process_exits() {
    let up = slow_stream(6, Duration::from_millis(300)).await;
    let mut tg = start(&up.base_url(), 10);
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .body(json!({"model": "m", "stream": true, "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("word"));

    let signalled = Instant::now();
    tg.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New requests are turned away (503, or no connection once the
    // listener is gone); the load balancer is told not to send more.
    match client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
    {
        Ok(resp) => {
            assert_eq!(resp.status(), 503);
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        Err(e) => assert!(e.is_connect() || e.is_request(), "{e}"),
    }
    let ready = client().get(tg.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    let mut rest = Vec::new();
    while let Some(piece) = body.next().await {
        rest.extend_from_slice(&piece.expect("the stream is not cut"));
    }
    let streamed = signalled.elapsed();
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    let took = stop_after_signal(&mut tg, signalled);
    assert!(
        took < streamed + Duration::from_secs(1),
        "exited {took:?} after SIGTERM, the stream ended after {streamed:?}"
    );
    // Billed from the stream's usage before the store was closed.
    assert_eq!(logged_usage(&tg, 0).await, (5, 6, 0, 0, false));
}

/// Waits for an exit already signalled; the time since `signalled`.
fn stop_after_signal(tg: &mut Tollgate, signalled: Instant) -> Duration {
    let status = tg.wait_exit(Duration::from_secs(30)).expect("exited");
    assert!(status.success(), "{status}");
    signalled.elapsed()
}

/// The grace period bounds the wait: a stream longer than it is cut off.
#[tokio::test(flavor = "multi_thread")]
async fn the_grace_period_bounds_the_wait() {
    let up = slow_stream(30, Duration::from_millis(200)).await;
    let mut tg = start(&up.base_url(), 1);
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .body(json!({"model": "m", "stream": true, "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let took = stop(&mut tg);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    let mut cut = false;
    while let Some(piece) = body.next().await {
        cut |= piece.is_err();
    }
    assert!(cut, "the stream ends without its last chunk");
}
