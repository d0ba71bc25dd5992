#!/usr/bin/python3
"""Checks and reports for bench/run.sh (`make bench`).

  report.py check-h2load ...   verifies one h2load run against the server's own
                               counters; prints one JSON line (the run's record)
  report.py check-loadgen ...  the same for a run of eg_loadgen
  report.py check-redis ...    the same for a run of redis-benchmark, against
                               Redis's INFO commandstats
  report.py lmdb DIR LABEL     an LMDB store's size, pages and sub-databases
                               (mdb_stat), one JSON line
  report.py rss PID LABEL      engramd's resident memory, one JSON line
  report.py meta WORKDIR       machine and versions, one JSON object
  report.py report ...         results.md, results.json and chart.svg

Honest counting: h2load counts HTTP 200s, but a gRPC error is an HTTP 200
too, with `grpc-status` in the trailers. So every run is checked against the
server's counters by status code (engramd: engram_rpc_total{method,code};
etcd: grpc_server_handled_total{grpc_code,grpc_method,grpc_service}) read
before and after it, each time once the counters have settled:
  - a measured h2load run asks for a number of calls (-n, sized from the
    warm-up's rate to last about the fixed time), so none is left in flight;
  - no call on the server finished with a status other than OK (any method);
  - the server's OK count for the method equals the calls asked for, and
    h2load's total and succeeded counts, exactly;
  - h2load saw no failed, errored or timed-out request and only 2xx, and its
    per-request log has one row per call, every row status 200.
Redis is checked the same way with its own counters (INFO all before and
after each slice): the command's calls= in commandstats went up by exactly
the requests asked for, which redis-benchmark must report as completed; no
command's failed_calls or rejected_calls and no error reply
(total_error_replies) went up; redis-benchmark printed no error.
Any failure exits 1 and the benchmark stops.

Only the standard library: runs with /usr/bin/python3 on a bare Debian.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from churn_report import mdb_pages  # noqa: E402  (the churn benchmark's LMDB page count)

# ---------------------------------------------------------------- counters ---

ENGRAM_RE = re.compile(r'^engram_rpc_total\{method="([^"]*)",code="([^"]*)"\}\s+(\d+)', re.M)
ETCD_RE = re.compile(r'^grpc_server_handled_total\{([^}]*)\}\s+([0-9.e+]+)', re.M)
LABEL_RE = re.compile(r'(\w+)="([^"]*)"')


def read_counters(path):
    """{(method_path, code): count} from a Prometheus text scrape of either server."""
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {}
    for m in ENGRAM_RE.finditer(text):
        out[(m.group(1), m.group(2))] = int(m.group(3))
    for m in ETCD_RE.finditer(text):
        labels = dict(LABEL_RE.findall(m.group(1)))
        key = ("/%s/%s" % (labels.get("grpc_service", "?"), labels.get("grpc_method", "?")),
               labels.get("grpc_code", "?"))
        out[key] = out.get(key, 0) + int(float(m.group(2)))
    if not out and "engram_writer_batches_total" not in text and "grpc_server_" not in text:
        raise SystemExit("counters: %s is not a metrics scrape" % path)
    return out


def counter_delta(before, after):
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


def non_ok(delta):
    return {"%s %s" % k: v for k, v in delta.items() if k[1] != "OK" and v}


def writer_stats(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {}
    for name in ("engram_writer_batches_total", "engram_writer_items_total"):
        m = re.search(r"^%s\s+(\d+)" % name, text, re.M)
        if m:
            out[name] = int(m.group(1))
    return out


# ------------------------------------------------------------------ h2load ---

def parse_h2load(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    r = {}
    m = re.search(r"finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", text)
    if not m:
        raise SystemExit("h2load: no result line in %s:\n%s" % (path, text[-2000:]))
    r["seconds"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    r["qps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if not m:
        raise SystemExit("h2load: no request counts in %s" % path)
    (r["total"], r["started"], r["done"], r["succeeded"], r["failed"], r["errored"],
     r["timeout"]) = map(int, m.groups())
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    r["2xx"], r["3xx"], r["4xx"], r["5xx"] = map(int, m.groups()) if m else (0, 0, 0, 0)
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["h2load_min"], r["h2load_max"], r["h2load_mean"], r["h2load_sd"] = m.groups()
    return r


# --------------------------------------------------------- redis-benchmark ---

def parse_redis_bench(path):
    """redis-benchmark's report of one command (7.0, not --csv or -q: those
    leave out the completed count and the percentile points)."""
    text = open(path, encoding="utf-8", errors="replace").read()
    r = {}
    m = re.search(r"(\d+) requests completed in ([0-9.]+) seconds", text)
    t = re.search(r"throughput summary: ([0-9.]+) requests per second", text)
    s = re.search(r"latency summary \(msec\):\s+avg\s+min\s+p50\s+p95\s+p99\s+max\s+"
                  r"([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", text)
    if not (m and t and s):
        raise SystemExit("redis-benchmark: no result in %s:\n%s" % (path, text[-2000:]))
    r["completed"], r["qps"] = int(m.group(1)), float(t.group(1))
    # "completed in" has two decimals; the rate has more, over the same time.
    r["seconds"] = r["completed"] / r["qps"] if r["qps"] else float(m.group(2))
    r["mean_us"], r["min_us"], r["p50_us"], r["p95_us"], r["p99_us"], r["max_us"] = (
        int(round(float(v) * 1000)) for v in s.groups())
    dist = text.split("Latency by percentile distribution:", 1)[-1].split("Cumulative distribution", 1)[0]
    # [(latency in us, calls at or below it)]: points of the slice's HDR histogram.
    r["cdf"] = [(int(round(float(v) * 1000)), int(c)) for v, c in
                re.findall(r"[0-9.]+% <= ([0-9.]+) milliseconds \(cumulative count (\d+)\)", dist)]
    r["errors"] = len(re.findall(r"Error from server", text))
    return r


def redis_info(path):
    """({command: {calls, failed_calls, rejected_calls}}, total_error_replies) from INFO all."""
    text = open(path, encoding="utf-8", errors="replace").read()
    cmds = {}
    for m in re.finditer(r"^cmdstat_([^:]+):(.*)$", text, re.M):
        f = dict(kv.split("=", 1) for kv in m.group(2).strip().split(","))
        cmds[m.group(1)] = {k: int(f.get(k, 0)) for k in ("calls", "failed_calls", "rejected_calls")}
    m = re.search(r"^total_error_replies:(\d+)", text, re.M)
    if not m:
        raise SystemExit("redis: %s is not INFO all" % path)
    return cmds, int(m.group(1))


def cmd_check_redis(a):
    r = parse_redis_bench(a.out)
    (cb, eb), (ca, ea) = redis_info(a.before), redis_info(a.after)
    cmd = a.command.lower()
    calls = ca.get(cmd, {}).get("calls", 0) - cb.get(cmd, {}).get("calls", 0)
    problems = []
    if r["errors"]:
        problems.append("redis-benchmark printed %d errors" % r["errors"])
    if not (r["completed"] == calls == a.calls):
        problems.append("asked for %d calls; redis-benchmark: %d completed; Redis: %d %s calls"
                        % (a.calls, r["completed"], calls, a.command))
    for name, f in ca.items():
        for k in ("failed_calls", "rejected_calls"):
            if f[k] != cb.get(name, {}).get(k, 0):
                problems.append("Redis counted %s for %s" % (k, name))
    if ea != eb:
        problems.append("Redis sent %d error replies" % (ea - eb))
    if problems:
        print("COUNTING FAILED for %s: %s" % (a.name, "; ".join(problems)), file=sys.stderr)
        sys.exit(1)
    rec = {"kind": "redis", "name": a.name, "server": "redis", "workload": a.workload, "method": a.command,
           "concurrency": a.conc, "qps": r["qps"], "seconds": round(r["seconds"], 4),
           "succeeded": r["completed"], "server_ok": calls}
    rec.update({k: r[k] for k in ("p50_us", "p95_us", "p99_us", "mean_us", "max_us", "cdf")})
    print(json.dumps(rec))


def merged_percentile(rs, p):
    """The p-th percentile of several redis-benchmark slices, from their
    percentile points: the smallest point at which the slices together count
    p% of their calls. Between two of a slice's points its count is taken as
    the lower one's, so this is at most one point's spacing above the exact
    figure (redis-benchmark gives no per-call log to do better)."""
    need = p / 100.0 * sum(r["succeeded"] for r in rs)
    values = sorted({v for r in rs for v, _ in r["cdf"]})
    for v in values:
        if sum(max([c for w, c in r["cdf"] if w <= v], default=0) for r in rs) >= need:
            return v
    return values[-1] if values else 0


# ------------------------------------------------------------ percentiles ---

def percentile(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return 0
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def latency_log(path):
    """(latencies in us ascending, number of rows whose status is not 200)."""
    lat, bad = [], 0
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) < 3:
                continue
            if cols[1] != "200":
                bad += 1
                continue
            lat.append(int(cols[2]))
    lat.sort()
    return lat, bad


def cmd_scrape(a):
    """Scrapes URL into OUT once the call counters have settled: two scrapes
    100 ms apart with equal counters (bounded: 10 s). A call the load tool
    gave up on when it stopped may still be finishing on the server; waiting
    puts it on the right side of the line."""
    import time
    import urllib.request
    prev, deadline = None, time.monotonic() + 10
    while True:
        with urllib.request.urlopen(a.url, timeout=5) as r:
            body = r.read()
        with open(a.out, "wb") as f:
            f.write(body)
        cur = read_counters(a.out)
        if cur == prev or time.monotonic() > deadline:
            return
        prev = cur
        time.sleep(0.1)


def cmd_http_ok(a):
    """Exit 0 if URL answers 200 (and its body holds CONTAINS)."""
    import urllib.request
    try:
        with urllib.request.urlopen(a.url, timeout=2) as r:
            ok = r.status == 200 and a.contains.encode() in r.read()
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)


def cmd_calls(a):
    """How many calls make about SECONDS at the rate the warm-up showed
    (an h2load or a redis-benchmark report)."""
    with open(a.warm, encoding="utf-8", errors="replace") as f:
        redis = "throughput summary:" in f.read()
    h = parse_redis_bench(a.warm) if redis else parse_h2load(a.warm)
    print(max(a.conc * 20, int(h["qps"] * a.seconds)))


def cmd_check_h2load(a):
    h = parse_h2load(a.out)
    lat, bad_rows = latency_log(a.log)
    before, after = read_counters(a.before), read_counters(a.after)
    delta = counter_delta(before, after)
    ok = delta.get((a.method, "OK"), 0)
    problems = []
    if h["failed"] or h["errored"] or h["timeout"]:
        problems.append("h2load: %d failed, %d errored, %d timeout" % (h["failed"], h["errored"], h["timeout"]))
    if h["2xx"] != h["succeeded"] or h["3xx"] or h["4xx"] or h["5xx"]:
        problems.append("h2load: status codes other than 2xx")
    if h["succeeded"] == 0:
        problems.append("h2load: nothing succeeded")
    if bad_rows or len(lat) != h["succeeded"]:
        problems.append("h2load log: %d rows of status 200, %d others; h2load counted %d"
                        % (len(lat), bad_rows, h["succeeded"]))
    bad = non_ok(delta)
    if bad:
        problems.append("server counted non-OK statuses: %s" % bad)
    if not (h["total"] == h["succeeded"] == ok == a.calls):
        problems.append("asked for %d calls; h2load: %d total, %d succeeded; server: %d OK for %s"
                        % (a.calls, h["total"], h["succeeded"], ok, a.method))
    rec = {
        "kind": "h2load", "name": a.name, "log": os.path.abspath(a.log), "server": a.server, "workload": a.workload,
        "method": a.method, "concurrency": a.conc, "qps": h["qps"], "seconds": h["seconds"],
        "succeeded": h["succeeded"], "started": h["started"], "server_ok": ok,
        "p50_us": percentile(lat, 50), "p90_us": percentile(lat, 90), "p99_us": percentile(lat, 99),
        "mean_us": round(sum(lat) / len(lat), 1) if lat else 0, "max_us": lat[-1] if lat else 0,
        "h2load_time_for_request": [h.get("h2load_min"), h.get("h2load_max"), h.get("h2load_mean"),
                                    h.get("h2load_sd")],
    }
    ws_b, ws_a = writer_stats(a.before), writer_stats(a.after)
    if ws_a.get("engram_writer_batches_total", 0) > ws_b.get("engram_writer_batches_total", 0):
        batches = ws_a["engram_writer_batches_total"] - ws_b["engram_writer_batches_total"]
        items = ws_a["engram_writer_items_total"] - ws_b["engram_writer_items_total"]
        rec["writes_per_commit"] = round(items / batches, 1)
    if problems:
        print("COUNTING FAILED for %s: %s" % (a.name, "; ".join(problems)), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(rec))


def cmd_check_loadgen(a):
    """Every line eg_loadgen printed must show no errors, and the server's OK
    counts for the methods it called must add up to the calls it made."""
    lines = [json.loads(l) for l in open(a.out) if l.strip().startswith("{")]
    if not lines:
        raise SystemExit("loadgen: no result in %s" % a.out)
    delta = counter_delta(read_counters(a.before), read_counters(a.after))
    problems = []
    calls = sum(l["ok"] for l in lines)
    errors = sum(l["errors"] for l in lines)
    if errors:
        problems.append("eg_loadgen saw %d errors" % errors)
    bad = non_ok(delta)
    # Creating a session that exists is ALREADY_EXISTS, which a resumed fill
    # accepts; nothing here resumes, so any non-OK is a failure.
    if bad:
        problems.append("server counted non-OK statuses: %s" % bad)
    server_ok = sum(v for (m, c), v in delta.items() if c == "OK" and m in a.methods.split(","))
    if server_ok != calls:
        problems.append("server OK count %d != eg_loadgen's %d" % (server_ok, calls))
    if problems:
        print("COUNTING FAILED for %s: %s" % (a.name, "; ".join(problems)), file=sys.stderr)
        sys.exit(1)
    last = lines[-1]
    rec = {"kind": "loadgen", "name": a.name, "server": "engram", "workload": a.workload,
           "concurrency": a.conc, "server_ok": server_ok, "phases": lines}
    for k in ("qps", "items_per_s", "p50_us", "p90_us", "p99_us", "mean_us", "max_us", "ok",
              "reads", "writes", "seconds", "items"):
        rec[k] = last[k]
    print(json.dumps(rec))


# ------------------------------------------------------------- rss and meta ---

def cmd_rss(a):
    fields = {}
    with open("/proc/%d/status" % a.pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                fields[k + "_kb"] = int(v.split()[0])
    fields.update({"kind": "rss", "name": a.label, "messages": a.messages})
    print(json.dumps(fields))


def cmd_lmdb(a):
    """The store's file, its pages in use and free, and each sub-database's
    entries and pages (mdb_stat -a; read-only, beside the running server)."""
    used, free, page = mdb_pages(a.dir)
    text = subprocess.run(["mdb_stat", "-a", a.dir], capture_output=True, text=True, timeout=30,
                          check=True).stdout
    dbs = []
    for m in re.finditer(r"^Status of (.+)\n((?:[ \t]+.+\n?)+)", text, re.M):
        f = dict(re.findall(r"^\s+([A-Za-z ]+): (\d+)", m.group(2), re.M))
        pages = sum(int(f.get(k, 0)) for k in ("Branch pages", "Leaf pages", "Overflow pages"))
        dbs.append({"db": m.group(1).strip(), "entries": int(f.get("Entries", 0)), "pages": pages,
                    "leaf_pages": int(f.get("Leaf pages", 0)), "overflow_pages": int(f.get("Overflow pages", 0))})
    print(json.dumps({"kind": "lmdb", "name": a.label, "messages": a.messages, "page_size": page,
                      "file_bytes": os.path.getsize(os.path.join(a.dir, "data.mdb")),
                      "pages_used": used, "pages_free": free, "dbs": dbs}))


def run_out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def dpkg_version(pkg):
    return run_out(["dpkg-query", "-W", "-f=${Version}", pkg]) or "?"


def cmd_meta(a):
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # An exported tree (git archive) has no .git: BENCH_COMMIT names it.
    commit = os.environ.get("BENCH_COMMIT") or run_out(["git", "-C", root, "rev-parse", "--short", "HEAD"]) or "?"
    if not os.environ.get("BENCH_COMMIT") and run_out(["git", "-C", root, "status", "--porcelain",
                                                         "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    meta = {
        "nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
        "mem_gib": round(mem_kb / 1048576, 1),
        "data_fs": (run_out(["df", "--output=fstype", a.workdir]).splitlines() or ["?"])[-1],
        "os": run_out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "engram_commit": commit,
        "grpc": "gRPC C core %s (libgrpc-dev %s)" % (run_out(["pkg-config", "--modversion", "grpc"]),
                                                       dpkg_version("libgrpc-dev")),
        "lmdb": dpkg_version("liblmdb0"), "libsodium": dpkg_version("libsodium23"),
        "protobuf_c": dpkg_version("libprotobuf-c1"),
        "etcd": run_out(["etcd", "--version"]).splitlines()[0] if run_out(["etcd", "--version"]) else "?",
        "h2load": run_out(["h2load", "--version"]),
        "redis": "Redis %s (redis-server %s)" % (
            (re.findall(r"v=(\S+)", run_out(["redis-server", "--version"])) or ["?"])[0],
            dpkg_version("redis-server")),
        "redis_benchmark": run_out(["redis-benchmark", "--version"]),
        "seconds_per_point": a.seconds, "warmup_seconds": a.warmup, "rounds": a.rounds,
    }
    print(json.dumps(meta))


# ------------------------------------------------------------------ report ---

LABELS = {
    "append": "Durable write: AppendMessages, 1 x 256 B",
    "put": "Durable write: etcd Put, 256 B",
    "get_session": "Point read: GetSession",
    "range": "Point read: etcd Range (serializable)",
    "get_context": "Context read: GetContext, 20 messages",
    "health": "Baseline: Health/Check (Engram)",
    "etcd_health": "Baseline: Health/Check (etcd)",
    "mixed": "Mixed 90/10 over 10,000 sessions (eg_loadgen)",
    "append10": "Durable write: AppendMessages, 10 x 256 B",
    "redis_rpush": "Durable write: Redis RPUSH, 1 x 256 B",
    "redis_rpush10": "Durable write: Redis RPUSH, 10 x 256 B",
    "redis_lrange": "Context read: Redis LRANGE, last 20 of 100 x 256 B",
    "redis_ping": "Baseline: PING (Redis)",
}
ORDER = ["append", "put", "redis_rpush", "append10", "redis_rpush10", "get_session", "range", "get_context",
         "redis_lrange", "mixed", "health", "etcd_health", "redis_ping"]
PEER = {"append": "put", "get_session": "range"}
REDIS_PEER = {"append": "redis_rpush", "append10": "redis_rpush10", "get_context": "redis_lrange",
              "health": "redis_ping"}
# Messages (Engram) or values (Redis) written per call, where more than one.
ITEMS = {"append10": 10, "redis_rpush10": 10}


def fmt_us(us):
    return "%.2f ms" % (us / 1000.0) if us >= 1000 else "%d µs" % us


def fmt_qps(q):
    return "{:,.0f}".format(q)


def merge_slices(rs):
    """One point from its slices: calls over time, percentiles over every
    call of every slice (h2load: from the per-request logs; redis-benchmark:
    from each slice's percentile points, merged_percentile)."""
    m = {k: rs[0][k] for k in ("kind", "server", "workload", "method", "concurrency")}
    if m["kind"] == "redis":
        return merge_redis_slices(m, rs)
    lat = []
    for r in rs:
        lat.extend(latency_log(r["log"])[0])
    lat.sort()
    keys = ("name", "qps", "seconds", "succeeded", "server_ok", "p50_us", "p99_us", "writes_per_commit")
    m["slices"] = [{k: r[k] for k in keys if k in r} for r in rs]
    m["succeeded"] = sum(r["succeeded"] for r in rs)
    m["server_ok"] = sum(r["server_ok"] for r in rs)
    m["seconds"] = round(sum(r["seconds"] for r in rs), 3)
    m["qps"] = round(m["succeeded"] / m["seconds"], 1)
    m["p50_us"], m["p90_us"], m["p99_us"] = (percentile(lat, 50), percentile(lat, 90), percentile(lat, 99))
    m["mean_us"] = round(sum(lat) / len(lat), 1) if lat else 0
    m["max_us"] = lat[-1] if lat else 0
    if all("writes_per_commit" in r for r in rs):
        m["writes_per_commit"] = round(sum(r["writes_per_commit"] for r in rs) / len(rs), 1)
    return m


def merge_redis_slices(m, rs):
    m["slices"] = [{k: r[k] for k in ("name", "qps", "seconds", "succeeded", "server_ok", "p50_us", "p99_us")}
                   for r in rs]
    for k in ("succeeded", "server_ok"):
        m[k] = sum(r[k] for r in rs)
    m["seconds"] = round(sum(r["seconds"] for r in rs), 3)
    m["qps"] = round(m["succeeded"] / m["seconds"], 1)
    m["p50_us"], m["p90_us"], m["p99_us"] = (merged_percentile(rs, p) for p in (50, 90, 99))
    m["mean_us"] = round(sum(r["mean_us"] * r["succeeded"] for r in rs) / max(1, m["succeeded"]), 1)
    m["max_us"] = max(r["max_us"] for r in rs)
    return m


def index_runs(runs):
    by, slices = {}, {}
    for r in runs:
        if r.get("kind") in ("h2load", "redis") and r.get("workload") in LABELS:
            slices.setdefault((r["workload"], r["concurrency"]), []).append(r)
        elif r.get("kind") == "loadgen" and r.get("workload") in LABELS:
            by[(r["workload"], r["concurrency"])] = r
    for k, rs in slices.items():
        by[k] = merge_slices(rs)
    return by


def goals(by, rss, scaling):
    """[(goal text, measured text, met: bool or None)]."""
    out = []
    a, p = by.get(("append", 64)), by.get(("put", 64))
    if a and p:
        ratio = a["qps"] / p["qps"]
        out.append(("Durable writes at c=64: ≥ 2.0× etcd Put QPS, with a lower p99",
                    "%.2f× (%s vs %s/s); p99 %s vs %s" % (ratio, fmt_qps(a["qps"]), fmt_qps(p["qps"]),
                                                          fmt_us(a["p99_us"]), fmt_us(p["p99_us"])),
                    ratio >= 2.0 and a["p99_us"] < p["p99_us"]))
    g, r, h = by.get(("get_session", 64)), by.get(("range", 64)), by.get(("health", 64))
    if g and r and h:
        r1, r2 = g["qps"] / r["qps"], g["qps"] / h["qps"]
        out.append(("Point reads at c=64: ≥ 5× etcd serializable Range, ≥ 80% of Health",
                    "%.2f× etcd Range; %.0f%% of Health (%s vs %s vs %s/s)"
                    % (r1, 100 * r2, fmt_qps(g["qps"]), fmt_qps(r["qps"]), fmt_qps(h["qps"])),
                    r1 >= 5.0 and r2 >= 0.8))
    a1 = by.get(("append", 1))
    if a1:
        out.append(("Single-client durable write p50 ≤ 0.5 ms",
                    "p50 %s (p99 %s)" % (fmt_us(a1["p50_us"]), fmt_us(a1["p99_us"])),
                    a1["p50_us"] <= 500))
    out += redis_goals(by)
    fill = [x for x in rss if x["name"] == "after_fill"]
    if fill:
        x = fill[0]
        anon = (x["RssAnon_kb"] + x.get("RssShmem_kb", 0)) / 1024.0
        out.append(("engramd resident memory after 1,000,000 messages < 100 MB (LMDB map aside)",
                    "%.1f MB anonymous (VmRSS %.1f MB of which %.1f MB mapped LMDB file pages); %s messages"
                    % (anon, x["VmRSS_kb"] / 1024.0, x["RssFile_kb"] / 1024.0,
                       "{:,}".format(x["messages"])),
                    anon < 100))
    for name, small, big in scaling:
        if small and big:
            ratio = big["p50_us"] / max(1, small["p50_us"])
            out.append(("Scaling: %s flat (big/small p50 ≤ 2×)" % name,
                        "%.2f× (%s vs %s)" % (ratio, fmt_us(big["p50_us"]), fmt_us(small["p50_us"])),
                        ratio <= 2.0))
    return out


def ratio_goal(goal, x, y, at_least, what_x, what_y, per=1):
    """A goal row: x's rate / y's rate ≥ at_least (rates times per: items/s)."""
    ratio = x["qps"] / y["qps"]
    return (goal, "%.2f× (%s %s vs %s %s/s)" % (ratio, what_x, fmt_qps(x["qps"] * per), what_y,
                                                 fmt_qps(y["qps"] * per)), ratio >= at_least)


def redis_goals(by):
    """Issue 15's rows: against Engram's own Health ceiling and against Redis
    (appendfsync always), each a ratio of this run."""
    out = []

    def g(w, c=64):
        return by.get((w, c))

    if g("append") and g("health"):
        out.append(ratio_goal("Durable writes at c=64: ≥ 0.75× Engram's Health (the gRPC ceiling)",
                              g("append"), g("health"), 0.75, "Append", "Health"))
    if g("append") and g("redis_rpush"):
        out.append(ratio_goal("Durable writes at c=64: ≥ 0.6× Redis RPUSH of one 256 B value (appendfsync always)",
                              g("append"), g("redis_rpush"), 0.6, "Append", "RPUSH"))
    if g("append10") and g("redis_rpush10"):
        out.append(ratio_goal("10 messages per call at c=64: ≥ 0.8× Redis RPUSH of 10 values, messages/s vs values/s",
                              g("append10"), g("redis_rpush10"), 0.8, "Append", "RPUSH", per=10))
    a1, r1 = g("append", 1), g("redis_rpush", 1)
    if a1 and r1:
        ratio = a1["p50_us"] / max(1, r1["p50_us"])
        out.append(("Single-client durable write p50 ≤ 1.3× Redis RPUSH p50 (c=1)",
                    "%.2f× (%s vs %s)" % (ratio, fmt_us(a1["p50_us"]), fmt_us(r1["p50_us"])), ratio <= 1.3))
    if g("get_session") and g("health"):
        out.append(ratio_goal("Point reads at c=64: GetSession ≥ 0.9× Health", g("get_session"), g("health"), 0.9,
                              "GetSession", "Health"))
    if g("get_context") and g("health"):
        out.append(ratio_goal("Context reads at c=64: GetContext (20 messages) ≥ 0.7× Health", g("get_context"),
                              g("health"), 0.7, "GetContext", "Health"))
    if g("get_context") and g("redis_lrange"):
        out.append(ratio_goal("Context reads at c=64: GetContext (20 messages) ≥ 0.6× Redis LRANGE of 20 values",
                              g("get_context"), g("redis_lrange"), 0.6, "GetContext", "LRANGE"))
    return out


def search_runs(runs):
    """Issue 13's runs by workload: {workload: [rounds]}."""
    out = {}
    for r in runs:
        if r.get("kind") == "loadgen" and (r["workload"].startswith("append_index_")
                                           or r["workload"].startswith("search_")
                                           or r["workload"] == "fill_search"):
            out.setdefault(r["workload"], []).append(r)
    return out


def median_qps(rs):
    return sorted(r["qps"] for r in rs)[len(rs) // 2] if rs else 0


def index_ratio(sr, stage):
    """(ratio, on qps, off qps, rounds) of appends with indexing on vs off at stage."""
    on, off = sr.get("append_index_on_" + stage), sr.get("append_index_off_" + stage)
    if not on or not off:
        return None
    q_on, q_off = median_qps(on), median_qps(off)
    return (q_on / q_off if q_off else 0, q_on, q_off, len(on))


def search_goals(sr):
    out = []
    for stage, what in (("small", "small stores"), ("filled", "both stores holding 1,000,000 messages")):
        r = index_ratio(sr, stage)
        if r:
            out.append(("AppendMessages with message indexing on ≥ 85%% of off (c=64, one 256 B message per "
                        "call; %s)" % what,
                        "%.0f%% (%s vs %s/s, medians of %d rounds)" % (100 * r[0], fmt_qps(r[1]), fmt_qps(r[2]), r[3]),
                        r[0] >= 0.85))
    u = sr.get("search_user")
    if u:
        m = median_round(u)
        out.append(("SearchMessages p99 ≤ 20 ms over a user with 100,000 messages (c=1)",
                    "p99 %s, p50 %s (median round of %d)" % (fmt_us(m["p99_us"]), fmt_us(m["p50_us"]), len(u)),
                    m["p99_us"] <= 20000))
    return out


def nice_ceiling(v):
    """The smallest 1, 2, 2.5, 4 or 5 x 10^k at or above v, so ticks at
    quarters are round numbers."""
    import math
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 4, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def svg_chart(by, concs, path):
    """Two rows of grouped bars (QPS above, p99 below), one panel per
    concurrency; hand-written SVG, no plotting library needed."""
    series = [("health", "#9e9e9e"), ("append", "#1f77b4"), ("put", "#ff7f0e"), ("redis_rpush", "#d62728"),
              ("append10", "#1f77b4"), ("redis_rpush10", "#d62728"),
              ("get_session", "#1f77b4"), ("range", "#ff7f0e"), ("get_context", "#1f77b4"),
              ("redis_lrange", "#d62728"), ("mixed", "#2ca02c"), ("etcd_health", "#d9b38c"),
              ("redis_ping", "#e8a0a0")]
    short = {"health": "Health", "append": "Append", "put": "etcd Put", "get_session": "GetSession",
             "range": "etcd Range", "get_context": "GetContext", "mixed": "Mixed 90/10",
             "etcd_health": "etcd Health", "append10": "Append x10", "redis_rpush": "Redis RPUSH",
             "redis_rpush10": "RPUSH x10", "redis_lrange": "Redis LRANGE", "redis_ping": "Redis PING"}
    series = [s for s in series if any((s[0], c) in by for c in concs)]
    pw, ph, ml, mt, gap = 30 * (len(series) + 1), 220, 60, 40, 30
    W = ml + len(concs) * (pw + gap) + 20
    H = mt + 2 * (ph + 90) + 60
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
         'font-family="DejaVu Sans, Arial, sans-serif" font-size="11">' % (W, H, W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="22" font-size="15" font-weight="bold">Engram vs etcd and Redis on one machine, '
         'one run (blue: Engram, orange: etcd, red: Redis, appendfsync always; green: Engram mixed; '
         'grey: gRPC Health)</text>' % ml]
    rows = [("qps", "requests/s (higher is better)", lambda r: r["qps"]),
            ("p99", "p99 latency, ms (lower is better)", lambda r: r["p99_us"] / 1000.0)]
    for ri, (key, title, val) in enumerate(rows):
        top = mt + ri * (ph + 90) + 20
        vmax = nice_ceiling(1.08 * max([val(by[(s, c)]) for s, _ in series for c in concs if (s, c) in by] + [1e-9]))
        o.append('<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>' % (ml, top - 8, title))
        for ci, c in enumerate(concs):
            x0 = ml + ci * (pw + gap)
            o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#ccc"/>'
                     % (x0, top, pw, ph))
            for t in range(5):
                v = vmax * t / 4
                y = top + ph - ph * t / 4
                o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>' % (x0, x0 + pw, y, y))
                if ci == 0:
                    lab = ("{:,.0f}".format(v) if key == "qps" else "%g" % round(v, 2))
                    o.append('<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>' % (x0 - 4, y + 4, lab))
            bw = pw / (len(series) + 1)
            for si, (s, color) in enumerate(series):
                r = by.get((s, c))
                bx = x0 + bw * (si + 0.5)
                if r:
                    v = val(r)
                    bh = ph * v / vmax
                    o.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                             % (bx, top + ph - bh, bw * 0.85, bh, color))
                    lab = ("%.1fk" % (v / 1000) if key == "qps" else ("%.2f" % v if v < 10 else "%.0f" % v))
                    o.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>'
                             % (bx + bw * 0.42, top + ph - bh - 3, lab))
                o.append('<text transform="translate(%.1f,%d) rotate(40)" font-size="9">%s</text>'
                         % (bx + bw * 0.3, top + ph + 10, short[s]))
            o.append('<text x="%d" y="%d" text-anchor="middle" font-weight="bold">c = %d</text>'
                     % (x0 + pw / 2, top + 14, c))
    o.append('<text x="%d" y="%d" fill="#555">Health: the gRPC ceiling (no storage). Each bar: %s.</text>'
             % (ml, H - 20, "h2load -c N -m 1 for a fixed time; Redis: redis-benchmark -c N; x10: calls of "
                            "10 messages/values (calls/s shown); Mixed: eg_loadgen, N threads"))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def stored_messages(x):
    """Messages in a store: its `messages` sub-database's entries (one per
    message: the fill's and the other workloads' alike), else the fill's."""
    return next((d["entries"] for d in x["dbs"] if d["db"] == "messages"), 0) or x["messages"]


