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
TG_ADMIN=${BENCH_TG_ADMIN_PORT:-18714}
KEY=sk-bench-ttfe

echo "building release binaries..." >&2
(cd "$ROOT" && cargo build --release --quiet --bin tollgate --example bench_upstream --example bench_client)
BIN=$ROOT/target/release
W=$(mktemp -d /tmp/tollgate-ttfe.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

taskset -c 1 "$BIN/examples/bench_upstream" --listen "127.0.0.1:$MOCK_PORT" \
  --events 8 --gap-ms 1 2>"$W/mock.log" &
PIDS+=("$!")
mkdir -p "$W/etc"
cat >"$W/etc/tollgate.toml" <<EOF
[server]
listen = "127.0.0.1:$TG_PORT"
admin_listen = "127.0.0.1:$TG_ADMIN"
data_dir = "$W/data"
threads = 1
shutdown_grace_seconds = 0

[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "gpt-4o-mini"
input = 0.15
output = 0.60

[[channels]]
name = "bench"
type = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT"
api_key = "sk-upstream"
responses = false
models = ["gpt-4o-mini"]

[[keys]]
name = "bench"
key_sha256 = "$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)"
EOF
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

median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
NATIVE=$(median "$W/chat.txt")
echo "rounds=$ROUNDS streams_per_format=$((ROUNDS * STREAMS)) load=$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %14s %18s\n' format ttfe_p50_us added_p50_us
for f in $FORMATS; do
  m=$(median "$W/$f.txt")
  printf '%-10s %14s %18s\n' "$f" "$m" "$((m - NATIVE))"
done
