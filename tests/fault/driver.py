"""
Fault-injection loop over engramd-fault (tests/fault/shim.c), in the manner
of SQLite's I/O-fault tests.

For each (point, error) of EXPECTED, one server runs the workload again and
again on fresh ids, failing the Nth call at that point in turn (N = 1, 2, ...
until a run completes with no fault hit; the short mode samples N). After a
call that hit the fault it checks:
  - the call got a status from EXPECTED (never UNKNOWN, never a crash, never
    a hang), with details that say what failed;
  - nothing of the call is visible (a failed append left no message and did
    not advance the seq, a failed create left no session or memory, a failed
    DeleteUser left each record whole or gone);
  - the server still answers Health SERVING;
  - the same call, retried, succeeds;
and, at the end of every run, that the state is exactly the workload's.
Under ASan the harness fails on a sanitizer report in the log.

Run: ENGRAMD_FAULT=build/engramd-fault ENGRAM_PY_GEN=build/py \
       /usr/bin/python3 tests/fault/driver.py [--full] [--point P] [--err E]
"""
import argparse
import os
import re
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

import grpc  # noqa: E402

from harness import REPO, M, Server, uid  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402
from google.protobuf import field_mask_pb2  # noqa: E402

ENGRAMD_FAULT = os.environ.get("ENGRAMD_FAULT") or os.path.join(REPO, "build", "engramd-fault")
RPC_TIMEOUT = 8.0       # a call that hangs this long is a finding
ARM_TIMEOUT = 5.0       # bound on SIGUSR1 -> "armed" acknowledgement
SHORT_SAMPLES = 10      # N values per (point, error) in the short mode
MAP_FULL_RESTART = 8    # fresh data dir after this many map growths

C = grpc.StatusCode

# ---- the one table of expected answers --------------------------------------
#
# (point, error) -> (gRPC codes a call that hit the fault may answer, words
# one of which its details must contain). OK means the server absorbs the
# fault: the writer grows the map and runs the batch again, or a read or an
# allocation had a fallback; the run's final check proves nothing was lost.
# Rows marked INTERNAL_FOR_NOW accept INTERNAL only until the storage errors
# get codes of their own (issue 8 items 1, 11, 17): then drop INTERNAL and
# "storage error" from them. The report lists every row that answered
# INTERNAL.
STORAGE = ("storage", "I/O", "disk")
INTERNAL_FOR_NOW = {("commit", "EIO"), ("commit", "ENOSPC"), ("put", "TXN_FULL"),
                    ("del", "TXN_FULL"), ("sync", "EIO"), ("sync", "ENOSPC"),
                    ("write", "EIO"), ("write", "ENOSPC"), ("reader", "READERS_FULL")}
EXPECTED = {
    ("malloc", "ENOMEM"): ({C.OK, C.RESOURCE_EXHAUSTED}, ("out of memory",)),
    ("commit", "MAP_FULL"): ({C.OK}, ()),
    ("commit", "EIO"): ({C.INTERNAL, C.UNAVAILABLE}, STORAGE),
    ("commit", "ENOSPC"): ({C.RESOURCE_EXHAUSTED, C.UNAVAILABLE, C.INTERNAL},
                           ("disk full", "no space") + STORAGE),
    ("put", "MAP_FULL"): ({C.OK}, ()),
    ("put", "TXN_FULL"): ({C.RESOURCE_EXHAUSTED, C.INTERNAL}, ("transaction",) + STORAGE),
    ("put", "ENOMEM"): ({C.RESOURCE_EXHAUSTED}, ("out of memory",)),
    ("del", "MAP_FULL"): ({C.OK}, ()),
    ("del", "TXN_FULL"): ({C.RESOURCE_EXHAUSTED, C.INTERNAL}, ("transaction",) + STORAGE),
    ("sync", "EIO"): ({C.INTERNAL, C.UNAVAILABLE}, STORAGE),
    ("sync", "ENOSPC"): ({C.RESOURCE_EXHAUSTED, C.UNAVAILABLE, C.INTERNAL},
                         ("disk full", "no space") + STORAGE),
    ("write", "EIO"): ({C.INTERNAL, C.UNAVAILABLE}, STORAGE),
    ("write", "ENOSPC"): ({C.RESOURCE_EXHAUSTED, C.UNAVAILABLE, C.INTERNAL},
                          ("disk full", "no space") + STORAGE),
    ("reader", "READERS_FULL"): ({C.OK, C.UNAVAILABLE, C.RESOURCE_EXHAUSTED, C.INTERNAL},
                                ("reader",) + STORAGE),
}
# The short mode (ctest): every row but the "write" ones. A failed write of
# LMDB's meta page marks the env fatally broken (MDB_PANIC): every later
# read and write of the process fails INTERNAL while Health says SERVING,
# until a restart (which finds the data consistent). engramd does not yet
# notice; once it does, add the write rows here.
SHORT = sorted(k for k in EXPECTED if k[0] != "write")

