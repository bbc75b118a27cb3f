//! Phase 1 of a request: which endpoint it is for, and in which API
//! dialect errors must answer it.

use http::header::UPGRADE;
use http::Method;
use pingora_http::RequestHeader;

use crate::console::{self, Listener};
use crate::errors::Dialect;
use crate::providers::Endpoint;

/// The client endpoints (docs/api.md, "Endpoints").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Relay(Endpoint),
    /// A WebSocket upgrade on /v1/responses (Codex's first try): refused
    /// with 426, so that the client POSTs over HTTP at once.
    ResponsesWebSocket,
    /// GET /v1/models: OpenAI list, or Anthropic list with `anthropic-version`.
    Models,
    /// GET /v1beta/models: Gemini list.
    GeminiModels,
    Pricing,
    /// GET / and the console's assets (`crate::console`).
    Console,
    /// The user API: `/api/session`, `/api/keys` (any method).
    Account,
    /// GET /api/usage/daily: the signed-in user's usage per day (console).
    UserUsage,
    /// GET /api/usage and the OpenAI legacy billing endpoints.
    Usage(UsageView),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UsageView {
    Key,
    BillingSubscription,
    BillingUsage,
}

/// The route of a request head: [`classify`], except that a WebSocket
/// upgrade on `/v1/responses` has a route of its own.
pub(super) fn route_of(req: &RequestHeader) -> Route {
    let path = req.uri.path();
    if req.method == Method::GET && path == "/v1/responses" && asks_for_websocket(req) {
        return Route::ResponsesWebSocket;
    }
    classify(&req.method, path)
}

/// `Upgrade: websocket` (among the protocols the header lists).
fn asks_for_websocket(req: &RequestHeader) -> bool {
    req.headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
}

pub(super) fn classify(method: &Method, path: &str) -> Route {
    match (method, path) {
        _ if crate::keys::is_user_api(path) => Route::Account,
        (&Method::GET, "/v1/models") => Route::Models,
        (&Method::GET, "/v1beta/models") => Route::GeminiModels,
        (&Method::GET, "/api/pricing") => Route::Pricing,
        (&Method::GET, p) if console::serves(method, p, Listener::Client) => Route::Console,
        (&Method::GET, "/api/usage") => Route::Usage(UsageView::Key),
        (&Method::GET, "/api/usage/daily") => Route::UserUsage,
        (
            &Method::GET,
            "/v1/dashboard/billing/subscription" | "/dashboard/billing/subscription",
        ) => Route::Usage(UsageView::BillingSubscription),
        (&Method::GET, "/v1/dashboard/billing/usage" | "/dashboard/billing/usage") => {
            Route::Usage(UsageView::BillingUsage)
        }
        (&Method::POST, _) => {
            Endpoint::classify(path).map_or(Route::NotFound, |(e, _)| Route::Relay(e))
        }
        _ => Route::NotFound,
    }
}

