//! A Responses request as a Chat Completions request.

use serde_json::{json, Map, Value};

use super::common::{chat_tool_name, LOCAL_SHELL};
use crate::translate::Untranslatable;

/// OpenAI Responses request JSON -> Chat Completions request JSON; `model`
/// is the upstream model name. Streams get `"stream": true` and
/// `"stream_options": {"include_usage": true}`. What is dropped and what is
/// refused: see the module documentation.
pub fn responses_request_to_chat(body: &[u8], model: &str) -> Result<Vec<u8>, Untranslatable> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::new("body", format!("not JSON: {e}")))?;
    let Some(request) = request.as_object() else {
        return Err(Untranslatable::new("body", "not a JSON object"));
    };
    refuse_server_side_features(request)?;

    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    chat.insert("messages".into(), Value::Array(messages(request)?));
    add_tools(request, &mut chat)?;
    for key in ["temperature", "top_p", "user"] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(max) = request.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    if let Some(format) = request.get("text").and_then(|t| t.get("format")) {
        if let Some(response_format) = response_format(format)? {
            chat.insert("response_format".into(), response_format);
        }
    }
    if let Some(effort) = request
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|v| v.is_string())
    {
        chat.insert("reasoning_effort".into(), effort.clone());
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&chat).map_err(|e| Untranslatable::new("body", e.to_string()))
}

/// Fields that need state or machinery only OpenAI has: dropping them would
/// answer a different question than the one asked.
fn refuse_server_side_features(request: &Map<String, Value>) -> Result<(), Untranslatable> {
    let set = |k: &str| request.get(k).is_some_and(|v| !v.is_null());
    let refusals = [
        (
            "previous_response_id",
            set("previous_response_id"),
            "the gateway keeps no responses; send the whole conversation in `input`",
        ),
        (
            "conversation",
            set("conversation"),
            "the gateway keeps no conversations; send the whole conversation in `input`",
        ),
        (
            "prompt",
            set("prompt"),
            "stored prompt templates exist only on OpenAI",
        ),
        (
            "background",
            request.get("background") == Some(&json!(true)),
            "background responses need a response store",
        ),
        (
            "max_tool_calls",
            set("max_tool_calls"),
            "Chat Completions cannot cap the number of tool calls",
        ),
        (
            "top_logprobs",
            request
                .get("top_logprobs")
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 0),
            "log probabilities are not translated back",
        ),
    ];
    match refusals.into_iter().find(|(_, refused, _)| *refused) {
        Some((field, _, why)) => Err(Untranslatable::new(field, why)),
        None => Ok(()),
    }
}

/// The chat messages: `instructions` as the system message, then `input`.
fn messages(request: &Map<String, Value>) -> Result<Vec<Value>, Untranslatable> {
    let mut conversation = Conversation::default();
    match request.get("instructions") {
        Some(Value::String(text)) if !text.is_empty() => conversation
            .messages
            .push(json!({"role": "system", "content": text})),
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => {
            return Err(Untranslatable::new(
                "instructions",
                "only text instructions can become a system message",
            ))
        }
    }
    match request.get("input") {
        Some(Value::String(text)) => conversation
            .messages
            .push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                conversation.push_item(i, item)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(Untranslatable::new(
                "input",
                "expected a string or a list of items",
            ))
        }
    }
    conversation.flush_tool_images();
    Ok(conversation.messages)
}

/// The chat messages built so far, and what waits for the next message.
#[derive(Default)]
struct Conversation {
    messages: Vec<Value>,
    /// Reasoning text for the next assistant message.
    pending_reasoning: Option<String>,
    /// Images from tool outputs, sent as one user message after the run of
    /// tool messages (a chat `tool` message holds text only).
    tool_images: Vec<Value>,
}

