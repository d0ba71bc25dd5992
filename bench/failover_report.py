#!/usr/bin/python3
"""The failover benchmark's report (bench/failover.sh); standard library only.

  failover_report.py --rounds ROUNDS.jsonl --meta META.json --out DIR --date D --elapsed S

ROUNDS.jsonl: one line a round from tests/e2e/test_failover.py's ChaosTest
(ENGRAM_CHAOS_OUT) and its summary line, written only once every
acknowledged write was read back and the checksums matched.
"""
import argparse
import json
import math
import os

GOAL_P50_S = 5.0
GOAL_MAX_S = 10.0


def pct(xs, p):
    """The nearest-rank p-th percentile of xs."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--elapsed", type=float, required=True)
    args = ap.parse_args()
    lines = [json.loads(l) for l in open(args.rounds) if l.strip()]
    rounds = [x for x in lines if "round" in x]
    summary = next((x for x in lines if x.get("summary")), None)
    if summary is None or len(rounds) != summary["rounds"]:
        raise SystemExit("failover_report: no summary line, or rounds missing: the run failed")
    m = json.load(open(args.meta))
    rto = [x["rto_s"] for x in rounds]
    res = {"rounds": len(rounds), "rto_p50_s": pct(rto, 50), "rto_p90_s": pct(rto, 90),
           "rto_max_s": max(rto), "rto_min_s": min(rto), "acked_writes": summary["acked"],
           "lost_writes": summary["lost"], "resyncs": summary["resyncs"],
           "epochs": summary["epochs"], "final_lsn": summary["lsn"],
           "write_failures": summary["failures"], "seconds": summary["seconds"],
           "goal_met": pct(rto, 50) <= GOAL_P50_S and max(rto) <= GOAL_MAX_S
           and summary["lost"] == 0, "per_round": rounds, "machine": m}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "failover.json"), "w") as f:
        json.dump(res, f, indent=1)

    L = ["# Failover benchmark: kill -9 of the primary, 3 etcd + 3 engramd\n"]
    L.append(f"Run {args.date} ({int(args.elapsed)} s in all). Machine: {m['nproc']} cores, "
             f"{m['cpu']}, Linux {m['kernel']}, disk {m['disk']}. Written by "
             f"`make bench-failover` (bench/failover.sh: tests/e2e/test_failover.py's ChaosTest, "
             f"{len(rounds)} rounds in one run); every figure below is from this one run.\n")
    L.append("Topology (deploy/local, as deploy/k8s/overlays/ha): 3 etcd members and 3 engramd "
             "(Release) on 127.0.0.1, `--coordinator etcd://E1,E2,E3/engram --sync-replicas 1 "
             "--lease-ttl-s 3`, durable commits, encryption and auth on. Load: 3 client threads, "
             "each appending one message per call to its own session, 20 ms between calls, "
             "through every node in turn (a replica forwards to the primary), with "
             "client_message_id; a failed call is retried on the next node. Each round kills the "
             "primary with SIGKILL (no lease revoke: etcd expires the lease after its TTL), waits "
             "for the first acknowledged write, writes on, restarts the killed node on its data "
             "dir and waits until it streams from the new primary.\n")
    L.append("RTO: from just before the kill to the first acknowledged write of a call sent after "
             "it, through any node. Most of it is the lease: after a SIGKILL the leader key lives "
             "until etcd expires the dead node's lease, 2 to 3 s after its last refresh (TTL 3 s, "
             "refreshed every second); then a replica stands within a coordinator tick (200 ms) "
             "and the other re-points to it (a write waits for one replica's ack).\n")
    L.append("| measure | value | goal |\n| --- | --- | --- |")
    L.append(f"| RTO p50 | **{res['rto_p50_s']:.2f} s** | <= {GOAL_P50_S:.0f} s |")
    L.append(f"| RTO p90 | {res['rto_p90_s']:.2f} s | |")
    L.append(f"| RTO max | **{res['rto_max_s']:.2f} s** | <= {GOAL_MAX_S:.0f} s |")
    L.append(f"| RTO min | {res['rto_min_s']:.2f} s | |")
    L.append(f"| rounds, each with a new primary at a new epoch | {len(rounds)} "
             f"(epochs {res['epochs'][0]} to {res['epochs'][-1]}, all distinct, increasing) | |")
    L.append(f"| acknowledged writes | {res['acked_writes']:,} | |")
    L.append(f"| acknowledged writes lost | **{res['lost_writes']}** (every one read back on the "
             f"final primary, in order, once) | 0 |")
    L.append(f"| nodes' Checksum at the end | equal on all 3 at LSN {res['final_lsn']:,} | equal |")
    L.append(f"| killed primaries that resynced from a snapshot on return (log diverged) | "
             f"{res['resyncs']} of {len(rounds)} | |")
    fails = {}
    for f in res["write_failures"]:
        for k, v in f.items():
            fails[k] = fails.get(k, 0) + v
    L.append(f"| failed write calls (retried) | "
             f"{', '.join(f'{k} {v:,}' for k, v in sorted(fails.items())) or 'none'} | |")
    L.append(f"\nGoal met: **{'yes' if res['goal_met'] else 'NO'}**.\n")
    L.append("RTO of each round, seconds: " + ", ".join(f"{x:.2f}" for x in rto) + ".")
    with open(os.path.join(args.out, "failover.md"), "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
