//! The last step of every request: its metrics and its access-log line.

use std::time::Instant;

use crate::access_log;
use crate::metering::Served;
use crate::metrics::Metrics;

pub(super) fn record(metrics: &Metrics, s: &Served<'_>, started: Instant, attempts: usize) {
    let elapsed = started.elapsed();
    let group = s.group.map_or("", |g| g.name.as_str());
    // itoa, not `to_string`: the formatting machinery costs ~800
    // instructions, for every request.
    let mut code = itoa::Buffer::new();
    metrics
        .requests_total
        .with_label_values(&[group, s.model, s.channel, code.format(s.status)])
        .inc();
    if !s.model.is_empty() {
        let looked_up;
        let series = match s.series {
            Some(series) => series,
            None => {
                looked_up = metrics.model_series(group, s.model);
                &looked_up
            }
        };
        series
            .duration_seconds(metrics)
            .observe(elapsed.as_secs_f64());
    }
    access_log::write(&access_log::Entry {
        status: s.status,
        group,
        model: s.model,
        channel: s.channel,
        attempts,
        usage: s.usage,
        units: s.media.units,
        estimated: s.estimated,
        ms: elapsed.as_millis() as u64,
    });
}
