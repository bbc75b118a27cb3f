//! Chat Completions request → Gemini generateContent request.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::translate::shared::{chat_stop_sequences, chat_text_content, refuse_chat_only_fields};
use crate::translate::Untranslatable;

use super::common::*;

/// OpenAI Chat request JSON → Gemini `generateContent` request JSON. The
/// model and streaming go in the upstream path, not the body.
pub fn chat_request_to_gemini(body: &[u8]) -> Result<Vec<u8>, Untranslatable> {
    let request = parse_request(body)?;
    refuse_chat_only_fields(&request, "Gemini")?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages", "must be an array"))?;
    let (system, contents) = Turns::default().read(messages)?;
    let mut gemini = Object::new();
    gemini.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        let parts: Vec<Value> = system.into_iter().map(|t| json!({"text": t})).collect();
        gemini.insert("systemInstruction".into(), json!({"parts": parts}));
    }
    let config = generation_config(&request)?;
    if !config.is_empty() {
        gemini.insert("generationConfig".into(), Value::Object(config));
    }
    tools_to_gemini(&request, &mut gemini)?;
    Ok(to_bytes(&Value::Object(gemini)))
}

/// Walks the messages into Gemini contents, remembering each tool call's
/// function name: Gemini's `functionResponse` names the function, a chat
/// tool message only the call's id.
#[derive(Default)]
struct Turns {
    names: HashMap<String, String>,
    contents: Vec<(&'static str, Vec<Value>)>,
}

impl Turns {
    fn read(mut self, messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), Untranslatable> {
        let mut system = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let (role, parts) = match str_of(message, "role") {
                Some("system" | "developer") => {
                    let text = chat_text_content(message, i, "system content must be text")?;
                    if !text.is_empty() {
                        system.push(text);
                    }
                    continue;
                }
                Some("user") => ("user", user_parts(message, i)?),
                Some("assistant") => ("model", self.model_parts(message, i)?),
                Some("tool") => ("user", vec![self.function_response(message, i)?]),
                _ => {
                    return Err(Untranslatable::new(
                        format!("messages[{i}].role"),
                        "must be system, developer, user, assistant or tool",
                    ))
                }
            };
            if parts.is_empty() {
                // Gemini refuses a content without parts.
                continue;
            }
            // Gemini wants turns to alternate: same-role messages merge.
            match self.contents.last_mut() {
                Some((last, merged)) if *last == role => merged.extend(parts),
                _ => self.contents.push((role, parts)),
            }
        }
        let contents = self
            .contents
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect();
        Ok((system, contents))
    }

    /// An assistant message: text, then function calls with the
    /// `thoughtSignature` their ids carried back. Its reasoning text is
    /// not sent: Gemini reads only the signatures.
    fn model_parts(&mut self, message: &Value, i: usize) -> Result<Vec<Value>, Untranslatable> {
        let mut parts = Vec::new();
        match message.get("content") {
            Some(Value::String(text)) if !text.is_empty() => parts.push(json!({"text": text})),
            Some(Value::Array(items)) => {
                for (j, item) in items.iter().enumerate() {
                    let text = match str_of(item, "type") {
                        Some("text") => str_of(item, "text"),
                        Some("refusal") => str_of(item, "refusal"),
                        _ => {
                            return Err(Untranslatable::new(
                                format!("messages[{i}].content[{j}].type"),
                                "assistant content must be text",
                            ))
                        }
                    };
                    if let Some(text) = text.filter(|t| !t.is_empty()) {
                        parts.push(json!({"text": text}));
                    }
                }
            }
            _ => {}
        }
        let calls = message.get("tool_calls").and_then(Value::as_array);
        for (j, call) in calls.into_iter().flatten().enumerate() {
            let function = call.get("function").unwrap_or(&Value::Null);
            let name = str_of(function, "name").unwrap_or("");
            let arguments = str_of(function, "arguments").unwrap_or("");
            let args = arguments_object(arguments).ok_or_else(|| {
                Untranslatable::new(
                    format!("messages[{i}].tool_calls[{j}].function.arguments"),
                    "must be a JSON object",
                )
            })?;
            let full_id = str_of(call, "id").unwrap_or("");
            let (id, signature) = split_signature(full_id);
            self.names.insert(full_id.to_string(), name.to_string());
            self.names.insert(id.to_string(), name.to_string());
            let mut part = json!({"functionCall": {"name": name, "args": args}});
            if let Some(signature) = signature {
                part["thoughtSignature"] = json!(signature);
            }
            parts.push(part);
        }
        Ok(parts)
    }

