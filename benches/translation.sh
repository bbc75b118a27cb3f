#!/usr/bin/env bash
# A translated stream beside the same stream relayed natively: an
# Anthropic Messages client and an OpenAI chat client, both on one OpenAI
# channel (the mock upstream of examples/bench_upstream.rs), in
# interleaved rounds. Reports, per round and as medians: tollgate's CPU per
# streamed event (schedstat), time to first event p50 and inter-event gap
# p99, and the direct-to-upstream gap p99 as the floor.
#
#   benches/translation.sh [--rounds N] [--streams N] [--events N] [--gap-ms N]
#
# Proxy on CPU 0, upstream and client on CPU 1; loopback only; stops by
# itself. Needs the release binary and examples (built if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=5
STREAMS=200
EVENTS=32
GAP_MS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --streams) STREAMS=$2; shift ;;
    --events) EVENTS=$2; shift ;;
    --gap-ms) GAP_MS=$2; shift ;;
    *) echo "usage: $0 [--rounds N] [--streams N] [--events N] [--gap-ms N]" >&2; exit 2 ;;
  esac
  shift
done
BIN=$ROOT/target/release
[ -x "$BIN/tollgate" ] && [ -x "$BIN/examples/bench_upstream" ] && [ -x "$BIN/examples/bench_client" ] ||
  (cd "$ROOT" && cargo build --release --quiet --bin tollgate --example bench_upstream --example bench_client)
MOCK_PORT=18741
TG_PORT=18742
KEY=sk-bench-translation
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
bench_workdir translation
ulimit -n "$(ulimit -Hn)"

taskset -c 1 "$BIN/examples/bench_upstream" --listen "127.0.0.1:$MOCK_PORT" \
  --events "$EVENTS" --gap-ms "$GAP_MS" 2>"$W/mock.log" &
PIDS+=($!)
bench_config $TG_PORT $MOCK_PORT $KEY "$W/data" >"$W/tollgate.toml"
taskset -c 0 "$BIN/tollgate" run -c "$W/tollgate.toml" 2>"$W/tollgate.log" &
TG_PID=$!
PIDS+=("$TG_PID")
wait_port $MOCK_PORT
wait_port $TG_PORT

field() { sed -n "s/^$1=//p" <<<"$2"; }
streams() { # URL [FORMAT] -> bench_client output
  taskset -c 1 "$BIN/examples/bench_client" streams --url "$1" --format "${2:-chat}" --key $KEY \
    --streams "$STREAMS" --events "$EVENTS" --gap-ms "$GAP_MS" --ramp-ms 500
}
# run NAME URL FORMAT: one measured run, a result row in $W/NAME
run() {
  local before out after ok
  before=$(cpu_ns "$TG_PID")
  out=$(streams "$2" "$3")
  after=$(cpu_ns "$TG_PID")
  ok=$(field streams_ok "$out")
  [ "$ok" = "$STREAMS" ] || { echo "$1: only $ok of $STREAMS streams complete" >&2; exit 1; }
  echo "$(((after - before) / (STREAMS * EVENTS))) $(field ttfe_p50_us "$out") $(field gap_p99_us "$out")" >>"$W/$1"
}
col() { awk -v c="$2" '{print $c}' "$W/$1" | median; }

NATIVE="http://127.0.0.1:$TG_PORT/v1/chat/completions"
TRANSLATED="http://127.0.0.1:$TG_PORT/v1/messages"
streams "$NATIVE" >/dev/null # warm-up
streams "$TRANSLATED" anthropic >/dev/null
: >"$W/native"
: >"$W/translated"
: >"$W/direct"
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then
    run native "$NATIVE" chat
    run translated "$TRANSLATED" anthropic
  else
    run translated "$TRANSLATED" anthropic
    run native "$NATIVE" chat
  fi
  out=$(streams "http://127.0.0.1:$MOCK_PORT/v1/chat/completions")
  echo "0 $(field ttfe_p50_us "$out") $(field gap_p99_us "$out")" >>"$W/direct"
done
echo "$STREAMS streams x $EVENTS events, $GAP_MS ms apart, $ROUNDS interleaved rounds (medians):"
echo "| | CPU per event (ns) | time to first event p50 (µs) | inter-event gap p99 (µs) |"
echo "|---|---|---|---|"
echo "| direct to the upstream | - | $(col direct 2) | $(col direct 3) |"
echo "| OpenAI chat client, native | $(col native 1) | $(col native 2) | $(col native 3) |"
echo "| Anthropic client, translated | $(col translated 1) | $(col translated 2) | $(col translated 3) |"
awk -v n="$(col native 1)" -v t="$(col translated 1)" \
  'BEGIN {printf "translated / native CPU per event: %.2f\n", t / n}'
