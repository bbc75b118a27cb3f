//! The price of one request (docs/api.md, "Cost"), exact:
//!
//! cost = ratio × (input·p_in + output·p_out + cached·p_cached
//!                 + cache_write·p_cw + cache_write_1h·p_cw1h) / 1e6
//!      + ratio × per_request
//!
//! The token prices are the model's base prices, or those of its
//! long-context tier when the request's whole input is above the tier's
//! threshold; the ratio is the serving group's, or its ratio for the key's
//! user group. Prices are USD per 1M tokens as exact decimals from the
//! config; the result is rounded once, to whole nano-USD (1e-9 USD), and
//! kept as an integer from then on, so sums over the ledger are exact.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::config::{Price, TokenPrices};
use crate::media::{MediaAsk, MediaOp};
use crate::usage::{Units, Usage};

/// Nano-USD per USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// The cost of `usage` at `price` in a group of `ratio`, in nano-USD.
///
/// Rounding is half-to-even ("banker's rounding"): a request exactly half a
/// nano-USD off goes to the even neighbour, so over many requests the
/// rounding errors cancel instead of always leaning one way (half-up would
/// overcharge by 0.25 nano-USD per request on average at those edges).
/// Absurd inputs that overflow the decimal range saturate instead of
/// panicking. Allocation-free: the tier is found by a scan of the model's
/// few tiers and its prices are copied, not built.
pub fn cost_nanos(price: &Price, ratio: Decimal, usage: &Usage) -> i64 {
    let tokens = price.for_input(usage.whole_input());
    cost_at(&tokens, price.per_request, ratio, usage)
}

/// The cost of a request that also used media `units`, in nano-USD:
///
/// cost = ratio × (tokens as in [`cost_nanos`] + per_request
///                 + images·image_price + image_input·p_image_input / 1e6
///                 + audio_ms·per_second / 1000 + chars·per_1k_chars / 1000)
///
/// `image_price` is the per-image price of the request's size and quality
/// ([`image_price`]). Rounded once, like every cost.
pub fn media_cost_nanos(
    price: &Price,
    ratio: Decimal,
    usage: &Usage,
    units: &Units,
    image_price: Decimal,
) -> i64 {
    let tokens = price.for_input(usage.whole_input());
    match media_usd(price, units, image_price).and_then(|m| m.checked_add(price.per_request)) {
        Some(fixed) => cost_at(&tokens, fixed, ratio, usage),
        None => i64::MAX,
    }
}

/// The USD of the media units, unrounded; `None` on decimal overflow.
pub(super) fn media_usd(price: &Price, units: &Units, image_price: Decimal) -> Option<Decimal> {
    let m = &price.media;
    let terms = [
        (units.images, image_price, Decimal::ONE),
        (units.image_input, m.image_input, Decimal::from(1_000_000)),
        (units.image_output, m.image_output, Decimal::from(1_000_000)),
        (
            units.audio_ms,
            m.per_second.unwrap_or_default(),
            Decimal::from(1000),
        ),
        (
            units.chars,
            m.per_1k_chars.unwrap_or_default(),
            Decimal::from(1000),
        ),
    ];
    let mut usd = Decimal::ZERO;
    for (count, unit, per) in terms.into_iter().filter(|(count, _, _)| *count != 0) {
        usd = usd.checked_add(Decimal::from(count).checked_mul(unit)?.checked_div(per)?)?;
    }
    Some(usd)
}

