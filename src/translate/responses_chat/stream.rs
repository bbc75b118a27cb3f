//! A Chat Completions stream as a Responses event stream.
//!
//! Each chat chunk is translated as it arrives. The Responses stream opens
//! with `response.created` and `response.in_progress`, gives every output
//! item an `output_item.added` before its deltas and an `output_item.done`
//! after them, and ends with one `response.completed` (or
//! `response.incomplete` after `finish_reason: length`, or
//! `response.failed` on an error chunk), whose `response` carries every
//! item and the usage. Chat sends usage in a chunk after the
//! `finish_reason` chunk, so the items are closed at `finish_reason` and
//! the response at the usage chunk, `[DONE]` or [`ChatToResponsesStream::finish`].

use bytes::BytesMut;
use serde_json::{json, Value};

use super::common::{
    created_at, message_item, outcome, output_text_part, reasoning_item, reasoning_text,
    response_object, responses_usage, set_incomplete, AnswerIds, CallItem, RequestEcho,
    ResponseHead, ToolKind,
};
use crate::translate::push_event;

/// Chat stream -> Responses stream events.
pub struct ChatToResponsesStream {
    model: String,
    echo: RequestEcho,
    ids: AnswerIds,
    created_at: u64,
    sequence: u64,
    started: bool,
    ended: bool,
    /// Output items by output index, `None` while open. Keeping the closed
    /// items, and the open item's text or arguments, is the bounded
    /// exception to event-by-event translation: `output_text.done`,
    /// `output_item.done` and `response.completed` repeat them in full.
    output: Vec<Option<Value>>,
    text: Option<OpenText>,
    reasoning: Option<OpenText>,
    calls: Vec<OpenCall>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

/// An open message or reasoning item and its text so far.
struct OpenText {
    output_index: usize,
    id: String,
    text: String,
}

/// A chat tool call being streamed; it becomes an output item once its
/// name is known.
struct OpenCall {
    chat_index: u64,
    chat_id: Option<String>,
    call_id: String,
    name: String,
    arguments: String,
    output_index: Option<usize>,
}

impl ChatToResponsesStream {
    /// A stream for the client-facing `model`: calls come back as plain
    /// `function_call` items and the request's settings are not repeated
    /// (see [`ChatToResponsesStream::for_request`]).
    pub fn new(model: &str) -> Self {
        Self::for_request(model, RequestEcho::default())
    }

    /// A stream answering the request `echo` was read from.
    pub fn for_request(model: &str, echo: RequestEcho) -> Self {
        ChatToResponsesStream {
            model: model.to_string(),
            echo,
            ids: AnswerIds::from_chat(&Value::Null),
            created_at: created_at(&Value::Null),
            sequence: 0,
            started: false,
            ended: false,
            output: Vec::new(),
            text: None,
            reasoning: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// `data` is one upstream SSE data payload (a chunk JSON or `[DONE]`).
    pub fn on_event(&mut self, data: &str, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.end(out);
            return;
        }
        // Unlike the Anthropic and Gemini translators (an error event), an
        // unreadable chunk is passed over here: no shared chunk reader.
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        self.start(&chunk, out);
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            self.fail(error, out);
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        match chunk.pointer("/choices/0") {
            Some(choice) => {
                if let Some(delta) = choice.get("delta") {
                    self.on_delta(delta, out);
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    self.finish_reason = Some(reason.to_string());
                    self.close_all(out);
                }
            }
            // The usage chunk follows the finish_reason chunk: all is said.
            None if self.finish_reason.is_some() && self.usage.is_some() => self.end(out),
            None => {}
        }
    }

    /// Clean end of the upstream stream: closes whatever is open and emits
    /// `response.completed` (or `response.incomplete`), once.
    pub fn finish(&mut self, out: &mut BytesMut) {
        self.end(out);
    }

    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut event: Value) {
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        push_event(out, Some(kind), &event);
    }

    /// `response.created` and `response.in_progress`, at the first chunk.
    fn start(&mut self, chunk: &Value, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        if chunk.get("id").and_then(Value::as_str).is_some() {
            self.ids = AnswerIds::from_chat(chunk);
        }
        if chunk.get("created").is_some() {
            self.created_at = created_at(chunk);
        }
        let response = self.response("in_progress", None);
        self.emit(out, "response.created", json!({ "response": response }));
        self.emit(out, "response.in_progress", json!({ "response": response }));
    }

    fn response(&self, status: &str, usage: Option<Value>) -> Value {
        let head = ResponseHead {
            id: &self.ids.response(),
            created_at: self.created_at,
            model: &self.model,
        };
        let output = self.output.iter().flatten().cloned().collect();
        response_object(&head, status, output, usage, &self.echo)
    }

    fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(&Value::Null, out);
        self.close_all(out);
        let (status, incomplete) = outcome(self.finish_reason.as_deref());
        let usage = self.usage.as_ref().map(responses_usage);
        let mut response = self.response(status, usage);
        set_incomplete(&mut response, incomplete);
        let kind = if incomplete.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, kind, json!({ "response": response }));
        self.ended = true;
    }

    /// An error chunk (`{"error": ...}`) fails the response.
    fn fail(&mut self, error: &Value, out: &mut BytesMut) {
        let message = match error {
            Value::String(s) => s.clone(),
            _ => error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error")
                .to_string(),
        };
        let code = match error.get("code").or_else(|| error.get("type")) {
            Some(Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => "server_error".to_string(),
        };
        let mut response = self.response("failed", None);
        response["error"] = json!({ "code": code, "message": message });
        self.emit(out, "response.failed", json!({ "response": response }));
        self.ended = true;
    }

    fn on_delta(&mut self, delta: &Value, out: &mut BytesMut) {
        if let Some(text) = reasoning_text(delta) {
            self.reasoning_delta(text, out);
        }
        // A streamed refusal is folded into the text.
        for key in ["content", "refusal"] {
            let text = delta.get(key).and_then(Value::as_str);
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                self.text_delta(text, out);
            }
        }
        let calls = delta.get("tool_calls").and_then(Value::as_array);
        for (position, call) in calls.into_iter().flatten().enumerate() {
            self.call_delta(position as u64, call, out);
        }
    }

    fn open_item(&mut self) -> usize {
        self.output.push(None);
        self.output.len() - 1
    }

    fn reasoning_delta(&mut self, delta: &str, out: &mut BytesMut) {
        self.close_text(out, "completed");
        if self.reasoning.is_none() {
            let output_index = self.open_item();
            let id = self.ids.item("rs", output_index);
            let item = json!({"id": id, "type": "reasoning", "summary": []});
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({
                "item_id": id, "output_index": output_index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}}),
            );
            self.reasoning = Some(OpenText {
                output_index,
                id,
                text: String::new(),
            });
        }
        let Some(open) = self.reasoning.as_mut() else {
            return;
        };
        open.text.push_str(delta);
        let event = json!({"item_id": open.id, "output_index": open.output_index,
                           "summary_index": 0, "delta": delta});
        self.emit(out, "response.reasoning_summary_text.delta", event);
    }

    fn close_reasoning(&mut self, out: &mut BytesMut) {
        let Some(OpenText {
            output_index,
            id,
            text,
        }) = self.reasoning.take()
        else {
            return;
        };
        let at = json!({"item_id": id, "output_index": output_index, "summary_index": 0});
        let mut done = at.clone();
        done["text"] = json!(text);
        self.emit(out, "response.reasoning_summary_text.done", done);
        let mut part_done = at;
        part_done["part"] = json!({"type": "summary_text", "text": text});
        self.emit(out, "response.reasoning_summary_part.done", part_done);
        let item = reasoning_item(&id, &text);
        self.item_done(output_index, item, out);
    }

    // Opens its item as `reasoning_delta` does, but every event name and
    // field differs (content part, `content_index`, `logprobs`): one opener
    // for both would take more parameters than it saves lines.
    fn text_delta(&mut self, delta: &str, out: &mut BytesMut) {
        self.close_reasoning(out);
        if self.text.is_none() {
            let output_index = self.open_item();
            let id = self.ids.item("msg", output_index);
            let item = json!({"id": id, "type": "message", "status": "in_progress",
                              "role": "assistant", "content": []});
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({
                "item_id": id, "output_index": output_index, "content_index": 0,
                "part": output_text_part("")}),
            );
            self.text = Some(OpenText {
                output_index,
                id,
                text: String::new(),
            });
        }
        let Some(open) = self.text.as_mut() else {
            return;
        };
        open.text.push_str(delta);
        let event = json!({"item_id": open.id, "output_index": open.output_index,
                           "content_index": 0, "delta": delta, "logprobs": []});
        self.emit(out, "response.output_text.delta", event);
    }

    fn close_text(&mut self, out: &mut BytesMut, status: &str) {
        let Some(OpenText {
            output_index,
            id,
            text,
        }) = self.text.take()
        else {
            return;
        };
        let at = json!({"item_id": id, "output_index": output_index, "content_index": 0});
        let mut done = at.clone();
        done["text"] = json!(text);
        done["logprobs"] = json!([]);
        self.emit(out, "response.output_text.done", done);
        let mut part_done = at;
        part_done["part"] = output_text_part(&text);
        self.emit(out, "response.content_part.done", part_done);
        let item = message_item(&id, &text, status);
        self.item_done(output_index, item, out);
    }

    fn item_done(&mut self, output_index: usize, item: Value, out: &mut BytesMut) {
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        if let Some(slot) = self.output.get_mut(output_index) {
            *slot = Some(item);
        }
    }

    /// One entry of a chunk's `tool_calls`. Calls are told apart by
    /// `index` (its position when a host leaves it out) and, for hosts that
    /// reuse an index, by a new `id`.
    fn call_delta(&mut self, position: u64, call: &Value, out: &mut BytesMut) {
        let chat_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position);
        let chat_id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let arguments = function
            .get("arguments")
            .and_then(Value::as_str)
            .unwrap_or_default();

        let same_call = |c: &OpenCall| {
            c.chat_index == chat_index
                && (chat_id.is_none() || c.chat_id.is_none() || c.chat_id.as_deref() == chat_id)
        };
        let slot = match self.calls.iter().rposition(same_call) {
            Some(slot) => slot,
            None => {
                self.close_reasoning(out);
                self.close_text(out, "completed");
                self.calls.push(OpenCall {
                    chat_index,
                    chat_id: None,
                    call_id: self.ids.call(chat_index),
                    name: String::new(),
                    arguments: String::new(),
                    output_index: None,
                });
                self.calls.len() - 1
            }
        };
        let mut open = self.calls.remove(slot);
        self.update_call(&mut open, chat_id, name, arguments, out);
        self.calls.insert(slot, open);
    }

    fn update_call(
        &mut self,
        open: &mut OpenCall,
        chat_id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
        out: &mut BytesMut,
    ) {
        if let (None, Some(id)) = (&open.chat_id, chat_id) {
            open.chat_id = Some(id.to_string());
            if open.output_index.is_none() {
                open.call_id = id.to_string();
            }
        }
        // Some hosts repeat the name in every chunk: the first one counts.
        if let (true, Some(name)) = (open.name.is_empty(), name) {
            open.name = name.to_string();
        }
        open.arguments.push_str(arguments);
        match open.output_index {
            Some(output_index) => self.arguments_delta(&open.name, output_index, arguments, out),
            None if !open.name.is_empty() => self.add_call(open, out),
            None => {} // its name has not come yet
        }
    }

    /// `output_item.added` for a call, then whatever arguments came with
    /// or before its name.
    fn add_call(&mut self, open: &mut OpenCall, out: &mut BytesMut) {
        let output_index = self.open_item();
        open.output_index = Some(output_index);
        let item = CallItem {
            ids: &self.ids,
            output_index,
            call_id: &open.call_id,
            chat_name: &open.name,
            arguments: "",
        }
        .to_item(&self.echo, "in_progress");
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        self.arguments_delta(&open.name, output_index, &open.arguments, out);
    }

    /// Arguments stream as they come for function calls; a custom or
    /// local-shell call's input is JSON-wrapped on the chat side, so it is
    /// sent whole when the call ends.
    fn arguments_delta(
        &mut self,
        chat_name: &str,
        output_index: usize,
        delta: &str,
        out: &mut BytesMut,
    ) {
        if delta.is_empty() || !self.streams_arguments(chat_name) {
            return;
        }
        let item_id = self.ids.item("fc", output_index);
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
        );
    }

    fn streams_arguments(&self, chat_name: &str) -> bool {
        self.echo
            .origin(chat_name)
            .is_none_or(|o| o.kind == ToolKind::Function)
    }

    fn close_call(&mut self, mut open: OpenCall, status: &str, out: &mut BytesMut) {
        if open.output_index.is_none() {
            // A call whose name never came: shown as it is.
            self.add_call(&mut open, out);
        }
        let Some(output_index) = open.output_index else {
            return;
        };
        let item = CallItem {
            ids: &self.ids,
            output_index,
            call_id: &open.call_id,
            chat_name: &open.name,
            arguments: &open.arguments,
        }
        .to_item(&self.echo, status);
        let at = json!({"item_id": item["id"], "output_index": output_index});
        match item["type"].as_str() {
            Some("function_call") => {
                let mut done = at;
                done["name"] = item["name"].clone();
                done["arguments"] = json!(open.arguments);
                self.emit(out, "response.function_call_arguments.done", done);
            }
            Some("custom_tool_call") => {
                let input = item["input"].clone();
                let mut delta = at.clone();
                delta["delta"] = input.clone();
                self.emit(out, "response.custom_tool_call_input.delta", delta);
                let mut done = at;
                done["input"] = input;
                self.emit(out, "response.custom_tool_call_input.done", done);
            }
            _ => {}
        }
        self.item_done(output_index, item, out);
    }

    /// Closes every open item, as the finish reason has them.
    fn close_all(&mut self, out: &mut BytesMut) {
        let status = match outcome(self.finish_reason.as_deref()).1 {
            Some(_) => "incomplete",
            None => "completed",
        };
        self.close_reasoning(out);
        self.close_text(out, status);
        for open in std::mem::take(&mut self.calls) {
            self.close_call(open, status, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_sequence, parse_events};
    use super::*;

    fn run(stream: &mut ChatToResponsesStream, chunks: &[Value], done: bool) -> Vec<Value> {
        let mut out = BytesMut::new();
        for chunk in chunks {
            stream.on_event(&chunk.to_string(), &mut out);
        }
        if done {
            stream.on_event("[DONE]", &mut out);
        }
        let events = parse_events(&out);
        if stream.ended {
            check_sequence(&events);
        }
        events
    }

    fn kinds(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn usage_chunk() -> Value {
        json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                         "prompt_tokens_details": {"cached_tokens": 4}}})
    }

    #[test]
    fn text_stream_is_the_full_sequence() {
        let mut stream = ChatToResponsesStream::new("client-model");
        let events = run(
            &mut stream,
            &[
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Hel"}), Value::Null),
                chunk(json!({"content": "lo"}), Value::Null),
                chunk(json!({}), json!("stop")),
                usage_chunk(),
            ],
            true,
        );
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert_eq!(events[0]["response"]["id"], "resp_s1");
        assert_eq!(events[0]["response"]["output"], json!([]));
        assert_eq!(events[2]["item"]["status"], "in_progress");
        assert_eq!(events[4]["item_id"], "msg_s1_0");
        assert_eq!(events[6]["text"], "Hello");
        assert_eq!(events[8]["item"]["content"][0]["text"], "Hello");
        let done = &events[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["model"], "client-model");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["usage"]["input_tokens"], 12);
        assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 4);
        assert_eq!(done["usage"]["total_tokens"], 15);
        // The usage chunk ended it: [DONE] and finish() add nothing.
        let mut out = BytesMut::new();
        stream.finish(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn parallel_tool_calls_after_text() {
        let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
            let mut c = json!({"index": index, "function": {"arguments": args}});
            if let Some(id) = id {
                c["id"] = json!(id);
                c["type"] = json!("function");
            }
            if let Some(name) = name {
                c["function"]["name"] = json!(name);
            }
            chunk(json!({"tool_calls": [c]}), Value::Null)
        };
        let events = run(
            &mut ChatToResponsesStream::new("m"),
            &[
                chunk(json!({"content": "Looking."}), Value::Null),
                call(0, Some("call_a"), Some("shell"), ""),
                call(0, None, None, "{\"command\":"),
                call(0, None, None, "[\"ls\"]}"),
                call(1, Some("call_b"), Some("shell"), "{\"command\":[\"pwd\"]}"),
                chunk(json!({}), json!("tool_calls")),
                usage_chunk(),
            ],
            false,
        );
        let k = kinds(&events);
        let first_call = k
            .iter()
            .position(|t| *t == "response.function_call_arguments.delta");
        assert!(k.iter().position(|t| *t == "response.output_text.done") < first_call);
        let done: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "response.output_item.done")
            .map(|e| &e["item"])
            .collect();
        assert_eq!(done.len(), 3);
        assert_eq!(
            *done[1],
            json!({"id": "fc_s1_1", "type": "function_call", "status": "completed",
                   "call_id": "call_a", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"})
        );
        assert_eq!(done[2]["call_id"], "call_b");
        assert_eq!(done[2]["arguments"], "{\"command\":[\"pwd\"]}");
        let args_done: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.done")
            .collect();
        assert_eq!(args_done[0]["arguments"], "{\"command\":[\"ls\"]}");
        let completed = events.last().unwrap();
        assert_eq!(completed["type"], "response.completed");
        assert_eq!(completed["response"]["output"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn reasoning_becomes_a_summary_before_the_text() {
        let events = run(
            &mut ChatToResponsesStream::new("m"),
            &[
                chunk(
                    json!({"role": "assistant", "reasoning_content": "Think"}),
                    Value::Null,
                ),
                chunk(json!({"reasoning_content": "ing."}), Value::Null),
                chunk(json!({"content": "Answer."}), Value::Null),
                chunk(json!({}), json!("stop")),
            ],
            true,
        );
        assert_eq!(
            kinds(&events)[2..9],
            [
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
            ]
        );
        assert_eq!(events[6]["text"], "Thinking.");
        let output = &events.last().unwrap()["response"]["output"];
        assert_eq!(output[0]["summary"][0]["text"], "Thinking.");
        assert_eq!(output[1]["content"][0]["text"], "Answer.");
        assert_eq!(events.last().unwrap()["response"]["usage"], Value::Null);
    }

    #[test]
    fn custom_tool_calls_come_back_whole() {
        let echo = RequestEcho::from_request(
            br#"{"tools":[{"type":"custom","name":"apply_patch"}],"tool_choice":"auto"}"#,
        );
        let mut stream = ChatToResponsesStream::for_request("m", echo);
        let events = run(
            &mut stream,
            &[
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_p", "type": "function",
                      "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin"}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": " Patch\"}"}}]}),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
            ],
            true,
        );
        let k = kinds(&events);
        assert!(!k.contains(&"response.function_call_arguments.delta"));
        assert_eq!(events[2]["item"]["type"], "custom_tool_call");
        assert_eq!(events[2]["item"]["input"], "");
        let done = events
            .iter()
            .find(|e| e["type"] == "response.custom_tool_call_input.done");
        assert_eq!(done.unwrap()["input"], "*** Begin Patch");
        let item = &events.last().unwrap()["response"]["output"][0];
        assert_eq!(item["type"], "custom_tool_call");
        assert_eq!(item["call_id"], "call_p");
        assert_eq!(item["input"], "*** Begin Patch");
        assert_eq!(events.last().unwrap()["response"]["tool_choice"], "auto");
    }

    #[test]
    fn length_ends_incomplete() {
        let events = run(
            &mut ChatToResponsesStream::new("m"),
            &[
                chunk(json!({"content": "Cut"}), Value::Null),
                chunk(json!({}), json!("length")),
            ],
            true,
        );
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    }

    #[test]
    fn an_error_chunk_fails_the_response() {
        let mut stream = ChatToResponsesStream::new("m");
        let events = run(
            &mut stream,
            &[
                chunk(json!({"content": "Hi"}), Value::Null),
                json!({"error": {"message": "Context too long", "type": "invalid_request_error",
                                 "code": "context_length_exceeded"}}),
                chunk(json!({"content": "more"}), Value::Null),
            ],
            true,
        );
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(
            last["response"]["error"],
            json!({"code": "context_length_exceeded", "message": "Context too long"})
        );
        let mut out = BytesMut::new();
        stream.finish(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn finish_closes_a_stream_without_done_once() {
        let mut stream = ChatToResponsesStream::new("m");
        let mut events = run(
            &mut stream,
            &[chunk(json!({"content": "Hi"}), Value::Null)],
            false,
        );
        let mut out = BytesMut::new();
        stream.finish(&mut out);
        stream.finish(&mut out);
        events.extend(parse_events(&out));
        check_sequence(&events);
        assert_eq!(
            events
                .iter()
                .filter(|e| e["type"] == "response.completed")
                .count(),
            1
        );

        // An empty upstream stream still makes a whole (empty) response.
        let mut out = BytesMut::new();
        let mut empty = ChatToResponsesStream::new("m");
        empty.finish(&mut out);
        let events = parse_events(&out);
        check_sequence(&events);
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
    }

    #[test]
    fn loose_hosts_calls_are_still_told_apart() {
        // No index, the name repeated in every chunk, usage in the finish
        // chunk, and a second call reusing index 0 with a new id.
        let call = |id: &str, args: &str| {
            chunk(
                json!({"tool_calls": [{"id": id, "function": {"name": "f", "arguments": args}}]}),
                Value::Null,
            )
        };
        let mut last = chunk(json!({}), json!("tool_calls"));
        last["usage"] = json!({"prompt_tokens": 1, "completion_tokens": 1});
        let events = run(
            &mut ChatToResponsesStream::new("m"),
            &[
                call("c1", "{\"a\":"),
                call("c1", "1}"),
                call("c2", "{}"),
                last,
            ],
            true,
        );
        let output = &events.last().unwrap()["response"]["output"];
        assert_eq!(output.as_array().unwrap().len(), 2);
        assert_eq!(output[0]["name"], "f");
        assert_eq!(output[0]["arguments"], "{\"a\":1}");
        assert_eq!(output[1]["call_id"], "c2");
        assert_eq!(
            events.last().unwrap()["response"]["usage"]["total_tokens"],
            2
        );
    }
}
