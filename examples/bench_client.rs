//! Load-test client for `benches/run.sh` (not part of the tollgate binary).
//! wrk covers plain request/response load; this covers what wrk cannot:
//!
//! * `streams`: N concurrent SSE streams, each its own connection, started
//!   evenly over a ramp. Records time to first event, every gap between two
//!   content events, and stalls (a gap over `--stall-ms`, or a stream that
//!   failed or ended early). Prints `key=value` lines. `--body-bytes`
//!   pads the prompt (also for `requests`). `--format
//!   anthropic|gemini|responses` sends the request in that client format
//!   (point `--url` at `/v1/messages`,
//!   `.../models/M:streamGenerateContent?alt=sse` or `/v1/responses`) and
//!   counts its text events; `--ttfe-list 1` also prints every stream's
//!   time to first event (`ttfe_us=a,b,...`).
//! * `requests`: a fixed number of non-stream POSTs over keep-alive
//!   connections (for instruction counts under callgrind, where a
//!   time-bound load generator would make runs incomparable).
//! * `config`: prints the groups, models, channels and keys of a big
//!   tollgate config (`--keys`, `--channels`, all channels pointing at
//!   `--upstream`), the key `--key` among them; `--variant` changes channel
//!   weights so two variants differ. For the reload-under-load test.
//!
//! ```text
//! cargo run --release --example bench_client -- streams --url http://127.0.0.1:8080/v1/chat/completions \
//!     --key sk-bench --streams 1000 --events 64 --gap-ms 20 --ramp-ms 1000
//! cargo run --release --example bench_client -- requests --url ... --key ... --count 2000
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Opts {
    mode: String,
    host: String,
    path: String,
    key: String,
    streams: usize,
    events: u32,
    gap_ms: u64,
    ramp_ms: u64,
    stall_ms: u64,
    count: usize,
    concurrency: usize,
    body_bytes: usize,
    keys: usize,
    channels: usize,
    upstream: String,
    variant: u32,
    format: String,
    ttfe_list: bool,
}

fn parse_args() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        mode: args.next().expect("mode: streams | requests"),
        host: String::new(),
        path: String::new(),
        key: "sk-bench".into(),
        streams: 100,
        events: 64,
        gap_ms: 20,
        ramp_ms: 1000,
        stall_ms: 1000,
        count: 1000,
        concurrency: 1,
        body_bytes: 0,
        keys: 10_000,
        channels: 500,
        upstream: "127.0.0.1:18000".into(),
        variant: 0,
        format: "chat".into(),
        ttfe_list: false,
    };
    while let Some(arg) = args.next() {
        let v = args.next().unwrap_or_default();
        let n = || v.parse::<u64>().expect("a number");
        match arg.as_str() {
            "--url" => {
                let rest = v.strip_prefix("http://").expect("http:// URL");
                let slash = rest.find('/').unwrap_or(rest.len());
                o.host = rest[..slash].to_string();
                o.path = rest[slash..].to_string();
            }
            "--key" => o.key = v,
            "--streams" => o.streams = n() as usize,
            "--events" => o.events = n() as u32,
            "--gap-ms" => o.gap_ms = n(),
            "--ramp-ms" => o.ramp_ms = n(),
            "--stall-ms" => o.stall_ms = n(),
            "--count" => o.count = n() as usize,
            "--concurrency" => o.concurrency = n() as usize,
            "--body-bytes" => o.body_bytes = n() as usize,
            "--keys" => o.keys = n() as usize,
            "--channels" => o.channels = n() as usize,
            "--upstream" => o.upstream = v,
            "--variant" => o.variant = n() as u32,
            "--format" => o.format = v,
            "--ttfe-list" => o.ttfe_list = n() != 0,
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn main() {
    let o = parse_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        match o.mode.as_str() {
            "streams" => run_streams(o).await,
            "requests" => run_requests(o).await,
            "config" => print!("{}", big_config(&o)),
            other => panic!("unknown mode {other}"),
        }
    });
}

fn request(o: &Opts, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        o.path,
        o.host,
        o.key,
        body.len()
    )
    .into_bytes()
}

/// What one stream saw.
#[derive(Default)]
struct StreamResult {
    ok: bool,
    ttfe_us: Option<u64>,
    gaps_us: Vec<u64>,
    events: u32,
}

