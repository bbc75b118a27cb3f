//! Errors the gateway itself answers, rendered in the caller's API dialect.

use serde_json::json;

/// Which provider API the client speaks; decides the error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

/// Every kind of answer the gateway refuses a request with. The status,
/// the stable machine-readable code and the error type of each client
/// dialect are read from one table, [`ErrorKind::shape`] (docs/api.md lists
/// them for clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A request head the gateway cannot read.
    InvalidRequest,
    HeaderTooLarge,
    UriTooLong,
    /// A request transfer coding other than `chunked`.
    UnsupportedTransferEncoding,
    /// The gateway is stopping; retry elsewhere or a moment later.
    ShuttingDown,
    /// Cluster mode with `on_redis_error = "refuse"`: the shared state is
    /// out of reach.
    ClusterUnavailable,
    UnknownEndpoint,
    /// A WebSocket upgrade on `/v1/responses`: the client is to POST over
    /// HTTP instead.
    WebSocketUnsupported,
    MissingApiKey,
    /// Different keys in different places of one request.
    ConflictingApiKeys,
    InvalidApiKey,
    ExpiredApiKey,
    IpNotAllowed,
    RequestTimeout,
    RequestTooLarge,
    /// A body that could not be read to its end.
    InvalidBody,
    InvalidJson,
    MissingModel,
    ModelNotAllowed,
    ModelNotFound,
    ModelNotInGroup,
    UnsupportedFormat,
    /// A request field the channel's format cannot express.
    UnsupportedField,
    /// A budget is used up.
    InsufficientQuota,
    /// A rate, concurrency or in-flight budget limit; retry later.
    RateLimited,
    UpstreamAuth,
    UpstreamUnreachable,
    NoAvailableChannel,
    /// An event stream that broke off after its head was sent.
    UpstreamStreamBroken,
    /// An upstream's error whose body had to be rewritten; it keeps the
    /// upstream's status (the table's is only a default).
    Upstream,
    /// The user API without a user token or a live session.
    SignInRequired,
    InvalidUserToken,
    /// A cookie-authenticated request that changes state, not sent as JSON.
    JsonRequired,
    /// A browser request to the open admin listener from another site, or
    /// by a host name that is not loopback's (DNS rebinding).
    CrossSite,
    /// A key's group that its user may not pick.
    GroupNotAllowed,
    /// A field of a key (or sign-in) request out of its range or shape.
    InvalidField,
    /// A key name in use (by a TOML key, another user's key, or a revoked one).
    KeyNameTaken,
    KeyNotFound,
    /// A change to a key of the TOML file, which only the file changes.
    KeyNotManaged,
    /// The user holds `max_keys_per_user` keys already.
    TooManyKeys,
    /// The store cannot be written (a full disk): nothing was changed.
    StoreUnavailable,
}

