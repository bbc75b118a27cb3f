//! Vertex AI (`type = "vertex"`): Gemini-format clients to
//! `/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`
//! and Anthropic-format clients to Claude on Vertex
//! (`.../publishers/anthropic/models/{model}:rawPredict|streamRawPredict`,
//! body with `anthropic_version: vertex-2023-10-16` and no `model`).
//! Answers are in the native Gemini / Anthropic shapes, read by their
//! adapters; image-generation models pass through like any Gemini model.
//! Which of the two formats a model speaks is its name's ([`is_claude`]):
//! a client of the other format (or of OpenAI's) is translated to it.
//!
//! Auth is an OAuth2 access token minted from a service account: an RS256
//! JWT exchanged at the token URI. Tokens are cached; one refresh runs in
//! the background when a token gets close to expiry, so requests never wait
//! for it, and requests that find no usable token share one refresh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use jsonwebtoken::{Algorithm, EncodingKey};
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::head::UpstreamHead;
use super::{anthropic, bad_setting, gemini, ClientRequest, Endpoint, Prepared, SettingError};
use super::{BaseUrl, Upstream};
use crate::config::schema::ChannelDef;

pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_LOCATION: &str = "us-central1";
/// A token closer than this to expiry is refreshed in the background.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// A token closer than this to expiry is not used at all.
const MIN_VALIDITY: Duration = Duration::from_secs(30);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Claude on Vertex (Anthropic Messages), by the model's upstream name:
/// Vertex names Anthropic's models `claude-…` (`claude-sonnet-4-5@20250929`)
/// and every other publisher's otherwise.
pub fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

pub struct Settings {
    pub project: String,
    pub location: String,
    pub tokens: Arc<TokenSource>,
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    project_id: Option<String>,
    token_uri: Option<String>,
}

impl Settings {
    /// `Ok(None)`: a `${VAR}` is unset, the channel is disabled.
    pub fn from_def(
        def: &ChannelDef,
        expand: &mut dyn FnMut(&str, &str) -> Option<String>,
    ) -> std::result::Result<Option<Settings>, SettingError> {
        let text = match (&def.credentials_file, &def.credentials_json) {
            (Some(path), None) => {
                let Some(path) = expand("credentials_file", path) else {
                    return Ok(None);
                };
                std::fs::read_to_string(&path).map_err(|e| {
                    bad_setting(
                        "credentials_file",
                        format!("credentials_file \"{path}\": {e}"),
                    )
                })?
            }
            (None, Some(json)) => match expand("credentials_json", json) {
                Some(json) => json,
                None => return Ok(None),
            },
            _ => {
                return Err(bad_setting(
                    "type",
                    "type \"vertex\" needs exactly one of credentials_file or \
                     credentials_json (a service-account key)",
                ))
            }
        };
        let credentials_field = if def.credentials_file.is_some() {
            "credentials_file"
        } else {
            "credentials_json"
        };
        let account: ServiceAccountFile = serde_json::from_str(&text).map_err(|e| {
            bad_setting(
                credentials_field,
                format!("the credentials are not a service-account key JSON: {e}"),
            )
        })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|_| {
            bad_setting(
                credentials_field,
                "the service account's private_key is not an RSA PEM key",
            )
        })?;
        let mut opt = |field: &str, v: &Option<String>| -> std::result::Result<_, ()> {
            match v {
                Some(v) => expand(field, v).map(Some).ok_or(()),
                None => Ok(None),
            }
        };
        let (Ok(project), Ok(location), Ok(token_uri)) = (
            opt("project", &def.project),
            opt("location", &def.location),
            opt("token_uri", &def.token_uri),
        ) else {
            return Ok(None);
        };
        let project = project.or(account.project_id).ok_or_else(|| {
            bad_setting(
                "type",
                "type \"vertex\" needs project (the service account names none)",
            )
        })?;
        let token_uri = token_uri
            .or(account.token_uri)
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.into());
        let token_uri_parsed = parse_http_url(&token_uri)
            .map_err(|why| bad_setting("token_uri", format!("token_uri \"{token_uri}\" {why}")))?;
        Ok(Some(Settings {
            project,
            location: location.unwrap_or_else(|| DEFAULT_LOCATION.into()),
            tokens: shared_source(
                &account.client_email,
                &token_uri,
                &account.private_key,
                || {
                    TokenSource::new(
                        account.client_email.clone(),
                        account.private_key_id.clone(),
                        key,
                        token_uri.clone(),
                        token_uri_parsed,
                    )
                },
            ),
        }))
    }

    pub fn default_base_url(&self) -> String {
        if self.location == "global" {
            "https://aiplatform.googleapis.com".into()
        } else {
            format!("https://{}-aiplatform.googleapis.com", self.location)
        }
    }

    fn model_path(&self, publisher: &str, model: &str, method: &str) -> String {
        format!(
            "/v1/projects/{}/locations/{}/publishers/{publisher}/models/{}:{method}",
            self.project,
            self.location,
            super::encode_segment(model)
        )
    }
}

