#!/usr/bin/env python3
"""What message indexing costs an append, thread by thread and page by page.

    bench/index_cost.py BUILD_DIR [--fill MESSAGES] [--rounds N] [--seconds S] [--threads C]
                        [--work DIR]

Starts two engramd of BUILD_DIR side by side, one with --index-messages=false,
seeds both as bench/run.sh does (1,000 sessions of 100 users), optionally fills
both with MESSAGES more (sessions of 100 messages, 1,000 users), then runs
rounds of AppendMessages (one 256 B message per call, 64 threads unless
--threads, eg_loadgen's Zipf text) on each in turn. With --work the stores
stay in DIR, and a later run with the same --work reuses them as they are.

Per round and server: calls/s and, per call, the writer thread's CPU, every
other thread's CPU (the workers: gRPC, decode, tokenizing) and the bytes the
writer writes (its wchar: LMDB's pwrite of each dirty page and the meta page);
per writer commit (engram_writer_batches_total), the calls and the 4 KiB pages
written. The writer thread is found once by its stack (gdb). CPU figures come
from /proc/PID/task/*/stat, so they hold on a shared machine where wall-clock
rates do not.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, build, work, name, flags):
        self.dir = os.path.join(work, name)
        self.metrics_port = free_port()
        self.log = open(os.path.join(work, name + ".log"), "w+")
        self.proc = subprocess.Popen(
            [os.path.join(build, "engramd"), "--listen", "127.0.0.1:0", "--data-dir", self.dir,
             "--tokens", os.path.join(work, "tokens"), "--metrics-listen",
             "127.0.0.1:%d" % self.metrics_port] + flags,
            stdout=self.log, stderr=subprocess.STDOUT)
        self.name = name
        deadline = time.time() + 20
        while True:
            self.log.seek(0)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log.read())
            if m:
                self.target = "127.0.0.1:" + m.group(1)
                break
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                sys.exit("%s did not start" % name)
            time.sleep(0.1)
        while True:
            try:
                self.metrics()
                break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    sys.exit("%s metrics did not start" % name)
                time.sleep(0.1)
        self.writer_tid = self.find_writer()

    def find_writer(self):
        out = subprocess.run(["gdb", "-batch", "-p", str(self.proc.pid), "-ex", "thread apply all bt"],
                             capture_output=True, text=True).stdout
        tid = None
        for line in out.splitlines():
            m = re.match(r"Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\)", line)
            if m:
                tid = int(m.group(1))
            elif "eg_writer_main" in line and tid:
                return tid
        self.stop()
        sys.exit("%s: no writer thread found" % self.name)

    def metrics(self):
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            m = re.match(r"(engram_writer_(batches|items)_total)(\{[^}]*\})? (\S+)", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(4))
        return out

    def sample(self):
        writer = other = 0
        for tid in os.listdir("/proc/%d/task" % self.proc.pid):
            try:
                with open("/proc/%d/task/%s/stat" % (self.proc.pid, tid)) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
            if int(tid) == self.writer_tid:
                writer += ticks
            else:
                other += ticks
        # The writer's write(2) bytes (wchar): LMDB's pwrite of every dirty
        # page and the meta page. Not write_bytes, which counts whole page
        # cache folios (up to 2 MiB on ext4) however little of one is written.
        with open("/proc/%d/task/%d/io" % (self.proc.pid, self.writer_tid)) as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
        m = self.metrics()
        return {"writer_s": writer / TICK, "other_s": other / TICK,
                "written": int(io["wchar"]), "batches": m["engram_writer_batches_total"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def loadgen(build, server, *args):
    out = subprocess.run([os.path.join(build, "eg_loadgen"), "--target", server.target, "--token", TOKEN]
                         + list(args), capture_output=True, text=True, timeout=3600)
    if out.returncode:
        sys.exit("eg_loadgen %s: %s" % (" ".join(args), out.stderr))
    return json.loads(out.stdout.strip().splitlines()[-1])


def round_on(build, server, seconds, threads):
    before = server.sample()
    r = loadgen(build, server, "run", "mixed", "--prefix", "ix-", "--sessions", "1000", "--read-pct", "0",
                "--bytes", "256", "--threads", str(threads), "--seconds", str(seconds))
    after = server.sample()
    calls = r["ok"]
    commits = after["batches"] - before["batches"]
    wb = after["written"] - before["written"]
    return {"server": server.name, "calls": calls, "qps": r["qps"], "p50_us": r["p50_us"],
            "writer_us_per_call": 1e6 * (after["writer_s"] - before["writer_s"]) / calls,
            "other_us_per_call": 1e6 * (after["other_s"] - before["other_s"]) / calls,
            "bytes_per_call": wb / calls, "calls_per_commit": calls / commits,
            "pages_per_commit": wb / 4096 / commits}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--fill", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--work")
    o = ap.parse_args()
    work = o.work or tempfile.mkdtemp(prefix="eg-index-cost-")
    os.makedirs(work, exist_ok=True)
    h = subprocess.run([os.path.join(o.build, "engram"), "token", "hash", TOKEN], capture_output=True,
                       text=True, check=True).stdout.strip()
    with open(os.path.join(work, "tokens"), "w") as f:
        f.write("bench agent %s\n" % h)
    # A --work of an earlier run keeps its stores: no seeding nor fill again.
    filled = os.path.isdir(os.path.join(work, "on"))
    servers = []
    try:
        servers.append(Server(o.build, work, "on", []))
        servers.append(Server(o.build, work, "off", ["--index-messages=false"]))
        for s in servers if not filled else []:
            loadgen(o.build, s, "fill", "--prefix", "ix-", "--sessions", "1000", "--users", "100",
                    "--threads", "16", "--seconds", "120")
            if o.fill:
                loadgen(o.build, s, "fill", "--prefix", "m-", "--sessions", str(o.fill // 100), "--users",
                        "1000", "--messages", "100", "--per-call", "100", "--threads", "16",
                        "--seconds", "3000")
        for n in range(o.rounds):
            for s in servers:
                r = round_on(o.build, s, o.seconds, o.threads)
                r["round"] = n + 1
                r["fill"] = o.fill
                r["reused"] = filled
                r["threads"] = o.threads
                print(json.dumps(r), flush=True)
        for s in servers:
            st = subprocess.run(["mdb_stat", "-s", "message_terms", s.dir], capture_output=True,
                                text=True).stdout
            print(json.dumps({"server": s.name, "data_mdb": os.path.getsize(os.path.join(s.dir, "data.mdb")),
                              "message_terms": " ".join(st.split())}), flush=True)
    finally:
        for s in servers:
            s.stop()
        if not o.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
