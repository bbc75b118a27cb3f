//! Reaching a channel: asynchronous DNS with a small cache (Pingora's
//! `HttpPeer::new` would resolve with blocking std DNS and panic on failure),
//! peer options with real timeouts, and one request/response head exchange.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::config::{ServerSection, Upstream};

const DNS_TTL: Duration = Duration::from_secs(60);
/// A resolver that does not answer must not hold a request (and its
/// client) longer than a failed connect would.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of an upstream error body we keep to hand back to the client.
const MAX_ERROR_BODY: usize = 1024 * 1024;

#[derive(Default)]
pub struct DnsCache {
    entries: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
}

impl DnsCache {
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Some(&(addr, at)) = self.lock().get(&key) {
            if at.elapsed() < DNS_TTL {
                return Ok(addr);
            }
        }
        let lookup = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port)));
        let addr = lookup
            .await
            .map_err(|_| {
                std::io::Error::other(format!("no answer for {host} in {DNS_TIMEOUT:?}"))
            })??
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))?;
        self.lock().insert(key, (addr, Instant::now()));
        Ok(addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), (SocketAddr, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn peer(addr: SocketAddr, upstream: &Upstream, server: &ServerSection) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, upstream.tls, upstream.host.clone());
    let o = &mut peer.options;
    let connect = Duration::from_millis(server.upstream_connect_timeout_ms);
    o.connection_timeout = Some(connect);
    o.total_connection_timeout = Some(connect * 2);
    o.read_timeout = Some(Duration::from_secs(server.upstream_idle_timeout_seconds));
    o.write_timeout = Some(Duration::from_secs(server.upstream_idle_timeout_seconds));
    o.idle_timeout = Some(Duration::from_secs(60));
    if upstream.insecure_skip_verify {
        o.verify_cert = false;
        o.verify_hostname = false;
    }
    peer
}

/// Why an attempt produced no usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    Dns,
    Connect,
    Timeout,
    Io,
    Status429,
    Status5xx,
    StatusAuth,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Dns => "dns",
            FailReason::Connect => "connect",
            FailReason::Timeout => "timeout",
            FailReason::Io => "io",
            FailReason::Status429 => "429",
            FailReason::Status5xx => "5xx",
            FailReason::StatusAuth => "auth",
        }
    }

    /// Statuses that mean "this channel, not this request": try another.
    pub fn from_status(status: u16) -> Option<FailReason> {
        match status {
            429 => Some(FailReason::Status429),
            401 | 403 => Some(FailReason::StatusAuth),
            500..=599 => Some(FailReason::Status5xx),
            _ => None,
        }
    }
}

/// An upstream answer that the client should see if no other channel does
/// better: status, head and (bounded) body.
pub struct ErrorAnswer {
    pub head: ResponseHeader,
    pub body: Bytes,
}

impl ErrorAnswer {
    /// The answer as the client may see it: a provider's JSON error as is,
    /// anything else (an HTML page from a load balancer, an empty body)
    /// replaced by a JSON error in the client's dialect with the same status.
    pub fn for_client(mut self, dialect: crate::errors::Dialect) -> ErrorAnswer {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&self.body).is_ok() {
            return self;
        }
        let status = self.head.status.as_u16();
        let error = crate::errors::ApiError::new(
            status,
            "upstream_error",
            format!("the provider answered {status} without a JSON error body"),
        );
        let mut head = ResponseHeader::build(status, Some(2)).expect("status from a parsed head");
        if let Some(retry_after) = self.head.headers.get("retry-after") {
            let _ = head.insert_header("retry-after", retry_after.clone());
        }
        let _ = head.insert_header("content-type", "application/json");
        self.head = head;
        self.body = Bytes::from(error.body(dialect));
        self
    }
}

pub struct Failure {
    pub reason: FailReason,
    pub detail: String,
    pub retry_after: Option<Duration>,
    pub answer: Option<ErrorAnswer>,
}

