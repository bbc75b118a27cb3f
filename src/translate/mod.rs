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

mod shared;

use bytes::BytesMut;

pub use shared::{push_event, Format, Untranslatable};

use anthropic_chat::{AnthropicToChatStream, ChatToAnthropicStream};

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
        _ => Err(Untranslatable::new(
            "model",
            format!("no translation from {from:?} to {to:?}"),
        )),
    }
}

/// A whole (non-stream) answer of a channel speaking `from`, for a client
/// speaking `to`; `model` is the client-facing model name.
pub fn response(from: Format, to: Format, body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    match (from, to) {
        (Format::Chat, Format::Anthropic) => {
            anthropic_chat::chat_response_to_anthropic(body, model)
        }
        (Format::Anthropic, Format::Chat) => {
            anthropic_chat::anthropic_response_to_chat(body, model)
        }
        _ => Err(format!("no translation from {from:?} to {to:?}")),
    }
}

/// A streamed answer on its way from a channel's format to the client's,
/// one event at a time.
pub enum StreamTranslator {
    ChatToAnthropic(ChatToAnthropicStream),
    AnthropicToChat(AnthropicToChatStream),
}

impl StreamTranslator {
    /// `None` where there is no translation between the two formats.
    /// `include_usage`: the client asked for a usage chunk (OpenAI).
    pub fn new(from: Format, to: Format, model: &str, include_usage: bool) -> Option<Self> {
        Some(match (from, to) {
            (Format::Chat, Format::Anthropic) => {
                StreamTranslator::ChatToAnthropic(ChatToAnthropicStream::new(model))
            }
            (Format::Anthropic, Format::Chat) => {
                StreamTranslator::AnthropicToChat(AnthropicToChatStream::new(model, include_usage))
            }
            _ => return None,
        })
    }

    /// One upstream event: its `event:` name, if any, and its data.
    pub fn on_event(&mut self, event: Option<&str>, data: &str, out: &mut BytesMut) {
        match self {
            StreamTranslator::ChatToAnthropic(t) => t.on_event(data, out),
            StreamTranslator::AnthropicToChat(t) => t.on_event(event, data, out),
        }
    }

    /// The clean end of the upstream stream: closes what is still open.
    pub fn finish(&mut self, out: &mut BytesMut) {
        match self {
            StreamTranslator::ChatToAnthropic(t) => t.finish(out),
            StreamTranslator::AnthropicToChat(t) => t.finish(out),
        }
    }
}
