//! `[[keys]]`: what clients present. Sized up front and without per-key
//! copies: a config may hold many thousands of keys, and reload time is
//! mostly spent here and in parsing.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::IpAddr;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use rust_decimal::Decimal;

use super::groups::index_of;
use crate::config::{
    expand_vars, sha256, BudgetPeriod, ConfigError, Group, Key, KeyDef, Snapshot, Source, User,
    AUTO_GROUP, DEFAULT_GROUP,
};

/// The keys by the sha256 of their secret.
pub(super) fn compile(
    defs: &[Arc<KeyDef>],
    users: &HashMap<String, User>,
    groups: &[Group],
    auto_groups: &[usize],
    src: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<HashMap<[u8; 32], Arc<Key>>, ConfigError> {
    let mut keys_by_hash = HashMap::with_capacity(defs.len());
    let mut key_names = HashSet::with_capacity(defs.len());
    for (i, k) in defs.iter().enumerate() {
        // An error about one field of the key (its line, or the header).
        let err = |(name, msg): (&str, String)| {
            src.error(
                src.line_of_field("keys", Some(i), name),
                format!("[[keys]] \"{}\": {msg}", k.name),
            )
        };
        if !key_names.insert(k.name.as_str()) {
            return Err(err(("name", "duplicate key name".into())));
        }
        let hash = secret_hash(k, env, warnings).map_err(err)?;
        let key = compile_key(k, users, groups, auto_groups).map_err(err)?;
        if keys_by_hash.insert(hash, Arc::new(key)).is_some() {
            let secret_field = if k.key.is_some() { "key" } else { "key_sha256" };
            return Err(err((
                secret_field,
                "the same secret is used by another key".into(),
            )));
        }
    }
    Ok(keys_by_hash)
}

/// An error about one field of a key: the field, and the message.
pub type FieldError = (&'static str, String);

/// The sha256 of the key's secret, from `key_sha256` or a plaintext `key`.
fn secret_hash(
    k: &KeyDef,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<[u8; 32], FieldError> {
    match (&k.key_sha256, &k.key) {
        (Some(hex_hash), None) => sha256_from_hex(hex_hash.trim()).ok_or_else(|| {
            (
                "key_sha256",
                "key_sha256 must be 64 hex characters".to_string(),
            )
        }),
        (None, Some(plain)) => {
            let secret = expand_vars(plain, env)
                .map_err(|var| ("key", format!("${{{var}}} in key is not set")))?;
            warnings.push(format!(
                "[[keys]] \"{}\": plaintext `key`; prefer key_sha256 (`tollgate key new`)",
                k.name
            ));
            Ok(sha256(&secret))
        }
        _ => Err(("key_sha256", "set exactly one of key_sha256 or key".into())),
    }
}

/// A key created at runtime (`crate::keys`), compiled against a snapshot
/// by the rules of a `[[keys]]` item: the field at fault and why, if not.
pub fn compile_managed_key(k: &KeyDef, snap: &Snapshot) -> Result<Key, FieldError> {
    compile_key(k, &snap.users, &snap.groups, &snap.auto_groups)
}

fn compile_key(
    k: &KeyDef,
    users: &HashMap<String, User>,
    groups: &[Group],
    auto_groups: &[usize],
) -> Result<Key, FieldError> {
    let user = match &k.user {
        Some(u) => Some(
            users
                .get(u)
                .ok_or_else(|| ("user", format!("unknown user \"{u}\"")))?,
        ),
        None => None,
    };
    let group_names: Vec<String> = match (&k.groups, user) {
        (Some(gs), _) => gs.clone(),
        (None, Some(u)) => vec![u.group.clone().unwrap_or_else(|| DEFAULT_GROUP.to_string())],
        (None, None) => vec![DEFAULT_GROUP.to_string()],
    };
    let key_groups = expand_groups(&group_names, groups, auto_groups)?;
    check_budget(k.budget_usd).map_err(|e| ("budget_usd", e))?;
    check_budget_period(k.budget_usd, k.budget_period).map_err(|e| ("budget_period", e))?;
    for (field, value) in [
        ("rpm", k.rpm.map(u64::from)),
        ("tpm", k.tpm),
        ("max_concurrent", k.max_concurrent.map(u64::from)),
    ] {
        if value == Some(0) {
            return Err((
                field,
                "rpm, tpm and max_concurrent must be > 0 when set".into(),
            ));
        }
    }
    Ok(Key {
        name: k.name.clone(),
        user: user.map(|u| u.name.clone()),
        groups: key_groups,
        group_names,
        models: k.models.as_deref().map(model_globs).transpose()?,
        model_patterns: k.models.clone().unwrap_or_default(),
        expires_unix: k.expires.as_ref().map(expiry).transpose()?,
        allow_ips: k
            .allow_ips
            .iter()
            .map(|cidr| ip_net(cidr))
            .collect::<Result<_, _>>()?,
        budget_usd: k.budget_usd,
        budget_period: k.budget_period,
        user_group: user.map(|u| u.group.as_deref().unwrap_or(DEFAULT_GROUP).to_string()),
        rpm: k.rpm,
        tpm: k.tpm,
        max_concurrent: k.max_concurrent,
    })
}

/// Group indexes in order, `auto` expanded in place, duplicates dropped.
fn expand_groups(
    names: &[String],
    groups: &[Group],
    auto_groups: &[usize],
) -> Result<Vec<usize>, FieldError> {
    if names.is_empty() {
        return Err(("groups", "groups must not be empty".into()));
    }
    let mut out = Vec::new();
    for name in names {
        let expanded = if name == AUTO_GROUP {
            if auto_groups.is_empty() {
                return Err((
                    "groups",
                    "uses group \"auto\" but [routing] auto_groups is empty".into(),
                ));
            }
            auto_groups.to_vec()
        } else {
            vec![index_of(groups, name)
                .ok_or_else(|| ("groups", format!("unknown group \"{name}\"")))?]
        };
        for g in expanded {
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    Ok(out)
}

fn model_globs(patterns: &[String]) -> Result<GlobSet, FieldError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| ("models", format!("models glob \"{p}\": {e}")))?);
    }
    b.build().map_err(|e| ("models", format!("models: {e}")))
}

fn expiry(dt: &toml::value::Datetime) -> Result<i64, FieldError> {
    chrono::DateTime::parse_from_rfc3339(&dt.to_string())
        .map(|t| t.timestamp())
        .map_err(|_| {
            (
                "expires",
                format!("expires = {dt} needs a full RFC 3339 date-time"),
            )
        })
}

fn ip_net(cidr: &str) -> Result<IpNet, FieldError> {
    cidr.parse::<IpNet>()
        .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            (
                "allow_ips",
                format!("allow_ips entry \"{cidr}\" is not a CIDR"),
            )
        })
}

