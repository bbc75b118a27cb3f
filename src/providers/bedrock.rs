//! Claude on AWS Bedrock (`type = "bedrock"`): Anthropic-format clients to
//! InvokeModel (`/model/{modelId}/invoke`) and InvokeModelWithResponseStream
//! (`/model/{modelId}/invoke-with-response-stream`), signed with SigV4 (or
//! a Bedrock API key as bearer). The body loses `model` and `stream` and
//! gains `anthropic_version: bedrock-2023-05-31`.
//!
//! The stream answer is an AWS event stream: binary frames whose payload is
//! `{"bytes": base64(anthropic event JSON)}`. Each frame becomes the SSE
//! event the Anthropic SDK expects (`event: <type>\ndata: <json>\n\n`), as
//! soon as its last byte arrives; a partial frame waits in a buffer that
//! never holds more than one frame.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::json;

use super::anthropic::{self, AnthropicAdapter, AnthropicMeter};
use super::head::UpstreamHead;
use super::openai::Tail;
use super::{bad_setting, ClientRequest, Endpoint, Meter, Prepared, ResponseAdapter, SettingError};
use super::{BaseUrl, Upstream};
use crate::config::schema::ChannelDef;
use crate::usage::Usage;

pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
const SERVICE: &str = "bedrock";

#[derive(Clone)]
pub enum Auth {
    SigV4 {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// A Bedrock API key (the channel's `api_key`), sent as a bearer token.
    ApiKey,
}

#[derive(Clone)]
pub struct Settings {
    pub region: String,
    pub auth: Auth,
}

impl Settings {
    pub fn from_def(
        def: &ChannelDef,
        expand: &mut dyn FnMut(&str, &str) -> Option<String>,
    ) -> std::result::Result<Settings, SettingError> {
        let Some(region) = &def.region else {
            return Err(bad_setting(
                "type",
                "type \"bedrock\" needs region (e.g. \"us-east-1\")",
            ));
        };
        let region = expand("region", region).unwrap_or_default();
        let mut get = |field: &str, v: &Option<String>| {
            v.as_ref().map(|v| expand(field, v).unwrap_or_default())
        };
        let id = get("aws_access_key_id", &def.aws_access_key_id);
        let secret = get("aws_secret_access_key", &def.aws_secret_access_key);
        let token = get("aws_session_token", &def.aws_session_token);
        let auth = match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Auth::SigV4 {
                access_key_id,
                secret_access_key,
                session_token: token,
            },
            (None, None) if token.is_none() && !def.api_key.is_empty() => Auth::ApiKey,
            (None, None) if token.is_none() => {
                return Err(bad_setting(
                    "type",
                    "type \"bedrock\" needs aws_access_key_id and \
                         aws_secret_access_key, or api_key (a Bedrock API key)",
                ))
            }
            _ => {
                return Err(bad_setting(
                    "aws_access_key_id",
                    "set both aws_access_key_id and aws_secret_access_key \
                         (session token optional)",
                ))
            }
        };
        Ok(Settings { region, auth })
    }

