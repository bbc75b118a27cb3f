//! The chat completion chunks that the translators toward chat (Anthropic
//! → Chat, Gemini → Chat) write: the role chunk, delta chunks, the finish
//! chunk, the usage chunk, `[DONE]` and the error payload, each shape once.

use bytes::BytesMut;
use serde_json::{json, Value};

use super::shared::{now_secs, push_event};

/// Writes one chat completion stream in order: the role chunk before any
/// other, one finish chunk, the usage chunk (when the client asked for it)
/// and `[DONE]` last; after `[DONE]` or an error nothing more.
pub(crate) struct ChatChunkWriter {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    started: bool,
    finish_sent: bool,
    /// `[DONE]` or an error was written: nothing more is.
    done: bool,
}

impl ChatChunkWriter {
    /// `id`: the completion id until the upstream names one
    /// ([`ChatChunkWriter::name`]); `include_usage`: the client asked for
    /// the usage chunk (`stream_options.include_usage`).
    pub(crate) fn new(id: String, model: &str, include_usage: bool) -> Self {
        ChatChunkWriter {
            id,
            created: now_secs(),
            model: model.to_string(),
            include_usage,
            started: false,
            finish_sent: false,
            done: false,
        }
    }

    /// The completion id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Takes the completion id from the upstream's, unless the role chunk
    /// went out already: every chunk of a stream carries one id.
    pub(crate) fn name(&mut self, id: impl FnOnce() -> String) {
        if !self.started {
            self.id = id();
        }
    }

    /// `[DONE]` or an error was written: the stream is over.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    /// The first chunk, with the role, unless it was written.
    pub(crate) fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let chunk = self.chunk(json!({"role": "assistant", "content": ""}), None);
        push_event(out, None, &chunk);
    }

    /// A chunk with `delta` (after the role chunk).
    pub(crate) fn send(&mut self, delta: Value, out: &mut BytesMut) {
        self.start(out);
        push_event(out, None, &self.chunk(delta, None));
    }

    /// The chunk with the finish reason, unless one was written.
    pub(crate) fn send_finish(&mut self, reason: &str, out: &mut BytesMut) {
        if self.finish_sent {
            return;
        }
        self.start(out);
        self.finish_sent = true;
        push_event(out, None, &self.chunk(json!({}), Some(reason)));
    }

    /// The finish chunk with `reason` if none was written, the usage chunk
    /// with `usage` (chat's `usage` object) if asked for, then `[DONE]`.
    pub(crate) fn end(&mut self, reason: &str, usage: Value, out: &mut BytesMut) {
        self.send_finish(reason, out);
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            });
            push_event(out, None, &chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// A chat-style error payload of type `kind`; the stream ends there.
    pub(crate) fn fail(&mut self, kind: &str, message: &str, out: &mut BytesMut) {
        let payload =
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
        push_event(out, None, &payload);
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &BytesMut) -> Vec<Value> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| match event.strip_prefix("data: ").unwrap() {
                "[DONE]" => json!("[DONE]"),
                data => serde_json::from_str(data).unwrap(),
            })
            .collect()
    }

    #[test]
    fn a_stream_is_role_deltas_one_finish_usage_and_done() {
        let mut writer = ChatChunkWriter::new("chatcmpl-a".into(), "m", true);
        let mut out = BytesMut::new();
        writer.name(|| "chatcmpl-b".into());
        writer.send(json!({"content": "hi"}), &mut out);
        // Once the role chunk is out, the id stays.
        writer.name(|| "chatcmpl-c".into());
        writer.send_finish("length", &mut out);
        writer.end("stop", json!({"total_tokens": 3}), &mut out);
        assert!(writer.is_done());
        let created = writer.created;
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": created,
                "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        assert_eq!(
            events(&out),
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "hi"}), Value::Null),
                chunk(json!({}), json!("length")),
                json!({"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": created,
                    "model": "m", "choices": [], "usage": {"total_tokens": 3}}),
                json!("[DONE]"),
            ]
        );
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn without_include_usage_the_end_is_the_finish_chunk_and_done() {
        let mut writer = ChatChunkWriter::new("chatcmpl-a".into(), "m", false);
        let mut out = BytesMut::new();
        writer.end("tool_calls", json!({"total_tokens": 3}), &mut out);
        let events = events(&out);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(events[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(events[2], "[DONE]");
    }

    #[test]
    fn an_error_is_a_chat_error_payload_and_ends_the_stream() {
        let mut writer = ChatChunkWriter::new("chatcmpl-a".into(), "m", true);
        let mut out = BytesMut::new();
        writer.fail("rate_limit_error", "slow down", &mut out);
        assert!(writer.is_done());
        assert_eq!(
            &out[..],
            b"data: {\"error\":{\"code\":null,\"message\":\"slow down\",\"param\":null,\"type\":\"rate_limit_error\"}}\n\n"
        );
    }
}
