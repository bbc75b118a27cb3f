//! Streams, both ways, one upstream event at a time.

use bytes::BytesMut;
use serde_json::{json, Value};

use crate::translate::chat_chunks::ChatChunkWriter;
use crate::translate::push_event;

use super::common::*;

// ---------------------------------------------------------------------
// Streams: chat chunks → Anthropic events.

/// The content block open in the Anthropic stream being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OpenBlock {
    None,
    Text,
    Thinking,
    /// A tool call, by its chat `index` and id.
    Tool {
        chat_index: u64,
        id: String,
    },
}

/// Turns a chat completion stream into Anthropic Messages events.
pub struct ChatToAnthropicStream {
    model: String,
    started: bool,
    /// `message_stop` or an error was written: nothing more is.
    ended: bool,
    block: OpenBlock,
    /// The Anthropic index of the open block, or of the next one.
    block_index: u64,
    called_tools: bool,
    /// The host sent a refusal (OpenAI `delta.refusal`).
    refused: bool,
    stop_reason: Option<&'static str>,
    usage: Option<ChatUsage>,
}

impl ChatToAnthropicStream {
    pub fn new(model: &str) -> Self {
        ChatToAnthropicStream {
            model: model.to_string(),
            started: false,
            ended: false,
            block: OpenBlock::None,
            block_index: 0,
            called_tools: false,
            refused: false,
            stop_reason: None,
            usage: None,
        }
    }

    /// One upstream event's `data:` payload: a chunk, an error or `[DONE]`.
    pub fn on_event(&mut self, data: &str, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.end(out);
            return;
        }
        let chunk = match serde_json::from_str::<Value>(data) {
            Ok(chunk) => chunk,
            Err(_) => return self.fail("api_error", "the upstream sent an unreadable event", out),
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let kind = anthropic_error_type(str_of(error, "type").unwrap_or(""));
            return self.fail(kind, &error_text(error), out);
        }
        self.start(str_of(&chunk, "id"), out);
        let usage = chunk.get("usage").filter(|u| u.is_object());
        if let Some(usage) = usage {
            self.usage = Some(ChatUsage::read(usage));
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        if let Some(choice) = choices.and_then(|c| c.first()) {
            if let Some(delta) = choice.get("delta") {
                self.on_delta(delta, out);
            }
            if let Some(finish) = str_of(choice, "finish_reason") {
                self.close_block(out);
                self.stop_reason = Some(match self.refused {
                    true => "refusal",
                    false => stop_reason(Some(finish), self.called_tools),
                });
            }
        }
        // Usage with or after the finish reason is the final count: the
        // answer is complete. (Some hosts count on every chunk before.)
        if self.stop_reason.is_some() && usage.is_some() {
            self.end(out);
        }
    }

