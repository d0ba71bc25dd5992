"""Server streams (ExportUser, Backup, Snapshot, replication Stream) against
hostile or slow clients, with real engramd processes on loopback:

  StalledRequestTest  calls that send their headers and never their request:
                      past --max-exports (and the snapshot and backup caps)
                      they are refused before a thread is made for them; the
                      admitted ones end at --call-timeout-ms
                      (DEADLINE_EXCEEDED naming it) and later calls work; the
                      stream threads are capped server-wide
                      (RESOURCE_EXHAUSTED past it), the replica streams'
                      hello included; and copies of the store
                      left by a process that died (snapshot-out-*.mdb) are
                      removed at start
  SlowReaderTest      a 24 MB user and store: an export read slowly is cut
                      at --export-max-ms; a write that needs the map to grow
                      while an export holds its snapshot says so; two slow
                      backups take one backup place and leave the replica
                      snapshots theirs; a slow backup is cut at
                      --backup-max-ms
  SlowCopyTest        a Backup whose copy of the store is slow (the fault
                      shim delays its write): SIGTERM mid-copy ends engramd
                      within --shutdown-grace-ms + --call-timeout-ms, exit
                      1 naming the stuck handler; a copy that outlasted
                      --backup-max-ms ends the call DEADLINE_EXCEEDED before
                      anything is sent, and the next backup gets the place
"""
import os
import queue
import re
import signal
import threading
import time
import unittest

import grpc

from harness import FIXED_WINDOWS, E2ETestCase, M, Server, pb, uid
from test_shutdown_busy import ENGRAMD_FAULT, FaultServer, wait_log
from test_wal_archive import wait_for

from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import replication_pb2 as rpb  # noqa: E402
from engram.v1 import user_pb2 as up  # noqa: E402

AGENT, ADMIN, REPL = "agent-token-s", "admin-token-s", "replica-token-s"
TOKENS = [("acme", "agent", AGENT), ("acme", "admin", ADMIN), ("acme", "replica", REPL)]
EXPORT = "/engram.v1.UserService/ExportUser"
BACKUP = "/engram.v1.AdminService/Backup"
SNAPSHOT = "/engram.v1.ReplicationService/Snapshot"
STREAM = "/engram.v1.ReplicationService/Stream"
CALL_TIMEOUT_MS = 1500
MAX_EXPORTS = 2
WAIT_S = 60.0   # bound on waiting for an event (ASan is slow)
SLACK_THREADS = 8  # gRPC's own threads may come and go


def md(token):
    return (("authorization", "Bearer " + token),)


def threads(server):
    return len(os.listdir("/proc/%d/task" % server.pid))


class Stalled:
    """A call of `path` that sends its headers but never a request message
    (a bidi call whose request iterator never yields), with no deadline of
    its own: it ends when the server ends it, or at close()."""

    def __init__(self, channel, path, token):
        self.q = queue.Queue()
        self.done = threading.Event()
        self.started = time.monotonic()
        self.ended = None
        fn = channel.stream_stream(path, request_serializer=None, response_deserializer=None)

        def requests():
            self.q.get()
            return
            yield  # noqa: unreachable: makes this a generator

        self.call = fn(requests(), metadata=md(token))
        self.call.add_done_callback(self._on_done)

    def _on_done(self, _):
        self.ended = time.monotonic()
        self.done.set()

    def status(self):
        return self.call.code(), self.call.details() or ""

    def close(self):
        self.q.put(None)
        self.call.cancel()


class StalledRequestTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-exports", MAX_EXPORTS, "--call-timeout-ms", CALL_TIMEOUT_MS,
                            tokens=TOKENS)
        # A copy of the store left in the data dir by a process killed while
        # it streamed a backup, and a file engramd must leave alone.
        cls.stale = os.path.join(cls.server.data_dir, "snapshot-out-999999-7.mdb")
        cls.other = os.path.join(cls.server.data_dir, "notes-snapshot-out.txt")
        for p in (cls.stale, cls.other):
            with open(p, "wb") as f:
                f.write(b"\0" * 4096)
        cls.addClassCleanup(cls.server.close)  # also when the start fails
        cls.server.start()

    def channel(self, server=None):
        ch = grpc.insecure_channel((server or self.server).addr)
        self.addCleanup(ch.close)
        return ch

    def stalled(self, channel, path, token, n):
        calls = [Stalled(channel, path, token) for _ in range(n)]
        for c in calls:
            self.addCleanup(c.close)
        return calls

    def export(self, user, server=None):
        fn = self.channel(server).unary_stream(EXPORT, request_serializer=up.ExportUserRequest.SerializeToString,
                                         response_deserializer=up.ExportUserResponse.FromString)
        return list(fn(up.ExportUserRequest(user_id=user), timeout=30, metadata=md(AGENT)))

    def assertCutAtTheRequestBound(self, calls):
        for c in calls:
            self.assertTrue(c.done.wait(WAIT_S), "a stalled call was never ended")
            code, details = c.status()
            self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED, details)
            self.assertIn("--call-timeout-ms", details)
            self.assertGreaterEqual(c.ended - c.started, CALL_TIMEOUT_MS / 1000.0 - 0.2)

    def test_stalled_exports_are_refused_before_a_thread_and_cut_at_call_timeout(self):
        n = 40
        base = threads(self.server)
        calls = self.stalled(self.channel(), EXPORT, AGENT, n)
        # Past --max-exports, refused at once (no thread, no wait).
        wait_for("%d refusals" % (n - MAX_EXPORTS),
                 lambda: sum(c.done.is_set() for c in calls) >= n - MAX_EXPORTS, WAIT_S)
        refused = [c for c in calls if c.done.is_set()]
        for c in refused:
            code, details = c.status()
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
            self.assertIn("--max-exports", details)
        self.assertLessEqual(threads(self.server), base + MAX_EXPORTS + SLACK_THREADS)
        # The admitted ones wait for their request at most --call-timeout-ms.
        self.assertCutAtTheRequestBound([c for c in calls if c not in refused])
        # The places are free again: a real export works.
        self.assertEqual(self.export(uid("nobody")), [])

    def test_stalled_backup_snapshot_and_replica_stream_are_cut_at_call_timeout(self):
        ch = self.channel()
        calls = self.stalled(ch, BACKUP, ADMIN, 1) + self.stalled(ch, SNAPSHOT, REPL, 1) + \
            self.stalled(ch, STREAM, REPL, 1)
        self.assertCutAtTheRequestBound(calls)

    def test_stream_threads_are_capped_server_wide(self):
        # Replication streams whose hello never comes: no cap of their own
        # below the server-wide one. A server that waits long for requests,
        # so they all stay; two channels, which grpc may put on one
        # connection: --max-streams-per-conn lets all of them through, past
        # the cap (health watches included).
        server = self.start_server("--max-exports", MAX_EXPORTS, "--max-streams-per-conn", 200,
                                   tokens=TOKENS)
        base = threads(server)
        n = 60
        calls = self.stalled(self.channel(server), STREAM, REPL, n) + \
            self.stalled(self.channel(server), STREAM, REPL, n)
        wait_for("a refusal", lambda: any(c.done.is_set() for c in calls), WAIT_S)
        code, details = next(c for c in calls if c.done.is_set()).status()
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        self.assertIn("streams", details)
        cap = int(re.search(r"at most (\d+)", details).group(1))
        self.assertLess(cap, 2 * n)
        wait_for("%d refusals" % (2 * n - cap),
                 lambda: sum(c.done.is_set() for c in calls) >= 2 * n - cap, WAIT_S)
        self.assertLessEqual(threads(server), base + cap + SLACK_THREADS)
        # Streams of other kinds are refused too, at once...
        late = self.stalled(self.channel(server), EXPORT, AGENT, 1)[0]
        self.assertTrue(late.done.wait(WAIT_S))
        self.assertEqual(late.status()[0], grpc.StatusCode.RESOURCE_EXHAUSTED)
        # ...until the stalled ones go.
        for c in calls:
            c.close()
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                self.assertEqual(self.export(uid("nobody"), server), [])
                break
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.details())
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)

    def test_stale_copies_are_removed_at_start(self):
        self.assertFalse(os.path.exists(self.stale))
        self.assertTrue(os.path.exists(self.other))
        self.assertIn("snapshot-out-999999-7.mdb", self.server.log_text())


# ---- slow readers ---------------------------------------------------------------

EXPORT_MAX_MS = 8000
BACKUP_MAX_MS = 4000
# 24 MB of one user: more than the HTTP/2 windows hold (the streams'
# clients have theirs fixed: harness.FIXED_WINDOWS), so a client that reads
# slowly holds the server's sends back; pages of 5 messages (300 kB).
BIG_CALLS, BIG_PER_CALL, BIG_BYTES = 10, 40, 60000


class SlowReaderTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-page-size", 5, "--default-page-size", 5,
                            "--export-max-ms", EXPORT_MAX_MS, "--backup-max-ms", BACKUP_MAX_MS,
                            "--map-size", 1 << 20, tokens=TOKENS)
        cls.addClassCleanup(cls.server.close)  # also when the set-up below fails
        cls.server.start()
        cls.client = cls.server.client(AGENT)
        cls.user = uid("big")
        sid = cls.client.create(cls.user).session_id
        for _ in range(BIG_CALLS):
            cls.client.call("AppendMessages", pb.AppendMessagesRequest(
                session_id=sid, messages=[M("x" * BIG_BYTES) for _ in range(BIG_PER_CALL)]),
                timeout=60)

    def stream(self, path, request, token, resp):
        ch = grpc.insecure_channel(self.server.addr, options=FIXED_WINDOWS)
        self.addCleanup(ch.close)
        fn = ch.unary_stream(path, request_serializer=type(request).SerializeToString,
                             response_deserializer=resp.FromString)
        call = fn(request, timeout=WAIT_S * 2, metadata=md(token))
        self.addCleanup(call.cancel)
        return call

    def export_stream(self):
        return self.stream(EXPORT, up.ExportUserRequest(user_id=self.user), AGENT,
                           up.ExportUserResponse)

    def backup_stream(self):
        return self.stream(BACKUP, apb.BackupRequest(), ADMIN, apb.BackupChunk)

    def read_slowly(self, it, every_s, bound_ms):
        """Reads one item every every_s until the bound passed (then as
        fast as they come); returns (items, seconds, the RpcError)."""
        t0, got = time.monotonic(), 0
        try:
            for _ in it:
                got += 1
                if time.monotonic() - t0 < bound_ms / 1000.0 + 1:
                    time.sleep(every_s)
        except grpc.RpcError as e:
            return got, time.monotonic() - t0, e
        self.fail("the stream ended well after %d items in %.1f s" % (got, time.monotonic() - t0))

    def test_a_slow_export_is_cut_at_export_max_ms(self):
        got, took, e = self.read_slowly(self.export_stream(), 1.0, EXPORT_MAX_MS)
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e.details())
        self.assertIn("--export-max-ms", e.details())
        self.assertLess(got, 1 + BIG_CALLS * BIG_PER_CALL // 5)
        self.assertLess(took, EXPORT_MAX_MS / 1000.0 + WAIT_S)

    def test_a_write_that_cannot_grow_the_map_names_the_long_read(self):
        writer = self.server.client(AGENT)
        sid = writer.create(uid("w")).session_id
        it = self.export_stream()
        next(it)  # the snapshot is taken; the export now waits on us
        err = None
        for _ in range(60):
            if it.done():
                # It ended before the map filled (cut at --export-max-ms on
                # a slow machine): the test needs a long read still open,
                # so open another.
                it = self.export_stream()
                next(it)
            try:
                writer.call("AppendMessages", pb.AppendMessagesRequest(
                    session_id=sid, messages=[M("y" * BIG_BYTES) for _ in range(BIG_PER_CALL)]),
                    timeout=60)
            except grpc.RpcError as e:
                err = e
                break
        self.assertIsNotNone(err, "the map never needed to grow")
        self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
        self.assertIn("long read", err.details())
        self.assertIn("long read", self.server.log_text())
        it.cancel()
        # Once the export is gone the map grows again.
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                writer.append(sid, M("z" * BIG_BYTES))
                break
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                self.assertLess(time.monotonic(), deadline)

    def test_slow_backups_leave_replica_snapshots_their_places(self):
        first = self.backup_stream()
        self.assertGreater(next(first).size, 0)  # copied, streaming; then read no more
        second = self.backup_stream()
        try:
            next(second)
            second_held = True
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
            self.assertIn("backups", e.details())
            second_held = False
        # A replica's snapshot still gets its copy, whole.
        chunks = list(self.stream(SNAPSHOT, rpb.SnapshotRequest(replica_id="r9"), REPL,
                                  rpb.SnapshotChunk))
        self.assertTrue(chunks[-1].last)
        self.assertEqual(chunks[-1].total_bytes, sum(len(c.data) for c in chunks))
        self.assertFalse(second_held, "a second backup got a place while one runs")
        # The stalled backup, read on slowly, is cut at --backup-max-ms.
        _, _, e = self.read_slowly(first, 1.0, BACKUP_MAX_MS)
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e.details())
        self.assertIn("--backup-max-ms", e.details())

    def test_a_slow_backup_is_cut_at_backup_max_ms(self):
        got, took, e = self.read_slowly(self.backup_stream(), 1.0, BACKUP_MAX_MS)
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e.details())
        self.assertIn("--backup-max-ms", e.details())
        self.assertLess(took, BACKUP_MAX_MS / 1000.0 + WAIT_S)


