//! Anthropic Messages API (`type = "anthropic"`): the client's path goes to
//! `base_url` as is, the channel's key in `x-api-key`, `anthropic-version`
//! (default below) and `anthropic-beta` pass through.
//!
//! Usage: `message_start` carries the input side (input_tokens, cache reads
//! and writes), `message_delta` the cumulative output (and, on newer API
//! versions, the input side again); a non-stream body has one `usage`.
//! `input_tokens` already excludes cache reads and writes. The adapter here
//! also reads Claude answers relayed by Bedrock and Vertex.

use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::head::{self, UpstreamHead};
use super::openai::Tail;
use super::{BaseUrl, Upstream};
use super::{ClientRequest, CountAdapter, Endpoint, Meter, PassThrough, Prepared, ResponseAdapter};
use crate::errors::{ApiError, Dialect};
use crate::tokenizer::OutputEstimate;
use crate::usage::Usage;

/// Sent when the client did not name an API version.
pub const DEFAULT_VERSION: &str = "2023-06-01";

pub fn prepare(channel: &Upstream, upstream: &BaseUrl, req: ClientRequest<'_>) -> Result<Prepared> {
    let out_body = req.body_for_model(channel.upstream_model(req.model));
    let target = super::target(upstream, &head::client_target(req.header), &[]);
    // The 1M-context switch joins the client's own betas in one header.
    let dropped: &[&str] = if req.long_context {
        &["anthropic-beta"]
    } else {
        &[]
    };
    let mut head = UpstreamHead::forwarding(
        "POST",
        &target,
        req.header,
        dropped,
        upstream,
        ("x-api-key", &[channel.api_key.as_bytes()]),
        out_body.len(),
    )?;
    if !req.header.headers.contains_key("anthropic-version") {
        head.header("anthropic-version", &[DEFAULT_VERSION.as_bytes()])?;
    }
    if req.long_context {
        head.header("anthropic-beta", &[betas(&req).join(",").as_bytes()])?;
    }
    Ok(Prepared {
        head: head.finish(),
        body: out_body,
        adapter: adapter_for(req),
    })
}

/// The adapter for an Anthropic-format answer to `req`.
pub fn adapter_for(req: ClientRequest<'_>) -> Box<dyn ResponseAdapter> {
    if req.endpoint == Endpoint::AnthropicCountTokens {
        Box::new(CountAdapter)
    } else {
        Box::new(AnthropicAdapter::new(req.probe.stream))
    }
}

/// The body for Claude on a cloud (Bedrock, Vertex): `anthropic_version`
/// set (the client's wins), `model` removed (it is in the URL), `stream`
/// removed if `drop_stream`, and `anthropic-beta` header values moved in.
pub fn cloud_body(
    body: &Bytes,
    version: &str,
    drop_stream: bool,
    betas: &[String],
) -> std::result::Result<Bytes, String> {
    let mut doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
    doc.remove("model");
    if drop_stream {
        doc.remove("stream");
    }
    doc.entry("anthropic_version")
        .or_insert_with(|| Value::String(version.to_string()));
    if !betas.is_empty() && !doc.contains_key("anthropic_beta") {
        doc.insert("anthropic_beta".into(), Value::from(betas.to_vec()));
    }
    Ok(Bytes::from(
        serde_json::to_vec(&doc).expect("json values serialize"),
    ))
}

/// Anthropic's beta that opens the 1M-token context window (Claude Sonnet
/// 4 and later; Bedrock and Vertex take it in the body's `anthropic_beta`).
pub const CONTEXT_1M_BETA: &str = "context-1m-2025-08-07";

/// The betas to send: the client's `anthropic-beta` header values
/// (comma-separated, possibly repeated), and the 1M-context one when the
/// client asked for it with a `[1m]` alias.
pub fn betas(req: &ClientRequest<'_>) -> Vec<String> {
    let mut betas: Vec<String> = req
        .header
        .headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if req.long_context && !betas.iter().any(|b| b == CONTEXT_1M_BETA) {
        betas.push(CONTEXT_1M_BETA.to_string());
    }
    betas
}

