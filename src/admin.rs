//! The admin listener: health, readiness, Prometheus metrics, channel
//! health, reload, and the operator's console page (`GET /`). Paths match exactly (no normalization), and every
//! path but /healthz and /readyz needs the admin token when one is set.
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
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::console::{self, Listener};
use crate::health::Availability;
use crate::metering::{report, Metering};
use crate::metrics::Metrics;
use crate::relay::client::{self, ClientSession};
use crate::reload::ConfigHandle;

pub struct AdminApp {
    pub config: Arc<ConfigHandle>,
    pub metrics: Arc<Metrics>,
    pub metering: Arc<Metering>,
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

/// Compares secrets by their hashes so the time taken says nothing about
/// how much of the token matched.
fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    presented.is_some_and(|p| Sha256::digest(p.as_bytes()) == Sha256::digest(expected.as_bytes()))
}

impl AdminApp {
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

/// The most of a request body the admin listener reads (it uses none).
const MAX_ADMIN_BODY: usize = 64 * 1024;

impl AdminApp {
    async fn response(&self, req: &RequestHeader) -> Response<Vec<u8>> {
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        // Exactly one Authorization header: with two, which one a proxy in
        // front would have checked is anyone's guess.
        let mut authorization = req.headers.get_all("authorization").iter();
        let presented = match (authorization.next(), authorization.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string),
            _ => None,
        };

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
        let open_path = path == "/healthz" || path == "/readyz";
        if let Some(token) = &snap.server.admin_token {
            if !open_path && !token_matches(presented.as_deref(), token) {
                return json_response(401, json!({"error": "admin token required"}));
            }
        }
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => respond(200, "text/plain", b"ok\n".to_vec()),
            // Not ready while stopping, so that a load balancer moves on.
            (Method::GET, "/readyz") if crate::drain::draining() => json_response(
                503,
                json!({"ready": false, "draining": true, "generation": snap.generation}),
            ),
            (Method::GET, "/readyz") => {
                json_response(200, json!({"ready": true, "generation": snap.generation}))
            }
            (Method::GET, "/metrics") => {
                self.refresh_channel_gauges();
                self.metering.refresh_budget_gauges(&snap);
                respond(200, "text/plain; version=0.0.4", self.metrics.render())
            }
            (Method::GET, "/admin/channels") => json_response(200, self.channels()),
            (Method::GET, "/admin/config") => json_response(200, self.config_status()),
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
                Ok(()) => self.response(session.req_header()).await,
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

/// Reads and drops the request body, within the client body timeout;
/// `Err(status)` if it is too large (413), too slow (408) or malformed.
async fn read_body(
    session: &mut ClientSession,
    server: &crate::config::ServerSection,
) -> std::result::Result<(), u16> {
    let read = async {
        let mut left = MAX_ADMIN_BODY;
        loop {
            match session.read_request_body().await {
                Ok(Some(piece)) => left = left.checked_sub(piece.len()).ok_or(413_u16)?,
                Ok(None) => return Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches(Some("s3cret"), "s3cret"));
        assert!(!token_matches(Some("s3cre"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }
}
