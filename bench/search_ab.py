"""A/B of two engramd builds: the server's CPU (utime + stime of its
process, every thread, from /proc) per SearchMemories and per
SearchMessages call, with no blind-index rotation running. Both servers
(the e2e harness's: fresh data dir, keyring, auth) get the same corpus
(2,000 memories of 10 words and 1,000 messages of 12 over a vocabulary of
300 words, one user) and the same 3-word queries; each round runs CALLS
calls of each kind on A and B in turn (AB, then BA). docs/performance.md,
"Search during a blind-index rotation".
usage: PYTHONPATH=tests/e2e ENGRAM_PY_GEN=build/py ENGRAM_CLI=build/engram \\
         python3 bench/search_ab.py A_ENGRAMD B_ENGRAMD [ROUNDS [CALLS]]"""
import os
import random
import sys

import harness
from harness import Server, pb
from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
USER = "bench-user"


def cpu_s(pid):
    """The process's user + system CPU seconds so far."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def corpus():
    rng = random.Random(7)
    vocab = ["w%03d" % i for i in range(300)]
    mems = [" ".join(rng.choice(vocab) for _ in range(10)) for _ in range(2000)]
    msgs = [" ".join(rng.choice(vocab) for _ in range(12)) for _ in range(1000)]
    queries = [" ".join(rng.choice(vocab) for _ in range(3)) for _ in range(200)]
    return mems, msgs, queries


def setup(binary, mems, msgs):
    harness.ENGRAMD = binary  # read by Server.argv at start
    srv = Server()
    srv.start()
    c = srv.client()
    m = mpg.MemoryServiceStub(c.channel)
    for i in range(0, len(mems), 100):
        m.BatchCreateMemories(mp.BatchCreateMemoriesRequest(requests=[
            mp.CreateMemoryRequest(memory=mp.Memory(user_id=USER, text=t,
                                                    type=mp.MEMORY_TYPE_FACT),
                                   dedup_policy=mp.DEDUP_POLICY_OFF)
            for t in mems[i:i + 100]]), timeout=60, metadata=c.md)
    for i in range(0, len(msgs), 50):
        c.append(c.create(USER).session_id, *msgs[i:i + 50])
    return srv, c, m


def run(node, kind, queries, calls):
    """Server CPU microseconds per call over `calls` searches of kind."""
    srv, c, m = node
    t0 = cpu_s(srv.pid)
    for i in range(calls):
        q = queries[i % len(queries)]
        if kind == "SearchMemories":
            m.SearchMemories(mp.SearchMemoriesRequest(user_id=USER, query=q, top_k=10),
                             timeout=10, metadata=c.md)
        else:
            c.call("SearchMessages", pb.SearchMessagesRequest(user_id=USER, query=q, top_k=10))
    return (cpu_s(srv.pid) - t0) / calls * 1e6


def main():
    a, b = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    mems, msgs, queries = corpus()
    nodes = {}
    try:
        nodes["A"] = setup(a, mems, msgs)
        nodes["B"] = setup(b, mems, msgs)
        res = {}
        for r in range(rounds):
            for kind in ("SearchMemories", "SearchMessages"):
                for n in ("AB" if r % 2 == 0 else "BA"):
                    res.setdefault((n, kind), []).append(run(nodes[n], kind, queries, calls))
        for kind in ("SearchMemories", "SearchMessages"):
            for n in "AB":
                v = res[(n, kind)]
                s = sorted(v)
                print("%s %s: server CPU us/call median %.0f, mean %.0f (rounds: %s)"
                      % (n, kind, s[len(s) // 2], sum(v) / len(v),
                         " ".join("%.0f" % x for x in v)))
    finally:
        for node in nodes.values():
            node[0].close()


if __name__ == "__main__":
    main()
