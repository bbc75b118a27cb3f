//! Prometheus metrics of SPEC §5, in a registry of our own (served by the
//! admin listener). Label values never carry secrets: only group, model,
//! channel and user names from the config.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub upstream_ttfb_seconds: HistogramVec,
    pub upstream_failures_total: IntCounterVec,
    pub failovers_total: IntCounterVec,
    pub channel_up: IntGaugeVec,
    pub config_reloads_total: IntCounterVec,
    pub config_generation: IntGauge,
    /// Spend in exact integer nano-USD; `tollgate_spend_usd_total` is
    /// derived from it at scrape time (see [`NanosAsUsd`]).
    pub spend_nano_usd_total: IntCounterVec,
    pub user_spend_nano_usd_total: IntCounterVec,
    pub tokens_total: IntCounterVec,
    pub budget_remaining_usd: GaugeVec,
    pub ledger_pending: IntGauge,
    pub ledger_dropped_total: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let requests_total = counter(
            "tollgate_requests_total",
            "Client requests by billing group, model, serving channel and status code",
            &["group", "model", "channel", "code"],
        );
        let request_duration_seconds = histogram(
            "tollgate_request_duration_seconds",
            "Whole request time, first byte in to last byte out",
            &["group", "model"],
        );
        let upstream_ttfb_seconds = histogram(
            "tollgate_upstream_ttfb_seconds",
            "Time from sending a request upstream to its response head",
            &["channel"],
        );
        let upstream_failures_total = counter(
            "tollgate_upstream_failures_total",
            "Failed upstream attempts by channel and reason",
            &["channel", "reason"],
        );
        let failovers_total = counter(
            "tollgate_failovers_total",
            "Retries on another channel after a failed attempt",
            &["from_group", "to_group"],
        );
        let channel_up = IntGaugeVec::new(
            Opts::new(
                "tollgate_channel_up",
                "1 when the channel is usable, 0 when cooling down or disabled",
            ),
            &["channel"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(channel_up.clone()))
            .expect("unique metric");
        let config_reloads_total = counter(
            "tollgate_config_reloads_total",
            "Config loads by result (ok or error)",
            &["result"],
        );
        let config_generation = IntGauge::new(
            "tollgate_config_generation",
            "Generation of the running config",
        )
        .expect("valid metric");
        registry
            .register(Box::new(config_generation.clone()))
            .expect("unique metric");
        let spend_nano_usd_total = counter(
            "tollgate_spend_nano_usd_total",
            "Billed spend in nano-USD (1e-9 USD, exact) by billing group and model",
            &["group", "model"],
        );
        let user_spend_nano_usd_total = counter(
            "tollgate_user_spend_nano_usd_total",
            "Billed spend in nano-USD (1e-9 USD, exact) by user",
            &["user"],
        );
        for (source, name, help) in [
            (
                &spend_nano_usd_total,
                "tollgate_spend_usd_total",
                "Billed spend in USD by billing group and model",
            ),
            (
                &user_spend_nano_usd_total,
                "tollgate_user_spend_usd_total",
                "Billed spend in USD by user",
            ),
        ] {
            registry
                .register(Box::new(NanosAsUsd::new(source.clone(), name, help)))
                .expect("unique metric");
        }
        let tokens_total = counter(
            "tollgate_tokens_total",
            "Billed tokens by billing group, model and kind",
            &["group", "model", "kind"],
        );
        let budget_remaining_usd = GaugeVec::new(
            Opts::new(
                "tollgate_budget_remaining_usd",
                "What is left of a user's budget, USD",
            ),
            &["user"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(budget_remaining_usd.clone()))
            .expect("unique metric");
        let ledger_pending = IntGauge::new(
            "tollgate_ledger_pending",
            "Billed requests queued for the ledger writer",
        )
        .expect("valid metric");
        registry
            .register(Box::new(ledger_pending.clone()))
            .expect("unique metric");
        let ledger_dropped_total = IntCounter::new(
            "tollgate_ledger_dropped_total",
            "Billed requests that could not be written to the ledger",
        )
        .expect("valid metric");
        registry
            .register(Box::new(ledger_dropped_total.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            spend_nano_usd_total,
            user_spend_nano_usd_total,
            tokens_total,
            budget_remaining_usd,
            ledger_pending,
            ledger_dropped_total,
            requests_total,
            request_duration_seconds,
            upstream_ttfb_seconds,
            upstream_failures_total,
            failovers_total,
            channel_up,
            config_reloads_total,
            config_generation,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec cannot fail");
        out
    }
}

/// Exports an integer nano-USD counter as a USD counter, computed at scrape
/// time. A float counter incremented per request would accumulate rounding
/// error; this one is the exact integer total divided once by 1e9, so it is
/// the ledger's total to within f64 printing (exact up to 2^53 nano-USD,
/// about 9 million USD per series).
struct NanosAsUsd {
    source: IntCounterVec,
    desc: Desc,
}

impl NanosAsUsd {
    fn new(source: IntCounterVec, name: &str, help: &str) -> Self {
        let labels = source
            .desc()
            .first()
            .map(|d| d.variable_labels.clone())
            .unwrap_or_default();
        let desc =
            Desc::new(name.into(), help.into(), labels, Default::default()).expect("valid metric");
        NanosAsUsd { source, desc }
    }
}

impl Collector for NanosAsUsd {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.source.collect();
        for family in &mut families {
            family.set_name(self.desc.fq_name.clone());
            family.set_help(self.desc.help.clone());
            for metric in family.mut_metric() {
                let nanos = metric.get_counter().get_value();
                let mut usd = prometheus::proto::Counter::default();
                usd.set_value(nanos / 1e9);
                metric.set_counter(usd);
            }
        }
        families
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
