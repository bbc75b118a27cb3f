//! Native provider channels against loopback mocks that check the exact
//! request each provider would receive and answer in its documented wire
//! format; usage is read back from the access log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "sk-client-secret";

fn head(models: &str, channels: &str) -> String {
    format!(
        r#"
[[groups]]
name = "g"
ratio = 1.0
all_channels = true

{models}

{channels}

[[keys]]
name = "k"
key_sha256 = "{}"
groups = ["g"]
"#,
        sha256_hex(KEY)
    )
}

fn price(name: &str) -> String {
    format!("[[models]]\nname = \"{name}\"\ninput = 3\noutput = 15\ncached_input = 0.3\ncache_write = 3.75\n")
}

async fn post(
    tg: &Tollgate,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> reqwest::Response {
    let mut req = client().post(tg.url(path)).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn assert_no_secrets(tg: &Tollgate, secrets: &[&str]) {
    let log = tg.log();
    for s in secrets.iter().chain(&[KEY]) {
        assert!(!log.contains(s), "log leaks a secret");
    }
}

// ---------------------------------------------------------------- anthropic

fn anthropic_message(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hi!"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "output_tokens": output}})
}

fn anthropic_events(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": cache_write,
                      "cache_read_input_tokens": cache_read, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": output}}),
        json!({"type": "message_stop"}),
    ]
}

fn sse_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

fn anthropic_upstream(received: &Received) -> Reply {
    if received.path.ends_with("/count_tokens") {
        return Reply::json(200, json!({"input_tokens": 42}));
    }
    if received.json()["stream"] == true {
        Reply::Sse {
            events: sse_of(&anthropic_events(25, 15, 2000, 100)),
            gap: Duration::from_millis(5),
        }
    } else {
        Reply::json(200, anthropic_message(12, 6, 30, 0))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_channel_messages_stream_and_count_tokens() {
    let up = MockUpstream::start(anthropic_upstream).await;
    let tg = Tollgate::start(&head(
        &price("claude-sonnet-4-5"),
        &format!(
            r#"[[channels]]
name = "claude-direct"
type = "anthropic"
base_url = "{}/anthropic"
api_key = "sk-ant-upstream"
model_map = {{ "claude-sonnet-4-5" = "claude-sonnet-4-5-20250929" }}"#,
            up.base_url()
        ),
    ));

    // Non-stream, client sends no anthropic-version: the default goes up.
    let resp = post(
        &tg,
        "/v1/messages",
        &[("x-api-key", KEY), ("anthropic-beta", "prompt-caching-2024-07-31")],
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        anthropic_message(12, 6, 30, 0)
    );
    let got = &up.requests()[0];
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("POST", "/anthropic/v1/messages")
    );
    assert_eq!(got.header("x-api-key"), Some("sk-ant-upstream"));
    assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        got.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(got.header("authorization"), None);
    assert_eq!(
        got.header("host"),
        Some(format!("127.0.0.1:{}", up.port).as_str())
    );
    assert_eq!(got.json()["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(logged_usage(&tg, 0).await, (12, 6, 30, 0, false));

    // Stream: bytes pass untouched; usage from message_start + message_delta.
    let resp = post(
        &tg,
        "/v1/messages",
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("anthropic-version", "2023-01-01"),
        ],
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(
        resp.text().await.unwrap(),
        sse_of(&anthropic_events(25, 15, 2000, 100)).concat()
    );
    assert_eq!(
        up.requests()[1].header("anthropic-version"),
        Some("2023-01-01")
    );
    assert_eq!(logged_usage(&tg, 1).await, (25, 15, 2000, 100, false));

    // count_tokens: relayed, bills nothing.
    let resp = post(
        &tg,
        "/v1/messages/count_tokens",
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"input_tokens": 42})
    );
    assert_eq!(up.requests()[2].path, "/anthropic/v1/messages/count_tokens");
    assert_eq!(logged_usage(&tg, 2).await, (0, 0, 0, 0, false));
    assert_no_secrets(&tg, &["sk-ant-upstream"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_with_translate_off_serve_only_their_format_and_errors_use_the_client_dialect() {
    let oai = MockUpstream::start(|_| Reply::json(200, chat_completion("m", "hi", 1, 1))).await;
    let ant = MockUpstream::start(anthropic_upstream).await;
    let models = format!("{}\n{}", price("claude-sonnet-4-5"), price("gpt-4o"));
    let tg = Tollgate::start(&head(
        &models,
        &format!(
            r#"[[channels]]
name = "openai-first"
type = "openai"
base_url = "{}"
api_key = "k1"
priority = 10
translate = false

[[channels]]
name = "claude"
type = "anthropic"
base_url = "{}"
api_key = "k2"
models = ["claude-sonnet-4-5"]
priority = 0"#,
            oai.base_url(),
            ant.base_url()
        ),
    ));
    let anth = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    // The OpenAI channel has the higher priority but may not translate
    // Messages (translation itself: tests/python/test_translation.py).
    let resp = post(
        &tg,
        "/v1/messages",
        &anth,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!((oai.count(), ant.count()), (0, 1));
    // OpenAI clients of the same model go to the OpenAI channel.
    let resp = post(
        &tg,
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {KEY}"))],
        json!({"model": "claude-sonnet-4-5", "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!((oai.count(), ant.count()), (1, 1));
    // No channel speaks Messages for gpt-4o: a clear Anthropic-shaped error.
    let resp = post(
        &tg,
        "/v1/messages",
        &anth,
        json!({"model": "gpt-4o", "max_tokens": 5, "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-4o"));
    // Gemini clients get Gemini-shaped errors, here for an unknown model.
    let resp = post(
        &tg,
        &format!("/v1beta/models/nope:generateContent?key={KEY}"),
        &[],
        json!({"contents": []}),
    )
    .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["status"],
        "NOT_FOUND"
    );
    // And a missing key on an Anthropic path is an Anthropic 401.
    let resp = post(&tg, "/v1/messages", &[], json!({"model": "gpt-4o"})).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    assert_eq!((oai.count(), ant.count()), (1, 1));
}

// ------------------------------------------------------------------- gemini

fn gemini_chunk(text: &str, usage: Value) -> Value {
    json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
           "usageMetadata": usage, "modelVersion": "gemini-2.5-flash"})
}

fn gemini_upstream(r: &Received) -> Reply {
    if r.path.contains(":countTokens") {
        Reply::json(200, json!({"totalTokens": 31}))
    } else if r.path.ends_with(":streamGenerateContent") {
        // Without alt=sse, a stream is one JSON array.
        Reply::json(
            200,
            json!([
                gemini_chunk("Hel", json!({"promptTokenCount": 8, "totalTokenCount": 8})),
                gemini_chunk(
                    "lo",
                    json!({"promptTokenCount": 8, "candidatesTokenCount": 2, "totalTokenCount": 10})
                ),
            ]),
        )
    } else if r.path.contains(":streamGenerateContent") {
        Reply::Sse {
            events: vec![
                format!(
                    "data: {}\r\n\r\n",
                    gemini_chunk(
                        "Hel",
                        json!({"promptTokenCount": 900, "cachedContentTokenCount": 600, "totalTokenCount": 900})
                    )
                ),
                format!(
                    "data: {}\r\n\r\n",
                    gemini_chunk(
                        "lo",
                        json!({"promptTokenCount": 900, "cachedContentTokenCount": 600, "candidatesTokenCount": 7, "thoughtsTokenCount": 20, "totalTokenCount": 927})
                    )
                ),
            ],
            gap: Duration::from_millis(5),
        }
    } else {
        Reply::json(
            200,
            gemini_chunk(
                "Hello",
                json!({"promptTokenCount": 50, "candidatesTokenCount": 4, "totalTokenCount": 54}),
            ),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_channel_generate_stream_and_count() {
    let up = MockUpstream::start(gemini_upstream).await;
    let tg = Tollgate::start(&head(
        &price("gemini-2.5-flash"),
        &format!(
            r#"[[channels]]
name = "gemini-api"
type = "gemini"
base_url = "{}"
api_key = "AIza-upstream"
model_map = {{ "gemini-2.5-flash" = "gemini-2.5-flash-001" }}"#,
            up.base_url()
        ),
    ));
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]});
    let resp = post(
        &tg,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &[("x-goog-api-key", KEY)],
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["candidates"][0]["content"]["parts"][0]["text"],
        "Hello"
    );
    let got = &up.requests()[0];
    assert_eq!(
        got.path,
        "/v1beta/models/gemini-2.5-flash-001:generateContent"
    );
    assert_eq!(got.header("x-goog-api-key"), Some("AIza-upstream"));
    assert_eq!(got.json(), body, "body unchanged");
    assert_eq!(logged_usage(&tg, 0).await, (50, 4, 0, 0, false));

    // Stream with the key in the query: never forwarded.
    let resp = post(
        &tg,
        &format!("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={KEY}"),
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("data: {") && text.contains("\"lo\""));
    let got = &up.requests()[1];
    assert_eq!(
        got.path,
        "/v1beta/models/gemini-2.5-flash-001:streamGenerateContent?alt=sse"
    );
    assert_eq!(got.header("x-goog-api-key"), Some("AIza-upstream"));
    // 900 prompt of which 600 cached; 7 candidates + 20 thoughts.
    assert_eq!(logged_usage(&tg, 1).await, (300, 27, 600, 0, false));

    let resp = post(
        &tg,
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &[("x-goog-api-key", KEY)],
        body,
    )
    .await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"totalTokens": 31})
    );
    assert_eq!(
        up.requests()[2].path,
        "/v1beta/models/gemini-2.5-flash-001:countTokens"
    );
    assert_eq!(logged_usage(&tg, 2).await, (0, 0, 0, 0, false));

    // A stream without alt=sse stays a JSON array, and is metered.
    let resp = post(
        &tg,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        &[("x-goog-api-key", KEY)],
        json!({"contents": []}),
    )
    .await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()[1]["usageMetadata"]["candidatesTokenCount"],
        2
    );
    assert_eq!(
        up.requests()[3].path,
        "/v1beta/models/gemini-2.5-flash-001:streamGenerateContent"
    );
    assert_eq!(logged_usage(&tg, 3).await, (8, 2, 0, 0, false));

    // The Gemini model list.
    let list: Value = client()
        .get(tg.url("/v1beta/models"))
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["models"][0]["name"], "models/gemini-2.5-flash");
    assert_no_secrets(&tg, &["AIza-upstream"]);
}

// -------------------------------------------------------------------- azure

#[tokio::test(flavor = "multi_thread")]
async fn azure_deployments_and_v1_styles() {
    let up = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            Reply::Sse { events: chat_stream(&["Hi"], Some((11, 3))), gap: Duration::ZERO }
        } else {
            Reply::json(200, json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                          "prompt_tokens_details": {"cached_tokens": 64}}}))
        }
    })
    .await;
    let text = format!(
        r#"
[[groups]]
name = "dep"
ratio = 1.0

[[groups]]
name = "v1"
ratio = 1.0

{}

[[channels]]
name = "azure-deployments"
type = "azure"
base_url = "{base}"
api_key = "az-key-1"
groups = ["dep"]
model_map = {{ "gpt-4o" = "gpt4o-prod" }}
api_version = "2024-10-21"

[[channels]]
name = "azure-v1"
type = "azure"
base_url = "{base}"
api_key = "az-key-2"
groups = ["v1"]
azure_style = "v1"

[[keys]]
name = "dep"
key_sha256 = "{}"
groups = ["dep"]

[[keys]]
name = "v1"
key_sha256 = "{}"
groups = ["v1"]
"#,
        price("gpt-4o"),
        sha256_hex(KEY),
        sha256_hex("sk-v1"),
        base = up.base_url()
    );
    let tg = Tollgate::start(&text);
    let bearer = format!("Bearer {KEY}");
    let resp = post(
        &tg,
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        json!({"model": "gpt-4o", "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = &up.requests()[0];
    assert_eq!(
        got.path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(got.header("api-key"), Some("az-key-1"));
    assert_eq!(got.header("authorization"), None);
    assert_eq!(logged_usage(&tg, 0).await, (36, 5, 64, 0, false));

    // Stream: include_usage asked upstream, its chunk hidden from the client.
    let text = post(
        &tg,
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        json!({"model": "gpt-4o", "stream": true, "messages": []}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(text, chat_stream(&["Hi"], None).concat());
    assert_eq!(
        up.requests()[1].json()["stream_options"]["include_usage"],
        true
    );
    assert_eq!(logged_usage(&tg, 1).await, (11, 3, 0, 0, false));

    let resp = post(
        &tg,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-v1")],
        json!({"model": "gpt-4o", "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = &up.requests()[2];
    assert_eq!(got.path, "/openai/v1/chat/completions");
    assert_eq!(got.header("api-key"), Some("az-key-2"));
    assert_eq!(got.json()["model"], "gpt-4o");
    assert_no_secrets(&tg, &["az-key-1", "az-key-2"]);
}

// ------------------------------------------------------------------ bedrock

fn event_frame(headers: &[(&str, &str)], payload: Vec<u8>) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let mut m = Message::new(payload);
    for (k, v) in headers {
        m = m.add_header(Header::new(
            k.to_string(),
            HeaderValue::String(v.to_string().into()),
        ));
    }
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
    out
}

fn bedrock_chunk(event: &Value) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    event_frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        json!({"bytes": b64, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"})
            .to_string()
            .into_bytes(),
    )
}

fn bedrock_events() -> Vec<Value> {
    let mut events = anthropic_events(21, 9, 7, 3);
    events.retain(|e| e["type"] != "ping");
    let last = events.last_mut().unwrap();
    last["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": 21, "outputTokenCount": 9, "invocationLatency": 812, "firstByteLatency": 301});
    events
}

/// Recomputes the SigV4 signature of a received request with the same
/// credentials and its own x-amz-date, independently of tollgate's code.
fn expected_sigv4(got: &Received, port: u16, session_token: Option<&str>) -> String {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let auth = got.header("authorization").expect("signed");
    let signed = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let headers: Vec<(&str, &str)> = signed
        .split(';')
        .filter(|h| *h != "x-amz-date" && *h != "x-amz-security-token")
        .map(|h| (h, got.header(h).expect("signed header present")))
        .collect();
    let date = got.header("x-amz-date").unwrap();
    let time = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    let time = std::time::UNIX_EPOCH + Duration::from_secs(time.timestamp() as u64);
    let identity = aws_credential_types::Credentials::new(
        "AKIDTEST",
        "secretTEST/key",
        session_token.map(str::to_string),
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-west-2")
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://127.0.0.1:{port}{}", got.path);
    let req = SignableRequest::new(
        "POST",
        &url,
        headers.into_iter(),
        SignableBody::Bytes(&got.body),
    )
    .unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let value = instructions
        .headers()
        .find(|(k, _)| *k == "authorization")
        .unwrap()
        .1
        .to_string();
    value
}

#[tokio::test(flavor = "multi_thread")]
async fn bedrock_sigv4_invoke_and_event_stream() {
    let up = MockUpstream::start(|r| {
        if r.json()["max_tokens"] == 0 {
            Reply::json(400, json!({"message": "max_tokens: must be at least 1"}))
        } else if r.path.ends_with("/count-tokens") {
            Reply::json(200, json!({"inputTokens": 42}))
        } else if r.path.ends_with("/invoke-with-response-stream") {
            Reply::Full {
                status: 200,
                headers: vec![
                    (
                        "content-type".into(),
                        "application/vnd.amazon.eventstream".into(),
                    ),
                    (
                        "x-amzn-bedrock-content-type".into(),
                        "application/json".into(),
                    ),
                ],
                body: bedrock_events().iter().flat_map(bedrock_chunk).collect(),
            }
        } else {
            Reply::json(200, anthropic_message(12, 6, 30, 2))
        }
    })
    .await;
    let text = format!(
        r#"
[[groups]]
name = "sig"
ratio = 1.0

[[groups]]
name = "apikey"
ratio = 1.0

{}

[[channels]]
name = "bedrock-sigv4"
type = "bedrock"
base_url = "{base}"
region = "us-west-2"
aws_access_key_id = "AKIDTEST"
aws_secret_access_key = "secretTEST/key"
aws_session_token = "session-tok"
groups = ["sig"]
model_map = {{ "claude-sonnet-4-5" = "us.anthropic.claude-sonnet-4-5-20250929-v1:0" }}

[[channels]]
name = "bedrock-apikey"
type = "bedrock"
base_url = "{base}"
region = "us-west-2"
api_key = "bedrock-api-key-1"
groups = ["apikey"]

[[keys]]
name = "sig"
key_sha256 = "{}"
groups = ["sig"]

[[keys]]
name = "apikey"
key_sha256 = "{}"
groups = ["apikey"]
"#,
        price("claude-sonnet-4-5"),
        sha256_hex(KEY),
        sha256_hex("sk-apikey"),
        base = up.base_url()
    );
    let tg = Tollgate::start(&text);
    let anth = [
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "b-1,b-2"),
    ];

    let resp = post(&tg, "/v1/messages", &anth,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        anthropic_message(12, 6, 30, 2)
    );
    let got = &up.requests()[0];
    assert_eq!(
        got.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    assert_eq!(got.header("x-amz-security-token"), Some("session-tok"));
    assert_eq!(
        got.header("authorization").unwrap(),
        expected_sigv4(got, up.port, Some("session-tok"))
    );
    assert!(got
        .header("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"));
    assert!(got
        .header("authorization")
        .unwrap()
        .contains("/us-west-2/bedrock/aws4_request"));
    assert_eq!(got.header("x-api-key"), None);
    assert_eq!(
        got.json(),
        json!({"max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}],
               "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["b-1", "b-2"]})
    );
    assert_eq!(logged_usage(&tg, 0).await, (12, 6, 30, 2, false));

    // Stream: the event stream comes back as Anthropic SSE.
    let resp = post(
        &tg,
        "/v1/messages",
        &anth,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(
        resp.text().await.unwrap(),
        sse_of(&bedrock_events()).concat()
    );
    let got = &up.requests()[1];
    assert_eq!(
        got.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    );
    assert_eq!(
        got.header("accept"),
        Some("application/vnd.amazon.eventstream")
    );
    assert_eq!(
        got.header("authorization").unwrap(),
        expected_sigv4(got, up.port, Some("session-tok"))
    );
    assert!(got.json().get("stream").is_none() && got.json().get("model").is_none());
    assert_eq!(logged_usage(&tg, 1).await, (21, 9, 7, 3, false));

    // A Bedrock API key goes as a bearer token, unsigned.
    let resp = post(
        &tg,
        "/v1/messages",
        &[("x-api-key", "sk-apikey")],
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = &up.requests()[2];
    assert_eq!(got.path, "/model/claude-sonnet-4-5/invoke");
    assert_eq!(
        got.header("authorization"),
        Some("Bearer bedrock-api-key-1")
    );
    assert_eq!(got.header("x-amz-date"), None);

    // count_tokens goes to CountTokens, with the InvokeModel body it counts.
    let resp = post(
        &tg,
        "/v1/messages/count_tokens",
        &anth,
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"input_tokens": 42})
    );
    let got = &up.requests()[3];
    assert_eq!(
        got.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    assert_eq!(
        got.header("authorization").unwrap(),
        expected_sigv4(got, up.port, Some("session-tok"))
    );
    let counted = {
        use base64::Engine;
        let b64 = got.json()["input"]["invokeModel"]["body"]
            .as_str()
            .unwrap()
            .to_string();
        serde_json::from_slice::<Value>(
            &base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        counted,
        json!({"messages": [{"role": "user", "content": "Hi"}], "anthropic_version": "bedrock-2023-05-31",
               "anthropic_beta": ["b-1", "b-2"], "max_tokens": 1})
    );
    assert_eq!(logged_usage(&tg, 3).await, (0, 0, 0, 0, false));

    // Bedrock's own error shape reaches the Anthropic SDK as an Anthropic
    // error, stream or not.
    for stream in [false, true] {
        let resp = post(&tg, "/v1/messages", &anth,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 0, "stream": stream, "messages": []})).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"type": "error", "error": {"type": "invalid_request_error",
                                             "message": "max_tokens: must be at least 1"}})
        );
    }
    assert_no_secrets(&tg, &["secretTEST", "session-tok", "bedrock-api-key-1"]);
}

// ------------------------------------------------------------------- vertex

const VERTEX_TOKEN: &str = "ya29.vertex-test-token";

fn verify_assertion(form: &[u8], token_uri: &str) -> bool {
    let form = String::from_utf8_lossy(form);
    let Some(jwt) = form.split('&').find_map(|p| p.strip_prefix("assertion=")) else {
        return false;
    };
    let grant = form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
    let key =
        jsonwebtoken::DecodingKey::from_rsa_pem(include_bytes!("data/vertex-test-key.pub.pem"))
            .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[token_uri]);
    v.set_issuer(&["tollgate-test@proj-1.iam.gserviceaccount.com"]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &v);
    grant
        && claims
            .is_ok_and(|c| c.claims["scope"] == "https://www.googleapis.com/auth/cloud-platform")
}

#[tokio::test(flavor = "multi_thread")]
async fn vertex_gemini_and_claude_with_service_account_tokens() {
    // The token endpoint checks the JWT's audience against its own URL.
    let own_uri = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let checked_uri = own_uri.clone();
    let tokens = MockUpstream::start(move |r| {
        let aud = checked_uri.get().expect("set at start");
        if r.method == "POST" && r.path == "/token" && verify_assertion(&r.body, aud) {
            Reply::json(
                200,
                json!({"access_token": VERTEX_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            )
        } else {
            Reply::json(400, json!({"error": "invalid_grant"}))
        }
    })
    .await;
    let token_uri = format!("{}/token", tokens.base_url());
    own_uri.set(token_uri.clone()).unwrap();
    let up = MockUpstream::start(|r| {
        if r.path.ends_with(":streamRawPredict") {
            Reply::Sse {
                events: sse_of(&anthropic_events(25, 15, 0, 0)),
                gap: Duration::ZERO,
            }
        } else if r.path.ends_with(":rawPredict") {
            Reply::json(200, anthropic_message(12, 6, 0, 0))
        } else if r.path.contains("gemini-2.5-flash-image:generateContent") {
            Reply::json(200, image_answer())
        } else {
            gemini_upstream(r)
        }
    })
    .await;
    let sa = json!({"type": "service_account", "project_id": "proj-1", "private_key_id": "kid1",
        "private_key": include_str!("data/vertex-test-key.pem"),
        "client_email": "tollgate-test@proj-1.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token"});
    let models = format!(
        "{}\n{}\n{}",
        price("gemini-2.5-flash"),
        price("claude-sonnet-4-5"),
        price("gemini-2.5-flash-image")
    );
    let tg = Tollgate::start(&head(
        &models,
        &format!(
            r#"[[channels]]
name = "vertex"
type = "vertex"
base_url = "{}"
location = "us-east5"
token_uri = "{token_uri}"
credentials_json = '''{sa}'''
model_map = {{ "claude-sonnet-4-5" = "claude-sonnet-4-5@20250929" }}"#,
            up.base_url()
        ),
    ));
    let prefix = "/v1/projects/proj-1/locations/us-east5/publishers";
    let bearer = format!("Bearer {VERTEX_TOKEN}");
    let gem = json!({"contents": [{"role": "user", "parts": [{"text": "Draw a cat"}]}]});

    let resp = post(
        &tg,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &[("x-goog-api-key", KEY)],
        gem.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", tg.log());
    let got = &up.requests()[0];
    assert_eq!(
        got.path,
        format!("{prefix}/google/models/gemini-2.5-flash:generateContent")
    );
    assert_eq!(got.header("authorization"), Some(bearer.as_str()));
    assert_eq!(got.header("x-goog-api-key"), None);
    assert_eq!(logged_usage(&tg, 0).await, (50, 4, 0, 0, false));

    let resp = post(
        &tg,
        &format!("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={KEY}"),
        &[],
        gem,
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let got = &up.requests()[1];
    assert_eq!(
        got.path,
        format!("{prefix}/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    );
    assert_eq!(got.header("authorization"), Some(bearer.as_str()));
    assert_eq!(logged_usage(&tg, 1).await, (300, 27, 600, 0, false));

    let anth = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let resp = post(
        &tg,
        "/v1/messages",
        &anth,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}),
    )
    .await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        anthropic_message(12, 6, 0, 0)
    );
    let got = &up.requests()[2];
    assert_eq!(
        got.path,
        format!("{prefix}/anthropic/models/claude-sonnet-4-5@20250929:rawPredict")
    );
    assert_eq!(got.header("authorization"), Some(bearer.as_str()));
    assert_eq!(
        got.json(),
        json!({"max_tokens": 8, "messages": [], "anthropic_version": "vertex-2023-10-16"})
    );
    assert_eq!(logged_usage(&tg, 2).await, (12, 6, 0, 0, false));

    let resp = post(
        &tg,
        "/v1/messages",
        &anth,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(
        resp.text().await.unwrap(),
        sse_of(&anthropic_events(25, 15, 0, 0)).concat()
    );
    let got = &up.requests()[3];
    assert_eq!(
        got.path,
        format!("{prefix}/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict")
    );
    assert_eq!(got.json()["stream"], true);
    assert_eq!(logged_usage(&tg, 3).await, (25, 15, 0, 0, false));

    // An image model passes through; its image tokens are billed apart, as
    // `image_output` (at the `output` price, which it leaves unset).
    let resp = post(
        &tg,
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
        &[("x-goog-api-key", KEY)],
        json!({"contents": [{"parts": [{"text": "a cat"}]}]}),
    )
    .await;
    assert_eq!(resp.json::<Value>().await.unwrap(), image_answer());
    assert_eq!(
        up.requests()[4].path,
        format!("{prefix}/google/models/gemini-2.5-flash-image:generateContent")
    );
    assert_eq!(logged_usage(&tg, 4).await, (6, 0, 0, 0, false));
    let line = &access_log_lines(&tg)[4];
    assert_eq!(line.get("image_output").map(String::as_str), Some("1290"));

    assert_eq!(tokens.count(), 1, "one token minted, then cached");
    assert_no_secrets(&tg, &[VERTEX_TOKEN, "BEGIN PRIVATE KEY"]);
}

/// A Gemini image answer: a ~400 KB base64 PNG part before the usage.
fn image_answer() -> Value {
    let png = "iVBORw0KGgo".repeat(40_000);
    json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "Here is a cat."},
            {"inlineData": {"mimeType": "image/png", "data": png}}]},
          "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 1290, "totalTokenCount": 1296,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}]},
        "modelVersion": "gemini-2.5-flash-image"})
}

// --------------------------------------------------------------------- mock

#[tokio::test(flavor = "multi_thread")]
async fn mock_channel_answers_all_three_formats() {
    let tg = Tollgate::start(&head(
        &format!(
            "{}\n{}",
            price("gemini-2.5-flash"),
            price("claude-sonnet-4-5")
        ),
        "[[channels]]\nname = \"mock\"\ntype = \"mock\"",
    ));
    let anth = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 3, "messages": []});
    let msg: Value = post(&tg, "/v1/messages", &anth, body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msg["content"][0]["text"], "Hello from the");
    assert_eq!(msg["usage"]["output_tokens"], 3);
    let prompt = body.to_string().len().div_ceil(4) as u64;
    assert_eq!(msg["usage"]["input_tokens"], prompt);
    assert_eq!(logged_usage(&tg, 0).await, (prompt, 3, 0, 0, false));

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let text = post(&tg, "/v1/messages", &anth, sbody)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("event: message_start\ndata: "));
    assert!(text.contains("event: message_delta\ndata: {\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}"));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    let count: Value = post(&tg, "/v1/messages/count_tokens", &anth, body)
        .await
        .json()
        .await
        .unwrap();
    assert!(count["input_tokens"].as_u64().unwrap() > 0);

    let gem = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]});
    let out: Value = post(
        &tg,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &[("x-goog-api-key", KEY)],
        gem.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(out["candidates"][0]["finishReason"], "STOP");
    assert_eq!(out["usageMetadata"]["candidatesTokenCount"], 18);
    let text = post(
        &tg,
        &format!("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={KEY}"),
        &[],
        gem.clone(),
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(text.matches("data: ").count(), 18);
    let out: Value = post(
        &tg,
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &[("x-goog-api-key", KEY)],
        gem,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(out["totalTokens"].as_u64().unwrap() > 0);

    let list: Value = client()
        .get(tg.url("/v1/models"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["type"], "model");
    assert_eq!(list["has_more"], false);
}

// ------------------------------------------- stream asked, one JSON answered

/// A stream request that the provider answers with one JSON body (an
/// error, a cache, a proxy that ignores `stream`) is billed from that
/// body's usage, on every channel type, and reaches the client as sent.
/// It used to be billed as an estimate without output (input=6 output=0).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_request_answered_with_json_is_billed_from_its_usage() {
    let own_uri = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let checked_uri = own_uri.clone();
    let tokens = MockUpstream::start(move |r| {
        if verify_assertion(&r.body, checked_uri.get().expect("set at start")) {
            Reply::json(
                200,
                json!({"access_token": VERTEX_TOKEN, "expires_in": 3599}),
            )
        } else {
            Reply::json(400, json!({"error": "invalid_grant"}))
        }
    })
    .await;
    let token_uri = format!("{}/token", tokens.base_url());
    own_uri.set(token_uri.clone()).unwrap();
    let up = MockUpstream::start(|r| {
        let body = if r.path.contains("chat/completions") {
            chat_completion("m", "Hello there, friend", 11, 7)
        } else if r.path.contains(":streamGenerateContent") {
            json!({"candidates": [{"content": {"parts": [{"text": "Hello there, friend"}]}}],
                   "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7}})
        } else {
            json!({"id": "msg_1", "type": "message", "role": "assistant",
                   "content": [{"type": "text", "text": "Hello there, friend"}],
                   "usage": {"input_tokens": 11, "output_tokens": 7}})
        };
        Reply::json(200, body)
    })
    .await;
    let sa = json!({"type": "service_account", "project_id": "proj-1", "private_key_id": "kid1",
        "private_key": include_str!("data/vertex-test-key.pem"),
        "client_email": "tollgate-test@proj-1.iam.gserviceaccount.com"});
    let base = up.base_url();
    let channel = |name: &str, kind: &str, model: &str, extra: &str| {
        format!(
            "[[channels]]\nname = \"{name}\"\ntype = \"{kind}\"\nbase_url = \"{base}\"\n\
             models = [\"{model}\"]\n{extra}\n"
        )
    };
    let models: String = [
        "gpt-o", "gpt-az", "claude-a", "claude-b", "claude-v", "gemini-g", "gemini-v",
    ]
    .iter()
    .map(|m| price(m))
    .collect();
    let channels = [
        channel("openai", "openai", "gpt-o", "api_key = \"sk-up-1\""),
        channel("azure", "azure", "gpt-az", "api_key = \"az-up-1\""),
        channel(
            "anthropic",
            "anthropic",
            "claude-a",
            "api_key = \"sk-up-2\"",
        ),
        channel(
            "bedrock",
            "bedrock",
            "claude-b",
            "region = \"us-east-1\"\napi_key = \"br-up-1\"",
        ),
        channel("gemini", "gemini", "gemini-g", "api_key = \"g-up-1\""),
        channel(
            "vertex",
            "vertex",
            "claude-v",
            &format!(
                "models = [\"claude-v\", \"gemini-v\"]\nlocation = \"us-east5\"\n\
                 token_uri = \"{token_uri}\"\ncredentials_json = '''{sa}'''"
            ),
        )
        .replacen("models = [\"claude-v\"]\n", "", 1),
    ]
    .concat();
    let tg = Tollgate::start(&head(&models, &channels));
    let anthropic = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let bearer = format!("Bearer {KEY}");
    let openai = [("authorization", bearer.as_str())];
    let ask = |model: &str| {
        json!({"model": model, "stream": true, "max_tokens": 50,
        "messages": [{"role": "user", "content": "Say hello to a friend"}]})
    };
    let gemini =
        json!({"contents": [{"role": "user", "parts": [{"text": "Say hello to a friend"}]}]});
    let goog = [("x-goog-api-key", KEY)];
    let cases: [(&str, &[_], Value); 7] = [
        ("/v1/chat/completions", &openai, ask("gpt-o")),
        ("/v1/chat/completions", &openai, ask("gpt-az")),
        ("/v1/messages", &anthropic, ask("claude-a")),
        ("/v1/messages", &anthropic, ask("claude-b")),
        ("/v1/messages", &anthropic, ask("claude-v")),
        (
            "/v1beta/models/gemini-g:streamGenerateContent?alt=sse",
            &goog,
            gemini.clone(),
        ),
        (
            "/v1beta/models/gemini-v:streamGenerateContent?alt=sse",
            &goog,
            gemini,
        ),
    ];
    for (i, (path, headers, body)) in cases.into_iter().enumerate() {
        let model = body["model"].as_str().unwrap_or(path).to_string();
        let resp = post(&tg, path, headers, body).await;
        assert_eq!(resp.status(), 200, "{model}: {}", tg.log());
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        let sent = up.requests().last().unwrap().clone();
        let answer: Value = resp.json().await.unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{model}: {content_type}"
        );
        assert!(
            answer.to_string().contains("Hello there, friend"),
            "{model}: {answer}"
        );
        assert!(!sent.path.contains(KEY), "{}", sent.path);
        assert_eq!(logged_usage(&tg, i).await, (11, 7, 0, 0, false), "{model}");
    }
    assert_no_secrets(&tg, &["sk-up-1", "az-up-1", "sk-up-2", "br-up-1", "g-up-1"]);
}

// ------------------------------------------------------------------ aliases

#[tokio::test(flavor = "multi_thread")]
async fn a_1m_alias_is_served_as_its_model_with_the_providers_1m_switch() {
    let anthropic = MockUpstream::start(anthropic_upstream).await;
    let bedrock = MockUpstream::start(|_| Reply::json(200, anthropic_message(12, 6, 30, 2))).await;
    let text = format!(
        r#"
[[groups]]
name = "direct"
ratio = 1.0

[[groups]]
name = "aws"
ratio = 1.0

[[models]]
name = "claude-sonnet-4-6"
input = 3
output = 15
aliases = ["claude-sonnet-4-6[1m]", "sonnet"]

[[channels]]
name = "claude-direct"
type = "anthropic"
base_url = "{}"
api_key = "sk-ant-upstream"
groups = ["direct"]

[[channels]]
name = "claude-aws"
type = "bedrock"
base_url = "{}"
region = "us-east-1"
api_key = "bedrock-key"
groups = ["aws"]
model_map = {{ "claude-sonnet-4-6" = "us.anthropic.claude-sonnet-4-6" }}

[[keys]]
name = "direct"
key_sha256 = "{}"
groups = ["direct"]

[[keys]]
name = "aws"
key_sha256 = "{}"
groups = ["aws"]
"#,
        anthropic.base_url(),
        bedrock.base_url(),
        sha256_hex(KEY),
        sha256_hex("sk-aws"),
    );
    let tg = Tollgate::start(&text);
    let body = |model: &str| json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]});
    let headers = |key| {
        [
            ("x-api-key", key),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
        ]
    };

    // Anthropic: the model's own name, and the 1M beta joins the client's.
    let resp = post(
        &tg,
        "/v1/messages",
        &headers(KEY),
        body("claude-sonnet-4-6[1m]"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = &anthropic.requests()[0];
    assert_eq!(got.json()["model"], "claude-sonnet-4-6");
    assert_eq!(
        got.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31,context-1m-2025-08-07")
    );
    // A plain alias: renamed, no 1M switch.
    let resp = post(&tg, "/v1/messages", &headers(KEY), body("sonnet")).await;
    assert_eq!(resp.status(), 200);
    let got = &anthropic.requests()[1];
    assert_eq!(got.json()["model"], "claude-sonnet-4-6");
    assert_eq!(
        got.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );

    // Bedrock: model_map applies to the model's name; the beta goes in the body.
    let resp = post(
        &tg,
        "/v1/messages",
        &headers("sk-aws"),
        body("claude-sonnet-4-6[1m]"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = &bedrock.requests()[0];
    assert_eq!(got.path, "/model/us.anthropic.claude-sonnet-4-6/invoke");
    assert_eq!(
        got.json()["anthropic_beta"],
        json!(["prompt-caching-2024-07-31", "context-1m-2025-08-07"])
    );

    // Billed and logged as the model.
    assert_eq!(logged_usage(&tg, 2).await, (12, 6, 30, 2, false));
    let lines = access_log_lines(&tg);
    assert_eq!(lines.len(), 3);
    assert!(
        lines.iter().all(|l| l["model"] == "claude-sonnet-4-6"),
        "{lines:?}"
    );
    // Undeclared variants stay unknown.
    let resp = post(
        &tg,
        "/v1/messages",
        &headers(KEY),
        body("claude-sonnet-4-6[2m]"),
    )
    .await;
    assert_eq!(resp.status(), 404);
}

/// Translation into and out of Gemini through the real server: a Gemini
/// client streaming without `alt=sse` on a chat channel gets one JSON
/// array; on Vertex, the model's name picks the format (Claude models
/// Anthropic, others Gemini), whichever format the client speaks.
#[tokio::test(flavor = "multi_thread")]
async fn gemini_translation_and_vertex_formats_by_model() {
    let oai = MockUpstream::start(|r| match r.json()["stream"] == true {
        true => Reply::Sse {
            events: chat_stream(&["Hel", "lo"], Some((9, 2))),
            gap: Duration::from_millis(5),
        },
        false => Reply::json(200, chat_completion("m", "Hello", 9, 2)),
    })
    .await;
    let up = MockUpstream::start(|r| {
        if r.path == "/token" {
            Reply::json(
                200,
                json!({"access_token": VERTEX_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            )
        } else if r.path.ends_with(":rawPredict") {
            Reply::json(200, anthropic_message(12, 6, 0, 0))
        } else {
            gemini_upstream(r)
        }
    })
    .await;
    let sa = json!({"type": "service_account", "project_id": "proj-1", "private_key_id": "kid1",
        "private_key": include_str!("data/vertex-test-key.pem"),
        "client_email": "tollgate-test@proj-1.iam.gserviceaccount.com"});
    let models = format!(
        "{}\n{}\n{}",
        price("gpt-4o"),
        price("claude-sonnet-4-5"),
        price("gemini-2.5-flash")
    );
    let tg = Tollgate::start(&head(
        &models,
        &format!(
            r#"[[channels]]
name = "oai"
type = "openai"
base_url = "{}"
api_key = "sk-up-oai"
models = ["gpt-4o"]

[[channels]]
name = "vertex"
type = "vertex"
base_url = "{}"
location = "us-east5"
token_uri = "{}/token"
credentials_json = '''{sa}'''
models = ["claude-sonnet-4-5", "gemini-2.5-flash"]"#,
            oai.base_url(),
            up.base_url(),
            up.base_url()
        ),
    ));
    let goog = [("x-goog-api-key", KEY)];
    let contents = json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]});

    // A Gemini stream without alt=sse, from a chat channel: one JSON array.
    let resp = post(
        &tg,
        "/v1beta/models/gpt-4o:streamGenerateContent",
        &goog,
        contents.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", tg.log());
    assert_eq!(resp.headers()["content-type"], "application/json");
    let array: Value = resp.json().await.unwrap();
    let texts: Vec<&str> = array
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, ["Hel", "lo", ""]);
    let last = array.as_array().unwrap().last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 9);
    let sent = &oai.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-up-oai"));
    assert_eq!(
        sent.json()["stream_options"],
        json!({"include_usage": true})
    );
    assert_eq!(logged_usage(&tg, 0).await, (9, 2, 0, 0, false));

    // A Gemini client of a Claude model on Vertex: Anthropic's rawPredict.
    let resp = post(
        &tg,
        "/v1beta/models/claude-sonnet-4-5:generateContent",
        &goog,
        contents.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", tg.log());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["candidates"][0]["content"]["parts"],
        json!([{"text": "Hi!"}])
    );
    let prefix = "/v1/projects/proj-1/locations/us-east5/publishers";
    let calls: Vec<Received> = up
        .requests()
        .into_iter()
        .filter(|r| r.path != "/token")
        .collect();
    assert_eq!(
        calls[0].path,
        format!("{prefix}/anthropic/models/claude-sonnet-4-5:rawPredict")
    );
    assert_eq!(calls[0].json()["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(calls[0].json()["max_tokens"], 4096);
    assert_eq!(logged_usage(&tg, 1).await, (12, 6, 0, 0, false));

    // An Anthropic client of a Gemini model on Vertex: Gemini's path.
    let resp = post(
        &tg,
        "/v1/messages",
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
        json!({"model": "gemini-2.5-flash", "max_tokens": 20,
               "messages": [{"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", tg.log());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["content"],
        json!([{"type": "text", "text": "Hello"}])
    );
    assert_eq!(answer["usage"]["input_tokens"], 50);
    let calls: Vec<Received> = up
        .requests()
        .into_iter()
        .filter(|r| r.path != "/token")
        .collect();
    assert_eq!(
        calls[1].path,
        format!("{prefix}/google/models/gemini-2.5-flash:generateContent")
    );
    assert_eq!(
        calls[1].json()["generationConfig"],
        json!({"maxOutputTokens": 20})
    );
    assert_eq!(logged_usage(&tg, 2).await, (50, 4, 0, 0, false));
}
