//! Client authentication (docs/api.md, "Authentication"): find the key in the request, look it
//! up by its SHA-256, then check expiry and the IP allow-list. Nothing here
//! ever echoes the presented secret.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION};
use pingora_http::RequestHeader;

use crate::config::{sha256, Key, Snapshot};
use crate::errors::{ApiError, ErrorKind};

/// The secret presented by the client, from the first place that has one:
/// `Authorization: Bearer`, `x-api-key`, `x-goog-api-key`, then `?key=` on
/// Gemini paths.
pub fn presented_secret(req: &RequestHeader) -> Option<&str> {
    // Names as constants: looked up by a `&str`, each would be parsed again
    // for every request.
    const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
    let header = |name: HeaderName| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(auth) = header(AUTHORIZATION) {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    header(X_API_KEY)
        .or_else(|| header(X_GOOG_API_KEY))
        .or_else(|| {
            if !req.uri.path().starts_with("/v1beta/") {
                return None;
            }
            req.uri
                .query()?
                .split('&')
                .find_map(|pair| pair.strip_prefix("key=").filter(|v| !v.is_empty()))
        })
}

/// Authenticates a request against the snapshot at time `now_unix`.
pub fn authenticate(
    snapshot: &Snapshot,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
    now_unix: i64,
) -> Result<Arc<Key>, ApiError> {
    let secret = presented_secret(req).ok_or_else(|| {
        ApiError::new(
            ErrorKind::MissingApiKey,
            "missing API key: send it as `Authorization: Bearer <key>`",
        )
    })?;
    let key = snapshot
        .keys_by_hash
        .get(&sha256(secret))
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
    Ok(key.clone())
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
}
