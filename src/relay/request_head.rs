//! Checks of a client's request head before it is served: where it ends,
//! how its body is framed, the size of its lines, and which API dialect a
//! refusal should speak.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Version;
use pingora_http::RequestHeader;

use super::response::{content_length, keeps_alive, Chunk, Framing, MAX_HEAD_BYTES};
use crate::errors::{ApiError, Dialect, ErrorKind};

/// Whether `buf` holds an empty line (the end of a head: `\n\n` or
/// `\n\r\n`) that ends after its first `scanned` bytes.
pub(super) fn ends_a_head(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[from..])
        .any(|i| matches!(&buf[from + i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// How a request body is delimited (RFC 9112 §6.3) and whether the
/// connection may carry another request. Transfer codings: a list that
/// does not end in `chunked` leaves the length unknowable (400); one that
/// also holds another coding (`gzip, chunked`) is not implemented here
/// (501) rather than read as plain chunks. A content length next to a
/// transfer coding may be an attempt at request smuggling: the connection
/// closes after the answer (§6.1). No length and no coding: no body.
pub(super) fn request_framing(
    req: &RequestHeader,
) -> std::result::Result<(Framing, bool), ApiError> {
    let headers = &req.headers;
    let mut keepalive = keeps_alive(req.version, headers);
    let framing = if headers.contains_key(TRANSFER_ENCODING) {
        let codings: Vec<&[u8]> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .collect();
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        // HTTP/1.0 has no transfer codings: such framing is faulty (§6.1).
        if req.version == Version::HTTP_10 || !codings.last().is_some_and(|c| chunked(c)) {
            return Err(bad_request(
                "a request's transfer coding must end in chunked, in HTTP/1.1",
            ));
        }
        if codings.len() > 1 {
            if codings.iter().filter(|c| chunked(c)).count() > 1 {
                return Err(bad_request("chunked is applied more than once"));
            }
            return Err(ApiError::new(
                ErrorKind::UnsupportedTransferEncoding,
                "only the chunked transfer coding is supported in requests",
            ));
        }
        keepalive &= !headers.contains_key(CONTENT_LENGTH);
        Framing::Chunked(Chunk::SizeLine)
    } else {
        match content_length(headers.get_all(CONTENT_LENGTH)) {
            Ok(None | Some(0)) => Framing::Done,
            Ok(Some(n)) => Framing::Length(n),
            Err(_) => return Err(bad_request("invalid content-length")),
        }
    };
    Ok((framing, keepalive))
}

pub(super) fn bad_request(why: &str) -> ApiError {
    ApiError::new(
        ErrorKind::InvalidRequest,
        format!("the request is not valid HTTP/1.1: {why}"),
    )
}

pub(super) fn head_too_large() -> ApiError {
    ApiError::new(
        ErrorKind::HeaderTooLarge,
        format!("the request head is larger than {MAX_HEAD_BYTES} bytes"),
    )
}

/// Finds an over-long line in a head while it is being read: the request
/// line (414) or a header line (431) longer than the limit. Scans each
/// byte once, and stops at the empty line that ends the head.
#[derive(Default)]
pub(super) struct LineScan {
    /// Where the line being read starts.
    line_start: usize,
    /// How far the buffer was scanned.
    scanned: usize,
    /// The request line was read.
    past_request_line: bool,
    /// The head's end was found.
    ended: bool,
}

impl LineScan {
    pub(super) fn check(&mut self, buf: &[u8], max: usize) -> std::result::Result<(), ApiError> {
        // No line can be too long yet: the usual head costs no scan.
        if self.ended || buf.len() <= max {
            return Ok(());
        }
        while let Some(i) = memchr::memchr(b'\n', &buf[self.scanned..]) {
            let end = self.scanned + i;
            let line = &buf[self.line_start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.scanned = end + 1;
            self.line_start = end + 1;
            if line.is_empty() {
                // Empty lines before the request line are skipped (§2.2).
                self.ended = self.past_request_line;
                if self.ended {
                    return Ok(());
                }
                continue;
            }
            self.too_long(line.len(), max)?;
            self.past_request_line = true;
        }
        self.scanned = buf.len();
        self.too_long(buf.len() - self.line_start, max)
    }

    pub(super) fn too_long(&self, len: usize, max: usize) -> std::result::Result<(), ApiError> {
        if len <= max {
            Ok(())
        } else if self.past_request_line {
            Err(ApiError::new(
                ErrorKind::HeaderTooLarge,
                format!("a request header is longer than {max} bytes"),
            ))
        } else {
            Err(ApiError::new(
                ErrorKind::UriTooLong,
                format!("the request line is longer than {max} bytes"),
            ))
        }
    }
}

/// The API dialect of a request that is refused before it could be read,
/// from its request line (or what arrived of it): errors are then in the
/// shape the caller's SDK parses.
pub(super) fn guess_dialect(buf: &[u8]) -> Dialect {
    let line = &buf[..buf.len().min(64)];
    let target = line
        .iter()
        .position(|&b| b == b' ')
        .map_or(&b""[..], |sp| &line[sp + 1..]);
    dialect_of_target(target)
}

pub(super) fn dialect_of_target(target: &[u8]) -> Dialect {
    if target.starts_with(b"/v1beta/") {
        Dialect::Gemini
    } else if target.starts_with(b"/v1/messages") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}
