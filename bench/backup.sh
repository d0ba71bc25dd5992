#!/usr/bin/env bash
# Backup benchmark (issue 10): how fast `engram backup create` copies a store,
# what a running backup costs the writers, and how long a restore takes.
# `make bench-backup` builds Release and calls this; see bench/README.md.
#
#   bench/backup.sh BUILD_DIR      BUILD_DIR holds engramd, engram, eg_loadgen
#
# One engramd (durable commits, encryption, auth) on 127.0.0.1 with its data
# under BUILD_DIR:
#   1. fill: sessions of 100 messages of 1 KiB through AppendMessages until
#      LMDB's pages in use reach BACKUP_BENCH_MB;
#   2. `engram backup create` of it: MB/s = file bytes / wall time, and the
#      CPU seconds it took in engramd and in the CLI; then `engram backup
#      verify` of the file;
#   3. client writes: eg_loadgen AppendMessages (one 256-byte message a call)
#      from BACKUP_BENCH_THREADS threads for BACKUP_BENCH_LOAD_S seconds,
#      alone and then while backups run back to back over the whole window
#      (their CLI under SCHED_IDLE, `chrt --idle 0`, writing into
#      BACKUP_BENCH_DEST: the receiving end of a backup runs on another host
#      or pod, with its own disk, in production; here a tmpfs stands in for
#      that disk and SCHED_IDLE for those cores; engramd runs a backup's
#      thread under SCHED_IDLE itself),
#      as fast as they go (closed loop) and paced at BACKUP_BENCH_RATE
#      calls/s, BACKUP_BENCH_ROUNDS times in turn;
#   4. with the source stopped: `engram backup restore` of the first backup
#      into a new directory, then engramd on it, timed from its launch to
#      the first Health SERVING; its LSN must be the backup's;
#   5. when engramd has --wal-archive-dir: writes/s on a fresh engramd with
#      and without it (alternating), and the rate at which a restore replays
#      the archive on top of a base backup.
# Results: BACKUP_BENCH_OUT/backup.md and backup.json, every figure from
# this one run.
#
# Environment: BACKUP_BENCH_MB (1000; MB = 10^6 bytes), BACKUP_BENCH_THREADS (16),
# BACKUP_BENCH_DEST (a new dir under /dev/shm,
# removed at exit; set it to a dir on the data's disk to measure a CLI that
# shares it),
# BACKUP_BENCH_LOAD_S (5), BACKUP_BENCH_ROUNDS (2), BACKUP_BENCH_RATE (1000), BACKUP_BENCH_OUT
# (bench/results), BACKUP_BENCH_KEEP=1 keeps the work directory. Every
# process it starts is stopped by PID on any exit; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-release}" && pwd)
MB=${BACKUP_BENCH_MB:-1000}
THREADS=${BACKUP_BENCH_THREADS:-16}
LOAD_S=${BACKUP_BENCH_LOAD_S:-5}
ROUNDS=${BACKUP_BENCH_ROUNDS:-2}
RATE=${BACKUP_BENCH_RATE:-1000}
DEST=${BACKUP_BENCH_DEST:-}
OUT=${BACKUP_BENCH_OUT:-$ROOT/bench/results}
PY=/usr/bin/python3
REPORT="$PY $ROOT/bench/backup_report.py"
TOKEN=bench-token
ADMIN=bench-admin
FILL_MESSAGES=100 # per session, in one AppendMessages (the server's --max-append-messages)
FILL_BYTES=1024
LOAD_BYTES=256
T_START=$(date +%s)