/// The per-image price of an image request, or why the model cannot serve
/// the request's media at a price (the client's error, in its dialect).
/// Each media kind needs its price set (a deliberate 0 counts) or token or
/// per-request prices to bill by; a model is never served for free by
/// accident. Image prices are looked up as `"size/quality"`, then
/// `"size"`; a request without `size` asks for `"auto"` (OpenAI's
/// default); without `per_image`, images are billed by their tokens.
pub fn media_price(
    model: &str,
    price: &Price,
    op: MediaOp,
    ask: &MediaAsk,
) -> Result<Decimal, String> {
    let m = &price.media;
    let tokens_priced =
        !(price.input.is_zero() && price.output.is_zero() && price.per_request.is_zero());
    let unpriced = |kind: &str, field: &str| {
        Err(format!(
            "model `{model}` has no {kind} price: the operator must set `{field}` \
             (or token prices) for it in [[models]]"
        ))
    };
    match op {
        MediaOp::Image if m.per_image.is_empty() => {
            if tokens_priced || !m.image_input.is_zero() {
                Ok(Decimal::ZERO)
            } else {
                unpriced("image", "per_image")
            }
        }
        MediaOp::Image => image_price(model, &m.per_image, ask),
        MediaOp::Transcribe if m.per_second.is_none() && !tokens_priced => {
            unpriced("audio", "per_second")
        }
        MediaOp::Speech if m.per_1k_chars.is_none() && !tokens_priced => {
            unpriced("speech", "per_1k_chars")
        }
        MediaOp::Transcribe | MediaOp::Speech => Ok(Decimal::ZERO),
    }
}

/// The price of one image of the request's size and quality.
fn image_price(
    model: &str,
    table: &std::collections::BTreeMap<String, Decimal>,
    ask: &MediaAsk,
) -> Result<Decimal, String> {
    let size = ask.size.as_deref().unwrap_or("auto");
    let exact = ask
        .quality
        .as_deref()
        .and_then(|q| table.get(&format!("{size}/{q}")));
    if let Some(p) = exact.or_else(|| table.get(size)) {
        return Ok(*p);
    }
    let quality = ask
        .quality
        .as_deref()
        .map_or(String::new(), |q| format!(" and quality `{q}`"));
    let priced: Vec<&str> = table.keys().map(String::as_str).collect();
    Err(format!(
        "model `{model}` has no price for size `{size}`{quality}; priced sizes: {}",
        priced.join(", ")
    ))
}

/// The cost of `usage` at these token prices, rounded once.
pub(super) fn cost_at(
    tokens: &TokenPrices,
    per_request: Decimal,
    ratio: Decimal,
    usage: &Usage,
) -> i64 {
    exact_cost_nanos(tokens, per_request, ratio, usage)
        .map(|n| n.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven))
        .and_then(|n| i64::try_from(n).ok())
        .unwrap_or(i64::MAX)
}

/// The unrounded cost in nano-USD, or `None` on decimal overflow.
fn exact_cost_nanos(
    tokens: &TokenPrices,
    per_request: Decimal,
    ratio: Decimal,
    usage: &Usage,
) -> Option<Decimal> {
    let terms = [
        (usage.input, tokens.input),
        (usage.output, tokens.output),
        (usage.cached_input, tokens.cached_input),
        (usage.cache_write, tokens.cache_write),
        (usage.cache_write_1h, tokens.cache_write_1h),
    ];
    let mut per_million = Decimal::ZERO;
    // Most requests use two or three of the five kinds: a kind with no
    // tokens adds nothing, and skipping its decimal product keeps the
    // fifth kind (1-hour writes) from costing every request.
    for (count, unit) in terms.into_iter().filter(|(count, _)| *count != 0) {
        per_million = per_million.checked_add(Decimal::from(count).checked_mul(unit)?)?;
    }
    // USD per 1M tokens -> nano-USD per token is a factor 1e9 / 1e6 = 1000.
    let tokens_nanos = per_million.checked_mul(Decimal::from(1000))?;
    let request_nanos = per_request.checked_mul(Decimal::from(NANOS_PER_USD))?;
    ratio.checked_mul(tokens_nanos.checked_add(request_nanos)?)
}

/// Nano-USD as an exact decimal USD amount (for display and JSON).
pub fn nanos_to_usd(nanos: i64) -> Decimal {
    Decimal::new(nanos, 9).normalize()
}

