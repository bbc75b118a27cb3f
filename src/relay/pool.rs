//! Idle upstream connections kept for the next request to the same peer
//! (address, TLS and SNI: Pingora's `reuse_hash`).
//!
//! Pingora's own pool spawns a task for every released connection to watch
//! the idle socket, and checks the socket's peer address (`getpeername`)
//! when a connection is taken: ~7.6k instructions and one syscall per
//! request (callgrind, 2,000 requests). Here an idle connection is only
//! kept. Whether the upstream closed it is seen when it is taken: tokio's
//! reactor has already marked the socket readable then, so the check costs
//! no syscall while the connection is fine. A sweep every second closes
//! connections that the upstream closed or that stayed idle past their
//! timeout, so no socket lingers while the gateway is quiet.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use pingora_core::protocols::Stream;
use tokio::io::AsyncReadExt;

/// Idle connections kept per peer; the oldest goes when one more comes.
const MAX_IDLE_PER_PEER: usize = 128;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

type Peers = HashMap<u64, VecDeque<Idle>>;

#[derive(Default)]
pub struct IdlePool {
    peers: Arc<Mutex<Peers>>,
    sweeping: std::sync::OnceLock<()>,
}

struct Idle {
    stream: Stream,
    /// `None`: kept until the upstream closes it (no idle timeout set).
    expires: Option<Instant>,
}

impl Idle {
    fn usable(&mut self, now: Instant) -> bool {
        self.expires.is_none_or(|t| now < t) && still_idle(&mut self.stream)
    }
}

impl IdlePool {
    /// The most recently released connection to the peer that is still
    /// open (the newest is the least likely to have been closed by the
    /// upstream's own idle timeout).
    pub fn take(&self, peer: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut closed = Vec::new();
        let found = {
            let mut peers = lock(&self.peers);
            let list = peers.get_mut(&peer)?;
            let mut found = None;
            while let Some(mut idle) = list.pop_back() {
                if idle.usable(now) {
                    found = Some(idle.stream);
                    break;
                }
                closed.push(idle);
            }
            if list.is_empty() {
                peers.remove(&peer);
            }
            found
        };
        // Closing deregisters and closes the socket: not under the lock.
        drop(closed);
        found
    }

    /// Keeps a connection whose last answer ended cleanly. Must be called
    /// on the runtime, which the sweep is spawned on the first time.
    pub fn put(&self, peer: u64, mut stream: Stream, idle_timeout: Option<Duration>) {
        if !still_idle(&mut stream) {
            return;
        }
        let idle = Idle {
            stream,
            expires: idle_timeout.map(|t| Instant::now() + t),
        };
        let dropped = {
            let mut peers = lock(&self.peers);
            let list = peers.entry(peer).or_default();
            list.push_back(idle);
            (list.len() > MAX_IDLE_PER_PEER).then(|| list.pop_front())
        };
        drop(dropped);
        self.sweeping
            .get_or_init(|| spawn_sweep(Arc::downgrade(&self.peers)));
    }
}

fn lock(peers: &Mutex<Peers>) -> MutexGuard<'_, Peers> {
    peers.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every [`SWEEP_EVERY`], closes the connections that the upstream closed
/// or that are past their idle timeout; ends with the pool.
fn spawn_sweep(peers: Weak<Mutex<Peers>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(peers) = peers.upgrade() else {
                return;
            };
            let closed = sweep(&mut lock(&peers), Instant::now());
            drop(closed);
        }
    });
}

/// Takes the unusable connections out of `peers`, for the caller to close.
fn sweep(peers: &mut Peers, now: Instant) -> Vec<Idle> {
    let mut closed = Vec::new();
    peers.retain(|_, list| {
        let mut kept = VecDeque::with_capacity(list.len());
        for mut idle in list.drain(..) {
            if idle.usable(now) {
                kept.push_back(idle);
            } else {
                closed.push(idle);
            }
        }
        *list = kept;
        !list.is_empty()
    });
    closed
}

