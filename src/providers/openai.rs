//! OpenAI and OpenAI-compatible hosts (vLLM, DeepSeek, OpenRouter, ...):
//! the client's path is appended to `base_url`, the key goes in
//! `Authorization: Bearer`.
//!
//! Streams of chat/completions are billed from the usage chunk that
//! `stream_options.include_usage` makes upstream send. When the client did
//! not ask for it, the gateway asks on its behalf and removes that one
//! chunk again, so the client sees exactly what upstream would have sent.

use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use serde::Deserialize;

use super::head::{self, UpstreamHead};
use super::{BaseUrl, Upstream};
use super::{ClientRequest, Prepared, ResponseAdapter};
use crate::body::{self, BodyProbe};
use crate::sse::{SseEvent, SseParser};
use crate::tokenizer::OutputEstimate;
use crate::usage::Usage;

/// Paths whose streams carry usage only when asked for.
fn takes_include_usage(path: &str) -> bool {
    path.ends_with("/chat/completions") || path.ends_with("/completions")
}

pub fn prepare(channel: &Upstream, upstream: &BaseUrl, req: ClientRequest<'_>) -> Result<Prepared> {
    let (body, adapter) = shape(channel, req);
    let target = super::target(upstream, &head::client_target(req.header), &[]);
    let head = UpstreamHead::forwarding(
        req.header.method.as_str(),
        &target,
        req.header,
        &[],
        upstream,
        ("authorization", &[b"Bearer ", channel.api_key.as_bytes()]),
        body.len(),
    )?;
    Ok(Prepared {
        head: head.finish(),
        body,
        adapter,
    })
}

/// The upstream body (mapped model, usage asked for on streams) and the
/// adapter for its answer; shared with Azure.
pub fn shape(channel: &Upstream, req: ClientRequest<'_>) -> (Bytes, Box<dyn ResponseAdapter>) {
    let probe = req.probe;
    let mut out_body = req.body_for_model(channel.upstream_model(req.model));
    if let Some(op) = req.endpoint.media() {
        let adapter = super::media::MediaAdapter::new(op, probe.stream);
        return (out_body, Box::new(adapter));
    }
    let inject_usage =
        probe.stream && !probe.include_usage && takes_include_usage(req.header.uri.path());
    if inject_usage {
        out_body = with_include_usage(&out_body, probe);
    }
    (
        out_body,
        Box::new(OpenAiAdapter::new(probe.stream, inject_usage)),
    )
}

/// The body with `stream_options.include_usage = true`.
fn with_include_usage(body: &Bytes, probe: &BodyProbe) -> Bytes {
    if !probe.has_stream_options {
        return body::insert_first_member(body, r#""stream_options":{"include_usage":true}"#);
    }
    // Rare: the client sent stream_options without include_usage. Rewrite
    // the document (key order may change; the meaning does not).
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.clone();
    };
    if let Some(opts) = doc
        .get_mut("stream_options")
        .and_then(|o| o.as_object_mut())
    {
        opts.insert("include_usage".into(), serde_json::Value::Bool(true));
    }
    Bytes::from(doc.to_string())
}

/// The `usage` object of chat/completions/embeddings (`prompt_tokens`...)
/// and of the Responses API (`input_tokens`...).
#[derive(Deserialize)]
pub struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// Rerank hosts (vLLM, Jina) report only this.
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

impl OpenAiUsage {
    /// Prompt tokens include cached ones: split them so each is billed once.
    /// Reasoning tokens are already part of the completion/output count.
    pub fn to_usage(&self) -> Usage {
        let prompt = self
            .prompt_tokens
            .or(self.input_tokens)
            .or(self.total_tokens)
            .unwrap_or(0);
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .or(self.input_tokens_details.as_ref())
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(prompt);
        Usage {
            input: prompt - cached,
            output: self.completion_tokens.or(self.output_tokens).unwrap_or(0),
            cached_input: cached,
            cache_write: 0,
            cache_write_1h: 0,
        }
    }
}

/// The fields of a stream event that metering reads.
#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(default)]
    choices: Option<Vec<ChoiceDelta<'a>>>,
    usage: Option<OpenAiUsage>,
    /// Responses API: `response.output_text.delta` carries `delta`.
    #[serde(borrow)]
    delta: Option<std::borrow::Cow<'a, str>>,
    /// Responses API: `response.completed` carries the final response.
    response: Option<ResponseObject>,
}

#[derive(Deserialize)]
struct ChoiceDelta<'a> {
    #[serde(borrow)]
    delta: Option<DeltaContent<'a>>,
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaContent<'a> {
    #[serde(borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponseObject {
    usage: Option<OpenAiUsage>,
}

/// Keeps the last bytes of a body, where providers put `usage`.
#[derive(Default)]
pub struct Tail {
    buf: Vec<u8>,
}

const TAIL_BYTES: usize = 64 * 1024;