/// How one kind of error reads: its HTTP status and code, and its error
/// type in the OpenAI, Anthropic and Gemini dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub status: u16,
    pub code: &'static str,
    pub openai_type: &'static str,
    pub anthropic_type: &'static str,
    pub gemini_status: &'static str,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 41] = [
        ErrorKind::InvalidRequest,
        ErrorKind::ClusterUnavailable,
        ErrorKind::HeaderTooLarge,
        ErrorKind::UriTooLong,
        ErrorKind::UnsupportedTransferEncoding,
        ErrorKind::ShuttingDown,
        ErrorKind::UnknownEndpoint,
        ErrorKind::WebSocketUnsupported,
        ErrorKind::MissingApiKey,
        ErrorKind::ConflictingApiKeys,
        ErrorKind::InvalidApiKey,
        ErrorKind::ExpiredApiKey,
        ErrorKind::IpNotAllowed,
        ErrorKind::RequestTimeout,
        ErrorKind::RequestTooLarge,
        ErrorKind::InvalidBody,
        ErrorKind::InvalidJson,
        ErrorKind::MissingModel,
        ErrorKind::ModelNotAllowed,
        ErrorKind::ModelNotFound,
        ErrorKind::ModelNotInGroup,
        ErrorKind::UnsupportedFormat,
        ErrorKind::UnsupportedField,
        ErrorKind::InsufficientQuota,
        ErrorKind::RateLimited,
        ErrorKind::UpstreamAuth,
        ErrorKind::UpstreamUnreachable,
        ErrorKind::NoAvailableChannel,
        ErrorKind::UpstreamStreamBroken,
        ErrorKind::Upstream,
        ErrorKind::SignInRequired,
        ErrorKind::InvalidUserToken,
        ErrorKind::JsonRequired,
        ErrorKind::CrossSite,
        ErrorKind::GroupNotAllowed,
        ErrorKind::InvalidField,
        ErrorKind::KeyNameTaken,
        ErrorKind::KeyNotFound,
        ErrorKind::KeyNotManaged,
        ErrorKind::TooManyKeys,
        ErrorKind::StoreUnavailable,
    ];

    /// The table.
    pub const fn shape(self) -> Shape {
        use ErrorKind as K;
        const fn row(status: u16, code: &'static str, types: [&'static str; 3]) -> Shape {
            Shape {
                status,
                code,
                openai_type: types[0],
                anthropic_type: types[1],
                gemini_status: types[2],
            }
        }
        const BAD: [&str; 3] = [
            "invalid_request_error",
            "invalid_request_error",
            "INVALID_ARGUMENT",
        ];
        const AUTH: [&str; 3] = [
            "authentication_error",
            "authentication_error",
            "UNAUTHENTICATED",
        ];
        const DENIED: [&str; 3] = ["permission_error", "permission_error", "PERMISSION_DENIED"];
        const LIMIT: [&str; 3] = ["rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"];
        const UPSTREAM: [&str; 3] = ["server_error", "api_error", "INTERNAL"];
        match self {
            K::InvalidRequest => row(400, "invalid_request", BAD),
            K::HeaderTooLarge => row(431, "request_header_too_large", BAD),
            K::UriTooLong => row(414, "uri_too_long", BAD),
            K::UnsupportedTransferEncoding => row(501, "unsupported_transfer_encoding", UPSTREAM),
            K::ShuttingDown => row(
                503,
                "shutting_down",
                ["server_error", "overloaded_error", "UNAVAILABLE"],
            ),
            K::ClusterUnavailable => row(
                503,
                "cluster_unavailable",
                ["server_error", "overloaded_error", "UNAVAILABLE"],
            ),
            K::UnknownEndpoint => row(
                404,
                "unknown_endpoint",
                [BAD[0], "not_found_error", "NOT_FOUND"],
            ),
            K::WebSocketUnsupported => row(426, "websocket_unsupported", BAD),
            K::MissingApiKey => row(401, "missing_api_key", AUTH),
            K::ConflictingApiKeys => row(400, "conflicting_api_keys", BAD),
            K::InvalidApiKey => row(401, "invalid_api_key", AUTH),
            K::ExpiredApiKey => row(401, "expired_api_key", AUTH),
            K::IpNotAllowed => row(403, "ip_not_allowed", DENIED),
            K::RequestTimeout => row(408, "request_timeout", BAD),
            K::RequestTooLarge => row(
                413,
                "request_too_large",
                [BAD[0], "request_too_large", BAD[2]],
            ),
            K::InvalidBody => row(400, "invalid_body", BAD),
            K::InvalidJson => row(400, "invalid_json", BAD),
            K::MissingModel => row(400, "missing_model", BAD),
            K::ModelNotAllowed => row(403, "model_not_allowed", DENIED),
            K::ModelNotFound => row(
                404,
                "model_not_found",
                [BAD[0], "not_found_error", "NOT_FOUND"],
            ),
            K::ModelNotInGroup => row(403, "model_not_in_group", DENIED),
            K::UnsupportedFormat => row(400, "unsupported_format", BAD),
            K::UnsupportedField => row(400, "unsupported_field", BAD),
            K::InsufficientQuota => row(
                429,
                "insufficient_quota",
                ["insufficient_quota", LIMIT[1], LIMIT[2]],
            ),
            K::RateLimited => row(429, "rate_limit_exceeded", LIMIT),
            K::UpstreamAuth => row(502, "upstream_auth_error", UPSTREAM),
            K::UpstreamUnreachable => row(502, "upstream_unreachable", UPSTREAM),
            K::NoAvailableChannel => row(
                503,
                "no_available_channel",
                ["server_error", "overloaded_error", "UNAVAILABLE"],
            ),
            K::UpstreamStreamBroken => row(502, "upstream_stream_broken", UPSTREAM),
            K::Upstream => row(502, "upstream_error", UPSTREAM),
            K::SignInRequired => row(401, "sign_in_required", AUTH),
            K::InvalidUserToken => row(401, "invalid_user_token", AUTH),
            K::JsonRequired => row(403, "json_content_type_required", DENIED),
            K::CrossSite => row(403, "cross_site_request", DENIED),
            K::GroupNotAllowed => row(403, "group_not_allowed", DENIED),
            K::InvalidField => row(400, "invalid_field", BAD),
            K::KeyNameTaken => row(409, "key_name_taken", BAD),
            K::KeyNotFound => row(
                404,
                "key_not_found",
                [BAD[0], "not_found_error", "NOT_FOUND"],
            ),
            K::KeyNotManaged => row(409, "key_not_managed", BAD),
            K::TooManyKeys => row(403, "too_many_keys", DENIED),
            K::StoreUnavailable => row(
                503,
                "store_unavailable",
                ["server_error", "overloaded_error", "UNAVAILABLE"],
            ),
        }
    }
}

