//! The in-process `mock` channel: answers in the OpenAI, Anthropic Messages
//! and Gemini wire formats without any network, so the example config works
//! offline for all three SDKs and load tests have a zero-cost upstream.
//! Text and usage are deterministic: the prompt counts one token per 4
//! bytes of request body, the answer one token per word.

use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use serde_json::{json, Value};

use super::{Endpoint, GeminiMethod};
use crate::body::BodyProbe;
use crate::translate::responses_chat::{chat_response_to_responses, ChatToResponsesStream};
use crate::usage::Usage;

const ANSWER: &str = "Hello from the tollgate mock channel. This answer is deterministic, \
                      so tests and demos can rely on it.";

/// A complete mock answer: the body is sent as `events` (one write each,
/// with the channel's delay before each) or as one JSON document.
pub struct MockAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub events: Vec<Bytes>,
    /// What the answer costs, whether or not the body reports it.
    pub usage: Usage,
}

impl MockAnswer {
    /// The response head: chunked for a stream, so that each event is
    /// written as it comes; with a length for a whole body.
    pub fn head(&self, stream: bool) -> ResponseHeader {
        let mut head = ResponseHeader::build(self.status, Some(4)).expect("valid status");
        let _ = head.insert_header("content-type", self.content_type);
        if stream {
            let _ = head.insert_header("cache-control", "no-cache");
            let _ = head.insert_header("transfer-encoding", "chunked");
        } else {
            let len: usize = self.events.iter().map(Bytes::len).sum();
            let _ = head.insert_header("content-length", len);
        }
        head
    }
}

/// Answers a request for `endpoint` (at `path`) whose body is `body_len`
/// bytes.
pub fn answer(endpoint: Endpoint, path: &str, probe: &BodyProbe, body_len: usize) -> MockAnswer {
    let model = probe.model.as_deref().unwrap_or("mock");
    let prompt_tokens = body_len.div_ceil(4).max(1) as u64;
    let limit = probe.max_output_tokens.unwrap_or(u64::MAX).max(1) as usize;
    let words: Vec<&str> = ANSWER.split(' ').take(limit).collect();
    let mut answer = match endpoint {
        Endpoint::OpenAi(_) => openai_answer(path, probe, model, prompt_tokens, &words),
        Endpoint::AnthropicMessages => anthropic_answer(probe, model, prompt_tokens, &words),
        Endpoint::AnthropicCountTokens => json_answer(json!({ "input_tokens": prompt_tokens })),
        Endpoint::Gemini(GeminiMethod::CountTokens) => {
            json_answer(json!({ "totalTokens": prompt_tokens }))
        }
        Endpoint::Gemini(GeminiMethod::EmbedContent) => json_answer(json!({
            "embedding": {"values": [0.125, -0.25, 0.5, -1.0, 0.0625, 0.75, -0.375, 1.0]}
        })),
        Endpoint::Gemini(_) => gemini_answer(probe, model, prompt_tokens, &words),
    };
    let completion_tokens = words.len() as u64;
    answer.usage = match endpoint {
        _ if endpoint.is_count() => Usage::default(),
        Endpoint::OpenAi(_) if path == "/v1/embeddings" => Usage {
            input: prompt_tokens,
            ..Usage::default()
        },
        Endpoint::Gemini(GeminiMethod::EmbedContent) => Usage {
            input: prompt_tokens,
            ..Usage::default()
        },
        _ => Usage {
            input: prompt_tokens,
            output: completion_tokens,
            ..Usage::default()
        },
    };
    answer
}

/// The answer as words with their separating spaces, one piece per word.
fn pieces<'a>(words: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    words.iter().enumerate().map(|(i, w)| {
        if i == 0 {
            (*w).to_string()
        } else {
            format!(" {w}")
        }
    })
}

fn anthropic_answer(probe: &BodyProbe, model: &str, input: u64, words: &[&str]) -> MockAnswer {
    let output = words.len() as u64;
    let id = "msg_mock";
    if !probe.stream {
        return json_answer(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": words.join(" ")}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": output},
        }));
    }
    let mut events = vec![
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
    ];
    events.extend(pieces(words).map(|p| {
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": p}})
    }));
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": output}}));
    events.push(json!({"type": "message_stop"}));
    MockAnswer {
        status: 200,
        content_type: "text/event-stream",
        events: events
            .into_iter()
            .map(|e| {
                let name = e["type"].as_str().unwrap_or("message").to_string();
                Bytes::from(format!("event: {name}\ndata: {e}\n\n"))
            })
            .collect(),
        usage: Usage::default(),
    }
}