impl Conversation {
    fn push_item(&mut self, i: usize, item: &Value) -> Result<(), Untranslatable> {
        let kind = match item.get("type").and_then(Value::as_str) {
            Some(kind) => kind,
            // An "easy" input message: {role, content} without a type.
            None if item.get("role").is_some() => "message",
            None => return Err(Untranslatable::new(format!("input[{i}].type"), "missing")),
        };
        if !kind.ends_with("_output") {
            self.flush_tool_images();
        }
        let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
        match kind {
            "message" => self.message(i, item),
            "function_call" => {
                let name =
                    chat_tool_name(item.get("namespace").and_then(Value::as_str), text("name"));
                self.tool_call(text("call_id"), &name, text("arguments").to_string());
                Ok(())
            }
            "custom_tool_call" => {
                let name =
                    chat_tool_name(item.get("namespace").and_then(Value::as_str), text("name"));
                let arguments = json!({ "input": text("input") }).to_string();
                self.tool_call(text("call_id"), &name, arguments);
                Ok(())
            }
            "local_shell_call" => {
                let call_id = item.get("call_id").or_else(|| item.get("id"));
                let call_id = call_id.and_then(Value::as_str).unwrap_or_default();
                self.tool_call(call_id, LOCAL_SHELL, local_shell_arguments(item));
                Ok(())
            }
            "function_call_output" | "custom_tool_call_output" => {
                self.tool_output(i, text("call_id"), item.get("output"))
            }
            // The Responses API names the call by `id` on this one.
            "local_shell_call_output" => self.tool_output(i, text("id"), item.get("output")),
            "reasoning" => {
                self.reasoning(item);
                Ok(())
            }
            "web_search_call" => Ok(()),
            other => Err(Untranslatable::new(
                format!("input[{i}].type"),
                format!("`{other}` items have no Chat Completions form"),
            )),
        }
    }

    fn message(&mut self, i: usize, item: &Value) -> Result<(), Untranslatable> {
        let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = item.get("content").unwrap_or(&Value::Null);
        let field = format!("input[{i}].content");
        match role {
            "user" => {
                let content = user_content(&field, content)?;
                self.messages
                    .push(json!({"role": "user", "content": content}));
            }
            "system" | "developer" => {
                let text = text_only(&field, content)?;
                self.messages
                    .push(json!({"role": "system", "content": text}));
            }
            "assistant" => {
                let (text, refusal) = assistant_content(&field, content)?;
                let mut message = json!({"role": "assistant", "content": text});
                if let Some(refusal) = refusal {
                    message["refusal"] = json!(refusal);
                }
                self.push_assistant(message);
            }
            _ => {
                return Err(Untranslatable::new(
                    format!("input[{i}].role"),
                    format!("unknown role `{role}`"),
                ))
            }
        }
        Ok(())
    }

    fn push_assistant(&mut self, mut message: Value) {
        if let Some(reasoning) = self.pending_reasoning.take() {
            message["reasoning_content"] = json!(reasoning);
        }
        self.messages.push(message);
    }

    /// A call joins the assistant message just before it (its text or its
    /// other calls), so parallel calls stay one assistant turn.
    fn tool_call(&mut self, call_id: &str, name: &str, arguments: String) {
        let call = json!({
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        });
        let reasoning = self.pending_reasoning.take();
        match self.messages.last_mut() {
            Some(last) if last["role"] == "assistant" => {
                match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    Some(calls) => calls.push(call),
                    None => last["tool_calls"] = json!([call]),
                }
                if let Some(more) = reasoning {
                    let text = match last.get("reasoning_content").and_then(Value::as_str) {
                        Some(earlier) => format!("{earlier}\n\n{more}"),
                        None => more,
                    };
                    last["reasoning_content"] = json!(text);
                }
            }
            _ => {
                self.pending_reasoning = reasoning;
                self.push_assistant(
                    json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                );
            }
        }
    }

    fn tool_output(
        &mut self,
        i: usize,
        call_id: &str,
        output: Option<&Value>,
    ) -> Result<(), Untranslatable> {
        let content = match output {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    let field = format!("input[{i}].output[{j}]");
                    match chat_part(&field, part)? {
                        ChatPart::Text(t) => text.push_str(&t),
                        ChatPart::Image(image) => self.tool_images.push(image),
                    }
                }
                text
            }
            None | Some(Value::Null) => String::new(),
            Some(other) => other.to_string(),
        };
        self.messages
            .push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
        Ok(())
    }

    fn flush_tool_images(&mut self) {
        if !self.tool_images.is_empty() {
            let images = std::mem::take(&mut self.tool_images);
            self.messages
                .push(json!({"role": "user", "content": images}));
        }
    }

    /// Reasoning with text (full `content` text, else the summary) goes to
    /// the next assistant message; opaque reasoning is dropped.
    fn reasoning(&mut self, item: &Value) {
        let texts = |key: &str| -> Vec<&str> {
            let parts = item.get(key).and_then(Value::as_array);
            parts
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        };
        let content = texts("content");
        let text = if content.is_empty() {
            texts("summary").join("\n\n")
        } else {
            content.concat()
        };
        if !text.is_empty() {
            self.pending_reasoning = Some(match self.pending_reasoning.take() {
                Some(earlier) => format!("{earlier}\n\n{text}"),
                None => text,
            });
        }
    }
}

