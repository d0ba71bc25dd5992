#!/usr/bin/python3
"""The backup benchmark's helpers and report (bench/backup.sh); standard library only.

  backup_report.py used-bytes DATA_DIR            bytes of LMDB pages in use (used - free)
  backup_report.py timed OUT CMD...               runs CMD (stdout to OUT, stderr to OUT.err);
                                                  one JSON line: wall and CPU seconds
  backup_report.py cpu PID                        CPU seconds (user + system) of process PID
  backup_report.py field FILE KEY                 KEY of the last JSON line of FILE
  backup_report.py round --round N --mode closed|paced --alone A.json --during D.json
                   --window W --loop L
  backup_report.py archive-round --round N --plain P.json --archive A.json --pitr R.json
                   --end-lsn N --base-run JSON --pitr-run JSON --archive-bytes N
  backup_report.py check-restore RESULTS.jsonl    the restored node is at the backup's LSN
  backup_report.py report --results RESULTS.jsonl --meta META.json --settings JSON --out DIR
                   --date D --elapsed S
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from churn_report import mdb_pages  # noqa: E402  (the churn benchmark's LMDB page count)

MB = 1e6
GOAL = 0.9  # writes during a backup / writes alone


def last_json(path):
    return json.loads(open(path).read().strip().splitlines()[-1])


def used_bytes(args):
    used, free, page = mdb_pages(args.data_dir)
    print((used - free) * page)


def timed(args):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(args.out, "w") as out, open(args.out + ".err", "w") as err:
        rc = subprocess.run(args.command, stdout=out, stderr=err).returncode
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": round(wall, 3), "cpu_user_s": round(after.ru_utime - before.ru_utime, 3),
                      "cpu_sys_s": round(after.ru_stime - before.ru_stime, 3)}))
    return rc


def cpu(args):
    fields = open(f"/proc/{args.pid}/stat").read().rsplit(")", 1)[1].split()
    print(round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2))


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
        "n": args.round, "mode": args.mode, "alone": alone, "during": during, "ratio": during["qps"] / alone["qps"],
        "backups": len(loop), "backup_seconds": [round(y - x, 3) for x, y in loop],
        "window_s": round(window[1] - window[0], 3),
        "covered_fraction": covered(window, loop) / (window[1] - window[0])}}))


def archive_round(args):
    plain, arch, pitr = last_json(args.plain), last_json(args.archive), json.load(open(args.pitr))
    base_run, pitr_run = json.loads(args.base_run), json.loads(args.pitr_run)
    records = int(pitr["replayed"]["records"])
    if int(pitr["replayed"]["lsn"]) != args.end_lsn:
        sys.exit(f"the restore replayed to lsn {pitr['replayed']['lsn']}, the node ended at {args.end_lsn}")
    replay_s = pitr_run["seconds"] - base_run["seconds"]
    print(json.dumps({"archive_round": {
        "n": args.round, "plain": plain, "archive": arch, "ratio": arch["qps"] / plain["qps"],
        "end_lsn": args.end_lsn, "records_replayed": records, "archive_bytes": args.archive_bytes,
        "base_run": base_run, "pitr_run": pitr_run, "replay_seconds": round(replay_s, 3), "pitr": pitr,
        "records_per_s": records / replay_s if replay_s > 0 else 0}}))


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
    want, got = int(r["create"]["result"]["lsn"]), r["restore"]["lsn"]
    if want != got:
        sys.exit(f"restored node at lsn {got}, the backup holds lsn {want}")


def rate(rounds, side):
    """Calls/s of side ("alone", "during", "plain", "archive") over all rounds."""
    return sum(x[side]["ok"] for x in rounds) / sum(x[side]["seconds"] for x in rounds)


def report(args):
    r = merged(args.results)
    m, st = json.load(open(args.meta)), json.loads(args.settings)
    fill, create, verify, restore = r["fill"], r["create"], r["verify"], r["restore"]
    arounds = r["archive_round"]
    file_mb = create["file_bytes"] / MB
    create_s = create["run"]["seconds"]
    cli_cpu = create["run"]["cpu_user_s"] + create["run"]["cpu_sys_s"]
    res = {"date": args.date, "elapsed_s": int(args.elapsed), "machine": m, "settings": st, **r,
           "backup_mb_per_s": file_mb / create_s,
           "cpu_s_per_gb": {"engramd": create["server_cpu_s"] * 1000 / file_mb, "cli": cli_cpu * 1000 / file_mb}}
    goals = []
    for mode in ("closed", "paced"):
        rounds = [x for x in r["round"] if x["mode"] == mode]
        alone, during = rate(rounds, "alone"), rate(rounds, "during")
        res[mode] = {"writes_per_s_alone": alone, "writes_per_s_during_backup": during,
                     "ratio": during / alone, "goal_met": during / alone >= GOAL}
        goals.append(res[mode]["goal_met"])
    if arounds:
        res["archive_ratio"] = rate(arounds, "archive") / rate(arounds, "plain")
        res["replay_records_per_s"] = sum(x["records_replayed"] for x in arounds) / \
            sum(x["replay_seconds"] for x in arounds)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "backup.json"), "w") as f:
        json.dump(res, f, indent=1)

    def ms(us):
        return f"{us / 1000:.1f}"

    L = ["# Backup benchmark: backup throughput, writes during a backup, restore\n"]
    L.append(f"Run {args.date} ({int(args.elapsed)} s in all). Machine: {m['nproc']} cores, "
             f"{m['cpu']}, Linux {m['kernel']}, disk {m['disk']}. Written by `make bench-backup` "
             f"(bench/backup.sh, `BACKUP_BENCH_MB={st['mb']}`); every figure below is from this one "
             "run. MB = 10^6 bytes.\n")
    L.append("engramd: Release, on 127.0.0.1, durable commits, field encryption and auth on, default "
             "settings otherwise, its data on the same disk as the repository. The CLI and the load "
             "generator run on the same 2 cores; the timed create below writes its file to that disk "
             "too.\n")
    L.append("## Summary\n")
    L.append("| measure | value | goal |\n| --- | --- | --- |")
    L.append(f"| store | {fill['sessions']:,} sessions, {fill['messages']:,} messages of "
             f"{fill['message_bytes']:,} bytes; LMDB pages in use {fill['used_bytes'] / MB:,.0f} MB "
             f"(data.mdb {fill['data_mdb_bytes'] / MB:,.0f} MB); filled in {fill['seconds']:.1f} s | |")
    L.append(f"| `engram backup create` (idle store) | {file_mb:,.0f} MB in {create_s:.2f} s = "
             f"**{res['backup_mb_per_s']:,.0f} MB/s** | |")
    L.append(f"| CPU of one backup, per GB | engramd {res['cpu_s_per_gb']['engramd']:.1f} s, "
             f"CLI {res['cpu_s_per_gb']['cli']:.1f} s | |")
    L.append(f"| `engram backup verify --keyring` | {verify['run']['seconds']:.2f} s "
             f"({file_mb / verify['run']['seconds']:,.0f} MB/s; every sealed field opened) | |")
    for mode, what in (("closed", "as fast as they go"), ("paced", f"offered {st['rate']:,}/s")):
        x = res[mode]
        L.append(f"| client writes/s, {what}: alone / during backups | {x['writes_per_s_alone']:,.0f} / "
                 f"{x['writes_per_s_during_backup']:,.0f} | >= 90%: **{x['ratio']:.1%}** "
                 f"({'met' if x['goal_met'] else 'NOT met'}) |")
    L.append(f"| `engram backup restore` (to a new dir) | **{restore['run']['seconds']:.2f} s** "
             f"({file_mb / restore['run']['seconds']:,.0f} MB/s) | |")
    L.append(f"| engramd on the restored dir: launch to first Health SERVING | "
             f"**{restore['serving_seconds']:.2f} s** (at lsn {restore['lsn']:,}, the backup's) | |")
    if arounds:
        L.append(f"| client writes/s with `--wal-archive-dir` / without | **{res['archive_ratio']:.1%}** | |")
        L.append(f"| point-in-time restore: archive replay | **{res['replay_records_per_s']:,.0f} records/s** | |")
    else:
        L.append("| WAL archive | not measured: this build's engramd has no `--wal-archive-dir` | |")
    L.append("")
    L.append("## Writes alone and during backups\n")
    L.append(f"eg_loadgen `run mixed --read-pct 0`: {st['threads']} threads on one libengram client, "
             f"each call an `AppendMessages` of one {st['load_bytes']}-byte message to one of 50 "
             f"sessions, {st['load_s']} s per measurement, **closed** (each thread calls again as soon "
             f"as it has its answer: the ceiling of the machine) and **paced** (`--rate {st['rate']}`: "
             "calls due at a steady rate over all threads); alone, then while `engram backup create` "
             "runs back to back (the loop starts 0.5 s before the load and its last backup ends after "
             f"it), {st['rounds']} rounds in turn. The backups' CLI runs under SCHED_IDLE (`chrt --idle 0`) "
             f"and writes to {'a tmpfs' if st['dest'] == 'tmpfs' else st['dest']}: in production the "
             "receiving end of a backup is another host or pod with its own disk, and these stand in "
             "for it (engramd runs a backup's own thread under SCHED_IDLE; gRPC's transport threads, "
             "which carry the stream, run at normal priority). Latencies in ms.\n")
    L.append("| round | load | alone: calls/s | p50 / p99 | during: calls/s | p50 / p99 | ratio "
             "| backups (s each) | window covered |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for x in r["round"]:
        a, d = x["alone"], x["during"]
        L.append(f"| {x['n']} | {x['mode']} | {a['qps']:,.0f} | {ms(a['p50_us'])} / {ms(a['p99_us'])} "
                 f"| {d['qps']:,.0f} | {ms(d['p50_us'])} / {ms(d['p99_us'])} | {x['ratio']:.1%} "
                 f"| {x['backups']} ({', '.join(f'{v:.1f}' for v in x['backup_seconds'])}) "
                 f"| {x['covered_fraction']:.1%} |")
    L.append("")
    if arounds:
        L.append("## WAL archive\n")
        L.append(f"Per round: a fresh engramd without and one with `--wal-archive-dir` (default segment "
                 f"settings; which goes first alternates), the closed-loop load ({st['threads']} threads, "
                 f"{st['load_s']} s) on 50 new sessions; on the archiving one a base backup is taken "
                 "before the load and the run waits for `archived_lsn` to reach the last LSN. Replay: "
                 "`engram backup restore BASE --data-dir DIR --wal-archive ARCH` (every archived record "
                 "after the base) minus the same restore without the archive; records/s = records "
                 "replayed / that difference. A record is one group commit (several appends).\n")
        L.append("| round | without: calls/s | with archive: calls/s | ratio | records replayed "
                 "| archive MB | restore: base / base + archive s | replay records/s |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for x in arounds:
            L.append(f"| {x['n']} | {x['plain']['qps']:,.0f} | {x['archive']['qps']:,.0f} | {x['ratio']:.1%} "
                     f"| {x['records_replayed']:,} | {x['archive_bytes'] / MB:.1f} "
                     f"| {x['base_run']['seconds']:.2f} / {x['pitr_run']['seconds']:.2f} "
                     f"| {x['records_per_s']:,.0f} |")
        L.append("")
    L.append("## How\n")
    L.append("```sh\nmake bench-backup                                   # or: bench/backup.sh build-release\n"
             "BACKUP_BENCH_MB=50 bench/backup.sh build-release   # the short variant\n```\n")
    L.append("- fill: `eg_loadgen fill` (8 threads, `--messages 100 --per-call 100 --bytes "
             f"{st['fill_bytes']}`) in batches until LMDB's pages in use (`mdb_stat -ef`: used - free) "
             "reach the size asked for; the first batch of 50 sessions measures the bytes a session takes.")
    L.append("- create: `engram --json backup create --out FILE`, wall time of the command (connect, "
             "the server's compacted copy, the stream, the CLI's SHA-256, write and fsync, rename); "
             "CPU: engramd's from /proc/PID/stat before and after, the CLI's from its rusage.")
    L.append("- restore: `engram backup restore FILE --data-dir NEW` with the source stopped; then "
             "`engramd --data-dir NEW`, timed from its launch until `engram health` (polled every "
             "20 ms) exits 0; its `admin status` LSN must equal the backup's.")
    with open(os.path.join(args.out, "backup.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"backup {res['backup_mb_per_s']:.0f} MB/s; writes during backups: closed {res['closed']['ratio']:.1%}, "
          f"paced {res['paced']['ratio']:.1%}; restore {restore['run']['seconds']:.2f} s, "
          f"SERVING after {restore['serving_seconds']:.2f} s")
    return 0 if all(goals) else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("used-bytes")
    p.add_argument("data_dir")
    p = sub.add_parser("timed")
    p.add_argument("out")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("cpu")
    p.add_argument("pid")
    p = sub.add_parser("field")
    p.add_argument("file")
    p.add_argument("key")
    p = sub.add_parser("round")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--mode", choices=("closed", "paced"), required=True)
    for a in ("--alone", "--during", "--window", "--loop"):
        p.add_argument(a, required=True)
    p = sub.add_parser("archive-round")
    p.add_argument("--round", type=int, required=True)
    for a in ("--plain", "--archive", "--pitr", "--base-run", "--pitr-run"):
        p.add_argument(a, required=True)
    p.add_argument("--end-lsn", type=int, required=True)
    p.add_argument("--archive-bytes", type=int, required=True)
    p = sub.add_parser("check-restore")
    p.add_argument("results")
    p = sub.add_parser("report")
    for a in ("--results", "--meta", "--settings", "--out", "--date", "--elapsed"):
        p.add_argument(a, required=True)
    args = ap.parse_args()
    fn = {"used-bytes": used_bytes, "timed": timed, "cpu": cpu, "field": field, "round": round_, "archive-round": archive_round,
          "check-restore": check_restore, "report": report}[args.cmd]
    return fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
