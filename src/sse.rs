//! Incremental server-sent-events framing.
//!
//! The parser holds at most one incomplete event, so memory per stream does
//! not grow with the stream's length. Each complete event comes out with its
//! exact raw bytes (so a caller can forward or drop it byte-for-byte) and its
//! `data` field. Other fields (`event:`, `id:`) are not read: every provider
//! names the event inside its JSON data too.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// One complete event.
pub struct SseEvent<'a> {
    /// The event's bytes as received, including the blank line that ends it.
    pub raw: &'a Bytes,
    /// The `data:` lines joined by "\n", as received: not checked for UTF-8
    /// here, since only its reader knows whether it needs text.
    pub data: Cow<'a, [u8]>,
}

impl SseEvent<'_> {
    /// The data as text, for a JSON reader. Data that is not UTF-8 is not
    /// JSON (RFC 8259): `None`, and the event is passed on but not read.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// Whether an answer's head declares an event stream (`Some(true)`), a JSON
/// body (`Some(false)`: `application/json` or `+json`), or neither (`None`).
/// A provider may answer a stream request with one JSON body (an error, a
/// cached answer, a proxy that ignores `stream`): its usage is then read
/// from the body, as for a non-stream request, and the reverse.
pub fn declared_event_stream(head: &pingora_http::ResponseHeader) -> Option<bool> {
    let value = head
        .headers
        .get(http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("text/event-stream") {
        Some(true)
    } else if media.eq_ignore_ascii_case("application/json")
        || media.to_ascii_lowercase().ends_with("+json")
    {
        Some(false)
    } else {
        None
    }
}

/// Events larger than this are passed through but their fields not parsed.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
pub struct SseParser {
    pending: BytesMut,
    /// How far `pending` has been searched for an event end.
    scanned: usize,
}

impl SseParser {
    /// Feeds a chunk; calls `on_event` for every event it completes.
    /// Events that lie whole in the chunk are handed out as slices of it;
    /// only an event split across chunks is copied together.
    pub fn push(&mut self, chunk: &Bytes, on_event: &mut dyn FnMut(SseEvent<'_>)) {
        let mut start = 0;
        if !self.pending.is_empty() {
            // Complete the held event first, then go on in the chunk itself.
            let held = self.pending.len();
            self.pending.extend_from_slice(chunk);
            match event_end(&self.pending, self.scanned) {
                Ok(end) => {
                    let raw = self.pending.split_to(end).freeze();
                    self.pending.clear();
                    start = end - held;
                    dispatch(&raw, on_event);
                }
                Err(scanned) => {
                    self.scanned = scanned;
                    return;
                }
            }
        }
        let mut scanned = start;
        loop {
            match event_end(chunk, scanned) {
                Ok(end) => {
                    dispatch(&chunk.slice(start..end), on_event);
                    start = end;
                    scanned = end;
                }
                Err(scanned) => {
                    self.pending.extend_from_slice(&chunk[start..]);
                    self.scanned = scanned - start;
                    return;
                }
            }
        }
    }

    /// Whatever is left when the stream ends (an event without its final
    /// blank line): dispatched as an event if it has fields, and returned.
    pub fn finish(&mut self, on_event: &mut dyn FnMut(SseEvent<'_>)) -> Bytes {
        let raw = std::mem::take(&mut self.pending).freeze();
        self.scanned = 0;
        if !raw.is_empty() {
            dispatch(&raw, on_event);
        }
        raw
    }

    /// Bytes held back, waiting for the end of their event.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// `Ok`: the index just past the blank line that ends the first event in
/// `buf`, searching from `from` (a line start or a newline). `Err`: where
/// to resume once more bytes arrive.
fn event_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Ok(nl + 2),
            Some(b'\r') => match buf.get(nl + 2) {
                Some(b'\n') => return Ok(nl + 3),
                Some(_) => {}
                None => return Err(nl),
            },
            Some(_) => {}
            None => return Err(nl),
        }
        i = nl + 1;
    }
    Err(buf.len())
}

fn dispatch(raw: &Bytes, on_event: &mut dyn FnMut(SseEvent<'_>)) {
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut rest: &[u8] = if raw.len() > MAX_EVENT_BYTES {
        &[]
    } else {
        raw
    };
    while !rest.is_empty() {
        let line = match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 1..];
                line
            }
            None => std::mem::take(&mut rest),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data") else {
            continue;
        };
        let value = match value {
            [] => value,
            [b':', v @ ..] => v.strip_prefix(b" ").unwrap_or(v),
            _ => continue, // another field whose name starts with "data"
        };
        data = Some(match data {
            None => Cow::Borrowed(value),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                Cow::Owned(joined)
            }
        });
    }
    on_event(SseEvent {
        raw,
        data: data.unwrap_or(Cow::Borrowed(b"")),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(&Bytes::copy_from_slice(c), &mut |e| {
                out.push((
                    String::from_utf8_lossy(&e.data).into_owned(),
                    e.raw.to_vec(),
                ))
            });
        }
        out
    }

    #[test]
    fn frames_events_split_anywhere() {
        let stream = b"data: {\"a\":1}\n\nevent: done\r\ndata: x\r\ndata: y\r\n\r\n: comment\n\n\
                       dataset: z\ndata\ndata:w\n\n";
        for (a, b) in (0..=stream.len()).flat_map(|a| (a..=stream.len()).map(move |b| (a, b))) {
            let events = collect(&[&stream[..a], &stream[a..b], &stream[b..]]);
            assert_eq!(events.len(), 4, "split at {a}, {b}");
            let joined: Vec<u8> = events.iter().flat_map(|e| e.1.clone()).collect();
            assert_eq!(joined, stream);
            assert_eq!(events[0].0, "{\"a\":1}");
            assert_eq!(events[0].1, b"data: {\"a\":1}\n\n");
            assert_eq!(events[1].0, "x\ny");
            assert_eq!(events[2].0, "");
            // "dataset" is another field; a bare "data" line is an empty value.
            assert_eq!(events[3].0, "\nw");
        }
    }

    #[test]
    fn byte_by_byte_and_raw_bytes_concatenate_to_input() {
        let stream = b"event: a\ndata: 1\n\ndata: 2\n\n";
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let events = collect(&chunks);
        let joined: Vec<u8> = events.iter().flat_map(|e| e.1.clone()).collect();
        assert_eq!(joined, stream);
    }

    #[test]
    fn data_that_is_not_utf8_has_no_text_but_keeps_its_bytes() {
        let mut p = SseParser::default();
        let mut seen = Vec::new();
        let chunk = Bytes::from_static(b"data: {\"a\":\"\xff\"}\n\ndata: {}\n\n");
        p.push(&chunk, &mut |e| {
            seen.push((e.text().map(str::to_string), e.raw.clone()))
        });
        assert_eq!(seen[0].0, None);
        assert_eq!(&seen[0].1[..], b"data: {\"a\":\"\xff\"}\n\n");
        assert_eq!(seen[1].0.as_deref(), Some("{}"));
    }

    #[test]
    fn incomplete_tail_comes_out_at_finish() {
        let mut p = SseParser::default();
        p.push(&Bytes::from_static(b"data: 1\n\ndata: 2"), &mut |_| {});
        assert_eq!(p.pending_len(), 7);
        let mut seen = Vec::new();
        let rest = p.finish(&mut |e| seen.push(e.data.into_owned()));
        assert_eq!(&rest[..], b"data: 2");
        assert_eq!(seen, [b"2"]);
    }
}
