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
use tracing::info;

use super::request_head::{
    bad_request, dialect_of_target, ends_a_head, guess_dialect, head_too_large, request_framing,
    LineScan,
};
use super::response::{
    content_length, fill, take_piece, Framing, Piece, MAX_HEADERS, MAX_HEAD_BYTES,
};
use crate::config::ServerSection;
use crate::drain;
use crate::errors::{ApiError, Dialect, ErrorKind};

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
    /// A client listener's connection: it takes part in the graceful stop
    /// ([`crate::drain`]); the admin listener's do not.
    drains: bool,
    /// Held while a request is served, so that a graceful stop waits for it.
    in_flight: Option<drain::InFlight>,
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
    /// A connection to the admin listener: served as long as the process
    /// runs, never waited for at shutdown.
    pub fn for_admin(stream: Stream) -> Self {
        ClientSession {
            drains: false,
            ..ClientSession::new(stream)
        }
    }

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
            drains: true,
            in_flight: None,
        }
    }

    /// Reads the next request head within `client_header_timeout_seconds`
    /// (counted from when the connection became ready for a request, so the
    /// same bound applies to idle kept-alive connections). `false`: no
    /// request (closed, timed out, or a head that is refused, which gets
    /// its 400, 414, 431 or 501 first): close the connection.
    /// On a client listener's connection, a graceful stop closes a
    /// connection that waits for a request, and refuses (503) a request
    /// that arrives anyway.
    pub async fn read_request(&mut self, server: &ServerSection) -> bool {
        self.in_flight = None;
        let deadline = seconds(server.client_header_timeout_seconds);
        self.read_timeout = Some(deadline);
        self.write_timeout = Some(seconds(server.client_write_timeout_seconds));
        let drains = self.drains;
        let read = tokio::time::timeout(deadline, self.read_head(server.max_header_bytes));
        let read = if drains {
            tokio::select! {
                biased;
                read = read => read,
                _ = drain::started() => return false,
            }
        } else {
            read.await
        };
        match read {
            Ok(Ok(true)) if drains => {
                // Counted before looking: the drain sets its flag before it
                // counts, so one of the two sees the other.
                let in_flight = drain::in_flight();
                if !drain::draining() {
                    self.in_flight = Some(in_flight);
                    return true;
                }
                drop(in_flight);
                let refusal = ApiError::new(
                    ErrorKind::ShuttingDown,
                    "the gateway is shutting down: retry the request",
                )
                .with_retry_after(1);
                let dialect = dialect_of_target(self.req.uri.path().as_bytes());
                if self.refuse(&refusal, dialect).await.is_ok() {
                    linger(self).await;
                }
                false
            }
            Ok(Ok(read)) => read,
            Ok(Err(Some(refusal))) => {
                // Only the reason: a refused head may hold credentials, and
                // its size is the client's to choose.
                info!(
                    client = %self.client_ip.map_or_else(String::new, |ip| ip.to_string()),
                    status = refusal.status,
                    "refused a request head: {}",
                    refusal.message
                );
                let dialect = guess_dialect(&self.buf);
                if self.refuse(&refusal, dialect).await.is_ok() {
                    self.discard_input().await;
                }
                false
            }
            _ => false,
        }
    }

    /// Answers a request that could not be read and closes. Its API
    /// dialect is guessed from the request line, if one was read.
    async fn refuse(&mut self, error: &ApiError, dialect: Dialect) -> Result<()> {
        let body = error.body(dialect);
        let mut out = BytesMut::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        let status =
            http::StatusCode::from_u16(error.status).unwrap_or(http::StatusCode::BAD_REQUEST);
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        if let Some(seconds) = error.retry_after {
            out.extend_from_slice(b"\r\nretry-after: ");
            out.extend_from_slice(seconds.to_string().as_bytes());
        }
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(get_cached_date().as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        out.extend_from_slice(&body);
        self.keepalive = false;
        self.write(&out).await?;
        self.flush().await
    }

    /// After a refused head: ends the answer with a FIN, then reads and
    /// drops what the client still sends, within bounds. A client still
    /// sending its (over-long) head would otherwise be reset by the close,
    /// and a reset can destroy the answer before it is read.
    async fn discard_input(&mut self) {
        let _ = within(self.write_timeout, self.stream.shutdown()).await;
        let discard = async {
            let mut left = LINGER_MAX_BYTES;
            loop {
                self.buf.clear();
                match self.fill(None).await {
                    Ok(n) if n > 0 && n <= left => left -= n,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_MAX_TIME, discard).await;
    }

    /// Reads a request head. `Err(Some(refusal))`: a head to refuse with
    /// that answer; `Err(None)`: the connection failed.
    async fn read_head(&mut self, max_line: usize) -> std::result::Result<bool, Option<ApiError>> {
        let mut scanned = 0;
        let mut lines = LineScan::default();
        loop {
            // An over-long line is refused as soon as it is seen, not once
            // the whole head (up to 1 MiB) arrived.
            lines.check(&self.buf, max_line)?;
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
                return Err(Some(head_too_large()));
            }
            match self.fill(None).await {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(_) => return Err(None),
            }
        }
    }

    /// Parses a complete head at the start of the buffer into `req` and the
    /// body's framing; its length, or `None` if more bytes are needed.
    fn parse_head(&mut self) -> std::result::Result<Option<usize>, ApiError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let len = match parsed.parse_with_uninit_headers(&self.buf, &mut headers) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ApiError::new(
                    ErrorKind::HeaderTooLarge,
                    format!("the request has more than {MAX_HEADERS} headers"),
                ))
            }
            Err(e) => return Err(bad_request(&format!("unreadable request head: {e}"))),
        };
        // The last read may have brought more than the limit at once.
        if len > MAX_HEAD_BYTES {
            return Err(head_too_large());
        }
        let method = parsed.method.unwrap_or_default();
        let path = parsed.path.unwrap_or_default().as_bytes();
        let req = RequestHeader::build_no_case(method, path, Some(parsed.headers.len()))
            .map_err(|_| bad_request("invalid request line"))?;
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
                .map_err(|_| bad_request("invalid request header name"))?;
            let value = HeaderValue::from_bytes(header.value)
                .map_err(|_| bad_request("invalid request header value"))?;
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
        // Stopping: this is the connection's last answer.
        if self.drains && drain::draining() {
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
    use super::super::response::Chunk;
    use super::*;

    fn framing_of(head: &str) -> std::result::Result<(Framing, bool), ApiError> {
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
        let status = |h: &str| f(h).map_or_else(|e| e.status, |_| 200);
        assert_eq!(status("transfer-encoding: gzip\r\n"), 400);
        assert_eq!(status("transfer-encoding: chunked, gzip\r\n"), 400);
        // Another coding before chunked: not read as plain chunks.
        assert_eq!(status("transfer-encoding: gzip, chunked\r\n"), 501);
        assert_eq!(
            status("transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n"),
            501
        );
        assert_eq!(status("transfer-encoding: chunked, chunked\r\n"), 400);
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
    fn over_long_lines_are_found_while_the_head_arrives() {
        let scan = |pieces: &[&str], max: usize| {
            let mut lines = LineScan::default();
            let mut buf = Vec::new();
            for p in pieces {
                buf.extend_from_slice(p.as_bytes());
                lines.check(&buf, max).map_err(|e| e.status)?;
            }
            Ok::<_, u16>(())
        };
        let long = "a".repeat(100);
        assert_eq!(scan(&["GET /", &long], 64), Err(414));
        assert_eq!(scan(&[&format!("GET /{long} HTTP/1.1\r\n")], 64), Err(414));
        assert_eq!(scan(&["GET / HTTP/1.1\r\nx: ", &long], 64), Err(431));
        assert_eq!(scan(&["\r\nGET / HTTP/1.1\r\nx: ", &long], 64), Err(431));
        assert_eq!(scan(&["GET / HTTP/1.1\nx: y\n", "z: w\r\n"], 64), Ok(()));
        // Exactly the limit passes; what follows the head is not a line.
        let at_limit = format!("GET /{} HTTP/1.1", "a".repeat(50));
        assert_eq!(at_limit.len(), 64);
        assert_eq!(
            scan(&[&at_limit, "\r\n\r\n", &long, "\n", &long], 64),
            Ok(())
        );
    }

    #[test]
    fn refusals_before_the_head_is_read_guess_the_dialect() {
        assert_eq!(guess_dialect(b"POST /v1beta/models/x"), Dialect::Gemini);
        assert_eq!(guess_dialect(b"POST /v1/messages HT"), Dialect::Anthropic);
        assert_eq!(guess_dialect(b"GET /v1/models HTTP/1.1"), Dialect::OpenAi);
        assert_eq!(guess_dialect(b""), Dialect::OpenAi);
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
