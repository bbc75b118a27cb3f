//! Console sign-in: sessions kept in memory by the SHA-256 of their id,
//! the cookies that carry them, and the per-address limit on failed
//! sign-ins (docs/api.md, "Sessions").

use std::net::IpAddr;
use std::sync::Mutex;

use base64::Engine;
use foldhash::HashMap;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use http::Method;
use pingora_http::RequestHeader;
use rand::RngCore;

use crate::config::sha256;
use crate::errors::{ApiError, ErrorKind};

/// A session ends after this long without a request.
pub const SESSION_IDLE_MS: u64 = 12 * 3600 * 1000;
/// Failed sign-ins (and bad tokens) an address may make per window.
pub const SIGN_IN_FAILURES: u32 = 10;
pub const SIGN_IN_WINDOW_MS: u64 = 60_000;

/// Who a session is for, and the hash of the credential it was opened
/// with: a session ends when that credential changes (a rotated token).
#[derive(Clone)]
struct Session {
    subject: String,
    credential: [u8; 32],
    last_seen_ms: u64,
}

#[derive(Default)]
pub struct Sessions {
    by_id_hash: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Opens a session; the id (256 random bits, base64url) is returned
    /// once, for the cookie, and only its SHA-256 is kept.
    pub fn open(&self, subject: &str, credential: [u8; 32], now_ms: u64) -> String {
        let mut id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut id);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        let mut map = self.lock();
        map.retain(|_, s| now_ms.saturating_sub(s.last_seen_ms) < SESSION_IDLE_MS);
        map.insert(
            sha256(&id),
            Session {
                subject: subject.to_string(),
                credential,
                last_seen_ms: now_ms,
            },
        );
        id
    }

    /// The subject of a live session opened with `credential` (which the
    /// caller reads from the current config), marking it used. A session
    /// that idled out or whose credential changed is ended.
    pub fn resolve(
        &self,
        id: &str,
        now_ms: u64,
        credential: impl Fn(&str) -> Option<[u8; 32]>,
    ) -> Option<String> {
        let hash = sha256(id);
        let mut map = self.lock();
        let session = map.get_mut(&hash)?;
        let live = now_ms.saturating_sub(session.last_seen_ms) < SESSION_IDLE_MS
            && credential(&session.subject) == Some(session.credential);
        if !live {
            map.remove(&hash);
            return None;
        }
        session.last_seen_ms = now_ms;
        Some(session.subject.clone())
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(&sha256(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_id_hash.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Failed sign-ins per client address in fixed one-minute windows.
#[derive(Default)]
pub struct SignInLimiter {
    /// Address (none: unknown) -> (window start, failures in it).
    failures: Mutex<HashMap<Option<IpAddr>, (u64, u32)>>,
}

impl SignInLimiter {
    /// Refuses an address that failed too often in the current window,
    /// with the seconds until it ends.
    pub fn check(&self, ip: Option<IpAddr>, now_ms: u64) -> Result<(), ApiError> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&ip) {
            Some(&(start, n)) if n >= SIGN_IN_FAILURES && now_ms < start + SIGN_IN_WINDOW_MS => {
                Err(too_many_sign_ins(
                    (start + SIGN_IN_WINDOW_MS - now_ms).div_ceil(1000),
                ))
            }
            _ => Ok(()),
        }
    }

    pub fn fail(&self, ip: Option<IpAddr>, now_ms: u64) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now_ms < *start + SIGN_IN_WINDOW_MS);
        }
        let entry = map.entry(ip).or_insert((now_ms, 0));
        if now_ms >= entry.0 + SIGN_IN_WINDOW_MS {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
    }
}

/// 429 for an address that failed to sign in too often; `wait` seconds.
pub fn too_many_sign_ins(wait: u64) -> ApiError {
    ApiError::new(
        ErrorKind::RateLimited,
        format!(
            "too many failed sign-ins from this address ({SIGN_IN_FAILURES} a minute): retry \
             in {wait} s"
        ),
    )
    .with_retry_after(wait)
}

