//! Phase 1 of a request: which endpoint it is for, and in which API
//! dialect errors must answer it.

use http::Method;
use pingora_http::RequestHeader;

use crate::errors::Dialect;
use crate::providers::Endpoint;

/// The client endpoints (docs/api.md, "Endpoints").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Relay(Endpoint),
    /// GET /v1/models: OpenAI list, or Anthropic list with `anthropic-version`.
    Models,
    /// GET /v1beta/models: Gemini list.
    GeminiModels,
    Pricing,
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

pub(super) fn classify(method: &Method, path: &str) -> Route {
    match (method, path) {
        (&Method::GET, "/v1/models") => Route::Models,
        (&Method::GET, "/v1beta/models") => Route::GeminiModels,
        (&Method::GET, "/api/pricing") => Route::Pricing,
        (&Method::GET, "/api/usage") => Route::Usage(UsageView::Key),
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
    }
}
