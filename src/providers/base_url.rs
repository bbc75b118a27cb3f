//! A channel's `base_url`, parsed once at config load into what a
//! connection and a request head need.

/// A parsed `base_url`.
#[derive(Debug, Clone)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header value: the host (an IPv6 address in brackets),
    /// with the port unless it is the scheme's.
    pub authority: String,
    /// Path prefix without a trailing slash ("" or "/api").
    pub base_path: String,
    pub insecure_skip_verify: bool,
}

/// Parses a `base_url`; the error completes "base_url \"…\" …".
pub fn parse_base_url(url: &str, insecure_skip_verify: bool) -> Result<BaseUrl, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with http:// or https://"),
    };
    let host = uri.host().ok_or("has no host")?;
    if uri.query().is_some() {
        return Err("must not have a query string");
    }
    let default_port = if tls { 443 } else { 80 };
    let port = uri.port_u16().unwrap_or(default_port);
    Ok(BaseUrl {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        authority: if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        },
        base_path: uri.path().trim_end_matches('/').to_string(),
        insecure_skip_verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_parts() {
        let u = parse_base_url("https://openrouter.ai/api/", false).unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("openrouter.ai", 443, "/api")
        );
        assert_eq!(u.authority, "openrouter.ai");
        let u = parse_base_url("http://127.0.0.1:9000", false).unwrap();
        assert_eq!((u.port, u.base_path.as_str()), (9000, ""));
        assert_eq!(u.authority, "127.0.0.1:9000");
        let u = parse_base_url("http://[::1]:9000/v", false).unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:9000")
        );
        let u = parse_base_url("https://[::1]:443", false).unwrap();
        assert_eq!(u.authority, "[::1]");
        assert!(parse_base_url("ftp://x", false).is_err());
        assert!(parse_base_url("https://x/?a=1", false).is_err());
    }
}
