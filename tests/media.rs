//! Images, audio, moderation and rerank (SPEC §13) end to end: the real
//! binary, OpenAI-format upstreams on loopback speaking the real wire
//! shapes, the sled ledger. Costs are worked out by hand in nano-USD.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const MODELS: &str = r#"
[[groups]]
name = "half"
ratio = 0.5

[[groups]]
name = "full"
ratio = 1.0

[[models]]
name = "gpt-image-1"
input = 5
image_input = 10
output = 40
per_image = { "1024x1024" = 0.011, "1024x1536/high" = 0.25, "auto" = 0.011 }

[[models]]
name = "free-img"

[[models]]
name = "whisper-1"
per_second = 0.0001

[[models]]
name = "tts-1"
per_1k_chars = 0.015

[[models]]
name = "rr"
input = 0.02
"#;

const BOUNDARY: &str = "----tollgate-test-b0undary";

/// A multipart body: text fields, then a file part.
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((name, filename, bytes)) = file {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Bytes that hold CRLFs, dashes and a near-boundary, as binary files do.
fn binary_file(len: usize) -> Vec<u8> {
    let pattern = format!("\r\n--{}\u{0}\u{ff}", &BOUNDARY[..BOUNDARY.len() - 1]);
    pattern.bytes().cycle().take(len).collect()
}

fn openai_channel(name: &str, url: &str, groups: &[&str], models: &[&str], extra: &str) -> String {
    format!(
        "\n[[channels]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{url}\"\n\
         api_key = \"sk-up-media\"\ngroups = {groups:?}\nmodels = {models:?}\n{extra}\n"
    )
}

fn key(name: &str, secret: &str, groups: &[&str]) -> String {
    format!(
        "\n[[keys]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\ngroups = {groups:?}\n",
        sha256_hex(secret)
    )
}

async fn post(
    tg: &Tollgate,
    secret: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client()
        .post(tg.url(path))
        .bearer_auth(secret)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn form_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// `/admin/usage` grouped by model once it counts `requests` requests.
async fn usage_by_model(tg: &Tollgate, requests: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = get_json(&tg.admin_url("/admin/usage?group_by=model,group"), None).await;
        assert_eq!(status, 200, "{v}");
        if v["total"]["requests"] == requests || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row<'a>(usage: &'a Value, model: &str) -> &'a Value {
    usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("no row for {model}: {usage}"))
}

#[tokio::test]
async fn image_generation_is_relayed_byte_for_byte_and_billed_by_size_quality_and_tokens() {
    let b64 = "QUJD".repeat(100_000);
    let answer = format!(
        r#"{{"created":1,"data":[{{"b64_json":"{b64}"}}],"usage":{{"input_tokens":50,"input_tokens_details":{{"text_tokens":50,"image_tokens":0}},"output_tokens":4160,"total_tokens":4210}}}}"#
    );
    let upstream_answer = answer.clone();
    let up = MockUpstream::start(move |_| Reply::Full {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: upstream_answer.clone().into_bytes(),
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{MODELS}{}{}",
        openai_channel(
            "img",
            &up.base_url(),
            &["half"],
            &["gpt-image-1"],
            "model_map = { \"gpt-image-1\" = \"gpt-image-1-2025\" }"
        ),
        key("k", "sk-media-client-1", &["half"])
    ));
    let body = json!({"model": "gpt-image-1", "prompt": "a lighthouse", "size": "1024x1536",
                      "quality": "high", "n": 1});
    let resp = post(
        &tg,
        "sk-media-client-1",
        "/v1/images/generations",
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        answer,
        "passed through unchanged"
    );
    let sent = up.requests();
    assert_eq!(sent[0].path, "/v1/images/generations");
    assert_eq!(sent[0].json()["model"], "gpt-image-1-2025");
    assert_eq!(sent[0].header("authorization"), Some("Bearer sk-up-media"));
    // Tokens: 50 x 5 + 4160 x 40 = 166,650 per 1M -> 166,650,000 nano;
    // one 1024x1536 high image: 250,000,000; x 0.5 = 208,325,000.
    let usage = usage_by_model(&tg, 1).await;
    let r = row(&usage, "gpt-image-1");
    assert_eq!(r["cost_nano_usd"], 208_325_000, "{usage}");
    assert_eq!(
        (
            r["input"].as_i64(),
            r["output"].as_i64(),
            r["images"].as_i64()
        ),
        (Some(50), Some(4160), Some(1))
    );
    let m = tg.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "tollgate_tokens_total",
            &[("model", "gpt-image-1"), ("kind", "images")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "tollgate_spend_nano_usd_total",
            &[("model", "gpt-image-1")]
        ),
        208_325_000.0
    );
}

