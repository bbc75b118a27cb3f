#!/usr/bin/env bash
# Load harness: tollgate vs nginx (plain reverse proxy) vs direct-to-mock.
#
#   benches/run.sh [--quick] [--rounds N] [--out FILE]
#
# Builds release, starts the mock upstream (examples/bench_upstream.rs), nginx
# and tollgate on loopback, pins the proxies to CPU 0 and the mock + load
# generators to CPU 1, runs interleaved rounds (direct, nginx, tollgate, ...)
# and prints a Markdown table of medians. Everything stops by itself; all
# files live in a temp dir that is removed at exit (the table is kept in
# target/bench/). See benches/RESULTS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
ROUNDS=""
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  ROUNDS=${ROUNDS:-1}; D_LAT=2; D_SWEEP=1; CONCS="1 16 64"; D_BIG=2
  SMALL_STREAMS=50; STREAM_LADDER="500:20 2000:20 500:200:32768"; D_RELOAD=25; RELOADS=3; RELOADS_ALL=2
  CPU_TRIPLES=2; D_CPU=2; LAT_TRIPLES=3; D_LAT_TRIPLE=1
else
  ROUNDS=${ROUNDS:-3}; D_LAT=5; D_SWEEP=3; CONCS="1 4 16 32 64 128"; D_BIG=5
  SMALL_STREAMS=100; STREAM_LADDER="1000:20 2500:20 5000:20 9900:20 9900:200 1000:200:32768"; D_RELOAD=30; RELOADS=10; RELOADS_ALL=4
  CPU_TRIPLES=7; D_CPU=5; LAT_TRIPLES=15; D_LAT_TRIPLE=2
fi
EVENTS=64
GAP_MS=20
CPU_CONC=32 # CPU per request and RSS under load are read at this concurrency
MOCK_PORT=${BENCH_MOCK_PORT:-18701}
NGINX_PORT=${BENCH_NGINX_PORT:-18702}
TG_PORT=${BENCH_TG_PORT:-18703}
TG_ADMIN=${BENCH_TG_ADMIN_PORT:-18704}
PINGORA_PORT=${BENCH_PINGORA_PORT:-18705}
RAW_PORT=${BENCH_RAW_PORT:-18706}
KEY=sk-bench-0000

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need taskset || ! need curl; then
  apt-get install -y wrk nginx-light util-linux curl >/dev/null
fi
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (proxy on 0, load on 1)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)

echo "building release binaries..." >&2
(cd "$ROOT" && cargo build --release --quiet --bin tollgate --example bench_upstream --example bench_client \
  --example bench_pingora)
BIN=$ROOT/target/release
W=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
RES=$W/results.txt
: >"$RES"
CLK_TCK=$(getconf CLK_TCK)

