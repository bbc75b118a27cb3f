//! A channel serving a client format it does not speak: the client's
//! request is translated to the channel's format before the channel's own
//! adapter shapes it, and the answer is translated back after that adapter
//! has read it. Usage is metered by the channel's adapter, from the
//! provider's own report, as for native requests.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use pingora_http::ResponseHeader;

use super::{
    BaseUrl, ClientRequest, Endpoint, GeminiMethod, OpenAiOp, Prepared, ResponseAdapter, Upstream,
};
use crate::body;
use crate::errors::{ApiError, Dialect};
use crate::sse::{SseEvent, SseParser};
use crate::translate::{self, AnswerTranslation, Format, StreamTranslator, Untranslatable};
use crate::usage::Usage;

/// Anthropic requires `max_tokens`; a client of another format may leave
/// it out. Then the model's `[[models]] max_output` is sent, or this.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The client's request translated to the channel's format `to`, then
/// shaped by the channel's own adapter as a native request would be. The
/// answer's adapter is wrapped to translate it back. `Err` is a request
/// that cannot be translated without changing its meaning: the client's
/// error, not the channel's. `max_output` is the model's output limit,
/// sent where the channel's format requires one and the client gave none.
pub async fn prepare(
    channel: &Upstream,
    url: &BaseUrl,
    req: ClientRequest<'_>,
    to: Format,
    max_output: u64,
) -> Result<pingora_error::Result<Prepared>, Untranslatable> {
    if let Endpoint::OpenAi(OpenAiOp::ImageGenerations | OpenAiOp::ImageEdits) = req.endpoint {
        return super::images::prepare(channel, url, req).await;
    }
    let from = req.endpoint.format();
    let model = channel.upstream_model(req.model);
    let stream = req.probe.stream;
    let body = translate::request(from, to, req.body, model, max_output, stream)?;
    let body = Bytes::from(body);
    // Our own output: a probe failure would be a translator bug.
    let mut probe = body::probe(&body).map_err(|why| Untranslatable::new("body", why))?;
    // A Gemini body does not say it streams; the method in the path does
    // (and `alt=sse` asks for events rather than one JSON array). The
    // adapters take the model from `model`, not from this path.
    probe.stream = stream;
    let (endpoint, path) = match (to, stream) {
        (Format::Chat, _) => (Endpoint::OpenAi(OpenAiOp::Chat), "/v1/chat/completions"),
        (Format::Anthropic, _) => (Endpoint::AnthropicMessages, "/v1/messages"),
        (Format::Responses, _) => (Endpoint::OpenAi(OpenAiOp::Responses), "/v1/responses"),
        (Format::Gemini, false) => (
            Endpoint::Gemini(GeminiMethod::Generate),
            "/v1beta/models/model:generateContent",
        ),
        (Format::Gemini, true) => (
            Endpoint::Gemini(GeminiMethod::StreamGenerate),
            "/v1beta/models/model:streamGenerateContent?alt=sse",
        ),
    };
    // The channel's adapter reads the path (and forwards the client's
    // headers) from the request head: the translated request's own.
    let mut header = req.header.clone();
    header.set_uri(http::Uri::from_static(path));
    let native = ClientRequest {
        endpoint,
        header: &header,
        body: &body,
        probe: &probe,
        model: req.model,
        long_context: req.long_context,
    };
    let prepared = super::prepare(channel, url, native).await.map(|mut p| {
        let json_array = from == Format::Gemini && !super::gemini::wants_sse(req.header);
        let answer = AnswerTranslation::new(to, from, req.model, req.probe.include_usage, req.body)
            .json_array_stream(json_array);
        p.adapter = Box::new(Translated::new(p.adapter, answer, from));
        p
    });
    Ok(prepared)
}

