//! Upstream provider adapters: one file per channel type. An adapter turns
//! the client's request into the upstream's (URL, auth, body) and, for the
//! in-process `mock`, produces the answer itself.

pub mod mock;
pub mod openai;

use pingora_http::RequestHeader;

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