wait_port() {
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# ---- processes ------------------------------------------------------------
taskset -c 1 "$BIN/examples/bench_upstream" --listen "127.0.0.1:$MOCK_PORT" \
  --events $EVENTS --gap-ms $GAP_MS 2>"$W/mock.log" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")

mkdir -p "$W/nginx/tmp"
cat >"$W/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 19900; }
http {
  access_log $W/nginx/access.log;
  client_body_temp_path $W/nginx/tmp/body;
  proxy_temp_path $W/nginx/tmp/proxy;
  client_max_body_size 32m;
  client_body_buffer_size 2m;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 1024; }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
EOF
start_nginx() {
  taskset -c 0 nginx -p "$W/nginx/" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
}
start_nginx

tg_config() { # $1: extra config after the server section
  cat <<EOF
[server]
listen = "127.0.0.1:$TG_PORT"
admin_listen = "127.0.0.1:$TG_ADMIN"
data_dir = "$W/data"
threads = 1
upstream_header_timeout_seconds = 30
upstream_idle_timeout_seconds = 30
shutdown_grace_seconds = 0

$1
EOF
}
ETC=$W/etc
mkdir -p "$ETC"
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
tg_config "
[[groups]]
name = \"default\"
ratio = 1.0
all_channels = true

[[models]]
name = \"gpt-4o-mini\"
input = 0.15
output = 0.60
cached_input = 0.075

[[channels]]
name = \"bench\"
type = \"openai\"
base_url = \"http://127.0.0.1:$MOCK_PORT\"
api_key = \"sk-upstream\"
groups = [\"default\"]
models = [\"gpt-4o-mini\"]

[[keys]]
name = \"bench\"
key_sha256 = \"$KEY_SHA\"
" >"$ETC/tollgate.toml"
# The config's directory is watched for changes: keep the log elsewhere,
# as under systemd; events for other files there are ignored, but every log
# line would still wake the watcher's thread.
start_tollgate() {
  taskset -c 0 "$BIN/tollgate" run -c "$ETC/tollgate.toml" 2>>"$W/tollgate.log" &
  TG_PID=$!
  PIDS+=("$TG_PID")
}
start_tollgate
# The framework floors (examples/bench_pingora.rs): a bare pingora-proxy, and
# Pingora's listener with a minimal HTTP/1 exchange of our own (non-stream
# requests only: it reads content-length bodies, not event streams).
start_pingora() {
  taskset -c 0 "$BIN/examples/bench_pingora" --listen "127.0.0.1:$PINGORA_PORT" \
    --upstream "127.0.0.1:$MOCK_PORT" 2>>"$W/pingora.log" &
  PINGORA_PID=$!
  PIDS+=("$PINGORA_PID")
}
start_pingora
taskset -c 0 "$BIN/examples/bench_pingora" --raw --listen "127.0.0.1:$RAW_PORT" \
  --upstream "127.0.0.1:$MOCK_PORT" 2>>"$W/raw.log" &
RAW_PID=$!
PIDS+=("$RAW_PID")

wait_port "$MOCK_PORT"
wait_port "$NGINX_PORT"
wait_port "$TG_PORT"
wait_port "$PINGORA_PORT"
wait_port "$RAW_PORT"
sleep 1
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)

# A fresh proxy process, warmed up by a few short streams: memory that an
# earlier step freed but kept (malloc arenas) would hide per-stream growth.
restart_proxy() {
  case $1 in
    nginx)
      kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
      start_nginx; wait_port "$NGINX_PORT"; sleep 0.5
      NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1) ;;
    tollgate)
      kill "$TG_PID"; wait "$TG_PID" 2>/dev/null || true
      start_tollgate; wait_port "$TG_PORT" ;;
    pingora)
      kill "$PINGORA_PID"; wait "$PINGORA_PID" 2>/dev/null || true
      start_pingora; wait_port "$PINGORA_PORT" ;;
    *) return 0 ;;
  esac
  taskset -c 1 "$BIN/examples/bench_client" streams --url "$(url_of "$1")/v1/chat/completions" \
    --key $KEY --streams 50 --events 4 --gap-ms 10 --ramp-ms 200 >/dev/null
  sleep 1
}

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$MOCK_PORT" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT" ;;
    tollgate) echo "http://127.0.0.1:$TG_PORT" ;;
    pingora) echo "http://127.0.0.1:$PINGORA_PORT" ;;
    raw) echo "http://127.0.0.1:$RAW_PORT" ;;
  esac
}
pids_of() {
  case $1 in
    direct) echo "$MOCK_PID" ;;
    nginx) echo "$NGINX_PID $NGINX_WORKER" ;;
    tollgate) echo "$TG_PID" ;;
    pingora) echo "$PINGORA_PID" ;;
    raw) echo "$RAW_PID" ;;
  esac
}
# utime + stime of the processes, in clock ticks
cpu_ticks() {
  local t=0 p
  for p in $1; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
# Time on a CPU (ns) of all threads of $1, from the scheduler's own clock
# (schedstat): a cross-check of the tick-sampled user + sys of cpu_ticks,
# which the issue's metric uses.
cpu_ns() {
  local p
  for p in $1; do cat /proc/"$p"/task/*/schedstat; done | awk '{s += $1} END {printf "%.0f", s}'
}
rss_kb() {
  local t=0 p
  for p in $1; do
    t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")))
  done
  echo "$t"
}
# Largest RSS of $1 seen every 100 ms until the file $2 exists.
rss_peak() {
  local peak=0 r
  while [ ! -e "$2" ]; do
    r=$(rss_kb "$1")
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.1
  done
  echo "$peak"
}
put() { echo "$1 $2 $3" >>"$RES"; } # target metric value
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="-"||b=="-"||b<=0) print "-"; else printf "%.2f", a/b }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a==""||b==""||a=="-"||b=="-") print "-"; else print a-b }'; }
field() { sed -n "s/.*\\b$1=\\([0-9.]*\\).*/\\1/p" <<<"$2" | head -1; }
put_errors() { # target metric WRK-line: records the line if it had failures
  [ "$(field errors "$3")$(field non2xx "$3")" = 00 ] || put "$1" "$2" "$3"
}

wrk_run() { # target conns seconds [body file] -> WRK line
  BENCH_KEY=$KEY BENCH_BODY_FILE=${4:-} taskset -c 1 wrk -t1 -c"$2" -d"$3"s --latency \
    -s "$ROOT/benches/wrk.lua" "$(url_of "$1")/v1/chat/completions" | grep '^WRK'
}

# ---- rounds ----------------------------------------------------------------
head -c $((1024 * 1024 - 120)) /dev/zero | tr '\0' 'a' >"$W/filler"
printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"%s"}]}' "$(cat "$W/filler")" >"$W/body-1mib.json"