/// The `usage` object of a message; every field is optional because
/// `message_delta` may carry only some of them.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    /// All cache writes, whatever their lifetime.
    cache_creation_input_tokens: Option<u64>,
    /// The same writes by lifetime (prompt caching with `ttl`).
    cache_creation: Option<CacheCreation>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// The tokens to bill. `cache_creation_input_tokens` is the sum of both
    /// lifetimes, so the 1-hour writes are taken out of it and the rest
    /// billed as 5-minute writes: no write is billed twice.
    pub fn to_usage(&self) -> Usage {
        let by_ttl = self.cache_creation.unwrap_or_default();
        let one_hour = by_ttl.ephemeral_1h_input_tokens.unwrap_or(0);
        let all_writes = self.cache_creation_input_tokens.unwrap_or_else(|| {
            one_hour.saturating_add(by_ttl.ephemeral_5m_input_tokens.unwrap_or(0))
        });
        let one_hour = one_hour.min(all_writes);
        Usage {
            input: self.input_tokens.unwrap_or(0),
            output: self.output_tokens.unwrap_or(0),
            cached_input: self.cache_read_input_tokens.unwrap_or(0),
            cache_write: all_writes - one_hour,
            cache_write_1h: one_hour,
        }
    }

    /// Fields present in `newer` replace those here (the counts are
    /// cumulative). Raw fields are merged, not billed tokens: a later
    /// event may repeat the writes' total without their split.
    fn merge(&mut self, newer: &AnthropicUsage) {
        fn take(old: &mut Option<u64>, new: Option<u64>) {
            if new.is_some() {
                *old = new;
            }
        }
        take(&mut self.input_tokens, newer.input_tokens);
        take(&mut self.output_tokens, newer.output_tokens);
        take(
            &mut self.cache_read_input_tokens,
            newer.cache_read_input_tokens,
        );
        take(
            &mut self.cache_creation_input_tokens,
            newer.cache_creation_input_tokens,
        );
        if let Some(by_ttl) = newer.cache_creation {
            let mine = self.cache_creation.get_or_insert_with(Default::default);
            take(
                &mut mine.ephemeral_5m_input_tokens,
                by_ttl.ephemeral_5m_input_tokens,
            );
            take(
                &mut mine.ephemeral_1h_input_tokens,
                by_ttl.ephemeral_1h_input_tokens,
            );
        }
    }
}

impl From<Usage> for AnthropicUsage {
    fn from(u: Usage) -> Self {
        AnthropicUsage {
            input_tokens: Some(u.input),
            output_tokens: Some(u.output),
            cache_read_input_tokens: Some(u.cached_input),
            cache_creation_input_tokens: Some(u.cache_write.saturating_add(u.cache_write_1h)),
            cache_creation: Some(CacheCreation {
                ephemeral_5m_input_tokens: Some(u.cache_write),
                ephemeral_1h_input_tokens: Some(u.cache_write_1h),
            }),
        }
    }
}

#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: Option<MessageStart>,
    usage: Option<AnthropicUsage>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct MessageStart {
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
}

/// Reads Anthropic Messages usage: `message_start` and `message_delta`
/// events, or a whole body's `usage`.
#[derive(Default)]
pub struct AnthropicMeter {
    usage: Option<AnthropicUsage>,
    estimated_output: OutputEstimate,
}

/// Reads an Anthropic Messages answer; never changes a byte.
pub type AnthropicAdapter = PassThrough<AnthropicMeter>;

impl AnthropicMeter {
    /// Takes usage found elsewhere (Bedrock's invocation metrics) when the
    /// events carried none.
    pub fn fallback_usage(&mut self, usage: Usage) {
        self.usage.get_or_insert(AnthropicUsage::from(usage));
    }
}

impl Meter for AnthropicMeter {
    fn observe(&mut self, data: &str) {
        let Ok(event) = serde_json::from_str::<StreamEvent<'_>>(data) else {
            return;
        };
        let usage = match event.kind {
            "message_start" => event.message.and_then(|m| m.usage),
            "message_delta" => event.usage,
            "content_block_delta" => {
                if let Some(d) = &event.delta {
                    for t in [&d.text, &d.thinking, &d.partial_json]
                        .into_iter()
                        .flatten()
                    {
                        self.estimated_output.push(t);
                    }
                }
                None
            }
            _ => None,
        };
        if let Some(u) = usage {
            self.usage.get_or_insert_with(Default::default).merge(&u);
        }
    }

    fn observe_tail(&mut self, tail: &Tail) {
        if let Some(u) = tail.last_value::<AnthropicUsage>("usage") {
            self.usage = Some(u);
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(AnthropicUsage::to_usage)
    }

    fn estimated_output_tokens(&self) -> u64 {
        self.estimated_output.tokens()
    }
}

