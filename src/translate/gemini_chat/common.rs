//! What every direction shares: reasons, usage, ids, tool arguments, the
//! Gemini error statuses and the JSON Schema dialects.

use serde_json::{json, Value};

pub(super) use crate::translate::shared::{
    arguments_object, chat_cached_tokens, chat_choice, chat_reasoning, error_text,
    id_with_signature, now_secs, parse_answer, parse_request, random_suffix, split_signature,
    str_of, to_bytes, u64_of, Object,
};

// ---------------------------------------------------------------------
// Reasons.

/// Gemini `finishReason` → chat `finish_reason`. Gemini says `STOP` after
/// function calls too: the calls decide.
pub(super) fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if called_tools => "tool_calls",
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, ...: the model
        // stopped and chat has no closer word for it.
        _ => "stop",
    }
}

/// Chat `finish_reason` → Gemini `finishReason` (`STOP` after function
/// calls, as Gemini says it).
pub(super) fn gemini_finish_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "MAX_TOKENS",
        Some("content_filter") => "SAFETY",
        _ => "STOP",
    }
}

// ---------------------------------------------------------------------
// Usage.

/// Token counts in both dialects' terms: `prompt` includes `cached`,
/// `completion` includes `reasoning` (as OpenAI counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tokens {
    pub(super) prompt: u64,
    pub(super) cached: u64,
    pub(super) completion: u64,
    pub(super) reasoning: u64,
}

impl Tokens {
    /// Gemini `usageMetadata`: `promptTokenCount` includes the cached
    /// tokens; thoughts are counted apart from `candidatesTokenCount`; the
    /// prompt of built-in tools apart from the prompt.
    pub(super) fn from_gemini(usage: &Value) -> Self {
        let thoughts = u64_of(usage, "thoughtsTokenCount");
        Tokens {
            prompt: u64_of(usage, "promptTokenCount")
                .saturating_add(u64_of(usage, "toolUsePromptTokenCount")),
            cached: u64_of(usage, "cachedContentTokenCount"),
            completion: u64_of(usage, "candidatesTokenCount").saturating_add(thoughts),
            reasoning: thoughts,
        }
    }

    /// Chat `usage`, DeepSeek's own cache field included.
    pub(super) fn from_chat(usage: &Value) -> Self {
        let cached = chat_cached_tokens(usage);
        let reasoning = usage
            .get("completion_tokens_details")
            .map_or(0, |details| u64_of(details, "reasoning_tokens"));
        Tokens {
            prompt: u64_of(usage, "prompt_tokens"),
            cached,
            completion: u64_of(usage, "completion_tokens"),
            reasoning,
        }
    }

    pub(super) fn to_chat(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt.saturating_add(self.completion),
            "prompt_tokens_details": {"cached_tokens": self.cached},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        })
    }

    pub(super) fn to_gemini(self) -> Value {
        let reasoning = self.reasoning.min(self.completion);
        let mut usage = json!({
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": self.completion - reasoning,
            "totalTokenCount": self.prompt.saturating_add(self.completion),
        });
        // Gemini leaves out the counts it has none of.
        if self.cached > 0 {
            usage["cachedContentTokenCount"] = json!(self.cached);
        }
        if reasoning > 0 {
            usage["thoughtsTokenCount"] = json!(reasoning);
        }
        usage
    }
}

// ---------------------------------------------------------------------
// Ids and arguments.

/// A chat completion id for a Gemini `responseId`, or a fresh one.
pub(super) fn completion_id(response_id: Option<&str>) -> String {
    match response_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", random_suffix()),
    }
}

/// A Gemini `responseId` for a chat completion id.
pub(super) fn response_id(completion_id: Option<&str>) -> String {
    match completion_id.filter(|id| !id.is_empty()) {
        Some(id) => id.strip_prefix("chatcmpl-").unwrap_or(id).to_string(),
        None => random_suffix(),
    }
}