PROXIES="nginx raw pingora tollgate"
for t in $PROXIES; do put $t rss_idle_kb "$(rss_kb "$(pids_of $t)")"; done
# Warm-up: pooled upstream connections, lazy statics, page faults.
for t in direct $PROXIES; do wrk_run $t 16 1 >/dev/null; done

for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  declare -A P50 P99 TTFE GAP99
  for t in direct $PROXIES; do
    line=$(wrk_run $t 1 $D_LAT)
    P50[$t]=$(field p50_us "$line")
    P99[$t]=$(field p99_us "$line")
    put $t lat_p50_us "${P50[$t]}"
    put $t lat_p99_us "${P99[$t]}"
    put_errors $t errors "$line"

    best=0
    for c in $CONCS; do
      before=$(cpu_ticks "$(pids_of $t)")
      before_ns=$(cpu_ns "$(pids_of $t)")
      rm -f "$W/stop"
      rss_peak "$(pids_of $t)" "$W/stop" >"$W/peak" &
      line=$(wrk_run $t "$c" $D_SWEEP)
      touch "$W/stop"
      wait $!
      after=$(cpu_ticks "$(pids_of $t)")
      after_ns=$(cpu_ns "$(pids_of $t)")
      rps=$(field rps "$line")
      p99=$(field p99_us "$line")
      put $t "rps_c$c" "$rps"
      put $t "p99_us_c$c" "$p99"
      [ "$p99" -le 5000 ] && [ "$rps" -gt "$best" ] && best=$rps
      if [ "$c" = "$CPU_CONC" ] || { [ "$QUICK" = 1 ] && [ "$c" = 16 ]; }; then
        reqs=$(field requests "$line")
        put $t cpu_us_per_req $(((after - before) * 1000000 / CLK_TCK / reqs))
        put $t sched_ns_per_req $(((after_ns - before_ns) / reqs))
        put $t rss_load_kb "$(cat "$W/peak")"
      fi
    done
    put $t max_rps_p99_5ms "$best"

    before=$(cpu_ticks "$(pids_of $t)")
    line=$(wrk_run $t 4 $D_BIG "$W/body-1mib.json")
    after=$(cpu_ticks "$(pids_of $t)")
    reqs=$(field requests "$line")
    put $t rps_1mib "$(field rps "$line")"
    put $t cpu_us_per_1mib_req $(((after - before) * 1000000 / CLK_TCK / (reqs > 0 ? reqs : 1)))
    put_errors $t errors_1mib "$line"

    [ $t = raw ] && continue
    out=$(taskset -c 1 "$BIN/examples/bench_client" streams --url "$(url_of $t)/v1/chat/completions" \
      --key $KEY --streams $SMALL_STREAMS --events $EVENTS --gap-ms $GAP_MS --ramp-ms 500)
    TTFE[$t]=$(field ttfe_p50_us "$out")
    GAP99[$t]=$(field gap_p99_us "$out")
    put $t ttfe_p50_us "${TTFE[$t]}"
    put $t gap_p99_us "${GAP99[$t]}"
    put $t small_streams_ok "$(field streams_ok "$out")"
  done
  for t in $PROXIES; do
    put $t added_p50_us $((P50[$t] - P50[direct]))
    put $t added_p99_us $((P99[$t] - P99[direct]))
    [ $t = raw ] && continue
    put $t added_ttfe_p50_us $((TTFE[$t] - TTFE[direct]))
    put $t added_gap_p99_us $((GAP99[$t] - GAP99[direct]))
  done
