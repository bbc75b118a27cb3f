//! Anthropic Messages ⇄ OpenAI Chat Completions (the pivot), both ways:
//! requests, whole answers and streams.
//!
//! # Dropped, because harmless
//!
//! Anthropic request → chat:
//! - `cache_control` on any block, system block or tool (chat hosts cache
//!   prefixes on their own), `citations` settings and the `title` /
//!   `context` of documents.
//! - `top_k` (no such sampler in chat), `service_tier`, `metadata` other
//!   than `user_id` (which becomes `user`).
//! - `thinking` of type `disabled` or `adaptive` (the host's default
//!   applies); the `signature` of thinking blocks in the history (a chat
//!   host cannot check it; their text is kept as `reasoning_content`) and
//!   `redacted_thinking` blocks (opaque to any other host).
//! - `is_error` on a `tool_result` has no chat field: the tool message's
//!   text is prefixed with `Error: ` instead, so the model still sees it.
//!
//! Chat request → Anthropic:
//! - `n` = 1, `logprobs` = false, `top_logprobs`, `seed`,
//!   `presence_penalty`, `frequency_penalty`, `service_tier`, `store`,
//!   `metadata`, `prediction`, `stream_options` (the caller reads
//!   `include_usage` for [`AnthropicToChatStream::new`]), `response_format`
//!   `{type: text}`, `reasoning_effort` `none`, a message's `name`, an
//!   image's `detail`.
//! - `reasoning_content` on an assistant message without a signature (see
//!   below): Anthropic refuses unsigned thinking blocks.
//! - `tool_choice` when the request has no tools (it means nothing then).
//!
//! Answers: Anthropic `redacted_thinking` and server-tool blocks
//! (`server_tool_use`, `web_search_tool_result`, …) to chat; the chat
//! `logprobs` of an answer to Anthropic. A tool call whose arguments are not
//! a JSON object reaches an Anthropic client with `input: {}` (non-stream;
//! streamed pieces pass as they are).
//!
//! # Refused with 400 naming the field ([`Untranslatable`])
//!
//! Anthropic request → chat: `mcp_servers`, `container`; tools with a
//! `type` other than `custom` (server tools and Anthropic-defined client
//! tools have no schema to send); `document` blocks other than base64 PDF
//! (sent as a chat `file` part) and plain text (sent as a text part); image
//! or document sources of type `file`; a last message from the assistant
//! (a prefill: chat hosts would answer anew instead of continuing it).
//!
//! Chat request → Anthropic: `n` > 1, `logprobs: true`, `audio` and
//! `modalities` with audio, non-empty `logit_bias`, `web_search_options`,
//! the deprecated `functions` / `function_call` and `function` messages,
//! `response_format` `json_object` (Anthropic's JSON output needs a
//! schema; `json_schema` maps to `output_config.format`), `input_audio`
//! parts, `file` parts other than inline PDF or image data (a `file_id`
//! means nothing to Anthropic), tools other than `function`.
//!
//! # Mapped with a choice
//!
//! - `max_tokens` goes to chat as `max_tokens`, or `max_completion_tokens`
//!   when thinking is requested: OpenAI's reasoning models refuse
//!   `max_tokens`, while many other hosts know only `max_tokens`.
//! - `thinking.budget_tokens` → `reasoning_effort`: `low` up to 4096,
//!   `medium` up to 16384, else `high`; back, `minimal` 1024, `low` 4096,
//!   `medium` 16384, `high` 32768, kept below `max_tokens`.
//! - Anthropic `output_config.format` (and the older `output_format`)
//!   `json_schema` ⇄ chat `response_format` `json_schema`.
//! - Images inside a `tool_result` go to chat in a user message right
//!   after the tool messages: chat tool messages carry text only.
//! - A chat request ending with an assistant message reaches Anthropic as
//!   a prefill, which Anthropic continues.
//! - `temperature` passes as it is: above 1 Anthropic refuses it, in the
//!   upstream's own words, rather than us changing it.
//! - A chat `stop` finish becomes `end_turn` (chat does not say whether a
//!   stop sequence matched), or `tool_use` when the answer called tools.
//! - Reasoning tokens: Anthropic reports none apart (they are in
//!   `output_tokens`), so chat answers carry no `reasoning_tokens`;
//!   a chat host's `completion_tokens` (reasoning included) become
//!   `output_tokens`.
//!
//! # Reasoning state carried through a chat client
//!
//! An Anthropic answer's thinking text goes to chat as `reasoning_content`
//! and its `signature` both as `reasoning_signature` beside it and, when
//! the answer calls tools, appended to the first tool call's id after
//! [`SIGNATURE_IN_ID`] (clients that drop unknown fields still echo ids).
//! On the next request an assistant message with `reasoning_content` and a
//! signature from either carrier (or LiteLLM-style `thinking_blocks`)
//! becomes a thinking block again, and ids lose the suffix. Only an answer
//! with one thinking block carries its signature (the usual case: a
//! thinking block opens an answer); `redacted_thinking` is not carried.

use std::borrow::Cow;

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use super::{push_event, Untranslatable};

type Object = Map<String, Value>;

/// Separates a tool call's own id from the thinking signature appended to
/// it: neither Anthropic ids (`[A-Za-z0-9_-]`) nor base64 contain `~`.
pub const SIGNATURE_IN_ID: &str = "~sig~";

// ---------------------------------------------------------------------
// Small readers shared by every direction.

fn parse_request(body: &[u8]) -> Result<Object, Untranslatable> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Untranslatable::new("body", "the body is not a JSON object")),
        Err(e) => Err(Untranslatable::new(
            "body",
            format!("the body is not JSON: {e}"),
        )),
    }
}

