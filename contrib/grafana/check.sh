#!/usr/bin/env bash
# Runs every query of tollgate.json in a real Prometheus that scrapes a
# real tollgate, and fails if one is rejected or a core panel is empty.
# Not part of CI (it needs Debian's `prometheus` package); run it after
# changing the dashboard or the metrics:
#
#   apt-get install prometheus && cargo build && contrib/grafana/check.sh
#
# Everything listens on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TOLLGATE_BIN:-target/debug/tollgate}
PROMETHEUS=${PROMETHEUS:-prometheus}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listen=$(port) admin=$(port) prom=$(port)

sed -e "s/127.0.0.1:8080/127.0.0.1:$listen/" -e "s/127.0.0.1:9191/127.0.0.1:$admin/" \
    -e "s|\"./data\"|\"$work/data\"|" config.example.toml >"$work/tollgate.toml"
"$BIN" run -c "$work/tollgate.toml" 2>"$work/tollgate.log" &
pids+=($!)
cat >"$work/prometheus.yml" <<EOF
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: tollgate
    static_configs: [{ targets: ["127.0.0.1:$admin"] }]
EOF
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)

for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
    sleep 0.1
done
# Traffic for 20 s: answers in two groups, a refusal, a cache-write model.
end=$((SECONDS + 20))
while [ $SECONDS -lt $end ]; do
    for model in claude-sonnet-4-6 gpt-4o; do
        curl -s "http://127.0.0.1:$listen/v1/chat/completions" \
            -H "Authorization: Bearer sk-tollgate-demo-1" -H "Content-Type: application/json" \
            -d "{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}" >/dev/null
    done
    curl -s "http://127.0.0.1:$listen/v1/chat/completions" -H "Authorization: Bearer sk-tollgate-demo-2" \
        -d '{"model": "gpt-4o", "messages": []}' >/dev/null
    sleep 0.2
done

python3 - "$prom" <<'EOF'
import json, sys, urllib.parse, urllib.request
prom = sys.argv[1]
dashboard = json.load(open("contrib/grafana/tollgate.json"))
def exprs(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "expr": yield v.get("expr"), v.get("legendFormat", "")
            else: yield from exprs(x)
    elif isinstance(v, list):
        for x in v: yield from exprs(x)
# Panels that must show data after the traffic above.
must_have = ["tollgate_spend_nano_usd_total", "tollgate_requests_total", "tollgate_tokens_total",
             "tollgate_request_duration_seconds_bucket", "tollgate_config_generation", "tollgate_channel_up"]
failed = 0
for expr, legend in exprs(dashboard["panels"]):
    q = (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
             .replace("$group", ".*").replace("$model", ".*").replace("$channel", ".*"))
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        answer = json.load(urllib.request.urlopen(url))
    except urllib.error.HTTPError as e:
        answer = json.load(e)
    if answer["status"] != "success":
        print(f"REJECTED {expr}: {answer.get('error')}"); failed += 1; continue
    rows = answer["data"]["result"]
    empty = not rows and any(m in expr for m in must_have) and "code=~" not in expr
    print(f"{'EMPTY   ' if empty else 'ok      '}{len(rows):3} series  {expr[:90]}")
    failed += empty
sys.exit(1 if failed else 0)
EOF
