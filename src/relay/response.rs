//! Reading a channel's HTTP/1.1 answer: its head, parsed straight into the
//! head the client gets, then its body by length, by chunks or until close.
//!
//! This replaces Pingora's client session, which parsed the head into a
//! case-preserving header (that the relay then cloned), and gave every
//! answer a 64 KiB body buffer that a stream held for its whole life. Here
//! one buffer, grown by 16 KiB reads, carries head and body, and body
//! bytes leave it without a copy; event streams, which mostly wait, read
//! through a buffer shared by the thread instead (`read_through_shared`).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Version};
use pingora_core::protocols::Stream;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::ResponseHeader;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Longest head accepted (Pingora's limit too).
pub(super) const MAX_HEAD_BYTES: usize = 1024 * 1024;
pub(super) const MAX_HEADERS: usize = 256;
/// Longest chunk-size line or trailer section accepted.
const MAX_CHUNK_FRAMING_BYTES: usize = 8 * 1024;
/// Room made in the buffer before a read.
pub(super) const READ_SIZE: usize = 16 * 1024;
/// Interim 1xx answers skipped before the final one: more would let an
/// upstream hold a request past its header timeout, which is per read.
const MAX_INTERIM_ANSWERS: usize = 8;
/// Headers the client's head may gain after parsing (date, connection, and
/// an adapter's content-type / transfer-encoding), so that adding them
/// never regrows the header map.
const HEADERS_ADDED_LATER: usize = 4;

/// The body of an upstream answer, read piece by piece.
pub struct UpstreamBody {
    stream: Stream,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
    framing: Framing,
    keepalive: bool,
    /// How long the upstream keeps the connection open while idle.
    kept_open_for: Option<Duration>,
    read_timeout: Option<Duration>,
    /// Reads land in the thread's shared buffer (see `read_through_shared`).
    reads_through_shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    SizeLine,
    /// Data bytes left in the current chunk.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// Reads the answer's head (skipping interim 1xx answers) within
/// `timeout` per read; its body is then read within `body_timeout` per
/// read. A connection closed or reset before any byte of an
/// answer is `ConnectionClosed`: the upstream did not take the request up
/// (a pooled connection it had closed), so it may be sent again.
pub async fn read_head(
    mut stream: Stream,
    timeout: Option<Duration>,
    body_timeout: Option<Duration>,
) -> Result<(ResponseHeader, UpstreamBody)> {
    let mut buf = BytesMut::new();
    let mut interim = 0;
    loop {
        if let Some((len, head)) = parse_head(&buf)? {
            buf.advance(len);
            if head.status.is_informational() {
                interim += 1;
                if head.status == 101 || interim > MAX_INTERIM_ANSWERS {
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        format!("unexpected interim answer {}", head.status.as_u16()),
                    );
                }
                continue;
            }
            let (head, framing, keepalive) = framing(head)?;
            let body = UpstreamBody {
                stream,
                buf,
                framing,
                keepalive,
                kept_open_for: kept_open_for(&head.headers),
                read_timeout: body_timeout,
                reads_through_shared: false,
            };
            return Ok((head, body));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("response head larger than {MAX_HEAD_BYTES} bytes"),
            );
        }
        let answered = interim > 0 || !buf.is_empty();
        match fill(&mut stream, &mut buf, timeout, READING_ANSWER).await {
            Ok(0) if answered => {
                return Error::e_explain(
                    ErrorType::ReadError,
                    "the upstream closed the connection inside the response head",
                )
            }
            Ok(0) => {
                return Error::e_explain(
                    ErrorType::ConnectionClosed,
                    "the upstream closed the connection without answering",
                )
            }
            Err(e) if !answered && e.etype() == &ErrorType::ReadError => {
                return Err(Error::because(
                    ErrorType::ConnectionClosed,
                    "the upstream reset the connection without answering",
                    e,
                ))
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
}

/// A complete head at the start of `buf`: its length and the head.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, ResponseHeader)>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true);
    let len = match config.parse_response_with_uninit_headers(&mut response, buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("unreadable response head: {e}"),
            )
        }
    };
    let status = response.code.unwrap_or_default();
    let head =
        ResponseHeader::build_no_case(status, Some(response.headers.len() + HEADERS_ADDED_LATER))?;
    // Headers go into the map directly: Pingora's `append_header` would
    // copy every name into its title case and parse it back.
    let mut parts = http::response::Parts::from(head);
    parts.version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .or_err(ErrorType::InvalidHTTPHeader, "invalid response header name")?;
        let value = HeaderValue::from_bytes(header.value).or_err(
            ErrorType::InvalidHTTPHeader,
            "invalid response header value",
        )?;
        // At most MAX_HEADERS: far below the map's size limit.
        parts.headers.append(name, value);
    }
    let mut head = ResponseHeader::from(parts);
    head.set_reason_phrase(response.reason)?;
    Ok(Some((len, head)))
}

