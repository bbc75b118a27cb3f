//! Streams, both ways, one upstream event at a time.

use bytes::BytesMut;
use serde_json::{json, Value};

use crate::translate::chat_chunks::ChatChunkWriter;
use crate::translate::push_event;

use super::common::*;

// ---------------------------------------------------------------------
// Streams: Gemini chunks → chat chunks.

/// Turns a Gemini `streamGenerateContent?alt=sse` stream into chat
/// completion chunks. Gemini sends function calls whole, so each becomes
/// one tool-call chunk with all its arguments.
pub struct GeminiToChatStream {
    chunks: ChatChunkWriter,
    calls: usize,
    usage: Tokens,
}

impl GeminiToChatStream {
    /// `include_usage`: the client asked for the usage chunk
    /// (`stream_options.include_usage`).
    pub fn new(model: &str, include_usage: bool) -> Self {
        GeminiToChatStream {
            chunks: ChatChunkWriter::new(completion_id(None), model, include_usage),
            calls: 0,
            usage: Tokens::default(),
        }
    }

    /// One upstream event's `data:` payload: a `GenerateContentResponse`
    /// or an error.
    pub fn on_event(&mut self, data: &str, out: &mut BytesMut) {
        if self.chunks.is_done() {
            return;
        }
        let chunk = match serde_json::from_str::<Value>(data.trim()) {
            Ok(chunk) if chunk.is_object() => chunk,
            _ => {
                let unreadable = "the upstream sent an unreadable event";
                return self.chunks.fail("server_error", unreadable, out);
            }
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let kind = openai_error_type(str_of(error, "status").unwrap_or(""));
            return self.chunks.fail(kind, &error_text(error), out);
        }
        self.chunks
            .name(|| completion_id(str_of(&chunk, "responseId")));
        self.chunks.start(out);
        // Running totals: the last one counts.
        if let Some(usage) = chunk.get("usageMetadata").filter(|u| u.is_object()) {
            self.usage = Tokens::from_gemini(usage);
        }
        let candidate = chunk
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let Some(candidate) = candidate else {
            // No candidate, a block reason: the prompt itself was blocked.
            if chunk
                .get("promptFeedback")
                .and_then(|f| f.get("blockReason"))
                .is_some()
            {
                self.chunks.send_finish("content_filter", out);
            }
            return;
        };
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array);
        for part in parts.into_iter().flatten() {
            self.on_part(part, out);
        }
        if let Some(reason) = str_of(candidate, "finishReason") {
            self.chunks
                .send_finish(finish_reason(reason, self.calls > 0), out);
        }
    }

    /// The upstream stream ended cleanly: finishes the answer.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.chunks.is_done() {
            self.end(out);
        }
    }

    fn on_part(&mut self, part: &Value, out: &mut BytesMut) {
        if let Some(call) = part.get("functionCall") {
            let id = self.chunks.id();
            let answer_id = id.strip_prefix("chatcmpl-").unwrap_or(id);
            let id = call_id(
                call,
                answer_id,
                self.calls,
                str_of(part, "thoughtSignature"),
            );
            let arguments = call.get("args").cloned().unwrap_or_else(|| json!({}));
            let call = json!({
                "index": self.calls,
                "id": id,
                "type": "function",
                "function": {"name": str_of(call, "name").unwrap_or(""), "arguments": arguments.to_string()},
            });
            self.calls += 1;
            self.chunks.send(json!({"tool_calls": [call]}), out);
            return;
        }
        let Some(text) = str_of(part, "text").filter(|t| !t.is_empty()) else {
            return;
        };
        match part.get("thought").and_then(Value::as_bool) {
            Some(true) => self.chunks.send(json!({"reasoning_content": text}), out),
            _ => self.chunks.send(json!({"content": text}), out),
        }
    }

    /// The finish chunk if not yet sent, the usage chunk if asked for,
    /// then `[DONE]`.
    fn end(&mut self, out: &mut BytesMut) {
        let reason = if self.calls > 0 { "tool_calls" } else { "stop" };
        self.chunks.end(reason, self.usage.to_chat(), out);
    }
}

// ---------------------------------------------------------------------
// Streams: chat chunks → Gemini chunks.

/// A tool call being streamed, gathered until the answer ends: Gemini
/// sends each function call whole.
struct OpenCall {
    chat_index: Option<u64>,
    id: String,
    name: String,
    arguments: String,
}

/// Turns a chat completion stream into Gemini `GenerateContentResponse`
/// chunks: SSE events (`alt=sse`, what SDKs ask for) or the elements of
/// one JSON array (a stream without `alt=sse`).
pub struct ChatToGeminiStream {
    model: String,
    response_id: Option<String>,
    json_array: bool,
    /// A chunk was written (the array is open).
    written: bool,
    /// The last chunk or an error was written: nothing more is.
    ended: bool,
    calls: Vec<OpenCall>,
    finish: Option<&'static str>,
    usage: Option<Tokens>,
}

