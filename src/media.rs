//! What a media request asks for (SPEC §13), read from its body before it
//! is routed: the model of an upload (multipart) body, and the fields its
//! price depends on — images by `n`, `size` and `quality`, speech by the
//! characters of its `input`, a transcription by the duration of its
//! upload when the answer reports none.

use serde::Deserialize;

use crate::body::BodyProbe;
use crate::multipart;

/// A media endpoint, by how it is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaOp {
    /// images/generations and images/edits: per image, and image tokens.
    Image,
    /// audio/transcriptions and audio/translations: per second of audio.
    Transcribe,
    /// audio/speech: per 1,000 input characters.
    Speech,
}

/// The priced fields of a media request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MediaAsk {
    /// Images asked for (`n`, default 1) on the image endpoints.
    pub images: u64,
    pub size: Option<String>,
    pub quality: Option<String>,
    pub response_format: Option<String>,
    /// Characters (Unicode scalar values) of speech `input`.
    pub chars: u64,
    /// Audio duration of the upload, for a transcription whose answer
    /// reports none: exact for a PCM WAV file (from its header), else
    /// estimated at 128 kbit/s.
    pub upload_audio_ms: u64,
    /// Bytes of an upload's text fields (its prompt), without its files.
    pub text_bytes: usize,
}

#[derive(Deserialize)]
struct JsonFields {
    n: Option<u64>,
    size: Option<String>,
    quality: Option<String>,
    response_format: Option<String>,
    input: Option<serde_json::Value>,
}

