//! OpenAI image generation (`/v1/images/generations`) and edits
//! (`/v1/images/edits`, Gemini image models only) served by Google's
//! image models, by translation (docs/api.md, "Images, audio, moderation
//! and rerank"):
//!
//! - Gemini image models (`gemini`, `vertex`; a model name holding
//!   `-image`, e.g. `gemini-2.5-flash-image`): `generateContent` with
//!   `responseModalities: ["TEXT", "IMAGE"]`; the size becomes
//!   `imageConfig.aspectRatio`. An edit's images go first, as `inlineData`
//!   parts (base64 of the uploads: the one copy the format forces), then
//!   the prompt. Billed from `usageMetadata` (`candidatesTokenCount`
//!   counts the image's tokens).
//! - Imagen (`imagen-*`, on `gemini` and `vertex`): `:predict` with
//!   `instances[{prompt}]` and `parameters{sampleCount, aspectRatio}`;
//!   Imagen reports no tokens: priced by `per_image`.
//!
//! Images come back inline (base64) only: `response_format = "url"` is
//! refused (the gateway stores no files to serve a URL from). The answer
//! must be re-shaped into OpenAI's `data[{b64_json}]`, so the upstream's
//! JSON is held whole until its end (about 4/3 of the image bytes), then
//! the client's answer is built (as much again) and the upstream's freed.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{BaseUrl, ClientRequest, Endpoint, GeminiMethod, Prepared, ResponseAdapter, Upstream};
use crate::body;
use crate::multipart;
use crate::translate::Untranslatable;
use crate::usage::{Units, Usage};
use base64::Engine;

/// How a Google model makes images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `generateContent` with image output.
    GeminiImage,
    /// `:predict`.
    Imagen,
}

/// The backend of an upstream model name; `None` for a model without
/// image output.
pub fn backend(model: &str) -> Option<Backend> {
    let name = model.rsplit('/').next().unwrap_or(model);
    if name.starts_with("imagen") {
        Some(Backend::Imagen)
    } else if name.starts_with("gemini") && name.contains("-image") {
        Some(Backend::GeminiImage)
    } else {
        None
    }
}

/// Aspect ratios each backend takes.
const GEMINI_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
const IMAGEN_RATIOS: &[&str] = &["1:1", "3:4", "4:3", "9:16", "16:9"];

/// The fields of an OpenAI images request that translation reads, from
/// a JSON body or an upload's parts.
#[derive(Deserialize, Default)]
pub struct ImageRequest<'a> {
    prompt: Option<String>,
    n: Option<u64>,
    size: Option<String>,
    response_format: Option<String>,
    #[serde(default)]
    stream: bool,
    /// An edit's images: (MIME type, bytes), borrowed from the body.
    #[serde(skip)]
    images: Vec<(&'a str, &'a [u8])>,
    #[serde(skip)]
    mask: bool,
}

impl<'a> ImageRequest<'a> {
    pub fn from_json(body: &'a [u8]) -> Result<Self, Untranslatable> {
        serde_json::from_slice(body)
            .map_err(|_| Untranslatable::new("body", "a field has the wrong type"))
    }

    /// An upload (`images/edits`): its fields, and its `image` /
    /// `image[]` files in place.
    pub fn from_multipart(body: &'a [u8], boundary: &str) -> Result<Self, Untranslatable> {
        let parts =
            multipart::parts(body, boundary).map_err(|why| Untranslatable::new("body", why))?;
        let text = |name| multipart::field(&parts, body, name).map(|v| v.trim().to_string());
        let n = match text("n") {
            Some(n) => Some(
                n.parse()
                    .map_err(|_| Untranslatable::new("n", "not a whole number"))?,
            ),
            None => None,
        };
        let images = parts
            .iter()
            .filter(|p| p.filename.is_some() && (p.name == "image" || p.name == "image[]"))
            .map(|p| (p.content_type.unwrap_or("image/png"), p.content(body)))
            .collect();
        Ok(ImageRequest {
            prompt: text("prompt"),
            n,
            size: text("size"),
            response_format: text("response_format"),
            stream: text("stream").is_some_and(|s| s == "true"),
            images,
            mask: parts.iter().any(|p| p.name == "mask"),
        })
    }
}

/// `WxH` as a reduced aspect ratio `w:h`; `None` for `auto` or no size.
fn aspect_ratio(size: Option<&str>, allowed: &[&str]) -> Result<Option<String>, Untranslatable> {
    let Some(size) = size.filter(|s| *s != "auto") else {
        return Ok(None);
    };
    let unsupported = || {
        Untranslatable::new(
            "size",
            format!(
                "size `{size}` is not an aspect ratio the model takes ({})",
                allowed.join(", ")
            ),
        )
    };
    let (w, h) = size.split_once('x').ok_or_else(unsupported)?;
    let (w, h): (u64, u64) = (
        w.parse().map_err(|_| unsupported())?,
        h.parse().map_err(|_| unsupported())?,
    );
    let (mut a, mut b) = (w, h);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    if a == 0 {
        return Err(unsupported());
    }
    let ratio = format!("{}:{}", w / a, h / a);
    allowed
        .contains(&ratio.as_str())
        .then_some(Some(ratio))
        .ok_or_else(unsupported)
}

