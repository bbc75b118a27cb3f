//! Listing, creating, changing and revoking keys, for a user (`/api/keys`,
//! her own keys, the groups she may pick) or for the admin (`/admin/keys`,
//! anyone's keys, any group). The secret of a new key is in the creation
//! answer only; the store keeps its SHA-256 and last 4 characters.

use serde_json::{json, Map, Value};

use super::fields::{self, MUTABLE};
use super::registry::{CreateLimits, CreateRefusal, KeyFields, KeyRecord, SetBy};
use super::service::{json_object, Answer, KeyService};
use crate::clock::now_ms;
use crate::config::{compile_managed_key, sha256, Key, Snapshot, AUTO_GROUP};
use crate::errors::{ApiError, ErrorKind};
use crate::metering::cost::usd_to_nanos;
use crate::metering::report;

/// Who acts: a signed-in user on her own keys, or the admin on anyone's.
#[derive(Clone, Copy)]
pub enum Actor<'a> {
    User(&'a str),
    Admin,
}

impl Actor<'_> {
    /// Groups set by the admin are kept while they exist; a user's only
    /// while she may pick them.
    fn sets(self) -> SetBy {
        match self {
            Actor::User(_) => SetBy::User,
            Actor::Admin => SetBy::Admin,
        }
    }
}

/// A user may create this many times `max_keys_per_user` keys a day
/// (the admin any number): room to replace every key a few times over.
const KEYS_A_DAY_PER_KEY_HELD: usize = 4;

fn not_found(name: &str) -> ApiError {
    ApiError::new(ErrorKind::KeyNotFound, format!("no key named \"{name}\""))
}

impl KeyService {
    /// The keys of `user` (all users' for the admin without one), TOML and
    /// managed, by name; revoked keys are not listed.
    pub(super) fn list_keys(&self, snap: &Snapshot, user: Option<&str>, admin: bool) -> Value {
        let mut rows: Vec<(String, Value)> = snap
            .keys_by_hash
            .values()
            .filter(|k| user.is_none() || k.user.as_deref() == user)
            .map(|k| (k.name.clone(), self.toml_row(k, admin)))
            .collect();
        rows.extend(
            self.registry
                .records()
                .into_iter()
                .filter(|r| !r.revoked && user.is_none_or(|u| r.user == u))
                .map(|r| (r.name.clone(), self.managed_row(snap, &r, admin))),
        );
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        json!({"object": "list", "data": rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>()})
    }

