//! Gemini generateContent request → Chat Completions request.

use serde_json::{json, Value};

use crate::translate::Untranslatable;

use super::common::*;

/// What clients (Gemini CLI) put in `thoughtSignature` for a call that came
/// without one, so that Gemini 3 skips its check.
const SKIP_SIGNATURE_VALIDATOR: &str = "skip_thought_signature_validator";

/// Gemini `generateContent` request JSON → OpenAI Chat Completions request
/// JSON. `model` is the upstream model name; `stream` comes from the
/// client's path (`:streamGenerateContent`), as Gemini bodies do not say.
pub fn gemini_request_to_chat(
    body: &[u8],
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, Untranslatable> {
    let request = parse_request(body)?;
    if request.get("cachedContent").is_some_and(|c| !c.is_null()) {
        return Err(Untranslatable::new(
            "cachedContent",
            "names a cache kept by Google, which a chat host cannot read",
        ));
    }
    let mut chat = Object::new();
    chat.insert("model".into(), json!(model));
    let mut messages = Vec::new();
    if let Some(system) = request.get("systemInstruction").filter(|s| !s.is_null()) {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("contents", "must be an array"))?;
    History::default().read(contents, &mut messages)?;
    chat.insert("messages".into(), Value::Array(messages));
    let config = request.get("generationConfig").unwrap_or(&Value::Null);
    generation_config_to_chat(config, &mut chat)?;
    tools_to_chat(&request, &mut chat)?;
    if stream {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(to_bytes(&Value::Object(chat)))
}

/// `systemInstruction`'s text parts as one string.
fn system_text(system: &Value) -> Result<String, Untranslatable> {
    let parts = match system {
        Value::String(text) => return Ok(text.clone()),
        _ => system.get("parts").and_then(Value::as_array),
    };
    let mut texts = Vec::new();
    for (j, part) in parts.into_iter().flatten().enumerate() {
        match str_of(part, "text") {
            Some(text) => texts.push(text),
            None => {
                return Err(Untranslatable::new(
                    format!("systemInstruction.parts[{j}]"),
                    "system parts must be text",
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// A function call of the model turn before, waiting for its response.
struct PendingCall {
    /// The chat id, signature included, that the tool message must repeat.
    id: String,
    name: String,
    answered: bool,
}

/// Walks the contents; remembers the last model turn's calls so that the
/// `functionResponse` parts after it find their ids (Gemini matches them
/// by name and order, chat by id).
#[derive(Default)]
struct History {
    pending: Vec<PendingCall>,
}

impl History {
    fn read(mut self, contents: &[Value], messages: &mut Vec<Value>) -> Result<(), Untranslatable> {
        for (i, content) in contents.iter().enumerate() {
            match str_of(content, "role").unwrap_or("user") {
                "model" => {
                    if i + 1 == contents.len() {
                        return Err(Untranslatable::new(
                            format!("contents[{i}].role"),
                            "a last model turn cannot be continued by a chat host",
                        ));
                    }
                    messages.push(self.model_turn(content, i)?);
                }
                // `function` is the role older clients give function responses.
                "user" | "function" => self.user_turn(content, i, messages)?,
                _ => {
                    return Err(Untranslatable::new(
                        format!("contents[{i}].role"),
                        "must be user or model",
                    ))
                }
            }
        }
        Ok(())
    }

    fn model_turn(&mut self, content: &Value, i: usize) -> Result<Value, Untranslatable> {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        self.pending.clear();
        for (j, part) in parts_of(content).iter().enumerate() {
            if let Some(call) = part.get("functionCall") {
                let name = str_of(call, "name").unwrap_or("");
                // Ours, when the client gave none: unique in the request,
                // and the same each time the history is sent.
                let own = format!("call_{i}_{j}");
                let id = match str_of(call, "id").filter(|id| !id.is_empty()) {
                    Some(id) => id,
                    None => own.as_str(),
                };
                // Gemini's documented placeholder for "no signature" is not
                // worth carrying: it only lengthens the id a chat host sees.
                let signature = str_of(part, "thoughtSignature")
                    .filter(|s| !s.is_empty() && *s != SKIP_SIGNATURE_VALIDATOR);
                let id = id_with_signature(id, signature);
                let arguments = call.get("args").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()},
                }));
                self.pending.push(PendingCall {
                    id,
                    name: name.to_string(),
                    answered: false,
                });
            } else if let Some(piece) = str_of(part, "text") {
                let thought = part.get("thought").and_then(Value::as_bool) == Some(true);
                if thought {
                    reasoning.push_str(piece);
                } else {
                    text.push_str(piece);
                }
            } else {
                return Err(Untranslatable::new(
                    format!("contents[{i}].parts[{j}]"),
                    "a chat assistant message holds text and tool calls only",
                ));
            }
        }
        let mut message = Object::new();
        message.insert("role".into(), json!("assistant"));
        // Chat wants null content beside tool calls, a string otherwise.
        let content = match text.is_empty() && !calls.is_empty() {
            true => Value::Null,
            false => json!(text),
        };
        message.insert("content".into(), content);
        if !reasoning.is_empty() {
            message.insert("reasoning_content".into(), json!(reasoning));
        }
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        Ok(Value::Object(message))
    }

    /// A user turn: its function responses become tool messages (chat
    /// wants them right after the assistant's calls), the rest one user
    /// message after them.
    fn user_turn(
        &mut self,
        content: &Value,
        i: usize,
        messages: &mut Vec<Value>,
    ) -> Result<(), Untranslatable> {
        let mut parts = Vec::new();
        for (j, part) in parts_of(content).iter().enumerate() {
            let field = format!("contents[{i}].parts[{j}]");
            if let Some(response) = part.get("functionResponse") {
                messages.push(self.tool_message(response, &field)?);
            } else if let Some(text) = str_of(part, "text") {
                parts.push(json!({"type": "text", "text": text}));
            } else if let Some(data) = part.get("inlineData") {
                parts.push(inline_data_to_chat(data, &field)?);
            } else if let Some(file) = part.get("fileData") {
                parts.push(file_data_to_chat(file, &field)?);
            } else {
                return Err(Untranslatable::new(field, "not expressible in chat"));
            }
        }
        if parts.len() == 1 && str_of(&parts[0], "type") == Some("text") {
            // A lone text part as a plain string, which every host accepts.
            let text = parts.swap_remove(0)["text"].take();
            messages.push(json!({"role": "user", "content": text}));
        } else if !parts.is_empty() {
            messages.push(json!({"role": "user", "content": parts}));
        }
        Ok(())
    }

    fn tool_message(&mut self, response: &Value, field: &str) -> Result<Value, Untranslatable> {
        if response.get("parts").is_some_and(|p| !p.is_null()) {
            return Err(Untranslatable::new(
                format!("{field}.functionResponse.parts"),
                "a chat tool message carries text only",
            ));
        }
        let name = str_of(response, "name").unwrap_or("");
        let by_id = str_of(response, "id").filter(|id| !id.is_empty());
        let call = self.pending.iter_mut().find(|call| {
            !call.answered
                && match by_id {
                    Some(id) => split_signature(&call.id).0 == id,
                    None => call.name == name,
                }
        });
        let id = match (call, by_id) {
            (Some(call), _) => {
                call.answered = true;
                call.id.clone()
            }
            // An id of the client's own that no call of the turn before has:
            // passed on, for the host to judge.
            (None, Some(id)) => id.to_string(),
            (None, None) => {
                return Err(Untranslatable::new(
                    format!("{field}.functionResponse.name"),
                    "answers no function call of the model turn before it",
                ))
            }
        };
        let result = response.get("response").unwrap_or(&Value::Null);
        Ok(json!({"role": "tool", "tool_call_id": id, "content": response_text(result)}))
    }
}

/// A part list, empty when missing.
fn parts_of(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A function's `response` object as tool message text: `{"output":
/// "<text>"}` (the key Google documents for a function's output, which
/// Gemini CLI sends) and `{"result": "<text>"}` (what the other direction
/// makes of plain text, and the genai SDKs' automatic calls) as their
/// text, anything else (`{"error": ...}` too) as its JSON.
fn response_text(response: &Value) -> String {
    match response.as_object() {
        Some(object) if object.len() == 1 => {
            match object.get("output").or_else(|| object.get("result")) {
                Some(Value::String(text)) => text.clone(),
                _ => response.to_string(),
            }
        }
        Some(_) => response.to_string(),
        None if response.is_null() => String::new(),
        None => response.to_string(),
    }
}

/// Inline bytes: images as data URLs, PDFs as chat `file` parts, WAV and
/// MP3 as `input_audio`; other media have no chat form.
fn inline_data_to_chat(data: &Value, field: &str) -> Result<Value, Untranslatable> {
    let mime = str_of(data, "mimeType").unwrap_or("");
    let bytes = str_of(data, "data").unwrap_or("");
    let format = match mime {
        m if m.starts_with("image/") => {
            let url = format!("data:{m};base64,{bytes}");
            return Ok(json!({"type": "image_url", "image_url": {"url": url}}));
        }
        "application/pdf" => {
            return Ok(json!({"type": "file", "file": {
                "filename": "document.pdf",
                "file_data": format!("data:application/pdf;base64,{bytes}"),
            }}))
        }
        "audio/wav" | "audio/x-wav" => "wav",
        "audio/mp3" | "audio/mpeg" => "mp3",
        _ => {
            return Err(Untranslatable::new(
                format!("{field}.inlineData.mimeType"),
                format!("{mime} has no chat form"),
            ))
        }
    };
    Ok(json!({"type": "input_audio", "input_audio": {"data": bytes, "format": format}}))
}

/// A file by URI: a public http(s) image becomes an image URL; files kept
/// by Google (the Files API, `gs://`) and other media a chat host cannot
/// fetch.
fn file_data_to_chat(file: &Value, field: &str) -> Result<Value, Untranslatable> {
    let uri = str_of(file, "fileUri").unwrap_or("");
    let mime = str_of(file, "mimeType").unwrap_or("image/");
    let public = (uri.starts_with("https://") || uri.starts_with("http://"))
        && !uri.contains("generativelanguage.googleapis.com/");
    if public && mime.starts_with("image/") {
        return Ok(json!({"type": "image_url", "image_url": {"url": uri}}));
    }
    Err(Untranslatable::new(
        format!("{field}.fileData.fileUri"),
        "only public http(s) image URLs are expressible in chat",
    ))
}

/// `generationConfig` into the chat request.
fn generation_config_to_chat(config: &Value, chat: &mut Object) -> Result<(), Untranslatable> {
    let field = |name: &str| format!("generationConfig.{name}");
    let candidates = config.get("candidateCount").and_then(Value::as_u64);
    if candidates.is_some_and(|n| n > 1) {
        return Err(Untranslatable::new(
            field("candidateCount"),
            "the translation answers with one candidate",
        ));
    }
    for name in ["responseLogprobs", "logprobs", "speechConfig"] {
        let set = match config.get(name) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(_) => true,
        };
        if set {
            return Err(Untranslatable::new(field(name), "not expressible in chat"));
        }
    }
    let modalities = config.get("responseModalities").and_then(Value::as_array);
    if modalities.is_some_and(|m| m.iter().any(|m| m.as_str() != Some("TEXT"))) {
        return Err(Untranslatable::new(
            field("responseModalities"),
            "the translation answers with text only",
        ));
    }
    let effort = reasoning_effort_of(config.get("thinkingConfig").unwrap_or(&Value::Null));
    if let Some(max) = config.get("maxOutputTokens").and_then(Value::as_u64) {
        // OpenAI's reasoning models refuse `max_tokens`; many other hosts
        // know only it.
        let key = match effort {
            Some(_) => "max_completion_tokens",
            None => "max_tokens",
        };
        chat.insert(key.into(), json!(max));
    }
    if let Some(effort) = effort {
        chat.insert("reasoning_effort".into(), json!(effort));
    }
    let renamed = [
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
        ("seed", "seed"),
    ];
    for (gemini, openai) in renamed {
        if let Some(value) = config.get(gemini).filter(|v| v.is_number()) {
            chat.insert(openai.into(), value.clone());
        }
    }
    let stops = config.get("stopSequences").and_then(Value::as_array);
    if let Some(stops) = stops.filter(|s| !s.is_empty()) {
        chat.insert("stop".into(), Value::Array(stops.clone()));
    }
    if let Some(format) = response_format_of(config)? {
        chat.insert("response_format".into(), format);
    }
    Ok(())
}

/// `thinkingConfig` as a chat `reasoning_effort`: `thinkingLevel` as it
/// is, a `thinkingBudget` by size (`low` up to 4096, `medium` up to
/// 16384, else `high`); a budget of 0 or -1 (dynamic) leaves the host's
/// default.
fn reasoning_effort_of(thinking: &Value) -> Option<&'static str> {
    let level = str_of(thinking, "thinkingLevel").map(str::to_ascii_lowercase);
    let by_level = match level.as_deref() {
        Some("minimal") => Some("minimal"),
        Some("low") => Some("low"),
        Some("medium") => Some("medium"),
        Some("high") => Some("high"),
        _ => None,
    };
    if by_level.is_some() {
        return by_level;
    }
    match thinking.get("thinkingBudget").and_then(Value::as_i64)? {
        budget if budget <= 0 => None,
        1..=4096 => Some("low"),
        4097..=16384 => Some("medium"),
        _ => Some("high"),
    }
}

/// `responseMimeType` with `responseSchema` / `responseJsonSchema` as a
/// chat `response_format`.
fn response_format_of(config: &Value) -> Result<Option<Value>, Untranslatable> {
    let schema = match (
        config.get("responseJsonSchema"),
        config.get("responseSchema"),
    ) {
        (Some(schema), _) if !schema.is_null() => Some(schema.clone()),
        (_, Some(schema)) if !schema.is_null() => Some(json_schema_of(schema)),
        _ => None,
    };
    if let Some(schema) = schema {
        return Ok(Some(json!({
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema},
        })));
    }
    match str_of(config, "responseMimeType") {
        None | Some("text/plain") => Ok(None),
        Some("application/json") => Ok(Some(json!({"type": "json_object"}))),
        Some(_) => Err(Untranslatable::new(
            "generationConfig.responseMimeType",
            "chat answers in text or JSON only",
        )),
    }
}

/// `tools` and `toolConfig` into the chat request.
fn tools_to_chat(request: &Object, chat: &mut Object) -> Result<(), Untranslatable> {
    let mut functions = Vec::new();
    let tools = request.get("tools").and_then(Value::as_array);
    for (i, tool) in tools.into_iter().flatten().enumerate() {
        let Some(tool) = tool.as_object() else {
            continue;
        };
        for (key, value) in tool {
            if key != "functionDeclarations" {
                return Err(Untranslatable::new(
                    format!("tools[{i}].{key}"),
                    "only function declarations are expressible in chat",
                ));
            }
            for declaration in value.as_array().into_iter().flatten() {
                functions.push(function_to_chat(declaration));
            }
        }
    }
    if functions.is_empty() {
        // Without tools a tool choice means nothing, and chat hosts refuse it.
        return Ok(());
    }
    let config = request
        .get("toolConfig")
        .and_then(|c| c.get("functionCallingConfig"))
        .unwrap_or(&Value::Null);
    let allowed: Vec<&str> = config
        .get("allowedFunctionNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let choice = match str_of(config, "mode") {
        None | Some("MODE_UNSPECIFIED" | "AUTO") => None,
        Some("NONE") => Some(json!("none")),
        Some("ANY") => match allowed.as_slice() {
            [] => Some(json!("required")),
            [name] => Some(json!({"type": "function", "function": {"name": name}})),
            // One of several: offering only those and requiring a call
            // means the same, and every chat host understands it.
            names => {
                functions.retain(|f| names.contains(&f["function"]["name"].as_str().unwrap_or("")));
                Some(json!("required"))
            }
        },
        Some(_) => {
            return Err(Untranslatable::new(
                "toolConfig.functionCallingConfig.mode",
                "not expressible in chat",
            ))
        }
    };
    chat.insert("tools".into(), Value::Array(functions));
    if let Some(choice) = choice {
        chat.insert("tool_choice".into(), choice);
    }
    Ok(())
}

/// A function declaration as a chat function tool; its OpenAPI-style
/// `parameters` become JSON Schema, `parametersJsonSchema` already is.
fn function_to_chat(declaration: &Value) -> Value {
    let schema = match (
        declaration.get("parametersJsonSchema"),
        declaration.get("parameters"),
    ) {
        (Some(schema), _) if !schema.is_null() => schema.clone(),
        (_, Some(schema)) if !schema.is_null() => json_schema_of(schema),
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut function = json!({
        "name": str_of(declaration, "name").unwrap_or(""),
        "parameters": schema,
    });
    if let Some(description) = declaration.get("description").filter(|d| d.is_string()) {
        function["description"] = description.clone();
    }
    json!({"type": "function", "function": function})
}