/// The Gemini or Imagen request for an OpenAI images request.
pub fn request(backend: Backend, r: ImageRequest<'_>) -> Result<Value, Untranslatable> {
    if r.mask {
        return Err(Untranslatable::new(
            "mask",
            "this model edits without masks; describe the change in the prompt",
        ));
    }
    if r.response_format.as_deref() == Some("url") {
        return Err(Untranslatable::new(
            "response_format",
            "this model answers images inline only; ask for `b64_json` (the gateway keeps no \
             files to serve a URL from)",
        ));
    }
    if r.stream {
        return Err(Untranslatable::new(
            "stream",
            "partial images are not available from this model",
        ));
    }
    let prompt = r
        .prompt
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Untranslatable::new("prompt", "a prompt is required"))?;
    let n = r.n.unwrap_or(1);
    Ok(match backend {
        Backend::GeminiImage => {
            if n != 1 {
                return Err(Untranslatable::new(
                    "n",
                    "Gemini image models make one image per request",
                ));
            }
            let mut config = json!({"responseModalities": ["TEXT", "IMAGE"]});
            if let Some(ratio) = aspect_ratio(r.size.as_deref(), GEMINI_RATIOS)? {
                config["imageConfig"] = json!({ "aspectRatio": ratio });
            }
            let engine = &base64::engine::general_purpose::STANDARD;
            let mut parts: Vec<Value> = (r.images.iter())
                .map(|(mime, bytes)| {
                    json!({"inlineData": {"mimeType": mime, "data": engine.encode(bytes)}})
                })
                .collect();
            parts.push(json!({ "text": prompt }));
            json!({
                "contents": [{"role": "user", "parts": parts}],
                "generationConfig": config,
            })
        }
        Backend::Imagen if !r.images.is_empty() => {
            return Err(Untranslatable::new(
                "image",
                "Imagen edits are not available through this endpoint",
            ))
        }
        Backend::Imagen => {
            if !(1..=4).contains(&n) {
                return Err(Untranslatable::new("n", "Imagen makes 1 to 4 images"));
            }
            let mut parameters = json!({ "sampleCount": n });
            if let Some(ratio) = aspect_ratio(r.size.as_deref(), IMAGEN_RATIOS)? {
                parameters["aspectRatio"] = json!(ratio);
            }
            json!({"instances": [{"prompt": prompt}], "parameters": parameters})
        }
    })
}

