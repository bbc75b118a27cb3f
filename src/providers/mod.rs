//! Upstream provider adapters: one file per channel type. An adapter turns
//! the client's request into the upstream's (URL, auth, body) and reads the
//! answer on its way back (usage, and any rewrite the client needs).

pub mod mock;
pub mod openai;

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::body::BodyProbe;
use crate::config::{Channel, ChannelType, Upstream};
use crate::metering::Usage;

/// Client request headers never forwarded upstream: hop-by-hop headers,
/// the client's own credentials (replaced by the channel's), framing that
/// the gateway sets itself, and `accept-encoding` so that answers arrive
/// uncompressed and their usage can be read.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept-encoding",
    "cookie",
    "openai-organization",
    "openai-project",
    "x-forwarded-for",
];

/// Copies the client's forwardable headers into a new upstream request.
pub fn forwarded_headers(client: &RequestHeader, upstream: &mut RequestHeader) {
    for (name, value) in client.headers.iter() {
        if !DROPPED_REQUEST_HEADERS.contains(&name.as_str()) {
            // Names and values come from a parsed request: always valid.
            let _ = upstream.append_header(name.clone(), value.clone());
        }
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
    /// Output tokens estimated from the answer text seen so far.
    fn estimated_output_tokens(&self) -> u64;
}

/// An upstream request ready to send, and the adapter for its answer.
pub struct Prepared {
    pub header: RequestHeader,
    pub body: Bytes,
    pub adapter: Box<dyn ResponseAdapter>,
}

/// Shapes the client's request for `channel`. `model` is the client-facing
/// name; the channel's `model_map` decides what goes upstream.
pub async fn prepare(
    channel: &Channel,
    upstream: &Upstream,
    client: &RequestHeader,
    body: &Bytes,
    probe: &BodyProbe,
    model: &str,
) -> Result<Prepared> {
    match channel.kind {
        ChannelType::Openai => openai::prepare(channel, upstream, client, body, probe, model),
        other => Err(pingora_error::Error::explain(
            pingora_error::ErrorType::InternalError,
            format!("channel type {} has no adapter", other.as_str()),
        )),
    }
}