/// How the body is delimited (RFC 9112 §6.3) and whether the connection
/// may carry another request afterwards. A content length next to a
/// transfer coding is dropped: the coding decides, for the client too;
/// such an answer, and a transfer coding in HTTP/1.0, close the connection
/// (§6.1, §6.3).
fn framing(mut head: ResponseHeader) -> Result<(ResponseHeader, Framing, bool)> {
    let headers = &head.headers;
    let mut keepalive = keeps_alive(head.version, headers);
    let status = head.status.as_u16();
    let framing = if status == 204 || status == 304 {
        Framing::Done
    } else if let Some(chunked) = chunked_last(headers) {
        keepalive &= head.version != Version::HTTP_10 && !headers.contains_key(CONTENT_LENGTH);
        head.remove_header(&CONTENT_LENGTH);
        if chunked {
            Framing::Chunked(Chunk::SizeLine)
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length(headers.get_all(CONTENT_LENGTH))? {
            None => Framing::UntilClose,
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
        }
    };
    keepalive &= framing != Framing::UntilClose;
    Ok((head, framing, keepalive))
}

/// Whether a message lets its connection carry another one: HTTP/1.1
/// unless `connection: close`, HTTP/1.0 only with `connection: keep-alive`.
pub(super) fn keeps_alive(version: Version, headers: &http::HeaderMap) -> bool {
    let connection_has = |token: &[u8]| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    match version {
        Version::HTTP_10 => connection_has(b"keep-alive"),
        _ => !connection_has(b"close"),
    }
}

/// Whether the last transfer coding is `chunked`; `None` without a
/// Transfer-Encoding header.
pub(super) fn chunked_last(headers: &http::HeaderMap) -> Option<bool> {
    let last = headers.get_all(TRANSFER_ENCODING).iter().next_back()?;
    Some(
        last.as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked")),
    )
}

/// The length that every Content-Length value (a list of equal decimal
/// numbers each) agrees on; anything else is an error (§6.3).
pub(super) fn content_length(values: http::header::GetAll<'_, HeaderValue>) -> Result<Option<u64>> {
    let mut length = None;
    for value in values {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            let n = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                .flatten();
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(l)) if n == l => {}
                _ => {
                    return Error::e_explain(ErrorType::InvalidHTTPHeader, "invalid content-length")
                }
            }
        }
    }
    Ok(length)
}

pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// How long the upstream keeps an idle connection open (`Keep-Alive:
/// timeout=N`, sent by nginx, uvicorn, Node and others), less a second, so
/// that a pooled connection is not taken just as the upstream closes it.
fn kept_open_for(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(KEEP_ALIVE)?.to_str().ok()?;
    let seconds: u64 = value.split(',').find_map(|param| {
        let (name, n) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| n.trim().parse().ok())
            .flatten()
    })?;
    Some(Duration::from_secs(seconds.saturating_sub(1)))
}

impl UpstreamBody {
    /// The next piece of the body, `None` at its end.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        loop {
            match take_piece(&mut self.buf, &mut self.framing)? {
                Piece::Data(data) => return Ok(Some(data)),
                Piece::End => return Ok(None),
                Piece::NeedMore => {
                    if self.fill().await? > 0 {
                        continue;
                    }
                    return match self.framing {
                        Framing::UntilClose => {
                            self.framing = Framing::Done;
                            Ok(None)
                        }
                        Framing::Length(left) => Error::e_explain(
                            ErrorType::ConnectionClosed,
                            format!("the upstream closed the connection {left} bytes before the end of the body"),
                        ),
                        _ => Error::e_explain(
                            ErrorType::ConnectionClosed,
                            "the upstream closed the connection inside a chunked body",
                        ),
                    };
                }
            }
        }
    }

    pub fn is_body_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The connection, if it may carry another request: the body was read
    /// to its end, nothing followed it, and the upstream did not ask to
    /// close; with how long the upstream keeps it open, if it said.
    pub fn into_reusable(self) -> Option<(Stream, Option<Duration>)> {
        let reusable = self.keepalive
            && self.is_body_done()
            && self.buf.is_empty()
            && self.kept_open_for != Some(Duration::ZERO);
        reusable.then_some((self.stream, self.kept_open_for))
    }

    /// For answers that trickle in and spend most of their life waiting (event
    /// streams): while waiting, hold only the bytes of an unfinished piece,
    /// not a read buffer. Each read lands in the thread's shared buffer and
    /// only the bytes that came are kept: a few hundred per event, instead
    /// of a 16 KiB buffer (one or two touched pages) per open stream. Bytes
    /// that came with the head stay in the head's buffer until handed out.
    pub fn read_through_shared_buffer(&mut self) {
        self.reads_through_shared = true;
    }

    async fn fill(&mut self) -> Result<usize> {
        if !self.reads_through_shared {
            return fill(
                &mut self.stream,
                &mut self.buf,
                self.read_timeout,
                READING_ANSWER,
            )
            .await;
        }
        if self.buf.is_empty() {
            // Drops this body's share of an allocation whose bytes were
            // handed out, so it is freed once they are.
            self.buf = BytesMut::new();
        }
        let read = read_through_shared(&mut self.stream, &mut self.buf);
        timed(read, self.read_timeout, READING_ANSWER).await
    }
}

