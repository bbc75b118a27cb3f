//! The client-facing side, on pingora-core: read the request, authenticate,
//! route on the model, then try channels until one answers, streaming its
//! answer back as it arrives.
//!
//! We drive the relay ourselves instead of using pingora-proxy because the
//! proxy can only replay a pre-read body from its 64 KiB retry buffer, and
//! prompts are routinely larger. Here the whole body (up to
//! `max_body_bytes`) is one `Bytes` that every attempt re-sends as is.

mod client;
mod deadline;
mod pool;
mod response;
mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::Method;
use pingora_core::apps::ServerApp;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use tracing::warn;

use crate::access_log;
use crate::api;
use crate::auth;
use crate::body::{self, BodyProbe};
use crate::clock::now_ms;
use crate::config::{Channel, Key, Snapshot};
use crate::errors::{ApiError, Dialect};
use crate::metering::{self, Metering, Outcome};
use crate::metrics::{Metrics, ModelSeries};
use crate::providers::{self, BaseUrl, Endpoint, GeminiMethod, ResponseAdapter};
use crate::reload::ConfigHandle;
use crate::routing::{self, RouteError};
use crate::usage::Usage;
use client::ClientSession;
use pool::IdlePool;
use response::{UpstreamBody, KEEP_ALIVE};
use upstream::{DnsCache, FailReason, Failure};

pub struct Gateway {
    config: Arc<ConfigHandle>,
    metrics: Arc<Metrics>,
    metering: Arc<Metering>,
    connector: TransportConnector,
    pool: IdlePool,
    dns: DnsCache,
}

/// What happens to the client connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// Clean end: the connection may serve another request.
    Reuse,
    /// Clean end, but close the connection (body left unread, client gone).
    Close,
    /// The answer broke off: close without a clean end of body, so the
    /// client sees a truncated response instead of a complete one.
    Abort,
}

/// The client endpoints of SPEC §3 that this build serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Relay(Endpoint),
    /// GET /v1/models: OpenAI list, or Anthropic list with `anthropic-version`.
    Models,
    /// GET /v1beta/models: Gemini list.
    GeminiModels,
    Pricing,
    /// GET /api/usage and the OpenAI legacy billing endpoints.
    Usage(UsageView),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UsageView {
    Key,
    BillingSubscription,
    BillingUsage,
}

fn classify(method: &Method, path: &str) -> Route {
    match (method, path) {
        (&Method::GET, "/v1/models") => Route::Models,
        (&Method::GET, "/v1beta/models") => Route::GeminiModels,
        (&Method::GET, "/api/pricing") => Route::Pricing,
        (&Method::GET, "/api/usage") => Route::Usage(UsageView::Key),
        (
            &Method::GET,
            "/v1/dashboard/billing/subscription" | "/dashboard/billing/subscription",
        ) => Route::Usage(UsageView::BillingSubscription),
        (&Method::GET, "/v1/dashboard/billing/usage" | "/dashboard/billing/usage") => {
            Route::Usage(UsageView::BillingUsage)
        }
        (&Method::POST, _) => {
            Endpoint::classify(path).map_or(Route::NotFound, |(e, _)| Route::Relay(e))
        }
        _ => Route::NotFound,
    }
}

/// The error dialect of a request: its endpoint's, else guessed from the
/// path (so an Anthropic or Gemini SDK hitting a wrong path still gets an
/// error it can parse).
fn dialect_of(route: Route, req: &pingora_http::RequestHeader) -> Dialect {
    let path = req.uri.path();
    match route {
        Route::Relay(e) => e.dialect(),
        Route::GeminiModels => Dialect::Gemini,
        Route::Models if req.headers.contains_key("anthropic-version") => Dialect::Anthropic,
        _ if path.starts_with("/v1beta/") => Dialect::Gemini,
        _ if path.starts_with("/v1/messages") => Dialect::Anthropic,
        _ => Dialect::OpenAi,
    }
}

/// How long a stream is still read after its client went away, to get the
/// provider's usage report for billing.
const DRAIN_AFTER_DISCONNECT: Duration = Duration::from_secs(300);

