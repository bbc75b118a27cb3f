//! What the request and answer sides share: the request echo and tool
//! origins, ids, the `response` object, usage and output items.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// The fields of a Responses request that its `response` object repeats.
const ECHOED_FIELDS: &[&str] = &[
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "prompt_cache_key",
    "reasoning",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
];

/// What the answer side needs from the client's Responses request: the
/// settings a `response` object repeats, and which chat function names stand
/// for non-function tools, so that their calls go back as the items the
/// client declared. The default echoes nothing and treats every call as a
/// plain `function_call`.
#[derive(Debug, Clone, Default)]
pub struct RequestEcho {
    fields: Map<String, Value>,
    /// Chat function name -> the tool it stands for; plain functions are
    /// not listed.
    origins: HashMap<String, ToolOrigin>,
}

/// A non-function tool (or a namespaced function) behind a chat function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ToolOrigin {
    pub(super) kind: ToolKind,
    pub(super) name: String,
    pub(super) namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToolKind {
    Function,
    Custom,
    LocalShell,
}

impl RequestEcho {
    /// Reads the client's request; a body that is not a JSON object echoes
    /// nothing (the request side refuses it anyway).
    pub fn from_request(body: &[u8]) -> Self {
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let fields = ECHOED_FIELDS
            .iter()
            .filter_map(|&k| {
                let v = request.get(k).filter(|v| !v.is_null())?;
                Some((k.to_string(), v.clone()))
            })
            .collect();
        let mut origins = HashMap::new();
        let tools = request.get("tools").and_then(Value::as_array);
        for tool in tools.into_iter().flatten() {
            collect_origins(tool, None, &mut origins);
        }
        RequestEcho { fields, origins }
    }

    pub(super) fn origin(&self, chat_name: &str) -> Option<&ToolOrigin> {
        self.origins.get(chat_name)
    }
}

fn collect_origins(tool: &Value, namespace: Option<&str>, into: &mut HashMap<String, ToolOrigin>) {
    let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
    let kind = match tool.get("type").and_then(Value::as_str) {
        Some("function") if namespace.is_some() => ToolKind::Function,
        Some("custom") => ToolKind::Custom,
        Some("local_shell") => ToolKind::LocalShell,
        Some("namespace") => {
            let members = tool.get("tools").and_then(Value::as_array);
            for member in members.into_iter().flatten() {
                collect_origins(member, Some(name), into);
            }
            return;
        }
        _ => return,
    };
    let name = if kind == ToolKind::LocalShell {
        LOCAL_SHELL
    } else {
        name
    };
    into.insert(
        chat_tool_name(namespace, name),
        ToolOrigin {
            kind,
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
        },
    );
}

/// The chat function name of a Responses tool: a namespace's members are
/// flattened to `{namespace}{name}`, the flat form Codex itself uses for
/// MCP tools (`mcp__server__` + `tool`).
pub(super) fn chat_tool_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}{name}"),
        None => name.to_string(),
    }
}

/// The chat function that stands for the `local_shell` tool.
pub(super) const LOCAL_SHELL: &str = "local_shell";

/// Identifiers of one answer: the `response` id and its items' ids, derived
/// from the upstream's completion id so that they are stable and traceable.
#[derive(Debug, Clone)]
pub(super) struct AnswerIds {
    base: String,
}

impl AnswerIds {
    pub(super) fn from_chat(chat: &Value) -> Self {
        let id = chat.get("id").and_then(Value::as_str).unwrap_or_default();
        let base = id.strip_prefix("chatcmpl-").unwrap_or(id);
        let base = if base.is_empty() {
            format!("{:016x}", rand::random::<u64>())
        } else {
            base.to_string()
        };
        AnswerIds { base }
    }

    pub(super) fn response(&self) -> String {
        format!("resp_{}", self.base)
    }

    pub(super) fn item(&self, prefix: &str, output_index: usize) -> String {
        format!("{prefix}_{}_{output_index}", self.base)
    }

    /// A call id for an upstream call that came without one.
    pub(super) fn call(&self, chat_index: u64) -> String {
        format!("call_{}_{chat_index}", self.base)
    }
}

/// `created` of a chat answer, or now.
pub(super) fn created_at(chat: &Value) -> u64 {
    chat.get("created")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| crate::clock::now_ms() / 1000)
}

