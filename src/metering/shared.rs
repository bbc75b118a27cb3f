//! Metering in cluster mode (docs/cluster.md): admission asks Redis, a
//! settled request publishes this node's own totals, and the node's
//! totals are what it re-publishes when Redis lost them.

use std::sync::Arc;

use super::limits::{lock_spend, Account, Budget, BudgetRefusal, KeyAccount, Spend};
use super::period::bounds;
use super::{budget_error, concurrency_error, rpm_error, tpm_error, Admission, Metering};
use crate::cluster::{
    AdmitRequest, Cluster, Granted, Kind, Lease, OwnSpend, OwnTotals, Refusal, Round, SharedBudget,
};
use crate::config::{BudgetPeriod, Key};
use crate::errors::{ApiError, ErrorKind};

/// What a request asks of the budgets (see `Metering::plan`).
pub(super) struct Plan {
    pub key_acc: Arc<KeyAccount>,
    pub user_acc: Option<Arc<Account>>,
    pub key_budget: Option<Budget>,
    pub user_budget: Option<Budget>,
    pub key_period: Option<BudgetPeriod>,
    pub user_period: Option<BudgetPeriod>,
    pub reserved: i64,
    pub admitted_ms: u64,
    pub today: u32,
}

fn days_of(period: Option<BudgetPeriod>, today: u32) -> Option<(u32, u32)> {
    period.map(|p| bounds(p, today))
}

/// Records the other nodes' spend that Redis reported, in the scope of
/// the account's budget.
fn note_others(acc: &Account, shared: i64, period: Option<BudgetPeriod>, today: u32) {
    let mut spend = lock_spend(acc);
    spend.others = 0;
    let (own, _) = spend.against(period, today);
    spend.others = shared.saturating_sub(own).max(0);
    if period.is_none() {
        spend.others_lifetime = spend.others;
    }
}

impl Metering {
    /// The cluster's decision: `None` when Redis could not decide and this
    /// node decides alone (`on_redis_error = "local"`).
    pub(super) async fn admit_shared(
        &self,
        cluster: &Arc<Cluster>,
        key: &Key,
        plan: &Plan,
    ) -> Option<Result<(Arc<Cluster>, Lease), ApiError>> {
        let shared = |b: Option<Budget>| {
            b.map(|b| SharedBudget {
                nanos: b.nanos,
                days: days_of(b.period, plan.today),
            })
        };
        let req = AdmitRequest {
            key: &key.name,
            user: key.user.as_deref(),
            reserved: plan.reserved,
            key_budget: shared(plan.key_budget),
            user_budget: shared(plan.user_budget),
            key_days: days_of(plan.key_period, plan.today),
            user_days: days_of(plan.user_period, plan.today),
            max_concurrent: key.max_concurrent.unwrap_or(0),
            rpm: key.rpm.unwrap_or(0),
            tpm: key.tpm.unwrap_or(0),
        };
        match cluster.admit(&req).await {
            Ok(Ok(admitted)) => {
                note_others(
                    &plan.key_acc.account,
                    admitted.key_spent,
                    plan.key_period,
                    plan.today,
                );
                if let Some(user) = &plan.user_acc {
                    note_others(user, admitted.user_spent, plan.user_period, plan.today);
                }
                Some(Ok((Arc::clone(cluster), admitted.lease)))
            }
            Ok(Err(refusal)) => Some(Err(refusal_error(refusal, key))),
            Err(_) if cluster.refuses_when_down() => Some(Err(cluster_unavailable())),
            Err(_) => None,
        }
    }

    /// Queues the publication of a settled request: this node's own totals
    /// of its key and user, its tokens, the end of its lease.
    pub(super) fn publish(
        &self,
        cluster: &Cluster,
        admission: &mut Admission,
        key: &Key,
        tokens: u64,
    ) {
        let day = super::day_of(admission.admitted_ms);
        let own = |kind: Kind, name: &str, acc: &Account| {
            let s = lock_spend(acc);
            OwnTotals {
                kind,
                name: name.to_string(),
                total: s.totals.cost_nanos,
                days: vec![(day, s.days.sum(day, day + 1).0)],
            }
        };
        let mut totals = vec![own(Kind::Key, &key.name, &admission.key.account)];
        if let (Some(name), Some(user)) = (key.user.as_deref(), admission.user.as_deref()) {
            totals.push(own(Kind::User, name, user));
        }
        let lease = admission.lease.take().map(|(_, lease)| lease);
        let tokens = key.tpm.map(|tpm| (key.name.as_str(), tpm, tokens));
        cluster.settle(lease, totals, tokens);
    }

