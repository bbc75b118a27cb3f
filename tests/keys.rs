//! Users, sessions and managed keys (SPEC §9, docs/api.md "User API",
//! "Admin API", "Sessions"), against the real binary and store.

mod common;

use common::*;
use serde_json::{json, Value};

const ALICE_TOKEN: &str = "ut-alice-0123456789";
const BOB_TOKEN: &str = "ut-bob-0123456789";
const ADMIN_TOKEN: &str = "admin-secret-0123456789";
const ALICE_TOML_KEY: &str = "sk-alice-toml-0123456789";

/// Groups `default` (ratio 1), `claude` (0.5, selectable), `vip` (2, only
/// alice may pick it); the `mock` channel serves `m` in all of them.
fn config(admin_token: bool) -> String {
    config_with(admin_token, true)
}

fn config_with(admin_token: bool, vip: bool) -> String {
    format!(
        r#"{admin}
[routing]
auto_groups = ["claude", "default"]

[[groups]]
name = "default"
ratio = 1

[[groups]]
name = "claude"
ratio = 0.5
selectable = true

{vip_group}
[[models]]
name = "m"
input = 1
output = 2

[[channels]]
name = "mock"
type = "mock"
groups = {channel_groups}
models = ["m"]

[[keys]]
name = "alice-toml"
user = "alice"
key_sha256 = "{alice_toml}"
models = ["m"]
rpm = 100

[[users]]
name = "alice"
groups = {alice_groups}
token_sha256 = "{alice}"

[[users]]
name = "bob"
group = "claude"
token_sha256 = "{bob}"

[[users]]
name = "carol"
"#,
        admin = if admin_token {
            format!("admin_token = \"{ADMIN_TOKEN}\"")
        } else {
            String::new()
        },
        alice = sha256_hex(ALICE_TOKEN),
        bob = sha256_hex(BOB_TOKEN),
        alice_toml = sha256_hex(ALICE_TOML_KEY),
        vip_group = if vip {
            "[[groups]]\nname = \"vip\"\nratio = 2\n"
        } else {
            ""
        },
        alice_groups = if vip {
            r#"["vip", "auto"]"#
        } else {
            r#"["auto"]"#
        },
        channel_groups = if vip {
            r#"["default", "claude", "vip"]"#
        } else {
            r#"["default", "claude"]"#
        },
    )
}

fn start(admin_token: bool) -> Tollgate {
    start_config(config(admin_token), "")
}

/// Starts on `text` with `server_extra` lines in `[server]`.
fn start_config(text: String, server_extra: &str) -> Tollgate {
    let server_extra = server_extra.to_string();
    Tollgate::start_with(move |port, admin, dir| {
        let server = server_section(port, admin, dir);
        // admin_token belongs in [server]: its line is the text's first.
        format!("{server}{server_extra}\n{text}")
    })
}