async fn run_streams(o: Opts) {
    let body = match o.format.as_str() {
        "chat" => chat_body(&o, true),
        "anthropic" => r#"{"model":"gpt-4o-mini","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Say hello."}]}"#.to_string(),
        "gemini" => r#"{"contents":[{"role":"user","parts":[{"text":"Say hello."}]}]}"#.to_string(),
        "responses" => r#"{"model":"gpt-4o-mini","stream":true,"input":"Say hello."}"#.to_string(),
        other => panic!("unknown format {other}"),
    };
    // What marks an event that carries text in the client's format.
    let marker: &'static [u8] = match o.format.as_str() {
        "anthropic" => b"\"text_delta\"",
        "gemini" => b"\"text\"",
        "responses" => b"response.output_text.delta",
        _ => b"\"content\"",
    };
    let headers = format!(
        "x-bench-events: {}\r\nx-bench-gap-ms: {}\r\n",
        o.events, o.gap_ms
    );
    let req = Arc::new(request(&o, &body, &headers));
    let started = Instant::now();
    let live = Arc::new(Live::default());
    let mut tasks = Vec::with_capacity(o.streams);
    for i in 0..o.streams {
        let at = Duration::from_micros(o.ramp_ms * 1000 * i as u64 / o.streams.max(1) as u64);
        let req = req.clone();
        let host = o.host.clone();
        let live = live.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((started + at).into()).await;
            one_stream(&host, &req, &live, marker)
                .await
                .unwrap_or_default()
        }));
    }
    let mut ttfe = Vec::new();
    let mut gaps = Vec::new();
    let (mut ok, mut failed, mut short) = (0usize, 0usize, 0usize);
    for t in tasks {
        let r = t.await.unwrap_or_default();
        if !r.ok {
            failed += 1;
        } else if r.events < o.events {
            short += 1;
        } else {
            ok += 1;
        }
        ttfe.extend(r.ttfe_us);
        gaps.extend(r.gaps_us);
    }
    let stalled_gaps = gaps.iter().filter(|&&g| g > o.stall_ms * 1000).count();
    if o.ttfe_list {
        let list: Vec<String> = ttfe.iter().map(u64::to_string).collect();
        println!("ttfe_us={}", list.join(","));
    }
    ttfe.sort_unstable();
    gaps.sort_unstable();
    println!("streams={}", o.streams);
    println!("streams_ok={ok}");
    println!("streams_failed={failed}");
    println!("streams_short={short}");
    println!("stalled_gaps={stalled_gaps}");
    println!("ttfe_p50_us={}", pct(&ttfe, 50.0));
    println!("ttfe_p99_us={}", pct(&ttfe, 99.0));
    println!("gap_p50_us={}", pct(&gaps, 50.0));
    println!("gap_p99_us={}", pct(&gaps, 99.0));
    println!("gap_max_us={}", gaps.last().copied().unwrap_or(0));
    println!("peak_concurrent={}", live.peak.load(Ordering::Relaxed));
    println!("elapsed_ms={}", started.elapsed().as_millis());
}

/// Streams between their first and last event, and the most at once.
#[derive(Default)]
struct Live {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a stream as live from its first event until dropped.
struct LiveGuard<'a>(&'a Live);

impl<'a> LiveGuard<'a> {
    fn enter(live: &'a Live) -> Self {
        let n = live.now.fetch_add(1, Ordering::Relaxed) + 1;
        live.peak.fetch_max(n, Ordering::Relaxed);
        LiveGuard(live)
    }
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn one_stream(
    host: &str,
    req: &[u8],
    live: &Live,
    marker: &[u8],
) -> std::io::Result<StreamResult> {
    let mut socket = TcpStream::connect(host).await?;
    socket.set_nodelay(true)?;
    let sent = Instant::now();
    socket.write_all(req).await?;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let head_len = read_head(&mut socket, &mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") || !head.contains("transfer-encoding: chunked") {
        return Ok(StreamResult::default());
    }
    buf.advance(head_len);
    let mut result = StreamResult::default();
    let mut decoder = Chunked::default();
    let mut body = BytesMut::new();
    let mut last: Option<Instant> = None;
    let mut _live = None;
    loop {
        let done = decoder.decode(&mut buf, &mut body);
        while let Some(end) = find(&body, b"\n\n") {
            let event = body.split_to(end + 2);
            if find(&event, marker).is_none() {
                continue;
            }
            let now = Instant::now();
            match last {
                None => {
                    result.ttfe_us = Some(now.duration_since(sent).as_micros() as u64);
                    _live = Some(LiveGuard::enter(live));
                }
                Some(prev) => result
                    .gaps_us
                    .push(now.duration_since(prev).as_micros() as u64),
            }
            last = Some(now);
            result.events += 1;
        }
        if done {
            result.ok = true;
            return Ok(result);
        }
        if socket.read_buf(&mut buf).await? == 0 {
            return Ok(result);
        }
    }
}

async fn read_head(socket: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if socket.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Default)]
struct Chunked {
    /// Data bytes left in the current chunk, plus its trailing CRLF.
    left: usize,
}

