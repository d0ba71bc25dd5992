"""Replication (issue 4) with real processes on loopback: a primary and
replicas that stream its write-ahead log.

  ClusterTest       primary + 2 replicas: read-your-writes from replicas under
                    thousands of writes, forwarded writes, kill -9 of a replica
                    mid-stream, snapshot bootstrap of a new empty replica while
                    writes go on, replication auth, AdminService status and
                    checksums (and the CLI's `engram admin`)
  SyncReplicasTest  --sync-replicas 1: acknowledged only once a replica
                    applied the write; a timeout says how many acked
  FailoverTest      kill -9 of the primary, promotion of a replica (epoch + 1),
                    the other replica re-pointed and the old primary rejoining
                    as a replica; once without divergence, once diverged
                    (resynced from a snapshot, never merged)

Every node shares one keyring (replicas hold the primary's sealed data) and
one tokens file: an agent, an admin and a replica token. Replicas listen on
fixed ports so a restart (or a self re-exec to install a snapshot) keeps
their address. Each test ends with every running node at the same LSN with
the same AdminService.Checksum.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import grpc

from harness import (ENGRAM_CLI, KEEP, RPC_TIMEOUT, Client, E2ETestCase, M, Server,
                     clean_env, free_port, make_keyring, pb, run_threads, tail, uid)
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import replication_pb2 as rpb  # noqa: E402

AGENT, ADMIN, REPL = "agent-token-1", "admin-token-1", "replica-token-1"
TOKENS = [("acme", "agent", AGENT), ("acme", "admin", ADMIN), ("acme", "replica", REPL)]
AGENT_MD = (("authorization", "Bearer " + AGENT),)
ADMIN_MD = (("authorization", "Bearer " + ADMIN),)
REPL_MD = (("authorization", "Bearer " + REPL),)

CONVERGE_TIMEOUT = 60.0   # bound on replicas catching up (ASan is slow)
MAX_LSN_WAIT_MS = 1500    # replicas' --max-lsn-wait-ms
STREAM_PATH = "/engram.v1.ReplicationService/Stream"
SNAPSHOT_PATH = "/engram.v1.ReplicationService/Snapshot"


# ---- nodes -------------------------------------------------------------------

class Cluster:
    """Nodes sharing a keyring and tokens; replicas on fixed ports."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-repl-")
        self.keyring = make_keyring(os.path.join(self.tmp, "keyring"))
        self.nodes = []

    def primary(self, *args):
        s = Server(*args, tokens=TOKENS, keyring=self.keyring, port=free_port())
        s.name = "primary"
        self.nodes.append(s)
        return s

    def replica(self, name, primary_addr, *args):
        s = Server(tokens=TOKENS, keyring=self.keyring, port=free_port())
        s.name = name
        follow(s, primary_addr, *args)
        self.nodes.append(s)
        return s

    def close(self):
        errors = []
        # Replicas first: a primary that stops first only makes them retry.
        for s in sorted(self.nodes, key=lambda n: n.name == "primary"):
            try:
                s.close()
            except AssertionError as e:
                errors.append(e)
        if not KEEP:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise errors[0]


def follow(srv, primary_addr, *args):
    """(Re)configures srv as a replica of primary_addr (for its next start)."""
    srv.extra = ["--role", "replica", "--primary", primary_addr, "--replica-token", REPL,
                 "--replica-id", srv.name, "--max-lsn-wait-ms", str(MAX_LSN_WAIT_MS)] + \
                [str(a) for a in args]


def as_primary(srv, *args):
    srv.extra = [str(a) for a in args]


def _cached(srv, attr, token):
    """A client of srv's current process (made again after a restart)."""
    key = (srv.starts, srv.port)
    c = getattr(srv, attr, None)
    if c is None or getattr(srv, attr + "_key", None) != key or c not in srv.clients:
        c = srv.client(token)
        setattr(srv, attr, c)
        setattr(srv, attr + "_key", key)
    return c


def agent(srv):
    return _cached(srv, "_agent", AGENT)


def admin(srv):
    return apbg.AdminServiceStub(_cached(srv, "_admin", ADMIN).channel)


def status(srv, timeout=RPC_TIMEOUT):
    return admin(srv).GetStatus(apb.GetStatusRequest(), timeout=timeout, metadata=ADMIN_MD)


def checksum(srv):
    return admin(srv).Checksum(apb.ChecksumRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)


def min_lsn_md(lsn):
    return AGENT_MD + (("engram-min-lsn", str(lsn)),)


def newest(srv, sid, lsn=None, timeout=RPC_TIMEOUT):
    """The newest message of sid read on srv (after LSN lsn, if given)."""
    r = agent(srv).stub.ListMessages(
        pb.ListMessagesRequest(session_id=sid, page_size=1, newest_first=True),
        timeout=timeout, metadata=min_lsn_md(lsn) if lsn else AGENT_MD)
    return r.messages[0] if r.messages else None


def cli(*args, timeout=30):
    p = subprocess.run([ENGRAM_CLI] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=clean_env())
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