done

# ---- CPU per request, interleaved triples -----------------------------------
# The rounds above measure each target minutes apart; a busy host drifts in
# between. Here nginx, raw and tollgate run back to back, in an order that
# rotates from triple to triple, and the ratio is taken within each
# triple, so drift that hits all three cancels.
cpu_run() { # target -> CPU µs per request over one D_CPU-second run, or "-"
  local before after line
  before=$(cpu_ticks "$(pids_of "$1")")
  line=$(wrk_run "$1" $CPU_CONC $D_CPU)
  after=$(cpu_ticks "$(pids_of "$1")")
  awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$(field requests "$line")" \
    'BEGIN{ if (n > 0) printf "%.2f", t * 1000000 / hz / n; else print "-" }'
}
rotate3() { # i a b c -> a b c rotated left by (i-1)%3
  echo "$2 $3 $4 $2 $3" | cut -d' ' -f$((1 + ($1 - 1) % 3))-$((3 + ($1 - 1) % 3))
}
for i in $(seq "$CPU_TRIPLES"); do
  echo "CPU triple $i/$CPU_TRIPLES" >&2
  for t in $(rotate3 "$i" nginx raw tollgate); do
    case $t in
      nginx) n=$(cpu_run nginx) ;;
      raw) r=$(cpu_run raw) ;;
      tollgate) g=$(cpu_run tollgate) ;;
    esac
  done
  put nginx cpu_triple_us "$n"
  put raw cpu_triple_us "$r"
  put tollgate cpu_triple_us "$g"
  put tollgate cpu_triple_vs_nginx "$(ratio "$g" "$n")"
  put tollgate cpu_triple_vs_raw "$(ratio "$g" "$r")"
done

# ---- c=1 latency, interleaved triples ---------------------------------------
# A c=1 p99 is set by the slowest 1% of requests, and on a shared VM those
# are host stalls that come and go within seconds: in the rounds a proxy's
# added p99 swung from -917 to 2,445 µs. Short runs of direct, nginx and
# tollgate back to back (order rotating) see the same host; each triple
# gives each proxy's added p99 and their ratio (none when nginx's is <= 0),
# and the table reports the medians over the triples. wrk corrects for
# coordinated omission, so one 50 ms stall in a 2 s run at c=1 sets its p99.
declare -A T99
for i in $(seq "$LAT_TRIPLES"); do
  echo "c=1 latency triple $i/$LAT_TRIPLES" >&2
  for t in $(rotate3 "$i" direct nginx tollgate); do
    line=$(wrk_run $t 1 $D_LAT_TRIPLE)
    T99[$t]=$(field p99_us "$line")
    put_errors $t errors "$line"
  done
  for t in direct nginx tollgate; do put $t lat_triple_p99_us "${T99[$t]:--}"; done
  added_n=$(minus "${T99[nginx]}" "${T99[direct]}")
  added_g=$(minus "${T99[tollgate]}" "${T99[direct]}")
  put nginx lat_triple_added_p99_us "$added_n"
  put tollgate lat_triple_added_p99_us "$added_g"
  put tollgate lat_triple_vs_nginx "$(ratio "$added_g" "$added_n")"