/// The error dialect of a request: its endpoint's, else guessed from the
/// path (so an Anthropic or Gemini SDK hitting a wrong path still gets an
/// error it can parse).
pub(super) fn dialect_of(route: Route, req: &RequestHeader) -> Dialect {
    let path = req.uri.path();
    match route {
        Route::Relay(e) => e.dialect(),
        Route::GeminiModels => Dialect::Gemini,
        Route::Models if req.headers.contains_key("anthropic-version") => Dialect::Anthropic,
        _ if path.starts_with("/v1beta/") => Dialect::Gemini,
        _ if path.starts_with("/v1/messages") => Dialect::Anthropic,
        _ => Dialect::OpenAi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{GeminiMethod, OpenAiOp};

    #[test]
    fn classifies_endpoints() {
        assert_eq!(
            classify(&Method::POST, "/v1/chat/completions"),
            Route::Relay(Endpoint::OpenAi(OpenAiOp::Chat))
        );
        assert_eq!(
            classify(&Method::POST, "/v1/responses"),
            Route::Relay(Endpoint::OpenAi(OpenAiOp::Responses))
        );
        assert_eq!(
            classify(&Method::POST, "/v1/responses/compact"),
            Route::Relay(Endpoint::OpenAi(OpenAiOp::ResponsesCompact))
        );
        assert_eq!(
            classify(&Method::POST, "/v1/messages"),
            Route::Relay(Endpoint::AnthropicMessages)
        );
        assert_eq!(
            classify(&Method::POST, "/v1beta/models/gemini-2.5-flash:countTokens"),
            Route::Relay(Endpoint::Gemini(GeminiMethod::CountTokens))
        );
        assert_eq!(
            classify(&Method::GET, "/v1beta/models"),
            Route::GeminiModels
        );
        assert_eq!(
            classify(&Method::GET, "/v1/chat/completions"),
            Route::NotFound
        );
        assert_eq!(classify(&Method::GET, "/v1/models"), Route::Models);
        assert_eq!(classify(&Method::GET, "/api/pricing"), Route::Pricing);
        assert_eq!(classify(&Method::POST, "/admin/reload"), Route::NotFound);
        assert_eq!(classify(&Method::GET, "/api/usage/daily"), Route::UserUsage);
        assert_eq!(classify(&Method::POST, "/api/usage/daily"), Route::NotFound);
        assert_eq!(classify(&Method::GET, "/"), Route::Console);
        assert_eq!(classify(&Method::GET, "/console/client.js"), Route::Console);
        assert_eq!(classify(&Method::GET, "/console/admin.js"), Route::Console);
        assert_eq!(classify(&Method::GET, "/console/none.js"), Route::NotFound);
        assert_eq!(classify(&Method::POST, "/"), Route::NotFound);
        for (path, op) in [
            ("/v1/images/generations", OpenAiOp::ImageGenerations),
            ("/v1/images/edits", OpenAiOp::ImageEdits),
            ("/v1/audio/transcriptions", OpenAiOp::AudioTranscriptions),
            ("/v1/audio/translations", OpenAiOp::AudioTranslations),
            ("/v1/audio/speech", OpenAiOp::AudioSpeech),
            ("/v1/moderations", OpenAiOp::Moderations),
            ("/v1/rerank", OpenAiOp::Rerank),
        ] {
            assert_eq!(
                classify(&Method::POST, path),
                Route::Relay(Endpoint::OpenAi(op))
            );
        }
        assert_eq!(
            classify(&Method::GET, "/v1/images/generations"),
            Route::NotFound
        );
        assert_eq!(classify(&Method::PATCH, "/api/keys/k"), Route::Account);
        assert_eq!(classify(&Method::GET, "/api/session"), Route::Account);
        assert_eq!(classify(&Method::GET, "/api/keysx"), Route::NotFound);
    }

    #[test]
    fn only_a_websocket_upgrade_on_responses_has_its_own_route() {
        let head = |method: Method, path: &str, upgrade: Option<&str>| {
            let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
            if let Some(value) = upgrade {
                req.insert_header("upgrade", value).unwrap();
            }
            route_of(&req)
        };
        assert_eq!(
            head(Method::GET, "/v1/responses", Some("websocket")),
            Route::ResponsesWebSocket
        );
        assert_eq!(
            head(Method::GET, "/v1/responses", Some("h2c, WebSocket")),
            Route::ResponsesWebSocket
        );
        assert_eq!(head(Method::GET, "/v1/responses", None), Route::NotFound);
        assert_eq!(
            head(Method::GET, "/v1/responses", Some("h2c")),
            Route::NotFound
        );
        assert_eq!(
            head(Method::GET, "/v1/realtime", Some("websocket")),
            Route::NotFound
        );
        assert_eq!(
            head(Method::POST, "/v1/responses", Some("websocket")),
            Route::Relay(Endpoint::OpenAi(crate::providers::OpenAiOp::Responses))
        );
    }
}
