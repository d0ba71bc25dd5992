"""Retiring a master key (issue 12): a key id the data dir's key fingerprint
names may leave the keyring, at a SIGHUP reload or at start, only when
nothing is under it: no data key wrapped under it (`keys rewrap`), no field
token of format 1 (a finished data-key rotation of every user, `keys
rotate`), and not the blind-index key. Until then the reload is refused
(the node keeps serving with the keyring it had) and a start is refused,
each naming the key and what is still under it; GetKeyStatus says the same
per master key (`retirable`, `retire_blocker`). A key with nothing under
it is retired: the fingerprint is recorded again without it, every record
still reads, search still finds, and a restart with the smaller keyring
starts.

The blind index is under the lowest key id until a blind-index rotation
moves it: key 1 is held by that blocker while key 2 (a later primary,
rewrapped away from and counted by the rotation) is retired; then a real
blind-index rotation (`engram admin keys rotate-blind`) moves the index to
key 3 and key 1 retires too. The unit suite key_retire covers the legacy
key of a rotation still running."""
import json
import os
import signal
import subprocess

from harness import E2ETestCase, Server, scan_sanitizer, uid
import test_at_rest as at_rest
from test_key_rotation import data_rotation, key_status, rotate
from test_memories import Mem
from test_replication import (ADMIN_MD, TOKENS, Cluster, ReplicationCase, admin, agent, cli,
                              follow, status)
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402

RELOAD_TIMEOUT = 10
DONE_TIMEOUT = 120.0  # bound on a rotation finishing (ASan is slow)
REFUSED = "keyring reload refused, keeping the keyring in use"


def rewrap(client):
    return apbg.AdminServiceStub(client.channel).RewrapKeys(apb.RewrapKeysRequest(),
                                                            timeout=30.0)


def retire_state(st):
    """{master key id: (retirable, retire_blocker)}."""
    return {m.master_key_id: (m.retirable, m.retire_blocker) for m in st.master_keys}


