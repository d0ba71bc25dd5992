#!/usr/bin/env bash
# Churn benchmark (issue 9): short sessions created, appended and expiring at
# a steady rate; does the data file plateau, and what do sweeps cost the
# writers? `make bench-churn` builds Release and calls this.
#
#   bench/churn.sh BUILD_DIR       BUILD_DIR holds engramd, engram, eg_loadgen
#
# Two phases of CHURN_SECONDS each on a fresh engramd with the same load:
# "keep" (expired sessions kept forever: nothing is ever due) and "sweep"
# (expired sessions deleted CHURN_RETENTION_S after expiring). Every
# CHURN_SAMPLE_S seconds: data.mdb's size, LMDB's pages (mdb_stat), the
# write and sweep counters. Results: CHURN_OUT/churn.md and churn.json.
#
# Environment: CHURN_SECONDS (240) per phase, CHURN_THREADS (16),
# CHURN_RATE (300 session starts/s over all threads; 0 = closed loop),
# CHURN_MESSAGES (10) per session in calls of CHURN_PER_CALL (2),
# CHURN_BYTES (256), CHURN_TTL_S (5), CHURN_RETENTION_S (5), CHURN_SAMPLE_S
# (5), CHURN_SWEEP_INTERVAL_MS (100), CHURN_SWEEP_BATCH (2000),
# CHURN_WAL_RETAIN_S (30), CHURN_OUT
# (bench/results). Servers run on 127.0.0.1 with data under BUILD_DIR and
# are stopped by PID on any exit; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-release}" && pwd)
SECS=${CHURN_SECONDS:-240}
THREADS=${CHURN_THREADS:-16}
RATE=${CHURN_RATE:-300}
MESSAGES=${CHURN_MESSAGES:-10}
PER_CALL=${CHURN_PER_CALL:-2}
BYTES=${CHURN_BYTES:-256}
TTL=${CHURN_TTL_S:-5}
RETENTION=${CHURN_RETENTION_S:-5}
SAMPLE=${CHURN_SAMPLE_S:-5}
# The sweeper's pace cap (batch per interval) must stay above the rate
# records become due, or the backlog, and the file, grow: at 100 ms and
# 2000 it is 20,000 records/s, several times what this machine writes.
SWEEP_MS=${CHURN_SWEEP_INTERVAL_MS:-100}
SWEEP_BATCH=${CHURN_SWEEP_BATCH:-2000}
# The replication log lives in data.mdb too and by default keeps a million
# records or a day: it would grow through the whole run in both phases.
# Kept for WAL_S seconds here, so what is measured is the retention tiers.
WAL_S=${CHURN_WAL_RETAIN_S:-30}
OUT=${CHURN_OUT:-$ROOT/bench/results}
PY=/usr/bin/python3
REPORT="$PY $ROOT/bench/churn_report.py"
TOKEN=bench-token

