//! `[[models]]`: base prices by the model name clients send, their
//! aliases, and output limits for translated requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::HashMap;

use crate::config::{
    ConfigError, MediaPrices, ModelDef, Price, PriceTier, Source, TierDef, TokenPrices,
};

#[derive(Debug)]
pub(super) struct Models {
    pub prices: BTreeMap<String, Price>,
    pub max_output: HashMap<String, u64>,
    /// Alias -> model.
    pub aliases: HashMap<String, String>,
}

pub(super) fn compile(defs: &[Arc<ModelDef>], src: &Source<'_>) -> Result<Models, ConfigError> {
    let mut prices = BTreeMap::new();
    let mut max_output = HashMap::default();
    let mut aliases = HashMap::default();
    for (i, m) in defs.iter().enumerate() {
        let item = format!("[[models]] \"{}\"", m.name);
        if let Some(limit) = m.max_output {
            if limit == 0 {
                return Err(src.error(
                    src.line_of_field("models", Some(i), "max_output"),
                    format!("{item}: max_output must be at least 1"),
                ));
            }
            max_output.insert(m.name.clone(), limit);
        }
        let values = [
            Some(m.input),
            Some(m.output),
            m.cached_input,
            m.cache_write,
            m.cache_write_1h,
            Some(m.per_request),
            m.image_input,
            m.image_output,
            m.per_second,
            m.per_1k_chars,
        ];
        if values.iter().flatten().any(|v| v.is_sign_negative()) {
            return Err(src.error(
                src.line_of("models", Some(i)),
                format!("{item}: prices must be >= 0"),
            ));
        }
        let tiers = tiers(m).map_err(|e| {
            src.error(
                src.line_of_field("models", Some(i), "tiers"),
                format!("{item}: {e}"),
            )
        })?;
        let media = media(m).map_err(|(field, e)| {
            src.error(
                src.line_of_field("models", Some(i), field),
                format!("{item}: {e}"),
            )
        })?;
        let base = resolve(m, &TierDef::default());
        let price = Price {
            input: base.input,
            output: base.output,
            cached_input: base.cached_input,
            cache_write: base.cache_write,
            cache_write_1h: base.cache_write_1h,
            per_request: m.per_request,
            tiers,
            media,
        };
        if prices.insert(m.name.clone(), price).is_some() {
            return Err(src.error(
                src.line_of_field("models", Some(i), "name"),
                format!("{item}: duplicate model name"),
            ));
        }
    }
    for (i, m) in defs.iter().enumerate() {
        for alias in &m.aliases {
            let clash = if alias.is_empty() {
                Some("an alias must not be empty".to_string())
            } else if prices.contains_key(alias) {
                Some(format!("alias \"{alias}\" is also a model's name"))
            } else {
                aliases
                    .insert(alias.clone(), m.name.clone())
                    .map(|other| format!("alias \"{alias}\" is already an alias of \"{other}\""))
            };
            if let Some(why) = clash {
                return Err(src.error(
                    src.line_of_field("models", Some(i), "aliases"),
                    format!("[[models]] \"{}\": {why}", m.name),
                ));
            }
        }
    }
    Ok(Models {
        prices,
        max_output,
        aliases,
    })
}

/// The token prices of `tier` (the base prices for an empty one). A price
/// the tier leaves out is the model's own; a kind the model leaves out too
/// follows its fallback inside the tier: cache reads and writes cost the
/// tier's input price, 1-hour writes its `cache_write` price (never free).
fn resolve(m: &ModelDef, tier: &TierDef) -> TokenPrices {
    let input = tier.input.unwrap_or(m.input);
    let cache_write = tier.cache_write.or(m.cache_write).unwrap_or(input);
    TokenPrices {
        input,
        output: tier.output.unwrap_or(m.output),
        cached_input: tier.cached_input.or(m.cached_input).unwrap_or(input),
        cache_write,
        cache_write_1h: tier
            .cache_write_1h
            .or(m.cache_write_1h)
            .unwrap_or(cache_write),
    }
}

/// Image qualities OpenAI's image models take (gpt-image-1: low, medium,
/// high, auto; dall-e-3: standard, hd).
const QUALITIES: &[&str] = &["low", "medium", "high", "auto", "standard", "hd"];

