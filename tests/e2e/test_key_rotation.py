"""Key rotation without downtime: the keyring reloads on SIGHUP (new data
keys are wrapped under the new primary, old data reads, a keyring that does
not fit the data is refused and the old one kept); a data-key rotation of
one user or of every user re-seals their fields in the background
(progress, a restart mid-way, a replica promoted mid-way, the old
generation a tombstone, other users' records untouched, token counts).
GetKeyStatus shows the master keys, the data keys under each, the
blind-index key id, the rotation and the token counts; raw checks read the
LMDB files with mdb_dump (lmdb-utils)."""
import json
import os
import re
import signal
import subprocess

import grpc

from harness import RPC_TIMEOUT, E2ETestCase, pb, uid
import test_at_rest as at_rest
from test_checkpoints import Ckpt, W, cid
from test_memories import Mem
from test_observability import parse, scrape, value
from test_replication import ADMIN_MD, AGENT_MD, Cluster, ReplicationCase, admin, agent, cli
from test_store import Store
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

RELOAD_TIMEOUT = 10


def key_status(client):
    return apbg.AdminServiceStub(client.channel).GetKeyStatus(apb.GetKeyStatusRequest(),
                                                              timeout=10.0)


def masters(st):
    """{master key id: (data keys under it, primary, in keyring)}."""
    return {m.master_key_id: (m.data_keys, m.primary, m.in_keyring) for m in st.master_keys}