fn parse_answer(body: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("the answer is not a JSON object".to_string())
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn u64_of(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn to_bytes(value: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

fn now_secs() -> u64 {
    crate::clock::now_ms() / 1000
}

fn random_suffix() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// An Anthropic message id for a chat answer id (`chatcmpl-abc` →
/// `msg_abc`), or a fresh one.
fn message_id(chat_id: Option<&str>) -> String {
    match chat_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => format!("msg_{}", random_suffix()),
    }
}

/// A chat completion id for an Anthropic message id, or a fresh one.
fn completion_id(message_id: Option<&str>) -> String {
    match message_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        None => format!("chatcmpl-{}", random_suffix()),
    }
}

/// A tool call id with its thinking signature appended, if any.
fn id_with_signature(id: &str, signature: Option<&str>) -> String {
    match signature {
        Some(signature) => format!("{id}{SIGNATURE_IN_ID}{signature}"),
        None => id.to_string(),
    }
}

/// Splits a tool call id a chat client echoed back into the upstream's id
/// and the thinking signature it carried.
fn split_signature(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_IN_ID) {
        Some((id, signature)) if !signature.is_empty() => (id, Some(signature)),
        Some((id, _)) => (id, None),
        None => (id, None),
    }
}

/// A tool call's `arguments` string as the object Anthropic wants.
fn arguments_object(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    }
}

// ---------------------------------------------------------------------
// Reasons and usage.

/// Anthropic `stop_reason` → chat `finish_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
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
fn stop_reason(finish_reason: Option<&str>, called_tools: bool) -> &'static str {
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
struct ChatUsage {
    prompt: u64,
    completion: u64,
    /// Prompt tokens read from the host's cache, part of `prompt`.
    cached: u64,
}

impl ChatUsage {
    fn read(usage: &Value) -> Self {
        let cached = usage
            .get("prompt_tokens_details")
            .map(|details| u64_of(details, "cached_tokens"))
            .filter(|&cached| cached > 0)
            // DeepSeek reports its cache hits in a field of its own.
            .unwrap_or_else(|| u64_of(usage, "prompt_cache_hit_tokens"));
        ChatUsage {
            prompt: u64_of(usage, "prompt_tokens"),
            completion: u64_of(usage, "completion_tokens"),
            cached,
        }
    }

