//! Billing end to end: the real binary, a real OpenAI-format upstream on
//! loopback, the sled ledger on disk. Every expected cost is worked out
//! here by hand in integer nano-USD from the upstream's usage.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// gpt-4o: 2.50 / 10.00 / 1.25 USD per 1M tokens = nano-USD per token:
const IN: i64 = 2500;
const OUT: i64 = 10_000;
const CACHED: i64 = 1250;

/// Groups: cheap 0.5, std 0.8, full 1.0, premium 1.5.
fn groups_and_models() -> &'static str {
    r#"
[routing]
auto_groups = ["cheap", "full"]
max_attempts = 4

[[groups]]
name = "cheap"
ratio = 0.5

[[groups]]
name = "std"
ratio = 0.8

[[groups]]
name = "full"
ratio = 1.0

[[groups]]
name = "premium"
ratio = 1.5

[[models]]
name = "gpt-4o"
input = 2.50
output = 10.00
cached_input = 1.25
"#
}

fn channel(name: &str, base_url: &str, groups: &[&str]) -> String {
    format!(
        "\n[[channels]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{base_url}\"\n\
         api_key = \"sk-up\"\ngroups = {groups:?}\nmodels = [\"gpt-4o\"]\n"
    )
}

fn key(name: &str, secret: &str, extra: &str) -> String {
    format!(
        "\n[[keys]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\n{extra}\n",
        sha256_hex(secret)
    )
}