/// True while nothing can be read from an idle connection: neither data
/// (an upstream must not answer what was not asked) nor its end. Reads
/// only when the reactor saw the socket become readable.
fn still_idle(stream: &mut Stream) -> bool {
    use std::future::Future;
    use std::task::{Context, Waker};
    let mut byte = [0u8; 1];
    // `unconstrained`: tokio's cooperative budget could otherwise make a
    // ready read look pending. Polled once: no task waits on an idle
    // connection, so no waker is needed.
    let read = std::pin::pin!(tokio::task::unconstrained(stream.read(&mut byte)));
    read.poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the pool's side as a Pingora stream, and the
    /// upstream's side.
    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: pingora_core::protocols::l4::stream::Stream = client.into();
        (Box::new(stream), server)
    }

    /// The socket's descriptor: tells open connections apart.
    fn fd_of(stream: &Stream) -> i32 {
        stream.id()
    }

    async fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    #[tokio::test]
    async fn the_newest_open_connection_of_the_peer_is_taken() {
        let l = listener().await;
        let pool = IdlePool::default();
        let (older, _s1) = pair(&l).await;
        let (newer, _s2) = pair(&l).await;
        let (other_peer, _s3) = pair(&l).await;
        let (older_fd, newer_fd) = (fd_of(&older), fd_of(&newer));
        pool.put(1, older, None);
        pool.put(1, newer, None);
        pool.put(2, other_peer, None);
        assert_eq!(pool.take(1).map(|s| fd_of(&s)), Some(newer_fd));
        assert_eq!(pool.take(1).map(|s| fd_of(&s)), Some(older_fd));
        assert!(pool.take(1).is_none());
        assert!(pool.take(2).is_some());
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_or_wrote_to_is_not_taken() {
        let l = listener().await;
        let pool = IdlePool::default();
        let (closed, s1) = pair(&l).await;
        let (chatty, mut s2) = pair(&l).await;
        let (fine, _s3) = pair(&l).await;
        let fine_fd = fd_of(&fine);
        pool.put(1, fine, None);
        pool.put(1, closed, None);
        pool.put(1, chatty, None);
        drop(s1);
        s2.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        // Let the reactor see both sockets become readable.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.take(1).map(|s| fd_of(&s)), Some(fine_fd));
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn a_connection_idle_past_its_timeout_is_not_taken() {
        let l = listener().await;
        let pool = IdlePool::default();
        let (stream, _s) = pair(&l).await;
        pool.put(1, stream, Some(Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn the_sweep_closes_expired_and_closed_connections() {
        let l = listener().await;
        let mut peers = Peers::default();
        let now = Instant::now();
        let (expired, _s1) = pair(&l).await;
        let (closed, s2) = pair(&l).await;
        let (fine, _s3) = pair(&l).await;
        let fine_fd = fd_of(&fine);
        let idle = |stream, expires| Idle { stream, expires };
        peers.insert(1, VecDeque::from([idle(expired, Some(now))]));
        peers.insert(
            2,
            VecDeque::from([idle(closed, None), idle(fine, Some(now + SWEEP_EVERY))]),
        );
        drop(s2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closed = sweep(&mut peers, now);
        assert_eq!(closed.len(), 2);
        assert!(!peers.contains_key(&1));
        let kept: Vec<i32> = peers[&2].iter().map(|i| fd_of(&i.stream)).collect();
        assert_eq!(kept, [fine_fd]);
    }

    #[tokio::test]
    async fn a_peer_keeps_at_most_its_limit_of_idle_connections() {
        let l = listener().await;
        let pool = IdlePool::default();
        let mut upstream_sides = Vec::new();
        for _ in 0..MAX_IDLE_PER_PEER + 2 {
            let (stream, s) = pair(&l).await;
            upstream_sides.push(s);
            pool.put(1, stream, None);
        }
        assert_eq!(lock(&pool.peers)[&1].len(), MAX_IDLE_PER_PEER);
    }
}
