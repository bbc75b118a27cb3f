//! Format translation: a client's API format to a channel's and back, so
//! that any client reaches any channel (docs/api.md, "Formats and
//! channels"). OpenAI Chat Completions is the pivot: every other format is
//! translated to and from it, one module per format, as pure functions and
//! stream state machines with their tests beside them. Two formats that
//! are both not Chat meet through it: the request goes client → Chat →
//! channel, the answer channel → Chat → client, a stream's events through
//! both translators one at a time.
//!
//! Translators never see the network: a request body goes in and a body
//! comes out; a stream's events go in one at a time and the client's
//! events come out, so memory per stream stays bounded (open tool-call
//! arguments aside) and the first event is not delayed.

pub mod anthropic_chat;
pub mod gemini_chat;
pub mod responses_chat;

mod chat_chunks;
mod shared;

use bytes::BytesMut;

pub use shared::{push_event, Format, Untranslatable, SIGNATURE_IN_ID};

use crate::sse::SseParser;
use anthropic_chat::{AnthropicToChatStream, ChatToAnthropicStream};
use gemini_chat::{ChatToGeminiStream, GeminiToChatStream};
use responses_chat::{ChatToResponsesStream, RequestEcho};

/// A client's request body in the channel's format `to`. `model` is the
/// upstream model name; `default_max_tokens` fills Anthropic's required
/// `max_tokens` when the client gave none; `stream` is whether the client
/// streams (a Gemini body does not say: its path does).
pub fn request(
    from: Format,
    to: Format,
    body: &[u8],
    model: &str,
    default_max_tokens: u64,
    stream: bool,
) -> Result<Vec<u8>, Untranslatable> {
    let hop =
        |from, to, body: &[u8]| request_hop(from, to, body, model, default_max_tokens, stream);
    if from == Format::Chat || to == Format::Chat {
        return hop(from, to, body);
    }
    let chat = hop(from, Format::Chat, body)?;
    hop(Format::Chat, to, &chat).map_err(|refused| Untranslatable {
        why: format!("{} (in the request's Chat Completions form)", refused.why),
        ..refused
    })
}

/// One translation to or from the pivot.
fn request_hop(
    from: Format,
    to: Format,
    body: &[u8],
    model: &str,
    default_max_tokens: u64,
    stream: bool,
) -> Result<Vec<u8>, Untranslatable> {
    match (from, to) {
        (Format::Anthropic, Format::Chat) => anthropic_chat::anthropic_request_to_chat(body, model),
        (Format::Chat, Format::Anthropic) => {
            anthropic_chat::chat_request_to_anthropic(body, model, default_max_tokens)
        }
        (Format::Responses, Format::Chat) => responses_chat::responses_request_to_chat(body, model),
        (Format::Gemini, Format::Chat) => gemini_chat::gemini_request_to_chat(body, model, stream),
        (Format::Chat, Format::Gemini) => gemini_chat::chat_request_to_gemini(body),
        _ => Err(Untranslatable::new(
            "model",
            format!("no translation from {from:?} to {to:?}"),
        )),
    }
}

/// How the answer to one request goes back from the channel's format to
/// the client's.
pub struct AnswerTranslation {
    from: Format,
    to: Format,
    /// The client-facing model name, reported in the answer.
    model: String,
    /// The client asked for a usage chunk (OpenAI streams).
    include_usage: bool,
    /// What a Responses answer repeats of its request (its tools decide
    /// how calls come back).
    echo: Option<RequestEcho>,
    /// A Gemini client streaming without `alt=sse`: one JSON array.
    json_array: bool,
}

impl AnswerTranslation {
    /// `request` is the client's own request body.
    pub fn new(from: Format, to: Format, model: &str, include_usage: bool, request: &[u8]) -> Self {
        AnswerTranslation {
            from,
            to,
            model: model.to_string(),
            include_usage,
            echo: (to == Format::Responses).then(|| RequestEcho::from_request(request)),
            json_array: false,
        }
    }

    /// For a Gemini client that streams without `alt=sse`: its stream is
    /// one JSON array rather than events.
    pub fn json_array_stream(mut self, json_array: bool) -> Self {
        self.json_array = json_array;
        self
    }

