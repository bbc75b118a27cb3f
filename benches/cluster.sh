#!/usr/bin/env bash
# Cluster mode's cost: one node on its own (A) against the same node in
# cluster mode with a loopback redis-server (B), interleaved as in ab.sh.
#
#   benches/cluster.sh [--pairs N] [--seconds S]
#
# Both run target/release/tollgate (build it first) with one worker thread
# on CPU 0; the mock upstream, redis-server and wrk share CPU 1. The key has
# a budget, an rpm and a max_concurrent (1000) far from their limits, so B
# admits on its grants (docs/cluster.md, "Grants"): a busy key. A key near
# a limit asks Redis at each admission instead; that path's cost was
# measured before grants existed (benches/RESULTS.md, "Cluster mode on a
# quiet machine"). Each pair runs `wrk -c32` for S seconds
# on A and on B (order alternating), reading tollgate's on-CPU time from
# schedstat (and redis-server's for B), then `wrk -c1` and `wrk -c32` for
# the p99. Prints per-pair figures and medians, and the Redis commands per
# request (INFO commandstats). Loopback only; stops by itself.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/tollgate
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
PAIRS=6
SECONDS_PER_RUN=3
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS=$2; shift ;;
    --seconds) SECONDS_PER_RUN=$2; shift ;;
    *) echo "usage: $0 [--pairs N] [--seconds S]" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v redis-server >/dev/null || apt-get install -y redis-server >/dev/null
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
UPSTREAM=$ROOT/target/release/examples/bench_upstream
[ -x "$UPSTREAM" ] || (cd "$ROOT" && cargo build --release --quiet --example bench_upstream)
MOCK_PORT=18721
REDIS_PORT=18729
KEY=sk-bench-cluster
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
bench_workdir cluster

taskset -c 1 "$UPSTREAM" --listen "127.0.0.1:$MOCK_PORT" 2>"$W/mock.log" &
PIDS+=($!)
taskset -c 1 redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$W" >"$W/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
wait_port $MOCK_PORT
wait_port $REDIS_PORT

LIMITS="budget_usd = 1000000
rpm = 100000000
max_concurrent = 1000"
# start NAME PORT EXTRA -> the process id in $W/NAME.pid
start() {
  mkdir -p "$W/$1"
  { bench_config "$2" $MOCK_PORT $KEY "$W/$1/data" "" 1 "" "$LIMITS"; printf '%s\n' "$3"; } \
    >"$W/$1/tollgate.toml"
  taskset -c 0 "$BIN" run -c "$W/$1/tollgate.toml" 2>"$W/$1.log" &
  PIDS+=($!)
  echo $! >"$W/$1.pid"
  wait_port "$2"
}
start a 18722 ""
start b 18724 "
[cluster]
redis_url = \"redis://127.0.0.1:$REDIS_PORT/0\"
node = \"bench\""
for _ in $(seq 100); do
  grep -q '"up":true' <(curl -s http://127.0.0.1:18725/readyz) && break
  sleep 0.1
done
printf %s "$BODY" >"$W/body.json"

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
wrk_run() { # port conns seconds -> WRK line
  BENCH_KEY=$KEY BENCH_BODY_FILE=$W/body.json taskset -c 1 wrk -t1 -c"$2" -d"$3"s --latency \
    -s "$ROOT/benches/wrk.lua" "http://127.0.0.1:$1/v1/chat/completions" | grep '^WRK'
}
# CPU ns per request at c=32 (tollgate, redis), p99 µs at c=32 and c=1
measure() {
  local pid before after rbefore rafter line errors
  pid=$(cat "$W/$1.pid")
  before=$(cpu_ns "$pid")
  rbefore=$(cpu_ns "$REDIS_PID")
  line=$(wrk_run "$2" 32 "$SECONDS_PER_RUN")
  after=$(cpu_ns "$pid")
  rafter=$(cpu_ns "$REDIS_PID")
  errors=$(($(field errors "$line") + $(field non2xx "$line")))
  [ "$errors" = 0 ] || { echo "$1: $errors failed requests" >&2; exit 1; }
  local n
  n=$(field requests "$line")
  echo "$(((after - before) / n)) $(((rafter - rbefore) / n)) $(field p99_us "$line")" \
    "$(field p99_us "$(wrk_run "$2" 1 "$SECONDS_PER_RUN")")"
}

wrk_run 18722 16 1 >/dev/null
wrk_run 18724 16 1 >/dev/null
b_requests() { curl -s "http://127.0.0.1:18725/admin/usage?from=0" | sed -n 's/.*"total":{[^}]*"requests":\([0-9]*\).*/\1/p'; }
redis-cli -p $REDIS_PORT CONFIG RESETSTAT >/dev/null
served_before=$(b_requests)
echo "pair  A ns/req  B ns/req  B/A    redis ns/req  A p99 c=32  B p99 c=32  A p99 c=1  B p99 c=1 (µs)"
: >"$W/rows"
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then
    read -r a_cpu _ a_p32 a_p1 <<<"$(measure a 18722)"
    read -r b_cpu r_cpu b_p32 b_p1 <<<"$(measure b 18724)"
  else
    read -r b_cpu r_cpu b_p32 b_p1 <<<"$(measure b 18724)"
    read -r a_cpu _ a_p32 a_p1 <<<"$(measure a 18722)"
  fi
  ratio=$(awk -v a="$a_cpu" -v b="$b_cpu" 'BEGIN {printf "%.3f", b / a}')
  echo "$a_cpu $b_cpu $ratio $r_cpu $a_p32 $b_p32 $a_p1 $b_p1" >>"$W/rows"
  printf '%4d  %8d  %8d  %5s  %12d  %10d  %10d  %9d  %9d\n' \
    "$i" "$a_cpu" "$b_cpu" "$ratio" "$r_cpu" "$a_p32" "$b_p32" "$a_p1" "$b_p1"
done
col() { awk -v c="$1" '{print $c}' "$W/rows" | median; }
served=$(($(b_requests) - served_before))
echo "median: CPU per request A $(col 1) ns, B $(col 2) ns, B/A $(col 3); redis $(col 4) ns per B request;" \
  "p99 c=32 A $(col 5) µs, B $(col 6) µs; p99 c=1 A $(col 7) µs, B $(col 8) µs"
echo "Redis commands while measuring (INFO commandstats), per B request ($served served by B):"
redis-cli -p $REDIS_PORT INFO commandstats | tr -d '\r' | grep '^cmdstat_' |
  awk -F'[:=,]' -v n="$served" '{printf "  %-12s %8.3f per request\n", substr($1, 9), $3 / n}'
