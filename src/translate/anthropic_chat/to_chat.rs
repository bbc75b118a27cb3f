//! Anthropic Messages request → Chat Completions request.

use serde_json::{json, Value};

use crate::translate::Untranslatable;

use super::common::*;

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
pub(super) fn reasoning_effort_of(request: &Object) -> Option<&'static str> {
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
pub(super) fn anthropic_output_schema(request: &Object) -> Option<Value> {
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

pub(super) fn anthropic_messages_to_chat(request: &Object) -> Result<Vec<Value>, Untranslatable> {
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
            Some("system") => chat.push(anthropic_system_message_to_chat(message, i)?),
            _ => {
                return Err(Untranslatable::new(
                    format!("messages[{i}].role"),
                    "must be user, assistant or system",
                ))
            }
        }
    }
    Ok(chat)
}

/// A `system` message among the messages (Anthropic's mid-conversation
/// system messages, which Claude Code sends to models it does not know):
/// chat takes a system message anywhere, so it stays one, its text blocks
/// joined as the system prompt's are.
fn anthropic_system_message_to_chat(message: &Value, i: usize) -> Result<Value, Untranslatable> {
    let content = message.get("content").unwrap_or(&Value::Null);
    let text = anthropic_system_text(content).map_err(|_| {
        Untranslatable::new(
            format!("messages[{i}].content"),
            "a system message must be text",
        )
    })?;
    Ok(json!({"role": "system", "content": text}))
}

/// The system prompt, a string or text blocks, as one string. Not
/// [`chat_text_content`](crate::translate::shared::chat_text_content): the
/// field is no chat message, its blocks join with a blank line, and a
/// value other than a string, blocks or null is refused.
pub(super) fn anthropic_system_text(system: &Value) -> Result<String, Untranslatable> {
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
pub(super) fn anthropic_user_to_chat(
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
pub(super) fn simplify_parts(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && str_of(&parts[0], "type") == Some("text") {
        return parts.swap_remove(0)["text"].take();
    }
    Value::Array(parts)
}

pub(super) fn anthropic_image_to_chat(block: &Value, field: &str) -> Result<Value, Untranslatable> {
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
pub(super) fn anthropic_document_to_chat(
    block: &Value,
    field: &str,
) -> Result<Value, Untranslatable> {
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
pub(super) fn anthropic_tool_result_to_chat(
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

pub(super) fn anthropic_assistant_to_chat(
    message: &Value,
    i: usize,
) -> Result<Value, Untranslatable> {
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
pub(super) fn anthropic_tools_to_chat(
    request: &Object,
    chat: &mut Object,
) -> Result<(), Untranslatable> {
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
