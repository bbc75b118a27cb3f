//! Whole (non-stream) answers, both ways.

use serde_json::{json, Value};

use super::common::*;

/// A Gemini answer, for a chat client. `model` is the client-facing model
/// name to report.
pub fn gemini_response_to_chat(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let answer = parse_answer(body)?;
    if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
        return Err(error_text(error));
    }
    let id = completion_id(str_of(&answer, "responseId"));
    let answer_id = id.strip_prefix("chatcmpl-").unwrap_or(&id).to_string();
    let candidate = answer
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let parts = candidate
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        if let Some(call) = part.get("functionCall") {
            let id = call_id(
                call,
                &answer_id,
                calls.len(),
                str_of(part, "thoughtSignature"),
            );
            let arguments = call.get("args").cloned().unwrap_or_else(|| json!({}));
            calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": str_of(call, "name").unwrap_or(""), "arguments": arguments.to_string()},
            }));
        } else if let Some(piece) = str_of(part, "text") {
            match part.get("thought").and_then(Value::as_bool) {
                Some(true) => reasoning.push_str(piece),
                _ => text.push_str(piece),
            }
        }
    }
    // No candidate at all: the prompt itself was blocked.
    let finish = match candidate.and_then(|c| str_of(c, "finishReason")) {
        Some(reason) => finish_reason(reason, !calls.is_empty()),
        None if candidate.is_none() => "content_filter",
        None => finish_reason("STOP", !calls.is_empty()),
    };
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if text.is_empty() && !calls.is_empty() {
        message["content"] = Value::Null;
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let usage = Tokens::from_gemini(answer.get("usageMetadata").unwrap_or(&Value::Null));
    let chat = json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage.to_chat(),
    });
    Ok(to_bytes(&chat))
}

/// A chat answer, for a Gemini client. `model` is the client-facing model
/// name to report.
pub fn chat_response_to_gemini(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let answer = parse_answer(body)?;
    let (choice, message) = chat_choice(&answer)?;
    let mut parts = Vec::new();
    let reasoning = chat_reasoning(message);
    if let Some(reasoning) = reasoning.filter(|r| !r.is_empty()) {
        parts.push(json!({"text": reasoning, "thought": true}));
    }
    match message.get("content") {
        Some(Value::String(text)) if !text.is_empty() => parts.push(json!({"text": text})),
        Some(Value::Array(items)) => parts.extend(
            items
                .iter()
                .filter_map(|p| str_of(p, "text"))
                .map(|text| json!({"text": text})),
        ),
        _ => {}
    }
    if let Some(refusal) = str_of(message, "refusal").filter(|r| !r.is_empty()) {
        parts.push(json!({"text": refusal}));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        parts.push(function_call_part(
            str_of(call, "id").unwrap_or(""),
            str_of(function, "name").unwrap_or(""),
            str_of(function, "arguments").unwrap_or(""),
        ));
    }
    if parts.is_empty() {
        // What Gemini sends for an empty answer: SDKs read `text` as "".
        parts.push(json!({"text": ""}));
    }
    let usage = Tokens::from_chat(answer.get("usage").unwrap_or(&Value::Null));
    let gemini = json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": gemini_finish_reason(str_of(choice, "finish_reason")),
            "index": 0,
        }],
        "usageMetadata": usage.to_gemini(),
        "modelVersion": model,
        "responseId": response_id(str_of(&answer, "id")),
    });
    Ok(to_bytes(&gemini))
}
