//! Format translation: a client's API format to a channel's and back, so
//! that any client reaches any channel (docs/api.md, "Formats and
//! channels"). OpenAI Chat Completions is the pivot: every other format is
//! translated to and from it, one file per format, as pure functions and
//! stream state machines with their tests beside them.
//!
//! Translators never see the network: a request body goes in and a body
//! comes out; a stream's events go in one at a time and the client's
//! events come out, so memory per stream stays bounded (open tool-call
//! arguments aside) and the first event is not delayed.

pub mod responses_chat;

use bytes::BytesMut;
use serde_json::Value;

/// A request field the target format cannot express, and that would change
/// the request's meaning if dropped: refused with 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable {
    /// The field as the client wrote it, e.g. `messages[2].content[0].type`.
    pub field: String,
    pub why: String,
}

impl Untranslatable {
    pub fn new(field: impl Into<String>, why: impl Into<String>) -> Self {
        Untranslatable {
            field: field.into(),
            why: why.into(),
        }
    }
}

/// Appends one server-sent event: `event: {name}` when named, then
/// `data: {json}` and the blank line that ends it.
pub fn push_event(out: &mut BytesMut, event: Option<&str>, data: &Value) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_framed_as_sse() {
        let mut out = BytesMut::new();
        push_event(&mut out, Some("ping"), &json!({"type": "ping"}));
        push_event(&mut out, None, &json!({"a": 1}));
        assert_eq!(
            &out[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: {\"a\":1}\n\n"
        );
    }
}