impl Chunked {
    /// Moves decoded data from `input` to `out`; `true` at the last chunk.
    fn decode(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> bool {
        loop {
            if self.left > 0 {
                let n = self.left.min(input.len());
                // The last two bytes of `left` are the chunk's CRLF.
                let data = n.min(self.left.saturating_sub(2));
                out.extend_from_slice(&input[..data]);
                input.advance(n);
                self.left -= n;
                if self.left > 0 {
                    return false;
                }
            }
            let Some(eol) = find(input, b"\r\n") else {
                return false;
            };
            let size_text = std::str::from_utf8(&input[..eol]).unwrap_or("0");
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                return true;
            }
            input.advance(eol + 2);
            self.left = size + 2;
        }
    }
}

/// A chat request of about `--body-bytes` (a long prompt), or a short one.
fn chat_body(o: &Opts, stream: bool) -> String {
    let padding = "x".repeat(o.body_bytes.saturating_sub(100));
    format!(
        r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"Say hello.{padding}"}}]}}"#
    )
}

async fn run_requests(o: Opts) {
    let body = chat_body(&o, false);
    let req = Arc::new(request(&o, &body, ""));
    let started = Instant::now();
    let per_conn = o.count / o.concurrency.max(1);
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency.max(1) {
        let (req, host) = (req.clone(), o.host.clone());
        tasks.push(tokio::spawn(async move {
            sequential(&host, &req, per_conn).await
        }));
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    for t in tasks {
        let (o, f) = t.await.unwrap_or((0, per_conn));
        ok += o;
        failed += f;
    }
    println!("requests_ok={ok}");
    println!("requests_failed={failed}");
    println!("elapsed_ms={}", started.elapsed().as_millis());
}

/// `count` requests one after another on one keep-alive connection.
async fn sequential(host: &str, req: &[u8], count: usize) -> (usize, usize) {
    let Ok(mut socket) = TcpStream::connect(host).await else {
        return (0, count);
    };
    let _ = socket.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    for done in 0..count {
        let answer = async {
            socket.write_all(req).await?;
            let head_len = read_head(&mut socket, &mut buf).await?;
            let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
            let len: usize = head
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or(std::io::ErrorKind::InvalidData)?;
            while buf.len() < head_len + len {
                if socket.read_buf(&mut buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            buf.advance(head_len + len);
            Ok::<bool, std::io::Error>(head.starts_with("http/1.1 200"))
        };
        match answer.await {
            Ok(true) => {}
            Ok(false) => return (done, count - done),
            Err(_) => return (done, count - done),
        }
    }
    (count, 0)
}

/// A config of `--keys` keys and `--channels` channels in 10 groups.
fn big_config(o: &Opts) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut out = String::new();
    for g in 0..10 {
        let _ = writeln!(out, "[[groups]]\nname = \"g{g}\"\nratio = 1.{g}\n");
    }
    let _ = writeln!(
        out,
        "[[groups]]\nname = \"default\"\nratio = 1.0\nall_channels = true\n"
    );
    for m in 0..20 {
        let _ = writeln!(
            out,
            "[[models]]\nname = \"model-{m}\"\ninput = 1.5\noutput = 6\n"
        );
    }
    let _ = writeln!(
        out,
        "[[models]]\nname = \"gpt-4o-mini\"\ninput = 0.15\noutput = 0.60\ncached_input = 0.075\n"
    );
    for c in 0..o.channels {
        let _ = writeln!(
            out,
            "[[channels]]\nname = \"ch-{c}\"\ntype = \"openai\"\nbase_url = \"http://{}\"\napi_key = \"sk-upstream-{c}\"\ngroups = [\"g{}\"]\nmodels = [\"gpt-4o-mini\", \"model-{}\"]\npriority = {}\nweight = {}\n",
            o.upstream,
            c % 10,
            c % 20,
            c % 3,
            1 + (c as u32 + o.variant) % 5
        );
    }
    for k in 0..o.keys {
        let secret = if k == 0 {
            o.key.clone()
        } else {
            format!("sk-bench-{k}")
        };
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        let _ = writeln!(
            out,
            "[[keys]]\nname = \"key-{k}\"\nkey_sha256 = \"{hash}\"\ngroups = [\"g{}\", \"default\"]\n",
            k % 10
        );
    }
    out
}
