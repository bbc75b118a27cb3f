//! `[[users]]`: people whose keys share a budget and a default group.

use foldhash::HashMap;
use std::sync::Arc;

use super::groups::index_of;
use super::keys::{check_budget, check_budget_period};
use crate::config::{ConfigError, Group, Source, User, UserDef, AUTO_GROUP};

pub(super) fn compile(
    defs: &[Arc<UserDef>],
    groups: &[Group],
    src: &Source<'_>,
) -> Result<HashMap<String, User>, ConfigError> {
    let mut users = HashMap::default();
    for (i, u) in defs.iter().enumerate() {
        let item = format!("[[users]] \"{}\"", u.name);
        if let Some(g) = &u.group {
            if g != AUTO_GROUP && index_of(groups, g).is_none() {
                return Err(src.error(
                    src.line_of_field("users", Some(i), "group"),
                    format!("{item}: unknown group \"{g}\""),
                ));
            }
        }
        check_budget(u.budget_usd).map_err(|e| {
            src.error(
                src.line_of_field("users", Some(i), "budget_usd"),
                format!("{item}: {e}"),
            )
        })?;
        check_budget_period(u.budget_usd, u.budget_period).map_err(|e| {
            src.error(
                src.line_of_field("users", Some(i), "budget_period"),
                format!("{item}: {e}"),
            )
        })?;
        let user = User {
            name: u.name.clone(),
            group: u.group.clone(),
            budget_usd: u.budget_usd,
            budget_period: u.budget_period,
        };
        if users.insert(u.name.clone(), user).is_some() {
            return Err(src.error(
                src.line_of_field("users", Some(i), "name"),
                format!("{item}: duplicate user name"),
            ));
        }
    }
    Ok(users)
}