class Writer:
    """Appends to a session of its own on `target()` until stopped (bounded
    by max_writes and time); keeps the last acknowledged LSN and every
    acknowledged (seq, content)."""

    def __init__(self, target, max_writes=20000, max_s=60.0, max_failures=50):
        """max_failures: failed writes (in all) after which it gives up;
        None: never (then wait_writes' bound is what fails a test whose
        writes stop going through)."""
        self.target = target
        self.max_writes = max_writes
        self.max_s = max_s
        self.max_failures = max_failures
        self.stop_ev = threading.Event()
        self.acked = []
        self.last_lsn = 0
        self.errors = []
        self.failures = 0
        self.sid = None
        self.thread = None

    def start(self):
        self.sid = agent(self.target()).create(uid("u"), uid("w")).session_id
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        end = time.monotonic() + self.max_s
        i = 0
        c = None
        try:
            while not self.stop_ev.is_set() and i < self.max_writes and time.monotonic() < end:
                content = "w%d" % i
                if c is None:
                    c = Client(self.target().addr, AGENT)
                try:
                    r, lsn = c.call_lsn("AppendMessages", pb.AppendMessagesRequest(
                        session_id=self.sid, messages=[M(content)]))
                except grpc.RpcError as e:
                    # Only a failed write is retried (it was not acknowledged).
                    self.failures += 1
                    if self.max_failures is not None and self.failures > self.max_failures:
                        self.errors.append(e)
                        return
                    c.close()
                    c = None
                    time.sleep(0.05)
                    continue
                self.acked.append((r.messages[0].seq, content))
                self.last_lsn = int(lsn)
                i += 1
        finally:
            if c is not None:
                c.close()

    def wait_writes(self, n, timeout=30.0):
        deadline = time.monotonic() + timeout
        while len(self.acked) < n and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.01)
        if len(self.acked) < n:
            raise AssertionError("writer: %d of %d writes within %ss (errors: %r)"
                                 % (len(self.acked), n, timeout, self.errors[-1:]))

    def stop(self):
        self.stop_ev.set()
        self.thread.join(30.0)
        if self.thread.is_alive():
            raise AssertionError("writer did not stop")
        if self.errors:
            raise self.errors[0]


# ---- test base -----------------------------------------------------------------

class ReplicationCase(E2ETestCase):

    def wait_connected(self, primary, names, timeout=CONVERGE_TIMEOUT):
        """Waits until the primary lists every replica in names as connected."""
        def ok():
            st = status(primary)
            up = {r.replica_id for r in st.replicas if r.connected}
            return set(names) <= up
        self.wait_until(ok, timeout, "replicas %s connected" % sorted(names), [primary])

    def wait_converged(self, primary, replicas, timeout=CONVERGE_TIMEOUT):
        """Waits (no writes running) until every replica's last_lsn equals
        the primary's, then asserts equal checksums at that LSN. Returns it."""
        nodes = [primary] + list(replicas)
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            try:
                target = status(primary).last_lsn
                lsns = [status(r).last_lsn for r in replicas]
                seen = (target, lsns)
                if all(l == target for l in lsns):
                    sums = [checksum(n) for n in nodes]
                    if all(s.lsn == target for s in sums):
                        digests = {n.name: s.sha256 for n, s in zip(nodes, sums)}
                        self.assertEqual(len(set(digests.values())), 1,
                                         "checksums differ at lsn %d: %r\n%s"
                                         % (target, digests, self.logs(*nodes)))
                        self.assertRegex(sums[0].sha256, r"^[0-9a-f]{64}$")
                        return target
            except grpc.RpcError as e:
                seen = e
            if time.monotonic() > deadline:
                self.fail("nodes did not converge within %ss (primary lsn, replica lsns: %r)\n%s"
                          % (timeout, seen, self.logs(*nodes)))
            time.sleep(0.05)

    def write_until_trimmed(self, primary, past=0, max_writes=6000):
        """Sequential appends (one LSN each) until the primary's log no
        longer holds LSN past + 1. Returns the status."""
        c = agent(primary)
        sid = c.create(uid("u"), uid("trim")).session_id
        for i in range(max_writes):
            c.append(sid, "t%d" % i)
            if i % 100 == 99:
                st = status(primary)
                if st.wal_first_lsn > past + 1:
                    return st
        self.fail("wal_first_lsn still <= %d after %d writes (--wal-retain-records 1000)\n%s"
                  % (past + 1, max_writes, tail(primary)))


def stream_call(addr, md, hello, timeout=5.0):
    """Opens ReplicationService/Stream and sends hello, keeping the request
    side open (as a replica does) until the call ends. Returns
    (channel, call); cancel the call, then close the channel."""
    ch = grpc.insecure_channel(addr)
    fn = ch.stream_stream(STREAM_PATH, request_serializer=rpb.StreamRequest.SerializeToString,
                          response_deserializer=rpb.StreamResponse.FromString)
    done = threading.Event()

    def requests():
        yield hello
        done.wait(timeout)

    call = fn(requests(), timeout=timeout, metadata=md)
    call.add_done_callback(lambda _: done.set())
    return ch, call


# ---- primary + 2 replicas --------------------------------------------------------