/// An answer relayed to the client.
struct Relayed {
    status: u16,
    disposition: Disposition,
    /// As reported by the provider; `None` if the answer ended without it.
    usage: Option<Usage>,
    /// Output tokens counted from the answer text; 0 if `usage` is known.
    estimated_output: u64,
}

/// Labels of one finished request, for metrics and the access log.
struct Served<'a> {
    group: &'a str,
    model: &'a str,
    /// The (group, model) series, when already looked up.
    series: Option<&'a ModelSeries>,
    channel: &'a str,
    status: u16,
    /// Tokens as reported, or estimated when the answer carried no report.
    usage: Usage,
    estimated: bool,
}

impl Gateway {
    pub fn new(config: Arc<ConfigHandle>, metrics: Arc<Metrics>, metering: Arc<Metering>) -> Self {
        Gateway {
            config,
            metrics,
            metering,
            connector: TransportConnector::new(None),
            pool: IdlePool::default(),
            dns: DnsCache::default(),
        }
    }

    async fn serve(&self, session: &mut ClientSession) -> Disposition {
        let started = Instant::now();
        let snap = self.config.load();
        let route = classify(
            &session.req_header().method,
            session.req_header().uri.path(),
        );
        let dialect = dialect_of(route, session.req_header());
        let key = match route {
            Route::Pricing => return write_json(session, 200, &api::pricing(&snap)).await,
            Route::NotFound => {
                let e = ApiError::new(404, "unknown_endpoint", "no such endpoint");
                return self.reject(session, dialect, e, started).await;
            }
            Route::Models | Route::GeminiModels | Route::Relay(_) | Route::Usage(_) => {
                let ip = session.client_ip();
                let now = (now_ms() / 1000) as i64;
                match auth::authenticate(&snap, session.req_header(), ip, now) {
                    Ok(key) => key,
                    Err(e) => return self.reject(session, dialect, e, started).await,
                }
            }
        };
        let endpoint = match route {
            Route::Relay(endpoint) => endpoint,
            Route::GeminiModels => {
                return write_json(session, 200, &api::gemini_models(&snap, &key)).await
            }
            Route::Usage(view) => {
                let m = &self.metering;
                let body = match view {
                    UsageView::Key => metering::report::key_usage(m, &snap, &key),
                    UsageView::BillingSubscription => {
                        metering::report::billing_subscription(m, &snap, &key)
                    }
                    UsageView::BillingUsage => metering::report::billing_usage(m, &key),
                };
                return write_json(session, 200, &body).await;
            }
            _ if dialect == Dialect::Anthropic => {
                return write_json(session, 200, &api::anthropic_models(&snap, &key)).await
            }
            _ => return write_json(session, 200, &api::models(&snap, &key)).await,
        };
        self.relay(session, &snap, &key, endpoint, started).await
    }

