"""The key store (envelope keys) with real processes: its directory and
file modes, its own replication channel (a replica holds the keys its
primary made, and reads the data sealed with them), master-key rotation by
RewrapKeys, and BackupKeys through the CLI (an LMDB file a node opens as its
key store: the documented restore).

  KeyStoreFilesTest   DATA_DIR/keystore 0700 with data.mdb 0600; --key-store
  KeyStoreReplicaTest key changes reach a replica before the data sealed with
                      them; an erasure's tombstone reaches it and its key
                      store file no longer holds the key; RewrapKeys on a
                      replica is refused
  RewrapTest          key 2 added and made primary, rewrap, status shows none
                      left under key 1, data still reads
  BackupKeysTest      `engram admin keys backup` writes a 0600 LMDB file that a
                      node opens as its key store, holding the same keys
"""
import json
import os
import re
import stat

import grpc

from harness import RPC_TIMEOUT, M, Server, keyring_with, pb, uid
import test_at_rest as at_rest
from test_replication import (ADMIN, ADMIN_MD, AGENT_MD, TOKENS, Cluster, ReplicationCase, admin,
                              agent, cli, min_lsn_md, status)
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import user_pb2 as upb  # noqa: E402
from engram.v1 import user_pb2_grpc as upbg  # noqa: E402


def key_status(srv):
    return admin(srv).GetKeyStatus(apb.GetKeyStatusRequest(), timeout=RPC_TIMEOUT,
                                   metadata=ADMIN_MD)


def under(st, key_id):
    """Data keys the status counts under master key key_id (0 if unlisted)."""
    return sum(m.data_keys for m in st.master_keys if m.master_key_id == key_id)


def write_users(srv, n, tag, users=None):
    """n users, each with a session and a message (each user's data key is
    made by its first write). Returns [(session_id, content)]; the user ids
    go into users if given."""
    out = []
    for i in range(n):
        c = agent(srv)
        user = uid("u%d" % i)
        sid = c.create(user, uid(tag)).session_id
        content = "%s secret %d" % (tag, i)
        c.append(sid, M(content))
        out.append((sid, content))
        if users is not None:
            users.append(user)
    return out


# A KeyRecord's wrapped_key as it lies in the key store's file: field 4
# (tag 0x22), 77 bytes, starting with the wrap format byte 0x01.
WRAPPED = re.compile(rb"\x22\x4d(\x01.{76})", re.S)


def wrapped_keys(node):
    """Every wrapped data key found anywhere in node's key store file
    (live rows, and any stale copy a free page or a page's slack kept)."""
    with open(os.path.join(node.data_dir, "keystore", "data.mdb"), "rb") as f:
        return set(WRAPPED.findall(f.read()))


def live_keys(node):
    """{user: wrapped key} of node's live rows of tenant acme."""
    _, recs = at_rest.mdb_dump(os.path.join(node.data_dir, "keystore"), "keys")
    out = {}
    for k, v in recs:
        m = WRAPPED.search(v)
        if m and k[:5] == b"\x04acme":
            out[k[6:6 + k[5]].decode()] = m.group(1)
    return out


def read_back(srv, written, lsn=None):
    """Each session of written reads back its message on srv (after LSN
    lsn, if given: a replica waits for it)."""
    for sid, content in written:
        r = agent(srv).stub.ListMessages(pb.ListMessagesRequest(session_id=sid),
                                         timeout=RPC_TIMEOUT,
                                         metadata=min_lsn_md(lsn) if lsn else AGENT_MD)
        assert [m.content for m in r.messages] == [content], (sid, r.messages)


class KeyStoreFilesTest(ReplicationCase):

    def test_default_dir_and_modes(self):
        c = Cluster()
        self.addCleanup(c.close)
        p = c.primary().start()
        ks = os.path.join(p.data_dir, "keystore")
        self.assertEqual(stat.S_IMODE(os.stat(ks).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(ks, "data.mdb")).st_mode), 0o600)

    def test_key_store_flag(self):
        c = Cluster()
        self.addCleanup(c.close)
        where = os.path.join(c.tmp, "elsewhere", "keys")
        os.makedirs(os.path.dirname(where), mode=0o700)
        p = c.primary("--key-store", where).start()
        self.assertEqual(stat.S_IMODE(os.stat(where).st_mode), 0o700)
        self.assertTrue(os.path.isfile(os.path.join(where, "data.mdb")))
        self.assertFalse(os.path.exists(os.path.join(p.data_dir, "keystore")))


