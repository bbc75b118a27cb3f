//! `[[models]]`: base prices by the model name clients send.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ConfigError, ModelDef, Price, Source};

pub(super) fn compile(
    defs: &[Arc<ModelDef>],
    src: &Source<'_>,
) -> Result<BTreeMap<String, Price>, ConfigError> {
    let mut prices = BTreeMap::new();
    for (i, m) in defs.iter().enumerate() {
        let item = format!("[[models]] \"{}\"", m.name);
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
    Ok(prices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn compiled(text: &str) -> Result<BTreeMap<String, Price>, ConfigError> {
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
    fn negative_and_duplicate_prices_are_refused() {
        let e = compiled("[[models]]\nname = \"m\"\ninput = -1\n").unwrap_err();
        assert!(e.message.contains("prices must be >= 0"), "{e}");
        let e = compiled("[[models]]\nname = \"m\"\n[[models]]\nname = \"m\"\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }
}