#[tokio::test]
async fn a_multipart_edit_fails_over_with_the_same_bytes_and_bills_image_tokens() {
    let failing =
        MockUpstream::start(|_| Reply::json(500, json!({"error": {"message": "boom"}}))).await;
    let good = MockUpstream::start(|_| {
        Reply::json(200, json!({"created": 1, "data": [{"b64_json": "AAAA"}, {"b64_json": "BBBB"}],
            "usage": {"input_tokens": 80, "input_tokens_details": {"text_tokens": 16, "image_tokens": 64},
                      "output_tokens": 544, "total_tokens": 624}}))
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{MODELS}{}{}{}",
        openai_channel(
            "first",
            &failing.base_url(),
            &["full"],
            &["gpt-image-1"],
            "priority = 10"
        ),
        openai_channel(
            "second",
            &good.base_url(),
            &["full"],
            &["gpt-image-1"],
            "priority = 5"
        ),
        key("k", "sk-media-client-2", &["full"])
    ));
    let file = binary_file(300_000);
    let body = multipart(
        &[
            ("prompt", "add a hat"),
            ("size", "1024x1024"),
            ("n", "2"),
            ("model", "gpt-image-1"),
        ],
        Some(("image", "cat.png", &file)),
    );
    let resp = post(
        &tg,
        "sk-media-client-2",
        "/v1/images/edits",
        &form_type(),
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (a, b) = (failing.requests(), good.requests());
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].body, body, "first attempt: the client's bytes");
    assert_eq!(b[0].body, body, "replayed byte-identical");
    assert_eq!(b[0].path, "/v1/images/edits");
    assert_eq!(b[0].header("content-type"), Some(form_type().as_str()));
    // 16 text x 5 + 64 image x 10 + 544 output x 40 = 22,480 per 1M
    // -> 22,480,000 nano; 2 images x 0.011 = 22,000,000; x 1.0.
    let usage = usage_by_model(&tg, 1).await;
    let r = row(&usage, "gpt-image-1");
    assert_eq!(r["cost_nano_usd"], 44_480_000, "{usage}");
    assert_eq!(
        (
            r["images"].as_i64(),
            r["image_input"].as_i64(),
            r["input"].as_i64()
        ),
        (Some(2), Some(64), Some(16))
    );
}

