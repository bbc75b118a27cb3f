//! The gateway's own answers: JSON documents (model lists, pricing, usage)
//! and refusals in the client's dialect.

use bytes::Bytes;
use http::header::{CONNECTION, TRANSFER_ENCODING};
use pingora_http::ResponseHeader;

use std::time::Instant;

use super::client::ClientSession;
use super::record::record;
use super::stream::Disposition;
use crate::errors::{ApiError, Dialect};
use crate::metering::Served;
use crate::metrics::Metrics;

/// Answers with a gateway error, before any upstream answer was relayed.
pub(super) async fn write_error(
    session: &mut ClientSession,
    dialect: Dialect,
    error: &ApiError,
) -> Disposition {
    let mut head = ResponseHeader::build(error.status, Some(3)).expect("valid status");
    if let Some(seconds) = error.retry_after {
        let _ = head.insert_header("retry-after", seconds.to_string());
    }
    let _ = head.insert_header("content-type", "application/json");
    write_raw(session, head, Bytes::from(error.body(dialect))).await
}

pub(super) async fn write_json(
    session: &mut ClientSession,
    status: u16,
    value: &serde_json::Value,
) -> Disposition {
    let mut head = ResponseHeader::build(status, Some(2)).expect("valid status");
    let _ = head.insert_header("content-type", "application/json");
    write_raw(session, head, Bytes::from(value.to_string())).await
}

/// Answers with a response built elsewhere (the console's assets).
pub(super) async fn write_response(
    session: &mut ClientSession,
    response: http::Response<Vec<u8>>,
) -> Disposition {
    let (parts, body) = response.into_parts();
    let Ok(mut head) = ResponseHeader::build(parts.status, Some(parts.headers.len())) else {
        return Disposition::Close;
    };
    for (name, value) in &parts.headers {
        let _ = head.append_header(name.clone(), value.clone());
    }
    write_raw(session, head, Bytes::from(body)).await
}

pub(super) async fn write_raw(
    session: &mut ClientSession,
    mut head: ResponseHeader,
    body: Bytes,
) -> Disposition {
    head.remove_header(&TRANSFER_ENCODING);
    head.remove_header(&CONNECTION);
    let _ = head.insert_header("content-length", body.len());
    if session.write_response_header(Box::new(head)).await.is_err() {
        return Disposition::Close;
    }
    if !body.is_empty() && session.write_response_body(body).await.is_err() {
        return Disposition::Close;
    }
    match session.finish_body().await {
        Ok(()) => Disposition::Reuse,
        Err(_) => Disposition::Close,
    }
}

/// An answer of the user API: never cached (a new key's secret is in
/// one), with its session cookie if it sets one.
pub(super) async fn write_account_answer(
    session: &mut ClientSession,
    answer: &crate::keys::Answer,
) -> Disposition {
    let mut head = ResponseHeader::build(answer.status, Some(4)).expect("valid status");
    let _ = head.insert_header("cache-control", "no-store");
    if let Some(cookie) = &answer.set_cookie {
        let _ = head.insert_header("set-cookie", cookie.as_str());
    }
    if let Some(seconds) = answer.retry_after {
        let _ = head.insert_header("retry-after", seconds.to_string());
    }
    if answer.status == 204 {
        // No body and no length (RFC 9110 §8.6).
        if session.write_response_header(Box::new(head)).await.is_err() {
            return Disposition::Close;
        }
        return match session.finish_body().await {
            Ok(()) => Disposition::Reuse,
            Err(_) => Disposition::Close,
        };
    }
    let _ = head.insert_header("content-type", "application/json");
    write_raw(session, head, Bytes::from(answer.body.clone())).await
}

/// Refuses a request before any channel was tried: recorded, then answered
/// with `error` in the client's dialect.
pub(super) async fn refuse(
    session: &mut ClientSession,
    metrics: &Metrics,
    dialect: Dialect,
    error: &ApiError,
    started: Instant,
) -> Disposition {
    record(metrics, &Served::refused(error.status), started, 0);
    write_error(session, dialect, error).await
}
