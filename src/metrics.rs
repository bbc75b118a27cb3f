//! Prometheus metrics (docs/operations.md, "Metrics"), in a registry of our own (served by the
//! admin listener). Label values never carry secrets: only group, model,
//! channel and user names from the config.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub upstream_ttfb_seconds: HistogramVec,
    pub upstream_failures_total: IntCounterVec,
    pub failovers_total: IntCounterVec,
    /// By `result`: `hit`, `miss`, `moved` (see [`AffinityResult`]).
    pub affinity_total: IntCounterVec,
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
    /// By group, then model: grows with the pairs served, as the series
    /// themselves do (a model must be routable to be served).
    model_series: RwLock<foldhash::HashMap<String, foldhash::HashMap<String, Arc<ModelSeries>>>>,
}

/// The series of one (group, model) pair, looked up once and kept:
/// `with_label_values` hashes every label byte and takes a lock (~230
/// instructions), and every request used it for four of these. Each
/// series is made when first counted, as `with_label_values` would, so
/// /metrics shows the same series as without this cache.
pub struct ModelSeries {
    group: String,
    model: String,
    spend_nano_usd: OnceLock<IntCounter>,
    duration_seconds: OnceLock<Histogram>,
    /// By [`TokenKind`].
    tokens: [OnceLock<IntCounter>; 10],
}

/// The `kind` label of `tollgate_tokens_total`.
#[derive(Clone, Copy)]
pub enum TokenKind {
    Input,
    Output,
    CachedInput,
    CacheWrite,
    CacheWrite1h,
    /// Images generated or edited.
    Images,
    /// Input image tokens (gpt-image-1).
    ImageInput,
    /// Milliseconds of transcribed audio.
    AudioMs,
    /// Characters of speech input.
    Chars,
    /// Output image tokens counted apart (Gemini).
    ImageOutput,
}

impl TokenKind {
    fn label(self) -> &'static str {
        match self {
            TokenKind::Input => "input",
            TokenKind::Output => "output",
            TokenKind::CachedInput => "cached_input",
            TokenKind::CacheWrite => "cache_write",
            TokenKind::CacheWrite1h => "cache_write_1h",
            TokenKind::Images => "images",
            TokenKind::ImageInput => "image_input",
            TokenKind::AudioMs => "audio_ms",
            TokenKind::Chars => "chars",
            TokenKind::ImageOutput => "image_output",
        }
    }
}

impl ModelSeries {
    pub fn spend_nano_usd(&self, m: &Metrics) -> &IntCounter {
        self.spend_nano_usd.get_or_init(|| {
            m.spend_nano_usd_total
                .with_label_values(&[&self.group, &self.model])
        })
    }

    pub fn duration_seconds(&self, m: &Metrics) -> &Histogram {
        self.duration_seconds.get_or_init(|| {
            m.request_duration_seconds
                .with_label_values(&[&self.group, &self.model])
        })
    }

    pub fn tokens(&self, m: &Metrics, kind: TokenKind) -> &IntCounter {
        self.tokens[kind as usize].get_or_init(|| {
            m.tokens_total
                .with_label_values(&[&self.group, &self.model, kind.label()])
        })
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How session affinity went for one answered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityResult {
    /// Served by the channel that served the session last.
    Hit,
    /// The session had no channel yet (or it had expired).
    Miss,
    /// Served by another channel: the session's was cooling down, failed,
    /// or is gone.
    Moved,
}

impl AffinityResult {
    pub fn label(self) -> &'static str {
        match self {
            AffinityResult::Hit => "hit",
            AffinityResult::Miss => "miss",
            AffinityResult::Moved => "moved",
        }
    }
}

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
        let affinity_total = counter(
            "tollgate_affinity_total",
            "Answered requests that named a session: served by the session's channel (hit), \
             the session's first (miss), or moved to another channel (moved)",
            &["result"],
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
            affinity_total,
            channel_up,
            config_reloads_total,
            config_generation,
            model_series: RwLock::default(),
        }
    }

    /// The series of `group` and `model`, from the cache.
    pub fn model_series(&self, group: &str, model: &str) -> Arc<ModelSeries> {
        let cached = self
            .model_series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .and_then(|models| models.get(model))
            .cloned();
        if let Some(series) = cached {
            return series;
        }
        let mut all = self
            .model_series
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let series = all
            .entry(group.to_string())
            .or_default()
            .entry(model.to_string())
            .or_insert_with(|| {
                Arc::new(ModelSeries {
                    group: group.to_string(),
                    model: model.to_string(),
                    spend_nano_usd: OnceLock::new(),
                    duration_seconds: OnceLock::new(),
                    tokens: Default::default(),
                })
            });
        Arc::clone(series)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    #[test]
    fn cached_series_count_where_label_lookups_would_and_appear_when_first_counted() {
        let m = Metrics::new();
        let a = m.model_series("vip", "gpt-4o");
        assert!(Arc::ptr_eq(&a, &m.model_series("vip", "gpt-4o")));
        assert!(!Arc::ptr_eq(&a, &m.model_series("vip", "gpt-4o-mini")));
        assert!(!Arc::ptr_eq(&a, &m.model_series("default", "gpt-4o")));
        assert!(
            !rendered(&m).contains("tollgate_tokens_total{"),
            "no series before one is counted"
        );

        a.spend_nano_usd(&m).inc_by(1_500);
        m.model_series("vip", "gpt-4o")
            .spend_nano_usd(&m)
            .inc_by(500);
        a.tokens(&m, TokenKind::Output).inc_by(7);
        a.duration_seconds(&m).observe(0.002);
        let spend = m.spend_nano_usd_total.with_label_values(&["vip", "gpt-4o"]);
        assert_eq!(spend.get(), 2_000);
        let output = m
            .tokens_total
            .with_label_values(&["vip", "gpt-4o", "output"]);
        assert_eq!(output.get(), 7);
        let duration = m
            .request_duration_seconds
            .with_label_values(&["vip", "gpt-4o"]);
        assert_eq!(duration.get_sample_count(), 1);

        let text = rendered(&m);
        assert!(
            text.contains(r#"tollgate_tokens_total{group="vip",kind="output",model="gpt-4o"} 7"#),
            "{text}"
        );
        assert!(!text.contains(r#"kind="input""#), "{text}");
        assert!(!text.contains(r#"model="gpt-4o-mini""#), "{text}");
        assert!(
            text.contains(r#"tollgate_spend_usd_total{group="vip",model="gpt-4o"} 0.000002"#),
            "{text}"
        );
    }
}
