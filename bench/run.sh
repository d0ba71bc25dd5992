#!/usr/bin/env bash
# Engram, etcd and Redis side by side on this machine, in one run (issues 5, 15).
# `make bench` builds Release and calls this; see bench/README.md.
#
#   bench/run.sh BUILD_DIR       BUILD_DIR holds engramd, engram and eg_loadgen
#
# Environment (all optional): BENCH_SECONDS (5) per point, BENCH_ROUNDS (3)
# slices per point, BENCH_WARMUP (1),
# BENCH_CONCURRENCY ("1 16 64"), BENCH_OUT (bench/results), BENCH_KEEP=1 keeps
# the work directory (data, logs, h2load per-request logs),
# BENCH_FILL_SESSIONS (10000) sessions of 100 messages in the fill (fewer:
# a quick run proving the script, whose "1,000,000" figures do not hold).
#
# Starts engramd (durable commits, encryption, auth), etcd and Redis
# (appendonly yes, appendfsync always), all on 127.0.0.1 with data in a
# temporary directory under BUILD_DIR, and stops them by PID on any exit.
# Every wait is bounded; every load run has a fixed duration or count, and
# an outer timeout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-release}" && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/results}
SECS=${BENCH_SECONDS:-5}
WARM=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
read -r -a CONCS <<<"${BENCH_CONCURRENCY:-1 16 64}"
SLICE=$(awk -v s="$SECS" -v r="$ROUNDS" 'BEGIN { print s / r }')
PY=/usr/bin/python3
REPORT="$PY $ROOT/bench/report.py"
LOADGEN=$BUILD/eg_loadgen
TOKEN=bench-secret
FILL_SESSIONS=${BENCH_FILL_SESSIONS:-10000} # x FILL_MESSAGES = 1,000,000 messages
FILL_MESSAGES=100
SCALE_MESSAGES=100000
SCALE_SESSIONS=100000
T_START=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

for f in "$BUILD/engramd" "$BUILD/engram" "$LOADGEN"; do [ -x "$f" ] || die "missing $f (run make bench)"; done
for t in h2load nghttp etcd redis-server redis-benchmark redis-cli "$PY"; do command -v "$t" >/dev/null || die "missing $t (scripts/deps.sh bench)"; done

WORK=$(mktemp -d "$BUILD/bench.XXXXXX")
RAW=$WORK/raw
mkdir -p "$RAW" "$WORK/bodies"
RUNS=$WORK/runs.jsonl
: >"$RUNS"
PIDS=()

. "$ROOT/bench/lib.sh" # stop_pid, free_port

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ -n "${BENCH_KEEP:-}" ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for WHAT SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds.
wait_for() {
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what not ready after $secs s"
}

# ---- start the servers ---------------------------------------------------------
EG_METRICS_PORT=$(free_port)
ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port)
while [ "$ETCD_PEER_PORT" = "$ETCD_PORT" ] || [ "$ETCD_PEER_PORT" = "$EG_METRICS_PORT" ]; do ETCD_PEER_PORT=$(free_port); done
REDIS_PORT=$(free_port)
while [[ " $EG_METRICS_PORT $ETCD_PORT $ETCD_PEER_PORT " == *" $REDIS_PORT "* ]]; do REDIS_PORT=$(free_port); done

echo "bench agent $("$BUILD/engram" token hash "$TOKEN")" >"$WORK/tokens"
log "starting engramd (Release, durable commits, encryption on, auth on) in $WORK"
"$BUILD/engramd" --listen 127.0.0.1:0 --data-dir "$WORK/engram" --tokens "$WORK/tokens" \
  --metrics-listen "127.0.0.1:$EG_METRICS_PORT" >"$WORK/engramd.log" 2>&1 &
