//! The in-process `mock` channel: answers in the OpenAI, Anthropic Messages
//! and Gemini wire formats without any network, so the example config works
//! offline for all three SDKs and load tests have a zero-cost upstream.
//! Text and usage are deterministic: the prompt counts one token per 4
//! bytes of request body, the answer one token per word.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use serde_json::{json, Value};

use super::{Endpoint, GeminiMethod};
use crate::body::BodyProbe;
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
    let id = "chatcmpl-mock";
    let created = 1_700_000_000u64;
    match path {
        "/v1/embeddings" => json_answer(json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0,
                      "embedding": [0.125, -0.25, 0.5, -1.0, 0.0625, 0.75, -0.375, 1.0]}],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        })),
        "/v1/completions" if !probe.stream => json_answer(json!({
            "id": "cmpl-mock", "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
            "usage": usage,
        })),
        "/v1/responses" => {
            responses_answer(model, &text, prompt_tokens, completion_tokens, probe.stream)
        }
        "/v1/completions" => {
            let chunks = words.iter().enumerate().map(|(i, w)| {
                let piece = if i == 0 { (*w).to_string() } else { format!(" {w}") };
                json!({"id": "cmpl-mock", "object": "text_completion", "created": created,
                       "model": model, "choices": [{"index": 0, "text": piece, "finish_reason": null}]})
            });
            sse_answer(
                chunks,
                probe.include_usage.then(|| {
                    json!({
                "id": "cmpl-mock", "object": "text_completion", "created": created,
                "model": model, "choices": [], "usage": usage})
                }),
            )
        }
        _ if !probe.stream => json_answer(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": usage,
        })),
        _ => {
            let chunk = |delta: Value, finish: Value| {
                json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let mut chunks = vec![chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )];
            for (i, w) in words.iter().enumerate() {
                let piece = if i == 0 {
                    (*w).to_string()
                } else {
                    format!(" {w}")
                };
                chunks.push(chunk(json!({"content": piece}), Value::Null));
            }
            chunks.push(chunk(json!({}), json!("stop")));
            sse_answer(
                chunks.into_iter(),
                probe.include_usage.then(|| {
                    json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [], "usage": usage})
                }),
            )
        }
    }
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

fn responses_answer(model: &str, text: &str, input: u64, output: u64, stream: bool) -> MockAnswer {
    let response = |status: &str, with_output: bool| {
        let output_items = if with_output {
            json!([{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}])
        } else {
            json!([])
        };
        json!({
            "id": "resp_mock", "object": "response", "created_at": 1_700_000_000u64,
            "status": status, "model": model, "output": output_items,
            "usage": if with_output { json!({
                "input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input + output}) } else { Value::Null },
        })
    };
    if !stream {
        return json_answer(response("completed", true));
    }
    let events = [
        (
            "response.created",
            json!({"type": "response.created", "sequence_number": 0,
                                     "response": response("in_progress", false)}),
        ),
        (
            "response.output_text.delta",
            json!({"type": "response.output_text.delta",
            "sequence_number": 1, "item_id": "msg_mock", "output_index": 0,
            "content_index": 0, "delta": text}),
        ),
        (
            "response.completed",
            json!({"type": "response.completed", "sequence_number": 2,
                                       "response": response("completed", true)}),
        ),
    ];
    MockAnswer {
        status: 200,
        content_type: "text/event-stream",
        events: events
            .into_iter()
            .map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
            .collect(),
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
}
