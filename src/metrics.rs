//! Prometheus metrics of SPEC §5, in a registry of our own (served by the
//! admin listener). Label values never carry secrets: only group, model,
//! channel and user names from the config.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
        Metrics {
            registry,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