ARMED_RE = re.compile(r"engram-fault: armed gen=(\d+) seen=(\d+)")
HIT = "engram-fault: hit "


class Finding(Exception):
    """A check that failed: a bug (or a gap) to report."""


# ---- the server under faults ---------------------------------------------------

class FaultServer(Server):
    """engramd-fault on a temp dir, armed through a control file + SIGUSR1."""

    def __init__(self):
        super().__init__()
        self.ctl = os.path.join(self.tmp, "fault.ctl")
        self.env["ENGRAM_FAULT_CTL"] = self.ctl
        self.gen = 0

    def argv(self):
        a = super().argv()
        a[0] = ENGRAMD_FAULT
        return a

    def hits(self):
        return self.log_text().count(HIT)

    def arm(self, spec=""):
        """Arms spec ("" disarms); returns how many calls the previous spec's
        point saw. Waits for the shim's acknowledgement."""
        self.gen += 1
        with open(self.ctl, "w") as f:
            f.write("%s%sgen=%d\n" % (spec, "," if spec else "", self.gen))
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + ARM_TIMEOUT
        while time.monotonic() < deadline:
            for g, seen in ARMED_RE.findall(self.log_text()):
                if int(g) == self.gen:
                    return int(seen)
            if self.proc.poll() is not None:
                self._fail("engramd-fault exited while arming %r" % spec)
            time.sleep(0.005)
        self._fail("no acknowledgement of %r within %ss" % (spec, ARM_TIMEOUT))


class Api:
    """The RPCs of the workload, with a deadline each."""

    def __init__(self, client):
        self.c = client
        self.m = mpg.MemoryServiceStub(client.channel)
        self.u = upg.UserServiceStub(client.channel)

    def session(self, method, req):
        return self.c.call(method, req, timeout=RPC_TIMEOUT)

    def memory(self, method, req):
        return getattr(self.m, method)(req, timeout=RPC_TIMEOUT)

    def user(self, method, req):
        return getattr(self.u, method)(req, timeout=RPC_TIMEOUT)


def code_of(fn):
    """Runs fn; returns (status code, details, result)."""
    try:
        return C.OK, "", fn()
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def expect_code(fn, code, what):
    got, details, res = code_of(fn)
    if got != code:
        raise Finding("%s: want %s, got %s %r" % (what, code.name, got.name, details))
    return res


# ---- the workload ----------------------------------------------------------------