/// A period without a budget to reset is a mistake, not a no-op.
pub(super) fn check_budget_period(
    budget: Option<Decimal>,
    period: Option<BudgetPeriod>,
) -> Result<(), String> {
    match (budget, period) {
        (None, Some(p)) => Err(format!(
            "budget_period = \"{}\" needs a budget_usd",
            p.as_str()
        )),
        _ => Ok(()),
    }
}

pub(super) fn check_budget(budget: Option<Decimal>) -> Result<(), String> {
    match budget {
        Some(b) if b.is_sign_negative() => Err(format!("budget_usd must be >= 0, got {b}")),
        _ => Ok(()),
    }
}

/// A `key_sha256` value's 64 hex digits (either case) as bytes. By hand,
/// from a table of digit values and without a branch per digit:
/// `hex::decode_to_slice` took ~1,000 instructions a key, 8% of a reload
/// of 10,000 keys.
pub fn sha256_from_hex(text: &str) -> Option<[u8; 32]> {
    /// Each byte's value as a hex digit; 0xff where it is none.
    const DIGIT: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut i = 0;
        while i < 16 {
            table[b"0123456789abcdef"[i] as usize] = i as u8;
            table[b"0123456789ABCDEF"[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    let digits: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut bytes = [0u8; 32];
    let mut seen = 0;
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let (high, low) = (DIGIT[pair[0] as usize], DIGIT[pair[1] as usize]);
        seen |= high | low;
        *byte = (high << 4) | low;
    }
    // A digit's value fits in 4 bits; 0xff does not.
    (seen < 16).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> Group {
        Group {
            name: name.into(),
            ratio: Decimal::ONE,
            description: String::new(),
            connectivity: String::new(),
            all_channels: false,
            selectable: false,
            user_ratios: Vec::new(),
        }
    }

    #[test]
    fn auto_expands_in_place_without_duplicates() {
        let groups = [group("a"), group("b"), group("c")];
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            expand_groups(&names(&["c", "auto", "b"]), &groups, &[1, 2, 0]).unwrap(),
            [2, 1, 0]
        );
        assert!(expand_groups(&names(&["auto"]), &groups, &[])
            .unwrap_err()
            .1
            .contains("auto_groups is empty"));
        assert_eq!(
            expand_groups(&names(&["x"]), &groups, &[]).unwrap_err().0,
            "groups"
        );
        assert!(expand_groups(&[], &groups, &[]).is_err());
    }

    #[test]
    fn limits_addresses_and_dates_are_checked() {
        assert!(ip_net("10.0.0.0/8").is_ok() && ip_net("::1").is_ok());
        assert_eq!(ip_net("10.0.0.0/33").unwrap_err().0, "allow_ips");
        let date: toml::value::Datetime = "2027-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(expiry(&date).unwrap(), 1_798_761_600);
        let day_only: toml::value::Datetime = "2027-01-01".parse().unwrap();
        assert!(expiry(&day_only).is_err());
        assert!(check_budget(Some(Decimal::NEGATIVE_ONE)).is_err());
        let k: KeyDef = toml::from_str("name = \"k\"\nkey_sha256 = \"x\"\ntpm = 0").unwrap();
        assert_eq!(
            compile_key(&k, &HashMap::new(), &[group("default")], &[])
                .unwrap_err()
                .0,
            "tpm"
        );
    }

    #[test]
    fn key_hashes_are_read_from_hex_like_the_hex_crate_reads_them() {
        let secret = sha256("sk-x");
        let lower = hex::encode(secret);
        assert_eq!(sha256_from_hex(&lower), Some(secret));
        assert_eq!(sha256_from_hex(&lower.to_uppercase()), Some(secret));
        for bad in [
            &lower[1..],
            &format!("{lower}0"),
            &format!("g{}", &lower[1..]),
            "",
        ] {
            assert_eq!(sha256_from_hex(bad), None, "{bad}");
        }
        let mut all_digits = "0123456789abcdefABCDEF".repeat(3);
        all_digits.truncate(64);
        let mut expected = [0u8; 32];
        hex::decode_to_slice(&all_digits, &mut expected).unwrap();
        assert_eq!(sha256_from_hex(&all_digits), Some(expected));
        // Every ASCII byte, as a high and as a low digit.
        for b in 0u8..128 {
            for at in [0, 63] {
                let mut text = lower.clone().into_bytes();
                text[at] = b;
                let text = String::from_utf8(text).unwrap();
                let mut by_hex = [0u8; 32];
                let by_hex = hex::decode_to_slice(&text, &mut by_hex).map(|_| by_hex);
                assert_eq!(sha256_from_hex(&text), by_hex.ok(), "{text}");
            }
        }
    }
}
