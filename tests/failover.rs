//! Failover (docs/architecture.md) against real loopback upstreams: which failures move
//! on to the next channel, cooldown and its probe, big bodies replayed
//! byte-identical, and answers that broke off after the first byte.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// One channel of a test config: name, base_url, priority, group.
struct Ch<'a> {
    name: &'a str,
    url: String,
    priority: i64,
    group: &'a str,
}

fn ch<'a>(name: &'a str, url: String, priority: i64) -> Ch<'a> {
    Ch {
        name,
        url,
        priority,
        group: "g1",
    }
}

/// A config whose groups all serve model `m` through `channels`; the key
/// `sk-f` has `key_groups`. The header timeout is 1 s so stalls are quick.
fn config(
    routing: &str,
    channels: &[Ch<'_>],
    key_groups: &str,
) -> impl FnOnce(u16, u16, &std::path::Path) -> String {
    let mut text = format!("[routing]\n{routing}\n");
    for g in ["g1", "g2"] {
        text.push_str(&format!("[[groups]]\nname = \"{g}\"\nratio = 1\n\n"));
    }
    text.push_str("[[models]]\nname = \"m\"\ninput = 1\noutput = 1\n\n");
    for c in channels {
        text.push_str(&format!(
            "[[channels]]\nname = \"{}\"\ntype = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-upstream-secret\"\ngroups = [\"{}\"]\npriority = {}\n\n",
            c.name, c.url, c.group, c.priority
        ));
    }
    text.push_str(&format!(
        "[[keys]]\nname = \"k\"\nkey_sha256 = \"{}\"\ngroups = {key_groups}\n",
        sha256_hex("sk-f")
    ));
    move |port, admin, data| {
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{}"
upstream_connect_timeout_ms = 1000
upstream_header_timeout_seconds = 1
upstream_idle_timeout_seconds = 5
shutdown_grace_seconds = 0
threads = 2

{text}"#,
            data.display()
        )
    }
}

async fn channel_state(tg: &Tollgate, name: &str) -> Value {
    let all = tg.admin_json("/admin/channels").await;
    all["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no channel {name} in {all}"))
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