    async fn relay(
        &self,
        session: &mut ClientSession,
        snap: &Snapshot,
        key: &Key,
        endpoint: Endpoint,
        started: Instant,
    ) -> Disposition {
        let dialect = endpoint.dialect();
        let deadline = client::body_deadline(&snap.server);
        let read = deadline::within(
            Some(deadline),
            read_body(session, snap.server.max_body_bytes),
        );
        let body = match read.await.unwrap_or_else(|| Err(body_timed_out())) {
            Ok(body) => body,
            Err(e) => {
                self.reject(session, dialect, e, started).await;
                return Disposition::Close;
            }
        };
        let probe = match body::probe(&body) {
            Ok(p) => with_path_model(p, endpoint, session.req_header().uri.path()),
            Err(msg) => {
                let e = ApiError::new(400, "invalid_json", msg);
                return self.reject(session, dialect, e, started).await;
            }
        };
        let Some(model) = probe.model.clone() else {
            let e = ApiError::new(400, "missing_model", "the request body has no `model`");
            return self.reject(session, dialect, e, started).await;
        };
        if !key.allows_model(&model) {
            let e = ApiError::new(
                403,
                "model_not_allowed",
                format!("this API key may not use model `{model}`"),
            );
            return self.reject(session, dialect, e, started).await;
        }
        if let Err(why) = routing::check_model(snap, &key.groups, &model) {
            let e = match why {
                RouteError::ModelNotFound => ApiError::new(
                    404,
                    "model_not_found",
                    format!("model `{model}` does not exist"),
                ),
                RouteError::ModelNotInGroup => ApiError::new(
                    403,
                    "model_not_in_group",
                    format!(
                        "model `{model}` is not available in this key's groups ({})",
                        key.group_names.join(", ")
                    ),
                ),
            };
            return self.reject(session, dialect, e, started).await;
        }
        if !routing::format_served(snap, &key.groups, &model, endpoint) {
            let e = ApiError::new(
                400,
                "unsupported_format",
                format!(
                    "no channel of this key's groups serves model `{model}` in this API format \
                     (channels serve only their provider's native format)"
                ),
            );
            return self.reject(session, dialect, e, started).await;
        }
        // Held until the request is billed; dropped on any other path,
        // which gives its budget reservation and concurrency slot back.
        let admission =
            match self
                .metering
                .admit(snap, key, &model, probe.max_output_tokens, body.len())
            {
                Ok(a) => a,
                Err(e) => return self.reject(session, dialect, e, started).await,
            };

        let mut tried: Vec<usize> = Vec::new();
        let mut last_failure: Option<Failure> = None;
        let mut previous_group: Option<usize> = None;
        while tried.len() < snap.max_attempts as usize {
            let now = now_ms();
            let Some(pick) = routing::next_channel(
                snap,
                &key.groups,
                &model,
                endpoint,
                &tried,
                &mut |c| snap.channels[c].health.try_acquire(now),
                &mut rand::thread_rng(),
            ) else {
                break;
            };
            tried.push(pick.channel);
            let group = &snap.groups[pick.group];
            let channel = &snap.channels[pick.channel];
            if let Some(from) = previous_group {
                self.metrics
                    .failovers_total
                    .with_label_values(&[&snap.groups[from].name, &group.name])
                    .inc();
            }
            // Routes hold only enabled channels, which have an upstream.
            let Some(upstream) = &channel.upstream else {
                continue;
            };
            let result = match &upstream.base_url {
                None => Ok(self
                    .answer_from_mock(session, channel, endpoint, &probe, body.len())
                    .await),
                Some(up) => {
                    let req = providers::ClientRequest {
                        endpoint,
                        header: session.req_header(),
                        body: &body,
                        probe: &probe,
                        model: &model,
                    };
                    let prepared = providers::prepare(upstream, up, req).await;
                    self.attempt(session, snap, channel, up, prepared, dialect)
                        .await
                }
            };
            match result {
                Ok(relayed) => {
                    let (usage, estimated) =
                        metering::final_usage(relayed.usage, relayed.estimated_output, &body);
                    let series = self.metrics.model_series(&group.name, &model);
                    let served = Served {
                        group: &group.name,
                        model: &model,
                        series: Some(&series),
                        channel: &channel.name,
                        status: relayed.status,
                        usage,
                        estimated,
                    };
                    let outcome = Outcome {
                        group: pick.group,
                        channel: &channel.name,
                        model: &model,
                        series: &series,
                        status: relayed.status,
                        usage,
                        estimated,
                    };
                    if endpoint.is_count() {
                        drop(admission); // token counting is free
                    } else {
                        self.metering.settle(admission, snap, key, &outcome);
                    }
                    self.record(&served, started, tried.len());
                    return relayed.disposition;
                }
                Err(failure) => {
                    self.channel_failed(snap, channel, &failure);
                    last_failure = Some(failure);
                    previous_group = Some(pick.group);
                }
            }
        }

        match last_failure {
            Some(Failure {
                answer: Some(answer),
                ..
            }) => {
                // The last upstream error, as the provider sent it (if JSON).
                let answer = answer.for_client(dialect);
                let status = answer.head.status.as_u16();
                let disposition = write_raw(session, answer.head, answer.body).await;
                let channel = &snap.channels[*tried.last().expect("a failure means a try")];
                let group = previous_group.map_or("", |g| snap.groups[g].name.as_str());
                let served = Served {
                    group,
                    model: &model,
                    series: None,
                    channel: &channel.name,
                    status,
                    usage: Usage::default(),
                    estimated: false,
                };
                self.record(&served, started, tried.len());
                disposition
            }
            Some(failure) => {
                let e = if failure.reason == FailReason::StatusAuth {
                    ApiError::new(
                        502,
                        "upstream_auth_error",
                        format!("the provider refused the channel's credentials for `{model}`"),
                    )
                } else {
                    ApiError::new(
                        502,
                        "upstream_unreachable",
                        format!(
                            "no channel could be reached for model `{model}` (last: {})",
                            failure.reason.as_str()
                        ),
                    )
                };
                self.reject(session, dialect, e, started).await
            }
            None => {
                let e = ApiError::new(
                    503,
                    "no_available_channel",
                    format!("no channel is available for model `{model}` right now"),
                )
                .with_retry_after(
                    routing::retry_after_seconds(snap, &key.groups, &model, now_ms())
                        .unwrap_or(snap.cooldown_seconds.max(1)),
                );
                self.reject(session, dialect, e, started).await
            }
        }
    }

