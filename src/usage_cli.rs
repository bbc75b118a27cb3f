//! `tollgate usage`: asks the running gateway's admin API (the CLI cannot
//! open the sled store while the gateway holds its lock) and prints a table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::config;
use crate::health::HealthRegistry;
use crate::metering::report::parse_age;

pub fn run(config_path: &Path, by: &str, since: &str, cluster: bool) -> Result<String> {
    if parse_age(since).is_none() {
        bail!("--since {since:?} is not an age like 90s, 30m, 24h or 7d");
    }
    let path = format!("/admin/usage?group_by={by}&from={since}");
    if cluster {
        return run_cluster(config_path, by, &path);
    }
    let (_, body) = admin_call(config_path, "GET", &path, None)?;
    Ok(table(by, &usage_doc(&body)?))
}

fn usage_doc(body: &[u8]) -> Result<Value> {
    let doc: Value = serde_json::from_slice(body).context("the admin API answered non-JSON")?;
    if let Some(e) = doc.get("error") {
        bail!("the admin API refused: {e}");
    }
    Ok(doc)
}

/// `--cluster`: the nodes registered in Redis (`GET /admin/cluster` on
/// this node), each node's `/admin/usage` (same admin token), merged. A
/// node that does not answer is an error: a partial sum would mislead.
fn run_cluster(config_path: &Path, by: &str, path: &str) -> Result<String> {
    let (addr, token) = admin_target(config_path)?;
    let (status, body) = admin_http(addr, "GET", "/admin/cluster", token.as_deref(), None)?;
    let doc: Value = serde_json::from_slice(&body).context("the admin API answered non-JSON")?;
    if status != 200 {
        bail!("no node list: {}", doc["error"].as_str().unwrap_or("?"));
    }
    let mut docs = Vec::new();
    for node in doc["nodes"].as_array().into_iter().flatten() {
        let name = node["node"].as_str().unwrap_or("?");
        let url = node["admin_url"].as_str().unwrap_or("");
        let addr: SocketAddr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("node {name}: admin_url {url:?} is not http://IP:PORT"))?;
        let (_, body) = http_call(addr, "GET", path, token.as_deref(), None)
            .with_context(|| format!("node {name} ({url}) did not answer"))?;
        docs.push(usage_doc(&body).with_context(|| format!("node {name}"))?);
    }
    Ok(table(by, &merge(by, &docs)))
}

/// Sums the rows (by their `by` value) and totals of several nodes' usage.
fn merge(by: &str, docs: &[Value]) -> Value {
    const FIELDS: [&str; 8] = [
        "requests",
        "input",
        "output",
        "cached_input",
        "cache_write",
        "cache_write_1h",
        "estimated",
        "cost_nano_usd",
    ];
    let add = |into: &mut serde_json::Map<String, Value>, row: &Value| {
        for f in FIELDS {
            let sum =
                into.get(f).and_then(Value::as_i64).unwrap_or(0) + row[f].as_i64().unwrap_or(0);
            into.insert(f.to_string(), sum.into());
        }
    };
    let mut rows: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        Default::default();
    let mut total = serde_json::Map::new();
    for doc in docs {
        for row in doc["rows"].as_array().into_iter().flatten() {
            let name = row[by].as_str().unwrap_or("").to_string();
            let merged = rows.entry(name.clone()).or_default();
            merged.insert(by.to_string(), name.into());
            add(merged, row);
        }
        add(&mut total, &doc["total"]);
    }
    serde_json::json!({"rows": rows.into_values().collect::<Vec<_>>(), "total": total})
}

/// Calls the running gateway's admin API, at the `admin_listen` and with
/// the `admin_token` of the config file: the status and body of its answer
/// (a refused admin token is an error).
pub fn admin_call(
    config_path: &Path,
    method: &str,
    path: &str,
    json: Option<&Value>,
) -> Result<(u16, Vec<u8>)> {
    let (addr, token) = admin_target(config_path)?;
    admin_http(addr, method, path, token.as_deref(), json)
}

fn admin_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&Value>,
) -> Result<(u16, Vec<u8>)> {
    http_call(addr, method, path, token, json)
        .with_context(|| format!("cannot query the admin API at {addr} (is tollgate running?)"))
}

