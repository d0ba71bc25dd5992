#!/usr/bin/python3
"""The backup benchmark's helpers and report (bench/backup.sh); standard library only.

  backup_report.py used-bytes DATA_DIR            bytes of LMDB pages in use (used - free)
  backup_report.py field FILE KEY                 KEY of the last JSON line of FILE
  backup_report.py round --round N --alone A.json --during D.json --window W --loop L
  backup_report.py archive-round --round N --plain P.json --archive A.json --base B.json
                   --pitr R.json --end-lsn N --pitr-seconds S
  backup_report.py check-restore RESULTS.jsonl    the restored node is at the backup's LSN
  backup_report.py report --results RESULTS.jsonl --meta META.json --settings JSON --out DIR
                   --date D --elapsed S
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from churn_report import mdb_pages  # noqa: E402  (the churn benchmark's LMDB page count)

MB = 1e6
GOAL = 0.9  # writes during a backup / writes alone


def last_json(path):
    return json.loads(open(path).read().strip().splitlines()[-1])


def num(obj, *keys):
    """The first of keys present in obj, as a number (proto3 JSON prints 64-bit ints as strings)."""
    for k in keys:
        if k in obj:
            return float(obj[k])
    raise KeyError(f"none of {keys} in {sorted(obj)}")


def used_bytes(args):
    used, free, page = mdb_pages(args.data_dir)
    print((used - free) * page)


def field(args):
    print(last_json(args.file)[args.key])


def covered(window, intervals):
    """Seconds of window [a, b] covered by the union of intervals."""
    a, b = window
    spans = sorted((max(a, x), min(b, y)) for x, y in intervals if y > a and x < b)
    total, end = 0.0, a
    for x, y in spans:
        x = max(x, end)
        if y > x:
            total += y - x
            end = y
    return total


def round_(args):
    alone, during = last_json(args.alone), last_json(args.during)
    window = [float(x) for x in open(args.window).read().split()]
    loop = [tuple(map(float, line.split())) for line in open(args.loop) if line.strip()]
    print(json.dumps({"round": {
        "n": args.round, "alone": alone, "during": during, "ratio": during["qps"] / alone["qps"],
        "backups": len(loop), "backup_seconds": [round(y - x, 3) for x, y in loop],
        "window_s": round(window[1] - window[0], 3),
        "covered_fraction": covered(window, loop) / (window[1] - window[0])}}))


def archive_round(args):
    plain, arch = last_json(args.plain), last_json(args.archive)
    base, pitr = json.load(open(args.base)), json.load(open(args.pitr))
    base_lsn = int(num(base, "lsn"))
    replayed = args.end_lsn - base_lsn
    print(json.dumps({"archive_round": {
        "n": args.round, "plain": plain, "archive": arch, "ratio": arch["qps"] / plain["qps"],
        "base_lsn": base_lsn, "end_lsn": args.end_lsn, "records_replayed": replayed,
        "pitr_seconds": args.pitr_seconds, "pitr": pitr,
        "records_per_s": replayed / args.pitr_seconds if args.pitr_seconds > 0 else 0}}))


def merged(path):
    out = {"round": [], "archive_round": []}
    for line in open(path):
        if line.strip():
            for k, v in json.loads(line).items():
                if k in ("round", "archive_round"):
                    out[k].append(v)
                else:
                    out[k] = v
    return out


def check_restore(args):
    r = merged(args.results)
    want, got = int(num(r["create"]["result"], "lsn")), r["restore"]["lsn"]
    if want != got:
        sys.exit(f"restored node at lsn {got}, the backup holds lsn {want}")


def report(args):
    r = merged(args.results)
    m, st = json.load(open(args.meta)), json.loads(args.settings)
    fill, create, verify, restore = r["fill"], r["create"], r["verify"], r["restore"]
    rounds, arounds = r["round"], r["archive_round"]
    file_mb = create["file_bytes"] / MB
    create_rate = file_mb / create["seconds"]
    alone = sum(x["alone"]["ok"] for x in rounds) / sum(x["alone"]["seconds"] for x in rounds)
    during = sum(x["during"]["ok"] for x in rounds) / sum(x["during"]["seconds"] for x in rounds)
    ratio = during / alone
    res = {"date": args.date, "elapsed_s": int(args.elapsed), "machine": m, "settings": st,
           **r, "backup_mb_per_s": create_rate, "writes_per_s_alone": alone,
           "writes_per_s_during_backup": during, "ratio": ratio, "goal_met": ratio >= GOAL}
    if arounds:
        res["archive_ratio"] = sum(x["archive"]["ok"] for x in arounds) / sum(x["archive"]["seconds"] for x in arounds) \
            / (sum(x["plain"]["ok"] for x in arounds) / sum(x["plain"]["seconds"] for x in arounds))
        res["replay_records_per_s"] = sum(x["records_replayed"] for x in arounds) / \
            sum(x["pitr_seconds"] for x in arounds)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "backup.json"), "w") as f:
        json.dump(res, f, indent=1)

    L = ["# Backup benchmark: backup throughput, writes during a backup, restore\n"]
    L.append(f"Run {args.date} ({int(args.elapsed)} s with the build). Machine: {m['nproc']} cores, "
             f"{m['cpu']}, Linux {m['kernel']}, disk {m['disk']}. Written by `make bench-backup` "
             f"(bench/backup.sh; `BACKUP_BENCH_MB={st['mb']}`); every figure below is from this one "
             "run. MB = 10^6 bytes.\n")
    L.append("engramd: Release, on 127.0.0.1, durable commits, field encryption and auth on, default "
             "settings otherwise; the data directory on the same disk as the repository. The CLI "
             "runs on the same 2 cores (it receives the stream, hashes it and writes the file).\n")
    L.append("## Summary\n")
    L.append("| measure | value | goal |\n| --- | --- | --- |")
    L.append(f"| store | {fill['sessions']:,} sessions, {fill['messages']:,} messages of "
             f"{fill['message_bytes']:,} bytes; LMDB pages in use {fill['used_bytes'] / MB:,.0f} MB "
             f"(data.mdb {fill['data_mdb_bytes'] / MB:,.0f} MB); filled in {fill['seconds']:.1f} s | |")
    L.append(f"| `engram backup create` (idle store) | {file_mb:,.0f} MB in {create['seconds']:.2f} s = "
             f"**{create_rate:,.0f} MB/s** | |")
    L.append(f"| `engram backup verify --keyring` | {verify['seconds']:.2f} s "
             f"({file_mb / verify['seconds']:,.0f} MB/s) | |")
    L.append(f"| client writes/s alone | {alone:,.0f} | |")
    L.append(f"| client writes/s during backups | {during:,.0f} | >= 90% of alone: **{ratio:.1%}** "
             f"({'met' if ratio >= GOAL else 'NOT met'}) |")
    L.append(f"| `engram backup restore` (to a new dir) | **{restore['seconds']:.2f} s** "
             f"({file_mb / restore['seconds']:,.0f} MB/s) | |")
    L.append(f"| engramd on the restored dir: launch to first Health SERVING | "
             f"**{restore['serving_seconds']:.2f} s** (at lsn {restore['lsn']:,}, the backup's) | |")
    if arounds:
        L.append(f"| client writes/s with `--wal-archive-dir` vs without | **{res['archive_ratio']:.1%}** | |")
        L.append(f"| point-in-time restore: archive replay | **{res['replay_records_per_s']:,.0f} records/s** | |")
    else:
        L.append("| WAL archive | not measured: this build's engramd has no `--wal-archive-dir` | |")
    L.append("")
    L.append("## Writes alone and during backups\n")
    L.append(f"eg_loadgen `run mixed --read-pct 0`: {st['threads']} threads on one libengram client, "
             f"each call an `AppendMessages` of one {st['load_bytes']}-byte message to one of 50 "
             f"sessions, {st['load_s']} s per measurement; alone, then while `engram backup create` runs "
             f"back to back (the loop starts 0.5 s before the load and the last backup ends after it), "
             f"{st['rounds']} rounds in turn.\n")
    L.append("| round | alone: calls/s | p50 / p99 ms | during: calls/s | p50 / p99 ms | ratio "
             "| backups in the window | window covered |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for x in rounds:
        a, d = x["alone"], x["during"]
        L.append(f"| {x['n']} | {a['qps']:,.0f} | {a['p50_us'] / 1000:.2f} / {a['p99_us'] / 1000:.2f} "
                 f"| {d['qps']:,.0f} | {d['p50_us'] / 1000:.2f} / {d['p99_us'] / 1000:.2f} "
                 f"| {x['ratio']:.1%} | {x['backups']} ({', '.join(f'{s:.1f}' for s in x['backup_seconds'])} s) "
                 f"| {x['covered_fraction']:.1%} |")
    L.append("")
    if arounds:
        L.append("## WAL archive\n")
        L.append(f"Per round: a fresh engramd without, then one with `--wal-archive-dir` (default segment "
                 f"settings), the same load ({st['threads']} threads, {st['load_s']} s) on 50 new sessions; "
                 "on the archiving one a base backup is taken before the load. Then `engram backup restore "
                 "BASE --data-dir DIR --wal-archive ARCH` replays every archived record after the base's "
                 "LSN; records/s = records replayed / the restore's wall time (extraction of the small "
                 "base included).\n")
        L.append("| round | without: calls/s | with archive: calls/s | ratio | records replayed | restore s "
                 "| records/s |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        for x in arounds:
            L.append(f"| {x['n']} | {x['plain']['qps']:,.0f} | {x['archive']['qps']:,.0f} | {x['ratio']:.1%} "
                     f"| {x['records_replayed']:,} | {x['pitr_seconds']:.2f} | {x['records_per_s']:,.0f} |")
        L.append("")
    L.append("## How\n")
    L.append("```sh\nmake bench-backup                        # or: bench/backup.sh build-release\n"
             "BACKUP_BENCH_MB=50 bench/backup.sh build-release   # the short variant\n```\n")
    L.append("- fill: `eg_loadgen fill` (8 threads, `--messages 100 --per-call 100 --bytes "
             f"{st['fill_bytes']}`) in batches until LMDB's pages in use (`mdb_stat -ef`: used - free) reach "
             "the size asked for; the first batch of 50 sessions measures the bytes a session takes.")
    L.append("- create: `engram --json backup create --out FILE`, wall time of the command (connect, "
             "the server's compacted copy, the stream, the CLI's SHA-256 and fsync, rename).")
    L.append("- restore: `engram backup restore FILE --data-dir NEW` with the source stopped; then "
             "`engramd --data-dir NEW`, timed from its launch until `engram health` (polled every "
             "20 ms) exits 0; its `admin status` LSN must equal the backup's.")
    with open(os.path.join(args.out, "backup.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"backup {create_rate:.0f} MB/s; writes alone {alone:.0f}/s, during backups {during:.0f}/s "
          f"({ratio:.1%}); restore {restore['seconds']:.2f} s, SERVING after {restore['serving_seconds']:.2f} s")
    return 0 if res["goal_met"] else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("used-bytes")
    p.add_argument("data_dir")
    p = sub.add_parser("field")
    p.add_argument("file")
    p.add_argument("key")
    p = sub.add_parser("round")
    p.add_argument("--round", type=int, required=True)
    for a in ("--alone", "--during", "--window", "--loop"):
        p.add_argument(a, required=True)
    p = sub.add_parser("archive-round")
    p.add_argument("--round", type=int, required=True)
    for a in ("--plain", "--archive", "--base", "--pitr"):
        p.add_argument(a, required=True)
    p.add_argument("--end-lsn", type=int, required=True)
    p.add_argument("--pitr-seconds", type=float, required=True)
    p = sub.add_parser("check-restore")
    p.add_argument("results")
    p = sub.add_parser("report")
    for a in ("--results", "--meta", "--settings", "--out", "--date", "--elapsed"):
        p.add_argument(a, required=True)
    args = ap.parse_args()
    fn = {"used-bytes": used_bytes, "field": field, "round": round_, "archive-round": archive_round,
          "check-restore": check_restore, "report": report}[args.cmd]
    return fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
