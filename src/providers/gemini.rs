//! Gemini API (`type = "gemini"`): `{base_url}/v1beta/models/{model}:{method}`
//! with the channel's key in `x-goog-api-key`. The client's `?key=` is never
//! forwarded; the rest of its query is, `alt=sse` included: without it a
//! stream is one JSON array, read like a non-stream body.
//!
//! Usage is `usageMetadata`: `promptTokenCount` includes
//! `cachedContentTokenCount` (split so each is billed once), output is
//! `candidatesTokenCount + thoughtsTokenCount`. Streams repeat it on chunks
//! with running totals; the last one counts. The adapter also reads Gemini
//! answers relayed by Vertex.

use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;

use super::head::UpstreamHead;
use super::openai::Tail;
use super::{BaseUrl, Upstream};
use super::{
    ClientRequest, CountAdapter, Endpoint, GeminiMethod, Meter, PassThrough, Prepared,
    ResponseAdapter,
};
use crate::tokenizer::OutputEstimate;
use crate::usage::{Units, Usage};

pub fn prepare(channel: &Upstream, upstream: &BaseUrl, req: ClientRequest<'_>) -> Result<Prepared> {
    let Endpoint::Gemini(method) = req.endpoint else {
        return Err(super::internal(
            "gemini serves Gemini endpoints only".into(),
        ));
    };
    let model = super::encode_segment(channel.upstream_model(req.model));
    let path = format!("/v1beta/models/{model}:{}", method.as_str());
    let query = upstream_query(req.header);
    let target = super::target(upstream, &path, &query);
    let head = UpstreamHead::forwarding(
        "POST",
        &target,
        req.header,
        &[],
        upstream,
        ("x-goog-api-key", &[channel.api_key.as_bytes()]),
        req.body.len(),
    )?;
    Ok(Prepared {
        head: head.finish(),
        body: req.body.clone(),
        adapter: adapter_for(method, req.header),
    })
}

