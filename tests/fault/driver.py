"""
Fault-injection loop over engramd-fault (tests/fault/shim.c), in the manner
of SQLite's I/O-fault tests.

For each (point, error) of EXPECTED, one server runs the workload again and
again on fresh ids, failing the Nth call at that point in turn (N = 1, 2, ...
until a run completes with no fault hit; the short mode samples N). After a
call that hit the fault it checks:
  - the call got a status of its row in EXPECTED, with that status's words
    in its details (never UNKNOWN, never a crash, never a hang);
  - nothing of the call is visible (a failed append left no message and did
    not advance the seq, a failed create left no session or memory, a failed
    DeleteUser left each record whole or gone);
  - the server still answers Health SERVING;
  - the same call, retried, succeeds;
and, at the end of every run, that the state is exactly the workload's.

A failed write of LMDB's meta page leaves the env unusable (MDB_PANIC).
Then the call must answer UNAVAILABLE "...the server is restarting", Health
NOT_SERVING (or the process is already going), and engramd-fault must exit
with status 1 within RESTART_TIMEOUT, having logged BROKEN_LINE once. The
driver starts it again on the same data dir, unarmed, and checks that the
failed call is absent (then its retry succeeds) or whole, never half.
Under ASan the harness fails on a sanitizer report in the log.

Run: ENGRAMD_FAULT=build/engramd-fault ENGRAM_PY_GEN=build/py \
       /usr/bin/python3 tests/fault/driver.py [--full] [--point P] [--err E]
"""
import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

import grpc  # noqa: E402

from harness import REPO, SERVING, M, Server, uid  # noqa: E402
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
FULL_SPAN = 3           # the full mode fails N up to FULL_SPAN times the calls of a run
RESTART_TIMEOUT = 15.0  # bound on a broken engramd's exit (it stops within ~1 s, then drains)
BROKEN_LINE = "LMDB cannot go on after a failed write (MDB_PANIC)"
# Or, with --meta-sync next-flush, a failed flush of a held commit's meta page.
FLUSH_BROKEN_LINE = "a flush failed ("

C = grpc.StatusCode

# ---- the one table of expected answers --------------------------------------
#
# (point, error) -> {gRPC code a call that hit the fault may answer: words
# its details must contain}. OK means the server absorbs the fault: the
# writer grows the map and runs the batch again, or a read or an allocation
# had a fallback; the run's final check proves nothing was lost. Each row
# accepts only what storage (eg_store__err, eg_store__commit_err,
# eg_store__commit_failed) and common/err.h make of that error.
OOM = "out of memory"                       # EG_ENOMEM
DISK_FULL = "disk full"                     # EG_ENOSPC
TOO_LARGE = "transaction too large"         # EG_ETXNFULL
READERS = "too many concurrent readers"     # EG_EREADERS
RESTARTING = "the server is restarting"     # EG_EBROKEN: LMDB panicked
# EG_EIO, for EIO alone: an I/O error on a disk with room (under 1 MiB free,
# a commit's EIO is "disk full") is a fault of the device, which nothing the
# client changes will avoid; "internal storage error" is the honest answer.
IO_ERROR = "internal storage error"
EXPECTED = {
    ("malloc", "ENOMEM"): {C.OK: None, C.RESOURCE_EXHAUSTED: OOM},
    ("commit", "MAP_FULL"): {C.OK: None},
    ("commit", "EIO"): {C.INTERNAL: IO_ERROR},
    ("commit", "ENOSPC"): {C.RESOURCE_EXHAUSTED: DISK_FULL},
    ("put", "MAP_FULL"): {C.OK: None},
    ("put", "TXN_FULL"): {C.RESOURCE_EXHAUSTED: TOO_LARGE},
    ("put", "ENOMEM"): {C.RESOURCE_EXHAUSTED: OOM},
    ("del", "MAP_FULL"): {C.OK: None},
    ("del", "TXN_FULL"): {C.RESOURCE_EXHAUSTED: TOO_LARGE},
    # The commit's flush runs before its meta page is written: a failed
    # sync loses the commit, never the env. But with --meta-sync next-flush
    # (the default) a flush also makes the previous commit's meta page
    # durable: when it fails, that commit's fate is unknown, its writes
    # answer "restarting" and the store breaks (docs/architecture.md,
    # "Durability"): the driver restarts engramd-fault.
    ("sync", "EIO"): {C.INTERNAL: IO_ERROR, C.UNAVAILABLE: RESTARTING},
    ("sync", "ENOSPC"): {C.RESOURCE_EXHAUSTED: DISK_FULL, C.UNAVAILABLE: RESTARTING},
    # A failed page write fails the commit alone; a failed meta-page write
    # also breaks the env (MDB_PANIC): the driver restarts engramd-fault.
    ("write", "EIO"): {C.INTERNAL: IO_ERROR, C.UNAVAILABLE: RESTARTING},
    ("write", "ENOSPC"): {C.RESOURCE_EXHAUSTED: DISK_FULL, C.UNAVAILABLE: RESTARTING},
    ("reader", "READERS_FULL"): {C.UNAVAILABLE: READERS},
}
# The short mode (ctest): every row, N sampled.
SHORT = sorted(EXPECTED)

