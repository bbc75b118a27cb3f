//! The Grafana dashboard in `contrib/grafana/` queries metrics by name and
//! label: a renamed metric or label would leave a panel silently empty, so
//! every query is checked against what `src/metrics.rs` registers.

use std::collections::{BTreeMap, BTreeSet};

/// Metric name -> its label names, read from the registrations in
/// `src/metrics.rs` (a `"tollgate_…"` literal, then its `&[…]` label list
/// before the next metric's name, if any).
fn registered_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let source = std::fs::read_to_string("src/metrics.rs").unwrap();
    let mut out = BTreeMap::new();
    let starts: Vec<usize> = source
        .match_indices("\"tollgate_")
        .map(|(i, _)| i)
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        let name_end = start + 1 + source[start + 1..].find('"').unwrap();
        let name = source[start + 1..name_end].to_string();
        let until = starts.get(n + 1).copied().unwrap_or(source.len());
        let rest = &source[name_end..until];
        let labels = rest
            .find("&[")
            .map(|at| {
                let list = &rest[at + 2..at + 2 + rest[at + 2..].find(']').unwrap()];
                list.split(',')
                    .map(|l| l.trim().trim_matches('"').to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        out.entry(name).or_insert(labels);
    }
    out
}

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// `tollgate_…` identifiers in a query, histogram suffixes removed.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tollgate_") {
        let ident: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + ident.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| ident.strip_suffix(s))
            .unwrap_or(&ident);
        out.push(base.to_string());
    }
    out
}

/// Label names a query groups by or matches on: `by (a, b)` and `{a=~…}`.
fn label_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (open, close) in [("by (", ')'), ("{", '}')] {
        for (at, _) in expr.match_indices(open) {
            let inner = &expr[at + open.len()..];
            let inner = &inner[..inner.find(close).unwrap()];
            for part in inner.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "le" {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn every_dashboard_query_names_registered_metrics_and_labels() {
    let text = std::fs::read_to_string("contrib/grafana/tollgate.json").unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "panels lost their queries");
    let registered = registered_metrics();
    let mut used = BTreeSet::new();
    for expr in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no tollgate metric in {expr}");
        let known: BTreeSet<&String> = names
            .iter()
            .map(|n| {
                registered
                    .get_key_value(n)
                    .unwrap_or_else(|| panic!("{n} is not registered (in {expr})"))
                    .0
            })
            .collect();
        for label in label_names(expr) {
            assert!(
                known.iter().any(|n| registered[*n].contains(&label)),
                "no metric of {expr} has the label {label}"
            );
        }
        used.extend(names);
    }
    // What the dashboard is for: spend by group and model, requests and
    // errors by channel, failovers, latency.
    for name in [
        "tollgate_spend_nano_usd_total",
        "tollgate_requests_total",
        "tollgate_upstream_failures_total",
        "tollgate_failovers_total",
        "tollgate_request_duration_seconds",
        "tollgate_upstream_ttfb_seconds",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn the_checks_see_names_and_labels() {
    assert_eq!(
        metric_names("sum by (le) (rate(tollgate_x_bucket{a=\"1\"}[5m])) / tollgate_y"),
        ["tollgate_x", "tollgate_y"]
    );
    assert_eq!(
        label_names("sum by (group, model) (rate(t{code=~\"5..\", channel!=\"\"}[5m]))"),
        ["group", "model", "code", "channel"]
    );
    let registered = registered_metrics();
    assert_eq!(
        registered["tollgate_failovers_total"],
        BTreeSet::from(["from_group".to_string(), "to_group".to_string()])
    );
    assert!(registered["tollgate_config_generation"].is_empty());
}
