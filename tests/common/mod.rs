//! Shared harness for the integration tests: a scriptable mock provider on
//! loopback, and the real `tollgate` binary started on a generated config.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A port that is free on 127.0.0.1 and stays out of the kernel's hands.
///
/// A port from `bind(0)` is released before tollgate binds it, and the
/// kernel may give it meanwhile to another test's mock (also `bind(0)`):
/// tollgate then fails to listen while the readiness probe connects to the
/// mock, and the test talks to the wrong server. Ports below the ephemeral
/// range are never handed out by the kernel, so this takes them from a
/// per-process sequence that starts at a pid-derived offset.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low <= FIRST + 1_000 {
        return bind_any_port();
    }
    let span = ephemeral_low - FIRST;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if StdListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    bind_any_port()
}

fn bind_any_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request as the mock provider received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the mock provider answers.
#[derive(Clone)]
pub enum Reply {
    /// A complete response with Content-Length.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked `text/event-stream`, one chunk per event, `gap` apart.
    Sse { events: Vec<String>, gap: Duration },
    /// Raw bytes, then the connection is closed (for broken answers).
    Raw(Vec<u8>),
    /// Waits this long, then closes without answering.
    Stall(Duration),
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

type Handler = dyn Fn(&Received) -> Reply + Send + Sync;

/// A provider mock on 127.0.0.1 that records what it receives.
pub struct MockUpstream {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, handler, log).await;
                });
            }
        });
        MockUpstream {
            port,
            received,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    stream: TcpStream,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        let req = Received {
            method,
            path,
            headers,
            body,
        };
        log.lock().unwrap().push(req.clone());
        let stream = reader.get_mut();
        match handler(&req) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body).await?;
            }
            Reply::Sse { events, gap } => {
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
                    )
                    .await?;
                for (i, e) in events.iter().enumerate() {
                    if i > 0 && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    stream
                        .write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes())
                        .await?;
                    stream.flush().await?;
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
            Reply::Raw(bytes) => {
                stream.write_all(&bytes).await?;
                stream.flush().await?;
                return Ok(());
            }
            Reply::Stall(d) => {
                tokio::time::sleep(d).await;
                return Ok(());
            }
        }
        stream.flush().await?;
    }
}

/// OpenAI chat completion body with the given usage.
pub fn chat_completion(model: &str, text: &str, prompt: u64, completion: u64) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

/// SSE events of a streamed chat completion; the usage chunk is included
/// when `usage` is set.
pub fn chat_stream(words: &[&str], usage: Option<(u64, u64)>) -> Vec<String> {
    let mut events: Vec<String> = words
        .iter()
        .map(|w| {
            let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]});
            format!("data: {chunk}\n\n")
        })
        .collect();
    if let Some((p, c)) = usage {
        let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}});
        events.push(format!("data: {chunk}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

/// The real tollgate binary, running on a config written to a temp dir.
pub struct Tollgate {
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Child,
}

/// The `[server]`, `[store]` and `[routing]` head of a test config. Tests
/// append groups, models, channels and keys.
pub fn server_section(port: u16, admin_port: u16, data_dir: &std::path::Path) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
data_dir = "{}"
upstream_connect_timeout_ms = 1000
upstream_header_timeout_seconds = 5
upstream_idle_timeout_seconds = 5
shutdown_grace_seconds = 0
threads = 2
"#,
        data_dir.display()
    )
}

impl Tollgate {
    /// Starts tollgate with `server_section(..)` + `rest` as its config.
    pub fn start(rest: &str) -> Tollgate {
        Self::start_with(|port, admin, dir| format!("{}\n{rest}", server_section(port, admin, dir)))
    }

    /// Starts tollgate with a config made by `make(port, admin_port, data_dir)`.
    pub fn start_with(make: impl FnOnce(u16, u16, &std::path::Path) -> String) -> Tollgate {
        Self::start_with_env(make, &[])
    }

