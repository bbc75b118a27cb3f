//! The admin listener: health, readiness, Prometheus metrics, channel
//! health, reload, and the operator's console page (`GET /`). Paths match
//! exactly (no normalization), and every path but /healthz, /readyz and the
//! console's page and assets needs the admin token (or its session) when
//! one is set.
//!
//! Connections are read by the client listener's own HTTP/1 code
//! ([`ClientSession`]), not Pingora's server session: that one logged the
//! raw head of a malformed request (credentials included) at ERROR and
//! answered nothing, where this one answers 400/414/431 and logs only why.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::console::{self, Listener};
use crate::health::Availability;
use crate::keys::{self, AdminAccess, KeyService};
use crate::metering::{report, Metering};
use crate::metrics::Metrics;
use crate::relay::client::{self, ClientSession};
use crate::reload::ConfigHandle;

pub struct AdminApp {
    pub config: Arc<ConfigHandle>,
    pub metrics: Arc<Metrics>,
    pub metering: Arc<Metering>,
    /// Admin sessions and managed keys, shared with the client listener.
    pub keys: Arc<KeyService>,
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .expect("valid response")
}

fn json_response(status: u16, value: Value) -> Response<Vec<u8>> {
    respond(status, "application/json", value.to_string().into_bytes())
}

/// An answer of the admin API in `crate::keys`, with its cookie.
fn keys_response(answer: keys::Answer) -> Response<Vec<u8>> {
    let mut r = Response::builder()
        .status(answer.status)
        .header("cache-control", "no-store");
    if answer.status != 204 {
        r = r
            .header("content-type", "application/json")
            .header("content-length", answer.body.len());
    }
    if let Some(cookie) = answer.set_cookie {
        r = r.header("set-cookie", cookie);
    }
    if let Some(seconds) = answer.retry_after {
        r = r.header("retry-after", seconds);
    }
    r.body(answer.body).expect("valid response")
}

impl AdminApp {
    /// Ready unless stopping; in cluster mode, whether Redis is reached:
    /// without it a `local` node still serves (degraded, 200) and a
    /// `refuse` node does not (503), so a load balancer can tell.
    fn readyz(&self, generation: u64) -> Response<Vec<u8>> {
        let Some(cluster) = self.metering.cluster() else {
            return json_response(200, json!({"ready": true, "generation": generation}));
        };
        let up = cluster.is_up();
        let ready = up || !cluster.refuses_when_down();
        json_response(
            if ready { 200 } else { 503 },
            json!({
                "ready": ready,
                "degraded": !up,
                "generation": generation,
                "cluster": {"node": cluster.node(), "up": up, "on_redis_error": cluster.mode()},
            }),
        )
    }

    /// `GET /admin/cluster`: the nodes registered in Redis and their admin
    /// URLs (what `tollgate usage --cluster` merges).
    async fn cluster_nodes(&self) -> Response<Vec<u8>> {
        let Some(cluster) = self.metering.cluster() else {
            return json_response(404, json!({"error": "not in cluster mode"}));
        };
        match cluster.nodes().await {
            Some(nodes) => {
                let nodes: Vec<_> = nodes
                    .into_iter()
                    .map(|(node, admin_url)| json!({"node": node, "admin_url": admin_url}))
                    .collect();
                json_response(200, json!({"node": cluster.node(), "nodes": nodes}))
            }
            None => json_response(503, json!({"error": "Redis is not reachable"})),
        }
    }

    /// Sets `tollgate_channel_up` from the current health of every channel.
    fn refresh_channel_gauges(&self) {
        let snap = self.config.load();
        let now = now_ms();
        for ch in &snap.channels {
            let up = ch.enabled() && ch.health.availability(now) != Availability::Cooling;
            self.metrics
                .channel_up
                .with_label_values(&[&ch.name])
                .set(i64::from(up));
        }
    }

    fn channels(&self) -> Value {
        let snap = self.config.load();
        let now = now_ms();
        let list: Vec<Value> = snap
            .channels
            .iter()
            .map(|ch| {
                let availability = ch.health.availability(now);
                let cooldown_ms = ch.health.cooldown_until_ms().saturating_sub(now);
                let (attempts, failures) = ch.health.last_hour(now);
                json!({
                    "name": &*ch.name,
                    "type": ch.kind.as_str(),
                    "enabled": ch.enabled(),
                    "up": ch.enabled() && availability != Availability::Cooling,
                    "state": if !ch.enabled() { "disabled" } else {
                        match availability {
                            Availability::Up => "up",
                            Availability::ProbeReady => "probe",
                            Availability::Cooling => "cooldown",
                        }
                    },
                    "priority": ch.priority,
                    "weight": ch.weight,
                    "consecutive_failures": ch.health.consecutive_failures(),
                    "cooldown_remaining_seconds": if availability == Availability::Cooling {
                        cooldown_ms.div_ceil(1000) } else { 0 },
                    "last_error": ch.health.last_error(),
                    "requests_last_hour": attempts,
                    "failures_last_hour": failures,
                })
            })
            .collect();
        json!({"generation": snap.generation, "channels": list})
    }

    /// `GET /admin/config`: the running generation, when it was loaded,
    /// and the last refused reload (until a reload succeeds).
    fn config_status(&self) -> Value {
        let status = self.config.status();
        json!({
            "generation": self.config.load().generation,
            "loaded_at_ms": status.loaded_at_ms,
            "last_reload_error": status.last_error.map(|(at_ms, message)| {
                json!({"at_ms": at_ms, "message": message})
            }),
        })
    }
}

