//! The client's side of a connection: HTTP/1.1 over Pingora's accepted
//! stream, request by request, with the limits on how long a client may
//! take to send its request and to take its answer.
//!
//! This replaces Pingora's HTTP/1 server session, which was a quarter of
//! the instructions of a proxied request (~19k of 73.7k: request head
//! ~10k, answer head ~4k): it kept a case-preserving copy of every header
//! name, a 4 KiB head buffer and a body buffer per connection. Here one
//! buffer carries the request heads and bodies of a connection, the head
//! is parsed with `httparse` into a `RequestHeader` without a name map,
//! and bodies are framed by the rules the upstream side uses
//! (`response::take_piece`).
//! Pingora's own defaults were a per-read timeout and unbounded keep-alive,
//! which let a slowloris client or an idle connection hold a socket
//! forever; here the whole head, and the whole body, have deadlines.

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Version};
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::Stream;
use pingora_error::{Error, ErrorType, OkOrErr, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;

use super::response::{
    chunked_last, content_length, fill, keeps_alive, take_piece, Chunk, Framing, Piece,
    MAX_HEADERS, MAX_HEAD_BYTES,
};
use crate::config::ServerSection;
use crate::errors::{ApiError, Dialect, ErrorKind};

const HEAD_TOO_LARGE: &str = "the request head is larger than 1 MiB";

fn seconds(n: u64) -> Duration {
    // A zero timeout would fail every request: treat it as the minimum.
    Duration::from_secs(n.max(1))
}

/// One client connection, serving its requests one after the other.
pub struct ClientSession {
    stream: Stream,
    /// Bytes read and not yet consumed: the rest of a request body, and
    /// whatever a client sent after it (a pipelined request).
    buf: BytesMut,
    req: RequestHeader,
    body: Framing,
    /// The client waits for `100 Continue` before sending the body.
    expect_continue: bool,
    keepalive: bool,
    answer: Answer,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    client_ip: Option<IpAddr>,
}

/// How the answer's body is delimited for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    NotStarted,
    /// Bytes still to send.
    Length(u64),
    Chunked,
    /// An HTTP/1.0 client without a length: the close ends the body.
    UntilClose,
    /// HEAD, 204 and 304 answers, and a sent last chunk.
    Done,
}

