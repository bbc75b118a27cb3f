//! Channel choice: the ordered groups of a key, priority tiers, weighted
//! random inside a tier, skipping channels that cool down (see
//! [`crate::health`]).

use rand::Rng;

use crate::config::{Snapshot, Tier};
use crate::providers::{Endpoint, Reach};

/// Why a request cannot be routed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No price, so no channel can serve it anywhere.
    ModelNotFound,
    /// Served somewhere, but in none of the key's groups.
    ModelNotInGroup,
}

/// Checks that a model can be routed for the key's groups at all.
pub fn check_model(snapshot: &Snapshot, groups: &[usize], model: &str) -> Result<(), RouteError> {
    if !snapshot.prices.contains_key(model) {
        return Err(RouteError::ModelNotFound);
    }
    if groups
        .iter()
        .any(|&g| snapshot.routes[g].contains_key(model))
    {
        Ok(())
    } else {
        Err(RouteError::ModelNotInGroup)
    }
}

/// Whether some channel of the key's groups serves `model` in the format
/// of `endpoint`, natively or by translation.
pub fn format_served(
    snapshot: &Snapshot,
    groups: &[usize],
    model: &str,
    endpoint: Endpoint,
) -> bool {
    groups.iter().any(|&g| {
        snapshot.routes[g].get(model).is_some_and(|tiers| {
            tiers.iter().any(|t| {
                t.channels
                    .iter()
                    .any(|&(c, _)| snapshot.channels[c].reach(endpoint, model).is_some())
            })
        })
    })
}

/// Seconds (at least 1) until the first of the model's candidate channels
/// in `groups` leaves its cooldown: what a client should wait when all of
/// them are cooling down. `None` if no candidate is cooling down.
pub fn retry_after_seconds(
    snapshot: &Snapshot,
    groups: &[usize],
    model: &str,
    now_ms: u64,
) -> Option<u64> {
    groups
        .iter()
        .filter_map(|&g| snapshot.routes[g].get(model))
        .flatten()
        .flat_map(|tier| &tier.channels)
        .filter(|&&(c, _)| snapshot.channels[c].health.consecutive_failures() > 0)
        .map(|&(c, _)| snapshot.channels[c].health.cooldown_until_ms())
        .min()
        .map(|until| until.saturating_sub(now_ms).div_ceil(1000).max(1))
}

/// What a request asks of routing.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The key's groups, in the order they are tried.
    pub groups: &'a [usize],
    pub model: &'a str,
    pub endpoint: Endpoint,
    /// The channel that served the request's session last, if any.
    pub sticky: Option<&'a str>,
}

/// One routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub group: usize,
    pub channel: usize,
}

/// The next channel to try: groups in order, tiers by priority, weighted
/// random inside a tier (natively speaking channels before translating
/// ones), skipping channels already tried and channels that cannot serve
/// the format of `endpoint` at all. `acquire` is asked for the chosen
/// channel and refuses one that is cooling down.
///
/// `wanted.sticky` names the channel that served the request's session last:
/// inside each group it is tried first, whatever its tier, as long as it
/// can be acquired (a cache hit is worth more than priority). It never
/// takes the request to another group than the order gives.
pub fn next_channel(
    snapshot: &Snapshot,
    wanted: &Wanted<'_>,
    tried: &[usize],
    acquire: &mut dyn FnMut(usize) -> bool,
    rng: &mut impl Rng,
) -> Option<Pick> {
    let Wanted {
        groups,
        model,
        endpoint,
        sticky,
    } = *wanted;
    let mut refused: Vec<usize> = Vec::new();
    for &group in groups {
        let Some(tiers) = snapshot.routes[group].get(model) else {
            continue;
        };
        let sticky = sticky.and_then(|name| {
            tiers
                .iter()
                .flat_map(|t| &t.channels)
                .map(|&(c, _)| c)
                .find(|&c| &*snapshot.channels[c].name == name)
        });
        if let Some(channel) = sticky.filter(|&c| {
            !tried.contains(&c) && snapshot.channels[c].reach(endpoint, model).is_some()
        }) {
            if acquire(channel) {
                return Some(Pick { group, channel });
            }
            refused.push(channel);
        }
        for tier in tiers {
            // Channels that speak the request natively first, then those
            // that translate it: a translation is never preferred.
            for native in [true, false] {
                let serves = |c: usize| {
                    snapshot.channels[c]
                        .reach(endpoint, model)
                        .is_some_and(|r| (r == Reach::Native) == native)
                };
                while let Some(channel) = weighted_choice(
                    tier,
                    |c| !tried.contains(&c) && !refused.contains(&c) && serves(c),
                    rng,
                ) {
                    if acquire(channel) {
                        return Some(Pick { group, channel });
                    }
                    refused.push(channel);
                }
            }
        }
    }
    None
}

