//! Limits on the client side of a connection: how long a client may take
//! to send its request, and to take its answer. Pingora's own defaults are
//! a per-read timeout and unbounded keep-alive, which let a slowloris
//! client or an idle connection hold a socket forever.

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

/// The whole time allowed for reading a request body.
pub fn body_deadline(server: &ServerSection) -> Duration {
    seconds(server.client_body_timeout_seconds)
}