#[tokio::test]
async fn upload_endpoints_refuse_bad_bodies_and_unpriced_media_in_the_openai_dialect() {
    let up = MockUpstream::start(|_| Reply::json(200, json!({"created": 1, "data": []}))).await;
    let tg = Tollgate::start_with(|port, admin, dir| {
        format!(
            "{}max_body_bytes = 200000\n{MODELS}{}{}",
            server_section(port, admin, dir),
            openai_channel(
                "img",
                &up.base_url(),
                &["full"],
                &["gpt-image-1", "free-img"],
                ""
            ),
            key("k", "sk-media-client-3", &["full"])
        )
    });
    let secret = "sk-media-client-3";
    // (path, content type, body, status, error code, message part)
    type Case = (
        &'static str,
        String,
        Vec<u8>,
        u16,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "/v1/images/edits",
            form_type(),
            multipart(&[("prompt", "p")], Some(("image", "a.png", b"PNG"))),
            400,
            "missing_model",
            "no `model`",
        ),
        (
            "/v1/images/edits",
            form_type(),
            {
                let whole = multipart(&[("model", "gpt-image-1")], None);
                whole[..whole.len() - 10].to_vec()
            },
            400,
            "invalid_body",
            "without its closing boundary",
        ),
        (
            "/v1/images/edits",
            form_type(),
            multipart(&[("model", "gpt-image-1"), ("size", "512x512")], Some(("image", "a.png", b"PNG"))),
            400,
            "unsupported_field",
            "model `gpt-image-1` has no price for size `512x512`; priced sizes: 1024x1024, 1024x1536/high, auto",
        ),
        (
            "/v1/images/generations",
            "application/json".into(),
            json!({"model": "gpt-image-1", "prompt": "p", "size": "1024x1536", "quality": "low"})
                .to_string()
                .into_bytes(),
            400,
            "unsupported_field",
            "no price for size `1024x1536` and quality `low`",
        ),
        (
            "/v1/images/generations",
            "application/json".into(),
            json!({"model": "free-img", "prompt": "p"}).to_string().into_bytes(),
            400,
            "unsupported_field",
            "model `free-img` has no image price",
        ),
        (
            "/v1/images/edits",
            form_type(),
            multipart(&[("model", "gpt-image-1")], Some(("image", "a.png", &binary_file(250_000)))),
            413,
            "request_too_large",
            "larger than the 200000 bytes allowed",
        ),
    ];
    for (path, content_type, body, status, code, message) in cases {
        let resp = post(&tg, secret, path, &content_type, body).await;
        assert_eq!(resp.status().as_u16(), status, "{code}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        let text = v["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{text}");
    }
    assert_eq!(up.count(), 0, "nothing refused reached the upstream");
}

#[tokio::test]
async fn transcriptions_bill_the_reported_duration_or_the_uploads() {
    let up = MockUpstream::start(|req| {
        let body = String::from_utf8_lossy(&req.body);
        if body.contains("name=\"response_format\"\r\n\r\ntext") {
            Reply::Full {
                status: 200,
                headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
                body: b"hello there\n".to_vec(),
            }
        } else if body.contains("verbose_json") {
            Reply::json(
                200,
                json!({"task": "transcribe", "language": "english", "duration": 8.47,
                                    "text": "hello there", "segments": []}),
            )
        } else {
            Reply::json(
                200,
                json!({"text": "hello there", "usage": {"type": "duration", "seconds": 3}}),
            )
        }
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{MODELS}{}{}",
        openai_channel("audio", &up.base_url(), &["half"], &["whisper-1"], ""),
        key("k", "sk-media-client-4", &["half"])
    ));
    let audio = tollgate::media::pcm_wav(16_000, 24_000); // 1.5 s
    for (path, format) in [
        ("/v1/audio/transcriptions", "json"),
        ("/v1/audio/translations", "verbose_json"),
        ("/v1/audio/transcriptions", "text"),
    ] {
        let body = multipart(
            &[("model", "whisper-1"), ("response_format", format)],
            Some(("file", "a.wav", &audio)),
        );
        let resp = post(&tg, "sk-media-client-4", path, &form_type(), body).await;
        assert_eq!(resp.status(), 200, "{format}");
        assert!(resp.text().await.unwrap().contains("hello there"));
    }
    assert_eq!(up.requests()[1].path, "/v1/audio/translations");
    // 3 s + 8.47 s + 1.5 s (estimated from the WAV header) = 12,970 ms at
    // 0.0001 USD/s = 1,297,000 nano; x 0.5 = 648,500.
    let usage = usage_by_model(&tg, 3).await;
    let r = row(&usage, "whisper-1");
    assert_eq!(r["cost_nano_usd"], 648_500, "{usage}");
    assert_eq!(r["audio_ms"], 12_970);
    assert_eq!(r["estimated"], 1, "the text answer's duration is estimated");
    // Each request in the per-request log, with its duration.
    let (_, log) = get_json(&tg.admin_url("/admin/requests"), None).await;
    let mut entries: Vec<(i64, bool)> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["audio_ms"].as_i64().unwrap(), e["estimated"] == true))
        .collect();
    entries.sort_unstable();
    assert_eq!(
        entries,
        [(1500, true), (3000, false), (8470, false)],
        "{log}"
    );
}

