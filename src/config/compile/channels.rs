//! `[[channels]]`: each channel's models, its provider with the settings of
//! its type, where it is and with which key, and its health.

use foldhash::{HashSet, HashSetExt};
use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::groups::index_of;
use crate::config::{
    expand_vars, Channel, ChannelDef, ChannelType, ConfigError, Group, Price, Source,
};
use crate::health::HealthRegistry;
use crate::providers::{parse_base_url, Provider, Upstream};

/// An error about one field of a channel: the field, and the message.
type FieldError = (&'static str, String);

pub(super) fn compile(
    defs: &[Arc<ChannelDef>],
    groups: &[Group],
    prices: &BTreeMap<String, crate::config::Price>,
    src: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    health: &HealthRegistry,
    warnings: &mut Vec<String>,
) -> Result<Vec<Channel>, ConfigError> {
    let mut channels: Vec<Channel> = Vec::with_capacity(defs.len());
    // A set, not a scan of the channels so far: thousands of channels.
    let mut names = HashSet::with_capacity(defs.len());
    for (i, c) in defs.iter().enumerate() {
        let item = format!("[[channels]] \"{}\"", c.name);
        let error = |(field, message): FieldError| {
            src.error(
                src.line_of_field("channels", Some(i), field),
                format!("{item}: {message}"),
            )
        };
        if c.name.is_empty() {
            // The line is found on error only: finding it scans the whole text.
            return Err(src.error(
                src.line_of("channels", Some(i)),
                "[[channels]]: name must not be empty",
            ));
        }
        if !names.insert(c.name.as_str()) {
            return Err(error(("name", "duplicate channel name".into())));
        }
        if let Some(g) = c.groups.iter().find(|g| index_of(groups, g).is_none()) {
            return Err(error(("groups", format!("unknown group \"{g}\""))));
        }
        if c.weight == 0 {
            return Err(error(("weight", "weight must be > 0".into())));
        }
        if c.responses.is_some() && !matches!(c.kind, ChannelType::Openai | ChannelType::Azure) {
            let why = format!("`responses` does not apply to type \"{}\"", c.kind.as_str());
            return Err(error(("responses", why)));
        }
        if c.rerank && c.kind != ChannelType::Openai {
            let why = format!("`rerank` does not apply to type \"{}\"", c.kind.as_str());
            return Err(error(("rerank", why)));
        }
        let models = served_models(c, prices).map_err(error)?;
        let upstream = upstream(c, &item, env, warnings).map_err(error)?;
        channels.push(Channel {
            name: Arc::from(c.name.as_str()),
            kind: c.kind,
            upstream,
            models,
            priority: c.priority,
            weight: c.weight,
            translate: c.translate,
            responses: c.responses.unwrap_or(true),
            rerank: c.rerank,
            health: health.get(&health_key(c)),
            delay_ms: c.delay_ms,
        });
    }
    Ok(channels)
}

/// The client-facing model names a channel serves: `models` (every priced
/// model when left out) and the names `model_map` maps. Each needs a price.
fn served_models(
    c: &ChannelDef,
    prices: &BTreeMap<String, Price>,
) -> Result<Vec<String>, FieldError> {
    let mut models: Vec<String> = match &c.models {
        Some(list) => list.clone(),
        None => prices.keys().cloned().collect(),
    };
    // A repeated name would enter the channel twice in its tier and
    // double its weight there.
    if let Some(m) = models
        .iter()
        .enumerate()
        .find_map(|(n, m)| models[..n].contains(m).then_some(m))
    {
        return Err(("models", format!("model \"{m}\" is listed twice")));
    }
    for client_name in c.model_map.keys() {
        if !models.contains(client_name) {
            models.push(client_name.clone());
        }
    }
    if let Some(m) = models.iter().find(|m| !prices.contains_key(*m)) {
        let from = if c.model_map.contains_key(m) {
            "model_map"
        } else {
            "models"
        };
        return Err((
            from,
            format!("serves model \"{m}\" which has no price in [[models]]"),
        ));
    }
    Ok(models)
}

/// How to reach the channel, or `None` when it is disabled: by `enabled =
/// false`, or by a `${VAR}` that is unset (warned about, not an error, so
/// that a config starts on a machine without every provider's key).
fn upstream(
    c: &ChannelDef,
    item: &str,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<Upstream>, FieldError> {
    let mut enabled = c.enabled;
    let mut expanded = |field: &str, value: &str| match expand_vars(value, env) {
        Ok(v) => Some(v),
        Err(var) => {
            if enabled {
                warnings.push(format!(
                    "{item}: ${{{var}}} in {field} is not set; channel disabled"
                ));
            }
            enabled = false;
            None
        }
    };
    let api_key = expanded("api_key", &c.api_key).unwrap_or_default();
    // With a variable unset, the type-specific settings are left unchecked.
    let provider = Provider::from_def(c, &mut expanded).map_err(|e| (e.field, e.message))?;
    let base_url = expanded("base_url", &c.base_url).unwrap_or_default();
    let Some(provider) = provider.filter(|_| enabled) else {
        return Ok(None);
    };
    let base_url = match provider {
        Provider::Mock => None,
        _ => {
            let url = match c.base_url.is_empty() {
                true => provider.default_base_url().unwrap_or_default(),
                false => base_url,
            };
            let parsed = parse_base_url(&url, c.insecure_skip_verify)
                .map_err(|why| ("base_url", format!("base_url \"{url}\" {why}")))?;
            Some(parsed)
        }
    };
    Ok(Some(Upstream {
        provider,
        base_url,
        api_key,
        model_map: c.model_map.clone(),
    }))
}

/// Health is kept per channel name and endpoint: a reload that changes
/// where or with which credentials a channel connects starts it afresh (a
/// fixed key or URL takes effect at once instead of after its cooldown),
/// while routing-only edits (groups, models, priority, ...) keep it.
fn health_key(c: &ChannelDef) -> String {
    // Every field is named, so that a new one has to be sorted in here.
    let ChannelDef {
        name,
        kind,
        base_url,
        api_key,
        insecure_skip_verify,
        api_version,
        azure_style,
        region,
        aws_access_key_id,
        aws_secret_access_key,
        aws_session_token,
        project,
        location,
        credentials_file,
        credentials_json,
        token_uri,
        groups: _,
        models: _,
        model_map: _,
        priority: _,
        weight: _,
        enabled: _,
        translate: _,
        responses: _,
        rerank: _,
        delay_ms: _,
    } = c;
    // Hashed: the key text must not hold the channel's credentials. Each
    // field is length-prefixed, so different endpoints never hash the
    // same bytes.
    let mut endpoint = Sha256::new();
    let mut field = |value: Option<&str>| match value {
        Some(v) => {
            endpoint.update((v.len() as u64 + 1).to_le_bytes());
            endpoint.update(v);
        }
        None => endpoint.update(0u64.to_le_bytes()),
    };
    field(Some(kind.as_str()));
    field(Some(base_url));
    field(Some(api_key));
    field(insecure_skip_verify.then_some("insecure"));
    for optional in [
        api_version,
        azure_style,
        region,
        aws_access_key_id,
        aws_secret_access_key,
        aws_session_token,
        project,
        location,
        credentials_file,
        credentials_json,
        token_uri,
    ] {
        field(optional.as_deref());
    }
    format!("{name}#{}", hex::encode(endpoint.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> ChannelDef {
        toml::from_str(text).unwrap()
    }

    fn prices(names: &[&str]) -> BTreeMap<String, Price> {
        let price = Price {
            input: 1.into(),
            output: 1.into(),
            cached_input: 1.into(),
            cache_write: 1.into(),
            per_request: 0.into(),
            ..Price::default()
        };
        names
            .iter()
            .map(|n| (n.to_string(), price.clone()))
            .collect()
    }

    #[test]
    fn a_channel_serves_its_models_and_the_names_it_maps() {
        let c = def("name = \"c\"\ntype = \"mock\"\nmodels = [\"a\"]\nmodel_map = { b = \"x\" }");
        assert_eq!(served_models(&c, &prices(&["a", "b"])).unwrap(), ["a", "b"]);
        assert_eq!(
            served_models(&c, &prices(&["a"])).unwrap_err().0,
            "model_map",
            "a mapped name needs a price too"
        );
        let all = def("name = \"c\"\ntype = \"mock\"");
        assert_eq!(
            served_models(&all, &prices(&["a", "b"])).unwrap(),
            ["a", "b"]
        );
        let twice = def("name = \"c\"\ntype = \"mock\"\nmodels = [\"a\", \"a\"]");
        assert!(served_models(&twice, &prices(&["a"]))
            .unwrap_err()
            .1
            .contains("twice"));
    }

    #[test]
    fn an_unset_variable_disables_the_channel_with_a_warning() {
        let env = |name: &str| (name == "KEY").then(|| "k".to_string());
        let mut warnings = Vec::new();
        let c = def("name = \"c\"\ntype = \"openai\"\napi_key = \"${UNSET}\"");
        assert!(upstream(&c, "item", &env, &mut warnings).unwrap().is_none());
        assert_eq!(
            warnings,
            ["item: ${UNSET} in api_key is not set; channel disabled"]
        );
        let c = def("name = \"c\"\ntype = \"openai\"\napi_key = \"${KEY}\"");
        let up = upstream(&c, "item", &env, &mut warnings).unwrap().unwrap();
        assert_eq!(up.api_key, "k");
        assert_eq!(
            up.base_url.unwrap().host,
            "api.openai.com",
            "the default base_url"
        );
        let off = def("name = \"c\"\ntype = \"mock\"\nenabled = false");
        assert!(upstream(&off, "item", &env, &mut warnings)
            .unwrap()
            .is_none());
        let bad = def("name = \"c\"\ntype = \"openai\"\nbase_url = \"ftp://x\"");
        assert_eq!(
            match upstream(&bad, "item", &env, &mut warnings) {
                Err((field, _)) => field,
                Ok(_) => "no error",
            },
            "base_url"
        );
    }

    #[test]
    fn health_follows_the_endpoint_not_the_routing() {
        let def = |extra: &str| -> ChannelDef {
            toml::from_str(&format!(
                "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://a\"\napi_key = \"k1\"\n{extra}"
            ))
            .unwrap()
        };
        let base = health_key(&def(""));
        assert_eq!(
            base,
            health_key(&def("priority = 5\nweight = 3\ngroups = [\"g\"]"))
        );
        assert_eq!(base, health_key(&def("models = [\"m\"]\nenabled = false")));
        assert!(base.starts_with("c#") && !base.contains("k1"));
        let other_key: ChannelDef = toml::from_str(
            "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://a\"\napi_key = \"k2\"",
        )
        .unwrap();
        assert_ne!(base, health_key(&other_key));
        let other_url: ChannelDef = toml::from_str(
            "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://b\"\napi_key = \"k1\"",
        )
        .unwrap();
        assert_ne!(base, health_key(&other_url));
        for endpoint_edit in [
            "insecure_skip_verify = true",
            "region = \"us-east-1\"",
            "credentials_json = \"{}\"",
            "token_uri = \"\"",
        ] {
            assert_ne!(base, health_key(&def(endpoint_edit)), "{endpoint_edit}");
        }
        let shifted: ChannelDef = toml::from_str(
            "name = \"c\"\ntype = \"openai\"\nbase_url = \"http://ak\"\napi_key = \"1\"",
        )
        .unwrap();
        assert_ne!(base, health_key(&shifted), "text moved between fields");
    }
}
