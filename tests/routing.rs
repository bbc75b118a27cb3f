//! Routing, rule by rule, as a table of (key, model) -> expected
//! channel and billing group, or status and error code. Every channel is
//! its own loopback upstream that answers with its name, and the billing
//! group is read back from `tollgate_requests_total{group,channel}`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A variable that no test environment sets: its channel must be disabled.
const UNSET_VAR: &str = "TOLLGATE_TEST_VARIABLE_THAT_IS_NEVER_SET";

struct Upstreams {
    a: MockUpstream,
    b: MockUpstream,
    c: MockUpstream,
    map: MockUpstream,
    off: MockUpstream,
    unset: MockUpstream,
    cool: MockUpstream,
}

fn table_config(u: &Upstreams) -> String {
    format!(
        r#"
[routing]
auto_groups = ["gb", "ga"]
cooldown_seconds = 30

[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[groups]]
name = "ga"
ratio = 0.5

[[groups]]
name = "gb"
ratio = 0.8

[[groups]]
name = "gc"
ratio = 1.5

[[groups]]
name = "gcool"
ratio = 1

[[models]]
name = "m-a"
input = 1
output = 2

[[models]]
name = "m-b"
input = 1
output = 2

[[models]]
name = "m-c"
input = 1
output = 2

[[models]]
name = "m-alias"
input = 1
output = 2

[[models]]
name = "m-cool"
input = 1
output = 2

[[channels]]
name = "chA"
type = "openai"
base_url = "{a}"
api_key = "up-a"
groups = ["ga"]
models = ["m-a"]

[[channels]]
name = "chB"
type = "openai"
base_url = "{b}"
api_key = "up-b"
groups = ["gb"]
models = ["m-a", "m-b"]

[[channels]]
name = "chC"
type = "openai"
base_url = "{c}"
api_key = "up-c"
groups = ["gc"]
models = ["m-c"]

[[channels]]
name = "chMap"
type = "openai"
base_url = "{map}"
api_key = "up-map"
groups = ["gc"]
models = []
model_map = {{ "m-alias" = "real-upstream-name" }}

# Higher priority than chC, but switched off: never chosen.
[[channels]]
name = "chOff"
type = "openai"
base_url = "{off}"
api_key = "up-off"
groups = ["gc"]
models = ["m-c"]
priority = 100
enabled = false

# Higher priority than chC, but its key variable is unset: disabled.
[[channels]]
name = "chUnset"
type = "openai"
base_url = "{unset}"
api_key = "${{{UNSET_VAR}}}"
groups = ["gc"]
models = ["m-c"]
priority = 100

[[channels]]
name = "chCool"
type = "openai"
base_url = "{cool}"
api_key = "up-cool"
groups = ["gcool"]
models = ["m-cool"]

[[users]]
name = "carol"
group = "gc"

[[users]]
name = "dave"

[[keys]]
name = "k-ga-gb"
key_sha256 = "{h_ga_gb}"
groups = ["ga", "gb"]

[[keys]]
name = "k-gb-ga-plain"
key = "sk-gb-ga"
groups = ["gb", "ga"]

[[keys]]
name = "k-auto"
key_sha256 = "{h_auto}"
groups = ["gc", "auto", "default"]

[[keys]]
name = "k-carol"
user = "carol"
key_sha256 = "{h_carol}"

[[keys]]
name = "k-dave"
user = "dave"
key_sha256 = "{h_dave}"

[[keys]]
name = "k-bare"
key_sha256 = "{h_bare}"

[[keys]]
name = "k-glob"
key_sha256 = "{h_glob}"
groups = ["ga", "gb"]
models = ["m-a*"]

[[keys]]
name = "k-gc"
key_sha256 = "{h_gc}"
groups = ["gc"]

[[keys]]
name = "k-cool"
key_sha256 = "{h_cool}"
groups = ["gcool"]
"#,
        a = u.a.base_url(),
        b = u.b.base_url(),
        c = u.c.base_url(),
        map = u.map.base_url(),
        off = u.off.base_url(),
        unset = u.unset.base_url(),
        cool = u.cool.base_url(),
        h_ga_gb = sha256_hex("sk-ga-gb"),
        h_auto = sha256_hex("sk-auto"),
        h_carol = sha256_hex("sk-carol"),
        h_dave = sha256_hex("sk-dave"),
        h_bare = sha256_hex("sk-bare"),
        h_glob = sha256_hex("sk-glob"),
        h_gc = sha256_hex("sk-gc"),
        h_cool = sha256_hex("sk-cool"),
    )
}