#[tokio::test]
async fn speech_passes_audio_through_and_bills_input_characters() {
    let audio: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let answer = audio.clone();
    let up = MockUpstream::start(move |_| Reply::Full {
        status: 200,
        headers: vec![("content-type".into(), "audio/mpeg".into())],
        body: answer.clone(),
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{MODELS}{}{}",
        openai_channel("tts", &up.base_url(), &["full"], &["tts-1"], ""),
        key("k", "sk-media-client-5", &["full"])
    ));
    let body = json!({"model": "tts-1", "input": "héllo wörld", "voice": "alloy"});
    let resp = post(
        &tg,
        "sk-media-client-5",
        "/v1/audio/speech",
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    assert!(
        resp.bytes().await.unwrap() == audio,
        "audio bytes unchanged"
    );
    // 11 characters (not 13 bytes) at 0.015 per 1,000 = 165,000 nano.
    let usage = usage_by_model(&tg, 1).await;
    let r = row(&usage, "tts-1");
    assert_eq!(
        (r["cost_nano_usd"].as_i64(), r["chars"].as_i64()),
        (Some(165_000), Some(11)),
        "{usage}"
    );
    assert_eq!(r["estimated"], 0);
}

#[tokio::test]
async fn rerank_goes_only_to_channels_that_have_it() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            json!({"id": "r", "model": "rr", "results": [{"index": 1, "relevance_score": 0.9}],
                                "usage": {"total_tokens": 40}}),
        )
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{MODELS}{}{}{}{}",
        openai_channel("rr-on", &up.base_url(), &["full"], &["rr"], "rerank = true"),
        openai_channel("rr-off", &up.base_url(), &["half"], &["rr"], ""),
        key("on", "sk-media-client-6", &["full"]),
        key("off", "sk-media-client-7", &["half"])
    ));
    let body = json!({"model": "rr", "query": "q", "documents": ["a", "b"]}).to_string();
    let resp = post(
        &tg,
        "sk-media-client-6",
        "/v1/rerank",
        "application/json",
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let resp = post(
        &tg,
        "sk-media-client-7",
        "/v1/rerank",
        "application/json",
        body.into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_format", "{v}");
    assert_eq!(up.count(), 1);
    // 40 tokens x 0.02 per 1M = 800 nano.
    let usage = usage_by_model(&tg, 1).await;
    assert_eq!(row(&usage, "rr")["cost_nano_usd"], 800, "{usage}");
}

#[tokio::test]
async fn the_mock_channel_answers_media_endpoints_offline() {
    let tg = Tollgate::start(&format!(
        "{MODELS}\n[[channels]]\nname = \"mock\"\ntype = \"mock\"\ngroups = [\"full\"]\n{}",
        key("k", "sk-media-client-8", &["full"])
    ));
    let secret = "sk-media-client-8";
    let resp = post(
        &tg,
        secret,
        "/v1/images/generations",
        "application/json",
        json!({"model": "gpt-image-1", "prompt": "p", "n": 2})
            .to_string()
            .into_bytes(),
    )
    .await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .starts_with("iVBORw0KGgo"));
    let body = multipart(
        &[("model", "whisper-1")],
        Some(("file", "a.wav", &tollgate::media::pcm_wav(16_000, 32_000))),
    );
    let resp = post(&tg, secret, "/v1/audio/transcriptions", &form_type(), body).await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"], json!({"type": "duration", "seconds": 2}));
    let resp = post(
        &tg,
        secret,
        "/v1/audio/speech",
        "application/json",
        json!({"model": "tts-1", "input": "hi", "voice": "alloy"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert!(resp.bytes().await.unwrap().starts_with(b"RIFF"));
    // gpt-image-1: 16 x 5 + 544 x 40 = 21,840 per 1M -> 21,840,000 nano +
    // 2 x 0.011 ("auto") = 43,840,000; whisper-1 2 s = 200,000; tts-1 2
    // chars = 30,000.
    let usage = usage_by_model(&tg, 3).await;
    assert_eq!(
        row(&usage, "gpt-image-1")["cost_nano_usd"],
        43_840_000,
        "{usage}"
    );
    assert_eq!(row(&usage, "whisper-1")["cost_nano_usd"], 200_000);
    assert_eq!(row(&usage, "tts-1")["cost_nano_usd"], 30_000);
}

#[tokio::test]
async fn media_prices_show_in_pricing_and_check() {
    let tg = Tollgate::start(MODELS);
    let (status, v) = get_json(&tg.url("/api/pricing"), None).await;
    assert_eq!(status, 200);
    let model = |name: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    let img = model("gpt-image-1");
    assert_eq!(
        img["per_image"],
        json!({"1024x1024": 0.011, "1024x1536/high": 0.25, "auto": 0.011})
    );
    assert_eq!(img["image_input"], 10.0);
    assert_eq!(model("whisper-1")["per_second"], 0.0001);
    assert_eq!(model("tts-1")["per_1k_chars"], 0.015);
    assert!(model("rr").get("per_image").is_none());
    let path = tg.dir.path().join("check.toml");
    std::fs::write(&path, MODELS).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "  gpt-image-1: per_image 1024x1024 0.011, per_image 1024x1536/high 0.25, per_image auto 0.011",
        "  whisper-1: per_second 0.0001",
        "  tts-1: per_1k_chars 0.015",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

const GOOGLE_MODELS: &str = r#"
[[models]]
name = "gemini-2.5-flash-image"
input = 0.3
output = 30

[[models]]
name = "imagen-4"
per_image = { "1024x1024" = 0.04, "auto" = 0.04 }

[[models]]
name = "gemini-2.5-flash"
input = 0.3
output = 2.5
"#;

fn gemini_image_answer() -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "A cat."},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
          "finishReason": "STOP", "index": 0}],
          "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1294,
                            "totalTokenCount": 1303}})
}

