//! Reading what routing needs from a JSON request body without building a
//! DOM, and splicing small changes into it without re-serializing.
//!
//! Re-serializing would reorder or reformat a client's body; splicing keeps
//! every other byte identical, which matters for replay on failover and for
//! providers that sign or hash bodies.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level fields of a request body that routing and metering read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyProbe {
    pub model: Option<String>,
    /// Byte range of the `model` value (with its quotes) in the body.
    pub model_span: Option<(usize, usize)>,
    pub stream: bool,
    /// `stream_options.include_usage` was set to true by the client.
    pub include_usage: bool,
    /// `stream_options` is present at all.
    pub has_stream_options: bool,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    /// What names the client's session, for channel affinity: OpenAI's
    /// `prompt_cache_key`, Anthropic's `metadata.user_id`, or OpenAI's
    /// `user`, the first of them that is a non-empty string.
    pub session: Option<String>,
    /// A `multipart/form-data` body: `model_span` is the raw content of
    /// the `model` part, replaced without JSON quoting.
    pub multipart: bool,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(borrow)]
    prompt_cache_key: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Metadata {
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Validates the body as JSON and reads the routing fields. The error text
/// is safe to show to the client (it holds no body content).
pub fn probe(body: &[u8]) -> Result<BodyProbe, String> {
    // serde_json skips the fields routing ignores without checking their
    // UTF-8, and would read a top-level array as the struct's fields.
    let text = std::str::from_utf8(body).map_err(|e| {
        format!(
            "request body is not valid UTF-8 at byte {}",
            e.valid_up_to()
        )
    })?;
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err("request body must be a JSON object".to_string());
    }
    let fields: Fields<'_> = serde_json::from_str(text).map_err(|e| {
        format!(
            "request body is not valid JSON: {} at line {} column {}",
            describe(&e),
            e.line(),
            e.column()
        )
    })?;
    let (model, model_span) = match fields.model {
        Some(raw) => {
            let model: String = serde_json::from_str(raw.get())
                .map_err(|_| "`model` must be a string".to_string())?;
            let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
            (Some(model), Some((start, start + raw.get().len())))
        }
        None => (None, None),
    };
    let include_usage = fields
        .stream_options
        .and_then(|raw| serde_json::from_str::<StreamOptions>(raw.get()).ok())
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok(BodyProbe {
        model,
        model_span,
        stream: fields.stream.unwrap_or(false),
        include_usage,
        has_stream_options: fields.stream_options.is_some(),
        max_output_tokens: fields
            .max_completion_tokens
            .or(fields.max_tokens)
            .or(fields.max_output_tokens),
        session: session(&fields),
        multipart: false,
    })
}

/// The session a request belongs to, if it names one. Values of another
/// type than string are not a session (and not an error: the provider
/// judges its own fields).
fn session(fields: &Fields<'_>) -> Option<String> {
    let string = |raw: Option<&RawValue>| {
        raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
            .filter(|s| !s.is_empty())
    };
    string(fields.prompt_cache_key)
        .or_else(|| {
            let metadata = fields.metadata?;
            serde_json::from_str::<Metadata>(metadata.get())
                .ok()?
                .user_id
                .filter(|s| !s.is_empty())
        })
        .or_else(|| string(fields.user))
}

fn describe(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax => "syntax error",
        Category::Eof => "unexpected end",
        Category::Data => "wrong type",
        Category::Io => "read error",
    }
}

/// Replaces the bytes in `span` with the JSON string `value`.
pub fn replace_string(body: &Bytes, span: (usize, usize), value: &str) -> Bytes {
    let quoted = serde_json::to_string(value).expect("strings serialize");
    let mut out = BytesMut::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..span.0]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.1..]);
    out.freeze()
}

/// Replaces the bytes in `span` with `value` as is (a multipart field).
pub fn replace_raw(body: &Bytes, span: (usize, usize), value: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..span.0]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&body[span.1..]);
    out.freeze()
}

/// Inserts `"name":value,` as the first member of the top-level object.
pub fn insert_first_member(body: &Bytes, member: &str) -> Bytes {
    let Some(open) = body.iter().position(|&b| b == b'{') else {
        return body.clone();
    };
    let empty = body[open + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let mut out = BytesMut::with_capacity(body.len() + member.len() + 1);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(member.as_bytes());
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(&body[open + 1..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_model_stream_and_options() {
        let body = br#"{"messages":[{"role":"user","content":"hi \"model\""}], "model" : "gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":50}"#;
        let p = probe(body).unwrap();
        assert_eq!(p.model.as_deref(), Some("gpt-4o"));
        let (a, b) = p.model_span.unwrap();
        assert_eq!(&body[a..b], b"\"gpt-4o\"");
        assert!(p.stream && p.include_usage && p.has_stream_options);
        assert_eq!(p.max_output_tokens, Some(50));
    }

    #[test]
    fn finds_the_session_in_each_dialect() {
        let session = |body: &str| probe(body.as_bytes()).unwrap().session;
        assert_eq!(
            session(r#"{"metadata":{"user_id":"user_1_session_9"},"model":"m"}"#).as_deref(),
            Some("user_1_session_9")
        );
        assert_eq!(
            session(r#"{"user":"u","prompt_cache_key":"codex-42"}"#).as_deref(),
            Some("codex-42"),
            "the cache key names the session better than the user"
        );
        assert_eq!(session(r#"{"user":"u"}"#).as_deref(), Some("u"));
        assert_eq!(session(r#"{"user":"","metadata":{"user_id":7}}"#), None);
        assert_eq!(session(r#"{"prompt_cache_key":null,"user":["x"]}"#), None);
    }

    #[test]
    fn rejects_malformed_json_and_non_string_model() {
        assert!(probe(b"{\"model\":")
            .unwrap_err()
            .contains("unexpected end"));
        assert!(probe(b"[1,2]").is_err());
        // Found by fuzzing: both were accepted and forwarded.
        assert_eq!(
            probe(br#"["m", true, null, null, null, null]"#).unwrap_err(),
            "request body must be a JSON object"
        );
        assert!(probe(b"{\"model\":\"m\",\"messages\":[\"caf\xe9\"]}")
            .unwrap_err()
            .contains("UTF-8 at byte 29"));
        assert!(probe(b"{\"model\":5}").unwrap_err().contains("string"));
        assert_eq!(probe(b"{}").unwrap(), BodyProbe::default());
    }

    #[test]
    fn escaped_model_names_decode() {
        let p = probe(br#"{"model":"a\u002db"}"#).unwrap();
        assert_eq!(p.model.as_deref(), Some("a-b"));
    }

    #[test]
    fn splices_keep_other_bytes() {
        let body = Bytes::from_static(br#"{ "model": "x",  "n": 1 }"#);
        let span = probe(&body).unwrap().model_span.unwrap();
        assert_eq!(
            &replace_string(&body, span, "gpt-\"4\"")[..],
            br#"{ "model": "gpt-\"4\"",  "n": 1 }"#
        );
        assert_eq!(
            &insert_first_member(&body, r#""a":1"#)[..],
            br#"{"a":1, "model": "x",  "n": 1 }"#
        );
        assert_eq!(
            &insert_first_member(&Bytes::from_static(b" { } "), r#""a":1"#)[..],
            br#" {"a":1 } "#
        );
    }
}
