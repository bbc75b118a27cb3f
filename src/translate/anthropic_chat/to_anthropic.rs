//! Chat Completions request → Anthropic Messages request.

use serde_json::{json, Value};

use crate::translate::shared::{chat_stop_sequences, chat_text_content, refuse_chat_only_fields};
use crate::translate::Untranslatable;

use super::common::*;

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
    refuse_chat_only_fields(&request, "Anthropic")?;
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
    if let Some(stops) = chat_stop_sequences(&request) {
        anthropic.insert("stop_sequences".into(), stops);
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

/// `response_format`: a JSON schema for Anthropic's JSON output, nothing
/// for text, refused for schemaless JSON.
pub(super) fn chat_response_format_schema(
    request: &Object,
) -> Result<Option<Value>, Untranslatable> {
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
pub(super) fn thinking_for_effort(request: &Object, max_tokens: u64) -> Option<Value> {
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
pub(super) fn system_value(mut texts: Vec<String>) -> Value {
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
pub(super) fn chat_messages_to_anthropic(
    messages: &[Value],
) -> Result<(Vec<String>, Vec<Value>), Untranslatable> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let (role, blocks) = match str_of(message, "role") {
            Some("system" | "developer") => {
                let text = chat_text_content(message, i, "system content must be text")?;
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

pub(super) fn chat_user_blocks(message: &Value, i: usize) -> Result<Vec<Value>, Untranslatable> {
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
pub(super) fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (media_type, data) = rest.split_once(";base64,")?;
    Some((media_type, data))
}

pub(super) fn chat_image_to_anthropic(part: &Value, field: &str) -> Result<Value, Untranslatable> {
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
pub(super) fn chat_file_to_anthropic(part: &Value, field: &str) -> Result<Value, Untranslatable> {
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
pub(super) fn chat_assistant_blocks(
    message: &Value,
    i: usize,
) -> Result<Vec<Value>, Untranslatable> {
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
pub(super) fn restored_thinking(message: &Value) -> Vec<Value> {
    if let Some(blocks) = message.get("thinking_blocks").and_then(Value::as_array) {
        let signed = |b: &&Value| match str_of(b, "type") {
            Some("thinking") => str_of(b, "signature").is_some_and(|s| !s.is_empty()),
            Some("redacted_thinking") => b.get("data").is_some(),
            _ => false,
        };
        return blocks.iter().filter(signed).cloned().collect();
    }
    let text = chat_reasoning(message).unwrap_or("");
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
pub(super) fn chat_tool_result(message: &Value, i: usize) -> Result<Value, Untranslatable> {
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
pub(super) fn chat_tools_to_anthropic(
    request: &Object,
    anthropic: &mut Object,
) -> Result<(), Untranslatable> {
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
