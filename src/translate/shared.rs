//! What every translator shares: the formats, the refusal of a field, the
//! SSE writer, small readers of JSON values, and how an upstream's opaque
//! reasoning signature rides in a chat tool-call id.

use bytes::BytesMut;
use serde_json::{Map, Value};

/// An API format, as clients and channels speak it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions, the pivot.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
}

/// A request field the target format cannot express, and that would change
/// the request's meaning if dropped: refused with 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable {
    /// The field as the client wrote it, e.g. `messages[2].content[0].type`.
    pub field: String,
    pub why: String,
}

impl Untranslatable {
    pub fn new(field: impl Into<String>, why: impl Into<String>) -> Self {
        Untranslatable {
            field: field.into(),
            why: why.into(),
        }
    }
}

/// Appends one server-sent event: `event: {name}` when named, then
/// `data: {json}` and the blank line that ends it.
pub fn push_event(out: &mut BytesMut, event: Option<&str>, data: &Value) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

pub(crate) type Object = Map<String, Value>;

/// Separates a chat tool call's own id from the opaque reasoning signature
/// appended to it (an Anthropic thinking block's `signature`, a Gemini
/// part's `thoughtSignature`): chat clients that drop unknown fields still
/// echo ids. Neither Anthropic ids (`[A-Za-z0-9_-]`) nor base64 contain `~`.
pub const SIGNATURE_IN_ID: &str = "~sig~";

/// A tool call id with a reasoning signature appended, if any.
pub(crate) fn id_with_signature(id: &str, signature: Option<&str>) -> String {
    match signature {
        Some(signature) => format!("{id}{SIGNATURE_IN_ID}{signature}"),
        None => id.to_string(),
    }
}

/// Splits a tool call id a chat client echoed back into the upstream's id
/// and the reasoning signature it carried.
pub(crate) fn split_signature(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_IN_ID) {
        Some((id, signature)) if !signature.is_empty() => (id, Some(signature)),
        Some((id, _)) => (id, None),
        None => (id, None),
    }
}

pub(crate) fn parse_request(body: &[u8]) -> Result<Object, Untranslatable> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Untranslatable::new("body", "the body is not a JSON object")),
        Err(e) => Err(Untranslatable::new(
            "body",
            format!("the body is not JSON: {e}"),
        )),
    }
}

pub(crate) fn parse_answer(body: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("the answer is not a JSON object".to_string())
    }
}

pub(crate) fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

pub(crate) fn u64_of(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub(crate) fn to_bytes(value: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn now_secs() -> u64 {
    crate::clock::now_ms() / 1000
}

pub(crate) fn random_suffix() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// Refuses the Chat request fields that no other format can express and
/// that would change the answer if dropped (`target` names the format).
pub(crate) fn refuse_chat_only_fields(
    request: &Object,
    target: &str,
) -> Result<(), Untranslatable> {
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(Untranslatable::new(
            "n",
            format!("{target} answers with one choice"),
        ));
    }
    if request.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(Untranslatable::new(
            "logprobs",
            format!("{target} reports no log probabilities"),
        ));
    }
    let audio_out = request
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|m| m.as_str() == Some("audio")));
    if audio_out {
        return Err(Untranslatable::new(
            "modalities",
            format!("{target} answers with text only"),
        ));
    }
    for field in ["audio", "web_search_options", "functions", "function_call"] {
        if request.get(field).is_some_and(|v| !v.is_null()) {
            return Err(Untranslatable::new(
                field,
                format!("not expressible for {target}"),
            ));
        }
    }
    let biased = request
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|b| !b.is_empty());
    if biased {
        return Err(Untranslatable::new(
            "logit_bias",
            format!("{target} has no logit bias"),
        ));
    }
    Ok(())
}

/// The text of chat message `i`: a string, or text parts joined by
/// newlines. Other parts are refused with `non_text` as the reason: where
/// this is read (a system prompt, a Gemini function response) only text
/// fits.
pub(crate) fn chat_text_content(
    message: &Value,
    i: usize,
    non_text: &str,
) -> Result<String, Untranslatable> {
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
                            non_text,
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Ok(String::new()),
    }
}

/// A chat request's `stop` (a string or a list of them) as the list of
/// stop sequences Anthropic and Gemini take, unless there is none.
pub(crate) fn chat_stop_sequences(request: &Object) -> Option<Value> {
    match request.get("stop") {
        Some(Value::String(stop)) => Some(Value::Array(vec![Value::String(stop.clone())])),
        Some(Value::Array(stops)) if !stops.is_empty() => Some(Value::Array(stops.clone())),
        _ => None,
    }
}

/// The reasoning text of a chat message or delta: `reasoning_content`,
/// else `reasoning`, as some hosts name it.
pub(crate) fn chat_reasoning(message: &Value) -> Option<&str> {
    str_of(message, "reasoning_content").or_else(|| str_of(message, "reasoning"))
}