# ---- slow copies --------------------------------------------------------------

COPY_GRACE_MS, COPY_CALL_TIMEOUT_MS = 300, 1500


@unittest.skipUnless(os.path.isfile(ENGRAMD_FAULT), "engramd-fault not built")
class SlowCopyTest(E2ETestCase):
    def slow_copy_server(self, delay_ms, *args):
        """engramd-fault with a few sessions, the next copy of the store's
        first write armed to sleep delay_ms."""
        srv = FaultServer("--shutdown-grace-ms", COPY_GRACE_MS, *args, tokens=TOKENS)
        srv.env["ENGRAM_FAULT_CTL"] = os.path.join(srv.tmp, "fault.ctl")
        self.addCleanup(srv.close)
        srv.start()
        c = srv.client(AGENT)
        for i in range(20):
            c.create(uid("c%d" % i))
        with open(srv.env["ENGRAM_FAULT_CTL"], "w") as f:
            f.write("point=write,path=snapshot-out,nth=1,count=1,delay_ms=%d,gen=1" % delay_ms)
        os.kill(srv.pid, signal.SIGUSR1)
        wait_log(srv, "engram-fault: armed gen=1")
        return srv

    def backup(self, srv, out):
        """Runs a Backup to its end; out gets (chunks, code, details)."""
        ch = grpc.insecure_channel(srv.addr)
        self.addCleanup(ch.close)
        fn = ch.unary_stream(BACKUP, request_serializer=apb.BackupRequest.SerializeToString,
                             response_deserializer=apb.BackupChunk.FromString)
        chunks = []
        try:
            for c in fn(apb.BackupRequest(), timeout=WAIT_S * 2, metadata=md(ADMIN)):
                chunks.append(c)
            out.append((chunks, grpc.StatusCode.OK, ""))
        except grpc.RpcError as e:
            out.append((chunks, e.code(), e.details()))

    def test_sigterm_during_a_backup_copy_exits_within_grace_and_call_timeout(self):
        delay_ms = 25000
        srv = self.slow_copy_server(delay_ms, "--call-timeout-ms", COPY_CALL_TIMEOUT_MS)
        out = []
        t = threading.Thread(target=self.backup, args=(srv, out), daemon=True)
        t.start()
        wait_log(srv, "engram-fault: hit point=write")
        p, t0 = srv.proc, time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=delay_ms / 1000.0 + WAIT_S)
        took = time.monotonic() - t0
        srv.proc = None
        t.join(WAIT_S)
        log = srv.log_text()
        self.assertEqual(rc, 1, "exit status %s after %.1f s; log:\n%s" % (rc, took, log[-3000:]))
        self.assertIn("a handler is still running %d ms after the calls were cancelled"
                      % COPY_CALL_TIMEOUT_MS, log)
        # The bound, not the copy: far less than the copy's sleep.
        self.assertLess(took, delay_ms / 1000.0 / 2, log[-3000:])
        self.assertEqual(len(out), 1)
        chunks, code, details = out[0]
        self.assertEqual(chunks, [])
        self.assertNotEqual(code, grpc.StatusCode.OK, details)

    def test_a_copy_past_backup_max_ms_ends_before_sending_and_frees_the_place(self):
        max_ms, delay_ms = 1000, 3000
        srv = self.slow_copy_server(delay_ms, "--backup-max-ms", max_ms)
        out = []
        t0 = time.monotonic()
        self.backup(srv, out)
        chunks, code, details = out[0]
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED, details)
        self.assertIn("--backup-max-ms (%d ms)" % max_ms, details)
        self.assertIn("before its first response", details)
        self.assertEqual(chunks, [])
        self.assertGreaterEqual(time.monotonic() - t0, delay_ms / 1000.0 - 0.2)
        # Its place is free: the next backup (a copy not slowed) is whole.
        self.backup(srv, out)
        chunks, code, details = out[1]
        self.assertEqual(code, grpc.StatusCode.OK, details)
        self.assertTrue(chunks[-1].last)
        self.assertEqual(chunks[-1].total_bytes, sum(len(c.data) for c in chunks))