/// A USD amount from the config (a budget) in nano-USD, rounded down so a
/// budget is never rounded up into money the user does not have.
pub fn usd_to_nanos(usd: Decimal) -> i64 {
    usd.checked_mul(Decimal::from(NANOS_PER_USD))
        .map(|n| n.round_dp_with_strategy(0, RoundingStrategy::ToNegativeInfinity))
        .and_then(|n| i64::try_from(n).ok())
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn price(input: &str, output: &str, cached: &str, write: &str, per_request: &str) -> Price {
        Price {
            input: d(input),
            output: d(output),
            cached_input: d(cached),
            cache_write: d(write),
            cache_write_1h: d(write),
            per_request: d(per_request),
            tiers: Vec::new(),
            media: Default::default(),
        }
    }

    fn usage(input: u64, output: u64, cached_input: u64, cache_write: u64) -> Usage {
        Usage {
            input,
            output,
            cached_input,
            cache_write,
            cache_write_1h: 0,
        }
    }

    #[test]
    fn costs_match_hand_computed_values() {
        let gpt4o = price("2.50", "10.00", "1.25", "2.50", "0");
        let mini = price("0.15", "0.60", "0.075", "0.15", "0");
        let sonnet = price("3.00", "15.00", "0.30", "3.75", "0");
        let opus = price("15", "75", "1.5", "18.75", "0");
        let image = price("0.30", "30.00", "0.30", "0.30", "0.04");
        let search = price("0", "0", "0", "0", "0.025");
        // (price, ratio, usage, expected nano-USD), each worked out by hand.
        let cases: &[(&Price, &str, Usage, i64)] = &[
            // 1000*2.5 + 500*10 = 7500 per-1M units -> 0.0075 USD
            (&gpt4o, "1.0", usage(1000, 500, 0, 0), 7_500_000),
            // same at 0.5 -> 0.00375 USD
            (&gpt4o, "0.5", usage(1000, 500, 0, 0), 3_750_000),
            // 0.8 x 7500 = 6000 -> 0.006 USD
            (&gpt4o, "0.8", usage(1000, 500, 0, 0), 6_000_000),
            // 1.5 x 7500 = 11250 -> 0.01125 USD
            (&gpt4o, "1.5", usage(1000, 500, 0, 0), 11_250_000),
            // cached split: 600 input + 400 cached: 600*2.5 + 400*1.25 + 7*10 = 2070
            (&gpt4o, "1.0", usage(600, 7, 400, 0), 2_070_000),
            // 123 in, 45 out: 123*0.15 + 45*0.6 = 18.45 + 27 = 45.45 -> 45450 nano
            (&mini, "1.0", usage(123, 45, 0, 0), 45_450),
            // 0.8 x (1*0.15) = 0.12 per-1M units -> 120 nano
            (&mini, "0.8", usage(1, 0, 0, 0), 120),
            // cached 0.075/1M: one token = 75 nano, 0.5 -> 37.5 -> even: 38
            (&mini, "0.5", usage(0, 0, 1, 0), 38),
            // three cached tokens at 0.5: 112.5 -> even: 112
            (&mini, "0.5", usage(0, 0, 3, 0), 112),
            // Anthropic with both cache kinds:
            // 10*3 + 200*15 + 5000*0.3 + 1000*3.75 = 30 + 3000 + 1500 + 3750 = 8280
            (&sonnet, "1.0", usage(10, 200, 5000, 1000), 8_280_000),
            // 0.5 x 8280 = 4140
            (&sonnet, "0.5", usage(10, 200, 5000, 1000), 4_140_000),
            // opus 1 output token at 1.5: 75*1.5 = 112.5 per-1M -> 112500 nano
            (&opus, "1.5", usage(0, 1, 0, 0), 112_500),
            // per_request on top of tokens: 100*0.3 + 1290*30 = 38730 -> 0.03873
            // plus 0.04 -> 0.07873 USD, x0.8 = 0.062984
            (&image, "0.8", usage(100, 1290, 0, 0), 62_984_000),
            // per_request only
            (&search, "1.0", usage(0, 0, 0, 0), 25_000_000),
            (&search, "1.5", usage(500, 500, 0, 0), 37_500_000),
            // nothing used, no per-request price: free
            (&gpt4o, "1.0", usage(0, 0, 0, 0), 0),
        ];
        for (i, (p, ratio, u, expected)) in cases.iter().enumerate() {
            assert_eq!(
                cost_nanos(p, d(ratio), u),
                *expected,
                "case {i}: {u:?} x {ratio}"
            );
        }
    }

    fn tokens(input: &str, output: &str, cached: &str, write: &str, write_1h: &str) -> TokenPrices {
        TokenPrices {
            input: d(input),
            output: d(output),
            cached_input: d(cached),
            cache_write: d(write),
            cache_write_1h: d(write_1h),
        }
    }

    /// Sonnet-like: 3 / 15 / 0.30 / 3.75 (5 min) / 6 (1 h) per 1M, and a
    /// long-context tier above 200,000 input tokens at twice that, with a
    /// per-request price that tiers do not change.
    fn long_context(per_request: &str) -> Price {
        let mut p = price("3", "15", "0.30", "3.75", per_request);
        p.cache_write_1h = d("6");
        p.tiers = vec![crate::config::PriceTier {
            above_input_tokens: 200_000,
            prices: tokens("6", "22.5", "0.6", "7.5", "12"),
        }];
        p
    }

    /// A group of ratio 0.5 whose users in group `vip` pay 0.4 instead.
    fn claude_group() -> crate::config::Group {
        crate::config::Group {
            name: "claude".into(),
            ratio: d("0.5"),
            description: String::new(),
            connectivity: String::new(),
            all_channels: false,
            selectable: false,
            user_ratios: vec![("vip".into(), d("0.4"))],
        }
    }

    fn full(input: u64, output: u64, cached: u64, write: u64, write_1h: u64) -> Usage {
        Usage {
            input,
            output,
            cached_input: cached,
            cache_write: write,
            cache_write_1h: write_1h,
        }
    }

    #[test]
    fn tiers_one_hour_writes_and_user_ratios_combine_exactly() {
        let group = claude_group();
        let (plain, vip) = (
            group.ratio_for(Some("default")),
            group.ratio_for(Some("vip")),
        );
        assert_eq!((plain, vip), (d("0.5"), d("0.4")));
        let no_user = group.ratio_for(None);
        let p = long_context("0");
        let with_fee = long_context("0.01");
        let no_1h = price("3", "15", "0.30", "3.75", "0");
        // Base prices, 5-minute and 1-hour writes apart (whole input 10,000):
        // 1000x3 + 500x15 + 2000x0.30 + 3000x3.75 + 4000x6
        //   = 3000 + 7500 + 600 + 11250 + 24000 = 46,350 per 1M -> 46,350,000 nano
        let small = full(1000, 500, 2000, 3000, 4000);
        // Above the tier (whole input 150,000 + 40,000 + 5,000 + 5,001 = 200,001):
        // 150000x6 + 1000x22.5 + 40000x0.6 + 5000x7.5 + 5001x12
        //   = 900000 + 22500 + 24000 + 37500 + 60012 = 1,044,012 -> 1,044,012,000 nano
        let long = full(150_000, 1000, 40_000, 5000, 5001);
        // Exactly at the threshold (200,000) is not above it: base prices.
        // 150000x3 + 1000x15 + 40000x0.3 + 5000x3.75 + 5000x6
        //   = 450000 + 15000 + 12000 + 18750 + 30000 = 525,750 -> 525,750,000 nano
        let at = full(150_000, 1000, 40_000, 5000, 5000);
        let cases: &[(&Price, Decimal, Usage, i64)] = &[
            (&p, Decimal::ONE, small, 46_350_000),
            (&p, no_user, small, 23_175_000),
            (&p, plain, small, 23_175_000),
            (&p, vip, small, 18_540_000),
            (&p, Decimal::ONE, long, 1_044_012_000),
            (&p, plain, long, 522_006_000),
            (&p, vip, long, 417_604_800),
            (&p, Decimal::ONE, at, 525_750_000),
            (&p, vip, at, 210_300_000),
            (&p, plain, at, 262_875_000),
            // Without a 1-hour price, 1-hour writes cost `cache_write`:
            // 0.5 x (46,350 - 4000x6 + 4000x3.75) = 0.5 x 37,350
            (&no_1h, plain, small, 18_675_000),
            // per_request (0.01 USD = 10,000,000 nano) on top, times the ratio:
            // 0.4 x (46,350,000 + 10,000,000) = 22,540,000
            (&with_fee, vip, small, 22_540_000),
            // 0.4 x (1,044,012,000 + 10,000,000) = 421,604,800
            (&with_fee, vip, long, 421_604_800),
            // 0.5 x (525,750,000 + 10,000,000) = 267,875,000
            (&with_fee, plain, at, 267_875_000),
            // per_request alone: the tier does not change it.
            (&with_fee, vip, Usage::default(), 4_000_000),
        ];
        for (i, (price, ratio, u, expected)) in cases.iter().enumerate() {
            assert_eq!(
                cost_nanos(price, *ratio, u),
                *expected,
                "case {i}: {u:?} x {ratio}"
            );
        }
    }

    #[test]
    fn tier_costs_round_once_half_to_even() {
        // Base 0.1 nano per input token; above 10 input tokens 0.3 nano per
        // input token and 0.5 nano per 1-hour write.
        let mut p = price("0.0001", "0", "0", "0", "0");
        p.tiers = vec![crate::config::PriceTier {
            above_input_tokens: 10,
            prices: tokens("0.0003", "0", "0", "0", "0.0005"),
        }];
        let cases: &[(&str, Usage, i64)] = &[
            // 10 input: base, 1.0 nano
            ("1", full(10, 0, 0, 0, 0), 1),
            // 11 input: tier, 3.3 -> 3
            ("1", full(11, 0, 0, 0, 0), 3),
            // 15 one-hour writes: tier (whole input 15), 7.5 -> 8 (even)
            ("1", full(0, 0, 0, 0, 15), 8),
            // 25: 12.5 -> 12 (even)
            ("1", full(0, 0, 0, 0, 25), 12),
            // the ratio applies before the one rounding: 0.5 x 12.5 = 6.25 -> 6
            ("0.5", full(0, 0, 0, 0, 25), 6),
            // 0.4 x (11 x 0.3 + 1 x 0.5) = 0.4 x 3.8 = 1.52 -> 2
            ("0.4", full(11, 0, 0, 0, 1), 2),
            // 0.4 x (5 x 0.3 + 7 x 0.5) = 0.4 x 5 = 2.0: whole input 12 is
            // above 10 whatever the kind of its tokens
            ("0.4", full(5, 0, 0, 0, 7), 2),
        ];
        for (i, (ratio, u, expected)) in cases.iter().enumerate() {
            assert_eq!(
                cost_nanos(&p, d(ratio), u),
                *expected,
                "case {i}: {u:?} x {ratio}"
            );
        }
    }

    #[test]
    fn rounds_once_half_to_even() {
        // 0.0000001 USD/1M = 0.0001 nano per token.
        let tiny = price("0.0000001", "0", "0", "0", "0");
        // 5000 tokens = 0.5 nano -> 0 (even); 15000 = 1.5 -> 2; 25000 = 2.5 -> 2
        assert_eq!(cost_nanos(&tiny, d("1"), &usage(5000, 0, 0, 0)), 0);
        assert_eq!(cost_nanos(&tiny, d("1"), &usage(15_000, 0, 0, 0)), 2);
        assert_eq!(cost_nanos(&tiny, d("1"), &usage(25_000, 0, 0, 0)), 2);
        // just past half rounds up, just under rounds down
        assert_eq!(cost_nanos(&tiny, d("1"), &usage(5001, 0, 0, 0)), 1);
        assert_eq!(cost_nanos(&tiny, d("1"), &usage(4999, 0, 0, 0)), 0);
        // Rounded once, not per term: two terms of 0.4 nano each make 0.8 -> 1,
        // where rounding each term first would give 0.
        let two = price("0.0000001", "0.0000001", "0", "0", "0");
        assert_eq!(cost_nanos(&two, d("1"), &usage(4000, 4000, 0, 0)), 1);
        // The ratio applies before rounding: 3 x 0.5 nano = 1.5 -> 2.
        assert_eq!(cost_nanos(&tiny, d("3"), &usage(5000, 0, 0, 0)), 2);
    }

    #[test]
    fn huge_usage_saturates_instead_of_panicking() {
        let p = price("79228162514264337593543950335", "1", "1", "1", "0");
        assert_eq!(cost_nanos(&p, d("1"), &usage(u64::MAX, 0, 0, 0)), i64::MAX);
        let big = price("1000", "1000", "1000", "1000", "0");
        assert_eq!(
            cost_nanos(&big, d("1"), &usage(u64::MAX, u64::MAX, 0, 0)),
            i64::MAX
        );
    }

    fn media_model(per_image: &[(&str, &str)]) -> Price {
        let mut p = price("5", "40", "5", "5", "0");
        p.media = crate::config::MediaPrices {
            per_image: per_image
                .iter()
                .map(|(k, v)| (k.to_string(), d(v)))
                .collect(),
            image_input: d("10"),
            image_output: d("30"),
            per_second: Some(d("0.0001")),
            per_1k_chars: Some(d("0.015")),
        };
        p
    }

    fn units(images: u64, image_input: u64, audio_ms: u64, chars: u64) -> Units {
        Units {
            images,
            image_input,
            audio_ms,
            chars,
            image_output: 0,
        }
    }

    #[test]
    fn media_costs_match_hand_computed_values() {
        let p = media_model(&[("1024x1024", "0.011"), ("1024x1536/high", "0.25")]);
        let cases: &[(&str, Usage, Units, &str, i64)] = &[
            // 2 images at 0.25 = 0.5 USD
            (
                "1",
                usage(0, 0, 0, 0),
                units(2, 0, 0, 0),
                "0.25",
                500_000_000,
            ),
            // gpt-image-1 edit: 10 text x 5 + 64 image x 10 + 272 out x 40
            // = 50 + 640 + 10880 = 11570 per 1M -> 11,570,000 nano; + 1 x 0.011
            // = 22,570,000; x 0.8 = 18,056,000
            (
                "0.8",
                usage(10, 272, 0, 0),
                units(1, 64, 0, 0),
                "0.011",
                18_056_000,
            ),
            // 3.42 s of audio at 0.0001/s = 0.000342 USD = 342,000 nano
            ("1", usage(0, 0, 0, 0), units(0, 0, 3420, 0), "0", 342_000),
            // 1 ms: 0.0000001 USD = 100 nano, x 0.5 = 50
            ("0.5", usage(0, 0, 0, 0), units(0, 0, 1, 0), "0", 50),
            // 11 chars at 0.015 per 1k = 0.000165 USD = 165,000 nano; x 1.5 = 247,500
            ("1.5", usage(0, 0, 0, 0), units(0, 0, 0, 11), "0", 247_500),
            // everything at once: 1 char = 15,000 nano, 1 ms = 100 nano,
            // 1 image token = 10,000 nano: 25,100 x 0.3 = 7,530
            ("0.3", usage(0, 0, 0, 0), units(0, 1, 1, 1), "0", 7_530),
            // rounded once, half to even: 100 x 0.015 = 1.5 -> 2, x 0.005 = 0.5 -> 0
            ("0.015", usage(0, 0, 0, 0), units(0, 0, 1, 0), "0", 2),
            ("0.005", usage(0, 0, 0, 0), units(0, 0, 1, 0), "0", 0),
            // Gemini image output apart: 4 text x 40 + 1290 image x 30 =
            // 38,860 per 1M -> 38,860,000 nano
            (
                "1",
                usage(0, 4, 0, 0),
                Units {
                    image_output: 1290,
                    ..Units::default()
                },
                "0",
                38_860_000,
            ),
        ];
        for (i, (ratio, u, m, image_price, expected)) in cases.iter().enumerate() {
            assert_eq!(
                media_cost_nanos(&p, d(ratio), u, m, d(image_price)),
                *expected,
                "case {i}"
            );
        }
        // Without media units it is the token cost exactly.
        let u = usage(1000, 500, 0, 0);
        assert_eq!(
            media_cost_nanos(&p, d("1"), &u, &Units::default(), d("9")),
            cost_nanos(&p, d("1"), &u)
        );
    }

    fn ask(size: Option<&str>, quality: Option<&str>) -> MediaAsk {
        MediaAsk {
            images: 1,
            size: size.map(String::from),
            quality: quality.map(String::from),
            ..MediaAsk::default()
        }
    }

    #[test]
    fn image_prices_by_size_and_quality_with_fallbacks() {
        let p = media_model(&[
            ("1024x1024", "0.04"),
            ("1024x1536/high", "0.25"),
            ("auto", "0.02"),
        ]);
        let price = |size, quality| media_price("img", &p, MediaOp::Image, &ask(size, quality));
        assert_eq!(price(Some("1024x1536"), Some("high")), Ok(d("0.25")));
        // A quality without its own price falls back to the size's.
        assert_eq!(price(Some("1024x1024"), Some("high")), Ok(d("0.04")));
        assert_eq!(price(Some("1024x1024"), None), Ok(d("0.04")));
        // No size: "auto".
        assert_eq!(price(None, None), Ok(d("0.02")));
        // A size without any price is refused, naming what is priced.
        let e = price(Some("1024x1536"), Some("low")).unwrap_err();
        assert_eq!(
            e,
            "model `img` has no price for size `1024x1536` and quality `low`; \
             priced sizes: 1024x1024, 1024x1536/high, auto"
        );
        let e = price(Some("256x256"), None).unwrap_err();
        assert!(e.contains("no price for size `256x256`;"), "{e}");
    }

    #[test]
    fn media_without_a_price_is_refused_never_free() {
        let none = price("0", "0", "0", "0", "0");
        for op in [MediaOp::Image, MediaOp::Transcribe, MediaOp::Speech] {
            let e = media_price("m", &none, op, &ask(None, None)).unwrap_err();
            assert!(e.contains("model `m` has no"), "{e}");
        }
        let e = media_price("m", &none, MediaOp::Speech, &ask(None, None)).unwrap_err();
        assert!(e.contains("`per_1k_chars`"), "{e}");
        // Token prices (gpt-image-1 without per_image), or a deliberate 0.
        let tokens = price("5", "40", "5", "5", "0");
        assert_eq!(
            media_price("m", &tokens, MediaOp::Image, &ask(Some("1x1"), None)),
            Ok(Decimal::ZERO)
        );
        let mut free = none.clone();
        free.media.per_second = Some(Decimal::ZERO);
        assert_eq!(
            media_price("m", &free, MediaOp::Transcribe, &ask(None, None)),
            Ok(Decimal::ZERO)
        );
    }

    #[test]
    fn usd_conversions() {
        assert_eq!(usd_to_nanos(d("10")), 10 * NANOS_PER_USD);
        assert_eq!(usd_to_nanos(d("0.0000000019")), 1);
        assert_eq!(nanos_to_usd(62_984_000).to_string(), "0.062984");
        assert_eq!(nanos_to_usd(1).to_string(), "0.000000001");
    }
}
