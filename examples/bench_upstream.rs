//! Load-test upstream: a minimal, fast OpenAI-format HTTP/1.1 server for
//! `benches/run.sh` (not part of the tollgate binary).
//!
//!     cargo run --release --example bench_upstream -- --listen 127.0.0.1:18000 \
//!         [--events 64] [--gap-ms 20]
//!
//! Non-stream requests get a ~1 KB `chat.completion` with usage. Requests
//! whose body says `"stream":true` in its first 512 bytes (where tollgate and
//! the bench client put it; scanning a 1 MiB prompt would cost the mock more
//! than the proxy) get `--events` SSE chunks `--gap-ms` apart, a usage chunk
//! when `include_usage` is asked for, then `[DONE]`. The request headers
//! `x-bench-events` and `x-bench-gap-ms` override both per request.
//!
//! One thread, keep-alive, TCP_NODELAY, no allocation per non-stream answer
//! beyond the request buffer: the floor must cost far less than a proxy.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HEAD_LIMIT: usize = 64 * 1024;

#[derive(Clone, Copy)]
struct StreamShape {
    events: u32,
    gap: Duration,
}

fn main() -> std::io::Result<()> {
    let mut listen = "127.0.0.1:18000".to_string();
    let mut shape = StreamShape {
        events: 64,
        gap: Duration::from_millis(20),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--listen" => listen = value,
            "--events" => shape.events = value.parse().expect("--events N"),
            "--gap-ms" => shape.gap = Duration::from_millis(value.parse().expect("--gap-ms N")),
            other => panic!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        eprintln!("bench_upstream listening on {listen}");
        loop {
            let (socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let _ = serve(socket, shape).await;
            });
        }
    })
}

struct Request {
    head_len: usize,
    body_len: usize,
    stream: bool,
    include_usage: bool,
    shape: StreamShape,
}

async fn serve(mut socket: TcpStream, defaults: StreamShape) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let answer = non_stream_answer();
    loop {
        let req = loop {
            if let Some(req) = parse_head(&buf, defaults) {
                break req;
            }
            if buf.len() > HEAD_LIMIT || socket.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let total = req.head_len + req.body_len;
        while buf.len() < total {
            if socket.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body_start = &buf[req.head_len..total.min(req.head_len + 512)];
        let stream = req.stream || contains(body_start, b"\"stream\":true");
        let include_usage = req.include_usage || contains(body_start, b"\"include_usage\":true");
        buf.advance(total);
        if stream {
            write_stream(&mut socket, req.shape, include_usage).await?;
        } else {
            socket.write_all(&answer).await?;
        }
    }
}

/// Parses a complete request head in `buf`, if there is one.
fn parse_head(buf: &[u8], defaults: StreamShape) -> Option<Request> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut req = Request {
        head_len: end,
        body_len: 0,
        stream: false,
        include_usage: false,
        shape: defaults,
    };
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            req.body_len = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("x-bench-events") {
            req.shape.events = value.parse().unwrap_or(defaults.events);
        } else if name.eq_ignore_ascii_case("x-bench-gap-ms") {
            let ms = value.parse().unwrap_or(defaults.gap.as_millis() as u64);
            req.shape.gap = Duration::from_millis(ms);
        }
    }
    Some(req)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A chat.completion of about 1 KB, with its response head.
fn non_stream_answer() -> Vec<u8> {
    let content = "The quick brown fox jumps over the lazy dog. ".repeat(18);
    let body = format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":180,"total_tokens":192,"prompt_tokens_details":{{"cached_tokens":0}}}},"system_fingerprint":"fp_bench"}}"#
    );
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

async fn write_stream(
    socket: &mut TcpStream,
    shape: StreamShape,
    include_usage: bool,
) -> std::io::Result<()> {
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        .await?;
    let event = br#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}"#;
    let mut chunk = Vec::with_capacity(event.len() + 16);
    for i in 0..shape.events {
        if i > 0 && !shape.gap.is_zero() {
            tokio::time::sleep(shape.gap).await;
        }
        chunk.clear();
        chunk.extend_from_slice(format!("{:x}\r\n", event.len() + 2).as_bytes());
        chunk.extend_from_slice(event);
        chunk.extend_from_slice(b"\n\n\r\n");
        socket.write_all(&chunk).await?;
    }
    let mut tail = Vec::new();
    if include_usage {
        let usage = format!(
            r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":{},"total_tokens":{}}}}}"#,
            shape.events,
            shape.events + 12
        );
        push_chunk(&mut tail, format!("{usage}\n\n").as_bytes());
    }
    push_chunk(&mut tail, b"data: [DONE]\n\n");
    tail.extend_from_slice(b"0\r\n\r\n");
    socket.write_all(&tail).await
}

fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
