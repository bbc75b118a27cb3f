//! The user API on the client listener: `/api/session` (console sign-in)
//! and `/api/keys` (docs/api.md, "User API").

use std::net::IpAddr;

use http::Method;
use pingora_http::RequestHeader;
use serde_json::{json, Value};

use super::fields::{self, NAME_RULE};
use super::key_api::Actor;
use super::service::{Answer, KeyService, USER_COOKIE};
use super::session::{self, clear_cookie, set_cookie};
use crate::auth::percent_decoded;
use crate::clock::now_ms;
use crate::config::Snapshot;
use crate::errors::{ApiError, ErrorKind};

/// Whether the user API answers `path` (any method).
pub fn is_user_api(path: &str) -> bool {
    path == "/api/session" || path == "/api/keys" || path.starts_with("/api/keys/")
}

/// Serves one request of the user API; `body` is the whole request body.
pub fn user_api(
    svc: &KeyService,
    snap: &Snapshot,
    req: &RequestHeader,
    body: &[u8],
    client_ip: Option<IpAddr>,
) -> Answer {
    let answer = match (&req.method, req.uri.path()) {
        (&Method::POST, "/api/session") => sign_in(svc, snap, req, body, client_ip),
        (&Method::GET, "/api/session") => svc
            .signed_in_user(snap, req, client_ip)
            .map(|user| Answer::json(200, &session_info(snap, &user))),
        (&Method::DELETE, "/api/session") => sign_out(svc, snap, req, client_ip),
        (_, "/api/session") => Err(wrong_method("GET, POST or DELETE", "/api/session")),
        _ => svc
            .signed_in_user(snap, req, client_ip)
            .and_then(|user| keys_call(svc, snap, Actor::User(&user), req, body)),
    };
    answer.unwrap_or_else(Answer::from)
}

/// `/api/keys` and `/admin/keys` (with `prefix`), for `actor`.
pub(super) fn keys_call(
    svc: &KeyService,
    snap: &Snapshot,
    actor: Actor<'_>,
    req: &RequestHeader,
    body: &[u8],
) -> Result<Answer, ApiError> {
    let (method, path) = (&req.method, req.uri.path());
    let (collection, name) = match path.split_once("/keys") {
        Some((prefix, rest)) => (format!("{prefix}/keys"), rest.strip_prefix('/')),
        None => {
            return Err(ApiError::new(
                ErrorKind::UnknownEndpoint,
                "no such endpoint",
            ))
        }
    };
    match (method, name) {
        (&Method::GET, None) => {
            let list = match actor {
                Actor::User(u) => svc.list_keys(snap, Some(u), false),
                // `?user=NAME` lists one user's keys.
                Actor::Admin => {
                    let user = req
                        .uri
                        .query()
                        .into_iter()
                        .flat_map(|q| q.split('&'))
                        .find_map(|p| p.strip_prefix("user="))
                        .map(|u| String::from_utf8_lossy(&percent_decoded(u)).into_owned());
                    svc.list_keys(snap, user.as_deref(), true)
                }
            };
            Ok(Answer::json(200, &list))
        }
        (&Method::POST, None) => svc.create_key(snap, actor, body),
        (_, None) => Err(wrong_method("GET or POST", &collection)),
        (_, Some(name)) if name.is_empty() || name.contains('/') => Err(ApiError::new(
            ErrorKind::UnknownEndpoint,
            format!("no such endpoint: use {collection}/{{name}}"),
        )),
        (&Method::PATCH | &Method::DELETE, Some(name)) => {
            let name = key_name_in_path(name)?;
            match *method {
                Method::PATCH => svc.change_key(snap, actor, &name, body),
                _ => svc.revoke_key(snap, actor, &name),
            }
        }
        (_, Some(_)) => Err(wrong_method(
            "PATCH or DELETE",
            &format!("{collection}/{{name}}"),
        )),
    }
}

/// The key name of a `/keys/{name}` path, percent-decoded (a client may
/// encode any character); a name no key can have is a 404 that says the
/// rule.
fn key_name_in_path(segment: &str) -> Result<String, ApiError> {
    let name = String::from_utf8_lossy(&percent_decoded(segment)).into_owned();
    match fields::check_name(&Value::String(name)) {
        Ok(name) => Ok(name),
        Err(_) => Err(ApiError::new(
            ErrorKind::KeyNotFound,
            format!("no key has the name in this path: {NAME_RULE}"),
        )),
    }
}

fn wrong_method(allowed: &str, path: &str) -> ApiError {
    ApiError::new(
        ErrorKind::UnknownEndpoint,
        format!("{path} answers {allowed} only"),
    )
}

/// `POST /api/session {"token": "<user token>"}`: a session cookie.
fn sign_in(
    svc: &KeyService,
    snap: &Snapshot,
    req: &RequestHeader,
    body: &[u8],
    client_ip: Option<IpAddr>,
) -> Result<Answer, ApiError> {
    let now = now_ms();
    let token = svc.sign_in_token(req, body, client_ip, now, "user token")?;
    let user = svc.user_by_token(snap, &token, client_ip, now)?;
    let credential = crate::config::sha256(&token);
    let id = svc.user_sessions.open(&user, credential, now);
    Ok(Answer::json(200, &json!({"user": user})).with_cookie(set_cookie(USER_COOKIE, &id, req)))
}

/// `DELETE /api/session`: ends the session the cookie names, if any.
fn sign_out(
    svc: &KeyService,
    snap: &Snapshot,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
) -> Result<Answer, ApiError> {
    if let Some(id) = session::cookie(req, USER_COOKIE) {
        if session::bearer(req).is_none() {
            // The same rule as any cookie request that changes state.
            session::require_json_if_changing(req)?;
        }
        svc.user_sessions.close(id);
    } else {
        svc.signed_in_user(snap, req, client_ip)?;
    }
    Ok(Answer::no_content().with_cookie(clear_cookie(USER_COOKIE)))
}

/// `GET /api/session`: who is signed in, what she may pick.
fn session_info(snap: &Snapshot, user: &str) -> serde_json::Value {
    let u = snap.users.get(user);
    json!({
        "user": user,
        "groups": u.map(|u| snap.pickable_groups(u)).unwrap_or_default(),
        "default_group": u.map(|u| u.default_group()),
        "max_keys": snap.server.max_keys_per_user,
    })
}