    /// Before `/api/usage` answers: the cluster-wide spend of the key and
    /// its user (lifetime and the budget's period), one bounded round trip.
    /// Without Redis, the figures last seen stay.
    pub async fn refresh_shared(&self, key: &Key, user_period: Option<BudgetPeriod>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let today = self.today();
        let mut wanted = vec![
            (Kind::Key, key.name.as_str(), None),
            (
                Kind::Key,
                key.name.as_str(),
                days_of(key.budget_period, today),
            ),
        ];
        if let Some(user) = key.user.as_deref() {
            wanted.push((Kind::User, user, None));
            wanted.push((Kind::User, user, days_of(user_period, today)));
        }
        let Some(sums) = cluster.spent(&wanted).await else {
            return;
        };
        let apply = |acc: &Account, lifetime: i64, scoped: i64, period| {
            note_others(acc, scoped, period, today);
            let mut s = lock_spend(acc);
            s.others_lifetime = lifetime.saturating_sub(s.totals.cost_nanos).max(0);
        };
        apply(
            &self.key_account(&key.name).account,
            sums[0],
            sums[1],
            key.budget_period,
        );
        if let Some(user) = key.user.as_deref() {
            apply(&self.user_account(user), sums[2], sums[3], user_period);
        }
    }
}

/// `on_redis_error = "refuse"` while Redis is out of reach.
pub(super) fn cluster_unavailable() -> ApiError {
    ApiError::new(
        ErrorKind::ClusterUnavailable,
        "the gateway cannot reach its cluster's shared state; retry shortly",
    )
    .with_retry_after(1)
}

fn refusal_error(refusal: Refusal, key: &Key) -> ApiError {
    match refusal {
        Refusal::KeyExhausted => budget_error(BudgetRefusal::Exhausted, "this API key"),
        Refusal::KeyHeld => budget_error(BudgetRefusal::HeldInFlight, "this API key"),
        Refusal::UserExhausted => budget_error(BudgetRefusal::Exhausted, "this user"),
        Refusal::UserHeld => budget_error(BudgetRefusal::HeldInFlight, "this user"),
        Refusal::Concurrency => concurrency_error(key.max_concurrent.unwrap_or(0)),
        Refusal::Tpm(wait) => tpm_error(key.tpm.unwrap_or(0), wait),
        Refusal::Rpm(wait) => rpm_error(key.rpm.unwrap_or(0), wait),
    }
}

pub(super) fn own_totals(kind: Kind, name: &str, s: &Spend) -> OwnTotals {
    OwnTotals {
        kind,
        name: name.to_string(),
        total: s.totals.cost_nanos,
        days: s.days.spent_days().collect(),
    }
}

impl OwnSpend for Metering {
    fn all_accounts(&self) -> Vec<(Kind, String)> {
        let mut all: Vec<(Kind, String)> = self
            .ledger
            .accounts()
            .into_iter()
            .map(|(k, n)| (if k == b'u' { Kind::User } else { Kind::Key }, n))
            .collect();
        all.extend(self.keys.names().into_iter().map(|n| (Kind::Key, n)));
        all.extend(self.users.names().into_iter().map(|n| (Kind::User, n)));
        all
    }

    fn own_totals(&self, kind: Kind, name: &str) -> OwnTotals {
        let spend = match kind {
            Kind::Key => self.key_spend(name),
            Kind::User => self.user_spend(name),
        };
        own_totals(kind, name, &spend)
    }

    fn grant_round(&self, keys: &[String], generation: u64) -> Round {
        self.build_round(keys, generation)
    }

    fn apply_grants(&self, round: &Round, granted: Option<&[Granted]>, generation: u64) {
        self.apply_round(round, granted, generation);
    }
}
