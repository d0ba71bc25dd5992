"""A blind-index rotation that cannot finish (server/blind_rotation.h "Stuck
records"): a memory whose sealed text no longer opens (one byte of it
flipped in the real LMDB file with mdb_dump/mdb_load, the server stopped)
cannot be re-indexed under the new key. The rotation converts every other
record, then pauses (it neither switches, leaving that record's tokens
under a key no query reads, nor walks the store again forever): its status
says paused, not running, with a problem naming the record and what to do;
searches keep finding every readable record; a restart keeps it paused; a
tokenizer reindex, held off while a rotation walks, begins and finishes
(a resume is refused while it runs). Once the record is purged,
RotateBlindIndexKey (the CLI's rotate-blind) resumes it and it switches.
Likewise a message whose converted write the store refuses (its stored
index fields malformed), where the old walk went round for ever."""
import json
import os
import shutil
import tempfile
import time

import grpc

from harness import KEEP, E2ETestCase, Server, pb, uid
import test_at_rest as at_rest
from test_at_rest import mdb_dump, mdb_put
from test_blind_rotation import Reads, blind_rotation, stamps
from test_checkpoints import Ckpt, cid
from test_key_rotation import TENANT, generations, key_status
from test_reindex import finished, fixture_store, indexes
from test_replication import ADMIN_MD, Cluster, ReplicationCase, admin, agent, cli
from engram.storage.v1 import memory_records_pb2 as mr  # noqa: E402
from engram.storage.v1 import records_pb2 as rpb  # noqa: E402
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402

# A few records a step: the rotation takes several steps and passes.
STEPS = ("--reindex-batch", "2")
# One record a step, two steps a second: the messages reindex takes
# seconds, observably running.
SLOW = ("--reindex-rate", "2", "--reindex-batch", "1")
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


def malform_message(data_dir, sid, seq):
    """Gives message seq of sid a term at tokenizer version 2 without its
    count (index_tf): the rotation's walk converts it (from its content),
    but the store refuses the write (eg_store_message_reindex: the stored
    index fields are malformed). Returns (header, its key, its value before)
    for mdb_put to repair it."""
    header, recs = mdb_dump(data_dir, "messages")
    tail = sid.encode() + seq.to_bytes(8, "big")
    mine = [(k, v) for k, v in recs if k.endswith(tail)]
    if len(mine) != 1:
        raise AssertionError("message %d of %s: %d records" % (seq, sid, len(mine)))
    # index_version (field 8) 2, index_terms (field 9, packed fixed64): one
    # term, no index_tf.
    (k, v), = mine
    mdb_put(data_dir, "messages", header,
            [(k, v + b"\x40\x02" + b"\x4a\x08" + (7).to_bytes(8, "little"))])
    return header, k, v


def add_key2(keyring):
    """Key 2, made primary, in the keyring file (its server stopped)."""
    keys, _ = at_rest.read_keyring(keyring)
    keys[2] = os.urandom(32)
    at_rest.write_keyring(keyring, keys, 2)


