#!/usr/bin/env bash
# Soak test for tollgate: a bounded mixed load on loopback. Not part of CI.
#
#   scripts/soak.sh [SECONDS]      default 7200 (2 hours), also the cap
#
# What it does (scripts/soak_load.py, Python standard library only):
#   - builds the release binary and starts it on a generated config with two
#     OpenAI-format upstreams on 127.0.0.1: "steady", and "flaky" (higher
#     priority) which injects faults: 500s, 429 + Retry-After, connection
#     resets before the head, stalls past the header timeout, and streams
#     cut mid-answer;
#   - 6 client threads send non-stream and stream chat completions (with and
#     without include_usage), disconnect mid-stream, send malformed JSON and
#     unknown models;
#   - every 20 s the config is reloaded, in turn by file rename, by
#     POST /admin/reload and by SIGHUP;
#   - tollgate's RSS is sampled every 10 s.
# It passes when: tollgate never exits and stops cleanly on SIGTERM, its log
# has no panic, RSS after warm-up (half the run, at most 60 min: the
# store's memory fills over the first ~250,000 logged requests, ~55 min at
# the default load, then stays nearly flat; shorter warm-ups cannot tell
# that from a leak) stays within 10%, and the tokens tollgate
# metered from upstream usage (access log) equal the tokens the clients
# expected for every answer they got whole, and the ledger (/admin/usage,
# queried before SIGTERM) holds exactly what the access log shows.
#
# Environment: SOAK_BINARY (default: build and use target/release/tollgate),
# SOAK_WORKERS (6), SOAK_PAUSE (0.03 s between requests per
# worker), SOAK_RELOAD_EVERY (20 s), SOAK_NICE (10), SOAK_STORE (lines of the
# [store] section, e.g. 'request_log_days = 0'). The work directory
# (config, store, log) is kept and printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-7200}"
workdir="$(mktemp -d -t tollgate-soak.XXXXXX)"
binary="${SOAK_BINARY:-}"
if [ -z "$binary" ]; then
    cargo build --release --quiet
    binary=target/release/tollgate
fi
echo "soak: ${seconds}s, work directory ${workdir}"
status=0
nice -n "${SOAK_NICE:-10}" python3 scripts/soak_load.py \
    --binary "$binary" \
    --workdir "$workdir" \
    --seconds "$seconds" \
    --workers "${SOAK_WORKERS:-6}" \
    --pause "${SOAK_PAUSE:-0.03}" \
    --reload-every "${SOAK_RELOAD_EVERY:-20}" \
    --store "${SOAK_STORE:-}" || status=$?
echo "soak: log and store in ${workdir}"
exit "$status"