log() { printf '[backup-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for f in engramd engram eg_loadgen; do [ -x "$BUILD/$f" ] || die "missing $BUILD/$f (run make bench-backup)"; done
command -v mdb_stat >/dev/null || die "missing mdb_stat (apt-get install lmdb-utils)"
grep -q "backup create" <<<"$("$BUILD/engram" help)" || die "$BUILD/engram has no 'backup create'"

WORK=$(mktemp -d "$BUILD/backup-bench.XXXXXX")
OWN_DEST=
[ -n "$DEST" ] || { DEST=$(mktemp -d /dev/shm/engram-backup-bench.XXXXXX) && OWN_DEST=$DEST; }
PIDS=()
. "$ROOT/bench/lib.sh" # stop_pid, free_port
cleanup() {
  local rc=$? pid
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ -n "${BACKUP_BENCH_KEEP:-}" ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  [ -z "$OWN_DEST" ] || rm -rf "$OWN_DEST"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# cli_as SCHED ADDR ARGS...: the CLI against ADDR as admin, run under SCHED
# (a command prefix, e.g. "chrt --idle 0"; "" for none); cli ADDR ARGS...
cli_as() { local sched=$1; shift; $sched timeout 900 "$BUILD/engram" --target "$1" --token "$ADMIN" --timeout 600000 "${@:2}"; }
cli() { cli_as "" "$@"; }
lg() { timeout $((LOAD_S + 600)) "$BUILD/eg_loadgen" --target "$1" --token "$TOKEN" "${@:2}"; }

# start NAME DATA_DIR ARGS...: engramd on a new port; sets NAME_PID and
# NAME_ADDR once it answers Health (<= 60 s).
start() {
  local name=$1 dir=$2 addr
  shift 2
  addr=127.0.0.1:$(free_port)
  "$BUILD/engramd" --listen "$addr" --data-dir "$dir" --keyring keyring --tokens tokens "$@" \
    >"$name.log" 2>&1 &
  PIDS+=($!)
  printf -v "${name}_PID" %s $!
  printf -v "${name}_ADDR" %s "$addr"
  wait_serving "$addr" 60 || die "engramd ($name) did not serve: $(tail -5 "$name.log")"
}
# wait_serving ADDR SECONDS: polls Health every 20 ms.
wait_serving() {
  local deadline=$(($(date +%s) + $2))
  until "$BUILD/engram" --target "$1" --token "$ADMIN" --timeout 1000 health >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.02
  done
}
stop_server() { # NAME
  local pid_var=${1}_PID
  stop_pid "${!pid_var}"
}
lsn_of() { cli "$1" --json admin status | $PY -c 'import json,sys; print(int(json.load(sys.stdin).get("lastLsn", 0)))'; }

cd "$WORK"
"$BUILD/engram" keygen >key && { echo "primary 1"; cat key; } >keyring && chmod 600 keyring
{
  echo "bench agent $("$BUILD/engram" token hash "$TOKEN")"
  echo "ops admin $("$BUILD/engram" token hash "$ADMIN")"
} >tokens
(cd "$ROOT" && $PY bench/churn_report.py meta) >meta.json
: >results.jsonl
record() { echo "$1" >>results.jsonl; } # one JSON object a line; backup_report.py merges them

# ---- 1. fill ----------------------------------------------------------------------------
start src src
TARGET=$((MB * 1000000))  # MB = 10^6 bytes throughout
log "fill: sessions of $FILL_MESSAGES x $FILL_BYTES-byte messages until LMDB holds $MB MB"
# A first batch measures the bytes one session takes; the rest is filled in
# one call, then topped up (at most 5 times) if the estimate fell short.
t0=$(now)
sessions=0 batch=50 used=0
for ((i = 0; i < 6; i++)); do
  lg "$src_ADDR" fill --prefix "f$i-" --sessions "$batch" --users 100 --messages "$FILL_MESSAGES" \
    --per-call "$FILL_MESSAGES" --bytes "$FILL_BYTES" --threads 8 --seconds 1200 >"fill$i.json" 2>"fill$i.err" ||
    die "fill: $(cat "fill$i.err")"
  sessions=$((sessions + batch))
  used=$($REPORT used-bytes src)
  [ "$used" -lt "$TARGET" ] || break
  batch=$($PY -c "import math,sys; u,s,t=map(int,sys.argv[1:]); print(max(10, math.ceil((t-u)/(u/s))))" "$used" "$sessions" "$TARGET")
done
t1=$(now)
[ "$used" -ge "$TARGET" ] || die "fill: $used bytes in use after 6 rounds, wanted $TARGET"
record "{\"fill\":{\"sessions\":$sessions,\"messages\":$((sessions * FILL_MESSAGES)),\"message_bytes\":$FILL_BYTES,\"seconds\":$(secs "$t0" "$t1"),\"used_bytes\":$used,\"data_mdb_bytes\":$(stat -c %s src/data.mdb)}}"
log "fill: $sessions sessions, $((used / 1000000)) MB in use, $(secs "$t0" "$t1") s"

# ---- 2. backup create + verify --------------------------------------------------------------
# timed OUT CMD...: CMD's stdout in OUT; prints its wall and CPU seconds (JSON).
timed() { $REPORT timed "$@" || die "${*:2}: $(cat "$1.err")"; }
log "backup create of the idle store"
c0=$($REPORT cpu "$src_PID")
t=$(timed create.json "$BUILD/engram" --target "$src_ADDR" --token "$ADMIN" --timeout 600000 --json \
  backup create --out base.backup)
c1=$($REPORT cpu "$src_PID")
record "{\"create\":{\"run\":$t,\"server_cpu_s\":$(secs "$c0" "$c1"),\"file_bytes\":$(stat -c %s base.backup),\"result\":$(cat create.json)}}"
log "backup create: $(stat -c %s base.backup) bytes: $t, engramd $(secs "$c0" "$c1") CPU s"
t=$(timed verify.json "$BUILD/engram" --json backup verify base.backup --keyring keyring)
record "{\"verify\":{\"run\":$t,\"result\":$(cat verify.json)}}"
log "backup verify: $t"

# ---- 3. client writes alone and during backups ----------------------------------------------
# backup_loop TAG: backups back to back until the file 'stop' appears (at
# most 100); each one's start and end go to TAG.loop. TERM stops the one in
# progress too.
backup_loop() {
  local tag=$1 n child
  trap '[ -n "${child:-}" ] && kill -TERM "$child" 2>/dev/null; exit 143' TERM
  for ((n = 0; n < 100; n++)); do
    [ -e stop ] && break
    local a b
    a=$(now)
    cli_as "chrt --idle 0" "$src_ADDR" --json backup create --force --out "$DEST/loop.backup" \
      >"$tag.$n.json" 2>"$tag.$n.err" &
    child=$!
    wait "$child" || { echo "backup $n failed: $(cat "$tag.$n.err")" >"$tag.failed"; exit 1; }
    child=
    b=$(now)
    echo "$a $b" >>"$tag.loop"
  done
}
load() { # TAG [--rate N]: the write load; one JSON line in TAG.json
  local tag=$1
  shift
  lg "$src_ADDR" run mixed --prefix f0- --sessions 50 --read-pct 0 --bytes "$LOAD_BYTES" \
    --threads "$THREADS" --seconds "$LOAD_S" "$@" >"$tag.json" 2>"$tag.err" || die "load $tag: $(cat "$tag.err")"
}
# The load appends one 256-byte message a call to the first fill batch's 50
# sessions; a short warm-up first. Closed loop: as fast as the threads go
# (the server's ceiling, shared with the backup on the same cores); paced:
# RATE calls/s offered, whatever the latency.
lg "$src_ADDR" run mixed --prefix f0- --sessions 50 --read-pct 0 --bytes "$LOAD_BYTES" \
  --threads "$THREADS" --seconds 1 >/dev/null 2>&1 || die "load warm-up"
for ((r = 1; r <= ROUNDS; r++)); do
  for mode in closed paced; do
    pace=()
    [ "$mode" = paced ] && pace=(--rate "$RATE")
    load "$mode-alone$r" "${pace[@]}"
    rm -f stop
    backup_loop "$mode-during$r" &
    loop=$!
    PIDS+=("$loop")
    # The load starts once the first backup is under way: 0.5 s after it.
    sleep 0.5
    l0=$(now)
    load "$mode-during$r" "${pace[@]}"
    l1=$(now)
    touch stop
    wait "$loop" || die "backups during round $r ($mode): $(cat "$mode-during$r.failed" 2>/dev/null)"
    echo "$l0 $l1" >"$mode-during$r.window"
    record "$($REPORT round --round "$r" --mode "$mode" --alone "$mode-alone$r.json" --during "$mode-during$r.json" \
      --window "$mode-during$r.window" --loop "$mode-during$r.loop")"
    log "round $r, $mode: writes alone $($REPORT field "$mode-alone$r.json" qps) calls/s, during backups $($REPORT field "$mode-during$r.json" qps) ($(wc -l <"$mode-during$r.loop") backups)"
  done
done
rm -f loop.backup

# ---- 4. restore, then engramd on it ---------------------------------------------------------
SRC_LSN=$(lsn_of "$src_ADDR")
stop_server src
log "restore of base.backup into a new directory"
t=$(timed restore.json "$BUILD/engram" --json backup restore base.backup --data-dir restored)
RADDR=127.0.0.1:$(free_port)
s0=$(now)
"$BUILD/engramd" --listen "$RADDR" --data-dir restored --keyring keyring --tokens tokens >restored.log 2>&1 &
PIDS+=($!)
RPID=$!
wait_serving "$RADDR" 300 || die "restored engramd did not serve: $(tail -5 restored.log)"
s1=$(now)
RLSN=$(lsn_of "$RADDR")
stop_pid "$RPID"
record "{\"restore\":{\"run\":$t,\"serving_seconds\":$(secs "$s0" "$s1"),\"lsn\":$RLSN,\"source_lsn_at_end\":$SRC_LSN,\"data_mdb_bytes\":$(stat -c %s restored/data.mdb),\"result\":$(cat restore.json)}}"
$REPORT check-restore results.jsonl || die "the restored node is not at the backup's LSN"
log "restore: $t; engramd SERVING $(secs "$s0" "$s1") s after launch, at lsn $RLSN"
rm -rf restored src

# ---- 5. WAL archive: write overhead, replay rate ---------------------------------------------
if grep -q -- --wal-archive-dir <<<"$("$BUILD/engramd" --help 2>&1)"; then
  log "WAL archive: writes/s with and without --wal-archive-dir, then a restore replaying it"
  for ((r = 1; r <= ROUNDS; r++)); do
    # Alternate which goes first, so a noisy moment does not always land on one.
    order=(plain archive)
    [ $((r % 2)) = 0 ] && order=(archive plain)
    for mode in "${order[@]}"; do
      args=()
      [ "$mode" = archive ] && args=(--wal-archive-dir "arch$r")
      start "$mode" "$mode$r" "${args[@]}"
      addr_var=${mode}_ADDR
      lg "${!addr_var}" fill --prefix a- --sessions 50 --users 10 --messages 0 --threads 4 --seconds 60 >/dev/null 2>&1 ||
        die "archive fill ($mode)"
      if [ "$mode" = archive ]; then
        timed "arch$r.base.json" "$BUILD/engram" --target "${!addr_var}" --token "$ADMIN" --json \
          backup create --out "arch$r.base" >/dev/null
      fi
      lg "${!addr_var}" run mixed --prefix a- --sessions 50 --read-pct 0 --bytes "$LOAD_BYTES" \
        --threads "$THREADS" --seconds "$LOAD_S" >"$mode$r.json" 2>"$mode$r.err" || die "load $mode: $(cat "$mode$r.err")"
      if [ "$mode" = archive ]; then
        end=$(lsn_of "${!addr_var}")
        # The archiver is asynchronous: wait (<= 60 s) until it has the last record.
        for _ in $(seq 600); do
          a=$(cli "${!addr_var}" --json admin status | $PY -c 'import json,sys; print(int(json.load(sys.stdin).get("archivedLsn", 0)))')
          [ "$a" -ge "$end" ] && break
          sleep 0.1
        done
        [ "$a" -ge "$end" ] || die "the archiver did not reach lsn $end (at $a)"
      fi
      stop_server "$mode"
    done
    # The base alone, then the base and the archive: the difference is the replay.
    tb=$(timed "base$r.json" "$BUILD/engram" --json backup restore "arch$r.base" --data-dir "base$r")
    tp=$(timed "pitr$r.json" "$BUILD/engram" --json backup restore "arch$r.base" --data-dir "pitr$r" \
      --wal-archive "arch$r")
    record "$($REPORT archive-round --round "$r" --plain "plain$r.json" --archive "archive$r.json" \
      --pitr "pitr$r.json" --end-lsn "$end" --base-run "$tb" --pitr-run "$tp" --archive-bytes "$(du -sb "arch$r" | cut -f1)")"
    log "archive round $r: plain $($REPORT field "plain$r.json" qps), archive $($REPORT field "archive$r.json" qps) calls/s; restore of the base $tb, base + archive $tp"
    rm -rf "plain$r" "archive$r" "arch$r" "pitr$r" "base$r" "arch$r.base"
  done
else
  log "engramd has no --wal-archive-dir: the archive part is skipped"
fi

# ---- report -----------------------------------------------------------------------------------
mkdir -p "$OUT"
SETTINGS=$($PY -c 'import json,sys; k="mb threads load_s rounds rate fill_messages fill_bytes load_bytes".split(); d=dict(zip(k, map(int, sys.argv[2:]))); d["dest"]=sys.argv[1]; print(json.dumps(d))' \
  "${BACKUP_BENCH_DEST:-tmpfs}" "$MB" "$THREADS" "$LOAD_S" "$ROUNDS" "$RATE" "$FILL_MESSAGES" "$FILL_BYTES" "$LOAD_BYTES")
rc=0
$REPORT report --results results.jsonl --meta meta.json --settings "$SETTINGS" --out "$OUT" \
  --date "$(date -u +%Y-%m-%dT%H:%MZ)" --elapsed "$(($(date +%s) - ${BENCH_ELAPSED_FROM:-$T_START}))" || rc=$?
log "wrote $OUT/backup.md and $OUT/backup.json in $(($(date +%s) - T_START)) s"
[ "$rc" = 0 ] || log "a goal was not met (see $OUT/backup.md)"
exit "$rc"