class KeyringReloadTest(E2ETestCase):

    def setUp(self):
        self.srv = self.start_server()
        self.c = self.srv.client()

    def write(self, user, text):
        sid = self.c.create(user).session_id
        self.c.append(sid, text)
        return sid

    def reload(self, want):
        """SIGHUP, then waits for the log line `want` to appear once more."""
        before = self.srv.log_text().count(want)
        os.kill(self.srv.pid, signal.SIGHUP)
        self.wait_until(lambda: self.srv.log_text().count(want) > before, RELOAD_TIMEOUT,
                        "log line %r" % want, [self.srv])

    def test_added_primary_wraps_new_keys_and_old_data_reads(self):
        old_sid = self.write(uid("alice"), "under key one")
        st = key_status(self.c)
        self.assertEqual(masters(st), {1: (1, True, True)})
        self.assertEqual((st.blind_index_key_id, st.blind_index_target_key_id), (1, 0))
        keys, _ = at_rest.read_keyring(self.srv.keyring_path)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(self.srv.keyring_path, keys, 2)
        self.reload("keyring reloaded from %s: primary key id 2, blind-index key id 1"
                    % self.srv.keyring_path)
        self.assertEqual(masters(key_status(self.c)), {1: (1, False, True), 2: (0, True, True)})
        new_sid = self.write(uid("bob"), "under key two")
        self.c.append(old_sid, "appended after the reload")
        st = key_status(self.c)
        self.assertEqual(masters(st), {1: (1, False, True), 2: (1, True, True)})
        # Adding a key (and moving the primary) leaves the blind index.
        self.assertEqual((st.blind_index_key_id, st.blind_index_target_key_id), (1, 0))
        self.assertEqual([m.content for m in self.c.all_messages(old_sid)],
                         ["under key one", "appended after the reload"])
        self.assertEqual([m.content for m in self.c.all_messages(new_sid)], ["under key two"])
        # The reload recorded key 2 in the fingerprint: a start without it
        # is refused.
        self.srv.stop()
        at_rest.write_keyring(self.srv.keyring_path, {1: keys[1]}, 1)
        p = subprocess.run(self.srv.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(b"key 2, which data here may be sealed with", p.stdout)
        at_rest.write_keyring(self.srv.keyring_path, keys, 2)
        self.srv.start()
        self.c = self.srv.client()
        self.assertEqual([m.content for m in self.c.all_messages(new_sid)], ["under key two"])

    def test_a_keyring_that_does_not_fit_is_refused_and_the_old_one_kept(self):
        sid = self.write(uid("alice"), "first")
        keys, _ = at_rest.read_keyring(self.srv.keyring_path)
        refused = "keyring reload refused, keeping the keyring in use"
        # Key 1, which the data is sealed with, missing.
        at_rest.write_keyring(self.srv.keyring_path, {2: os.urandom(32)}, 2)
        self.reload(refused)
        self.assertIn("key 1", self.srv.log_text().split(refused)[-1].splitlines()[0])
        # Another key under id 1.
        at_rest.write_keyring(self.srv.keyring_path, {1: os.urandom(32)}, 1)
        self.reload(refused)
        self.assertIn("key 1 in the keyring differs",
                      self.srv.log_text().split(refused)[-1].splitlines()[0])
        # Not a keyring at all.
        with open(self.srv.keyring_path, "w") as f:
            f.write("this is not a keyring\n")
        self.reload(refused)
        # Still serving under key 1 alone: old data reads, a new user's
        # data key is wrapped under it.
        self.c.append(sid, "second")
        self.write(uid("bob"), "a new user")
        self.assertEqual([m.content for m in self.c.all_messages(sid)], ["first", "second"])
        self.assertEqual(masters(key_status(self.c)), {1: (2, True, True)})
        self.assertNotIn("keyring reloaded", self.srv.log_text())
        # Put right: the keyring in use, nothing to swap (and no reload of
        # the bounded count spent); a key added to it then reloads.
        at_rest.write_keyring(self.srv.keyring_path, keys, 1)
        self.reload("keyring %s unchanged: kept as it is" % self.srv.keyring_path)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(self.srv.keyring_path, keys, 1)
        self.reload("keyring reloaded from %s: primary key id 1" % self.srv.keyring_path)


# ---- data-key rotation ----------------------------------------------------------

SLOW = ("--key-rotation-rate", "1", "--key-rotation-batch", "1")  # one record a second
DONE_TIMEOUT = 120.0  # bound on a rotation finishing (ASan is slow)
TENANT = "default"  # dev mode's


def rotate(client, tenant="", user=""):
    return apbg.AdminServiceStub(client.channel).RotateDataKeys(
        apb.RotateDataKeysRequest(tenant=tenant, user_id=user), timeout=30.0)


def data_rotation(st):
    (r,) = [r for r in st.rotations if r.kind == "data_keys"]
    return r


def generations(data_dir, tenant, user):
    """{generation: live} of the user's data keys, from the key store's LMDB
    file (keys: u8 len | tenant | u8 len | user | generation u32 BE ->
    KeyRecord, whose wrapped_key, field 4 of 77 bytes, a tombstone lacks)."""
    _, recs = at_rest.mdb_dump(os.path.join(data_dir, "keystore"), "keys")
    prefix = bytes([len(tenant)]) + tenant.encode() + bytes([len(user)]) + user.encode()
    return {int.from_bytes(k[-4:], "big"): b"\x22\x4d" in v
            for k, v in recs if k[:-4] == prefix and len(k) == len(prefix) + 4}


def message_values(data_dir, sid):
    _, recs = at_rest.mdb_dump(data_dir, "messages")
    return sorted(v for k, v in recs if sid.encode() in k)


def under(values, gen):
    """Format 2 field tokens (0x02 | generation u32 BE) of generation gen in
    the values."""
    return sum(v.count(b"\x02" + gen.to_bytes(4, "big")) for v in values)


class DataKeyRotationTest(E2ETestCase):

    def populate(self, srv, user):
        """A session (metadata, summary, three messages), a memory, a
        checkpoint with a pending write, all of user: every kind of record
        the rotation walks for a user."""
        c = srv.client()
        sid = c.create(user, metadata={"team": user}).session_id
        c.append(sid, "first of " + user, "second of " + user, "third of " + user)
        c.update_summary(sid, "summary of " + user, 1)
        mid = Mem(c).create(user, "memory of " + user).memory.memory_id
        ck = Ckpt(srv.addr)
        self.addCleanup(ck.close)
        ck.put(user, "t1", cid(1), data=b'{"a": 1}', metadata={"step": 1})
        ck.writes(user, "t1", cid(1), [W("task", 0, value=b'"w"')])
        return sid, mid

    def check(self, srv, user, sid, mid):
        """Everything populate wrote reads back."""
        c = srv.client()
        g = c.get(sid)
        self.assertEqual((dict(g.metadata), g.summary), ({"team": user}, "summary of " + user))
        self.assertEqual([m.content for m in c.all_messages(sid)],
                         ["first of " + user, "second of " + user, "third of " + user])
        self.assertEqual(Mem(c).get(mid).text, "memory of " + user)
        ck = Ckpt(srv.addr)
        self.addCleanup(ck.close)
        got = ck.get(user, "t1")
        self.assertEqual((got.checkpoint, json.loads(got.metadata_json)),
                         (b'{"a": 1}', {"step": 1}))
        self.assertEqual([w.value for w in got.pending_writes], [b'"w"'])

    def wait_done(self, srv, c):
        return self.wait_until(lambda: (lambda r: not r.running and r)(
            data_rotation(key_status(c))), DONE_TIMEOUT, "the data-key rotation done", [srv])

    def test_one_user_rotates_resumes_after_a_restart_and_retires_the_old_key(self):
        srv = self.start_server(*SLOW)
        c = srv.client()
        a_sid, a_mid = self.populate(srv, "alice")
        b_sid, b_mid = self.populate(srv, "bob")
        bob_before = message_values(srv.data_dir, b_sid)
        self.assertEqual(under(message_values(srv.data_dir, a_sid), 1), 3)
        self.assertInvalid(rotate, c, "", "alice", field="user_id")
        st = rotate(c, TENANT, "alice").status
        self.assertEqual((st.kind, st.scope, st.running, st.done, st.total),
                         ("data_keys", "default/alice", True, 0, 1))
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, rotate, c, TENANT, "bob")
        r = data_rotation(key_status(c))
        self.assertTrue(r.running, r)
        self.assertEqual(generations(srv.data_dir, TENANT, "alice"), {1: True, 2: True})
        # Reads go on under either generation while it runs.
        self.check(srv, "alice", a_sid, a_mid)
        # Stopped mid-rotation, it goes on from its stored state.
        srv.stop()
        srv.start()
        c = srv.client()
        self.assertTrue(data_rotation(key_status(c)).running)
        r = self.wait_done(srv, c)
        self.assertEqual((r.done, r.total, r.scope), (1, 1, "default/alice"))
        self.assertTrue(r.HasField("finish_time"))
        self.check(srv, "alice", a_sid, a_mid)
        self.check(srv, "bob", b_sid, b_mid)
        # alice's tokens are all under generation 2, generation 1 a tombstone;
        # bob's records and key are as they were.
        alice = message_values(srv.data_dir, a_sid)
        self.assertEqual((under(alice, 1), under(alice, 2)), (0, 3))
        self.assertEqual(generations(srv.data_dir, TENANT, "alice"), {1: False, 2: True})
        self.assertEqual(generations(srv.data_dir, TENANT, "bob"), {1: True})
        self.assertEqual(message_values(srv.data_dir, b_sid), bob_before)
        st = key_status(c)
        counts = {t.key: t.tokens for t in st.token_counts}
        # session metadata and summary, 3 messages, memory text, the
        # checkpoint's 3 fields and its pending write
        self.assertEqual(counts, {"data:2": 10})
        self.assertTrue(st.HasField("token_count_time"))
        self.assertIn('user "alice" of tenant default: every field token under generation 2; '
                      "1 generations below it retired", srv.log_text())

    def test_every_user_rotates_with_the_tenants_own_key(self):
        srv = self.start_server("--metrics-listen", "127.0.0.1:0")
        srv.metrics_addr = re.search(r"metrics on ([0-9.]+:\d+)", srv.log_text()).group(1)
        c = srv.client()
        a_sid, a_mid = self.populate(srv, "alice")
        b_sid, b_mid = self.populate(srv, "bob")
        Store(c).put(["prefs"], "theme", {"dark": True})
        st = rotate(c).status
        self.assertEqual((st.scope, st.total), ("", 3))  # alice, bob, the tenant's own key
        r = self.wait_done(srv, c)
        self.assertEqual(r.done, 3)
        self.check(srv, "alice", a_sid, a_mid)
        self.check(srv, "bob", b_sid, b_mid)
        self.assertEqual(json.loads(Store(c).get(["prefs"], "theme").value_json),
                         {"dark": True})
        for user in ("alice", "bob", ""):
            self.assertEqual(generations(srv.data_dir, TENANT, user), {1: False, 2: True}, user)
        counts = {t.key: t.tokens for t in key_status(c).token_counts}
        self.assertEqual(counts, {"data:2": 21})  # 10 each, and the store item
        # The gauge follows the stored counts at the thread's next look.
        self.wait_until(lambda: value(parse(scrape(srv)), "engram_field_tokens",
                                      key="data:2") == 21,
                        DONE_TIMEOUT, "engram_field_tokens{key=\"data:2\"} 21", [srv])

    def test_cli_rotates_one_user(self):
        srv = self.start_server()
        c = srv.client()
        self.populate(srv, "carol")
        rc, out, err = cli("--target", srv.addr, "admin", "keys", "rotate", "--user", "carol")
        self.assertEqual(rc, 2, out)
        self.assertIn("--user needs --tenant", err)
        rc, out, err = cli("--json", "--target", srv.addr, "admin", "keys", "rotate", "--tenant",
                           TENANT, "--user", "carol")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)["status"]
        self.assertEqual((got["kind"], got["scope"], got["running"]),
                         ("data_keys", "default/carol", True))
        self.wait_done(srv, c)
        self.assertEqual(generations(srv.data_dir, TENANT, "carol"), {1: False, 2: True})

    def test_no_key_made_for_an_erased_user(self):
        srv = self.start_server()
        c = srv.client()
        self.populate(srv, "dave")
        upg.UserServiceStub(c.channel).DeleteUser(up.DeleteUserRequest(user_id="dave"),
                                                  timeout=RPC_TIMEOUT)
        self.assertEqual(generations(srv.data_dir, TENANT, "dave"), {1: False})
        e = self.assertStatus(grpc.StatusCode.NOT_FOUND, rotate, c, TENANT, "dave")
        self.assertIn("was erased", e.details())
        # Nor does a tenant-wide rotation give it one.
        self.populate(srv, "erin")
        st = rotate(c, TENANT).status
        self.assertEqual(st.total, 1)  # erin; not dave
        self.wait_done(srv, c)
        self.assertEqual(generations(srv.data_dir, TENANT, "dave"), {1: False})
        self.assertEqual(generations(srv.data_dir, TENANT, "erin"), {1: False, 2: True})