    /// A whole (non-stream) answer.
    pub fn whole(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        if self.from == Format::Chat || self.to == Format::Chat {
            return self.whole_hop(self.from, self.to, body);
        }
        let chat = self.whole_hop(self.from, Format::Chat, body)?;
        self.whole_hop(Format::Chat, self.to, &chat)
    }

    fn whole_hop(&self, from: Format, to: Format, body: &[u8]) -> Result<Vec<u8>, String> {
        let model = self.model.as_str();
        match (from, to, &self.echo) {
            (Format::Chat, Format::Anthropic, _) => {
                anthropic_chat::chat_response_to_anthropic(body, model)
            }
            (Format::Anthropic, Format::Chat, _) => {
                anthropic_chat::anthropic_response_to_chat(body, model)
            }
            (Format::Chat, Format::Responses, Some(echo)) => {
                responses_chat::chat_response_to_responses_for(body, model, echo)
            }
            (Format::Chat, Format::Gemini, _) => gemini_chat::chat_response_to_gemini(body, model),
            (Format::Gemini, Format::Chat, _) => gemini_chat::gemini_response_to_chat(body, model),
            (from, to, _) => Err(format!("no translation from {from:?} to {to:?}")),
        }
    }

    /// The translator of a streamed answer; `None` where there is none.
    pub fn stream(&self) -> Option<StreamTranslator> {
        if self.from == Format::Chat || self.to == Format::Chat {
            return self.stream_hop(self.from, self.to, self.include_usage);
        }
        // The pivot's stream must carry the usage for the second half.
        let first = self.stream_hop(self.from, Format::Chat, true)?;
        let second = self.stream_hop(Format::Chat, self.to, self.include_usage)?;
        Some(StreamTranslator::Chained(Box::new(Chained {
            first,
            second,
            events: SseParser::default(),
        })))
    }

    fn stream_hop(
        &self,
        from: Format,
        to: Format,
        include_usage: bool,
    ) -> Option<StreamTranslator> {
        let model = self.model.as_str();
        Some(match (from, to, &self.echo) {
            (Format::Chat, Format::Anthropic, _) => {
                StreamTranslator::ChatToAnthropic(ChatToAnthropicStream::new(model))
            }
            (Format::Anthropic, Format::Chat, _) => {
                StreamTranslator::AnthropicToChat(AnthropicToChatStream::new(model, include_usage))
            }
            (Format::Chat, Format::Responses, Some(echo)) => StreamTranslator::ChatToResponses(
                Box::new(ChatToResponsesStream::for_request(model, echo.clone())),
            ),
            (Format::Chat, Format::Gemini, _) => {
                StreamTranslator::ChatToGemini(ChatToGeminiStream::new(model, self.json_array))
            }
            (Format::Gemini, Format::Chat, _) => {
                StreamTranslator::GeminiToChat(GeminiToChatStream::new(model, include_usage))
            }
            _ => return None,
        })
    }
}

/// A streamed answer on its way from a channel's format to the client's,
/// one event at a time.
pub enum StreamTranslator {
    ChatToAnthropic(ChatToAnthropicStream),
    AnthropicToChat(AnthropicToChatStream),
    /// Boxed: it keeps the request's echo and the answer so far, which
    /// its closing events repeat.
    ChatToResponses(Box<ChatToResponsesStream>),
    ChatToGemini(ChatToGeminiStream),
    GeminiToChat(GeminiToChatStream),
    /// Through the pivot: the channel's format to Chat, Chat to the
    /// client's.
    Chained(Box<Chained>),
}

impl StreamTranslator {
    /// One upstream event: its `event:` name, if any, and its data.
    pub fn on_event(&mut self, event: Option<&str>, data: &str, out: &mut BytesMut) {
        match self {
            StreamTranslator::ChatToAnthropic(t) => t.on_event(data, out),
            StreamTranslator::AnthropicToChat(t) => t.on_event(event, data, out),
            StreamTranslator::ChatToResponses(t) => t.on_event(data, out),
            StreamTranslator::ChatToGemini(t) => t.on_event(data, out),
            StreamTranslator::GeminiToChat(t) => t.on_event(data, out),
            StreamTranslator::Chained(t) => t.on_event(event, data, out),
        }
    }

