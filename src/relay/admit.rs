//! Phase 2: whether a request may go upstream at all. Reads the body,
//! finds the model, checks it against the key and the routing tables, and
//! takes the key's budget reservation and rate-limit slots. Every refusal
//! here happens before any upstream work.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use pingora_http::RequestHeader;
use rust_decimal::Decimal;

use super::client::{self, ClientSession};
use super::deadline;
use crate::body::{self, BodyProbe};
use crate::config::{Key, Snapshot};
use crate::errors::{ApiError, ErrorKind};
use crate::media::{self, MediaAsk, MediaOp};
use crate::metering::{cost, Admission, Ask, Metering};
use crate::multipart;
use crate::providers::{Endpoint, GeminiMethod};
use crate::routing::{self, RouteError};
use crate::usage::Units;

/// A request let through, with everything the attempts need.
pub(super) struct Admitted {
    /// The whole body, re-sent as is by every attempt.
    pub body: Bytes,
    pub probe: BodyProbe,
    /// The model as priced and routed: an alias is resolved.
    pub model: String,
    /// The client asked for the model's 1M-token context (`[1m]`).
    pub long_context: bool,
    /// The priced fields of a media request (SPEC §13) and its per-image
    /// price; empty for other requests.
    pub media: MediaAsk,
    pub image_price: Decimal,
    /// Held until the request is billed; dropped on any other path, which
    /// gives its budget reservation and concurrency slot back.
    pub admission: Admission,
}

/// A refusal, and whether the connection must close after it (the body
/// may be left unread).
pub(super) struct Refused {
    pub error: ApiError,
    pub close: bool,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused {
            error,
            close: false,
        }
    }
}

pub(super) async fn admit(
    session: &mut ClientSession,
    snap: &Snapshot,
    key: &Key,
    endpoint: Endpoint,
    metering: &Metering,
) -> Result<Admitted, Refused> {
    let deadline = client::body_deadline(&snap.server);
    let read = deadline::within(
        Some(deadline),
        read_body(session, snap.server.max_body_bytes),
    );
    let body = read
        .await
        .unwrap_or_else(|| Err(body_timed_out()))
        .map_err(|error| Refused { error, close: true })?;
    let (probe, media) = probe_body(&body, endpoint, session.req_header())?;
    let Some(requested) = probe.model.as_deref() else {
        let e = ApiError::new(ErrorKind::MissingModel, "the request body has no `model`");
        return Err(e.into());
    };
    let (model, long_context) = snap.resolve_model(requested);
    let model = model.to_string();
    check_model(snap, key, &model, endpoint)?;
    // Only media requests have a media price to look up.
    let priced = endpoint
        .media()
        .and_then(|kind| Some((kind, snap.prices.get(&model)?)));
    let image_price = match priced {
        Some((kind, price)) => cost::media_price(&model, price, kind, &media)
            .map_err(|msg| ApiError::new(ErrorKind::UnsupportedField, msg))?,
        None => Decimal::ZERO,
    };
    // An upload's files are not prompt text: its reservation counts the
    // bytes of its text fields (docs/api.md, "Media prices").
    let prompt_bytes = if probe.multipart {
        media.text_bytes
    } else {
        body.len()
    };
    let ask = Ask {
        prompt_bytes,
        max_output: probe.max_output_tokens,
        // Media prices count in the reservation too, so that concurrent
        // image or speech requests cannot overdraw a budget.
        media: Units {
            images: media.images,
            audio_ms: media.upload_audio_ms,
            chars: media.chars,
            ..Units::default()
        },
        image_price,
    };
    let admission = metering.admit(snap, key, &model, &ask).await?;
    Ok(Admitted {
        body,
        probe,
        model,
        long_context,
        media,
        image_price,
        admission,
    })
}

/// The routing fields of the body, and for media endpoints its priced
/// fields: an upload endpoint's `multipart/form-data` body is read by its
/// parts (found in place, bounded: [`crate::multipart`]), every other
/// body as JSON.
fn probe_body(
    body: &[u8],
    endpoint: Endpoint,
    head: &RequestHeader,
) -> Result<(BodyProbe, MediaAsk), ApiError> {
    let media = match endpoint {
        Endpoint::OpenAi(op) => op.media().map(|kind| (kind, op.takes_multipart())),
        _ => None,
    };
    if let Some((kind, true)) = media {
        // Only upload endpoints look at the content type: parsing it costs
        // ~180 instructions, 0.6% of a chat request.
        let boundary = head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(multipart::boundary);
        if let Some(boundary) = boundary {
            return media::probe_multipart(kind, body, boundary)
                .map_err(|msg| ApiError::new(ErrorKind::InvalidBody, msg));
        }
    }
    let probe = body::probe(body)
        .map(|p| with_path_model(p, endpoint, head.uri.path()))
        .map_err(|msg| ApiError::new(ErrorKind::InvalidJson, msg))?;
    let ask = match media {
        Some((kind, _)) => {
            media::ask_json(kind, body).map_err(|msg| ApiError::new(ErrorKind::InvalidJson, msg))?
        }
        None => MediaAsk::default(),
    };
    Ok((probe, ask))
}

/// The key may use the model, and some channel of its groups serves it in
/// the request's format.
fn check_model(
    snap: &Snapshot,
    key: &Key,
    model: &str,
    endpoint: Endpoint,
) -> Result<(), ApiError> {
    if !key.allows_model(model) {
        return Err(ApiError::new(
            ErrorKind::ModelNotAllowed,
            format!("this API key may not use model `{model}`"),
        ));
    }
    match routing::check_model(snap, &key.groups, model) {
        Err(RouteError::ModelNotFound) => {
            return Err(ApiError::new(
                ErrorKind::ModelNotFound,
                format!("model `{model}` does not exist"),
            ))
        }
        Err(RouteError::ModelNotInGroup) => {
            return Err(ApiError::new(
                ErrorKind::ModelNotInGroup,
                format!(
                    "model `{model}` is not available in this key's groups ({})",
                    key.group_names.join(", ")
                ),
            ))
        }
        Ok(()) => {}
    }
    if !routing::format_served(snap, &key.groups, model, endpoint) {
        // The common mistake on the images endpoints: a text model.
        let hint = match endpoint.media() {
            Some(MediaOp::Image) => " (is it a model with image output?)",
            _ => "",
        };
        return Err(ApiError::new(
            ErrorKind::UnsupportedFormat,
            format!(
                "no channel of this key's groups serves model `{model}` in this API format, \
                 natively or by translation{hint}"
            ),
        ));
    }
    Ok(())
}

/// For Gemini endpoints the model and streaming come from the path, not
/// the body.
fn with_path_model(mut probe: BodyProbe, endpoint: Endpoint, path: &str) -> BodyProbe {
    if let (Endpoint::Gemini(method), Some((_, Some(model)))) = (endpoint, Endpoint::classify(path))
    {
        probe.model = Some(model.to_string());
        probe.model_span = None;
        probe.stream = method == GeminiMethod::StreamGenerate;
    }
    probe
}

fn body_timed_out() -> ApiError {
    ApiError::new(
        ErrorKind::RequestTimeout,
        "the request body did not arrive in time",
    )
}

/// Reads the whole request body, refusing more than `max` bytes early.
pub(super) async fn read_body(session: &mut ClientSession, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::RequestTooLarge,
            format!("request body is larger than the {max} bytes allowed"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(ApiError::new(
                    ErrorKind::InvalidBody,
                    format!("could not read the request body: {:?}", e.etype()),
                ))
            }
        }
    }
}
