"""Retention tiers and the sweeper through the real engramd: the policy RPCs
(defaults, per-tenant values, bad input), each tier deleting what it should
and nothing else (checked in the LMDB file with mdb_dump: no key of a swept
session or memory is left in any data DB), sweeps replicated (replica
Checksum equals the primary's), and a kill -9 in the middle of a long sweep
that loses nothing that should stay and finishes after the restart.

Retention is in seconds, so the tests wait for real time to pass: each
waits for an event (a record gone, a metric moved), never sleeps and then
asserts an absence."""
import os
import re
import shutil
import tempfile
import time
import urllib.request

import grpc

from harness import (RPC_TIMEOUT, E2ETestCase, M, Server, free_port, make_keyring, pb, uid,
                     wait_past)
from test_cli import cli
from test_memories import Mem, dump_data_dbs
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402

SEC = 1_000_000_000
WAIT = 60.0  # bound on a sweep becoming visible (ASan is slow)
FAST = ("--sweep-interval-ms", "50")
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def admin(client):
    return apbg.AdminServiceStub(client.channel)


def get_policy(client):
    return admin(client).GetRetentionPolicy(apb.GetRetentionPolicyRequest(),
                                            timeout=RPC_TIMEOUT, metadata=client.md).policy


def set_policy(client, **tiers):
    """tiers: name -> seconds, or None for the default."""
    p = apb.RetentionPolicy()
    for name, s in tiers.items():
        v = getattr(p, name)
        if s is None:
            v.is_default = True
        else:
            v.seconds = s
    return admin(client).SetRetentionPolicy(apb.SetRetentionPolicyRequest(policy=p),
                                            timeout=RPC_TIMEOUT, metadata=client.md).policy


def metrics(srv):
    with urllib.request.urlopen("http://%s/metrics" % srv.metrics_addr, timeout=10) as r:
        return r.read().decode()


def metric(text, name, kind=None):
    label = r'\{kind="%s"\}' % kind if kind else ""
    m = re.search(r"^%s%s ([0-9.e+]+)$" % (name, label), text, re.M)
    return float(m.group(1)) if m else None


def start(srv):
    srv.start()
    m = re.search(r"metrics on ([0-9.]+:\d+)", srv.log_text())
    srv.metrics_addr = m.group(1) if m else None
    return srv.client()


def keys_naming(data_dir, ident):
    """(db, key) of every data-DB key holding ident's bytes (the log, which
    records the deletes themselves, is not data)."""
    needle = ident.encode()
    return [(db, k) for db, rows in dump_data_dbs(data_dir).items() if db != "wal"
            for k, v in rows if needle in k]


