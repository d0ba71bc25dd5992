#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for SECONDS each, one after
# another, starting from the committed seeds (tests/fuzz/corpus/<target>).
# What a run adds to the corpus goes under BUILD/corpus/<target>, so the
# committed seeds stay as they are; a crashing input lands in
# BUILD/artifacts/ and the script exits 1 naming it.
# Usage: tests/fuzz/run.sh BUILD SECONDS [TARGET...]
set -euo pipefail

build=${1:?usage: run.sh BUILD SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD SECONDS [TARGET...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(wire token wal keyring tokens_file page_token tokenizer)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
TIMEFORMAT='%U %S' # bash's `time`: user and system CPU seconds
mkdir -p "$build/artifacts"
failed=()
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  mkdir -p "$build/corpus/$t"
  log="$build/artifacts/$t.log"
  start=$(date +%s)
  # -rss_limit_mb: a target that grows without bound is a finding too.
  # -max_total_time counts wall time, so the CPU time it got is reported.
  if { time "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 \
         -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
         "$build/corpus/$t" "$here/corpus/$t" >"$log" 2>&1; } 2>"$log.cpu"; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
  cpu=$(awk '{printf "%.0f", $1 + $2}' "$log.cpu")
  echo "fuzz_$t: $status, ${runs:-?} runs in $(($(date +%s) - start)) s, ${cpu} s CPU, $cov (log: $log)"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}; inputs in $build/artifacts/" >&2
  exit 1
fi