pub async fn prepare(
    channel: &Upstream,
    settings: &Settings,
    upstream: &BaseUrl,
    req: ClientRequest<'_>,
) -> Result<Prepared> {
    let token = settings.tokens.token().await.map_err(super::internal)?;
    let model = channel.upstream_model(req.model);
    let (path, query, body, adapter) = match req.endpoint {
        Endpoint::Gemini(method) => {
            let path = settings.model_path("google", model, method.as_str());
            let query = gemini::upstream_query(req.header);
            let adapter = gemini::adapter_for(method, req.header);
            (path, query, req.body.clone(), adapter)
        }
        Endpoint::AnthropicMessages => {
            let method = if req.probe.stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            let betas = anthropic::betas(&req);
            let body = anthropic::cloud_body(req.body, ANTHROPIC_VERSION, false, &betas)
                .map_err(super::internal)?;
            let path = settings.model_path("anthropic", model, method);
            let adapter = anthropic::CloudErrors::wrap(anthropic::adapter_for(req));
            (path, Vec::new(), body, adapter)
        }
        Endpoint::AnthropicCountTokens => {
            let body = req.body_for_model(model);
            let path = settings.model_path("anthropic", "count-tokens", "rawPredict");
            let adapter = anthropic::CloudErrors::wrap(anthropic::adapter_for(req));
            (path, Vec::new(), body, adapter)
        }
        Endpoint::OpenAi(_) => {
            return Err(super::internal(
                "vertex does not serve OpenAI format".into(),
            ))
        }
    };
    let target = super::target(upstream, &path, &query);
    let also_dropped: &[&str] = match req.endpoint {
        Endpoint::Gemini(_) => &["anthropic-version"],
        _ => &[],
    };
    let head = UpstreamHead::forwarding(
        "POST",
        &target,
        req.header,
        also_dropped,
        upstream,
        ("authorization", &[b"Bearer ", token.as_bytes()]),
        body.len(),
    )?;
    Ok(Prepared {
        head: head.finish(),
        body,
        adapter,
    })
}

/// Token sources by (account, key, token URI), so that a config reload
/// keeps the cached token instead of minting a new one. Weak: a source
/// lives as long as some config uses it.
type SourceKey = [u8; 32];
static SOURCES: Mutex<Vec<(SourceKey, std::sync::Weak<TokenSource>)>> = Mutex::new(Vec::new());

fn shared_source(
    client_email: &str,
    token_uri: &str,
    private_key: &str,
    make: impl FnOnce() -> TokenSource,
) -> Arc<TokenSource> {
    use sha2::{Digest, Sha256};
    let key: SourceKey = Sha256::new()
        .chain_update(client_email)
        .chain_update([0])
        .chain_update(token_uri)
        .chain_update([0])
        .chain_update(private_key)
        .finalize()
        .into();
    let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    sources.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(live) = sources
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, weak)| weak.upgrade())
    {
        return live;
    }
    let source = Arc::new(make());
    sources.push((key, Arc::downgrade(&source)));
    source
}