class RetentionCase(E2ETestCase):
    def wait_until(self, fn, what, timeout=WAIT, srv=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fn():
                return
            time.sleep(0.05)
        self.fail("timed out waiting for %s%s" % (
            what, "\n" + srv.log_text()[-3000:] if srv else ""))

    def gone(self, fn, *args):
        try:
            fn(*args)
            return False
        except grpc.RpcError as e:
            if e.code() != NOT_FOUND:
                raise
            return True


class PolicyTest(RetentionCase):
    """GetRetentionPolicy/SetRetentionPolicy: effective values, defaults,
    per tenant, bad input."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--expired-session-retention-s", "111", "--raw-message-retention-s", "0",
                         "--memory-tombstone-retention-s", "333",
                         tokens=[("acme", "admin", "adm-a"), ("acme", "agent", "agt-a"),
                                 ("other", "admin", "adm-o")])
        cls.srv.start()
        cls.a = cls.srv.client("adm-a")
        cls.o = cls.srv.client("adm-o")

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()

    def tiers(self, p):
        return [(v.seconds, v.is_default) for v in (
            p.expired_session_retention, p.raw_message_retention, p.memory_tombstone_retention)]

    def test_defaults_set_reset_per_tenant(self):
        # From the defaults (another test of the class may have set tiers).
        set_policy(self.a, expired_session_retention=None, raw_message_retention=None,
                   memory_tombstone_retention=None)
        self.assertEqual(self.tiers(get_policy(self.o)), [(111, True), (0, True), (333, True)])
        got = set_policy(self.a, expired_session_retention=5, raw_message_retention=0)
        self.assertEqual(self.tiers(got), [(5, False), (0, False), (333, True)])
        self.assertEqual(self.tiers(get_policy(self.a)), [(5, False), (0, False), (333, True)])
        # Another tenant's policy is its own.
        self.assertEqual(self.tiers(get_policy(self.o)), [(111, True), (0, True), (333, True)])
        # is_default (what Get answers) round-trips: back to the default.
        # A tier left out keeps its stored value (raw_message_retention here).
        got = set_policy(self.a, expired_session_retention=None, memory_tombstone_retention=7)
        self.assertEqual(self.tiers(got), [(111, True), (0, False), (7, False)])
        # Two admins setting different tiers do not undo each other.
        set_policy(self.a, raw_message_retention=60)
        set_policy(self.a, expired_session_retention=9)
        self.assertEqual(self.tiers(get_policy(self.a)), [(9, False), (60, False), (7, False)])
        # An empty policy changes nothing; resetting every tier restores the defaults.
        self.assertEqual(self.tiers(set_policy(self.a)), [(9, False), (60, False), (7, False)])
        got = set_policy(self.a, expired_session_retention=None, raw_message_retention=None,
                         memory_tombstone_retention=None)
        self.assertEqual(self.tiers(got), [(111, True), (0, True), (333, True)])

    def test_bad_values_and_roles(self):
        self.assertInvalid(set_policy, self.a, raw_message_retention=-1,
                           field="policy.raw_message_retention.seconds")
        # The limit, 100 years: at it fine, past it refused.
        got = set_policy(self.a, memory_tombstone_retention=3153600000)
        self.assertEqual(got.memory_tombstone_retention.seconds, 3153600000)
        self.assertInvalid(set_policy, self.a, memory_tombstone_retention=3153600001,
                           field="policy.memory_tombstone_retention.seconds")
        self.assertInvalid(lambda: admin(self.a).SetRetentionPolicy(
            apb.SetRetentionPolicyRequest(), timeout=RPC_TIMEOUT, metadata=self.a.md),
            field="policy")
        agent = self.srv.client("agt-a")
        self.assertStatus(grpc.StatusCode.PERMISSION_DENIED, get_policy, agent)
        self.assertStatus(grpc.StatusCode.PERMISSION_DENIED, set_policy, agent,
                          raw_message_retention=1)
        set_policy(self.a)

    def test_cli_get_set(self):
        rc, out, err = cli("admin", "retention", "set", "--raw-message-retention-s", "42",
                           target=self.srv.addr, token="adm-a", json_out=True)
        self.assertEqual(rc, 0, err)
        rc, out, err = cli("admin", "retention", "set", "--memory-tombstone-retention-s", "9",
                           target=self.srv.addr, token="adm-a")
        self.assertEqual(rc, 0, err)
        # Only the tier named changed: the earlier one stays.
        self.assertEqual(self.tiers(get_policy(self.a)), [(111, True), (42, False), (9, False)])
        rc, out, err = cli("admin", "retention", "set", "--raw-message-retention-s", "default",
                           target=self.srv.addr, token="adm-a")
        self.assertEqual(rc, 0, err)
        rc, out, err = cli("admin", "retention", "get", target=self.srv.addr, token="adm-a",
                           json_out=True)
        self.assertEqual(rc, 0, err)
        self.assertIn('"memoryTombstoneRetention":{"seconds":"9","isDefault":false}', out)
        rc, out, err = cli("admin", "retention", "set", "--raw-message-retention-s", "-3",
                           target=self.srv.addr, token="adm-a")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("--raw-message-retention-s", err)
        set_policy(self.a)

    def test_flags_checked(self):
        for args, name in ((["--expired-session-retention-s", "-1"], "expired-session-retention-s"),
                           (["--sweep-batch", "0"], "sweep-batch"),
                           (["--memory-expired-grace-s", "86401"], "memory-expired-grace-s")):
            srv = Server(*args)
            try:
                with self.assertRaises(AssertionError, msg=name) as cm:
                    srv.start()
                self.assertIn(name, str(cm.exception) + srv.log_text())
            finally:
                srv.close()


class TiersTest(RetentionCase):
    """Each tier on one server (dev mode, tenant policy set per test)."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--metrics-listen", "127.0.0.1:0", "--memory-expired-grace-s", "0",
                         *FAST)
        cls.c = start(cls.srv)
        cls.mem = Mem(cls.c)

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()

    def tearDown(self):
        set_policy(self.c)

    def test_ended_session_deleted_after_retention_with_every_key(self):
        set_policy(self.c, expired_session_retention=4)
        user = uid("u")
        old = self.c.create(user).session_id
        self.c.append(old, M("a", client_message_id="c1"), M("b", client_message_id="c2"))
        self.c.update_summary(old, "sum", 1)
        ended = self.c.end(old)
        self.assertTrue(keys_naming(self.srv.data_dir, old))
        # So the second session ends 2.5 s later: inside retention below.
        wait_past(ended.end_time, 2.5)
        new = self.c.create(user).session_id
        self.c.append(new, M("c"))
        self.c.end(new)
        live = self.c.create(user).session_id  # ACTIVE, not expired: never swept
        self.wait_until(lambda: self.gone(self.c.get, old), "the ended session to be swept",
                        srv=self.srv)
        # Swept over, but ended 2.5 s later: still there, with its message.
        self.assertEqual(self.c.get(new).session_id, new)
        self.assertEqual([m.content for m in self.c.all_messages(new)], ["c"])
        self.assertEqual(self.c.get(live).session_id, live)
        # Retired first (NOT_FOUND everywhere), its messages a step later.
        self.wait_until(lambda: keys_naming(self.srv.data_dir, old) == [],
                        "the swept session's messages to be purged", srv=self.srv)
        self.assertNotIn(old, [s.session_id for s in self.c.list_sessions(user).sessions])
        self.assertGreaterEqual(metric(metrics(self.srv), "engram_swept_total", "session_gone"), 1)

    def test_raw_messages_deleted_session_and_summary_stay(self):
        user = uid("u")
        sid = self.c.create(user).session_id
        old = self.c.append(sid, M("old1"), M("old2")).messages
        self.c.update_summary(sid, "the summary", 2)
        wait_past(old[-1].create_time, 2.0)
        self.c.append(sid, M("fresh"))
        # Set now: the old messages are 2 s old, the fresh one is not.
        set_policy(self.c, raw_message_retention=1)
        self.wait_until(lambda: [m.content for m in self.c.all_messages(sid)] == ["fresh"],
                        "the old messages to be swept", srv=self.srv)
        s = self.c.get(sid)
        self.assertEqual(s.session_id, sid)
        ctx = self.c.context(sid)
        self.assertEqual(ctx.summary, "the summary")
        self.assertEqual([m.content for m in ctx.messages], ["fresh"])
        self.assertGreaterEqual(
            metric(metrics(self.srv), "engram_swept_total", "session_messages"), 2)

    def test_memory_tombstones_and_expired_purged(self):
        user = uid("u")
        dead = self.mem.create(user, "likes green tea in the morning").memory.memory_id
        keep = self.mem.create(user, "works on compilers at night").memory.memory_id
        self.mem.delete(dead)
        exp = self.mem.create(user, "is in Paris this week", expire_time={
            "seconds": int(time.time()) + 2}).memory.memory_id
        self.assertTrue(keys_naming(self.srv.data_dir, dead))
        set_policy(self.c, memory_tombstone_retention=1)
        self.wait_until(lambda: not keys_naming(self.srv.data_dir, dead),
                        "the deleted memory to be purged", srv=self.srv)
        self.wait_until(lambda: not keys_naming(self.srv.data_dir, exp),
                        "the expired memory to be purged", srv=self.srv)
        self.assertEqual(self.mem.get(keep).memory_id, keep)
        self.assertEqual([m.memory_id for m in self.mem.list(user).memories], [keep])
        t = metrics(self.srv)
        self.assertGreaterEqual(metric(t, "engram_swept_total", "memory_tombstone"), 1)
        self.assertGreaterEqual(metric(t, "engram_swept_total", "memory_expire"), 1)

    def test_last_sweep_in_status_and_metrics(self):
        before = time.time()
        def swept_since():
            st = admin(self.c).GetStatus(apb.GetStatusRequest(), timeout=RPC_TIMEOUT,
                                         metadata=self.c.md)
            return st.HasField("last_sweep_time") and st.last_sweep_time.seconds >= int(before)
        self.wait_until(swept_since, "GetStatus.last_sweep_time to move", srv=self.srv)
        t = metrics(self.srv)
        self.assertGreaterEqual(metric(t, "engram_last_sweep_timestamp_seconds"), int(before))
        for kind in ("session_gone", "session_messages", "memory_tombstone", "memory_expire",
                     "session_purge"):
            self.assertIsNotNone(metric(t, "engram_sweep_backlog", kind), kind)


