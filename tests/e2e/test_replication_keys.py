"""Replicas and keys, with real processes on loopback: a replica's data is
sealed with the primary's keys, so a replica whose keyring does not fit the
primary's recorded key fingerprint (sent at the start of every stream)
applies nothing, says which key is wrong, and retries; one with the
primary's keyring follows.
"""
import os

from harness import Server, keyring_with, uid
from test_replication import TOKENS, Cluster, ReplicationCase, agent, follow, status, tail


class ReplicaKeysTest(ReplicationCase):

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)
        self.p = self.cluster.primary().start()
        c = agent(self.p)
        self.sid = c.create(uid("u"), uid("keys")).session_id
        c.append(self.sid, "sealed with key 1")

    def stranger(self, name, keyring):
        """A replica of the primary with its own keyring."""
        s = Server(tokens=TOKENS, keyring=keyring)
        s.name = name
        follow(s, self.p.addr)
        self.cluster.nodes.append(s)
        return s.start()

    def assert_refused(self, node, says):
        line = self.wait_until(
            lambda: [l for l in node.log_text().splitlines() if "refusing the log of" in l],
            30, "the refusal logged", [node])
        self.assertEqual(len(line), 1, "one line, however often it retries\n" + tail(node))
        self.assertIn(self.p.addr, line[0])
        self.assertIn(says, line[0])
        st = status(node)
        self.assertEqual((st.role, st.last_lsn), ("replica", 0), "applied nothing")
        self.assertFalse(os.path.exists(os.path.join(node.data_dir, "snapshot.mdb")))
        self.assertIsNone(node.died())

    def test_other_key_under_the_same_id_is_refused(self):
        r = self.stranger("other", keyring_with(os.path.join(self.cluster.tmp, "other"), 1))
        self.assert_refused(r, "key 1 in the keyring differs")

    def test_missing_key_is_refused(self):
        r = self.stranger("missing", keyring_with(os.path.join(self.cluster.tmp, "missing"), 2))
        self.assert_refused(r, "key 1, which")

    def test_primary_keyring_follows(self):
        r = self.cluster.replica("same", self.p.addr).start()
        self.wait_converged(self.p, [r])
        self.assertNotIn("refusing the log of", r.log_text())
        self.assertGreater(status(r).last_lsn, 0)


if __name__ == "__main__":
    import unittest
    unittest.main()