class RetireTest(E2ETestCase):

    def setUp(self):
        self.srv = self.start_server()
        self.c = self.srv.client()
        self.keys, _ = at_rest.read_keyring(self.srv.keyring_path)

    def keyring(self, ids, primary):
        at_rest.write_keyring(self.srv.keyring_path, {i: self.keys[i] for i in ids}, primary)

    def reload(self, want):
        """SIGHUP; waits for the log line `want` to appear once more and
        returns the rest of that line."""
        before = self.srv.log_text().count(want)
        os.kill(self.srv.pid, signal.SIGHUP)
        self.wait_until(lambda: self.srv.log_text().count(want) > before, RELOAD_TIMEOUT,
                        "log line %r" % want, [self.srv])
        return self.srv.log_text().split(want)[-1].splitlines()[0]

    def refused_start(self):
        """Runs engramd with the keyring as it is: it must exit 1; its output."""
        self.srv.stop()
        p = subprocess.run(self.srv.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout)
        out = p.stdout.decode(errors="replace")
        self.assertIsNone(scan_sanitizer(out))
        return out

    def populate(self, user):
        sid = self.c.create(user, metadata={"team": user}).session_id
        self.c.append(sid, "router of " + user + " keeps dropping")
        mid = Mem(self.c).create(user, user + " likes green tea").memory.memory_id
        return sid, mid

    def check(self, user, sid, mid):
        self.assertEqual(dict(self.c.get(sid).metadata), {"team": user})
        self.assertEqual([m.content for m in self.c.all_messages(sid)],
                         ["router of " + user + " keeps dropping"])
        self.assertEqual(Mem(self.c).get(mid).text, user + " likes green tea")
        found = Mem(self.c).search(user, query="tea")
        self.assertEqual([r.memory.memory_id for r in found.results], [mid])

    def test_refused_while_anything_is_under_the_key_then_retired(self):
        users = {u: self.populate(u) for u in (uid("alice"), uid("bob"))}
        self.keys[2] = os.urandom(32)
        self.keyring((1, 2), 2)
        self.reload("keyring reloaded from %s: primary key id 2" % self.srv.keyring_path)
        # 1: data keys under key 1 (both users').
        st = retire_state(key_status(self.c))
        self.assertEqual(st[1], (False, "key 1 still wraps 2 data keys: run engram admin keys "
                                        "rewrap"))
        self.assertEqual(st[2][0], False)
        self.assertIn("key 2 is the primary of the keyring in use", st[2][1])
        self.keyring((2,), 2)
        line = self.reload(REFUSED)
        self.assertIn("key 1, which data here may be sealed with, is not in the keyring, and "
                      "cannot leave it yet: key 1 still wraps 2 data keys: run engram admin keys "
                      "rewrap", line)
        for u, (sid, mid) in users.items():  # serving with the keyring it had
            self.check(u, sid, mid)
        # A start without it is refused alike.
        out = self.refused_start()
        self.assertIn("key 1 still wraps 2 data keys: run engram admin keys rewrap", out)
        self.keyring((1, 2), 2)
        self.srv.start()
        self.c = self.srv.client()

        # 2: format 1 tokens, until a rotation of every user has run.
        r = rewrap(self.c)
        self.assertEqual((r.rewrapped, r.remaining), (2, 0))
        self.keyring((2,), 2)
        line = self.reload(REFUSED)
        self.assertIn("field tokens of format 1 may be under key 1: no data-key rotation of "
                      "every user has run: run engram admin keys rotate", line)
        self.assertIn("no data-key rotation of every user has run",
                      retire_state(key_status(self.c))[1][1])
        self.assertEqual(rotate(self.c).status.total, 2)
        self.wait_until(lambda: not data_rotation(key_status(self.c)).running, DONE_TIMEOUT,
                        "the data-key rotation done", [self.srv])

        # 3: the blind index is under key 1 (the lowest recorded id: the
        # new keyring's lowest, 2, is not taken for it).
        blocked = retire_state(key_status(self.c))[1]
        self.assertEqual(blocked[0], False)
        self.assertIn("the blind index (keyword search, filters) is under key 1", blocked[1])
        line = self.reload(REFUSED)
        self.assertIn("the blind index (keyword search, filters) is under key 1", line)
        self.assertNotIn("master key 1 retired", self.srv.log_text())

        # Key 2 (rewrapped away from, its tokens counted): retired.
        self.keys[3] = os.urandom(32)
        self.keyring((1, 2, 3), 3)
        self.reload("keyring reloaded from %s: primary key id 3" % self.srv.keyring_path)
        self.assertEqual(rewrap(self.c).remaining, 0)
        st = retire_state(key_status(self.c))
        self.assertEqual(st[2], (True, ""))
        self.assertFalse(st[1][0])
        self.assertFalse(st[3][0])  # the primary
        rc, out, err = cli("--target", self.srv.addr, "--json", "admin", "keys", "status")
        self.assertEqual(rc, 0, err)
        by_id = {m["masterKeyId"]: m for m in json.loads(out)["masterKeys"]}
        self.assertTrue(by_id[2]["retirable"])
        self.assertIn("the blind index (keyword search, filters) is under key 1",
                      by_id[1]["retireBlocker"])
        self.keyring((1, 3), 3)
        self.reload("master key 2 retired: nothing is under it")
        self.reload("keyring %s unchanged" % self.srv.keyring_path)  # it was swapped in
        self.assertEqual(sorted(m.master_key_id for m in key_status(self.c).master_keys), [1, 3])
        for u, (sid, mid) in users.items():
            self.check(u, sid, mid)
        # New data after it, and a restart with {1, 3}.
        sid = self.c.create(uid("carol")).session_id
        self.c.append(sid, "after the retirement")
        self.srv.restart()
        self.c = self.srv.client()
        for u, (sid_u, mid) in users.items():
            self.check(u, sid_u, mid)
        self.assertEqual([m.content for m in self.c.all_messages(sid)], ["after the retirement"])
        self.assertEqual(sorted(m.master_key_id for m in key_status(self.c).master_keys), [1, 3])

        # Key 1, past the blind blocker: a blind-index rotation to key 3
        # (the primary); after its switch key 1 has nothing under it.
        rc, out, err = cli("--target", self.srv.addr, "--json", "admin", "keys", "rotate-blind")
        self.assertEqual(rc, 0, err)
        self.assertTrue(json.loads(out)["status"]["running"])
        self.wait_until(lambda: key_status(self.c).blind_index_target_key_id == 0, DONE_TIMEOUT,
                        "the blind-index rotation done", [self.srv])
        ks = key_status(self.c)
        self.assertEqual(ks.blind_index_key_id, 3)
        self.assertEqual(retire_state(ks)[1], (True, ""))
        self.keyring((3,), 3)
        self.reload("master key 1 retired: nothing is under it")
        for u, (sid_u, mid) in users.items():
            self.check(u, sid_u, mid)
        self.srv.restart()
        self.c = self.srv.client()
        for u, (sid_u, mid) in users.items():
            self.check(u, sid_u, mid)
        self.assertEqual([m.content for m in self.c.all_messages(sid)], ["after the retirement"])
        self.assertEqual(sorted(m.master_key_id for m in key_status(self.c).master_keys), [3])


