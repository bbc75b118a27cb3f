//! The fields of a key as a client sends them to `POST`/`PATCH
//! /api/keys` (or `/admin/keys`): shapes, ranges and names, checked before
//! anything is stored, each refusal naming the field and what it accepts.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::registry::KeyFields;
use crate::config::BudgetPeriod;
use crate::errors::{ApiError, ErrorKind};

pub const NAME_RULE: &str = "key names are 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'";
/// The largest budget: its nano-USD fit an i64 with room to spare.
const MAX_BUDGET_USD: i64 = 1_000_000_000;
const MAX_RPM: u64 = 10_000_000;
const MAX_TPM: u64 = 1_000_000_000_000;
const MAX_CONCURRENT: u64 = 100_000;
/// Longest list of groups, models or addresses on one key.
const MAX_LIST: usize = 64;

/// Fields a change may set (`PATCH`); creating takes these and `name`.
pub const MUTABLE: [&str; 10] = [
    "groups",
    "models",
    "budget_usd",
    "budget_period",
    "expires",
    "rpm",
    "tpm",
    "max_concurrent",
    "allow_ips",
    "disabled",
];

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidField, message)
}

pub fn check_name(name: &Value) -> Result<String, ApiError> {
    match name.as_str() {
        Some(n)
            if (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(n.to_string())
        }
        _ => Err(invalid(format!("invalid name: {NAME_RULE}"))),
    }
}

/// Applies the fields of `body` named in `allowed` to `fields` (`null`
/// clears one); returns `disabled` if the body sets it. Any other field is
/// refused by name.
pub fn apply(
    fields: &mut KeyFields,
    body: &Map<String, Value>,
    allowed: &[&str],
    now_unix: i64,
) -> Result<Option<bool>, ApiError> {
    let mut disabled = None;
    for (field, value) in body {
        if !allowed.contains(&field.as_str()) {
            return Err(invalid(format!(
                "unknown or read-only field \"{field}\"; a key takes {}",
                allowed.join(", ")
            )));
        }
        let null = value.is_null();
        match field.as_str() {
            "groups" => fields.groups = (!null).then(|| strings(field, value, 1)).transpose()?,
            "models" => fields.models = (!null).then(|| strings(field, value, 1)).transpose()?,
            "allow_ips" if null => fields.allow_ips = Vec::new(),
            "allow_ips" => fields.allow_ips = strings(field, value, 0)?,
            "budget_usd" => fields.budget_usd = (!null).then(|| budget(value)).transpose()?,
            "budget_period" => fields.budget_period = (!null).then(|| period(value)).transpose()?,
            "expires" => fields.expires = (!null).then(|| expires(value, now_unix)).transpose()?,
            "rpm" => fields.rpm = limit(field, value, MAX_RPM)?.map(|n| n as u32),
            "tpm" => fields.tpm = limit(field, value, MAX_TPM)?,
            "max_concurrent" => {
                fields.max_concurrent = limit(field, value, MAX_CONCURRENT)?.map(|n| n as u32)
            }
            "disabled" => {
                disabled = Some(
                    value
                        .as_bool()
                        .ok_or_else(|| invalid("disabled must be true or false".into()))?,
                )
            }
            _ => {}
        }
    }
    if fields.budget_period.is_some() && fields.budget_usd.is_none() {
        return Err(invalid("budget_period needs a budget_usd".into()));
    }
    Ok(disabled)
}

/// A list of 1 (or `min`) to 64 non-empty strings of up to 200 bytes.
fn strings(field: &str, value: &Value, min: usize) -> Result<Vec<String>, ApiError> {
    let bad = || {
        invalid(format!(
            "{field} must be a list of {min} to {MAX_LIST} non-empty strings"
        ))
    };
    let list = value.as_array().ok_or_else(bad)?;
    if list.len() < min || list.len() > MAX_LIST {
        return Err(bad());
    }
    list.iter()
        .map(|v| match v.as_str().map(str::trim) {
            Some(s) if !s.is_empty() && s.len() <= 200 => Ok(s.to_string()),
            _ => Err(bad()),
        })
        .collect()
}

/// USD, a JSON number or a decimal string, read exactly (never as a binary
/// float): 0 to 1,000,000,000.
fn budget(value: &Value) -> Result<Decimal, ApiError> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => String::new(),
    };
    let usd = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
        .filter(|d| !d.is_sign_negative() && *d <= Decimal::from(MAX_BUDGET_USD));
    usd.map(|d| d.normalize()).ok_or_else(|| {
        invalid(format!(
            "budget_usd must be a number of USD from 0 to {MAX_BUDGET_USD}"
        ))
    })
}

fn period(value: &Value) -> Result<BudgetPeriod, ApiError> {
    match value.as_str() {
        Some("day") => Ok(BudgetPeriod::Day),
        Some("week") => Ok(BudgetPeriod::Week),
        Some("month") => Ok(BudgetPeriod::Month),
        _ => Err(invalid(
            "budget_period must be \"day\", \"week\" or \"month\" (or null)".into(),
        )),
    }
}