ARMED_RE = re.compile(r"engram-fault: armed gen=(\d+) seen=(\d+) skipped=(\d+)")
HIT = "engram-fault: hit "


class Finding(Exception):
    """A check that failed: a bug (or a gap) to report."""


# ---- the server under faults ---------------------------------------------------

class FaultServer(Server):
    """engramd-fault on a temp dir, armed through a control file + SIGUSR1.
    Its sweeper is off: each step would run on the writer, whose calls
    count (README: "the threads that serve the workload")."""

    def __init__(self):
        super().__init__("--sweep-interval-ms", "3600000")
        self.ctl = os.path.join(self.tmp, "fault.ctl")
        self.env["ENGRAM_FAULT_CTL"] = self.ctl
        self.gen = 0
        self.skipped = 0

    def argv(self):
        a = super().argv()
        a[0] = ENGRAMD_FAULT
        return a

    def hits(self):
        return self.log_text().count(HIT)

    def arm(self, spec=""):
        """Arms spec ("" disarms); returns how many calls the previous spec's
        point counted (and keeps in self.skipped how many it left out: the
        calls of threads on their own clock, shim.c). Waits for the shim's
        acknowledgement."""
        self.gen += 1
        with open(self.ctl, "w") as f:
            f.write("%s%sgen=%d\n" % (spec, "," if spec else "", self.gen))
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + ARM_TIMEOUT
        while time.monotonic() < deadline:
            for g, seen, skipped in ARMED_RE.findall(self.log_text()):
                if int(g) == self.gen:
                    self.skipped = int(skipped)
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

Step = collections.namedtuple("Step", "name call none whole done")
Step.__doc__ = """One call of the workload. call makes the RPC; none asserts
the state the step found (as if it never ran); whole asserts its whole
effect from the state alone (after a restart the answer is lost); done
asserts its effect from its answer after success."""