impl Tail {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > 2 * TAIL_BYTES {
            self.buf.drain(..self.buf.len() - TAIL_BYTES);
        }
    }

    /// Parses the value of the last `"key":` in the kept bytes. Inside JSON
    /// strings a quote is escaped, so `"key"` followed by `:` is a real key.
    /// Found by walking the quotes backwards: no needle to format and no
    /// substring searcher to build for a search that runs once per answer.
    pub fn last_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let buf = &self.buf[..];
        let mut end = buf.len();
        while let Some(close) = memchr::memrchr(b'"', &buf[..end]) {
            end = close;
            let open = close.checked_sub(key.len() + 1)?;
            if buf[open] != b'"' || &buf[open + 1..close] != key.as_bytes() {
                continue;
            }
            let after = &buf[close + 1..];
            let colon = after.iter().position(|b| !b.is_ascii_whitespace());
            if let Some(c) = colon.filter(|&c| after[c] == b':') {
                let mut values =
                    serde_json::Deserializer::from_slice(&after[c + 1..]).into_iter::<T>();
                if let Some(Ok(v)) = values.next() {
                    return Some(v);
                }
            }
            end = open;
        }
        None
    }
}

pub struct OpenAiAdapter {
    stream: bool,
    /// Remove the usage-only chunk: the gateway asked for it, not the client.
    strip_usage_chunk: bool,
    sse: SseParser,
    tail: Tail,
    usage: Option<Usage>,
    estimated_output: OutputEstimate,
}

impl OpenAiAdapter {
    pub fn new(stream: bool, strip_usage_chunk: bool) -> Self {
        OpenAiAdapter {
            stream,
            strip_usage_chunk,
            sse: SseParser::default(),
            tail: Tail::default(),
            usage: None,
            estimated_output: OutputEstimate::default(),
        }
    }

    /// Reads one event; `true` if it must be kept from the client.
    fn observe(&mut self, e: &SseEvent<'_>) -> bool {
        let data = e.text().unwrap_or("");
        if data.is_empty() || data == "[DONE]" {
            return false;
        }
        let Ok(event) = serde_json::from_str::<StreamEvent<'_>>(data) else {
            return false;
        };
        for c in event.choices.iter().flatten() {
            let text = c.delta.as_ref().and_then(|d| d.content.as_deref());
            if let Some(t) = text.or(c.text.as_deref()) {
                self.estimated_output.push(t);
            }
        }
        if let Some(d) = &event.delta {
            self.estimated_output.push(d);
        }
        let usage = event
            .usage
            .as_ref()
            .or(event.response.as_ref().and_then(|r| r.usage.as_ref()));
        if let Some(u) = usage {
            self.usage = Some(u.to_usage());
            let usage_only = event.choices.as_ref().is_some_and(|c| c.is_empty());
            return self.strip_usage_chunk && usage_only;
        }
        false
    }
}