class Run:
    """One pass of the workload on fresh ids. Each step is (name, call, none,
    done): call makes the RPC; none asserts the state the step found (as if
    it never ran); done asserts its effect after success."""

    T1 = "prefers green tea in the morning"
    T2 = "prefers black coffee after lunch"

    def __init__(self, api):
        from harness import pb
        self.pb = pb
        self.a = api
        self.user, self.sid, self.mid = uid("u"), uid("s"), uid("m")
        self.version = 0

    # helpers
    def get_session(self):
        return self.a.session("GetSession", self.pb.GetSessionRequest(session_id=self.sid))

    def messages(self):
        r = self.a.session("ListMessages", self.pb.ListMessagesRequest(session_id=self.sid,
                                                                       page_size=100))
        return [(m.seq, m.content) for m in r.messages]

    def get_memory(self):
        return self.a.memory("GetMemory", mp.GetMemoryRequest(memory_id=self.mid))

    def memories(self):
        r = self.a.memory("ListMemories", mp.ListMemoriesRequest(user_id=self.user, page_size=10))
        return [(m.memory_id, m.text) for m in r.memories]

    def check(self, cond, what):
        if not cond:
            raise Finding(what)

    def has_messages(self, want):
        got = self.messages()
        self.check(got == want, "messages %r, want %r" % (got, want))
        n = self.get_session().message_count
        self.check(n == len(want), "message_count %d, want %d" % (n, len(want)))

    # steps
    def steps(self):
        pb = self.pb
        msgs = [(1, "alpha"), (2, "beta"), (3, "gamma")]
        return [
            ("CreateSession",
             lambda: self.a.session("CreateSession", pb.CreateSessionRequest(
                 session=pb.Session(user_id=self.user, session_id=self.sid))),
             lambda: expect_code(self.get_session, C.NOT_FOUND, "session after a failed create"),
             lambda r: self.check(self.get_session().user_id == self.user, "session user")),
            ("AppendMessages[2]",
             lambda: self.a.session("AppendMessages", pb.AppendMessagesRequest(
                 session_id=self.sid, messages=[M("alpha", client_message_id="a1"),
                                                M("beta", client_message_id="a2")])),
             lambda: self.has_messages([]),
             lambda r: self.check([m.seq for m in r.messages] == [1, 2], "append seqs")),
            ("AppendMessages[1]",
             lambda: self.a.session("AppendMessages", pb.AppendMessagesRequest(
                 session_id=self.sid, messages=[M("gamma", client_message_id="b1")])),
             lambda: self.has_messages(msgs[:2]),
             lambda r: self.check([m.seq for m in r.messages] == [3], "append seq")),
            ("ListMessages",
             self.messages,
             lambda: None,
             lambda r: self.check(r == msgs, "messages %r" % (r,))),
            ("CreateMemory",
             lambda: self.a.memory("CreateMemory", mp.CreateMemoryRequest(memory=mp.Memory(
                 memory_id=self.mid, user_id=self.user, text=self.T1,
                 type=mp.MEMORY_TYPE_PREFERENCE))),
             lambda: (expect_code(self.get_memory, C.NOT_FOUND, "memory after a failed create"),
                      self.check(self.memories() == [], "memories listed after a failed create")),
             self.created),
            ("UpdateMemory",
             lambda: self.a.memory("UpdateMemory", mp.UpdateMemoryRequest(
                 memory=mp.Memory(memory_id=self.mid, text=self.T2),
                 update_mask=field_mask_pb2.FieldMask(paths=["text"]),
                 expected_version=self.version)),
             lambda: self.memory_is(self.T1, self.version),
             lambda r: self.memory_is(self.T2, self.version + 1)),
            ("SearchMemories",
             lambda: self.a.memory("SearchMemories", mp.SearchMemoriesRequest(
                 user_id=self.user, query="coffee", top_k=5)),
             lambda: None,
             lambda r: self.check([x.memory.memory_id for x in r.results] == [self.mid],
                                  "search results %r" % (r,))),
            ("DeleteUser",
             lambda: self.a.user("DeleteUser", up.DeleteUserRequest(user_id=self.user)),
             lambda: self.whole_or_gone(msgs),
             lambda r: self.gone()),
        ]

    def created(self, r):
        self.check(r.outcome == mp.DEDUP_OUTCOME_CREATED,
                   "CreateMemory outcome %s, want CREATED" % mp.DedupOutcome.Name(r.outcome))
        self.version = r.memory.version
        self.memory_is(self.T1, self.version)

    def memory_is(self, text, version):
        m = self.get_memory()
        self.check((m.text, m.version) == (text, version),
                   "memory (%r, v%d), want (%r, v%d)" % (m.text, m.version, text, version))
        if version > self.version:
            self.version = version

    def whole_or_gone(self, msgs):
        """After a failed DeleteUser: each record whole or gone, never half."""
        code, _, s = code_of(self.get_session)
        if code == C.OK:
            self.has_messages(msgs)
        else:
            self.check(code == C.NOT_FOUND, "GetSession after a failed DeleteUser: %s" % code.name)
        code, _, m = code_of(self.get_memory)
        if code == C.OK:
            self.check(m.text == self.T2, "memory text %r after a failed DeleteUser" % m.text)
        else:
            self.check(code == C.NOT_FOUND, "GetMemory after a failed DeleteUser: %s" % code.name)

    def gone(self):
        expect_code(self.get_session, C.NOT_FOUND, "session after DeleteUser")
        expect_code(self.get_memory, C.NOT_FOUND, "memory after DeleteUser")
        self.check(self.memories() == [], "memories listed after DeleteUser")