class ReplicatedSweepTest(RetentionCase):
    """Sweeps are writes: a replica applies them; checksums agree."""

    def test_replica_checksum_equals_primary_after_sweep(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-ret-")
        keyring = make_keyring(os.path.join(tmp, "keyring"))
        tokens = [("acme", "admin", "adm"), ("acme", "agent", "agt"), ("acme", "replica", "rep")]
        p = Server("--session-ttl", "1", "--expired-session-retention-s", "1", *FAST,
                   tokens=tokens, keyring=keyring, port=free_port())
        r = Server(tokens=tokens, keyring=keyring, port=free_port())
        try:
            p.start()
            pc = p.client("adm")
            pa = p.client("agt")
            r.extra = ["--role", "replica", "--primary", p.addr, "--replica-token", "rep",
                       "--replica-id", "r1"]
            r.start()
            rc = r.client("adm")
            user = uid("u")
            sids = [pa.create(user).session_id for _ in range(3)]
            for s in sids:
                pa.append(s, M("x"), M("y"))
            self.wait_until(lambda: all(self.gone(pa.get, s) for s in sids),
                            "the expired sessions to be swept on the primary", srv=p)
            self.wait_until(lambda: not any(keys_naming(p.data_dir, s) for s in sids),
                            "their messages to be purged on the primary", srv=p)
            def same():
                a = admin(pc).Checksum(apb.ChecksumRequest(), timeout=RPC_TIMEOUT,
                                       metadata=pc.md)
                b = admin(rc).Checksum(apb.ChecksumRequest(), timeout=RPC_TIMEOUT,
                                       metadata=rc.md)
                return a.lsn == b.lsn and a.sha256 == b.sha256
            self.wait_until(same, "the replica's checksum to equal the primary's", srv=r)
            r.stop()
            for s in sids:
                self.assertEqual(keys_naming(r.data_dir, s), [])
            # A replica sweeps nothing of its own.
            self.assertNotIn("sweeper:", r.log_text())
        finally:
            r.close()
            p.close()
            shutil.rmtree(tmp, ignore_errors=True)


class KillDuringSweepTest(RetentionCase):
    """kill -9 while a large session is being swept in small steps: after
    the restart the sweep finishes and what should stay is intact."""

    def test_kill9_mid_sweep(self):
        srv = Server("--metrics-listen", "127.0.0.1:0", "--sweep-batch", "10",
                     "--sweep-interval-ms", "20", "--max-append-messages", "500")
        try:
            c = start(srv)
            user = uid("u")
            keep = c.create(user).session_id
            c.append(keep, *[M("keep %d" % i) for i in range(50)])
            big = c.create(user).session_id
            for b in range(6):
                c.append(big, *[M("m %d %d" % (b, i), client_message_id="k%d-%d" % (b, i))
                                for i in range(500)])
            c.end(big)
            set_policy(c, expired_session_retention=1)
            # Mid-sweep: big retired (NOT_FOUND), its messages going 10 a step.
            self.wait_until(lambda: self.gone(c.get, big) and self._swept_some(srv, big),
                            "the purge of the big session to start", srv=srv)
            srv.kill9()
            c = start(srv)
            self.assertTrue(self.gone(c.get, big))
            self.wait_until(lambda: keys_naming(srv.data_dir, big) == [],
                            "the purge to finish after restart", srv=srv)
            self.assertEqual([m.content for m in c.all_messages(keep)],
                             ["keep %d" % i for i in range(50)])
        finally:
            srv.close()

    def _swept_some(self, srv, sid):
        """Some of sid's 3000 messages purged, some left."""
        n = sum(1 for db, _ in keys_naming(srv.data_dir, sid) if db == "messages")
        return 0 < n < 3000


class HalfSweptTest(RetentionCase):
    """A session being swept is whole or gone for every RPC: retired (record
    and index entries) in one step, then its messages purged whatever the
    policy becomes. A large session, small steps, so the tests see the
    middle of its sweep."""

    N = 2000

    def setUp(self):
        self.srv = Server("--metrics-listen", "127.0.0.1:0", "--sweep-batch", "20",
                          "--sweep-interval-ms", "50", "--max-append-messages", "500")
        self.c = start(self.srv)

    def tearDown(self):
        self.srv.close()

    def big_session(self, user):
        sid = self.c.create(user).session_id
        for b in range(self.N // 500):
            self.c.append(sid, *[M("m %d %d" % (b, i), client_message_id="k%d-%d" % (b, i))
                                 for i in range(500)])
        return sid

    def messages_left(self, sid):
        return sum(1 for db, _ in keys_naming(self.srv.data_dir, sid) if db == "messages")

    def test_policy_raised_mid_sweep_still_removes_it_whole(self):
        sid = self.big_session(uid("u"))
        self.c.end(sid)
        set_policy(self.c, expired_session_retention=1)
        self.wait_until(lambda: self.messages_left(sid) < self.N, "the sweep to start",
                        srv=self.srv)
        set_policy(self.c, expired_session_retention=3600)  # raised mid-sweep
        for call in (self.c.get, self.c.all_messages, self.c.context):
            with self.assertRaises(grpc.RpcError) as cm:
                call(sid)
            self.assertEqual(cm.exception.code(), NOT_FOUND, call)
        with self.assertRaises(grpc.RpcError) as cm:
            self.c.call("UpdateSession", pb.UpdateSessionRequest(
                session_id=sid, session=pb.Session(state=pb.SESSION_STATE_ACTIVE),
                update_mask={"paths": ["state"]}))
        self.assertEqual(cm.exception.code(), NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            self.c.append(sid, M("after"))
        self.assertEqual(cm.exception.code(), NOT_FOUND)
        # The purge is not the policy's to stop.
        self.wait_until(lambda: keys_naming(self.srv.data_dir, sid) == [],
                        "the purge to finish under the raised policy", srv=self.srv)
        self.assertGreaterEqual(
            metric(metrics(self.srv), "engram_swept_total", "session_purge"), self.N)

    def test_reader_sees_whole_or_not_found(self):
        sid = self.big_session(uid("u"))
        self.c.end(sid)
        set_policy(self.c, expired_session_retention=1)
        wholes = 0
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                s = self.c.get(sid)
                listed = self.c.all_messages(sid)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), NOT_FOUND)
                break
            self.assertEqual(len(listed), s.message_count)
            self.assertEqual(len(listed), self.N)
            wholes += 1
        else:
            self.fail("the session was never swept")
        self.assertGreater(self.messages_left(sid), 0, "not caught mid-sweep")
        self.assertTrue(self.gone(self.c.all_messages, sid))
        self.assertTrue(self.gone(self.c.get, sid))

    def test_same_id_refused_until_purged_then_clean(self):
        user = uid("u")
        sid = self.big_session(user)
        self.c.end(sid)
        set_policy(self.c, expired_session_retention=1)
        self.wait_until(lambda: self.gone(self.c.get, sid), "the session to be retired",
                        srv=self.srv)
        self.assertGreater(self.messages_left(sid), 0, "not caught mid-sweep")
        with self.assertRaises(grpc.RpcError) as cm:
            self.c.create(user, session_id=sid)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("still being deleted", cm.exception.details())
        self.wait_until(lambda: keys_naming(self.srv.data_dir, sid) == [],
                        "the purge to finish", srv=self.srv)
        set_policy(self.c)
        self.assertEqual(self.c.create(user, session_id=sid).session_id, sid)
        self.assertEqual(self.c.all_messages(sid), [])
        # An old retry key names nothing now: a new message, seq 1.
        self.c.append(sid, M("fresh", client_message_id="k0-0"))
        self.assertEqual([(m.seq, m.content) for m in self.c.all_messages(sid)], [(1, "fresh")])