impl ResponseAdapter for OpenAiAdapter {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        // Read as the answer is, not as it was asked for; a JSON answer
        // to a stream request is passed on untouched.
        if let Some(stream) = crate::sse::declared_event_stream(head) {
            self.stream = stream;
            self.strip_usage_chunk &= stream;
        }
        if self.rewrites_body() {
            head.remove_header(&http::header::CONTENT_LENGTH);
        }
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        if !self.stream {
            self.tail.push(&chunk);
            return chunk;
        }
        let mut parser = std::mem::take(&mut self.sse);
        let out = if self.strip_usage_chunk {
            // Usually one event per chunk, passed on as the slice it is;
            // only several kept events are copied together.
            let mut kept = Bytes::new();
            let mut joined: Option<BytesMut> = None;
            parser.push(&chunk, &mut |e| {
                if self.observe(&e) {
                    return;
                }
                match &mut joined {
                    Some(j) => j.extend_from_slice(e.raw),
                    None if kept.is_empty() => kept = e.raw.clone(),
                    None => {
                        let mut j = BytesMut::from(&kept[..]);
                        j.extend_from_slice(e.raw);
                        joined = Some(j);
                    }
                }
            });
            joined.map_or(kept, BytesMut::freeze)
        } else {
            parser.push(&chunk, &mut |e| {
                self.observe(&e);
            });
            chunk
        };
        self.sse = parser;
        out
    }

    fn on_end(&mut self) -> Bytes {
        if !self.stream {
            if let Some(u) = self.tail.last_value::<OpenAiUsage>("usage") {
                self.usage = Some(u.to_usage());
            }
            return Bytes::new();
        }
        let mut parser = std::mem::take(&mut self.sse);
        let mut strip = false;
        let rest = parser.finish(&mut |e| strip = self.observe(&e));
        if self.strip_usage_chunk && !strip {
            rest
        } else {
            Bytes::new()
        }
    }

    fn rewrites_body(&self) -> bool {
        self.stream && self.strip_usage_chunk
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn estimated_output_tokens(&self) -> u64 {
        self.estimated_output.tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(adapter: &mut OpenAiAdapter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&adapter.on_chunk(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&adapter.on_end());
        out
    }

    const CHUNK: &[u8] =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"}}]}\n\n";
    const USAGE: &[u8] = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":40}}}\n\n";
    const DONE: &[u8] = b"data: [DONE]\n\n";

    #[test]
    fn injected_usage_chunk_is_read_then_removed() {
        // Cut into three chunks at every pair of places: events whole in a
        // chunk, several per chunk, and split across chunks.
        let stream = [CHUNK, CHUNK, USAGE, DONE].concat();
        for (a, b) in (0..=stream.len()).flat_map(|a| (a..=stream.len()).map(move |b| (a, b))) {
            let mut adapter = OpenAiAdapter::new(true, true);
            let out = run(&mut adapter, &[&stream[..a], &stream[a..b], &stream[b..]]);
            assert_eq!(out, [CHUNK, CHUNK, DONE].concat(), "split at {a}, {b}");
            assert_eq!(
                adapter.usage(),
                Some(Usage {
                    input: 60,
                    output: 7,
                    cached_input: 40,
                    cache_write: 0,
                    cache_write_1h: 0
                })
            );
        }
    }

    #[test]
    fn requested_usage_chunk_passes_through_untouched() {
        let stream = [CHUNK, USAGE, DONE].concat();
        let mut a = OpenAiAdapter::new(true, false);
        assert_eq!(run(&mut a, &[&stream]), stream);
        assert_eq!(a.usage().unwrap().input, 60);
        assert_eq!(a.estimated_output_tokens(), 2);
    }

    #[test]
    fn non_stream_usage_from_the_tail() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": 5"}}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        let mut a = OpenAiAdapter::new(false, false);
        let out = run(&mut a, &[&body[..30], &body[30..]]);
        assert_eq!(out, body);
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 12,
                output: 5,
                ..Default::default()
            })
        );
    }

    #[test]
    fn a_json_answer_to_a_stream_request_is_billed_from_its_body() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":7}}"#;
        for content_type in ["application/json", "application/json; charset=utf-8"] {
            let mut a = OpenAiAdapter::new(true, true);
            let mut head = ResponseHeader::build(200, None).unwrap();
            head.insert_header("content-type", content_type).unwrap();
            head.insert_header("content-length", body.len()).unwrap();
            a.response_head(&mut head);
            assert!(
                head.headers.get("content-length").is_some(),
                "passed on as sent"
            );
            assert_eq!(run(&mut a, &[&body[..20], &body[20..]]), body);
            assert_eq!(
                a.usage(),
                Some(Usage {
                    input: 11,
                    output: 7,
                    ..Default::default()
                })
            );
        }
        // And an event stream answering a non-stream request is read as one.
        let stream = [CHUNK, USAGE, DONE].concat();
        let mut a = OpenAiAdapter::new(false, false);
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.insert_header("content-type", "text/event-stream")
            .unwrap();
        a.response_head(&mut head);
        assert_eq!(run(&mut a, &[&stream]), stream);
        assert_eq!(a.usage().unwrap().output, 7);
    }

    #[test]
    fn tail_finds_the_last_real_key() {
        let value = |text: &str| {
            let mut tail = Tail::default();
            tail.push(text.as_bytes());
            tail.last_value::<u64>("usage")
        };
        assert_eq!(value(r#"{"usage":1,"x":{"usage" : 2}}"#), Some(2));
        // A value, a longer key, an escaped quote and an unparsable value
        // are passed over for the key before them.
        assert_eq!(value(r#"{"usage":3,"k":"usage"}"#), Some(3));
        assert_eq!(value(r#"{"usage":4,"xusage":5}"#), Some(4));
        assert_eq!(value(r#"{"usage":6,"t":"\"usage\": 7"}"#), Some(6));
        assert_eq!(value(r#"{"usage":8,"usage":{}}"#), Some(8));
        assert_eq!(value(r#"{"use":1}"#), None);
        assert_eq!(value(r#"usage":1"#), None);
        assert_eq!(value(""), None);
    }

    #[test]
    fn responses_api_usage_from_completed_event() {
        let stream = b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"abcdefgh\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":9}}}\n\n";
        let mut a = OpenAiAdapter::new(true, false);
        run(&mut a, &[stream]);
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 20,
                output: 9,
                cached_input: 10,
                cache_write: 0,
                cache_write_1h: 0
            })
        );
        assert_eq!(a.estimated_output_tokens(), 1);
    }

    #[test]
    fn include_usage_is_added_without_touching_other_bytes() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true}"#);
        let probe = body::probe(&body).unwrap();
        assert_eq!(
            &with_include_usage(&body, &probe)[..],
            br#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#
        );
        let body = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{}}"#);
        let probe = body::probe(&body).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&with_include_usage(&body, &probe)).unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);
    }
}