struct HttpTarget {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_http_url(url: &str) -> std::result::Result<HttpTarget, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with http:// or https://"),
    };
    Ok(HttpTarget {
        tls,
        host: uri.host().ok_or("has no host")?.to_string(),
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    })
}

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    expires_at: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// Access tokens of one service account: cached, refreshed ahead of expiry.
pub struct TokenSource {
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    token_uri: String,
    target: HttpTarget,
    cached: Mutex<Option<Token>>,
    /// Held while a refresh runs: concurrent callers wait for that one.
    refresh_lock: tokio::sync::Mutex<()>,
    background_refresh: AtomicBool,
    connector: Connector,
}

impl TokenSource {
    fn new(
        client_email: String,
        key_id: Option<String>,
        key: EncodingKey,
        token_uri: String,
        target: HttpTarget,
    ) -> Self {
        TokenSource {
            client_email,
            key_id,
            key,
            token_uri,
            target,
            cached: Mutex::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            background_refresh: AtomicBool::new(false),
            connector: Connector::new(None),
        }
    }

    /// A valid access token. Waits only when there is none at all.
    pub async fn token(self: &Arc<Self>) -> std::result::Result<Arc<str>, String> {
        if let Some(t) = self.usable() {
            if t.expires_at.saturating_duration_since(Instant::now()) < REFRESH_AHEAD {
                self.refresh_in_background();
            }
            return Ok(t.value);
        }
        let _one_refresh = self.refresh_lock.lock().await;
        if let Some(t) = self.usable() {
            return Ok(t.value);
        }
        // Boxed: the refresh future is ~11 KB and would otherwise be part
        // of every request's future, copied on each request.
        Box::pin(self.refresh()).await
    }

