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
/// Live sessions one user (or the admin) may hold at once.
pub const MAX_SESSIONS_PER_SUBJECT: usize = 32;
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
        // Signing in again and again must not grow the table without bound:
        // past the cap, the subject's least recently used session ends.
        let mine = map.iter().filter(|(_, s)| s.subject == subject);
        if mine.clone().count() >= MAX_SESSIONS_PER_SUBJECT {
            if let Some(oldest) = mine.min_by_key(|(_, s)| s.last_seen_ms).map(|(h, _)| *h) {
                map.remove(&oldest);
            }
        }
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

/// Addresses whose failures are counted at once; past this, failures from
/// further addresses share one count (see [`SignInLimiter`]).
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Failed sign-ins per client address in fixed one-minute windows. An
/// IPv6 client is counted by its /64 (one host is usually given a whole
/// /64, and would otherwise try 10 tokens from each of its addresses).
/// Memory is bounded: with [`MAX_TRACKED_ADDRESSES`] addresses failing in
/// the current window, the failures of any further address count in one
/// shared entry (the `None` of unknown addresses), so a flood from many
/// addresses is slowed as a whole instead of growing the table.
#[derive(Default)]
pub struct SignInLimiter {
    failures: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    /// Address (none: unknown, or one of too many) -> (window start,
    /// failures in it).
    by_address: HashMap<Option<IpAddr>, (u64, u32)>,
    /// When windows that ended were last dropped: at most once a second,
    /// so that a full table does not cost a scan per failure.
    pruned_ms: u64,
}

impl Failures {
    /// The entry that counts `ip`'s failures.
    fn bucket(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        let ip = ip.map(counted_address);
        let known = self.by_address.contains_key(&ip);
        (known || self.by_address.len() < MAX_TRACKED_ADDRESSES)
            .then_some(ip)
            .flatten()
    }
}