    /// The upstream stream ended cleanly: closes whatever is open.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.ended {
            self.end(out);
        }
    }

    fn start(&mut self, chat_id: Option<&str>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(chat_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        let event = json!({"type": "message_start", "message": message});
        push_event(out, Some("message_start"), &event);
    }

    fn on_delta(&mut self, delta: &Value, out: &mut BytesMut) {
        let reasoning = chat_reasoning(delta);
        if let Some(thinking) = reasoning.filter(|t| !t.is_empty()) {
            self.open(OpenBlock::Thinking, out);
            self.push_delta(json!({"type": "thinking_delta", "thinking": thinking}), out);
        }
        if let Some(text) = str_of(delta, "content").filter(|t| !t.is_empty()) {
            self.open(OpenBlock::Text, out);
            self.push_delta(json!({"type": "text_delta", "text": text}), out);
        }
        if let Some(refusal) = str_of(delta, "refusal").filter(|t| !t.is_empty()) {
            self.open(OpenBlock::Text, out);
            self.push_delta(json!({"type": "text_delta", "text": refusal}), out);
            self.refused = true;
        }
        let calls = delta.get("tool_calls").and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            self.on_tool_delta(call, out);
        }
    }

    /// One tool call piece: the first of a call has its id and name, later
    /// ones pieces of its arguments.
    fn on_tool_delta(&mut self, call: &Value, out: &mut BytesMut) {
        let id = str_of(call, "id").filter(|id| !id.is_empty());
        let function = call.get("function").unwrap_or(&Value::Null);
        let chat_index = match (call.get("index").and_then(Value::as_u64), &self.block) {
            (Some(index), _) => index,
            // Hosts that omit `index`: a new id starts a new call.
            (
                None,
                OpenBlock::Tool {
                    chat_index,
                    id: open_id,
                },
            ) => match id {
                Some(id) if id != open_id.as_str() => chat_index + 1,
                _ => *chat_index,
            },
            (None, _) => 0,
        };
        let is_open =
            matches!(&self.block, OpenBlock::Tool { chat_index: open, .. } if *open == chat_index);
        if !is_open {
            let name = str_of(function, "name");
            if id.is_none() && name.is_none() {
                // Arguments of a call already closed: Anthropic blocks
                // cannot be reopened (no known host interleaves calls).
                return;
            }
            let id = id.map_or_else(|| format!("toolu_{}", random_suffix()), str::to_string);
            let block =
                json!({"type": "tool_use", "id": id, "name": name.unwrap_or(""), "input": {}});
            self.open_with(OpenBlock::Tool { chat_index, id }, block, out);
            self.called_tools = true;
        }
        if let Some(arguments) = str_of(function, "arguments").filter(|a| !a.is_empty()) {
            self.push_delta(
                json!({"type": "input_json_delta", "partial_json": arguments}),
                out,
            );
        }
    }

    /// Opens a text or thinking block unless one of that kind is open.
    fn open(&mut self, kind: OpenBlock, out: &mut BytesMut) {
        if self.block == kind {
            return;
        }
        let block = match kind {
            OpenBlock::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        self.open_with(kind, block, out);
    }

    fn open_with(&mut self, kind: OpenBlock, content_block: Value, out: &mut BytesMut) {
        self.close_block(out);
        let event = json!({
            "type": "content_block_start",
            "index": self.block_index,
            "content_block": content_block,
        });
        push_event(out, Some("content_block_start"), &event);
        self.block = kind;
    }

    fn push_delta(&self, delta: Value, out: &mut BytesMut) {
        let event =
            json!({"type": "content_block_delta", "index": self.block_index, "delta": delta});
        push_event(out, Some("content_block_delta"), &event);
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if self.block == OpenBlock::None {
            return;
        }
        let event = json!({"type": "content_block_stop", "index": self.block_index});
        push_event(out, Some("content_block_stop"), &event);
        self.block = OpenBlock::None;
        self.block_index += 1;
    }

    /// `message_delta` with the stop reason and usage, then `message_stop`.
    fn end(&mut self, out: &mut BytesMut) {
        self.start(None, out);
        self.close_block(out);
        let stop = match (self.stop_reason, self.refused) {
            (Some(stop), _) => stop,
            (None, true) => "refusal",
            (None, false) => stop_reason(None, self.called_tools),
        };
        let usage = self.usage.unwrap_or_default().to_anthropic();
        let event = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": usage,
        });
        push_event(out, Some("message_delta"), &event);
        push_event(out, Some("message_stop"), &json!({"type": "message_stop"}));
        self.ended = true;
    }

    /// An Anthropic `error` event, which ends the stream for the SDK.
    fn fail(&mut self, kind: &str, message: &str, out: &mut BytesMut) {
        let event = json!({"type": "error", "error": {"type": kind, "message": message}});
        push_event(out, Some("error"), &event);
        self.ended = true;
    }
}

/// An OpenAI error type as the Anthropic one an SDK maps to an exception.
pub(super) fn anthropic_error_type(openai_type: &str) -> &'static str {
    match openai_type {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" | "rate_limit_exceeded" | "tokens" | "requests" => "rate_limit_error",
        _ => "api_error",
    }
}

/// An Anthropic error type as the OpenAI one.
pub(super) fn openai_error_type(anthropic_type: &str) -> &'static str {
    match anthropic_type {
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}

// ---------------------------------------------------------------------
// Streams: Anthropic events → chat chunks.

/// The Anthropic content block being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadBlock {
    /// Text, thinking, or nothing open.
    Plain,
    /// A client tool call, by its chat `index`.
    Tool(u64),
    /// A block chat has no form for (server tools, redacted thinking):
    /// its deltas are skipped.
    Skipped,
}

/// Turns an Anthropic Messages stream into chat completion chunks.
pub struct AnthropicToChatStream {
    chunks: ChatChunkWriter,
    block: ReadBlock,
    tools: u64,
    thinking_blocks: u32,
    /// The answer's thinking signature, for the first tool call's id.
    signature: Option<String>,
    usage: AnthropicUsage,
}

impl AnthropicToChatStream {
    /// `include_usage`: the client asked for the usage chunk
    /// (`stream_options.include_usage`).
    pub fn new(model: &str, include_usage: bool) -> Self {
        AnthropicToChatStream {
            chunks: ChatChunkWriter::new(completion_id(None), model, include_usage),
            block: ReadBlock::Plain,
            tools: 0,
            thinking_blocks: 0,
            signature: None,
            usage: AnthropicUsage::default(),
        }
    }

