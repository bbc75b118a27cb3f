//! The admin listener: health, readiness, Prometheus metrics, channel
//! health and reload. Paths match exactly (no normalization), and every
//! path but /healthz and /readyz needs the admin token when one is set.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::health::Availability;
use crate::metering::{report, Metering};
use crate::metrics::Metrics;
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
                })
            })
            .collect();
        json!({"generation": snap.generation, "channels": list})
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let presented = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let _ = session.drain_request_body().await;

        let snap = self.config.load();
        let open_path = path == "/healthz" || path == "/readyz";
        if let Some(token) = &snap.server.admin_token {
            if !open_path && !token_matches(presented.as_deref(), token) {
                return json_response(401, json!({"error": "admin token required"}));
            }
        }
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => respond(200, "text/plain", b"ok\n".to_vec()),
            (Method::GET, "/readyz") => {
                json_response(200, json!({"ready": true, "generation": snap.generation}))
            }
            (Method::GET, "/metrics") => {
                self.refresh_channel_gauges();
                self.metering.refresh_budget_gauges(&snap);
                respond(200, "text/plain; version=0.0.4", self.metrics.render())
            }
            (Method::GET, "/admin/channels") => json_response(200, self.channels()),
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
