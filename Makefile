# The front door. `make run` and `make test` install what is missing
# (scripts/deps.sh, as root), configure, build, and run.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
LISTEN     ?= 127.0.0.1:50051
DATA_DIR   ?= ./data

.PHONY: all deps build run test test-fast test-asan fault bench bench-memory bench-replication bench-churn bench-limits clean
.PHONY: fuzz fuzz-build test-fuzz install package
.PHONY: proto-lint

all: build

deps:
	@scripts/deps.sh test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/engramd --listen $(LISTEN) --data-dir $(DATA_DIR)

# engramd, engram, libengram (pkg-config engram, find_package(Engram)),
# completions and docs under PREFIX (CMake's default /usr/local; DESTDIR
# honoured). `make package`: the server's .deb in $(BUILD) (cpack -G DEB).
PREFIX ?= /usr/local
install: build
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
	cmake --install $(BUILD)

package: build
	cd $(BUILD) && cpack -G DEB

# Every test, then every test again under ASan + UBSan, then each fuzz
# target for FUZZ_SHORT_SECONDS.
test: test-fast test-asan test-fuzz

test-fast: build
	cd $(BUILD) && ctest --output-on-failure

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DENGRAM_SANITIZE=ON

test-asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure

# Fault injection, exhaustive (tests/fault/driver.py --full): every fault
# point, every error, every Nth call, on the normal and the ASan build.
# `make test` runs the short loop (ctest `fault`).
FAULT_RUN = /usr/bin/python3 tests/fault/driver.py --full

fault: build $(ASAN_BUILD)/CMakeCache.txt
	ENGRAMD_FAULT=$(BUILD)/engramd-fault ENGRAMD=$(BUILD)/engramd ENGRAM_PY_GEN=$(BUILD)/py $(FAULT_RUN)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ENGRAMD_FAULT=$(ASAN_BUILD)/engramd-fault ENGRAMD=$(ASAN_BUILD)/engramd \
	  ENGRAM_PY_GEN=$(ASAN_BUILD)/py $(FAULT_RUN)

# libFuzzer targets (tests/fuzz/README.md): a clang build of their own under
# ASan + UBSan. `make fuzz` runs each for FUZZ_SECONDS; `make test` runs each
# for FUZZ_SHORT_SECONDS (six targets: about 4 minutes with the build).
FUZZ_BUILD         ?= build-fuzz
FUZZ_SECONDS       ?= 300
FUZZ_SHORT_SECONDS ?= 30

$(FUZZ_BUILD)/CMakeCache.txt:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGRAM_FUZZ=ON

fuzz-build: deps $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_targets

fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

test-fuzz: fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SHORT_SECONDS)

# Engram vs etcd and Redis side by side (bench/README.md): a Release build of
# its own, results in bench/results/. Under 12 minutes with the build.
REL_BUILD ?= build-release

bench:
	@start=$$(date +%s); scripts/deps.sh bench && \
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target engramd engram eg_loadgen eg_bench_tokenizer && \
	BENCH_ELAPSED_FROM=$$start bench/run.sh $(REL_BUILD) && \
	$(REL_BUILD)/eg_bench_tokenizer > bench/results/tokenizer.md