class ClusterTest(ReplicationCase):

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        try:
            # 1000 is the smallest retention: the snapshot test trims past it.
            cls.p = cls.cluster.primary("--wal-retain-records", "1000").start()
            cls.r1 = cls.cluster.replica("r1", cls.p.addr).start()
            cls.r2 = cls.cluster.replica("r2", cls.p.addr).start()
        except BaseException:
            cls.cluster.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def setUp(self):
        for n in (self.p, self.r1, self.r2):
            if n.proc is None:
                n.start()
        self.wait_connected(self.p, ["r1", "r2"])

    def tearDown(self):
        for n in (self.p, self.r1, self.r2):
            rc = n.died()
            if rc is not None:
                self.fail("%s died during the test (exit %s)\n%s" % (n.name, rc, tail(n)))

    # -- read-your-writes ---------------------------------------------------------

    def test_read_your_writes_under_load(self):
        """2,000 appends from 4 threads (every 10th sent to a replica and
        forwarded); each is read back at once from a replica with
        engram-min-lsn = its engram-lsn and must be there."""
        threads, per = 4, 500
        p, reps = self.p, [self.r1, self.r2]
        results = [[] for _ in range(threads)]

        def worker(k):
            def run():
                sid = uid("ryw")
                _, prev = agent(p).call_lsn("CreateSession", pb.CreateSessionRequest(
                    session=pb.Session(user_id=uid("u"), session_id=sid)))
                prev = int(prev)
                # the session itself, read at once from a replica
                got = agent(reps[k % 2]).stub.GetSession(
                    pb.GetSessionRequest(session_id=sid), timeout=RPC_TIMEOUT,
                    metadata=min_lsn_md(prev))
                self.assertEqual(got.session_id, sid)
                for i in range(per):
                    via = reps[(i // 10) % 2] if i % 10 == 9 else p
                    content = "t%d-%d" % (k, i)
                    r, lsn = agent(via).call_lsn("AppendMessages", pb.AppendMessagesRequest(
                        session_id=sid, messages=[M(content)]))
                    self.assertIsNotNone(lsn, "no engram-lsn on a write (via %s)" % via.name)
                    lsn = int(lsn)
                    self.assertGreater(lsn, prev, "engram-lsn must grow")
                    prev = lsn
                    seq = r.messages[0].seq
                    self.assertEqual(seq, i + 1)
                    reader = reps[(i + k) % 2]
                    m = newest(reader, sid, lsn)
                    self.assertIsNotNone(m, "%s: no message at min-lsn %d" % (reader.name, lsn))
                    self.assertEqual((m.seq, m.content), (seq, content),
                                     "%s at min-lsn %d missed its own write" % (reader.name, lsn))
                    results[k].append(lsn)
            return run

        for n in (p, *reps):
            agent(n)  # made here, not raced for by the threads
        t0 = time.monotonic()
        run_threads([worker(k) for k in range(threads)], timeout=240)
        self.assertEqual(sum(len(r) for r in results), threads * per)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 240)
        self.wait_converged(self.p, reps)

    def test_min_lsn_not_reached_is_unavailable(self):
        far = status(self.p).last_lsn + 1000000
        t0 = time.monotonic()
        e = self.assertStatus(grpc.StatusCode.UNAVAILABLE, agent(self.r1).stub.ListSessions,
                              pb.ListSessionsRequest(user_id="nobody"), timeout=RPC_TIMEOUT,
                              metadata=min_lsn_md(far))
        took = time.monotonic() - t0
        self.assertIn("engram-min-lsn", e.details())
        # bounded by --max-lsn-wait-ms, not by the 10 s deadline
        self.assertGreaterEqual(took, MAX_LSN_WAIT_MS / 1000.0 * 0.9)
        self.assertLess(took, RPC_TIMEOUT - 2)
        # the deadline bounds it too, when shorter
        agent(self.r2).health()  # connect first: time only the wait
        t0 = time.monotonic()
        try:
            agent(self.r2).stub.ListSessions(pb.ListSessionsRequest(user_id="nobody"),
                                             timeout=0.3, metadata=min_lsn_md(far))
            self.fail("a read with an unreachable engram-min-lsn succeeded")
        except grpc.RpcError as e:
            self.assertIn(e.code(), (grpc.StatusCode.UNAVAILABLE,
                                     grpc.StatusCode.DEADLINE_EXCEEDED))
        self.assertLess(time.monotonic() - t0, 2.0)
        # an LSN already applied: no wait
        st = status(self.r1)
        agent(self.r1).stub.ListSessions(pb.ListSessionsRequest(user_id="nobody"),
                                         timeout=RPC_TIMEOUT, metadata=min_lsn_md(st.last_lsn))
        self.assertStatus(grpc.StatusCode.INVALID_ARGUMENT, agent(self.r1).stub.ListSessions,
                          pb.ListSessionsRequest(user_id="nobody"), timeout=RPC_TIMEOUT,
                          metadata=AGENT_MD + (("engram-min-lsn", "abc"),))

    # -- forwarding ------------------------------------------------------------------

    def test_write_to_replica_is_forwarded(self):
        p, r1, r2 = self.p, self.r1, self.r2
        user, sid = uid("u"), uid("s")
        s, lsn = agent(r1).call_lsn("CreateSession", pb.CreateSessionRequest(
            session=pb.Session(user_id=user, session_id=sid, metadata={"k": "v"})))
        self.assertIsNotNone(lsn, "a forwarded write carries engram-lsn")
        lsn = int(lsn)
        # it happened on the primary, at that LSN of the primary's log
        self.assertGreaterEqual(status(p).last_lsn, lsn)
        got = agent(p).get(sid)
        self.assertEqual(got.create_time, s.create_time)
        self.assertEqual(dict(got.metadata), {"k": "v"})
        # the other replica sees it with read-your-writes on that LSN
        got2 = agent(r2).stub.GetSession(pb.GetSessionRequest(session_id=sid),
                                         timeout=RPC_TIMEOUT, metadata=min_lsn_md(lsn))
        self.assertEqual(got2.session_id, sid)
        # the next write, straight to the primary, comes later in the log
        _, lsn2 = agent(p).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("direct")]))
        self.assertGreater(int(lsn2), lsn)
        r, lsn3 = agent(r2).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("forwarded")]))
        self.assertEqual(r.messages[0].seq, 2)
        self.assertGreater(int(lsn3), int(lsn2))

        # errors: the replica answers exactly as the primary does
        bad = [
            ("CreateSession", pb.CreateSessionRequest(
                session=pb.Session(user_id=user, session_id="bad id!"))),
            ("CreateSession", pb.CreateSessionRequest(session=pb.Session(user_id=""))),
            # another user's id (the same user's would be a safe retry)
            ("CreateSession", pb.CreateSessionRequest(
                session=pb.Session(user_id=uid("other"), session_id=sid))),
            ("AppendMessages", pb.AppendMessagesRequest(session_id=uid("nope"),
                                                        messages=[M("x")])),
            ("AppendMessages", pb.AppendMessagesRequest(session_id=sid, messages=[])),
            ("UpdateSummary", pb.UpdateSummaryRequest(session_id=sid, summary="s",
                                                      through_seq=99)),
        ]
        for method, req in bad:
            want = got_r = None
            try:
                agent(p).call(method, req)
            except grpc.RpcError as e:
                want = (e.code(), e.details())
            try:
                agent(r1).call(method, req)
            except grpc.RpcError as e:
                got_r = (e.code(), e.details())
            self.assertIsNotNone(want, "%s %s should fail on the primary" % (method, req))
            self.assertEqual(got_r, want, "%s through a replica" % method)
        self.assertEqual(self.assertStatus(
            grpc.StatusCode.INVALID_ARGUMENT, agent(r1).call, "CreateSession",
            pb.CreateSessionRequest(session=pb.Session(user_id=user, session_id="bad id!"))
        ).code(), grpc.StatusCode.INVALID_ARGUMENT)
        # no token / a replica token: refused like on the primary
        for md, code in ((() , grpc.StatusCode.UNAUTHENTICATED),
                         (REPL_MD, grpc.StatusCode.PERMISSION_DENIED)):
            for node in (p, r1):
                self.assertStatus(code, agent(node).call, "EndSession",
                                  pb.EndSessionRequest(session_id=sid), metadata=md)
        self.assertEqual(agent(p).get(sid).state, pb.SESSION_STATE_ACTIVE)
        self.wait_converged(p, [r1, r2])

    # -- kill -9 of a replica ---------------------------------------------------------

    def test_replica_kill9_mid_stream_converges(self):
        w = Writer(lambda: self.p).start()
        try:
            w.wait_writes(100)
            self.wait_until(lambda: status(self.r1).last_lsn > 0, 20, "r1 applying", [self.r1])
            self.r1.kill9()
            n = len(w.acked)
            w.wait_writes(n + 100)
            # reads on the other replica go on meanwhile
            self.assertIsNotNone(newest(self.r2, w.sid, w.last_lsn))
            self.r1.start()
            w.wait_writes(len(w.acked) + 100)
        finally:
            w.stop()
        self.wait_converged(self.p, [self.r1, self.r2])
        log = self.r1.log_text()
        m = re.search(r"replica of \S+ from lsn (\d+)", log)
        self.assertTrue(m, tail(self.r1))
        self.assertGreater(int(m.group(1)), 0, "r1 restarted from its applied LSN")
        self.assertNotIn("resync", log, "a replica that only fell behind needs no snapshot")
        self.assertEqual(self.r1.listen_count(), 1)
        # every acknowledged write is on r1
        msgs = agent(self.r1).all_messages(w.sid)
        self.assertEqual([(m.seq, m.content) for m in msgs], w.acked)

    def test_replica_behind_trimmed_log_resyncs(self):
        """A replica away while the log was trimmed past it comes back
        through a snapshot installed over its old data."""
        sid = agent(self.p).create(uid("u"), uid("gone")).session_id
        agent(self.p).append(sid, "before")
        applied = self.wait_converged(self.p, [self.r1, self.r2])
        self.r2.kill9()
        self.write_until_trimmed(self.p, past=applied)
        agent(self.p).append(sid, "after")
        pid = self.r2.start().pid
        self.r2.wait_serving(timeout=CONVERGE_TIMEOUT, listens=2)
        self.assertEqual(self.r2.pid, pid)
        log = self.r2.log_text()
        self.assertRegex(log, r"replica of \S+ from lsn %d\b" % applied)
        self.assertIn("behind the trimmed log", log)
        self.assertIn("installing the snapshot", log)
        self.wait_connected(self.p, ["r2"])
        self.wait_converged(self.p, [self.r1, self.r2])
        self.assertEqual([m.content for m in agent(self.r2).all_messages(sid)],
                         ["before", "after"])

    # -- primary restart ------------------------------------------------------------------

    def test_primary_restart_replicas_resume(self):
        sid = agent(self.p).create(uid("u"), uid("pr")).session_id
        agent(self.p).append(sid, "before")
        before = self.wait_converged(self.p, [self.r1, self.r2])
        logs = {n.name: len(n.log_text()) for n in (self.r1, self.r2)}
        self.p.restart()  # SIGTERM: clean exit checked, same port
        # reads on the replicas go on while it is away (and after)
        self.assertEqual(newest(self.r1, sid).content, "before")
        self.wait_connected(self.p, ["r1", "r2"])
        _, lsn = agent(self.p).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("after")]))
        self.assertEqual(int(lsn), before + 1, "LSNs go on across the restart")
        for n in (self.r1, self.r2):
            self.assertEqual(newest(n, sid, int(lsn)).content, "after")
        self.wait_converged(self.p, [self.r1, self.r2])
        for n in (self.r1, self.r2):
            self.assertNotIn("resync", n.log_text()[logs[n.name]:],
                             "%s resumed where it was\n%s" % (n.name, tail(n)))

    # -- snapshot bootstrap ---------------------------------------------------------------

    def test_snapshot_bootstrap_while_writing(self):
        st = self.write_until_trimmed(self.p)
        self.assertGreater(st.wal_first_lsn, 1)
        r3 = self.cluster.replica("r3", self.p.addr)
        w = Writer(lambda: self.p).start()
        try:
            w.wait_writes(20)
            r3.start()
            pid = r3.pid
            # it fetches the snapshot, then re-executes itself to install it
            r3.wait_serving(timeout=CONVERGE_TIMEOUT, listens=2)
            self.assertEqual(r3.pid, pid, "the restart is an execv: same process")
            self.assertIsNone(r3.died())
            w.wait_writes(len(w.acked) + 50)
            self.wait_connected(self.p, ["r3"])
        finally:
            w.stop()
        try:
            self.wait_converged(self.p, [self.r1, self.r2, r3])
            log = r3.log_text()
            self.assertIn("resync", log)
            self.assertIn("snapshot received and checked", log)
            self.assertIn("installing the snapshot", log)
            msgs = agent(r3).all_messages(w.sid)
            self.assertEqual([(m.seq, m.content) for m in msgs], w.acked)
            # it serves reads like the others
            self.assertEqual(status(r3).role, "replica")
            self.assertGreater(status(r3).wal_first_lsn, 0)
        finally:
            r3.close()
            self.cluster.nodes.remove(r3)

    # -- auth -------------------------------------------------------------------------------

    def test_stream_needs_replica_role(self):
        hello = rpb.StreamRequest(replica_id="probe", epoch=1, applied_lsn=0)
        for md, code in ((AGENT_MD, grpc.StatusCode.PERMISSION_DENIED),
                         (ADMIN_MD, grpc.StatusCode.PERMISSION_DENIED),
                         ((), grpc.StatusCode.UNAUTHENTICATED),
                         ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED)):
            ch, call = stream_call(self.p.addr, md, hello)
            try:
                with self.assertRaises(grpc.RpcError) as cm:
                    next(call)
                self.assertEqual(cm.exception.code(), code, cm.exception.details())
            finally:
                call.cancel()
                ch.close()
        ch = grpc.insecure_channel(self.p.addr)
        try:
            snap = ch.unary_stream(SNAPSHOT_PATH,
                                   request_serializer=rpb.SnapshotRequest.SerializeToString,
                                   response_deserializer=rpb.SnapshotChunk.FromString)
            for md, code in ((AGENT_MD, grpc.StatusCode.PERMISSION_DENIED),
                             ((), grpc.StatusCode.UNAUTHENTICATED)):
                with self.assertRaises(grpc.RpcError) as cm:
                    list(snap(rpb.SnapshotRequest(replica_id="probe"), timeout=5, metadata=md))
                self.assertEqual(cm.exception.code(), code)
            # the replica role may: chunks, then a last one with LSN and SHA-256
            import hashlib
            chunks = list(snap(rpb.SnapshotRequest(replica_id="probe"), timeout=30,
                               metadata=REPL_MD))
            self.assertTrue(chunks and chunks[-1].last)
            data = b"".join(c.data for c in chunks)
            self.assertEqual(chunks[-1].total_bytes, len(data))
            self.assertEqual(chunks[-1].sha256, hashlib.sha256(data).digest())
            self.assertGreaterEqual(chunks[-1].epoch, 1)
        finally:
            ch.close()
        # a replica token streams: the first answer says where the primary is
        st = status(self.p)
        ch, call = stream_call(self.p.addr, REPL_MD, rpb.StreamRequest(
            replica_id="probe", epoch=st.epoch, applied_lsn=st.last_lsn,
            applied_epoch=st.epoch))
        try:
            first = next(call)
            self.assertFalse(first.resync, first.reason)
            self.assertGreaterEqual(first.primary_lsn, st.last_lsn)
            self.assertEqual(first.epoch, st.epoch)
        finally:
            call.cancel()
            ch.close()
        # a replica does not serve the log
        ch, call = stream_call(self.r1.addr, REPL_MD, hello)
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                next(call)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        finally:
            call.cancel()
            ch.close()
        # AdminService wants the admin role
        for md, code in ((AGENT_MD, grpc.StatusCode.PERMISSION_DENIED),
                         (REPL_MD, grpc.StatusCode.PERMISSION_DENIED),
                         ((), grpc.StatusCode.UNAUTHENTICATED)):
            self.assertStatus(code, admin(self.p).GetStatus, apb.GetStatusRequest(),
                              timeout=RPC_TIMEOUT, metadata=md)
            self.assertStatus(code, admin(self.r1).Promote, apb.PromoteRequest(),
                              timeout=RPC_TIMEOUT, metadata=md)
        self.assertEqual(status(self.r1).role, "replica")

    # -- status, checksums, CLI ---------------------------------------------------------

    def test_status_and_checksums(self):
        c = agent(self.p)
        sid = c.create(uid("u")).session_id
        _, lsn = c.call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("status")]))
        lsn = int(lsn)
        last = self.wait_converged(self.p, [self.r1, self.r2])
        self.assertGreaterEqual(last, lsn)

        def acked():
            st = status(self.p)
            reps = {r.replica_id: r for r in st.replicas}
            return all(n in reps and reps[n].connected and reps[n].applied_lsn == last
                       for n in ("r1", "r2")) and st
        st = self.wait_until(acked, CONVERGE_TIMEOUT, "acks up to %d" % last, [self.p])
        self.assertEqual(st.role, "primary")
        self.assertEqual(st.epoch, 1)
        self.assertEqual(st.last_lsn, last)
        self.assertEqual(st.primary, "")
        self.assertGreaterEqual(st.wal_first_lsn, 1)
        for r in st.replicas:
            if r.replica_id in ("r1", "r2"):
                self.assertEqual(r.lag_records, 0)
                self.assertGreater(r.last_ack_time.seconds, 0)
        for node in (self.r1, self.r2):
            rs = status(node)
            self.assertEqual(rs.role, "replica")
            self.assertEqual(rs.epoch, 1)
            self.assertEqual(rs.last_lsn, last)
            self.assertEqual(rs.primary, self.p.addr)
            self.assertGreaterEqual(rs.primary_lsn, last)
            self.assertEqual(len(rs.replicas), 0)
        # Promote on the primary: FAILED_PRECONDITION
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, admin(self.p).Promote,
                          apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)

        # the CLI
        rc, out, err = cli("--target", self.p.addr, "--token", ADMIN, "admin", "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("role: primary\n", out)
        self.assertIn("epoch: 1\n", out)
        self.assertIn("last_lsn: %d\n" % last, out)
        self.assertRegex(out, r"replica: r1 connected applied_lsn=%d lag_records=0 last_ack=\d{4}-"
                         % last)
        self.assertRegex(out, r"replica: r2 connected applied_lsn=%d " % last)
        rc, out, err = cli("--target", self.r1.addr, "--token", ADMIN, "admin", "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("role: replica\n", out)
        self.assertIn("primary: %s\n" % self.p.addr, out)
        self.assertNotIn("replica:", out)
        rc, out, err = cli("--json", "--target", self.p.addr, "--token", ADMIN, "admin", "status")
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(j["role"], "primary")
        self.assertEqual(j["lastLsn"], str(last))
        self.assertEqual({r["replicaId"] for r in j["replicas"] if r["connected"]} >= {"r1", "r2"},
                         True)
        sums = {}
        for node in (self.p, self.r1, self.r2):
            rc, out, err = cli("--json", "--target", node.addr, "--token", ADMIN, "admin",
                               "checksum")
            self.assertEqual(rc, 0, err)
            sums[node.name] = json.loads(out)
            self.assertEqual(sums[node.name]["lsn"], str(last))
        self.assertEqual(len({v["sha256"] for v in sums.values()}), 1, sums)
        self.assertEqual(sums["primary"]["sha256"], checksum(self.p).sha256)
        rc, out, err = cli("--target", self.r2.addr, "--token", ADMIN, "admin", "checksum")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "lsn: %d\nsha256: %s\n" % (last, sums["primary"]["sha256"]))
        rc, out, err = cli("--target", self.p.addr, "--token", ADMIN, "admin", "promote")
        self.assertEqual(rc, 5)  # FAILED_PRECONDITION: invalid input
        self.assertIn("FAILED_PRECONDITION", err)
        rc, out, err = cli("--target", self.p.addr, "--token", AGENT, "admin", "status")
        self.assertEqual(rc, 6)  # denied
        self.assertIn("PERMISSION_DENIED", err)
        rc, out, err = cli("--target", self.p.addr, "admin", "status", "extra")
        self.assertEqual(rc, 2)
        rc, out, err = cli("--target", self.p.addr, "admin")
        self.assertEqual(rc, 2)
        self.assertIn("status", err)
        self.assertIn("checksum", err)
        rc, out, err = cli("help")
        self.assertEqual(rc, 0)
        self.assertIn("admin promote", out)
        # a write moves the digest; the replicas follow
        agent(self.p).append(sid, "more")
        self.wait_converged(self.p, [self.r1, self.r2])
        self.assertNotEqual(checksum(self.p).sha256, sums["primary"]["sha256"])


# ---- --sync-replicas ---------------------------------------------------------------------

class SyncReplicasTest(ReplicationCase):
    SYNC_TIMEOUT_MS = 2000  # long enough for a loaded machine to ack every normal write

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)
        self.p = self.cluster.primary("--sync-replicas", "1",
                                      "--sync-timeout-ms", self.SYNC_TIMEOUT_MS).start()

    def assert_sync_timeout(self, fn, *args, **kw):
        t0 = time.monotonic()
        e = self.assertStatus(grpc.StatusCode.UNAVAILABLE, fn, *args, **kw)
        took = time.monotonic() - t0
        self.assertIn("0 of 1", e.details(), "the message says how many replicas acked")
        self.assertGreaterEqual(took, self.SYNC_TIMEOUT_MS / 1000.0 * 0.9)
        self.assertLess(took, RPC_TIMEOUT - 2)
        return e

    def test_sync_replicas(self):
        p = self.p
        c = agent(p)
        sid = uid("s")
        # no replica: the write commits here but is not acknowledged
        self.assert_sync_timeout(c.create, uid("u"), sid)
        self.assertEqual(c.get(sid).session_id, sid, "committed on the primary all the same")

        r1 = self.cluster.replica("r1", p.addr).start()
        self.wait_connected(p, ["r1"])
        for i in range(20):
            r, lsn = c.call_lsn("AppendMessages", pb.AppendMessagesRequest(
                session_id=sid, messages=[M("m%d" % i)]))
            lsn = int(lsn)
            # acknowledged => already applied on r1: no min-lsn needed
            self.assertGreaterEqual(status(r1).last_lsn, lsn)
            m = newest(r1, sid)
            self.assertEqual((m.seq, m.content), (r.messages[0].seq, "m%d" % i))
        st = status(p)
        self.assertGreaterEqual([x for x in st.replicas if x.replica_id == "r1"][0].applied_lsn,
                                lsn)
        # a write forwarded by the replica waits for it too
        r, lsn = agent(r1).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("via-r1")]))
        self.assertEqual(newest(r1, sid).content, "via-r1")

        # the replica gone: writes time out again, saying so
        r1.kill9()
        self.assert_sync_timeout(c.append, sid, "alone")
        r1.start()
        self.wait_connected(p, ["r1"])
        c.append(sid, "back")
        self.assertEqual(newest(r1, sid).content, "back")
        self.wait_converged(p, [r1])