/// The first channel fails in `failing`'s way; the request succeeds on the
/// second one and the first cools down for `cooldown` seconds (± 2).
async fn fails_over_and_cools_down(failing: MockUpstreamOrPort, reason: &str, cooldown: u64) {
    let good = marked_upstream("good").await;
    let (first_url, first) = match failing {
        MockUpstreamOrPort::Mock(m) => (m.base_url(), Some(m)),
        MockUpstreamOrPort::ClosedPort => (format!("http://127.0.0.1:{}", free_port()), None),
    };
    let tg = Tollgate::start_with(config(
        "cooldown_seconds = 30",
        &[ch("first", first_url, 10), ch("second", good.base_url(), 0)],
        r#"["g1"]"#,
    ));
    let (status, body) = chat(&client(), &tg, "sk-f", "m").await;
    assert_eq!(status, 200, "{reason}: {body}");
    assert_eq!(content(&body), "good", "{reason}");
    if let Some(first) = &first {
        assert_eq!(first.count(), 1, "{reason}: tried once");
    }

    let state = channel_state(&tg, "first").await;
    assert_eq!(state["state"], "cooldown", "{reason}: {state}");
    assert_eq!(state["consecutive_failures"], 1);
    let left = state["cooldown_remaining_seconds"].as_u64().unwrap();
    assert!(
        (cooldown.saturating_sub(2)..=cooldown).contains(&left),
        "{reason}: cooldown {left}, expected about {cooldown}"
    );
    assert!(state["last_error"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{reason}:")));
    assert_eq!(channel_state(&tg, "second").await["state"], "up");

    let metrics = tg.metrics().await;
    let up = |c| metric_sum(&metrics, "tollgate_channel_up", &[("channel", c)]);
    assert_eq!((up("first"), up("second")), (0.0, 1.0), "{reason}");
    let failures = metric_sum(
        &metrics,
        "tollgate_upstream_failures_total",
        &[("channel", "first"), ("reason", reason)],
    );
    assert_eq!(failures, 1.0, "{reason}");

    // While it cools down, the next request goes straight to the second.
    let (status, body) = chat(&client(), &tg, "sk-f", "m").await;
    assert_eq!((status, content(&body)), (200, "good"));
    if let Some(first) = &first {
        assert_eq!(first.count(), 1, "{reason}: not retried while cooling");
    }
    assert_eq!(good.count(), 2);
}

enum MockUpstreamOrPort {
    Mock(MockUpstream),
    ClosedPort,
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_fails_over() {
    fails_over_and_cools_down(MockUpstreamOrPort::ClosedPort, "connect", 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_503_fails_over() {
    let bad =
        MockUpstream::start(|_| Reply::json(503, json!({"error": {"message": "busy"}}))).await;
    fails_over_and_cools_down(MockUpstreamOrPort::Mock(bad), "5xx", 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_429_fails_over_and_a_longer_retry_after_wins() {
    let bad = MockUpstream::start(|_| {
        Reply::json(429, json!({"error": {"message": "slow down"}}))
            .with_header("retry-after", "120")
    })
    .await;
    fails_over_and_cools_down(MockUpstreamOrPort::Mock(bad), "429", 120).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_response_head_before_the_timeout_fails_over() {
    let stall = MockUpstream::start(|_| Reply::Stall(Duration::from_secs(5))).await;
    let started = Instant::now();
    fails_over_and_cools_down(MockUpstreamOrPort::Mock(stall), "timeout", 30).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 1 s header timeout applies"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_mib_body_is_replayed_byte_identical() {
    let bad =
        MockUpstream::start(|_| Reply::json(503, json!({"error": {"message": "busy"}}))).await;
    let good = marked_upstream("good").await;
    let tg = Tollgate::start_with(config(
        "",
        &[
            ch("first", bad.base_url(), 10),
            ch("second", good.base_url(), 0),
        ],
        r#"["g1"]"#,
    ));
    // 2 MiB of varied text, escapes and non-ASCII included, odd spacing kept.
    let mut content = String::with_capacity(2 << 20);
    let mut i = 0u32;
    while content.len() < 2 << 20 {
        content.push_str(&format!(
            "line {i}: \\\"quoted\\\" ünïcödé → {}\\n",
            i * 7919 % 10007
        ));
        i += 1;
    }
    let body = format!(
        "{{ \"messages\" : [{{\"role\":\"user\",\"content\":\"{content}\"}}],\n  \"model\":\"m\" }}"
    );
    assert!(body.len() > 2 << 20);
    serde_json::from_str::<Value>(&body).expect("the test body is JSON");
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-f")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(content_of(resp).await, "good");
    assert_eq!(bad.requests()[0].body, body.as_bytes(), "first attempt");
    assert_eq!(
        good.requests()[0].body,
        body.as_bytes(),
        "replay on failover"
    );
}

async fn content_of(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    content(&body).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_after_the_first_byte_is_not_retried_and_shows_as_truncated() {
    let event = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": null}]});
    let sse = format!("data: {event}\n\n");
    let raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{sse}\r\n",
        sse.len()
    );
    let broken = MockUpstream::start(move |_| Reply::Raw(raw.clone().into_bytes())).await;
    let good = marked_upstream("good").await;
    let tg = Tollgate::start_with(config(
        "",
        &[
            ch("first", broken.base_url(), 10),
            ch("second", good.base_url(), 0),
        ],
        r#"["g1"]"#,
    ));
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-f")
        .body(json!({"model": "m", "stream": true, "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut received = Vec::new();
    let mut clean_end = true;
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                clean_end = false;
                break;
            }
        }
    }
    // What arrived is passed on, then an error event the SDKs raise on.
    let error = json!({"error": {"message": "the provider's stream broke off; the answer is incomplete",
        "type": "server_error", "param": null, "code": "upstream_stream_broken"}});
    assert_eq!(
        String::from_utf8_lossy(&received),
        format!("{sse}data: {error}\n\n"),
        "what arrived is passed on"
    );
    assert!(
        !clean_end,
        "the client must see a broken answer, not a clean end"
    );
    assert_eq!(
        good.count(),
        0,
        "never retried once bytes reached the client"
    );
    assert_eq!(broken.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_attempts_bounds_the_tries_and_the_last_error_is_returned_as_is() {
    let a =
        MockUpstream::start(|_| Reply::json(503, json!({"error": {"message": "a is down"}}))).await;
    let b = MockUpstream::start(|_| Reply::Full {
        status: 500,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error": {"message": "b broke", "type": "server_error"}}"#.to_vec(),
    })
    .await;
    let c = marked_upstream("c").await;
    let tg = Tollgate::start_with(config(
        "max_attempts = 2",
        &[
            ch("a", a.base_url(), 30),
            ch("b", b.base_url(), 20),
            ch("c", c.base_url(), 10),
        ],
        r#"["g1"]"#,
    ));
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-f")
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500, "the last upstream status");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error": {"message": "b broke", "type": "server_error"}}"#,
        "the last upstream body, byte for byte"
    );
    assert_eq!((a.count(), b.count(), c.count()), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_fails_over_into_the_next_group() {
    let bad = MockUpstream::start(|_| Reply::json(502, json!({"error": {"message": "x"}}))).await;
    let good = marked_upstream("good").await;
    let tg = Tollgate::start_with(config(
        r#"auto_groups = ["g1", "g2"]"#,
        &[
            ch("in-g1", bad.base_url(), 0),
            Ch {
                group: "g2",
                ..ch("in-g2", good.base_url(), 0)
            },
        ],
        r#"["auto"]"#,
    ));
    let (status, body) = chat(&client(), &tg, "sk-f", "m").await;
    assert_eq!((status, content(&body)), (200, "good"));
    let metrics = tg.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_failovers_total",
            &[("from_group", "g1"), ("to_group", "g2")]
        ),
        1.0
    );
    assert_eq!(
        tg.wait_metric(
            "tollgate_requests_total",
            &[("group", "g2"), ("channel", "in-g2"), ("code", "200")],
            1.0
        )
        .await,
        1.0,
        "billed to the group that served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_401_becomes_502_without_the_provider_text() {
    let denied = MockUpstream::start(|_| {
        Reply::json(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-upst****cret"}}),
        )
    })
    .await;
    let tg = Tollgate::start_with(config("", &[ch("only", denied.base_url(), 0)], r#"["g1"]"#));
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-f")
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("Incorrect") && !text.contains("sk-upst"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "upstream_auth_error");
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(channel_state(&tg, "only").await["state"], "cooldown");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_json_upstream_error_reaches_the_client_as_a_json_error() {
    let html = MockUpstream::start(|_| Reply::Full {
        status: 503,
        headers: vec![("content-type".into(), "text/html".into())],
        body: b"<html><body>502 Bad Gateway</body></html>".to_vec(),
    })
    .await;
    let tg = Tollgate::start_with(config("", &[ch("only", html.base_url(), 0)], r#"["g1"]"#));
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-f")
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "the provider's status is kept");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "the provider answered 503 without a JSON error body",
                         "type": "server_error", "param": null, "code": "upstream_error"}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_probe_after_the_cooldown() {
    let recovered = Arc::new(AtomicBool::new(false));
    let flag = recovered.clone();
    // The slow answer blocks a thread: the mock runs on its own runtime so
    // that the test's timers and client keep running meanwhile.
    let mock_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flaky = mock_runtime
        .spawn(MockUpstream::start(move |_| {
            if flag.load(Ordering::SeqCst) {
                // Slow enough that other requests arrive while the probe runs.
                std::thread::sleep(Duration::from_millis(400));
                Reply::json(200, chat_completion("m", "flaky", 1, 1))
            } else {
                Reply::json(503, json!({"error": {"message": "down"}}))
            }
        }))
        .await
        .unwrap();
    let good = marked_upstream("good").await;
    let tg = Tollgate::start_with(config(
        "cooldown_seconds = 1",
        &[
            ch("flaky", flaky.base_url(), 10),
            ch("good", good.base_url(), 0),
        ],
        r#"["g1"]"#,
    ));
    let http = client();
    let (status, _) = chat(&http, &tg, "sk-f", "m").await;
    assert_eq!(status, 200);
    assert_eq!(flaky.count(), 1);

    // Cooldown over, still failing: exactly one probe, and the cooldown
    // doubles to 2 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..4 {
        let (status, body) = chat(&http, &tg, "sk-f", "m").await;
        assert_eq!((status, content(&body)), (200, "good"));
    }
    assert_eq!(flaky.count(), 2, "one probe after the cooldown");
    let state = channel_state(&tg, "flaky").await;
    assert_eq!(state["consecutive_failures"], 2);
    assert_eq!(state["cooldown_remaining_seconds"], 2);

    // Recovered but slow: concurrent requests during the probe go elsewhere.
    recovered.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let probe = {
        let http = http.clone();
        let url = tg.url("/v1/chat/completions");
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth("sk-f")
                .body(json!({"model": "m", "messages": []}).to_string())
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let others =
        futures_util::future::join_all((0..3).map(|_| chat(&http, &tg, "sk-f", "m"))).await;
    for (status, body) in &others {
        assert_eq!((*status, content(body)), (200, "good"), "no second probe");
    }
    assert_eq!(
        content(&probe.await.unwrap()),
        "flaky",
        "the probe succeeds"
    );
    assert_eq!(flaky.count(), 3);
    assert_eq!(channel_state(&tg, "flaky").await["state"], "up");
    let (_, body) = chat(&http, &tg, "sk-f", "m").await;
    assert_eq!(content(&body), "flaky", "back in service");
    drop(flaky);
    mock_runtime.shutdown_background();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_429_is_passed_on_and_then_the_wait_is_announced() {
    let limited = MockUpstream::start(|_| {
        Reply::json(
            429,
            json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}),
        )
        .with_header("retry-after", "120")
    })
    .await;
    let tg = Tollgate::start_with(config(
        "cooldown_seconds = 5",
        &[ch("only", limited.base_url(), 0)],
        r#"["g1"]"#,
    ));
    let send = || {
        client()
            .post(tg.url("/v1/chat/completions"))
            .bearer_auth("sk-f")
            .body(json!({"model": "m", "messages": []}).to_string())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 429, "the upstream's answer, as is");
    assert_eq!(first.headers()["retry-after"], "120");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let second = send().await.unwrap();
    assert_eq!(second.status(), 503);
    let wait: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (118..=120).contains(&wait),
        "Retry-After {wait}: the channel's remaining cooldown, not cooldown_seconds"
    );
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_available_channel");
    assert_eq!(limited.count(), 1);
}