# ---- the loop ------------------------------------------------------------------

class Loop:
    def __init__(self, full, log=print):
        self.full = full
        self.log = log
        self.findings = []       # (point, err, n, step, message)
        self.internal = set()    # (point, err) rows that answered INTERNAL
        self.injections = 0      # calls failed on purpose
        self.hit_steps = {}      # (point, err) -> set of steps a fault landed in
        self.srv = None
        self.api = None

    def start(self):
        self.srv = FaultServer()
        self.srv.start()
        self.api = Api(self.srv.client())

    def stop(self):
        if self.srv:
            try:
                self.srv.close()
            except AssertionError as e:
                self.findings.append(("-", "-", 0, "stop", str(e)[:3000]))
            self.srv = None

    def finding(self, key, n, step, msg):
        self.log("FINDING %s/%s n=%d %s: %s" % (key[0], key[1], n, step, msg))
        self.findings.append((key[0], key[1], n, step, msg))

    def died(self):
        rc = self.srv.died()
        if rc is None:
            return None
        return "engramd-fault died (status %s); log tail:\n%s" % (rc, self.srv.log_text()[-3000:])

    def one(self, key, n):
        """One run with the nth call at key's point failing. Returns the
        number of hits (0: the workload completes before the nth call)."""
        codes, words = EXPECTED[key]
        run = Run(self.api)
        self.key, self.n, self.consumed = key, n, 0
        self.resume()
        hits = 0
        for name, call, none, done in run.steps():
            before = self.srv.hits()
            code, details, res = code_of(call)
            landed = self.srv.hits() - before
            hits += landed
            dead = self.died()
            if dead:
                raise Finding("%s: %s" % (name, dead))
            if landed:
                self.hit_steps.setdefault(key, set()).add(name)
            if code != C.OK and not landed:
                raise Finding("%s failed with %s %r but no fault was injected" %
                              (name, code.name, details))
            if landed:
                self.pause()
                if code not in codes:
                    self.finding(key, n, name, "answered %s %r, want one of %s" %
                                 (code.name, details, sorted(c.name for c in codes)))
                if code == C.INTERNAL and key in INTERNAL_FOR_NOW:
                    self.internal.add(key)
                if code != C.OK and words and not any(w.lower() in details.lower()
                                                      for w in words):
                    self.finding(key, n, name, "details %r name none of %r" % (details, words))
                if code != C.OK:
                    self.after_failure(key, n, name, call, none, done)
                    continue
            self.pause()
            try:
                done(res)
            except (Finding, grpc.RpcError) as e:
                raise Finding("%s succeeded%s but: %s" % (name, " after a fault" if landed else "",
                                                          _msg(e)))
            self.resume()
        self.pause()
        return hits

    # The checks between steps are not part of the workload: the fault is
    # paused around them, and resumes counting where the workload left off.
    def pause(self):
        self.consumed += self.srv.arm("")

    def resume(self):
        if self.consumed < self.n:
            self.srv.arm("point=%s,nth=%d,err=%s,count=1" % (self.key[0], self.n - self.consumed,
                                                           self.key[1]))

    def after_failure(self, key, n, name, call, none, done):
        try:
            none()
        except (Finding, grpc.RpcError) as e:
            self.finding(key, n, name, "half-written after the failure: %s" % _msg(e))
        health = code_of(lambda: self.api.c.health(timeout=RPC_TIMEOUT))
        if health[0] != C.OK:
            raise Finding("Health after the failure of %s: %s %r" % (name, health[0].name,
                                                                     health[1]))
        code, details, res = code_of(call)
        if code != C.OK:
            raise Finding("retry of %s: %s %r" % (name, code.name, details))
        try:
            done(res)
        except (Finding, grpc.RpcError) as e:
            raise Finding("retry of %s succeeded but: %s" % (name, _msg(e)))

    def count_calls(self, point):
        """Runs the workload once unfailed; returns the calls at point."""
        self.srv.arm("point=%s,nth=0" % point)
        for _, call, _, _ in Run(self.api).steps():
            call()
        return self.srv.arm("")

    def schedule(self, total):
        """The N values to fail: every one (full) or a spread of them."""
        if self.full or total <= SHORT_SAMPLES:
            return list(range(1, total + 2))
        step = total / (SHORT_SAMPLES - 1)
        ns = sorted({1, 2, total} | {max(1, round(i * step)) for i in range(SHORT_SAMPLES)})
        return ns + [total + 1]

    def point(self, key):
        self.start()
        try:
            total = self.count_calls(key[0])
            ns = self.schedule(total)
            self.log("%s/%s: %d calls at the point per run; failing N in %s" %
                     (key[0], key[1], total, _span(ns)))
            grown = 0
            for n in ns:
                try:
                    hits = self.one(key, n)
                except Finding as e:
                    self.finding(key, n, "-", str(e))
                    self.restart_after_finding()
                    continue
                self.injections += hits
                if hits == 0 and n > total:
                    break
                if key[1] == "MAP_FULL":
                    grown += hits
                    if grown >= MAP_FULL_RESTART:
                        self.stop()
                        self.start()
                        grown = 0
        finally:
            self.stop()

    def restart_after_finding(self):
        self.stop()
        self.start()

    def run(self, keys):
        t0 = time.monotonic()
        for key in keys:
            self.point(key)
        return time.monotonic() - t0

    def report(self, elapsed):
        lines = ["fault injection: %d injections over %d (point, error) rows in %.1f s" %
                 (self.injections, len(self.hit_steps), elapsed)]
        for key in sorted(self.hit_steps):
            lines.append("  %s/%s hit in: %s" % (key[0], key[1], ", ".join(sorted(
                self.hit_steps[key]))))
        if self.internal:
            lines.append("answered INTERNAL (to tighten): " +
                         ", ".join("%s/%s" % k for k in sorted(self.internal)))
        for f in self.findings:
            lines.append("FINDING %s/%s n=%s [%s] %s" % f)
        return "\n".join(lines)


def _msg(e):
    if isinstance(e, grpc.RpcError):
        return "%s %r" % (e.code().name, e.details())
    return str(e)


def _span(ns):
    return "%s (%d values)" % (ns if len(ns) <= 10 else "%s..%s" % (ns[:4], ns[-2:]), len(ns))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="every row of EXPECTED, every N")
    ap.add_argument("--point", help="only this point")
    ap.add_argument("--err", help="only this error")
    args = ap.parse_args()
    keys = sorted(EXPECTED) if args.full or args.point or args.err else SHORT
    keys = [k for k in keys if (not args.point or k[0] == args.point)
            and (not args.err or k[1] == args.err)]
    loop = Loop(args.full, log=lambda s: print(s, flush=True))
    elapsed = loop.run(keys)
    print(loop.report(elapsed))
    return 1 if loop.findings else 0


if __name__ == "__main__":
    sys.exit(main())
