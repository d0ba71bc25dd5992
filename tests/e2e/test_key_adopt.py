"""A data-key rotation of every user on a store written before envelope keys
(fixtures/store-0.14: alice and bob hold only format 1 tokens under master
key 1 and no data key) walks them too: its first phase gives each user
holding records but no data key its first one (server/key_adopt.h), then
the users' walk re-seals their format 1 tokens under it. After it the
counts show no token under master:1, every field reads back the same, and
key 1's only blocker left is the blind index (rule 2 no longer holds it).
An erased user gets no key back; a restart mid-phase resumes it."""
import os
import shutil
import signal
import tempfile

from harness import KEEP, RPC_TIMEOUT, E2ETestCase, Server
import test_at_rest as at_rest
from test_envelope_upgrade import FORMAT_1
from test_key_retire import DONE_TIMEOUT, rewrap, retire_state
from test_key_rotation import (RELOAD_TIMEOUT, data_rotation, generations, key_status,
                               message_values, rotate, under)
from test_memories import Mem
from test_reindex import fixture_store
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

TENANT = "default"
SLOW = ("--key-rotation-rate", "1", "--key-rotation-batch", "1")  # one user a second
# What the fixture holds (its README), as the API reads it.
MEMORIES = {"m-tea": "Alice likes green tea in the morning",
            "m-run": "Alice was running marathons with the children",
            "m-cafe": "Alice works at Café Nero",
            "m-bob": "Bob repaired device X-42 last week"}
MESSAGES = {"s-old1": ["The router keeps dropping connections on device X-42",
                       "Restarting the router fixed the dropping connections"],
            "s-old2": ["Printers are jammed again on the third floor"]}
PHASE_DONE = "users without a data key given one"


