//! Client authentication (docs/api.md, "Authentication"): find the key in the request, look it
//! up by its SHA-256, then check expiry and the IP allow-list. Nothing here
//! ever echoes the presented secret.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION};
use pingora_http::RequestHeader;

use crate::config::{sha256, Key, Snapshot};
use crate::errors::{ApiError, ErrorKind};
use crate::keys::registry::Registry;

// Names as constants: looked up by a `&str`, each would be parsed again for
// every request.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

/// The secret presented by the client: `Authorization: Bearer`,
/// `x-api-key`, `x-goog-api-key`, or `?key=` on Gemini paths. A request
/// that carries two Authorization headers, or different secrets in
/// different places, is refused (400) rather than authenticated by
/// whichever is looked at first: which one a proxy in front of tollgate,
/// or a provider behind it, would take is anyone's guess. The same secret
/// in several places is fine (some SDKs send both headers).
pub fn presented_secret(req: &RequestHeader) -> Result<Option<&str>, ApiError> {
    let mut authorization = req.headers.get_all(AUTHORIZATION).iter();
    let bearer = match (authorization.next(), authorization.next()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorKind::ConflictingApiKeys,
                "the request has more than one Authorization header: send one",
            ))
        }
        (Some(auth), None) => Some(bearer_token(auth.to_str().ok())),
        (None, _) => None,
    };
    let mut all = Vec::new();
    match bearer {
        Some(Some(token)) => all.push(token),
        // Not a bearer token: no key, but still a credential of its own.
        Some(None) => all.extend(req.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())),
        None => {}
    }
    for name in [X_API_KEY, X_GOOG_API_KEY] {
        for value in req.headers.get_all(name) {
            if let Some(v) = value.to_str().ok().map(str::trim).filter(|v| !v.is_empty()) {
                all.push(v);
            }
        }
    }
    let in_query = query_keys(req).count();
    all.extend(query_keys(req));
    let found = all.first().copied();
    if all.iter().any(|s| Some(*s) != found) {
        return Err(ApiError::new(
            ErrorKind::ConflictingApiKeys,
            "the request carries different API keys (in Authorization, x-api-key, \
             x-goog-api-key or ?key=): send one",
        ));
    }
    Ok(match bearer {
        // An Authorization header that is not a bearer token is no key.
        Some(token) => token,
        None if in_query == all.len() && !req.uri.path().starts_with("/v1beta/") => None,
        None => found,
    })
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_token(value: Option<&str>) -> Option<&str> {
    let (scheme, token) = value?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The values of `key=` query parameters, where Gemini clients send their
/// key.
fn query_keys(req: &RequestHeader) -> impl Iterator<Item = &str> {
    query_params(req).filter_map(|pair| pair.strip_prefix("key=").filter(|v| !v.is_empty()))
}

fn query_params(req: &RequestHeader) -> impl Iterator<Item = &str> {
    req.uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
}

/// The client's query parameters (`name=value` as sent) that may go to the
/// upstream: not `key`, and none whose value is a secret the client
/// presented anywhere. The client's credentials are tollgate's; the
/// channel sends its own.
pub fn forwarded_query(req: &RequestHeader) -> impl Iterator<Item = &str> {
    let secrets = if query_params(req).next().is_some() {
        presented_secrets(req)
    } else {
        // Most requests have no query: nothing to strip, so the secrets
        // are not collected (~1,400 instructions a request).
        Vec::new()
    };
    query_params(req).filter(move |pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decoded(value);
        name != "key" && !secrets.iter().any(|s| s.as_bytes() == &value[..])
    })
}

/// Every credential the request carries, wherever it is.
fn presented_secrets(req: &RequestHeader) -> Vec<&str> {
    let mut secrets: Vec<&str> = req
        .headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| bearer_token(v.to_str().ok()))
        .collect();
    for name in [
        X_API_KEY,
        X_GOOG_API_KEY,
        HeaderName::from_static("api-key"),
    ] {
        secrets.extend(
            req.headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::trim)),
        );
    }
    secrets.extend(query_keys(req));
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// `%XX` sequences decoded, so that an encoded secret is still recognized.
pub(crate) fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The key a connection presented last, so that the requests it sends over
/// keep-alive skip the SHA-256 of their secret (~3,600 instructions, a
/// tenth of a request's cost). Good for one config generation, and for a
/// managed key also for one version of the managed keys, so that a revoked
/// or changed key is never served from here.
#[derive(Default)]
pub struct KeyMemo {
    last: Option<Remembered>,
}

struct Remembered {
    secret: String,
    generation: u64,
    /// The managed keys' version it was found at; none for a TOML key.
    managed_version: Option<u64>,
    key: Arc<Key>,
}