    /// One try on a network channel. `Err` means "try another channel";
    /// once the response head reached the client there is no way back.
    async fn attempt(
        &self,
        session: &mut ClientSession,
        snap: &Snapshot,
        channel: &Channel,
        up: &BaseUrl,
        prepared: pingora_error::Result<providers::Prepared>,
        dialect: Dialect,
    ) -> Result<Relayed, Failure> {
        let addr = self
            .dns
            .resolve(&up.host, up.port)
            .await
            .map_err(|e| Failure {
                reason: FailReason::Dns,
                detail: format!("cannot resolve {}: {e}", up.host),
                retry_after: None,
                answer: None,
            })?;
        let header_timeout = Duration::from_secs(snap.server.upstream_header_timeout_seconds);
        // The peer and the upstream request are needed only until the
        // answer's head: scoped, they are not part of a stream's future for
        // its whole life. A rewritten body is also a second copy of the
        // prompt (the client's own body stays, for failover and billing
        // estimates).
        let (opened, slot, mut adapter) = {
            let providers::Prepared {
                head,
                body,
                adapter,
            } = prepared.map_err(|e| Failure {
                reason: FailReason::Io,
                detail: format!("cannot build the upstream request: {e}"),
                retry_after: None,
                answer: None,
            })?;
            let peer = upstream::peer(addr, up, &snap.server);
            let opened = upstream::exchange(
                &self.connector,
                &self.pool,
                &peer,
                &head,
                &body,
                header_timeout,
            )
            .await?;
            (opened, upstream::PoolSlot::of(&peer), adapter)
        };
        self.metrics
            .upstream_ttfb_seconds
            .with_label_values(&[&channel.name])
            .observe(opened.ttfb.as_secs_f64());
        let status = opened.head.status.as_u16();
        if let Some(reason) = FailReason::from_status(status) {
            return Err(Box::pin(upstream::error_answer(opened, reason)).await);
        }
        channel.health.record_success();
        let upstream::Opened { head, mut body, .. } = opened;
        let disposition = pipe_body(session, head, &mut body, adapter.as_mut(), dialect).await;
        if body.is_body_done() {
            upstream::release(&self.pool, body, slot);
        }
        let usage = adapter.usage();
        Ok(Relayed {
            status,
            disposition,
            // Counting the answer's tokens is work only a missing report needs.
            estimated_output: match usage {
                Some(_) => 0,
                None => adapter.estimated_output_tokens(),
            },
            usage,
        })
    }

