//! Phase 3: trying channels until one answers. Each failure before the
//! answer's head reached the client (connect error, timeout, 429, 5xx, a
//! refused channel key) cools the channel down and moves on to the next
//! one; once a head is sent there is no way back. The request is billed
//! exactly once, by the attempt that answered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_http::ResponseHeader;
use tracing::warn;

use super::admit::Admitted;
use super::answer::{refuse, write_raw};
use super::client::ClientSession;
use super::record::record;
use super::stream::{pipe_body, write_events, Disposition};
use super::upstream::{self, FailReason, Failure, Outbound};
use crate::affinity::{Affinity, SessionId};
use crate::clock::now_ms;
use crate::config::{Channel, Key, Snapshot};
use crate::errors::{ApiError, ErrorKind};
use crate::media::MediaOp;
use crate::metering::{self, MediaUse, Metering, Served};
use crate::metrics::{AffinityResult, Metrics};
use crate::providers::{self, BaseUrl, Endpoint, Prepared, Reach};
use crate::routing;
use crate::usage::{Units, Usage};

/// What the attempts of one request use.
pub(super) struct Failover<'a> {
    pub metrics: &'a Metrics,
    pub metering: &'a Metering,
    pub outbound: &'a Outbound,
    pub affinity: &'a Affinity,
    pub snap: &'a Snapshot,
    pub key: &'a Key,
    pub endpoint: Endpoint,
    pub started: Instant,
}

/// An answer relayed to the client.
struct Relayed {
    status: u16,
    disposition: Disposition,
    /// As reported by the provider; `None` if the answer ended without it.
    usage: Option<Usage>,
    /// Output tokens counted from the answer text; 0 if `usage` is known.
    estimated_output: u64,
    /// Media units the answer reported.
    units: Units,
}

/// Why an attempt gave no answer.
enum Tried {
    /// The channel failed: try the next one.
    Failed(Box<Failure>),
    /// The request cannot be sent in the channel's format: the client's
    /// error, answered at once.
    Refused(ApiError),
}

/// The attempts so far.
#[derive(Default)]
struct Tries {
    /// Channel indexes, in order.
    channels: Vec<usize>,
    last_failure: Option<Failure>,
    /// The group of the last channel tried.
    last_group: Option<usize>,
}