impl Failure {
    fn io(reason: FailReason, detail: impl std::fmt::Display) -> Failure {
        Failure {
            reason,
            detail: detail.to_string(),
            retry_after: None,
            answer: None,
        }
    }
}

/// A response head received from a channel, with the session to read the
/// body from.
pub struct Opened {
    pub session: HttpSession,
    pub ttfb: Duration,
}

/// Sends one request and waits for its response head. Stale pooled
/// connections are retried on a fresh one without counting as a failure.
pub async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    request: &RequestHeader,
    body: &Bytes,
    header_timeout: Duration,
) -> Result<Opened, Failure> {
    let mut stale_retries = 0;
    loop {
        let (mut session, reused) = connect(connector, peer)
            .await
            .map_err(|e| Failure::io(connect_reason(&e), e))?;
        let sent = Instant::now();
        session.set_read_timeout(Some(header_timeout));
        let result = async {
            session
                .write_request_header(Box::new(request.clone()))
                .await?;
            session.write_request_body(body.clone(), true).await?;
            session.finish_request_body().await?;
            session.read_response_header().await
        }
        .await;
        match result {
            Ok(()) => {
                session.set_read_timeout(peer.options.read_timeout);
                return Ok(Opened {
                    session,
                    ttfb: sent.elapsed(),
                });
            }
            Err(e) => {
                let timed_out = matches!(e.etype(), pingora_error::ErrorType::ReadTimedout);
                if reused && !timed_out && stale_retries < 2 {
                    stale_retries += 1;
                    continue;
                }
                let reason = if timed_out {
                    FailReason::Timeout
                } else {
                    FailReason::Io
                };
                return Err(Failure::io(reason, e));
            }
        }
    }
}

/// A pooled connection to the peer, else a new one. Channels speak
/// HTTP/1.1 (no ALPN is offered), so this uses Pingora's h1 connector.
/// The new-connection future (TCP + TLS handshake) is ~9 KB: boxed, it is
/// allocated only when a connection is opened instead of being part of
/// every request's future.
async fn connect(
    connector: &Connector,
    peer: &HttpPeer,
) -> pingora_error::Result<(HttpSession, bool)> {
    if let Some(h1) = connector.reused_http_session(peer).await {
        return Ok((HttpSession::H1(h1), true));
    }
    let (h1, reused) = Box::pin(connector.get_http_session(peer)).await?;
    Ok((HttpSession::H1(h1), reused))
}

/// Returns a finished upstream session to the pool.
pub async fn release(connector: &Connector, session: HttpSession, peer: &HttpPeer) {
    if let HttpSession::H1(h1) = session {
        connector
            .release_http_session(h1, peer, peer.options.idle_timeout)
            .await;
    }
}

fn connect_reason(e: &pingora_error::Error) -> FailReason {
    use pingora_error::ErrorType::*;
    match e.etype() {
        ConnectTimedout => FailReason::Timeout,
        _ => FailReason::Connect,
    }
}

/// Reads the (bounded) body of an upstream error answer.
pub async fn error_answer(mut opened: Opened, reason: FailReason) -> Failure {
    let head = opened
        .session
        .response_header()
        .cloned()
        .unwrap_or_else(|| ResponseHeader::build(502, None).expect("valid status"));
    let status = head.status.as_u16();
    let retry_after = head
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = BytesMut::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = opened.session.read_response_body().await {
            if body.len() + chunk.len() > MAX_ERROR_BODY {
                break;
            }
            body.extend_from_slice(&chunk);
        }
    });
    let _ = read.await;
    // A provider's 401/403 text can quote part of the channel key: it is
    // never passed on to the client.
    let answer = (reason != FailReason::StatusAuth).then(|| ErrorAnswer {
        head,
        body: body.freeze(),
    });
    Failure {
        reason,
        detail: format!("upstream answered {status}"),
        retry_after,
        answer,
    }
}