/// An error the gateway answers itself, in the caller's dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// The kind's status; an upstream's own for [`ErrorKind::Upstream`].
    pub status: u16,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            status: kind.shape().status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An upstream's error with its own status, rewritten for the client.
    pub fn upstream(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            ..ApiError::new(ErrorKind::Upstream, message)
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn code(&self) -> &'static str {
        self.kind.shape().code
    }

    pub fn body(&self, dialect: Dialect) -> Vec<u8> {
        let value = match dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.shape().openai_type,
                "param": null,
                "code": self.code(),
            }}),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": {"type": self.shape().anthropic_type, "message": self.message},
            }),
            Dialect::Gemini => json!({"error": {
                "code": self.status,
                "message": self.message,
                "status": self.shape().gemini_status,
            }}),
        };
        serde_json::to_vec(&value).expect("json values serialize")
    }

    /// The error as the last event of an SSE stream that broke off after
    /// its head was sent: each SDK raises it instead of waiting or seeing a
    /// silently short answer.
    pub fn stream_event(&self, dialect: Dialect) -> Vec<u8> {
        let body = String::from_utf8(self.body(dialect)).expect("json is utf-8");
        match dialect {
            Dialect::Anthropic => format!("event: error\ndata: {body}\n\n"),
            Dialect::OpenAi | Dialect::Gemini => format!("data: {body}\n\n"),
        }
        .into_bytes()
    }

    /// The kind's row of the table; for an upstream's error, the row its
    /// status reads as.
    fn shape(&self) -> Shape {
        match self.kind {
            ErrorKind::Upstream => by_status(self.status),
            kind => kind.shape(),
        }
    }
}

/// The dialects' error types for an upstream's status, which can be any.
fn by_status(status: u16) -> Shape {
    Shape {
        status,
        code: ErrorKind::Upstream.shape().code,
        openai_type: match status {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        },
        anthropic_type: match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        },
        gemini_status: match status {
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            s if s >= 500 => "INTERNAL",
            _ => "INVALID_ARGUMENT",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(e: &ApiError, d: Dialect) -> Value {
        serde_json::from_slice(&e.body(d)).unwrap()
    }

    #[test]
    fn each_dialect_has_its_shape() {
        let e = ApiError::new(ErrorKind::ModelNotFound, "no such model");
        assert_eq!(
            parse(&e, Dialect::OpenAi),
            json!({"error": {"message": "no such model", "type": "invalid_request_error",
                   "param": null, "code": "model_not_found"}})
        );
        assert_eq!(
            parse(&e, Dialect::Anthropic),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "no such model"}})
        );
        assert_eq!(
            parse(&e, Dialect::Gemini),
            json!({"error": {"code": 404, "message": "no such model", "status": "NOT_FOUND"}})
        );
        let cut = ApiError::new(ErrorKind::UpstreamStreamBroken, "cut");
        assert_eq!(
            String::from_utf8(cut.stream_event(Dialect::OpenAi)).unwrap(),
            r#"data: {"error":{"code":"upstream_stream_broken","message":"cut","param":null,"type":"server_error"}}"#.to_string() + "\n\n"
        );
        assert!(String::from_utf8(cut.stream_event(Dialect::Anthropic))
            .unwrap()
            .starts_with("event: error\ndata: {"));
        let quota = ApiError::new(ErrorKind::InsufficientQuota, "budget");
        assert_eq!(
            parse(&quota, Dialect::OpenAi)["error"]["type"],
            "insufficient_quota"
        );
    }

    #[test]
    fn the_table_reads_as_the_status_would_except_where_it_says_more() {
        for kind in ErrorKind::ALL {
            let row = kind.shape();
            let mut expected = by_status(row.status);
            if kind == ErrorKind::InsufficientQuota {
                // OpenAI SDKs tell a used-up budget from a rate limit by it.
                expected.openai_type = "insufficient_quota";
            }
            assert_eq!(
                (row.openai_type, row.anthropic_type, row.gemini_status),
                (
                    expected.openai_type,
                    expected.anthropic_type,
                    expected.gemini_status
                ),
                "{kind:?}"
            );
        }
        let codes: std::collections::BTreeSet<_> =
            ErrorKind::ALL.iter().map(|k| k.shape().code).collect();
        assert_eq!(codes.len(), ErrorKind::ALL.len(), "codes are unique");
        let upstream = ApiError::upstream(529, "busy");
        assert_eq!(
            parse(&upstream, Dialect::Anthropic),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        );
    }
}