class DataKeyRotationFailoverTest(ReplicationCase):

    def test_a_promoted_replica_resumes_the_rotation(self):
        cl = Cluster()
        self.addCleanup(cl.close)
        p = cl.primary(*SLOW)
        r = cl.replica("r1", "127.0.0.1:%d" % p.fixed_port, *SLOW)
        p.start()
        r.start()
        self.wait_connected(p, ["r1"])
        sid = agent(p).create("alice").session_id
        agent(p).append(sid, "one", "two", "three")

        def rotation_on(node):
            st = admin(node).GetKeyStatus(apb.GetKeyStatusRequest(), timeout=10.0,
                                          metadata=ADMIN_MD)
            # None until the row has reached node (a replica: replicated)
            if not any(x.kind == "data_keys" for x in st.rotations):
                return None
            return data_rotation(st)

        st = admin(p).RotateDataKeys(apb.RotateDataKeysRequest(tenant="acme", user_id="alice"),
                                     timeout=30.0, metadata=ADMIN_MD).status
        self.assertTrue(st.running)
        # The state is replicated: the replica shows the rotation running.
        self.wait_until(lambda: (lambda x: x is not None and x.running)(rotation_on(r)),
                        DONE_TIMEOUT,
                        "the rotation on the replica", [p, r])
        p.kill9()
        admin(r).Promote(apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)
        done = self.wait_until(lambda: (lambda x: x is not None and not x.running and x)(
                                   rotation_on(r)),
                               DONE_TIMEOUT, "the rotation done on the promoted replica", [r])
        self.assertEqual((done.done, done.total), (1, 1))
        msgs = agent(r).stub.ListMessages(pb.ListMessagesRequest(session_id=sid),
                                          timeout=RPC_TIMEOUT, metadata=AGENT_MD).messages
        self.assertEqual([m.content for m in msgs], ["one", "two", "three"])
        self.assertEqual(generations(r.data_dir, "acme", "alice"), {1: False, 2: True})
        self.assertEqual(under(message_values(r.data_dir, sid), 2), 3)