fn gemini_answer(probe: &BodyProbe, model: &str, prompt: u64, words: &[&str]) -> MockAnswer {
    let output = words.len() as u64;
    let usage = |candidates: u64| {
        json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates,
               "totalTokenCount": prompt + candidates})
    };
    let chunk = |text: String, finish: bool, candidates: u64| {
        let mut candidate = json!({"content": {"parts": [{"text": text}], "role": "model"},
                                   "index": 0});
        if finish {
            candidate["finishReason"] = json!("STOP");
        }
        json!({"candidates": [candidate], "usageMetadata": usage(candidates),
               "modelVersion": model, "responseId": "mock"})
    };
    if !probe.stream {
        return json_answer(chunk(words.join(" "), true, output));
    }
    let n = words.len();
    MockAnswer {
        status: 200,
        content_type: "text/event-stream",
        events: pieces(words)
            .enumerate()
            .map(|(i, p)| {
                let last = i + 1 == n;
                let c = chunk(p, last, if last { output } else { 0 });
                Bytes::from(format!("data: {c}\r\n\r\n"))
            })
            .collect(),
        usage: Usage::default(),
    }
}

fn openai_answer(
    path: &str,
    probe: &BodyProbe,
    model: &str,
    prompt_tokens: u64,
    words: &[&str],
) -> MockAnswer {
    let completion_tokens = words.len() as u64;
    let text = words.join(" ");
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    match path {
        "/v1/embeddings" => json_answer(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0,
                      "embedding": [0.125, -0.25, 0.5, -1.0, 0.0625, 0.75, -0.375, 1.0]}],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        })),
        "/v1/completions" if !probe.stream => json_answer(json!({
            "id": "cmpl-mock", "object": "text_completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
            "usage": usage,
        })),
        "/v1/responses" => responses_answer(model, words, usage, probe.stream),
        "/v1/responses/compact" => compaction_answer(prompt_tokens, completion_tokens),
        "/v1/completions" => {
            let chunks = words.iter().enumerate().map(|(i, w)| {
                let piece = if i == 0 { (*w).to_string() } else { format!(" {w}") };
                json!({"id": "cmpl-mock", "object": "text_completion", "created": CREATED,
                       "model": model, "choices": [{"index": 0, "text": piece, "finish_reason": null}]})
            });
            sse_answer(
                chunks,
                probe.include_usage.then(|| {
                    json!({
                "id": "cmpl-mock", "object": "text_completion", "created": CREATED,
                "model": model, "choices": [], "usage": usage})
                }),
            )
        }
        _ if !probe.stream => json_answer(chat_completion(model, &text, usage)),
        _ => sse_answer(
            chat_chunks(model, words).into_iter(),
            probe.include_usage.then(|| chat_usage_chunk(model, usage)),
        ),
    }
}

const CHAT_ID: &str = "chatcmpl-mock";
const CREATED: u64 = 1_700_000_000;

fn chat_completion(model: &str, text: &str, usage: Value) -> Value {
    json!({
        "id": CHAT_ID, "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": usage,
    })
}

/// The chat stream's chunks: the role, one chunk per word, the finish.
fn chat_chunks(model: &str, words: &[&str]) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({
        "id": CHAT_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    chunks.extend(pieces(words).map(|p| chunk(json!({ "content": p }), Value::Null)));
    chunks.push(chunk(json!({}), json!("stop")));
    chunks
}

/// The chunk that reports usage, after the finish.
fn chat_usage_chunk(model: &str, usage: Value) -> Value {
    json!({
    "id": CHAT_ID, "object": "chat.completion.chunk", "created": CREATED,
    "model": model, "choices": [], "usage": usage})
}

fn json_answer(value: Value) -> MockAnswer {
    MockAnswer {
        status: 200,
        content_type: "application/json",
        events: vec![Bytes::from(value.to_string())],
        usage: Usage::default(),
    }
}

fn sse_answer(chunks: impl Iterator<Item = Value>, usage_chunk: Option<Value>) -> MockAnswer {
    let mut events: Vec<Bytes> = chunks
        .chain(usage_chunk)
        .map(|c| Bytes::from(format!("data: {c}\n\n")))
        .collect();
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    MockAnswer {
        status: 200,
        content_type: "text/event-stream",
        events,
        usage: Usage::default(),
    }
}

/// The Responses answer is the chat answer above, translated as a channel
/// with `responses = false` translates it: so the stream is the sequence
/// Codex and the openai SDK expect (`response.created`, an
/// `output_item.added` before the text deltas, the `done` events, and
/// `response.completed` with the usage), and it tests the translator too.
/// A `response.compaction`: the real one lists the conversation's user
/// messages and then one opaque compaction item; the mock gives the item.
fn compaction_answer(input: u64, output: u64) -> MockAnswer {
    json_answer(json!({
        "id": "resp_compact_mock", "object": "response.compaction", "created_at": CREATED,
        "output": [{"type": "compaction", "id": "cmp_mock",
                    "encrypted_content": "bW9jayBjb21wYWN0aW9u"}],
        "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": input + output},
    }))
}