impl Failover<'_> {
    pub(super) async fn serve(&self, session: &mut ClientSession, req: Admitted) -> Disposition {
        let snap = self.snap;
        let mut tries = Tries::default();
        let affinity = self.session_of(session, &req).map(|id| {
            let sticky = self.affinity.get(id, now_ms());
            (id, sticky)
        });
        let wanted = routing::Wanted {
            groups: &self.key.groups,
            model: &req.model,
            endpoint: self.endpoint,
            sticky: affinity.as_ref().and_then(|(_, sticky)| sticky.as_deref()),
        };
        while tries.channels.len() < snap.max_attempts as usize {
            let now = now_ms();
            let Some(pick) = routing::next_channel(
                snap,
                &wanted,
                &tries.channels,
                &mut |c| snap.channels[c].health.try_acquire(now),
                &mut rand::thread_rng(),
            ) else {
                break;
            };
            tries.channels.push(pick.channel);
            if let Some(from) = tries.last_group {
                self.metrics
                    .failovers_total
                    .with_label_values(&[&snap.groups[from].name, &snap.groups[pick.group].name])
                    .inc();
            }
            tries.last_group = Some(pick.group);
            let channel = &snap.channels[pick.channel];
            match self.try_channel(session, channel, &req).await {
                Ok(relayed) => {
                    if let Some((id, sticky)) = &affinity {
                        self.keep_session(*id, sticky.as_deref(), channel, relayed.status);
                    }
                    return self.settle(req, pick.group, channel, relayed, tries.channels.len());
                }
                Err(Tried::Failed(failure)) => {
                    self.channel_failed(channel, &failure);
                    tries.last_failure = Some(*failure);
                }
                Err(Tried::Refused(error)) => {
                    let dialect = self.endpoint.dialect();
                    return refuse(session, self.metrics, dialect, &error, self.started).await;
                }
            }
        }
        self.exhausted(session, &req.model, tries).await
    }

    /// The request's session, when affinity is on and the request names
    /// one: in its body (see [`crate::body::BodyProbe::session`]) or in a
    /// `session_id` / `x-session-id` header.
    fn session_of(&self, session: &ClientSession, req: &Admitted) -> Option<SessionId> {
        if !self.snap.affinity {
            return None;
        }
        let headers = &session.req_header().headers;
        let from_header = || {
            ["session_id", "x-session-id"]
                .iter()
                .find_map(|name| headers.get(*name)?.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        let id = req.probe.session.as_deref().or_else(from_header)?;
        Some(self.affinity.session(&self.key.name, id))
    }

    /// A successful answer makes its channel the session's.
    fn keep_session(&self, id: SessionId, sticky: Option<&str>, channel: &Channel, status: u16) {
        if !(200..300).contains(&status) {
            return;
        }
        let result = match sticky {
            None => AffinityResult::Miss,
            Some(name) if name == &*channel.name => AffinityResult::Hit,
            Some(_) => AffinityResult::Moved,
        };
        self.metrics
            .affinity_total
            .with_label_values(&[result.label()])
            .inc();
        self.affinity.set(id, &channel.name, now_ms());
    }

    /// One attempt: in-process for the mock, over the network otherwise.
    async fn try_channel(
        &self,
        session: &mut ClientSession,
        channel: &Channel,
        req: &Admitted,
    ) -> Result<Relayed, Tried> {
        // Routes hold only enabled channels, which have an upstream.
        let Some(upstream) = &channel.upstream else {
            let failure = Failure::io(FailReason::Io, "the channel is disabled");
            return Err(Tried::Failed(Box::new(failure)));
        };
        let Some(url) = &upstream.base_url else {
            return Ok(answer_from_mock(session, channel, self.endpoint, req).await);
        };
        let reach = channel.reach(self.endpoint, &req.model);
        if self.endpoint.is_count() && reach != Some(Reach::Native) {
            return Ok(answer_count_estimate(session, self.endpoint, req).await);
        }
        let client_request = providers::ClientRequest {
            endpoint: self.endpoint,
            header: session.req_header(),
            body: &req.body,
            probe: &req.probe,
            model: &req.model,
            long_context: req.long_context,
        };
        let prepared = match reach {
            Some(Reach::Translated(to)) => {
                let max_output = self.snap.max_output.get(&req.model).copied();
                let max_output = max_output.unwrap_or(providers::translated::DEFAULT_MAX_TOKENS);
                match providers::translated::prepare(upstream, url, client_request, to, max_output)
                    .await
                {
                    Ok(prepared) => prepared,
                    Err(field) => {
                        let message = format!(
                            "`{}` cannot be sent to the channel serving `{}`: {}",
                            field.field, req.model, field.why
                        );
                        return Err(Tried::Refused(ApiError::new(
                            ErrorKind::UnsupportedField,
                            message,
                        )));
                    }
                }
            }
            _ => providers::prepare(upstream, url, client_request).await,
        };
        self.attempt(session, channel, url, prepared)
            .await
            .map_err(|failure| Tried::Failed(Box::new(failure)))
    }

    /// One try on a network channel. `Err` means "try another channel";
    /// once the response head reached the client there is no way back.
    async fn attempt(
        &self,
        session: &mut ClientSession,
        channel: &Channel,
        url: &BaseUrl,
        prepared: pingora_error::Result<Prepared>,
    ) -> Result<Relayed, Failure> {
        let server = &self.snap.server;
        let addr = self
            .outbound
            .dns
            .resolve(&url.host, url.port)
            .await
            .map_err(|e| {
                Failure::io(FailReason::Dns, format!("cannot resolve {}: {e}", url.host))
            })?;
        let header_timeout = Duration::from_secs(server.upstream_header_timeout_seconds);
        // The peer and the upstream request are needed only until the
        // answer's head: scoped, they are not part of a stream's future for
        // its whole life. A rewritten body is also a second copy of the
        // prompt (the client's own body stays, for failover and billing
        // estimates).
        let (opened, slot, mut adapter) = {
            let Prepared {
                head,
                body,
                adapter,
            } = prepared.map_err(|e| {
                Failure::io(
                    FailReason::Io,
                    format!("cannot build the upstream request: {e}"),
                )
            })?;
            let peer = upstream::peer(addr, url, server);
            let out = self.outbound;
            let opened = upstream::exchange(
                &out.connector,
                &out.pool,
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
        channel.health.record_success(now_ms());
        let upstream::Opened { head, mut body, .. } = opened;
        let dialect = self.endpoint.dialect();
        let disposition = pipe_body(session, head, &mut body, adapter.as_mut(), dialect).await;
        if body.is_body_done() {
            upstream::release(&self.outbound.pool, body, slot);
        }
        let usage = adapter.usage();
        Ok(Relayed {
            status,
            disposition,
            units: adapter.units(),
            // Counting the answer's tokens is work only a missing report needs.
            estimated_output: match usage {
                Some(_) => 0,
                None => adapter.estimated_output_tokens(),
            },
            usage,
        })
    }

    /// Bills the answered request (counting endpoints are free) and
    /// records it.
    fn settle(
        &self,
        req: Admitted,
        group: usize,
        channel: &Channel,
        relayed: Relayed,
        attempts: usize,
    ) -> Disposition {
        let group = &self.snap.groups[group];
        let (usage, mut estimated) =
            metering::final_usage(relayed.usage, relayed.estimated_output, &req.body);
        let (media, audio_estimated) = self.media_use(&req, relayed.units);
        estimated |= audio_estimated;
        let series = self.metrics.model_series(&group.name, &req.model);
        let served = Served {
            group: Some(group),
            channel: &channel.name,
            model: &req.model,
            series: Some(&series),
            status: relayed.status,
            usage,
            estimated,
            media,
        };
        if self.endpoint.is_count() {
            drop(req.admission);
        } else {
            self.metering
                .settle(req.admission, self.snap, self.key, &served);
        }
        record(self.metrics, &served, self.started, attempts);
        relayed.disposition
    }

    /// The media units to bill: what the answer reported, else what the
    /// request asked for (images by `n`, speech by its characters). A
    /// transcription whose answer reports no duration (`text`, `srt`,
    /// `vtt`) is billed by its upload's duration (`true`: estimated) when
    /// the model has a `per_second` price.
    fn media_use(&self, req: &Admitted, answered: Units) -> (MediaUse, bool) {
        let Endpoint::OpenAi(op) = self.endpoint else {
            // A native Gemini answer's image tokens, counted apart.
            let media = MediaUse {
                units: answered,
                image_price: req.image_price,
            };
            return (media, false);
        };
        let asked = Units {
            images: req.media.images,
            chars: req.media.chars,
            ..Units::default()
        };
        let mut units = answered.or(asked);
        let estimate = op.media() == Some(MediaOp::Transcribe)
            && units.audio_ms == 0
            && (self.snap.prices.get(&req.model)).is_some_and(|p| p.media.per_second.is_some());
        if estimate {
            units.audio_ms = req.media.upload_audio_ms;
        }
        let media = MediaUse {
            units,
            image_price: req.image_price,
        };
        (media, estimate)
    }

    fn channel_failed(&self, channel: &Channel, failure: &Failure) {
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
            Duration::from_secs(self.snap.cooldown_seconds),
            Duration::from_secs(self.snap.max_cooldown_seconds),
            failure.retry_after,
            format!("{}: {}", failure.reason.as_str(), failure.detail),
        );
        if let Some(cluster) = self.metering.cluster() {
            let left_ms = channel.health.cooldown_until_ms().saturating_sub(now_ms());
            let failures = channel.health.consecutive_failures();
            cluster.publish_cooldown(&channel.name, left_ms, failures, failure.reason.as_str());
        }
    }

    /// Every attempt failed, or none could be made: the last upstream
    /// error as the provider sent it, else the gateway's own error.
    async fn exhausted(
        &self,
        session: &mut ClientSession,
        model: &str,
        tries: Tries,
    ) -> Disposition {
        let dialect = self.endpoint.dialect();
        let snap = self.snap;
        let error = match tries.last_failure {
            Some(Failure {
                answer: Some(answer),
                ..
            }) => {
                let answer = answer.for_client(dialect);
                let status = answer.head.status.as_u16();
                let disposition = write_raw(session, answer.head, answer.body).await;
                let channel =
                    &snap.channels[*tries.channels.last().expect("a failure means a try")];
                let served = Served {
                    group: tries.last_group.map(|g| &snap.groups[g]),
                    channel: &channel.name,
                    model,
                    series: None,
                    status,
                    usage: Usage::default(),
                    estimated: false,
                    media: MediaUse::default(),
                };
                record(self.metrics, &served, self.started, tries.channels.len());
                return disposition;
            }
            Some(failure) if failure.reason == FailReason::StatusAuth => ApiError::new(
                ErrorKind::UpstreamAuth,
                format!("the provider refused the channel's credentials for `{model}`"),
            ),
            Some(failure) => ApiError::new(
                ErrorKind::UpstreamUnreachable,
                format!(
                    "no channel could be reached for model `{model}` (last: {})",
                    failure.reason.as_str()
                ),
            ),
            None => ApiError::new(
                ErrorKind::NoAvailableChannel,
                format!("no channel is available for model `{model}` right now"),
            )
            .with_retry_after(
                routing::retry_after_seconds(snap, &self.key.groups, model, now_ms())
                    .unwrap_or(snap.cooldown_seconds.max(1)),
            ),
        };
        refuse(session, self.metrics, dialect, &error, self.started).await
    }
}

/// A count request to a channel that translates: its provider counts in
/// another format (OpenAI has no count endpoint at all), so the gateway
/// answers from its own tokenizer, as an estimate. Never billed.
async fn answer_count_estimate(
    session: &mut ClientSession,
    endpoint: Endpoint,
    req: &Admitted,
) -> Relayed {
    let tokens = metering::estimate_input_tokens(&req.body);
    let body = match endpoint {
        Endpoint::Gemini(_) => serde_json::json!({ "totalTokens": tokens }),
        _ => serde_json::json!({ "input_tokens": tokens }),
    };
    let mut head = ResponseHeader::build(200, Some(2)).expect("valid status");
    let _ = head.insert_header("content-type", "application/json");
    Relayed {
        status: 200,
        disposition: write_raw(session, head, Bytes::from(body.to_string())).await,
        usage: Some(Usage::default()),
        estimated_output: 0,
        units: Units::default(),
    }
}

/// The `mock` channel's answer, made in-process and written like an
/// upstream's.
async fn answer_from_mock(
    session: &mut ClientSession,
    channel: &Channel,
    endpoint: Endpoint,
    req: &Admitted,
) -> Relayed {
    let path = session.req_header().uri.path().to_string();
    let (answer, units) = match endpoint {
        Endpoint::OpenAi(op) if op.is_surface() => {
            providers::mock_media::answer(op, &req.probe, &req.media, &req.body)
        }
        _ => (
            providers::mock::answer(endpoint, &path, &req.probe, req.body.len()),
            Units::default(),
        ),
    };
    let head = answer.head(req.probe.stream);
    let delay = Duration::from_millis(channel.delay_ms);
    Relayed {
        status: answer.status,
        disposition: write_events(session, head, &answer.events, delay).await,
        usage: Some(answer.usage),
        estimated_output: answer.usage.output,
        units,
    }
}
