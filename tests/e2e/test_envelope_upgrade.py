"""A store written before envelope keys (fixtures/store-0.14: every field a
format 1 token under the keyring's master key) keeps opening: engramd
starts on it, reads the old data, writes new data as format 2 tokens
under the users' data keys (a key store made at start), and reads both,
also in one session holding both formats and after a restart."""
import shutil
import tempfile

from google.protobuf import field_mask_pb2

from harness import KEEP, M, E2ETestCase, Server, pb
from test_at_rest import mdb_dump
from test_memories import FACT, Mem
from test_reindex import fixture_store

# Token headers (crypto/crypto.h): format 1 names master key 1 (the
# fixture's keyring), format 2 the user's first data key.
FORMAT_1 = b"\x01\x00\x00\x00\x01"
FORMAT_2 = b"\x02\x00\x00\x00\x01"


class FormatOneStoreTest(E2ETestCase):
    def test_old_tokens_open_and_new_ones_are_format_2(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-envup-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        srv = Server(data_dir=fixture_store(tmp), create_data_dir=False)
        self.addCleanup(srv.close)
        srv.start()
        c, mem = srv.client(), Mem(srv.client())
        self.assertEqual(mem.get("m-tea").text, "Alice likes green tea in the morning")
        self.assertEqual([m.content for m in c.all_messages("s-old1")],
                         ["The router keeps dropping connections on device X-42",
                          "Restarting the router fixed the dropping connections"])
        # The 0.14 session expired long ago: reopened (with new metadata,
        # sealed by UpdateSession's prepare under alice's data key).
        c.call("UpdateSession", pb.UpdateSessionRequest(
            session_id="s-old1",
            session=pb.Session(state=pb.SESSION_STATE_ACTIVE, metadata={"era": "envelope"}),
            update_mask=field_mask_pb2.FieldMask(paths=["state", "metadata"])))
        c.append("s-old1", M("written under alice's data key"))
        new_id = mem.create("alice", "Alice now prefers black coffee", type=FACT).memory.memory_id
        for _ in range(2):  # before and after a restart (the key store is durable)
            self.assertEqual([m.content for m in c.all_messages("s-old1")][1:],
                             ["Restarting the router fixed the dropping connections",
                              "written under alice's data key"])
            self.assertEqual(mem.get(new_id).text, "Alice now prefers black coffee")
            self.assertEqual(mem.get("m-tea").text, "Alice likes green tea in the morning")
            self.assertEqual(dict(c.get("s-old1").metadata), {"era": "envelope"})
            srv.restart()
            c, mem = srv.client(), Mem(srv.client())
        srv.stop()
        _, recs = mdb_dump(srv.data_dir, "messages")
        mine = [v for k, v in recs if b"s-old1" in k]
        self.assertEqual(len(mine), 3)
        self.assertIn(FORMAT_1, mine[0])
        self.assertIn(FORMAT_1, mine[1])
        self.assertIn(FORMAT_2, mine[2])
        self.assertNotIn(FORMAT_1, mine[2])