    pub fn default_base_url(&self) -> String {
        format!("https://bedrock-runtime.{}.amazonaws.com", self.region)
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` with a session token) for one request. `headers`
/// are the headers to sign; `host` must be among them.
pub fn sigv4_headers(
    auth: &Auth,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> std::result::Result<Vec<(String, String)>, String> {
    let Auth::SigV4 {
        access_key_id,
        secret_access_key,
        session_token,
    } = auth
    else {
        return Ok(Vec::new());
    };
    let identity: Identity = Credentials::new(
        access_key_id,
        secret_access_key,
        session_token.clone(),
        None,
        "tollgate-config",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("sigv4 parameters: {e}"))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("sigv4 request: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("sigv4 signing: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

pub fn prepare(
    channel: &Upstream,
    settings: &Settings,
    upstream: &BaseUrl,
    req: ClientRequest<'_>,
) -> Result<Prepared> {
    let counting = req.endpoint == Endpoint::AnthropicCountTokens;
    let stream = req.probe.stream && !counting;
    let model_id = super::encode_segment(channel.upstream_model(req.model));
    let op = match (counting, stream) {
        (true, _) => "count-tokens",
        (false, true) => "invoke-with-response-stream",
        (false, false) => "invoke",
    };
    let path = format!("{}/model/{model_id}/{op}", upstream.base_path);
    let betas = anthropic::betas(&req);
    let mut body = anthropic::cloud_body(req.body, ANTHROPIC_VERSION, true, &betas)
        .map_err(super::internal)?;
    if counting {
        body = count_tokens_body(&body);
    }
    let accept = if stream {
        "application/vnd.amazon.eventstream"
    } else {
        "application/json"
    };
    let mut head = UpstreamHead::new("POST", &path)?;
    head.host(upstream);
    head.header("content-type", &[b"application/json"])?;
    head.header("accept", &[accept.as_bytes()])?;
    match &settings.auth {
        Auth::ApiKey => {
            head.header("authorization", &[b"Bearer ", channel.api_key.as_bytes()])?;
        }
        auth => {
            let scheme = if upstream.tls { "https" } else { "http" };
            let host = &upstream.authority;
            let url = format!("{scheme}://{host}{path}");
            let signed = sigv4_headers(
                auth,
                &settings.region,
                "POST",
                &url,
                &[
                    ("host", host),
                    ("content-type", "application/json"),
                    ("accept", accept),
                ],
                &body,
                SystemTime::now(),
            )
            .map_err(super::internal)?;
            // The signature, its date and any session token.
            for (name, value) in signed {
                head.header(&name, &[value.as_bytes()])?;
            }
        }
    }
    head.content_length(body.len());
    let adapter: Box<dyn ResponseAdapter> = if counting {
        Box::new(CountTokensAdapter::default())
    } else if stream {
        Box::new(EventStreamAdapter::new())
    } else {
        Box::new(AnthropicAdapter::new(false))
    };
    let adapter = anthropic::CloudErrors::wrap(adapter);
    Ok(Prepared {
        head: head.finish(),
        body,
        adapter,
    })
}

/// The CountTokens request: the InvokeModel body it counts, base64 (a
/// count_tokens body has no `max_tokens`, which InvokeModel requires).
fn count_tokens_body(invoke_body: &Bytes) -> Bytes {
    let mut invoke: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(invoke_body).unwrap_or_default();
    invoke.entry("max_tokens").or_insert(json!(1));
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&invoke).expect("json values serialize"));
    Bytes::from(json!({"input": {"invokeModel": {"body": encoded}}}).to_string())
}

/// Answers Anthropic's count_tokens shape (`{"input_tokens": n}`) from
/// Bedrock's (`{"inputTokens": n}`). The answer is a few bytes, kept whole.
#[derive(Default)]
pub struct CountTokensAdapter {
    body: BytesMut,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountTokensAnswer {
    input_tokens: u64,
}

impl ResponseAdapter for CountTokensAdapter {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        head.remove_header("content-length");
        let _ = head.insert_header("transfer-encoding", "chunked");
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        if self.body.len() + chunk.len() <= 64 * 1024 {
            self.body.extend_from_slice(&chunk);
        }
        Bytes::new()
    }

    fn on_end(&mut self) -> Bytes {
        match serde_json::from_slice::<CountTokensAnswer>(&self.body) {
            Ok(a) => Bytes::from(json!({"input_tokens": a.input_tokens}).to_string()),
            Err(_) => std::mem::take(&mut self.body).freeze(),
        }
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn usage(&self) -> Option<Usage> {
        Some(Usage::default())
    }

    fn estimated_output_tokens(&self) -> u64 {
        0
    }
}

/// `amazon-bedrock-invocationMetrics`, on the last chunk of a stream.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: Option<u64>,
    output_token_count: Option<u64>,
    cache_read_input_token_count: Option<u64>,
    cache_write_input_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct ChunkEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "amazon-bedrock-invocationMetrics")]
    metrics: Option<InvocationMetrics>,
}

#[derive(Deserialize)]
struct ChunkPayload {
    bytes: String,
}

/// Turns Bedrock's event stream into Anthropic SSE.
pub struct EventStreamAdapter {
    decoder: MessageFrameDecoder,
    /// Bytes of the frame being received (at most one frame).
    pending: BytesMut,
    inner: AnthropicMeter,
    /// The stream could not be decoded; nothing more is relayed.
    broken: bool,
    /// The answer is one JSON body, not an event stream: passed on as it
    /// is, its usage read from its tail.
    json: Option<Tail>,
}

impl Default for EventStreamAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStreamAdapter {
    pub fn new() -> Self {
        EventStreamAdapter {
            decoder: MessageFrameDecoder::new(),
            pending: BytesMut::new(),
            inner: AnthropicMeter::default(),
            broken: false,
            json: None,
        }
    }

    /// The SSE bytes for one decoded frame.
    fn frame_to_sse(&mut self, message: &Message, out: &mut BytesMut) {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| match h.value() {
                    HeaderValue::String(s) => Some(s.as_str().to_string()),
                    _ => None,
                })
        };
        match header(":message-type").as_deref() {
            Some("event") if header(":event-type").as_deref() == Some("chunk") => {
                let Ok(payload) = serde_json::from_slice::<ChunkPayload>(message.payload()) else {
                    return;
                };
                let Ok(data) = base64::engine::general_purpose::STANDARD.decode(&payload.bytes)
                else {
                    return;
                };
                let Ok(text) = std::str::from_utf8(&data) else {
                    return;
                };
                let Ok(event) = serde_json::from_str::<ChunkEvent<'_>>(text) else {
                    return;
                };
                self.inner.observe(text);
                if let Some(m) = event.metrics {
                    self.inner.fallback_usage(Usage {
                        input: m.input_token_count.unwrap_or(0),
                        output: m.output_token_count.unwrap_or(0),
                        cached_input: m.cache_read_input_token_count.unwrap_or(0),
                        cache_write: m.cache_write_input_token_count.unwrap_or(0),
                        cache_write_1h: 0,
                    });
                }
                out.extend_from_slice(
                    format!("event: {}\ndata: {text}\n\n", event.kind).as_bytes(),
                );
            }
            Some("event") => {}
            _ => {
                let kind = header(":exception-type")
                    .or_else(|| header(":error-code"))
                    .unwrap_or_default();
                let message_text = serde_json::from_slice::<serde_json::Value>(message.payload())
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .or_else(|| header(":error-message"))
                    .unwrap_or_else(|| "the provider ended the stream with an error".into());
                push_error_event(out, error_type(&kind), &message_text);
            }
        }
    }
}

/// The Anthropic error type for a Bedrock exception name.
fn error_type(exception: &str) -> &'static str {
    match exception {
        "throttlingException" => "rate_limit_error",
        "serviceUnavailableException" | "modelNotReadyException" => "overloaded_error",
        "validationException" => "invalid_request_error",
        "accessDeniedException" => "permission_error",
        "resourceNotFoundException" => "not_found_error",
        _ => "api_error",
    }
}

fn push_error_event(out: &mut BytesMut, kind: &str, message: &str) {
    let data = json!({"type": "error", "error": {"type": kind, "message": message}});
    out.extend_from_slice(format!("event: error\ndata: {data}\n\n").as_bytes());
}

impl ResponseAdapter for EventStreamAdapter {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        if crate::sse::declared_event_stream(head) == Some(false) {
            self.json = Some(Tail::default());
            return;
        }
        head.remove_header("content-length");
        head.remove_header("x-amzn-bedrock-content-type");
        let _ = head.insert_header("transfer-encoding", "chunked");
        let _ = head.insert_header("content-type", "text/event-stream");
        let _ = head.insert_header("cache-control", "no-cache");
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        if let Some(tail) = &mut self.json {
            tail.push(&chunk);
            return chunk;
        }
        if self.broken {
            return Bytes::new();
        }
        self.pending.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        loop {
            match self.decoder.decode_frame(&mut self.pending) {
                Ok(DecodedFrame::Complete(message)) => self.frame_to_sse(&message, &mut out),
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => {
                    self.broken = true;
                    push_error_event(
                        &mut out,
                        "api_error",
                        &format!("undecodable event stream from the provider: {e}"),
                    );
                    break;
                }
            }
        }
        out.freeze()
    }

    fn on_end(&mut self) -> Bytes {
        if let Some(tail) = &self.json {
            self.inner.observe_tail(tail);
        }
        Bytes::new()
    }

    fn rewrites_body(&self) -> bool {
        self.json.is_none()
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
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::Header;

    fn frame(message_type: &str, kind_header: (&str, &str), payload: Vec<u8>) -> Vec<u8> {
        let m = Message::new(payload)
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String(message_type.to_string().into()),
            ))
            .add_header(Header::new(
                kind_header.0.to_string(),
                HeaderValue::String(kind_header.1.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut out = Vec::new();
        write_message_to(&m, &mut out).unwrap();
        out
    }

    fn chunk(event: &serde_json::Value) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        frame(
            "event",
            (":event-type", "chunk"),
            json!({"bytes": b64}).to_string().into_bytes(),
        )
    }

    fn events() -> Vec<serde_json::Value> {
        vec![
            json!({"type":"message_start","message":{"id":"msg_bdrk","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":21,"cache_read_input_tokens":7,"cache_creation_input_tokens":3,"output_tokens":1}}}),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi there"}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}),
            json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":21,"outputTokenCount":9,"invocationLatency":500,"firstByteLatency":100}}),
        ]
    }

    fn expected_sse(events: &[serde_json::Value]) -> String {
        events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect()
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode() {
        let events = events();
        let wire: Vec<u8> = events.iter().flat_map(chunk).collect();
        let expected = expected_sse(&events);
        for split in 0..=wire.len() {
            let mut a = EventStreamAdapter::new();
            let mut out = a.on_chunk(Bytes::copy_from_slice(&wire[..split])).to_vec();
            out.extend_from_slice(&a.on_chunk(Bytes::copy_from_slice(&wire[split..])));
            out.extend_from_slice(&a.on_end());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "split at {split}"
            );
            assert_eq!(
                a.usage(),
                Some(Usage {
                    input: 21,
                    output: 9,
                    cached_input: 7,
                    cache_write: 3,
                    cache_write_1h: 0
                })
            );
        }
        // Byte by byte: every frame comes out when its last byte arrives.
        let mut a = EventStreamAdapter::new();
        let mut out = Vec::new();
        for b in &wire {
            out.extend_from_slice(&a.on_chunk(Bytes::copy_from_slice(&[*b])));
        }
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert!(a.pending.is_empty());
    }

    #[test]
    fn one_hour_cache_writes_are_read_from_the_event_stream() {
        let mut events = events();
        events[0]["message"]["usage"] = json!({"input_tokens": 21, "cache_read_input_tokens": 7,
            "cache_creation_input_tokens": 30,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
            "output_tokens": 1});
        let wire: Vec<u8> = events.iter().flat_map(chunk).collect();
        let mut a = EventStreamAdapter::new();
        a.on_chunk(Bytes::from(wire));
        a.on_end();
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 21,
                output: 9,
                cached_input: 7,
                cache_write: 10,
                cache_write_1h: 20
            })
        );
    }

    #[test]
    fn a_json_answer_to_a_stream_request_passes_with_its_usage() {
        let body = br#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":11,"output_tokens":7}}"#;
        let mut a = EventStreamAdapter::new();
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.insert_header("content-type", "application/json")
            .unwrap();
        head.insert_header("content-length", body.len()).unwrap();
        a.response_head(&mut head);
        assert!(head.headers.get("content-length").is_some());
        assert!(!a.rewrites_body());
        let out = a.on_chunk(Bytes::from_static(body));
        assert_eq!(&out[..], body);
        a.on_end();
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
    fn invocation_metrics_stand_in_for_missing_usage() {
        let e = json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":40,"outputTokenCount":12,"cacheReadInputTokenCount":5}});
        let mut a = EventStreamAdapter::new();
        a.on_chunk(Bytes::from(chunk(&e)));
        assert_eq!(
            a.usage(),
            Some(Usage {
                input: 40,
                output: 12,
                cached_input: 5,
                cache_write: 0,
                cache_write_1h: 0
            })
        );
    }

    #[test]
    fn exceptions_become_anthropic_error_events() {
        let wire = frame(
            "exception",
            (":exception-type", "throttlingException"),
            br#"{"message":"Too many requests"}"#.to_vec(),
        );
        let mut a = EventStreamAdapter::new();
        let out = a.on_chunk(Bytes::from(wire));
        assert_eq!(
            &out[..],
            b"event: error\ndata: {\"error\":{\"message\":\"Too many requests\",\"type\":\"rate_limit_error\"},\"type\":\"error\"}\n\n"
        );
    }

    #[test]
    fn sigv4_matches_the_aws_test_suite_shape() {
        let auth = Auth::SigV4 {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("tok".into()),
        };
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let h = sigv4_headers(
            &auth,
            "us-east-1",
            "POST",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3A0/invoke",
            &[("host", "bedrock-runtime.us-east-1.amazonaws.com")],
            b"{}",
            t,
        )
        .unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20231114T221320Z"));
        assert_eq!(get("x-amz-security-token"), Some("tok"));
        let auth_header = get("authorization").unwrap();
        assert!(auth_header.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature="
        ), "{auth_header}");
    }
}