    /// A tool message as a `functionResponse` naming the function its id
    /// was a call of.
    fn function_response(&self, message: &Value, i: usize) -> Result<Value, Untranslatable> {
        let id = str_of(message, "tool_call_id").unwrap_or("");
        let name = self
            .names
            .get(id)
            .or_else(|| self.names.get(split_signature(id).0))
            .ok_or_else(|| {
                Untranslatable::new(
                    format!("messages[{i}].tool_call_id"),
                    "names no tool call of an earlier assistant message",
                )
            })?;
        let text = chat_text_content(message, i, "a Gemini function response carries text only")?;
        Ok(json!({"functionResponse": {"name": name, "response": response_object(&text)}}))
    }
}

/// Tool output as the object Gemini's `response` must be: a JSON object
/// as it is, anything else as `{"result": text}`.
fn response_object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({"result": text}),
    }
}

fn user_parts(message: &Value, i: usize) -> Result<Vec<Value>, Untranslatable> {
    let items = match message.get("content") {
        Some(Value::String(text)) if text.is_empty() => return Ok(Vec::new()),
        Some(Value::String(text)) => return Ok(vec![json!({"text": text})]),
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => return Ok(Vec::new()),
        _ => {
            return Err(Untranslatable::new(
                format!("messages[{i}].content"),
                "must be a string or an array of parts",
            ))
        }
    };
    let mut parts = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let field = format!("messages[{i}].content[{j}]");
        let part = match str_of(item, "type") {
            Some("text") => json!({"text": str_of(item, "text").unwrap_or("")}),
            Some("image_url") => image_to_gemini(item, &field)?,
            Some("file") => file_to_gemini(item, &field)?,
            Some("input_audio") => {
                let audio = item.get("input_audio").unwrap_or(&Value::Null);
                let mime = match str_of(audio, "format") {
                    Some("mp3") => "audio/mp3",
                    _ => "audio/wav",
                };
                json!({"inlineData": {"mimeType": mime, "data": str_of(audio, "data").unwrap_or("")}})
            }
            _ => {
                return Err(Untranslatable::new(
                    format!("{field}.type"),
                    "not expressible for Gemini",
                ))
            }
        };
        parts.push(part);
    }
    Ok(parts)
}

/// A `data:` URL split into its media type and base64 payload.
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("data:")?.split_once(";base64,")
}

/// A data URL as inline bytes; an http(s) URL as `fileData`, with the
/// media type its extension names (Gemini fetches public URLs itself).
fn image_to_gemini(item: &Value, field: &str) -> Result<Value, Untranslatable> {
    let image = item.get("image_url").unwrap_or(&Value::Null);
    // Some clients send the URL as a bare string.
    let url = image
        .as_str()
        .or_else(|| str_of(image, "url"))
        .unwrap_or("");
    if url.starts_with("data:") {
        let (mime, data) = split_data_url(url).ok_or_else(|| {
            Untranslatable::new(
                format!("{field}.image_url.url"),
                "a data: URL must be base64",
            )
        })?;
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let mime = match extension.as_deref() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    };
    Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
}

/// Inline file data (PDFs, images) as inline bytes; a `file_id` names a
/// file Gemini does not have.
fn file_to_gemini(item: &Value, field: &str) -> Result<Value, Untranslatable> {
    let file = item.get("file").unwrap_or(&Value::Null);
    match split_data_url(str_of(file, "file_data").unwrap_or("")) {
        Some((mime, data)) => Ok(json!({"inlineData": {"mimeType": mime, "data": data}})),
        None => Err(Untranslatable::new(
            format!("{field}.file"),
            "only inline file data is expressible for Gemini",
        )),
    }
}