fn responses_answer(model: &str, words: &[&str], usage: Value, stream: bool) -> MockAnswer {
    if !stream {
        let chat = chat_completion(model, &words.join(" "), usage);
        return match chat_response_to_responses(chat.to_string().as_bytes(), model) {
            Ok(body) => MockAnswer {
                status: 200,
                content_type: "application/json",
                events: vec![Bytes::from(body)],
                usage: Usage::default(),
            },
            Err(why) => MockAnswer {
                status: 500,
                content_type: "application/json",
                events: vec![Bytes::from(json!({"error": {"message": why}}).to_string())],
                usage: Usage::default(),
            },
        };
    }
    let mut translator = ChatToResponsesStream::new(model);
    let mut events = Vec::new();
    let mut out = BytesMut::new();
    let chunks = chat_chunks(model, words).into_iter();
    for chunk in chunks.chain([chat_usage_chunk(model, usage)]) {
        translator.on_event(&chunk.to_string(), &mut out);
        if !out.is_empty() {
            events.push(out.split().freeze());
        }
    }
    translator.finish(&mut out);
    if !out.is_empty() {
        events.push(out.split().freeze());
    }
    MockAnswer {
        status: 200,
        content_type: "text/event-stream",
        events,
        usage: Usage::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_usage_is_deterministic() {
        let probe = BodyProbe {
            model: Some("m".into()),
            ..Default::default()
        };
        let a = answer(
            Endpoint::OpenAi(super::super::OpenAiOp::Chat),
            "/v1/chat/completions",
            &probe,
            41,
        );
        let v: Value = serde_json::from_slice(&a.events[0]).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 11);
        assert_eq!(v["usage"]["completion_tokens"], 18);
    }

    #[test]
    fn stream_sends_usage_only_when_asked() {
        let mut probe = BodyProbe {
            stream: true,
            max_output_tokens: Some(3),
            ..Default::default()
        };
        let a = answer(
            Endpoint::OpenAi(super::super::OpenAiOp::Chat),
            "/v1/chat/completions",
            &probe,
            10,
        );
        assert_eq!(a.events.len(), 1 + 3 + 1 + 1);
        assert!(!a.events.iter().any(|e| e.windows(5).any(|w| w == b"usage")));
        probe.include_usage = true;
        let a = answer(
            Endpoint::OpenAi(super::super::OpenAiOp::Chat),
            "/v1/chat/completions",
            &probe,
            10,
        );
        assert!(a.events[a.events.len() - 2].starts_with(b"data: {\"choices\":[]"));
    }

    #[test]
    fn responses_stream_is_a_valid_event_sequence() {
        use crate::translate::responses_chat::testing::{check_sequence, parse_events};
        let probe = BodyProbe {
            model: Some("gpt-test".into()),
            stream: true,
            max_output_tokens: Some(4),
            ..Default::default()
        };
        let a = answer(
            Endpoint::OpenAi(super::super::OpenAiOp::Responses),
            "/v1/responses",
            &probe,
            41,
        );
        assert_eq!(a.content_type, "text/event-stream");
        let bytes: Vec<u8> = a.events.iter().flat_map(|e| e.iter().copied()).collect();
        let events = parse_events(&bytes);
        // created, in_progress, then every delta after its item's
        // output_item.added, and one response.completed last.
        check_sequence(&events);
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "Hello from the tollgate");
        let completed = &events.last().unwrap()["response"];
        assert_eq!(events.last().unwrap()["type"], "response.completed");
        assert_eq!(completed["model"], "gpt-test");
        assert_eq!(completed["output"][0]["content"][0]["text"], deltas);
        assert_eq!(completed["usage"]["input_tokens"], 11);
        assert_eq!(completed["usage"]["output_tokens"], 4);
        assert_eq!(completed["usage"]["total_tokens"], 15);
        // The text streams word by word, one write each.
        assert!(a.events.len() >= 5);
        assert_eq!((a.usage.input, a.usage.output), (11, 4));
    }

    #[test]
    fn compaction_answer_is_billed_from_its_usage() {
        let probe = BodyProbe {
            model: Some("gpt-test".into()),
            ..Default::default()
        };
        let a = answer(
            Endpoint::OpenAi(super::super::OpenAiOp::ResponsesCompact),
            "/v1/responses/compact",
            &probe,
            41,
        );
        let r: Value = serde_json::from_slice(&a.events[0]).unwrap();
        assert_eq!(r["object"], "response.compaction");
        assert_eq!(r["output"][0]["type"], "compaction");
        assert_eq!(r["usage"]["input_tokens"], 11);
        assert_eq!(r["usage"]["output_tokens"], 18);
        assert_eq!((a.usage.input, a.usage.output), (11, 18));
    }

    #[test]
    fn responses_answer_is_a_response_object() {
        let probe = BodyProbe {
            model: Some("gpt-test".into()),
            ..Default::default()
        };
        let a = answer(
            Endpoint::OpenAi(super::super::OpenAiOp::Responses),
            "/v1/responses",
            &probe,
            41,
        );
        let r: Value = serde_json::from_slice(&a.events[0]).unwrap();
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["output"][0]["type"], "message");
        assert_eq!(r["output"][0]["content"][0]["text"], ANSWER);
        assert_eq!(r["usage"]["input_tokens"], 11);
        assert_eq!(r["usage"]["output_tokens"], 18);
    }
}