/// Weighted random choice among the tier's channels that pass `eligible`.
fn weighted_choice(
    tier: &Tier,
    eligible: impl Fn(usize) -> bool,
    rng: &mut impl Rng,
) -> Option<usize> {
    let total: u64 = tier
        .channels
        .iter()
        .filter(|(c, _)| eligible(*c))
        .map(|&(_, w)| u64::from(w))
        .sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rng.gen_range(0..total);
    for &(c, w) in tier.channels.iter().filter(|(c, _)| eligible(*c)) {
        if ticket < u64::from(w) {
            return Some(c);
        }
        ticket -= u64::from(w);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn snapshot(channels: &str) -> Snapshot {
        let text = format!(
            "[[groups]]\nname = \"g\"\nratio = 1\nall_channels = true\n\n\
             [[models]]\nname = \"m\"\ninput = 1\n\n{channels}"
        );
        let env = |_: &str| None;
        crate::config::load_text(
            "t.toml",
            text,
            &env,
            &crate::health::HealthRegistry::default(),
            1,
            &mut Default::default(),
        )
        .unwrap()
        .snapshot
    }

    fn wanted(endpoint: Endpoint) -> Wanted<'static> {
        Wanted {
            groups: &[0],
            model: "m",
            endpoint,
            sticky: None,
        }
    }

    #[test]
    fn retry_after_is_the_soonest_end_of_a_cooldown() {
        use std::time::Duration;
        let snap = snapshot(
            "[[channels]]\nname = \"a\"\ntype = \"mock\"\n\n[[channels]]\nname = \"b\"\ntype = \"mock\"\n",
        );
        assert_eq!(
            retry_after_seconds(&snap, &[0], "m", 0),
            None,
            "none cooling"
        );
        let s = Duration::from_secs(1);
        snap.channels[0]
            .health
            .record_failure(0, s * 90, s * 600, None, "x".into());
        snap.channels[1]
            .health
            .record_failure(0, s * 30, s * 600, Some(s * 45), "x".into());
        assert_eq!(retry_after_seconds(&snap, &[0], "m", 10_000), Some(35));
        assert_eq!(retry_after_seconds(&snap, &[0], "m", 44_999), Some(1));
        assert_eq!(
            retry_after_seconds(&snap, &[0], "m", 50_000),
            Some(1),
            "over, a probe is due"
        );
        assert_eq!(retry_after_seconds(&snap, &[0], "other", 0), None);
    }

    #[test]
    fn candidates_speak_the_request_format() {
        use crate::providers::{GeminiMethod, OpenAiOp};
        let snap = snapshot(
            r#"
[[channels]]
name = "oai"
type = "openai"
base_url = "http://127.0.0.1:1"
api_key = "k"
priority = 10

[[channels]]
name = "claude"
type = "anthropic"
base_url = "http://127.0.0.1:2"
api_key = "k"
priority = 5

[[channels]]
name = "mock"
type = "mock"
"#,
        );
        let order = |endpoint: Endpoint| {
            let mut tried = Vec::new();
            let mut rng = StdRng::seed_from_u64(1);
            while let Some(p) =
                next_channel(&snap, &wanted(endpoint), &tried, &mut |_| true, &mut rng)
            {
                tried.push(p.channel);
            }
            tried
                .iter()
                .map(|&c| snap.channels[c].name.to_string())
                .collect::<Vec<_>>()
        };
        // Priority first; a translating channel counts in its own tier.
        assert_eq!(
            order(Endpoint::OpenAi(OpenAiOp::Chat)),
            ["oai", "claude", "mock"]
        );
        assert_eq!(
            order(Endpoint::AnthropicMessages),
            ["oai", "claude", "mock"]
        );
        let gemini = Endpoint::Gemini(GeminiMethod::Generate);
        assert_eq!(order(gemini), ["oai", "claude", "mock"]);
        // Counting on a channel of another format is answered by the
        // gateway's estimate, so every channel takes it, by priority.
        let count = Endpoint::Gemini(GeminiMethod::CountTokens);
        assert_eq!(order(count), ["oai", "claude", "mock"]);
        assert!(format_served(&snap, &[0], "m", count));
        let no_mock = snapshot(
            "[[channels]]\nname = \"oai\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"k\"\n",
        );
        assert!(format_served(&no_mock, &[0], "m", count));
        let embed = Endpoint::Gemini(GeminiMethod::EmbedContent);
        assert!(!format_served(&no_mock, &[0], "m", embed), "not translated");
        assert!(format_served(&no_mock, &[0], "m", gemini));
        assert!(format_served(
            &no_mock,
            &[0],
            "m",
            Endpoint::OpenAi(OpenAiOp::Chat)
        ));
    }

    #[test]
    fn within_a_tier_native_channels_go_before_translating_ones() {
        use crate::providers::OpenAiOp;
        let snap = snapshot(
            r#"
[[channels]]
name = "oai"
type = "openai"
base_url = "http://127.0.0.1:1"
api_key = "k"
weight = 1000

[[channels]]
name = "claude"
type = "anthropic"
base_url = "http://127.0.0.1:2"
api_key = "k"

[[channels]]
name = "strict"
type = "openai"
base_url = "http://127.0.0.1:3"
api_key = "k"
translate = false

[[channels]]
name = "chat-only"
type = "openai"
base_url = "http://127.0.0.1:4"
api_key = "k"
responses = false
"#,
        );
        let order = |endpoint: Endpoint, seed: u64| {
            let mut tried = Vec::new();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut names = Vec::new();
            while let Some(p) =
                next_channel(&snap, &wanted(endpoint), &tried, &mut |_| true, &mut rng)
            {
                tried.push(p.channel);
                names.push(snap.channels[p.channel].name.to_string());
            }
            names
        };
        for seed in 0..20 {
            // `oai` weighs 1000 times more, and still comes after `claude`.
            let anthropic = order(Endpoint::AnthropicMessages, seed);
            assert_eq!(anthropic[0], "claude", "{anthropic:?}");
            assert!(
                !anthropic.contains(&"strict".to_string()),
                "translate = false"
            );
            assert_eq!(anthropic.len(), 3, "{anthropic:?}");
            // Responses: natively where the host has them (`strict` too:
            // it needs no translation), then translated, to chat on the
            // chat-only host and through chat to Anthropic.
            let mut responses = order(Endpoint::OpenAi(OpenAiOp::Responses), seed);
            assert_eq!(responses.len(), 4, "{responses:?}");
            let mut translated = responses.split_off(2);
            responses.sort();
            translated.sort();
            assert_eq!(
                (responses, translated),
                (
                    vec!["oai".to_string(), "strict".to_string()],
                    vec!["chat-only".to_string(), "claude".to_string()],
                )
            );
        }
    }

    #[test]
    fn a_session_sticks_to_its_channel_inside_the_group_being_tried() {
        use crate::providers::OpenAiOp;
        let text = r#"
[[groups]]
name = "first"
ratio = 1

[[groups]]
name = "second"
ratio = 1

[[models]]
name = "m"
input = 1

[[channels]]
name = "high"
type = "mock"
groups = ["first"]
priority = 10

[[channels]]
name = "low"
type = "mock"
groups = ["first"]
weight = 1

[[channels]]
name = "other-group"
type = "mock"
groups = ["second"]
"#;
        let snap = crate::config::test_snapshot(text.to_string(), 1);
        let name = |c: usize| snap.channels[c].name.to_string();
        let low = snap
            .channels
            .iter()
            .position(|c| &*c.name == "low")
            .unwrap();
        let pick = |sticky: Option<&str>, acquire: &mut dyn FnMut(usize) -> bool| {
            let wanted = Wanted {
                groups: &[0, 1],
                model: "m",
                endpoint: Endpoint::OpenAi(OpenAiOp::Chat),
                sticky,
            };
            let mut rng = StdRng::seed_from_u64(3);
            next_channel(&snap, &wanted, &[], acquire, &mut rng).map(|p| name(p.channel))
        };
        assert_eq!(pick(None, &mut |_| true).as_deref(), Some("high"));
        // Sticky beats priority while it is healthy...
        assert_eq!(pick(Some("low"), &mut |_| true).as_deref(), Some("low"));
        // ...and not once it cools down.
        assert_eq!(
            pick(Some("low"), &mut |c| c != low).as_deref(),
            Some("high")
        );
        // Never across groups: the first group is tried first.
        assert_eq!(
            pick(Some("other-group"), &mut |_| true).as_deref(),
            Some("high")
        );
        // A channel a reload removed is just not found.
        assert_eq!(pick(Some("gone"), &mut |_| true).as_deref(), Some("high"));
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let tier = Tier {
            priority: 0,
            channels: vec![(0, 1), (1, 3)],
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            counts[weighted_choice(&tier, |_| true, &mut rng).unwrap()] += 1;
        }
        assert!((850..1150).contains(&counts[0]), "{counts:?}");
        assert_eq!(weighted_choice(&tier, |c| c == 0, &mut rng), Some(0));
        assert_eq!(weighted_choice(&tier, |_| false, &mut rng), None);
    }
}