/// Where the key is presented.
#[derive(Clone, Copy, Debug)]
enum Via {
    Bearer,
    XApiKey,
    XGoogApiKey,
    /// `?key=` on an OpenAI path, where it must not count.
    QueryOnOpenAiPath,
}

#[derive(Debug)]
enum Expect {
    /// Served by this channel, billed to this group.
    Served {
        channel: &'static str,
        group: &'static str,
    },
    /// Refused by the gateway with this status and error code; the message
    /// contains the given text.
    Refused {
        status: u16,
        code: &'static str,
        message_has: &'static str,
    },
    /// The upstream's own error answer, passed on as is.
    UpstreamError { status: u16 },
}

use Expect::*;

struct Case {
    rule: &'static str,
    secret: &'static str,
    via: Via,
    model: &'static str,
    expect: Expect,
}

fn case(rule: &'static str, secret: &'static str, model: &'static str, expect: Expect) -> Case {
    Case {
        rule,
        secret,
        via: Via::Bearer,
        model,
        expect,
    }
}

fn served(channel: &'static str, group: &'static str) -> Expect {
    Served { channel, group }
}

fn refused(status: u16, code: &'static str, message_has: &'static str) -> Expect {
    Refused {
        status,
        code,
        message_has,
    }
}

fn table() -> Vec<Case> {
    vec![
        // §2.1 where the key is found; sha256 and plaintext keys.
        case("bearer", "sk-ga-gb", "m-a", served("chA", "ga")),
        Case {
            via: Via::XApiKey,
            ..case("x-api-key", "sk-ga-gb", "m-a", served("chA", "ga"))
        },
        Case {
            via: Via::XGoogApiKey,
            ..case("x-goog-api-key", "sk-ga-gb", "m-a", served("chA", "ga"))
        },
        Case {
            via: Via::QueryOnOpenAiPath,
            ..case(
                "?key= only counts on Gemini paths",
                "sk-ga-gb",
                "m-a",
                refused(401, "missing_api_key", "missing API key"),
            )
        },
        case(
            "unknown key",
            "sk-nobody",
            "m-a",
            refused(401, "invalid_api_key", "invalid API key"),
        ),
        case("plaintext key", "sk-gb-ga", "m-b", served("chB", "gb")),
        // §2.2 ordered groups: the first group serving the model wins.
        case("key order ga,gb", "sk-ga-gb", "m-b", served("chB", "gb")),
        case("key order gb,ga", "sk-gb-ga", "m-a", served("chB", "gb")),
        // `auto` expands in place: [gc, gb, ga, default].
        case("auto before default", "sk-auto", "m-a", served("chB", "gb")),
        case("group before auto", "sk-auto", "m-c", served("chC", "gc")),
        // No groups on the key: the user's group, else "default".
        case("user's group", "sk-carol", "m-c", served("chC", "gc")),
        case(
            "user's group only",
            "sk-carol",
            "m-a",
            refused(403, "model_not_in_group", "(gc)"),
        ),
        case(
            "user without group",
            "sk-dave",
            "m-c",
            served("chC", "default"),
        ),
        case(
            "no user, no groups",
            "sk-bare",
            "m-b",
            served("chB", "default"),
        ),
        // all_channels: default serves the mapped model of a gc channel too.
        case(
            "all_channels",
            "sk-bare",
            "m-alias",
            served("chMap", "default"),
        ),
        // §2.3 model allow-list (glob) before routing.
        case("allow-list match", "sk-glob", "m-a", served("chA", "ga")),
        case(
            "allow-list miss",
            "sk-glob",
            "m-b",
            refused(403, "model_not_allowed", "`m-b`"),
        ),
        // §2.4 unknown model vs. model outside the key's groups.
        case(
            "unknown model",
            "sk-ga-gb",
            "m-nope",
            refused(404, "model_not_found", "`m-nope`"),
        ),
        case(
            "model not in groups",
            "sk-ga-gb",
            "m-c",
            refused(403, "model_not_in_group", "(ga, gb)"),
        ),
        // Disabled channels (enabled=false, unset ${VAR}) are never picked
        // although their priority is higher.
        case(
            "disabled channels skipped",
            "sk-gc",
            "m-c",
            served("chC", "gc"),
        ),
        case("model_map", "sk-gc", "m-alias", served("chMap", "gc")),
        // §2.6: the only channel fails (its error is passed on), then it
        // cools down and nothing is left to try.
        case(
            "only channel fails",
            "sk-cool",
            "m-cool",
            UpstreamError { status: 503 },
        ),
        case(
            "every candidate cooling down",
            "sk-cool",
            "m-cool",
            refused(503, "no_available_channel", "`m-cool`"),
        ),
    ]
}