/// The `response` object around `output`, with the request's settings
/// repeated where the echo has them and the API's defaults elsewhere.
pub(super) struct ResponseHead<'a> {
    pub(super) id: &'a str,
    pub(super) created_at: u64,
    pub(super) model: &'a str,
}

pub(super) fn response_object(
    head: &ResponseHead<'_>,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
    echo: &RequestEcho,
) -> Value {
    let mut response = json!({
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "metadata": {},
        "model": head.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
    });
    if let Value::Object(map) = &mut response {
        for (k, v) in &echo.fields {
            map.insert(k.clone(), v.clone());
        }
    }
    response
}

/// How a chat `finish_reason` ends a response: its status and, when
/// incomplete, the reason.
pub(super) fn outcome(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

pub(super) fn set_incomplete(response: &mut Value, reason: Option<&str>) {
    if let Some(reason) = reason {
        response["incomplete_details"] = json!({ "reason": reason });
    }
}

/// Chat `usage` -> Responses `usage`. Cached tokens are read from
/// `prompt_tokens_details.cached_tokens`, or DeepSeek's
/// `prompt_cache_hit_tokens`; `cache_write_tokens`, which the Responses
/// usage always has, from `prompt_tokens_details.cache_write_tokens`.
pub(super) fn responses_usage(usage: &Value) -> Value {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(usage.get("prompt_tokens"));
    let output = n(usage.get("completion_tokens"));
    let cached = usage
        .pointer("/prompt_tokens_details/cached_tokens")
        .or_else(|| usage.get("prompt_cache_hit_tokens"));
    let cache_write = usage.pointer("/prompt_tokens_details/cache_write_tokens");
    let reasoning = usage.pointer("/completion_tokens_details/reasoning_tokens");
    let total = usage
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(cached), "cache_write_tokens": n(cache_write)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(reasoning)},
        "total_tokens": total,
    })
}

/// The reasoning text of a chat message or delta: `reasoning_content`
/// (DeepSeek, vLLM, most hosts) or `reasoning` (OpenRouter, newer vLLM).
pub(super) fn reasoning_text(message: &Value) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| message.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

pub(super) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    })
}

pub(super) fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(super) fn reasoning_item(id: &str, text: &str) -> Value {
    json!({
        "id": id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}],
    })
}

/// One upstream tool call as the output item its tool calls for, with
/// `status` (`in_progress` while it streams, then `completed`).
pub(super) struct CallItem<'a> {
    pub(super) ids: &'a AnswerIds,
    pub(super) output_index: usize,
    pub(super) call_id: &'a str,
    pub(super) chat_name: &'a str,
    pub(super) arguments: &'a str,
}

impl CallItem<'_> {
    pub(super) fn to_item(&self, echo: &RequestEcho, status: &str) -> Value {
        let origin = echo.origin(self.chat_name);
        let special = match origin {
            Some(o) if o.kind == ToolKind::Custom => Some(self.custom(o)),
            Some(o) if o.kind == ToolKind::LocalShell => self.local_shell(status),
            _ => None,
        };
        special.unwrap_or_else(|| {
            self.function(origin.filter(|o| o.kind == ToolKind::Function), status)
        })
    }

    fn function(&self, origin: Option<&ToolOrigin>, status: &str) -> Value {
        let mut item = json!({
            "id": self.ids.item("fc", self.output_index),
            "type": "function_call",
            "status": status,
            "call_id": self.call_id,
            "name": origin.map_or(self.chat_name, |o| o.name.as_str()),
            "arguments": self.arguments,
        });
        if let Some(ns) = origin.and_then(|o| o.namespace.as_deref()) {
            item["namespace"] = json!(ns);
        }
        item
    }

    /// A freeform tool's call: the function's `input` argument, or the raw
    /// arguments when the model did not wrap its input in JSON.
    fn custom(&self, origin: &ToolOrigin) -> Value {
        let mut item = json!({
            "id": self.ids.item("ctc", self.output_index),
            "type": "custom_tool_call",
            "call_id": self.call_id,
            "name": origin.name,
            "input": custom_input(self.arguments),
        });
        if let Some(ns) = &origin.namespace {
            item["namespace"] = json!(ns);
        }
        item
    }

    /// A `local_shell` call, once its arguments parse (while they stream,
    /// an empty command); `None` sends it as a plain function call.
    fn local_shell(&self, status: &str) -> Option<Value> {
        let args: Value = if self.arguments.is_empty() {
            json!({"command": []})
        } else {
            serde_json::from_str(self.arguments).ok()?
        };
        let command = args.get("command").filter(|c| c.is_array())?;
        Some(json!({
            "id": self.ids.item("lsh", self.output_index),
            "type": "local_shell_call",
            "status": status,
            "call_id": self.call_id,
            "action": {
                "type": "exec",
                "command": command,
                "working_directory": args.get("workdir"),
                "timeout_ms": args.get("timeout_ms"),
                "env": {},
                "user": null,
            },
        }))
    }
}

fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(args)) => match args.get("input") {
            Some(Value::String(s)) => s.clone(),
            _ => arguments.to_string(),
        },
        _ => arguments.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_knows_custom_namespaced_and_shell_tools() {
        let echo = RequestEcho::from_request(
            br#"{"model":"m","instructions":"be brief","tool_choice":"auto","tools":[
                {"type":"function","name":"shell","parameters":{}},
                {"type":"custom","name":"apply_patch","format":{"type":"text"}},
                {"type":"local_shell"},
                {"type":"namespace","name":"mcp__docs__","tools":[
                    {"type":"function","name":"search","parameters":{}}]}]}"#,
        );
        assert_eq!(echo.origin("shell"), None);
        assert_eq!(echo.origin("apply_patch").unwrap().kind, ToolKind::Custom);
        assert_eq!(
            echo.origin("local_shell").unwrap().kind,
            ToolKind::LocalShell
        );
        let search = echo.origin("mcp__docs__search").unwrap();
        assert_eq!(search.name, "search");
        assert_eq!(search.namespace.as_deref(), Some("mcp__docs__"));
        assert_eq!(echo.fields["instructions"], "be brief");
        assert!(!echo.fields.contains_key("model"));
    }

    #[test]
    fn usage_maps_cached_and_reasoning_tokens() {
        let usage = responses_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 12}}));
        assert_eq!(
            usage,
            json!({"input_tokens": 100,
                   "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
                   "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12},
                   "total_tokens": 130})
        );
        let deepseek = responses_usage(&json!({
            "prompt_tokens": 10, "completion_tokens": 2, "prompt_cache_hit_tokens": 8}));
        assert_eq!(deepseek["input_tokens_details"]["cached_tokens"], 8);
        assert_eq!(deepseek["total_tokens"], 12);
    }

    #[test]
    fn calls_become_the_items_their_tools_declare() {
        let echo = RequestEcho::from_request(
            br#"{"tools":[{"type":"custom","name":"apply_patch"},{"type":"local_shell"}]}"#,
        );
        let ids = AnswerIds {
            base: "x".to_string(),
        };
        let call = |name: &'static str, arguments: &'static str| CallItem {
            ids: &ids,
            output_index: 1,
            call_id: "call_1",
            chat_name: name,
            arguments,
        };
        let patch =
            call("apply_patch", r#"{"input":"*** Begin Patch"}"#).to_item(&echo, "completed");
        assert_eq!(patch["type"], "custom_tool_call");
        assert_eq!(patch["input"], "*** Begin Patch");
        let raw = call("apply_patch", "*** Begin Patch").to_item(&echo, "completed");
        assert_eq!(raw["input"], "*** Begin Patch");
        let shell =
            call("local_shell", r#"{"command":["ls"],"workdir":"/w"}"#).to_item(&echo, "completed");
        assert_eq!(shell["type"], "local_shell_call");
        assert_eq!(shell["action"]["command"], json!(["ls"]));
        assert_eq!(shell["action"]["working_directory"], "/w");
        let broken = call("local_shell", "{").to_item(&echo, "completed");
        assert_eq!(broken["type"], "function_call");
        let plain = call("get_weather", "{}").to_item(&echo, "completed");
        assert_eq!(plain["type"], "function_call");
        assert_eq!(plain["id"], "fc_x_1");
        assert!(plain.get("namespace").is_none());
    }
}
