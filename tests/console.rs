//! The web console's serving (docs/operations.md, "Web console") and the
//! admin data its operator view reads: pages and assets on both listeners
//! with their security headers, channel attempts and failures over the
//! last hour, `/admin/config`, `/admin/usage` by hour, and
//! `/admin/requests?order=newest`. The pages themselves are driven in a
//! real browser by tests/python/test_console.py.

mod common;

use std::time::Duration;

use common::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn config(bad: &str, good: &str) -> String {
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
name = "bad"
type = "openai"
base_url = "{bad}"
api_key = "sk-upstream-bad"
priority = 10

[[channels]]
name = "good"
type = "openai"
base_url = "{good}"
api_key = "sk-upstream-good"

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        sha256_hex("sk-console")
    )
}

fn start(rest: &str) -> Tollgate {
    remember_secret("sk-console");
    remember_secret("admin-s3cret");
    Tollgate::start_with(|port, admin, dir| {
        format!(
            "{}admin_token = \"admin-s3cret\"\n{rest}",
            server_section(port, admin, dir)
        )
    })
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn pages_and_assets_on_both_listeners_before_any_key() {
    let up = marked_upstream("ok").await;
    let tg = start(&config(&up.base_url(), &up.base_url()));
    let page = get(&tg.url("/"), &[]).await;
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains(r#"src="/console/client.js""#));

    let js = get(&tg.url("/console/client.js"), &[]).await;
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(js.headers()["cache-control"], "no-cache");
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let again = get(&tg.url("/console/client.js"), &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.text().await.unwrap(), "");
    let css = get(&tg.url("/console/console.css"), &[]).await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // Unknown paths keep their JSON 404s; the console is GET only.
    let (status, body) = get_json(&tg.url("/console/nope.js"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_endpoint"))
    );
    let post = client().post(tg.url("/")).body("{}").send().await.unwrap();
    assert_eq!(post.status(), 404);

    // The admin listener's page and assets need no token; its data does.
    let admin = get(&tg.admin_url("/"), &[]).await;
    assert_eq!(admin.status(), 200);
    assert_eq!(admin.headers()["content-security-policy"], CSP);
    assert!(admin
        .text()
        .await
        .unwrap()
        .contains(r#"src="/console/admin.js""#));
    assert_eq!(
        get(&tg.admin_url("/console/admin.js"), &[]).await.status(),
        200
    );
    assert_eq!(get(&tg.admin_url("/admin/config"), &[]).await.status(), 401);
    assert_eq!(
        get(&tg.admin_url("/console/nope.js"), &[]).await.status(),
        401
    );
}

#[tokio::test]
async fn the_operator_view_data() {
    let bad = MockUpstream::start(|_| Reply::json(503, serde_json::json!({"error": "down"}))).await;
    let good = marked_upstream("ok").await;
    let tg = start(&config(&bad.base_url(), &good.base_url()));
    let admin = Some("admin-s3cret");
    let http = client();
    for _ in 0..3 {
        let (status, body) = chat(&http, &tg, "sk-console", "m").await;
        assert_eq!(status, 200, "{body}");
    }

    // The first request failed on `bad` (now cooling down) and every one
    // was served by `good`.
    let (status, channels) = get_json(&tg.admin_url("/admin/channels"), admin).await;
    assert_eq!(status, 200);
    let channel = |name: &str| {
        channels["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(channel("bad")["requests_last_hour"], 1);
    assert_eq!(channel("bad")["failures_last_hour"], 1);
    assert_eq!(channel("bad")["state"], "cooldown");
    assert_eq!(channel("good")["requests_last_hour"], 3);
    assert_eq!(channel("good")["failures_last_hour"], 0);

    // Spend by hour and group: 3 × (10 + 2) tokens at 1 USD per 1M.
    let (status, usage) = get_json(
        &tg.admin_url("/admin/usage?from=2h&group_by=hour,group"),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["group_by"], serde_json::json!(["hour", "group"]));
    let rows = usage["rows"].as_array().unwrap();
    let hour = chrono::Utc::now().format("%Y-%m-%dT%H:00Z").to_string();
    let last = rows.last().unwrap();
    assert_eq!(last["hour"], hour.as_str(), "{usage}");
    assert_eq!(last["group"], "default");
    assert_eq!(usage["total"]["cost_nano_usd"], 36_000);
    assert_eq!(usage["total"]["requests"], 3);

    // The newest requests first; the limit keeps the newest.
    let (_, all) = get_json(&tg.admin_url("/admin/requests?from=1h"), admin).await;
    let (_, newest) = get_json(
        &tg.admin_url("/admin/requests?from=1h&order=newest&limit=2"),
        admin,
    )
    .await;
    let at = |v: &serde_json::Value| -> Vec<u64> {
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["at_ms"].as_u64().unwrap())
            .collect()
    };
    let mut expected = at(&all)[1..].to_vec();
    expected.reverse();
    assert_eq!(at(&newest), expected);
    let (status, body) = get_json(&tg.admin_url("/admin/requests?order=up"), admin).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("`newest`"));
}

#[tokio::test]
async fn config_generation_and_the_last_reload_error() {
    let up = marked_upstream("ok").await;
    let good_config = config(&up.base_url(), &up.base_url());
    let tg = start(&good_config);
    let admin = Some("admin-s3cret");
    let (status, first) = get_json(&tg.admin_url("/admin/config"), admin).await;
    assert_eq!(status, 200);
    assert_eq!(first["generation"], 1);
    assert!(first["last_reload_error"].is_null());
    let loaded_at = first["loaded_at_ms"].as_u64().unwrap();

    let text = std::fs::read_to_string(&tg.config_path).unwrap();
    tg.write_config_in_place(&text.replace("ratio = 1\n", "ratio = \"one\"\n"));
    let refused = client()
        .post(tg.admin_url("/admin/reload"))
        .bearer_auth("admin-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let (_, after) = get_json(&tg.admin_url("/admin/config"), admin).await;
    assert_eq!(after["generation"], 1);
    assert_eq!(after["loaded_at_ms"].as_u64(), Some(loaded_at));
    let error = &after["last_reload_error"];
    let message = error["message"].as_str().unwrap();
    assert!(
        message.ends_with("tollgate.toml:14: `one` is not a decimal number"),
        "{message}"
    );
    assert!(error["at_ms"].as_u64().unwrap() >= loaded_at);

    tokio::time::sleep(Duration::from_millis(5)).await;
    tg.write_config_in_place(&text);
    let ok = client()
        .post(tg.admin_url("/admin/reload"))
        .bearer_auth("admin-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The file watch may have loaded the edit first: the answer says which.
    let generation = ok.json::<serde_json::Value>().await.unwrap()["generation"].clone();
    let (_, fixed) = get_json(&tg.admin_url("/admin/config"), admin).await;
    assert!(generation.as_u64().unwrap() >= 2);
    assert_eq!(fixed["generation"], generation);
    assert!(fixed["last_reload_error"].is_null());
    assert!(fixed["loaded_at_ms"].as_u64().unwrap() > loaded_at);
}

/// Alice's keys in two groups, and bob's; the user token of each.
fn users_config(upstream: &str) -> String {
    format!(
        r#"
[[groups]]
name = "default"
ratio = 1
all_channels = true

[[groups]]
name = "half"
ratio = 0.5
all_channels = true

[[models]]
name = "m"
input = 1
output = 1

[[channels]]
name = "up"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream-users"

[[users]]
name = "alice"
token_sha256 = "{}"

[[users]]
name = "bob"
token_sha256 = "{}"

[[keys]]
name = "alice-1"
user = "alice"
key_sha256 = "{}"

[[keys]]
name = "alice-2"
user = "alice"
groups = ["half"]
key_sha256 = "{}"

[[keys]]
name = "bob-1"
user = "bob"
key_sha256 = "{}"
"#,
        sha256_hex("ut-alice-console"),
        sha256_hex("ut-bob-console"),
        sha256_hex("sk-alice-1"),
        sha256_hex("sk-alice-2"),
        sha256_hex("sk-bob-1"),
    )
}

#[tokio::test]
async fn a_users_daily_usage_by_key_model_and_group() {
    let up = marked_upstream("ok").await;
    let tg = start(&users_config(&up.base_url()));
    let http = client();
    for key in ["sk-alice-1", "sk-alice-1", "sk-alice-2", "sk-bob-1"] {
        let (status, body) = chat(&http, &tg, key, "m").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, doc) = get_json(&tg.url("/api/usage/daily"), Some("ut-alice-console")).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["user"], "alice");
    let days: Vec<&str> = doc["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let today = chrono::Utc::now().date_naive();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29], today.to_string());
    assert_eq!(days[0], (today - chrono::Days::new(29)).to_string());
    // 12 tokens a request at 1 USD per 1M: 12,000 nano-USD at ratio 1,
    // 6,000 at 0.5. Bob's request is not hers.
    let rows: Vec<(String, String, String, String, u64, u64, i64)> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |f: &str| r[f].as_str().unwrap().to_string();
            (
                s("day"),
                s("key"),
                s("model"),
                s("group"),
                r["requests"].as_u64().unwrap(),
                r["input"].as_u64().unwrap() + r["output"].as_u64().unwrap(),
                r["cost_nano_usd"].as_i64().unwrap(),
            )
        })
        .collect();
    let day = today.to_string();
    let row = |key: &str, group: &str, n, tokens, cost| {
        let t = |s: &str| s.to_string();
        (t(&day), t(key), t("m"), t(group), n, tokens, cost)
    };
    assert_eq!(
        rows,
        vec![
            row("alice-1", "default", 2, 24, 24_000),
            row("alice-2", "half", 1, 12, 6_000)
        ]
    );

    // Bob sees only his; without a token or session, 401 in the OpenAI shape.
    let (_, bob) = get_json(&tg.url("/api/usage/daily"), Some("ut-bob-console")).await;
    assert_eq!(bob["rows"].as_array().unwrap().len(), 1);
    assert_eq!(bob["rows"][0]["key"], "bob-1");
    let (status, refused) = get_json(&tg.url("/api/usage/daily"), None).await;
    assert_eq!(status, 401);
    assert_eq!(refused["error"]["type"], "authentication_error");
    // An API key is not a user token.
    let (status, _) = get_json(&tg.url("/api/usage/daily"), Some("sk-alice-1")).await;
    assert_eq!(status, 401);
}