/// The arguments of the `local_shell` function from a `local_shell_call`
/// item's `exec` action.
fn local_shell_arguments(item: &Value) -> String {
    let action = item.get("action").unwrap_or(&Value::Null);
    let mut args = json!({ "command": action.get("command").cloned().unwrap_or(json!([])) });
    if let Some(dir) = action.get("working_directory").filter(|v| !v.is_null()) {
        args["workdir"] = dir.clone();
    }
    if let Some(ms) = action.get("timeout_ms").filter(|v| !v.is_null()) {
        args["timeout_ms"] = ms.clone();
    }
    args.to_string()
}

enum ChatPart {
    Text(String),
    Image(Value),
}

/// One Responses content part as a chat part; `field` names the part.
fn chat_part(field: &str, part: &Value) -> Result<ChatPart, Untranslatable> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "input_text" | "output_text" | "text" => Ok(ChatPart::Text(
            part.get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )),
        "input_image" => {
            let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                let why = if part.get("file_id").is_some_and(|v| !v.is_null()) {
                    "images by file id live in OpenAI's file store; send the image as a URL or data URL"
                } else {
                    "an image needs an image_url"
                };
                return Err(Untranslatable::new(format!("{field}.file_id"), why));
            };
            let mut image = json!({ "url": url });
            if let Some(detail) = part.get("detail").filter(|v| v.is_string()) {
                image["detail"] = detail.clone();
            }
            Ok(ChatPart::Image(
                json!({"type": "image_url", "image_url": image}),
            ))
        }
        _ => Err(Untranslatable::new(
            format!("{field}.type"),
            format!("`{kind}` content is not translated to Chat Completions"),
        )),
    }
}

/// A user message's content: a string when it is text only (what every
/// host accepts), else the list of chat parts.
fn user_content(field: &str, content: &Value) -> Result<Value, Untranslatable> {
    let Value::Array(parts) = content else {
        return Ok(json!(content.as_str().unwrap_or_default()));
    };
    let mut chat_parts = Vec::with_capacity(parts.len());
    let mut has_image = false;
    for (j, part) in parts.iter().enumerate() {
        match chat_part(&format!("{field}[{j}]"), part)? {
            ChatPart::Text(text) => chat_parts.push(json!({"type": "text", "text": text})),
            ChatPart::Image(image) => {
                has_image = true;
                chat_parts.push(image);
            }
        }
    }
    if has_image {
        return Ok(Value::Array(chat_parts));
    }
    let text: String = chat_parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    Ok(json!(text))
}

/// System and developer content: text only.
fn text_only(field: &str, content: &Value) -> Result<String, Untranslatable> {
    let Value::Array(parts) = content else {
        return Ok(content.as_str().unwrap_or_default().to_string());
    };
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match chat_part(&format!("{field}[{j}]"), part)? {
            ChatPart::Text(t) => text.push_str(&t),
            ChatPart::Image(_) => {
                return Err(Untranslatable::new(
                    format!("{field}[{j}].type"),
                    "a system message holds text only",
                ))
            }
        }
    }
    Ok(text)
}