# Memories (issue 3): server-side latency of SearchMemories over 10,000
# memories x 384 dims and of CreateMemory with dedup against 1,000; in
# process, durable commits (bench/bench_memory.c, docs/performance.md).
bench-memory:
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target eg_bench_memory && \
	$(REL_BUILD)/eg_bench_memory $(BENCH_MEMORY_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

# Replication lag at 5,000 writes/s and catch-up after 100,000 missed records
# (bench/repl.sh, results in bench/results/replication.md).
bench-replication:
	@scripts/deps.sh bench && \
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target engramd engram eg_repl_bench && \
	bench/repl.sh $(REL_BUILD)

# Session churn with retention (issue 9): the data file's size plateaus, and
# client writes while sweeping vs the same run with nothing due
# (bench/churn.sh; CHURN_SECONDS per phase, results in bench/results/churn.md).
bench-churn:
	@scripts/deps.sh bench && \
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target engramd engram eg_loadgen && \
	bench/churn.sh $(REL_BUILD)

# Per-tenant fairness (issue 12): tenant B's p99 alone and while tenant A
# floods at 10x its --tenant-calls-per-s (bench/limits.sh, about 30 s after
# the build; results in bench/results/limits.md).
bench-limits:
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target engramd engram eg_loadgen && \
	timeout 60 bench/limits.sh $(REL_BUILD)

# Backups (issue 10): `engram backup create` MB/s of a 1 GB store, client
# writes during a backup vs alone, restore time and time to SERVING, and
# (when built in) the WAL archive's cost and replay rate (bench/backup.sh;
# BACKUP_BENCH_MB=50 for a short run; results in bench/results/backup.md).
.PHONY: bench-backup
bench-backup:
	@start=$$(date +%s); scripts/deps.sh bench && \
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target engramd engram eg_loadgen && \
	BENCH_ELAPSED_FROM=$$start bench/backup.sh $(REL_BUILD)

# Automatic failover (issue 11). `make local-ha`: the ha topology as local
# processes (deploy/local/cluster.py: 3 etcd + 3 engramd on 127.0.0.1) in
# the foreground, Ctrl-C stops all. `make chaos`: tests/e2e/test_failover.py's
# kill -9 rounds, CHAOS_RUNS of them (`make test` runs 3). `make
# bench-failover`: 50 rounds on a Release build, RTO p50/p90/max and lost
# writes in bench/results/failover.md (bench/failover.sh).
CHAOS_RUNS ?= 50
.PHONY: local-ha chaos bench-failover
local-ha: build
	ENGRAMD=$(abspath $(BUILD))/engramd ENGRAM_CLI=$(abspath $(BUILD))/engram deploy/local/cluster.py up

chaos: build
	cd tests/e2e && ENGRAM_CHAOS_RUNS=$(CHAOS_RUNS) ENGRAMD=$(abspath $(BUILD))/engramd \
	  ENGRAM_CLI=$(abspath $(BUILD))/engram ENGRAM_PY_GEN=$(abspath $(BUILD))/py \
	  /usr/bin/python3 -m unittest test_failover.ChaosTest -v

bench-failover:
	@start=$$(date +%s); scripts/deps.sh bench && \
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target engramd engram py_stubs && \
	BENCH_ELAPSED_FROM=$$start bench/failover.sh $(REL_BUILD)

# LangGraph checkpointers side by side in one run: EngramSaver on engramd
# (Release) and the official SqliteSaver (bench/langgraph/bench.mjs; its own
# package.json, better-sqlite3 compiled from source against node's headers).
# Node >= 20 (LangGraph 1.x, better-sqlite3 12). Writes
# bench/results/langgraph.json. Data under $(REL_BUILD)/bench-langgraph (disk, not tmpfs).
.PHONY: bench-langgraph
bench-langgraph:
	@node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error("bench-langgraph needs node >= 20, found " + process.version); process.exit(1) }' && \
	cmake -S . -B $(REL_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	cmake --build $(REL_BUILD) -j $(JOBS) --target engramd && \
	(cd clients/node && npm ci --no-audit --no-fund) && \
	(cd bench/langgraph && npm_config_build_from_source=true npm ci --no-audit --no-fund) && \
	mkdir -p $(REL_BUILD)/bench-langgraph && \
	TMPDIR=$(abspath $(REL_BUILD))/bench-langgraph node bench/langgraph/bench.mjs $(REL_BUILD)/engramd

# buf lint, buf format and buf breaking on proto/ (buf.yaml; tools/buf).
# PROTO_BASELINE is the previous release's commit, which breaking compares
# against: move it at each release (now: the last commit of issue 11).
# CMake reads it from here for the ctest test proto_lint.
PROTO_BASELINE ?= bebf17448df0884666c7313b16490edffd9cf7ac

proto-lint:
	PROTO_BASELINE=$(PROTO_BASELINE) tools/buf/check.sh