/// The chat id of the `n`th function call of an answer: Gemini's own id
/// when it gave one, else one made from the answer's id (so that the same
/// answer read twice gives the same ids), and the part's `thoughtSignature`
/// appended ([`crate::translate::SIGNATURE_IN_ID`]).
pub(super) fn call_id(call: &Value, answer_id: &str, n: usize, signature: Option<&str>) -> String {
    let id = match str_of(call, "id").filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("call_{answer_id}_{n}"),
    };
    id_with_signature(&id, signature.filter(|s| !s.is_empty()))
}

// ---------------------------------------------------------------------
// Errors.

/// A Gemini error `status` as the OpenAI error type an SDK maps to an
/// exception.
pub(super) fn openai_error_type(status: &str) -> &'static str {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" | "OUT_OF_RANGE" => {
            "invalid_request_error"
        }
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        _ => "server_error",
    }
}

/// An OpenAI error type as Gemini's HTTP code and status.
pub(super) fn gemini_status(openai_type: &str) -> (u16, &'static str) {
    match openai_type {
        "invalid_request_error" => (400, "INVALID_ARGUMENT"),
        "authentication_error" => (401, "UNAUTHENTICATED"),
        "permission_error" => (403, "PERMISSION_DENIED"),
        "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" => {
            (429, "RESOURCE_EXHAUSTED")
        }
        _ => (500, "INTERNAL"),
    }
}

// ---------------------------------------------------------------------
// Schemas.

/// A Gemini `Schema` (an OpenAPI 3.0 subset: upper-case `type` names,
/// `nullable`) as the JSON Schema chat hosts read. Keywords JSON Schema
/// lacks (`propertyOrdering`, `example`) are dropped: they only guide
/// Gemini's own output order and docs.
pub(super) fn json_schema_of(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            let mut out = Object::new();
            for (key, value) in object {
                match key.as_str() {
                    "propertyOrdering" | "example" | "nullable" => {}
                    "type" => {
                        let kind = value
                            .as_str()
                            .map_or_else(|| value.clone(), |kind| json!(kind.to_ascii_lowercase()));
                        out.insert(key.clone(), kind);
                    }
                    "properties" => {
                        let properties = value.as_object().map(|properties| {
                            properties
                                .iter()
                                .map(|(name, schema)| (name.clone(), json_schema_of(schema)))
                                .collect::<Object>()
                        });
                        out.insert(key.clone(), properties.map_or(Value::Null, Value::Object));
                    }
                    "items" => {
                        out.insert(key.clone(), json_schema_of(value));
                    }
                    "anyOf" => {
                        let each = value.as_array().into_iter().flatten().map(json_schema_of);
                        out.insert(key.clone(), Value::Array(each.collect()));
                    }
                    _ => {
                        out.insert(key.clone(), value.clone());
                    }
                }
            }
            let nullable = object.get("nullable").and_then(Value::as_bool) == Some(true);
            if let (true, Some(Value::String(kind))) = (nullable, out.get("type")) {
                let kind = kind.clone();
                out.insert("type".into(), json!([kind, "null"]));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------
// Parts of answers.

/// A chat tool call as a Gemini `functionCall` part: the id a chat client
/// would echo as `id` (Gemini clients send it back on the response), the
/// signature it carried as the part's `thoughtSignature`. Arguments that
/// are not a JSON object become `{}`: Gemini's `args` is an object.
pub(super) fn function_call_part(full_id: &str, name: &str, arguments: &str) -> Value {
    let (id, signature) = split_signature(full_id);
    let args = arguments_object(arguments).unwrap_or_else(|| json!({}));
    let mut call = json!({"name": name, "args": args});
    if !id.is_empty() {
        call["id"] = json!(id);
    }
    let mut part = json!({"functionCall": call});
    if let Some(signature) = signature {
        part["thoughtSignature"] = json!(signature);
    }
    part
}