/// The priced fields of a JSON body (already checked to be a JSON object).
pub fn ask_json(op: MediaOp, body: &[u8]) -> Result<MediaAsk, String> {
    let f: JsonFields = serde_json::from_slice(body).map_err(|e| {
        format!(
            "a field of the request has the wrong type (line {} column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut ask = MediaAsk {
        size: f.size,
        quality: f.quality,
        response_format: f.response_format,
        ..MediaAsk::default()
    };
    match op {
        MediaOp::Image => ask.images = f.n.unwrap_or(1),
        MediaOp::Speech => {
            ask.chars = match f.input {
                Some(serde_json::Value::String(s)) => s.chars().count() as u64,
                _ => return Err("`input` must be a string".into()),
            }
        }
        MediaOp::Transcribe => {}
    }
    Ok(ask)
}

/// The routing fields and the priced fields of a `multipart/form-data`
/// body. `model_span` is the raw range of the `model` part's content (no
/// JSON quotes: see [`BodyProbe::multipart`]).
pub fn probe_multipart(
    op: MediaOp,
    body: &[u8],
    boundary: &str,
) -> Result<(BodyProbe, MediaAsk), String> {
    let parts = multipart::parts(body, boundary)?;
    let text = |name| multipart::field(&parts, body, name).map(str::trim);
    let model = parts
        .iter()
        .find(|p| p.name == "model" && p.filename.is_none());
    let probe = BodyProbe {
        model: text("model").map(str::to_string),
        model_span: model.map(|p| p.span),
        stream: text("stream").is_some_and(|s| s == "true"),
        multipart: true,
        ..BodyProbe::default()
    };
    let mut ask = MediaAsk {
        text_bytes: (parts.iter())
            .filter(|p| p.filename.is_none())
            .map(|p| p.span.1 - p.span.0)
            .sum(),
        size: text("size").map(str::to_string),
        quality: text("quality").map(str::to_string),
        response_format: text("response_format").map(str::to_string),
        ..MediaAsk::default()
    };
    match op {
        MediaOp::Image => {
            ask.images = match text("n") {
                None => 1,
                Some(n) => n
                    .parse()
                    .map_err(|_| "`n` must be a whole number".to_string())?,
            }
        }
        MediaOp::Transcribe => {
            let file = parts
                .iter()
                .find(|p| p.name == "file" && p.filename.is_some());
            ask.upload_audio_ms = file.map_or(0, |f| audio_ms_of(f.content(body)));
        }
        MediaOp::Speech => {}
    }
    Ok((probe, ask))
}

/// Bytes per second of compressed audio assumed for an upload whose
/// duration cannot be read (128 kbit/s, a common MP3/AAC rate).
const ASSUMED_BYTES_PER_SECOND: u64 = 16_000;

/// The duration of an audio file in milliseconds: from a WAV header's byte
/// rate and data size, else estimated from its size.
pub fn audio_ms_of(file: &[u8]) -> u64 {
    wav_ms(file)
        .unwrap_or_else(|| (file.len() as u64).saturating_mul(1000) / ASSUMED_BYTES_PER_SECOND)
}

/// A RIFF/WAVE file's duration: its `data` chunk's size over the `fmt `
/// chunk's byte rate. Chunks are walked from the header; nothing is copied.
fn wav_ms(file: &[u8]) -> Option<u64> {
    if file.len() < 12 || &file[0..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= file.len() {
        let id = &file[at..at + 4];
        let size = u32::from_le_bytes(file[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " && body + 12 <= file.len() {
            byte_rate = Some(u32::from_le_bytes(
                file[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            // A streamed WAV may declare 0 or 0xFFFFFFFF: take what is there.
            let size = size.min(file.len() - body) as u64;
            let rate = u64::from(byte_rate.filter(|&r| r > 0)?);
            return Some(size * 1000 / rate);
        }
        at = body.checked_add(size + (size & 1))?;
    }
    None
}

/// A silent PCM WAV of `samples` 16-bit mono samples at `rate` Hz: what
/// the mock channel speaks (and tests upload).
pub fn pcm_wav(rate: u32, samples: u32) -> Vec<u8> {
    let data = samples * 2;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    out.resize(44 + data as usize, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_duration_from_a_wav_header_or_the_size() {
        // 24,000 samples at 16 kHz: 1.5 s.
        assert_eq!(audio_ms_of(&pcm_wav(16_000, 24_000)), 1500);
        // 8 kHz, 100 samples: 12.5 ms -> 12 (whole milliseconds, down).
        assert_eq!(audio_ms_of(&pcm_wav(8000, 100)), 12);
        // Not a WAV: 48,000 bytes at 16,000 bytes/s = 3 s.
        assert_eq!(audio_ms_of(&[7u8; 48_000]), 3000);
        // A WAV without a byte rate is estimated by size.
        let mut broken = pcm_wav(16_000, 8000);
        broken[28..32].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(audio_ms_of(&broken), broken.len() as u64 * 1000 / 16_000);
    }

    #[test]
    fn json_media_fields() {
        let ask = ask_json(
            MediaOp::Image,
            br#"{"model":"m","prompt":"p","n":3,"size":"1024x1536","quality":"high"}"#,
        )
        .unwrap();
        assert_eq!(ask.images, 3);
        assert_eq!(ask.size.as_deref(), Some("1024x1536"));
        assert_eq!(ask.quality.as_deref(), Some("high"));
        assert_eq!(
            ask_json(MediaOp::Image, br#"{"model":"m"}"#)
                .unwrap()
                .images,
            1
        );
        // Characters, not bytes: "héllo 🌍" is 7.
        let speech = ask_json(
            MediaOp::Speech,
            r#"{"model":"tts","input":"héllo 🌍"}"#.as_bytes(),
        );
        assert_eq!(speech.unwrap().chars, 7);
        let e = ask_json(MediaOp::Speech, br#"{"model":"tts","input":3}"#).unwrap_err();
        assert!(e.contains("`input` must be a string"), "{e}");
        let e = ask_json(MediaOp::Image, br#"{"model":"m","n":"two"}"#).unwrap_err();
        assert!(e.contains("wrong type"), "{e}");
    }

    #[test]
    fn multipart_model_and_fields() {
        let b = "XyZ";
        let audio = pcm_wav(16_000, 32_000);
        let mut body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&audio);
        body.extend_from_slice(
            format!(
                "\r\n--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\
                 \r\n--{b}\r\nContent-Disposition: form-data; name=\"stream\"\r\n\r\ntrue\r\n--{b}--\r\n"
            )
            .as_bytes(),
        );
        let (probe, ask) = probe_multipart(MediaOp::Transcribe, &body, b).unwrap();
        assert_eq!(probe.model.as_deref(), Some("whisper-1"));
        let (s, e) = probe.model_span.unwrap();
        assert_eq!(&body[s..e], b"whisper-1");
        assert!(probe.stream && probe.multipart);
        assert_eq!(ask.upload_audio_ms, 2000);
        assert_eq!(ask.text_bytes, "whisper-1".len() + "true".len());
        let no_model =
            format!("--{b}\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\nx\r\n--{b}--");
        let e = probe_multipart(MediaOp::Image, no_model.as_bytes(), b).unwrap_err();
        assert!(e.contains("`n` must be a whole number"), "{e}");
        let (probe, _) = probe_multipart(MediaOp::Speech, no_model.as_bytes(), b).unwrap();
        assert_eq!(probe.model, None);
    }
}
