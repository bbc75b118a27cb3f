//! Reaching a channel: asynchronous DNS with a small cache (Pingora's
//! `HttpPeer::new` would resolve with blocking std DNS and panic on failure),
//! peer options with real timeouts, and one request/response head exchange
//! over a pooled or new connection.

use foldhash::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{ErrorType, OkOrErr, OrErr};
use pingora_http::ResponseHeader;
use tokio::io::AsyncWriteExt;

use super::pool::IdlePool;
use super::response::{self, UpstreamBody};
use crate::config::ServerSection;
use crate::providers::BaseUrl;

const DNS_TTL: Duration = Duration::from_secs(60);
/// A resolver that does not answer must not hold a request (and its
/// client) longer than a failed connect would.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of an upstream error body we keep to hand back to the client.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// What every attempt shares: the connector, idle upstream connections
/// and resolved addresses.
pub struct Outbound {
    pub connector: TransportConnector,
    pub pool: IdlePool,
    pub dns: DnsCache,
}

impl Outbound {
    pub fn new() -> Self {
        Outbound {
            connector: TransportConnector::new(None),
            pool: IdlePool::default(),
            dns: DnsCache::default(),
        }
    }
}

/// Resolved upstream addresses, refreshed after `DNS_TTL`.
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

pub fn peer(addr: SocketAddr, upstream: &BaseUrl, server: &ServerSection) -> HttpPeer {
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
        let error = crate::errors::ApiError::upstream(
            status,
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
    pub fn io(reason: FailReason, detail: impl std::fmt::Display) -> Failure {
        Failure {
            reason,
            detail: detail.to_string(),
            retry_after: None,
            answer: None,
        }
    }
}

/// A response head received from a channel, with the body still to read.
pub struct Opened {
    pub head: ResponseHeader,
    pub body: UpstreamBody,
    pub ttfb: Duration,
}

/// Sends one request and waits for its response head. Stale pooled
/// connections are retried on a fresh one without counting as a failure.
pub async fn exchange(
    connector: &TransportConnector,
    pool: &IdlePool,
    peer: &HttpPeer,
    head: &Bytes,
    body: &Bytes,
    header_timeout: Duration,
) -> Result<Opened, Failure> {
    let mut stale_retries = 0;
    loop {
        let (mut stream, reused) = connect(connector, pool, peer)
            .await
            .map_err(|e| Failure::io(connect_reason(&e), e))?;
        let sent = Instant::now();
        let result = async {
            send(&mut stream, head, body, peer.options.write_timeout).await?;
            response::read_head(stream, Some(header_timeout), peer.options.read_timeout).await
        }
        .await;
        match result {
            Ok((head, body)) => {
                return Ok(Opened {
                    head,
                    body,
                    ttfb: sent.elapsed(),
                });
            }
            Err(e) => {
                // Sent again only when the upstream cannot have acted on
                // it: a pooled connection it had closed, which failed the
                // write or ended before any byte of an answer.
                let not_taken_up = matches!(
                    e.etype(),
                    ErrorType::ConnectionClosed | ErrorType::WriteError
                );
                if reused && not_taken_up && stale_retries < 2 {
                    stale_retries += 1;
                    continue;
                }
                let timed_out = matches!(
                    e.etype(),
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout
                );
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

/// Writes the request head and body together: one `writev` (or one
/// buffered write) instead of Pingora's client session, which flushes the
/// head on its own and so costs a second send per request.
async fn send(
    stream: &mut Stream,
    mut head: &[u8],
    mut body: &[u8],
    timeout: Option<Duration>,
) -> pingora_error::Result<()> {
    let write = async {
        while !head.is_empty() || !body.is_empty() {
            let n = stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        stream.flush().await
    };
    super::deadline::within(timeout, write)
        .await
        .or_err(ErrorType::WriteTimedout, "while writing the request")?
        .or_err(ErrorType::WriteError, "while writing the request")
}

/// A pooled connection to the peer, else a new one. Channels speak
/// HTTP/1.1 (no ALPN is offered). The new-connection future (TCP + TLS
/// handshake) is ~9 KB: boxed, it is allocated only when a connection is
/// opened instead of being part of every request's future.
async fn connect(
    connector: &TransportConnector,
    pool: &IdlePool,
    peer: &HttpPeer,
) -> pingora_error::Result<(Stream, bool)> {
    if let Some(stream) = pool.take(peer.reuse_hash()) {
        return Ok((stream, true));
    }
    Ok((Box::pin(connector.new_stream(peer)).await?, false))
}

/// Where a finished answer's connection goes back to: the peer's pool key
/// and idle timeout, kept for a stream's life instead of the whole peer
/// (~670 bytes).
#[derive(Clone, Copy)]
pub struct PoolSlot {
    hash: u64,
    idle_timeout: Option<Duration>,
}

impl PoolSlot {
    pub fn of(peer: &HttpPeer) -> PoolSlot {
        PoolSlot {
            hash: peer.reuse_hash(),
            idle_timeout: peer.options.idle_timeout,
        }
    }
}

/// Returns a finished answer's connection to the pool unless the upstream
/// asked to close it; it is kept no longer than the upstream keeps it.
pub fn release(pool: &IdlePool, body: UpstreamBody, slot: PoolSlot) {
    if let Some((stream, kept_open_for)) = body.into_reusable() {
        let idle_timeout = match (slot.idle_timeout, kept_open_for) {
            (Some(ours), Some(theirs)) => Some(ours.min(theirs)),
            (ours, theirs) => ours.or(theirs),
        };
        pool.put(slot.hash, stream, idle_timeout);
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
    let head = opened.head;
    let status = head.status.as_u16();
    let retry_after = head
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = BytesMut::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = opened.body.read_body_bytes().await {
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