/// Sampling, limits, stops, JSON output and reasoning as
/// `generationConfig`.
fn generation_config(request: &Object) -> Result<Object, Untranslatable> {
    let mut config = Object::new();
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| request.get(*key).and_then(Value::as_u64));
    if let Some(max) = max {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    let renamed = [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ];
    for (openai, gemini) in renamed {
        if let Some(value) = request.get(openai).filter(|v| v.is_number()) {
            config.insert(gemini.into(), value.clone());
        }
    }
    if let Some(stops) = chat_stop_sequences(request) {
        config.insert("stopSequences".into(), stops);
    }
    let format = request.get("response_format").filter(|f| !f.is_null());
    match format.map(|f| (str_of(f, "type"), f)) {
        None | Some((Some("text"), _)) => {}
        Some((Some("json_object"), _)) => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some((Some("json_schema"), format)) => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .ok_or_else(|| {
                    Untranslatable::new("response_format.json_schema.schema", "missing")
                })?;
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseJsonSchema".into(), schema.clone());
        }
        Some(_) => {
            return Err(Untranslatable::new(
                "response_format.type",
                "not expressible for Gemini",
            ))
        }
    }
    if let Some(thinking) = thinking_config(request) {
        config.insert("thinkingConfig".into(), thinking);
    }
    Ok(config)
}

/// `reasoning_effort` as a thinking budget (which Gemini 2.5 and 3 both
/// read), with the thoughts' summary asked for so that they come back as
/// `reasoning_content`; `none` turns thinking off.
fn thinking_config(request: &Object) -> Option<Value> {
    let budget = match request.get("reasoning_effort").and_then(Value::as_str)? {
        "none" => return Some(json!({"thinkingBudget": 0})),
        "minimal" => 512,
        "low" => 1024,
        "medium" => 8192,
        "high" | "xhigh" => 24576,
        _ => return None,
    };
    Some(json!({"thinkingBudget": budget, "includeThoughts": true}))
}

/// `tools` and `tool_choice` into the Gemini request.
fn tools_to_gemini(request: &Object, gemini: &mut Object) -> Result<(), Untranslatable> {
    let tools = request.get("tools").and_then(Value::as_array);
    let Some(tools) = tools.filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let mut declarations = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if str_of(tool, "type").is_some_and(|kind| kind != "function") {
            return Err(Untranslatable::new(
                format!("tools[{i}].type"),
                "only function tools are expressible for Gemini",
            ));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let mut declaration = json!({"name": str_of(function, "name").unwrap_or("")});
        if let Some(description) = function.get("description").filter(|d| d.is_string()) {
            declaration["description"] = description.clone();
        }
        // JSON Schema as the client wrote it: `parametersJsonSchema` takes
        // what the OpenAPI-style `parameters` would refuse.
        if let Some(parameters) = function.get("parameters").filter(|p| p.is_object()) {
            declaration["parametersJsonSchema"] = parameters.clone();
        }
        declarations.push(declaration);
    }
    let (mode, allowed) = match request.get("tool_choice") {
        None | Some(Value::Null) => (None, Vec::new()),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => (Some("AUTO"), Vec::new()),
            "required" => (Some("ANY"), Vec::new()),
            "none" => (Some("NONE"), Vec::new()),
            _ => return Err(Untranslatable::new("tool_choice", "unknown tool_choice")),
        },
        Some(choice) => named_choice(choice)?,
    };
    if mode == Some("AUTO") && !allowed.is_empty() {
        // Gemini restricts names under ANY only: offering just the allowed
        // functions means the same.
        declarations.retain(|d| allowed.iter().any(|name| d["name"] == name.as_str()));
    }
    gemini.insert(
        "tools".into(),
        json!([{"functionDeclarations": declarations}]),
    );
    if let Some(mode) = mode {
        let mut calling = json!({"mode": mode});
        if mode == "ANY" && !allowed.is_empty() {
            calling["allowedFunctionNames"] = json!(allowed);
        }
        gemini.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": calling}),
        );
    }
    Ok(())
}

/// A `tool_choice` object: one function, or `allowed_tools`.
fn named_choice(choice: &Value) -> Result<(Option<&'static str>, Vec<String>), Untranslatable> {
    let name_of = |tool: &Value| {
        tool.get("function")
            .and_then(|f| str_of(f, "name"))
            .or_else(|| str_of(tool, "name"))
            .map(str::to_string)
    };
    match str_of(choice, "type") {
        Some("function") => Ok((Some("ANY"), name_of(choice).into_iter().collect())),
        Some("allowed_tools") => {
            let allowed = choice.get("allowed_tools").unwrap_or(&Value::Null);
            let names = allowed
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(name_of)
                .collect();
            match str_of(allowed, "mode") {
                Some("required") => Ok((Some("ANY"), names)),
                _ => Ok((Some("AUTO"), names)),
            }
        }
        _ => Err(Untranslatable::new(
            "tool_choice",
            "not expressible for Gemini",
        )),
    }
}