class ReplicaRetireTest(ReplicationCase):
    """Replicas judge a key their keyring lacks by their own copy of the
    store (the primary's, as far as applied): a replica keeps following a
    primary that retired a key the replica still holds, a replica whose
    keyring dropped a key nothing is under starts and follows a primary that
    still names it, and one lacking a key something is under is refused."""

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)
        self.keys, _ = at_rest.read_keyring(self.cluster.keyring)
        self.keys[2] = os.urandom(32)  # never primary: nothing is wrapped under it
        at_rest.write_keyring(self.cluster.keyring, self.keys, 1)
        self.p = self.cluster.primary().start()

    def node(self, name, ids):
        """A replica of the primary with a keyring of its own holding ids."""
        path = os.path.join(self.cluster.tmp, name + ".keyring")
        at_rest.write_keyring(path, {i: self.keys[i] for i in ids}, min(ids))
        s = Server(tokens=TOKENS, keyring=path)
        s.name = name
        follow(s, self.p.addr)
        self.cluster.nodes.append(s)
        return s.start()

    def key_state(self, node):
        st = admin(node).GetKeyStatus(apb.GetKeyStatusRequest(), timeout=10.0, metadata=ADMIN_MD)
        return retire_state(st)

    def test_replicas_follow_across_a_retirement(self):
        c = agent(self.p)
        sid = c.create(uid("u"), uid("retire")).session_id
        c.append(sid, "sealed before the rotation")
        holder, dropper = self.node("holder", (1, 2)), self.node("dropper", (1, 2))
        lacking = self.node("lacking", (2,))  # key 1 wraps the user's data key
        line = self.wait_until(
            lambda: [l for l in lacking.log_text().splitlines() if "refusing the log of" in l],
            30, "the refusal logged", [lacking])
        self.assertIn("key 1, which data here may be sealed with, is not in the keyring, and "
                      "cannot leave it yet: ", line[0])
        self.assertEqual(status(lacking).last_lsn, 0)
        self.assertIsNone(lacking.died())
        r = admin(self.p).RotateDataKeys(apb.RotateDataKeysRequest(), timeout=30.0,
                                         metadata=ADMIN_MD)
        self.assertEqual(r.status.total, 1)
        self.wait_until(lambda: not data_rotation(admin(self.p).GetKeyStatus(
            apb.GetKeyStatusRequest(), timeout=10.0, metadata=ADMIN_MD)).running,
            DONE_TIMEOUT, "the data-key rotation done", [self.p])
        self.wait_converged(self.p, [holder, dropper])
        # Replicas answer it too, from their copy of the store.
        for node in (self.p, holder):
            st = self.key_state(node)
            self.assertEqual(st[2], (True, ""), node.name)
            self.assertIn("key 1 is the primary of the keyring in use", st[1][1])
        # The dropper drops key 2 while the primary still names it: its
        # start retires it, and it follows.
        dropper.stop()
        at_rest.write_keyring(dropper.keyring, {1: self.keys[1]}, 1)
        dropper.start()
        self.assertIn("master key 2 retired: nothing is under it", dropper.log_text())
        # The primary retires key 2; the holder still has it, and follows.
        at_rest.write_keyring(self.cluster.keyring, {1: self.keys[1]}, 1)
        os.kill(self.p.pid, signal.SIGHUP)
        self.wait_until(lambda: "master key 2 retired" in self.p.log_text(), RELOAD_TIMEOUT,
                        "key 2 retired on the primary", [self.p])
        holder.restart()  # a new stream: the primary's fingerprint checked again
        c.append(sid, "after the retirement")
        self.wait_converged(self.p, [holder, dropper])
        for node in (holder, dropper):
            self.assertNotIn("refusing the log of", node.log_text(), node.name)
            self.assertEqual([m.content for m in agent(node).all_messages(sid)],
                             ["sealed before the rotation", "after the retirement"])
        self.assertEqual(sorted(self.key_state(holder)), [1, 2])  # still in its keyring


if __name__ == "__main__":
    import unittest
    unittest.main()
