//! Incremental server-sent-events framing.
//!
//! The parser holds at most one incomplete event, so memory per stream does
//! not grow with the stream's length. Each complete event comes out with its
//! exact raw bytes (so a caller can forward or drop it byte-for-byte) and its
//! `event` and `data` fields.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// One complete event.
pub struct SseEvent<'a> {
    /// The event's bytes as received, including the blank line that ends it.
    pub raw: &'a Bytes,
    /// The `event:` field, or "" (the default "message").
    pub event: &'a str,
    /// The `data:` lines joined by "\n".
    pub data: Cow<'a, str>,
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
    pub fn push(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(SseEvent<'_>)) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.find_event_end() {
            let raw = self.pending.split_to(end).freeze();
            self.scanned = 0;
            dispatch(&raw, on_event);
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

    /// Index just past the blank line ending the first complete event.
    fn find_event_end(&mut self) -> Option<usize> {
        let buf = &self.pending[..];
        let mut i = self.scanned;
        while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
            let nl = i + off;
            match buf.get(nl + 1) {
                Some(b'\n') => return Some(nl + 2),
                Some(b'\r') => match buf.get(nl + 2) {
                    Some(b'\n') => return Some(nl + 3),
                    Some(_) => {}
                    None => {
                        self.scanned = nl;
                        return None;
                    }
                },
                Some(_) => {}
                None => {
                    self.scanned = nl;
                    return None;
                }
            }
            i = nl + 1;
        }
        self.scanned = buf.len();
        None
    }
}

fn dispatch(raw: &Bytes, on_event: &mut dyn FnMut(SseEvent<'_>)) {
    if raw.len() > MAX_EVENT_BYTES {
        on_event(SseEvent {
            raw,
            event: "",
            data: Cow::Borrowed(""),
        });
        return;
    }
    let text = String::from_utf8_lossy(raw);
    let text: &str = &text;
    let mut event = "";
    let mut data: Option<Cow<'_, str>> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = value,
            "data" => {
                data = Some(match data {
                    None => Cow::Borrowed(value),
                    Some(prev) => Cow::Owned(format!("{prev}\n{value}")),
                })
            }
            _ => {}
        }
    }
    // `text` borrows `raw` when it is valid UTF-8 (always, for JSON events);
    // the owned fallback is re-borrowed for the callback's lifetime.
    on_event(SseEvent {
        raw,
        event,
        data: data.unwrap_or(Cow::Borrowed("")),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(String, String, Vec<u8>)> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut |e| {
                out.push((e.event.to_string(), e.data.to_string(), e.raw.to_vec()))
            });
        }
        out
    }

    #[test]
    fn frames_events_split_anywhere() {
        let stream = b"data: {\"a\":1}\n\nevent: done\r\ndata: x\r\ndata: y\r\n\r\n: comment\n\n";
        for split in 0..stream.len() {
            let events = collect(&[&stream[..split], &stream[split..]]);
            assert_eq!(events.len(), 3, "split at {split}");
            assert_eq!(events[0].1, "{\"a\":1}");
            assert_eq!(events[0].2, b"data: {\"a\":1}\n\n");
            assert_eq!(
                (events[1].0.as_str(), events[1].1.as_str()),
                ("done", "x\ny")
            );
            assert_eq!(events[2].1, "");
        }
    }

    #[test]
    fn byte_by_byte_and_raw_bytes_concatenate_to_input() {
        let stream = b"event: a\ndata: 1\n\ndata: 2\n\n";
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let events = collect(&chunks);
        let joined: Vec<u8> = events.iter().flat_map(|e| e.2.clone()).collect();
        assert_eq!(joined, stream);
    }

    #[test]
    fn incomplete_tail_comes_out_at_finish() {
        let mut p = SseParser::default();
        p.push(b"data: 1\n\ndata: 2", &mut |_| {});
        assert_eq!(p.pending_len(), 7);
        let mut seen = Vec::new();
        let rest = p.finish(&mut |e| seen.push(e.data.to_string()));
        assert_eq!(&rest[..], b"data: 2");
        assert_eq!(seen, ["2"]);
    }
}
