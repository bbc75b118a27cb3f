//! The client-facing side, on pingora-core: read the request, authenticate,
//! route on the model, then try channels until one answers, streaming its
//! answer back as it arrives.
//!
//! We drive the relay ourselves instead of using pingora-proxy because the
//! proxy can only replay a pre-read body from its 64 KiB retry buffer, and
//! prompts are routinely larger. Here the whole body (up to
//! `max_body_bytes`) is one `Bytes` that every attempt re-sends as is.

mod admit;
mod answer;
pub(crate) mod client;
mod deadline;
mod failover;
mod pool;
mod record;
mod request_head;
mod response;
mod route;
mod stream;
mod upstream;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;

use crate::affinity::Affinity;
use crate::api;
use crate::auth;
use crate::clock::now_ms;
use crate::config::{Key, Snapshot};
use crate::console::{self, Listener};
use crate::errors::{ApiError, Dialect, ErrorKind};
use crate::keys::{self, KeyService};
use crate::metering::{self, Metering};
use crate::metrics::Metrics;
use crate::providers::Endpoint;
use crate::reload::ConfigHandle;
use admit::Refused;
use answer::{refuse, write_json, write_response};
use client::ClientSession;
use failover::Failover;
use route::{Route, UsageView};
use stream::Disposition;
use upstream::Outbound;

pub struct Gateway {
    config: Arc<ConfigHandle>,
    metrics: Arc<Metrics>,
    metering: Arc<Metering>,
    outbound: Outbound,
    /// Outlives reloads: a session keeps its channel across them.
    affinity: Affinity,
    /// Sign-in sessions, shared with the admin listener.
    keys: Arc<KeyService>,
}

/// The most of a request body the user API reads (a key's settings).
const MAX_ACCOUNT_BODY: usize = 64 * 1024;

impl Gateway {
    pub fn new(
        config: Arc<ConfigHandle>,
        metrics: Arc<Metrics>,
        metering: Arc<Metering>,
        keys: Arc<KeyService>,
    ) -> Self {
        Gateway {
            config,
            metrics,
            metering,
            outbound: Outbound::new(),
            affinity: Affinity::default(),
            keys,
        }
    }

    /// The user API (`/api/session`, `/api/keys`): its JSON body, then
    /// [`keys::user_api`].
    async fn account(&self, session: &mut ClientSession, snap: &Snapshot) -> Disposition {
        let body = match admit::read_body(session, MAX_ACCOUNT_BODY).await {
            Ok(body) => body,
            Err(e) => return answer::write_account_answer(session, &e.into()).await,
        };
        let req = session.req_header();
        let answer = keys::user_api(&self.keys, snap, req, &body, session.client_ip());
        answer::write_account_answer(session, &answer).await
    }

    /// `GET /api/usage/daily`: the signed-in user's usage per day, by key,
    /// model and group (user token or session, like the user API).
    async fn user_usage(&self, session: &mut ClientSession, snap: &Snapshot) -> Disposition {
        let req = session.req_header();
        let user = match self.keys.signed_in_user(snap, req, session.client_ip()) {
            Ok(user) => user,
            Err(e) => return answer::write_account_answer(session, &e.into()).await,
        };
        // Queued charges first, so the answer includes every billed request.
        let metering = Arc::clone(&self.metering);
        let log_days = snap.store.request_log_days;
        let report = tokio::task::spawn_blocking(move || {
            metering.ledger().write_pending(log_days);
            metering::report::user_daily(&metering, &user, now_ms())
        })
        .await;
        match report {
            Ok(doc) => answer::write_account_answer(session, &keys::Answer::json(200, &doc)).await,
            // The report panicked: nothing sensible to answer.
            Err(_) => Disposition::Close,
        }
    }

    /// One request: which endpoint (route), whose key (auth), then the
    /// gateway's own answer or the relay.
    async fn serve(&self, session: &mut ClientSession, keys: &mut auth::KeyMemo) -> Disposition {
        let started = Instant::now();
        let snap = self.config.load();
        let req = session.req_header();
        let route = route::route_of(req);
        let dialect = route::dialect_of(route, req);
        let key = match route {
            Route::Pricing => return write_json(session, 200, &api::pricing(&snap)).await,
            Route::Console => {
                let tag = req
                    .headers
                    .get("if-none-match")
                    .and_then(|v| v.to_str().ok());
                if let Some(r) = console::response(req.uri.path(), Listener::Client, tag) {
                    return write_response(session, r).await;
                }
                let e = ApiError::new(ErrorKind::UnknownEndpoint, "no such endpoint");
                return refuse(session, &self.metrics, dialect, &e, started).await;
            }
            Route::Account => return self.account(session, &snap).await,
            Route::UserUsage => return self.user_usage(session, &snap).await,
            Route::NotFound => {
                let e = ApiError::new(ErrorKind::UnknownEndpoint, "no such endpoint");
                return refuse(session, &self.metrics, dialect, &e, started).await;
            }
            Route::ResponsesWebSocket => {
                // Codex takes 426 for "no WebSocket here" and POSTs over
                // HTTP at once; other statuses it retries with backoff.
                session.close_after_answer();
                let e = ApiError::new(
                    ErrorKind::WebSocketUnsupported,
                    "WebSocket is not supported on /v1/responses: POST the request over HTTP",
                );
                return refuse(session, &self.metrics, dialect, &e, started).await;
            }
            Route::Models | Route::GeminiModels | Route::Relay(_) | Route::Usage(_) => {
                let now = (now_ms() / 1000) as i64;
                let managed = self.keys.registry();
                match auth::authenticate(&snap, managed, req, session.client_ip(), now, keys) {
                    Ok(key) => key,
                    Err(e) => return refuse(session, &self.metrics, dialect, &e, started).await,
                }
            }
        };
        let body = match route {
            Route::Relay(endpoint) => {
                return self.relay(session, &snap, &key, endpoint, started).await
            }
            Route::GeminiModels => api::gemini_models(&snap, &key),
            Route::Usage(view) => {
                let m = &self.metering;
                match view {
                    UsageView::Key => metering::report::key_usage(m, &snap, &key),
                    UsageView::BillingSubscription => {
                        metering::report::billing_subscription(m, &snap, &key)
                    }
                    UsageView::BillingUsage => metering::report::billing_usage(m, &key),
                }
            }
            _ if dialect == Dialect::Anthropic => api::anthropic_models(&snap, &key),
            _ => api::models(&snap, &key),
        };
        write_json(session, 200, &body).await
    }

    /// Admission (phase 2), then the attempts (phases 3 and 4).
    async fn relay(
        &self,
        session: &mut ClientSession,
        snap: &Snapshot,
        key: &Key,
        endpoint: Endpoint,
        started: Instant,
    ) -> Disposition {
        let admitted = admit::admit(session, snap, key, endpoint, &self.metering).await;
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(Refused { error, close }) => {
                let dialect = endpoint.dialect();
                let answered = refuse(session, &self.metrics, dialect, &error, started).await;
                return if close { Disposition::Close } else { answered };
            }
        };
        let failover = Failover {
            metrics: &self.metrics,
            metering: &self.metering,
            outbound: &self.outbound,
            affinity: &self.affinity,
            snap,
            key,
            endpoint,
            started,
        };
        failover.serve(session, admitted).await
    }
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
        let mut keys = auth::KeyMemo::default();
        loop {
            if !session.read_request(&self.config.load().server).await {
                return;
            }
            if *shutdown.borrow() {
                session.close_after_answer();
            }
            match self.serve(&mut session, &mut keys).await {
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