const READING_ANSWER: &str = "while reading the upstream response";

/// Reads what the stream has into `buf`: 0 when the peer closed. `doing`
/// names the read in errors.
pub(super) async fn fill(
    stream: &mut Stream,
    buf: &mut BytesMut,
    timeout: Option<Duration>,
    doing: &'static str,
) -> Result<usize> {
    // Once the pieces handed out are dropped, reads start again at the
    // front of the same allocation: a stream of small events keeps
    // touching the same page instead of walking through the whole buffer.
    if buf.is_empty() {
        let _ = buf.try_reclaim(READ_SIZE);
    }
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    timed(stream.read_buf(buf), timeout, doing).await
}

async fn timed(
    read: impl Future<Output = std::io::Result<usize>>,
    timeout: Option<Duration>,
    doing: &'static str,
) -> Result<usize> {
    // Not `deadline::within`: reads of an upstream answer mostly wait (for
    // the head, for the next event), so polling first would only add a poll.
    let n = match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .or_err(ErrorType::ReadTimedout, doing)?,
        None => read.await,
    };
    n.or_err(ErrorType::ReadError, doing)
}

thread_local! {
    /// Where reads through `read_through_shared` land: one buffer per
    /// thread instead of one per open stream. It is borrowed only inside a
    /// single poll, never across an await.
    static SHARED_READ_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// Reads what the stream has into the thread's shared buffer and appends it
/// to `buf`: 0 when the peer closed.
async fn read_through_shared(stream: &mut Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    poll_fn(|cx| {
        SHARED_READ_BUFFER.with_borrow_mut(|shared| {
            let mut read = ReadBuf::new(shared);
            ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        })
    })
    .await
}

/// What the bytes at hand give of a framed body.
pub(super) enum Piece {
    Data(Bytes),
    /// The body ends inside bytes not read yet (or, until close, at the close).
    NeedMore,
    End,
}

/// The next piece of a body framed by `framing` out of `buf`, without
/// reading; used for answers and for request bodies alike.
pub(super) fn take_piece(buf: &mut BytesMut, framing: &mut Framing) -> Result<Piece> {
    loop {
        match *framing {
            Framing::Done => return Ok(Piece::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Piece::NeedMore);
                }
                let take = left.min(buf.len() as u64);
                *framing = match left - take {
                    0 => Framing::Done,
                    rest => Framing::Length(rest),
                };
                return Ok(Piece::Data(buf.split_to(take as usize).freeze()));
            }
            Framing::UntilClose if buf.is_empty() => return Ok(Piece::NeedMore),
            Framing::UntilClose => return Ok(Piece::Data(buf.split().freeze())),
            Framing::Chunked(chunk) => match decode_chunked(buf, chunk)? {
                Decoded::Data(data, next) => {
                    *framing = next;
                    return Ok(Piece::Data(data));
                }
                Decoded::Step(next) => *framing = next,
                Decoded::NeedMore => return Ok(Piece::NeedMore),
            },
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes, Framing),
    /// Framing consumed, nothing to hand out yet.
    Step(Framing),
    /// The bytes at hand end inside framing.
    NeedMore,
}