def start_rotation(srv):
    return apbg.AdminServiceStub(srv.client().channel).RotateBlindIndexKey(
        apb.RotateBlindIndexKeyRequest(), timeout=30.0).status


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
        sid = self.srv.client().create(u).session_id
        for i in range(6):
            self.srv.client().append(sid, "zeppelin number %d" % i)
        before = r.answers(u)
        self.assertEqual(before["messages"], [])
        v = uid("v")
        broken = r.memory(v, "a broken record about zanzibar")
        intact = r.memory(v, "an intact record about zanzibar")
        self.srv.stop()
        flip_text(self.srv.data_dir, broken)
        add_key2(self.srv.keyring_path)
        self.srv.start()
        r = Reads(self.srv.client())
        # The damage is real: reading the record fails.
        with self.assertRaises(grpc.RpcError) as cm:
            r.call(r.m, "GetMemory", mp.GetMemoryRequest(memory_id=broken))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS)

        self.assertTrue(start_rotation(self.srv).running)
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
        # The line follows the paused row's commit (which the status reads).
        self.wait_until(lambda: "blind-index rotation to key 2 paused" in self.srv.log_text(),
                        TIMEOUT, "the log line saying the rotation paused", [self.srv])
        # The CLI's readable status shows it paused, and why.
        rc, out, err = cli("--target", self.srv.addr, "admin", "keys", "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("paused: true", out)
        self.assertIn("memory %s of tenant" % broken, out)
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
        # (indexing on) begins and finishes while it is paused; a resume is
        # refused while it runs.
        self.srv.extra = list(SLOW)
        self.srv.start()
        r = Reads(self.srv.client())
        again = self.blind()
        self.assertTrue(again.paused)
        self.assertFalse(again.running)
        self.assertEqual(again.problem, st.problem)
        self.wait_until(lambda: self.messages_index().target_version == 2, TIMEOUT,
                        "the messages reindex running while paused", [self.srv])
        with self.assertRaises(grpc.RpcError) as cm:
            start_rotation(self.srv)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("a reindex of messages to tokenizer version 2 is running",
                      cm.exception.details())
        self.assertTrue(self.blind().paused)
        self.wait_until(lambda: self.messages_index().version == 2, TIMEOUT,
                        "the messages reindex done while paused", [self.srv])
        self.assertIn("reindex of messages to tokenizer version 2 begins", self.srv.log_text())
        self.assertTrue(self.blind().paused)
        during = r.answers(u)
        self.assertEqual(len(during["messages"]), 1)
        zep = self.srv.client().call("SearchMessages", pb.SearchMessagesRequest(
            user_id=u, query="zeppelin"))
        self.assertEqual(len(zep.results), 6)
        self.assertEqual({k: x for k, x in during.items() if k != "messages"},
                         {k: x for k, x in before.items() if k != "messages"})

        # The fix: the record purged (a soft delete keeps it, tokens and
        # all). The CLI resumes the rotation: a new pass, which finds
        # nothing stuck, and the switch.
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
        zep = self.srv.client().call("SearchMessages", pb.SearchMessagesRequest(
            user_id=u, query="zeppelin"))
        self.assertEqual(len(zep.results), 6)
        found = r.call(r.m, "SearchMemories", mp.SearchMemoriesRequest(user_id=v, query="zanzibar"))
        self.assertEqual([x.memory.memory_id for x in found.results], [intact])
        # The CLI's status shows it done.
        rc, out, err = cli("--target", self.srv.addr, "--json", "admin", "keys", "status")
        self.assertEqual(rc, 0, err)
        (b,) = [x for x in json.loads(out)["rotations"] if x["kind"] == "blind_index"]
        self.assertFalse(b.get("paused", False))

    def test_a_refused_record_pauses_it_instead_of_walking_forever(self):
        """Gap 1 of the old walk: a record whose converted write the store
        refuses was found by every pass, so the rotation walked the store
        again forever (and held off every tokenizer reindex)."""
        self.srv = self.start_server("--index-messages=false", *STEPS)
        c = self.srv.client()
        u = uid("u")
        bad = c.create(u, metadata={"team": "red"}).session_id
        c.append(bad, "the zeppelin hovers over the harbour")
        good = c.create(u, metadata={"team": "red"}).session_id
        c.append(good, "a second zeppelin")
        self.srv.stop()
        header, key, was = malform_message(self.srv.data_dir, bad, 1)
        add_key2(self.srv.keyring_path)
        self.srv.start()
        self.assertTrue(start_rotation(self.srv).running)
        # Paused, or (the old behaviour) a third pass begun: either ends
        # the wait.
        st = self.wait_until(
            lambda: (lambda b: (b.paused or not b.running or
                                self.srv.log_text().count("walking again") >= 3) and b)(
                self.blind()), TIMEOUT, "the rotation paused", [self.srv])
        self.assertTrue(st.paused, "not paused: %s\n%s" % (st, self.logs(self.srv)))
        self.assertFalse(st.running)
        for part in ("paused: 1 records (messages) cannot be re-indexed under key 2",
                     "records whose re-indexed copy is refused",
                     "message 1 of session %s of tenant" % bad, "rotate-blind"):
            self.assertIn(part, st.problem)
        # The other session's metadata tokens converted; both still listed.
        listed = self.srv.client().call("ListSessions", pb.ListSessionsRequest(
            user_id=u, metadata_equals=[pb.ListSessionsRequest.MetadataEquals(
                key="team", value="red")], page_size=10))
        self.assertEqual(sorted(s.session_id for s in listed.sessions), sorted([bad, good]))

        # A restart keeps it paused.
        self.srv.stop()
        self.srv.start()
        self.assertTrue(self.blind().paused)
        # The fix: the record repaired (its bytes as they were: a delete of
        # its session is refused too, DATA_LOSS); the resumed rotation
        # switches.
        with self.assertRaises(grpc.RpcError) as cm:
            self.srv.client().call("DeleteSession", pb.DeleteSessionRequest(session_id=bad))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS)
        self.srv.stop()
        mdb_put(self.srv.data_dir, "messages", header, [(key, was)])
        self.srv.start()
        self.assertTrue(self.blind().paused)
        rc, out, err = cli("--target", self.srv.addr, "admin", "keys", "rotate-blind")
        self.assertEqual(rc, 0, err)
        self.wait_until(lambda: (lambda b: not b.running and not b.paused and b)(
            self.blind()), TIMEOUT, "the resumed rotation done", [self.srv])
        ks = self.status()
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (2, 0))
        listed = self.srv.client().call("ListSessions", pb.ListSessionsRequest(
            user_id=u, metadata_equals=[pb.ListSessionsRequest.MetadataEquals(
                key="team", value="red")], page_size=10))
        self.assertEqual(sorted(s.session_id for s in listed.sessions), sorted([bad, good]))

    def test_a_tokenizer_reindex_while_paused_keeps_each_memorys_key(self):
        """A memory left under the old key by a paused rotation (one stuck
        while unreadable, readable again since) gets its new terms under
        its own key from a tokenizer reindex run meanwhile, not the write
        key's: else its stamp (the old key) and its terms (the new) differ
        and no search finds it. The store: the 0.14 fixture (memories at
        tokenizer version 1, stamped 0: the legacy key 1), with the row of
        a rotation to key 2 paused put in key_jobs before its first start
        (mdb_load), so the memories reindex runs under that pause."""
        tmp = tempfile.mkdtemp(prefix="engram-e2e-stuck-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        data = fixture_store(tmp)
        keyring = os.path.join(data, "keyring")
        keys, _ = at_rest.read_keyring(keyring)
        self.assertEqual(sorted(keys), [1])
        keys[2] = os.urandom(32)
        at_rest.write_keyring(keyring, keys, 2)
        row = rpb.BlindIndexKeyRecord(key_id=1, target_key_id=2, legacy_key_id=1, pass_found=1,
                                      pass_stuck=1, paused=True, problem="paused: set by the test",
                                      start_time_us=int(time.time() * 1e6))
        header = ["VERSION=3", "format=bytevalue", "type=btree", "HEADER=END"]
        mdb_put(data, "key_jobs", header, [(b"blind_index", row.SerializeToString())])
        self.srv = Server(*SLOW, data_dir=data, create_data_dir=False)
        self.addCleanup(self.srv.close)
        self.srv.start()
        self.assertTrue(self.blind().paused)

        def index_states():
            return indexes(apbg.AdminServiceStub(self.srv.client().channel).GetStatus(
                apb.GetStatusRequest(), timeout=10.0))

        self.assertEqual(index_states()["memories"][:2], (1, 2))  # it runs under the pause
        self.wait_until(lambda: finished(index_states()), TIMEOUT, "the reindexes done",
                        [self.srv])
        r = Reads(self.srv.client())

        def found(user, query):
            return sorted(x.memory.memory_id for x in r.call(r.m, "SearchMemories",
                          mp.SearchMemoriesRequest(user_id=user, query=query)).results)

        self.assertTrue(self.blind().paused)
        self.assertEqual(found("alice", "green tea"), ["m-tea"])
        self.assertEqual(found("alice", "run"), ["m-run"])  # version 2's stem
        self.assertEqual(found("bob", "device"), ["m-bob"])
        # Resumed: every memory moved to key 2, still found.
        self.assertTrue(start_rotation(self.srv).running)
        self.wait_until(lambda: (lambda b: not b.running and not b.paused and b)(self.blind()),
                        TIMEOUT, "the resumed rotation done", [self.srv])
        self.assertEqual(found("alice", "green tea"), ["m-tea"])
        self.assertEqual(found("alice", "run"), ["m-run"])
        self.assertEqual(found("bob", "device"), ["m-bob"])

    def test_checkpoints_an_unfinished_erasure_left_do_not_pause_it(self):
        """A DeleteUser that died after destroying the user's data key and
        before its last erase step leaves checkpoints no key opens. Made
        here as that crash leaves them: the erasure run whole, then the
        user's checkpoint records put back as they were (the server
        stopped). The rotation finds their user among the erased ones and
        leaves them uncounted (as the user's other records): it switches
        rather than pause on 'checkpoints whose user holds no data key'."""
        self.srv = self.start_server(*STEPS)
        ck = Ckpt(self.srv.addr)
        self.addCleanup(ck.close)
        for i in range(3):
            ck.put("gone", "t%d" % i, cid(1), metadata={"step": i})
        ck.put("alive", "t1", cid(1), metadata={"step": 9})
        r = Reads(self.srv.client())
        kept = r.memory("alive", "alive likes zanzibar")
        self.srv.stop()
        header, before = mdb_dump(self.srv.data_dir, "checkpoints")
        self.srv.start()
        ck = Ckpt(self.srv.addr)  # the restart's port
        self.addCleanup(ck.close)
        ck.delete_user("gone")
        self.srv.stop()
        self.assertEqual(generations(self.srv.data_dir, TENANT, "gone"), {1: False})
        _, after = mdb_dump(self.srv.data_dir, "checkpoints")
        left = [kv for kv in before if kv not in after]
        self.assertEqual(len(left), 3)
        mdb_put(self.srv.data_dir, "checkpoints", header, left)
        add_key2(self.srv.keyring_path)
        self.srv.start()
        self.assertTrue(start_rotation(self.srv).running)
        st = self.wait_until(lambda: (lambda b: (b.paused or not b.running) and b)(self.blind()),
                             TIMEOUT, "the rotation ended or paused", [self.srv])
        self.assertFalse(st.paused, st.problem)
        self.assertTrue(st.HasField("finish_time"))
        self.assertEqual((self.status().blind_index_key_id, self.status().blind_index_target_key_id),
                         (2, 0))
        self.assertIn("left under key 1 (checkpoint 4:gone2:t00:12:%s: metadata cannot be read: "
                      "the data of user \"gone\" was erased" % cid(1), self.srv.log_text())
        r = Reads(self.srv.client())
        found = r.call(r.m, "SearchMemories", mp.SearchMemoriesRequest(user_id="alive",
                                                                       query="zanzibar"))
        self.assertEqual([x.memory.memory_id for x in found.results], [kept])
        # Running that DeleteUser again removes them.
        ck = Ckpt(self.srv.addr)
        self.addCleanup(ck.close)
        ck.delete_user("gone")
        _, end = mdb_dump(self.srv.data_dir, "checkpoints")
        self.assertFalse([kv for kv in left if kv in end])


class StuckRotationReplicaTest(ReplicationCase):

    def test_the_pause_replicates_and_a_promoted_replica_resumes_it(self):
        """The row replicates: the replica shows the rotation paused with
        the primary's problem; promoted, it keeps it paused (no step) until
        asked, then resumes it and, its own copy of the record being
        intact, switches."""
        cl = Cluster()
        self.addCleanup(cl.close)
        p = cl.primary(*STEPS)
        r = cl.replica("r1", "127.0.0.1:%d" % p.fixed_port, *STEPS)
        p.start()
        r.start()
        self.wait_connected(p, ["r1"])
        reads = Reads(agent(p))
        u = uid("u")
        reads.populate(u, "one")
        before = reads.answers(u)
        broken = reads.memory(u, "a broken record about zanzibar")
        # Damaged on the primary's disk only; key 2 as primary on both.
        p.stop()
        flip_text(p.data_dir, broken)
        add_key2(cl.keyring)
        p.start()
        r.restart()
        self.wait_connected(p, ["r1"])

        def blind(node):
            return blind_rotation(admin(node).GetKeyStatus(apb.GetKeyStatusRequest(),
                                                           timeout=10.0, metadata=ADMIN_MD))

        st = admin(p).RotateBlindIndexKey(apb.RotateBlindIndexKeyRequest(), timeout=30.0,
                                          metadata=ADMIN_MD).status
        self.assertTrue(st.running)
        st = self.wait_until(lambda: (lambda b: b and b.paused and b)(blind(p)), TIMEOUT,
                             "the rotation paused on the primary", [p])
        self.assertIn("memory %s of tenant acme" % broken, st.problem)
        rs = self.wait_until(lambda: (lambda b: b and b.paused and b)(blind(r)), TIMEOUT,
                             "the pause on the replica", [p, r])
        self.assertEqual((rs.running, rs.problem), (False, st.problem))
        self.assertEqual(Reads(agent(r)).answers(u), before)

        p.kill9()
        admin(r).Promote(apb.PromoteRequest(), timeout=30.0, metadata=ADMIN_MD)
        self.assertTrue(blind(r).paused)
        resumed = admin(r).RotateBlindIndexKey(apb.RotateBlindIndexKeyRequest(), timeout=30.0,
                                               metadata=ADMIN_MD).status
        self.assertEqual((resumed.running, resumed.paused, resumed.problem), (True, False, ""))
        self.wait_until(lambda: (lambda b: not b.running and not b.paused and b)(blind(r)),
                        TIMEOUT, "the rotation done on the promoted replica", [r])
        ks = admin(r).GetKeyStatus(apb.GetKeyStatusRequest(), timeout=10.0, metadata=ADMIN_MD)
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (2, 0))
        after = Reads(agent(r)).answers(u)
        self.assertEqual(after, before)
        found = Reads(agent(r)).call(Reads(agent(r)).m, "SearchMemories",
                                     mp.SearchMemoriesRequest(user_id=u, query="zanzibar"))
        self.assertEqual([x.memory.memory_id for x in found.results], [broken])


if __name__ == "__main__":
    import unittest
    unittest.main()
