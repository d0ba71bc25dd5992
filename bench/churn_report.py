#!/usr/bin/python3
"""The churn benchmark's sampler and report (bench/churn.sh); standard library only.

  churn_report.py sample DATA_DIR METRICS_URL T0      one JSON line: the data file, LMDB pages, counters
  churn_report.py report --out DIR --meta META.json --phase NAME SAMPLES.jsonl LOADGEN.json ...
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request

WRITES = ("CreateSession", "AppendMessages")


def metrics(url):
    """{name{labels}: value} of a Prometheus text page."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def mdb_pages(data_dir):
    """Pages LMDB has used (the file's high-water mark) and of those the free ones."""
    text = subprocess.run(["mdb_stat", "-ef", data_dir], capture_output=True, text=True,
                          timeout=30, check=True).stdout
    used = int(re.search(r"Number of pages used: (\d+)", text).group(1))
    free = int(re.search(r"Free pages: (\d+)", text).group(1))
    page = int(re.search(r"Page size: (\d+)", text).group(1))
    return used, free, page


def sample(args):
    m = metrics(args.url)
    used, free, page = mdb_pages(args.data_dir)
    writes = sum(v for k, v in m.items() if k.startswith("engram_rpc_total{")
                 and 'code="OK"' in k and any(f'/{w}"' in k for w in WRITES))
    swept = {re.search(r'kind="([^"]+)"', k).group(1): int(v)
             for k, v in m.items() if k.startswith("engram_swept_total{")}
    backlog = sum(int(v) for k, v in m.items() if k.startswith("engram_sweep_backlog{"))
    print(json.dumps({
        "t": round(time.time() - args.t0, 2),
        "data_mdb_bytes": os.stat(os.path.join(args.data_dir, "data.mdb")).st_size,
        "pages_used": used, "pages_free": free, "page_size": page,
        "writes_ok": int(writes), "swept": swept, "swept_total": sum(swept.values()),
        "sweep_backlog": backlog}))


def meta(_args):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    disk = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE", "-T", "."], capture_output=True,
                          text=True).stdout.strip()
    dev = os.path.basename(disk.split()[0]) if disk else ""
    rot = ""
    try:
        rot = "rotational" if open(f"/sys/block/{dev}/queue/rotational").read().strip() == "1" \
            else "non-rotational"
    except OSError:
        pass
    print(json.dumps({"nproc": int(nproc), "cpu": cpu, "kernel": platform.release(),
                      "disk": f"{disk} ({rot})" if rot else disk}))


def load_phase(samples_path, loadgen_path):
    samples = [json.loads(l) for l in open(samples_path) if l.strip()]
    lg = json.loads(open(loadgen_path).read().strip().splitlines()[-1])
    return samples, lg


def window_rate(samples, t_from, t_to):
    """Writes per second between the samples nearest t_from and t_to."""
    a = min(samples, key=lambda s: abs(s["t"] - t_from))
    b = min(samples, key=lambda s: abs(s["t"] - t_to))
    return (b["writes_ok"] - a["writes_ok"]) / (b["t"] - a["t"]) if b["t"] > a["t"] else 0.0