def storage_section(runs):
    """Bytes on disk per message after the fill (1,000,000 messages), and where
    they are (mdb_stat: pages in use, free pages, each sub-database)."""
    stores = [r for r in runs if r.get("kind") == "lmdb"]
    if not stores:
        return []
    md = ["", "## Storage per message", "",
          "After the fill of %s messages of 256 B in calls of 100, from `mdb_stat -ef` and `mdb_stat -a` "
          "on the live store. Per message: over every message the store holds (its `messages` "
          "sub-database's entries: the fill's and those of the workloads before it). In use: pages "
          "LMDB has used less its free pages, which stay in the file for reuse."
          % "{:,}".format(stores[0]["messages"]), "",
          "| store | messages | data.mdb | bytes/message (file) | pages in use | free pages | in use / file | "
          "bytes/message (in use) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for x in stores:
        n, inuse = stored_messages(x), (x["pages_used"] - x["pages_free"]) * x["page_size"]
        md.append("| %s | %s | %.2f GB | %s | %s | %s | %.0f%% | %s |"
                  % (x["name"], "{:,}".format(n), x["file_bytes"] / 1e9, "{:,}".format(x["file_bytes"] // n),
                     "{:,}".format(x["pages_used"] - x["pages_free"]), "{:,}".format(x["pages_free"]),
                     100.0 * inuse / max(1, x["file_bytes"]), "{:,}".format(inuse // n)))
    md += ["", "Sub-databases holding pages (of %s B): their pages' bytes per entry (how full the pages "
           "are, for entries of a known size) and per message:" % stores[0]["page_size"], "",
           "| store | sub-database | entries | pages | of which overflow | bytes/entry | bytes/message |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for x in stores:
        n = stored_messages(x)
        for d in sorted((d for d in x["dbs"] if d["pages"]), key=lambda d: -d["pages"]):
            b = d["pages"] * x["page_size"]
            md.append("| %s | %s | %s | %s | %s | %s | %.1f |"
                      % (x["name"], d["db"], "{:,}".format(d["entries"]), "{:,}".format(d["pages"]),
                         "{:,}".format(d["overflow_pages"]), "{:,}".format(b // max(1, d["entries"])), b / n))
    return md


def median_round(rs):
    """The round with the median p50, with every round's p50 and the calls
    of all rounds attached."""
    rs = sorted(rs, key=lambda r: r["p50_us"])
    m = dict(rs[len(rs) // 2])
    m["rounds_p50_us"] = [r["p50_us"] for r in rs]
    m["calls_all_rounds"] = sum(r["ok"] for r in rs)
    return m


def cmd_report(a):
    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    meta = json.load(open(a.meta))
    by = index_runs(runs)
    concs = sorted({c for (_, c) in by})
    rss = [r for r in runs if r.get("kind") == "rss"]
    sc = {}
    for r in runs:
        if r.get("kind") == "loadgen" and r["workload"].startswith("scale_") and "fill" not in r["workload"]:
            sc.setdefault(r["workload"], []).append(r)
    sc = {w: median_round(rs) for w, rs in sc.items()}
    scaling = [("GetContext, 100 vs 100,000 messages in the session",
                sc.get("scale_ctx_small"), sc.get("scale_ctx_big")),
               ("ListSessions (page of 10), 10 vs 100,000 sessions of the user",
                sc.get("scale_ls_small"), sc.get("scale_ls_big"))]
    sr = search_runs(runs)
    gl = goals(by, rss, scaling) + search_goals(sr)
    os.makedirs(a.out, exist_ok=True)
    md = ["# Engram vs etcd and Redis: benchmark results", "",
          "Produced by `make bench` (bench/run.sh) on %s; every figure below comes from this one run."
          % a.date, "",
          "Machine: %s, %s CPUs (`nproc`), %s GiB RAM, Linux %s, %s; data on %s."
          % (meta["cpu"], meta["nproc"], meta["mem_gib"], meta["kernel"], meta["os"], meta["data_fs"]),
          "Versions: Engram %s; %s; LMDB %s; libsodium %s; protobuf-c %s; %s; %s; %s; %s."
          % (meta["engram_commit"], meta["grpc"], meta["lmdb"], meta["libsodium"], meta["protobuf_c"],
             meta["etcd"], meta.get("redis", "Redis ?"), meta["h2load"], meta.get("redis_benchmark", "?")), "",
          "Each h2load point is %s s of calls in %s slices taken in turn with the other workloads "
          "(after a %s s warm-up), by `h2load -c N -m 1 -t 1` (N connections, one stream each); p50 and "
          "p99 are computed over every call from h2load's per-request log (`--log-file`). The mixed "
          "workload is eg_loadgen (libengram) with N threads for %s s, timed per call. Every slice and "
          "run was checked against the servers' own counters by gRPC status code (bench/README.md): "
          "exact counts, zero non-OK statuses. Redis (`appendonly yes`, `appendfsync always`: every write "
          "fsynced before its reply) takes its slices in the same turns, driven by `redis-benchmark -c N` "
          "(one command per connection at a time) for an exact number of calls, each slice checked "
          "against `INFO commandstats` (calls equal to the requests completed, no failed or rejected "
          "call, no error reply); its p50 and p99 merge the slices' percentile points (no per-call "
          "log), so they can be up to one point's spacing high."
          % (meta["seconds_per_point"], meta["rounds"], meta["warmup_seconds"], meta["seconds_per_point"]), "",
          "## Goals", "", "| goal | measured | met |", "| --- | --- | --- |"]
    for g, m, met in gl:
        md.append("| %s | %s | %s |" % (g, m, "yes" if met else "**no**"))
    md += ["", "## Throughput and latency", "",
           "Ratios compare with the same concurrency in the same run: Engram/etcd against the peer "
           "workload (AppendMessages ↔ Put, GetSession ↔ Range); Engram/Redis against AppendMessages ↔ "
           "RPUSH (1 or 10 values), GetContext ↔ LRANGE, Health ↔ PING; Engram/Health against "
           "Engram's own `grpc.health.v1.Health/Check`, the gRPC ceiling. QPS is calls/s; rows of 10 per "
           "call also give messages (values) per second.", "",
           "| workload | c | QPS | p50 | p99 | Engram/etcd | Engram/Redis | Engram/Health |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for w in ORDER:
        for c in concs:
            r = by.get((w, c))
            if not r:
                continue
            peer, rpeer = by.get((PEER.get(w), c)), by.get((REDIS_PEER.get(w), c))
            h = by.get(("health", c))
            engram_row = r["server"] == "engram"
            ratio_e = "%.2f×" % (r["qps"] / peer["qps"]) if peer and engram_row else "—"
            ratio_r = "%.2f×" % (r["qps"] / rpeer["qps"]) if rpeer and engram_row else "—"
            ratio_h = ("%.0f%%" % (100 * r["qps"] / h["qps"])) if h and engram_row and w != "health" else "—"
            extra = []
            if r.get("writes_per_commit"):
                extra.append("%.1f writes/commit" % r["writes_per_commit"])
            if w in ITEMS:
                extra.append("%s %s/s" % (fmt_qps(r["qps"] * ITEMS[w]), "messages" if engram_row else "values"))
            md.append("| %s%s | %d | %s | %s | %s | %s | %s | %s |"
                      % (LABELS[w], " (%s)" % ", ".join(extra) if extra else "", c, fmt_qps(r["qps"]),
                         fmt_us(r["p50_us"]), fmt_us(r["p99_us"]), ratio_e, ratio_r, ratio_h))
    md += ["", "![QPS and p99 per workload and concurrency](chart.svg)", "",
           "## Scaling", "",
           "One client, calls one after another (eg_loadgen, c=1); small and big alternate for three "
           "rounds of one second; the row shows the median round (by p50) and every round's p50.", "",
           "| what | size | p50 | p99 | mean | p50 of each round | calls (all rounds) |",
           "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    sizes = {"GetContext": ("100 messages", "100,000 messages"), "ListSessions": ("10 sessions", "100,000 sessions")}
    for name, small, big in scaling:
        key = name.split(",")[0].split(" ")[0]
        for label, r in zip(sizes[key], (small, big)):
            if r:
                md.append("| %s | %s | %s | %s | %s | %s | %s |"
                          % (key + (" (max_messages 20)" if key == "GetContext" else " (page_size 10)"), label,
                             fmt_us(r["p50_us"]), fmt_us(r["p99_us"]), fmt_us(r["mean_us"]),
                             ", ".join(fmt_us(x) for x in r["rounds_p50_us"]),
                             "{:,}".format(r["calls_all_rounds"])))
    if sr:
        md += ["", "## Message search", "",
               "Messages are Zipf-distributed text (bench/lg_text.h: English function words, which the "
               "tokenizer drops, then pseudo-words), so terms are shared as in prose. Append: one 256 B "
               "message per call, 64 threads, against this engramd (indexing on, the default) and a "
               "second one of the same build with `--index-messages=false`, rounds in turn. Search: "
               "eg_loadgen, queries of 1 to 3 words drawn like the text, top_k 10.", "",
               "| what | c | rounds | calls/s (median) | p50 | p99 | results per call |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        labels = [("append_index_on_small", "AppendMessages, indexing on, small store"),
                  ("append_index_off_small", "AppendMessages, `--index-messages=false`, small store"),
                  ("append_index_on_filled", "AppendMessages, indexing on, after 1,000,000 messages"),
                  ("append_index_off_filled", "AppendMessages, `--index-messages=false`, after 1,000,000 messages"),
                  ("search_user", "SearchMessages, one user (100,000 messages)"),
                  ("search_user_c16", "SearchMessages, one user (100,000 messages)"),
                  ("search_tenant", "SearchMessages, the whole tenant (every message of this run: over 1.2 million, 1,101 users)")]
        for w, label in labels:
            rs = sr.get(w)
            if not rs:
                continue
            m = median_round(rs)
            per = "%.1f" % (m["items"] / m["ok"]) if w.startswith("search") and m["ok"] else "—"
            md.append("| %s | %d | %d | %s | %s | %s | %s |"
                      % (label, m["concurrency"], len(rs), fmt_qps(median_qps(rs)), fmt_us(m["p50_us"]),
                         fmt_us(m["p99_us"]), per))
        disks = {r["name"]: r for r in runs if r.get("kind") == "disk"}
        if disks:
            md += [""] + ["Store file (data.mdb, with its free pages and the WAL it retains) of the %s engramd "
                          "after the fill: %.2f GB, %s bytes per message of the fill (%s messages, plus the few "
                          "thousand of the other workloads)."
                          % (name, d["bytes"] / 1e9, "{:,}".format(d["bytes"] // max(1, d["messages"])),
                             "{:,}".format(d["messages"])) for name, d in sorted(disks.items())]
        md += ["", "Tokenizer cost per KB of text: bench/results/tokenizer.md."]
        for r in sr.get("fill_search", []):
            for ph in r["phases"]:
                if ph["what"] == "append":
                    md += ["", "Fill of the search user: %s messages in %.1f s (%s messages/s, 8 threads, 100 "
                           "per call)." % ("{:,}".format(ph["items"]), ph["seconds"], fmt_qps(ph["items_per_s"]))]
    md += storage_section(runs)
    md += ["", "## Memory and fill", "", "| when | messages | VmRSS | RssAnon | RssFile (LMDB map pages) |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for x in rss:
        md.append("| %s | %s | %.1f MB | %.1f MB | %.1f MB |"
                  % (x["name"], "{:,}".format(x["messages"]), x["VmRSS_kb"] / 1024, x["RssAnon_kb"] / 1024,
                     x["RssFile_kb"] / 1024))
    for r in runs:
        if r.get("kind") == "loadgen" and r["workload"] == "fill":
            for ph in r["phases"]:
                md.append("")
                md.append("Fill `%s`: %s calls by %d threads in %.1f s (%s calls/s, %s messages/s), "
                          "p50 %s, p99 %s." % (ph["what"], "{:,}".format(ph["ok"]), ph["threads"], ph["seconds"],
                                                fmt_qps(ph["qps"]), fmt_qps(ph["items_per_s"]),
                                                fmt_us(ph["p50_us"]), fmt_us(ph["p99_us"])))
    if a.elapsed:
        md += ["", "Whole `make bench` run (build included): %s s." % a.elapsed]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        points = [by[k] for k in sorted(by, key=lambda k: (ORDER.index(k[0]), k[1]))]
        other = [r for r in runs if r.get("kind") != "h2load"]
        json.dump({"meta": meta, "date": a.date, "points": points, "other_runs": other,
                   "goals": [{"goal": g, "measured": m, "met": met} for g, m, met in gl]}, f, indent=1)
        f.write("\n")
    svg_chart(by, concs, os.path.join(a.out, "chart.svg"))
    for g, m, met in gl:
        print("%-4s %s: %s" % ("MET" if met else "MISS", g, m))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("check-h2load")
    for k in ("name", "server", "workload", "method", "out", "log", "before", "after"):
        s.add_argument("--" + k, required=True)
    s.add_argument("--conc", type=int, required=True)
    s.add_argument("--calls", type=int, required=True)
    s = sub.add_parser("check-redis")
    for k in ("name", "workload", "command", "out", "before", "after"):
        s.add_argument("--" + k, required=True)
    s.add_argument("--conc", type=int, required=True)
    s.add_argument("--calls", type=int, required=True)
    s = sub.add_parser("lmdb")
    s.add_argument("dir")
    s.add_argument("label")
    s.add_argument("--messages", type=int, default=0)
    s = sub.add_parser("check-loadgen")
    for k in ("name", "workload", "methods", "out", "before", "after"):
        s.add_argument("--" + k, required=True)
    s.add_argument("--conc", type=int, required=True)
    s = sub.add_parser("scrape")
    s.add_argument("url")
    s.add_argument("out")
    s = sub.add_parser("http-ok")
    s.add_argument("url")
    s.add_argument("--contains", default="")
    s = sub.add_parser("calls")
    s.add_argument("warm")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--conc", type=int, required=True)
    s = sub.add_parser("rss")
    s.add_argument("pid", type=int)
    s.add_argument("label")
    s.add_argument("--messages", type=int, default=0)
    s = sub.add_parser("meta")
    s.add_argument("workdir")
    s.add_argument("--seconds", required=True)
    s.add_argument("--warmup", required=True)
    s.add_argument("--rounds", required=True)
    s = sub.add_parser("report")
    for k in ("runs", "meta", "out", "date"):
        s.add_argument("--" + k, required=True)
    s.add_argument("--elapsed", default="")
    a = p.parse_args()
    {"check-h2load": cmd_check_h2load, "scrape": cmd_scrape, "http-ok": cmd_http_ok, "calls": cmd_calls,
     "check-loadgen": cmd_check_loadgen, "check-redis": cmd_check_redis, "lmdb": cmd_lmdb, "rss": cmd_rss,
     "meta": cmd_meta, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
