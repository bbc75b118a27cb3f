//! `[[models]]`: base prices by the model name clients send, their
//! aliases, and output limits for translated requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::HashMap;

use crate::config::{ConfigError, ModelDef, Price, Source};

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
            m.input,
            m.output,
            m.cached_input.unwrap_or_default(),
            m.cache_write.unwrap_or_default(),
            m.per_request,
        ];
        if values.iter().any(|v| v.is_sign_negative()) {
            return Err(src.error(
                src.line_of("models", Some(i)),
                format!("{item}: prices must be >= 0"),
            ));
        }
        let price = Price {
            input: m.input,
            output: m.output,
            // Unset cache prices fall back to the input price: never free.
            cached_input: m.cached_input.unwrap_or(m.input),
            cache_write: m.cache_write.unwrap_or(m.input),
            per_request: m.per_request,
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