impl ClientSession {
    pub fn new(stream: Stream) -> Self {
        let client_ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr()?.as_inet().map(|a| a.ip()));
        ClientSession {
            stream,
            buf: BytesMut::new(),
            req: RequestHeader::build_no_case(Method::GET, b"/", Some(0))
                .expect("a valid placeholder"),
            body: Framing::Done,
            expect_continue: false,
            keepalive: false,
            answer: Answer::NotStarted,
            read_timeout: None,
            write_timeout: None,
            client_ip,
        }
    }

    /// Reads the next request head within `client_header_timeout_seconds`
    /// (counted from when the connection became ready for a request, so the
    /// same bound applies to idle kept-alive connections). `false`: no
    /// request (closed, timed out, or a head that is not valid HTTP/1.x,
    /// which gets a 400 or 431 first): close the connection.
    pub async fn read_request(&mut self, server: &ServerSection) -> bool {
        let deadline = seconds(server.client_header_timeout_seconds);
        self.read_timeout = Some(deadline);
        self.write_timeout = Some(seconds(server.client_write_timeout_seconds));
        match tokio::time::timeout(deadline, self.read_head()).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) if e.etype() == &ErrorType::InvalidHTTPHeader => {
                let refusal = match e.context.as_ref().map(|c| c.as_str()) {
                    Some(HEAD_TOO_LARGE) => {
                        ApiError::new(ErrorKind::HeaderTooLarge, HEAD_TOO_LARGE)
                    }
                    _ => ApiError::new(
                        ErrorKind::InvalidRequest,
                        "the request is not valid HTTP/1.1 (head or body framing)",
                    ),
                };
                let _ = self.refuse(&refusal).await;
                false
            }
            _ => false,
        }
    }

    /// Answers a request that could not be read, in OpenAI's error shape
    /// (its API dialect is not known), and closes.
    async fn refuse(&mut self, error: &ApiError) -> Result<()> {
        let body = error.body(Dialect::OpenAi);
        let mut out = BytesMut::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        let status =
            http::StatusCode::from_u16(error.status).unwrap_or(http::StatusCode::BAD_REQUEST);
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(get_cached_date().as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        out.extend_from_slice(&body);
        self.keepalive = false;
        self.write(&out).await?;
        self.flush().await
    }

    async fn read_head(&mut self) -> Result<bool> {
        let mut scanned = 0;
        loop {
            // Parsed once the bytes hold a head's end, so that a head sent a
            // few bytes at a time is not parsed again after every read; and
            // the first read whatever it holds, so that a client that does
            // not speak HTTP is refused at once.
            if scanned == 0 || ends_a_head(&self.buf, scanned) {
                if let Some(len) = self.parse_head()? {
                    let _ = self.buf.split_to(len);
                    return Ok(true);
                }
            }
            scanned = self.buf.len();
            if self.buf.len() > MAX_HEAD_BYTES {
                return Error::e_explain(ErrorType::InvalidHTTPHeader, HEAD_TOO_LARGE);
            }
            if self.fill(None).await? == 0 {
                return Ok(false);
            }
        }
    }

    /// Parses a complete head at the start of the buffer into `req` and the
    /// body's framing; its length, or `None` if more bytes are needed.
    fn parse_head(&mut self) -> Result<Option<usize>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let len = match parsed.parse_with_uninit_headers(&self.buf, &mut headers) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    format!("unreadable request head: {e}"),
                )
            }
        };
        let method = parsed.method.unwrap_or_default();
        let path = parsed.path.unwrap_or_default().as_bytes();
        let req = RequestHeader::build_no_case(method, path, Some(parsed.headers.len()))?;
        // Headers go into the map directly: Pingora's `append_header` would
        // copy every name into its title case and parse it back. (The
        // request-target bytes it keeps for absolute-form targets are not
        // needed: this head is never sent on as is.)
        let mut parts = http::request::Parts::from(req);
        parts.version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        for header in parsed.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .or_err(ErrorType::InvalidHTTPHeader, "invalid request header name")?;
            let value = HeaderValue::from_bytes(header.value)
                .or_err(ErrorType::InvalidHTTPHeader, "invalid request header value")?;
            // At most MAX_HEADERS: far below the map's size limit.
            parts.headers.append(name, value);
        }
        let req = RequestHeader::from(parts);
        let (body, keepalive) = request_framing(&req)?;
        self.expect_continue = req.version == Version::HTTP_11
            && body != Framing::Done
            && req
                .headers
                .get(EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        self.req = req;
        self.body = body;
        self.keepalive = keepalive;
        self.answer = Answer::NotStarted;
        Ok(Some(len))
    }

    pub fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// Closes the connection after this answer.
    pub fn close_after_answer(&mut self) {
        self.keepalive = false;
    }

    /// Whether the connection may serve another request: the request body
    /// was read whole, the answer ended, and neither side asked to close.
    pub fn reusable(&self) -> bool {
        self.keepalive && self.body == Framing::Done && self.answer == Answer::Done
    }

    /// Frees the read buffer if it holds nothing: while a stream's answer
    /// is relayed, which can take minutes, nothing is read from the client
    /// (−4.5 KiB of RSS per open stream). Not after every request: the
    /// next one on the connection would need a new buffer.
    pub fn release_read_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// The next piece of the request body, `None` at its end.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        if std::mem::take(&mut self.expect_continue) && self.buf.is_empty() {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            self.flush().await?;
        }
        loop {
            match take_piece(&mut self.buf, &mut self.body)? {
                Piece::Data(data) => return Ok(Some(data)),
                Piece::End => return Ok(None),
                Piece::NeedMore => {
                    if self.fill(self.read_timeout).await? == 0 {
                        return Error::e_explain(
                            ErrorType::ConnectionClosed,
                            "the client closed the connection inside the request body",
                        );
                    }
                }
            }
        }
    }

    /// Sends the answer's head, with `date` and `connection` set, and
    /// chooses how its body is delimited: by its `content-length`, else in
    /// chunks (HTTP/1.1), else by closing the connection (HTTP/1.0).
    pub async fn write_response_header(&mut self, head: Box<ResponseHeader>) -> Result<()> {
        let status = head.status.as_u16();
        let http10 = self.req.version == Version::HTTP_10;
        let coded = head.headers.contains_key(TRANSFER_ENCODING);
        self.answer = if self.req.method == Method::HEAD || status == 204 || status == 304 {
            Answer::Done
        } else if coded && http10 {
            Answer::UntilClose
        } else if coded {
            Answer::Chunked
        } else {
            match content_length(head.headers.get_all(CONTENT_LENGTH))? {
                Some(0) => Answer::Done,
                Some(n) => Answer::Length(n),
                None if http10 => Answer::UntilClose,
                None => Answer::Chunked,
            }
        };
        // An answer before the whole request body was read (a refusal)
        // closes the connection: what is left of the body cannot be told
        // from a next request without reading it.
        if self.answer == Answer::UntilClose || self.body != Framing::Done {
            self.keepalive = false;
        }
        let mut out = BytesMut::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(head.status.as_str().as_bytes());
        out.extend_from_slice(b" ");
        let reason = head
            .get_reason_phrase()
            .or_else(|| head.status.canonical_reason())
            .unwrap_or("");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in head.headers.iter() {
            // Set here, whatever the upstream said; a length next to a
            // transfer coding is dropped (RFC 9112 §6.3).
            if name == DATE
                || name == CONNECTION
                || name == TRANSFER_ENCODING
                || (coded && name == CONTENT_LENGTH)
            {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.answer == Answer::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(get_cached_date().as_bytes());
        out.extend_from_slice(match self.keepalive {
            true => b"\r\nconnection: keep-alive\r\n\r\n",
            false => b"\r\nconnection: close\r\n\r\n",
        });
        self.write(&out).await?;
        // An answer with a length goes out with its body, in one send; one
        // without is likely generated as it goes (an event stream).
        if !matches!(self.answer, Answer::Length(_)) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends a piece of the answer's body; pieces of chunked and
    /// close-delimited answers are flushed at once.
    pub async fn write_response_body(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.answer {
            Answer::NotStarted => {
                Error::e_explain(ErrorType::WriteError, "body before the response head")
            }
            Answer::Done => Ok(()),
            Answer::Length(left) => {
                if data.len() as u64 > left {
                    return Error::e_explain(
                        ErrorType::WriteError,
                        "response body longer than its content-length",
                    );
                }
                self.answer = Answer::Length(left - data.len() as u64);
                self.write(&data).await
            }
            Answer::Chunked => {
                let mut size = [0u8; 18];
                let size = chunk_size_line(data.len(), &mut size);
                if data.len() <= 4096 {
                    // One write, hence one send, for a typical stream event.
                    let mut out = BytesMut::with_capacity(size.len() + data.len() + 2);
                    out.extend_from_slice(size);
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                    self.write(&out).await?;
                } else {
                    self.write(size).await?;
                    self.write(&data).await?;
                    self.write(b"\r\n").await?;
                }
                self.flush().await
            }
            Answer::UntilClose => {
                self.write(&data).await?;
                self.flush().await
            }
        }
    }

    /// Ends the answer's body (the last chunk) and sends what is buffered.
    /// An error if a body with a length was not sent whole.
    pub async fn finish_body(&mut self) -> Result<()> {
        match self.answer {
            Answer::Chunked => self.write(b"0\r\n\r\n").await?,
            Answer::Length(left) if left > 0 => {
                self.keepalive = false;
                return Error::e_explain(
                    ErrorType::WriteError,
                    format!("response body {left} bytes shorter than its content-length"),
                );
            }
            _ => {}
        }
        self.answer = Answer::Done;
        self.flush().await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        within(self.write_timeout, self.stream.write_all(bytes)).await
    }

    async fn flush(&mut self) -> Result<()> {
        within(self.write_timeout, self.stream.flush()).await
    }

    /// Reads what the client sent into the buffer: 0 when it closed.
    async fn fill(&mut self, timeout: Option<Duration>) -> Result<usize> {
        fill(
            &mut self.stream,
            &mut self.buf,
            timeout,
            "while reading the request",
        )
        .await
    }
}

/// A write to the client, within the write timeout if there is one.
async fn within(
    timeout: Option<Duration>,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<()> {
    const DOING: &str = "while writing the answer to the client";
    super::deadline::within(timeout, write)
        .await
        .or_err(ErrorType::WriteTimedout, DOING)?
        .or_err(ErrorType::WriteError, DOING)
}

/// Whether `buf` holds an empty line (the end of a head: `\n\n` or
/// `\n\r\n`) that ends after its first `scanned` bytes.
fn ends_a_head(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[from..])
        .any(|i| matches!(&buf[from + i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// How a request body is delimited (RFC 9112 §6.3) and whether the
/// connection may carry another request. A request with a transfer coding
/// other than a final `chunked` has no knowable length, and one with a
/// content length next to a transfer coding may be an attempt at request
/// smuggling: the first is refused, the second closes the connection after
/// its answer (§6.1). No length and no coding: no body.
fn request_framing(req: &RequestHeader) -> Result<(Framing, bool)> {
    let headers = &req.headers;
    let mut keepalive = keeps_alive(req.version, headers);
    let framing = if let Some(chunked) = chunked_last(headers) {
        // HTTP/1.0 has no transfer codings: such framing is faulty (§6.1).
        if !chunked || req.version == Version::HTTP_10 {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "a request's transfer coding must end in chunked, in HTTP/1.1",
            );
        }
        keepalive &= !headers.contains_key(CONTENT_LENGTH);
        Framing::Chunked(Chunk::SizeLine)
    } else {
        match content_length(headers.get_all(CONTENT_LENGTH))? {
            None | Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
        }
    };
    Ok((framing, keepalive))
}

/// `len` in hex, then CRLF: a chunk's size line.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 16;
    let mut n = len;
    loop {
        at -= 1;
        out[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out[16] = b'\r';
    out[17] = b'\n';
    &out[at..]
}

/// Most of a refused request's body read and thrown away before closing.
const LINGER_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Longest wait for the rest of a refused request's body.
const LINGER_MAX_TIME: Duration = Duration::from_secs(2);

/// Reads and discards the rest of a request body that was refused unread
/// (413 on a declared length, 408, bad framing), within bounds, before the
/// connection is closed. Closing a socket with unread data resets it, and
/// the reset can reach a client that is still sending: the SDKs (which
/// send the whole body before reading) then report a broken connection,
/// and retry the upload, instead of the error answer already sent (RFC
/// 9112 §9.6; nginx's `lingering_close`). Returns at once when the body
/// was read whole.
pub async fn linger(session: &mut ClientSession) {
    // A client waiting for `100 Continue` has sent nothing to discard.
    session.expect_continue = false;
    let discard = async {
        let mut left = LINGER_MAX_BYTES;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            match left.checked_sub(chunk.len()) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_MAX_TIME, discard).await;
}

/// The whole time allowed for reading a request body.
pub fn body_deadline(server: &ServerSection) -> Duration {
    seconds(server.client_body_timeout_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(head: &str) -> Result<(Framing, bool)> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        parsed.parse(head.as_bytes()).unwrap();
        let mut req = RequestHeader::build_no_case(parsed.method.unwrap(), b"/", None).unwrap();
        if parsed.version == Some(0) {
            req.set_version(Version::HTTP_10);
        }
        for h in parsed.headers.iter() {
            req.append_header(h.name.to_string(), h.value).unwrap();
        }
        request_framing(&req)
    }

    #[test]
    fn request_bodies_are_framed_by_rfc_9112() {
        let f = |h: &str| framing_of(&format!("POST / HTTP/1.1\r\n{h}\r\n"));
        assert_eq!(f("").unwrap(), (Framing::Done, true));
        assert_eq!(f("content-length: 0\r\n").unwrap(), (Framing::Done, true));
        assert_eq!(
            f("content-length: 7\r\n").unwrap(),
            (Framing::Length(7), true)
        );
        assert_eq!(
            f("transfer-encoding: chunked\r\n").unwrap(),
            (Framing::Chunked(Chunk::SizeLine), true)
        );
        assert_eq!(f("connection: close\r\n").unwrap(), (Framing::Done, false));
        // A length next to a coding: the coding decides, and the
        // connection closes after the answer.
        assert_eq!(
            f("content-length: 5\r\ntransfer-encoding: chunked\r\n").unwrap(),
            (Framing::Chunked(Chunk::SizeLine), false)
        );
        assert!(f("transfer-encoding: gzip\r\n").is_err());
        assert!(f("transfer-encoding: chunked, gzip\r\n").is_err());
        assert!(f("content-length: 5\r\ncontent-length: 6\r\n").is_err());
        assert!(f("content-length: -1\r\n").is_err());
        let http10 = |h: &str| framing_of(&format!("POST / HTTP/1.0\r\n{h}\r\n"));
        assert_eq!(
            http10("content-length: 2\r\n").unwrap(),
            (Framing::Length(2), false)
        );
        assert_eq!(
            http10("connection: keep-alive\r\n").unwrap(),
            (Framing::Done, true)
        );
        assert!(http10("transfer-encoding: chunked\r\n").is_err());
    }

    #[test]
    fn a_head_is_parsed_once_its_end_arrived() {
        let head = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        // Whatever was scanned before, the end is found in the new bytes.
        for cut in 0..head.len() {
            assert!(ends_a_head(head, cut), "scanned {cut}");
        }
        for end in 0..head.len() - 1 {
            assert!(!ends_a_head(&head[..end], 0), "{end} bytes");
        }
        assert!(ends_a_head(b"GET / HTTP/1.1\nhost: x\n\n", 20));
        assert!(!ends_a_head(b"GET / HTTP/1.1\r\nhost: x\r\n\r", 0));
    }

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        let mut out = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut out), b"0\r\n");
        assert_eq!(chunk_size_line(10, &mut out), b"a\r\n");
        assert_eq!(chunk_size_line(4096, &mut out), b"1000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut out),
            b"ffffffffffffffff\r\n"
        );
    }
}