    async fn answer_from_mock(
        &self,
        session: &mut ClientSession,
        channel: &Channel,
        endpoint: Endpoint,
        probe: &BodyProbe,
        body_len: usize,
    ) -> Relayed {
        let path = session.req_header().uri.path().to_string();
        let answer = providers::mock::answer(endpoint, &path, probe, body_len);
        let mut head = ResponseHeader::build(answer.status, Some(4)).expect("valid status");
        let _ = head.insert_header("content-type", answer.content_type);
        if probe.stream {
            let _ = head.insert_header("cache-control", "no-cache");
            let _ = head.insert_header("transfer-encoding", "chunked");
        } else {
            let len: usize = answer.events.iter().map(Bytes::len).sum();
            let _ = head.insert_header("content-length", len);
        }
        let relayed = |disposition| Relayed {
            status: answer.status,
            disposition,
            usage: Some(answer.usage),
            estimated_output: answer.usage.output,
        };
        if session.write_response_header(Box::new(head)).await.is_err() {
            return relayed(Disposition::Close);
        }
        for event in answer.events.iter().cloned() {
            if channel.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(channel.delay_ms)).await;
            }
            if session.write_response_body(event).await.is_err() {
                return relayed(Disposition::Close);
            }
        }
        match session.finish_body().await {
            Ok(()) => relayed(Disposition::Reuse),
            Err(_) => relayed(Disposition::Close),
        }
    }

    fn channel_failed(&self, snap: &Snapshot, channel: &Channel, failure: &Failure) {
        warn!(
            channel = &*channel.name,
            reason = failure.reason.as_str(),
            "upstream attempt failed: {}",
            failure.detail
        );
        self.metrics
            .upstream_failures_total
            .with_label_values(&[&channel.name, failure.reason.as_str()])
            .inc();
        channel.health.record_failure(
            now_ms(),
            Duration::from_secs(snap.cooldown_seconds),
            Duration::from_secs(snap.max_cooldown_seconds),
            failure.retry_after,
            format!("{}: {}", failure.reason.as_str(), failure.detail),
        );
    }

    /// Answers with a gateway error before any upstream answer was relayed.
    async fn reject(
        &self,
        session: &mut ClientSession,
        dialect: Dialect,
        error: ApiError,
        started: Instant,
    ) -> Disposition {
        let served = Served {
            group: "",
            model: "",
            series: None,
            channel: "",
            status: error.status,
            usage: Usage::default(),
            estimated: false,
        };
        self.record(&served, started, 0);
        let mut head = ResponseHeader::build(error.status, Some(3)).expect("valid status");
        if let Some(seconds) = error.retry_after {
            let _ = head.insert_header("retry-after", seconds.to_string());
        }
        let _ = head.insert_header("content-type", "application/json");
        write_raw(session, head, Bytes::from(error.body(dialect))).await
    }

    fn record(&self, s: &Served<'_>, started: Instant, attempts: usize) {
        let elapsed = started.elapsed();
        // itoa, not `to_string`: the formatting machinery costs ~800
        // instructions, for every request.
        let mut code = itoa::Buffer::new();
        self.metrics
            .requests_total
            .with_label_values(&[s.group, s.model, s.channel, code.format(s.status)])
            .inc();
        if !s.model.is_empty() {
            let looked_up;
            let series = match s.series {
                Some(series) => series,
                None => {
                    looked_up = self.metrics.model_series(s.group, s.model);
                    &looked_up
                }
            };
            series
                .duration_seconds(&self.metrics)
                .observe(elapsed.as_secs_f64());
        }
        access_log::write(&access_log::Entry {
            status: s.status,
            group: s.group,
            model: s.model,
            channel: s.channel,
            attempts,
            usage: s.usage,
            estimated: s.estimated,
            ms: elapsed.as_millis() as u64,
        });
    }
}

/// For Gemini endpoints the model and streaming come from the path, not
/// the body.
fn with_path_model(mut probe: BodyProbe, endpoint: Endpoint, path: &str) -> BodyProbe {
    if let (Endpoint::Gemini(method), Some((_, Some(model)))) = (endpoint, Endpoint::classify(path))
    {
        probe.model = Some(model.to_string());
        probe.model_span = None;
        probe.stream = method == GeminiMethod::StreamGenerate;
    }
    probe
}

