//! Limits on the client side of a connection: how long a client may take
//! to send its request, and to take its answer. Pingora's own defaults are
//! a per-read timeout and unbounded keep-alive, which let a slowloris
//! client or an idle connection hold a socket forever. And the lingering
//! close that lets a refused client read why it was refused.

use std::time::Duration;

use pingora_core::protocols::http::ServerSession;

use crate::config::ServerSection;

fn seconds(n: u64) -> Duration {
    // A zero timeout would fail every request: treat it as the minimum.
    Duration::from_secs(n.max(1))
}

/// Reads the next request head within `client_header_timeout_seconds`
/// (counted from when the connection became ready for a request, so the
/// same bound applies to idle kept-alive connections). `false`: no request,
/// close the connection.
pub async fn read_head(session: &mut ServerSession, server: &ServerSection) -> bool {
    let deadline = seconds(server.client_header_timeout_seconds);
    match tokio::time::timeout(deadline, session.read_request()).await {
        Ok(Ok(true)) => {}
        _ => return false,
    }
    session.set_read_timeout(Some(deadline));
    session.set_write_timeout(Some(seconds(server.client_write_timeout_seconds)));
    true
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
pub async fn linger(session: &mut ServerSession) {
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