impl KeyMemo {
    /// TOML keys first, then managed keys, both by SHA-256.
    fn lookup(
        &mut self,
        snapshot: &Snapshot,
        managed: &Registry,
        secret: &str,
    ) -> Option<Arc<Key>> {
        if let Some(last) = &self.last {
            if last.generation == snapshot.generation
                && last.managed_version.is_none_or(|v| v == managed.version())
                && same_secret(&last.secret, secret)
            {
                return Some(last.key.clone());
            }
        }
        let hash = sha256(secret);
        let (key, managed_version) = match snapshot.keys_by_hash.get(&hash) {
            Some(key) => (key.clone(), None),
            None => {
                // Read before the lookup: a change in between makes the
                // memo stale, never wrong.
                let version = managed.version();
                (managed.lookup(snapshot, &hash)?, Some(version))
            }
        };
        self.last = Some(Remembered {
            secret: secret.to_string(),
            generation: snapshot.generation,
            managed_version,
            key: key.clone(),
        });
        Some(key)
    }
}

/// Equality in time that depends on the length only: a proxy in front of
/// tollgate may send several clients' requests over one connection, and
/// one of them must not learn another's secret byte by byte.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// Authenticates a request against the snapshot and the managed keys at
/// time `now_unix`; `memo` is the connection's.
pub fn authenticate(
    snapshot: &Snapshot,
    managed: &Registry,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
    now_unix: i64,
    memo: &mut KeyMemo,
) -> Result<Arc<Key>, ApiError> {
    let secret = presented_secret(req)?.ok_or_else(|| {
        ApiError::new(
            ErrorKind::MissingApiKey,
            "missing API key: send it as `Authorization: Bearer <key>`",
        )
    })?;
    let key = memo
        .lookup(snapshot, managed, secret)
        .ok_or_else(|| ApiError::new(ErrorKind::InvalidApiKey, "invalid API key"))?;
    if key.expires_unix.is_some_and(|t| now_unix >= t) {
        return Err(ApiError::new(
            ErrorKind::ExpiredApiKey,
            "API key has expired",
        ));
    }
    if !key.allow_ips.is_empty() && !client_ip.is_some_and(|ip| key.allows_ip(ip)) {
        return Err(ApiError::new(
            ErrorKind::IpNotAllowed,
            "this API key may not be used from this address",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn finds_the_secret_in_every_documented_place() {
        let bearer = req("/v1/chat/completions", &[("authorization", "Bearer sk-1")]);
        let presented_secret = |r| presented_secret(r).unwrap();
        assert_eq!(presented_secret(&bearer), Some("sk-1"));
        let lower = req(
            "/v1/chat/completions",
            &[("authorization", "bearer  sk-1 ")],
        );
        assert_eq!(presented_secret(&lower), Some("sk-1"));
        let basic = req("/v1/chat/completions", &[("authorization", "Basic abc")]);
        assert_eq!(presented_secret(&basic), None);
        let x = req("/v1/messages", &[("x-api-key", "sk-2")]);
        assert_eq!(presented_secret(&x), Some("sk-2"));
        let goog = req(
            "/v1beta/models/g:generateContent",
            &[("x-goog-api-key", "sk-3")],
        );
        assert_eq!(presented_secret(&goog), Some("sk-3"));
        let query = req("/v1beta/models/g:generateContent?alt=sse&key=sk-4", &[]);
        assert_eq!(presented_secret(&query), Some("sk-4"));
        let query_elsewhere = req("/v1/chat/completions?key=sk-5", &[]);
        assert_eq!(presented_secret(&query_elsewhere), None);
    }

    #[test]
    fn two_authorization_headers_or_different_keys_are_refused() {
        let mut two = req("/v1/chat/completions", &[]);
        two.append_header("authorization", "Bearer sk-1").unwrap();
        two.append_header("authorization", "Bearer sk-1").unwrap();
        assert_eq!(presented_secret(&two).unwrap_err().status, 400);
        for (path, headers) in [
            (
                "/v1/messages",
                &[("authorization", "Bearer sk-1"), ("x-api-key", "sk-2")][..],
            ),
            (
                "/v1/messages",
                &[("authorization", "Basic abc"), ("x-api-key", "sk-2")][..],
            ),
            (
                "/v1beta/models/g:generateContent?key=sk-2",
                &[("x-goog-api-key", "sk-1")][..],
            ),
            (
                "/v1/chat/completions?key=sk-2",
                &[("authorization", "Bearer sk-1")][..],
            ),
            (
                "/v1beta/models/g:generateContent?key=sk-1&key=sk-2",
                &[][..],
            ),
        ] {
            let r = req(path, headers);
            let e = presented_secret(&r).expect_err(path);
            assert_eq!(
                (e.status, e.code()),
                (400, "conflicting_api_keys"),
                "{headers:?}"
            );
        }
        // The same key twice is one key.
        let same = req(
            "/v1/messages",
            &[("authorization", "Bearer sk-1"), ("x-api-key", " sk-1")],
        );
        assert_eq!(presented_secret(&same).unwrap(), Some("sk-1"));
    }

    #[test]
    fn the_clients_credentials_stay_out_of_the_forwarded_query() {
        let forwarded = |path: &str, headers: &[(&str, &str)]| {
            let r = req(path, headers);
            forwarded_query(&r).collect::<Vec<_>>().join("&")
        };
        assert_eq!(forwarded("/v1/chat/completions?key=sk-1&a=1", &[]), "a=1");
        assert_eq!(
            forwarded(
                "/v1/chat/completions?api_key=sk%2D1&b&token=sk-1&c=2",
                &[("authorization", "Bearer sk-1")]
            ),
            "b&c=2"
        );
        assert_eq!(
            forwarded("/v1/messages?beta=true&k=sk-9", &[("x-api-key", "sk-9")]),
            "beta=true"
        );
        assert_eq!(forwarded("/v1/chat/completions", &[]), "");
    }

    fn snapshot(keys: &[&str], generation: u64) -> Snapshot {
        let mut text = String::from(
            "[[groups]]\nname = \"g\"\nratio = 1\n[[models]]\nname = \"m\"\ninput = 1\n\
             [[users]]\nname = \"u\"\ngroup = \"g\"\n",
        );
        for (i, secret) in keys.iter().enumerate() {
            text.push_str(&format!(
                "[[keys]]\nname = \"k{i}\"\nkey_sha256 = \"{}\"\ngroups = [\"g\"]\n",
                crate::config::sha256(secret)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ));
        }
        crate::config::test_snapshot(text, generation)
    }

    fn managed(secret: &str, name: &str) -> crate::keys::registry::KeyRecord {
        crate::keys::registry::KeyRecord {
            name: name.into(),
            user: "u".into(),
            sha256: hex::encode(sha256(secret)),
            hint: String::new(),
            fields: Default::default(),
            disabled: false,
            revoked: false,
            created_ms: 1,
            updated_ms: 1,
            groups_set_by: Default::default(),
        }
    }

    #[test]
    fn a_connections_key_memo_never_answers_for_another_secret_or_config() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&crate::store::Store::open(dir.path()).unwrap()).unwrap();
        let mut memo = KeyMemo::default();
        let mut lookup = |snap: &Snapshot, secret: &str| {
            memo.lookup(snap, &registry, secret).map(|k| k.name.clone())
        };
        let both = snapshot(&["sk-alice", "sk-bob"], 1);
        assert_eq!(lookup(&both, "sk-alice").as_deref(), Some("k0"));
        assert_eq!(lookup(&both, "sk-alice").as_deref(), Some("k0"));
        // Another client behind the same proxy connection.
        assert_eq!(lookup(&both, "sk-bob").as_deref(), Some("k1"));
        assert_eq!(lookup(&both, "sk-alicf"), None);
        // A reload that removes bob's key takes effect on the same connection.
        let alice_only = snapshot(&["sk-alice"], 2);
        assert_eq!(lookup(&alice_only, "sk-bob"), None);
        assert_eq!(lookup(&alice_only, "sk-alice").as_deref(), Some("k0"));
        assert!(same_secret("sk-1", "sk-1"));
        assert!(!same_secret("sk-1", "sk-2") && !same_secret("sk-1", "sk-12"));
    }

    #[test]
    fn a_managed_key_is_found_after_toml_keys_and_never_served_stale() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&crate::store::Store::open(dir.path()).unwrap()).unwrap();
        let snap = snapshot(&["sk-toml"], 1);
        let mut memo = KeyMemo::default();
        registry.save(managed("sk-managed", "mk")).unwrap();
        let found = memo.lookup(&snap, &registry, "sk-managed").unwrap();
        assert_eq!(
            (found.name.as_str(), found.groups.as_slice()),
            ("mk", &[0][..])
        );
        assert!(memo.lookup(&snap, &registry, "sk-managed").is_some());
        // Revoked: the same connection's next request no longer finds it.
        let mut revoked = managed("sk-managed", "mk");
        revoked.revoked = true;
        registry.save(revoked).unwrap();
        assert!(memo.lookup(&snap, &registry, "sk-managed").is_none());
        // Disabled keys are not found; a TOML key's memo survives changes.
        let mut disabled = managed("sk-other", "mk2");
        disabled.disabled = true;
        registry.save(disabled).unwrap();
        assert!(memo.lookup(&snap, &registry, "sk-other").is_none());
        assert_eq!(memo.lookup(&snap, &registry, "sk-toml").unwrap().name, "k0");
        registry.save(managed("sk-third", "mk3")).unwrap();
        assert_eq!(memo.lookup(&snap, &registry, "sk-toml").unwrap().name, "k0");
        // A managed key named like a TOML key does not work.
        registry.save(managed("sk-clash", "k0")).unwrap();
        assert!(memo.lookup(&snap, &registry, "sk-clash").is_none());
        let warnings = registry.refresh(&snap);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("managed key \"k0\" (user \"u\"): a [[keys]] item"));
    }
}