async fn send(http: &reqwest::Client, tg: &Tollgate, c: &Case) -> reqwest::Response {
    let body = json!({"model": c.model, "messages": [{"role": "user", "content": "hi"}]});
    let path = match c.via {
        Via::QueryOnOpenAiPath => format!("/v1/chat/completions?key={}", c.secret),
        _ => "/v1/chat/completions".to_string(),
    };
    let req = http.post(tg.url(&path)).body(body.to_string());
    let req = match c.via {
        Via::Bearer => req.bearer_auth(c.secret),
        Via::XApiKey => req.header("x-api-key", c.secret),
        Via::XGoogApiKey => req.header("x-goog-api-key", c.secret),
        Via::QueryOnOpenAiPath => req,
    };
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_routing_rule_as_a_table() {
    let u = Upstreams {
        a: marked_upstream("chA").await,
        b: marked_upstream("chB").await,
        c: marked_upstream("chC").await,
        map: marked_upstream("chMap").await,
        off: marked_upstream("chOff").await,
        unset: marked_upstream("chUnset").await,
        cool: MockUpstream::start(|_| {
            Reply::json(
                503,
                json!({"error": {"message": "overloaded", "code": "busy"}}),
            )
        })
        .await,
    };
    let tg = Tollgate::start(&table_config(&u));
    let http = client();
    for c in table() {
        let before = tg.metrics().await;
        let resp = send(&http, &tg, &c).await;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let ctx = format!(
            "rule `{}` ({} {:?}): got {status} {body}",
            c.rule, c.model, c.via
        );
        match c.expect {
            Served { channel, group } => {
                assert_eq!(status, 200, "{ctx}");
                assert_eq!(body["choices"][0]["message"]["content"], channel, "{ctx}");
                let labels = [
                    ("group", group),
                    ("channel", channel),
                    ("model", c.model),
                    ("code", "200"),
                ];
                let n = |text: &str| metric_sum(text, "tollgate_requests_total", &labels);
                // The request is counted just after its answer is complete.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                let mut after = tg.metrics().await;
                while n(&after) == n(&before) && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    after = tg.metrics().await;
                }
                assert_eq!(n(&after) - n(&before), 1.0, "billing group: {ctx}");
            }
            Refused {
                status: want,
                code,
                message_has,
            } => {
                assert_eq!(status, want, "{ctx}");
                assert_eq!(body["error"]["code"], code, "{ctx}");
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains(message_has), "{ctx}");
                assert!(!message.contains(c.secret), "no secret echoed: {ctx}");
            }
            UpstreamError { status: want } => {
                assert_eq!(status, want, "{ctx}");
                assert_eq!(body["error"]["code"], "busy", "{ctx}");
            }
        }
    }
    assert_eq!(u.off.count(), 0, "enabled = false is never chosen");
    assert_eq!(u.unset.count(), 0, "unset ${{VAR}} disables the channel");
    assert_eq!(u.cool.count(), 1, "a cooling channel is not tried again");
    assert!(tg.log().contains(UNSET_VAR), "the unset variable is named");

    // model_map: the upstream sees its own name; billing and the model list
    // use the client's name.
    let mapped = u.map.requests();
    assert!(!mapped.is_empty());
    assert!(mapped
        .iter()
        .all(|r| r.json()["model"] == "real-upstream-name"));
    let models: serde_json::Value = http
        .get(tg.url("/v1/models"))
        .bearer_auth("sk-gc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m-alias", "m-c"]);
}