EG_PID=$!
PIDS+=("$EG_PID")
wait_for "engramd" 15 grep -q 'listening on' "$WORK/engramd.log"
EG_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/engramd.log" | head -1)
EG=127.0.0.1:$EG_PORT
EG_METRICS=http://127.0.0.1:$EG_METRICS_PORT/metrics
wait_for "engramd metrics" 10 $REPORT http-ok "$EG_METRICS"

log "starting etcd ($(etcd --version | head -1)) on 127.0.0.1:$ETCD_PORT"
etcd --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
ETCD=127.0.0.1:$ETCD_PORT
ETCD_METRICS=http://$ETCD/metrics
wait_for "etcd" 30 $REPORT http-ok "http://$ETCD/health" --contains '"health":"true"'

# Redis as its users run it when every acknowledged write must be durable:
# each write is in the append-only file and fsynced before its reply. No
# config file: Redis's built-in defaults but for these. No RDB snapshots
# (save ""), and no automatic AOF rewrite: a rewrite forks a child that would
# compete for the same CPUs with whichever server is being measured.
rcli() { timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
redis_ping() { [ "$(rcli PING)" = PONG ]; }
mkdir -p "$WORK/redis"
log "starting $(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$REDIS_PORT (appendonly yes, appendfsync always)"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" --appendonly yes --appendfsync always \
  --save '' --auto-aof-rewrite-percentage 0 --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_for "redis" 15 redis_ping
[ "$(rcli CONFIG GET appendfsync | tail -1)" = always ] || die "redis: appendfsync is not always"

$REPORT meta "$WORK" --seconds "$SECS" --warmup "$WARM" --rounds "$ROUNDS" >"$WORK/meta.json"

# ---- request bodies, seed data, one sampled reply each -----------------------------
B=$WORK/bodies
$LOADGEN body append bench-append 256 >"$B/append.bin"
$LOADGEN body append bench-append10 256 10 >"$B/append10.bin"
$LOADGEN body get-session bench-get >"$B/get_session.bin"
$LOADGEN body get-context bench-ctx 20 >"$B/get_context.bin"
$LOADGEN body health >"$B/health.bin"
$LOADGEN body etcd-put bench-key 256 >"$B/put.bin"
$LOADGEN body etcd-range bench-key >"$B/range.bin"

lg() { timeout 600 "$LOADGEN" --target "$EG" --token "$TOKEN" "$@"; }
lg fill --session bench-append --user bench-user --messages 0 >/dev/null || die "seed bench-append"
lg fill --session bench-append10 --user bench-user --messages 0 >/dev/null || die "seed bench-append10"
lg fill --session bench-get --user bench-user --messages 2 >/dev/null || die "seed bench-get"
lg fill --session bench-ctx --user bench-user --messages 100 >/dev/null || die "seed bench-ctx"

GRPC_H=(-H 'content-type: application/grpc' -H 'te: trailers')
AUTH_H=(-H "authorization: Bearer $TOKEN")

# sample URL BODY [HEADERS...]: one call with nghttp; its trailers must say grpc-status 0.
sample() {
  local url=$1 body=$2 out
  shift 2
  out=$(timeout 20 nghttp -v "${GRPC_H[@]}" "$@" -d "$body" "$url" 2>&1 | tr -d '\000') || die "nghttp $url: $out"
  grep -aq 'grpc-status: 0' <<<"$out" || die "sampled call $url did not end with grpc-status 0:
$(grep -a -E 'grpc-|:status' <<<"$out")"
}
# The first Put also writes the key that Range reads.
sample "http://$ETCD/etcdserverpb.KV/Put" "$B/put.bin"
sample "http://$ETCD/etcdserverpb.KV/Range" "$B/range.bin"
sample "http://$ETCD/grpc.health.v1.Health/Check" "$B/health.bin"
# Range must find the key: its reply carries the key back.
range_reply=$(timeout 20 nghttp "${GRPC_H[@]}" -d "$B/range.bin" "http://$ETCD/etcdserverpb.KV/Range" | tr -d '\000')
grep -aq bench-key <<<"$range_reply" || die "etcd Range does not find bench-key"
sample "http://$EG/engram.v1.SessionService/AppendMessages" "$B/append.bin" "${AUTH_H[@]}"
sample "http://$EG/engram.v1.SessionService/GetSession" "$B/get_session.bin" "${AUTH_H[@]}"
sample "http://$EG/engram.v1.SessionService/GetContext" "$B/get_context.bin" "${AUTH_H[@]}"
sample "http://$EG/grpc.health.v1.Health/Check" "$B/health.bin" "${AUTH_H[@]}"
sample "http://$EG/engram.v1.SessionService/AppendMessages" "$B/append10.bin" "${AUTH_H[@]}"

# Redis values: 256 bytes each, ten different ones for the 10-value RPUSH.
# bench-ctx holds 100, as Engram's bench-ctx session holds 100 messages;
# LRANGE bench-ctx -20 -1 is its last 20, as GetContext returns the last 20.
redis_value() { printf 'v%-255s' "$1" | tr ' ' x; }
RV=$(redis_value 0)
RV10=()
for i in 1 2 3 4 5 6 7 8 9 10; do RV10+=("$(redis_value "$i")"); done
ctx_values=()
for ((i = 0; i < 100; i++)); do ctx_values+=("$(redis_value "$i")"); done
[ "$(rcli RPUSH bench-ctx "${ctx_values[@]}")" = 100 ] || die "redis: seeding bench-ctx"
# The sampled reads, as for the gRPC servers: the last 20 values come back, whole.
[ "$(rcli LRANGE bench-ctx -20 -1 | grep -c "^v8[0-9]x*$\|^v9[0-9]x*$")" = 20 ] || die "redis: LRANGE bench-ctx"
[ "$(rcli LRANGE bench-ctx -20 -1 | awk '{ n += length($0) } END { print n }')" = 5120 ] || die "redis: LRANGE sizes"

# ---- h2load workloads ------------------------------------------------------------
# scrape URL FILE: the metrics, once the call counters have settled.
scrape() { timeout 30 $REPORT scrape "$1" "$2" || die "scrape $1"; }

# log_slice: one line for the slice just recorded in RUNS.
log_slice() {
  log "$(tail -1 "$RUNS" | $PY -c 'import json,sys; r=json.load(sys.stdin); print("%-20s %9.0f req/s  p50 %6d us  p99 %6d us  (%d calls, server OK %d)" % (r["name"], r["qps"], r["p50_us"], r["p99_us"], r["succeeded"], r["server_ok"]))')"
}

# h2run WORKLOAD SERVER METHOD_PATH BODY CONCURRENCY ROUND
# One slice of SECS/ROUNDS seconds. Round 1 starts with a warm-up (WARM
# seconds, then WARM more to measure the rate); each slice asks for as many
# calls as the last rate seen gives in its time (-n: no call is left in
# flight, so the server's counters must match h2load's exactly), and is
# checked by report.py.
h2run() {
  local w=$1 server=$2 path=$3 body=$4 c=$5 round=$6 name addr metrics calls hdr=()
  name=${w}_c${c}_r$round
  if [ "$server" = engram ]; then addr=$EG metrics=$EG_METRICS hdr=("${AUTH_H[@]}"); else addr=$ETCD metrics=$ETCD_METRICS; fi
  local url=http://$addr$path rate=$RAW/${w}_c$c.rate
  if [ "$round" = 1 ]; then
    timeout $((WARM * 2 + 60)) h2load -c "$c" -m 1 -t 1 --warm-up-time "$WARM" -D "$WARM" "${GRPC_H[@]}" \
      "${hdr[@]}" -d "$body" "$url" >"$rate" 2>&1 || die "h2load warm-up $name: $(tail -3 "$rate")"
  fi
  calls=$($REPORT calls "$rate" --seconds "$SLICE" --conc "$c") || die "rate for $name"
  scrape "$metrics" "$RAW/$name.before"
  timeout $((SECS * 4 + 60)) h2load -c "$c" -m 1 -t 1 -n "$calls" "${GRPC_H[@]}" "${hdr[@]}" -d "$body" \
    --log-file "$RAW/$name.log" "$url" >"$RAW/$name.out" 2>&1 || die "h2load $name: $(tail -3 "$RAW/$name.out")"
  scrape "$metrics" "$RAW/$name.after"
  $REPORT check-h2load --name "$name" --server "$server" --workload "$w" --method "$path" --conc "$c" \
    --calls "$calls" --out "$RAW/$name.out" --log "$RAW/$name.log" --before "$RAW/$name.before" \
    --after "$RAW/$name.after" >>"$RUNS" || die "counting check of $name"
  cp "$RAW/$name.out" "$rate"
  log_slice
}

# rbrun WORKLOAD COMMAND CONCURRENCY ROUND ARGS...
# One slice of redis-benchmark sending the command ARGS, like h2run: round 1
# starts with a warm-up and a run to measure the rate (a number of calls
# each: redis-benchmark has no duration option); each slice asks for an
# exact number of calls (-n), and report.py check-redis compares COMMAND's
# calls in INFO commandstats before and after with the requests
# redis-benchmark reports.
rbrun() {
  local w=$1 cmd=$2 c=$3 round=$4 name calls
  shift 4
  name=${w}_c${c}_r$round
  local rate=$RAW/${w}_c$c.rate rb=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$c")
  if [ "$round" = 1 ]; then
    timeout 120 "${rb[@]}" -n $((c * 100 + 500)) "$@" >"$rate" 2>&1 || die "redis-benchmark warm-up $name: $(tail -3 "$rate")"
    calls=$($REPORT calls "$rate" --seconds "$WARM" --conc "$c") || die "rate for $name"
    timeout $((WARM * 4 + 60)) "${rb[@]}" -n "$calls" "$@" >"$rate" 2>&1 || die "redis-benchmark rate $name: $(tail -3 "$rate")"
  fi
  calls=$($REPORT calls "$rate" --seconds "$SLICE" --conc "$c") || die "rate for $name"
  rcli INFO all >"$RAW/$name.before" || die "redis INFO"
  timeout $((SECS * 4 + 60)) "${rb[@]}" -n "$calls" "$@" >"$RAW/$name.out" 2>&1 ||
    die "redis-benchmark $name: $(tail -3 "$RAW/$name.out")"
  rcli INFO all >"$RAW/$name.after" || die "redis INFO"
  $REPORT check-redis --name "$name" --workload "$w" --command "$cmd" --conc "$c" \
    --calls "$calls" --out "$RAW/$name.out" --before "$RAW/$name.before" --after "$RAW/$name.after" >>"$RUNS" ||
    die "counting check of $name"
  cp "$RAW/$name.out" "$rate"
  log_slice
}

# Peers back to back, and every workload in ROUNDS slices taken in turn, so
# that all three servers see the same machine (it is shared, and noisy).
for c in "${CONCS[@]}"; do
  log "h2load, concurrency $c"
  for ((round = 1; round <= ROUNDS; round++)); do
    h2run append engram /engram.v1.SessionService/AppendMessages "$B/append.bin" "$c" "$round"
    h2run put etcd /etcdserverpb.KV/Put "$B/put.bin" "$c" "$round"
    h2run get_session engram /engram.v1.SessionService/GetSession "$B/get_session.bin" "$c" "$round"
    h2run range etcd /etcdserverpb.KV/Range "$B/range.bin" "$c" "$round"
    h2run get_context engram /engram.v1.SessionService/GetContext "$B/get_context.bin" "$c" "$round"
    h2run health engram /grpc.health.v1.Health/Check "$B/health.bin" "$c" "$round"
    h2run etcd_health etcd /grpc.health.v1.Health/Check "$B/health.bin" "$c" "$round"
    rbrun redis_rpush RPUSH "$c" "$round" RPUSH bench-list "$RV"
    # 10 per call at the goal's concurrency only: the run must stay short.
    if [ "$c" = 64 ]; then
      h2run append10 engram /engram.v1.SessionService/AppendMessages "$B/append10.bin" "$c" "$round"
      rbrun redis_rpush10 RPUSH "$c" "$round" RPUSH bench-list10 "${RV10[@]}"
    fi
    rbrun redis_lrange LRANGE "$c" "$round" LRANGE bench-ctx -20 -1
    rbrun redis_ping PING "$c" "$round" PING
  done
done

# etcd and Redis are done: stop them, so they are not busy (snapshots,
# compaction) under what follows.
stop_pid "$ETCD_PID"
stop_pid "$REDIS_PID"
PIDS=("$EG_PID")

# ---- eg_loadgen: fill, memory, mixed, scaling ---------------------------------------------

SVC=/engram.v1.SessionService
# lgrun NAME WORKLOAD CONCURRENCY METHODS ARGS...: eg_loadgen checked against the counters.
# LG_AT=HOST:PORT LG_METRICS=URL point it at another engramd (default the main one).
lgrun() {
  local name=$1 w=$2 c=$3 methods=$4 at=${LG_AT:-$EG} metrics=${LG_METRICS:-$EG_METRICS}
  shift 4
  scrape "$metrics" "$RAW/$name.before"
  timeout 600 "$LOADGEN" --target "$at" --token "$TOKEN" "$@" >"$RAW/$name.out" 2>"$RAW/$name.err" ||
    die "eg_loadgen $name: $(cat "$RAW/$name.err")"
  scrape "$metrics" "$RAW/$name.after"
  $REPORT check-loadgen --name "$name" --workload "$w" --conc "$c" --methods "$methods" \
    --out "$RAW/$name.out" --before "$RAW/$name.before" --after "$RAW/$name.after" >>"$RUNS" ||
    die "counting check of $name"
  log "$(tail -1 "$RUNS" | $PY -c 'import json,sys; r=json.load(sys.stdin); print("%-16s %9.0f calls/s  p50 %6d us  p99 %6d us  (%d calls)" % (r["name"], r["qps"], r["p50_us"], r["p99_us"], r["ok"]))')"
}

# ---- indexing's cost on appends (issue 13) ----------------------------------------------------
# The same build with --index-messages=false beside the main engramd (indexing on, the
# default); one message of Zipf text (bench/lg_text.h) per call at c=64, rounds in turn:
# first on small stores (now), again once both hold the same 1,000,000 messages (below).
NOIDX_METRICS_PORT=$(free_port)
"$BUILD/engramd" --listen 127.0.0.1:0 --data-dir "$WORK/engram-noidx" --tokens "$WORK/tokens" \
  --index-messages=false --metrics-listen "127.0.0.1:$NOIDX_METRICS_PORT" >"$WORK/engramd-noidx.log" 2>&1 &
NOIDX_PID=$!
PIDS+=("$NOIDX_PID")
wait_for "engramd --index-messages=false" 15 grep -q 'listening on' "$WORK/engramd-noidx.log"
NOIDX=127.0.0.1:$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/engramd-noidx.log" | head -1)
NOIDX_METRICS=http://127.0.0.1:$NOIDX_METRICS_PORT/metrics
wait_for "engramd --index-messages=false metrics" 10 $REPORT http-ok "$NOIDX_METRICS"
for at in "$EG" "$NOIDX"; do
  timeout 600 "$LOADGEN" --target "$at" --token "$TOKEN" fill --prefix ix- --sessions 1000 --users 100 \
    --threads 16 --seconds 120 >/dev/null || die "seed ix- sessions on $at"
done
# index_rounds STAGE: ROUNDS rounds of on and off in turn.
index_rounds() {
  local stage=$1 round idx at m
  for ((round = 1; round <= ROUNDS; round++)); do
    for idx in on off; do
      if [ $idx = on ]; then at=$EG m=$EG_METRICS; else at=$NOIDX m=$NOIDX_METRICS; fi
      LG_AT=$at LG_METRICS=$m lgrun "append_index_${idx}_${stage}_r$round" "append_index_${idx}_$stage" 64 \
        "$SVC/AppendMessages" run mixed --prefix ix- --sessions 1000 --read-pct 0 --bytes 256 --threads 64 \
        --seconds "$SECS"
    done
  done
}
# disk LABEL DIR MESSAGES: the store file's size, for bytes per message.
disk() {
  printf '{"kind": "disk", "name": "%s", "bytes": %s, "messages": %s}\n' "$1" \
    "$(stat -c %s "$2/data.mdb")" "$3" >>"$RUNS"
}

log "indexing on vs off, small stores"
index_rounds small

log "fill: $FILL_SESSIONS sessions x $FILL_MESSAGES messages (AppendMessages of 100, 64 threads)"
lgrun fill fill 64 "$SVC/CreateSession,$SVC/AppendMessages" \
  fill --prefix m- --sessions "$FILL_SESSIONS" --users 1000 --messages "$FILL_MESSAGES" \
  --per-call 100 --bytes 256 --threads 64 --seconds 300
# fill_done: the messages the last fill appended; a fill cut short by its 300 s is a failure here,
# not a wrong count in the workloads that read the filled sessions.
fill_done() { tail -1 "$RUNS" | $PY -c 'import json,sys; print(sum(p["items"] for p in json.load(sys.stdin)["phases"] if p["what"] == "append"))'; }
[ "$(fill_done)" = $((FILL_SESSIONS * FILL_MESSAGES)) ] || die "the fill appended $(fill_done) messages in 300 s, not $((FILL_SESSIONS * FILL_MESSAGES))"
sleep 1
$REPORT rss "$EG_PID" after_fill --messages $((FILL_SESSIONS * FILL_MESSAGES)) >>"$RUNS"
log "the same fill on the --index-messages=false engramd, then indexing on vs off again"
LG_AT=$NOIDX LG_METRICS=$NOIDX_METRICS lgrun fill_noidx fill_noidx 64 "$SVC/CreateSession,$SVC/AppendMessages" \
  fill --prefix m- --sessions "$FILL_SESSIONS" --users 1000 --messages "$FILL_MESSAGES" \
  --per-call 100 --bytes 256 --threads 64 --seconds 300
[ "$(fill_done)" = $((FILL_SESSIONS * FILL_MESSAGES)) ] || die "the unindexed fill appended $(fill_done) messages in 300 s"
index_rounds filled
disk indexed "$WORK/engram" $((FILL_SESSIONS * FILL_MESSAGES))
timeout 60 $REPORT lmdb "$WORK/engram" indexed --messages $((FILL_SESSIONS * FILL_MESSAGES)) >>"$RUNS" ||
  die "mdb_stat of the indexed store"
timeout 60 $REPORT lmdb "$WORK/engram-noidx" unindexed --messages $((FILL_SESSIONS * FILL_MESSAGES)) >>"$RUNS" ||
  die "mdb_stat of the unindexed store"
disk unindexed "$WORK/engram-noidx" $((FILL_SESSIONS * FILL_MESSAGES))
stop_pid "$NOIDX_PID"
PIDS=("$EG_PID")
log "engramd memory: $(tail -1 "$RUNS")"

for c in "${CONCS[@]}"; do
  lg run mixed --prefix m- --sessions "$FILL_SESSIONS" --threads "$c" --seconds "$WARM" \
    --max-messages 20 >/dev/null 2>&1 || die "mixed warm-up"
  lgrun "mixed_c$c" mixed "$c" "$SVC/GetSession,$SVC/GetContext,$SVC/AppendMessages" \
    run mixed --prefix m- --sessions "$FILL_SESSIONS" --read-pct 90 --max-messages 20 --expect 20 \
    --bytes 256 --threads "$c" --seconds "$SECS"
done

log "scaling: a session of $SCALE_MESSAGES messages, a user with $SCALE_SESSIONS sessions"
lgrun scale_fill_ctx fill_scale 8 "$SVC/CreateSession,$SVC/AppendMessages" \
  fill --session scale-ctx-big --user scale-ctx --messages "$SCALE_MESSAGES" --per-call 100 --threads 8 --seconds 300
lgrun scale_fill_ctx_small fill_scale 1 "$SVC/CreateSession,$SVC/AppendMessages" \
  fill --session scale-ctx-small --user scale-ctx --messages 100 --per-call 100 --threads 1 --seconds 60
lgrun scale_fill_ls fill_scale 64 "$SVC/CreateSession" \
  fill --prefix scale-ls-big- --user scale-ls-big --sessions "$SCALE_SESSIONS" --threads 64 --seconds 300
lgrun scale_fill_ls_small fill_scale 1 "$SVC/CreateSession" \
  fill --prefix scale-ls-small- --user scale-ls-small --sessions 10 --threads 1 --seconds 60
# Small and big alternate, three rounds of a second each: the report takes
# each size's median round, so a noisy second on a shared machine does not
# decide the comparison.
for round in 1 2 3; do
  for size in small big; do
    lgrun "scale_ctx_${size}_r$round" "scale_ctx_$size" 1 "$SVC/GetContext" \
      run get-context --session "scale-ctx-$size" --max-messages 20 --expect 20 --threads 1 \
      --seconds 1 --count 20000
    lgrun "scale_ls_${size}_r$round" "scale_ls_$size" 1 "$SVC/ListSessions" \
      run list-sessions --user "scale-ls-$size" --page-size 10 --expect 10 --threads 1 \
      --seconds 1 --count 20000
  done
done
$REPORT rss "$EG_PID" end_of_run \
  --messages $((FILL_SESSIONS * FILL_MESSAGES + SCALE_MESSAGES + 100)) >>"$RUNS"

# ---- message search (issue 13) -------------------------------------------------------------
# SearchMessages over one user's 100,000 messages, then over the whole tenant (the fill's
# 1,000,000 messages of 1,000 users, the scaling session's 100,000 and these 100,000).
lgrun search_fill fill_search 8 "$SVC/CreateSession,$SVC/AppendMessages" \
  fill --prefix sx- --user search-user --sessions 1000 --messages 100 --per-call 100 --threads 8 --seconds 300
for ((round = 1; round <= ROUNDS; round++)); do
  lgrun "search_user_r$round" search_user 1 "$SVC/SearchMessages" \
    run search-messages --user search-user --threads 1 --seconds "$SECS"
  lgrun "search_tenant_r$round" search_tenant 1 "$SVC/SearchMessages" \
    run search-messages --threads 1 --seconds "$SECS"
done
lgrun search_user_c16 search_user_c16 16 "$SVC/SearchMessages" \
  run search-messages --user search-user --threads 16 --seconds "$SECS"

# ---- stop, then report -----------------------------------------------------------------------
log "stopping engramd"
for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
PIDS=()
grep -q 'draining calls' "$WORK/engramd.log" || log "note: engramd did not log an orderly stop"
mkdir -p "$OUT"
$REPORT report --runs "$RUNS" --meta "$WORK/meta.json" --out "$OUT" --date "$(date -u +%Y-%m-%dT%H:%MZ)" \
  --elapsed "${BENCH_ELAPSED_FROM:+$(( $(date +%s) - BENCH_ELAPSED_FROM ))}"
log "done in $(( $(date +%s) - T_START )) s: $OUT/results.md, $OUT/chart.svg"
