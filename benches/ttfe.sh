#!/usr/bin/env bash
# Time to first event of a translated stream against a native one.
#
#   benches/ttfe.sh [--rounds N] [--streams N]
#
# Builds release, starts the OpenAI-format mock upstream
# (examples/bench_upstream.rs) and tollgate with one chat-only channel
# (`responses = false`) on loopback, then runs interleaved rounds of
# `bench_client streams` in four client formats against the same channel:
# Chat Completions (native), Anthropic Messages, Gemini
# streamGenerateContent and Responses (each translated to and from Chat).
# Streams run one at a time (`--ramp-ms` spreads them), so the figure is
# the per-request cost, not queueing. Prints each format's median time to
# the first text event over all its streams, and the median added by
# translation. tollgate on CPU 0, mock and client on CPU 1. See
# benches/RESULTS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=5
STREAMS=50
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --streams) STREAMS=$2; shift ;;
    *) echo "usage: $0 [--rounds N] [--streams N]" >&2; exit 2 ;;
  esac
  shift
done
MOCK_PORT=${BENCH_MOCK_PORT:-18711}
TG_PORT=${BENCH_TG_PORT:-18713}
KEY=sk-bench-ttfe

echo "building release binaries..." >&2
(cd "$ROOT" && cargo build --release --quiet --bin tollgate --example bench_upstream --example bench_client)
BIN=$ROOT/target/release
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
bench_workdir ttfe

taskset -c 1 "$BIN/examples/bench_upstream" --listen "127.0.0.1:$MOCK_PORT" \
  --events 8 --gap-ms 1 2>"$W/mock.log" &
PIDS+=("$!")
mkdir -p "$W/etc"
bench_config "$TG_PORT" "$MOCK_PORT" $KEY "$W/data" "" 1 "responses = false" >"$W/etc/tollgate.toml"
taskset -c 0 "$BIN/tollgate" run -c "$W/etc/tollgate.toml" 2>"$W/tollgate.log" &
PIDS+=("$!")
wait_port "$MOCK_PORT"
wait_port "$TG_PORT"

URL=http://127.0.0.1:$TG_PORT
declare -A PATHS=(
  [chat]=/v1/chat/completions
  [anthropic]=/v1/messages
  [gemini]="/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse"
  [responses]=/v1/responses
)
FORMATS="chat anthropic gemini responses"
# One warm-up stream each (connections, tokenizer, first allocations).
for f in $FORMATS; do
  taskset -c 1 "$BIN/examples/bench_client" streams --url "$URL${PATHS[$f]}" --key "$KEY" \
    --format "$f" --streams 5 --events 8 --gap-ms 1 --ramp-ms 100 >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for f in $FORMATS; do
    out=$(taskset -c 1 "$BIN/examples/bench_client" streams --url "$URL${PATHS[$f]}" --key "$KEY" \
      --format "$f" --streams "$STREAMS" --events 8 --gap-ms 1 --ramp-ms $((STREAMS * 40)) --ttfe-list 1)
    ok=$(sed -n 's/^streams_ok=//p' <<<"$out")
    [ "$ok" = "$STREAMS" ] || { echo "round $r $f: only $ok of $STREAMS streams whole" >&2; echo "$out" >&2; exit 1; }
    sed -n 's/^ttfe_us=//p' <<<"$out" | tr , '\n' >>"$W/$f.txt"
  done
done

NATIVE=$(median <"$W/chat.txt" | cut -d. -f1)
echo "rounds=$ROUNDS streams_per_format=$((ROUNDS * STREAMS)) load=$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %14s %18s\n' format ttfe_p50_us added_p50_us
for f in $FORMATS; do
  m=$(median <"$W/$f.txt" | cut -d. -f1)
  printf '%-10s %14s %18s\n' "$f" "$m" "$((m - NATIVE))"
done
