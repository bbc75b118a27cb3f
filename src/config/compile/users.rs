//! `[[users]]`: people whose keys share a budget and a default group, with
//! the groups they may pick and the token they sign in with.

use foldhash::HashMap;
use std::sync::Arc;

use super::groups::index_of;
use super::keys::{check_budget, check_budget_period, sha256_from_hex};
use crate::config::{ConfigError, Group, Source, User, UserDef, AUTO_GROUP};

/// The users by name, and their names by the SHA-256 of their user token.
pub(super) type Users = (HashMap<String, User>, HashMap<[u8; 32], String>);

pub(super) fn compile(
    defs: &[Arc<UserDef>],
    groups: &[Group],
    src: &Source<'_>,
) -> Result<Users, ConfigError> {
    let mut users = HashMap::default();
    let mut by_token = HashMap::default();
    for (i, u) in defs.iter().enumerate() {
        let err = |field: &str, msg: String| {
            src.error(
                src.line_of_field("users", Some(i), field),
                format!("[[users]] \"{}\": {msg}", u.name),
            )
        };
        let known = |g: &String| g == AUTO_GROUP || index_of(groups, g).is_some();
        if let Some(g) = u.group.as_ref().filter(|g| !known(g)) {
            return Err(err("group", format!("unknown group \"{g}\"")));
        }
        if let Some(g) = u.groups.iter().find(|g| !known(g)) {
            return Err(err("groups", format!("groups names unknown group \"{g}\"")));
        }
        check_budget(u.budget_usd).map_err(|e| err("budget_usd", e))?;
        check_budget_period(u.budget_usd, u.budget_period).map_err(|e| err("budget_period", e))?;
        let token_sha256 = match &u.token_sha256 {
            Some(hex) => Some(sha256_from_hex(hex.trim()).ok_or_else(|| {
                err(
                    "token_sha256",
                    "token_sha256 must be 64 hex characters (`tollgate user token`)".into(),
                )
            })?),
            None => None,
        };
        if let Some(hash) = token_sha256 {
            if by_token.insert(hash, u.name.clone()).is_some() {
                return Err(err(
                    "token_sha256",
                    "the same user token is used by another user".into(),
                ));
            }
        }
        let user = User {
            name: u.name.clone(),
            group: u.group.clone(),
            groups: u.groups.clone(),
            token_sha256,
            budget_usd: u.budget_usd,
            budget_period: u.budget_period,
        };
        if users.insert(u.name.clone(), user).is_some() {
            return Err(err("name", "duplicate user name".into()));
        }
    }
    Ok((users, by_token))
}

/// A user token must not also be a `[[keys]]` secret: whoever holds the
/// key (often pasted into a client's settings) could then sign in as the
/// user and make keys.
pub(super) fn check_tokens_are_not_keys(
    defs: &[Arc<UserDef>],
    by_token: &HashMap<[u8; 32], String>,
    keys_by_hash: &HashMap<[u8; 32], Arc<crate::config::Key>>,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    let Some((_, user)) = by_token.iter().find(|(h, _)| keys_by_hash.contains_key(*h)) else {
        return Ok(());
    };
    let i = defs.iter().position(|u| &u.name == user);
    Err(src.error(
        src.line_of_field("users", i, "token_sha256"),
        format!(
            "[[users]] \"{user}\": token_sha256 is also the secret of a [[keys]] item; give \
             the user a token of her own (`tollgate user token`)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(users: &str) -> Result<Users, String> {
        let src = Source {
            file: "t.toml",
            text: users,
        };
        let groups_text = "[[groups]]\nname = \"g\"\nratio = 1\n";
        let groups =
            super::super::groups::compile(&super::super::items("groups", groups_text), &src)
                .map_err(|e| e.to_string())?;
        compile(&super::super::items("users", users), &groups, &src).map_err(|e| e.message)
    }

    #[test]
    fn groups_and_tokens_are_checked() {
        let hash = "ab".repeat(32);
        let (users, by_token) = load(&format!(
            "[[users]]\nname = \"alice\"\ngroups = [\"g\", \"auto\"]\ntoken_sha256 = \"{hash}\"\n"
        ))
        .unwrap();
        assert_eq!(users["alice"].groups, ["g", "auto"]);
        assert_eq!(by_token[&[0xab; 32]], "alice");
        let e = load("[[users]]\nname = \"a\"\ngroups = [\"nope\"]\n").unwrap_err();
        assert_eq!(e, "[[users]] \"a\": groups names unknown group \"nope\"");
        let e = load("[[users]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n").unwrap_err();
        assert!(e.contains("token_sha256 must be 64 hex characters"), "{e}");
        let twice = format!(
            "[[users]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\n\
             [[users]]\nname = \"b\"\ntoken_sha256 = \"{hash}\"\n"
        );
        let e = load(&twice).unwrap_err();
        assert_eq!(
            e,
            "[[users]] \"b\": the same user token is used by another user"
        );
    }

    #[test]
    fn a_user_token_that_is_also_a_key_is_refused() {
        let text = format!(
            "[[groups]]\nname = \"g\"\nratio = 1\n\
             [[users]]\nname = \"a\"\ngroup = \"g\"\n\
             [[users]]\nname = \"b\"\ntoken_sha256 = \"{0}\"\n\
             [[keys]]\nname = \"k\"\nuser = \"a\"\nkey_sha256 = \"{0}\"\n",
            "cd".repeat(32)
        );
        let e = crate::config::load_text(
            "t.toml",
            text,
            &|_: &str| None,
            &crate::health::HealthRegistry::default(),
            1,
            &mut Default::default(),
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "t.toml:9: [[users]] \"b\": token_sha256 is also the secret of a [[keys]] item; \
             give the user a token of her own (`tollgate user token`)"
        );
    }
}