def halves(samples):
    """Data file growth (bytes) over the first and the last half of the samples."""
    mid = samples[len(samples) // 2]
    return mid["data_mdb_bytes"] - samples[0]["data_mdb_bytes"], \
        samples[-1]["data_mdb_bytes"] - mid["data_mdb_bytes"]


def mib(b):
    return b / (1 << 20)


def report(args):
    m = json.load(open(args.meta))
    keep_s, keep_lg = load_phase(args.keep_samples, args.keep_loadgen)
    sweep_s, sweep_lg = load_phase(args.sweep_samples, args.sweep_loadgen)
    # "During sweeps": from the first sample at which the sweeper had deleted
    # something to the end of the load; the keep phase over the same seconds.
    first = next((s["t"] for s in sweep_s if s["swept_total"] > 0), None)
    end = min(keep_s[-1]["t"], sweep_s[-1]["t"], float(args.seconds))
    if first is None:
        sys.exit("churn: the sweeper deleted nothing in the sweep phase")
    r_sweep, r_keep = window_rate(sweep_s, first, end), window_rate(keep_s, first, end)
    ratio = r_sweep / r_keep if r_keep else 0.0
    k1, k2 = halves(keep_s)
    s1, s2 = halves(sweep_s)
    last = sweep_s[-1]
    res = {
        "date": args.date, "machine": m, "settings": json.loads(args.settings),
        "keep": {"loadgen": keep_lg, "samples": keep_s, "growth_first_half": k1, "growth_last_half": k2},
        "sweep": {"loadgen": sweep_lg, "samples": sweep_s, "growth_first_half": s1, "growth_last_half": s2,
                  "first_sweep_t": first},
        "window": [first, end], "writes_per_s_keep": r_keep, "writes_per_s_sweep": r_sweep,
        "ratio": ratio, "throughput_goal_met": ratio >= 0.9,
        "plateau": s2 <= 0.05 * max(s1, 1),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "churn.json"), "w") as f:
        json.dump(res, f, indent=1)
    st = res["settings"]
    L = []
    L.append("# Churn benchmark: retention and the sweeper under steady session churn\n")
    L.append(f"Run {args.date}. Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}, "
             f"disk {m['disk']}. Written by `make bench-churn` (bench/churn.sh).\n")
    L.append(f"Two phases of {st['seconds']} s, one after the other, each on a fresh engramd "
             f"(Release, durable commits, encryption and auth on, `--session-ttl {st['ttl_s']}`, "
             f"`--sweep-interval-ms {st['sweep_interval_ms']}`, `--sweep-batch {st['sweep_batch']}`, `--wal-retain-s {st.get('wal_retain_s', 30)}`: the replication "
             "log is in data.mdb too and would otherwise keep a day of records) "
             f"and the same load: eg_loadgen `run churn` with {st['threads']} threads"
             + (f" at {st['rate']} sessions/s" if st['rate'] else " as fast as they go (closed loop)")
             + f"; each session is created, gets {st['messages']} messages of {st['bytes']} bytes in "
             f"calls of {st['per_call']}, and is left to expire. **keep**: "
             "`--expired-session-retention-s 0` (kept forever, nothing is ever due); **sweep**: "
             f"`--expired-session-retention-s {st['retention_s']}` (an expired session is deleted "
             f"{st['retention_s']} s after it expired). Samples every {st['sample_s']} s.\n")
    L.append("## Summary\n")
    L.append("| measure | keep (no due work) | sweep | goal |\n| --- | --- | --- | --- |")
    L.append(f"| sessions created and filled | {keep_lg['items'] // max(st['messages'], 1):,} "
             f"| {sweep_lg['items'] // max(st['messages'], 1):,} | |")
    L.append(f"| client writes/s, whole phase (eg_loadgen) | {keep_lg['qps']:,.0f} | {sweep_lg['qps']:,.0f} | |")
    L.append(f"| client writes/s, t = {first:.0f}..{end:.0f} s (sweeping) | {r_keep:,.0f} | {r_sweep:,.0f} "
             f"| sweep >= 90% of keep: **{ratio:.1%}** ({'met' if ratio >= 0.9 else 'NOT met'}) |")
    L.append(f"| write latency p50 / p99 (ms) | {keep_lg['p50_us'] / 1000:.2f} / {keep_lg['p99_us'] / 1000:.2f} "
             f"| {sweep_lg['p50_us'] / 1000:.2f} / {sweep_lg['p99_us'] / 1000:.2f} | |")
    L.append(f"| data.mdb at the end | {mib(keep_s[-1]['data_mdb_bytes']):.1f} MiB "
             f"| {mib(last['data_mdb_bytes']):.1f} MiB | |")
    L.append(f"| data.mdb growth, first half | {mib(k1):+.1f} MiB | {mib(s1):+.1f} MiB | |")
    L.append(f"| data.mdb growth, last half | {mib(k2):+.1f} MiB | {mib(s2):+.1f} MiB "
             f"| sweep: plateau (last half <= 5% of first): **{'yes' if res['plateau'] else 'NO'}** |")
    L.append(f"| sessions swept (engram_swept_total) | 0 | {last['swept_total']:,} ({', '.join(f'{k} {v:,}' for k, v in last['swept'].items() if v)}) | |")
    L.append(f"| sweep backlog at the end | | {last['sweep_backlog']} | small, not growing |")
    L.append("")
    L.append("The data file only grows (LMDB never shrinks it); with the sweeper, pages freed by "
             "deleted sessions go back to LMDB's free list and new sessions reuse them, so the "
             "file stops growing once the live set (sessions within their TTL plus retention plus "
             "the sweeper's lag) is reached. `pages in use` is LMDB's used pages minus its free "
             "pages (`mdb_stat -ef`).\n")
    L.append("## Series\n")
    L.append("| t (s) | keep: data.mdb MiB | keep: pages in use | keep: writes/s | sweep: data.mdb MiB "
             "| sweep: pages in use | sweep: writes/s | sweep: swept | sweep: backlog |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i in range(max(len(keep_s), len(sweep_s))):
        row = []
        for s in (keep_s, sweep_s):
            if i < len(s):
                x = s[i]
                rate = (x["writes_ok"] - s[i - 1]["writes_ok"]) / (x["t"] - s[i - 1]["t"]) if i else 0
                row.append((x, rate))
            else:
                row.append((None, 0))
        (k, kr), (w, wr) = row
        t = (k or w)["t"]
        cells = [f"{t:.0f}"]
        cells += [f"{mib(k['data_mdb_bytes']):.1f}", f"{k['pages_used'] - k['pages_free']:,}", f"{kr:,.0f}"] \
            if k else ["", "", ""]
        cells += [f"{mib(w['data_mdb_bytes']):.1f}", f"{w['pages_used'] - w['pages_free']:,}", f"{wr:,.0f}",
                  f"{w['swept_total']:,}", f"{w['sweep_backlog']}"] if w else ["", "", "", "", ""]
        L.append("| " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "churn.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"keep {r_keep:.0f} writes/s, sweep {r_sweep:.0f} writes/s, ratio {ratio:.3f}; "
          f"sweep data.mdb growth first half {mib(s1):+.1f} MiB, last half {mib(s2):+.1f} MiB; "
          f"keep {mib(k1):+.1f} / {mib(k2):+.1f} MiB")
    return 0 if res["throughput_goal_met"] and res["plateau"] else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sample")
    p.add_argument("data_dir")
    p.add_argument("url")
    p.add_argument("t0", type=float)
    sub.add_parser("meta")
    p = sub.add_parser("report")
    for a in ("--out", "--meta", "--date", "--settings", "--keep-samples", "--keep-loadgen",
              "--sweep-samples", "--sweep-loadgen"):
        p.add_argument(a, required=True)
    p.add_argument("--seconds", type=float, required=True)
    args = ap.parse_args()
    return {"sample": sample, "meta": meta, "report": report}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
