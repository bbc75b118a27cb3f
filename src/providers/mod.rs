//! Upstream provider adapters: one file per channel type. An adapter turns
//! the client's request into the upstream's (URL, auth, body) and reads the
//! answer on its way back (usage, and any rewrite the client needs).
//!
//! A channel speaks its own formats natively: `openai` and `azure` the
//! OpenAI format, `anthropic` and `bedrock` the Anthropic Messages format,
//! `gemini` the Gemini format, `vertex` Gemini or Anthropic (Claude on
//! Vertex) by model, `mock` all three. Other client formats reach it by
//! translation ([`translated`], [`reach`]) unless it sets `translate =
//! false`; routing skips channels that can serve the request's format
//! neither way.

pub mod anthropic;
pub mod azure;
mod base_url;
pub mod bedrock;
pub mod gemini;
pub mod head;
pub mod images;
pub mod media;
pub mod mock;
pub mod mock_media;
pub mod openai;
pub mod translated;
pub mod vertex;

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::body::BodyProbe;
use std::collections::BTreeMap;

pub use base_url::{parse_base_url, BaseUrl};

use crate::config::schema::{ChannelDef, ChannelType};
use crate::errors::Dialect;
use crate::media::MediaOp;
use crate::translate::Format;
use crate::usage::{Units, Usage};

/// A Gemini method, the part after `:` in `/v1beta/models/{model}:{method}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiMethod {
    Generate,
    StreamGenerate,
    CountTokens,
    EmbedContent,
    /// Imagen's `:predict`: only sent upstream (OpenAI image generations
    /// translated, [`images`]), never a client endpoint.
    Predict,
}

impl GeminiMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            GeminiMethod::Generate => "generateContent",
            GeminiMethod::StreamGenerate => "streamGenerateContent",
            GeminiMethod::CountTokens => "countTokens",
            GeminiMethod::EmbedContent => "embedContent",
            GeminiMethod::Predict => "predict",
        }
    }

    fn parse(s: &str) -> Option<GeminiMethod> {
        Some(match s {
            "generateContent" => GeminiMethod::Generate,
            "streamGenerateContent" => GeminiMethod::StreamGenerate,
            "countTokens" => GeminiMethod::CountTokens,
            "embedContent" => GeminiMethod::EmbedContent,
            _ => return None,
        })
    }
}

/// An OpenAI-format operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiOp {
    /// /v1/chat/completions
    Chat,
    /// /v1/completions
    Completions,
    /// /v1/embeddings
    Embeddings,
    /// /v1/responses
    Responses,
    /// /v1/responses/compact: a whole conversation compacted into opaque
    /// items (Codex uses it on long sessions). Only hosts with the
    /// Responses API serve it; there is nothing to translate it to.
    ResponsesCompact,
    /// /v1/images/generations
    ImageGenerations,
    /// /v1/images/edits (multipart)
    ImageEdits,
    /// /v1/audio/transcriptions (multipart)
    AudioTranscriptions,
    /// /v1/audio/translations (multipart)
    AudioTranslations,
    /// /v1/audio/speech: audio bytes back.
    AudioSpeech,
    /// /v1/moderations
    Moderations,
    /// /v1/rerank: OpenAI-compatible hosts that have it (`rerank = true`).
    Rerank,
}

impl OpenAiOp {
    /// How a media operation is priced; `None` for token-priced ones.
    pub fn media(self) -> Option<MediaOp> {
        match self {
            OpenAiOp::ImageGenerations | OpenAiOp::ImageEdits => Some(MediaOp::Image),
            OpenAiOp::AudioTranscriptions | OpenAiOp::AudioTranslations => {
                Some(MediaOp::Transcribe)
            }
            OpenAiOp::AudioSpeech => Some(MediaOp::Speech),
            _ => None,
        }
    }

    /// Operations with request and answer shapes of their own (images,
    /// audio, moderation, rerank): never translated.
    pub fn is_surface(self) -> bool {
        self.media().is_some() || matches!(self, OpenAiOp::Moderations | OpenAiOp::Rerank)
    }

    /// Upload endpoints: their bodies may be `multipart/form-data`.
    pub fn takes_multipart(self) -> bool {
        matches!(
            self,
            OpenAiOp::ImageEdits | OpenAiOp::AudioTranscriptions | OpenAiOp::AudioTranslations
        )
    }
}

/// A relayed client endpoint (docs/api.md, "Endpoints"): which API format it speaks and
/// which operation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    OpenAi(OpenAiOp),
    /// POST /v1/messages.
    AnthropicMessages,
    /// POST /v1/messages/count_tokens.
    AnthropicCountTokens,
    /// POST /v1beta/models/{model}:{method}.
    Gemini(GeminiMethod),
}

