//! Whole (non-stream) answers, both ways.

use serde_json::{json, Value};

use super::common::*;

// ---------------------------------------------------------------------
// Whole answers.

/// A chat answer, for an Anthropic client. `model` is the client-facing
/// model name to report.
pub fn chat_response_to_anthropic(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let answer = parse_answer(body)?;
    let (choice, message) = chat_choice(&answer)?;

    let mut content = Vec::new();
    let reasoning = chat_reasoning(message);
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
