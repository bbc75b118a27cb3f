//! Phase 4: an answer on its way to the client. An upstream's answer is
//! piped chunk by chunk through its provider's adapter (nothing is held
//! beyond the chunk in hand); the mock's is written event by event.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_TYPE};
use pingora_http::ResponseHeader;
use tracing::warn;

use super::client::ClientSession;
use super::response::{UpstreamBody, KEEP_ALIVE};
use crate::errors::{ApiError, Dialect, ErrorKind};
use crate::providers::ResponseAdapter;

/// What happens to the client connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Clean end: the connection may serve another request.
    Reuse,
    /// Clean end, but close the connection (body left unread, client gone).
    Close,
    /// The answer broke off: close without a clean end of body, so the
    /// client sees a truncated response instead of a complete one.
    Abort,
}

/// How long a stream is still read after its client went away, to get the
/// provider's usage report for billing.
const DRAIN_AFTER_DISCONNECT: Duration = Duration::from_secs(300);

/// Forwards the upstream response head and body chunk by chunk through the
/// adapter: nothing is buffered beyond the chunk in hand. If the client goes
/// away, the upstream is still read to its end (bounded) for its usage.
/// If an event stream breaks off, the client gets a last error event.
pub(super) async fn pipe_body(
    session: &mut ClientSession,
    mut head: ResponseHeader,
    upstream: &mut UpstreamBody,
    adapter: &mut dyn ResponseAdapter,
    dialect: Dialect,
) -> Disposition {
    // Names as constants: a `&str` name is parsed again on every lookup.
    head.remove_header(&CONNECTION);
    head.remove_header(&KEEP_ALIVE);
    adapter.response_head(&mut head);
    let event_stream = head
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if event_stream {
        session.release_read_buffer();
        upstream.read_through_shared_buffer();
    }
    let mut client_gone = session.write_response_header(Box::new(head)).await.is_err();
    let drain_deadline = tokio::time::Instant::now() + DRAIN_AFTER_DISCONNECT;
    // Whether the client's last bytes ended an event (see end_stream_with_error).
    let mut at_event_boundary = true;
    loop {
        let read = if client_gone {
            match tokio::time::timeout_at(drain_deadline, upstream.read_body_bytes()).await {
                Ok(read) => read,
                Err(_) => return Disposition::Close,
            }
        } else {
            upstream.read_body_bytes().await
        };
        match read {
            Ok(Some(chunk)) => {
                let out = adapter.on_chunk(chunk);
                if !out.is_empty() {
                    at_event_boundary = out.ends_with(b"\n\n") || out.ends_with(b"\r\n\r\n");
                }
                if !client_gone
                    && !out.is_empty()
                    && session.write_response_body(out).await.is_err()
                {
                    client_gone = true;
                }
            }
            Ok(None) => break,
            Err(e) => {
                warn!("upstream body broke off: {e}");
                if client_gone {
                    return Disposition::Close;
                }
                if event_stream {
                    let why = error_event(&e, dialect, at_event_boundary);
                    return end_stream_with_error(session, adapter, why).await;
                }
                return Disposition::Abort;
            }
        }
    }
    let rest = adapter.on_end();
    if client_gone {
        return Disposition::Close;
    }
    if !rest.is_empty() && session.write_response_body(rest).await.is_err() {
        return Disposition::Close;
    }
    match session.finish_body().await {
        Ok(()) => Disposition::Reuse,
        Err(_) => Disposition::Close,
    }
}

/// The last event of a stream that broke off: an error in the client's
/// dialect. If the client holds part of an event, blank lines end that
/// first (it then fails to parse, which is still an error, never a silently
/// short answer).
fn error_event(cause: &pingora_error::Error, dialect: Dialect, at_event_boundary: bool) -> Bytes {
    let message = match cause.etype() {
        pingora_error::ErrorType::ReadTimedout => {
            "the provider stopped sending; the answer is incomplete"
        }
        _ => "the provider's stream broke off; the answer is incomplete",
    };
    let event = ApiError::new(ErrorKind::UpstreamStreamBroken, message).stream_event(dialect);
    let mut out = BytesMut::new();
    if !at_event_boundary {
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(&event);
    out.freeze()
}

/// Ends a broken event stream with `error_event`, so that an SDK raises an
/// error instead of taking a short answer for a whole one; the body is then
/// left unterminated, so that plain HTTP clients see the truncation too. An
/// incomplete event the adapter still holds back is dropped.
async fn end_stream_with_error(
    session: &mut ClientSession,
    adapter: &mut dyn ResponseAdapter,
    error_event: Bytes,
) -> Disposition {
    // Read for its usage side effects only: what it returns is a fragment.
    let _ = adapter.on_end();
    if session.write_response_body(error_event).await.is_err() {
        return Disposition::Close;
    }
    Disposition::Abort
}

/// Writes a complete answer made in-process (the mock's), waiting `delay`
/// before each event as a slow provider would.
pub(super) async fn write_events(
    session: &mut ClientSession,
    head: ResponseHeader,
    events: &[Bytes],
    delay: Duration,
) -> Disposition {
    if session.write_response_header(Box::new(head)).await.is_err() {
        return Disposition::Close;
    }
    for event in events.iter().cloned() {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if session.write_response_body(event).await.is_err() {
            return Disposition::Close;
        }
    }
    match session.finish_body().await {
        Ok(()) => Disposition::Reuse,
        Err(_) => Disposition::Close,
    }
}