impl Endpoint {
    /// How a media endpoint is priced; `None` for every other endpoint.
    pub fn media(self) -> Option<MediaOp> {
        match self {
            Endpoint::OpenAi(op) => op.media(),
            _ => None,
        }
    }

    /// The relayed endpoint for a POST to `path`, and for Gemini paths the
    /// model named in the path.
    pub fn classify(path: &str) -> Option<(Endpoint, Option<&str>)> {
        match path {
            "/v1/chat/completions" => Some((Endpoint::OpenAi(OpenAiOp::Chat), None)),
            "/v1/completions" => Some((Endpoint::OpenAi(OpenAiOp::Completions), None)),
            "/v1/embeddings" => Some((Endpoint::OpenAi(OpenAiOp::Embeddings), None)),
            "/v1/responses" => Some((Endpoint::OpenAi(OpenAiOp::Responses), None)),
            "/v1/responses/compact" => Some((Endpoint::OpenAi(OpenAiOp::ResponsesCompact), None)),
            "/v1/images/generations" => Some((Endpoint::OpenAi(OpenAiOp::ImageGenerations), None)),
            "/v1/images/edits" => Some((Endpoint::OpenAi(OpenAiOp::ImageEdits), None)),
            "/v1/audio/transcriptions" => {
                Some((Endpoint::OpenAi(OpenAiOp::AudioTranscriptions), None))
            }
            "/v1/audio/translations" => Some((Endpoint::OpenAi(OpenAiOp::AudioTranslations), None)),
            "/v1/audio/speech" => Some((Endpoint::OpenAi(OpenAiOp::AudioSpeech), None)),
            "/v1/moderations" => Some((Endpoint::OpenAi(OpenAiOp::Moderations), None)),
            "/v1/rerank" => Some((Endpoint::OpenAi(OpenAiOp::Rerank), None)),
            "/v1/messages" => Some((Endpoint::AnthropicMessages, None)),
            "/v1/messages/count_tokens" => Some((Endpoint::AnthropicCountTokens, None)),
            _ => {
                let rest = path.strip_prefix("/v1beta/models/")?;
                let (model, method) = rest.rsplit_once(':')?;
                if model.is_empty() || model.contains('/') {
                    return None;
                }
                Some((Endpoint::Gemini(GeminiMethod::parse(method)?), Some(model)))
            }
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Endpoint::OpenAi(_) => Dialect::OpenAi,
            Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => Dialect::Anthropic,
            Endpoint::Gemini(_) => Dialect::Gemini,
        }
    }

    /// The API format the endpoint speaks.
    pub fn format(self) -> Format {
        match self {
            Endpoint::OpenAi(OpenAiOp::Responses | OpenAiOp::ResponsesCompact) => Format::Responses,
            Endpoint::OpenAi(_) => Format::Chat,
            Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => Format::Anthropic,
            Endpoint::Gemini(_) => Format::Gemini,
        }
    }

    /// Counting endpoints: answered without generation, never billed.
    pub fn is_count(self) -> bool {
        matches!(
            self,
            Endpoint::AnthropicCountTokens | Endpoint::Gemini(GeminiMethod::CountTokens)
        )
    }
}

/// A config error in a channel's type-specific settings, with the field it
/// is about (so the error can point at that line).
#[derive(Debug)]
pub struct SettingError {
    pub field: &'static str,
    pub message: String,
}

/// A [`SettingError`] about `field`.
pub fn bad_setting(field: &'static str, message: impl Into<String>) -> SettingError {
    SettingError {
        field,
        message: message.into(),
    }
}

/// A channel's provider, each type with the settings only it has (the
/// TOML stays flat: [`Provider::from_def`] reads a `[[channels]]` item), so
/// a type and settings of another type cannot be put together.
pub enum Provider {
    Openai,
    Azure(azure::Settings),
    Anthropic,
    Gemini,
    Vertex(vertex::Settings),
    Bedrock(bedrock::Settings),
    /// Answered in-process (`mock`), for demos and tests.
    Mock,
}