fn imagen_answer(n: usize) -> Value {
    json!({"predictions": vec![json!({"bytesBase64Encoded": "QUJD", "mimeType": "image/png"}); n]})
}

#[tokio::test]
async fn gemini_and_imagen_models_serve_openai_image_generations_by_translation() {
    let up = MockUpstream::start(|r| {
        if r.path.ends_with(":predict") {
            let n = r.json()["parameters"]["sampleCount"].as_u64().unwrap() as usize;
            Reply::json(200, imagen_answer(n))
        } else {
            Reply::json(200, gemini_image_answer())
        }
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{MODELS}{GOOGLE_MODELS}\n[[channels]]\nname = \"gemini\"\ntype = \"gemini\"\n\
         base_url = \"{}\"\napi_key = \"AIza-media-upstream\"\ngroups = [\"half\"]\n\
         models = [\"gemini-2.5-flash-image\", \"imagen-4\", \"gemini-2.5-flash\"]\n\
         model_map = {{ \"imagen-4\" = \"imagen-4.0-generate-001\" }}\n{}",
        up.base_url(),
        key("k", "sk-media-client-9", &["half"])
    ));
    let secret = "sk-media-client-9";
    let gen = |body: Value| {
        let tg = &tg;
        async move {
            let resp = post(
                tg,
                secret,
                "/v1/images/generations",
                "application/json",
                body.to_string().into_bytes(),
            )
            .await;
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, v) =
        gen(json!({"model": "gemini-2.5-flash-image", "prompt": "a cat", "size": "1024x1536"}))
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"],
        json!([{"b64_json": "iVBORw0KGgo=", "revised_prompt": "A cat."}])
    );
    assert_eq!(v["usage"]["output_tokens"], 1294);
    let sent = &up.requests()[0];
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some("AIza-media-upstream"));
    assert_eq!(
        sent.header("authorization"),
        None,
        "the client's key stays here"
    );
    assert_eq!(
        sent.json(),
        json!({"contents": [{"role": "user", "parts": [{"text": "a cat"}]}],
               "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                                    "imageConfig": {"aspectRatio": "2:3"}}})
    );
    let (status, v) =
        gen(json!({"model": "imagen-4", "prompt": "a cat", "n": 2, "size": "1024x1024"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let sent = &up.requests()[1];
    assert_eq!(sent.path, "/v1beta/models/imagen-4.0-generate-001:predict");
    assert_eq!(
        sent.json(),
        json!({"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 2, "aspectRatio": "1:1"}})
    );
    // Refused before anything goes upstream.
    let (status, v) =
        gen(json!({"model": "gemini-2.5-flash-image", "prompt": "p", "response_format": "url"}))
            .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("unsupported_field")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`response_format` cannot be sent"),
        "{v}"
    );
    let (status, v) = gen(json!({"model": "gemini-2.5-flash", "prompt": "p"})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("unsupported_format")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model with image output"),
        "{v}"
    );
    assert_eq!(up.count(), 2);
    // Gemini: (9 x 0.3 + 1294 x 30) / 1e6 = 0.0388227 USD; Imagen: 2 x 0.04;
    // x 0.5: 19,411,350 + 40,000,000.
    let usage = usage_by_model(&tg, 2).await;
    assert_eq!(
        row(&usage, "gemini-2.5-flash-image")["cost_nano_usd"],
        19_411_350,
        "{usage}"
    );
    assert_eq!(row(&usage, "gemini-2.5-flash-image")["images"], 1);
    assert_eq!(
        row(&usage, "imagen-4")["cost_nano_usd"],
        40_000_000,
        "{usage}"
    );
    assert_eq!(row(&usage, "imagen-4")["images"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn imagen_on_vertex_is_called_with_a_service_account_token() {
    let tokens = MockUpstream::start(|_| {
        Reply::json(
            200,
            json!({"access_token": "ya29.media-test", "expires_in": 3599, "token_type": "Bearer"}),
        )
    })
    .await;
    let up = MockUpstream::start(|r| {
        let n = r.json()["parameters"]["sampleCount"].as_u64().unwrap_or(1) as usize;
        Reply::json(200, imagen_answer(n))
    })
    .await;
    let sa = json!({"type": "service_account", "project_id": "proj-1", "private_key_id": "kid1",
        "private_key": include_str!("data/vertex-test-key.pem"),
        "client_email": "tollgate-test@proj-1.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token"});
    let tg = Tollgate::start(&format!(
        "{MODELS}{GOOGLE_MODELS}\n[[channels]]\nname = \"vertex\"\ntype = \"vertex\"\n\
         base_url = \"{}\"\nlocation = \"us-central1\"\ntoken_uri = \"{}/token\"\n\
         credentials_json = '''{sa}'''\ngroups = [\"full\"]\nmodels = [\"imagen-4\"]\n\
         model_map = {{ \"imagen-4\" = \"imagen-4.0-generate-001\" }}\n{}",
        up.base_url(),
        tokens.base_url(),
        key("k", "sk-media-client-10", &["full"])
    ));
    let body = json!({"model": "imagen-4", "prompt": "a cat", "n": 3});
    let resp = post(
        &tg,
        "sk-media-client-10",
        "/v1/images/generations",
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", tg.log());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    let sent = &up.requests()[0];
    assert_eq!(
        sent.path,
        "/v1/projects/proj-1/locations/us-central1/publishers/google/models/imagen-4.0-generate-001:predict"
    );
    assert_eq!(sent.header("authorization"), Some("Bearer ya29.media-test"));
    // 3 x 0.04 ("auto": no size) at ratio 1.
    let usage = usage_by_model(&tg, 1).await;
    assert_eq!(
        row(&usage, "imagen-4")["cost_nano_usd"],
        120_000_000,
        "{usage}"
    );
}

#[tokio::test]
async fn azure_serves_media_on_deployments_and_a_mapped_model_is_spliced_into_the_upload() {
    let up = MockUpstream::start(|r| {
        if r.path.contains("/audio/speech") {
            Reply::Full {
                status: 200,
                headers: vec![("content-type".into(), "audio/mpeg".into())],
                body: b"ID3-mp3-bytes".to_vec(),
            }
        } else {
            Reply::json(
                200,
                json!({"text": "hi", "usage": {"type": "duration", "seconds": 2}}),
            )
        }
    })
    .await;
    let tg = Tollgate::start(&format!(
        "{MODELS}\n[[channels]]\nname = \"azure\"\ntype = \"azure\"\nbase_url = \"{}\"\n\
         api_key = \"azure-media-upstream-key\"\ngroups = [\"full\"]\nmodels = [\"whisper-1\", \"tts-1\"]\n\
         model_map = {{ \"whisper-1\" = \"my-whisper\", \"tts-1\" = \"my-tts\" }}\n{}",
        up.base_url(),
        key("k", "sk-media-client-11", &["full"])
    ));
    let file = binary_file(50_000);
    let fields = |model| vec![("model", model), ("response_format", "json")];
    let body = multipart(&fields("whisper-1"), Some(("file", "a.mp3", &file)));
    let resp = post(
        &tg,
        "sk-media-client-11",
        "/v1/audio/transcriptions",
        &form_type(),
        body,
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", tg.log());
    let speech = json!({"model": "tts-1", "input": "four", "voice": "alloy"});
    let resp = post(
        &tg,
        "sk-media-client-11",
        "/v1/audio/speech",
        "application/json",
        speech.to_string().into_bytes(),
    )
    .await;
    assert_eq!(resp.bytes().await.unwrap(), &b"ID3-mp3-bytes"[..]);
    let sent = up.requests();
    assert_eq!(
        sent[0].path,
        "/openai/deployments/my-whisper/audio/transcriptions?api-version=2024-10-21"
    );
    assert_eq!(sent[0].header("api-key"), Some("azure-media-upstream-key"));
    // Only the model part changed; every other byte is the client's.
    assert_eq!(
        sent[0].body,
        multipart(&fields("my-whisper"), Some(("file", "a.mp3", &file)))
    );
    assert_eq!(
        sent[1].path,
        "/openai/deployments/my-tts/audio/speech?api-version=2024-10-21"
    );
    assert_eq!(sent[1].json()["model"], "my-tts");
    // 2 s x 0.0001 = 200,000; 4 chars x 0.015 / 1000 = 60,000.
    let usage = usage_by_model(&tg, 2).await;
    assert_eq!(
        row(&usage, "whisper-1")["cost_nano_usd"],
        200_000,
        "{usage}"
    );
    assert_eq!(row(&usage, "tts-1")["cost_nano_usd"], 60_000, "{usage}");
}

#[tokio::test]
async fn an_upload_edit_reaches_a_gemini_image_model_as_inline_data() {
    let up = MockUpstream::start(|_| Reply::json(200, gemini_image_answer())).await;
    let tg = Tollgate::start(&format!(
        "{MODELS}{GOOGLE_MODELS}\n[[channels]]\nname = \"gemini\"\ntype = \"gemini\"\n\
         base_url = \"{}\"\napi_key = \"AIza-media-upstream\"\ngroups = [\"full\"]\n\
         models = [\"gemini-2.5-flash-image\", \"imagen-4\"]\n\
         model_map = {{ \"imagen-4\" = \"imagen-4.0-generate-001\" }}\n{}",
        up.base_url(),
        key("k", "sk-media-client-12", &["full"])
    ));
    let png = binary_file(3000);
    let body = multipart(
        &[
            ("model", "gemini-2.5-flash-image"),
            ("prompt", "add a hat"),
            ("size", "1024x1024"),
        ],
        Some(("image", "cat.png", &png)),
    );
    let resp = post(
        &tg,
        "sk-media-client-12",
        "/v1/images/edits",
        &form_type(),
        body,
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", tg.log());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"][0]["b64_json"], "iVBORw0KGgo=");
    let sent = &up.requests()[0];
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&png);
    assert_eq!(
        sent.json()["contents"][0]["parts"],
        json!([{"inlineData": {"mimeType": "application/octet-stream", "data": encoded}},
               {"text": "add a hat"}])
    );
    assert_eq!(
        sent.json()["generationConfig"]["imageConfig"]["aspectRatio"],
        "1:1"
    );
    // Imagen takes no edits: no channel serves it there.
    let body = multipart(
        &[("model", "imagen-4"), ("prompt", "p")],
        Some(("image", "a.png", b"PNG")),
    );
    let resp = post(
        &tg,
        "sk-media-client-12",
        "/v1/images/edits",
        &form_type(),
        body,
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_format", "{v}");
    // (9 x 0.3 + 1294 x 30) / 1e6 = 0.0388227 USD at ratio 1.
    let usage = usage_by_model(&tg, 1).await;
    assert_eq!(
        row(&usage, "gemini-2.5-flash-image")["cost_nano_usd"],
        38_822_700,
        "{usage}"
    );
}

#[tokio::test]
async fn an_uploads_file_is_not_reserved_against_a_budget_as_prompt_tokens() {
    let up = MockUpstream::start(|_| {
        Reply::json(200, json!({"created": 1, "data": [{"b64_json": "AAAA"}],
            "usage": {"input_tokens": 10, "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                      "output_tokens": 100, "total_tokens": 110}}))
    })
    .await;
    // 1 USD: 400,000 bytes as input tokens at 5 USD per 1M would reserve
    // 2 USD (and refuse the request); the text fields reserve next to nothing.
    let tg = Tollgate::start(&format!(
        "{MODELS}{}\n[[keys]]\nname = \"k\"\nkey_sha256 = \"{}\"\ngroups = [\"full\"]\nbudget_usd = 1\n",
        openai_channel("img", &up.base_url(), &["full"], &["gpt-image-1"], ""),
        sha256_hex("sk-media-client-13")
    ));
    let body = multipart(
        &[("model", "gpt-image-1"), ("prompt", "add a hat")],
        Some(("image", "cat.png", &binary_file(400_000))),
    );
    let resp = post(
        &tg,
        "sk-media-client-13",
        "/v1/images/edits",
        &form_type(),
        body,
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // 10 x 5 + 100 x 40 = 4,050 per 1M -> 4,050,000 nano; + 0.011 ("auto").
    let usage = usage_by_model(&tg, 1).await;
    assert_eq!(
        row(&usage, "gpt-image-1")["cost_nano_usd"],
        15_050_000,
        "{usage}"
    );
}

#[tokio::test]
async fn a_budget_reserves_the_media_a_request_asks_for() {
    // The mock takes 800 ms to answer, so the two requests overlap.
    let tg = Tollgate::start(&format!(
        "{MODELS}\n[[models]]\nname = \"flat-img\"\nper_image = {{ \"auto\" = 0.04 }}\n\
         [[channels]]\nname = \"mock\"\ntype = \"mock\"\ngroups = [\"full\"]\ndelay_ms = 800\n\
         {}budget_usd = 0.1\n",
        key("k", "sk-media-budget-1", &["full"])
    ));
    let images = |n: u64| {
        let tg = &tg;
        async move {
            let body = json!({"model": "flat-img", "prompt": "p", "n": n});
            let resp = post(
                tg,
                "sk-media-budget-1",
                "/v1/images/generations",
                "application/json",
                body.to_string().into_bytes(),
            )
            .await;
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let first = images(3);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        images(3).await
    };
    let ((first, _), (status, v)) = tokio::join!(first, second);
    // The first holds its 3 x 0.04 = 0.12 USD while it runs: the second
    // waits for it instead of overdrawing the 0.1 USD budget twice.
    assert_eq!(first, 200);
    assert_eq!(
        (status, &v["error"]["code"]),
        (429, &json!("rate_limit_exceeded")),
        "{v}"
    );
    // Spent 0.12 >= 0.1: used up.
    let (status, v) = images(1).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (429, &json!("insufficient_quota"))
    );
    let usage = usage_by_model(&tg, 1).await;
    assert_eq!(row(&usage, "flat-img")["cost_nano_usd"], 120_000_000);
}