    /// One upstream event: its `event:` name (else the payload's `type`
    /// decides) and `data:` payload.
    pub fn on_event(&mut self, event: Option<&str>, data: &str, out: &mut BytesMut) {
        if self.chunks.is_done() {
            return;
        }
        let payload = match serde_json::from_str::<Value>(data.trim()) {
            Ok(payload) => payload,
            Err(_) => {
                let unreadable = "the upstream sent an unreadable event";
                return self.chunks.fail("server_error", unreadable, out);
            }
        };
        let kind = event.or_else(|| str_of(&payload, "type")).unwrap_or("");
        match kind {
            "message_start" => {
                let message = payload.get("message").unwrap_or(&Value::Null);
                self.chunks.name(|| completion_id(str_of(message, "id")));
                self.usage
                    .update(message.get("usage").unwrap_or(&Value::Null));
                self.chunks.start(out);
            }
            "content_block_start" => self.on_block_start(&payload, out),
            "content_block_delta" => self.on_block_delta(&payload, out),
            "content_block_stop" => self.block = ReadBlock::Plain,
            "message_delta" => {
                self.usage
                    .update(payload.get("usage").unwrap_or(&Value::Null));
                let stop = payload.get("delta").and_then(|d| str_of(d, "stop_reason"));
                if let Some(stop) = stop {
                    self.chunks.send_finish(finish_reason(stop), out);
                }
            }
            "message_stop" => self.end(out),
            "error" => {
                let error = payload.get("error").unwrap_or(&Value::Null);
                let kind = openai_error_type(str_of(error, "type").unwrap_or(""));
                self.chunks.fail(kind, &error_text(error), out);
            }
            // ping, and event types added later.
            _ => {}
        }
    }

    /// The upstream stream ended cleanly: finishes the answer.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.chunks.is_done() {
            self.end(out);
        }
    }

    fn on_block_start(&mut self, payload: &Value, out: &mut BytesMut) {
        let block = payload.get("content_block").unwrap_or(&Value::Null);
        match str_of(block, "type") {
            Some("text") => {
                self.block = ReadBlock::Plain;
                if let Some(text) = str_of(block, "text").filter(|t| !t.is_empty()) {
                    self.chunks.send(json!({"content": text}), out);
                }
            }
            Some("thinking") => {
                self.block = ReadBlock::Plain;
                self.thinking_blocks += 1;
                if let Some(text) = str_of(block, "thinking").filter(|t| !t.is_empty()) {
                    self.chunks.send(json!({"reasoning_content": text}), out);
                }
            }
            Some("tool_use") => self.on_tool_start(block, out),
            _ => self.block = ReadBlock::Skipped,
        }
    }

    fn on_tool_start(&mut self, block: &Value, out: &mut BytesMut) {
        let index = self.tools;
        self.tools += 1;
        self.block = ReadBlock::Tool(index);
        let signature = self.signature.as_deref().filter(|_| index == 0);
        let id = id_with_signature(str_of(block, "id").unwrap_or(""), signature);
        // Streams start tool input as `{}` and send it in pieces; a whole
        // input given at the start is passed on as it is.
        let arguments = match block.get("input") {
            Some(Value::Object(input)) if !input.is_empty() => {
                Value::Object(input.clone()).to_string()
            }
            _ => String::new(),
        };
        let call = json!({
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": str_of(block, "name").unwrap_or(""), "arguments": arguments},
        });
        self.chunks.send(json!({"tool_calls": [call]}), out);
    }

    fn on_block_delta(&mut self, payload: &Value, out: &mut BytesMut) {
        let delta = payload.get("delta").unwrap_or(&Value::Null);
        match (str_of(delta, "type"), self.block) {
            (_, ReadBlock::Skipped) => {}
            (Some("text_delta"), _) => {
                if let Some(text) = str_of(delta, "text").filter(|t| !t.is_empty()) {
                    self.chunks.send(json!({"content": text}), out);
                }
            }
            (Some("thinking_delta"), _) => {
                if let Some(text) = str_of(delta, "thinking").filter(|t| !t.is_empty()) {
                    self.chunks.send(json!({"reasoning_content": text}), out);
                }
            }
            (Some("signature_delta"), _) => {
                let signature = str_of(delta, "signature").filter(|s| !s.is_empty());
                // Only a lone thinking block's signature matches the
                // reasoning text the client gathers.
                match signature.filter(|_| self.thinking_blocks == 1) {
                    Some(signature) => {
                        self.chunks
                            .send(json!({"reasoning_signature": signature}), out);
                        self.signature = Some(signature.to_string());
                    }
                    None => self.signature = None,
                }
            }
            (Some("input_json_delta"), ReadBlock::Tool(index)) => {
                if let Some(piece) = str_of(delta, "partial_json").filter(|p| !p.is_empty()) {
                    let call = json!({"index": index, "function": {"arguments": piece}});
                    self.chunks.send(json!({"tool_calls": [call]}), out);
                }
            }
            // citations_delta and the like have no chat form.
            _ => {}
        }
    }

    /// The finish chunk if not yet sent, the usage chunk if asked for,
    /// then `[DONE]`.
    fn end(&mut self, out: &mut BytesMut) {
        let reason = if self.tools > 0 { "tool_calls" } else { "stop" };
        self.chunks.end(reason, self.usage.to_chat(), out);
    }
}