    /// Anthropic counts input without the cache reads.
    fn to_anthropic(self) -> Value {
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
struct AnthropicUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl AnthropicUsage {
    /// Overwrites the counts `usage` has: `message_delta` repeats them
    /// cumulatively, and may omit some.
    fn update(&mut self, usage: &Value) {
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
    fn to_chat(self) -> Value {
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
// Anthropic request → chat request.

/// Anthropic Messages request JSON -> OpenAI Chat Completions request JSON.
/// `model` is the upstream model name to put in the body. When the request
/// streams, sets "stream": true and "stream_options": {"include_usage": true}.
pub fn anthropic_request_to_chat(body: &[u8], model: &str) -> Result<Vec<u8>, Untranslatable> {
    let request = parse_request(body)?;
    for field in ["mcp_servers", "container"] {
        if request.get(field).is_some_and(|v| !v.is_null()) {
            return Err(Untranslatable::new(
                field,
                "chat hosts have no such feature",
            ));
        }
    }
    let mut chat = Object::new();
    chat.insert("model".into(), json!(model));
    chat.insert(
        "messages".into(),
        Value::Array(anthropic_messages_to_chat(&request)?),
    );

    let effort = reasoning_effort_of(&request);
    if let Some(max_tokens) = request.get("max_tokens").and_then(Value::as_u64) {
        let key = if effort.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        chat.insert(key.into(), json!(max_tokens));
    }
    if let Some(effort) = effort {
        chat.insert("reasoning_effort".into(), json!(effort));
    }
    for key in ["temperature", "top_p"] {
        if let Some(value) = request.get(key).filter(|v| v.is_number()) {
            chat.insert(key.into(), value.clone());
        }
    }
    if let Some(stops) = request.get("stop_sequences").and_then(Value::as_array) {
        if !stops.is_empty() {
            chat.insert("stop".into(), Value::Array(stops.clone()));
        }
    }
    if let Some(user) = request.get("metadata").and_then(|m| str_of(m, "user_id")) {
        chat.insert("user".into(), json!(user));
    }
    if let Some(format) = anthropic_output_schema(&request) {
        chat.insert("response_format".into(), format);
    }
    anthropic_tools_to_chat(&request, &mut chat)?;
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(to_bytes(&Value::Object(chat)))
}

/// `thinking.budget_tokens`, else `output_config.effort`, as a chat
/// `reasoning_effort`.
fn reasoning_effort_of(request: &Object) -> Option<&'static str> {
    if let Some(thinking) = request.get("thinking") {
        if str_of(thinking, "type") == Some("enabled") {
            return Some(match u64_of(thinking, "budget_tokens") {
                0..=4096 => "low",
                4097..=16384 => "medium",
                _ => "high",
            });
        }
    }
    let effort = request
        .get("output_config")
        .and_then(|c| str_of(c, "effort"));
    match effort {
        Some("low") => Some("low"),
        Some("medium") => Some("medium"),
        Some("high" | "max") => Some("high"),
        _ => None,
    }
}

/// Anthropic's JSON output schema (`output_config.format`, or the beta's
/// `output_format`) as a chat `response_format`.
fn anthropic_output_schema(request: &Object) -> Option<Value> {
    let format = request
        .get("output_config")
        .and_then(|c| c.get("format"))
        .or_else(|| request.get("output_format"))?;
    if str_of(format, "type") != Some("json_schema") {
        return None;
    }
    let schema = format.get("schema")?;
    Some(json!({
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": true},
    }))
}

fn anthropic_messages_to_chat(request: &Object) -> Result<Vec<Value>, Untranslatable> {
    let mut chat = Vec::new();
    if let Some(system) = request.get("system") {
        let text = anthropic_system_text(system)?;
        if !text.is_empty() {
            chat.push(json!({"role": "system", "content": text}));
        }
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages", "must be an array"))?;
    for (i, message) in messages.iter().enumerate() {
        match str_of(message, "role") {
            Some("user") => anthropic_user_to_chat(message, i, &mut chat)?,
            Some("assistant") => {
                if i + 1 == messages.len() {
                    return Err(Untranslatable::new(
                        format!("messages[{i}].role"),
                        "a last assistant message (a prefill) cannot be continued by a chat host",
                    ));
                }
                chat.push(anthropic_assistant_to_chat(message, i)?);
            }
            _ => {
                return Err(Untranslatable::new(
                    format!("messages[{i}].role"),
                    "must be user or assistant",
                ))
            }
        }
    }
    Ok(chat)
}

/// The system prompt, a string or text blocks, as one string.
fn anthropic_system_text(system: &Value) -> Result<String, Untranslatable> {
    match system {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                match (str_of(block, "type"), str_of(block, "text")) {
                    (Some("text"), Some(text)) => texts.push(text),
                    _ => {
                        return Err(Untranslatable::new(
                            format!("system[{j}].type"),
                            "system blocks must be text",
                        ))
                    }
                }
            }
            Ok(texts.join("\n\n"))
        }
        Value::Null => Ok(String::new()),
        _ => Err(Untranslatable::new(
            "system",
            "must be a string or text blocks",
        )),
    }
}

/// A user turn: its `tool_result` blocks become chat tool messages (chat
/// wants them right after the assistant's calls), the rest one user
/// message after them.
fn anthropic_user_to_chat(
    message: &Value,
    i: usize,
    chat: &mut Vec<Value>,
) -> Result<(), Untranslatable> {
    let blocks = match message.get("content") {
        Some(Value::String(text)) => {
            chat.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(Untranslatable::new(
                format!("messages[{i}].content"),
                "must be a string or an array of blocks",
            ))
        }
    };
    // Images returned by tools lead the user message that follows the
    // tool messages, in their order.
    let mut tool_parts = Vec::new();
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let field = format!("messages[{i}].content[{j}]");
        match str_of(block, "type") {
            Some("text") => {
                parts.push(json!({"type": "text", "text": str_of(block, "text").unwrap_or("")}))
            }
            Some("image") => parts.push(anthropic_image_to_chat(block, &field)?),
            Some("document") => parts.push(anthropic_document_to_chat(block, &field)?),
            Some("tool_result") => chat.push(anthropic_tool_result_to_chat(
                block,
                &field,
                &mut tool_parts,
            )?),
            _ => {
                return Err(Untranslatable::new(
                    format!("{field}.type"),
                    "not expressible in chat",
                ))
            }
        }
    }
    tool_parts.append(&mut parts);
    if !tool_parts.is_empty() {
        chat.push(json!({"role": "user", "content": simplify_parts(tool_parts)}));
    }
    Ok(())
}

/// A lone text part as a plain string, which every chat host accepts.
fn simplify_parts(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && str_of(&parts[0], "type") == Some("text") {
        return parts.swap_remove(0)["text"].take();
    }
    Value::Array(parts)
}

fn anthropic_image_to_chat(block: &Value, field: &str) -> Result<Value, Untranslatable> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match str_of(source, "type") {
        Some("base64") => format!(
            "data:{};base64,{}",
            str_of(source, "media_type").unwrap_or("image/png"),
            str_of(source, "data").unwrap_or("")
        ),
        Some("url") => str_of(source, "url").unwrap_or("").to_string(),
        _ => {
            return Err(Untranslatable::new(
                format!("{field}.source.type"),
                "only base64 and url images are expressible in chat",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A base64 PDF becomes a chat `file` part, a plain-text document a text
/// part; other documents have no chat form.
fn anthropic_document_to_chat(block: &Value, field: &str) -> Result<Value, Untranslatable> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let media_type = str_of(source, "media_type").unwrap_or("");
    match str_of(source, "type") {
        Some("base64") if media_type == "application/pdf" => {
            let data = str_of(source, "data").unwrap_or("");
            let filename = str_of(block, "title").unwrap_or("document.pdf");
            Ok(json!({"type": "file", "file": {
                "filename": filename,
                "file_data": format!("data:application/pdf;base64,{data}"),
            }}))
        }
        Some("text") => Ok(json!({"type": "text", "text": str_of(source, "data").unwrap_or("")})),
        _ => Err(Untranslatable::new(
            format!("{field}.source"),
            "only base64 PDF and plain-text documents are expressible in chat",
        )),
    }
}

/// A `tool_result` as a chat tool message; its images and documents go to
/// `extra_parts`, for the user message after the tool messages.
fn anthropic_tool_result_to_chat(
    block: &Value,
    field: &str,
    extra_parts: &mut Vec<Value>,
) -> Result<Value, Untranslatable> {
    let mut text = String::new();
    match block.get("content") {
        Some(Value::String(content)) => text.push_str(content),
        Some(Value::Array(items)) => {
            for (k, item) in items.iter().enumerate() {
                let item_field = format!("{field}.content[{k}]");
                match str_of(item, "type") {
                    Some("text") => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(str_of(item, "text").unwrap_or(""));
                    }
                    Some("image") => extra_parts.push(anthropic_image_to_chat(item, &item_field)?),
                    Some("document") => {
                        extra_parts.push(anthropic_document_to_chat(item, &item_field)?)
                    }
                    _ => {
                        return Err(Untranslatable::new(
                            format!("{item_field}.type"),
                            "not expressible in a chat tool message",
                        ))
                    }
                }
            }
        }
        _ => {}
    }
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = if text.is_empty() {
            "Error".to_string()
        } else {
            format!("Error: {text}")
        };
    }
    Ok(json!({
        "role": "tool",
        "tool_call_id": str_of(block, "tool_use_id").unwrap_or(""),
        "content": text,
    }))
}

fn anthropic_assistant_to_chat(message: &Value, i: usize) -> Result<Value, Untranslatable> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    match message.get("content") {
        Some(Value::String(content)) => text.push_str(content),
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                match str_of(block, "type") {
                    Some("text") => text.push_str(str_of(block, "text").unwrap_or("")),
                    Some("thinking") => reasoning.push_str(str_of(block, "thinking").unwrap_or("")),
                    Some("redacted_thinking") => {}
                    Some("tool_use") => tool_calls.push(json!({
                        "id": str_of(block, "id").unwrap_or(""),
                        "type": "function",
                        "function": {
                            "name": str_of(block, "name").unwrap_or(""),
                            "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                        },
                    })),
                    _ => {
                        return Err(Untranslatable::new(
                            format!("messages[{i}].content[{j}].type"),
                            "not expressible in chat",
                        ))
                    }
                }
            }
        }
        _ => {
            return Err(Untranslatable::new(
                format!("messages[{i}].content"),
                "must be a string or an array of blocks",
            ))
        }
    }
    let mut chat = Object::new();
    chat.insert("role".into(), json!("assistant"));
    // Chat wants null content beside tool calls, a string otherwise.
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    chat.insert("content".into(), content);
    if !reasoning.is_empty() {
        chat.insert("reasoning_content".into(), json!(reasoning));
    }
    if !tool_calls.is_empty() {
        chat.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Ok(Value::Object(chat))
}

/// `tools` and `tool_choice` into the chat request.
fn anthropic_tools_to_chat(request: &Object, chat: &mut Object) -> Result<(), Untranslatable> {
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let mut functions = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            if let Some(kind) = str_of(tool, "type").filter(|&kind| kind != "custom") {
                return Err(Untranslatable::new(
                    format!("tools[{i}].type"),
                    format!("the tool type {kind} has no chat form"),
                ));
            }
            let mut function = Object::new();
            function.insert("name".into(), json!(str_of(tool, "name").unwrap_or("")));
            if let Some(description) = tool.get("description").filter(|d| d.is_string()) {
                function.insert("description".into(), description.clone());
            }
            let schema = tool
                .get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            function.insert("parameters".into(), schema);
            if let Some(strict) = tool.get("strict").filter(|s| s.is_boolean()) {
                function.insert("strict".into(), strict.clone());
            }
            functions.push(json!({"type": "function", "function": function}));
        }
        if !functions.is_empty() {
            chat.insert("tools".into(), Value::Array(functions));
        }
    }
    // Without tools a tool_choice means nothing, and chat hosts refuse it.
    let Some(choice) = request.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    if !chat.contains_key("tools") {
        return Ok(());
    }
    let chat_choice = match str_of(choice, "type") {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            json!({"type": "function", "function": {"name": str_of(choice, "name").unwrap_or("")}})
        }
        _ => {
            return Err(Untranslatable::new(
                "tool_choice.type",
                "unknown tool_choice type",
            ))
        }
    };
    chat.insert("tool_choice".into(), chat_choice);
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        chat.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Chat request → Anthropic request.

