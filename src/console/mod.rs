//! The web console (docs/operations.md, "Web console"): static pages,
//! scripts and one stylesheet, compiled into the binary and served on both
//! listeners before any key is read. The pages fetch the JSON APIs
//! (`/api/*` on the client listener, `/admin/*` on the admin listener);
//! nothing here reads the config or the store.
//!
//! Plain HTML, one hand-written ES module per view and no build step: no
//! framework to vendor or keep up to date, nothing loaded from outside (so
//! it works offline), and a Content-Security-Policy that allows only the
//! gateway's own scripts and styles.

use std::sync::OnceLock;

use http::{Method, Response};
use sha2::{Digest, Sha256};

/// Which listener asks: `GET /` is the user console on the client listener
/// and the operator's view on the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Client,
    Admin,
}

/// Where the assets are served from (the pages link them there).
const PREFIX: &str = "/console/";

/// No script, style, image or connection but the gateway's own; no inline
/// script or style; no framing; forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
base-uri 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: [Asset; 10] = [
    asset!("client.html", HTML),
    asset!("admin.html", HTML),
    asset!("console.css", CSS),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("lib.js", JS),
    asset!("chart.js", JS),
    asset!("client.js", JS),
    asset!("keys.js", JS),
    asset!("usage.js", JS),
    asset!("admin.js", JS),
];

/// The asset a GET path names on this listener, if any.
fn find(path: &str, listener: Listener) -> Option<usize> {
    let name = match (path, listener) {
        ("/", Listener::Client) => "client.html",
        ("/", Listener::Admin) => "admin.html",
        (p, _) => p.strip_prefix(PREFIX)?,
    };
    ASSETS.iter().position(|a| a.name == name)
}

/// Whether `GET path` is the console's (else it keeps its JSON 404).
pub fn serves(method: &Method, path: &str, listener: Listener) -> bool {
    method == Method::GET && find(path, listener).is_some()
}

/// A strong validator per asset: the start of its SHA-256, computed once.
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })[i]
}

/// The answer to `GET path` (None if [`serves`] says no), with the security headers;
/// 304 when `if_none_match` names the current version. Browsers revalidate
/// every time (`no-cache`), so a new binary's pages are seen at once.
pub fn response(
    path: &str,
    listener: Listener,
    if_none_match: Option<&str>,
) -> Option<Response<Vec<u8>>> {
    let i = find(path, listener)?;
    let asset = &ASSETS[i];
    let tag = etag(i);
    let fresh = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let (status, body) = if fresh {
        (304, Vec::new())
    } else {
        (200, asset.body.to_vec())
    };
    let mut builder = Response::builder()
        .status(status)
        .header("etag", tag)
        .header("cache-control", "no-cache")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    if !fresh {
        builder = builder.header("content-type", asset.content_type);
    }
    if asset.content_type == HTML {
        builder = builder
            .header("content-security-policy", CSP)
            .header("x-frame-options", "DENY");
    }
    builder.body(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_by_listener() {
        assert!(serves(&Method::GET, "/", Listener::Client));
        assert!(serves(&Method::GET, "/console/client.js", Listener::Admin));
        assert!(!serves(&Method::POST, "/", Listener::Client));
        assert!(!serves(&Method::GET, "/console/", Listener::Client));
        assert!(!serves(
            &Method::GET,
            "/console/../Cargo.toml",
            Listener::Client
        ));
        assert!(!serves(&Method::GET, "/console/nope.js", Listener::Client));
        assert!(!serves(&Method::GET, "/client.html", Listener::Client));
        let client = response("/", Listener::Client, None).unwrap();
        let admin = response("/", Listener::Admin, None).unwrap();
        assert!(String::from_utf8_lossy(client.body()).contains("/console/client.js"));
        assert!(String::from_utf8_lossy(admin.body()).contains("/console/admin.js"));
        assert_eq!(client.headers()["content-security-policy"], CSP);
        assert_eq!(client.headers()["content-type"], HTML);
    }

    #[test]
    fn scripts_have_their_type_and_revalidate_by_etag() {
        let js = response("/console/lib.js", Listener::Client, None).unwrap();
        assert_eq!(js.status(), 200);
        assert_eq!(js.headers()["content-type"], JS);
        assert_eq!(js.headers()["x-content-type-options"], "nosniff");
        assert_eq!(js.headers()["cache-control"], "no-cache");
        let tag = js.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(tag.len(), 18);
        let again = response(
            "/console/lib.js",
            Listener::Client,
            Some(&format!("\"x\", {tag}")),
        )
        .unwrap();
        assert_eq!(again.status(), 304);
        assert!(again.body().is_empty());
        let stale = response("/console/lib.js", Listener::Client, Some("\"0\"")).unwrap();
        assert_eq!(stale.status(), 200);
    }

    #[test]
    fn no_page_inlines_a_script_or_a_style() {
        for asset in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = String::from_utf8_lossy(asset.body);
            assert!(!text.contains("<script>"), "{}", asset.name);
            assert!(!text.contains("style="), "{}", asset.name);
            assert!(!text.contains("<style"), "{}", asset.name);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{}",
                asset.name
            );
        }
    }

    /// Every file a page links or a module imports is served: a renamed
    /// asset would otherwise be a blank page, found only in a browser.
    #[test]
    fn every_linked_or_imported_asset_exists() {
        let mut linked = 0;
        for asset in &ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            for quote in ['"', '\''] {
                for part in text.split(quote).skip(1).step_by(2) {
                    let name = match part.strip_prefix(PREFIX) {
                        Some(name) => name,
                        None if part.starts_with("./") && part.ends_with(".js") => &part[2..],
                        None => continue,
                    };
                    assert!(
                        ASSETS.iter().any(|a| a.name == name),
                        "{} links {part}",
                        asset.name
                    );
                    linked += 1;
                }
            }
        }
        assert!(linked >= 12, "{linked}");
    }
}
