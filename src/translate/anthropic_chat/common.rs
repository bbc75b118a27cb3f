//! What every direction shares: small readers of JSON values, ids, and
//! the reasons and usage of both dialects.

use std::borrow::Cow;

use serde_json::{json, Value};

pub use crate::translate::shared::SIGNATURE_IN_ID;
pub(super) use crate::translate::shared::{
    arguments_object, chat_cached_tokens, chat_choice, chat_reasoning, error_text,
    id_with_signature, now_secs, parse_answer, parse_request, random_suffix, split_signature,
    str_of, to_bytes, u64_of, Object,
};

// ---------------------------------------------------------------------
// Ids.

/// An Anthropic message id for a chat answer id (`chatcmpl-abc` →
/// `msg_abc`), or a fresh one.
pub(super) fn message_id(chat_id: Option<&str>) -> String {
    match chat_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => format!("msg_{}", random_suffix()),
    }
}

/// A chat completion id for an Anthropic message id, or a fresh one.
pub(super) fn completion_id(message_id: Option<&str>) -> String {
    match message_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        None => format!("chatcmpl-{}", random_suffix()),
    }
}

// ---------------------------------------------------------------------
// Reasons and usage.

/// Anthropic `stop_reason` → chat `finish_reason`.
pub(super) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn: the model stopped on its own.
        _ => "stop",
    }
}

/// Chat `finish_reason` → Anthropic `stop_reason`. Some hosts say `stop`
/// after tool calls: the calls decide.
pub(super) fn stop_reason(finish_reason: Option<&str>, called_tools: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls" | "function_call") => "tool_use",
        _ if called_tools => "tool_use",
        _ => "end_turn",
    }
}

/// Token counts as a chat host reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ChatUsage {
    pub(super) prompt: u64,
    pub(super) completion: u64,
    /// Prompt tokens read from the host's cache, part of `prompt`.
    pub(super) cached: u64,
}

impl ChatUsage {
    pub(super) fn read(usage: &Value) -> Self {
        ChatUsage {
            prompt: u64_of(usage, "prompt_tokens"),
            completion: u64_of(usage, "completion_tokens"),
            cached: chat_cached_tokens(usage),
        }
    }

    /// Anthropic counts input without the cache reads.
    pub(super) fn to_anthropic(self) -> Value {
        json!({
            "input_tokens": self.prompt.saturating_sub(self.cached),
            "output_tokens": self.completion,
            "cache_read_input_tokens": self.cached,
            "cache_creation_input_tokens": 0,
        })
    }
}

/// Token counts as Anthropic reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AnthropicUsage {
    pub(super) input: u64,
    pub(super) output: u64,
    pub(super) cache_read: u64,
    pub(super) cache_creation: u64,
}

impl AnthropicUsage {
    /// Overwrites the counts `usage` has: `message_delta` repeats them
    /// cumulatively, and may omit some.
    pub(super) fn update(&mut self, usage: &Value) {
        let fields = [
            ("input_tokens", &mut self.input),
            ("output_tokens", &mut self.output),
            ("cache_read_input_tokens", &mut self.cache_read),
            ("cache_creation_input_tokens", &mut self.cache_creation),
        ];
        for (key, slot) in fields {
            if let Some(count) = usage.get(key).and_then(Value::as_u64) {
                *slot = count;
            }
        }
    }

    /// Chat counts cache reads and writes as prompt tokens.
    pub(super) fn to_chat(self) -> Value {
        let prompt = self.input + self.cache_read + self.cache_creation;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

// ---------------------------------------------------------------------
// Errors.

/// The message an upstream's error body carries, whatever its dialect:
/// OpenAI `{"error": {"message"}}`, Anthropic `{"type": "error", "error":
/// {"message"}}`, Gemini (also wrapped in an array), `{"message"}`,
/// `{"detail"}`, or plain text. For the caller to render in the client's
/// dialect.
pub fn upstream_error_message(body: &[u8]) -> String {
    const LIMIT: usize = 2000;
    let value = serde_json::from_slice::<Value>(body).ok();
    let value = match value {
        Some(Value::Array(mut items)) if !items.is_empty() => Some(items.swap_remove(0)),
        other => other,
    };
    let found = value.as_ref().and_then(|v| {
        let nested = v.get("error").and_then(|e| match e {
            Value::String(text) => Some(text.as_str()),
            _ => str_of(e, "message"),
        });
        nested
            .or_else(|| str_of(v, "message"))
            .or_else(|| str_of(v, "detail"))
    });
    let text: Cow<'_, str> = match found {
        Some(text) => Cow::Borrowed(text),
        None => String::from_utf8_lossy(body),
    };
    let text = text.trim();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

pub(super) fn text_block(text: &str) -> Option<Value> {
    // Anthropic refuses empty text blocks.
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}
