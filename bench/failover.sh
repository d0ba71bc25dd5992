#!/usr/bin/env bash
# Failover benchmark (issue 11): recovery time after kill -9 of the primary,
# and that no acknowledged write is lost. `make bench-failover` builds
# Release and calls this; see bench/README.md.
#
#   bench/failover.sh BUILD_DIR      BUILD_DIR holds engramd, engram and py/ (the stubs)
#
# Runs tests/e2e/test_failover.py's ChaosTest for FAILOVER_BENCH_RUNS rounds
# on the local ha topology (deploy/local: 3 etcd members, 3 engramd with
# --coordinator, --sync-replicas 1, --lease-ttl-s 3, all on 127.0.0.1): a
# steady write load through every node (3 threads, AppendMessages with
# client_message_id, a failed write retried on the next node), kill -9 of
# the primary, RTO = kill -> first acknowledged write of a call sent after
# the kill, through any node; the killed node restarts on its data dir and
# must rejoin as a replica before the next round. At the end every
# acknowledged write is read back on the primary and every node's Checksum
# is equal at one LSN (else the run fails and no report is written).
# Results: FAILOVER_BENCH_OUT/failover.md and failover.json.
#
# Environment: FAILOVER_BENCH_RUNS (50), FAILOVER_BENCH_OUT (bench/results),
# FAILOVER_BENCH_KEEP=1 keeps the work directory (and the cluster's logs).
# Every process is started and stopped by the test, by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-release}" && pwd)
RUNS=${FAILOVER_BENCH_RUNS:-50}
OUT=${FAILOVER_BENCH_OUT:-$ROOT/bench/results}
PY=/usr/bin/python3
T_START=${BENCH_ELAPSED_FROM:-$(date +%s)}

log() { printf '[failover-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for f in engramd engram; do [ -x "$BUILD/$f" ] || die "missing $BUILD/$f (run make bench-failover)"; done
[ -d "$BUILD/py/engram" ] || die "missing $BUILD/py (the python stubs: cmake --build $BUILD --target py_stubs)"
for f in etcd etcdctl; do command -v $f >/dev/null || die "missing $f (apt-get install etcd-server etcd-client)"; done

WORK=$(mktemp -d "$BUILD/failover-bench.XXXXXX")
cleanup() {
  local rc=$?
  if [ -n "${FAILOVER_BENCH_KEEP:-}" ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT

(cd "$ROOT" && $PY bench/churn_report.py meta) >"$WORK/meta.json"
log "$RUNS rounds of kill -9 of the primary (log: $WORK/test.log)"
keep=()
[ -z "${FAILOVER_BENCH_KEEP:-}" ] || keep=(ENGRAM_E2E_KEEP=1)
if ! (cd "$ROOT/tests/e2e" && env "${keep[@]}" ENGRAM_CHAOS_RUNS="$RUNS" ENGRAM_CHAOS_OUT="$WORK/rounds.jsonl" \
      ENGRAMD="$BUILD/engramd" ENGRAM_CLI="$BUILD/engram" ENGRAM_PY_GEN="$BUILD/py" \
      $PY -m unittest test_failover.ChaosTest -v) >"$WORK/test.log" 2>&1; then
  tail -n 60 "$WORK/test.log" >&2
  die "the chaos test failed (see above); no report written"
fi
$PY "$ROOT/bench/failover_report.py" --rounds "$WORK/rounds.jsonl" --meta "$WORK/meta.json" \
  --out "$OUT" --date "$(date -u +%Y-%m-%dT%H:%MZ)" \
  --elapsed $(($(date +%s) - T_START))
log "wrote $OUT/failover.md"