/// The most of a request body the admin listener reads (a key's settings).
const MAX_ADMIN_BODY: usize = 64 * 1024;

impl AdminApp {
    async fn response(
        &self,
        req: &RequestHeader,
        body: &[u8],
        client_ip: Option<std::net::IpAddr>,
    ) -> Response<Vec<u8>> {
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        // The console's page and assets are public: it signs in itself.
        if console::serves(&method, &path, Listener::Admin) {
            let tag = req
                .headers
                .get("if-none-match")
                .and_then(|v| v.to_str().ok());
            if let Some(r) = console::response(&path, Listener::Admin, tag) {
                return r;
            }
        }
        let snap = self.config.load();
        if let Some(answer) = keys::admin_api(&self.keys, &snap, req, body, client_ip) {
            return keys_response(answer);
        }
        let open_path = path == "/healthz" || path == "/readyz";
        // The admin token (exactly one Authorization header: with two,
        // which one a proxy in front checked is anyone's guess) or the
        // admin session cookie.
        let access = match open_path {
            true => AdminAccess::Open,
            false => self.keys.admin_access(&snap, req, client_ip),
        };
        match access {
            AdminAccess::Open | AdminAccess::Granted => {}
            AdminAccess::Denied => {
                return json_response(401, json!({"error": "admin token required"}))
            }
            AdminAccess::NotJson => {
                return json_response(403, json!({"error": keys::json_required().message}))
            }
            AdminAccess::CrossSite => {
                return json_response(403, json!({"error": keys::cross_site().message}))
            }
            AdminAccess::Limited(seconds) => {
                let mut r = json_response(
                    429,
                    json!({"error": "too many failed admin sign-ins from this address"}),
                );
                r.headers_mut().insert("retry-after", seconds.into());
                return r;
            }
        }
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => respond(200, "text/plain", b"ok\n".to_vec()),
            // Not ready while stopping, so that a load balancer moves on.
            (Method::GET, "/readyz") if crate::drain::draining() => json_response(
                503,
                json!({"ready": false, "draining": true, "generation": snap.generation}),
            ),
            (Method::GET, "/readyz") => self.readyz(snap.generation),
            (Method::GET, "/metrics") => {
                self.refresh_channel_gauges();
                self.metering.refresh_budget_gauges(&snap);
                respond(200, "text/plain; version=0.0.4", self.metrics.render())
            }
            (Method::GET, "/admin/channels") => json_response(200, self.channels()),
            (Method::GET, "/admin/config") => json_response(200, self.config_status()),
            (Method::GET, "/admin/cluster") => self.cluster_nodes().await,
            (Method::GET, path @ ("/admin/usage" | "/admin/requests")) => {
                // Write queued charges first, so the answer includes every
                // request billed before it was asked.
                let metering = Arc::clone(&self.metering);
                let log_days = snap.store.request_log_days;
                let report = if path == "/admin/usage" {
                    report::admin_usage
                } else {
                    report::admin_requests
                };
                tokio::task::spawn_blocking(move || {
                    metering.ledger().write_pending(log_days);
                    report(&metering, &query)
                })
                .await
                .map_or_else(
                    |_| json_response(500, json!({"error": "usage query failed"})),
                    |r| match r {
                        Ok(v) => json_response(200, v),
                        Err(e) => json_response(400, json!({"error": e})),
                    },
                )
            }
            (Method::POST, "/admin/reload") => {
                let config = Arc::clone(&self.config);
                match tokio::task::spawn_blocking(move || config.reload()).await {
                    Ok(Ok(generation)) => json_response(200, json!({"generation": generation})),
                    Ok(Err(e)) => json_response(400, json!({"error": e.to_string()})),
                    Err(_) => json_response(500, json!({"error": "reload task failed"})),
                }
            }
            _ => json_response(404, json!({"error": "not found"})),
        }
    }
}

#[async_trait]
impl ServerApp for AdminApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ClientSession::for_admin(stream);
        loop {
            let server = self.config.load().server.clone();
            if !session.read_request(&server).await {
                return None;
            }
            let response = match read_body(&mut session, &server).await {
                Ok(body) => {
                    let ip = session.client_ip();
                    self.response(session.req_header(), &body, ip).await
                }
                Err(status) => json_response(status, json!({"error": "request body not read"})),
            };
            if write(&mut session, response).await.is_err() {
                return None;
            }
            if !session.reusable() {
                client::linger(&mut session).await;
                return None;
            }
        }
    }
}

/// Reads the request body, within the client body timeout; `Err(status)`
/// if it is too large (413), too slow (408) or malformed.
async fn read_body(
    session: &mut ClientSession,
    server: &crate::config::ServerSection,
) -> std::result::Result<Vec<u8>, u16> {
    let read = async {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(piece)) if body.len() + piece.len() > MAX_ADMIN_BODY => return Err(413),
                Ok(Some(piece)) => body.extend_from_slice(&piece),
                Ok(None) => return Ok(body),
                Err(_) => return Err(400),
            }
        }
    };
    tokio::time::timeout(client::body_deadline(server), read)
        .await
        .unwrap_or(Err(408))
}

async fn write(
    session: &mut ClientSession,
    response: Response<Vec<u8>>,
) -> pingora_error::Result<()> {
    let (parts, body) = response.into_parts();
    let mut head = ResponseHeader::build(parts.status, Some(parts.headers.len()))?;
    for (name, value) in parts.headers.iter() {
        head.append_header(name.clone(), value.clone())?;
    }
    session.write_response_header(Box::new(head)).await?;
    session.write_response_body(Bytes::from(body)).await?;
    session.finish_body().await
}