impl Provider {
    /// Builds a channel's provider from its definition. `expand(field,
    /// value)` resolves `${VAR}`s; `None` means a variable is unset, which
    /// disables the channel: then `Ok(None)`, and the type-specific settings
    /// are left unchecked. `Err` is a config error about this channel.
    pub fn from_def(
        def: &ChannelDef,
        expand: &mut dyn FnMut(&str, &str) -> Option<String>,
    ) -> std::result::Result<Option<Provider>, SettingError> {
        Ok(Some(match def.kind {
            ChannelType::Azure => Provider::Azure(azure::Settings::from_def(def, expand)?),
            ChannelType::Bedrock => Provider::Bedrock(bedrock::Settings::from_def(def, expand)?),
            ChannelType::Vertex => match vertex::Settings::from_def(def, expand)? {
                Some(settings) => Provider::Vertex(settings),
                None => return Ok(None),
            },
            plain => {
                refuse_foreign_settings(def)?;
                match plain {
                    ChannelType::Openai => Provider::Openai,
                    ChannelType::Anthropic => Provider::Anthropic,
                    ChannelType::Gemini => Provider::Gemini,
                    _ => Provider::Mock,
                }
            }
        }))
    }

    pub fn channel_type(&self) -> ChannelType {
        match self {
            Provider::Openai => ChannelType::Openai,
            Provider::Azure(_) => ChannelType::Azure,
            Provider::Anthropic => ChannelType::Anthropic,
            Provider::Gemini => ChannelType::Gemini,
            Provider::Vertex(_) => ChannelType::Vertex,
            Provider::Bedrock(_) => ChannelType::Bedrock,
            Provider::Mock => ChannelType::Mock,
        }
    }

    /// The provider's public endpoint, for channels that leave `base_url`
    /// out; `None` where there is none (`mock`, Azure's own resources).
    pub fn default_base_url(&self) -> Option<String> {
        match self {
            Provider::Openai => Some("https://api.openai.com".into()),
            Provider::Anthropic => Some("https://api.anthropic.com".into()),
            Provider::Gemini => Some("https://generativelanguage.googleapis.com".into()),
            Provider::Bedrock(s) => Some(s.default_base_url()),
            Provider::Vertex(s) => Some(s.default_base_url()),
            Provider::Azure(_) | Provider::Mock => None,
        }
    }
}

/// The types without settings of their own refuse every such setting, so
/// that a typo'd type is not silently served without its settings.
fn refuse_foreign_settings(def: &ChannelDef) -> std::result::Result<(), SettingError> {
    for (field, set) in [
        ("api_version", def.api_version.is_some()),
        ("azure_style", def.azure_style.is_some()),
        ("region", def.region.is_some()),
        ("aws_access_key_id", def.aws_access_key_id.is_some()),
        ("aws_secret_access_key", def.aws_secret_access_key.is_some()),
        ("aws_session_token", def.aws_session_token.is_some()),
        ("project", def.project.is_some()),
        ("location", def.location.is_some()),
        ("credentials_file", def.credentials_file.is_some()),
        ("credentials_json", def.credentials_json.is_some()),
        ("token_uri", def.token_uri.is_some()),
    ] {
        if set {
            return Err(bad_setting(
                field,
                format!("`{field}` does not apply to type \"{}\"", def.kind.as_str()),
            ));
        }
    }
    Ok(())
}

/// How a channel serves a client endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// In the channel's own format.
    Native,
    /// Translated to the channel's format, and its answers back.
    Translated(Format),
}

/// Whether and how a channel of type `kind` serves `endpoint` for the
/// upstream model `model`, given the channel's `translate` and `responses`
/// settings. Mock speaks everything.
pub fn reach(
    kind: ChannelType,
    translate: bool,
    responses: bool,
    endpoint: Endpoint,
    model: &str,
) -> Option<Reach> {
    use ChannelType as T;
    // Google's image models make OpenAI image generations by translation.
    // Google's image models make OpenAI images by translation (Imagen
    // generations only).
    if let (
        Endpoint::OpenAi(op @ (OpenAiOp::ImageGenerations | OpenAiOp::ImageEdits)),
        T::Gemini | T::Vertex,
    ) = (endpoint, kind)
    {
        let backend = images::backend(model);
        let served = match op {
            OpenAiOp::ImageEdits => backend == Some(images::Backend::GeminiImage),
            _ => backend.is_some(),
        };
        return (translate && served).then_some(Reach::Translated(Format::Gemini));
    }
    let native = match endpoint {
        Endpoint::OpenAi(OpenAiOp::Responses | OpenAiOp::ResponsesCompact)
            if matches!(kind, T::Openai | T::Azure) =>
        {
            responses
        }
        // Vertex speaks one format per model (see `channel_format`).
        Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens | Endpoint::Gemini(_)
            if kind == T::Vertex =>
        {
            serves(kind, endpoint) && channel_format(kind, model) == Some(endpoint.format())
        }
        other => serves(kind, other),
    };
    if native {
        return Some(Reach::Native);
    }
    // Embeddings, legacy completions and compaction are not translated.
    // Counting is "translated" in that the gateway answers it from its
    // tokenizer (relay/failover.rs): the channel counts in another format.
    let translatable = matches!(
        endpoint,
        Endpoint::OpenAi(OpenAiOp::Chat | OpenAiOp::Responses)
            | Endpoint::AnthropicMessages
            | Endpoint::AnthropicCountTokens
            | Endpoint::Gemini(
                GeminiMethod::Generate | GeminiMethod::StreamGenerate | GeminiMethod::CountTokens
            )
    );
    if !translate || !translatable {
        return None;
    }
    let to = channel_format(kind, model)?;
    (to != endpoint.format()).then_some(Reach::Translated(to))
}