/// The admin listener's address (loopback for an unspecified one) and the
/// admin token, from the config file.
fn admin_target(config_path: &Path) -> Result<(SocketAddr, Option<String>)> {
    let loaded = config::load_file(
        config_path,
        &HealthRegistry::default(),
        1,
        &mut Default::default(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let server = &loaded.snapshot.server;
    let mut addr: SocketAddr = server.admin_listen.parse()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok((addr, server.admin_token.clone()))
}

/// A minimal HTTP/1.1 request: the admin listener is plain HTTP on a
/// trusted address, and this keeps an HTTP client library out of the binary.
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&Value>,
) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = json.map(Value::to_string).unwrap_or_default();
    let content = match json {
        Some(_) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
        None => String::new(),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{body}"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let body = raw[split + 4..].to_vec();
    if status == "401" {
        bail!("admin token refused (check admin_token in the config)");
    }
    Ok((status.parse().unwrap_or(0), body))
}

fn table(by: &str, doc: &Value) -> String {
    let header = [
        by.to_uppercase(),
        "REQUESTS".into(),
        "INPUT".into(),
        "OUTPUT".into(),
        "CACHED".into(),
        "CACHE_WRITE".into(),
        "CACHE_WRITE_1H".into(),
        "COST_USD".into(),
    ];
    let num = |row: &Value, f: &str| row[f].as_i64().unwrap_or(0).to_string();
    let line = |name: String, row: &Value| {
        let nanos = row["cost_nano_usd"].as_i64().unwrap_or(0);
        [
            name,
            num(row, "requests"),
            num(row, "input"),
            num(row, "output"),
            num(row, "cached_input"),
            num(row, "cache_write"),
            num(row, "cache_write_1h"),
            crate::metering::cost::nanos_to_usd(nanos).to_string(),
        ]
    };
    let mut rows: Vec<[String; 8]> = vec![header];
    for row in doc["rows"].as_array().into_iter().flatten() {
        let name = row[by].as_str().unwrap_or("").to_string();
        rows.push(line(if name.is_empty() { "-".into() } else { name }, row));
    }
    rows.push(line("TOTAL".into(), &doc["total"]));
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_the_nodes_rows_and_totals() {
        let row = |g: &str, req: i64, cost: i64| {
            json!({"group": g, "requests": req, "input": 1, "output": 2, "cached_input": 0,
                   "cache_write": 0, "cache_write_1h": 0, "estimated": 0, "cost_nano_usd": cost})
        };
        let a = json!({"rows": [row("claude", 2, 100), row("default", 1, 7)], "total": row("", 3, 107)});
        let b =
            json!({"rows": [row("claude", 5, 1_000_000_001)], "total": row("", 5, 1_000_000_001)});
        let m = merge("group", &[a, b]);
        assert_eq!(m["rows"][0]["group"], "claude");
        assert_eq!(m["rows"][0]["requests"], 7);
        assert_eq!(m["rows"][0]["cost_nano_usd"], 1_000_000_101i64);
        assert_eq!(m["rows"][0]["input"], 2);
        assert_eq!(m["rows"][1]["requests"], 1);
        assert_eq!(m["total"]["requests"], 8);
        assert_eq!(m["total"]["cost_nano_usd"], 1_000_000_108i64);
    }

    #[test]
    fn prints_an_aligned_table_with_a_total() {
        let doc = json!({
            "rows": [
                {"group": "claude", "requests": 2, "input": 10, "output": 5, "cached_input": 0,
                 "cache_write": 0, "cache_write_1h": 40, "cost_nano_usd": 1_500_000},
                {"group": "default", "requests": 1, "input": 3, "output": 1, "cached_input": 2,
                 "cache_write": 0, "cost_nano_usd": 20}
            ],
            "total": {"requests": 3, "input": 13, "output": 6, "cached_input": 2,
                      "cache_write": 0, "cache_write_1h": 40, "cost_nano_usd": 1_500_020}
        });
        assert_eq!(
            table("group", &doc),
            "GROUP    REQUESTS  INPUT  OUTPUT  CACHED  CACHE_WRITE  CACHE_WRITE_1H    COST_USD\n\
             claude          2     10       5       0            0              40      0.0015\n\
             default         1      3       1       2            0               0  0.00000002\n\
             TOTAL           3     13       6       2            0              40  0.00150002\n"
        );
    }
}
