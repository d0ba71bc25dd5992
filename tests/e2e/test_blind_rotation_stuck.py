"""A blind-index rotation that cannot finish (server/blind_rotation.h "Stuck
records"): a memory whose sealed text no longer opens (one byte of it
flipped in the real LMDB file with mdb_dump/mdb_load, the server stopped)
cannot be re-indexed under the new key. The rotation converts every other
record, then pauses (it neither switches, leaving that record's tokens
under a key no query reads, nor walks the store again forever): its status
says paused, not running, with a problem naming the record and what to do;
searches keep finding every readable record; a tokenizer reindex, held off
while a rotation walks, begins and finishes; a restart keeps it paused.
Once the record is deleted, RotateBlindIndexKey (the CLI's rotate-blind)
resumes it and it switches."""
import json
import os

import grpc

from harness import E2ETestCase, pb, uid
import test_at_rest as at_rest
from test_at_rest import mdb_dump, mdb_put
from test_blind_rotation import Reads, blind_rotation, stamps
from test_key_rotation import key_status
from test_replication import cli
from engram.storage.v1 import memory_records_pb2 as mr  # noqa: E402
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402

# A few records a step: the rotation takes several steps and passes.
STEPS = ("--reindex-batch", "2")
TIMEOUT = 120.0  # the rotation's passes and a reindex, ASan being slow


def flip_text(data_dir, memory_id):
    """Flips one byte in the middle of memory_id's sealed text (its
    authentication then fails: the field does not open)."""
    header, recs = mdb_dump(data_dir, "memories")
    mine = []
    for k, v in recs:
        rec = mr.MemoryRecord.FromString(v)
        if rec.memory_id == memory_id:
            rec.text_token = at_rest.flip_middle(rec.text_token)
            mine.append((k, rec.SerializeToString()))
    if len(mine) != 1:
        raise AssertionError("memory %s: %d records in the memories DB" % (memory_id, len(mine)))
    mdb_put(data_dir, "memories", header, mine)


class StuckRotationTest(E2ETestCase):

    def status(self):
        return key_status(self.srv.client())

    def blind(self):
        return blind_rotation(self.status())

    def messages_index(self):
        st = apbg.AdminServiceStub(self.srv.client().channel).GetStatus(apb.GetStatusRequest(),
                                                                        timeout=10.0)
        (ix,) = [i for i in st.indexes if i.index == "messages"]
        return ix

    def test_an_unreadable_record_pauses_it_and_a_resume_after_the_fix_switches(self):
        # Messages unindexed: turning indexing on later begins a tokenizer
        # reindex, which waits while a rotation walks.
        self.srv = self.start_server("--index-messages=false", *STEPS)
        r = Reads(self.srv.client())
        u = uid("u")
        r.populate(u, "one")
        before = r.answers(u)
        self.assertEqual(before["messages"], [])
        v = uid("v")
        broken = r.memory(v, "a broken record about zanzibar")
        intact = r.memory(v, "an intact record about zanzibar")
        self.srv.stop()
        flip_text(self.srv.data_dir, broken)
        keys, _ = at_rest.read_keyring(self.srv.keyring_path)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(self.srv.keyring_path, keys, 2)
        self.srv.start()
        r = Reads(self.srv.client())
        # The damage is real: reading the record fails.
        with self.assertRaises(grpc.RpcError) as cm:
            r.call(r.m, "GetMemory", mp.GetMemoryRequest(memory_id=broken))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS)

        self.assertTrue(apbg.AdminServiceStub(self.srv.client().channel).RotateBlindIndexKey(
            apb.RotateBlindIndexKeyRequest(), timeout=30.0).status.running)
        # Paused, or (the old behaviour) switched: either ends the wait.
        st = self.wait_until(lambda: (lambda b: (b.paused or not b.running) and b)(self.blind()),
                             TIMEOUT, "the rotation paused", [self.srv])
        self.assertTrue(st.paused, "the rotation ended instead of pausing: %s" % st)
        self.assertFalse(st.running)
        self.assertFalse(st.HasField("finish_time"))
        for part in ("paused: 1 records (memories) cannot be re-indexed under key 2",
                     "sealed fields that do not open", "memory %s of tenant" % broken,
                     "Restore the missing master key", "rewrite or delete",
                     "engram admin keys rotate-blind"):
            self.assertIn(part, st.problem)
        self.assertIn("blind-index rotation to key 2 paused", self.srv.log_text())
        ks = self.status()
        # Both keys still read (and kept from retirement).
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (1, 2))
        self.assertEqual(r.answers(u), before)
        found = r.call(r.m, "SearchMemories", mp.SearchMemoriesRequest(user_id=v, query="intact"))
        self.assertEqual([x.memory.memory_id for x in found.results], [intact])

        # Every other record converted: only the broken one is under key 1.
        self.srv.stop()
        on_disk = stamps(self.srv.data_dir)
        self.assertEqual(len([k for k in on_disk["memories"] if k != 2]), 1, on_disk)
        for db in ("sessions", "checkpoints", "store_items"):
            self.assertTrue(on_disk[db], db)
            self.assertEqual(set(on_disk[db]), {2}, db)

        # A restart keeps it paused, and the tokenizer reindex due now
        # (indexing on) begins and finishes while it is paused.
        self.srv.extra = list(STEPS)
        self.srv.start()
        r = Reads(self.srv.client())
        again = self.blind()
        self.assertTrue(again.paused)
        self.assertFalse(again.running)
        self.assertEqual(again.problem, st.problem)
        self.wait_until(lambda: self.messages_index().version == 2, TIMEOUT,
                        "the messages reindex done while paused", [self.srv])
        self.assertIn("reindex of messages to tokenizer version 2 begins", self.srv.log_text())
        self.assertTrue(self.blind().paused)
        during = r.answers(u)
        self.assertEqual(len(during["messages"]), 1)
        self.assertEqual({k: x for k, x in during.items() if k != "messages"},
                         {k: x for k, x in before.items() if k != "messages"})

        # The fix: the record purged (a soft delete keeps it, tokens and all). The CLI resumes the rotation: a new
        # pass, which finds nothing stuck, and the switch.
        r.call(r.m, "DeleteMemory", mp.DeleteMemoryRequest(memory_id=broken, purge=True))
        rc, out, err = cli("--target", self.srv.addr, "--json", "admin", "keys", "rotate-blind")
        self.assertEqual(rc, 0, err)
        resumed = json.loads(out)["status"]
        self.assertTrue(resumed.get("running"), resumed)
        self.assertFalse(resumed.get("paused", False), resumed)
        self.assertEqual(resumed.get("problem", ""), "")
        done = self.wait_until(lambda: (lambda b: not b.running and not b.paused and b)(
            self.blind()), TIMEOUT, "the resumed rotation done", [self.srv])
        self.assertEqual(done.problem, "")
        self.assertTrue(done.HasField("finish_time"))
        ks = self.status()
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (2, 0))
        self.assertEqual(r.answers(u), during)
        found = r.call(r.m, "SearchMemories", mp.SearchMemoriesRequest(user_id=v, query="zanzibar"))
        self.assertEqual([x.memory.memory_id for x in found.results], [intact])
        # The CLI's status shows it done.
        rc, out, err = cli("--target", self.srv.addr, "--json", "admin", "keys", "status")
        self.assertEqual(rc, 0, err)
        (b,) = [x for x in json.loads(out)["rotations"] if x["kind"] == "blind_index"]
        self.assertFalse(b.get("paused", False))


if __name__ == "__main__":
    import unittest
    unittest.main()