/// OpenAI Chat request JSON -> Anthropic Messages request JSON. `max_tokens`
/// is required by Anthropic: use the client's max_tokens / max_completion_tokens,
/// else `default_max_tokens`.
pub fn chat_request_to_anthropic(
    body: &[u8],
    model: &str,
    default_max_tokens: u64,
) -> Result<Vec<u8>, Untranslatable> {
    let request = parse_request(body)?;
    refuse_chat_only_fields(&request)?;
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| request.get(*key).and_then(Value::as_u64))
        .unwrap_or(default_max_tokens);

    let mut anthropic = Object::new();
    anthropic.insert("model".into(), json!(model));
    anthropic.insert("max_tokens".into(), json!(max_tokens));
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages", "must be an array"))?;
    let (system, turns) = chat_messages_to_anthropic(messages)?;
    if !system.is_empty() {
        anthropic.insert("system".into(), system_value(system));
    }
    anthropic.insert("messages".into(), Value::Array(turns));

    for key in ["temperature", "top_p"] {
        if let Some(value) = request.get(key).filter(|v| v.is_number()) {
            anthropic.insert(key.into(), value.clone());
        }
    }
    match request.get("stop") {
        Some(Value::String(stop)) => {
            anthropic.insert("stop_sequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            anthropic.insert("stop_sequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        anthropic.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(thinking) = thinking_for_effort(&request, max_tokens) {
        anthropic.insert("thinking".into(), thinking);
    }
    if let Some(schema) = chat_response_format_schema(&request)? {
        anthropic.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": schema}}),
        );
    }
    chat_tools_to_anthropic(&request, &mut anthropic)?;
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        anthropic.insert("stream".into(), json!(true));
    }
    Ok(to_bytes(&Value::Object(anthropic)))
}

