//! The gateway's own errors on the OpenAI endpoints: exact status and exact
//! JSON body (OpenAI dialect), and no secret in the body or the log.

mod common;

use common::*;
use serde_json::{json, Value};

const MAX_BODY: usize = 4096;

fn config(upstream: &str, port: u16, admin: u16, data: &std::path::Path) -> String {
    format!(
        r#"{server}max_body_bytes = {MAX_BODY}

[[groups]]
name = "default"
ratio = 1

[[groups]]
name = "other"
ratio = 2

[[models]]
name = "gpt-4o"
input = 2.5
output = 10

[[models]]
name = "elsewhere"
input = 1
output = 1

[[channels]]
name = "up"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream-secret"
groups = ["default"]
models = ["gpt-4o"]

[[channels]]
name = "other-up"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream-secret"
groups = ["other"]
models = ["elsewhere"]

[[keys]]
name = "good"
key_sha256 = "{good}"
groups = ["default"]

[[keys]]
name = "old"
key_sha256 = "{old}"
expires = 2020-01-01T00:00:00Z

[[keys]]
name = "office-only"
key_sha256 = "{office}"
allow_ips = ["10.0.0.0/8"]
"#,
        server = server_section(port, admin, data),
        good = sha256_hex("sk-good-secret"),
        old = sha256_hex("sk-old-secret"),
        office = sha256_hex("sk-office-secret"),
    )
}

fn openai_error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

struct Case {
    name: &'static str,
    path: &'static str,
    secret: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let chat = |model: &str| {
        json!({"model": model, "messages": []})
            .to_string()
            .into_bytes()
    };
    vec![
        Case {
            name: "no key",
            path: "/v1/chat/completions",
            secret: None,
            body: chat("gpt-4o"),
            status: 401,
            expected: openai_error(
                "missing API key: send it as `Authorization: Bearer <key>`",
                "authentication_error",
                "missing_api_key",
            ),
        },
        Case {
            name: "unknown key",
            path: "/v1/chat/completions",
            secret: Some("sk-unknown-secret"),
            body: chat("gpt-4o"),
            status: 401,
            expected: openai_error("invalid API key", "authentication_error", "invalid_api_key"),
        },
        Case {
            name: "expired key",
            path: "/v1/chat/completions",
            secret: Some("sk-old-secret"),
            body: chat("gpt-4o"),
            status: 401,
            expected: openai_error(
                "API key has expired",
                "authentication_error",
                "expired_api_key",
            ),
        },
        Case {
            name: "denied IP",
            path: "/v1/chat/completions",
            secret: Some("sk-office-secret"),
            body: chat("gpt-4o"),
            status: 403,
            expected: openai_error(
                "this API key may not be used from this address",
                "permission_error",
                "ip_not_allowed",
            ),
        },
        Case {
            name: "unknown model",
            path: "/v1/chat/completions",
            secret: Some("sk-good-secret"),
            body: chat("gpt-9"),
            status: 404,
            expected: openai_error(
                "model `gpt-9` does not exist",
                "invalid_request_error",
                "model_not_found",
            ),
        },
        Case {
            name: "model not in group",
            path: "/v1/chat/completions",
            secret: Some("sk-good-secret"),
            body: chat("elsewhere"),
            status: 403,
            expected: openai_error(
                "model `elsewhere` is not available in this key's groups (default)",
                "permission_error",
                "model_not_in_group",
            ),
        },
        Case {
            name: "malformed JSON",
            path: "/v1/chat/completions",
            secret: Some("sk-good-secret"),
            body: br#"{"model": "gpt-4o", "messages": [}"#.to_vec(),
            status: 400,
            expected: openai_error(
                "request body is not valid JSON: syntax error at line 1 column 34",
                "invalid_request_error",
                "invalid_json",
            ),
        },
        Case {
            name: "no model",
            path: "/v1/chat/completions",
            secret: Some("sk-good-secret"),
            body: br#"{"messages": []}"#.to_vec(),
            status: 400,
            expected: openai_error(
                "the request body has no `model`",
                "invalid_request_error",
                "missing_model",
            ),
        },
        Case {
            name: "model not a string",
            path: "/v1/chat/completions",
            secret: Some("sk-good-secret"),
            body: br#"{"model": 4, "messages": []}"#.to_vec(),
            status: 400,
            expected: openai_error(
                "`model` must be a string",
                "invalid_request_error",
                "invalid_json",
            ),
        },
        Case {
            name: "oversize body",
            path: "/v1/chat/completions",
            secret: Some("sk-good-secret"),
            body: {
                let filler = "x".repeat(MAX_BODY);
                json!({"model": "gpt-4o", "messages": [{"role": "user", "content": filler}]})
                    .to_string()
                    .into_bytes()
            },
            status: 413,
            expected: openai_error(
                &format!("request body is larger than the {MAX_BODY} bytes allowed"),
                "invalid_request_error",
                "request_too_large",
            ),
        },
        Case {
            name: "unknown endpoint",
            path: "/v1/fine_tuning/jobs",
            secret: Some("sk-good-secret"),
            body: chat("gpt-4o"),
            status: 404,
            expected: openai_error(
                "no such endpoint",
                "invalid_request_error",
                "unknown_endpoint",
            ),
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_errors_have_exact_status_and_openai_shape() {
    let up = MockUpstream::start(|_| Reply::json(200, chat_completion("gpt-4o", "hi", 1, 1))).await;
    let base = up.base_url();
    let tg = Tollgate::start_with(|p, a, d| config(&base, p, a, d));
    for c in cases() {
        let mut req = client().post(tg.url(c.path)).body(c.body.clone());
        if let Some(secret) = c.secret {
            req = req.bearer_auth(secret);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), c.status, "{}", c.name);
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{}",
            c.name
        );
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: body is not JSON: {text}", c.name));
        assert_eq!(body, c.expected, "{}", c.name);
        if let Some(secret) = c.secret {
            assert!(!text.contains(secret), "{}: secret echoed", c.name);
        }
    }
    assert_eq!(up.count(), 0, "no error case reaches the upstream");

    let log = tg.log();
    for secret in [
        "sk-good-secret",
        "sk-unknown-secret",
        "sk-old-secret",
        "sk-office-secret",
        "sk-upstream-secret",
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_chunked_body_is_refused_while_reading() {
    let up = MockUpstream::start(|_| Reply::json(200, chat_completion("gpt-4o", "hi", 1, 1))).await;
    let base = up.base_url();
    let tg = Tollgate::start_with(|p, a, d| config(&base, p, a, d));
    // No Content-Length: the limit must hold while the body streams in.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = (0..8)
        .map(|i| {
            Ok(if i == 0 {
                br#"{"model": "gpt-4o", "x": ""#.to_vec()
            } else {
                vec![b'y'; 1024]
            })
        })
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let resp = client()
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth("sk-good-secret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert_eq!(up.count(), 0);
}
