//! The OpenAI relay against a real loopback upstream: request shaping,
//! non-stream and stream pass-through.

mod common;

use common::*;
use serde_json::json;

fn config(upstream: &str) -> String {
    format!(
        r#"
[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "gpt-4o"
input = 2.5
output = 10

[[models]]
name = "gpt-4o-latest"
input = 2.5
output = 10

[[channels]]
name = "up"
type = "openai"
base_url = "{upstream}/prefix"
api_key = "sk-upstream-secret"
models = ["gpt-4o"]
model_map = {{ "gpt-4o-latest" = "gpt-4o-2024-11-20" }}

[[keys]]
name = "k"
key_sha256 = "{}"
"#,
        sha256_hex("sk-client")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn non_stream_request_is_shaped_for_the_channel() {
    let up =
        MockUpstream::start(|_| Reply::json(200, chat_completion("gpt-4o", "hi", 10, 2))).await;
    let tg = Tollgate::start(&config(&up.base_url()));
    let resp = client()
        .post(tg.url("/v1/chat/completions?trace=1"))
        .header("authorization", "Bearer sk-client")
        .header("x-custom", "kept")
        .body(r#"{"model": "gpt-4o-latest", "messages": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hi");

    let got = &up.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/prefix/v1/chat/completions?trace=1");
    assert_eq!(
        got.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert_eq!(
        got.header("host"),
        Some(format!("127.0.0.1:{}", up.port).as_str())
    );
    assert_eq!(
        got.body,
        br#"{"model": "gpt-4o-2024-11-20", "messages": []}"#.to_vec(),
        "only the mapped model name changes"
    );
    assert!(!tg.log().contains("sk-client") && !tg.log().contains("sk-upstream-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_injects_usage_upstream_and_hides_it_from_the_client() {
    let up = MockUpstream::start(|_| Reply::Sse {
        events: chat_stream(&["Hel", "lo"], Some((9, 2))),
        gap: std::time::Duration::ZERO,
    })
    .await;
    let tg = Tollgate::start(&config(&up.base_url()));
    let text = client()
        .post(tg.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-client")
        .body(json!({"model": "gpt-4o", "stream": true, "messages": []}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected: String = chat_stream(&["Hel", "lo"], None).concat();
    assert_eq!(
        text, expected,
        "client sees exactly the stream without the usage chunk"
    );
    assert_eq!(
        up.requests()[0].json()["stream_options"]["include_usage"],
        true
    );
}