/// An assistant message's text and refusal.
fn assistant_content(
    field: &str,
    content: &Value,
) -> Result<(String, Option<String>), Untranslatable> {
    let Value::Array(parts) = content else {
        return Ok((content.as_str().unwrap_or_default().to_string(), None));
    };
    let mut text = String::new();
    let mut refusal: Option<String> = None;
    for (j, part) in parts.iter().enumerate() {
        if part.get("type").and_then(Value::as_str) == Some("refusal") {
            let r = part
                .get("refusal")
                .and_then(Value::as_str)
                .unwrap_or_default();
            refusal.get_or_insert_with(String::new).push_str(r);
            continue;
        }
        match chat_part(&format!("{field}[{j}]"), part)? {
            ChatPart::Text(t) => text.push_str(&t),
            ChatPart::Image(_) => {
                return Err(Untranslatable::new(
                    format!("{field}[{j}].type"),
                    "an assistant message holds text only",
                ))
            }
        }
    }
    Ok((text, refusal))
}

/// `tools`, `tool_choice` and `parallel_tool_calls`; the latter two only
/// when a tool is left (OpenAI refuses them without tools).
fn add_tools(
    request: &Map<String, Value>,
    chat: &mut Map<String, Value>,
) -> Result<(), Untranslatable> {
    let mut tools = Vec::new();
    let listed = request.get("tools").and_then(Value::as_array);
    for (i, tool) in listed.into_iter().flatten().enumerate() {
        chat_tools(&format!("tools[{i}]"), tool, None, &mut tools)?;
    }
    let choice = request.get("tool_choice").filter(|v| !v.is_null());
    let choice = match choice {
        Some(choice) => chat_tool_choice(choice, !tools.is_empty())?,
        None => None,
    };
    if tools.is_empty() {
        return Ok(());
    }
    chat.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        chat.insert("tool_choice".into(), choice);
    }
    if let Some(parallel) = request
        .get("parallel_tool_calls")
        .filter(|v| v.is_boolean())
    {
        chat.insert("parallel_tool_calls".into(), parallel.clone());
    }
    Ok(())
}

/// One Responses tool as chat function tools (none for a dropped web
/// search, several for a namespace).
fn chat_tools(
    field: &str,
    tool: &Value,
    namespace: Option<&str>,
    into: &mut Vec<Value>,
) -> Result<(), Untranslatable> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
    let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
    let description = tool.get("description").and_then(Value::as_str);
    match kind {
        "function" => {
            let mut function = json!({ "name": chat_tool_name(namespace, name) });
            if let Some(d) = description {
                function["description"] = json!(d);
            }
            if let Some(p) = tool.get("parameters").filter(|v| !v.is_null()) {
                function["parameters"] = p.clone();
            }
            // `strict: false` is the default; hosts that do not know the
            // field are spared it.
            if tool.get("strict") == Some(&json!(true)) {
                function["strict"] = json!(true);
            }
            into.push(json!({"type": "function", "function": function}));
        }
        "custom" => into.push(custom_tool_as_function(namespace, name, description, tool)),
        "local_shell" if namespace.is_none() => into.push(local_shell_function()),
        "namespace" if namespace.is_none() => {
            let members = tool.get("tools").and_then(Value::as_array);
            for (j, member) in members.into_iter().flatten().enumerate() {
                chat_tools(&format!("{field}.tools[{j}]"), member, Some(name), into)?;
            }
        }
        k if k.starts_with("web_search") && namespace.is_none() => {}
        _ => {
            return Err(Untranslatable::new(
                format!("{field}.type"),
                format!("`{kind}` tools run on OpenAI's side; Chat Completions has only functions"),
            ))
        }
    }
    Ok(())
}

/// A freeform tool as a function with one string argument, `input`. Its
/// grammar, if any, is quoted in the description: the upstream cannot
/// enforce it, but the model can follow it.
fn custom_tool_as_function(
    namespace: Option<&str>,
    name: &str,
    description: Option<&str>,
    tool: &Value,
) -> Value {
    let mut description = description.unwrap_or_default().to_string();
    let format = tool.get("format").unwrap_or(&Value::Null);
    if format.get("type").and_then(Value::as_str) == Some("grammar") {
        let syntax = format
            .get("syntax")
            .and_then(Value::as_str)
            .unwrap_or("lark");
        let definition = format
            .get("definition")
            .and_then(Value::as_str)
            .unwrap_or_default();
        description.push_str(&format!(
            "\n\nThe `input` argument must follow this {syntax} grammar:\n{definition}"
        ));
    }
    json!({"type": "function", "function": {
        "name": chat_tool_name(namespace, name),
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string", "description": "The raw input of the tool."}},
            "required": ["input"],
            "additionalProperties": false,
        },
    }})
}