/// The first choice of a whole chat answer and its message, or why there
/// is none (the answer's own error message when it is an error).
pub(crate) fn chat_choice(answer: &Value) -> Result<(&Value, &Value), String> {
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
    Ok((choice, message))
}

/// The cached prompt tokens of a chat `usage`: OpenAI's
/// `prompt_tokens_details.cached_tokens`, else DeepSeek's own field.
pub(crate) fn chat_cached_tokens(usage: &Value) -> u64 {
    usage
        .get("prompt_tokens_details")
        .map(|details| u64_of(details, "cached_tokens"))
        .filter(|&cached| cached > 0)
        .unwrap_or_else(|| u64_of(usage, "prompt_cache_hit_tokens"))
}

/// A chat tool call's `arguments` string as the JSON object Anthropic's
/// `input` and Gemini's `args` must be (empty means `{}`); `None` when it
/// is not one.
pub(crate) fn arguments_object(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(serde_json::json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    }
}

/// The message of an error value in any dialect (`{message}` or a bare
/// string).
pub(crate) fn error_text(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        _ => str_of(error, "message")
            .unwrap_or("the upstream reported an error")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_framed_as_sse() {
        let mut out = BytesMut::new();
        push_event(&mut out, Some("ping"), &json!({"type": "ping"}));
        push_event(&mut out, None, &json!({"a": 1}));
        assert_eq!(
            &out[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn chat_text_is_a_string_or_text_parts_and_refuses_other_parts() {
        let parts =
            json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]});
        assert_eq!(chat_text_content(&parts, 0, "why").unwrap(), "a\nb");
        assert_eq!(
            chat_text_content(&json!({"content": "a"}), 0, "why").unwrap(),
            "a"
        );
        assert_eq!(
            chat_text_content(&json!({"content": null}), 0, "why").unwrap(),
            ""
        );
        let image = json!({"content": [{"type": "text", "text": "a"}, {"type": "image_url"}]});
        assert_eq!(
            chat_text_content(&image, 3, "only text fits"),
            Err(Untranslatable::new(
                "messages[3].content[1].type",
                "only text fits"
            ))
        );
    }

    #[test]
    fn a_chat_answer_gives_its_first_choice_or_says_why_not() {
        let answer = json!({"choices": [{"index": 0, "message": {"content": "hi"}}]});
        let (choice, message) = chat_choice(&answer).unwrap();
        assert_eq!(
            (choice["index"].as_u64(), message["content"].as_str()),
            (Some(0), Some("hi"))
        );
        let error = json!({"error": {"message": "overloaded"}, "choices": []});
        assert_eq!(chat_choice(&error), Err("overloaded".to_string()));
        assert_eq!(
            chat_choice(&json!({"error": "down"})),
            Err("down".to_string())
        );
        assert_eq!(
            chat_choice(&json!({"choices": []})),
            Err("the answer has no choices".to_string())
        );
        assert_eq!(
            chat_choice(&json!({"choices": [{}]})),
            Err("the answer's choice has no message".to_string())
        );
    }

    #[test]
    fn a_stop_is_one_sequence_or_a_list_of_them() {
        let stops = |request: Value| chat_stop_sequences(request.as_object().unwrap());
        assert_eq!(stops(json!({"stop": "END"})), Some(json!(["END"])));
        assert_eq!(stops(json!({"stop": ["a", "b"]})), Some(json!(["a", "b"])));
        assert_eq!(stops(json!({"stop": []})), None);
        assert_eq!(stops(json!({"stop": null})), None);
        assert_eq!(stops(json!({})), None);
    }

    #[test]
    fn reasoning_and_cached_tokens_are_read_under_either_name() {
        let both = json!({"reasoning_content": "a", "reasoning": "b"});
        assert_eq!(chat_reasoning(&both), Some("a"));
        assert_eq!(chat_reasoning(&json!({"reasoning": "b"})), Some("b"));
        assert_eq!(chat_reasoning(&json!({})), None);
        let openai =
            json!({"prompt_tokens_details": {"cached_tokens": 5}, "prompt_cache_hit_tokens": 7});
        assert_eq!(chat_cached_tokens(&openai), 5);
        let deepseek =
            json!({"prompt_tokens_details": {"cached_tokens": 0}, "prompt_cache_hit_tokens": 7});
        assert_eq!(chat_cached_tokens(&deepseek), 7);
        assert_eq!(chat_cached_tokens(&json!({})), 0);
    }

    #[test]
    fn tool_arguments_must_be_an_object_or_empty() {
        assert_eq!(arguments_object(" "), Some(json!({})));
        assert_eq!(arguments_object(r#"{"a":1}"#), Some(json!({"a": 1})));
        assert_eq!(arguments_object("[1]"), None);
        assert_eq!(arguments_object("{"), None);
        assert_eq!(error_text(&json!({})), "the upstream reported an error");
    }
}