fn tier_config(hi1: &MockUpstream, hi3: &MockUpstream, low: &MockUpstream) -> String {
    format!(
        r#"
[routing]
cooldown_seconds = 30

[[groups]]
name = "default"
ratio = 1
all_channels = true

[[models]]
name = "m"
input = 1
output = 1

[[channels]]
name = "hi1"
type = "openai"
base_url = "{}"
priority = 10
weight = 1

[[channels]]
name = "hi3"
type = "openai"
base_url = "{}"
priority = 10
weight = 3

[[channels]]
name = "low"
type = "openai"
base_url = "{}"
priority = 0
weight = 1000

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        hi1.base_url(),
        hi3.base_url(),
        low.base_url(),
        sha256_hex("sk-k"),
    )
}

/// An upstream that answers with `marker` until `down` is set, then 503.
async fn switchable_upstream(marker: &'static str, down: Arc<AtomicBool>) -> MockUpstream {
    MockUpstream::start(move |_| {
        if down.load(Ordering::SeqCst) {
            Reply::json(503, json!({"error": {"message": "down"}}))
        } else {
            Reply::json(200, chat_completion("m", marker, 1, 1))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_tiers_first_then_weighted_random_inside_a_tier() {
    let high_down = Arc::new(AtomicBool::new(false));
    let hi1 = switchable_upstream("hi1", high_down.clone()).await;
    let hi3 = switchable_upstream("hi3", high_down.clone()).await;
    let low = marked_upstream("low").await;
    let tg = Tollgate::start(&tier_config(&hi1, &hi3, &low));
    let http = client();

    const N: usize = 400;
    for _ in 0..N {
        let (status, _) = chat(&http, &tg, "sk-k", "m").await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        low.count(),
        0,
        "never a lower tier while a higher one is up, whatever its weight"
    );
    assert_eq!(hi1.count() + hi3.count(), N);
    // Weights 1:3 -> expect 100 on hi1; binomial sd ~8.7, allow ~5 sd.
    assert!(
        (57..=143).contains(&hi1.count()),
        "hi1 served {} of {N}, expected about {}",
        hi1.count(),
        N / 4
    );

    // Both high channels fail: the request fails over to the lower tier,
    // and while they cool down the lower tier serves directly.
    high_down.store(true, Ordering::SeqCst);
    let (hi1_before, hi3_before) = (hi1.count(), hi3.count());
    let (status, body) = chat(&http, &tg, "sk-k", "m").await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "low");
    assert_eq!(hi1.count() - hi1_before, 1);
    assert_eq!(hi3.count() - hi3_before, 1);
    for _ in 0..5 {
        let (_, body) = chat(&http, &tg, "sk-k", "m").await;
        assert_eq!(body["choices"][0]["message"]["content"], "low");
    }
    assert_eq!((hi1.count(), hi3.count()), (hi1_before + 1, hi3_before + 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn key_in_the_query_counts_only_on_gemini_paths() {
    let tg = Tollgate::start(&format!(
        r#"
[[groups]]
name = "default"
ratio = 1
all_channels = true

[[models]]
name = "gemini-2.5-flash"
input = 0.3
output = 2.5

[[channels]]
name = "mock"
type = "mock"

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        sha256_hex("sk-q")
    ));
    let http = client();
    let list = http
        .get(tg.url("/v1beta/models?key=sk-q"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let list: serde_json::Value = list.json().await.unwrap();
    assert_eq!(list["models"][0]["name"], "models/gemini-2.5-flash");

    let generate = http
        .post(tg.url("/v1beta/models/gemini-2.5-flash:generateContent?key=sk-q"))
        .body(json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(generate.status(), 200);

    let openai = http
        .get(tg.url("/v1/models?key=sk-q"))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 401, "?key= is not read on OpenAI paths");
    let wrong = http
        .get(tg.url("/v1beta/models?key=sk-wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED", "Gemini dialect");
    assert!(!tg.log().contains("sk-q"), "query keys are not logged");
}

fn affinity_config(a: &MockUpstream, b: &MockUpstream, with_b: bool) -> String {
    let b_channel = format!(
        "[[channels]]\nname = \"b\"\ntype = \"openai\"\nbase_url = \"{}\"\n",
        b.base_url()
    );
    format!(
        r#"
[routing]
cooldown_seconds = 1

[[groups]]
name = "default"
ratio = 1
all_channels = true

[[models]]
name = "m"
input = 1
output = 1

[[channels]]
name = "a"
type = "openai"
base_url = "{}"

{}

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        a.base_url(),
        if with_b { b_channel } else { String::new() },
        sha256_hex("sk-k"),
    )
}

/// A chat request of one session (OpenAI's `user`); the serving channel's
/// marker.
async fn session_chat(http: &reqwest::Client, tg: &Tollgate, session: &str) -> String {
    let resp = http
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-k")
        .body(
            json!({"model": "m", "user": session, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_stays_on_its_channel_until_the_channel_fails_or_goes() {
    let a_down = Arc::new(AtomicBool::new(false));
    let a = switchable_upstream("a", a_down.clone()).await;
    let b = marked_upstream("b").await;
    let tg = Tollgate::start(&affinity_config(&a, &b, true));
    let http = client();

    // Each session stays on one channel; the sessions spread by weight.
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for s in 0..60 {
        let session = format!("session-{s}");
        let first = session_chat(&http, &tg, &session).await;
        for _ in 0..4 {
            assert_eq!(session_chat(&http, &tg, &session).await, first, "{session}");
        }
        if first == "a" { &mut on_a } else { &mut on_b }.push(session);
    }
    // Weights 1:1 over 60 sessions: sd ~3.9, allow ~4 sd.
    assert!((14..=46).contains(&on_a.len()), "{} of 60 on a", on_a.len());
    assert_eq!(
        tg.wait_metric("tollgate_affinity_total", &[("result", "hit")], 240.0)
            .await,
        240.0
    );
    assert_eq!(
        metric_sum(
            &tg.metrics().await,
            "tollgate_affinity_total",
            &[("result", "miss")]
        ),
        60.0
    );

    // The session's channel fails: the request still succeeds, on the
    // other channel, and the session moves there for good.
    a_down.store(true, Ordering::SeqCst);
    let moved = &on_a[0];
    assert_eq!(session_chat(&http, &tg, moved).await, "b");
    a_down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await; // a's cooldown ends
    for _ in 0..5 {
        assert_eq!(session_chat(&http, &tg, moved).await, "b");
    }
    assert_eq!(
        tg.wait_metric("tollgate_affinity_total", &[("result", "moved")], 1.0)
            .await,
        1.0
    );
    // Sessions that were on a are still there.
    assert_eq!(session_chat(&http, &tg, &on_a[1]).await, "a");

    // A reload that removes b moves b's sessions to a.
    tg.write_config_by_rename(&affinity_config(&a, &b, false));
    assert_eq!(tg.wait_generation(2, Duration::from_secs(5)).await, 2);
    assert_eq!(session_chat(&http, &tg, &on_b[0]).await, "a");
    assert_eq!(session_chat(&http, &tg, moved).await, "a");
}
