#!/bin/bash
# A/B of two engramd builds: the server's CPU (perf stat's task-clock of
# its process, every thread) per AppendMessages call, over a fill of
# SESSIONS sessions x MESSAGES messages (one a call, 4 client threads;
# the SESSIONS CreateSession calls of the fill are in the count too), the
# two runs of each round in turn (ABBA...). Each run has a fresh data dir
# in dev mode. docs/performance.md, "The blind-index key check per write".
# usage: A=path/engramd B=path/engramd LG=build/eg_loadgen \
#          bench/blind_key_ab.sh ROUNDS SESSIONS MESSAGES
set -e
: "${A:?the A engramd}" "${B:?the B engramd}" "${LG:=build/eg_loadgen}"
ROUNDS=${1:-4}; S=${2:-100}; M=${3:-20}
run() {
  bin=$1; tag=$2
  d=$(mktemp -d)
  $bin --listen 127.0.0.1:0 --data-dir $d >$d/log 2>&1 &
  pid=$!
  for i in $(seq 100); do grep -q "listening on" $d/log 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' $d/log | head -1)
  perf stat -x, -e task-clock -p $pid -o $d/perf &
  ppid=$!
  sleep 0.2
  $LG --target 127.0.0.1:$port fill --prefix p --sessions $S --messages $M --per-call 1 --bytes 256 --threads 4 >/dev/null 2>$d/lg || { echo "loadgen failed"; cat $d/lg; }
  kill -INT $ppid; wait $ppid 2>/dev/null || true
  kill $pid; wait $pid 2>/dev/null || true
  ms=$(awk -F, '/task-clock/ {print $1}' $d/perf)
  calls=$((S*M))
  echo "$tag task_clock_ms=$ms calls=$calls cpu_us_per_call=$(python3 -c "print(round($ms*1000/$calls,1))")"
  rm -rf $d
}
for r in $(seq $ROUNDS); do
  if [ $((r % 2)) = 1 ]; then run $A A; run $B B; else run $B B; run $A A; fi
done
