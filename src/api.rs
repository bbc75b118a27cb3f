//! Answers the gateway gives itself, without an upstream: model lists and
//! the public price list.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::config::{Key, Price, Snapshot, TokenPrices};

/// A decimal as a JSON number, for display only (billing never reads it).
fn number(d: Decimal) -> Value {
    json!(d.normalize().to_f64().unwrap_or(0.0))
}

/// GET /v1/models in the OpenAI list shape: what this key may call.
pub fn models(snapshot: &Snapshot, key: &Key) -> Value {
    let data: Vec<Value> = snapshot
        .models_for_key(key)
        .into_iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "tollgate"}))
        .collect();
    json!({"object": "list", "data": data})
}

/// GET /api/pricing: groups with their ratio and models, and base prices
/// in USD per 1M tokens.
pub fn pricing(snapshot: &Snapshot) -> Value {
    let groups: Vec<Value> = snapshot
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            json!({
                "name": g.name,
                "ratio": number(g.ratio),
                "description": g.description,
                "connectivity": g.connectivity,
                "selectable": g.selectable,
                "user_ratios": g.user_ratios.iter()
                    .map(|(user_group, r)| (user_group.clone(), number(*r)))
                    .collect::<serde_json::Map<_, _>>(),
                "models": snapshot.models_of_group(i),
            })
        })
        .collect();
    let models: Vec<Value> = snapshot
        .prices
        .iter()
        .map(|(name, p)| {
            let tiers: Vec<Value> = p
                .tiers
                .iter()
                .map(|t| {
                    let mut tier = token_prices(&t.prices);
                    tier.insert("above_input_tokens".into(), json!(t.above_input_tokens));
                    Value::Object(tier)
                })
                .collect();
            let mut model = token_prices(&p.base());
            model.insert("name".into(), json!(name));
            model.insert("per_request".into(), number(p.per_request));
            media_prices(&mut model, p);
            model.insert("tiers".into(), json!(tiers));
            model.insert("aliases".into(), json!(snapshot.aliases_of(name)));
            Value::Object(model)
        })
        .collect();
    json!({"unit": "USD per 1M tokens", "groups": groups, "models": models})
}

/// The media prices a model sets (SPEC §13): `per_image` (USD per image
/// by size and quality), `image_input` (USD per 1M input image tokens,
/// where it differs from `input`), `per_second`, `per_1k_chars`.
fn media_prices(model: &mut serde_json::Map<String, Value>, p: &Price) {
    let m = &p.media;
    if !m.per_image.is_empty() {
        let table: serde_json::Map<String, Value> = m
            .per_image
            .iter()
            .map(|(k, v)| (k.clone(), number(*v)))
            .collect();
        model.insert("per_image".into(), Value::Object(table));
    }
    if m.image_input != p.input {
        model.insert("image_input".into(), number(m.image_input));
    }
    if m.image_output != p.output {
        model.insert("image_output".into(), number(m.image_output));
    }
    if let Some(v) = m.per_second {
        model.insert("per_second".into(), number(v));
    }
    if let Some(v) = m.per_1k_chars {
        model.insert("per_1k_chars".into(), number(v));
    }
}

fn token_prices(p: &TokenPrices) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (name, price) in [
        ("input", p.input),
        ("output", p.output),
        ("cached_input", p.cached_input),
        ("cache_write", p.cache_write),
        ("cache_write_1h", p.cache_write_1h),
    ] {
        out.insert(name.into(), number(price));
    }
    out
}

/// GET /v1/models with `anthropic-version`: the Anthropic list shape.
pub fn anthropic_models(snapshot: &Snapshot, key: &Key) -> Value {
    let models = snapshot.models_for_key(key);
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({"type": "model", "id": m, "display_name": m,
                   "created_at": "1970-01-01T00:00:00Z"})
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models.first(),
        "last_id": models.last(),
    })
}

/// GET /v1beta/models: the Gemini list shape.
pub fn gemini_models(snapshot: &Snapshot, key: &Key) -> Value {
    let models: Vec<Value> = snapshot
        .models_for_key(key)
        .into_iter()
        .map(|m| {
            json!({"name": format!("models/{m}"), "baseModelId": m, "version": "001",
                   "displayName": m,
                   "supportedGenerationMethods": ["generateContent", "streamGenerateContent",
                                                  "countTokens", "embedContent"]})
        })
        .collect();
    json!({"models": models})
}