class Run:
    """One pass of the workload on fresh ids (steps())."""

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
        nothing = lambda: None  # noqa: E731 (a read changes no state)
        return [
            Step("CreateSession",
                 lambda: self.a.session("CreateSession", pb.CreateSessionRequest(
                     session=pb.Session(user_id=self.user, session_id=self.sid))),
                 lambda: expect_code(self.get_session, C.NOT_FOUND,
                                     "session after a failed create"),
                 lambda: (self.check(self.get_session().user_id == self.user, "session user"),
                          self.has_messages([])),
                 lambda r: self.check(self.get_session().user_id == self.user, "session user")),
            Step("AppendMessages[2]",
                 lambda: self.a.session("AppendMessages", pb.AppendMessagesRequest(
                     session_id=self.sid, messages=[M("alpha", client_message_id="a1"),
                                                    M("beta", client_message_id="a2")])),
                 lambda: self.has_messages([]),
                 lambda: self.has_messages(msgs[:2]),
                 lambda r: self.check([m.seq for m in r.messages] == [1, 2], "append seqs")),
            Step("AppendMessages[1]",
                 lambda: self.a.session("AppendMessages", pb.AppendMessagesRequest(
                     session_id=self.sid, messages=[M("gamma", client_message_id="b1")])),
                 lambda: self.has_messages(msgs[:2]),
                 lambda: self.has_messages(msgs),
                 lambda r: self.check([m.seq for m in r.messages] == [3], "append seq")),
            Step("ListMessages",
                 self.messages,
                 nothing,
                 nothing,
                 lambda r: self.check(r == msgs, "messages %r" % (r,))),
            Step("CreateMemory",
                 lambda: self.a.memory("CreateMemory", mp.CreateMemoryRequest(memory=mp.Memory(
                     memory_id=self.mid, user_id=self.user, text=self.T1,
                     type=mp.MEMORY_TYPE_PREFERENCE))),
                 lambda: (expect_code(self.get_memory, C.NOT_FOUND,
                                      "memory after a failed create"),
                          self.check(self.memories() == [],
                                     "memories listed after a failed create")),
                 self.created_whole,
                 self.created),
            Step("UpdateMemory",
                 lambda: self.a.memory("UpdateMemory", mp.UpdateMemoryRequest(
                     memory=mp.Memory(memory_id=self.mid, text=self.T2),
                     update_mask=field_mask_pb2.FieldMask(paths=["text"]),
                     expected_version=self.version)),
                 lambda: self.memory_is(self.T1, self.version),
                 lambda: self.memory_is(self.T2, self.version + 1),
                 lambda r: self.memory_is(self.T2, self.version + 1)),
            Step("SearchMemories",
                 lambda: self.a.memory("SearchMemories", mp.SearchMemoriesRequest(
                     user_id=self.user, query="coffee", top_k=5)),
                 nothing,
                 nothing,
                 lambda r: self.check([x.memory.memory_id for x in r.results] == [self.mid],
                                      "search results %r" % (r,))),
            Step("DeleteUser",
                 lambda: self.a.user("DeleteUser", up.DeleteUserRequest(user_id=self.user)),
                 lambda: self.whole_or_gone(msgs),
                 self.gone,
                 lambda r: self.gone()),
        ]

    def created(self, r):
        self.check(r.outcome == mp.DEDUP_OUTCOME_CREATED,
                   "CreateMemory outcome %s, want CREATED" % mp.DedupOutcome.Name(r.outcome))
        self.version = r.memory.version
        self.memory_is(self.T1, self.version)

    def created_whole(self):
        """The memory of CreateMemory, whole, found with no answer."""
        self.check(self.memories() == [(self.mid, self.T1)], "memories %r" % (self.memories(),))
        self.version = self.get_memory().version

    def memory_is(self, text, version):
        m = self.get_memory()
        self.check((m.text, m.version) == (text, version),
                   "memory (%r, v%d), want (%r, v%d)" % (m.text, m.version, text, version))
        if version > self.version:
            self.version = version

    def whole_or_gone(self, msgs):
        """After a failed DeleteUser: each record whole, gone, or erased
        (DeleteUser destroys the user's data keys before it deletes a
        record: a failure after that leaves records that can no longer be
        read, DATA_LOSS "... was erased", until the retry deletes them),
        never half."""
        def erased(code, details):
            return code == C.DATA_LOSS and "was erased" in details
        code, details, s = code_of(self.get_session)
        if code == C.OK:
            code, details, _ = code_of(lambda: self.has_messages(msgs))
            if code != C.OK:
                self.check(erased(code, details), "messages after a failed DeleteUser: %s %r"
                           % (code.name, details))
        else:
            self.check(code == C.NOT_FOUND or erased(code, details),
                       "GetSession after a failed DeleteUser: %s %r" % (code.name, details))
        code, details, m = code_of(self.get_memory)
        if code == C.OK:
            self.check(m.text == self.T2, "memory text %r after a failed DeleteUser" % m.text)
        else:
            self.check(code == C.NOT_FOUND or erased(code, details),
                       "GetMemory after a failed DeleteUser: %s %r" % (code.name, details))

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
        self.answers = {}        # (point, err) -> {code name: details of its first answer}
        self.injections = 0      # calls failed on purpose
        self.restarts = 0        # engramd-fault restarted after a broken env
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
        run = Run(self.api)
        self.key, self.n, self.consumed = key, n, 0
        self.resume()
        hits = 0
        for step in run.steps():
            before = self.srv.hits()
            code, details, res = code_of(step.call)
            landed = self.srv.hits() - before
            hits += landed
            if landed:
                self.hit_steps.setdefault(key, set()).add(step.name)
                self.answered(key, n, step.name, code, details)
            if landed and code != C.OK and self.broken():
                self.after_broken(run, step, code, details)
                continue
            dead = self.died()
            if dead:
                raise Finding("%s: %s" % (step.name, dead))
            if code != C.OK and not landed:
                raise Finding("%s failed with %s %r but no fault was injected" %
                              (step.name, code.name, details))
            if landed:
                self.pause()
                if code != C.OK:
                    self.after_failure(step)
                    continue
            self.pause()
            try:
                step.done(res)
            except (Finding, grpc.RpcError) as e:
                raise Finding("%s succeeded%s but: %s" % (step.name, " after a fault" if landed
                                                          else "", _msg(e)))
            self.resume()
        self.pause()
        return hits

    def answered(self, key, n, name, code, details):
        """Checks the answer of a call that hit the fault against EXPECTED."""
        self.answers.setdefault(key, {}).setdefault(code.name, details)
        want = EXPECTED[key]
        if code not in want:
            self.finding(key, n, name, "answered %s %r, want one of %s" %
                         (code.name, details, sorted(c.name for c in want)))
        elif want[code] and want[code].lower() not in details.lower():
            self.finding(key, n, name, "%s details %r do not say %r" %
                         (code.name, details, want[code]))

    # The checks between steps are not part of the workload: the fault is
    # paused around them, and resumes counting where the workload left off.
    def pause(self):
        self.consumed += self.srv.arm("")

    def resume(self):
        if self.consumed < self.n:
            self.srv.arm("point=%s,nth=%d,err=%s,count=1" % (self.key[0], self.n - self.consumed,
                                                           self.key[1]))

    def after_failure(self, step):
        try:
            step.none()
        except (Finding, grpc.RpcError) as e:
            raise Finding("%s half-written after the failure: %s" % (step.name, _msg(e)))
        health = code_of(lambda: self.api.c.health(timeout=RPC_TIMEOUT))
        if health[0] != C.OK or health[2] != SERVING:
            raise Finding("Health after the failure of %s: %s %r %s" % (
                step.name, health[0].name, health[1], health[2]))
        self.retry(step)

    def retry(self, step):
        code, details, res = code_of(step.call)
        if code != C.OK:
            raise Finding("retry of %s: %s %r" % (step.name, code.name, details))
        try:
            step.done(res)
        except (Finding, grpc.RpcError) as e:
            raise Finding("retry of %s succeeded but: %s" % (step.name, _msg(e)))

    def broken(self):
        """Whether the failure broke the env: Health answers NOT_SERVING,
        or the process is going (Health fails and it exits in the bound)."""
        if self.srv.proc.poll() is not None:
            return True
        code, _, status = code_of(lambda: self.api.c.health(timeout=RPC_TIMEOUT))
        if code == C.OK:
            return status != SERVING
        try:
            self.srv.proc.wait(timeout=RESTART_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Finding("Health failed %s, yet engramd-fault runs on" % code.name)
        return True

    def after_broken(self, run, step, code, details):
        """The env is broken: the call must have said so; the process must
        exit 1 in the bound with one log line; a new process on the same
        data dir shows the call absent (and then its retry works) or whole."""
        if code != C.UNAVAILABLE or RESTARTING not in details:
            raise Finding("%s broke the env but answered %s %r" % (step.name, code.name, details))
        srv = self.srv
        # An open channel holds the drain for gRPC's GOAWAY grace (~5 s);
        # a client that saw UNAVAILABLE would reconnect elsewhere anyway.
        self.api.c.close()
        try:
            rc = srv.proc.wait(timeout=RESTART_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Finding("%s broke the env; engramd-fault still runs after %ss" %
                          (step.name, RESTART_TIMEOUT))
        srv.died()
        log = srv.log_text()
        if rc != 1:
            raise Finding("engramd-fault exited %s with a broken env, want 1" % rc)
        said = log.count(BROKEN_LINE) + log.count(FLUSH_BROKEN_LINE)
        if said != 1:
            raise Finding("log says %r or %r %d times, want once" % (
                BROKEN_LINE, FLUSH_BROKEN_LINE, said))
        try:
            srv.check_log()
            srv.start()  # the shim starts unarmed: no $ENGRAM_FAULT
        except AssertionError as e:
            raise Finding(str(e)[:3000])
        self.restarts += 1
        self.consumed = self.n  # the fault is spent; the new process runs clean
        self.api = run.a = Api(srv.client())
        try:
            step.none()
        except (Finding, grpc.RpcError) as absent:
            try:
                step.whole()
            except (Finding, grpc.RpcError) as whole:
                raise Finding("%s neither absent (%s) nor whole (%s) after the restart" %
                              (step.name, _msg(absent), _msg(whole)))
            return  # it took effect: the run goes on from there
        self.retry(step)

    def count_calls(self, point):
        """Runs the workload once unfailed; returns the calls at point."""
        self.srv.arm("point=%s,nth=0" % point)
        for step in Run(self.api).steps():
            step.call()
        return self.srv.arm("")

    def schedule(self, total):
        """The N values to fail: every one, on past total while runs still
        hit (a restart after a broken env starts on a file that may need
        more writes per run), or a spread of them."""
        if self.full or total <= SHORT_SAMPLES:
            return list(range(1, FULL_SPAN * total + 2))
        step = total / (SHORT_SAMPLES - 1)
        ns = sorted({1, 2, total} | {max(1, round(i * step)) for i in range(SHORT_SAMPLES)})
        return ns + [total + 1]

    def point(self, key):
        self.start()
        try:
            total = self.count_calls(key[0])
            ns = self.schedule(total)
            self.log("%s/%s: %d calls at the point per run; failing N in %s" %
                     (key[0], key[1], total, _span(ns, total)))
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
            else:
                if len(ns) > total + 1:
                    self.finding(key, ns[-1], "-", "runs still hit the point %d times "
                                 "past the %d calls of the first run" % (len(ns) - total, total))
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
        for key in sorted(self.answers):
            lines.append("  %s/%s answered: %s" % (key[0], key[1], "; ".join(
                "%s %r" % (c, d) if d else c for c, d in sorted(self.answers[key].items()))))
        if self.restarts:
            lines.append("restarted after a broken env: %d times" % self.restarts)
        for f in self.findings:
            lines.append("FINDING %s/%s n=%s [%s] %s" % f)
        return "\n".join(lines)


def _msg(e):
    if isinstance(e, grpc.RpcError):
        return "%s %r" % (e.code().name, e.details())
    return str(e)


def _span(ns, total):
    if len(ns) > total + 1:
        return "1, 2, ... until a run has no hit (at most %d)" % ns[-1]
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
