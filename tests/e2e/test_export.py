"""UserService.ExportUser and `engram user export` through a real primary
and a replica: everything of one user (sessions with summary and end
reason, every message in seq order, memories in every state, embeddings)
and nothing of another user or tenant; one LSN for the whole export while
writes go on; a client that stops reading is cut off after
--export-send-timeout-ms and frees its place among --max-exports; tokens;
engram-min-lsn on the replica."""
import os
import shutil
import subprocess
import tempfile
import time

import grpc
from google.protobuf import json_format

from harness import (ENGRAM_CLI, FIXED_WINDOWS, KEEP, E2ETestCase, M, Server, clean_env,
                     free_port, make_keyring, pb, uid)

from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

AGENT, ADMIN, REPL, OTHER = "agent-token-x", "admin-token-x", "replica-token-x", "globex-token-x"
TOKENS = [("acme", "agent", AGENT), ("acme", "admin", ADMIN), ("acme", "replica", REPL),
          ("globex", "agent", OTHER)]
SEND_TIMEOUT_MS = 3000   # --export-send-timeout-ms of the primary
MAX_LSN_WAIT_MS = 1000   # the replica's --max-lsn-wait-ms
# A user whose export stalls a client that does not read: more bytes than
# the HTTP/2 windows hold (5 x 40 messages of 60 kB = 12 MB; the stalled
# client's windows are fixed, harness.FIXED_WINDOWS).
BIG_CALLS, BIG_PER_CALL, BIG_BYTES = 5, 40, 60000
WAIT_S = 60.0            # bound on waiting for an event (ASan is slow)


def cli(target, token, *args, timeout=60):
    argv = [ENGRAM_CLI, "--target", target, "--token", token] + [str(a) for a in args]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=clean_env())
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class Api:
    """The session, memory and user stubs of one client."""

    def __init__(self, client):
        self.c = client
        self.m = mpg.MemoryServiceStub(client.channel)
        self.u = upg.UserServiceStub(client.channel)

    def memory(self, user, text, **kw):
        return self.m.CreateMemory(mp.CreateMemoryRequest(
            memory=mp.Memory(user_id=user, text=text, type=mp.MEMORY_TYPE_PREFERENCE, **kw)),
            timeout=10, metadata=self.c.md)

    def get_memory(self, memory_id):
        return self.m.GetMemory(mp.GetMemoryRequest(memory_id=memory_id), timeout=10,
                                metadata=self.c.md)

    def export_stream(self, user, metadata=None, timeout=WAIT_S):
        md = tuple(self.c.md) + tuple(metadata or ())
        return self.u.ExportUser(up.ExportUserRequest(user_id=user), timeout=timeout, metadata=md)

    def export(self, user, metadata=None):
        return list(self.export_stream(user, metadata))


def split(responses):
    """(sessions in order, {session_id: [messages]}, memories, set of lsns)."""
    sessions, messages, memories, lsns = [], {}, [], set()
    for r in responses:
        lsns.add(r.lsn)
        kind = r.WhichOneof("item")
        if kind == "session":
            sessions.append(r.session)
            messages.setdefault(r.session.session_id, [])
        elif kind == "messages":
            # A session's messages follow it, before the next session.
            assert sessions and sessions[-1].session_id == r.messages.session_id, r
            messages[r.messages.session_id].extend(r.messages.messages)
        else:
            memories.append(r.memory)
    return sessions, messages, memories, lsns


class ExportTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-e2e-export-")
        keyring = make_keyring(os.path.join(cls.tmp, "keyring"))
        port = free_port()
        cls.primary = Server("--max-exports", "1", "--export-send-timeout-ms", SEND_TIMEOUT_MS,
                             tokens=TOKENS, keyring=keyring, port=port)
        cls.replica = Server("--role", "replica", "--primary", "127.0.0.1:%d" % port,
                             "--replica-token", REPL, "--replica-id", "r1",
                             "--max-lsn-wait-ms", MAX_LSN_WAIT_MS, tokens=TOKENS,
                             keyring=keyring, port=free_port())
        try:
            cls.primary.start()
            cls.replica.start()
        except BaseException:
            cls.tearDownClass()
            raise
        cls.api = Api(cls.primary.client(AGENT))
        cls.other = Api(cls.primary.client(OTHER))

    @classmethod
    def tearDownClass(cls):
        for s in (cls.replica, cls.primary):
            s.close()
        if not KEEP:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def fill(self, user):
        """Two sessions (one ended, with summary, metadata and end reason)
        with messages, and memories ACTIVE, DUPLICATE and DELETED (one with
        an embedding). Returns the last write's LSN."""
        c = self.api.c
        s1 = c.create(user, metadata={"topic": "tea"}).session_id
        c.append(s1, M("hello"), M("hi there", role=2), M("bye", client_message_id="m3"))
        c.update_summary(s1, "greetings exchanged", 2)
        s2 = c.create(user).session_id
        c.append(s2, *[M("msg %d" % i) for i in range(5)])
        c.stub.EndSession(pb.EndSessionRequest(session_id=s2, reason="done"), timeout=10, metadata=c.md)
        a = self.api.memory(user, "Alice likes green tea in the morning", embedding=[0.5, 0.25])
        self.api.memory(user, "alice LIKES green teas, in the morning!")
        d = self.api.memory(user, "Alice likes black coffee at night")
        self.api.m.DeleteMemory(mp.DeleteMemoryRequest(memory_id=d.memory.memory_id), timeout=10,
                                metadata=c.md)
        self.assertEqual(a.memory.state, mp.MEMORY_STATE_ACTIVE)
        _, lsn = c.call_lsn("AppendMessages", pb.AppendMessagesRequest(session_id=s1, messages=[M("last")]))
        return int(lsn)

    def expected(self, user):
        """What GetSession, ListMessages and GetMemory answer for user."""
        c = self.api.c
        sessions = [c.get(s.session_id) for s in c.list_sessions(user, page_size=100).sessions]
        messages = {s.session_id: c.all_messages(s.session_id) for s in sessions}
        listed = self.api.m.ListMemories(mp.ListMemoriesRequest(
            user_id=user, page_size=100, filter=mp.MemoryFilter(states=[1, 2, 3, 4])),
            timeout=10, metadata=c.md).memories
        memories = [self.api.get_memory(m.memory_id) for m in listed]
        return sessions, messages, memories

    def assertExportEqual(self, got, want):
        sessions, messages, memories = want
        g_sessions, g_messages, g_memories, _ = got
        key = lambda x: x.session_id  # noqa: E731
        self.assertEqual(sorted(g_sessions, key=key), sorted(sessions, key=key))
        self.assertEqual(g_messages, messages)
        mkey = lambda x: x.memory_id  # noqa: E731
        self.assertEqual(sorted(g_memories, key=mkey), sorted(memories, key=mkey))

    # ---- content ------------------------------------------------------------------

    def test_every_record_of_the_user_and_nothing_else(self):
        user = uid("alice")
        lsn = self.fill(user)
        # Same user id in another tenant; another user in this tenant.
        self.other.c.create(user)
        self.other.memory(user, "globex knows alice differently")
        bob = uid("bob")
        self.api.c.create(bob)
        self.api.memory(bob, "bob likes rain")
        want = self.expected(user)
        self.assertEqual(len(want[0]), 2)
        self.assertEqual(sorted(m.state for m in want[2]), [1, 2, 3])
        self.assertTrue(any(s.summary and s.metadata for s in want[0]))
        self.assertTrue(any(s.end_reason == "done" for s in want[0]))
        self.assertTrue(any(list(m.embedding) == [0.5, 0.25] for m in want[2]))
        got = split(self.api.export(user))
        self.assertExportEqual(got, want)
        self.assertEqual(len(got[3]), 1)
        self.assertGreaterEqual(got[3].pop(), lsn)
        # The other tenant's alice is just hers.
        g_sessions, _, g_memories, _ = split(self.other.export(user))
        self.assertEqual(len(g_sessions), 1)
        self.assertEqual([m.text for m in g_memories], ["globex knows alice differently"])

    def test_cli_writes_one_record_per_json_line(self):
        user = uid("alice")
        self.fill(user)
        want = self.expected(user)
        rc, out, err = cli(self.primary.addr, AGENT, "user", "export", user)
        self.assertEqual(rc, 0, err)
        lines = [json_format.Parse(line, up.ExportUserResponse()) for line in out.splitlines()]
        for r in lines:
            if r.WhichOneof("item") == "messages":
                self.assertEqual(len(r.messages.messages), 1)
        self.assertEqual(len(lines), 2 + 9 + 3)  # sessions, messages, memories
        self.assertExportEqual(split(lines), want)

    def test_a_user_with_nothing_exports_nothing(self):
        self.assertEqual(self.api.export(uid("nobody")), [])
        rc, out, err = cli(self.primary.addr, AGENT, "user", "export", uid("nobody"))
        self.assertEqual((rc, out, err), (0, "", ""))

    def test_bad_user_id_names_the_field(self):
        self.assertInvalid(self.api.export, "bad id", field="user_id")
        self.assertInvalid(self.api.export, "", field="user_id")
        rc, _, err = cli(self.primary.addr, AGENT, "user", "export", "bad id")
        self.assertEqual(rc, 5)  # invalid input
        self.assertIn("INVALID_ARGUMENT: user_id", err)

    def test_tokens(self):
        user = uid("alice")
        for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                            (REPL, grpc.StatusCode.PERMISSION_DENIED)):
            api = Api(self.primary.client(token))
            self.assertStatus(code, api.export, user)
        rc, _, err = cli(self.primary.addr, REPL, "user", "export", user)
        self.assertEqual(rc, 6)  # denied
        self.assertIn("PERMISSION_DENIED", err)

    # ---- one LSN; slow readers ------------------------------------------------------

    def big_user(self):
        user = uid("big")
        sid = self.api.c.create(user).session_id
        for _ in range(BIG_CALLS):
            _, lsn = self.api.c.call_lsn("AppendMessages", pb.AppendMessagesRequest(
                session_id=sid, messages=[M("x" * BIG_BYTES) for _ in range(BIG_PER_CALL)]))
        return user, sid, int(lsn)

    def test_writes_during_a_long_export_do_not_appear(self):
        user, sid, lsn = self.big_user()
        it = self.api.export_stream(user)
        first = next(it)  # the snapshot is taken; the server now waits on us
        self.assertEqual((first.WhichOneof("item"), first.lsn), ("session", lsn))
        _, l1 = self.api.c.call_lsn("AppendMessages", pb.AppendMessagesRequest(session_id=sid, messages=[M("late")]))
        late_sid = self.api.c.create(user).session_id
        late_mem = self.api.memory(user, "a memory made during the export")
        self.assertGreater(int(l1), lsn)
        sessions, messages, memories, lsns = split([first] + list(it))
        self.assertEqual(lsns, {lsn})
        self.assertEqual([s.session_id for s in sessions], [sid])
        self.assertEqual([m.seq for m in messages[sid]], list(range(1, BIG_CALLS * BIG_PER_CALL + 1)))
        self.assertEqual(memories, [])
        # A new export sees them.
        sessions, messages, memories, lsns = split(self.api.export(user))
        self.assertEqual({s.session_id for s in sessions}, {sid, late_sid})
        self.assertEqual(messages[sid][-1].content, "late")
        self.assertEqual([m.memory_id for m in memories], [late_mem.memory.memory_id])
        self.assertGreater(lsns.pop(), lsn)

    def test_a_client_that_stops_reading_is_cut_off_and_frees_its_place(self):
        user, _, _ = self.big_user()
        # Its own connection, whose windows do not grow to take the export.
        stalled = Api(self.primary.client(AGENT, options=FIXED_WINDOWS)).export_stream(user)
        next(stalled)  # then read nothing: the server's sends block
        # --max-exports 1: while it holds the place, another export is refused...
        e = self.assertStatus(grpc.StatusCode.UNAVAILABLE, self.api.export, uid("nobody"))
        self.assertIn("--max-exports", e.details())
        # ...until the stalled one is cut off: wait for that (bounded).
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                self.assertEqual(self.api.export(uid("nobody")), [])
                break
            except grpc.RpcError as err:
                self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
                self.assertLess(time.monotonic(), deadline, "the stalled export was never cut off")
                time.sleep(0.05)
        # The stalled client gets what was sent, then the reason.
        got = 0
        with self.assertRaises(grpc.RpcError) as cm:
            for r in stalled:
                got += len(r.messages.messages)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertIn("--export-send-timeout-ms", cm.exception.details())
        self.assertLess(got, BIG_CALLS * BIG_PER_CALL)
        # Its reader was released: a full export works after.
        sessions, messages, _, _ = split(self.api.export(user))
        self.assertEqual(len(messages[sessions[0].session_id]), BIG_CALLS * BIG_PER_CALL)

    # ---- replica ------------------------------------------------------------------------

    def test_through_the_replica_with_engram_min_lsn(self):
        user = uid("alice")
        lsn = self.fill(user)
        want = self.expected(user)
        rapi = Api(self.replica.client(AGENT))
        got = split(rapi.export(user, metadata=(("engram-min-lsn", str(lsn)),)))
        self.assertExportEqual(got, want)
        self.assertGreaterEqual(got[3].pop(), lsn)
        rc, out, err = cli(self.replica.addr, AGENT, "--min-lsn", lsn, "user", "export", user)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(out.splitlines()), 2 + 9 + 3)
        # An LSN nobody wrote: UNAVAILABLE after --max-lsn-wait-ms, as a read.
        e = self.assertStatus(grpc.StatusCode.UNAVAILABLE, rapi.export, user,
                              metadata=(("engram-min-lsn", str(lsn + 1000000)),))
        self.assertIn("engram-min-lsn", e.details())
