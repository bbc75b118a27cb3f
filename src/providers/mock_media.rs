//! The `mock` channel's answers on the media and moderation endpoints
//! (docs/api.md, "The mock channel"), deterministic so that demos and tests
//! run offline: a 1×1 PNG per image, a fixed transcription with the
//! upload's duration, a short silent WAV for speech, moderation and rerank
//! results with usage.

use bytes::Bytes;
use serde_json::{json, Value};

use super::mock::MockAnswer;
use super::OpenAiOp;
use crate::body::BodyProbe;
use crate::media::{MediaAsk, MediaOp};
use crate::usage::{Units, Usage};

/// A valid 1×1 RGBA PNG, base64.
pub const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGPQqr/yHwAE0QJ9PWShagAAAABJRU5ErkJggg==";
pub const TRANSCRIPT: &str = "Hello from the tollgate mock channel.";
const CREATED: u64 = 1_700_000_000;
/// Tokens the mock reports per image: a prompt's text, an input image
/// (edits), an output image (gpt-image-1's low-quality square).
const TEXT_TOKENS: u64 = 16;
const IMAGE_INPUT_TOKENS: u64 = 64;
const IMAGE_OUTPUT_TOKENS: u64 = 272;
/// Speech: 0.1 s of 16 kHz 16-bit mono silence.
const SPEECH_SAMPLES: u32 = 1600;

/// The answer to `op`, and the media units it reports.
pub fn answer(op: OpenAiOp, probe: &BodyProbe, ask: &MediaAsk, body: &[u8]) -> (MockAnswer, Units) {
    let model = probe.model.as_deref().unwrap_or("mock");
    let prompt_tokens = (body.len().div_ceil(4).max(1) as u64).min(1 << 20);
    match op.media() {
        Some(MediaOp::Image) => image(op, ask),
        Some(MediaOp::Transcribe) => transcription(ask),
        Some(MediaOp::Speech) => speech(ask),
        None if op == OpenAiOp::Rerank => (rerank(model, body, prompt_tokens), Units::default()),
        None => (moderation(model, body, prompt_tokens), Units::default()),
    }
}

fn json_answer(value: Value, usage: Usage) -> MockAnswer {
    answer_of("application/json", Bytes::from(value.to_string()), usage)
}

fn answer_of(content_type: &'static str, body: Bytes, usage: Usage) -> MockAnswer {
    MockAnswer {
        status: 200,
        content_type,
        events: vec![body],
        usage,
    }
}

fn image(op: OpenAiOp, ask: &MediaAsk) -> (MockAnswer, Units) {
    let n = ask.images;
    // No host to serve a file from: a URL answer is a data URL.
    let item = match ask.response_format.as_deref() {
        Some("url") => json!({"url": format!("data:image/png;base64,{PNG_B64}")}),
        _ => json!({"b64_json": PNG_B64}),
    };
    let image_input = if op == OpenAiOp::ImageEdits {
        IMAGE_INPUT_TOKENS
    } else {
        0
    };
    let output = IMAGE_OUTPUT_TOKENS * n;
    let body = json!({
        "created": CREATED,
        "data": vec![item; usize::try_from(n).unwrap_or(0).min(16)],
        "usage": {
            "input_tokens": TEXT_TOKENS + image_input,
            "input_tokens_details": {"text_tokens": TEXT_TOKENS, "image_tokens": image_input},
            "output_tokens": output,
            "total_tokens": TEXT_TOKENS + image_input + output,
        },
    });
    let usage = Usage {
        input: TEXT_TOKENS,
        output,
        ..Usage::default()
    };
    let units = Units {
        images: n,
        image_input,
        ..Units::default()
    };
    (json_answer(body, usage), units)
}

/// The upload's duration, reported as Whisper does: whole seconds
/// (rounded up) in `usage` of a JSON answer, exact in `verbose_json`,
/// none in plain text (the gateway then estimates it).
fn transcription(ask: &MediaAsk) -> (MockAnswer, Units) {
    let ms = ask.upload_audio_ms;
    let seconds = ms.div_ceil(1000);
    let units = |audio_ms| Units {
        audio_ms,
        ..Units::default()
    };
    match ask.response_format.as_deref() {
        Some("text") => (
            answer_of(
                "text/plain; charset=utf-8",
                Bytes::from(format!("{TRANSCRIPT}\n")),
                Usage::default(),
            ),
            Units::default(),
        ),
        Some("verbose_json") => {
            let duration = rust_decimal::Decimal::new(ms as i64, 3).normalize();
            let body = format!(
                r#"{{"task":"transcribe","language":"english","duration":{duration},"text":"{TRANSCRIPT}","segments":[]}}"#
            );
            (
                answer_of("application/json", Bytes::from(body), Usage::default()),
                units(ms),
            )
        }
        _ => (
            json_answer(
                json!({"text": TRANSCRIPT, "usage": {"type": "duration", "seconds": seconds}}),
                Usage::default(),
            ),
            units(seconds * 1000),
        ),
    }
}

fn speech(ask: &MediaAsk) -> (MockAnswer, Units) {
    let wav = crate::media::pcm_wav(16_000, SPEECH_SAMPLES);
    let units = Units {
        chars: ask.chars,
        ..Units::default()
    };
    (
        answer_of("audio/wav", Bytes::from(wav), Usage::default()),
        units,
    )
}

/// How many inputs a moderation request has (a string or an array).
fn inputs(body: &[u8], field: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match &doc[field] {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

fn moderation(model: &str, body: &[u8], prompt_tokens: u64) -> MockAnswer {
    let categories = ["harassment", "hate", "self-harm", "sexual", "violence"];
    let result = json!({
        "flagged": false,
        "categories": categories.iter().map(|c| (c.to_string(), json!(false)))
            .collect::<serde_json::Map<_, _>>(),
        "category_scores": categories.iter().map(|c| (c.to_string(), json!(0.0001)))
            .collect::<serde_json::Map<_, _>>(),
    });
    let n = inputs(body, "input").len().max(1);
    let usage = Usage {
        input: prompt_tokens,
        ..Usage::default()
    };
    json_answer(
        json!({"id": "modr-mock", "model": model, "results": vec![result; n],
               "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}),
        usage,
    )
}

/// Documents scored by their position: the first is the most relevant.
fn rerank(model: &str, body: &[u8], prompt_tokens: u64) -> MockAnswer {
    let documents = inputs(body, "documents");
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let top_n = doc["top_n"]
        .as_u64()
        .map_or(documents.len(), |n| n as usize);
    let results: Vec<Value> = documents
        .iter()
        .enumerate()
        .take(top_n)
        .map(|(i, d)| {
            let text = d.get("text").unwrap_or(d).clone();
            json!({"index": i, "relevance_score": 1.0 / (i as f64 + 1.0),
                   "document": {"text": text}})
        })
        .collect();
    let usage = Usage {
        input: prompt_tokens,
        ..Usage::default()
    };
    json_answer(
        json!({"id": "rerank-mock", "model": model, "results": results,
               "usage": {"total_tokens": prompt_tokens}}),
        usage,
    )
}