/// Chat fields with no Anthropic form that would change the answer if
/// dropped.
fn refuse_chat_only_fields(request: &Object) -> Result<(), Untranslatable> {
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(Untranslatable::new(
            "n",
            "Anthropic answers with one choice",
        ));
    }
    if request.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(Untranslatable::new(
            "logprobs",
            "Anthropic reports no log probabilities",
        ));
    }
    let has_audio_modality = request
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|m| m.as_str() == Some("audio")));
    if has_audio_modality {
        return Err(Untranslatable::new(
            "modalities",
            "Anthropic answers with text only",
        ));
    }
    for field in ["audio", "web_search_options", "functions", "function_call"] {
        if request.get(field).is_some_and(|v| !v.is_null()) {
            return Err(Untranslatable::new(field, "not expressible for Anthropic"));
        }
    }
    let biased = request
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|b| !b.is_empty());
    if biased {
        return Err(Untranslatable::new(
            "logit_bias",
            "Anthropic has no logit bias",
        ));
    }
    Ok(())
}

/// `response_format`: a JSON schema for Anthropic's JSON output, nothing
/// for text, refused for schemaless JSON.
fn chat_response_format_schema(request: &Object) -> Result<Option<Value>, Untranslatable> {
    let Some(format) = request.get("response_format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match str_of(format, "type") {
        Some("text") => Ok(None),
        Some("json_schema") => format
            .get("json_schema")
            .and_then(|s| s.get("schema"))
            .cloned()
            .map(Some)
            .ok_or_else(|| Untranslatable::new("response_format.json_schema.schema", "missing")),
        _ => Err(Untranslatable::new(
            "response_format",
            "Anthropic's JSON output needs a json_schema",
        )),
    }
}

/// `reasoning_effort` as an Anthropic thinking budget, kept below
/// `max_tokens` and at least Anthropic's minimum of 1024.
fn thinking_for_effort(request: &Object, max_tokens: u64) -> Option<Value> {
    let budget: u64 = match request.get("reasoning_effort").and_then(Value::as_str)? {
        "minimal" => 1024,
        "low" => 4096,
        "medium" => 16384,
        "high" | "xhigh" => 32768,
        _ => return None,
    };
    let budget = budget.min(max_tokens.saturating_sub(1));
    (budget >= 1024).then(|| json!({"type": "enabled", "budget_tokens": budget}))
}

/// One system text as a string, several as text blocks.
fn system_value(mut texts: Vec<String>) -> Value {
    if texts.len() == 1 {
        return json!(texts.swap_remove(0));
    }
    Value::Array(
        texts
            .into_iter()
            .map(|t| json!({"type": "text", "text": t}))
            .collect(),
    )
}