/// The model's media prices, checked: `per_image` keys are a size
/// (`"WxH"` or `"auto"`), optionally `/quality`.
fn media(m: &ModelDef) -> Result<MediaPrices, (&'static str, String)> {
    for (key, price) in &m.per_image {
        let (size, quality) = match key.split_once('/') {
            Some((size, quality)) => (size, Some(quality)),
            None => (key.as_str(), None),
        };
        let size_ok = size == "auto"
            || size.split_once('x').is_some_and(|(w, h)| {
                [w, h]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            });
        if !size_ok {
            return Err((
                "per_image",
                format!("per_image \"{key}\": the size must be WIDTHxHEIGHT or \"auto\""),
            ));
        }
        if let Some(q) = quality.filter(|q| !QUALITIES.contains(q)) {
            return Err((
                "per_image",
                format!(
                    "per_image \"{key}\": unknown quality \"{q}\" (one of {})",
                    QUALITIES.join(", ")
                ),
            ));
        }
        if price.is_sign_negative() {
            return Err((
                "per_image",
                format!("per_image \"{key}\": prices must be >= 0"),
            ));
        }
    }
    Ok(MediaPrices {
        per_image: m.per_image.clone(),
        image_input: m.image_input.unwrap_or(m.input),
        image_output: m.image_output.unwrap_or(m.output),
        per_second: m.per_second,
        per_1k_chars: m.per_1k_chars,
    })
}