/// The credential of a call: none, a bearer token, or a cookie.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Bearer(&'a str),
    Cookie(&'a str),
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(method: &str, url: &str, who: As<'_>, body: Option<Value>) -> Reply {
    call_typed(
        method,
        url,
        who,
        body.map(|b| (b.to_string(), "application/json")),
    )
    .await
}

async fn call_typed(method: &str, url: &str, who: As<'_>, body: Option<(String, &str)>) -> Reply {
    let mut req = client().request(method.parse().unwrap(), url);
    match who {
        As::Nobody => {}
        As::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
        As::Cookie(c) => req = req.header("cookie", c),
    }
    if let Some((text, content_type)) = body {
        req = req.header("content-type", content_type).body(text);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn set_cookie(r: &Reply) -> String {
    r.headers
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_string()
}

/// `name=value` of a Set-Cookie header, as a Cookie header sends it.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

fn code(r: &Reply) -> &str {
    r.body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn users_sign_in_with_their_token_and_sign_out() {
    let tg = start(false);
    let session = tg.url("/api/session");
    // Bearer works without a session.
    let r = call("GET", &session, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"user": "alice", "groups": ["default", "vip", "auto", "claude"],
               "default_group": "default", "max_keys": 50})
    );
    let r = call("GET", &session, As::Bearer(BOB_TOKEN), None).await;
    assert_eq!(r.body["groups"], json!(["claude"]));
    assert_eq!(r.body["default_group"], "claude");
    let r = call("GET", &session, As::Nobody, None).await;
    assert_eq!((r.status, code(&r)), (401, "sign_in_required"));
    let r = call("GET", &session, As::Bearer("ut-wrong-123456"), None).await;
    assert_eq!((r.status, code(&r)), (401, "invalid_user_token"));

    // Sign in: a cookie with the documented attributes.
    let r = call(
        "POST",
        &session,
        As::Nobody,
        Some(json!({"token": ALICE_TOKEN})),
    )
    .await;
    assert_eq!((r.status, &r.body), (200, &json!({"user": "alice"})));
    let cookie = set_cookie(&r);
    let pair = cookie_pair(&cookie);
    let id = pair.strip_prefix("tollgate_session=").unwrap();
    assert_eq!(id.len(), 43, "256 bits, base64url: {cookie}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    remember_secret(id);
    assert_eq!(
        cookie,
        format!("{pair}; HttpOnly; SameSite=Strict; Path=/"),
        "not Secure over plain HTTP"
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    let r = call("GET", &session, As::Cookie(&pair), None).await;
    assert_eq!((r.status, r.body["user"].as_str()), (200, Some("alice")));

    // A cookie request that changes state must be JSON.
    let r = call_typed(
        "DELETE",
        &session,
        As::Cookie(&pair),
        Some(("".into(), "text/plain")),
    )
    .await;
    assert_eq!((r.status, code(&r)), (403, "json_content_type_required"));
    let r = call("DELETE", &session, As::Cookie(&pair), Some(json!({}))).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        set_cookie(&r),
        "tollgate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    );
    let r = call("GET", &session, As::Cookie(&pair), None).await;
    assert_eq!((r.status, code(&r)), (401, "sign_in_required"));

    // Behind a TLS proxy the cookie is Secure.
    let r = client()
        .post(&session)
        .header("content-type", "application/json")
        .header("x-forwarded-proto", "https")
        .body(json!({"token": BOB_TOKEN}).to_string())
        .send()
        .await
        .unwrap();
    let secure = r.headers()["set-cookie"].to_str().unwrap().to_string();
    remember_secret(cookie_pair(&secure).split_once('=').unwrap().1);
    assert!(
        secure.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"),
        "{secure}"
    );

    // Bad sign-ins: each a clear 4xx.
    let form = call_typed(
        "POST",
        &session,
        As::Nobody,
        Some((
            format!("token={ALICE_TOKEN}"),
            "application/x-www-form-urlencoded",
        )),
    )
    .await;
    assert_eq!(
        (form.status, code(&form)),
        (403, "json_content_type_required")
    );
    let r = call_typed(
        "POST",
        &session,
        As::Nobody,
        Some(("{".into(), "application/json")),
    )
    .await;
    assert_eq!((r.status, code(&r)), (400, "invalid_json"));
    let r = call("POST", &session, As::Nobody, Some(json!({"token": 5}))).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"));
    // carol has no token: nothing signs her in.
    let r = call("POST", &session, As::Nobody, Some(json!({"token": ""}))).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited_per_address() {
    let tg = start(false);
    let session = tg.url("/api/session");
    for _ in 0..10 {
        let r = call(
            "POST",
            &session,
            As::Nobody,
            Some(json!({"token": "ut-wrong-123456"})),
        )
        .await;
        assert_eq!((r.status, code(&r)), (401, "invalid_user_token"));
    }
    for token in ["ut-wrong-123456", ALICE_TOKEN] {
        let r = call("POST", &session, As::Nobody, Some(json!({"token": token}))).await;
        assert_eq!((r.status, code(&r)), (429, "rate_limit_exceeded"));
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    let r = call("GET", &session, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!(r.status, 429, "bearer tokens count as sign-ins too");
}

#[tokio::test]
async fn the_admin_signs_in_with_the_admin_token() {
    let tg = start(true);
    let session = tg.admin_url("/admin/session");
    let channels = tg.admin_url("/admin/channels");
    let r = call("GET", &session, As::Nobody, None).await;
    assert_eq!((r.status, code(&r)), (401, "sign_in_required"));
    let r = call("GET", &channels, As::Nobody, None).await;
    assert_eq!(r.status, 401);
    let r = call(
        "POST",
        &session,
        As::Nobody,
        Some(json!({"token": "nope-nope"})),
    )
    .await;
    assert_eq!((r.status, code(&r)), (401, "invalid_user_token"));
    let r = call(
        "POST",
        &session,
        As::Nobody,
        Some(json!({"token": ADMIN_TOKEN})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"admin": true, "token_required": true}));
    let cookie = set_cookie(&r);
    assert!(
        cookie.starts_with("tollgate_admin=")
            && cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/"),
        "{cookie}"
    );
    let pair = cookie_pair(&cookie);
    remember_secret(pair.split_once('=').unwrap().1);
    let r = call("GET", &session, As::Cookie(&pair), None).await;
    assert_eq!(r.body, json!({"admin": true, "token_required": true}));
    let r = call("GET", &channels, As::Cookie(&pair), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call("GET", &channels, As::Bearer(ADMIN_TOKEN), None).await;
    assert_eq!(r.status, 200);
    // A cookie POST that is not JSON is refused; JSON goes through.
    let reload = tg.admin_url("/admin/reload");
    let r = call_typed(
        "POST",
        &reload,
        As::Cookie(&pair),
        Some(("".into(), "text/plain")),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call("POST", &reload, As::Cookie(&pair), Some(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call("DELETE", &session, As::Cookie(&pair), Some(json!({}))).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        set_cookie(&r),
        "tollgate_admin=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    );
    let r = call("GET", &channels, As::Cookie(&pair), None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn without_an_admin_token_the_admin_session_says_so() {
    let tg = start(false);
    let session = tg.admin_url("/admin/session");
    for method in ["GET", "POST"] {
        let r = call(method, &session, As::Nobody, Some(json!({}))).await;
        assert_eq!(
            (r.status, &r.body),
            (200, &json!({"admin": true, "token_required": false}))
        );
    }
    let (status, pricing) = get_json(&tg.url("/api/pricing"), None).await;
    assert_eq!(status, 200);
    let selectable: Vec<(String, bool)> = pricing["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().into(),
                g["selectable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        selectable,
        [
            ("default".into(), false),
            ("claude".into(), true),
            ("vip".into(), false)
        ]
    );
}

#[test]
fn user_token_prints_a_token_and_its_toml_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["user", "token", "--name", "alice"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .next()
        .and_then(|l| l.rsplit_once(": "))
        .map(|(_, t)| t.to_string())
        .unwrap();
    assert!(token.starts_with("ut-tg-") && token.len() == 54, "{token}");
    assert!(
        text.contains(&format!("token_sha256 = \"{}\"", sha256_hex(&token))),
        "{text}"
    );
}

// ---- Managed keys ----

async fn chat_with(tg: &Tollgate, key: &str) -> Reply {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    call(
        "POST",
        &tg.url("/v1/chat/completions"),
        As::Bearer(key),
        Some(body),
    )
    .await
}

/// Creates a key for a user through the user API; returns the reply.
async fn create(tg: &Tollgate, token: &str, body: Value) -> Reply {
    let r = call("POST", &tg.url("/api/keys"), As::Bearer(token), Some(body)).await;
    if let Some(secret) = r.body["key"].as_str() {
        remember_secret(secret);
    }
    r
}

/// Creates a key for a user through the user API; returns its secret.
async fn create_secret(tg: &Tollgate, token: &str, body: Value) -> String {
    create(tg, token, body).await.body["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The exact cost of an answer of the mock channel at `ratio_halves` / 2
/// (input 1 USD and output 2 USD per 1M tokens), in nano-USD.
fn mock_cost(reply: &Reply, ratio_halves: i64) -> i64 {
    let usage = &reply.body["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    );
    (p * 1000 + c * 2000) * ratio_halves / 2
}

/// `/admin/usage?{query}` once it counts `requests` (a request is settled
/// just after its answer, so the client may ask first).
async fn admin_usage(tg: &Tollgate, query: &str, requests: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let usage = tg.admin_json(&format!("/admin/usage?{query}")).await;
        if usage["total"]["requests"].as_u64() >= Some(requests)
            || std::time::Instant::now() > deadline
        {
            return usage;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_user_creates_lists_changes_and_revokes_her_keys() {
    let tg = start(false);
    let keys = tg.url("/api/keys");
    let r = create(
        &tg,
        ALICE_TOKEN,
        json!({"name": "laptop", "groups": ["claude", "default"],
        "budget_usd": 1.5, "budget_period": "month", "rpm": 60, "models": ["m*"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    let secret = r.body["key"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("sk-tg-") && secret.len() == 54,
        "{secret}"
    );
    let created = r.body["created"].as_str().unwrap().to_string();
    let expected = json!({"name": "laptop", "key": secret, "hint": &secret[50..], "managed": true,
        "groups": ["claude", "default"], "inactive_groups": [], "groups_set_by": "user",
        "models": ["m*"], "budget_usd": 1.5,
        "budget_period": "month", "spent_usd": 0.0, "spent_nano_usd": 0,
        "budget_left_usd": 1.5, "budget_left_nano_usd": 1_500_000_000i64, "expires": null,
        "rpm": 60, "tpm": null, "max_concurrent": null, "allow_ips": [], "disabled": false,
        "created": created});
    assert_eq!(r.body, expected);

    // The key works at once, and is billed to the group that served it.
    let answer = chat_with(&tg, &secret).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let cost = mock_cost(&answer, 1);
    let mut usage = admin_usage(&tg, "group_by=key,group&key=laptop", 1).await;
    usage["rows"][0].as_object_mut().unwrap().remove("cost_usd");
    assert_eq!(
        usage["rows"],
        json!([{"key": "laptop", "group": "claude", "requests": 1, "estimated": 0,
        "input": answer.body["usage"]["prompt_tokens"], "output": answer.body["usage"]["completion_tokens"],
        "cached_input": 0, "cache_write": 0, "cache_write_1h": 0, "cost_nano_usd": cost}]),
        "{usage}"
    );

    // Listed with her TOML key (no hint: only its hash is known), spend included.
    let r = call("GET", &keys, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!(r.status, 200);
    let rows = r.body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", r.body);
    assert_eq!(rows[0]["name"], "alice-toml");
    assert_eq!(
        (&rows[0]["managed"], &rows[0]["hint"], &rows[0]["rpm"]),
        (&json!(false), &Value::Null, &json!(100))
    );
    assert_eq!(rows[0]["groups"], json!(["default"]));
    assert_eq!(rows[1]["spent_nano_usd"], json!(cost));
    assert_eq!(rows[1]["budget_left_nano_usd"], json!(1_500_000_000 - cost));
    assert!(
        rows.iter().all(|row| row.get("key").is_none()),
        "no secret in a listing"
    );

    // Change: any subset of the fields; null clears one.
    let patch = tg.url("/api/keys/laptop");
    let r = call(
        "PATCH",
        &patch,
        As::Bearer(ALICE_TOKEN),
        Some(json!({"groups": ["vip"], "rpm": null, "tpm": 5000, "disabled": false})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (&r.body["groups"], &r.body["rpm"], &r.body["tpm"]),
        (&json!(["vip"]), &Value::Null, &json!(5000))
    );
    assert!(r.body.get("key").is_none());
    let answer = chat_with(&tg, &secret).await;
    let usage = admin_usage(&tg, "group_by=group&key=laptop&group=vip", 1).await;
    assert_eq!(
        usage["total"]["cost_nano_usd"],
        json!(mock_cost(&answer, 4)),
        "{usage}"
    );
    // Disabled: refused at once; enabled again: works.
    let r = call(
        "PATCH",
        &patch,
        As::Bearer(ALICE_TOKEN),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(r.body["disabled"], true);
    assert_eq!(code(&chat_with(&tg, &secret).await), "invalid_api_key");
    call(
        "PATCH",
        &patch,
        As::Bearer(ALICE_TOKEN),
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(chat_with(&tg, &secret).await.status, 200);

    // Revoked: gone from the list, refused at once, its name stays taken.
    let r = call("DELETE", &patch, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!((r.status, &r.body), (204, &Value::Null));
    assert_eq!(code(&chat_with(&tg, &secret).await), "invalid_api_key");
    let r = call("GET", &keys, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = create(&tg, ALICE_TOKEN, json!({"name": "laptop"})).await;
    assert_eq!((r.status, code(&r)), (409, "key_name_taken"));
    let r = call("DELETE", &patch, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!((r.status, code(&r)), (404, "key_not_found"));

    // No groups: her default group. Metrics and logs never hold a secret.
    let r = create(&tg, ALICE_TOKEN, json!({"name": "plain"})).await;
    assert_eq!(r.body["groups"], json!(["default"]));
    let metrics = tg.metrics().await;
    assert_no_secret_in(&metrics, "/metrics");
    assert!(!metrics.contains(&secret[6..]));
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_error() {
    let tg = start_config(config(false), "max_keys_per_user = 2");
    let keys = tg.url("/api/keys");
    let bad = |body: Value| create(&tg, ALICE_TOKEN, body);
    for (body, status, code_, says) in [
        (
            json!({"name": "a b"}),
            400,
            "invalid_field",
            "1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
        ),
        (json!({}), 400, "invalid_field", "invalid name"),
        (
            json!({"name": "x", "groups": ["claude", "secret"]}),
            403,
            "group_not_allowed",
            "\"secret\"",
        ),
        (
            json!({"name": "x", "groups": ["vip"], "budget_usd": -1}),
            400,
            "invalid_field",
            "budget_usd must be a number of USD from 0 to 1000000000",
        ),
        (
            json!({"name": "x", "rpm": 0}),
            400,
            "invalid_field",
            "rpm must be a whole number from 1 to",
        ),
        (
            json!({"name": "x", "tpm": "many"}),
            400,
            "invalid_field",
            "tpm must be",
        ),
        (
            json!({"name": "x", "max_concurrent": 1e9}),
            400,
            "invalid_field",
            "max_concurrent must be",
        ),
        (
            json!({"name": "x", "allow_ips": ["10.0.0.0/33"]}),
            400,
            "invalid_field",
            "allow_ips entry \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            json!({"name": "x", "models": ["[m"]}),
            400,
            "invalid_field",
            "models glob",
        ),
        (
            json!({"name": "x", "expires": "2001-01-01T00:00:00Z"}),
            400,
            "invalid_field",
            "expires must be in the future",
        ),
        (
            json!({"name": "x", "budget_period": "day"}),
            400,
            "invalid_field",
            "budget_period needs a budget_usd",
        ),
        (
            json!({"name": "x", "user": "bob"}),
            400,
            "invalid_field",
            "unknown or read-only field \"user\"",
        ),
        (
            json!({"name": "x", "disabled": true}),
            400,
            "invalid_field",
            "unknown or read-only field \"disabled\"",
        ),
        (
            json!({"name": "alice-toml"}),
            409,
            "key_name_taken",
            "is taken",
        ),
    ] {
        let r = bad(body.clone()).await;
        assert_eq!((r.status, code(&r)), (status, code_), "{body}: {}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    // bob may not pick alice's groups.
    let r = create(&tg, BOB_TOKEN, json!({"name": "x", "groups": ["vip"]})).await;
    assert_eq!((r.status, code(&r)), (403, "group_not_allowed"));
    let r = create(&tg, BOB_TOKEN, json!({"name": "x", "groups": ["default"]})).await;
    assert_eq!(
        (r.status, code(&r)),
        (403, "group_not_allowed"),
        "default is alice's default, not bob's"
    );
    // Malformed JSON and non-objects.
    for text in ["{", "[1]", ""] {
        let r = call_typed(
            "POST",
            &keys,
            As::Bearer(ALICE_TOKEN),
            Some((text.into(), "application/json")),
        )
        .await;
        assert_eq!((r.status, code(&r)), (400, "invalid_json"), "{text:?}");
    }
    // The cap (here 2): revoked keys do not count.
    assert_eq!(bad(json!({"name": "k1"})).await.status, 201);
    assert_eq!(bad(json!({"name": "k2"})).await.status, 201);
    let r = bad(json!({"name": "k3"})).await;
    assert_eq!((r.status, code(&r)), (403, "too_many_keys"), "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("holds 2 keys"));
    call(
        "DELETE",
        &tg.url("/api/keys/k1"),
        As::Bearer(ALICE_TOKEN),
        None,
    )
    .await;
    assert_eq!(bad(json!({"name": "k3"})).await.status, 201);
    // PATCH: a TOML key is the file's; bad fields as for POST; wrong methods.
    let r = call(
        "PATCH",
        &tg.url("/api/keys/alice-toml"),
        As::Bearer(ALICE_TOKEN),
        Some(json!({"rpm": 5})),
    )
    .await;
    assert_eq!((r.status, code(&r)), (409, "key_not_managed"));
    let r = call(
        "DELETE",
        &tg.url("/api/keys/alice-toml"),
        As::Bearer(ALICE_TOKEN),
        None,
    )
    .await;
    assert_eq!((r.status, code(&r)), (409, "key_not_managed"));
    let k2 = tg.url("/api/keys/k2");
    for (body, code_) in [
        (json!({"name": "new"}), "invalid_field"),
        (json!({"groups": ["nope"]}), "group_not_allowed"),
        (json!({"rpm": -1}), "invalid_field"),
        (json!({"budget_period": "week"}), "invalid_field"),
    ] {
        let r = call("PATCH", &k2, As::Bearer(ALICE_TOKEN), Some(body.clone())).await;
        assert_eq!(code(&r), code_, "{body}: {}", r.body);
    }
    for text in ["{\"rpm\": ", "null"] {
        let r = call_typed(
            "PATCH",
            &k2,
            As::Bearer(ALICE_TOKEN),
            Some((text.into(), "application/json")),
        )
        .await;
        assert_eq!((r.status, code(&r)), (400, "invalid_json"), "{text:?}");
    }
    let r = call("PUT", &k2, As::Bearer(ALICE_TOKEN), Some(json!({}))).await;
    assert_eq!((r.status, code(&r)), (404, "unknown_endpoint"));
    let r = call("DELETE", &keys, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!((r.status, code(&r)), (404, "unknown_endpoint"));
    let huge = json!({"name": "big", "models": ["x".repeat(70_000)]});
    let r = call("POST", &keys, As::Bearer(ALICE_TOKEN), Some(huge)).await;
    assert_eq!((r.status, code(&r)), (413, "request_too_large"));
    // The admin API reads bodies the same way.
    let admin = tg.admin_url("/admin/keys");
    let r = call_typed(
        "POST",
        &admin,
        As::Nobody,
        Some(("{".into(), "application/json")),
    )
    .await;
    assert_eq!((r.status, code(&r)), (400, "invalid_json"));
    let r = call("PUT", &admin, As::Nobody, Some(json!({}))).await;
    assert_eq!((r.status, code(&r)), (404, "unknown_endpoint"));
    let r = call("GET", &keys, As::Nobody, None).await;
    assert_eq!((r.status, code(&r)), (401, "sign_in_required"));
    // An API key is not a user token.
    let r = call("GET", &keys, As::Bearer(ALICE_TOML_KEY), None).await;
    assert_eq!((r.status, code(&r)), (401, "invalid_user_token"));
}

#[tokio::test]
async fn bob_never_sees_or_touches_alices_keys() {
    let tg = start(false);
    let r = create(&tg, ALICE_TOKEN, json!({"name": "alice-phone"})).await;
    assert_eq!(r.status, 201);
    let secret = r.body["key"].as_str().unwrap().to_string();
    let r = call("GET", &tg.url("/api/keys"), As::Bearer(BOB_TOKEN), None).await;
    assert_eq!(r.body["data"], json!([]), "bob has no keys");
    let theirs = tg.url("/api/keys/alice-phone");
    let r = call(
        "PATCH",
        &theirs,
        As::Bearer(BOB_TOKEN),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!((r.status, code(&r)), (404, "key_not_found"));
    let r = call("DELETE", &theirs, As::Bearer(BOB_TOKEN), None).await;
    assert_eq!((r.status, code(&r)), (404, "key_not_found"));
    let r = call(
        "DELETE",
        &tg.url("/api/keys/alice-toml"),
        As::Bearer(BOB_TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (404, "key_not_found"),
        "not even that it is a TOML key"
    );
    // The name is global, but the refusal does not say whose it is.
    let r = create(&tg, BOB_TOKEN, json!({"name": "alice-phone"})).await;
    assert_eq!((r.status, code(&r)), (409, "key_name_taken"));
    assert!(!r.body.to_string().contains("alice\""), "{}", r.body);
    assert_eq!(chat_with(&tg, &secret).await.status, 200, "still works");
    // Through the console too: bob's session sees only bob's.
    let r = call(
        "POST",
        &tg.url("/api/session"),
        As::Nobody,
        Some(json!({"token": BOB_TOKEN})),
    )
    .await;
    let pair = cookie_pair(&set_cookie(&r));
    remember_secret(pair.split_once('=').unwrap().1);
    let r = call("GET", &tg.url("/api/keys"), As::Cookie(&pair), None).await;
    assert_eq!(r.body["data"], json!([]));
    let r = call(
        "POST",
        &tg.url("/api/keys"),
        As::Cookie(&pair),
        Some(json!({"name": "bob-1"})),
    )
    .await;
    assert_eq!((r.status, &r.body["groups"]), (201, &json!(["claude"])));
    remember_secret(r.body["key"].as_str().unwrap());
    let r = call_typed(
        "DELETE",
        &tg.url("/api/keys/bob-1"),
        As::Cookie(&pair),
        None,
    )
    .await;
    assert_eq!((r.status, code(&r)), (403, "json_content_type_required"));
}

/// One HTTP/1.1 request on an open connection; the status and body.
async fn on_connection(conn: &mut tokio::net::TcpStream, key: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed");
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap();
        if raw.len() >= end + 4 + length {
            let status = head[9..12].parse().unwrap();
            return (
                status,
                serde_json::from_slice(&raw[end + 4..end + 4 + length]).unwrap(),
            );
        }
    }
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request_of_a_kept_alive_connection() {
    let tg = start(false);
    let secret = create(&tg, BOB_TOKEN, json!({"name": "kept"})).await.body["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", tg.port))
        .await
        .unwrap();
    assert_eq!(on_connection(&mut conn, &secret).await.0, 200);
    assert_eq!(on_connection(&mut conn, &secret).await.0, 200);
    // A change of groups on the same connection: bob may only pick claude,
    // so the admin moves the key to default, and the next request bills it there.
    let r = call(
        "PATCH",
        &tg.admin_url("/admin/keys/kept"),
        As::Nobody,
        Some(json!({"groups": ["default"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(on_connection(&mut conn, &secret).await.0, 200);
    let usage = admin_usage(&tg, "group_by=group&key=kept", 3).await;
    let groups: Vec<&str> = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["claude", "default"], "{usage}");
    let r = call(
        "DELETE",
        &tg.url("/api/keys/kept"),
        As::Bearer(BOB_TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let (status, body) = on_connection(&mut conn, &secret).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
}

#[tokio::test]
async fn managed_keys_survive_a_restart_and_their_secret_is_stored_nowhere() {
    let mut tg = start(false);
    let r = create(
        &tg,
        ALICE_TOKEN,
        json!({"name": "durable", "groups": ["claude"], "budget_usd": 2}),
    )
    .await;
    let secret = r.body["key"].as_str().unwrap().to_string();
    let r = create(&tg, ALICE_TOKEN, json!({"name": "gone"})).await;
    let revoked = r.body["key"].as_str().unwrap().to_string();
    call(
        "DELETE",
        &tg.url("/api/keys/gone"),
        As::Bearer(ALICE_TOKEN),
        None,
    )
    .await;
    assert_eq!(chat_with(&tg, &secret).await.status, 200);
    // Killed, not stopped: a key is on disk once its creation answered.
    tg.kill_and_restart();
    assert_eq!(chat_with(&tg, &secret).await.status, 200);
    assert_eq!(code(&chat_with(&tg, &revoked).await), "invalid_api_key");
    let r = create(&tg, ALICE_TOKEN, json!({"name": "gone"})).await;
    assert_eq!(
        r.status, 409,
        "a revoked key's name stays taken across restarts"
    );
    let r = call("GET", &tg.url("/api/keys"), As::Bearer(ALICE_TOKEN), None).await;
    let names: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice-toml", "durable"]);
    // Sessions do not survive a restart (they live in memory).
    tg.signal("TERM");
    tg.wait_exit(std::time::Duration::from_secs(10))
        .expect("stopped");
    let mut files = vec![tg.dir.path().join("data")];
    let mut searched = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        searched += bytes.len();
        for s in [&secret, &revoked] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds a secret",
                path.display()
            );
        }
    }
    assert!(searched > 0);
}

#[tokio::test]
async fn a_reload_that_removes_a_group_or_user_stops_what_the_keys_lost() {
    let tg = start(false);
    let both = create_secret(
        &tg,
        ALICE_TOKEN,
        json!({"name": "both", "groups": ["vip", "claude"]}),
    )
    .await;
    let only = create_secret(
        &tg,
        ALICE_TOKEN,
        json!({"name": "only-vip", "groups": ["vip"]}),
    )
    .await;
    let bobs = create_secret(&tg, BOB_TOKEN, json!({"name": "bobs"})).await;
    let before = std::fs::read_to_string(&tg.config_path).unwrap();
    let bob_block = before.find("[[users]]\nname = \"bob\"").unwrap();
    let bob_end = bob_block + before[bob_block..].find("\n[[users]]").unwrap();
    let after = format!("{}{}", &before[..bob_block], &before[bob_end + 1..])
        .replace("[[groups]]\nname = \"vip\"\nratio = 2\n", "")
        .replace(
            r#"["default", "claude", "vip"]"#,
            r#"["default", "claude"]"#,
        )
        .replace(r#"groups = ["vip", "auto"]"#, r#"groups = ["auto"]"#);
    tg.write_config_by_rename(&after);
    let r = call("POST", &tg.admin_url("/admin/reload"), As::Nobody, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let log = tg.log();
    for warning in [
        "managed key \"both\" (user \"alice\"): groups [\"vip\"] are no longer in the config; the key stops routing to them",
        "managed key \"only-vip\" (user \"alice\"): groups [\"vip\"] are no longer in the config",
        "managed key \"only-vip\" (user \"alice\"): none of its groups is left; the key stops working",
        "managed key \"bobs\" (user \"bob\"): its user is no longer in the config; the key stops working",
    ] {
        assert!(log.contains(warning), "{warning}:\n{log}");
    }
    let answer = chat_with(&tg, &both).await;
    assert_eq!(answer.status, 200);
    let usage = admin_usage(&tg, "group_by=group&key=both", 1).await;
    assert_eq!(usage["rows"][0]["group"], "claude", "{usage}");
    assert_eq!(
        usage["total"]["cost_nano_usd"],
        json!(mock_cost(&answer, 1))
    );
    assert_eq!(code(&chat_with(&tg, &only).await), "invalid_api_key");
    assert_eq!(code(&chat_with(&tg, &bobs).await), "invalid_api_key");
    // Kept in the store: the config brings them back.
    tg.write_config_by_rename(&before);
    call("POST", &tg.admin_url("/admin/reload"), As::Nobody, None).await;
    assert_eq!(chat_with(&tg, &only).await.status, 200);
    assert_eq!(chat_with(&tg, &bobs).await.status, 200);
}

#[tokio::test]
async fn the_admin_manages_anyones_keys() {
    let tg = start(true);
    let admin = tg.admin_url("/admin/keys");
    let r = call("GET", &admin, As::Nobody, None).await;
    assert_eq!((r.status, code(&r)), (401, "sign_in_required"));
    let r = call("GET", &admin, As::Bearer("wrong-admin-token"), None).await;
    assert_eq!(r.status, 401);
    let token = As::Bearer(ADMIN_TOKEN);
    // Any group of the config, for any user.
    let r = call(
        "POST",
        &admin,
        token,
        Some(json!({"user": "bob", "name": "ops-1", "groups": ["vip"]})),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["user"], &r.body["groups"]),
        (201, &json!("bob"), &json!(["vip"])),
        "{}",
        r.body
    );
    let ops = r.body["key"].as_str().unwrap().to_string();
    remember_secret(&ops);
    create(&tg, ALICE_TOKEN, json!({"name": "a-1"})).await;
    for (body, status, code_) in [
        (json!({"name": "ops-2"}), 400, "invalid_field"),
        (
            json!({"name": "ops-2", "user": "nobody"}),
            400,
            "invalid_field",
        ),
        (
            json!({"name": "ops-2", "user": "bob", "groups": ["nope"]}),
            403,
            "group_not_allowed",
        ),
        (
            json!({"name": "ops-1", "user": "bob"}),
            409,
            "key_name_taken",
        ),
        (
            json!({"name": "alice-toml", "user": "bob"}),
            409,
            "key_name_taken",
        ),
    ] {
        let r = call("POST", &admin, token, Some(body.clone())).await;
        assert_eq!((r.status, code(&r)), (status, code_), "{body}: {}", r.body);
    }
    let r = call("GET", &admin, token, None).await;
    let rows: Vec<(String, Value, bool)> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_string(),
                k["user"].clone(),
                k["managed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a-1".into(), json!("alice"), true),
            ("alice-toml".into(), json!("alice"), false),
            ("ops-1".into(), json!("bob"), true)
        ]
    );
    let r = call("GET", &tg.admin_url("/admin/keys?user=bob"), token, None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = call(
        "PATCH",
        &tg.admin_url("/admin/keys/a-1"),
        token,
        Some(json!({"max_concurrent": 3})),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["max_concurrent"], &r.body["user"]),
        (200, &json!(3), &json!("alice"))
    );
    let r = call(
        "PATCH",
        &tg.admin_url("/admin/keys/alice-toml"),
        token,
        Some(json!({"rpm": 1})),
    )
    .await;
    assert_eq!((r.status, code(&r)), (409, "key_not_managed"));
    let r = call(
        "PATCH",
        &tg.admin_url("/admin/keys/nope"),
        token,
        Some(json!({"rpm": 1})),
    )
    .await;
    assert_eq!((r.status, code(&r)), (404, "key_not_found"));
    assert_eq!(chat_with(&tg, &ops).await.status, 200);
    let r = call("DELETE", &tg.admin_url("/admin/keys/ops-1"), token, None).await;
    assert_eq!(r.status, 204);
    assert_eq!(code(&chat_with(&tg, &ops).await), "invalid_api_key");

    // The CLI goes through the same API, with the config's admin token.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("-c")
            .arg(&tg.config_path)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&[
        "key",
        "create",
        "--user",
        "alice",
        "--groups",
        "claude,default",
        "--name",
        "cli-key",
    ]);
    assert!(ok, "{err}");
    let secret = out
        .lines()
        .next()
        .unwrap()
        .rsplit_once(": ")
        .unwrap()
        .1
        .to_string();
    remember_secret(&secret);
    assert!(out.contains("groups: [\"claude\",\"default\"]"), "{out}");
    assert_eq!(chat_with(&tg, &secret).await.status, 200);
    let (ok, out, err) = cli(&["key", "create", "--user", "bob"]);
    assert!(ok, "{err}");
    remember_secret(out.lines().next().unwrap().rsplit_once(": ").unwrap().1);
    assert!(out.starts_with("secret of key \"bob-"), "{out}");
    let (ok, _, err) = cli(&["key", "create", "--user", "nobody"]);
    assert!(!ok && err.contains("400: unknown user \"nobody\""), "{err}");
    let (ok, out, _) = cli(&["key", "revoke", "cli-key"]);
    assert!(ok && out.contains("revoked key \"cli-key\""), "{out}");
    assert_eq!(code(&chat_with(&tg, &secret).await), "invalid_api_key");
    let (ok, _, err) = cli(&["key", "revoke", "cli-key"]);
    assert!(
        !ok && err.contains("404: no key named \"cli-key\""),
        "{err}"
    );
    let (ok, _, err) = cli(&["key", "revoke", "no such/key"]);
    assert!(
        !ok && err.contains("404: no key has the name in this path: key names are 1 to 64"),
        "{err}"
    );
}

// ---- Races, exact budgets, encoded names, the open admin listener ----

#[tokio::test]
async fn a_change_racing_a_revocation_never_brings_the_key_back() {
    let tg = start_config(config(false), "max_keys_per_user = 100");
    let n = 12;
    let mut secrets = Vec::new();
    for i in 0..n {
        let r = create(&tg, ALICE_TOKEN, json!({"name": format!("race-{i}")})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        secrets.push(r.body["key"].as_str().unwrap().to_string());
    }
    let mut races = Vec::new();
    for i in 0..n {
        let url = tg.url(&format!("/api/keys/race-{i}"));
        races.push(tokio::spawn(async move {
            let patch = call(
                "PATCH",
                &url,
                As::Bearer(ALICE_TOKEN),
                Some(json!({"rpm": 5})),
            );
            let revoke = call("DELETE", &url, As::Bearer(ALICE_TOKEN), None);
            let (patch, revoke) = tokio::join!(patch, revoke);
            assert_eq!(revoke.status, 204, "{}", revoke.body);
            // Before the revocation: changed; after it: gone.
            assert!([200, 404].contains(&patch.status), "{}", patch.body);
        }));
    }
    for race in races {
        race.await.unwrap();
    }
    let r = call("GET", &tg.url("/api/keys"), As::Bearer(ALICE_TOKEN), None).await;
    let names: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice-toml"], "every raced key stays revoked");
    for secret in &secrets {
        assert_eq!(code(&chat_with(&tg, secret).await), "invalid_api_key");
    }
}

#[tokio::test]
async fn a_budget_is_kept_to_the_nano_usd_as_sent() {
    let tg = start(false);
    let body = r#"{"name": "exact", "budget_usd": 123456789.123456789}"#;
    let r = call_typed(
        "POST",
        &tg.url("/api/keys"),
        As::Bearer(ALICE_TOKEN),
        Some((body.into(), "application/json")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    remember_secret(r.body["key"].as_str().unwrap());
    assert_eq!(
        r.body["budget_left_nano_usd"],
        json!(123_456_789_123_456_789i64)
    );
    let r = call_typed(
        "PATCH",
        &tg.url("/api/keys/exact"),
        As::Bearer(ALICE_TOKEN),
        Some((r#"{"budget_usd": 0.000000001}"#.into(), "application/json")),
    )
    .await;
    assert_eq!(r.body["budget_left_nano_usd"], json!(1), "{}", r.body);
}

#[tokio::test]
async fn key_names_in_paths_are_percent_decoded() {
    let tg = start(false);
    let r = create(&tg, ALICE_TOKEN, json!({"name": "my-key.1"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // `-` and `.` encoded, as some clients do.
    let encoded = tg.url("/api/keys/my%2Dkey%2E1");
    let r = call(
        "PATCH",
        &encoded,
        As::Bearer(ALICE_TOKEN),
        Some(json!({"rpm": 7})),
    )
    .await;
    assert_eq!((r.status, &r.body["rpm"]), (200, &json!(7)), "{}", r.body);
    // No key can have this name: the 404 says what names are.
    let r = call(
        "DELETE",
        &tg.url("/api/keys/my%20key"),
        As::Bearer(ALICE_TOKEN),
        None,
    )
    .await;
    assert_eq!((r.status, code(&r)), (404, "key_not_found"));
    assert_eq!(
        r.body["error"]["message"],
        "no key has the name in this path: key names are 1 to 64 characters of A-Z, a-z, \
         0-9, '.', '_' and '-'"
    );
    let r = call("DELETE", &encoded, As::Bearer(ALICE_TOKEN), None).await;
    assert_eq!(r.status, 204);
    let r = call(
        "GET",
        &tg.admin_url("/admin/keys?user=al%69ce"),
        As::Nobody,
        None,
    )
    .await;
    let names: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice-toml"], "{}", r.body);
}

#[tokio::test]
async fn the_open_admin_listener_refuses_web_pages_of_other_sites() {
    let tg = start(false);
    let keys = tg.admin_url("/admin/keys");
    let body = json!({"user": "alice", "name": "csrf"}).to_string();
    // A plain form post from another site (text/plain: no preflight).
    let r = client()
        .post(&keys)
        .header("origin", "http://evil.test")
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["error"]["code"], "cross_site_request", "{r}");
    let r = client()
        .post(tg.admin_url("/admin/reload"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // DNS rebinding: a page of evil.test whose name now points here.
    let r = client()
        .get(tg.admin_url("/admin/keys"))
        .header("host", "evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = call("GET", &keys, As::Nobody, None).await;
    assert_eq!(
        r.body["data"].as_array().unwrap().len(),
        1,
        "nothing created"
    );
    // Programs (no Origin) and the admin's own console (same origin) work.
    let origin = tg.admin_url("");
    let r = client()
        .post(&keys)
        .header("origin", origin.trim_end_matches('/'))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    remember_secret(r.json::<Value>().await.unwrap()["key"].as_str().unwrap());
    let r = client()
        .post(tg.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The `name=value` of a fresh session cookie for `token` at `url`.
async fn signed_in(url: &str, token: &str) -> String {
    let r = call("POST", url, As::Nobody, Some(json!({"token": token}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let pair = cookie_pair(&set_cookie(&r));
    remember_secret(pair.split_once('=').unwrap().1);
    pair
}

#[tokio::test]
async fn sessions_end_when_the_token_is_rotated_or_the_user_removed() {
    let tg = start(true);
    let session = tg.url("/api/session");
    let admin_session = tg.admin_url("/admin/session");
    let alice = signed_in(&session, ALICE_TOKEN).await;
    let bob = signed_in(&session, BOB_TOKEN).await;
    let admin = signed_in(&admin_session, ADMIN_TOKEN).await;
    for (url, cookie) in [
        (&session, &alice),
        (&session, &bob),
        (&admin_session, &admin),
    ] {
        let r = call("GET", url, As::Cookie(cookie), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // alice's token rotated, bob removed, a new admin token.
    let new_alice = "ut-alice-rotated-0123456789";
    let new_admin = "admin-rotated-0123456789";
    remember_secret(new_alice);
    remember_secret(new_admin);
    let before = std::fs::read_to_string(&tg.config_path).unwrap();
    let after = before
        .replace(&sha256_hex(ALICE_TOKEN), &sha256_hex(new_alice))
        .replace(ADMIN_TOKEN, new_admin)
        .replace(
            &format!(
                "[[users]]\nname = \"bob\"\ngroup = \"claude\"\ntoken_sha256 = \"{}\"\n",
                sha256_hex(BOB_TOKEN)
            ),
            "",
        );
    assert_ne!(before, after);
    tg.write_config_by_rename(&after);
    let r = call(
        "POST",
        &tg.admin_url("/admin/reload"),
        As::Bearer(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (url, cookie) in [
        (&session, &alice),
        (&session, &bob),
        (&admin_session, &admin),
    ] {
        let r = call("GET", url, As::Cookie(cookie), None).await;
        assert_eq!((r.status, code(&r)), (401, "sign_in_required"), "{url}");
    }
    let r = call("GET", &session, As::Bearer(new_alice), None).await;
    assert_eq!(r.body["user"], "alice");
    let r = call("GET", &session, As::Bearer(BOB_TOKEN), None).await;
    assert_eq!((r.status, code(&r)), (401, "invalid_user_token"));
}

#[tokio::test]
async fn creating_and_revoking_in_a_loop_is_limited_per_day() {
    let tg = start_config(config(false), "max_keys_per_user = 1");
    // 4 x max_keys_per_user a day, revoked keys included.
    for i in 0..4 {
        let r = create(&tg, BOB_TOKEN, json!({"name": format!("loop-{i}")})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let url = tg.url(&format!("/api/keys/loop-{i}"));
        let r = call("DELETE", &url, As::Bearer(BOB_TOKEN), None).await;
        assert_eq!(r.status, 204);
    }
    let r = create(&tg, BOB_TOKEN, json!({"name": "loop-4"})).await;
    assert_eq!(
        (r.status, code(&r)),
        (429, "rate_limit_exceeded"),
        "{}",
        r.body
    );
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((86_300..=86_400).contains(&wait), "{wait}");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "you created 4 keys in the last 24 hours, the most allowed (4 x [server] \
             max_keys_per_user, revoked keys included): retry in"
        ),
        "{message}"
    );
    // Others, and the admin for bob, are not held back.
    assert_eq!(
        create(&tg, ALICE_TOKEN, json!({"name": "hers"}))
            .await
            .status,
        201
    );
    let r = call(
        "POST",
        &tg.admin_url("/admin/keys"),
        As::Nobody,
        Some(json!({"user": "bob", "name": "by-admin"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    remember_secret(r.body["key"].as_str().unwrap());
}

/// The groups `key` was billed to in `/admin/usage` once it has
/// `requests`, as (group, requests, nano-USD) rows.
async fn billed_groups(tg: &Tollgate, key: &str, requests: u64) -> Vec<(String, u64, i64)> {
    let usage = admin_usage(tg, &format!("group_by=group&key={key}"), requests).await;
    let mut rows: Vec<(String, u64, i64)> = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap().to_string(),
                r["requests"].as_u64().unwrap(),
                r["cost_nano_usd"].as_i64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn a_key_stops_routing_a_group_its_user_may_no_longer_pick() {
    let tg = start(false);
    let two = create_secret(
        &tg,
        ALICE_TOKEN,
        json!({"name": "two", "groups": ["claude", "default"]}),
    )
    .await;
    let only = create_secret(
        &tg,
        ALICE_TOKEN,
        json!({"name": "only", "groups": ["claude"]}),
    )
    .await;
    let by_admin = json!({"user": "alice", "name": "by-admin", "groups": ["claude"]});
    let r = call(
        "POST",
        &tg.admin_url("/admin/keys"),
        As::Nobody,
        Some(by_admin),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["groups_set_by"]),
        (201, &json!("admin")),
        "{}",
        r.body
    );
    let admins = r.body["key"].as_str().unwrap().to_string();
    remember_secret(&admins);
    let first = chat_with(&tg, &two).await;
    assert_eq!(first.status, 200, "{}", first.body);

    // `claude` is no longer selectable: alice may not pick it any more.
    let selectable = std::fs::read_to_string(&tg.config_path).unwrap();
    let closed = selectable.replace(
        "name = \"claude\"\nratio = 0.5\nselectable = true",
        "name = \"claude\"\nratio = 0.5\nselectable = false",
    );
    assert_ne!(closed, selectable);
    tg.write_config_by_rename(&closed);
    let r = call("POST", &tg.admin_url("/admin/reload"), As::Nobody, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let log = tg.log();
    for warning in [
        "managed key \"two\" (user \"alice\"): its user may no longer pick groups [\"claude\"]; \
         the key stops routing to them (kept in the store, routed again if she may pick them again)",
        "managed key \"only\" (user \"alice\"): its user may no longer pick groups [\"claude\"]",
        "managed key \"only\" (user \"alice\"): none of its groups is left; the key stops working",
    ] {
        assert!(log.contains(warning), "{warning}:\n{log}");
    }
    assert!(!log.contains("managed key \"by-admin\""), "{log}");
    // Her key answers from her other group, at its ratio 1; the key left
    // with none is unknown, as one whose groups all left the config.
    let second = chat_with(&tg, &two).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let r = chat_with(&tg, &only).await;
    assert_eq!((r.status, code(&r)), (401, "invalid_api_key"), "{}", r.body);
    assert_eq!(
        billed_groups(&tg, "two", 2).await,
        [
            ("claude".to_string(), 1, mock_cost(&first, 1)),
            ("default".to_string(), 1, mock_cost(&second, 2)),
        ]
    );
    // The admin's key keeps the group.
    let a1 = chat_with(&tg, &admins).await;
    assert_eq!(a1.status, 200, "{}", a1.body);
    // Her list shows the groups as stored, and which are inactive.
    let list = call("GET", &tg.url("/api/keys"), As::Bearer(ALICE_TOKEN), None).await;
    let rows: Vec<(&str, &Value, &Value, &Value)> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["managed"] == json!(true))
        .map(|k| {
            let name = k["name"].as_str().unwrap();
            (
                name,
                &k["groups"],
                &k["inactive_groups"],
                &k["groups_set_by"],
            )
        })
        .collect();
    let (claude, none) = (json!(["claude"]), json!([]));
    let (user, admin) = (json!("user"), json!("admin"));
    let two_groups = json!(["claude", "default"]);
    assert_eq!(
        rows,
        [
            ("by-admin", &claude, &none, &admin),
            ("only", &claude, &claude, &user),
            ("two", &two_groups, &claude, &user),
        ]
    );

    // Her change of other fields keeps the admin's groups; a change of
    // groups must name groups she may pick, and makes them hers.
    let patch = |body: Value| {
        let url = tg.url("/api/keys/by-admin");
        async move { call("PATCH", &url, As::Bearer(ALICE_TOKEN), Some(body)).await }
    };
    let r = patch(json!({"rpm": 50})).await;
    assert_eq!(
        (r.status, &r.body["groups_set_by"], &r.body["rpm"]),
        (200, &admin, &json!(50)),
        "{}",
        r.body
    );
    let a2 = chat_with(&tg, &admins).await;
    assert_eq!(a2.status, 200, "{}", a2.body);
    assert_eq!(
        billed_groups(&tg, "by-admin", 2).await,
        [(
            "claude".to_string(),
            2,
            mock_cost(&a1, 1) + mock_cost(&a2, 1)
        )]
    );
    let r = patch(json!({"groups": ["default", "claude"]})).await;
    assert_eq!(
        (r.status, code(&r)),
        (403, "group_not_allowed"),
        "{}",
        r.body
    );
    let r = patch(json!({"groups": ["vip", "default"]})).await;
    assert_eq!(
        (r.status, &r.body["groups_set_by"], &r.body["groups"]),
        (200, &user, &json!(["vip", "default"])),
        "{}",
        r.body
    );
    let a3 = chat_with(&tg, &admins).await;
    assert_eq!(a3.status, 200, "{}", a3.body);
    let billed = billed_groups(&tg, "by-admin", 3).await;
    assert_eq!(billed[1], ("vip".to_string(), 1, mock_cost(&a3, 4)));

    // Selectable again: her keys route `claude` again (kept in the store).
    tg.write_config_by_rename(&selectable);
    let r = call("POST", &tg.admin_url("/admin/reload"), As::Nobody, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let third = chat_with(&tg, &two).await;
    assert_eq!(third.status, 200, "{}", third.body);
    let r = chat_with(&tg, &only).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        billed_groups(&tg, "two", 3).await,
        [
            (
                "claude".to_string(),
                2,
                mock_cost(&first, 1) + mock_cost(&third, 1)
            ),
            ("default".to_string(), 1, mock_cost(&second, 2)),
        ]
    );
    let list = call("GET", &tg.url("/api/keys"), As::Bearer(ALICE_TOKEN), None).await;
    assert!(list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["inactive_groups"] == json!([])));
}