/// A future RFC 3339 date-time, stored in UTC (`2027-01-01T00:00:00Z`).
fn expires(value: &Value, now_unix: i64) -> Result<String, ApiError> {
    let when = value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.trim()).ok())
        .ok_or_else(|| {
            invalid("expires must be an RFC 3339 date-time like 2027-01-01T00:00:00Z".into())
        })?;
    if when.timestamp() <= now_unix {
        return Err(invalid("expires must be in the future".into()));
    }
    Ok(when
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A positive integer up to `max`, or `null` for none.
fn limit(field: &str, value: &Value, max: u64) -> Result<Option<u64>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    match value.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(format!(
            "{field} must be a whole number from 1 to {max} (or null for no limit)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(body: Value) -> Result<KeyFields, String> {
        let mut f = KeyFields::default();
        apply(&mut f, body.as_object().unwrap(), &MUTABLE, 1_000)
            .map(|_| f)
            .map_err(|e| e.message)
    }

    #[test]
    fn names_follow_the_rule() {
        for good in ["a", "laptop-2.old_x", &"n".repeat(64)] {
            assert_eq!(check_name(&json!(good)).unwrap(), good);
        }
        for bad in [
            json!(""),
            json!("a b"),
            json!("é"),
            json!("a/b"),
            json!(7),
            json!("n".repeat(65)),
        ] {
            let e = check_name(&bad).unwrap_err();
            assert_eq!((e.status, e.code()), (400, "invalid_field"));
            assert!(e
                .message
                .contains("1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"));
        }
    }

    #[test]
    fn a_budget_sent_as_a_json_number_is_read_exactly() {
        let budget = |text: &str| {
            let body = format!(r#"{{"budget_usd": {text}}}"#);
            let body = super::super::service::json_object(body.as_bytes()).unwrap();
            let mut f = KeyFields::default();
            let allowed = ["budget_usd"];
            apply(&mut f, &body, &allowed, 0)
                .map(|_| f.budget_usd.unwrap().to_string())
                .map_err(|e| e.message)
        };
        // Through an f64: 123456789.12345679, 0.30000000000000004.
        assert_eq!(
            budget("123456789.123456789").unwrap(),
            "123456789.123456789"
        );
        assert_eq!(
            budget("0.3000000000000000000001").unwrap(),
            "0.3000000000000000000001"
        );
        assert_eq!(budget("0.1").unwrap(), "0.1");
        assert_eq!(budget("1E2").unwrap(), "100");
        assert_eq!(budget("25e-2").unwrap(), "0.25");
        assert!(budget("-0.5").unwrap_err().contains("budget_usd must be"));
        assert!(budget("1e10").unwrap_err().contains("budget_usd must be"));
    }

    #[test]
    fn fields_are_read_exactly_and_in_range() {
        let f = set(
            json!({"groups": ["claude", "auto"], "budget_usd": 0.1, "budget_period": "week",
                           "expires": "2030-01-01T01:00:00+01:00", "rpm": 60, "tpm": null,
                           "max_concurrent": 2, "allow_ips": ["10.0.0.0/8"]}),
        )
        .unwrap();
        assert_eq!(f.groups.unwrap(), ["claude", "auto"]);
        assert_eq!(f.budget_usd, Some(Decimal::from_str("0.1").unwrap()));
        assert_eq!(f.budget_period, Some(BudgetPeriod::Week));
        assert_eq!(f.expires.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert_eq!((f.rpm, f.tpm, f.max_concurrent), (Some(60), None, Some(2)));
        assert_eq!(
            set(json!({"budget_usd": "12.345"})).unwrap().budget_usd,
            Some(Decimal::from_str("12.345").unwrap())
        );
        for (body, says) in [
            (
                json!({"budget_usd": -1}),
                "budget_usd must be a number of USD from 0 to 1000000000",
            ),
            (json!({"budget_usd": 1e10}), "budget_usd must be"),
            (json!({"budget_usd": "ten"}), "budget_usd must be"),
            (
                json!({"budget_period": "year", "budget_usd": 1}),
                "budget_period must be",
            ),
            (
                json!({"budget_period": "day"}),
                "budget_period needs a budget_usd",
            ),
            (
                json!({"rpm": 0}),
                "rpm must be a whole number from 1 to 10000000",
            ),
            (json!({"rpm": 1.5}), "rpm must be"),
            (json!({"tpm": -3}), "tpm must be"),
            (json!({"max_concurrent": 100001}), "max_concurrent must be"),
            (json!({"groups": []}), "groups must be a list of 1 to 64"),
            (json!({"groups": "claude"}), "groups must be a list"),
            (json!({"models": [""]}), "models must be a list"),
            (
                json!({"expires": "tomorrow"}),
                "expires must be an RFC 3339 date-time",
            ),
            (
                json!({"expires": "1970-01-01T00:00:00Z"}),
                "expires must be in the future",
            ),
            (json!({"disabled": "yes"}), "disabled must be true or false"),
            (
                json!({"key": "sk-mine"}),
                "unknown or read-only field \"key\"",
            ),
        ] {
            let e = set(body.clone()).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
    }
}
