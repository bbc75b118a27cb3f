//! The admin side: who may use the admin listener (the admin token, or the
//! `tollgate_admin` session cookie it was exchanged for), and
//! `/admin/session` (docs/api.md, "Admin API").

use std::net::IpAddr;

use http::Method;
use pingora_http::RequestHeader;
use serde_json::json;

use super::key_api::Actor;
use super::service::{Answer, KeyService, ADMIN_COOKIE};
use super::session::{self, clear_cookie, set_cookie};
use super::user_api::keys_call;
use crate::clock::now_ms;
use crate::config::{sha256, Snapshot};
use crate::errors::{ApiError, ErrorKind};

/// Whether a request may use the admin listener.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminAccess {
    /// No admin token is set: the listener is open (loopback).
    Open,
    Granted,
    /// No or a wrong token, or no live session.
    Denied,
    /// A cookie request that changes state without being JSON.
    NotJson,
    /// Too many failed attempts from the address; the seconds to wait.
    Limited(u64),
    /// Open, but asked by a web page of another site
    /// ([`session::from_another_site`]).
    CrossSite,
}

impl KeyService {
    /// Checks the admin token (`Authorization: Bearer`), else the admin
    /// session cookie. Wrong tokens count against the address's sign-in
    /// limit.
    pub fn admin_access(
        &self,
        snap: &Snapshot,
        req: &RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> AdminAccess {
        let Some(expected) = snap.server.admin_token.as_deref() else {
            if session::from_another_site(req) {
                return AdminAccess::CrossSite;
            }
            return AdminAccess::Open;
        };
        let now = now_ms();
        if let Err(e) = self.sign_ins.check(client_ip, now) {
            return AdminAccess::Limited(e.retry_after.unwrap_or(60));
        }
        let expected = sha256(expected);
        if let Some(token) = session::bearer(req) {
            // Compared as hashes: the time taken says nothing of how much matched.
            if sha256(token) == expected {
                return AdminAccess::Granted;
            }
            self.sign_ins.fail(client_ip, now);
            return AdminAccess::Denied;
        }
        let signed_in = session::cookie(req, ADMIN_COOKIE)
            .and_then(|id| self.admin_sessions.resolve(id, now, |_| Some(expected)));
        match signed_in {
            Some(_) if session::require_json_if_changing(req).is_err() => AdminAccess::NotJson,
            Some(_) => AdminAccess::Granted,
            None => AdminAccess::Denied,
        }
    }
}

/// The admin API's own paths; `None` for the others.
pub fn admin_api(
    svc: &KeyService,
    snap: &Snapshot,
    req: &RequestHeader,
    body: &[u8],
    client_ip: Option<IpAddr>,
) -> Option<Answer> {
    let answer = match req.uri.path() {
        "/admin/session" => session_call(svc, snap, req, body, client_ip),
        p if p == "/admin/keys" || p.starts_with("/admin/keys/") => {
            match svc.admin_access(snap, req, client_ip) {
                AdminAccess::Open | AdminAccess::Granted => {
                    keys_call(svc, snap, Actor::Admin, req, body)
                }
                AdminAccess::Denied => Err(ApiError::new(
                    ErrorKind::SignInRequired,
                    "admin token required: send `Authorization: Bearer <admin token>` or sign in \
                     with POST /admin/session",
                )),
                AdminAccess::NotJson => Err(session::json_required()),
                AdminAccess::Limited(seconds) => Err(session::too_many_sign_ins(seconds)),
                AdminAccess::CrossSite => Err(session::cross_site()),
            }
        }
        _ => return None,
    };
    Some(answer.unwrap_or_else(Answer::from))
}

/// `/admin/session`: GET, POST (sign in), DELETE (sign out).
fn session_call(
    svc: &KeyService,
    snap: &Snapshot,
    req: &RequestHeader,
    body: &[u8],
    client_ip: Option<IpAddr>,
) -> Result<Answer, ApiError> {
    let open = snap.server.admin_token.is_none();
    match (&req.method, open) {
        (&Method::DELETE, true) => Ok(Answer::no_content()),
        (&Method::GET | &Method::POST, true) => Ok(open_answer()),
        (&Method::POST, false) => admin_sign_in(svc, snap, req, body, client_ip),
        (&Method::GET, false) => match svc.admin_access(snap, req, client_ip) {
            AdminAccess::Granted | AdminAccess::Open => Ok(Answer::json(
                200,
                &json!({"admin": true, "token_required": true}),
            )),
            _ => Err(ApiError::new(
                ErrorKind::SignInRequired,
                "sign in with the admin token: POST /admin/session {\"token\": \"…\"}",
            )),
        },
        (&Method::DELETE, false) => {
            if let Some(id) = session::cookie(req, ADMIN_COOKIE) {
                session::require_json_if_changing(req)?;
                svc.admin_sessions.close(id);
            }
            Ok(Answer::no_content().with_cookie(clear_cookie(ADMIN_COOKIE)))
        }
        _ => Err(ApiError::new(
            ErrorKind::UnknownEndpoint,
            "/admin/session answers GET, POST or DELETE only",
        )),
    }
}

/// Without an admin token everything is open: the console needs no sign-in.
fn open_answer() -> Answer {
    Answer::json(200, &json!({"admin": true, "token_required": false}))
}

fn admin_sign_in(
    svc: &KeyService,
    snap: &Snapshot,
    req: &RequestHeader,
    body: &[u8],
    client_ip: Option<IpAddr>,
) -> Result<Answer, ApiError> {
    let now = now_ms();
    let token = svc.sign_in_token(req, body, client_ip, now, "admin token")?;
    let expected = sha256(snap.server.admin_token.as_deref().unwrap_or_default());
    if sha256(&token) != expected {
        svc.sign_ins.fail(client_ip, now);
        return Err(ApiError::new(
            ErrorKind::InvalidUserToken,
            "invalid admin token",
        ));
    }
    let id = svc.admin_sessions.open("admin", expected, now);
    Ok(
        Answer::json(200, &json!({"admin": true, "token_required": true})).with_cookie(set_cookie(
            ADMIN_COOKIE,
            &id,
            req,
        )),
    )
}