/// The format a channel of type `kind` is sent translated requests in for
/// the upstream model `model`; `None` for the mock, which speaks all.
/// Vertex hosts Claude (Anthropic Messages, under `publishers/anthropic`)
/// beside Gemini (`publishers/google`): the model's name tells which, as
/// Vertex's own model ids do (`claude-sonnet-4-5@20250929`,
/// `gemini-2.5-flash`).
pub fn channel_format(kind: ChannelType, model: &str) -> Option<Format> {
    use ChannelType as T;
    match kind {
        T::Openai | T::Azure => Some(Format::Chat),
        T::Anthropic | T::Bedrock => Some(Format::Anthropic),
        T::Gemini => Some(Format::Gemini),
        T::Vertex if vertex::is_claude(model) => Some(Format::Anthropic),
        T::Vertex => Some(Format::Gemini),
        T::Mock => None,
    }
}

/// Whether a channel of type `kind` can serve `endpoint` natively.
pub fn serves(kind: ChannelType, endpoint: Endpoint) -> bool {
    use ChannelType as T;
    match endpoint {
        // Azure has no moderation endpoint; rerank also needs the channel's
        // `rerank = true` (see `Channel::reach`).
        Endpoint::OpenAi(OpenAiOp::Moderations | OpenAiOp::Rerank) => {
            matches!(kind, T::Openai | T::Mock)
        }
        Endpoint::OpenAi(_) => matches!(kind, T::Openai | T::Azure | T::Mock),
        Endpoint::AnthropicMessages => {
            matches!(kind, T::Anthropic | T::Bedrock | T::Vertex | T::Mock)
        }
        Endpoint::AnthropicCountTokens => {
            matches!(kind, T::Anthropic | T::Bedrock | T::Vertex | T::Mock)
        }
        // Vertex embeddings use `:predict` with another body shape.
        Endpoint::Gemini(GeminiMethod::EmbedContent) => matches!(kind, T::Gemini | T::Mock),
        Endpoint::Gemini(GeminiMethod::Predict) => matches!(kind, T::Gemini | T::Vertex),
        Endpoint::Gemini(_) => matches!(kind, T::Gemini | T::Vertex | T::Mock),
    }
}

/// What the adapters need of an enabled channel: its provider, where it
/// is and its credentials.
pub struct Upstream {
    pub provider: Provider,
    /// `None` for the in-process `mock`.
    pub base_url: Option<BaseUrl>,
    pub api_key: String,
    pub model_map: BTreeMap<String, String>,
}

impl Upstream {
    /// The model name to send upstream for a client-facing name.
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_map.get(model).map_or(model, String::as_str)
    }
}

/// Reads (and where needed rewrites) one upstream answer on its way to the
/// client. One per attempt; its state is what lets streams be metered
/// without keeping them.
pub trait ResponseAdapter: Send {
    /// Adjusts the response head before it is sent to the client.
    fn response_head(&mut self, _head: &mut ResponseHeader) {}
    /// What the client receives for this upstream chunk (may be empty).
    fn on_chunk(&mut self, chunk: Bytes) -> Bytes;
    /// At the clean end of the upstream body: any bytes still held back.
    fn on_end(&mut self) -> Bytes;
    /// The adapter changes body bytes, so an upstream Content-Length is void.
    fn rewrites_body(&self) -> bool;
    /// Usage as reported by the provider, once seen.
    fn usage(&self) -> Option<Usage>;
    /// Media units the answer reported (images, audio duration).
    fn units(&self) -> Units {
        Units::default()
    }
    /// Output tokens estimated from the answer text seen so far.
    fn estimated_output_tokens(&self) -> u64;
}

/// The answer of a counting endpoint: passed through, bills nothing.
pub struct CountAdapter;

