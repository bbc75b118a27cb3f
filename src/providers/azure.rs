//! Azure OpenAI (`type = "azure"`): OpenAI-format clients, key in `api-key`.
//! Two URL styles:
//! - "deployments" (default): `{base_url}/openai/deployments/{deployment}/{op}?api-version=...`,
//!   the deployment being the `model_map` target or the model name;
//! - "v1": `{base_url}/openai/v1/{op}`, the deployment named in the body's `model`.
//!
//! Usage is read exactly as for OpenAI (same adapter).

use pingora_error::Result;

use super::head::UpstreamHead;
use super::{bad_setting, ClientRequest, Prepared, SettingError};
use super::{BaseUrl, Upstream};
use crate::config::schema::ChannelDef;

/// The GA data-plane version used when a channel sets none.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Deployments,
    V1,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub style: Style,
    /// Always set for deployments; for v1 only when configured.
    pub api_version: Option<String>,
}

impl Settings {
    pub fn from_def(
        def: &ChannelDef,
        expand: &mut dyn FnMut(&str, &str) -> Option<String>,
    ) -> std::result::Result<Settings, SettingError> {
        let style = match def.azure_style.as_deref() {
            None | Some("deployments") => Style::Deployments,
            Some("v1") => Style::V1,
            Some(other) => {
                return Err(bad_setting(
                    "azure_style",
                    format!("azure_style = \"{other}\" must be \"deployments\" or \"v1\""),
                ))
            }
        };
        let configured = match &def.api_version {
            Some(v) => expand("api_version", v),
            None => None,
        };
        let api_version = match style {
            Style::Deployments => Some(configured.unwrap_or_else(|| DEFAULT_API_VERSION.into())),
            Style::V1 => configured,
        };
        if def.base_url.is_empty() {
            return Err(bad_setting(
                "type",
                "type \"azure\" needs base_url (https://NAME.openai.azure.com)",
            ));
        }
        Ok(Settings { style, api_version })
    }
}

/// The upstream path for an OpenAI client path, and whether it takes the
/// `api-version` query parameter.
fn upstream_path(style: Style, client_path: &str, deployment: &str) -> (String, bool) {
    let op = client_path.strip_prefix("/v1/").unwrap_or(client_path);
    match style {
        Style::V1 => (format!("/openai/v1/{op}"), true),
        // The Responses API is not per deployment (the deployment is the
        // body's `model`) and only exists in the v1 surface, unversioned.
        Style::Deployments if op == "responses" || op.starts_with("responses/") => {
            (format!("/openai/v1/{op}"), false)
        }
        Style::Deployments => (
            format!(
                "/openai/deployments/{}/{op}",
                super::encode_segment(deployment)
            ),
            true,
        ),
    }
}

pub fn prepare(
    channel: &Upstream,
    settings: &Settings,
    upstream: &BaseUrl,
    req: ClientRequest<'_>,
) -> Result<Prepared> {
    let (body, adapter) = super::openai::shape(channel, req);
    let deployment = channel.upstream_model(req.model);
    let (path, versioned) = upstream_path(settings.style, req.header.uri.path(), deployment);
    let query: Vec<(String, String)> = settings
        .api_version
        .iter()
        .filter(|_| versioned)
        .map(|v| ("api-version".to_string(), v.clone()))
        .collect();
    let target = super::target(upstream, &path, &query);
    let head = UpstreamHead::forwarding(
        "POST",
        &target,
        req.header,
        &[],
        upstream,
        ("api-key", &[channel.api_key.as_bytes()]),
        body.len(),
    )?;
    Ok(Prepared {
        head: head.finish(),
        body,
        adapter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_per_style() {
        assert_eq!(
            upstream_path(Style::Deployments, "/v1/chat/completions", "gpt4o-prod"),
            (
                "/openai/deployments/gpt4o-prod/chat/completions".into(),
                true
            )
        );
        assert_eq!(
            upstream_path(Style::Deployments, "/v1/embeddings", "emb"),
            ("/openai/deployments/emb/embeddings".into(), true)
        );
        assert_eq!(
            upstream_path(Style::Deployments, "/v1/responses", "x"),
            ("/openai/v1/responses".into(), false)
        );
        assert_eq!(
            upstream_path(Style::Deployments, "/v1/responses/compact", "x"),
            ("/openai/v1/responses/compact".into(), false)
        );
        assert_eq!(
            upstream_path(Style::V1, "/v1/chat/completions", "x"),
            ("/openai/v1/chat/completions".into(), true)
        );
    }
}
