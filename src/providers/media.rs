//! Reading the answers of the OpenAI media endpoints (images, audio) on
//! their way to the client, unchanged and never held whole: an image's
//! `b64_json` or an audio stream passes chunk by chunk. What is kept:
//!
//! - images and transcriptions as JSON: the first 1 KiB (where Whisper's
//!   `verbose_json` puts `duration`) and the last 64–128 KiB (where
//!   `usage` is) of the body;
//! - their streams (`stream: true`): one event at a time, which for a
//!   partial image is that image's base64 (the format forces it);
//! - speech: nothing at all, its price is known from the request.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::openai::Tail;
use super::ResponseAdapter;
use crate::media::MediaOp;
use crate::sse::SseParser;
use crate::usage::{Units, Usage};

/// Bytes of the body's start kept for `duration`.
const HEAD_BYTES: usize = 1024;

/// The `usage` of gpt-image-1 (`input_tokens`, `input_tokens_details`,
/// `output_tokens`) and of transcriptions (`{"type": "duration",
/// "seconds": 3}` or `{"type": "tokens", ...}`).
#[derive(Deserialize, Default)]
struct MediaUsage {
    #[serde(rename = "type")]
    kind: Option<String>,
    seconds: Option<serde_json::Number>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<InputDetails>,
}

#[derive(Deserialize, Default)]
struct InputDetails {
    image_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Event {
    usage: Option<MediaUsage>,
}

/// Seconds (a JSON number such as 8.47) in whole milliseconds, rounded
/// half to even; read through a decimal, never a binary float.
fn seconds_to_ms(n: &serde_json::Number) -> Option<u64> {
    let seconds: Decimal = n.to_string().parse().ok()?;
    let ms = (seconds * Decimal::from(1000))
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointNearestEven);
    u64::try_from(ms).ok()
}

pub struct MediaAdapter {
    op: MediaOp,
    stream: bool,
    sse: SseParser,
    head: Tail,
    head_len: usize,
    tail: Tail,
    usage: Option<Usage>,
    units: Units,
}

impl MediaAdapter {
    pub fn new(op: MediaOp, stream: bool) -> Self {
        MediaAdapter {
            op,
            stream,
            sse: SseParser::default(),
            head: Tail::default(),
            head_len: 0,
            tail: Tail::default(),
            usage: None,
            units: Units::default(),
        }
    }

    fn take(&mut self, u: &MediaUsage) {
        if u.kind.as_deref() == Some("duration") {
            self.units.audio_ms = u.seconds.as_ref().and_then(seconds_to_ms).unwrap_or(0);
            return;
        }
        let image_input = u
            .input_tokens_details
            .as_ref()
            .and_then(|d| d.image_tokens)
            .unwrap_or(0);
        let input = u.input_tokens.unwrap_or(0);
        self.units.image_input = image_input.min(input);
        self.usage = Some(Usage {
            input: input - image_input.min(input),
            output: u.output_tokens.unwrap_or(0),
            ..Usage::default()
        });
    }
}