/// The address failures are counted by: an IPv6 address's /64, an
/// IPv4-mapped IPv6 address as IPv4.
fn counted_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl SignInLimiter {
    /// Refuses an address that failed too often in the current window,
    /// with the seconds until it ends.
    pub fn check(&self, ip: Option<IpAddr>, now_ms: u64) -> Result<(), ApiError> {
        let failures = self.lock();
        match failures.by_address.get(&failures.bucket(ip)) {
            Some(&(start, n)) if n >= SIGN_IN_FAILURES && now_ms < start + SIGN_IN_WINDOW_MS => {
                Err(too_many_sign_ins(
                    (start + SIGN_IN_WINDOW_MS - now_ms).div_ceil(1000),
                ))
            }
            _ => Ok(()),
        }
    }

    pub fn fail(&self, ip: Option<IpAddr>, now_ms: u64) {
        let mut failures = self.lock();
        let full = failures.by_address.len() >= MAX_TRACKED_ADDRESSES;
        if full && now_ms >= failures.pruned_ms + 1000 {
            failures
                .by_address
                .retain(|_, (start, _)| now_ms < *start + SIGN_IN_WINDOW_MS);
            failures.pruned_ms = now_ms;
        }
        let bucket = failures.bucket(ip);
        let entry = failures.by_address.entry(bucket).or_insert((now_ms, 0));
        if now_ms >= entry.0 + SIGN_IN_WINDOW_MS {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
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
    crate::auth::bearer_token(value.to_str().ok())
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

/// Whether a request to the open admin listener (no admin token: on
/// loopback) may come from a web page: one named by a host name other than
/// `localhost` (a DNS-rebinding page of another site that would read the
/// answers, a new key's secret among them), or one that changes state
/// with an `Origin` or `Sec-Fetch-Site` saying another site sent it (a
/// plain form post). Programs (the CLI, curl) send neither.
pub fn from_another_site(req: &RequestHeader) -> bool {
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback_name =
        host.is_empty() || name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost");
    if !loopback_name {
        return true;
    }
    if matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let other_origin = header("origin").is_some_and(|origin| {
        let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
        !authority.eq_ignore_ascii_case(host)
    });
    let other_site =
        header("sec-fetch-site").is_some_and(|site| !matches!(site, "same-origin" | "none"));
    other_origin || other_site
}

pub fn cross_site() -> ApiError {
    ApiError::new(
        ErrorKind::CrossSite,
        "the admin listener has no admin_token, so it answers programs on this machine only: \
         not web pages of other sites, nor host names other than localhost or an address",
    )
}

/// A fresh secret: `prefix` and 48 random hex digits (192 bits).
pub fn fresh_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
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
    fn a_user_signing_in_again_and_again_holds_a_bounded_number_of_sessions() {
        let s = Sessions::default();
        let same = |_: &str| Some([1; 32]);
        let first = s.open("alice", [1; 32], 0);
        let ids: Vec<String> = (1..MAX_SESSIONS_PER_SUBJECT as u64 + 5)
            .map(|t| s.open("alice", [1; 32], t))
            .collect();
        let bob = s.open("bob", [1; 32], 0);
        assert_eq!(s.lock().len(), MAX_SESSIONS_PER_SUBJECT + 1);
        assert!(s.resolve(&first, 100, same).is_none(), "the oldest ended");
        assert!(s.resolve(ids.last().unwrap(), 100, same).is_some());
        assert!(s.resolve(&bob, 100, same).is_some(), "bob's are his own");
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
    fn an_ipv6_client_is_limited_by_its_64() {
        let l = SignInLimiter::default();
        let host = |i: u16| Some(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i]));
        for i in 0..SIGN_IN_FAILURES as u16 {
            l.fail(host(i), 1_000);
        }
        assert!(
            l.check(host(999), 1_000).is_err(),
            "another address, same /64"
        );
        let other = Some(IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]));
        assert!(l.check(other, 1_000).is_ok());
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        for _ in 0..SIGN_IN_FAILURES {
            l.fail(Some(mapped), 1_000);
        }
        assert!(l.check(Some(IpAddr::from([10, 0, 0, 9])), 1_000).is_err());
    }

    #[test]
    fn failures_from_very_many_addresses_take_bounded_memory_and_are_still_limited() {
        let l = SignInLimiter::default();
        let v4 = |i: u32| Some(IpAddr::from(i.to_be_bytes()));
        let extra = 1_000u32;
        for i in 0..MAX_TRACKED_ADDRESSES as u32 + extra {
            l.fail(v4(i), 1_000);
        }
        assert!(l.lock().by_address.len() <= MAX_TRACKED_ADDRESSES + 1);
        // The addresses past the limit share one count: used up.
        let late = v4(MAX_TRACKED_ADDRESSES as u32 + extra + 7);
        assert!(l.check(late, 2_000).is_err());
        assert!(
            l.check(v4(3), 2_000).is_ok(),
            "a tracked address keeps its own"
        );
        // Once the window ended, the table is pruned and counts again per address.
        l.fail(v4(0), 70_000);
        assert_eq!(l.lock().by_address.len(), 1);
        assert!(l.check(late, 70_000).is_ok());
    }

    #[test]
    fn web_pages_of_other_sites_are_told_apart_from_programs() {
        let programs = [
            req("POST", &[("host", "127.0.0.1:9191")]),
            req("POST", &[]),
            req("DELETE", &[("host", "[::1]:9191")]),
            req(
                "GET",
                &[("host", "localhost:9191"), ("origin", "http://evil.test")],
            ),
            req(
                "POST",
                &[
                    ("host", "127.0.0.1:9191"),
                    ("origin", "http://127.0.0.1:9191"),
                ],
            ),
            req(
                "PATCH",
                &[
                    ("host", "localhost:9191"),
                    ("sec-fetch-site", "same-origin"),
                ],
            ),
        ];
        for r in &programs {
            assert!(!from_another_site(r), "{:?}", r.headers);
        }
        let pages = [
            // DNS rebinding: any method, even a read.
            req("GET", &[("host", "evil.test:9191")]),
            req("POST", &[("host", "rebind.evil.test")]),
            // A form or fetch from another site.
            req(
                "POST",
                &[("host", "127.0.0.1:9191"), ("origin", "http://evil.test")],
            ),
            req("POST", &[("host", "127.0.0.1:9191"), ("origin", "null")]),
            req(
                "POST",
                &[
                    ("host", "127.0.0.1:9191"),
                    ("origin", "http://127.0.0.1:8080"),
                ],
            ),
            req(
                "DELETE",
                &[("host", "127.0.0.1:9191"), ("sec-fetch-site", "cross-site")],
            ),
            req(
                "POST",
                &[("host", "127.0.0.1:9191"), ("sec-fetch-site", "same-site")],
            ),
        ];
        for r in &pages {
            assert!(from_another_site(r), "{:?}", r.headers);
        }
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