impl ResponseAdapter for CountAdapter {
    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        chunk
    }
    fn on_end(&mut self) -> Bytes {
        Bytes::new()
    }
    fn rewrites_body(&self) -> bool {
        false
    }
    fn usage(&self) -> Option<Usage> {
        Some(Usage::default())
    }
    fn estimated_output_tokens(&self) -> u64 {
        0
    }
}

/// The provider-specific half of reading an answer that is passed through
/// unchanged: one stream event at a time, or a whole body's usage from its
/// tail.
pub trait Meter: Send {
    /// Reads one stream event's data.
    fn observe(&mut self, data: &str);
    /// Reads the usage of a whole (non-stream) body.
    fn observe_tail(&mut self, tail: &openai::Tail);
    fn usage(&self) -> Option<Usage>;
    /// Media units the answer reported.
    fn units(&self) -> Units {
        Units::default()
    }
    fn estimated_output_tokens(&self) -> u64;
}

/// Events whose data is not text are passed on unread ([`crate::sse::SseEvent::text`]).
fn observe_event(meter: &mut impl Meter, e: &crate::sse::SseEvent<'_>) {
    if let Some(text) = e.text() {
        meter.observe(text);
    }
}

/// A [`ResponseAdapter`] that never changes a byte: stream events, or the
/// tail of a whole body, go to its [`Meter`].
pub struct PassThrough<M> {
    stream: bool,
    sse: crate::sse::SseParser,
    tail: openai::Tail,
    meter: M,
}

impl<M: Meter + Default> PassThrough<M> {
    pub fn new(stream: bool) -> Self {
        PassThrough {
            stream,
            sse: crate::sse::SseParser::default(),
            tail: openai::Tail::default(),
            meter: M::default(),
        }
    }
}

impl<M: Meter> ResponseAdapter for PassThrough<M> {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        if let Some(stream) = crate::sse::declared_event_stream(head) {
            self.stream = stream;
        }
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        if self.stream {
            let meter = &mut self.meter;
            self.sse.push(&chunk, &mut |e| observe_event(meter, &e));
        } else {
            self.tail.push(&chunk);
        }
        chunk
    }

    fn on_end(&mut self) -> Bytes {
        if self.stream {
            let meter = &mut self.meter;
            self.sse.finish(&mut |e| observe_event(meter, &e));
        } else {
            self.meter.observe_tail(&self.tail);
        }
        Bytes::new()
    }

    fn rewrites_body(&self) -> bool {
        false
    }

    fn usage(&self) -> Option<Usage> {
        self.meter.usage()
    }

    fn units(&self) -> Units {
        self.meter.units()
    }

    fn estimated_output_tokens(&self) -> u64 {
        self.meter.estimated_output_tokens()
    }
}

/// An upstream request ready to send, and the adapter for its answer.
pub struct Prepared {
    /// The request head in its wire form ([`head::UpstreamHead`]).
    pub head: Bytes,
    pub body: Bytes,
    pub adapter: Box<dyn ResponseAdapter>,
}

/// What the client asked for, as routing understood it.
#[derive(Clone, Copy)]
pub struct ClientRequest<'a> {
    pub endpoint: Endpoint,
    pub header: &'a RequestHeader,
    pub body: &'a Bytes,
    /// For Gemini endpoints, `model` and `stream` come from the path.
    pub probe: &'a BodyProbe,
    /// The model as priced (an alias resolved); the channel's `model_map`
    /// decides what goes upstream. The body may still name an alias
    /// (`probe.model`): adapters that send the body's `model` replace it
    /// whenever it differs from the upstream name.
    pub model: &'a str,
    /// The client asked for the 1M-token context window (a `[1m]` alias):
    /// Claude channels turn on the provider's switch for it.
    pub long_context: bool,
}

impl ClientRequest<'_> {
    /// The body with `model` set to `upstream_model`, where it names
    /// anything else (a `model_map` target, or an alias the client sent).
    pub fn body_for_model(&self, upstream_model: &str) -> Bytes {
        match self.probe.model_span {
            Some(span) if self.probe.model.as_deref() != Some(upstream_model) => {
                if self.probe.multipart {
                    crate::body::replace_raw(self.body, span, upstream_model)
                } else {
                    crate::body::replace_string(self.body, span, upstream_model)
                }
            }
            _ => self.body.clone(),
        }
    }
}

fn internal(msg: String) -> Box<pingora_error::Error> {
    pingora_error::Error::explain(pingora_error::ErrorType::InternalError, msg)
}