/// Shapes an OpenAI image generation for a `gemini` or `vertex` channel:
/// the translated body goes through the channel's own `prepare` (its URL,
/// credentials), and its answer is re-shaped by [`ImageAnswer`].
pub async fn prepare(
    channel: &Upstream,
    url: &BaseUrl,
    req: ClientRequest<'_>,
) -> Result<pingora_error::Result<Prepared>, Untranslatable> {
    let model = channel.upstream_model(req.model);
    let backend = backend(model)
        .ok_or_else(|| Untranslatable::new("model", "the model has no image output"))?;
    let boundary = (req.header.headers.get(CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::boundary);
    let fields = match boundary {
        Some(boundary) => ImageRequest::from_multipart(req.body, boundary)?,
        None => ImageRequest::from_json(req.body)?,
    };
    let body = Bytes::from(request(backend, fields)?.to_string());
    // Our own Gemini/Imagen body has none of the top-level fields a probe
    // reads: no second pass over base64 images that may be megabytes.
    let probe = body::BodyProbe::default();
    let (method, path) = match backend {
        Backend::GeminiImage => (GeminiMethod::Generate, "/v1beta/models/m:generateContent"),
        Backend::Imagen => (GeminiMethod::Predict, "/v1beta/models/m:predict"),
    };
    let mut header = req.header.clone();
    header.set_uri(http::Uri::from_static(path));
    let _ = header.insert_header(CONTENT_TYPE, "application/json");
    let native = ClientRequest {
        endpoint: Endpoint::Gemini(method),
        header: &header,
        body: &body,
        probe: &probe,
        model: req.model,
        long_context: false,
    };
    Ok(super::prepare(channel, url, native).await.map(|mut p| {
        p.adapter = Box::new(ImageAnswer::new(p.adapter, backend));
        p
    }))
}

/// Re-shapes a Gemini or Imagen answer into OpenAI's images answer, at
/// its end; errors reach the client in the OpenAI dialect.
pub struct ImageAnswer {
    inner: Box<dyn ResponseAdapter>,
    backend: Backend,
    whole: BytesMut,
    status: u16,
    images: u64,
}

impl ImageAnswer {
    pub fn new(inner: Box<dyn ResponseAdapter>, backend: Backend) -> Self {
        ImageAnswer {
            inner,
            backend,
            whole: BytesMut::new(),
            status: 200,
            images: 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InlineData {
    #[serde(default)]
    data: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Part {
    text: Option<String>,
    inline_data: Option<InlineData>,
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize, Default)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize, Default)]
struct Candidate {
    #[serde(default)]
    content: Content,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GeminiAnswer {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    predictions: Vec<Prediction>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Prediction {
    bytes_base64_encoded: Option<String>,
}

/// The OpenAI answer: `data[{b64_json}]` (with Gemini's text as
/// `revised_prompt`), and gpt-image-1's usage shape where there are
/// tokens. Returns it and the number of images.
fn answer(backend: Backend, body: &[u8], usage: Option<Usage>, created: u64) -> (Value, u64) {
    let answer: GeminiAnswer = serde_json::from_slice(body).unwrap_or_default();
    let mut data = Vec::new();
    match backend {
        Backend::GeminiImage => {
            let parts = answer.candidates.into_iter().flat_map(|c| c.content.parts);
            let mut text = String::new();
            for part in parts.filter(|p| !p.thought) {
                if let Some(t) = part.text {
                    text.push_str(&t);
                }
                if let Some(image) = part.inline_data {
                    data.push(json!({ "b64_json": image.data }));
                }
            }
            if !text.is_empty() {
                for item in &mut data {
                    item["revised_prompt"] = json!(text);
                }
            }
        }
        Backend::Imagen => {
            data = (answer.predictions.into_iter())
                .filter_map(|p| p.bytes_base64_encoded)
                .map(|b| json!({ "b64_json": b }))
                .collect();
        }
    }
    let images = data.len() as u64;
    let mut out = json!({"created": created, "data": data});
    if let Some(u) = usage.filter(|u| *u != Usage::default()) {
        let input = u.input + u.cached_input;
        out["usage"] = json!({
            "input_tokens": input,
            "input_tokens_details": {"text_tokens": input, "image_tokens": 0},
            "output_tokens": u.output,
            "total_tokens": input + u.output,
        });
    }
    (out, images)
}

impl ResponseAdapter for ImageAnswer {
    fn response_head(&mut self, head: &mut ResponseHeader) {
        self.inner.response_head(head);
        self.status = head.status.as_u16();
        let _ = head.insert_header(CONTENT_TYPE, "application/json");
        head.remove_header(&CONTENT_LENGTH);
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        let passed = self.inner.on_chunk(chunk);
        self.whole.extend_from_slice(&passed);
        Bytes::new()
    }

    fn on_end(&mut self) -> Bytes {
        let rest = self.inner.on_end();
        self.whole.extend_from_slice(&rest);
        let whole = std::mem::take(&mut self.whole);
        if self.status >= 400 {
            return Bytes::from(super::translated::error_for_client(
                self.status,
                &whole,
                crate::translate::Format::Chat,
            ));
        }
        let created = crate::clock::now_ms() / 1000;
        let mut usage = self.inner.usage();
        if let Some(u) = &mut usage {
            // The client sees all output tokens; billing keeps image
            // tokens apart (`units`).
            u.output += self.inner.units().image_output;
        }
        let (out, images) = answer(self.backend, &whole, usage, created);
        drop(whole);
        self.images = images;
        Bytes::from(out.to_string())
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    /// Imagen reports no tokens: its images are priced by `per_image`.
    fn usage(&self) -> Option<Usage> {
        Some(self.inner.usage().unwrap_or_default())
    }

    fn units(&self) -> Units {
        Units {
            images: self.images,
            ..self.inner.units()
        }
    }

    fn estimated_output_tokens(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_by_model_name() {
        assert_eq!(
            backend("gemini-2.5-flash-image"),
            Some(Backend::GeminiImage)
        );
        assert_eq!(
            backend("gemini-3-pro-image-preview"),
            Some(Backend::GeminiImage)
        );
        assert_eq!(backend("imagen-4.0-generate-001"), Some(Backend::Imagen));
        assert_eq!(backend("gemini-2.5-flash"), None);
        assert_eq!(backend("gpt-image-1"), None);
    }

    #[test]
    fn requests_translate_sizes_and_counts() {
        let json = |body: &'static str| ImageRequest::from_json(body.as_bytes()).unwrap();
        let gemini = request(
            Backend::GeminiImage,
            json(r#"{"model":"m","prompt":"a cat","size":"1536x1024","quality":"high"}"#),
        )
        .unwrap();
        assert_eq!(
            gemini,
            json!({"contents": [{"role": "user", "parts": [{"text": "a cat"}]}],
                   "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                                        "imageConfig": {"aspectRatio": "3:2"}}})
        );
        let auto = request(
            Backend::GeminiImage,
            json(r#"{"prompt":"p","size":"auto"}"#),
        )
        .unwrap();
        assert!(auto["generationConfig"].get("imageConfig").is_none());
        let imagen = request(
            Backend::Imagen,
            json(r#"{"prompt":"p","n":3,"size":"1792x1008"}"#),
        )
        .unwrap();
        assert_eq!(
            imagen,
            json!({"instances": [{"prompt": "p"}],
                   "parameters": {"sampleCount": 3, "aspectRatio": "16:9"}})
        );
        for (backend, body, field, why) in [
            (
                Backend::GeminiImage,
                r#"{"prompt":"p","response_format":"url"}"#,
                "response_format",
                "b64_json",
            ),
            (
                Backend::GeminiImage,
                r#"{"prompt":"p","n":2}"#,
                "n",
                "one image",
            ),
            (
                Backend::GeminiImage,
                r#"{"prompt":"p","size":"1792x1024"}"#,
                "size",
                "size `1792x1024`",
            ),
            (
                Backend::Imagen,
                r#"{"prompt":"p","size":"1024x1536"}"#,
                "size",
                "1:1, 3:4",
            ),
            (Backend::Imagen, r#"{"prompt":"p","n":5}"#, "n", "1 to 4"),
            (Backend::Imagen, r#"{"n":1}"#, "prompt", "required"),
            (
                Backend::GeminiImage,
                r#"{"prompt":"p","stream":true}"#,
                "stream",
                "partial",
            ),
        ] {
            let e = request(backend, json(body)).unwrap_err();
            assert_eq!(e.field, field, "{body}");
            assert!(e.why.contains(why), "{body}: {}", e.why);
        }
    }

    #[test]
    fn edits_send_their_images_inline_before_the_prompt() {
        let b = "XB";
        let form = |extra: &str| {
            let mut out = format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"a.png\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .into_bytes();
            out.extend_from_slice(b"\x89PNG");
            out.extend_from_slice(
                format!(
                    "\r\n--{b}\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"b.jpg\"\r\n\
                     Content-Type: image/jpeg\r\n\r\nJPG\r\n\
                     --{b}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nadd a hat\r\n{extra}--{b}--\r\n"
                )
                .as_bytes(),
            );
            out
        };
        let body = form("");
        let r = ImageRequest::from_multipart(&body, b).unwrap();
        assert_eq!(
            request(Backend::GeminiImage, r).unwrap(),
            json!({"contents": [{"role": "user", "parts": [
                      {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}},
                      {"inlineData": {"mimeType": "image/jpeg", "data": "SlBH"}},
                      {"text": "add a hat"}]}],
                   "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}})
        );
        let masked = form(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"mask\"; filename=\"m.png\"\r\n\r\nM\r\n"
        ));
        let r = ImageRequest::from_multipart(&masked, b).unwrap();
        assert_eq!(request(Backend::GeminiImage, r).unwrap_err().field, "mask");
        let r = ImageRequest::from_multipart(&body, b).unwrap();
        assert_eq!(request(Backend::Imagen, r).unwrap_err().field, "image");
    }

    #[test]
    fn answers_are_reshaped_for_openai_clients() {
        let gemini = br#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"thinking","thought":true},{"text":"Here it is."},
            {"inlineData":{"mimeType":"image/png","data":"iVBORw0K"}}]}}],
            "usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1294}}"#;
        let usage = Usage {
            input: 9,
            output: 1294,
            ..Usage::default()
        };
        let (out, images) = answer(Backend::GeminiImage, gemini, Some(usage), 7);
        assert_eq!(images, 1);
        assert_eq!(
            out,
            json!({"created": 7, "data": [{"b64_json": "iVBORw0K", "revised_prompt": "Here it is."}],
                   "usage": {"input_tokens": 9, "input_tokens_details": {"text_tokens": 9, "image_tokens": 0},
                             "output_tokens": 1294, "total_tokens": 1303}})
        );
        let imagen = br#"{"predictions":[{"bytesBase64Encoded":"QQ==","mimeType":"image/png"},
            {"bytesBase64Encoded":"Qg==","mimeType":"image/png"}]}"#;
        let (out, images) = answer(Backend::Imagen, imagen, Some(Usage::default()), 7);
        assert_eq!(images, 2);
        assert_eq!(
            out,
            json!({"created": 7, "data": [{"b64_json": "QQ=="}, {"b64_json": "Qg=="}]})
        );
        // No image (a safety stop): no data, the tokens still billed.
        let (out, images) = answer(Backend::GeminiImage, br#"{"candidates":[]}"#, None, 7);
        assert_eq!((out["data"].as_array().unwrap().len(), images), (0, 0));
    }
}
