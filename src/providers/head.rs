//! The upstream request head, written straight into its wire form.
//!
//! An upstream head is only ever sent, never read back, so it is not built
//! as a Pingora `RequestHeader`: that parses the target into a `Uri`, hashes
//! every header into a map, formats the host and the credential into fresh
//! strings and then serialises it all again, ~4k instructions per request
//! (callgrind). Here each piece is checked and appended once.

use bytes::{BufMut, Bytes, BytesMut};
use pingora_error::{Error, ErrorType::InvalidHTTPHeader, Result};
use pingora_http::RequestHeader;

use super::BaseUrl;

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

/// The client's path with the part of its query that may go upstream:
/// without the client's own credentials ([`crate::auth::forwarded_query`]),
/// whatever the path and the channel type.
pub fn client_target(client: &RequestHeader) -> String {
    let path = client.uri.path();
    let mut out = String::with_capacity(path.len() + client.uri.query().map_or(0, str::len) + 1);
    out.push_str(path);
    for (i, pair) in crate::auth::forwarded_query(client).enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(pair);
    }
    out
}

/// An HTTP/1.1 request head being written: the request line, then the
/// headers in the order they are added. Deliberately not `Debug`: it holds
/// the channel's credential.
pub struct UpstreamHead {
    wire: BytesMut,
}

impl UpstreamHead {
    /// Starts a head with its request line. The target comes from the
    /// client's parsed path and the channel's config, but a byte that would
    /// end the line early is refused here, where the line is written.
    pub fn new(method: &str, target: &str) -> Result<UpstreamHead> {
        if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Error::e_explain(InvalidHTTPHeader, "invalid upstream request target");
        }
        let mut wire = BytesMut::with_capacity(384 + target.len());
        wire.put_slice(method.as_bytes());
        wire.put_u8(b' ');
        wire.put_slice(target.as_bytes());
        wire.put_slice(b" HTTP/1.1\r\n");
        Ok(UpstreamHead { wire })
    }

    /// Starts a head and copies the client's forwardable headers into it,
    /// except the names in `also_dropped`; then adds `host`, the channel's
    /// credential header and `content-length`.
    pub fn forwarding(
        method: &str,
        target: &str,
        client: &RequestHeader,
        also_dropped: &[&str],
        upstream: &BaseUrl,
        credential: (&str, &[&[u8]]),
        body_len: usize,
    ) -> Result<UpstreamHead> {
        let mut head = UpstreamHead::new(method, target)?;
        for (name, value) in client.headers.iter() {
            let name = name.as_str();
            if !DROPPED_REQUEST_HEADERS.contains(&name) && !also_dropped.contains(&name) {
                // Parsed from the client's head: already a valid name and value.
                head.put(name, &[value.as_bytes()]);
            }
        }
        head.host(upstream);
        head.header(credential.0, credential.1)?;
        head.content_length(body_len);
        Ok(head)
    }

    /// Adds a header whose value is the concatenation of `value`'s parts
    /// (`["Bearer ", key]` needs no string of its own). The name is one of
    /// the gateway's own; the value may come from config and is checked.
    pub fn header(&mut self, name: &str, value: &[&[u8]]) -> Result<()> {
        debug_assert!(http::HeaderName::from_bytes(name.as_bytes()).is_ok());
        let valid = |b: u8| b == b'\t' || (b >= b' ' && b != 0x7f);
        if !value.iter().all(|part| part.iter().all(|&b| valid(b))) {
            return Error::e_explain(
                InvalidHTTPHeader,
                format!("the value of `{name}` is not a valid header value"),
            );
        }
        self.put(name, value);
        Ok(())
    }

    /// `host`: the channel's host, with its port unless it is the scheme's.
    pub fn host(&mut self, upstream: &BaseUrl) {
        self.put("host", &[upstream.authority.as_bytes()]);
    }

    pub fn content_length(&mut self, len: usize) {
        self.put(
            "content-length",
            &[itoa::Buffer::new().format(len).as_bytes()],
        );
    }

    /// The head as sent, ending with the empty line.
    pub fn finish(mut self) -> Bytes {
        self.wire.put_slice(b"\r\n");
        self.wire.freeze()
    }

    fn put(&mut self, name: &str, value: &[&[u8]]) {
        self.wire.put_slice(name.as_bytes());
        self.wire.put_slice(b": ");
        for part in value {
            self.wire.put_slice(part);
        }
        self.wire.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base_url: &str) -> BaseUrl {
        crate::providers::parse_base_url(base_url, false).unwrap()
    }

    #[test]
    fn forwards_the_clients_headers_in_order_and_replaces_credentials_and_framing() {
        let mut client = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in [
            ("Host", "gateway.local"),
            ("Authorization", "Bearer sk-client"),
            ("Content-Type", "application/json"),
            ("Content-Length", "999"),
            ("X-Stainless-Lang", "python"),
            ("Accept-Encoding", "gzip"),
            ("anthropic-version", "2023-06-01"),
            ("Connection", "keep-alive"),
        ] {
            client.append_header(k, v).unwrap();
        }
        let head = UpstreamHead::forwarding(
            "POST",
            "/v1/chat/completions",
            &client,
            &["anthropic-version"],
            &upstream("https://api.example.com"),
            ("authorization", &[b"Bearer ", b"sk-up"]),
            42,
        )
        .unwrap()
        .finish();
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "POST /v1/chat/completions HTTP/1.1\r\n\
             content-type: application/json\r\n\
             x-stainless-lang: python\r\n\
             host: api.example.com\r\n\
             authorization: Bearer sk-up\r\n\
             content-length: 42\r\n\r\n"
        );
    }

    #[test]
    fn host_carries_the_port_unless_it_is_the_schemes() {
        let line = |base_url| {
            let mut head = UpstreamHead::new("GET", "/").unwrap();
            head.host(&upstream(base_url));
            let wire = head.finish();
            String::from_utf8(wire["GET / HTTP/1.1\r\n".len()..].to_vec()).unwrap()
        };
        assert_eq!(
            line("https://api.example.com"),
            "host: api.example.com\r\n\r\n"
        );
        assert_eq!(
            line("http://api.example.com:80"),
            "host: api.example.com\r\n\r\n"
        );
        assert_eq!(
            line("http://api.example.com:443"),
            "host: api.example.com:443\r\n\r\n"
        );
        assert_eq!(line("https://[::1]:8443/v1"), "host: [::1]:8443\r\n\r\n");
    }

    #[test]
    fn a_line_break_in_a_target_or_a_value_is_refused() {
        assert!(UpstreamHead::new("POST", "/v1 x").is_err());
        assert!(UpstreamHead::new("POST", "/v1\r\nx: y").is_err());
        assert!(UpstreamHead::new("POST", "v1").is_err());
        let mut head = UpstreamHead::new("POST", "/v1?a=b").unwrap();
        let err = head
            .header("x-api-key", &[b"sk-\r\nevil: 1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`x-api-key` is not a valid header value"),
            "{err}"
        );
        assert!(
            !err.contains("sk-"),
            "the value stays out of the error: {err}"
        );
        head.header("x-api-key", &[b"sk-\tok"]).unwrap();
        assert!(head.finish().ends_with(b"x-api-key: sk-\tok\r\n\r\n"));
    }
}
