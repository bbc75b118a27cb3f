# Shared by the benchmark scripts (sourced, not run): a work dir removed
# at exit with the processes started, waiting for a port, the tollgate
# config they measure, and small statistics.

# bench_workdir NAME: sets W (a temp dir) and PIDS; at exit the PIDS are
# killed and W removed.
bench_workdir() {
  W=$(mktemp -d "/tmp/tollgate-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}

wait_port() {
  for _ in $(seq 600); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# bench_config PORT UPSTREAM_PORT KEY DATA_DIR [ROUTING] [CHANNELS] [CHANNEL_LINES] [KEY_LINES]:
# a config with one worker thread, the key KEY in group default, model
# gpt-4o-mini, and CHANNELS (default 1) identical OpenAI channels on the
# upstream; ROUTING goes in [routing], CHANNEL_LINES in every channel,
# KEY_LINES in the key (budgets, limits).
bench_config() {
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$(($1 + 1))"
data_dir = "$4"
threads = 1
shutdown_grace_seconds = 0

[routing]
${5:-}

[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "gpt-4o-mini"
input = 0.15
output = 0.60

[[keys]]
name = "bench"
key_sha256 = "$(printf %s "$3" | sha256sum | cut -d' ' -f1)"
${8:-}
EOF
  for i in $(seq "${6:-1}"); do
    printf '\n[[channels]]\nname = "bench-%s"\ntype = "openai"\nbase_url = "http://127.0.0.1:%s"\napi_key = "sk-upstream"\n%s\n' \
      "$i" "$2" "${7:-}"
  done
}

# On-CPU time (ns) of all threads of process $1, from the scheduler's clock.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }

# The median of the numbers on stdin, one per line.
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
