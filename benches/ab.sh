#!/usr/bin/env bash
# A/B comparison of two tollgate set-ups on the same load, interleaved so
# that both see the same host state: two builds (before/after a change), or
# one build with two configs (e.g. affinity on/off).
#
#   benches/ab.sh [--a BIN] [--b BIN] [--a-routing TOML] [--b-routing TOML]
#                 [--body JSON] [--pairs N] [--seconds S]
#
# BIN defaults to target/release/tollgate (build it first); --*-routing is
# put in the config's [routing] table (e.g. 'affinity = false'); --body is
# the request body (default: a small chat request). Each pair runs
# `wrk -c32` for S seconds on A and on B (the order alternating), reading
# each process's on-CPU time from schedstat, then `wrk -c1` on both for the
# p99. Prints per-pair figures and the medians of CPU µs per request and
# c=1 p99, with the ratio B/A of each pair's medians. Proxies run on CPU 0,
# the mock upstream and wrk on CPU 1; loopback only; stops by itself.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
A_BIN=$ROOT/target/release/tollgate
B_BIN=$ROOT/target/release/tollgate
A_ROUTING=""
B_ROUTING=""
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
PAIRS=8
SECONDS_PER_RUN=3
while [ $# -gt 0 ]; do
  case "$1" in
    --a) A_BIN=$2; shift ;;
    --b) B_BIN=$2; shift ;;
    --a-routing) A_ROUTING=$2; shift ;;
    --b-routing) B_ROUTING=$2; shift ;;
    --body) BODY=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --seconds) SECONDS_PER_RUN=$2; shift ;;
    *) echo "usage: $0 [--a BIN] [--b BIN] [--a-routing TOML] [--b-routing TOML] [--body JSON] [--pairs N] [--seconds S]" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
UPSTREAM=$ROOT/target/release/examples/bench_upstream
[ -x "$UPSTREAM" ] || (cd "$ROOT" && cargo build --release --quiet --example bench_upstream)
MOCK_PORT=18711
KEY=sk-bench-ab
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
bench_workdir ab

taskset -c 1 "$UPSTREAM" --listen "127.0.0.1:$MOCK_PORT" --events 64 --gap-ms 20 2>"$W/mock.log" &
PIDS+=($!)
wait_port $MOCK_PORT

# start NAME BIN PORT ROUTING -> the process id in $W/NAME.pid
start() {
  mkdir -p "$W/$1"
  bench_config "$3" $MOCK_PORT $KEY "$W/$1/data" "$4" 2 >"$W/$1/tollgate.toml"
  taskset -c 0 "$2" run -c "$W/$1/tollgate.toml" 2>"$W/$1.log" &
  PIDS+=($!)
  echo $! >"$W/$1.pid"
  wait_port "$3"
}
start a "$A_BIN" 18712 "$A_ROUTING"
start b "$B_BIN" 18714 "$B_ROUTING"
printf %s "$BODY" >"$W/body.json"

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
wrk_run() { # port conns seconds -> WRK line
  BENCH_KEY=$KEY BENCH_BODY_FILE=$W/body.json taskset -c 1 wrk -t1 -c"$2" -d"$3"s --latency \
    -s "$ROOT/benches/wrk.lua" "http://127.0.0.1:$1/v1/chat/completions" | grep '^WRK'
}
# CPU ns per request at c=32 and p99 µs at c=1, of NAME on PORT
measure() {
  local pid before after line errors
  pid=$(cat "$W/$1.pid")
  before=$(cpu_ns "$pid")
  line=$(wrk_run "$2" 32 "$SECONDS_PER_RUN")
  after=$(cpu_ns "$pid")
  errors=$(($(field errors "$line") + $(field non2xx "$line")))
  [ "$errors" = 0 ] || { echo "$1: $errors failed requests" >&2; exit 1; }
  echo "$(((after - before) / $(field requests "$line")))" \
    "$(field p99_us "$(wrk_run "$2" 1 "$SECONDS_PER_RUN")")"
}

# Warm-up: pooled connections, lazy statics, page faults.
wrk_run 18712 16 1 >/dev/null
wrk_run 18714 16 1 >/dev/null
echo "pair  A ns/req  B ns/req  B/A   A c=1 p99 µs  B c=1 p99 µs"
: >"$W/rows"
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then
    read -r a_cpu a_p99 <<<"$(measure a 18712)"
    read -r b_cpu b_p99 <<<"$(measure b 18714)"
  else
    read -r b_cpu b_p99 <<<"$(measure b 18714)"
    read -r a_cpu a_p99 <<<"$(measure a 18712)"
  fi
  ratio=$(awk -v a="$a_cpu" -v b="$b_cpu" 'BEGIN {printf "%.3f", b / a}')
  echo "$a_cpu $b_cpu $ratio $a_p99 $b_p99" >>"$W/rows"
  printf '%4d  %8d  %8d  %5s  %12d  %12d\n' "$i" "$a_cpu" "$b_cpu" "$ratio" "$a_p99" "$b_p99"
done
col() { awk -v c="$1" '{print $c}' "$W/rows" | median; }
echo "median: CPU per request A $(col 1) ns, B $(col 2) ns, B/A $(col 3) (median of the pairs' ratios);" \
  "c=1 p99 A $(col 4) µs, B $(col 5) µs"