impl ChatToGeminiStream {
    /// `json_array`: the client streams without `alt=sse`.
    pub fn new(model: &str, json_array: bool) -> Self {
        ChatToGeminiStream {
            model: model.to_string(),
            response_id: None,
            json_array,
            written: false,
            ended: false,
            calls: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    /// The client reads one JSON array, not events.
    pub fn is_json_array(&self) -> bool {
        self.json_array
    }

    /// One upstream event's `data:` payload: a chunk, an error or `[DONE]`.
    pub fn on_event(&mut self, data: &str, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            return self.end(out);
        }
        let chunk = match serde_json::from_str::<Value>(data) {
            Ok(chunk) if chunk.is_object() => chunk,
            _ => {
                return self.fail(
                    500,
                    "INTERNAL",
                    "the upstream sent an unreadable event",
                    out,
                )
            }
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let (code, status) = gemini_status(str_of(error, "type").unwrap_or(""));
            return self.fail(code, status, &error_text(error), out);
        }
        if self.response_id.is_none() {
            self.response_id = Some(response_id(str_of(&chunk, "id")));
        }
        let usage = chunk.get("usage").filter(|u| u.is_object());
        if let Some(usage) = usage {
            self.usage = Some(Tokens::from_chat(usage));
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        if let Some(choice) = choice {
            if let Some(delta) = choice.get("delta") {
                self.on_delta(delta, out);
            }
            if let Some(finish) = str_of(choice, "finish_reason") {
                self.finish = Some(gemini_finish_reason(Some(finish)));
            }
        }
        // Usage with or after the finish reason is the final count.
        if self.finish.is_some() && usage.is_some() {
            self.end(out);
        }
    }

    /// The upstream stream ended cleanly: closes the answer.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.ended {
            self.end(out);
        }
    }

    fn on_delta(&mut self, delta: &Value, out: &mut BytesMut) {
        let reasoning = chat_reasoning(delta);
        if let Some(thought) = reasoning.filter(|t| !t.is_empty()) {
            self.emit(vec![json!({"text": thought, "thought": true})], None, out);
        }
        for key in ["content", "refusal"] {
            if let Some(text) = str_of(delta, key).filter(|t| !t.is_empty()) {
                self.emit(vec![json!({"text": text})], None, out);
            }
        }
        let calls = delta.get("tool_calls").and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            self.on_tool_delta(call);
        }
    }

    /// One tool call piece: the first of a call has its id and name, later
    /// ones pieces of its arguments.
    fn on_tool_delta(&mut self, call: &Value) {
        let index = call.get("index").and_then(Value::as_u64);
        let id = str_of(call, "id").filter(|id| !id.is_empty());
        let function = call.get("function").unwrap_or(&Value::Null);
        let open = match index {
            Some(index) => self.calls.iter().position(|c| c.chat_index == Some(index)),
            // Hosts that omit `index`: a new id starts a new call.
            None => match (id, self.calls.last()) {
                (Some(id), Some(last)) if last.id != id => None,
                (_, Some(_)) => Some(self.calls.len() - 1),
                (_, None) => None,
            },
        };
        let at = match open {
            Some(at) => at,
            None => {
                self.calls.push(OpenCall {
                    chat_index: index,
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                self.calls.len() - 1
            }
        };
        let open = &mut self.calls[at];
        if let Some(id) = id {
            open.id = id.to_string();
        }
        if let Some(name) = str_of(function, "name").filter(|n| !n.is_empty()) {
            open.name = name.to_string();
        }
        if let Some(piece) = str_of(function, "arguments") {
            open.arguments.push_str(piece);
        }
    }

    /// The last chunk: the gathered function calls, the finish reason and
    /// the usage; then the array closes.
    fn end(&mut self, out: &mut BytesMut) {
        let mut parts: Vec<Value> = self
            .calls
            .iter()
            .map(|c| function_call_part(&c.id, &c.name, &c.arguments))
            .collect();
        if parts.is_empty() {
            // What Gemini's own last chunk often holds: SDKs read `text` as "".
            parts.push(json!({"text": ""}));
        }
        let finish = self.finish.unwrap_or("STOP");
        let usage = self.usage.unwrap_or_default();
        self.emit(parts, Some((finish, usage)), out);
        self.close(out);
    }

    fn emit(&mut self, parts: Vec<Value>, last: Option<(&str, Tokens)>, out: &mut BytesMut) {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some((finish, _)) = last {
            candidate["finishReason"] = json!(finish);
        }
        let id = self.response_id.get_or_insert_with(|| response_id(None));
        let mut chunk = json!({
            "candidates": [candidate],
            "modelVersion": self.model,
            "responseId": id,
        });
        if let Some((_, usage)) = last {
            chunk["usageMetadata"] = usage.to_gemini();
        }
        self.frame(&chunk, out);
    }

    fn frame(&mut self, value: &Value, out: &mut BytesMut) {
        if !self.json_array {
            push_event(out, None, value);
            return;
        }
        out.extend_from_slice(if self.written { b",\r\n" } else { b"[" });
        out.extend_from_slice(value.to_string().as_bytes());
        self.written = true;
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.json_array {
            if !self.written {
                out.extend_from_slice(b"[");
            }
            out.extend_from_slice(b"]");
        }
        self.ended = true;
    }

    /// A Gemini error object, which ends the stream.
    fn fail(&mut self, code: u16, status: &str, message: &str, out: &mut BytesMut) {
        let error = json!({"error": {"code": code, "message": message, "status": status}});
        self.frame(&error, out);
        self.close(out);
    }
}
