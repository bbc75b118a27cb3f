//! OpenAI and OpenAI-compatible hosts (vLLM, DeepSeek, OpenRouter, ...):
//! the client's path is appended to `base_url`, the key goes in
//! `Authorization: Bearer`.

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::RequestHeader;

use crate::config::{Channel, Upstream};

/// Builds the upstream request head for a body of `body_len` bytes.
pub fn request_header(
    channel: &Channel,
    upstream: &Upstream,
    client: &RequestHeader,
    body: &Bytes,
) -> Result<RequestHeader> {
    let path_and_query = client.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = format!("{}{}", upstream.base_path, path_and_query);
    let mut req = RequestHeader::build(client.method.clone(), path.as_bytes(), None)?;
    super::forwarded_headers(client, &mut req);
    req.insert_header("host", upstream.authority())?;
    req.insert_header("authorization", format!("Bearer {}", channel.api_key))?;
    req.insert_header("content-length", body.len().to_string())?;
    Ok(req)
}
