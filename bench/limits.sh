#!/usr/bin/env bash
# Per-tenant fairness (issue 12): tenant B's latency alone, then while
# tenant A floods at 10x its --tenant-calls-per-s. `make bench-limits`
# builds Release and calls this; results in bench/results/limits.md.
#
#   bench/limits.sh BUILD_DIR     BUILD_DIR holds engramd, engram and eg_loadgen
#
# Environment (optional): LIMITS_RATE (200) calls/s each tenant may make,
# LIMITS_B_RATE (100) B's offered calls/s, LIMITS_SECONDS (10) per B run,
# LIMITS_OUT (bench/results/limits.md).
#
# One engramd (durable commits, auth) on 127.0.0.1 with its data in a
# temporary directory, stopped by PID on any exit. Every wait is bounded,
# every load run has a fixed duration and an outer timeout: the whole run
# stops by itself in about 30 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-release}" && pwd)
RATE=${LIMITS_RATE:-200}
B_RATE=${LIMITS_B_RATE:-100}
SECS=${LIMITS_SECONDS:-10}
OUT=${LIMITS_OUT:-$ROOT/bench/results/limits.md}
FLOOD=$((RATE * 10))
LOADGEN=$BUILD/eg_loadgen
PY=/usr/bin/python3

log() { printf '[bench-limits %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

for f in "$BUILD/engramd" "$BUILD/engram" "$LOADGEN"; do [ -x "$f" ] || die "missing $f (run make bench-limits)"; done

WORK=$(mktemp -d "$BUILD/bench-limits.XXXXXX")
PIDS=()
. "$ROOT/bench/lib.sh" # stop_pid

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
  echo "tenant-a agent $("$BUILD/engram" token hash token-a)"
  echo "tenant-b agent $("$BUILD/engram" token hash token-b)"
} >"$WORK/tokens"
"$BUILD/engramd" --listen 127.0.0.1:0 --data-dir "$WORK/data" --tokens "$WORK/tokens" \
  --tenant-calls-per-s "$RATE" >"$WORK/engramd.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 150); do grep -q 'listening on' "$WORK/engramd.log" && break; sleep 0.1; done
grep -q 'listening on' "$WORK/engramd.log" || die "engramd did not start: $(cat "$WORK/engramd.log")"
EG=127.0.0.1:$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/engramd.log" | head -1)

lg() { timeout 45 "$LOADGEN" --target "$EG" "$@"; }
lg --token token-a fill --session bench-a >/dev/null
lg --token token-b fill --session bench-b >/dev/null

# B: a modest steady rate, under its limit.
b_run() {
  lg --token token-b run get-session --session bench-b --threads 4 --rate "$B_RATE" \
    --seconds "$SECS"
}
# A short warm-up first (connections, caches), its numbers dropped.
lg --token token-b run get-session --session bench-b --threads 4 --rate "$B_RATE" --seconds 2 >/dev/null
log "tenant B alone: $B_RATE calls/s for $SECS s"
b_run >"$WORK/b_alone.json"
log "tenant A flooding at $FLOOD calls/s (10x its $RATE) while B runs again"
lg --token token-a run get-session --session bench-a --threads 8 --rate "$FLOOD" --refused-ok \
  --seconds $((SECS + 4)) >"$WORK/a_flood.json" &
A_PID=$!
sleep 2 # A's flood under way before B's run starts
b_run >"$WORK/b_loaded.json"
wait "$A_PID" || die "the flood failed: $(cat "$WORK/a_flood.json")"

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
$PY - "$WORK" "$OUT" "$(uname -n)" "$CPU" "$(nproc)" "$RATE" "$B_RATE" "$FLOOD" <<'EOF'
import json, sys, time
work, out, host, cpu, ncpu, rate, b_rate, flood = sys.argv[1:]
alone, loaded, a = (json.load(open("%s/%s.json" % (work, n)))
                    for n in ("b_alone", "b_loaded", "a_flood"))
ratio = loaded["p99_us"] / max(alone["p99_us"], 1)
offered = a["ok"] + a["refused"]
with open(out, "w") as f:
    f.write("# Per-tenant limits: fairness under a flood\n\n")
    f.write("`make bench-limits` (bench/limits.sh), %s UTC.\n\n" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
    load = open("/proc/loadavg").read().split()[0]
    f.write("Machine: `%s`, %s, %s CPUs, shared with other work while it ran (load average %s at "
            "the end): single runs on it are noisy.\n\n" % (host, cpu, ncpu, load))
    f.write("engramd Release, durable commits, `--tenant-calls-per-s %s` (burst 1 s). Tenant B "
            "calls GetSession at %s calls/s (4 threads), alone and then while tenant A floods "
            "GetSession at %s calls/s (10x its limit, 8 threads).\n\n" % (rate, b_rate, flood))
    f.write("| run | B calls | B p50 | B p99 | B max |\n|---|---|---|---|---|\n")
    for name, r in (("B alone", alone), ("B while A floods", loaded)):
        f.write("| %s | %d | %.0f us | %.0f us | %.0f us |\n"
                % (name, r["ok"], r["p50_us"], r["p99_us"], r["max_us"]))
    f.write("\nTenant A: %d calls offered in %.1f s (%.0f/s), %d admitted (%.0f/s), %d refused "
            "RESOURCE_EXHAUSTED.\n\n" % (offered, a["seconds"], offered / a["seconds"], a["ok"],
                                          a["ok"] / a["seconds"], a["refused"]))
    f.write("**B's p99 loaded / unloaded: %.2fx** (goal: at most 2x). B had %d errors alone, "
            "%d loaded.\n" % (ratio, alone["errors"], loaded["errors"]))
print("B p99 alone %d us, loaded %d us: %.2fx; A admitted %d, refused %d"
      % (alone["p99_us"], loaded["p99_us"], ratio, a["ok"], a["refused"]))
EOF
log "results in $OUT"