/// Most of a provider error body kept to rewrite it.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Claude through a cloud (Bedrock, Vertex): a non-2xx answer that reaches
/// the client (a 4xx other than 401/403/429) comes in the cloud's own error
/// shape (`{"message": ...}` or `{"error": {"message": ...}}`); the
/// Anthropic SDK gets it as an Anthropic error document instead.
pub struct CloudErrors {
    inner: Box<dyn ResponseAdapter>,
    /// A non-2xx answer: its status and (bounded) body.
    error: Option<(u16, BytesMut)>,
}

impl CloudErrors {
    pub fn wrap(inner: Box<dyn ResponseAdapter>) -> Box<dyn ResponseAdapter> {
        Box::new(CloudErrors { inner, error: None })
    }
}

/// The Anthropic error document for a cloud's error answer.
fn anthropic_error(status: u16, body: &[u8]) -> Bytes {
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(doc) = doc.as_ref().filter(|d| d["type"] == "error") {
        return Bytes::from(doc.to_string());
    }
    let message = doc
        .as_ref()
        .and_then(|d| {
            d["message"]
                .as_str()
                .or_else(|| d["Message"].as_str())
                .or_else(|| d["error"]["message"].as_str())
        })
        .unwrap_or("the provider refused the request");
    Bytes::from(ApiError::upstream(status, message).body(Dialect::Anthropic))
}