/// One step of chunked decoding (RFC 9112 §7.1) at the start of `buf`.
fn decode_chunked(buf: &mut BytesMut, chunk: Chunk) -> Result<Decoded> {
    let invalid = |why: &str| {
        Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            format!("invalid chunked body: {why}"),
        )
    };
    match chunk {
        // httparse reads an empty size line as 0, the last chunk: a stray
        // line break would end the body early without an error.
        Chunk::SizeLine if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
            invalid("bad chunk size")
        }
        Chunk::SizeLine => match httparse::parse_chunk_size(buf) {
            // Lines end in CRLF only, and an extension holds no line break
            // (httparse lets a LF pass there): a front proxy that reads a
            // bare LF differently would get out of step with us (request
            // smuggling). Pingora's body reader was as strict.
            Ok(httparse::Status::Complete((used, _)))
                if memchr::memchr2(b'\r', b'\n', &buf[..used]) != Some(used - 2) =>
            {
                invalid("bad line break in a chunk size line")
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                Ok(Decoded::Step(Framing::Chunked(match size {
                    0 => Chunk::Trailers,
                    n => Chunk::Data(n),
                })))
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_CHUNK_FRAMING_BYTES => {
                Ok(Decoded::NeedMore)
            }
            Ok(httparse::Status::Partial) => invalid("chunk size line too long"),
            Err(_) => invalid("bad chunk size"),
        },
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let take = left.min(buf.len() as u64);
            let next = match left - take {
                0 => Chunk::DataEnd,
                rest => Chunk::Data(rest),
            };
            let data = buf.split_to(take as usize).freeze();
            Ok(Decoded::Data(data, Framing::Chunked(next)))
        }
        Chunk::DataEnd => match &buf[..] {
            [b'\r', b'\n', ..] => {
                buf.advance(2);
                Ok(Decoded::Step(Framing::Chunked(Chunk::SizeLine)))
            }
            [] | [b'\r'] => Ok(Decoded::NeedMore),
            _ => invalid("chunk data longer than its size"),
        },
        Chunk::Trailers => {
            // Trailer fields end with an empty line; they are dropped.
            let mut at = 0;
            while let Some(nl) = memchr::memchr(b'\n', &buf[at..]) {
                let line = &buf[at..at + nl];
                at += nl + 1;
                if !line.ends_with(b"\r") {
                    return invalid("bad line break in trailers");
                }
                if line == b"\r" {
                    buf.advance(at);
                    return Ok(Decoded::Step(Framing::Done));
                }
            }
            if buf.len() > MAX_CHUNK_FRAMING_BYTES {
                return invalid("trailers too long");
            }
            Ok(Decoded::NeedMore)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<(ResponseHeader, Framing, bool)> {
        let (len, head) = parse_head(text.as_bytes())?.expect("a complete head");
        assert_eq!(len, text.len());
        framing(head)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (_, f, keep) = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::Length(12), true));
        let (_, f, keep) = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::Done, true));
        let (_, f, keep) = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::Done, true));
        let (_, f, keep) = head("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::Done, true));
        let (_, f, keep) = head("HTTP/1.1 200 OK\r\nconnection: Close\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::UntilClose, false));
        // HTTP/1.0 keeps the connection only when asked to.
        let (_, f, keep) = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::Length(2), false));
        let (_, _, keep) =
            head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n").unwrap();
        assert!(keep);
        let (_, _, keep) =
            head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: te, close\r\n\r\n").unwrap();
        assert!(!keep);
    }

    #[test]
    fn the_upstreams_keep_alive_timeout_is_kept_with_a_second_to_spare() {
        let kept = |value: &str| {
            let (h, _, _) = head(&format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nkeep-alive: {value}\r\n\r\n"
            ))
            .unwrap();
            kept_open_for(&h.headers)
        };
        assert_eq!(kept("timeout=5"), Some(Duration::from_secs(4)));
        assert_eq!(kept("max=100, Timeout = 75"), Some(Duration::from_secs(74)));
        assert_eq!(kept("timeout=1"), Some(Duration::ZERO));
        assert_eq!(kept("max=100"), None);
        assert_eq!(kept("timeout=soon"), None);
    }

    #[test]
    fn a_transfer_coding_overrides_and_removes_the_content_length() {
        let (h, f, keep) = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(f, Framing::Chunked(Chunk::SizeLine));
        assert!(h.headers.get("content-length").is_none());
        // The content length went, and so does the connection.
        assert!(!keep);
        let (_, f, keep) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::Chunked(Chunk::SizeLine), true));
        let (_, f, keep) =
            head("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n")
                .unwrap();
        assert_eq!((f, keep), (Framing::Chunked(Chunk::SizeLine), false));
        // Not ending in chunked: the body runs to the close.
        let (_, f, keep) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n").unwrap();
        assert_eq!((f, keep), (Framing::UntilClose, false));
    }

    #[test]
    fn conflicting_or_bad_content_lengths_are_refused() {
        for same in ["3\r\ncontent-length: 3", "3, 3", " 3 "] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {same}\r\n\r\n");
            assert_eq!(head(&text).unwrap().1, Framing::Length(3), "{same}");
        }
        for bad in [
            "3\r\ncontent-length: 4",
            "3, 4",
            "-1",
            "+3",
            "abc",
            "1 2",
            "",
            "3,",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            let e = head(&text).expect_err(bad);
            assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader, "{bad}");
        }
    }

    #[test]
    fn the_head_keeps_status_and_headers_and_stops_at_its_end() {
        let text = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-A: 1\r\nx-a: 2\r\n\r\n{\"e\":1}";
        assert!(parse_head(&text[..20]).unwrap().is_none());
        let (len, h) = parse_head(text).unwrap().unwrap();
        assert_eq!(&text[len..], b"{\"e\":1}");
        assert_eq!(h.status.as_u16(), 429);
        assert_eq!(h.get_reason_phrase(), Some("Too Many Requests"));
        assert_eq!(h.headers.get("retry-after").unwrap(), "7");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        let (_, h) = parse_head(b"HTTP/1.1 529 Overloaded\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.get_reason_phrase(), Some("Overloaded"));
        let e = parse_head(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n").unwrap_err();
        assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader);
    }

    /// Decodes `wire` fed in the given pieces, as reads would deliver it.
    fn decode_in_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, Framing, BytesMut)> {
        let mut buf = BytesMut::new();
        let mut framing = Framing::Chunked(Chunk::SizeLine);
        let mut out = Vec::new();
        let mut pieces = pieces.iter();
        while let Framing::Chunked(chunk) = framing {
            match decode_chunked(&mut buf, chunk)? {
                Decoded::Data(data, next) => {
                    out.extend_from_slice(&data);
                    framing = next;
                }
                Decoded::Step(next) => framing = next,
                Decoded::NeedMore => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => break,
                },
            }
        }
        // What the last reads brought past the body.
        pieces.for_each(|p| buf.extend_from_slice(p));
        Ok((out, framing, buf))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire: &[u8] =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        let want = b"helloabcdefghijklmnopqrstuvwxyz";
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                let (out, framing, rest) =
                    decode_in_pieces(&[&wire[..i], &wire[i..j], &wire[j..]]).unwrap();
                assert_eq!(out, want, "cut at {i}, {j}");
                assert_eq!(framing, Framing::Done, "cut at {i}, {j}");
                assert_eq!(&rest[..], b"NEXT", "cut at {i}, {j}");
            }
        }
    }

    /// An event stream read through the thread's shared buffer, its chunks
    /// arriving cut at every kind of place and with pauses between: the
    /// body comes out whole and the connection stays reusable.
    #[tokio::test]
    async fn event_streams_read_through_the_shared_buffer_come_out_whole() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events: Vec<String> = (0..40)
            .map(|i| format!("data: {{\"n\":{i}}}\n\n"))
            .collect();
        let mut wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                         transfer-encoding: chunked\r\n\r\n"
            .to_vec();
        for e in &events {
            wire.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // Cuts inside heads, size lines, data and CRLFs alike.
            for piece in wire.chunks(7) {
                socket.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            socket
        });
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        ));
        let (_, mut body) = read_head(stream, None, None).await.unwrap();
        body.read_through_shared_buffer();
        let mut got = Vec::new();
        while let Some(piece) = body.read_body_bytes().await.unwrap() {
            got.extend_from_slice(&piece);
        }
        assert_eq!(String::from_utf8(got).unwrap(), events.concat());
        assert!(body.into_reusable().is_some());
        drop(upstream.await.unwrap());
    }

    #[test]
    fn broken_chunk_framing_is_an_error_and_a_short_body_is_not_done() {
        // A stray line break where a size belongs would otherwise read as
        // the last chunk and end the body early without an error.
        let bad_sizes = [
            &b"zz\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"5\r\nhello\r\n\r\n3\r\n",
            // Bare LFs: after a size, after data, inside an extension,
            // in trailers.
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5;\nAAAAA\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"0\r\nx-trailer: t\n\r\n",
            b"0\r\n\n",
        ];
        for bad in bad_sizes
            .into_iter()
            .chain([&b"3\r\nabcd\r\n"[..], b"FFFFFFFFFFFFFFFFF\r\n"])
        {
            let e = decode_in_pieces(&[bad]).unwrap_err();
            assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader);
        }
        let (out, framing, _) = decode_in_pieces(&[b"5\r\nhel"]).unwrap();
        assert_eq!(out, b"hel");
        assert_eq!(framing, Framing::Chunked(Chunk::Data(2)));
        let long_line = vec![b'1'; MAX_CHUNK_FRAMING_BYTES + 1];
        assert!(decode_in_pieces(&[&long_line]).is_err());
    }
}
