//! Errors the gateway itself answers, rendered in the caller's API dialect.

use serde_json::json;

/// Which provider API the client speaks; decides the error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// Stable machine-readable code, e.g. `model_not_found`.
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn body(&self, dialect: Dialect) -> Vec<u8> {
        let value = match dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.openai_type(),
                "param": null,
                "code": self.code,
            }}),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": {"type": self.anthropic_type(), "message": self.message},
            }),
            Dialect::Gemini => json!({"error": {
                "code": self.status,
                "message": self.message,
                "status": self.gemini_status(),
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

    fn openai_type(&self) -> &'static str {
        match (self.status, self.code) {
            (_, "insufficient_quota") => "insufficient_quota",
            (401, _) => "authentication_error",
            (403, _) => "permission_error",
            (429, _) => "rate_limit_error",
            (s, _) if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }

    fn gemini_status(&self) -> &'static str {
        match self.status {
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            s if s >= 500 => "INTERNAL",
            _ => "INVALID_ARGUMENT",
        }
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
        let e = ApiError::new(404, "model_not_found", "no such model");
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
        let cut = ApiError::new(502, "upstream_stream_broken", "cut");
        assert_eq!(
            String::from_utf8(cut.stream_event(Dialect::OpenAi)).unwrap(),
            r#"data: {"error":{"code":"upstream_stream_broken","message":"cut","param":null,"type":"server_error"}}"#.to_string() + "\n\n"
        );
        assert!(String::from_utf8(cut.stream_event(Dialect::Anthropic))
            .unwrap()
            .starts_with("event: error\ndata: {"));
        let quota = ApiError::new(429, "insufficient_quota", "budget");
        assert_eq!(
            parse(&quota, Dialect::OpenAi)["error"]["type"],
            "insufficient_quota"
        );
    }
}