    /// Like `start_with`, with extra environment for the process (a log
    /// level, `${VAR}` values); later entries win over the defaults.
    pub fn start_with_env(
        make: impl FnOnce(u16, u16, &std::path::Path) -> String,
        env: &[(&str, &str)],
    ) -> Tollgate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let data = dir.path().join("data");
        let config_path = dir.path().join("tollgate.toml");
        let config = make(port, admin_port, &data);
        remember_config_secrets(&config);
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("tollgate.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = run_command(&config_path, log);
        for (k, v) in env {
            if *k != "RUST_LOG" {
                remember_secret(v);
            }
            cmd.env(k, v);
        }
        let t = Tollgate {
            port,
            admin_port,
            dir,
            config_path,
            log_path,
            child: cmd.spawn().unwrap(),
        };
        t.wait_ready();
        t
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let up = |p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(self.port) && up(self.admin_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tollgate did not start; log:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Replaces the config file in place (same inode).
    pub fn write_config_in_place(&self, text: &str) {
        remember_config_secrets(text);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.config_path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Replaces the config file the way editors do: write aside, rename.
    pub fn write_config_by_rename(&self, text: &str) {
        remember_config_secrets(text);
        let aside = self.config_path.with_extension("toml.tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.config_path).unwrap();
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `tollgate run -c CONFIG` at log level info, its stderr going to `log`.
fn run_command(config_path: &std::path::Path, log: std::fs::File) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["run", "-c"])
        .arg(config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    cmd
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        // SIGTERM first: the access-log thread writes its last lines at
        // shutdown, and those are checked for secrets too.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("TERM");
            self.wait_exit(Duration::from_secs(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            assert_no_secret_in(&self.log(), "tollgate's log");
        }
    }
}

/// Every secret the tests of this binary gave tollgate: client keys (through
/// `sha256_hex`), the channel keys and admin tokens of the configs it ran
/// on, and the environment values (but RUST_LOG) it was started with. Each
/// tollgate's whole log is checked against all of them when it stops, so
/// every test's logs are grepped for secrets, not only those of
/// tests/secrets.rs. Secrets under 6 characters ("k1") are left out: they
/// turn up in logs by chance.
static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub fn remember_secret(secret: &str) {
    if secret.len() >= 6 && !secret.contains("${") {
        SECRETS.lock().unwrap().insert(secret.to_string());
    }
}

/// Remembers the quoted values of a config's secret fields.
fn remember_config_secrets(config: &str) {
    const SECRET_FIELDS: [&str; 5] = [
        "api_key",
        "key",
        "admin_token",
        "aws_secret_access_key",
        "aws_session_token",
    ];
    for line in config.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let quoted = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.split('"').next());
        if let (true, Some(secret)) = (SECRET_FIELDS.contains(&name.trim()), quoted) {
            remember_secret(secret);
        }
    }
}

/// Panics if `text` (`what`: whose text it is) holds a remembered secret.
pub fn assert_no_secret_in(text: &str, what: &str) {
    let leaked: Vec<String> = SECRETS
        .lock()
        .unwrap()
        .iter()
        .filter(|secret| text.contains(secret.as_str()))
        .cloned()
        .collect();
    assert!(
        leaked.is_empty(),
        "{what} holds the secrets {leaked:?}:\n{text}"
    );
}

/// Hex sha256 of a secret, for `key_sha256` lines; remembers the secret.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    remember_secret(secret);
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A reqwest client that does not pool (each test request is independent).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

// ---- Helpers added for the routing, failover, reload and error tests ----

/// Sum of the Prometheus samples called `name` whose labels include every
/// pair in `labels` (0 when there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name).then_some((label_text, value))
        })
        .filter(|(label_text, _)| {
            labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

impl Tollgate {
    /// GET /metrics on the admin listener (no token).
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GET an admin JSON document (no token).
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The generation /readyz reports.
    pub async fn generation(&self) -> u64 {
        self.admin_json("/readyz").await["generation"]
            .as_u64()
            .unwrap()
    }

    /// Polls /readyz until the generation is at least `at_least`.
    pub async fn wait_generation(&self, at_least: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let g = self.generation().await;
            if g >= at_least || Instant::now() > deadline {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl MockUpstream {
    /// Like `start`, and also counts accepted TCP connections.
    pub async fn start_counted(
        handler: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> (Self, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = received.clone();
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, handler, log).await;
                });
            }
        });
        let mock = MockUpstream {
            port,
            received,
            task,
        };
        (mock, connections)
    }
}

/// A mock provider whose chat answers carry `marker` as their text, so a
/// test can tell which channel served it.
pub async fn marked_upstream(marker: &'static str) -> MockUpstream {
    MockUpstream::start(move |req| {
        let model = serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v["model"].as_str().map(str::to_string))
            .unwrap_or_default();
        Reply::json(200, chat_completion(&model, marker, 10, 2))
    })
    .await
}

