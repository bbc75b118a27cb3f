//! A whole Chat completion as a Responses `response` object.

use serde_json::{json, Value};

use super::common::{
    created_at, message_item, outcome, reasoning_item, reasoning_text, response_object,
    responses_usage, set_incomplete, AnswerIds, CallItem, RequestEcho, ResponseHead,
};

/// Non-stream Chat completion JSON -> Responses `response` object JSON;
/// `model` is the client-facing name. Calls are plain `function_call`
/// items and the request's settings are not repeated: see
/// [`chat_response_to_responses_for`].
pub fn chat_response_to_responses(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    chat_response_to_responses_for(body, model, &RequestEcho::default())
}

/// [`chat_response_to_responses`] for the request `echo` was read from: its
/// settings are repeated and calls of its custom, local-shell and
/// namespaced tools come back as their own items.
pub fn chat_response_to_responses_for(
    body: &[u8],
    model: &str,
    echo: &RequestEcho,
) -> Result<Vec<u8>, String> {
    let chat: Value =
        serde_json::from_slice(body).map_err(|e| format!("upstream answer is not JSON: {e}"))?;
    if let Some(error) = chat.get("error").filter(|e| !e.is_null()) {
        return Err(format!("upstream error: {error}"));
    }
    let choice = chat
        .pointer("/choices/0")
        .ok_or("upstream answer has no choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let ids = AnswerIds::from_chat(&chat);
    let (status, incomplete) = outcome(choice.get("finish_reason").and_then(Value::as_str));

    let mut output = Vec::new();
    if let Some(reasoning) = reasoning_text(message) {
        output.push(reasoning_item(&ids.item("rs", output.len()), reasoning));
    }
    let item_status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    if let Some(item) = answer_message(&ids, output.len(), message, item_status) {
        output.push(item);
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (i, call) in calls.into_iter().flatten().enumerate() {
        let call_id = match call.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => ids.call(i as u64),
        };
        let function = call.get("function").unwrap_or(&Value::Null);
        let item = CallItem {
            ids: &ids,
            output_index: output.len(),
            call_id: &call_id,
            chat_name: function
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            arguments: function
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        };
        output.push(item.to_item(echo, "completed"));
    }

    let head = ResponseHead {
        id: &ids.response(),
        created_at: created_at(&chat),
        model,
    };
    let usage = chat
        .get("usage")
        .filter(|u| u.is_object())
        .map(responses_usage);
    let mut response = response_object(&head, status, output, usage, echo);
    set_incomplete(&mut response, incomplete);
    serde_json::to_vec(&response).map_err(|e| e.to_string())
}

/// The assistant's text (and refusal) as a `message` item, if it said
/// anything.
fn answer_message(
    ids: &AnswerIds,
    output_index: usize,
    message: &Value,
    status: &str,
) -> Option<Value> {
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        // Some hosts answer with a list of text parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    if text.is_empty() && refusal.is_none() {
        return None;
    }
    let mut item = message_item(&ids.item("msg", output_index), &text, status);
    if let Some(refusal) = refusal {
        let parts = json!([{"type": "refusal", "refusal": refusal}]);
        item["content"] = if text.is_empty() {
            parts
        } else {
            json!([item["content"][0].clone(), parts[0].clone()])
        };
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responses(chat: Value, echo: &RequestEcho) -> Value {
        let body =
            chat_response_to_responses_for(chat.to_string().as_bytes(), "client-model", echo)
                .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn text_answer_with_usage() {
        let r = responses(
            json!({"id": "chatcmpl-42", "object": "chat.completion", "created": 1_700_000_000,
                   "model": "upstream", "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "Hello."}}],
                   "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
            &RequestEcho::default(),
        );
        assert_eq!(r["id"], "resp_42");
        assert_eq!(r["object"], "response");
        assert_eq!(r["created_at"], 1_700_000_000);
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "client-model");
        assert_eq!(r["incomplete_details"], Value::Null);
        assert_eq!(
            r["output"],
            json!([{"id": "msg_42_0", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello.", "annotations": [],
                                 "logprobs": []}]}])
        );
        assert_eq!(r["usage"]["input_tokens"], 9);
        assert_eq!(r["usage"]["output_tokens"], 2);
        assert_eq!(r["usage"]["total_tokens"], 11);
        assert_eq!(r["tools"], json!([]));
        assert_eq!(r["parallel_tool_calls"], true);
    }

    #[test]
    fn reasoning_text_and_calls_in_order() {
        let echo = RequestEcho::from_request(
            br#"{"instructions":"x","tool_choice":"auto","tools":[
                {"type":"function","name":"shell"},{"type":"custom","name":"apply_patch"}]}"#,
        );
        let r = responses(
            json!({"id": "chatcmpl-7", "choices": [{"index": 0, "finish_reason": "tool_calls",
                   "message": {"role": "assistant", "content": "Checking.",
                               "reasoning_content": "Need ls first.",
                               "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}}]}}]}),
            &echo,
        );
        let output = r["output"].as_array().unwrap();
        assert_eq!(output.len(), 4);
        assert_eq!(
            output[0],
            json!({"id": "rs_7_0", "type": "reasoning",
                   "summary": [{"type": "summary_text", "text": "Need ls first."}]})
        );
        assert_eq!(output[1]["content"][0]["text"], "Checking.");
        assert_eq!(
            output[2],
            json!({"id": "fc_7_2", "type": "function_call", "status": "completed",
                   "call_id": "call_1", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"})
        );
        assert_eq!(output[3]["type"], "custom_tool_call");
        assert_eq!(output[3]["input"], "*** Begin Patch");
        assert_eq!(r["instructions"], "x");
        assert_eq!(r["tools"].as_array().unwrap().len(), 2);
        assert_eq!(r["usage"], Value::Null);
    }

    #[test]
    fn length_is_incomplete() {
        let r = responses(
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "length",
                   "message": {"role": "assistant", "content": "Cut"}}]}),
            &RequestEcho::default(),
        );
        assert_eq!(r["status"], "incomplete");
        assert_eq!(
            r["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(r["output"][0]["status"], "incomplete");
    }

    #[test]
    fn refusals_keep_their_part() {
        let r = responses(
            json!({"choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": null, "refusal": "I can't."}}]}),
            &RequestEcho::default(),
        );
        assert_eq!(
            r["output"][0]["content"],
            json!([{"type": "refusal", "refusal": "I can't."}])
        );
        assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    }

    #[test]
    fn errors_and_garbage_are_reported() {
        let error = chat_response_to_responses(br#"{"error":{"message":"bad"}}"#, "m");
        assert!(error.unwrap_err().contains("bad"));
        assert!(chat_response_to_responses(b"{}", "m").is_err());
        assert!(chat_response_to_responses(b"nope", "m").is_err());
    }
}