/// Shapes the client's request for a channel at `url`.
pub async fn prepare(
    channel: &Upstream,
    url: &BaseUrl,
    req: ClientRequest<'_>,
) -> Result<Prepared> {
    if !serves(channel.provider.channel_type(), req.endpoint) {
        // Routing never picks such a channel; this guards the invariant.
        return Err(internal(format!(
            "channel type {} cannot serve {:?}",
            channel.provider.channel_type().as_str(),
            req.endpoint
        )));
    }
    match &channel.provider {
        Provider::Openai => openai::prepare(channel, url, req),
        Provider::Anthropic => anthropic::prepare(channel, url, req),
        Provider::Gemini => gemini::prepare(channel, url, req),
        Provider::Azure(s) => azure::prepare(channel, s, url, req),
        Provider::Bedrock(s) => bedrock::prepare(channel, s, url, req),
        Provider::Vertex(s) => vertex::prepare(channel, s, url, req).await,
        Provider::Mock => Err(internal("the mock channel is answered in-process".into())),
    }
}

/// `base_path` + `path` + `query` as a request target. Built by pushes, not
/// `format!`: the formatting machinery costs ~800 instructions a call, and
/// this runs for every request.
pub fn target(upstream: &BaseUrl, path: &str, query: &[(String, String)]) -> String {
    let mut out = String::with_capacity(upstream.base_path.len() + path.len() + 64);
    out.push_str(&upstream.base_path);
    out.push_str(path);
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Percent-encodes one path segment. Bedrock model ids hold `:` (the AWS
/// SDKs send `%3A`); Vertex ids hold `@`, which Google's SDKs send as is.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_relayed_paths() {
        assert_eq!(
            Endpoint::classify("/v1/messages"),
            Some((Endpoint::AnthropicMessages, None))
        );
        assert_eq!(
            Endpoint::classify("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Some((
                Endpoint::Gemini(GeminiMethod::StreamGenerate),
                Some("gemini-2.5-flash")
            ))
        );
        assert_eq!(Endpoint::classify("/v1beta/models/x:predict"), None);
        assert_eq!(Endpoint::classify("/v1beta/models/:countTokens"), None);
        assert_eq!(Endpoint::classify("/v1/other"), None);
    }

    #[test]
    fn channels_serve_only_their_own_formats() {
        use ChannelType as T;
        let gen = Endpoint::Gemini(GeminiMethod::Generate);
        let msgs = Endpoint::AnthropicMessages;
        assert!(
            serves(T::Mock, Endpoint::OpenAi(OpenAiOp::Chat))
                && serves(T::Mock, msgs)
                && serves(T::Mock, gen)
        );
        assert!(!serves(T::Openai, msgs) && !serves(T::Azure, gen));
        assert!(serves(T::Bedrock, msgs) && serves(T::Bedrock, Endpoint::AnthropicCountTokens));
        assert!(serves(T::Vertex, msgs) && serves(T::Vertex, gen));
        assert!(!serves(
            T::Vertex,
            Endpoint::Gemini(GeminiMethod::EmbedContent)
        ));
        assert!(
            !serves(T::Gemini, msgs) && !serves(T::Anthropic, Endpoint::OpenAi(OpenAiOp::Chat))
        );
    }

    #[test]
    fn reach_serves_every_cell_of_the_format_table() {
        use ChannelType as T;
        use Format as F;
        let chat = Endpoint::OpenAi(OpenAiOp::Chat);
        let responses = Endpoint::OpenAi(OpenAiOp::Responses);
        let messages = Endpoint::AnthropicMessages;
        let generate = Endpoint::Gemini(GeminiMethod::Generate);
        let stream = Endpoint::Gemini(GeminiMethod::StreamGenerate);
        let count = Endpoint::Gemini(GeminiMethod::CountTokens);
        let on = |kind, endpoint, model| reach(kind, true, true, endpoint, model);
        let translated = |to| Some(Reach::Translated(to));
        let native = Some(Reach::Native);
        // Chat clients.
        assert_eq!(on(T::Anthropic, chat, "claude-x"), translated(F::Anthropic));
        assert_eq!(
            on(T::Bedrock, chat, "anthropic.claude"),
            translated(F::Anthropic)
        );
        assert_eq!(
            on(T::Gemini, chat, "gemini-2.5-flash"),
            translated(F::Gemini)
        );
        assert_eq!(
            on(T::Vertex, chat, "gemini-2.5-flash"),
            translated(F::Gemini)
        );
        assert_eq!(
            on(T::Vertex, chat, "claude-sonnet-4-5@20250929"),
            translated(F::Anthropic)
        );
        // Anthropic clients.
        assert_eq!(on(T::Openai, messages, "gpt-4o"), translated(F::Chat));
        assert_eq!(
            on(T::Gemini, messages, "gemini-2.5-flash"),
            translated(F::Gemini)
        );
        assert_eq!(
            on(T::Vertex, messages, "gemini-2.5-flash"),
            translated(F::Gemini)
        );
        assert_eq!(on(T::Vertex, messages, "claude-sonnet-4-5"), native);
        // Gemini clients.
        for endpoint in [generate, stream] {
            assert_eq!(on(T::Openai, endpoint, "gpt-4o"), translated(F::Chat));
            assert_eq!(on(T::Azure, endpoint, "gpt-4o"), translated(F::Chat));
            assert_eq!(
                on(T::Anthropic, endpoint, "claude-x"),
                translated(F::Anthropic)
            );
            assert_eq!(
                on(T::Bedrock, endpoint, "claude-x"),
                translated(F::Anthropic)
            );
            assert_eq!(
                on(T::Vertex, endpoint, "claude-sonnet-4-5"),
                translated(F::Anthropic)
            );
            assert_eq!(on(T::Vertex, endpoint, "gemini-2.5-pro"), native);
            assert_eq!(on(T::Gemini, endpoint, "gemini-2.5-pro"), native);
        }
        // Responses clients.
        assert_eq!(
            reach(T::Openai, true, false, responses, "m"),
            translated(F::Chat)
        );
        assert_eq!(
            on(T::Anthropic, responses, "claude-x"),
            translated(F::Anthropic)
        );
        assert_eq!(
            on(T::Gemini, responses, "gemini-2.5-flash"),
            translated(F::Gemini)
        );
        assert_eq!(
            on(T::Vertex, responses, "claude-x"),
            translated(F::Anthropic)
        );
        // Counting on a channel of another format is answered by the
        // gateway (reach says so by "translated"); embeddings are not
        // translated; nothing is with `translate = false`.
        assert_eq!(on(T::Openai, count, "gpt-4o"), translated(F::Chat));
        assert_eq!(on(T::Vertex, count, "claude-x"), translated(F::Anthropic));
        assert_eq!(
            on(T::Openai, Endpoint::AnthropicCountTokens, "gpt-4o"),
            translated(F::Chat)
        );
        assert_eq!(
            on(
                T::Vertex,
                Endpoint::AnthropicCountTokens,
                "gemini-2.5-flash"
            ),
            translated(F::Gemini)
        );
        assert_eq!(
            on(T::Gemini, Endpoint::OpenAi(OpenAiOp::Embeddings), "g"),
            None
        );
        assert_eq!(reach(T::Gemini, false, true, chat, "g"), None);
        assert_eq!(on(T::Mock, generate, "anything"), native);
    }

    #[test]
    fn media_endpoints_are_served_natively_only() {
        use ChannelType as T;
        let on = |kind, op| reach(kind, true, true, Endpoint::OpenAi(op), "m");
        for op in [
            OpenAiOp::ImageGenerations,
            OpenAiOp::ImageEdits,
            OpenAiOp::AudioTranscriptions,
            OpenAiOp::AudioTranslations,
            OpenAiOp::AudioSpeech,
        ] {
            assert!(op.is_surface());
            for kind in [T::Openai, T::Azure, T::Mock] {
                assert_eq!(on(kind, op), Some(Reach::Native), "{op:?}");
            }
            for kind in [T::Anthropic, T::Bedrock, T::Gemini, T::Vertex] {
                assert_eq!(on(kind, op), None, "{op:?} on {kind:?}");
            }
        }
        for op in [OpenAiOp::Moderations, OpenAiOp::Rerank] {
            assert_eq!(on(T::Openai, op), Some(Reach::Native));
            assert_eq!(on(T::Mock, op), Some(Reach::Native));
            assert_eq!(on(T::Azure, op), None);
            assert_eq!(on(T::Anthropic, op), None);
        }
        // Google's image models, by translation (generations only).
        let gen = Endpoint::OpenAi(OpenAiOp::ImageGenerations);
        let translated = Some(Reach::Translated(Format::Gemini));
        for kind in [T::Gemini, T::Vertex] {
            assert_eq!(
                reach(kind, true, true, gen, "gemini-2.5-flash-image"),
                translated
            );
            assert_eq!(
                reach(kind, true, true, gen, "imagen-4.0-generate-001"),
                translated
            );
            assert_eq!(reach(kind, true, true, gen, "gemini-2.5-flash"), None);
            assert_eq!(
                reach(kind, false, true, gen, "imagen-4.0-generate-001"),
                None
            );
            let edits = Endpoint::OpenAi(OpenAiOp::ImageEdits);
            assert_eq!(
                reach(kind, true, true, edits, "gemini-2.5-flash-image"),
                translated
            );
            assert_eq!(
                reach(kind, true, true, edits, "imagen-4.0-generate-001"),
                None
            );
        }
        assert!(serves(T::Vertex, Endpoint::Gemini(GeminiMethod::Predict)));
        assert!(!serves(T::Mock, Endpoint::Gemini(GeminiMethod::Predict)));
        assert!(
            OpenAiOp::ImageEdits.takes_multipart() && !OpenAiOp::ImageGenerations.takes_multipart()
        );
        assert!(!OpenAiOp::Chat.is_surface());
    }

    #[test]
    fn compaction_goes_only_to_hosts_with_the_responses_api() {
        use ChannelType as T;
        let compact = Endpoint::OpenAi(OpenAiOp::ResponsesCompact);
        let reach = |kind, translate, responses| reach(kind, translate, responses, compact, "m");
        assert_eq!(reach(T::Openai, true, true), Some(Reach::Native));
        assert_eq!(reach(T::Azure, false, true), Some(Reach::Native));
        // Nothing to translate a compaction to.
        assert_eq!(reach(T::Openai, true, false), None);
        assert_eq!(reach(T::Anthropic, true, true), None);
        assert_eq!(reach(T::Mock, true, true), Some(Reach::Native));
    }

    fn load(channel: &str) -> Result<crate::config::Loaded, crate::config::ConfigError> {
        let text = format!(
            "[[groups]]\nname = \"g\"\nratio = 1\nall_channels = true\n\n\
             [[models]]\nname = \"m\"\ninput = 1\n\n[[channels]]\nname = \"c\"\n{channel}"
        );
        let env = |name: &str| (name == "SET").then(|| "value".to_string());
        crate::config::load_text(
            "t.toml",
            text,
            &env,
            &crate::health::HealthRegistry::default(),
            1,
            &mut Default::default(),
        )
    }

    #[test]
    fn native_settings_are_validated_at_their_line() {
        let e = load("type = \"azure\"\nbase_url = \"https://x\"\n\nazure_style = \"v2\"\n")
            .err()
            .unwrap();
        assert_eq!(e.line, Some(15), "{e}");
        assert!(e.message.contains("azure_style = \"v2\""), "{e}");
        let e = load("type = \"anthropic\"\napi_key = \"k\"\nrerank = true\n")
            .err()
            .unwrap();
        assert_eq!(e.line, Some(14), "{e}");
        assert!(
            e.message
                .contains("`rerank` does not apply to type \"anthropic\""),
            "{e}"
        );
        let ok = load("type = \"openai\"\napi_key = \"k\"\nrerank = true\n").unwrap();
        let rerank = Endpoint::OpenAi(OpenAiOp::Rerank);
        assert_eq!(
            ok.snapshot.channels[0].reach(rerank, "m"),
            Some(Reach::Native)
        );
        let off = load("type = \"openai\"\napi_key = \"k\"\n").unwrap();
        assert_eq!(off.snapshot.channels[0].reach(rerank, "m"), None);
        let e = load("type = \"bedrock\"\napi_key = \"k\"\n").err().unwrap();
        assert!(e.message.contains("needs region"), "{e}");
        let e = load("type = \"openai\"\napi_key = \"k\"\nregion = \"us-east-1\"\n")
            .err()
            .unwrap();
        assert_eq!(e.line, Some(14), "{e}");
        assert!(e.message.contains("`region` does not apply"), "{e}");
        let e = load("type = \"bedrock\"\nregion = \"r\"\naws_access_key_id = \"a\"\n")
            .err()
            .unwrap();
        assert!(e.message.contains("set both"), "{e}");
        // An unset variable disables the channel instead of failing.
        let ok = load(
            "type = \"bedrock\"\nregion = \"${UNSET}\"\naws_access_key_id = \"${SET}\"\n\
             aws_secret_access_key = \"${SET}\"\n",
        )
        .unwrap();
        assert!(!ok.snapshot.channels[0].enabled());
        assert!(ok.warnings.iter().any(|w| w.contains("${UNSET}")));
        let ok = load(
            "type = \"bedrock\"\nregion = \"${SET}\"\naws_access_key_id = \"${SET}\"\n\
             aws_secret_access_key = \"${SET}\"\n",
        )
        .unwrap();
        let ch = &ok.snapshot.channels[0];
        assert!(ch.enabled());
        assert_eq!(
            ch.upstream
                .as_ref()
                .unwrap()
                .base_url
                .as_ref()
                .unwrap()
                .host,
            "bedrock-runtime.value.amazonaws.com"
        );
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(
            encode_segment("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(encode_segment("claude@2024"), "claude@2024");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