fn local_shell_function() -> Value {
    json!({"type": "function", "function": {
        "name": LOCAL_SHELL,
        "description": "Runs a command on the user's machine and returns its output.",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "array", "items": {"type": "string"},
                            "description": "The program and its arguments, e.g. [\"bash\", \"-lc\", \"ls\"]."},
                "workdir": {"type": "string", "description": "The working directory."},
                "timeout_ms": {"type": "integer", "description": "A time limit in milliseconds."},
            },
            "required": ["command"],
        },
    }})
}

/// `tool_choice`: the modes pass as they are, a named function or custom
/// tool becomes a named chat function; anything naming a hosted tool is
/// refused, as is `required` when no tool is left to call.
fn chat_tool_choice(choice: &Value, has_tools: bool) -> Result<Option<Value>, Untranslatable> {
    if let Some(mode) = choice.as_str() {
        return match mode {
            "required" if !has_tools => Err(Untranslatable::new(
                "tool_choice",
                "`required` with no tool the upstream can call",
            )),
            "auto" | "none" | "required" => Ok(has_tools.then(|| json!(mode))),
            _ => Err(Untranslatable::new(
                "tool_choice",
                format!("unknown mode `{mode}`"),
            )),
        };
    }
    let kind = choice
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "function" | "custom" if has_tools => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let name = chat_tool_name(choice.get("namespace").and_then(Value::as_str), name);
            Ok(Some(
                json!({"type": "function", "function": {"name": name}}),
            ))
        }
        _ => Err(Untranslatable::new(
            "tool_choice.type",
            format!("`{kind}` cannot be chosen on Chat Completions"),
        )),
    }
}

