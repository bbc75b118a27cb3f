//! What the user and admin APIs share: the signed-in user of a request,
//! sessions, the sign-in limit, and the answers they give.

use std::net::IpAddr;
use std::sync::Arc;

use pingora_http::RequestHeader;
use serde_json::value::RawValue;
use serde_json::Value;

use super::registry::Registry;
use super::session::{self, Sessions, SignInLimiter};
use crate::clock::now_ms;
use crate::config::{sha256, Snapshot};
use crate::errors::{ApiError, Dialect, ErrorKind};
use crate::metering::Metering;

/// The user session cookie (client listener).
pub const USER_COOKIE: &str = "tollgate_session";
/// The admin session cookie (admin listener).
pub const ADMIN_COOKIE: &str = "tollgate_admin";

/// What both listeners share: managed keys, sessions and the sign-in limit.
pub struct KeyService {
    pub(super) registry: Arc<Registry>,
    /// For the spend shown with each key.
    pub(super) metering: Arc<Metering>,
    pub(super) user_sessions: Sessions,
    pub(super) admin_sessions: Sessions,
    pub(super) sign_ins: SignInLimiter,
}

/// An answer of the user or admin API, for the listener to write.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// JSON, or empty (204).
    pub body: Vec<u8>,
    pub set_cookie: Option<String>,
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn json(status: u16, value: &Value) -> Answer {
        Answer {
            status,
            body: value.to_string().into_bytes(),
            set_cookie: None,
            retry_after: None,
        }
    }

    pub fn no_content() -> Answer {
        Answer {
            status: 204,
            body: Vec::new(),
            set_cookie: None,
            retry_after: None,
        }
    }

    pub(super) fn with_cookie(mut self, cookie: String) -> Answer {
        self.set_cookie = Some(cookie);
        self
    }
}

/// Errors in the OpenAI dialect, like every `/api/*` answer.
impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Answer {
        Answer {
            status: e.status,
            body: e.body(Dialect::OpenAi),
            set_cookie: None,
            retry_after: e.retry_after,
        }
    }
}

impl KeyService {
    pub fn new(registry: Arc<Registry>, metering: Arc<Metering>) -> KeyService {
        KeyService {
            registry,
            metering,
            user_sessions: Sessions::default(),
            admin_sessions: Sessions::default(),
            sign_ins: SignInLimiter::default(),
        }
    }

    /// The managed keys.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The user a request of the user API is from: `Authorization: Bearer
    /// <user token>`, else the `tollgate_session` cookie. A cookie request
    /// that changes state (not GET) must be `Content-Type:
    /// application/json` (403 otherwise). A bad token counts against the
    /// address's sign-in limit (429 once it is used up). Any `/api/*`
    /// handler that acts for a user calls this first.
    pub fn signed_in_user(
        &self,
        snap: &Snapshot,
        req: &RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> Result<String, ApiError> {
        let now = now_ms();
        if let Some(token) = session::bearer(req) {
            return self.user_by_token(snap, token, client_ip, now);
        }
        let user = session::cookie(req, USER_COOKIE)
            .and_then(|id| {
                self.user_sessions
                    .resolve(id, now, |u| user_credential(snap, u))
            })
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::SignInRequired,
                    "sign in: send `Authorization: Bearer <user token>`, or sign in with \
                     POST /api/session",
                )
            })?;
        session::require_json_if_changing(req)?;
        Ok(user)
    }

    /// The token of a sign-in, `{"token": "<credential>"}` sent as JSON,
    /// once the address may still try (`credential` names the token in the
    /// error).
    pub(super) fn sign_in_token(
        &self,
        req: &RequestHeader,
        body: &[u8],
        client_ip: Option<IpAddr>,
        now: u64,
        credential: &str,
    ) -> Result<String, ApiError> {
        if !session::is_json(req) {
            return Err(ApiError::new(
                ErrorKind::JsonRequired,
                format!(
                    "sign in with `Content-Type: application/json` and \
                     {{\"token\": \"<{credential}>\"}}"
                ),
            ));
        }
        self.sign_ins.check(client_ip, now)?;
        token_field(body)
    }

    /// The user whose token this is; a wrong token counts as a failed
    /// sign-in of the address.
    pub(super) fn user_by_token(
        &self,
        snap: &Snapshot,
        token: &str,
        client_ip: Option<IpAddr>,
        now: u64,
    ) -> Result<String, ApiError> {
        self.sign_ins.check(client_ip, now)?;
        match snap.users_by_token.get(&sha256(token)) {
            Some(user) => Ok(user.clone()),
            None => {
                self.sign_ins.fail(client_ip, now);
                Err(ApiError::new(
                    ErrorKind::InvalidUserToken,
                    "invalid user token",
                ))
            }
        }
    }
}

/// The hash of the token `user` signs in with now (none: she has none, or
/// is gone), so that her sessions end when it changes.
fn user_credential(snap: &Snapshot, user: &str) -> Option<[u8; 32]> {
    snap.users.get(user)?.token_sha256
}

/// A JSON object body, or the 400 that says what is wrong with it. A
/// `budget_usd` number is kept as the text the client sent: read into a
/// `Value` it would be a binary float, and 123456789.123456789 USD would
/// not be that many nano-USD.
pub(super) fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut map)) => {
            if let Some(budget @ Value::Number(_)) = map.get_mut("budget_usd") {
                if let Some(text) = raw_field(body, "budget_usd") {
                    *budget = Value::String(text);
                }
            }
            Ok(map)
        }
        Ok(_) => Err(ApiError::new(
            ErrorKind::InvalidJson,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            ErrorKind::InvalidJson,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// The JSON text of the top-level field `name` of an object (the last,
/// if it is there twice, as for a `Value`).
fn raw_field(body: &[u8], name: &str) -> Option<String> {
    let fields: std::collections::HashMap<String, &RawValue> = serde_json::from_slice(body).ok()?;
    fields.get(name).map(|raw| raw.get().to_string())
}

/// The string field `token` of a sign-in body.
fn token_field(body: &[u8]) -> Result<String, ApiError> {
    match json_object(body)?.remove("token") {
        Some(Value::String(t)) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(ApiError::new(
            ErrorKind::InvalidField,
            "send {\"token\": \"<token>\"} as a JSON object",
        )),
    }
}