done

sleep 2
for t in $PROXIES; do put $t rss_after_kb "$(rss_kb "$(pids_of $t)")"; done

# ---- many concurrent streams (once per count:gap) ----------------------------
# Each proxied stream holds two sockets in the proxy; RLIMIT_NOFILE's hard
# limit (ulimit -Hn) caps the count a proxy can hold. At 20 ms spacing,
# 9,900 streams are ~500,000 events/s, more than the one CPU that the mock
# and the client share can produce and read; the 200 ms step (~50,000
# events/s) shows how many streams a proxy holds when the load side keeps up.
# A third field is the prompt size: a proxy that keeps copies of the request
# body for the whole stream shows it in RSS per stream.
for step in $STREAM_LADDER; do
  IFS=: read -r n gap prompt <<<"$step"
  prompt=${prompt:-0}
  for t in direct nginx pingora tollgate; do
    echo "streams: $n, $gap ms apart, ${prompt}-byte prompts, via $t" >&2
    restart_proxy $t
    idle=$(rss_kb "$(pids_of $t)")
    rm -f "$W/stop"
    rss_peak "$(pids_of $t)" "$W/stop" >"$W/peak" &
    before=$(cpu_ticks "$(pids_of $t)")
    out=$(taskset -c 1 "$BIN/examples/bench_client" streams --url "$(url_of $t)/v1/chat/completions" \
      --key $KEY --streams "$n" --events $EVENTS --gap-ms "$gap" --ramp-ms 1000 --body-bytes "$prompt")
    after=$(cpu_ticks "$(pids_of $t)")
    touch "$W/stop"
    wait $!
    peak=$(cat "$W/peak")
    for f in streams_ok streams_failed streams_short stalled_gaps peak_concurrent ttfe_p99_us gap_p99_us gap_max_us; do
      put $t "s${step}_$f" "$(field $f "$out")"
    done
    put $t "s${step}_rss_growth_per_stream_b" $(((peak - idle) * 1024 / n))
    put $t "s${step}_cpu_ms" $(((after - before) * 1000 / CLK_TCK))
    sleep 1
  done
done

# ---- reload of a big config under load (tollgate) --------------------------
echo "reload: 10,000 keys / 500 channels under load" >&2
for v in 0 1; do
  tg_config "$("$BIN/examples/bench_client" config --key $KEY --keys 10000 --channels 500 \
    --upstream 127.0.0.1:$MOCK_PORT --variant $v)" >"$W/big$v.toml"
done
# The same config with every item's text edited (not its meaning): nothing
# parsed by the reload before can be reused.
sed 's/^name = /name  = /' "$W/big0.toml" >"$W/big2.toml"
cp "$W/big0.toml" "$ETC/tollgate.toml.new" && mv "$ETC/tollgate.toml.new" "$ETC/tollgate.toml"
reload() { curl -s -o "$W/reload.out" -w '%{time_total}' -X POST "http://127.0.0.1:$TG_ADMIN/admin/reload"; }
sleep 1
reload >/dev/null # the first switch to the big config (file watch may also fire)
wrk_run tollgate 16 $D_RELOAD >"$W/reload-wrk" &
WRK_BG=$!
sleep 1
# switch_to FILE METRIC: replace the config by FILE, reload, record the time.
switch_to() {
  cp "$1" "$ETC/tollgate.toml.new" && mv "$ETC/tollgate.toml.new" "$ETC/tollgate.toml"
  s=$(reload)
  grep -q '"generation"' "$W/reload.out" || echo "reload failed: $(cat "$W/reload.out")" >&2
  put tollgate "$2" "$(awk -v s="$s" 'BEGIN{printf "%.1f", s*1000}')"
  sleep 0.5
}
for i in $(seq $RELOADS); do
  switch_to "$W/big$((i % 2)).toml" reload_ms