log() { printf '[churn %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for f in engramd engram eg_loadgen; do [ -x "$BUILD/$f" ] || die "missing $BUILD/$f (run make bench-churn)"; done
command -v mdb_stat >/dev/null || die "missing mdb_stat (apt-get install lmdb-utils)"

WORK=$(mktemp -d "$BUILD/churn-bench.XXXXXX")
PIDS=()
cleanup() {
  local rc=$? pid
  set +e
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ -n "${CHURN_KEEP:-}" ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cd "$WORK"
"$BUILD/engram" keygen >key && { echo "primary 1"; cat key; } >keyring && chmod 600 keyring
echo "bench agent $("$BUILD/engram" token hash "$TOKEN")" >tokens
(cd "$ROOT" && $REPORT meta) >meta.json

# phase NAME RETENTION_S: a fresh engramd, the churn load for SECS seconds,
# sampled every SAMPLE seconds; leaves NAME.samples.jsonl and NAME.loadgen.json.
phase() {
  local name=$1 retention=$2 mport pid lg t0 i
  mport=$(port)
  "$BUILD/engramd" --listen 127.0.0.1:0 --data-dir "$name" --keyring keyring --tokens tokens \
    --metrics-listen "127.0.0.1:$mport" --session-ttl "$TTL" \
    --expired-session-retention-s "$retention" --raw-message-retention-s 0 \
    --sweep-interval-ms "$SWEEP_MS" --sweep-batch "$SWEEP_BATCH" --wal-retain-s "$WAL_S" >"$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for i in $(seq 200); do grep -q 'listening on' "$name.log" && break; sleep 0.1; done
  grep -q 'listening on' "$name.log" || die "engramd ($name) did not start: $(cat "$name.log")"
  local addr url=http://127.0.0.1:$mport/metrics
  addr=127.0.0.1:$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$name.log" | head -1)
  for i in $(seq 100); do $PY -c "import urllib.request; urllib.request.urlopen('$url', timeout=2)" 2>/dev/null && break; sleep 0.1; done

  log "$name: --expired-session-retention-s $retention, $SECS s of churn on $addr"
  t0=$(date +%s.%N)
  : >"$name.samples.jsonl"
  $REPORT sample "$name" "$url" "$t0" >>"$name.samples.jsonl" || die "sampling $name"
  timeout $((SECS + 120)) "$BUILD/eg_loadgen" --target "$addr" --token "$TOKEN" run churn \
    --prefix "churn-$name-" --threads "$THREADS" --seconds "$SECS" --rate "$RATE" \
    --messages "$MESSAGES" --per-call "$PER_CALL" --bytes "$BYTES" >"$name.loadgen.json" 2>"$name.loadgen.err" &
  lg=$!
  PIDS+=("$lg")
  # Samples on a fixed grid from t0 (a slow mdb_stat does not shift the grid).
  for ((i = 1; ; i++)); do
    while kill -0 "$lg" 2>/dev/null && awk -v t0="$t0" -v i="$i" -v s="$SAMPLE" -v now="$(date +%s.%N)" \
      'BEGIN { exit !(now < t0 + i * s) }'; do sleep 0.2; done
    kill -0 "$lg" 2>/dev/null || break
    $REPORT sample "$name" "$url" "$t0" >>"$name.samples.jsonl" || die "sampling $name"
    log "$name: $(tail -1 "$name.samples.jsonl" | $PY -c 'import json,sys; s=json.load(sys.stdin); print("t=%5.0f s data.mdb %7.1f MiB  pages in use %8d  writes %9d  swept %9d  backlog %d" % (s["t"], s["data_mdb_bytes"]/1048576, s["pages_used"]-s["pages_free"], s["writes_ok"], s["swept_total"], s["sweep_backlog"]))')"
  done
  wait "$lg" || die "eg_loadgen ($name): $(cat "$name.loadgen.err")"
  # A last sample right after the load: the end of the series.
  $REPORT sample "$name" "$url" "$t0" >>"$name.samples.jsonl" || die "sampling $name"
  log "$name: $(cat "$name.loadgen.json")"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  PIDS=()
}

phase keep 0
phase sweep "$RETENTION"
PIDS=()

mkdir -p "$OUT"
SETTINGS=$($PY -c 'import json,sys; k="seconds threads rate messages per_call bytes ttl_s retention_s sample_s sweep_interval_ms sweep_batch wal_retain_s".split(); print(json.dumps(dict(zip(k, map(int, sys.argv[1:])))))' \
  "$SECS" "$THREADS" "$RATE" "$MESSAGES" "$PER_CALL" "$BYTES" "$TTL" "$RETENTION" "$SAMPLE" "$SWEEP_MS" "$SWEEP_BATCH" "$WAL_S")
rc=0
$REPORT report --out "$OUT" --meta meta.json --date "$(date -u +%Y-%m-%dT%H:%MZ)" --settings "$SETTINGS" \
  --seconds "$SECS" --keep-samples keep.samples.jsonl --keep-loadgen keep.loadgen.json \
  --sweep-samples sweep.samples.jsonl --sweep-loadgen sweep.loadgen.json || rc=$?
log "wrote $OUT/churn.md and $OUT/churn.json"
[ "$rc" = 0 ] || log "a goal was not met (see $OUT/churn.md)"
exit "$rc"