/// The token of a single `Authorization: Bearer` header.
pub fn bearer(req: &RequestHeader) -> Option<&str> {
    let mut all = req.headers.get_all(AUTHORIZATION).iter();
    let (value, None) = (all.next()?, all.next()) else {
        return None;
    };
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a new session: not readable by scripts, never sent
/// cross-site, `Secure` when the client reached us over TLS (a proxy in
/// front says so with `X-Forwarded-Proto: https`).
pub fn set_cookie(name: &str, id: &str, req: &RequestHeader) -> String {
    let secure = req
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    format!(
        "{name}={id}; HttpOnly; SameSite=Strict; Path=/{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// A request authenticated by cookie that changes state must be JSON: a
/// cross-site HTML form cannot send `Content-Type: application/json`
/// (SameSite=Strict is the first line of defence, this the second).
pub fn require_json_if_changing(req: &RequestHeader) -> Result<(), ApiError> {
    let changes = !matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && !is_json(req) {
        return Err(json_required());
    }
    Ok(())
}

pub fn json_required() -> ApiError {
    ApiError::new(
        ErrorKind::JsonRequired,
        "a request signed in by cookie that changes something must be sent with \
         `Content-Type: application/json`",
    )
}

pub fn is_json(req: &RequestHeader) -> bool {
    req.headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/api/keys", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn sessions_idle_out_and_end_when_the_credential_changes() {
        let s = Sessions::default();
        let id = s.open("alice", [1; 32], 1_000);
        assert_eq!(id.len(), 43);
        let same = |_: &str| Some([1; 32]);
        assert_eq!(s.resolve(&id, 2_000, same).as_deref(), Some("alice"));
        assert_eq!(s.resolve("other", 2_000, same), None);
        // Used at 2,000: alive until 2,000 + 12 h.
        assert!(s.resolve(&id, 2_000 + SESSION_IDLE_MS - 1, same).is_some());
        assert!(s.resolve(&id, 2_000 + 2 * SESSION_IDLE_MS, same).is_none());
        let id = s.open("alice", [1; 32], 0);
        assert!(s.resolve(&id, 1, |_| Some([2; 32])).is_none());
        assert!(s.resolve(&id, 1, same).is_none(), "ended for good");
        let id = s.open("bob", [1; 32], 0);
        s.close(&id);
        assert!(s.resolve(&id, 1, same).is_none());
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_and_window() {
        let l = SignInLimiter::default();
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..SIGN_IN_FAILURES {
            assert!(l.check(ip, 1_000).is_ok());
            l.fail(ip, 1_000);
        }
        let e = l.check(ip, 31_000).unwrap_err();
        assert_eq!((e.status, e.retry_after), (429, Some(30)));
        assert!(l.check(Some(IpAddr::from([10, 0, 0, 2])), 31_000).is_ok());
        assert!(l.check(ip, 61_000).is_ok());
        l.fail(ip, 61_000);
        assert!(l.check(ip, 61_001).is_ok(), "a new window");
    }

    #[test]
    fn cookies_and_bearer_tokens_are_read_strictly() {
        let r = req(
            "GET",
            &[
                ("cookie", "a=1; tollgate_session=xyz"),
                ("authorization", "Bearer t"),
            ],
        );
        assert_eq!(cookie(&r, "tollgate_session"), Some("xyz"));
        assert_eq!(cookie(&r, "tollgate_admin"), None);
        assert_eq!(bearer(&r), Some("t"));
        let two = req(
            "GET",
            &[("authorization", "Bearer t"), ("authorization", "Bearer u")],
        );
        assert_eq!(bearer(&two), None);
        assert_eq!(
            set_cookie("tollgate_session", "id", &r),
            "tollgate_session=id; HttpOnly; SameSite=Strict; Path=/"
        );
        let tls = req("POST", &[("x-forwarded-proto", "https")]);
        assert!(set_cookie("c", "id", &tls).ends_with("; Secure"));
        assert!(require_json_if_changing(&tls).is_err());
        let json = req(
            "DELETE",
            &[("content-type", "application/json; charset=utf-8")],
        );
        assert!(require_json_if_changing(&json).is_ok());
        assert!(require_json_if_changing(&req("GET", &[])).is_ok());
        let form = req(
            "POST",
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        assert_eq!(require_json_if_changing(&form).unwrap_err().status, 403);
    }
}