/// Translates the answer of a channel speaking `upstream` for a client
/// speaking `client`, around the channel's own adapter.
pub struct Translated {
    inner: Box<dyn ResponseAdapter>,
    answer: AnswerTranslation,
    client: Format,
    /// Set once the head shows an event stream with a success status.
    stream: Option<(SseParser, StreamTranslator)>,
    /// A whole answer (or an error), translated at its end.
    whole: BytesMut,
    status: u16,
}

impl Translated {
    pub fn new(inner: Box<dyn ResponseAdapter>, answer: AnswerTranslation, client: Format) -> Self {
        Translated {
            inner,
            answer,
            client,
            stream: None,
            whole: BytesMut::new(),
            status: 200,
        }
    }

    fn pass(&mut self, bytes: Bytes) -> Bytes {
        match &mut self.stream {
            Some((sse, translator)) => {
                let mut out = BytesMut::new();
                sse.push(&bytes, &mut |e| feed(translator, &e, &mut out));
                out.freeze()
            }
            None => {
                self.whole.extend_from_slice(&bytes);
                Bytes::new()
            }
        }
    }
}

fn feed(translator: &mut StreamTranslator, e: &SseEvent<'_>, out: &mut BytesMut) {
    if let Some(data) = e.text() {
        translator.on_event(event_name(e.raw), data, out);
    }
}

/// The `event:` field of a raw event, if it has one.
fn event_name(raw: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(raw).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("event:"))
        .map(str::trim)
}

impl ResponseAdapter for Translated {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        self.inner.response_head(head);
        self.status = head.status.as_u16();
        let event_stream = head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if event_stream && self.status < 400 {
            self.stream = self.answer.stream().map(|t| (SseParser::default(), t));
        }
        let content_type = match &self.stream {
            Some((_, translator)) => translator.content_type(),
            None => "application/json",
        };
        let _ = head.insert_header(CONTENT_TYPE, content_type);
        head.remove_header(&CONTENT_LENGTH);
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        let passed = self.inner.on_chunk(chunk);
        self.pass(passed)
    }

    fn on_end(&mut self) -> Bytes {
        let rest = self.inner.on_end();
        let mut out = BytesMut::from(&self.pass(rest)[..]);
        if let Some((sse, translator)) = &mut self.stream {
            sse.finish(&mut |e| feed(translator, &e, &mut out));
            translator.finish(&mut out);
            return out.freeze();
        }
        let whole = std::mem::take(&mut self.whole);
        let body = if self.status >= 400 {
            Ok(error_for_client(self.status, &whole, self.client))
        } else {
            self.answer.whole(&whole)
        };
        match body {
            Ok(body) => Bytes::from(body),
            Err(why) => {
                let message = format!("the provider's answer could not be translated: {why}");
                let error = ApiError::upstream(502, message);
                Bytes::from(error.body(dialect_of(self.client)))
            }
        }
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }

    fn units(&self) -> crate::usage::Units {
        self.inner.units()
    }

    fn estimated_output_tokens(&self) -> u64 {
        self.inner.estimated_output_tokens()
    }
}

/// An upstream error body in the client's dialect, its message kept.
pub(super) fn error_for_client(status: u16, body: &[u8], client: Format) -> Vec<u8> {
    let message = translate::anthropic_chat::upstream_error_message(body);
    ApiError::upstream(status, message).body(dialect_of(client))
}

fn dialect_of(format: Format) -> Dialect {
    match format {
        Format::Chat | Format::Responses => Dialect::OpenAi,
        Format::Anthropic => Dialect::Anthropic,
        Format::Gemini => Dialect::Gemini,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_read_from_the_raw_event() {
        assert_eq!(
            event_name(b"event: message_start\ndata: {}\n\n"),
            Some("message_start")
        );
        assert_eq!(event_name(b"data: {}\n\n"), None);
    }

    #[test]
    fn upstream_errors_reach_the_client_in_its_dialect() {
        let openai = br#"{"error":{"message":"bad tool","type":"invalid_request_error"}}"#;
        let body = error_for_client(400, openai, Format::Anthropic);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "bad tool");
        let body = error_for_client(429, b"slow down", Format::Chat);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
