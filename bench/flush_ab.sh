#!/bin/bash
# A/B of the two --meta-sync schemes (issue 15), interleaved in one run:
#
#   bench/flush_ab.sh BUILD_DIR [ROUNDS]
#
# Each round starts a fresh engramd per scheme (commit, then next-flush)
# on a data dir under BUILD_DIR/flush-ab, and drives AppendMessages (one
# 256 B message per call) with h2load at c=64 (N64 calls, default 6000)
# and c=1 (N1, default 400). Per run it prints calls/s, p50/p99 latency
# (h2load's per-request log), commits and flushes (engramd's metrics:
# engram_writer_batches_total, engram_store_flushes_total), and the
# server's CPU (user+sys from /proc) per call. Wall-clock figures on a
# shared machine move with the disk's load: compare flushes per write and
# CPU per call, and rounds against each other.
set -eu
BUILD=$(cd "${1:?usage: bench/flush_ab.sh BUILD_DIR [ROUNDS]}" && pwd)
ROUNDS=${2:-3}
N64=${N64:-6000}
N1=${N1:-400}
PORT=${PORT:-47001}
MPORT=$((PORT + 1))
W=$BUILD/flush-ab
mkdir -p "$W"
"$BUILD/eg_loadgen" body append bench-append 256 >"$W/append.bin"
metric() { curl -s "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for scheme in commit next-flush; do
    d=$W/$scheme-$r
    rm -rf "$d"
    mkdir -p "$d"
    "$BUILD/engramd" --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" --data-dir "$d" \
      --meta-sync "$scheme" >"$d.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do grep -q "listening on" "$d.log" && break; sleep 0.1; done
    "$BUILD/eg_loadgen" --target "127.0.0.1:$PORT" fill --session bench-append --user bench-user \
      --messages 0 >/dev/null
    for c in 64 1; do
      n=$N64
      [ "$c" = 1 ] && n=$N1
      b0=$(metric engram_writer_batches_total) f0=$(metric engram_store_flushes_total) u0=$(cpu_ticks "$pid")
      rm -f "$W/lat.log"
      h2load -c "$c" -m 1 -t 1 -n "$n" -H 'content-type: application/grpc' -H 'te: trailers' \
        -d "$W/append.bin" --log-file "$W/lat.log" \
        "http://127.0.0.1:$PORT/engram.v1.SessionService/AppendMessages" >"$W/h2load.out" 2>&1
      b1=$(metric engram_writer_batches_total) f1=$(metric engram_store_flushes_total) u1=$(cpu_ticks "$pid")
      python3 - "$W/h2load.out" "$W/lat.log" "$r" "$scheme" "$c" "$n" "$((b1 - b0))" "$((f1 - f0))" \
        "$((u1 - u0))" "$TCK" <<'PY'
import re, sys
out, lat, r, scheme, c, n, commits, flushes, ticks, tck = sys.argv[1:]
n, commits, flushes = int(n), int(commits), int(flushes)
text = open(out).read()
rate = re.search(r"finished in .*?, ([\d.]+) req/s", text).group(1)
ok = re.search(r"(\d+) succeeded", text).group(1)
v = sorted(int(line.split()[2]) for line in open(lat) if line.strip())
print("round=%s scheme=%s c=%s calls/s=%s ok=%s/%d p50_us=%d p99_us=%d commits=%d flushes=%d "
      "flushes/commit=%.2f flushes/write=%.3f cpu_us/call=%.0f" % (
          r, scheme, c, rate, ok, n, v[len(v) // 2], v[int(len(v) * 0.99)], commits, flushes,
          flushes / max(1, commits), flushes / n, int(ticks) * 1e6 / int(tck) / n))
PY
    done
    kill "$pid"
    wait "$pid" || true
    pid=
  done
done