class KeyStoreReplicaTest(ReplicationCase):

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)
        self.p = self.cluster.primary().start()
        self.r = self.cluster.replica("r1", self.p.addr).start()

    def test_replica_receives_keys_before_data(self):
        written = write_users(self.p, 5, "repl")
        lsn = status(self.p).last_lsn
        pst = key_status(self.p)
        self.assertGreaterEqual(pst.data_keys, 5, "one data key per user at least")
        # Reading at the primary's LSN on the replica opens the data: the
        # keys arrived with (before) the records.
        read_back(self.r, written, lsn=lsn)
        rst = self.wait_until(lambda: (lambda s: s if s.data_keys == pst.data_keys else None)(
            key_status(self.r)), 30, "the replica's key status equal", [self.p, self.r])
        self.assertEqual(under(rst, 1), under(pst, 1))
        # A replica restarted resumes from the version it holds.
        self.r.restart()
        more = write_users(self.p, 2, "again")
        read_back(self.r, more, lsn=status(self.p).last_lsn)
        self.assertEqual(key_status(self.r).data_keys, key_status(self.p).data_keys)

    def test_erasure_reaches_the_replica_key_store(self):
        users = []
        write_users(self.p, 3, "erase", users)
        pst = key_status(self.p)
        self.wait_until(lambda: key_status(self.r).data_keys == pst.data_keys, 30,
                        "the replica's keys", [self.p, self.r])
        before = wrapped_keys(self.r)
        self.assertEqual(before, wrapped_keys(self.p))
        live = live_keys(self.r)
        self.assertEqual(len(live), 3)
        self.assertTrue(set(live.values()) <= before)
        stub = upbg.UserServiceStub(agent(self.p).channel)
        stub.DeleteUser(upb.DeleteUserRequest(user_id=users[0]), timeout=RPC_TIMEOUT,
                        metadata=AGENT_MD)
        erased = key_status(self.p).erased_users
        self.assertGreaterEqual(erased, 1)
        self.wait_until(lambda: key_status(self.r).erased_users == erased, 30,
                        "the tombstone on the replica", [self.p, self.r])
        # The replica compacted its key store: the destroyed key is nowhere
        # in its file; the others are.
        # (Counted by the live rows' keys: a stale copy cut short in a free
        # page's slack may match WRAPPED too, and leaves with the compaction.)
        after = wrapped_keys(self.r)
        gone = [k for k, w in live.items() if w not in after]
        self.assertEqual(gone, [users[0]], "exactly the erased user's key is gone")
        self.assertTrue(after < before)
        self.assertEqual(after, wrapped_keys(self.p))

    def test_rewrap_on_replica_is_refused(self):
        e = self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, admin(self.r).RewrapKeys,
                              apb.RewrapKeysRequest(), timeout=RPC_TIMEOUT,
                              metadata=ADMIN_MD)
        self.assertIn("primary", e.details())


class RewrapTest(ReplicationCase):

    def test_rewrap_moves_every_key_to_the_new_primary_key(self):
        c = Cluster()
        self.addCleanup(c.close)
        p = c.primary().start()
        written = write_users(p, 4, "rewrap")
        before = key_status(p)
        self.assertGreaterEqual(before.data_keys, 4)
        self.assertEqual(under(before, 1), before.data_keys)
        # Key 2 added (key 1 kept) and made primary.
        with open(c.keyring) as f:
            lines = [l for l in f.read().splitlines() if l.startswith("key ")]
        extra = keyring_with(os.path.join(c.tmp, "k2"), 2)
        with open(extra) as f:
            key2 = [l for l in f.read().splitlines() if l.startswith("key ")]
        with open(c.keyring, "w") as f:
            f.write("primary 2\n" + "\n".join(lines + key2) + "\n")
        p.restart()
        rc, out, err = cli("--json", "--target", p.addr, "--token", ADMIN, "admin", "keys",
                           "rewrap", "--max", "1")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertEqual(int(got["rewrapped"]), 1)
        self.assertEqual(int(got["remaining"]), before.data_keys - 1)
        rc, out, err = cli("--json", "--target", p.addr, "--token", ADMIN, "admin", "keys",
                           "rewrap")
        self.assertEqual(rc, 0, err)
        self.assertEqual(int(json.loads(out)["remaining"]), 0)
        after = key_status(p)
        self.assertEqual(under(after, 1), 0)
        self.assertEqual(under(after, 2), before.data_keys)
        k2 = [m for m in after.master_keys if m.master_key_id == 2][0]
        self.assertTrue(k2.primary and k2.in_keyring)
        rc, out, err = cli("--target", p.addr, "--token", ADMIN, "admin", "keys", "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("master_keys.master_key_id: 2", out)
        read_back(p, written)


class BackupKeysTest(ReplicationCase):

    def test_backup_cli_writes_a_key_store_a_node_opens(self):
        c = Cluster()
        self.addCleanup(c.close)
        p = c.primary().start()
        write_users(p, 3, "bk")
        st = key_status(p)
        out_path = os.path.join(c.tmp, "keys.mdb")
        rc, out, err = cli("--json", "--target", p.addr, "--token", ADMIN, "admin", "keys",
                           "backup", "--out", out_path)
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertTrue(got["ok"])
        self.assertEqual(got["master_key_ids"], [1] if st.data_keys else [])
        self.assertEqual(stat.S_IMODE(os.stat(out_path).st_mode), 0o600)
        self.assertEqual(os.path.getsize(out_path), got["bytes"])
        # Refused over an existing file without --force.
        rc, out, err = cli("--target", p.addr, "--token", ADMIN, "admin", "keys", "backup",
                           "--out", out_path)
        self.assertNotEqual(rc, 0)
        self.assertIn("--force", err)
        rc, out, err = cli("--target", p.addr, "--token", ADMIN, "admin", "keys", "backup",
                           "--out", out_path, "--force")
        self.assertEqual(rc, 0, err)
        # The documented restore: the file as KEYSTORE_DIR/data.mdb (0600) of
        # a node, which then holds the same keys.
        ks = os.path.join(c.tmp, "restored")
        os.makedirs(ks, mode=0o700)
        os.rename(out_path, os.path.join(ks, "data.mdb"))
        other = Server(tokens=TOKENS, keyring=c.keyring)
        other.name = "restored"
        other.extra = ["--key-store", ks]
        c.nodes.append(other)
        other.start()
        rst = key_status(other)
        self.assertEqual((rst.data_keys, under(rst, 1)), (st.data_keys, under(st, 1)))


if __name__ == "__main__":
    import unittest
    unittest.main()
