//! Format translation: a client's API format to a channel's and back, so
//! that any client reaches any channel (docs/api.md, "Formats and
//! channels"). OpenAI Chat Completions is the pivot: every other format is
//! translated to and from it, one file per format, as pure functions and
//! stream state machines with their tests beside them.
//!
//! Translators never see the network: a request body goes in and a body
//! comes out; a stream's events go in one at a time and the client's
//! events come out, so memory per stream stays bounded (open tool-call
//! arguments aside) and the first event is not delayed.

pub mod anthropic_chat;
pub mod responses_chat;

mod shared;

use bytes::BytesMut;

pub use shared::{push_event, Format, Untranslatable};

use anthropic_chat::{AnthropicToChatStream, ChatToAnthropicStream};
use responses_chat::{ChatToResponsesStream, RequestEcho};

/// A client's request body in the channel's format `to`. `model` is the
/// upstream model name; `default_max_tokens` fills Anthropic's required
/// `max_tokens` when the client gave none.
pub fn request(
    from: Format,
    to: Format,
    body: &[u8],
    model: &str,
    default_max_tokens: u64,
) -> Result<Vec<u8>, Untranslatable> {
    match (from, to) {
        (Format::Anthropic, Format::Chat) => anthropic_chat::anthropic_request_to_chat(body, model),
        (Format::Chat, Format::Anthropic) => {
            anthropic_chat::chat_request_to_anthropic(body, model, default_max_tokens)
        }
        (Format::Responses, Format::Chat) => responses_chat::responses_request_to_chat(body, model),
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
        }
    }

    /// A whole (non-stream) answer.
    pub fn whole(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let model = self.model.as_str();
        match (self.from, self.to, &self.echo) {
            (Format::Chat, Format::Anthropic, _) => {
                anthropic_chat::chat_response_to_anthropic(body, model)
            }
            (Format::Anthropic, Format::Chat, _) => {
                anthropic_chat::anthropic_response_to_chat(body, model)
            }
            (Format::Chat, Format::Responses, Some(echo)) => {
                responses_chat::chat_response_to_responses_for(body, model, echo)
            }
            (from, to, _) => Err(format!("no translation from {from:?} to {to:?}")),
        }
    }

    /// The translator of a streamed answer; `None` where there is none.
    pub fn stream(&self) -> Option<StreamTranslator> {
        let model = self.model.as_str();
        Some(match (self.from, self.to, &self.echo) {
            (Format::Chat, Format::Anthropic, _) => {
                StreamTranslator::ChatToAnthropic(ChatToAnthropicStream::new(model))
            }
            (Format::Anthropic, Format::Chat, _) => StreamTranslator::AnthropicToChat(
                AnthropicToChatStream::new(model, self.include_usage),
            ),
            (Format::Chat, Format::Responses, Some(echo)) => StreamTranslator::ChatToResponses(
                Box::new(ChatToResponsesStream::for_request(model, echo.clone())),
            ),
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
}

impl StreamTranslator {
    /// One upstream event: its `event:` name, if any, and its data.
    pub fn on_event(&mut self, event: Option<&str>, data: &str, out: &mut BytesMut) {
        match self {
            StreamTranslator::ChatToAnthropic(t) => t.on_event(data, out),
            StreamTranslator::AnthropicToChat(t) => t.on_event(event, data, out),
            StreamTranslator::ChatToResponses(t) => t.on_event(data, out),
        }
    }

    /// The clean end of the upstream stream: closes what is still open.
    pub fn finish(&mut self, out: &mut BytesMut) {
        match self {
            StreamTranslator::ChatToAnthropic(t) => t.finish(out),
            StreamTranslator::AnthropicToChat(t) => t.finish(out),
            StreamTranslator::ChatToResponses(t) => t.finish(out),
        }
    }
}
