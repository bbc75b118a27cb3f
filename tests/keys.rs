//! Users, sessions and managed keys (SPEC §9, docs/api.md "User API",
//! "Admin API", "Sessions"), against the real binary and store.

mod common;

use common::*;
use serde_json::{json, Value};

const ALICE_TOKEN: &str = "ut-alice-0123456789";
const BOB_TOKEN: &str = "ut-bob-0123456789";
const ADMIN_TOKEN: &str = "admin-secret-0123456789";

/// Groups `default` (ratio 1), `claude` (0.5, selectable), `vip` (2, only
/// alice may pick it); the `mock` channel serves `m` in all of them.
fn config(admin_token: bool) -> String {
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

[[groups]]
name = "vip"
ratio = 2

[[models]]
name = "m"
input = 1
output = 2

[[channels]]
name = "mock"
type = "mock"
groups = ["default", "claude", "vip"]
models = ["m"]

[[users]]
name = "alice"
groups = ["vip", "auto"]
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
    )
}

fn start(admin_token: bool) -> Tollgate {
    let text = config(admin_token);
    Tollgate::start_with(move |port, admin, dir| {
        let server = server_section(port, admin, dir);
        // admin_token belongs in [server]: put it there.
        match text.split_once('\n') {
            Some((first, rest)) => format!("{server}{first}\n{rest}"),
            None => format!("{server}{text}"),
        }
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