/// The client's query without its credentials (its `key`, and any other
/// parameter holding the secret it presented).
pub fn upstream_query(client: &RequestHeader) -> Vec<(String, String)> {
    crate::auth::forwarded_query(client)
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn query_pairs(client: &RequestHeader) -> impl Iterator<Item = (&str, &str)> {
    client
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Whether a Gemini client asked for events (`alt=sse`): without it a
/// stream is one JSON array.
pub fn wants_sse(client: &RequestHeader) -> bool {
    query_pairs(client).any(|(k, v)| k == "alt" && v == "sse")
}

/// The adapter for a Gemini answer: SSE when the client asked `alt=sse`,
/// otherwise one JSON document (or, for streams, one JSON array).
pub fn adapter_for(method: GeminiMethod, client: &RequestHeader) -> Box<dyn ResponseAdapter> {
    let sse = wants_sse(client);
    match method {
        GeminiMethod::CountTokens => Box::new(CountAdapter),
        _ => Box::new(GeminiAdapter::new(sse)),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
    /// Image models: the candidates' tokens by modality.
    #[serde(default)]
    candidates_tokens_details: Vec<ModalityCount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    #[serde(default)]
    modality: String,
    #[serde(default)]
    token_count: u64,
}

impl UsageMetadata {
    /// Output image tokens (modality `IMAGE`), billed apart as
    /// `image_output`; part of `candidatesTokenCount`.
    pub fn image_tokens(&self) -> u64 {
        (self.candidates_tokens_details.iter())
            .filter(|d| d.modality == "IMAGE")
            .map(|d| d.token_count)
            .sum::<u64>()
            .min(self.candidates_token_count.unwrap_or(0))
    }

    /// Tokens by kind; output image tokens are left out of `output`
    /// ([`Self::image_tokens`]).
    pub fn to_usage(&self) -> Usage {
        let prompt =
            self.prompt_token_count.unwrap_or(0) + self.tool_use_prompt_token_count.unwrap_or(0);
        let cached = self.cached_content_token_count.unwrap_or(0).min(prompt);
        Usage {
            input: prompt - cached,
            output: self.candidates_token_count.unwrap_or(0) - self.image_tokens()
                + self.thoughts_token_count.unwrap_or(0),
            cached_input: cached,
            cache_write: 0,
            cache_write_1h: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(default, borrow)]
    candidates: Vec<Candidate<'a>>,
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Deserialize)]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default, borrow)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

/// Reads Gemini usage: `usageMetadata` of stream chunks or a whole body.
#[derive(Default)]
pub struct GeminiMeter {
    usage: Option<Usage>,
    image_output: u64,
    estimated_output: OutputEstimate,
}

/// Reads a Gemini answer; never changes a byte.
pub type GeminiAdapter = PassThrough<GeminiMeter>;

impl Meter for GeminiMeter {
    fn observe(&mut self, data: &str) {
        let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(data) else {
            return;
        };
        for c in &chunk.candidates {
            for p in c.content.iter().flat_map(|c| &c.parts) {
                if let Some(t) = &p.text {
                    self.estimated_output.push(t);
                }
            }
        }
        if let Some(u) = chunk.usage_metadata {
            self.usage = Some(u.to_usage());
            self.image_output = u.image_tokens();
        }
    }

    fn observe_tail(&mut self, tail: &Tail) {
        if let Some(u) = tail.last_value::<UsageMetadata>("usageMetadata") {
            self.usage = Some(u.to_usage());
            self.image_output = u.image_tokens();
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn units(&self) -> Units {
        Units {
            image_output: self.image_output,
            ..Units::default()
        }
    }

    fn estimated_output_tokens(&self) -> u64 {
        self.estimated_output.tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn usage_splits_cached_and_adds_thoughts() {
        let u: UsageMetadata = serde_json::from_str(
            r#"{"promptTokenCount":1000,"cachedContentTokenCount":600,"candidatesTokenCount":40,"thoughtsTokenCount":60,"totalTokenCount":1100}"#,
        )
        .unwrap();
        assert_eq!(
            u.to_usage(),
            Usage {
                input: 400,
                output: 100,
                cached_input: 600,
                cache_write: 0,
                cache_write_1h: 0
            }
        );
    }

    #[test]
    fn stream_keeps_the_last_running_total() {
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":9,\"totalTokenCount\":9}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" world!!\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"totalTokenCount\":13}}\r\n\r\n",
        );
        let mut a = GeminiAdapter::new(true);
        for b in stream.as_bytes().chunks(5) {
            assert_eq!(&a.on_chunk(Bytes::copy_from_slice(b))[..], b);
        }
        a.on_end();
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 9,
                output: 4,
                ..Default::default()
            })
        );
        assert_eq!(a.estimated_output_tokens(), 3); // cl100k tokens of the text
    }

    #[test]
    fn query_drops_the_client_key_only() {
        let h = RequestHeader::build(
            "POST",
            b"/v1beta/models/g:streamGenerateContent?key=sk-1&alt=sse&x=1",
            None,
        )
        .unwrap();
        assert_eq!(
            upstream_query(&h),
            vec![("alt".into(), "sse".into()), ("x".into(), "1".into())]
        );
        let h =
            RequestHeader::build("POST", b"/v1beta/models/g:generateContent?key=k", None).unwrap();
        assert!(upstream_query(&h).is_empty());
    }

    #[test]
    fn json_array_stream_usage_from_its_last_chunk() {
        let h =
            RequestHeader::build("POST", b"/v1beta/models/g:streamGenerateContent", None).unwrap();
        let mut a = adapter_for(GeminiMethod::StreamGenerate, &h);
        let body = concat!(
            "[{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}]}}], \"usageMetadata\": {\"promptTokenCount\": 5, \"totalTokenCount\": 5}}\n",
            ",\r\n{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there\"}]}, \"finishReason\": \"STOP\"}], \"usageMetadata\": {\"promptTokenCount\": 5, \"candidatesTokenCount\": 2, \"totalTokenCount\": 7}}\n]"
        );
        for piece in body.as_bytes().chunks(9) {
            assert_eq!(&a.on_chunk(Bytes::copy_from_slice(piece))[..], piece);
        }
        a.on_end();
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 5,
                output: 2,
                ..Default::default()
            })
        );
    }

    #[test]
    fn image_output_tokens_are_counted_apart() {
        let u: UsageMetadata = serde_json::from_str(
            r#"{"promptTokenCount":40,"candidatesTokenCount":1294,"thoughtsTokenCount":2,
                "candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1290},
                                           {"modality":"TEXT","tokenCount":4}]}"#,
        )
        .unwrap();
        assert_eq!(u.image_tokens(), 1290);
        assert_eq!((u.to_usage().input, u.to_usage().output), (40, 6));
        let mut meter = GeminiMeter::default();
        meter.observe(r#"{"candidates":[],"usageMetadata":{"candidatesTokenCount":5,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":9}]}}"#);
        // Never more image tokens than candidates tokens.
        assert_eq!(
            (meter.units().image_output, meter.usage().unwrap().output),
            (5, 0)
        );
    }
}