/// `text.format` -> `response_format`.
fn response_format(format: &Value) -> Result<Option<Value>, Untranslatable> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = json!({
                "name": format.get("name").and_then(Value::as_str).unwrap_or("response"),
                "schema": format.get("schema").cloned().unwrap_or(json!({})),
            });
            for key in ["strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema[key] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(Untranslatable::new(
            "text.format.type",
            format!("`{other}` has no Chat Completions response_format"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(request: Value) -> Value {
        let body = responses_request_to_chat(request.to_string().as_bytes(), "up-model").unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn refused(request: Value) -> Untranslatable {
        responses_request_to_chat(request.to_string().as_bytes(), "m").unwrap_err()
    }

    #[test]
    fn string_input_with_instructions_and_sampling() {
        let c = chat(json!({
            "model": "client-model", "instructions": "Be terse.", "input": "Hi",
            "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "user": "u1",
            "store": false, "metadata": {"a": "b"}, "truncation": "auto",
            "prompt_cache_key": "k", "reasoning": {"effort": "high", "summary": "auto"},
        }));
        assert_eq!(
            c,
            json!({
                "model": "up-model",
                "messages": [{"role": "system", "content": "Be terse."},
                             {"role": "user", "content": "Hi"}],
                "max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "user": "u1",
                "reasoning_effort": "high",
            })
        );
    }

    #[test]
    fn streams_ask_for_usage() {
        let c = chat(json!({"input": "Hi", "stream": true}));
        assert_eq!(c["stream"], true);
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
    }

    /// A Codex tool-call turn: developer and user messages, the model's
    /// reasoning, text and two parallel calls, and their outputs.
    #[test]
    fn codex_history_becomes_one_assistant_turn_per_call_group() {
        let c = chat(json!({
            "model": "gpt-5-codex",
            "instructions": "You are Codex.",
            "input": [
                {"type": "message", "role": "developer",
                 "content": [{"type": "input_text", "text": "<permissions>"}]},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "List files"}]},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Use ls."}],
                 "encrypted_content": null},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Listing."}]},
                {"type": "function_call", "call_id": "call_a", "name": "shell",
                 "arguments": "{\"command\":[\"ls\"]}"},
                {"type": "function_call", "call_id": "call_b", "name": "shell",
                 "arguments": "{\"command\":[\"pwd\"]}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "a.txt"},
                {"type": "function_call_output", "call_id": "call_b", "output": "/w"},
            ],
            "tools": [{"type": "function", "name": "shell", "description": "Runs a command",
                       "strict": false, "parameters": {"type": "object", "properties": {}}}],
            "tool_choice": "auto", "parallel_tool_calls": true,
            "store": false, "stream": true, "include": ["reasoning.encrypted_content"],
        }));
        let messages = c["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 6);
        assert_eq!(
            messages[1],
            json!({"role": "system", "content": "<permissions>"})
        );
        assert_eq!(
            messages[2],
            json!({"role": "user", "content": "List files"})
        );
        assert_eq!(
            messages[3],
            json!({"role": "assistant", "content": "Listing.", "reasoning_content": "Use ls.",
                   "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "shell", "arguments": "{\"command\":[\"pwd\"]}"}}]})
        );
        assert_eq!(
            messages[4],
            json!({"role": "tool", "tool_call_id": "call_a", "content": "a.txt"})
        );
        assert_eq!(messages[5]["tool_call_id"], "call_b");
        assert_eq!(
            c["tools"],
            json!([{"type": "function", "function": {"name": "shell",
                    "description": "Runs a command",
                    "parameters": {"type": "object", "properties": {}}}}])
        );
        assert_eq!(c["tool_choice"], "auto");
        assert_eq!(c["parallel_tool_calls"], true);
    }

    #[test]
    fn calls_without_text_get_their_own_assistant_message() {
        let c = chat(json!({"input": [
            {"role": "user", "content": "go"},
            {"type": "reasoning", "summary": [], "encrypted_content": "opaque"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ], "tools": [{"type": "function", "name": "f"}]}));
        let assistant = &c["messages"][1];
        assert_eq!(assistant["content"], Value::Null);
        assert!(assistant.get("reasoning_content").is_none());
        assert_eq!(assistant["tool_calls"][0]["id"], "c1");
    }

    #[test]
    fn images_pass_as_urls_and_file_ids_are_refused() {
        let c = chat(json!({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]}]}));
        assert_eq!(
            c["messages"][0]["content"],
            json!([{"type": "text", "text": "What is this?"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                       "detail": "low"}}])
        );
        let e = refused(json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "file-1"}]}]}));
        assert_eq!(e.field, "input[0].content[0].file_id");
        let e = refused(json!({"input": [{"role": "user", "content": [
            {"type": "input_file", "file_data": "x"}]}]}));
        assert_eq!(e.field, "input[0].content[0].type");
    }

    #[test]
    fn tool_output_images_follow_the_tool_messages() {
        let c = chat(json!({"input": [
            {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "the image:"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"role": "user", "content": "describe it"},
        ]}));
        let m = c["messages"].as_array().unwrap();
        assert_eq!(
            m[1],
            json!({"role": "tool", "tool_call_id": "c1", "content": "the image:"})
        );
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"][0]["type"], "image_url");
        assert_eq!(m[3], json!({"role": "user", "content": "describe it"}));
    }

    /// What Codex declares: functions, the freeform `apply_patch`, MCP
    /// tools in a namespace and the cached web search.
    #[test]
    fn codex_tools_translate_and_web_search_is_dropped() {
        let c = chat(json!({"input": "hi", "tools": [
            {"type": "function", "name": "exec_command", "strict": false,
             "parameters": {"type": "object"}},
            {"type": "custom", "name": "apply_patch", "description": "Edit files.",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}},
            {"type": "namespace", "name": "mcp__docs__", "description": "Docs",
             "tools": [{"type": "function", "name": "search", "strict": true,
                        "parameters": {"type": "object"}}]},
            {"type": "web_search", "external_web_access": false},
        ], "tool_choice": {"type": "custom", "name": "apply_patch"}}));
        let tools = c["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 3);
        let patch = &tools[1]["function"];
        assert_eq!(patch["name"], "apply_patch");
        assert_eq!(patch["parameters"]["required"], json!(["input"]));
        let description = patch["description"].as_str().unwrap();
        assert!(description.starts_with("Edit files."));
        assert!(description.ends_with("lark grammar:\nstart: patch"));
        assert_eq!(tools[2]["function"]["name"], "mcp__docs__search");
        assert_eq!(tools[2]["function"]["strict"], true);
        assert_eq!(
            c["tool_choice"],
            json!({"type": "function", "function": {"name": "apply_patch"}})
        );
    }

    #[test]
    fn custom_and_shell_calls_round_trip_as_functions() {
        let c = chat(json!({"input": [
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
             "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"},
            {"type": "local_shell_call", "call_id": "c2", "status": "completed",
             "action": {"type": "exec", "command": ["ls"], "working_directory": "/w",
                        "timeout_ms": null, "env": {}}},
            {"type": "function_call_output", "call_id": "c2", "output": "a.txt"},
            {"type": "function_call", "call_id": "c3", "namespace": "mcp__docs__",
             "name": "search", "arguments": "{}"},
        ], "tools": [{"type": "local_shell"}]}));
        let m = &c["messages"];
        assert_eq!(
            m[0]["tool_calls"][0]["function"],
            json!({"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"})
        );
        assert_eq!(
            m[1],
            json!({"role": "tool", "tool_call_id": "c1", "content": "Done"})
        );
        assert_eq!(
            m[2]["tool_calls"][0]["function"],
            json!({"name": "local_shell", "arguments": "{\"command\":[\"ls\"],\"workdir\":\"/w\"}"})
        );
        assert_eq!(
            m[4]["tool_calls"][0]["function"]["name"],
            "mcp__docs__search"
        );
        assert_eq!(c["tools"][0]["function"]["name"], "local_shell");
    }

    #[test]
    fn hosted_tools_and_server_state_are_refused_by_name() {
        let e = refused(json!({"input": "x", "tools": [
            {"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": []}]}));
        assert_eq!(e.field, "tools[1].type");
        let e = refused(json!({"input": "x", "previous_response_id": "resp_1"}));
        assert_eq!(e.field, "previous_response_id");
        let e = refused(json!({"input": [{"type": "item_reference", "id": "msg_1"}]}));
        assert_eq!(e.field, "input[0].type");
        let e = refused(json!({"input": "x", "tools": [{"type": "web_search"}],
                               "tool_choice": {"type": "web_search"}}));
        assert_eq!(e.field, "tool_choice.type");
        let e = refused(json!({"input": "x", "tools": [{"type": "web_search"}],
                               "tool_choice": "required"}));
        assert_eq!(e.field, "tool_choice");
        let e = refused(json!({"input": "x", "text": {"format": {"type": "grammar"}}}));
        assert_eq!(e.field, "text.format.type");
    }

    #[test]
    fn no_tool_left_means_no_tool_settings() {
        let c = chat(
            json!({"input": "x", "tools": [{"type": "web_search_preview"}],
                            "tool_choice": "auto", "parallel_tool_calls": false}),
        );
        assert!(c.get("tools").is_none());
        assert!(c.get("tool_choice").is_none());
        assert!(c.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn json_formats_become_response_formats() {
        let c = chat(json!({"input": "x", "text": {"format": {
            "type": "json_schema", "name": "answer", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
            "verbosity": "low"}}));
        assert_eq!(
            c["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
                   "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})
        );
        let c = chat(json!({"input": "x", "text": {"format": {"type": "json_object"}}}));
        assert_eq!(c["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn assistant_refusals_and_string_contents() {
        let c = chat(json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                         {"type": "input_text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"role": "system", "content": "s"},
        ]}));
        let m = &c["messages"];
        assert_eq!(m[0], json!({"role": "user", "content": "ab"}));
        assert_eq!(
            m[1],
            json!({"role": "assistant", "content": "", "refusal": "No."})
        );
        assert_eq!(m[2], json!({"role": "system", "content": "s"}));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert_eq!(
            responses_request_to_chat(b"[1]", "m").unwrap_err().field,
            "body"
        );
        assert_eq!(
            responses_request_to_chat(b"{", "m").unwrap_err().field,
            "body"
        );
        assert_eq!(refused(json!({"input": 5})).field, "input");
        assert_eq!(
            refused(json!({"input": [{"role": "tool", "content": "x"}]})).field,
            "input[0].role"
        );
    }
}
