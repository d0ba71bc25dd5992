"""Blind-index key rotation (server/blind_rotation.h, server/blind_key.h):
RotateBlindIndexKey moves the blind index to the keyring's primary key in
the background. While it runs, writes tokenize under the target and stamp
it on their records, every query reads under both keys and matches each
record by its own key's tokens, so every search and filter answers as
before (ranked searches with the same scores: a word's document frequency
spans both keys) and finds the new writes too; a restart mid-way goes on; when every
kind is re-indexed the store's key is the target, and every record is
stamped with it. A replica answers the same; non-admins are refused; a
tokenizer reindex and a rotation never run together."""
import json
import os
import signal
import threading

import grpc
from google.protobuf import field_mask_pb2

from harness import E2ETestCase, pb, uid
import test_at_rest as at_rest
from test_at_rest import mdb_dump
from test_key_rotation import key_status
from test_replication import (ADMIN_MD, AGENT_MD, TOKENS, Cluster, ReplicationCase, admin, agent,
                              cli)
from engram.storage.v1 import checkpoint_records_pb2 as cr  # noqa: E402
from engram.storage.v1 import memory_records_pb2 as mr  # noqa: E402
from engram.storage.v1 import records_pb2 as rpb  # noqa: E402
from engram.storage.v1 import store_records_pb2 as sr  # noqa: E402
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import agent_state_pb2 as gpb  # noqa: E402
from engram.v1 import agent_state_pb2_grpc as gpbg  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402

FACT = mp.MEMORY_TYPE_FACT
OFF = mp.DEDUP_POLICY_OFF
Eq = pb.ListSessionsRequest.MetadataEquals
# One record a step, two steps a second: a rotation over a few dozen
# records takes seconds, observably mid-way.
SLOW = ("--reindex-rate", "2", "--reindex-batch", "1")
DONE_TIMEOUT = 180.0  # two passes at 2 records/s, ASan being slow
RELOAD_TIMEOUT = 10


