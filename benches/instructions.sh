#!/usr/bin/env bash
# Instructions per proxied non-stream request, counted by callgrind: a
# figure that a busy machine does not change, for comparing two builds
# when wall-clock and CPU-time benchmarks are too noisy.
#
#   benches/instructions.sh [BIN ...]      (default: target/release/tollgate)
#
# For each binary: tollgate under callgrind (one worker thread, the mock
# upstream and the client outside it), once with 1,000 and once with 6,000
# requests over one keep-alive connection (bench_client requests); the
# difference of the two runs' instruction counts divided by 5,000 is the
# cost of one request on the thread that serves the connection, with
# start-up and shutdown taken out.
# Needs valgrind and the release examples bench_upstream and bench_client.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- "$ROOT/target/release/tollgate"
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
EX=$ROOT/target/release/examples
[ -x "$EX/bench_upstream" ] && [ -x "$EX/bench_client" ] ||
  (cd "$ROOT" && cargo build --release --quiet --example bench_upstream --example bench_client)
MOCK_PORT=18721
TG_PORT=18722
KEY=sk-bench-instructions
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
bench_workdir instructions

"$EX/bench_upstream" --listen "127.0.0.1:$MOCK_PORT" --events 64 --gap-ms 20 2>"$W/mock.log" &
PIDS+=($!)
wait_port $MOCK_PORT

bench_config $TG_PORT $MOCK_PORT $KEY "$W/data" >"$W/tollgate.toml"

# run BIN COUNT DIR: callgrind's files of a run in DIR, one per thread
# (out.<pid>-<thread number>, numbered in the order threads start).
run() {
  rm -rf "$W/data" "$3"
  mkdir -p "$3"
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$3/out" \
    "$1" run -c "$W/tollgate.toml" 2>"$W/tollgate.log" &
  local pid=$!
  wait_port $TG_PORT
  "$EX/bench_client" requests --url "http://127.0.0.1:$TG_PORT/v1/chat/completions" \
    --key $KEY --count "$2" >"$W/client.out"
  grep -q "requests_failed=0" "$W/client.out" || { cat "$W/client.out" >&2; exit 1; }
  kill -TERM $pid
  wait $pid || true
}
# Ir of the connection's thread in a run: the thread that ran the relay
# (thread numbers follow the order threads start, which varies between
# runs; the whole process is no good either: sled's background threads do
# a varying amount of work).
connection_ir() {
  grep -l 'relay.*Gateway' "$1"/out-* | xargs awk '/^totals:/ {print $2}' | sort -n | tail -1
}

echo "binary: instructions per request on the connection's thread"
for bin in "$@"; do
  run "$bin" 1000 "$W/short"
  run "$bin" 6000 "$W/long"
  echo "$bin: $((($(connection_ir "$W/long") - $(connection_ir "$W/short")) / 5000))"
done