    /// `POST`: a new managed key; 201 with its secret.
    pub(super) fn create_key(
        &self,
        snap: &Snapshot,
        actor: Actor<'_>,
        body: &[u8],
    ) -> Result<Answer, ApiError> {
        let mut body = json_object(body)?;
        let name = fields::check_name(body.get("name").unwrap_or(&Value::Null))?;
        body.remove("name");
        let user = match actor {
            Actor::User(u) => u.to_string(),
            Actor::Admin => match body.remove("user") {
                Some(Value::String(u)) if snap.users.contains_key(&u) => u,
                Some(Value::String(u)) => {
                    return Err(ApiError::new(
                        ErrorKind::InvalidField,
                        format!("unknown user \"{u}\""),
                    ))
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorKind::InvalidField,
                        "user is required: the user the key is for",
                    ))
                }
            },
        };
        let now = now_ms();
        let mut f = KeyFields::default();
        let allowed: Vec<&str> = MUTABLE
            .iter()
            .copied()
            .filter(|f| *f != "disabled")
            .collect();
        fields::apply(&mut f, &body, &allowed, (now / 1000) as i64)?;
        self.check_groups(snap, actor, &user, &f)?;
        if snap.keys_by_hash.values().any(|k| k.name == name) {
            return Err(name_taken(&name));
        }
        let secret = super::session::fresh_secret("sk-tg-");
        let record = KeyRecord {
            name: name.clone(),
            user,
            sha256: hex::encode(sha256(&secret)),
            hint: secret[secret.len() - 4..].to_string(),
            fields: f,
            disabled: false,
            revoked: false,
            created_ms: now,
            updated_ms: now,
            groups_set_by: actor.sets(),
        };
        check_compiles(snap, &record)?;
        let limits = CreateLimits {
            live: snap.server.max_keys_per_user,
            per_day: matches!(actor, Actor::User(_))
                .then_some(KEYS_A_DAY_PER_KEY_HELD * snap.server.max_keys_per_user),
        };
        match self.registry.create(record.clone(), limits) {
            Ok(Ok(())) => {}
            Ok(Err(CreateRefusal::NameTaken)) => return Err(name_taken(&name)),
            Ok(Err(CreateRefusal::TooMany(held))) => {
                return Err(ApiError::new(
                    ErrorKind::TooManyKeys,
                    format!(
                        "user \"{}\" holds {held} keys, the most allowed ([server] \
                         max_keys_per_user); revoke one first",
                        record.user
                    ),
                ))
            }
            Ok(Err(CreateRefusal::TooManyToday(wait))) => {
                return Err(ApiError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "you created {} keys in the last 24 hours, the most allowed ({} x \
                         [server] max_keys_per_user, revoked keys included): retry in {wait} s",
                        KEYS_A_DAY_PER_KEY_HELD * snap.server.max_keys_per_user,
                        KEYS_A_DAY_PER_KEY_HELD
                    ),
                )
                .with_retry_after(wait))
            }
            Err(e) => return Err(store_failed(&e)),
        }
        let mut row = self.managed_row(snap, &record, matches!(actor, Actor::Admin));
        row["key"] = json!(secret);
        Ok(Answer::json(201, &row))
    }

    /// `PATCH {name}`: any subset of the mutable fields.
    pub(super) fn change_key(
        &self,
        snap: &Snapshot,
        actor: Actor<'_>,
        name: &str,
        body: &[u8],
    ) -> Result<Answer, ApiError> {
        let body = json_object(body)?;
        let record = self.update_record(snap, actor, name, |record| {
            let disabled = fields::apply(
                &mut record.fields,
                &body,
                &MUTABLE,
                (now_ms() / 1000) as i64,
            )?;
            // Changing other fields leaves the groups, and who chose them, as they are.
            if body.contains_key("groups") {
                self.check_groups(snap, actor, &record.user, &record.fields)?;
                record.groups_set_by = actor.sets();
            }
            check_compiles(snap, record)?;
            record.disabled = disabled.unwrap_or(record.disabled);
            Ok(())
        })?;
        Ok(Answer::json(
            200,
            &self.managed_row(snap, &record, matches!(actor, Actor::Admin)),
        ))
    }

    /// `DELETE {name}`: revoked at once; the name stays taken.
    pub(super) fn revoke_key(
        &self,
        snap: &Snapshot,
        actor: Actor<'_>,
        name: &str,
    ) -> Result<Answer, ApiError> {
        self.update_record(snap, actor, name, |record| {
            record.revoked = true;
            Ok(())
        })?;
        Ok(Answer::no_content())
    }

    /// Changes the live managed key `name` that `actor` may change, as
    /// `change` says, reading and writing it under the registry's lock.
    fn update_record(
        &self,
        snap: &Snapshot,
        actor: Actor<'_>,
        name: &str,
        change: impl FnOnce(&mut KeyRecord) -> Result<(), ApiError>,
    ) -> Result<KeyRecord, ApiError> {
        let updated = self.registry.update(name, |held| {
            let mut record = managed_record(snap, actor, name, held)?;
            change(&mut record)?;
            record.updated_ms = now_ms().max(record.updated_ms + 1);
            Ok(record)
        });
        updated.map_err(|e| store_failed(&e))?
    }

    /// A user may put on a key only the groups she may pick; the admin any
    /// group of the config.
    fn check_groups(
        &self,
        snap: &Snapshot,
        actor: Actor<'_>,
        user: &str,
        f: &KeyFields,
    ) -> Result<(), ApiError> {
        let Some(groups) = &f.groups else {
            return Ok(());
        };
        let pickable: Vec<&str> = match (actor, snap.users.get(user)) {
            (Actor::User(_), Some(u)) => snap.pickable_groups(u),
            (Actor::User(_), None) => Vec::new(),
            (Actor::Admin, _) => return Ok(()),
        };
        match groups.iter().find(|g| !pickable.contains(&g.as_str())) {
            Some(g) => Err(ApiError::new(
                ErrorKind::GroupNotAllowed,
                format!("you may not use group \"{g}\"; you may pick {pickable:?}"),
            )),
            None => Ok(()),
        }
    }

    fn toml_row(&self, k: &Key, admin: bool) -> Value {
        let mut row = json!({
            "name": k.name,
            "hint": null,
            "managed": false,
            "groups": k.group_names,
            "inactive_groups": [],
            "models": (!k.model_patterns.is_empty()).then_some(&k.model_patterns),
            "expires": k.expires_unix.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "rpm": k.rpm,
            "tpm": k.tpm,
            "max_concurrent": k.max_concurrent,
            "allow_ips": k.allow_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "disabled": false,
            "created": null,
        });
        self.add_spend(&mut row, &k.name, k.budget_usd, k.budget_period);
        if admin {
            row["user"] = json!(k.user);
        }
        row
    }

    fn managed_row(&self, snap: &Snapshot, r: &KeyRecord, admin: bool) -> Value {
        let f = &r.fields;
        let default_group = snap
            .users
            .get(&r.user)
            .map(|u| vec![u.default_group().to_string()]);
        let inactive = match (&f.groups, r.groups_in_force(snap)) {
            (Some(stored), Some(split)) => split.inactive(stored),
            _ => Vec::new(),
        };
        let mut row = json!({
            "name": r.name,
            "hint": r.hint,
            "managed": true,
            "groups": f.groups.clone().or(default_group).unwrap_or_default(),
            "inactive_groups": inactive,
            "groups_set_by": r.groups_set_by,
            "models": f.models,
            "expires": f.expires,
            "rpm": f.rpm,
            "tpm": f.tpm,
            "max_concurrent": f.max_concurrent,
            "allow_ips": f.allow_ips,
            "disabled": r.disabled,
            "created": chrono::DateTime::from_timestamp_millis(r.created_ms as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        });
        self.add_spend(&mut row, &r.name, f.budget_usd, f.budget_period);
        if admin {
            row["user"] = json!(r.user);
        }
        row
    }

    /// Budget, lifetime spend and what is left of the budget (in its
    /// current period), in USD for display and exact nano-USD.
    fn add_spend(
        &self,
        row: &mut Value,
        name: &str,
        budget: Option<rust_decimal::Decimal>,
        period: Option<crate::config::BudgetPeriod>,
    ) {
        let spend = self.metering.key_spend(name);
        let (in_period, _) = spend.against(period, self.metering.today());
        let left = budget.map(|b| (usd_to_nanos(b) - in_period).max(0));
        let fields: Map<String, Value> = [
            ("budget_usd", budget.map_or(Value::Null, report::number)),
            ("budget_period", json!(period.map(|p| p.as_str()))),
            ("spent_usd", report::usd(spend.totals.cost_nanos)),
            ("spent_nano_usd", json!(spend.totals.cost_nanos)),
            ("budget_left_usd", left.map_or(Value::Null, report::usd)),
            ("budget_left_nano_usd", json!(left)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(row) = row.as_object_mut() {
            row.extend(fields);
        }
    }
}

/// The live managed key `name` (`held`: the record of that name) that
/// `actor` may change: another user's key reads as missing, a TOML key as
/// not changeable here.
fn managed_record(
    snap: &Snapshot,
    actor: Actor<'_>,
    name: &str,
    held: Option<&KeyRecord>,
) -> Result<KeyRecord, ApiError> {
    let mine = |user: Option<&str>| match actor {
        Actor::User(me) => user == Some(me),
        Actor::Admin => true,
    };
    if let Some(r) = held.filter(|r| !r.revoked && mine(Some(&r.user))) {
        return Ok(r.clone());
    }
    if snap
        .keys_by_hash
        .values()
        .any(|k| k.name == name && mine(k.user.as_deref()))
    {
        return Err(ApiError::new(
            ErrorKind::KeyNotManaged,
            format!("key \"{name}\" is defined in the config file; change it there"),
        ));
    }
    Err(not_found(name))
}

fn name_taken(name: &str) -> ApiError {
    ApiError::new(
        ErrorKind::KeyNameTaken,
        format!(
            "the key name \"{name}\" is taken (key names are unique across all users, and \
             a revoked key's name stays taken): choose another"
        ),
    )
}

fn store_failed(e: &anyhow::Error) -> ApiError {
    tracing::error!("managed keys: cannot write the store: {e:#}");
    ApiError::new(
        ErrorKind::StoreUnavailable,
        "the key store cannot be written right now; nothing was changed: retry later",
    )
}

/// The key as the config would compile it now: what a `[[keys]]` item
/// with these fields would be refused for (a glob, an address, a group
/// `auto` without `auto_groups`) is refused here too.
fn check_compiles(snap: &Snapshot, record: &KeyRecord) -> Result<(), ApiError> {
    if let Some(g) = record
        .fields
        .groups
        .iter()
        .flatten()
        .find(|g| *g != AUTO_GROUP && snap.group_index(g).is_none())
    {
        return Err(ApiError::new(
            ErrorKind::GroupNotAllowed,
            format!("unknown group \"{g}\""),
        ));
    }
    compile_managed_key(&record.key_def(), snap)
        .map(|_| ())
        .map_err(|(field, message)| {
            ApiError::new(ErrorKind::InvalidField, format!("{field}: {message}"))
        })
}