class Reads:
    """The blind-token writes and reads over one harness Client."""

    def __init__(self, client):
        self.c = client
        self.m = mpg.MemoryServiceStub(client.channel)
        self.a = gpbg.CheckpointServiceStub(client.channel)
        self.s = gpbg.StoreServiceStub(client.channel)

    def call(self, stub, method, req):
        return getattr(stub, method)(req, timeout=10.0, metadata=self.c.md)

    def memory(self, user, text, **kw):
        return self.call(self.m, "CreateMemory", mp.CreateMemoryRequest(
            memory=mp.Memory(user_id=user, text=text, type=FACT, **kw),
            dedup_policy=OFF)).memory.memory_id

    def populate(self, u, tag):
        """One of each kind carrying blind tokens, for user u; tag makes
        the ids and message words of this batch its own."""
        sid = self.c.create(u, metadata={"team": "blue", "batch": tag}).session_id
        self.c.append(sid, "the router drops packets at night " + tag)
        mid = self.memory(u, "likes green tea every morning " + tag, category="drink",
                          tags=["hot", tag], agent_id="a1", source_session_id=sid,
                          namespace="agent/planner", metadata={"project": "apollo"})
        other = self.memory(u, "plays chess every sunday " + tag, category="game",
                            agent_id="a2", namespace="agents", metadata={"project": "zeus"})
        self.call(self.a, "PutCheckpoint", gpb.PutCheckpointRequest(
            user_id=u, checkpoint=gpb.Checkpoint(
                thread_id="t-" + tag, checkpoint_id="c-" + tag, checkpoint_type="json",
                checkpoint=b"{}", metadata_json=json.dumps({"step": "plan", "batch": tag}),
                new_versions_json="{}")))
        self.call(self.s, "PutItem", gpb.PutItemRequest(
            namespace=[u], key="k-" + tag,
            value_json=json.dumps({"color": "red", "batch": tag})))
        return {"session": sid, "tea": mid, "chess": other}

    def answers(self, u):
        """What every blind-token read answers for user u."""
        def mem_ids(resp):
            return sorted(m.memory_id for m in resp.memories)

        def found(query, **filt):
            r = self.call(self.m, "SearchMemories", mp.SearchMemoriesRequest(
                user_id=u, query=query, filter=mp.MemoryFilter(**filt)))
            return sorted(x.memory.memory_id for x in r.results)

        def listed(**filt):
            return mem_ids(self.call(self.m, "ListMemories", mp.ListMemoriesRequest(
                user_id=u, filter=mp.MemoryFilter(**filt), page_size=100)))

        md = [mp.MemoryFilter.MetadataEquals(key="project", value="apollo")]
        msgs = self.c.call("SearchMessages", pb.SearchMessagesRequest(
            user_id=u, query="router packets"))
        sessions = self.c.call("ListSessions", pb.ListSessionsRequest(
            user_id=u, metadata_equals=[Eq(key="team", value="blue")], page_size=100))
        cks = self.call(self.a, "ListCheckpoints", gpb.ListCheckpointsRequest(
            user_id=u, filter_json=json.dumps({"step": "plan"})))
        items = self.call(self.s, "SearchItems", gpb.SearchItemsRequest(
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


def blind_rotation(st):
    """The KeyRotationStatus of kind blind_index, or None."""
    r = [r for r in st.rotations if r.kind == "blind_index"]
    return r[0] if r else None


def stamps(data_dir):
    """{kind: sorted blind_key_id of each record holding blind tokens}."""
    out = {}
    for db, typ, has in (("memories", mr.MemoryRecord, lambda r: True),
                         ("messages", rpb.MessageRecord, lambda r: len(r.index_terms) > 0),
                         ("sessions", rpb.SessionRecord, lambda r: len(r.metadata_hashes) > 0),
                         ("checkpoints", cr.CheckpointRecord,
                          lambda r: len(r.metadata_hashes) > 0),
                         ("store_items", sr.StoreItemRecord, lambda r: len(r.value_hashes) > 0)):
        _, recs = mdb_dump(data_dir, db)
        # store_items also holds its expiry index (keys from 0x00)
        recs = [typ.FromString(v) for k, v in recs if k[:1] != b"\x00"]
        out[db] = sorted(r.blind_key_id for r in recs if has(r))
    return out


def under(data_dir, db, typ):
    """{key id: records of db (memories or messages) under it}, read from
    the live env (LMDB readers do not disturb the server); blind_key_id 0
    is the legacy key, 1 here."""
    _, recs = mdb_dump(data_dir, db)
    out = {}
    for _, v in recs:
        r = typ.FromString(v)
        if db == "messages" and not r.index_terms:
            continue
        k = r.blind_key_id or 1
        out[k] = out.get(k, 0) + 1
    return out


# A corpus whose query words have unequal document frequencies (tea in 11
# memories, green and garden in 4, morning in 5; router in 8 messages,
# packets in 5, night in 4, firewall in 3), so a word's idf and a memory's
# keyword score move when its df is counted over part of the index.
SCORE_MEMORIES = [
    "green tea in the morning garden", "green tea every morning", "tea in the garden",
    "green garden", "morning tea", "tea", "tea again", "tea with lemon", "tea and biscuits",
    "black tea", "tea time", "iced tea", "morning run", "green river", "garden hose",
    "quiet morning"]
SCORE_MESSAGES = [
    "the router drops packets at night", "router reboot", "router lights",
    "router firmware update", "router cable", "packets lost", "packets again", "night shift",
    "firewall rules for the router", "firewall logs show packets", "quiet night at the firewall",
    "router router router packets", "lunch menu", "weather report", "router night",
    "coffee break"]
SCORE_TOL = 1e-6  # relative: the same sums, perhaps added in another order


class BlindRotationTest(E2ETestCase):

    def setUp(self):
        self.srv = self.start_server(*SLOW)
        self.connect()

    def connect(self):
        self.c = self.srv.client()
        self.r = Reads(self.c)

    def status(self):
        return key_status(self.c)

    def rotate(self):
        return apbg.AdminServiceStub(self.c.channel).RotateBlindIndexKey(
            apb.RotateBlindIndexKeyRequest(), timeout=30.0)

    def add_primary_key(self, kid):
        keys, _ = at_rest.read_keyring(self.srv.keyring_path)
        keys[kid] = os.urandom(32)
        at_rest.write_keyring(self.srv.keyring_path, keys, kid)
        want = "keyring reloaded from %s: primary key id %d" % (self.srv.keyring_path, kid)
        before = self.srv.log_text().count(want)
        os.kill(self.srv.pid, signal.SIGHUP)
        self.wait_until(lambda: self.srv.log_text().count(want) > before, RELOAD_TIMEOUT,
                        "log line %r" % want, [self.srv])

    def test_rotation_answers_as_before_resumes_and_switches(self):
        u = uid("u")
        old = self.r.populate(u, "one")
        before = self.r.answers(u)
        self.assertEqual(before["search tea"], [old["tea"]])
        self.assertEqual(len(before["messages"]), 1)
        self.assertEqual(before["checkpoints"], ["c-one"])
        self.assertEqual(before["items"], ["k-one"])

        # The primary is key 1, the index's: nothing to do, nothing written.
        st = self.rotate().status
        self.assertEqual((st.kind, st.running), ("blind_index", False))
        ks = self.status()
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (1, 0))
        self.assertIsNone(blind_rotation(ks))

        self.add_primary_key(2)
        st = self.rotate().status
        self.assertTrue(st.running)
        self.assertGreater(st.total, 0)
        ks = self.status()
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (1, 2))
        # Asked again while it runs: the same rotation, reported.
        again = self.rotate().status
        self.assertTrue(again.running)
        self.assertEqual(again.start_time, st.start_time)

        # Mid-way: every read answers as before, new writes are found.
        self.assertEqual(self.r.answers(u), before)
        new = self.r.populate(u, "two")
        # A fork of a session still under key 1 is made under key 2.
        fork = self.c.call("ForkSession", pb.ForkSessionRequest(
            session_id=old["session"], through_seq=1)).session_id
        during = self.r.answers(u)
        self.assertTrue(blind_rotation(self.status()).running)  # still mid-way
        self.assertEqual(during["search tea"], sorted([old["tea"], new["tea"]]))
        self.assertEqual(during["search chess by a2"], sorted([old["chess"], new["chess"]]))
        for k in ("list category", "list tag", "list agent", "list namespace", "list metadata"):
            self.assertEqual(during[k], sorted([old["tea"], new["tea"]]), k)
        self.assertEqual(len(during["messages"]), 3)  # the fork's copy too
        self.assertEqual(during["sessions"], sorted([old["session"], new["session"], fork]))
        self.assertEqual(during["checkpoints"], ["c-one", "c-two"])
        self.assertEqual(during["items"], ["k-one", "k-two"])

        # A restart mid-way: the rotation goes on from its row.
        self.wait_until(lambda: blind_rotation(self.status()).done >= 3, DONE_TIMEOUT,
                        "some of the walk done", [self.srv])
        self.srv.restart()
        self.connect()
        mid = blind_rotation(self.status())
        self.assertTrue(mid.running)
        self.assertEqual(mid.start_time, st.start_time)
        self.assertEqual(self.r.answers(u), during)

        done = self.wait_until(lambda: (lambda x: not x.running and x)(
            blind_rotation(self.status())), DONE_TIMEOUT, "the blind-index rotation done",
            [self.srv])
        self.assertEqual(done.problem, "")
        self.assertTrue(done.HasField("finish_time"))
        ks = self.status()
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (2, 0))
        self.assertIn("blind-index rotation done: every blind token under key 2",
                      self.srv.log_text())
        # After the switch only key 2 is read: everything is still found.
        self.assertEqual(self.r.answers(u), during)
        newer = self.r.populate(u, "three")
        after = self.r.answers(u)
        self.assertEqual(after["search tea"], sorted([old["tea"], new["tea"], newer["tea"]]))
        self.assertEqual(after["checkpoints"], ["c-one", "c-three", "c-two"])
        # The CLI's keys status shows it.
        rc, out, err = cli("--target", self.srv.addr, "--json", "admin", "keys", "status")
        self.assertEqual(rc, 0, err)
        js = json.loads(out)
        self.assertEqual(js["blindIndexKeyId"], 2)
        (b,) = [x for x in js["rotations"] if x["kind"] == "blind_index"]
        self.assertFalse(b.get("running", False))

        # On disk: every record holding blind tokens is stamped 2.
        self.srv.stop()
        on_disk = stamps(self.srv.data_dir)
        self.srv.start()
        for db, ids in on_disk.items():
            self.assertTrue(ids, db)
            self.assertEqual(set(ids), {2}, db)

    def scores(self, u):
        """Every ranked search's answer for user u with its scores: keyword
        alone, the top 3 only, hybrid with a query vector (memories), and
        BM25 over messages; recency weighs nothing, so scores do not move
        with the clock."""
        def memories(top_k, **kw):
            r = self.r.call(self.r.m, "SearchMemories", mp.SearchMemoriesRequest(
                user_id=u, query="green tea morning garden", top_k=top_k, **kw))
            return [(x.memory.memory_id, x.score, x.keyword_score, x.vector_score)
                    for x in r.results]

        msgs = self.c.call("SearchMessages", pb.SearchMessagesRequest(
            user_id=u, query="router packets night firewall", top_k=50,
            weights=pb.MessageSearchWeights(keyword=1)))
        return {
            "memories": memories(50, weights=mp.SearchWeights(keyword=1)),
            "memories top 3": memories(3, weights=mp.SearchWeights(keyword=1)),
            "memories hybrid": memories(50, embedding=[1, 0.3, 0.2, 0.5],
                                        weights=mp.SearchWeights(keyword=1, vector=1)),
            "messages": [(x.session_id, x.seq, x.score, x.keyword_score, x.bm25)
                         for x in msgs.results],
        }

    def assertSameScores(self, got, want, when):
        """The same results in the same order (each row's ids), each score
        within SCORE_TOL of want's."""
        def ids(rows):
            return [tuple(x for x in r if not isinstance(x, float)) for r in rows]

        for name, rows in want.items():
            self.assertEqual(ids(got[name]), ids(rows), "%s: %s ids or order" % (when, name))
            for g, w in zip(got[name], rows):
                for a, b in zip(g, w):
                    if isinstance(b, float):
                        self.assertLessEqual(abs(a - b), SCORE_TOL * abs(b),
                                             "%s: %s %r, want %r" % (when, name, g, w))

    def test_scores_mid_rotation_equal_the_scores_outside_one(self):
        """A word's document frequency is its postings under both read keys
        (found by a hostile client: it was counted per key, so BM25's idf,
        and with it every keyword score, top_k and order, moved while a
        rotation ran): SearchMemories (keyword, top_k, hybrid) and
        SearchMessages answer with the same scores before the rotation,
        mid-way through memories, mid-way through messages and after the
        switch."""
        u = uid("u")
        for i, text in enumerate(SCORE_MEMORIES):
            self.r.memory(u, text, embedding=[1, i / 16.0, (i % 3) / 3.0, 0.5])
        for i in range(4):
            sid = self.c.create(u).session_id
            self.c.append(sid, *SCORE_MESSAGES[4 * i:4 * i + 4])
        before = self.scores(u)
        self.assertEqual(len(before["memories"]), len(SCORE_MEMORIES))  # each has a query word
        kws = {r[2] for r in before["memories"]}
        self.assertGreaterEqual(len(kws), 5, before["memories"])
        self.assertEqual(len(before["memories top 3"]), 3)
        self.assertEqual(len(before["memories hybrid"]), len(SCORE_MEMORIES))
        self.assertEqual(len(before["messages"]), 13)
        self.assertGreaterEqual(len({r[4] for r in before["messages"]}), 5, before["messages"])

        self.add_primary_key(2)
        st = self.rotate().status
        self.assertTrue(st.running)
        n_mem, n_msg = len(SCORE_MEMORIES), len(SCORE_MESSAGES)
        data = self.srv.data_dir
        # The walk goes through memories, then messages, at 2 records a
        # second. Mid-way through memories: some under each key at the
        # search (some under key 2 before it, some still under key 1 after).
        self.wait_until(lambda: blind_rotation(self.status()).done >= 3, DONE_TIMEOUT,
                        "a few memories walked", [self.srv])
        self.assertIn(2, under(data, "memories", mr.MemoryRecord))
        mid = self.scores(u)
        self.assertIn(1, under(data, "memories", mr.MemoryRecord), "past the memories already")
        self.assertSameScores(mid, before, "mid-way through memories")
        # Mid-way through messages, the memories all under key 2.
        self.wait_until(lambda: blind_rotation(self.status()).done >= n_mem + 3, DONE_TIMEOUT,
                        "a few messages walked", [self.srv])
        self.assertIn(2, under(data, "messages", rpb.MessageRecord))
        mid = self.scores(u)
        self.assertIn(1, under(data, "messages", rpb.MessageRecord), "past the messages already")
        self.assertTrue(blind_rotation(self.status()).running)
        self.assertSameScores(mid, before, "mid-way through messages")

        self.wait_until(lambda: not blind_rotation(self.status()).running, DONE_TIMEOUT,
                        "the blind-index rotation done", [self.srv])
        self.assertEqual(under(data, "memories", mr.MemoryRecord), {2: n_mem})
        self.assertEqual(under(data, "messages", rpb.MessageRecord), {2: n_msg})
        self.assertSameScores(self.scores(u), before, "after the switch")

    def test_team_view_word_budget_mid_rotation_as_outside_one(self):
        """A word's user seeks in the team view share its budget across
        both read keys as they would under one (a review found the first
        key's postings charged against the second key's users: a word
        read whole outside a rotation came back truncated mid-way)."""
        self.srv.stop()
        self.srv.extra += ["--max-search-postings", "1000"]
        self.srv.start()
        self.connect()
        # 64 words: a budget of 1000 / 64 = 15 postings (and users) a word.
        query = " ".join(["harbour"] + ["kappa%d" % i for i in range(63)])
        n = 12  # users, one message each holding the word: within its budget
        for i in range(n):
            sid = self.c.create(uid("u")).session_id
            self.c.append(sid, "harbour view number %d" % i)

        def team():
            m = self.c.call("SearchMessages", pb.SearchMessagesRequest(
                user_id="", query=query, top_k=50,
                weights=pb.MessageSearchWeights(keyword=1)))
            return m.truncated, [(x.session_id, x.seq, x.bm25) for x in m.results]

        before = team()
        self.assertEqual((before[0], len(before[1])), (False, n))
        self.add_primary_key(2)
        self.assertTrue(self.rotate().status.running)
        data = self.srv.data_dir
        self.wait_until(lambda: blind_rotation(self.status()).done >= 3, DONE_TIMEOUT,
                        "a few messages walked", [self.srv])
        self.assertIn(2, under(data, "messages", rpb.MessageRecord))
        mid = team()
        self.assertIn(1, under(data, "messages", rpb.MessageRecord), "past the messages already")
        self.assertFalse(mid[0], "truncated mid-way")
        self.assertSameScores({"team": mid[1]}, {"team": before[1]}, "mid-way through messages")
        self.wait_until(lambda: not blind_rotation(self.status()).running, DONE_TIMEOUT,
                        "the blind-index rotation done", [self.srv])
        after = team()
        self.assertFalse(after[0])
        self.assertSameScores({"team": after[1]}, {"team": before[1]}, "after the switch")

    def test_writes_straddling_the_start_are_refused_or_found(self):
        """Updates and batch creates prepared under key 1 and applied after
        the rotation began: each is refused ABORTED (retry) or lands wholly
        under one key, so a tag filter finds every memory by its last tags,
        mid-way and after the switch (found by a hostile review: an update
        once stamped the record 2 with its tags under key 1)."""
        u = uid("u")
        n = 6
        mids = [self.r.memory(u, "memory number %d about tea" % i, tags=["t-%d-0" % i])
                for i in range(n)]
        self.add_primary_key(2)
        stop = threading.Event()
        last, made, aborted, other = {}, [], [], []

        def hammer(i):
            c = self.srv.client()
            stub = mpg.MemoryServiceStub(c.channel)
            k = 0
            while not stop.is_set():
                k += 1
                tag = "t-%d-%d" % (i, k)
                try:
                    if i % 2:
                        stub.UpdateMemory(mp.UpdateMemoryRequest(
                            memory=mp.Memory(memory_id=mids[i], user_id=u, tags=[tag]),
                            update_mask=field_mask_pb2.FieldMask(paths=["tags"])),
                            timeout=10.0, metadata=c.md)
                        last[i] = tag
                    else:
                        # Dedup off: "batch t-2-4 fact" and "batch t-4-2 fact"
                        # hold the same words, and the later one would be
                        # marked a DUPLICATE, which no ACTIVE listing shows.
                        rep = stub.BatchCreateMemories(mp.BatchCreateMemoriesRequest(requests=[
                            mp.CreateMemoryRequest(memory=mp.Memory(
                                user_id=u, text="batch %s fact" % tag, type=FACT,
                                tags=[tag]), dedup_policy=OFF)]), timeout=10.0, metadata=c.md)
                        res = rep.results[0]
                        if res.status.code == grpc.StatusCode.ABORTED.value[0]:
                            aborted.append(tag)
                        elif res.status.code:
                            other.append(res.status.message)
                        else:
                            made.append((res.response.memory.memory_id, tag))
                            last[i] = tag
                except grpc.RpcError as e:
                    (aborted if e.code() == grpc.StatusCode.ABORTED else other).append(e.details())
        ts = [threading.Thread(target=hammer, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        try:
            self.wait_until(lambda: len(last) == n or other, 60, "every writer's first write",
                            [self.srv])
            self.assertEqual(other, [])
            self.rotate()
            self.wait_until(lambda: self.status().blind_index_target_key_id == 2, 30,
                            "the rotation's row", [self.srv])
        finally:
            stop.set()
            for t in ts:
                t.join()
        self.assertEqual(other, [])

        def missing():
            out = []
            for i in range(n):
                if i % 2:
                    want, tag = mids[i], last[i]
                else:
                    want, tag = [m for m, t in made if t == last[i]][0], last[i]
                r = self.r.call(self.r.m, "ListMemories", mp.ListMemoriesRequest(
                    user_id=u, filter=mp.MemoryFilter(tags=[tag]), page_size=100))
                if want not in [m.memory_id for m in r.memories]:
                    out.append((i, tag))
            return out
        self.assertEqual(missing(), [], "mid-way")
        self.wait_until(lambda: not blind_rotation(self.status()).running, 240,
                        "the rotation's end", [self.srv])
        self.assertEqual(missing(), [], "after the switch")

    def test_cli_starts_it_and_a_second_rotation_moves_again(self):
        u = uid("u")
        self.r.populate(u, "one")
        before = self.r.answers(u)
        self.add_primary_key(2)
        rc, out, err = cli("--target", self.srv.addr, "--json", "admin", "keys", "rotate-blind")
        self.assertEqual(rc, 0, err)
        self.assertTrue(json.loads(out)["status"]["running"])
        self.wait_until(lambda: not blind_rotation(self.status()).running, DONE_TIMEOUT,
                        "the first rotation done", [self.srv])
        self.add_primary_key(3)
        self.assertTrue(self.rotate().status.running)
        self.assertEqual(self.r.answers(u), before)
        self.wait_until(lambda: not blind_rotation(self.status()).running, DONE_TIMEOUT,
                        "the second rotation done", [self.srv])
        ks = self.status()
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (3, 0))
        self.assertEqual(self.r.answers(u), before)


class TokenizerReindexSerializedTest(E2ETestCase):
    """A blind-index rotation and a tokenizer reindex never run together:
    the rotation is refused while a reindex runs, and a reindex due while a
    rotation runs waits for its end."""

    def messages_index(self, srv):
        st = apbg.AdminServiceStub(srv.client().channel).GetStatus(apb.GetStatusRequest(),
                                                                   timeout=10.0)
        (ix,) = [i for i in st.indexes if i.index == "messages"]
        return ix

    def rotate(self, srv):
        return apbg.AdminServiceStub(srv.client().channel).RotateBlindIndexKey(
            apb.RotateBlindIndexKeyRequest(), timeout=30.0)

    def test_one_waits_for_the_other(self):
        # Messages appended unindexed: turning indexing on reindexes them.
        srv = self.start_server("--index-messages=false", *SLOW)
        c = srv.client()
        sid = c.create(uid("u")).session_id
        for i in range(4):
            c.append(sid, "zeppelin number %d" % i)
        # Sessions with metadata tokens: a rotation's passes over them take
        # seconds at SLOW's rate, past the restarts below.
        for i in range(12):
            c.create(uid("u"), metadata={"n": str(i)})
        keys, _ = at_rest.read_keyring(srv.keyring_path)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(srv.keyring_path, keys, 2)
        srv.extra = list(SLOW)
        srv.restart()
        self.wait_until(lambda: self.messages_index(srv).target_version == 2, DONE_TIMEOUT,
                        "the messages reindex running", [srv])
        with self.assertRaises(grpc.RpcError) as cm:
            self.rotate(srv)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("a reindex of messages to tokenizer version 2 is running",
                      cm.exception.details())
        self.assertIsNone(blind_rotation(key_status(srv.client())))
        self.wait_until(lambda: self.messages_index(srv).version == 2, DONE_TIMEOUT,
                        "the messages reindex done", [srv])

        # Now the rotation runs; indexing turned off and on again makes a
        # reindex due, which waits for the rotation to end.
        self.assertTrue(self.rotate(srv).status.running)
        srv.extra = ["--index-messages=false"] + list(SLOW)
        srv.restart()
        self.wait_until(lambda: self.messages_index(srv).version == 0, DONE_TIMEOUT,
                        "messages at version 0", [srv])
        srv.extra = list(SLOW)
        srv.restart()
        self.assertTrue(blind_rotation(key_status(srv.client())).running)
        self.assertEqual(self.messages_index(srv).target_version, 0)  # waiting
        self.wait_until(lambda: not blind_rotation(key_status(srv.client())).running,
                        DONE_TIMEOUT, "the rotation done", [srv])
        self.wait_until(lambda: self.messages_index(srv).version == 2, DONE_TIMEOUT,
                        "the messages reindex after it", [srv])
        self.assertLess(srv.log_text().index("blind-index rotation done"),
                        srv.log_text().rindex("reindex of messages to tokenizer version 2 "
                                              "begins"))
        found = srv.client().call("SearchMessages", pb.SearchMessagesRequest(query="zeppelin"))
        self.assertEqual(len(found.results), 4)


class ReplicaBlindRotationTest(ReplicationCase):

    def test_replica_answers_the_same_and_non_admins_are_refused(self):
        cl = Cluster()
        self.addCleanup(cl.close)
        p = cl.primary(*SLOW)
        r = cl.replica("r1", "127.0.0.1:%d" % p.fixed_port, *SLOW)
        p.start()
        r.start()
        self.wait_connected(p, ["r1"])
        u = uid("u")
        reads = Reads(agent(p))
        reads.populate(u, "one")
        before = reads.answers(u)

        # Key 2 as primary on both nodes (one keyring file).
        keys, _ = at_rest.read_keyring(cl.keyring)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(cl.keyring, keys, 2)
        for node in (p, r):
            want = "keyring reloaded from %s: primary key id 2" % cl.keyring
            os.kill(node.pid, signal.SIGHUP)
            self.wait_until(lambda: want in node.log_text(), RELOAD_TIMEOUT, want, [node])

        # Not an admin: refused, nothing begun.
        with self.assertRaises(grpc.RpcError) as cm:
            apbg.AdminServiceStub(agent(p).channel).RotateBlindIndexKey(
                apb.RotateBlindIndexKeyRequest(), timeout=10.0, metadata=AGENT_MD)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)

        def key_state(node):
            return admin(node).GetKeyStatus(apb.GetKeyStatusRequest(), timeout=10.0,
                                            metadata=ADMIN_MD)

        self.assertIsNone(blind_rotation(key_state(p)))
        # On the replica: forwarded to the primary, as every admin write.
        st = admin(r).RotateBlindIndexKey(apb.RotateBlindIndexKeyRequest(), timeout=30.0,
                                          metadata=ADMIN_MD).status
        self.assertTrue(st.running)
        self.wait_until(lambda: key_state(r).blind_index_target_key_id == 2, DONE_TIMEOUT,
                        "the rotation on the replica", [p, r])
        self.assertEqual(Reads(agent(r)).answers(u), before)
        self.wait_until(lambda: key_state(p).blind_index_target_key_id == 0, DONE_TIMEOUT,
                        "the rotation done", [p])
        self.wait_converged(p, [r])
        ks = key_state(r)
        self.assertEqual((ks.blind_index_key_id, ks.blind_index_target_key_id), (2, 0))
        self.assertFalse(blind_rotation(ks).running)
        self.assertEqual(Reads(agent(r)).answers(u), before)
        self.assertEqual(Reads(agent(p)).answers(u), before)


if __name__ == "__main__":
    import unittest
    unittest.main()