impl ResponseAdapter for MediaAdapter {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        if let Some(stream) = crate::sse::declared_event_stream(head) {
            self.stream = stream;
        }
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        match self.op {
            MediaOp::Speech => {}
            _ if self.stream => {
                let mut parser = std::mem::take(&mut self.sse);
                parser.push(&chunk, &mut |e| {
                    let event = e.text().and_then(|t| serde_json::from_str::<Event>(t).ok());
                    if let Some(u) = event.and_then(|e| e.usage) {
                        self.take(&u);
                    }
                });
                self.sse = parser;
            }
            _ => {
                if self.head_len < HEAD_BYTES {
                    let n = chunk.len().min(HEAD_BYTES - self.head_len);
                    self.head.push(&chunk[..n]);
                    self.head_len += n;
                }
                self.tail.push(&chunk);
            }
        }
        chunk
    }

    fn on_end(&mut self) -> Bytes {
        if self.op == MediaOp::Speech || self.stream {
            return Bytes::new();
        }
        if let Some(u) = self.tail.last_value::<MediaUsage>("usage") {
            self.take(&u);
        }
        if self.units.audio_ms == 0 {
            // Whisper's verbose_json: `duration` near the start.
            let duration = self.head.last_value::<serde_json::Number>("duration");
            self.units.audio_ms = duration.as_ref().and_then(seconds_to_ms).unwrap_or(0);
        }
        Bytes::new()
    }

    fn rewrites_body(&self) -> bool {
        false
    }

    /// Media are priced by units, tokens only where the provider reports
    /// them: an answer without a token report used none.
    fn usage(&self) -> Option<Usage> {
        Some(self.usage.unwrap_or_default())
    }

    fn units(&self) -> Units {
        self.units
    }

    fn estimated_output_tokens(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: MediaOp, chunks: &[&[u8]]) -> (Usage, Units) {
        let mut a = MediaAdapter::new(op, false);
        for c in chunks {
            assert_eq!(&a.on_chunk(Bytes::copy_from_slice(c))[..], *c);
        }
        a.on_end();
        (a.usage().unwrap(), a.units())
    }

    #[test]
    fn reads_image_tokens_and_durations() {
        let b64 = "A".repeat(300_000);
        let body = format!(
            r#"{{"created":1,"data":[{{"b64_json":"{b64}"}}],"usage":{{"input_tokens":50,"input_tokens_details":{{"text_tokens":10,"image_tokens":40}},"output_tokens":4160,"total_tokens":4210}}}}"#
        );
        let (head, rest) = body.as_bytes().split_at(1000);
        let (u, units) = run(MediaOp::Image, &[head, rest]);
        assert_eq!((u.input, u.output, units.image_input), (10, 4160, 40));
        let (u, units) = run(
            MediaOp::Transcribe,
            &[br#"{"text":"hi","usage":{"type":"duration","seconds":3}}"#],
        );
        assert_eq!((u, units.audio_ms), (Usage::default(), 3000));
        let verbose = format!(
            r#"{{"task":"transcribe","language":"english","duration":8.47,"text":"{}","segments":[]}}"#,
            "x".repeat(200_000)
        );
        let (_, units) = run(MediaOp::Transcribe, &[verbose.as_bytes()]);
        assert_eq!(units.audio_ms, 8470);
        // Plain text: nothing reported.
        let (u, units) = run(MediaOp::Transcribe, &[b"hello there"]);
        assert_eq!((u, units), (Usage::default(), Units::default()));
        // Speech bytes are not read at all.
        let (_, units) = run(MediaOp::Speech, &[b"RIFF\x00\x00\"usage\":{}"]);
        assert_eq!(units, Units::default());
    }

    #[test]
    fn reads_usage_from_stream_events() {
        let mut a = MediaAdapter::new(MediaOp::Transcribe, true);
        a.on_chunk(Bytes::from_static(
            b"data: {\"type\":\"transcript.text.delta\",\"delta\":\"hi\"}\n\n\
              data: {\"type\":\"transcript.text.done\",\"text\":\"hi\",\"usage\":{\"type\":\"tokens\",\"input_tokens\":14,\"output_tokens\":3}}\n\n",
        ));
        a.on_end();
        let u = a.usage().unwrap();
        assert_eq!((u.input, u.output), (14, 3));
    }

    #[test]
    fn seconds_are_read_as_decimals() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).unwrap();
        assert_eq!(seconds_to_ms(&n("8.47")), Some(8470));
        assert_eq!(seconds_to_ms(&n("0.0005")), Some(0));
        assert_eq!(seconds_to_ms(&n("0.0015")), Some(2));
        assert_eq!(seconds_to_ms(&n("12")), Some(12_000));
        assert_eq!(seconds_to_ms(&n("-1")), None);
    }
}