/// The model's tiers by ascending threshold, checked.
fn tiers(m: &ModelDef) -> Result<Vec<PriceTier>, String> {
    let mut out: Vec<PriceTier> = Vec::with_capacity(m.tiers.len());
    for t in &m.tiers {
        let at = t.above_input_tokens;
        if at == 0 {
            return Err("tiers: above_input_tokens must be > 0".into());
        }
        if out.iter().any(|o| o.above_input_tokens == at) {
            return Err(format!("tiers: two tiers above {at} input tokens"));
        }
        let prices = [
            t.input,
            t.output,
            t.cached_input,
            t.cache_write,
            t.cache_write_1h,
        ];
        if prices.iter().flatten().any(|v| v.is_sign_negative()) {
            return Err(format!(
                "tiers: the tier above {at} input tokens has a price < 0"
            ));
        }
        out.push(PriceTier {
            above_input_tokens: at,
            prices: resolve(m, t),
        });
    }
    out.sort_by_key(|t| t.above_input_tokens);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn compiled(text: &str) -> Result<BTreeMap<String, Price>, ConfigError> {
        limits(text).map(|m| m.prices)
    }

    fn limits(text: &str) -> Result<Models, ConfigError> {
        compile(
            &super::super::items::<ModelDef>("models", text),
            &Source {
                file: "t.toml",
                text,
            },
        )
    }

    #[test]
    fn unset_cache_prices_fall_back_to_the_input_price() {
        let prices =
            compiled("[[models]]\nname = \"m\"\ninput = 3\noutput = 15\ncached_input = 0.3\n")
                .unwrap();
        let p = &prices["m"];
        assert_eq!(p.cached_input, Decimal::new(3, 1));
        assert_eq!(p.cache_write, Decimal::from(3));
        assert_eq!(p.per_request, Decimal::ZERO);
    }

    #[test]
    fn output_limits_are_kept_for_the_models_that_set_one() {
        let m = limits("[[models]]\nname = \"a\"\nmax_output = 64000\n[[models]]\nname = \"b\"\n")
            .unwrap();
        assert_eq!(m.max_output.get("a"), Some(&64000));
        assert_eq!(m.max_output.get("b"), None);
        let e = limits("[[models]]\nname = \"a\"\n\nmax_output = 0\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("max_output must be at least 1"), "{e}");
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn tiers_are_sorted_and_fall_back_to_the_models_prices() {
        let text = r#"[[models]]
name = "m"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75
tiers = [{ above_input_tokens = 1000000, input = 12 },
         { above_input_tokens = 200000, input = 6.0, output = 22.5, cache_write_1h = 12 }]
"#;
        let p = &compiled(text).unwrap()["m"];
        assert_eq!(
            p.cache_write_1h,
            dec("3.75"),
            "unset: the cache_write price"
        );
        let at: Vec<u64> = p.tiers.iter().map(|t| t.above_input_tokens).collect();
        assert_eq!(at, [200_000, 1_000_000]);
        let first = p.tiers[0].prices;
        assert_eq!(
            (
                first.input,
                first.output,
                first.cached_input,
                first.cache_write,
                first.cache_write_1h
            ),
            (dec("6.0"), dec("22.5"), dec("0.3"), dec("3.75"), dec("12"))
        );
        let second = p.tiers[1].prices;
        assert_eq!(
            (second.input, second.output, second.cache_write_1h),
            (dec("12"), dec("15"), dec("3.75"))
        );
        // The tier of the highest threshold strictly below the input.
        assert_eq!(p.for_input(200_000), p.base());
        assert_eq!(p.for_input(200_001), first);
        assert_eq!(p.for_input(1_000_000), first);
        assert_eq!(p.for_input(1_000_001), second);
    }

    #[test]
    fn media_prices_are_read_and_checked_at_their_line() {
        let text = "[[models]]\nname = \"img\"\ninput = 5\n\
                    per_image = { \"1024x1024\" = 0.04, \"1024x1536/high\" = 0.25, \"auto\" = 0 }\n\
                    [[models]]\nname = \"w\"\nper_second = 0.0001\n\
                    [[models]]\nname = \"t\"\nper_1k_chars = 0.015\nimage_input = 10\n";
        let prices = compiled(text).unwrap();
        let img = &prices["img"].media;
        assert_eq!(img.per_image["1024x1536/high"], dec("0.25"));
        assert_eq!(img.per_image["auto"], Decimal::ZERO);
        assert_eq!(img.image_input, dec("5"), "unset: the input price");
        assert_eq!((img.per_second, img.per_1k_chars), (None, None));
        assert_eq!(prices["w"].media.per_second, Some(dec("0.0001")));
        assert_eq!(prices["t"].media.per_1k_chars, Some(dec("0.015")));
        assert_eq!(prices["t"].media.image_input, dec("10"));
        for (line, want) in [
            (
                "per_image = { \"big\" = 1 }",
                "the size must be WIDTHxHEIGHT or \"auto\"",
            ),
            (
                "per_image = { \"10x\" = 1 }",
                "the size must be WIDTHxHEIGHT",
            ),
            (
                "per_image = { \"1x1/ultra\" = 1 }",
                "unknown quality \"ultra\"",
            ),
            ("per_image = { \"1x1\" = -1 }", "prices must be >= 0"),
            ("per_second = -0.1", "prices must be >= 0"),
            ("per_1k_chars = -1", "prices must be >= 0"),
        ] {
            let e = compiled(&format!("[[models]]\nname = \"m\"\n\n{line}\n")).unwrap_err();
            assert!(e.message.contains(want), "{line}: {e}");
            assert!(e.message.contains("[[models]] \"m\""), "{e}");
        }
        let e = compiled("[[models]]\nname = \"m\"\n\nper_image = { \"x\" = 1 }\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn kinds_the_model_leaves_out_follow_their_fallback_inside_a_tier() {
        let text = "[[models]]\nname = \"m\"\ninput = 2\noutput = 8\n\
                    tiers = [{ above_input_tokens = 10, input = 4, cache_write = 5 }]\n";
        let p = &compiled(text).unwrap()["m"];
        let base = p.base();
        assert_eq!(
            (base.cached_input, base.cache_write, base.cache_write_1h),
            (dec("2"), dec("2"), dec("2"))
        );
        let tier = p.tiers[0].prices;
        assert_eq!(
            (tier.cached_input, tier.cache_write, tier.cache_write_1h),
            (dec("4"), dec("5"), dec("5"))
        );
    }

    #[test]
    fn bad_tiers_are_refused_on_their_line() {
        let cases = [
            (
                "tiers = [{ above_input_tokens = 0, input = 1 }]",
                "above_input_tokens must be > 0",
            ),
            (
                "tiers = [{ above_input_tokens = 5 }, { above_input_tokens = 5, input = 1 }]",
                "two tiers above 5 input tokens",
            ),
            (
                "tiers = [{ above_input_tokens = 5, output = -1 }]",
                "the tier above 5 input tokens has a price < 0",
            ),
            ("cache_write_1h = -0.5", "prices must be >= 0"),
        ];
        for (line, message) in cases {
            let text = format!("[[models]]\nname = \"m\"\ninput = 1\n{line}\n");
            let e = compiled(&text).unwrap_err();
            assert!(e.message.contains(message), "{e}");
            let want = if line.starts_with("tiers") { 4 } else { 1 };
            assert_eq!(e.line, Some(want), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("t.toml:{want}: [[models]] \"m\": ")),
                "{e}"
            );
        }
    }

    #[test]
    fn aliases_name_one_model_each() {
        let m = limits("[[models]]\nname = \"a\"\naliases = [\"a[1m]\", \"a-latest\"]\n").unwrap();
        assert_eq!(m.aliases.get("a[1m]").map(String::as_str), Some("a"));
        assert_eq!(m.aliases.get("a-latest").map(String::as_str), Some("a"));
        let e = limits(
            "[[models]]\nname = \"a\"\naliases = [\"x\"]\n[[models]]\nname = \"b\"\naliases = [\"x\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("already an alias of \"a\""), "{e}");
        let e = limits("[[models]]\nname = \"a\"\naliases = [\"b\"]\n[[models]]\nname = \"b\"\n")
            .unwrap_err();
        assert!(e.message.contains("also a model's name"), "{e}");
    }

    #[test]
    fn negative_and_duplicate_prices_are_refused() {
        let e = compiled("[[models]]\nname = \"m\"\ninput = -1\n").unwrap_err();
        assert!(e.message.contains("prices must be >= 0"), "{e}");
        let e = compiled("[[models]]\nname = \"m\"\n[[models]]\nname = \"m\"\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }
}