# ---- failover ------------------------------------------------------------------------------

class FailoverTest(ReplicationCase):

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)
        self.p = self.cluster.primary().start()
        self.r1 = self.cluster.replica("r1", self.p.addr).start()
        self.r2 = self.cluster.replica("r2", self.p.addr).start()
        self.wait_connected(self.p, ["r1", "r2"])

    def seed(self, node, n, prefix):
        """n appends to a new session on node; returns (sid, [(seq, content)])."""
        c = agent(node)
        sid = c.create(uid("u"), uid(prefix)).session_id
        acked = []
        for i in range(n):
            r = c.append(sid, "%s-%d" % (prefix, i))
            acked.append((r.messages[0].seq, r.messages[0].content))
        return sid, acked

    def assert_holds(self, nodes, sid, acked):
        for n in nodes:
            msgs = agent(n).all_messages(sid)
            self.assertEqual([(m.seq, m.content) for m in msgs], acked, "on %s" % n.name)

    def promote(self, node):
        st0 = status(node)
        r = admin(node).Promote(apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)
        self.assertEqual(r.epoch, st0.epoch + 1)
        self.assertEqual(r.lsn, st0.last_lsn + 1, "promotion commits a record of the new epoch")
        st = status(node)
        self.assertEqual((st.role, st.epoch), ("primary", st0.epoch + 1))
        # Promote again: it is the primary now
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, admin(node).Promote,
                          apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)
        return r

    def test_promote_refused_while_primary_alive(self):
        p, r1 = self.p, self.r1
        last = self.wait_converged(p, [r1, self.r2])
        # r1 streams from a live primary: a second node at epoch 2 would
        # diverge from it, so Promote names the primary and does nothing
        with self.assertRaises(grpc.RpcError) as cm:
            admin(r1).Promote(apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn(p.addr, cm.exception.details())
        st = status(r1)
        self.assertEqual((st.role, st.epoch, st.last_lsn), ("replica", 1, last))
        # still following: a new write reaches it
        sid, _ = self.seed(p, 1, "after")
        self.wait_converged(p, [r1])
        self.assertEqual(newest(r1, sid).content, "after-0")
        # once the primary is gone, the same call promotes
        p.kill9()
        self.promote(r1)

    def test_failover_without_divergence(self):
        p, r1, r2 = self.p, self.r1, self.r2
        sid, acked = self.seed(p, 100, "before")
        last = self.wait_converged(p, [r1, r2])
        p.kill9()
        # primary gone: replicas still serve reads; a write they would
        # forward is UNAVAILABLE (retryable), as from the dead primary
        self.assertEqual(newest(r2, sid).content, acked[-1][1])
        self.assertStatus(grpc.StatusCode.UNAVAILABLE, agent(r2).append, sid, "nowhere")

        # promote r1 with the CLI
        rc, out, err = cli("--target", r1.addr, "--token", ADMIN, "admin", "promote")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "epoch: 2\nlsn: %d\n" % (last + 1))
        st = status(r1)
        self.assertEqual((st.role, st.epoch, st.last_lsn), ("primary", 2, last + 1))
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, admin(r1).Promote,
                          apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)

        w = Writer(lambda: r1).start()
        try:
            w.wait_writes(30)
            # r2 re-pointed at the new primary
            r2.stop()
            follow(r2, r1.addr)
            r2.start()
            # the old primary rejoins as a replica of the new one
            p.name = "old-primary"
            follow(p, r1.addr)
            p.start()
            w.wait_writes(len(w.acked) + 50)
            self.wait_connected(r1, ["r2", "old-primary"])
        finally:
            w.stop()
        self.wait_converged(r1, [r2, p])
        for n in (r2, p):
            log = n.log_text()
            self.assertNotIn("resync", log, "%s shared the new primary's history" % n.name)
            self.assertEqual(n.listen_count(), 1)
            st = status(n)
            self.assertEqual((st.role, st.epoch, st.primary), ("replica", 2, r1.addr))
        self.assertRegex(p.log_text(), r"replica of \S+ from lsn %d\b" % last)
        self.assert_holds([r1, r2, p], sid, acked)
        self.assert_holds([r1, r2, p], w.sid, w.acked)
        # writes through the old primary now go to the new one
        r, lsn = agent(p).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("via-old")]))
        self.assertGreater(int(lsn), last + 1)
        self.assertEqual(newest(r2, sid, int(lsn)).content, "via-old")
        self.wait_converged(r1, [r2, p])

    def test_failover_with_divergence(self):
        p, r1, r2 = self.p, self.r1, self.r2
        sid, acked = self.seed(p, 60, "common")
        self.wait_converged(p, [r1, r2])
        # r1 stops following; p goes on with writes only p and r2 get
        r1.kill9()
        lost_sid, _ = self.seed(p, 40, "lost")
        lost_lsn = status(p).last_lsn
        self.wait_until(lambda: status(r2).last_lsn == lost_lsn, CONVERGE_TIMEOUT,
                        "r2 at %d" % lost_lsn, [r2])
        p.kill9()
        # r1 comes back (its primary is gone) and is promoted: it never saw
        # the "lost" writes
        r1.start()
        self.assertLess(status(r1).last_lsn, lost_lsn)
        pr = self.promote(r1)
        self.assertEqual(pr.epoch, 2)
        self.assertStatus(grpc.StatusCode.NOT_FOUND, agent(r1).get, lost_sid)

        # r2 at once: it is ahead of the new primary
        r2.stop()
        follow(r2, r1.addr)
        pid = r2.start().pid
        r2.wait_serving(timeout=CONVERGE_TIMEOUT, listens=2)
        self.assertEqual(r2.pid, pid)
        r2_resync_log = r2.log_text()
        self.assertIn("ahead", r2_resync_log)
        self.assertIn("installing the snapshot", r2_resync_log)
        self.wait_connected(r1, ["r2"])

        # fencing: the old primary restarted as a primary (a zombie at
        # epoch 1) takes a write; r2 (epoch 2) pointed at it refuses it
        as_primary(p)
        p.start()
        zsid = agent(p).create(uid("u"), uid("zombie")).session_id
        r2_lsn = status(r2).last_lsn
        r2.stop()
        follow(r2, p.addr)
        r2.start()
        # the event: r2's stream to the zombie is refused as deposed
        self.wait_until(lambda: "deposed primary" in r2.log_text(), CONVERGE_TIMEOUT,
                        "r2 refused by the deposed primary", [r2, p])
        self.assertStatus(grpc.StatusCode.NOT_FOUND, agent(r2).get, zsid)
        st = status(r2)
        self.assertEqual((st.epoch, st.last_lsn), (2, r2_lsn), "nothing taken from epoch 1")
        self.assertNotIn("r2", {x.replica_id for x in status(p).replicas if x.connected})
        p.stop()
        r2.stop()
        follow(r2, r1.addr)
        r2.start()

        w = Writer(lambda: r1).start()
        try:
            # the old primary once the new one wrote past its LSN: same LSNs,
            # different epochs
            self.wait_until(lambda: status(r1).last_lsn > lost_lsn + 5, CONVERGE_TIMEOUT,
                            "new primary past lsn %d" % lost_lsn, [r1])
            p.name = "old-primary"
            follow(p, r1.addr)
            p.start()
            pid = p.pid
            p.wait_serving(timeout=CONVERGE_TIMEOUT, listens=2)
            self.assertEqual(p.pid, pid)
            w.wait_writes(len(w.acked) + 30)
            self.wait_connected(r1, ["r2", "old-primary"])
        finally:
            w.stop()
        self.wait_converged(r1, [r2, p])
        for n in (r2, p):
            st = status(n)
            self.assertEqual((st.role, st.epoch), ("replica", 2))
        self.assertNotIn("resync", r2.log_text(), "r2 came back to the history it had")
        log = p.log_text()
        self.assertIn("epoch mismatch", log, "the old primary diverged: resync\n%s" % tail(p))
        self.assertIn("installing the snapshot", log)
        # never merged: the writes only the old primary had are gone everywhere
        for n in (r1, r2, p):
            self.assertStatus(grpc.StatusCode.NOT_FOUND, agent(n).get, lost_sid)
            self.assertStatus(grpc.StatusCode.NOT_FOUND, agent(n).get, zsid)
        self.assert_holds([r1, r2, p], sid, acked)
        self.assert_holds([r1, r2, p], w.sid, w.acked)

    def test_two_promoted_from_one_lsn_are_refused(self):
        # Both replicas at one LSN, the primary gone, each promoted (what
        # the docs forbid): each writes its own record at last + 1, epoch 2,
        # and only the bytes differ. r2 re-pointed at r1 (which wrote on)
        # must be refused, not stream on as if their histories were one.
        p, r1, r2 = self.p, self.r1, self.r2
        sid, acked = self.seed(p, 10, "common")
        last = self.wait_converged(p, [r1, r2])
        p.kill9()
        self.promote(r1)
        self.promote(r2)
        r1sid = agent(r1).create(uid("u"), uid("r1-only")).session_id
        r2.stop()
        follow(r2, r1.addr)
        r2.start()
        self.wait_until(lambda: "split brain" in r2.log_text(), CONVERGE_TIMEOUT,
                        "r2 refused by r1 as a second epoch-2 primary", [r1, r2])
        self.assertIn("differs", r2.log_text())
        # nothing of r1's epoch 2 reached r2
        st = status(r2)
        self.assertEqual((st.epoch, st.last_lsn), (2, last + 1))
        self.assertStatus(grpc.StatusCode.NOT_FOUND, agent(r2).get, r1sid)
        self.assertNotIn("r2", {x.replica_id for x in status(r1).replicas if x.connected})
        self.assert_holds([r1, r2], sid, acked)