/// POSTs a chat completion with a Bearer key; returns status and JSON body
/// (`Null` when the body is not JSON).
pub async fn chat(
    http: &reqwest::Client,
    tg: &Tollgate,
    secret: &str,
    model: &str,
) -> (u16, serde_json::Value) {
    let resp = http
        .post(tg.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .body(
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The fields of one access-log line (`request` event): `key=value` pairs,
/// quotes removed.
pub fn access_log_lines(tg: &Tollgate) -> Vec<std::collections::HashMap<String, String>> {
    tg.log()
        .lines()
        .filter(|l| l.contains(" request ") && l.contains(" status="))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect()
        })
        .collect()
}

/// Waits (up to 5 s) for the `n`-th access-log line and returns its
/// (input, output, cached_input, cache_write, estimated) usage.
pub async fn logged_usage(tg: &Tollgate, n: usize) -> (u64, u64, u64, u64, bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(l) = access_log_lines(tg).get(n) {
            let num = |k: &str| l.get(k).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            return (
                num("input"),
                num("output"),
                num("cached_input"),
                num("cache_write"),
                l.get("estimated").map(String::as_str) == Some("true"),
            );
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line #{n}; log:\n{}",
            tg.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Tollgate {
    /// Kills the process without a clean shutdown (SIGKILL), then starts it
    /// again on the same config file and data dir. The log is appended to.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .unwrap();
        self.child = run_command(&self.config_path, log).spawn().unwrap();
        self.wait_ready();
    }
}

impl Tollgate {
    /// Polls /metrics (up to 5 s) until the sum of `name{labels}` reaches
    /// `at_least`; returns the last value. Requests are counted just after
    /// their answer completes, so a client may see the answer first.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let value = metric_sum(&self.metrics().await, name, labels);
            if value >= at_least || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs `tollgate run` on `config` (written to a temp file) for at most
/// `wait`: its exit code (`None`: still running after `wait`, then killed)
/// and everything it wrote to stderr.
pub fn run_to_exit(config: &str, wait: Duration) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    remember_config_secrets(config);
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut code = None;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            code = Some(status.code());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if code.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_no_secret_in(&stderr, "tollgate's stderr");
    (code.flatten(), stderr)
}

/// The value of one Prometheus sample in `/metrics` text: `name` with
/// exactly the labels `labels` (in any order), or None if absent.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, mut have) = match series.split_once('{') {
                Some((m, rest)) => {
                    let pairs = rest.strip_suffix('}')?;
                    let have: Vec<(String, String)> = pairs
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .filter_map(|p| {
                            let (k, v) = p.split_once("=\"")?;
                            Some((k.to_string(), v.trim_end_matches('"').to_string()))
                        })
                        .collect();
                    (m, have)
                }
                None => (series, Vec::new()),
            };
            have.sort();
            (metric == name && have == want).then(|| value.parse().ok())?
        })
}

/// GET a JSON document (panics on a non-JSON answer).
pub async fn get_json(url: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client().get(url);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// An OpenAI usage object with cached prompt tokens.
pub fn openai_usage(prompt: u64, completion: u64, cached: u64) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached}
    })
}

impl Tollgate {
    /// Panics (with the log) if the process has exited, e.g. because its
    /// ports were taken meanwhile: then another process answers on them.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("tollgate exited ({status}); log:\n{}", self.log());
        }
    }
}