    fn usable(&self) -> Option<Token> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|t| t.expires_at.saturating_duration_since(Instant::now()) > MIN_VALIDITY)
            .cloned()
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.background_refresh.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            {
                let _one_refresh = me.refresh_lock.lock().await;
                let due = me.usable().is_none_or(|t| {
                    t.expires_at.saturating_duration_since(Instant::now()) < REFRESH_AHEAD
                });
                if due {
                    if let Err(e) = me.refresh().await {
                        warn!("vertex access token refresh failed: {e}");
                    }
                }
            }
            me.background_refresh.store(false, Ordering::Release);
        });
    }

    /// Mints a JWT, exchanges it, caches the access token.
    async fn refresh(&self) -> std::result::Result<Arc<str>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("cannot sign the token request: {e}"))?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let asked = Instant::now();
        let (status, body) = tokio::time::timeout(TOKEN_TIMEOUT, self.post_form(form))
            .await
            .map_err(|_| "the token endpoint did not answer in time".to_string())??;
        if status != 200 {
            return Err(format!("the token endpoint answered {status}"));
        }
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| "the token endpoint's answer has no access_token".to_string())?;
        let token = Token {
            value: Arc::from(answer.access_token),
            expires_at: asked + Duration::from_secs(answer.expires_in),
        };
        let value = token.value.clone();
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
        Ok(value)
    }

    async fn post_form(&self, form: String) -> std::result::Result<(u16, Bytes), String> {
        let t = &self.target;
        let addr = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("cannot resolve the token endpoint: {e}"))?
            .next()
            .ok_or("the token endpoint has no address")?;
        let mut peer = HttpPeer::new(addr, t.tls, t.host.clone());
        peer.options.connection_timeout = Some(TOKEN_TIMEOUT / 2);
        peer.options.read_timeout = Some(TOKEN_TIMEOUT);
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("cannot reach the token endpoint: {e}"))?;
        let mut req = RequestHeader::build_no_case("POST", t.path.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        let authority = if (t.tls && t.port == 443) || (!t.tls && t.port == 80) {
            t.host.clone()
        } else {
            format!("{}:{}", t.host, t.port)
        };
        let headers = [
            ("host", authority),
            ("content-type", "application/x-www-form-urlencoded".into()),
            ("content-length", form.len().to_string()),
        ];
        for (k, v) in headers {
            req.insert_header(k, v).map_err(|e| e.to_string())?;
        }
        let io = |e: Box<pingora_error::Error>| format!("token endpoint: {e}");
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(io)?;
        session
            .write_request_body(Bytes::from(form), true)
            .await
            .map_err(io)?;
        session.finish_request_body().await.map_err(io)?;
        session.read_response_header().await.map_err(io)?;
        let status = session.response_header().map_or(0, |h| h.status.as_u16());
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await.map_err(io)? {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                return Err("the token endpoint's answer is too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback token endpoint that answers after `delay` with
    /// `tok-<n>` valid for `expires_in` seconds; returns (url, request count).
    async fn token_endpoint(delay: Duration, expires_in: u64) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head and the form body (its length is declared).
                    loop {
                        let n = s.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len || n == 0 {
                                break;
                            }
                        }
                    }
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(delay).await;
                    let body = format!(
                        r#"{{"access_token":"tok-{n}","expires_in":{expires_in},"token_type":"Bearer"}}"#
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, count)
    }

    fn source(token_uri: &str) -> Arc<TokenSource> {
        let key = EncodingKey::from_rsa_pem(include_bytes!("../../tests/data/vertex-test-key.pem"))
            .unwrap();
        Arc::new(TokenSource::new(
            "sa@project.iam.gserviceaccount.com".into(),
            Some("kid-1".into()),
            key,
            token_uri.into(),
            parse_http_url(token_uri).unwrap(),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_share_one_refresh() {
        let (url, count) = token_endpoint(Duration::from_millis(150), 3600).await;
        let tokens = source(&url);
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let t = tokens.clone();
                tokio::spawn(async move { t.token().await })
            })
            .collect();
        for c in calls {
            assert_eq!(&*c.await.unwrap().unwrap(), "tok-1");
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(&*tokens.token().await.unwrap(), "tok-1", "cached");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn near_expiry_refreshes_once_in_the_background() {
        // 200 s left is inside the refresh window but still usable.
        let (url, count) = token_endpoint(Duration::from_millis(300), 200).await;
        let tokens = source(&url);
        assert_eq!(&*tokens.token().await.unwrap(), "tok-1");
        {
            // While a refresh holds the lock, requests are still served.
            let _refresh_running = tokens.refresh_lock.lock().await;
            let calls: Vec<_> = (0..16)
                .map(|_| {
                    let t = tokens.clone();
                    tokio::spawn(async move { t.token().await })
                })
                .collect();
            for c in calls {
                assert_eq!(&*c.await.unwrap().unwrap(), "tok-1", "served from cache");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.load(Ordering::SeqCst) < 2 || tokens.usable().unwrap().value.as_ref() != "tok-2"
        {
            assert!(Instant::now() < deadline, "background refresh never landed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "exactly one background refresh"
        );
    }

    #[test]
    fn settings_from_a_service_account() {
        let key = include_str!("../../tests/data/vertex-test-key.pem");
        let sa = serde_json::json!({"type": "service_account", "project_id": "p1",
            "private_key_id": "k", "private_key": key, "client_email": "a@b.c",
            "token_uri": "https://oauth2.googleapis.com/token"});
        let def: ChannelDef = toml::from_str(&format!(
            "name = \"v\"\ntype = \"vertex\"\nlocation = \"global\"\ncredentials_json = '{sa}'"
        ))
        .unwrap();
        let s = Settings::from_def(&def, &mut |_, v| Some(v.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!((s.project.as_str(), s.location.as_str()), ("p1", "global"));
        assert_eq!(s.default_base_url(), "https://aiplatform.googleapis.com");
        assert_eq!(
            s.model_path("google", "gemini-2.5-flash", "generateContent"),
            "/v1/projects/p1/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        let again = Settings::from_def(&def, &mut |_, v| Some(v.to_string()))
            .unwrap()
            .unwrap();
        assert!(
            Arc::ptr_eq(&s.tokens, &again.tokens),
            "a reload keeps the token cache"
        );
        let unset = Settings::from_def(&def, &mut |_, _| None).unwrap();
        assert!(unset.is_none(), "an unset variable disables, not fails");
        let bad: ChannelDef =
            toml::from_str("name = \"v\"\ntype = \"vertex\"\ncredentials_json = '{}'").unwrap();
        assert!(Settings::from_def(&bad, &mut |_, v| Some(v.to_string())).is_err());
    }
}