async fn chat(tg: &Tollgate, secret: &str, body: Value) -> reqwest::Response {
    client()
        .post(tg.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {secret}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn admin_usage(tg: &Tollgate, query: &str) -> Value {
    let (status, v) = get_json(&tg.admin_url(&format!("/admin/usage?{query}")), None).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn metrics(tg: &Tollgate) -> String {
    client()
        .get(tg.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `/admin/usage` until it shows `requests` requests (bounded).
async fn wait_for_requests(tg: &Tollgate, requests: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin_usage(tg, "").await;
        if v["total"]["requests"] == requests || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The caller's `/api/usage` once it counts `requests` requests. A request
/// is billed just after its last byte went out, so a client can be a moment
/// ahead of its own bill; this waits (bounded) for that moment.
async fn my_usage(tg: &Tollgate, secret: &str, requests: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = get_json(&tg.url("/api/usage"), Some(secret)).await;
        assert_eq!(status, 200, "{v}");
        if v["requests"] == requests || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stream_event(delta: &str) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": null}]});
    format!("data: {chunk}\n\n")
}

fn usage_event(usage: Value) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [], "usage": usage});
    format!("data: {chunk}\n\n")
}

/// Non-stream: 1000 prompt tokens of which 400 cached, 200 completion.
/// Stream: 50 prompt, 7 completion (usage chunk only when asked for).
fn billing_upstream() -> impl Fn(&Received) -> Reply + Send + Sync + 'static {
    |req| {
        let body = req.json();
        if body["stream"] == true {
            let mut events = vec![stream_event("Hel"), stream_event("lo")];
            if body["stream_options"]["include_usage"] == true {
                events.push(usage_event(openai_usage(50, 7, 0)));
            }
            events.push("data: [DONE]\n\n".into());
            Reply::Sse {
                events,
                gap: Duration::ZERO,
            }
        } else {
            let mut answer = chat_completion("gpt-4o", "hi", 1000, 200);
            answer["usage"] = openai_usage(1000, 200, 400);
            Reply::json(200, answer)
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_billed_exactly_and_every_view_agrees() {
    let up = MockUpstream::start(billing_upstream()).await;
    let tg = Tollgate::start(&format!(
        "{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["std"]),
        key("k", "sk-bill", "groups = [\"std\"]\nuser = \"alice\"")
            + "\n[[users]]\nname = \"alice\"\nbudget_usd = 5\n"
    ));

    let r = chat(
        &tg,
        "sk-bill",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let plain = chat(
        &tg,
        "sk-bill",
        json!({"model": "gpt-4o", "stream": true, "messages": []}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!plain.contains("usage"), "usage chunk hidden: {plain}");
    let asked = chat(
        &tg,
        "sk-bill",
        json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
               "messages": []}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        asked.contains("\"completion_tokens\":7"),
        "usage chunk kept when asked: {asked}"
    );
    let sent = up.requests();
    assert_eq!(sent[1].json()["stream_options"]["include_usage"], true);

    // By hand, ratio 0.8:
    // non-stream: 600 input + 400 cached + 200 output
    let non_stream = (600 * IN + 400 * CACHED + 200 * OUT) * 4 / 5;
    assert_eq!(non_stream, 3_200_000);
    // each stream: 50 input + 7 output
    let stream = (50 * IN + 7 * OUT) * 4 / 5;
    assert_eq!(stream, 156_000);
    let expected = non_stream + 2 * stream;

    // The caller's view (settled spend, whether or not the ledger has
    // written it yet).
    let me = my_usage(&tg, "sk-bill", 3).await;
    assert_eq!(me["spent_nano_usd"], expected);
    assert_eq!(me["requests"], 3);
    assert_eq!(me["tokens"]["input"], 600 + 50 + 50);
    assert_eq!(me["tokens"]["cached_input"], 400);
    assert_eq!(me["tokens"]["output"], 200 + 7 + 7);
    assert_eq!(me["user"]["spent_nano_usd"], expected);
    assert_eq!(me["remaining_nano_usd"], 5_000_000_000 - expected);

    // The ledger.
    let by_group = admin_usage(&tg, "group_by=group,model").await;
    let rows = by_group["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{by_group}");
    assert_eq!(rows[0]["group"], "std");
    assert_eq!(rows[0]["model"], "gpt-4o");
    assert_eq!(rows[0]["cost_nano_usd"], expected);
    assert_eq!(rows[0]["requests"], 3);
    assert_eq!(rows[0]["estimated"], 0);
    assert_eq!(by_group["total"]["cost_usd"], 0.003512);

    // The metrics.
    let text = metrics(&tg).await;
    let labels = [("group", "std"), ("model", "gpt-4o")];
    assert_eq!(
        metric_value(&text, "tollgate_spend_nano_usd_total", &labels),
        Some(expected as f64)
    );
    assert_eq!(
        metric_value(&text, "tollgate_spend_usd_total", &labels),
        Some(0.003512)
    );
    assert_eq!(
        metric_value(&text, "tollgate_user_spend_usd_total", &[("user", "alice")]),
        Some(0.003512)
    );
    assert_eq!(
        metric_value(
            &text,
            "tollgate_tokens_total",
            &[
                ("group", "std"),
                ("model", "gpt-4o"),
                ("kind", "cached_input")
            ]
        ),
        Some(400.0)
    );
    assert_eq!(
        metric_value(&text, "tollgate_budget_remaining_usd", &[("user", "alice")]),
        Some(4.996488)
    );
    assert_eq!(
        metric_value(&text, "tollgate_ledger_pending", &[]),
        Some(0.0)
    );

    // OpenAI legacy billing endpoints.
    let (_, sub) = get_json(
        &tg.url("/v1/dashboard/billing/subscription"),
        Some("sk-bill"),
    )
    .await;
    assert_eq!(sub["hard_limit_usd"], 5.0);
    let (_, usage) = get_json(&tg.url("/v1/dashboard/billing/usage"), Some("sk-bill")).await;
    assert_eq!(usage["total_usage"], 0.3512, "cents");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_gone_mid_stream_is_billed_the_upstream_usage() {
    let up = MockUpstream::start(|_| {
        let mut events: Vec<String> = (0..8).map(|i| stream_event(&format!("w{i} "))).collect();
        events.push(usage_event(openai_usage(120, 30, 20)));
        events.push("data: [DONE]\n\n".into());
        Reply::Sse {
            events,
            gap: Duration::from_millis(100),
        }
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["full"]),
        key("k", "sk-gone", "groups = [\"full\"]")
    ));
    let mut resp = chat(
        &tg,
        "sk-gone",
        json!({"model": "gpt-4o", "stream": true, "messages": []}),
    )
    .await;
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);

    let v = wait_for_requests(&tg, 1).await;
    assert_eq!(v["total"]["requests"], 1, "{v}");
    assert_eq!(v["total"]["estimated"], 0, "the real usage was read");
    assert_eq!(
        v["total"]["cost_nano_usd"],
        100 * IN + 20 * CACHED + 30 * OUT
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_cut_without_usage_is_estimated() {
    let mut raw =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for e in [stream_event("Hello"), stream_event(" there")] {
        raw.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
    }
    let up = MockUpstream::start(move |_| Reply::Raw(raw.clone())).await;
    let tg = Tollgate::start(&format!(
        "{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["std"]),
        key("k", "sk-cut", "groups = [\"std\"]")
    ));
    let resp = chat(
        &tg,
        "sk-cut",
        json!({"model": "gpt-4o", "stream": true,
               "messages": [{"role": "user", "content": "Hello there"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text().await.is_err(),
        "the client sees a truncated body"
    );

    let v = wait_for_requests(&tg, 1).await;
    let t = &v["total"];
    assert_eq!(t["estimated"], 1, "{v}");
    // cl100k: "Hello" + " there" = 2 output tokens; input: one message of
    // 4 framing tokens + "Hello there" (2).
    assert_eq!(
        (t["input"].as_i64(), t["output"].as_i64()),
        (Some(6), Some(2))
    );
    assert_eq!(t["cost_nano_usd"], (6 * IN + 2 * OUT) * 4 / 5);
    let (_, log) = get_json(&tg.admin_url("/admin/requests"), None).await;
    let entries = log["requests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(entries[0]["estimated"], true);
    assert_eq!(entries[0]["key"], "k");
    assert_eq!(entries[0]["group"], "std");
    assert_eq!(entries[0]["cost_nanos"], (6 * IN + 2 * OUT) * 4 / 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn spend_survives_a_reload_that_changes_the_budget() {
    let up = MockUpstream::start(fixed_usage_upstream(Duration::ZERO)).await;
    let rest = |budget: &str| {
        format!(
            "{}{}{}",
            groups_and_models(),
            channel("up", &up.base_url(), &["full"]),
            key(
                "k",
                "sk-reload",
                &format!("groups = [\"full\"]\nbudget_usd = {budget}")
            )
        )
    };
    let tg = Tollgate::start(&rest("1"));
    let once = json!({"model": "gpt-4o", "messages": []});
    assert_eq!(chat(&tg, "sk-reload", once.clone()).await.status(), 200);
    my_usage(&tg, "sk-reload", 1).await;
    let head = std::fs::read_to_string(&tg.config_path).unwrap();
    let head = &head[..head.find("\n[routing]").unwrap()];
    tg.write_config_by_rename(&format!("{head}\n{}", rest("0.0002")));
    tg.wait_generation(2, Duration::from_secs(10)).await;
    let me = my_usage(&tg, "sk-reload", 1).await;
    assert_eq!(
        me["spent_nano_usd"], PER_REQUEST,
        "spend kept across the reload"
    );
    assert_eq!(
        me["remaining_nano_usd"],
        200_000 - PER_REQUEST,
        "new budget applies"
    );
    assert_eq!(chat(&tg, "sk-reload", once.clone()).await.status(), 200);
    my_usage(&tg, "sk-reload", 2).await;
    let r = chat(&tg, "sk-reload", once).await;
    assert_eq!(r.status(), 429, "300000 spent of 200000");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_failover_bills_the_group_that_served() {
    let broken = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let good =
        MockUpstream::start(|_| Reply::json(200, chat_completion("gpt-4o", "ok", 100, 10))).await;
    let tg = Tollgate::start(&format!(
        "{}{}{}{}",
        groups_and_models(),
        channel("cheap-ch", &broken.base_url(), &["cheap"]),
        channel("full-ch", &good.base_url(), &["full"]),
        key("k", "sk-auto", "groups = [\"auto\"]")
    ));
    let r = chat(&tg, "sk-auto", json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(broken.count(), 1);
    wait_for_requests(&tg, 1).await;

    let v = admin_usage(&tg, "group_by=group,channel").await;
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["group"], "full");
    assert_eq!(rows[0]["channel"], "full-ch");
    // at 1.0, not at the 0.5 of the group tried first
    assert_eq!(rows[0]["cost_nano_usd"], 100 * IN + 10 * OUT);
    let text = metrics(&tg).await;
    assert_eq!(
        metric_value(
            &text,
            "tollgate_spend_nano_usd_total",
            &[("group", "full"), ("model", "gpt-4o")]
        ),
        Some((100 * IN + 10 * OUT) as f64)
    );
    assert_eq!(
        metric_value(
            &text,
            "tollgate_failovers_total",
            &[("from_group", "cheap"), ("to_group", "full")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn error_answers_cost_nothing() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            400,
            json!({"error": {"message": "bad", "type": "invalid_request_error"}}),
        )
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["full"]),
        key("k", "sk-err", "groups = [\"full\"]\nbudget_usd = 1")
    ));
    let r = chat(&tg, "sk-err", json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(r.status(), 400);
    let (_, me) = get_json(&tg.url("/api/usage"), Some("sk-err")).await;
    assert_eq!(me["spent_nano_usd"], 0);
    assert_eq!(me["requests"], 0);
    assert_eq!(
        me["remaining_nano_usd"], 1_000_000_000,
        "reservation released"
    );
    assert_eq!(admin_usage(&tg, "").await["total"]["requests"], 0);
}

/// Each answer: 20 prompt + 10 completion at ratio 1.0.
const PER_REQUEST: i64 = 20 * IN + 10 * OUT;

fn fixed_usage_upstream(gap: Duration) -> impl Fn(&Received) -> Reply + Send + Sync + 'static {
    move |req| {
        if req.json()["stream"] == true {
            let mut events = vec![stream_event("a"), stream_event("b")];
            events.push(usage_event(openai_usage(20, 10, 0)));
            events.push("data: [DONE]\n\n".into());
            Reply::Sse { events, gap }
        } else {
            Reply::json(200, chat_completion("gpt-4o", "ok", 20, 10))
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_cannot_overdraw_the_budget() {
    let up = MockUpstream::start(fixed_usage_upstream(Duration::from_millis(20))).await;
    // Budget for 10.5 requests.
    let budget_nanos = PER_REQUEST * 21 / 2;
    let tg = Arc::new(Tollgate::start(&format!(
        "{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["full"]),
        key(
            "k",
            "sk-budget",
            &format!(
                "groups = [\"full\"]\nbudget_usd = {}",
                budget_nanos as f64 / 1e9
            )
        )
    )));
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let tg = Arc::clone(&tg);
        let served = Arc::clone(&served);
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                let r = chat(
                    &tg,
                    "sk-budget",
                    json!({"model": "gpt-4o", "stream": true, "max_tokens": 10,
                           "messages": [{"role": "user", "content": "hi"}]}),
                )
                .await;
                let status = r.status().as_u16();
                let retry_after = r.headers().get("retry-after").cloned();
                let body = r.text().await.unwrap();
                if status == 200 {
                    served.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                assert_eq!(status, 429, "{body}");
                let code = serde_json::from_str::<Value>(&body).unwrap()["error"]["code"].clone();
                if code == "insufficient_quota" {
                    return;
                }
                assert_eq!(code, "rate_limit_exceeded", "{body}");
                assert!(retry_after.is_some());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never ran out of budget");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let served = served.load(Ordering::SeqCst) as i64;
    let me = my_usage(&tg, "sk-budget", served).await;
    let spent = me["spent_nano_usd"].as_i64().unwrap();
    assert_eq!(spent, served * PER_REQUEST, "billed = what clients got");
    assert!(
        spent >= budget_nanos,
        "budget used up: {spent} < {budget_nanos}"
    );
    assert!(
        spent - budget_nanos <= PER_REQUEST,
        "overdraw {} > one request {PER_REQUEST}",
        spent - budget_nanos
    );
    assert_eq!(served, 11);
    assert_eq!(me["remaining_nano_usd"], 0);
    let r = chat(&tg, "sk-budget", json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_quota");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_hit_exactly_at_their_numbers() {
    let up = MockUpstream::start(fixed_usage_upstream(Duration::from_millis(300))).await;
    let tg = Tollgate::start(&format!(
        "{}{}{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["full"]),
        key("rpm", "sk-rpm", "groups = [\"full\"]\nrpm = 3"),
        key("tpm", "sk-tpm", "groups = [\"full\"]\ntpm = 100"),
        key("conc", "sk-conc", "groups = [\"full\"]\nmax_concurrent = 2"),
    ));
    let once = json!({"model": "gpt-4o", "messages": []});
    async fn refused(r: reqwest::Response, what: &str) -> (u64, Value) {
        assert_eq!(r.status(), 429, "{what}");
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (wait, r.json().await.unwrap())
    }

    // rpm = 3: three pass, the 4th waits for the next of 3 slots a minute.
    for _ in 0..3 {
        assert_eq!(chat(&tg, "sk-rpm", once.clone()).await.status(), 200);
    }
    let (wait, body) = refused(chat(&tg, "sk-rpm", once.clone()).await, "rpm").await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!((19..=20).contains(&wait), "retry-after {wait}");

    // tpm = 100 at 30 tokens a request: admitted at 0, 30, 60, 90 tokens.
    for _ in 0..4 {
        assert_eq!(chat(&tg, "sk-tpm", once.clone()).await.status(), 200);
    }
    my_usage(&tg, "sk-tpm", 4).await; // tokens count once billed
    let (wait, body) = refused(chat(&tg, "sk-tpm", once.clone()).await, "tpm").await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        (12..=13).contains(&wait),
        "20 tokens over at 100/min: {wait}"
    );

    // max_concurrent = 2: two slow streams hold both slots.
    let slow = json!({"model": "gpt-4o", "stream": true, "messages": []});
    let a = chat(&tg, "sk-conc", slow.clone()).await;
    let b = chat(&tg, "sk-conc", slow.clone()).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let (wait, body) = refused(chat(&tg, "sk-conc", once.clone()).await, "max_concurrent").await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(wait, 1);
    a.text().await.unwrap();
    b.text().await.unwrap();
    my_usage(&tg, "sk-conc", 2).await; // slots are returned once billed
    assert_eq!(chat(&tg, "sk-conc", once.clone()).await.status(), 200);
}

/// A config whose ledger lives in `data`, so a second process finds it.
fn start_on(data: &std::path::Path, rest: &str, grace: u64) -> Tollgate {
    let data = data.to_path_buf();
    let rest = rest.to_string();
    Tollgate::start_with(move |port, admin, _| {
        format!(
            "{}\n[store]\nflush_ms = 250\n{rest}",
            server_section(port, admin, &data).replace(
                "shutdown_grace_seconds = 0",
                &format!("shutdown_grace_seconds = {grace}")
            )
        )
    })
}

/// Runs `clients` loops of non-stream requests until the gateway stops
/// answering; returns when each success completed.
async fn load(
    tg: &Tollgate,
    secret: &'static str,
    clients: usize,
) -> Vec<tokio::task::JoinHandle<Vec<Instant>>> {
    let url = tg.url("/v1/chat/completions");
    (0..clients)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut done = Vec::new();
                for _ in 0..20_000 {
                    let sent = http
                        .post(&url)
                        .header("authorization", format!("Bearer {secret}"))
                        .body(r#"{"model":"gpt-4o","messages":[]}"#)
                        .send()
                        .await;
                    let Ok(r) = sent else { break };
                    if r.status() != 200 {
                        break;
                    }
                    match r.json::<Value>().await {
                        Ok(v) if v["usage"]["completion_tokens"] == 10 => done.push(Instant::now()),
                        _ => break,
                    }
                }
                done
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_loses_nothing() {
    let up = MockUpstream::start(fixed_usage_upstream(Duration::ZERO)).await;
    let data = tempfile::tempdir().unwrap();
    let rest = format!(
        "{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["full"]),
        key("k", "sk-term", "groups = [\"full\"]")
    );
    let mut tg = start_on(data.path(), &rest, 2);
    let clients = load(&tg, "sk-term", 8).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    tg.signal("TERM");
    let mut served = 0;
    for c in clients {
        served += c.await.unwrap().len() as i64;
    }
    let status = tg.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "{}", tg.log());
    assert!(served > 20, "load ran: {served}");
    drop(tg);

    let tg = start_on(data.path(), &rest, 0);
    let v = admin_usage(&tg, "").await;
    assert_eq!(v["total"]["requests"], served, "{v}");
    assert_eq!(v["total"]["cost_nano_usd"], served * PER_REQUEST);
    let (_, me) = get_json(&tg.url("/api/usage"), Some("sk-term")).await;
    assert_eq!(
        me["spent_nano_usd"],
        served * PER_REQUEST,
        "totals reloaded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_at_most_the_last_batch_window() {
    let up = MockUpstream::start(fixed_usage_upstream(Duration::ZERO)).await;
    let data = tempfile::tempdir().unwrap();
    let rest = format!(
        "{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["full"]),
        key("k", "sk-kill", "groups = [\"full\"]")
    );
    let mut tg = start_on(data.path(), &rest, 0);
    let clients = load(&tg, "sk-kill", 8).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    tg.signal("KILL");
    let mut done = Vec::new();
    for c in clients {
        done.extend(c.await.unwrap());
    }
    tg.wait_exit(Duration::from_secs(10)).expect("killed");
    drop(tg);
    let served = done.len() as i64;
    let settled_early = done
        .iter()
        .filter(|t| killed_at.duration_since(**t) > Duration::from_secs(1))
        .count() as i64;
    assert!(settled_early > 10, "load ran: {settled_early}");

    let tg = start_on(data.path(), &rest, 0);
    let v = admin_usage(&tg, "").await;
    let kept = v["total"]["requests"].as_i64().unwrap();
    assert!(
        (settled_early..=served).contains(&kept),
        "ledger kept {kept}; {settled_early} finished more than 1 s before the kill, {served} in all"
    );
    assert_eq!(v["total"]["cost_nano_usd"], kept * PER_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_cli_prints_the_admin_table() {
    let up = MockUpstream::start(fixed_usage_upstream(Duration::ZERO)).await;
    let tg = Tollgate::start(&format!(
        "{}{}{}{}",
        groups_and_models(),
        channel("up", &up.base_url(), &["full", "premium"]),
        key("a", "sk-a", "groups = [\"full\"]"),
        key("b", "sk-b", "groups = [\"premium\"]"),
    ));
    let once = json!({"model": "gpt-4o", "messages": []});
    for secret in ["sk-a", "sk-b", "sk-b"] {
        assert_eq!(chat(&tg, secret, once.clone()).await.status(), 200);
    }
    wait_for_requests(&tg, 3).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["usage", "--by", "group", "--since", "24h", "-c"])
        .arg(&tg.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // 150000 nano at 1.0; two at 1.5 = 450000.
    assert_eq!(
        lines,
        vec![
            vec![
                "GROUP",
                "REQUESTS",
                "INPUT",
                "OUTPUT",
                "CACHED",
                "CACHE_WRITE",
                "CACHE_WRITE_1H",
                "COST_USD"
            ],
            vec!["full", "1", "20", "10", "0", "0", "0", "0.00015"],
            vec!["premium", "2", "40", "20", "0", "0", "0", "0.00045"],
            vec!["TOTAL", "3", "60", "30", "0", "0", "0", "0.0006"],
        ],
        "{table}"
    );
}

/// Billing is provider-agnostic: an Anthropic channel's cache reads and
/// writes are billed at their own prices, stream or not, and token counting
/// costs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn anthropic_cache_tokens_are_billed_at_their_prices() {
    let usage = json!({"input_tokens": 10, "cache_creation_input_tokens": 1000,
                       "cache_read_input_tokens": 5000, "output_tokens": 200});
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn", "stop_sequence": null, "usage": usage});
    let up = MockUpstream::start(move |req| {
        if req.path.ends_with("/count_tokens") {
            return Reply::json(200, json!({"input_tokens": 42}));
        }
        if req.json()["stream"] != true {
            return Reply::json(200, message.clone());
        }
        let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 10, "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 5000, "output_tokens": 1}}});
        let events = [
            start,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": 200}}),
            json!({"type": "message_stop"}),
        ];
        Reply::Sse {
            events: events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
                .collect(),
            gap: Duration::ZERO,
        }
    })
    .await;
    let tg = Tollgate::start(&format!(
        r#"
[[groups]]
name = "claude"
ratio = 0.5

[[models]]
name = "claude-sonnet-4-5"
input = 3.00
output = 15.00
cached_input = 0.30
cache_write = 3.75

[[channels]]
name = "anthropic"
type = "anthropic"
base_url = "{}"
api_key = "sk-ant-up"
groups = ["claude"]
{}"#,
        up.base_url(),
        key("k", "sk-claude", "groups = [\"claude\"]")
    ));
    let post = |path: &'static str, body: Value| {
        client()
            .post(tg.url(path))
            .header("x-api-key", "sk-claude")
            .header("anthropic-version", "2023-06-01")
            .body(body.to_string())
            .send()
    };
    let ask = json!({"model": "claude-sonnet-4-5", "max_tokens": 300,
                     "messages": [{"role": "user", "content": "Hello"}]});
    assert_eq!(
        post("/v1/messages", ask.clone()).await.unwrap().status(),
        200
    );
    let mut stream = ask.clone();
    stream["stream"] = json!(true);
    let text = post("/v1/messages", stream)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("message_stop"), "{text}");
    let count = post("/v1/messages/count_tokens", ask).await.unwrap();
    assert_eq!(count.status(), 200);

    // 0.5 x (10 x 3 + 200 x 15 + 5000 x 0.30 + 1000 x 3.75) per 1M tokens,
    // in nano-USD per token: 3000, 15000, 300, 3750.
    let each = (10 * 3000 + 200 * 15_000 + 5000 * 300 + 1000 * 3750) / 2;
    assert_eq!(each, 4_140_000);
    let me = my_usage(&tg, "sk-claude", 2).await;
    assert_eq!(me["spent_nano_usd"], 2 * each);
    assert_eq!(me["tokens"]["cache_write"], 2000);
    assert_eq!(me["tokens"]["cached_input"], 10_000);
    let v = admin_usage(&tg, "group_by=model").await;
    assert_eq!(v["total"]["requests"], 2, "counting is not billed: {v}");
    assert_eq!(v["total"]["cost_nano_usd"], 2 * each);
    assert_eq!(v["total"]["estimated"], 0);
}