    /// The clean end of the upstream stream: closes what is still open.
    pub fn finish(&mut self, out: &mut BytesMut) {
        match self {
            StreamTranslator::ChatToAnthropic(t) => t.finish(out),
            StreamTranslator::AnthropicToChat(t) => t.finish(out),
            StreamTranslator::ChatToResponses(t) => t.finish(out),
            StreamTranslator::ChatToGemini(t) => t.finish(out),
            StreamTranslator::GeminiToChat(t) => t.finish(out),
            StreamTranslator::Chained(t) => t.finish(out),
        }
    }

    /// The media type of what the client receives: events, except a
    /// Gemini stream asked for without `alt=sse` (one JSON array).
    pub fn content_type(&self) -> &'static str {
        match self {
            StreamTranslator::ChatToGemini(t) if t.is_json_array() => "application/json",
            StreamTranslator::Chained(t) => t.second.content_type(),
            _ => "text/event-stream",
        }
    }
}

/// Two translators in a row: each Chat event the first writes is read
/// back and fed to the second at once.
pub struct Chained {
    first: StreamTranslator,
    second: StreamTranslator,
    /// Reads the first translator's output; it writes whole events only,
    /// so nothing waits in it between calls.
    events: SseParser,
}

impl Chained {
    fn on_event(&mut self, event: Option<&str>, data: &str, out: &mut BytesMut) {
        let mut chat = BytesMut::new();
        self.first.on_event(event, data, &mut chat);
        self.pass(chat, out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        let mut chat = BytesMut::new();
        self.first.finish(&mut chat);
        self.pass(chat, out);
        self.second.finish(out);
    }

    fn pass(&mut self, chat: BytesMut, out: &mut BytesMut) {
        if chat.is_empty() {
            return;
        }
        let second = &mut self.second;
        self.events.push(&chat.freeze(), &mut |e| {
            if let Some(data) = e.text() {
                second.on_event(None, data, out);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{json, Value};

    fn translated(from: Format, to: Format, request: Value, stream: bool) -> Value {
        let body = request_body(from, to, request, stream).expect("translates");
        serde_json::from_slice(&body).expect("json")
    }

    fn request_body(
        from: Format,
        to: Format,
        body: Value,
        stream: bool,
    ) -> Result<Vec<u8>, Untranslatable> {
        request(
            from,
            to,
            body.to_string().as_bytes(),
            "up-model",
            4096,
            stream,
        )
    }

    #[test]
    fn anthropic_requests_reach_gemini_through_chat_with_signatures() {
        let gemini = translated(
            Format::Anthropic,
            Format::Gemini,
            json!({
                "model": "gemini-3-pro", "max_tokens": 300, "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "t", "signature": ""},
                        {"type": "tool_use", "id": "call_r_0~sig~R1NJRw==", "name": "weather", "input": {"city": "Paris"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_r_0~sig~R1NJRw==", "content": "sunny"},
                    ]},
                ],
                "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            }),
            false,
        );
        assert_eq!(
            gemini,
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "Weather?"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}},
                                                 "thoughtSignature": "R1NJRw=="}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "sunny"}}}]},
                ],
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "generationConfig": {"maxOutputTokens": 300},
                "tools": [{"functionDeclarations": [{"name": "weather", "parametersJsonSchema": {"type": "object"}}]}],
            })
        );
    }

    #[test]
    fn gemini_requests_reach_anthropic_through_chat() {
        let anthropic = translated(
            Format::Gemini,
            Format::Anthropic,
            json!({"systemInstruction": {"parts": [{"text": "Sys"}]},
                   "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                   "generationConfig": {"stopSequences": ["X"], "topK": 3}}),
            true,
        );
        assert_eq!(
            anthropic,
            json!({"model": "up-model", "max_tokens": 4096, "system": "Sys",
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                   "stop_sequences": ["X"], "stream": true})
        );
        // The second hop's refusal names the Chat field, and says so.
        let refused = request_body(
            Format::Gemini,
            Format::Anthropic,
            json!({"contents": [{"parts": [{"text": "Hi"}]}],
                   "generationConfig": {"responseMimeType": "application/json"}}),
            false,
        )
        .unwrap_err();
        assert_eq!(refused.field, "response_format");
        assert!(refused
            .why
            .ends_with("(in the request's Chat Completions form)"));
        let responses = translated(
            Format::Responses,
            Format::Gemini,
            json!({"model": "m", "instructions": "Sys", "input": "Hello", "max_output_tokens": 9}),
            false,
        );
        assert_eq!(
            responses["contents"],
            json!([{"role": "user", "parts": [{"text": "Hello"}]}])
        );
        assert_eq!(
            responses["systemInstruction"],
            json!({"parts": [{"text": "Sys"}]})
        );
    }

    #[test]
    fn whole_answers_go_back_through_chat() {
        let gemini_answer = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Hmm.", "thought": true},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lH"},
            ]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 40, "cachedContentTokenCount": 10,
                              "candidatesTokenCount": 5, "thoughtsTokenCount": 3},
            "responseId": "g1",
        });
        let answer = AnswerTranslation::new(
            Format::Gemini,
            Format::Anthropic,
            "client-model",
            false,
            b"{}",
        );
        let body = answer.whole(gemini_answer.to_string().as_bytes()).unwrap();
        let anthropic: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            anthropic["content"][0],
            json!({"type": "thinking", "thinking": "Hmm.", "signature": ""})
        );
        assert_eq!(
            anthropic["content"][1],
            json!({"type": "tool_use", "id": "call_g1_0~sig~U0lH", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(anthropic["stop_reason"], "tool_use");
        assert_eq!(
            anthropic["usage"],
            json!({"input_tokens": 30, "output_tokens": 8, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0})
        );
        let anthropic_answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "Hi there"}], "stop_reason": "max_tokens",
            "usage": {"input_tokens": 30, "output_tokens": 3, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 50}});
        let answer = AnswerTranslation::new(
            Format::Anthropic,
            Format::Gemini,
            "client-model",
            false,
            b"{}",
        );
        let gemini: Value = serde_json::from_slice(
            &answer
                .whole(anthropic_answer.to_string().as_bytes())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            gemini,
            json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi there"}]},
                                "finishReason": "MAX_TOKENS", "index": 0}],
                "usageMetadata": {"promptTokenCount": 280, "cachedContentTokenCount": 200,
                                  "candidatesTokenCount": 3, "totalTokenCount": 283},
                "modelVersion": "client-model",
                "responseId": "1",
            })
        );
    }

    #[test]
    fn anthropic_signatures_survive_a_round_trip_through_a_gemini_client() {
        let claude_answer = json!({"id": "msg_9", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need weather.", "signature": "QU5USFJPUElD"},
                {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Rome"}},
            ],
            "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7}});
        let answer = AnswerTranslation::new(Format::Anthropic, Format::Gemini, "m", false, b"{}");
        let gemini: Value =
            serde_json::from_slice(&answer.whole(claude_answer.to_string().as_bytes()).unwrap())
                .unwrap();
        let model_turn = gemini["candidates"][0]["content"].clone();
        assert_eq!(
            model_turn["parts"],
            json!([
                {"text": "Need weather.", "thought": true},
                {"functionCall": {"id": "toolu_9", "name": "weather", "args": {"city": "Rome"}},
                 "thoughtSignature": "QU5USFJPUElD"},
            ])
        );
        // The Gemini client's next turn echoes the model turn as it got it.
        let anthropic = translated(
            Format::Gemini,
            Format::Anthropic,
            json!({"contents": [
                {"role": "user", "parts": [{"text": "Weather?"}]},
                model_turn,
                {"role": "user", "parts": [{"functionResponse": {"id": "toolu_9", "name": "weather",
                                                                  "response": {"result": "rain"}}}]},
            ]}),
            false,
        );
        assert_eq!(
            anthropic["messages"][1]["content"],
            json!([
                {"type": "thinking", "thinking": "Need weather.", "signature": "QU5USFJPUElD"},
                {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Rome"}},
            ])
        );
        assert_eq!(
            anthropic["messages"][2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "toolu_9", "content": "rain"}])
        );
    }

    #[test]
    fn anthropic_signatures_survive_a_round_trip_through_a_responses_client() {
        let claude_answer = json!({"id": "msg_9", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need weather.", "signature": "QU5USFJPUElD"},
                {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Rome"}},
            ],
            "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7}});
        let request = br#"{"model":"m","input":"Weather?","tools":[{"type":"function","name":"weather","parameters":{"type":"object"}}]}"#;
        let answer =
            AnswerTranslation::new(Format::Anthropic, Format::Responses, "m", false, request);
        let response: Value =
            serde_json::from_slice(&answer.whole(claude_answer.to_string().as_bytes()).unwrap())
                .unwrap();
        let call = response["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["type"] == "function_call")
            .unwrap()
            .clone();
        assert_eq!(call["name"], "weather");
        // Codex echoes the answer's output items (the reasoning summary and
        // the call) and adds the call's output on the next turn.
        let mut input = vec![json!({"role": "user", "content": "Weather?"})];
        input.extend(response["output"].as_array().unwrap().iter().cloned());
        input.push(
            json!({"type": "function_call_output", "call_id": call["call_id"], "output": "rain"}),
        );
        let anthropic = translated(
            Format::Responses,
            Format::Anthropic,
            json!({"model": "m", "input": input}),
            false,
        );
        let turn = &anthropic["messages"][1]["content"];
        assert_eq!(
            turn[0],
            json!({"type": "thinking", "thinking": "Need weather.", "signature": "QU5USFJPUElD"}),
            "{anthropic}"
        );
        assert_eq!(
            turn[1],
            json!({"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Rome"}})
        );
        assert_eq!(
            anthropic["messages"][2]["content"][0]["tool_use_id"],
            "toolu_9"
        );
    }

    /// Feeds `bytes` cut at `cut` (0: whole) through an SSE parser into
    /// `translator`, as the gateway does.
    fn run(bytes: &[u8], cut: usize, mut translator: StreamTranslator) -> String {
        let mut parser = SseParser::default();
        let mut out = BytesMut::new();
        let pieces = match cut {
            0 => vec![bytes],
            n => vec![&bytes[..n], &bytes[n..]],
        };
        for piece in pieces {
            parser.push(&Bytes::copy_from_slice(piece), &mut |e| {
                if let Some(data) = e.text() {
                    translator.on_event(None, data, &mut out);
                }
            });
        }
        translator.finish(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn anthropic_stream() -> Vec<u8> {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
                "content": [], "usage": {"input_tokens": 30, "cache_read_input_tokens": 200, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            json!({"type": "message_stop"}),
        ];
        events
            .iter()
            .flat_map(|e| {
                format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).into_bytes()
            })
            .collect()
    }

    #[test]
    fn anthropic_streams_reach_a_gemini_client_event_by_event() {
        let answer = AnswerTranslation::new(Format::Anthropic, Format::Gemini, "gm", false, b"{}");
        let whole = run(&anthropic_stream(), 0, answer.stream().unwrap());
        let chunks: Vec<Value> = whole
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let texts: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["candidates"][0]["content"]["parts"][0]["text"])
            .collect();
        assert_eq!(texts, [&json!("Hel"), &json!("lo"), &json!("")]);
        assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            chunks[2]["usageMetadata"],
            json!({"promptTokenCount": 230, "cachedContentTokenCount": 200, "candidatesTokenCount": 2, "totalTokenCount": 232})
        );
        for cut in 1..anthropic_stream().len() {
            assert_eq!(
                run(&anthropic_stream(), cut, answer.stream().unwrap()),
                whole,
                "cut at {cut}"
            );
        }
        let array = AnswerTranslation::new(Format::Anthropic, Format::Gemini, "gm", false, b"{}")
            .json_array_stream(true)
            .stream()
            .unwrap();
        assert_eq!(array.content_type(), "application/json");
    }

    #[test]
    fn gemini_streams_reach_an_anthropic_client_event_by_event() {
        let chunk = |parts: Value, finish: Option<&str>| {
            let mut c = json!({"candidates": [{"content": {"role": "model", "parts": parts}}], "responseId": "r",
                "usageMetadata": {"promptTokenCount": 40, "cachedContentTokenCount": 10, "candidatesTokenCount": 2}});
            if let Some(finish) = finish {
                c["candidates"][0]["finishReason"] = json!(finish);
            }
            format!("data: {c}\r\n\r\n")
        };
        let bytes = [
            chunk(json!([{"text": "Hi"}]), None),
            chunk(json!([{"text": " you"}]), Some("STOP")),
        ]
        .concat()
        .into_bytes();
        let answer = AnswerTranslation::new(Format::Gemini, Format::Anthropic, "cm", false, b"{}");
        let whole = run(&bytes, 0, answer.stream().unwrap());
        let names: Vec<&str> = whole
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let delta: Value = whole
            .split("\n\n")
            .find_map(|e| e.strip_prefix("event: message_delta\ndata: "))
            .map(|data| serde_json::from_str(data).unwrap())
            .unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            delta["usage"],
            json!({"input_tokens": 30, "output_tokens": 2, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0})
        );
        for cut in 1..bytes.len() {
            assert_eq!(
                run(&bytes, cut, answer.stream().unwrap()),
                whole,
                "cut at {cut}"
            );
        }
    }

    fn chat_stream() -> Vec<u8> {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let events = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
        ];
        let mut out: Vec<u8> = events
            .iter()
            .flat_map(|e| format!("data: {e}\n\n").into_bytes())
            .collect();
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    fn gemini_stream() -> Vec<u8> {
        let chunk = |text: &str, last: bool| {
            let mut candidate =
                json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
            if last {
                candidate["finishReason"] = json!("STOP");
            }
            json!({"candidates": [candidate], "responseId": "r1",
                   "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "totalTokenCount": 11}})
        };
        [chunk("Hel", false), chunk("lo", true)]
            .iter()
            .flat_map(|e| format!("data: {e}\r\n\r\n").into_bytes())
            .collect()
    }

    /// `text` without the digits of its `"created"` and `"created_at"`
    /// times, which follow the wall clock.
    fn without_clock(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("\"created") {
            let (head, tail) = rest.split_at(at);
            out.push_str(head);
            let colon = tail.find(':').map_or(tail.len(), |c| c + 1);
            out.push_str(&tail[..colon]);
            rest = tail[colon..].trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out.push_str(rest);
        out
    }

    /// Every stream translation gives the same client bytes however the
    /// upstream's bytes are cut, and says "Hello".
    #[test]
    fn every_stream_translation_is_indifferent_to_where_bytes_are_cut() {
        let upstreams = [
            (Format::Chat, chat_stream()),
            (Format::Anthropic, anthropic_stream()),
            (Format::Gemini, gemini_stream()),
        ];
        let clients = [
            Format::Chat,
            Format::Anthropic,
            Format::Gemini,
            Format::Responses,
        ];
        let mut pairs = 0;
        for (from, bytes) in &upstreams {
            for to in clients.into_iter().filter(|to| to != from) {
                let answer = AnswerTranslation::new(*from, to, "m", true, br#"{"model":"m"}"#);
                let whole = run(bytes, 0, answer.stream().expect("a stream translator"));
                let text: String = whole
                    .split("\n\n")
                    .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .map(|v| {
                        let pick = |v: &Value| v.as_str().unwrap_or("").to_string();
                        pick(&v["choices"][0]["delta"]["content"])
                            + &pick(&v["delta"]["text"])
                            + &pick(&v["candidates"][0]["content"]["parts"][0]["text"])
                            + &(if v["type"] == "response.output_text.delta" {
                                pick(&v["delta"])
                            } else {
                                String::new()
                            })
                    })
                    .collect();
                assert_eq!(text, "Hello", "{from:?} -> {to:?}: {whole}");
                for cut in 1..bytes.len() {
                    let again = run(bytes, cut, answer.stream().unwrap());
                    assert_eq!(
                        without_clock(&again),
                        without_clock(&whole),
                        "{from:?} -> {to:?} cut at {cut}"
                    );
                }
                pairs += 1;
            }
        }
        assert_eq!(pairs, 9);
    }
}
