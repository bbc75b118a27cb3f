//! The framework floor for `benches/run.sh` (not part of the tollgate
//! binary): a bare `pingora-proxy` that forwards every request to one
//! upstream, with nothing else (no auth, routing, metering, ledger or log).
//! It runs with tollgate's own server settings (one thread on Pingora's
//! no-steal runtime, no per-connection read buffer, jemalloc), so
//! tollgate − floor is what tollgate's own work costs, and floor − nginx is
//! what any proxy built on Pingora 0.9 pays before doing anything.
//!
//! With `--raw`, the floor is lower still: Pingora's listener and runtime
//! only, and a minimal HTTP/1 exchange of our own (one request head parsed
//! with `httparse`, bodies with `content-length` only, one upstream
//! connection per client connection). That is the least a proxy on
//! Pingora's server can cost.
//!
//! ```text
//! cargo run --release --example bench_pingora -- --listen 127.0.0.1:18705 --upstream 127.0.0.1:18701 [--raw]
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Forward {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// `--raw`: requests relayed by hand over Pingora's bare connection.
struct Raw {
    upstream: SocketAddr,
}

#[async_trait]
impl ServerApp for Raw {
    async fn process_new(
        self: &Arc<Self>,
        mut client: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut upstream: Option<TcpStream> = None;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let request = read_message(&mut client, &mut buf, true).await?;
            if upstream.is_none() {
                upstream = Some(TcpStream::connect(self.upstream).await.ok()?);
            }
            let up = upstream.as_mut()?;
            up.write_all(&request).await.ok()?;
            let mut up_buf = BytesMut::with_capacity(4096);
            let answer = read_message(up, &mut up_buf, false).await?;
            client.write_all(&answer).await.ok()?;
            client.flush().await.ok()?;
        }
    }
}

/// One whole message (head and `content-length` body) from `io`, as bytes.
async fn read_message<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    request: bool,
) -> Option<BytesMut> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let parsed = if request {
            httparse::Request::new(&mut headers).parse(buf)
        } else {
            httparse::Response::new(&mut headers).parse(buf)
        };
        if let Ok(httparse::Status::Complete(head_len)) = parsed {
            let body_len: usize = headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            while buf.len() < head_len + body_len {
                if io.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            return Some(buf.split_to(head_len + body_len));
        }
        parsed.ok()?;
        if io.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("missing {name}"))
        .clone()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen");
    let upstream = arg(&args, "--upstream")
        .parse()
        .expect("--upstream ip:port");

    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // Stop at once on SIGTERM, as tollgate does with the bench's config.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let listener =
        ListenerConfig::tcp(listen.as_str()).l4_buffer(L4BufferSettings::default().read(0));
    if args.iter().any(|a| a == "--raw") {
        let mut raw = Service::new("raw".to_string(), Raw { upstream });
        raw.add_listener(listener);
        server.add_service(raw);
    } else {
        let mut proxy =
            pingora_proxy::http_proxy_service(&server.configuration, Forward { upstream });
        proxy.add_listener(listener);
        server.add_service(proxy);
    }
    server.run(RunArgs::default());
}
