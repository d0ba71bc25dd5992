"""Blind-index key rotation, the read and write side (server/blind_key.h):
while the store's `blind_index` row names a target key, writes tokenize
under the target and stamp it on their records, every query reads under
both keys, and each record is matched by its own key's tokens only, so
every search and filter answers as before and finds the new writes too.

RotateBlindIndexKey and its background re-index are not built yet: the
test puts the row mid-rotation by hand (engramd stopped), as the rotation
will write it when it begins."""
import json
import os

from harness import ServerTestCase, pb, uid
import test_at_rest as at_rest
from test_at_rest import mdb_dump, mdb_put
from engram.storage.v1 import memory_records_pb2 as mr  # noqa: E402
from engram.storage.v1 import records_pb2 as rpb  # noqa: E402
from engram.v1 import agent_state_pb2 as apb  # noqa: E402
from engram.v1 import agent_state_pb2_grpc as apbg  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402

FACT = mp.MEMORY_TYPE_FACT
OFF = mp.DEDUP_POLICY_OFF
Eq = pb.ListSessionsRequest.MetadataEquals


class BlindReadKeysTest(ServerTestCase):

    def stubs(self):
        self.m = mpg.MemoryServiceStub(self.client.channel)
        self.a = apbg.CheckpointServiceStub(self.client.channel)
        self.s = apbg.StoreServiceStub(self.client.channel)

    def setUp(self):
        super().setUp()
        self.stubs()

    def mcall(self, stub, method, req):
        return getattr(stub, method)(req, timeout=10.0, metadata=self.client.md)

    def memory(self, user, text, **kw):
        return self.mcall(self.m, "CreateMemory", mp.CreateMemoryRequest(
            memory=mp.Memory(user_id=user, text=text, type=FACT, **kw),
            dedup_policy=OFF)).memory.memory_id

    def populate(self, u, tag):
        """One of each kind carrying blind tokens, for user u; tag makes
        the ids and message words of this batch its own."""
        sid = self.client.create(u, metadata={"team": "blue", "batch": tag}).session_id
        self.client.append(sid, "the router drops packets at night " + tag)
        mid = self.memory(u, "likes green tea every morning " + tag, category="drink",
                          tags=["hot", tag], agent_id="a1", source_session_id=sid,
                          namespace="agent/planner", metadata={"project": "apollo"})
        other = self.memory(u, "plays chess every sunday " + tag, category="game",
                            agent_id="a2", namespace="agents", metadata={"project": "zeus"})
        self.mcall(self.a, "PutCheckpoint", apb.PutCheckpointRequest(
            user_id=u, checkpoint=apb.Checkpoint(
                thread_id="t-" + tag, checkpoint_id="c-" + tag, checkpoint_type="json",
                checkpoint=b"{}", metadata_json=json.dumps({"step": "plan", "batch": tag}),
                new_versions_json="{}")))
        self.mcall(self.s, "PutItem", apb.PutItemRequest(
            namespace=[u], key="k-" + tag,
            value_json=json.dumps({"color": "red", "batch": tag})))
        return {"session": sid, "tea": mid, "chess": other}

    def answers(self, u):
        """What every blind-token read answers for user u."""
        def mem_ids(resp):
            return sorted(m.memory_id for m in resp.memories)

        def found(query, **filt):
            r = self.mcall(self.m, "SearchMemories", mp.SearchMemoriesRequest(
                user_id=u, query=query, filter=mp.MemoryFilter(**filt)))
            return sorted(x.memory.memory_id for x in r.results)

        def listed(**filt):
            return mem_ids(self.mcall(self.m, "ListMemories", mp.ListMemoriesRequest(
                user_id=u, filter=mp.MemoryFilter(**filt), page_size=100)))

        md = [mp.MemoryFilter.MetadataEquals(key="project", value="apollo")]
        msgs = self.client.call("SearchMessages", pb.SearchMessagesRequest(
            user_id=u, query="router packets"))
        sessions = self.client.call("ListSessions", pb.ListSessionsRequest(
            user_id=u, metadata_equals=[Eq(key="team", value="blue")], page_size=100))
        cks = self.mcall(self.a, "ListCheckpoints", apb.ListCheckpointsRequest(
            user_id=u, filter_json=json.dumps({"step": "plan"})))
        items = self.mcall(self.s, "SearchItems", apb.SearchItemsRequest(
            namespace_prefix=[u], filter_json=json.dumps({"color": "red"})))
        return {
            "search tea": found("green tea"),
            "search tea in drink/hot": found("green tea", category="drink", tags=["hot"]),
            "search chess by a2": found("chess sunday", agent_id="a2"),
            "list category": listed(category="drink"),
            "list tag": listed(tags=["hot"]),
            "list agent": listed(agent_id="a1"),
            "list namespace": listed(namespace_prefix="agent"),
            "list metadata": listed(metadata_equals=md),
            "messages": sorted((r.session_id, r.seq) for r in msgs.results),
            "sessions": sorted(s.session_id for s in sessions.sessions),
            "checkpoints": sorted(c.checkpoint_id for c in cks.checkpoints),
            "items": sorted(i.key for i in items.items),
        }

    def stamps(self, db, rec_type):
        """{record key: blind_key_id} of every record of one DB."""
        _, recs = mdb_dump(self.server.data_dir, db)
        return {k: rec_type.FromString(v).blind_key_id for k, v in recs}

    def test_mid_rotation_reads_both_keys_and_writes_the_target(self):
        u = uid("u")
        old = self.populate(u, "one")
        before = self.answers(u)
        self.assertEqual(before["search tea"], [old["tea"]])
        self.assertEqual(before["list metadata"], [old["tea"]])
        self.assertEqual(len(before["messages"]), 1)
        self.assertEqual(before["sessions"], [old["session"]])
        self.assertEqual(before["checkpoints"], ["c-one"])
        self.assertEqual(before["items"], ["k-one"])

        # Mid-rotation from key 1 to key 2, as the rotation will begin it.
        self.server.stop()
        keys, _ = at_rest.read_keyring(self.server.keyring_path)
        self.assertEqual(sorted(keys), [1])
        keys[2] = os.urandom(32)
        at_rest.write_keyring(self.server.keyring_path, keys, 2)
        header, _ = mdb_dump(self.server.data_dir, "key_jobs")
        row = rpb.BlindIndexKeyRecord(key_id=1, target_key_id=2, legacy_key_id=1)
        mdb_put(self.server.data_dir, "key_jobs", header,
                [(b"blind_index", row.SerializeToString())])
        self.revive()
        self.stubs()

        # The records under key 1 answer every read as before.
        self.assertEqual(self.answers(u), before)

        # New writes tokenize under key 2 and are found by the same reads.
        new = self.populate(u, "two")
        during = self.answers(u)
        self.assertEqual(during["search tea"], sorted([old["tea"], new["tea"]]))
        self.assertEqual(during["search tea in drink/hot"], sorted([old["tea"], new["tea"]]))
        self.assertEqual(during["search chess by a2"], sorted([old["chess"], new["chess"]]))
        for k in ("list category", "list tag", "list agent", "list namespace", "list metadata"):
            self.assertEqual(during[k], sorted([old["tea"], new["tea"]]), k)
        self.assertEqual(len(during["messages"]), 2)
        self.assertEqual(during["sessions"], sorted([old["session"], new["session"]]))
        self.assertEqual(during["checkpoints"], ["c-one", "c-two"])
        self.assertEqual(during["items"], ["k-one", "k-two"])

        # An edit of an old memory's tags: the whole record moves to key 2
        # (no record mixes keys), and every filter still finds it.
        self.mcall(self.m, "UpdateMemory", mp.UpdateMemoryRequest(
            memory=mp.Memory(memory_id=old["tea"], tags=["hot", "one", "edited"]),
            update_mask={"paths": ["tags"]}))
        self.assertEqual(self.answers(u), during)

        # On disk: the old records stamped 1 (this engramd stamps every
        # record it writes; 0, the row's legacy key, is for records from
        # before), the new and the edited one stamped 2.
        self.server.stop()
        mems = self.stamps("memories", mr.MemoryRecord)
        sessions = self.stamps("sessions", rpb.SessionRecord)
        self.revive()

        def of(stamps, rid):
            return [v for k, v in stamps.items() if k.endswith(rid.encode())]

        self.assertEqual(of(mems, old["chess"]), [1])
        self.assertEqual(of(mems, old["tea"]), [2])
        self.assertEqual(of(mems, new["tea"]), [2])
        self.assertEqual(of(mems, new["chess"]), [2])
        self.assertEqual(of(sessions, old["session"]), [1])
        self.assertEqual(of(sessions, new["session"]), [2])
