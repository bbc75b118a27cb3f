//! The routing tables: for each group, each model's channels in priority
//! tiers, highest first. Built once per load so that a request only looks
//! them up.

use foldhash::HashMap;
use std::sync::Arc;

use crate::config::{Channel, ChannelDef, Group, Tier};

/// `defs` are the channels' definitions, in the order of `channels`.
pub(super) fn build(
    groups: &[Group],
    channels: &[Channel],
    defs: &[Arc<ChannelDef>],
) -> Vec<HashMap<String, Vec<Tier>>> {
    let mut routes: Vec<HashMap<String, Vec<Tier>>> = vec![HashMap::default(); groups.len()];
    for (gi, group) in groups.iter().enumerate() {
        for (ci, ch) in channels.iter().enumerate() {
            let member = group.all_channels || defs[ci].groups.contains(&group.name);
            if !ch.enabled() || !member {
                continue;
            }
            for m in &ch.models {
                let tiers = routes[gi].entry(m.clone()).or_default();
                match tiers.iter_mut().find(|t| t.priority == ch.priority) {
                    Some(t) => t.channels.push((ci, ch.weight)),
                    None => tiers.push(Tier {
                        priority: ch.priority,
                        channels: vec![(ci, ch.weight)],
                    }),
                }
            }
        }
        for tiers in routes[gi].values_mut() {
            tiers.sort_by_key(|t| std::cmp::Reverse(t.priority));
        }
    }
    routes
}