impl ResponseAdapter for CloudErrors {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        if head.status.is_success() {
            return self.inner.response_head(head);
        }
        self.error = Some((head.status.as_u16(), BytesMut::new()));
        head.remove_header("content-length");
        let _ = head.insert_header("transfer-encoding", "chunked");
        let _ = head.insert_header("content-type", "application/json");
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        match &mut self.error {
            Some((_, body)) => {
                if body.len() + chunk.len() <= MAX_ERROR_BODY {
                    body.extend_from_slice(&chunk);
                }
                Bytes::new()
            }
            None => self.inner.on_chunk(chunk),
        }
    }

    fn on_end(&mut self) -> Bytes {
        match self.error.take() {
            Some((status, body)) => anthropic_error(status, &body),
            None => self.inner.on_end(),
        }
    }

    fn rewrites_body(&self) -> bool {
        self.error.is_some() || self.inner.rewrites_body()
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }

    fn estimated_output_tokens(&self) -> u64 {
        self.inner.estimated_output_tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-6\",\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":2000,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn stream_usage_from_start_and_delta_split_anywhere() {
        let bytes = STREAM.as_bytes();
        for split in (1..bytes.len()).step_by(7) {
            let mut a = AnthropicAdapter::new(true);
            let mut out = a.on_chunk(Bytes::copy_from_slice(&bytes[..split])).to_vec();
            out.extend_from_slice(&a.on_chunk(Bytes::copy_from_slice(&bytes[split..])));
            out.extend_from_slice(&a.on_end());
            assert_eq!(out, bytes, "bytes pass untouched");
            assert_eq!(
                a.usage(),
                Some(Usage {
                    input: 25,
                    output: 15,
                    cached_input: 2000,
                    cache_write: 100,
                    cache_write_1h: 0
                })
            );
            assert_eq!(a.estimated_output_tokens(), 2); // cl100k: "Hello there"
        }
    }

    #[test]
    fn non_stream_usage_from_the_body() {
        let body = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"\"usage\": 1"}],"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":30,"output_tokens":6}}"#;
        let mut a = AnthropicAdapter::new(false);
        a.on_chunk(Bytes::from_static(body));
        a.on_end();
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 12,
                output: 6,
                cached_input: 30,
                cache_write: 0,
                cache_write_1h: 0
            })
        );
    }

    /// What a stream with 1-hour cache writes is billed as.
    fn usage_of_stream(start_usage: &str, delta_usage: &str) -> Option<Usage> {
        let stream = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"usage\":{start_usage}}}}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{delta_usage}}}\n\n"
        );
        let mut a = AnthropicAdapter::new(true);
        a.on_chunk(Bytes::from(stream));
        a.on_end();
        a.usage()
    }

    #[test]
    fn one_hour_cache_writes_are_split_out_of_the_write_total() {
        let split = concat!(
            r#"{"input_tokens":9,"cache_creation_input_tokens":1500,"cache_read_input_tokens":40,"#,
            r#""cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":500},"#,
            r#""output_tokens":1}"#
        );
        let want = Usage {
            input: 9,
            output: 70,
            cached_input: 40,
            cache_write: 1000,
            cache_write_1h: 500,
        };
        // A delta with the output only, and one that repeats the input side
        // with the writes' total but not their split (newer API versions):
        // neither bills the 1-hour writes a second time.
        assert_eq!(
            usage_of_stream(split, r#"{"output_tokens":70}"#),
            Some(want)
        );
        let repeated = r#"{"input_tokens":9,"cache_creation_input_tokens":1500,"cache_read_input_tokens":40,"output_tokens":70}"#;
        assert_eq!(usage_of_stream(split, repeated), Some(want));
        // Non-stream body.
        let body = format!(
            r#"{{"id":"m","type":"message","content":[],"usage":{}}}"#,
            split
        );
        let mut a = AnthropicAdapter::new(false);
        a.on_chunk(Bytes::from(body));
        a.on_end();
        assert_eq!(a.usage(), Some(Usage { output: 1, ..want }));
        // The split alone, without the total: the total is their sum.
        let only_split = r#"{"input_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":4}}"#;
        let u = usage_of_stream(only_split, r#"{"output_tokens":2}"#).unwrap();
        assert_eq!((u.cache_write, u.cache_write_1h), (3, 4));
        // A 1-hour count above the total (inconsistent) never bills more
        // writes than the total.
        let odd = r#"{"cache_creation_input_tokens":10,"cache_creation":{"ephemeral_1h_input_tokens":25}}"#;
        let u = usage_of_stream(odd, r#"{"output_tokens":2}"#).unwrap();
        assert_eq!((u.cache_write, u.cache_write_1h), (0, 10));
    }

    #[test]
    fn a_json_answer_to_a_stream_request_is_billed_from_its_body() {
        let body = br#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":11,"output_tokens":7}}"#;
        let mut a = CloudErrors::wrap(Box::new(AnthropicAdapter::new(true)));
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.insert_header("content-type", "application/json")
            .unwrap();
        a.response_head(&mut head);
        assert_eq!(&a.on_chunk(Bytes::from_static(body))[..], body);
        assert!(a.on_end().is_empty());
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 11,
                output: 7,
                ..Default::default()
            })
        );
    }

    #[test]
    fn cloud_errors_become_anthropic_documents() {
        let mut a = CloudErrors::wrap(Box::new(AnthropicAdapter::new(false)));
        let mut head = ResponseHeader::build(400, None).unwrap();
        head.insert_header("content-length", "48").unwrap();
        a.response_head(&mut head);
        assert!(head.headers.get("content-length").is_none());
        assert!(a
            .on_chunk(Bytes::from_static(
                br#"{"message":"Malformed input request"}"#
            ))
            .is_empty());
        let doc: Value = serde_json::from_slice(&a.on_end()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": "Malformed input request"}})
        );
        let mut a = CloudErrors::wrap(Box::new(AnthropicAdapter::new(false)));
        let mut head = ResponseHeader::build(404, None).unwrap();
        a.response_head(&mut head);
        a.on_chunk(Bytes::from_static(
            br#"{"error":{"code":404,"message":"Publisher model not found","status":"NOT_FOUND"}}"#,
        ));
        let doc: Value = serde_json::from_slice(&a.on_end()).unwrap();
        assert_eq!(doc["error"]["type"], "not_found_error");
        assert_eq!(doc["error"]["message"], "Publisher model not found");
        // Success passes through to the inner adapter untouched.
        let mut a = CloudErrors::wrap(Box::new(AnthropicAdapter::new(false)));
        a.response_head(&mut ResponseHeader::build(200, None).unwrap());
        assert_eq!(&a.on_chunk(Bytes::from_static(b"{}"))[..], b"{}");
        assert!(!a.rewrites_body());
    }

    #[test]
    fn cloud_body_moves_model_and_version() {
        let body = Bytes::from_static(br#"{"model":"claude","stream":true,"max_tokens":5}"#);
        let out: Value = serde_json::from_slice(
            &cloud_body(&body, "bedrock-2023-05-31", true, &["b1".into()]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"max_tokens":5,"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["b1"]})
        );
        let out: Value =
            serde_json::from_slice(&cloud_body(&body, "vertex-2023-10-16", false, &[]).unwrap())
                .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"stream":true,"max_tokens":5,"anthropic_version":"vertex-2023-10-16"})
        );
    }
}
