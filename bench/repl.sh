#!/usr/bin/env bash
# Replication figures (issue 4): lag at a steady write rate, and catch-up
# speed after a replica missed RECORDS log records.
#
#   bench/repl.sh BUILD_DIR        BUILD_DIR holds engramd, engram, eg_repl_bench
#
# Environment: REPL_RATE (5000 writes/s), REPL_SECONDS (10), REPL_THREADS
# (32), REPL_RECORDS (100000), REPL_OUT (bench/results/replication.md).
# Starts a primary and a replica on 127.0.0.1 in a temporary directory and
# stops both by PID on any exit; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-release}" && pwd)
RATE=${REPL_RATE:-5000}
SECS=${REPL_SECONDS:-10}
THREADS=${REPL_THREADS:-32}
RECORDS=${REPL_RECORDS:-100000}
OUT=${REPL_OUT:-$ROOT/bench/results/replication.md}
PY=/usr/bin/python3

log() { printf '[repl-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
for f in engramd engram eg_repl_bench; do [ -x "$BUILD/$f" ] || { log "missing $BUILD/$f"; exit 1; }; done

WORK=$(mktemp -d "$BUILD/repl-bench.XXXXXX")
PIDS=()
cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# start NAME ARGS...: runs engramd in the background, waits (<= 20 s) for its port.
start() {
  local name=$1
  shift
  "$BUILD/engramd" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  eval "${name}_PID=$!"
  for _ in $(seq 200); do grep -q 'listening on' "$WORK/$name.log" && return 0; sleep 0.1; done
  log "$name did not start:"; cat "$WORK/$name.log" >&2; exit 1
}

cd "$WORK"
"$BUILD/engram" keygen >key && { echo "primary 1"; cat key; } >keyring && chmod 600 keyring
{
  echo "bench agent $("$BUILD/engram" token hash bench-token)"
  echo "bench replica $("$BUILD/engram" token hash bench-replica)"
  echo "ops admin $("$BUILD/engram" token hash bench-admin)"
} >tokens
P=127.0.0.1:$(port)
R=127.0.0.1:$(port)
COMMON=(--keyring keyring --tokens tokens)
REPLICA=(--listen "$R" --data-dir r "${COMMON[@]}" --role replica --primary "$P" --replica-token bench-replica)

start primary --listen "$P" --data-dir p "${COMMON[@]}" --wal-retain-records $((RECORDS * 2))
start replica "${REPLICA[@]}"

log "lag: $RATE writes/s for $SECS s from $THREADS threads, each write then read back on the replica"
LAG=$("$BUILD/eg_repl_bench" lag "$P" "$R" bench-token "$RATE" "$SECS" "$THREADS")
log "$LAG"

log "catch-up: stopping the replica, writing $RECORDS log records"
kill -TERM "$replica_PID"; wait "$replica_PID" 2>/dev/null || true
T0=$(date +%s.%N)
LSN=$("$BUILD/eg_repl_bench" fill "$P" bench-token "$RECORDS" 4)
T1=$(date +%s.%N)
log "primary at lsn $LSN after $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s; restarting the replica"
# The clock starts before the process does: the figure includes its start,
# connecting, and applying every missed record.
FROM=$("$BUILD/engram" --target "$P" --token bench-admin --json admin status | $PY -c '
import json, sys
s = json.load(sys.stdin)
print(max(int(r.get("appliedLsn", 0)) for r in s.get("replicas", [{}])))')
"$BUILD/engramd" "${REPLICA[@]}" >"$WORK/replica2.log" 2>&1 &
PIDS+=($!)
SECS_CATCH=$("$BUILD/eg_repl_bench" wait "$R" bench-admin "$LSN" 300)
MISSED=$((LSN - FROM))
log "caught up $MISSED records in $SECS_CATCH s"

"$BUILD/engram" --target "$P" --token bench-admin admin checksum >"$WORK/p.sum"
"$BUILD/engram" --target "$R" --token bench-admin admin checksum >"$WORK/r.sum"
cmp -s "$WORK/p.sum" "$WORK/r.sum" || { log "checksums differ after catch-up"; exit 1; }

mkdir -p "$(dirname "$OUT")"
$PY - "$LAG" "$MISSED" "$SECS_CATCH" >"$OUT" <<'PYEOF'
import json, platform, subprocess, sys
lag, missed, secs = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print("# Replication benchmark\n")
print(f"Machine: {nproc} cores, {cpu}, Linux {platform.release()}. One primary and one replica on "
      "127.0.0.1, durable commits on both, encryption and auth on.\n")
print("| measure | value | goal |\n| --- | --- | --- |")
print(f"| steady write rate reached | {lag['rate']:.0f} writes/s ({lag['writes']} writes) | 5,000 writes/s |")
print(f"| replication lag p50 | {lag['lag_p50_us'] / 1000:.2f} ms | |")
print(f"| replication lag p99 | {lag['lag_p99_us'] / 1000:.2f} ms | <= 10 ms |")
print(f"| replication lag max | {lag['lag_max_us'] / 1000:.2f} ms | |")
print(f"| bare read round trip (subtracted) | {lag['bare_rtt_p50_us'] / 1000:.2f} ms | |")
rate = missed / secs if secs > 0 else 0
print(f"| catch-up: {missed} records missed | {secs:.2f} s = {rate:,.0f} records/s | >= 100,000 records/s |")
print("\nLag: after each acknowledged write, the writing thread reads the session from the "
      "replica with `engram-min-lsn` set to the write's `engram-lsn`; lag is the time from the "
      "ack to the replica's answer, minus the median bare read round trip. Catch-up: the "
      "replica is stopped, the primary commits the records (one log record per commit), the "
      "replica restarts; the time runs from the moment it is launched until its LSN reaches "
      "the primary's (polled every 2 ms), so it includes process start and reconnect.")
PYEOF
log "wrote $OUT"