class AdoptTest(E2ETestCase):

    def fixture_server(self, *args):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-adopt-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        srv = Server(*args, data_dir=fixture_store(tmp), create_data_dir=False)
        self.addCleanup(srv.close)
        srv.start()
        return srv

    def check_fixture(self, srv, sessions=MESSAGES):
        c, mem = srv.client(), Mem(srv.client())
        for mid, text in MEMORIES.items():
            if mid != "m-bob" or "s-old2" in sessions:
                self.assertEqual(mem.get(mid).text, text, mid)
        for sid, texts in sessions.items():
            self.assertEqual([m.content for m in c.all_messages(sid)], texts, sid)

    def primary_key_2(self, srv):
        """Adds key 2 as the primary (SIGHUP, waited for in the log)."""
        keys, _ = at_rest.read_keyring(srv.keyring_path)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(srv.keyring_path, keys, 2)
        want = "keyring reloaded from %s: primary key id 2" % srv.keyring_path
        os.kill(srv.pid, signal.SIGHUP)
        self.wait_until(lambda: want in srv.log_text(), RELOAD_TIMEOUT, want, [srv])

    def wait_done(self, srv):
        return self.wait_until(lambda: (lambda r: not r.running and r)(
            data_rotation(key_status(srv.client()))), DONE_TIMEOUT,
            "the data-key rotation done", [srv])

    def test_rotation_of_every_user_walks_users_without_a_data_key(self):
        srv = self.fixture_server()
        c = srv.client()
        self.check_fixture(srv)
        self.primary_key_2(srv)
        self.assertEqual(rewrap(c).remaining, 0)
        for user in ("alice", "bob", ""):
            self.assertEqual(generations(srv.data_dir, TENANT, user), {}, user)
        self.assertIn("no data-key rotation of every user has run",
                      retire_state(key_status(c))[1][1])
        st = rotate(c).status
        self.assertEqual((st.scope, st.running, st.done), ("", True, 0))
        r = self.wait_done(srv)
        self.assertEqual((r.done, r.total), (2, 2))  # alice, bob
        for user in ("alice", "bob"):
            self.assertEqual(generations(srv.data_dir, TENANT, user), {1: True}, user)
        # No store items in the fixture: no tenant key made.
        self.assertEqual(generations(srv.data_dir, TENANT, ""), {})
        st = key_status(c)
        counts = {t.key: t.tokens for t in st.token_counts}
        # 4 memory texts, 3 message contents; nothing under master:1.
        self.assertEqual(counts, {"data:1": 7})
        for sid, texts in MESSAGES.items():
            values = message_values(srv.data_dir, sid)
            self.assertEqual(under(values, 1), len(texts), sid)
            self.assertFalse([v for v in values if FORMAT_1 in v], sid)
        _, recs = at_rest.mdb_dump(srv.data_dir, "memories")
        self.assertFalse([v for _, v in recs if FORMAT_1 in v])
        self.check_fixture(srv)
        # Rule 2 no longer holds key 1: the blind index does.
        retirable, blocker = retire_state(st)[1]
        self.assertFalse(retirable)
        self.assertIn("the blind index (keyword search, filters) is under key 1", blocker)
        self.assertNotIn("format 1", blocker)
        # And every field still reads after a restart.
        srv.restart()
        self.check_fixture(srv)

    def test_an_erased_user_gets_no_key(self):
        srv = self.fixture_server()
        c = srv.client()
        upg.UserServiceStub(c.channel).DeleteUser(up.DeleteUserRequest(user_id="bob"),
                                                  timeout=RPC_TIMEOUT)
        # A user erased after a key of its own: a tombstone.
        Mem(c).create("dave", "Dave likes tea")
        upg.UserServiceStub(c.channel).DeleteUser(up.DeleteUserRequest(user_id="dave"),
                                                  timeout=RPC_TIMEOUT)
        self.assertEqual(generations(srv.data_dir, TENANT, "dave"), {1: False})
        rotate(c)
        r = self.wait_done(srv)
        self.assertEqual((r.done, r.total), (1, 1))  # alice only
        self.assertEqual(generations(srv.data_dir, TENANT, "alice"), {1: True})
        self.assertEqual(generations(srv.data_dir, TENANT, "bob"), {})
        self.assertEqual(generations(srv.data_dir, TENANT, "dave"), {1: False})
        self.check_fixture(srv, sessions={"s-old1": MESSAGES["s-old1"]})

    def test_a_restart_mid_phase_resumes(self):
        srv = self.fixture_server(*SLOW)
        c = srv.client()
        rotate(c)
        # One user adopted, the phase not over (one user a second).
        self.wait_until(lambda: (lambda r: r.running and r.done == 0 and r.total == 1)(
            data_rotation(key_status(c))), DONE_TIMEOUT, "one user adopted", [srv])
        srv.stop()
        self.assertNotIn(PHASE_DONE, srv.log_text())
        srv.start()
        r = data_rotation(key_status(srv.client()))
        self.assertTrue(r.running)
        self.assertGreaterEqual(r.total, 1)  # as stored before the restart
        r = self.wait_done(srv)
        self.assertEqual((r.done, r.total), (2, 2))
        self.assertIn("2 users without a data key given one", srv.log_text())
        for user in ("alice", "bob"):
            self.assertEqual(generations(srv.data_dir, TENANT, user), {1: True}, user)
        counts = {t.key: t.tokens for t in key_status(srv.client()).token_counts}
        self.assertEqual(counts, {"data:1": 7})
        self.check_fixture(srv)

    def test_rotation_of_a_tenants_users_walks_them_too(self):
        srv = self.fixture_server()
        c = srv.client()
        st = rotate(c, TENANT).status
        self.assertEqual(st.scope, TENANT + "/*")
        r = self.wait_done(srv)
        self.assertEqual((r.done, r.total), (2, 2))
        for user in ("alice", "bob"):
            self.assertEqual(generations(srv.data_dir, TENANT, user), {1: True}, user)
        counts = {t.key: t.tokens for t in key_status(c).token_counts}
        self.assertEqual(counts, {"data:1": 7})
        self.check_fixture(srv)