/// Chat messages → the system texts and strictly alternating Anthropic
/// turns: consecutive same-role messages merge, tool messages become user
/// `tool_result` blocks, system and developer messages go to `system`.
fn chat_messages_to_anthropic(
    messages: &[Value],
) -> Result<(Vec<String>, Vec<Value>), Untranslatable> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let (role, blocks) = match str_of(message, "role") {
            Some("system" | "developer") => {
                let text = chat_system_text(message, i)?;
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            Some("user") => ("user", chat_user_blocks(message, i)?),
            Some("assistant") => ("assistant", chat_assistant_blocks(message, i)?),
            Some("tool") => ("user", vec![chat_tool_result(message, i)?]),
            _ => {
                return Err(Untranslatable::new(
                    format!("messages[{i}].role"),
                    "must be system, developer, user, assistant or tool",
                ))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, merged)) if *last == role => merged.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

fn chat_system_text(message: &Value, i: usize) -> Result<String, Untranslatable> {
    match message.get("content") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match (str_of(part, "type"), str_of(part, "text")) {
                    (Some("text"), Some(text)) => texts.push(text),
                    _ => {
                        return Err(Untranslatable::new(
                            format!("messages[{i}].content[{j}].type"),
                            "system content must be text",
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Ok(String::new()),
    }
}

fn text_block(text: &str) -> Option<Value> {
    // Anthropic refuses empty text blocks.
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn chat_user_blocks(message: &Value, i: usize) -> Result<Vec<Value>, Untranslatable> {
    let parts = match message.get("content") {
        Some(Value::String(text)) => return Ok(text_block(text).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        Some(Value::Null) | None => return Ok(Vec::new()),
        _ => {
            return Err(Untranslatable::new(
                format!("messages[{i}].content"),
                "must be a string or an array of parts",
            ))
        }
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let field = format!("messages[{i}].content[{j}]");
        match str_of(part, "type") {
            Some("text") => blocks.extend(text_block(str_of(part, "text").unwrap_or(""))),
            Some("image_url") => blocks.push(chat_image_to_anthropic(part, &field)?),
            Some("file") => blocks.push(chat_file_to_anthropic(part, &field)?),
            _ => {
                return Err(Untranslatable::new(
                    format!("{field}.type"),
                    "not expressible for Anthropic",
                ))
            }
        }
    }
    Ok(blocks)
}

/// A `data:` URL split into its media type and base64 payload.
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (media_type, data) = rest.split_once(";base64,")?;
    Some((media_type, data))
}

fn chat_image_to_anthropic(part: &Value, field: &str) -> Result<Value, Untranslatable> {
    let image = part.get("image_url").unwrap_or(&Value::Null);
    // Some clients send the URL as a bare string.
    let url = image
        .as_str()
        .or_else(|| str_of(image, "url"))
        .unwrap_or("");
    let source = if url.starts_with("data:") {
        let (media_type, data) = split_data_url(url).ok_or_else(|| {
            Untranslatable::new(
                format!("{field}.image_url.url"),
                "a data: URL must be base64",
            )
        })?;
        json!({"type": "base64", "media_type": media_type, "data": data})
    } else {
        json!({"type": "url", "url": url})
    };
    Ok(json!({"type": "image", "source": source}))
}

/// Inline PDF data becomes a document block, inline image data an image
/// block; a `file_id` names a file Anthropic does not have.
fn chat_file_to_anthropic(part: &Value, field: &str) -> Result<Value, Untranslatable> {
    let file = part.get("file").unwrap_or(&Value::Null);
    let data_url = str_of(file, "file_data").unwrap_or("");
    match split_data_url(data_url) {
        Some(("application/pdf", data)) => Ok(json!({"type": "document", "source": {
            "type": "base64", "media_type": "application/pdf", "data": data,
        }})),
        Some((media_type, data)) if media_type.starts_with("image/") => {
            Ok(json!({"type": "image", "source": {
                "type": "base64", "media_type": media_type, "data": data,
            }}))
        }
        _ => Err(Untranslatable::new(
            format!("{field}.file"),
            "only inline PDF or image data is expressible for Anthropic",
        )),
    }
}

/// An assistant message: its thinking block (when signed), text, then
/// tool calls.
fn chat_assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, Untranslatable> {
    let mut blocks = restored_thinking(message);
    match message.get("content") {
        Some(Value::String(text)) => blocks.extend(text_block(text)),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let text = match str_of(part, "type") {
                    Some("text") => str_of(part, "text"),
                    Some("refusal") => str_of(part, "refusal"),
                    _ => {
                        return Err(Untranslatable::new(
                            format!("messages[{i}].content[{j}].type"),
                            "assistant content must be text",
                        ))
                    }
                };
                blocks.extend(text_block(text.unwrap_or("")));
            }
        }
        _ => {}
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (j, call) in calls.into_iter().flatten().enumerate() {
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = str_of(function, "arguments").unwrap_or("");
        let input = arguments_object(arguments).ok_or_else(|| {
            Untranslatable::new(
                format!("messages[{i}].tool_calls[{j}].function.arguments"),
                "must be a JSON object",
            )
        })?;
        let (id, _) = split_signature(str_of(call, "id").unwrap_or(""));
        blocks.push(json!({
            "type": "tool_use",
            "id": id,
            "name": str_of(function, "name").unwrap_or(""),
            "input": input,
        }));
    }
    Ok(blocks)
}

/// The thinking blocks an assistant message carries back: LiteLLM-style
/// `thinking_blocks` as they are, else `reasoning_content` with a
/// signature from `reasoning_signature` or the first tool call's id.
fn restored_thinking(message: &Value) -> Vec<Value> {
    if let Some(blocks) = message.get("thinking_blocks").and_then(Value::as_array) {
        let signed = |b: &&Value| match str_of(b, "type") {
            Some("thinking") => str_of(b, "signature").is_some_and(|s| !s.is_empty()),
            Some("redacted_thinking") => b.get("data").is_some(),
            _ => false,
        };
        return blocks.iter().filter(signed).cloned().collect();
    }
    let text = str_of(message, "reasoning_content")
        .or_else(|| str_of(message, "reasoning"))
        .unwrap_or("");
    let in_id = || {
        let calls = message.get("tool_calls")?.as_array()?;
        split_signature(str_of(calls.first()?, "id")?).1
    };
    let signature = str_of(message, "reasoning_signature")
        .filter(|s| !s.is_empty())
        .or_else(in_id);
    match signature {
        Some(signature) if !text.is_empty() => {
            vec![json!({"type": "thinking", "thinking": text, "signature": signature})]
        }
        _ => Vec::new(),
    }
}

/// A tool message as a user `tool_result` block.
fn chat_tool_result(message: &Value, i: usize) -> Result<Value, Untranslatable> {
    let (id, _) = split_signature(str_of(message, "tool_call_id").unwrap_or(""));
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match message.get("content") {
        Some(Value::String(text)) if !text.is_empty() => block["content"] = json!(text),
        Some(Value::Array(parts)) => {
            let mut content = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let field = format!("messages[{i}].content[{j}]");
                match str_of(part, "type") {
                    Some("text") => content.extend(text_block(str_of(part, "text").unwrap_or(""))),
                    Some("image_url") => content.push(chat_image_to_anthropic(part, &field)?),
                    _ => {
                        return Err(Untranslatable::new(
                            format!("{field}.type"),
                            "not expressible in an Anthropic tool_result",
                        ))
                    }
                }
            }
            if !content.is_empty() {
                block["content"] = Value::Array(content);
            }
        }
        _ => {}
    }
    Ok(block)
}

/// `tools`, `tool_choice` and `parallel_tool_calls` into the Anthropic
/// request.
fn chat_tools_to_anthropic(request: &Object, anthropic: &mut Object) -> Result<(), Untranslatable> {
    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty());
    let Some(tools) = tools else {
        return Ok(());
    };
    let mut converted = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if str_of(tool, "type").is_some_and(|kind| kind != "function") {
            return Err(Untranslatable::new(
                format!("tools[{i}].type"),
                "only function tools are expressible for Anthropic",
            ));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let mut schema = function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({}));
        // Anthropic insists on an object schema; a function without
        // parameters takes none.
        if let Value::Object(object) = &mut schema {
            object.entry("type").or_insert_with(|| json!("object"));
        }
        let mut converted_tool =
            json!({"name": str_of(function, "name").unwrap_or(""), "input_schema": schema});
        if let Some(description) = function.get("description").filter(|d| d.is_string()) {
            converted_tool["description"] = description.clone();
        }
        if let Some(strict) = function.get("strict").filter(|s| s.is_boolean()) {
            converted_tool["strict"] = strict.clone();
        }
        converted.push(converted_tool);
    }
    anthropic.insert("tools".into(), Value::Array(converted));

    let mut choice = match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => return Err(Untranslatable::new("tool_choice", "unknown tool_choice")),
        },
        Some(choice) if str_of(choice, "type") == Some("function") => {
            let name = choice
                .get("function")
                .and_then(|f| str_of(f, "name"))
                .unwrap_or("");
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => {
            return Err(Untranslatable::new(
                "tool_choice",
                "not expressible for Anthropic",
            ))
        }
    };
    if request.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        // `none` calls no tools, so it has no parallel switch.
        if str_of(choice, "type") != Some("none") {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(choice) = choice {
        anthropic.insert("tool_choice".into(), choice);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Whole answers.

/// A chat answer, for an Anthropic client. `model` is the client-facing
/// model name to report.
pub fn chat_response_to_anthropic(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let answer = parse_answer(body)?;
    if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
        return Err(error_text(error));
    }
    let choice = answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or("the answer has no choices")?;
    let message = choice
        .get("message")
        .ok_or("the answer's choice has no message")?;

    let mut content = Vec::new();
    let reasoning = str_of(message, "reasoning_content").or_else(|| str_of(message, "reasoning"));
    if let Some(reasoning) = reasoning.filter(|r| !r.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    match message.get("content") {
        Some(Value::String(text)) => content.extend(text_block(text)),
        Some(Value::Array(parts)) => content.extend(
            parts
                .iter()
                .filter_map(|p| str_of(p, "text"))
                .filter_map(text_block),
        ),
        _ => {}
    }
    let refusal = str_of(message, "refusal").filter(|r| !r.is_empty());
    content.extend(refusal.and_then(text_block));
    let calls = message.get("tool_calls").and_then(Value::as_array);
    let mut called_tools = false;
    for call in calls.into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        let input = arguments_object(str_of(function, "arguments").unwrap_or(""));
        called_tools = true;
        content.push(json!({
            "type": "tool_use",
            "id": str_of(call, "id").map_or_else(|| format!("toolu_{}", random_suffix()), str::to_string),
            "name": str_of(function, "name").unwrap_or(""),
            "input": input.unwrap_or_else(|| json!({})),
        }));
    }
    let stop = match refusal {
        Some(_) => "refusal",
        None => stop_reason(str_of(choice, "finish_reason"), called_tools),
    };
    let usage = answer.get("usage").map(ChatUsage::read).unwrap_or_default();
    let anthropic = json!({
        "id": message_id(str_of(&answer, "id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    });
    Ok(to_bytes(&anthropic))
}

/// An Anthropic answer, for a chat client. `model` is the client-facing
/// model name to report.
pub fn anthropic_response_to_chat(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let answer = parse_answer(body)?;
    if str_of(&answer, "type") == Some("error") {
        return Err(error_text(answer.get("error").unwrap_or(&Value::Null)));
    }
    let blocks = answer
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the answer has no content")?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut signatures = Vec::new();
    let mut calls = Vec::new();
    for block in blocks {
        match str_of(block, "type") {
            Some("text") => text.push_str(str_of(block, "text").unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(str_of(block, "thinking").unwrap_or(""));
                signatures.push(str_of(block, "signature").unwrap_or(""));
            }
            Some("tool_use") => calls.push(block),
            _ => {}
        }
    }
    // One thinking block's signature is carried; several would not match
    // their joined text.
    let signature = match signatures.as_slice() {
        [signature] if !signature.is_empty() => Some(*signature),
        _ => None,
    };
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(n, call)| {
            let id = str_of(call, "id").unwrap_or("");
            json!({
                "id": id_with_signature(id, signature.filter(|_| n == 0)),
                "type": "function",
                "function": {
                    "name": str_of(call, "name").unwrap_or(""),
                    "arguments": call.get("input").unwrap_or(&json!({})).to_string(),
                },
            })
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if text.is_empty() && !tool_calls.is_empty() {
        message["content"] = Value::Null;
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if let Some(signature) = signature {
        message["reasoning_signature"] = json!(signature);
    }
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let mut usage = AnthropicUsage::default();
    usage.update(answer.get("usage").unwrap_or(&Value::Null));
    let chat = json!({
        "id": completion_id(str_of(&answer, "id")),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(str_of(&answer, "stop_reason").unwrap_or("end_turn")),
        }],
        "usage": usage.to_chat(),
    });
    Ok(to_bytes(&chat))
}

// ---------------------------------------------------------------------
// Errors.

/// The message of an error value in either dialect (`{message}` or a bare
/// string).
fn error_text(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        _ => str_of(error, "message")
            .unwrap_or("the upstream reported an error")
            .to_string(),
    }
}

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

// ---------------------------------------------------------------------
// Streams: chat chunks → Anthropic events.

/// The content block open in the Anthropic stream being written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OpenBlock {
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
        let reasoning = str_of(delta, "reasoning_content").or_else(|| str_of(delta, "reasoning"));
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
fn anthropic_error_type(openai_type: &str) -> &'static str {
    match openai_type {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" | "rate_limit_exceeded" | "tokens" | "requests" => "rate_limit_error",
        _ => "api_error",
    }
}

/// An Anthropic error type as the OpenAI one.
fn openai_error_type(anthropic_type: &str) -> &'static str {
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
enum ReadBlock {
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
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    started: bool,
    /// `[DONE]` or an error was written: nothing more is.
    done: bool,
    block: ReadBlock,
    tools: u64,
    thinking_blocks: u32,
    /// The answer's thinking signature, for the first tool call's id.
    signature: Option<String>,
    finish_sent: bool,
    usage: AnthropicUsage,
}

impl AnthropicToChatStream {
    /// `include_usage`: the client asked for the usage chunk
    /// (`stream_options.include_usage`).
    pub fn new(model: &str, include_usage: bool) -> Self {
        AnthropicToChatStream {
            id: completion_id(None),
            created: now_secs(),
            model: model.to_string(),
            include_usage,
            started: false,
            done: false,
            block: ReadBlock::Plain,
            tools: 0,
            thinking_blocks: 0,
            signature: None,
            finish_sent: false,
            usage: AnthropicUsage::default(),
        }
    }

    /// One upstream event: its `event:` name (else the payload's `type`
    /// decides) and `data:` payload.
    pub fn on_event(&mut self, event: Option<&str>, data: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        let payload = match serde_json::from_str::<Value>(data.trim()) {
            Ok(payload) => payload,
            Err(_) => {
                return self.fail("server_error", "the upstream sent an unreadable event", out)
            }
        };
        let kind = event.or_else(|| str_of(&payload, "type")).unwrap_or("");
        match kind {
            "message_start" => {
                let message = payload.get("message").unwrap_or(&Value::Null);
                if !self.started {
                    self.id = completion_id(str_of(message, "id"));
                }
                self.usage
                    .update(message.get("usage").unwrap_or(&Value::Null));
                self.start(out);
            }
            "content_block_start" => self.on_block_start(&payload, out),
            "content_block_delta" => self.on_block_delta(&payload, out),
            "content_block_stop" => self.block = ReadBlock::Plain,
            "message_delta" => {
                self.usage
                    .update(payload.get("usage").unwrap_or(&Value::Null));
                let stop = payload.get("delta").and_then(|d| str_of(d, "stop_reason"));
                if let Some(stop) = stop {
                    self.send_finish(finish_reason(stop), out);
                }
            }
            "message_stop" => self.end(out),
            "error" => {
                let error = payload.get("error").unwrap_or(&Value::Null);
                let kind = openai_error_type(str_of(error, "type").unwrap_or(""));
                self.fail(kind, &error_text(error), out);
            }
            // ping, and event types added later.
            _ => {}
        }
    }

    /// The upstream stream ended cleanly: finishes the answer.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.done {
            self.end(out);
        }
    }

    fn on_block_start(&mut self, payload: &Value, out: &mut BytesMut) {
        let block = payload.get("content_block").unwrap_or(&Value::Null);
        match str_of(block, "type") {
            Some("text") => {
                self.block = ReadBlock::Plain;
                if let Some(text) = str_of(block, "text").filter(|t| !t.is_empty()) {
                    self.send(json!({"content": text}), out);
                }
            }
            Some("thinking") => {
                self.block = ReadBlock::Plain;
                self.thinking_blocks += 1;
                if let Some(text) = str_of(block, "thinking").filter(|t| !t.is_empty()) {
                    self.send(json!({"reasoning_content": text}), out);
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
        self.send(json!({"tool_calls": [call]}), out);
    }

    fn on_block_delta(&mut self, payload: &Value, out: &mut BytesMut) {
        let delta = payload.get("delta").unwrap_or(&Value::Null);
        match (str_of(delta, "type"), self.block) {
            (_, ReadBlock::Skipped) => {}
            (Some("text_delta"), _) => {
                if let Some(text) = str_of(delta, "text").filter(|t| !t.is_empty()) {
                    self.send(json!({"content": text}), out);
                }
            }
            (Some("thinking_delta"), _) => {
                if let Some(text) = str_of(delta, "thinking").filter(|t| !t.is_empty()) {
                    self.send(json!({"reasoning_content": text}), out);
                }
            }
            (Some("signature_delta"), _) => {
                let signature = str_of(delta, "signature").filter(|s| !s.is_empty());
                // Only a lone thinking block's signature matches the
                // reasoning text the client gathers.
                match signature.filter(|_| self.thinking_blocks == 1) {
                    Some(signature) => {
                        self.send(json!({"reasoning_signature": signature}), out);
                        self.signature = Some(signature.to_string());
                    }
                    None => self.signature = None,
                }
            }
            (Some("input_json_delta"), ReadBlock::Tool(index)) => {
                if let Some(piece) = str_of(delta, "partial_json").filter(|p| !p.is_empty()) {
                    let call = json!({"index": index, "function": {"arguments": piece}});
                    self.send(json!({"tool_calls": [call]}), out);
                }
            }
            // citations_delta and the like have no chat form.
            _ => {}
        }
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

    /// The first chunk, with the role.
    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let chunk = self.chunk(json!({"role": "assistant", "content": ""}), None);
        push_event(out, None, &chunk);
    }

    fn send(&mut self, delta: Value, out: &mut BytesMut) {
        self.start(out);
        push_event(out, None, &self.chunk(delta, None));
    }

    fn send_finish(&mut self, reason: &str, out: &mut BytesMut) {
        if self.finish_sent {
            return;
        }
        self.start(out);
        self.finish_sent = true;
        push_event(out, None, &self.chunk(json!({}), Some(reason)));
    }

    /// The finish chunk if not yet sent, the usage chunk if asked for,
    /// then `[DONE]`.
    fn end(&mut self, out: &mut BytesMut) {
        let reason = if self.tools > 0 { "tool_calls" } else { "stop" };
        self.send_finish(reason, out);
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage.to_chat(),
            });
            push_event(out, None, &chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// A chat-style error payload; the stream ends there.
    fn fail(&mut self, kind: &str, message: &str, out: &mut BytesMut) {
        let payload =
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
        push_event(out, None, &payload);
        self.done = true;
    }
}

#[cfg(test)]
mod tests;