/// Forwards the upstream response head and body chunk by chunk through the
/// adapter: nothing is buffered beyond the chunk in hand. If the client goes
/// away, the upstream is still read to its end (bounded) for its usage.
/// If an event stream breaks off, the client gets a last error event.
async fn pipe_body(
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
    let event = ApiError::new(502, "upstream_stream_broken", message).stream_event(dialect);
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

#[async_trait]
impl ServerApp for Gateway {
    /// Hands the connection to a task of its own and returns at once, so
    /// that Pingora's per-connection task ends instead of living as long as
    /// the connection: its future is sized for a listener's TLS handshake
    /// as well (ours is plain TCP), and an open stream held ~9.8 KB more
    /// with it. An open stream now holds only our future (3.9 KB). Nothing
    /// is lost by leaving Pingora's task: it does nothing after
    /// `process_new` but call it again with a stream we return, and
    /// shutdown is seen through `shutdown`.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        tokio::spawn(Arc::clone(self).serve_connection(stream, shutdown.clone()));
        None
    }
}

impl Gateway {
    /// Serves the requests of one client connection until it closes.
    async fn serve_connection(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let mut session = ClientSession::new(stream);
        loop {
            if !session.read_request(&self.config.load().server).await {
                return;
            }
            if *shutdown.borrow() {
                session.close_after_answer();
            }
            match self.serve(&mut session).await {
                Disposition::Abort => return,
                Disposition::Close => {
                    session.close_after_answer();
                    client::linger(&mut session).await;
                    return;
                }
                Disposition::Reuse if session.reusable() => {}
                Disposition::Reuse => {
                    // E.g. a refusal before the body was read: the client
                    // may still be sending it.
                    client::linger(&mut session).await;
                    return;
                }
            }
        }
    }
}

fn body_timed_out() -> ApiError {
    ApiError::new(
        408,
        "request_timeout",
        "the request body did not arrive in time",
    )
}

/// Reads the whole request body, refusing more than `max` bytes early.
async fn read_body(session: &mut ClientSession, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "request_too_large",
            format!("request body is larger than the {max} bytes allowed"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(ApiError::new(
                    400,
                    "invalid_body",
                    format!("could not read the request body: {:?}", e.etype()),
                ))
            }
        }
    }
}

async fn write_json(
    session: &mut ClientSession,
    status: u16,
    value: &serde_json::Value,
) -> Disposition {
    let mut head = ResponseHeader::build(status, Some(2)).expect("valid status");
    let _ = head.insert_header("content-type", "application/json");
    write_raw(session, head, Bytes::from(value.to_string())).await
}

async fn write_raw(
    session: &mut ClientSession,
    mut head: ResponseHeader,
    body: Bytes,
) -> Disposition {
    head.remove_header(&TRANSFER_ENCODING);
    head.remove_header(&CONNECTION);
    let _ = head.insert_header("content-length", body.len());
    if session.write_response_header(Box::new(head)).await.is_err() {
        return Disposition::Close;
    }
    if !body.is_empty() && session.write_response_body(body).await.is_err() {
        return Disposition::Close;
    }
    match session.finish_body().await {
        Ok(()) => Disposition::Reuse,
        Err(_) => Disposition::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_endpoints() {
        assert_eq!(
            classify(&Method::POST, "/v1/chat/completions"),
            Route::Relay(Endpoint::OpenAi)
        );
        assert_eq!(
            classify(&Method::POST, "/v1/responses"),
            Route::Relay(Endpoint::OpenAi)
        );
        assert_eq!(
            classify(&Method::POST, "/v1/messages"),
            Route::Relay(Endpoint::AnthropicMessages)
        );
        assert_eq!(
            classify(&Method::POST, "/v1beta/models/gemini-2.5-flash:countTokens"),
            Route::Relay(Endpoint::Gemini(GeminiMethod::CountTokens))
        );
        assert_eq!(
            classify(&Method::GET, "/v1beta/models"),
            Route::GeminiModels
        );
        assert_eq!(
            classify(&Method::GET, "/v1/chat/completions"),
            Route::NotFound
        );
        assert_eq!(classify(&Method::GET, "/v1/models"), Route::Models);
        assert_eq!(classify(&Method::GET, "/api/pricing"), Route::Pricing);
        assert_eq!(classify(&Method::POST, "/admin/reload"), Route::NotFound);
    }
}