done
# big0 is loaded now; big2 and big0 in turn differ in every item.
for i in $(seq $RELOADS_ALL); do
  switch_to "$W/big$((i % 2 * 2)).toml" reload_all_ms
done
# tollgate hands a reload's freed memory back to the kernel once reloads
# have paused for 5 s; a reload after such a pause takes its memory afresh
# (page faults), as a lone reload in production does.
for i in 1 2; do
  sleep 7
  switch_to "$W/big$((i % 2 * 2)).toml" reload_cold_ms
done
wait $WRK_BG
line=$(cat "$W/reload-wrk")
put tollgate reload_wrk_requests "$(field requests "$line")"
put tollgate reload_wrk_failed $(($(field errors "$line") + $(field non2xx "$line")))
put tollgate rss_big_config_kb "$(rss_kb "$(pids_of tollgate)")"

# ---- table -----------------------------------------------------------------
med() { # target metric -> median of the recorded values, or "-"
  awk -v t="$1" -v m="$2" '$1==t && $2==m && $3!="-" {print $3}' "$RES" | sort -n |
    awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}
maxof() { awk -v t="$1" -v m="$2" '$1==t && $2==m && $3!="-" {print $3}' "$RES" | sort -n | tail -1; }
minof() { awk -v t="$1" -v m="$2" '$1==t && $2==m && $3!="-" {print $3}' "$RES" | sort -n | head -1; }
row() { # label metric
  local d n r p g
  d=$(med direct "$2"); n=$(med nginx "$2"); r=$(med raw "$2"); p=$(med pingora "$2"); g=$(med tollgate "$2")
  echo "| $1 | $d | $n | $r | $p | $g | $(ratio "$g" "$n") | $(ratio "$g" "$p") |"
}
TABLE=$(
  echo "tollgate load benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" rev-parse --short HEAD)"
  echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -r); load average before: $LOAD_BEFORE"
  echo "rounds: $ROUNDS (medians), quick=$QUICK; proxies on CPU 0, mock + load generator on CPU 1; nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo
  echo "raw: Pingora's listener + a minimal HTTP/1 relay (non-stream only); pingora: a bare pingora-proxy (examples/bench_pingora.rs)"
  echo
  echo "| metric | direct | nginx | raw | pingora | tollgate | tollgate/nginx | tollgate/pingora |"
  echo "|---|---|---|---|---|---|---|---|"
  row "c=1 latency p50 (µs)" lat_p50_us
  row "c=1 latency p99 (µs)" lat_p99_us
  row "added p50 at c=1 (µs)" added_p50_us
  row "added p99 at c=1 (µs)" added_p99_us
  row "max req/s with p99 ≤ 5 ms" max_rps_p99_5ms
  row "CPU per request at c=$CPU_CONC (µs)" cpu_us_per_req
  row "on-CPU time per request at c=$CPU_CONC, schedstat (ns)" sched_ns_per_req
  echo "| CPU per request at c=$CPU_CONC, $CPU_TRIPLES interleaved triples (µs) | - | $(med nginx cpu_triple_us) | $(med raw cpu_triple_us) | - | $(med tollgate cpu_triple_us) | $(med tollgate cpu_triple_vs_nginx) (median of the triples' ratios, $(minof tollgate cpu_triple_vs_nginx)–$(maxof tollgate cpu_triple_vs_nginx); tollgate/raw $(med tollgate cpu_triple_vs_raw)) | - |"
  echo "| c=1 latency p99, $LAT_TRIPLES interleaved triples of ${D_LAT_TRIPLE} s (µs) | $(med direct lat_triple_p99_us) | $(med nginx lat_triple_p99_us) | - | - | $(med tollgate lat_triple_p99_us) | $(ratio "$(med tollgate lat_triple_p99_us)" "$(med nginx lat_triple_p99_us)") | - |"
  echo "| added p99 at c=1, $LAT_TRIPLES interleaved triples (µs) | - | $(med nginx lat_triple_added_p99_us) | - | - | $(med tollgate lat_triple_added_p99_us) | $(med tollgate lat_triple_vs_nginx) (median of the triples' ratios, $(minof tollgate lat_triple_vs_nginx)–$(maxof tollgate lat_triple_vs_nginx)) | - |"
  row "CPU per 1 MiB-body request (µs)" cpu_us_per_1mib_req
  row "1 MiB-body req/s at c=4" rps_1mib
  row "RSS idle (KiB)" rss_idle_kb
  row "RSS under load, peak (KiB)" rss_load_kb
  row "RSS after load (KiB)" rss_after_kb
  row "stream time to first event p50 (µs), $SMALL_STREAMS streams" ttfe_p50_us
  row "added time to first event p50 (µs)" added_ttfe_p50_us
  row "inter-event gap p99 (µs), ${GAP_MS} ms spacing" gap_p99_us
  row "added inter-event gap p99 (µs)" added_gap_p99_us
  echo
  echo "Throughput sweep (median req/s / p99 µs per concurrency):"
  echo
  echo "| c | direct | nginx | raw | pingora | tollgate |"
  echo "|---|---|---|---|---|---|"
  for c in $CONCS; do
    echo -n "| $c |"
    for t in direct $PROXIES; do echo -n " $(med $t rps_c$c) / $(med $t p99_us_c$c) |"; done
    echo
  done
  echo
  echo "Concurrent streams ($EVENTS events each, started over 1 s; stall = gap > 1 s):"
  echo
  echo "| streams | gap (ms) | prompt (B) | target | ok / failed / short | peak concurrent | stalled gaps | TTFE p99 (µs) | gap p99 (µs) | gap max (µs) | RSS growth per stream (B) | proxy CPU (ms) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for step in $STREAM_LADDER; do
    IFS=: read -r n gap prompt <<<"$step"
    for t in direct nginx pingora tollgate; do
      s=s$step
      echo "| $n | $gap | ${prompt:-0} | $t | $(med $t ${s}_streams_ok) / $(med $t ${s}_streams_failed) / $(med $t ${s}_streams_short) | $(med $t ${s}_peak_concurrent) | $(med $t ${s}_stalled_gaps) | $(med $t ${s}_ttfe_p99_us) | $(med $t ${s}_gap_p99_us) | $(med $t ${s}_gap_max_us) | $(med $t ${s}_rss_growth_per_stream_b) | $(med $t ${s}_cpu_ms) |"
    done
  done
  echo
  echo "Reload under load (tollgate, 10,000 keys / 500 channels, $RELOADS + $RELOADS_ALL + 2 reloads during wrk -c16 ${D_RELOAD}s):"
  echo "POST /admin/reload (parse + validate + compile + swap) median $(med tollgate reload_ms) ms, max $(maxof tollgate reload_ms) ms (every channel's weight edited: 500 of 10,532 items parsed);"
  echo "every item edited: median $(med tollgate reload_all_ms) ms, max $(maxof tollgate reload_all_ms) ms;"
  echo "every item edited, each after 7 s without a reload: $(awk '$1=="tollgate" && $2=="reload_cold_ms" {printf "%s%s ms", sep, $3; sep=" and "}' "$RES");"
  echo "requests during reloads: $(med tollgate reload_wrk_requests), failed (socket errors + non-2xx): $(med tollgate reload_wrk_failed); RSS with the big config: $(med tollgate rss_big_config_kb) KiB"
  if grep -q ' errors' "$RES"; then
    echo
    echo "Errors seen:"
    grep ' errors' "$RES" | sed 's/^/    /'
  fi
)
echo "$TABLE"
OUT=${OUT:-$ROOT/target/bench/results-$(date -u +%Y%m%dT%H%M).md}
mkdir -p "$(dirname "$OUT")"
echo "$TABLE" >"$OUT"
cp "$RES" "${OUT%.md}.raw.txt"
echo "saved: $OUT" >&2
