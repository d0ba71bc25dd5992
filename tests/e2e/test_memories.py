"""Memories and users through the real engramd over gRPC: every MemoryService
and UserService RPC, de-duplication (near-duplicate, distinct, other type,
contradiction, merge, supersede, cosine), ranking, filters, pagination,
expiry, quotas, 8 concurrent creates of one fact, erasure checked in the
LMDB file, and every bad input of issue 3 point 7."""
import math
import os
import subprocess
import threading
import time

import grpc

from harness import E2ETestCase, M, Server, ServerTestCase, run_threads, uid

from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PREF = mp.MEMORY_TYPE_PREFERENCE
FACT = mp.MEMORY_TYPE_FACT
ACTIVE, DUP, DELETED = mp.MEMORY_STATE_ACTIVE, mp.MEMORY_STATE_DUPLICATE, mp.MEMORY_STATE_DELETED
CREATED, DUPLICATE = mp.DEDUP_OUTCOME_CREATED, mp.DEDUP_OUTCOME_DUPLICATE
SUPERSEDED, MERGED = mp.DEDUP_OUTCOME_SUPERSEDED, mp.DEDUP_OUTCOME_MERGED


class Mem:
    """MemoryService and UserService calls over one harness Client."""

    def __init__(self, client):
        self.c = client
        self.m = mpg.MemoryServiceStub(client.channel)
        self.u = upg.UserServiceStub(client.channel)

    def _call(self, stub, method, req):
        return getattr(stub, method)(req, timeout=10.0, metadata=self.c.md)

    def create(self, user, text, type=PREF, policy=0, jt=0.0, ct=0.0, quota=0, **kw):
        mem = mp.Memory(user_id=user, text=text, type=type, **kw)
        return self._call(self.m, "CreateMemory", mp.CreateMemoryRequest(
            memory=mem, dedup_policy=policy, jaccard_threshold=jt, cosine_threshold=ct,
            quota_policy=quota))

    def get(self, memory_id):
        return self._call(self.m, "GetMemory", mp.GetMemoryRequest(memory_id=memory_id))

    def update(self, memory, paths, expected_version=0):
        from google.protobuf import field_mask_pb2
        return self._call(self.m, "UpdateMemory", mp.UpdateMemoryRequest(
            memory=memory, update_mask=field_mask_pb2.FieldMask(paths=paths),
            expected_version=expected_version))

    def delete(self, memory_id, purge=False, expected_version=0):
        return self._call(self.m, "DeleteMemory", mp.DeleteMemoryRequest(
            memory_id=memory_id, purge=purge, expected_version=expected_version))

    def list(self, user, filter=None, order=0, page_size=0, page_token="", emb=False):
        return self._call(self.m, "ListMemories", mp.ListMemoriesRequest(
            user_id=user, filter=filter, order_by=order, page_size=page_size,
            page_token=page_token, include_embeddings=emb))

    def list_all(self, user, filter=None, order=0, page_size=2):
        out, token = [], ""
        for _ in range(1000):
            r = self.list(user, filter, order, page_size, token)
            self_check = len(r.memories) <= page_size
            assert self_check, "page larger than page_size"
            out.extend(r.memories)
            token = r.next_page_token
            if not token:
                return out
        raise AssertionError("ListMemories did not end")

    def search(self, user, query="", embedding=(), top_k=0, filter=None, weights=None, **kw):
        return self._call(self.m, "SearchMemories", mp.SearchMemoriesRequest(
            user_id=user, query=query, embedding=list(embedding), top_k=top_k, filter=filter,
            weights=weights, **kw))

    def delete_user(self, user):
        return self._call(self.u, "DeleteUser", up.DeleteUserRequest(user_id=user))

    def stats(self, user):
        return self._call(self.u, "GetUserStats", up.GetUserStatsRequest(user_id=user))


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dump_data_dbs(data_dir):
    """{db name: [(key bytes, value bytes)]} of every named DB (mdb_dump)."""
    out = subprocess.run(["mdb_dump", "-a", data_dir], check=True, capture_output=True,
                         timeout=60).stdout.decode()
    dbs, name, rows, pending = {}, None, None, None
    for line in out.splitlines():
        if line.startswith("database="):
            name, rows, pending = line.split("=", 1)[1], [], None
        elif line == "DATA=END":
            if name is not None:
                dbs[name] = rows
            name = None
        elif line.startswith(" ") and name is not None:
            b = bytes.fromhex(line.strip())
            if pending is None:
                pending = b
            else:
                rows.append((pending, b))
                pending = None
    return dbs


class MemoryTest(ServerTestCase):

    @classmethod
    def connect(cls):
        super().connect()
        cls.mem = Mem(cls.client)

    # ---- CreateMemory / GetMemory ------------------------------------------------

    def test_create_get_roundtrip(self):
        user, sid = uid("u"), uid("s")
        self.client.create(user, session_id=sid)
        r = self.mem.create(user, "Alice works as a nurse in Lyon", type=mp.MEMORY_TYPE_FACT,
                            category="work", importance=0.7, confidence=0.9, tags=["job", "city", "job"],
                            embedding=[0.5, 0.25, -1.0], source_session_id=sid, agent_id="agent-1")
        self.assertEqual(r.outcome, CREATED)
        m = r.memory
        self.assertEqual(len(m.memory_id), 26)
        self.assertEqual((m.state, m.version, m.duplicate_of), (ACTIVE, 1, ""))
        self.assertEqual(list(m.tags), ["job", "city"])  # repeats dropped
        g = self.mem.get(m.memory_id)
        self.assertEqual(g.text, "Alice works as a nurse in Lyon")
        self.assertEqual((g.user_id, g.agent_id, g.type, g.category), (user, "agent-1", FACT, "work"))
        self.assertAlmostEqual(g.importance, 0.7, places=6)
        self.assertAlmostEqual(g.confidence, 0.9, places=6)
        self.assertEqual(list(g.tags), ["job", "city"])
        self.assertEqual(list(g.embedding), [0.5, 0.25, -1.0])
        self.assertEqual(g.source_session_id, sid)
        self.assertEqual(g.create_time, m.create_time)
        self.assertFalse(g.HasField("expire_time"))

    def test_client_id_and_already_exists(self):
        user, mid = uid("u"), uid("m")
        self.assertEqual(self.mem.create(user, "first fact", memory_id=mid).memory.memory_id, mid)
        self.assertStatus(grpc.StatusCode.ALREADY_EXISTS, self.mem.create, user, "other words",
                          memory_id=mid)
        self.assertStatus(NOT_FOUND, self.mem.get, uid("nope"), field="memory_id")

    def test_source_session_must_exist(self):
        self.assertInvalid(self.mem.create, uid("u"), "x y", source_session_id=uid("s"),
                           field="memory.source_session_id")

    # ---- de-duplication ---------------------------------------------------------------

    def test_near_duplicate_distinct_and_other_type(self):
        user = uid("u")
        a = self.mem.create(user, "Alice likes green tea in the morning", importance=0.5)
        b = self.mem.create(user, "alice LIKES green teas, in the morning!", importance=0.3)
        self.assertEqual(b.outcome, DUPLICATE)
        self.assertEqual(b.matched_memory_id, a.memory.memory_id)
        self.assertEqual((b.memory.state, b.memory.duplicate_of), (DUP, a.memory.memory_id))
        self.assertGreaterEqual(b.jaccard, 0.85)
        c = self.mem.create(user, "Alice likes black coffee at night")
        self.assertEqual(c.outcome, CREATED)
        d = self.mem.create(user, "Alice likes green tea in the morning", type=FACT)
        self.assertEqual(d.outcome, CREATED, "another type is never a duplicate")
        self.assertEqual(self.mem.get(a.memory.memory_id).state, ACTIVE)
        self.assertEqual(self.mem.get(b.memory.memory_id).state, DUP)

    def test_higher_importance_supersedes(self):
        user = uid("u")
        a = self.mem.create(user, "Bob is allergic to peanuts", importance=0.4)
        b = self.mem.create(user, "bob is allergic to peanuts", importance=0.9)
        self.assertEqual(b.outcome, SUPERSEDED)
        self.assertEqual(b.memory.state, ACTIVE)
        old = self.mem.get(a.memory.memory_id)
        self.assertEqual((old.state, old.duplicate_of, old.version), (DUP, b.memory.memory_id, 2))
        # equal importance: the existing one stays
        c = self.mem.create(user, "Bob is allergic to peanuts.", importance=0.9)
        self.assertEqual((c.outcome, c.matched_memory_id), (DUPLICATE, b.memory.memory_id))

    def test_contradictions_are_not_duplicates(self):
        for neg in ["Carol dislikes tea", "Carol does not like tea", "Carol doesn't like tea",
                    "Carol never liked tea", "Carol hates tea"]:
            user = uid("u")
            a = self.mem.create(user, "Carol likes tea")
            r = self.mem.create(user, neg)
            self.assertEqual((r.outcome, r.memory.state), (CREATED, ACTIVE), neg)
            self.assertEqual(list(r.conflicts_with), [a.memory.memory_id], neg)
            self.assertEqual(r.matched_memory_id, "")
            self.assertEqual(self.mem.get(a.memory.memory_id).state, ACTIVE)
        # two negated texts are duplicates of each other, and both conflict
        user2 = uid("u")
        p = self.mem.create(user2, "Dan likes jazz")
        n1 = self.mem.create(user2, "Dan does not like jazz")
        self.assertEqual(list(n1.conflicts_with), [p.memory.memory_id])
        n2 = self.mem.create(user2, "Dan hates jazz")
        self.assertEqual((n2.outcome, n2.matched_memory_id), (DUPLICATE, n1.memory.memory_id))
        self.assertEqual(list(n2.conflicts_with), [p.memory.memory_id])
        states = sorted(m.state for m in self.mem.list_all(user2, mp.MemoryFilter(
            states=[ACTIVE, DUP])))
        self.assertEqual(states, [ACTIVE, ACTIVE, DUP])

    def test_merge_policy(self):
        user = uid("u")
        a = self.mem.create(user, "Erin plays the cello", importance=0.3, confidence=0.5, tags=["music"])
        r = self.mem.create(user, "erin plays the cello", importance=0.8, confidence=0.4,
                            tags=["hobby", "music"], policy=mp.DEDUP_POLICY_MERGE)
        self.assertEqual((r.outcome, r.matched_memory_id), (MERGED, a.memory.memory_id))
        m = self.mem.get(a.memory.memory_id)
        self.assertEqual(m.state, ACTIVE)
        self.assertAlmostEqual(m.importance, 0.8, places=6)
        self.assertAlmostEqual(m.confidence, 0.5, places=6)
        self.assertEqual(list(m.tags), ["music", "hobby"])
        self.assertEqual((m.version, m.text), (2, "Erin plays the cello"))
        self.assertEqual(r.memory, m)
        self.assertEqual(len(self.mem.list_all(user, mp.MemoryFilter(states=[ACTIVE, DUP, DELETED]))), 1)

    def test_off_policy_and_thresholds(self):
        user = uid("u")
        self.mem.create(user, "Frank drives a red car")
        r = self.mem.create(user, "Frank drives a red car", policy=mp.DEDUP_POLICY_OFF)
        self.assertEqual((r.outcome, r.memory.state), (CREATED, ACTIVE))
        # 3 of 4 words shared: 0.6 < 0.85 by default, a duplicate at 0.5
        r = self.mem.create(user, "Frank drives a blue car")
        self.assertEqual(r.outcome, CREATED)
        r = self.mem.create(user, "Frank drives a green car", jt=0.5)
        self.assertEqual(r.outcome, DUPLICATE)

    def test_cosine_dedup(self):
        user = uid("u")
        a = self.mem.create(user, "Gina's birthday is in May", type=mp.MEMORY_TYPE_EVENT,
                            embedding=unit([1, 0.1, 0]))
        r = self.mem.create(user, "Gina was born in the spring, in May", type=mp.MEMORY_TYPE_EVENT,
                            embedding=unit([1, 0.12, 0.01]))
        self.assertEqual((r.outcome, r.matched_memory_id), (DUPLICATE, a.memory.memory_id))
        self.assertGreater(r.cosine, 0.95)
        r = self.mem.create(user, "Gina moved to Rome", type=mp.MEMORY_TYPE_EVENT,
                            embedding=unit([0, 1, 0]))
        self.assertEqual(r.outcome, CREATED)

    def test_concurrent_creates_leave_one_active(self):
        user = uid("u")
        clients = [Mem(self.server.client()) for _ in range(8)]
        results = [None] * 8

        def make(i):
            def run():
                results[i] = clients[i].create(user, "Hank's favourite colour is teal",
                                               importance=0.5)
            return run
        run_threads([make(i) for i in range(8)], timeout=30)
        outcomes = sorted(r.outcome for r in results)
        self.assertEqual(outcomes, [CREATED] + [DUPLICATE] * 7)
        mems = self.mem.list_all(user, mp.MemoryFilter(states=[ACTIVE, DUP]))
        self.assertEqual(len(mems), 8)
        active = [m for m in mems if m.state == ACTIVE]
        self.assertEqual(len(active), 1)
        self.assertTrue(all(m.duplicate_of == active[0].memory_id for m in mems if m.state == DUP))

    # ---- Update / Delete -----------------------------------------------------------------

    def test_update_and_versions(self):
        user = uid("u")
        m = self.mem.create(user, "Ivy lives in Oslo", category="home", tags=["city"]).memory
        u = self.mem.update(mp.Memory(memory_id=m.memory_id, text="Ivy lives in Bergen",
                                      importance=0.6, category="ignored"),
                            ["text", "importance"], expected_version=1)
        self.assertEqual((u.version, u.text, u.category, list(u.tags)),
                         (2, "Ivy lives in Bergen", "home", ["city"]))
        self.assertAlmostEqual(u.importance, 0.6, places=6)
        self.assertStatus(grpc.StatusCode.ABORTED, self.mem.update,
                          mp.Memory(memory_id=m.memory_id, importance=0.1), ["importance"],
                          expected_version=1, field="expected_version")
        # the new words are searchable, the old ones are not
        self.assertEqual([x.memory.memory_id for x in self.mem.search(user, "bergen").results],
                         [m.memory_id])
        self.assertEqual(len(self.mem.search(user, "oslo").results), 0)
        u = self.mem.update(mp.Memory(memory_id=m.memory_id, tags=["a", "b"], category="",
                                      embedding=[1, 2]), ["tags", "memory.category", "embedding"])
        self.assertEqual((u.version, list(u.tags), u.category, list(u.embedding)),
                         (3, ["a", "b"], "", [1, 2]))
        u = self.mem.update(mp.Memory(memory_id=m.memory_id), ["embedding"])
        self.assertEqual(list(u.embedding), [])
        self.assertInvalid(self.mem.update, mp.Memory(memory_id=m.memory_id), [], field="update_mask")
        self.assertInvalid(self.mem.update, mp.Memory(memory_id=m.memory_id), ["state"],
                           field="update_mask")
        self.assertStatus(NOT_FOUND, self.mem.update, mp.Memory(memory_id=uid("m"), text="x"),
                          ["text"])

    def test_delete_soft_and_purge(self):
        user = uid("u")
        m = self.mem.create(user, "Jack owns a sailboat").memory
        d = self.mem.delete(m.memory_id, expected_version=1)
        self.assertFalse(d.purged)
        self.assertEqual((d.memory.state, d.memory.version), (DELETED, 2))
        self.assertEqual(self.mem.get(m.memory_id).state, DELETED)
        self.assertEqual(list(self.mem.list(user).memories), [])
        self.assertEqual(len(self.mem.search(user, "sailboat").results), 0)
        self.assertEqual(len(self.mem.list(user, mp.MemoryFilter(states=[DELETED])).memories), 1)
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, self.mem.update,
                          mp.Memory(memory_id=m.memory_id, text="x"), ["text"])
        self.assertEqual(self.mem.delete(m.memory_id).memory.version, 2)  # idempotent
        self.assertStatus(grpc.StatusCode.ABORTED, self.mem.delete, m.memory_id, purge=True,
                          expected_version=1)
        d = self.mem.delete(m.memory_id, purge=True)
        self.assertTrue(d.purged)
        self.assertFalse(d.HasField("memory"))
        self.assertStatus(NOT_FOUND, self.mem.get, m.memory_id)
        self.assertStatus(NOT_FOUND, self.mem.delete, m.memory_id, purge=True)
        self.assertEqual(list(self.mem.list(user, mp.MemoryFilter(states=[ACTIVE, DUP, DELETED])).memories), [])

    # ---- Search ------------------------------------------------------------------------------

    def test_ranking_sanity(self):
        user = uid("u")
        texts = ["Kate enjoys hiking in the Alps every summer",
                 "Kate's sister Laura is a dentist in Madrid",
                 "Kate is vegetarian and avoids fish",
                 "Kate has a golden retriever named Biscuit",
                 "Kate prefers window seats on long flights",
                 "Kate studies Japanese on weekday evenings"]
        ids = [self.mem.create(user, t, type=FACT, importance=0.5).memory.memory_id for t in texts]
        r = self.mem.search(user, "what is the name of Kate's dog, the golden retriever?")
        self.assertEqual(r.results[0].memory.memory_id, ids[3])
        r = self.mem.search(user, "sister dentist")
        self.assertEqual(r.results[0].memory.memory_id, ids[1])
        self.assertEqual(len(r.results), 1, "only memories sharing a word are keyword matches")
        top = r.results[0]
        self.assertGreater(top.keyword_score, 0.8)
        self.assertEqual(top.vector_score, 0)
        self.assertAlmostEqual(top.importance_score, 0.5, places=6)
        self.assertGreater(top.recency_score, 0.99)
        self.assertAlmostEqual(top.score, 0.4 * top.keyword_score + 0.1 * 0.5 + 0.1 * top.recency_score,
                               places=5)

    def test_vector_and_hybrid_search(self):
        user = uid("u")
        vecs = {"north": [1, 0, 0, 0], "east": [0, 1, 0, 0], "south": [0, 0, 1, 0], "ne": [1, 1, 0, 0]}
        ids = {k: self.mem.create(user, "direction " + k, type=mp.MEMORY_TYPE_TOPIC, importance=0.5,
                                  embedding=v, policy=mp.DEDUP_POLICY_OFF).memory.memory_id
               for k, v in vecs.items()}
        r = self.mem.search(user, embedding=[0.9, 0.1, 0, 0], top_k=2)
        self.assertEqual([x.memory.memory_id for x in r.results], [ids["north"], ids["ne"]])
        self.assertGreater(r.results[0].vector_score, r.results[1].vector_score)
        # keyword can pull another one up when weighted
        r = self.mem.search(user, "south", embedding=[0.9, 0.1, 0, 0], top_k=1,
                            weights=mp.SearchWeights(keyword=1.0, vector=0.2))
        self.assertEqual(r.results[0].memory.memory_id, ids["south"])
        # importance only: ties broken newest first, deterministically
        r1 = self.mem.search(user, embedding=[0, 0, 0, 1], weights=mp.SearchWeights(importance=1))
        r2 = self.mem.search(user, embedding=[0, 0, 0, 1], weights=mp.SearchWeights(importance=1))
        self.assertEqual([x.memory.memory_id for x in r1.results], [x.memory.memory_id for x in r2.results])
        self.assertEqual([x.memory.memory_id for x in r1.results],
                         [ids["ne"], ids["south"], ids["east"], ids["north"]])
        self.assertFalse(r1.results[0].memory.embedding)
        r = self.mem.search(user, embedding=[1, 0, 0, 0], top_k=1, include_embeddings=True, min_score=0.2)
        self.assertEqual(list(r.results[0].memory.embedding), [1, 0, 0, 0])
        r = self.mem.search(user, embedding=[1, 0, 0, 0], min_score=0.99)
        self.assertEqual(len(r.results), 0)

    def test_vector_search_matches_brute_force(self):
        # More memories than the first (int8) pass keeps, so candidates are
        # dropped and rescored; spread-out vectors and a tight cluster (where
        # the int8 bounds overlap and the exact fallback runs) must both give
        # exactly the brute-force float ranking.
        import random
        rng = random.Random(7)
        for name, spread in (("spread", 1.0), ("cluster", 0.03)):
            user = uid("u")
            base = [rng.uniform(-1, 1) for _ in range(16)]
            vecs = {}
            for i in range(80):
                v = [b * (1 - spread) + rng.uniform(-1, 1) * spread for b in base]
                mid = self.mem.create(user, "vector %s %d" % (name, i), type=mp.MEMORY_TYPE_TOPIC,
                                      embedding=v, policy=mp.DEDUP_POLICY_OFF).memory.memory_id
                vecs[mid] = self.mem.get(mid).embedding  # as stored (float32)
            for _ in range(5):
                q = [b * (1 - spread) + rng.uniform(-1, 1) * spread for b in base]
                r = self.mem.search(user, embedding=q, top_k=5, weights=mp.SearchWeights(vector=1))
                qn = math.sqrt(sum(x * x for x in q))

                def cos(v):
                    return sum(a * b for a, b in zip(q, v)) / (qn * math.sqrt(sum(x * x for x in v)))
                want = sorted(vecs, key=lambda m: -max(0.0, cos(vecs[m])))[:5]
                self.assertEqual([x.memory.memory_id for x in r.results], want, name)
                for x in r.results:
                    self.assertAlmostEqual(x.vector_score, max(0.0, cos(vecs[x.memory.memory_id])),
                                           places=5)

    def test_search_excludes_duplicates_deleted_and_filters(self):
        user = uid("u")
        a = self.mem.create(user, "Liam collects vintage stamps", importance=0.9, tags=["hobby"],
                            category="leisure").memory
        self.mem.create(user, "liam collects vintage stamps", importance=0.1)  # DUPLICATE
        c = self.mem.create(user, "Liam sells vintage stamps online", type=FACT, tags=["work"]).memory
        d = self.mem.create(user, "Liam trades vintage stamps", type=FACT).memory
        self.mem.delete(d.memory_id)
        ids = [x.memory.memory_id for x in self.mem.search(user, "vintage stamps").results]
        self.assertEqual(sorted(ids), sorted([a.memory_id, c.memory_id]))
        f = mp.MemoryFilter(types=[FACT])
        self.assertEqual([x.memory.memory_id for x in self.mem.search(user, "stamps", filter=f).results],
                         [c.memory_id])
        f = mp.MemoryFilter(tags=["hobby"], category="leisure", min_importance=0.5)
        self.assertEqual([x.memory.memory_id for x in self.mem.search(user, "stamps", filter=f).results],
                         [a.memory_id])
        self.assertEqual(list(self.mem.search(user, "stamps", filter=mp.MemoryFilter(tags=["nope"])).results), [])
        self.assertInvalid(self.mem.search, user, "stamps", filter=mp.MemoryFilter(states=[DUP]),
                           field="filter.states[0]")
        self.assertEqual(list(self.mem.search(uid("nobody"), "stamps").results), [])

    def test_lookup_and_scan_paths_agree(self):
        # Few candidates among many memories: postings are looked up one by
        # one; many (a word every memory has): one scan. Both must give the
        # same ranking and the same de-duplication.
        user = uid("u")
        ids = [self.mem.create(user, "common word%d alpha%d beta%d" % (i, i, i), type=FACT,
                               importance=i / 40.0).memory.memory_id for i in range(40)]
        r = self.mem.search(user, "alpha7 beta7")
        self.assertEqual([x.memory.memory_id for x in r.results], [ids[7]])
        r = self.mem.search(user, "common", top_k=3)  # every memory: the scan path
        self.assertEqual([x.memory.memory_id for x in r.results], [ids[39], ids[38], ids[37]])
        d = self.mem.create(user, "common word12 alpha12 beta12!", type=FACT, importance=0.0)
        self.assertEqual((d.outcome, d.matched_memory_id), (DUPLICATE, ids[12]))
        d = self.mem.create(user, "word5 alpha5 beta5", type=FACT, jt=0.7)  # one candidate
        self.assertEqual((d.outcome, d.matched_memory_id), (DUPLICATE, ids[5]))
        d = self.mem.create(user, "common", type=FACT, jt=0.2)  # shares a word with all 40
        self.assertEqual((d.outcome, d.matched_memory_id), (DUPLICATE, ids[0]))

    # ---- List -----------------------------------------------------------------------------------

    def test_list_filters_orders_pagination(self):
        user = uid("u")
        made = []
        for i in range(9):
            m = self.mem.create(user, "note number %d about topic %s" % (i, "xyz"[i % 3]),
                                type=FACT if i % 2 else PREF, importance=(i % 4) / 4.0,
                                tags=["t%d" % (i % 3)], category="c%d" % (i % 2),
                                policy=mp.DEDUP_POLICY_OFF).memory
            made.append(m)
        newest = self.mem.list_all(user, page_size=2)
        self.assertEqual([m.memory_id for m in newest], [m.memory_id for m in reversed(made)])
        by_imp = self.mem.list_all(user, order=mp.MEMORY_ORDER_IMPORTANCE, page_size=4)
        want = sorted(made, key=lambda m: (-m.importance, -(m.create_time.seconds * 10**9 + m.create_time.nanos)))
        self.assertEqual([m.memory_id for m in by_imp], [m.memory_id for m in want])
        facts = self.mem.list_all(user, mp.MemoryFilter(types=[FACT]))
        self.assertEqual([m.memory_id for m in facts], [m.memory_id for m in reversed(made) if m.type == FACT])
        t1 = self.mem.list_all(user, mp.MemoryFilter(tags=["t1"], category="c1"))
        self.assertEqual(sorted(m.memory_id for m in t1),
                         sorted(m.memory_id for m in made if "t1" in m.tags and m.category == "c1"))
        hi = self.mem.list_all(user, mp.MemoryFilter(min_importance=0.5))
        self.assertEqual(len(hi), len([m for m in made if m.importance >= 0.5]))
        rng = mp.MemoryFilter(create_time_from=made[2].create_time, create_time_to=made[5].create_time)
        self.assertEqual([m.memory_id for m in self.mem.list_all(user, rng)],
                         [made[4].memory_id, made[3].memory_id, made[2].memory_id])
        # page_size rules
        self.assertEqual(len(self.mem.list(user, page_size=100000).memories), 9)
        self.assertEqual(len(self.mem.list(user).memories), 9)
        self.assertInvalid(self.mem.list, user, page_size=-1, field="page_size")
        self.assertInvalid(self.mem.list, user, page_token="zz", field="page_token")
        tok = self.mem.list(user, page_size=2).next_page_token
        self.assertInvalid(self.mem.list, user, order=mp.MEMORY_ORDER_IMPORTANCE, page_token=tok,
                           field="page_token")

    # ---- expiry ------------------------------------------------------------------------------------

    def test_expired_memories_are_never_returned(self):
        user = uid("u")
        soon = mp.Memory().create_time.__class__()
        soon.FromMicroseconds(time.time_ns() // 1000 + 3_000_000)
        m = self.mem.create(user, "Mia is visiting Paris this week", expire_time=soon,
                            embedding=[1, 0]).memory
        self.assertEqual(self.mem.get(m.memory_id).expire_time, soon)
        self.assertEqual(len(self.mem.search(user, "paris").results), 1)
        time.sleep(max(0.0, soon.ToNanoseconds() / 1e9 - time.time()) + 0.3)
        self.assertStatus(NOT_FOUND, self.mem.get, m.memory_id)
        self.assertEqual(list(self.mem.search(user, "paris").results), [])
        self.assertEqual(list(self.mem.search(user, embedding=[1, 0]).results), [])
        self.assertEqual(list(self.mem.list(user, mp.MemoryFilter(states=[ACTIVE, DUP, DELETED])).memories), [])
        self.assertStatus(NOT_FOUND, self.mem.update, mp.Memory(memory_id=m.memory_id, text="x"), ["text"])
        self.assertStatus(NOT_FOUND, self.mem.delete, m.memory_id)
        st = self.mem.stats(user)
        self.assertEqual((st.active_memories, st.expired_memories), (0, 1))
        # an expired memory no longer de-duplicates
        self.assertEqual(self.mem.create(user, "Mia is visiting Paris this week").outcome, CREATED)
        past = mp.Memory().create_time.__class__()
        past.FromSeconds(int(time.time()) - 10)
        self.assertInvalid(self.mem.create, user, "x", expire_time=past, field="memory.expire_time")

    # ---- users --------------------------------------------------------------------------------------

    def test_user_stats(self):
        user = uid("u")
        a = self.mem.create(user, "Noah likes chess", embedding=[1, 2, 3]).memory
        self.mem.create(user, "Noah likes chess")
        self.mem.create(user, "Noah was born in 1990", type=FACT)
        d = self.mem.create(user, "Noah has a cat", type=FACT).memory
        self.mem.delete(d.memory_id)
        self.client.create(user)
        st = self.mem.stats(user)
        self.assertEqual((st.active_memories, st.duplicate_memories, st.deleted_memories,
                          st.expired_memories), (2, 1, 1, 0))
        self.assertEqual((st.sessions, st.embedding_dimension, st.memory_quota), (1, 3, 10000))
        rows = {r.type: (r.active, r.duplicate, r.deleted) for r in st.by_type}
        self.assertEqual(rows, {PREF: (1, 1, 0), FACT: (1, 0, 1)})
        self.assertEqual(self.mem.stats(uid("nobody")).active_memories, 0)
        self.assertTrue(a.memory_id)

    # ---- bad input (issue 3 point 7) ------------------------------------------------------------------

    def test_bad_inputs_name_the_field(self):
        user = uid("u")
        self.mem.create(user, "dimension setter", embedding=[1, 2, 3])
        inv = self.assertInvalid
        for v in (-0.1, 1.5, float("nan")):
            inv(self.mem.create, user, "x", importance=v, field="memory.importance")
            inv(self.mem.create, user, "x", confidence=v, field="memory.confidence")
        inv(self.mem.create, user, "x", embedding=[1, float("nan"), 2], field="memory.embedding")
        inv(self.mem.create, user, "x", embedding=[1, float("inf"), 2], field="memory.embedding")
        inv(self.mem.create, user, "x", embedding=[0.0, 0.0, 0.0], field="memory.embedding")
        inv(self.mem.create, uid("u"), "x", embedding=[0.1] * 4097, field="memory.embedding")
        e = inv(self.mem.create, user, "x", embedding=[1, 2], field="memory.embedding")
        self.assertIn("3", e.details())
        inv(self.mem.create, user, "x", type=0, field="memory.type")
        inv(self.mem.create, user, "x", type=42, field="memory.type")
        inv(self.mem.create, user, "", field="memory.text")
        inv(self.mem.create, user, "x", tags=["t%d" % i for i in range(33)], field="memory.tags")
        inv(self.mem.create, user, "x", tags=[""], field="memory.tags")
        inv(self.mem.create, "", "x", field="memory.user_id")
        inv(self.mem.create, "bad user!", "x", field="memory.user_id")
        inv(self.mem.create, user, "x", memory_id="bad id", field="memory.memory_id")
        inv(self.mem.create, user, "x", jt=1.5, field="jaccard_threshold")
        inv(self.mem.create, user, "x", ct=float("nan"), field="cosine_threshold")
        inv(self.mem.create, user, "x", category="c" * 257, field="memory.category")
        inv(self.mem.create, user, "x" * 70000, field="memory.text")
        for k in (-1, 101):
            inv(self.mem.search, user, "x", top_k=k, field="top_k")
        inv(self.mem.search, user, field="query")
        inv(self.mem.search, user, embedding=[1, 2], field="embedding")
        inv(self.mem.search, user, embedding=[float("nan"), 1, 1], field="embedding")
        inv(self.mem.search, user, "x", weights=mp.SearchWeights(keyword=-1), field="weights.keyword")
        inv(self.mem.search, user, "x", weights=mp.SearchWeights(), field="weights")
        inv(self.mem.search, user, "x", min_score=2, field="min_score")
        inv(self.mem.search, user, "x", filter=mp.MemoryFilter(min_importance=float("nan")),
            field="filter.min_importance")
        inv(self.mem.search, user, "x", filter=mp.MemoryFilter(types=[9]), field="filter.types[0]")
        inv(self.mem.list, "", field="user_id")
        inv(self.mem.get, "", field="memory_id")
        inv(self.mem.delete, "bad id", field="memory_id")
        inv(self.mem.delete_user, "", field="user_id")
        inv(self.mem.stats, "bad id", field="user_id")
        # every top_k in range works
        for k in (0, 1, 100):
            self.mem.search(user, "dimension", top_k=k)


class MemoryTenantTest(E2ETestCase):
    """Two tenants: memories and sessions of one are invisible to the other;
    memory text never reaches the disk in the clear."""

    def test_isolation_and_at_rest(self):
        srv = Server(tokens=[("acme", "agent", "acme-secret"), ("beta", "agent", "beta-secret")])
        try:
            srv.start()
            a, b = Mem(srv.client("acme-secret")), Mem(srv.client("beta-secret"))
            secret = "Olga's door code is 8472-PLAINTEXT-CANARY"
            m = a.create("olga", secret, category="CATEGORY-CANARY", tags=["TAG-CANARY"]).memory
            self.assertStatus(NOT_FOUND, b.get, m.memory_id)
            self.assertEqual(list(b.search("olga", "door code").results), [])
            self.assertEqual(list(b.list("olga").memories), [])
            self.assertEqual(len(a.search("olga", "door code").results), 1)
            # the same text in another tenant is not a duplicate
            self.assertEqual(b.create("olga", secret).outcome, CREATED)
            # a session of another tenant cannot be a source
            sid = uid("s")
            b.c.create("olga", session_id=sid)
            self.assertInvalid(a.create, "olga", "x y", source_session_id=sid,
                               field="memory.source_session_id")
            srv.stop()
            for root, _, names in os.walk(srv.data_dir):
                for n in names:
                    with open(os.path.join(root, n), "rb") as f:
                        data = f.read()
                    for canary in (b"PLAINTEXT-CANARY", b"CATEGORY-CANARY", b"TAG-CANARY", b"door"):
                        self.assertNotIn(canary, data, "%s found in %s" % (canary, n))
        finally:
            srv.close()


class QuotaTest(E2ETestCase):

    def test_quota_reject_then_evict(self):
        srv = Server("--memory-quota", "3")
        try:
            srv.start()
            mem = Mem(srv.client())
            user = uid("u")
            made = [mem.create(user, "fact number %s" % w, importance=imp).memory
                    for w, imp in (("one", 0.5), ("two", 0.2), ("three", 0.9))]
            e = self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, mem.create, user, "fact four")
            self.assertIn("--memory-quota", e.details())
            self.assertIn("3", e.details())
            # a duplicate does not need room
            self.assertEqual(mem.create(user, "fact number one").outcome, DUPLICATE)
            # nor does superseding (one ACTIVE in, one out)
            self.assertEqual(mem.create(user, "fact number two", importance=0.95).outcome, SUPERSEDED)
            # other users are not affected
            mem.create(uid("u"), "fact four")
            # deleting makes room
            mem.delete(made[2].memory_id)
            mem.create(user, "fact five", importance=0.7)
            # evict: the lowest-importance ACTIVE memory goes
            r = mem.create(user, "fact six", importance=0.6, quota=mp.QUOTA_POLICY_EVICT_LOWEST)
            self.assertEqual(r.evicted_memory_id, made[0].memory_id)
            self.assertStatus(NOT_FOUND, mem.get, made[0].memory_id)
            self.assertEqual(mem.stats(user).active_memories, 3)
        finally:
            srv.close()

    def test_server_evict_policy_and_expired_make_room(self):
        srv = Server("--memory-quota", "2", "--memory-quota-policy", "evict")
        try:
            srv.start()
            mem = Mem(srv.client())
            user = uid("u")
            soon = mp.Memory().create_time.__class__()
            mem.c.health()  # connect first, so the expiry below is not eaten by it
            soon.FromNanoseconds(time.time_ns() + 1_500_000_000)
            a = mem.create(user, "short lived", importance=1.0, expire_time=soon).memory
            b = mem.create(user, "long lived", importance=0.9).memory
            time.sleep(max(0.0, soon.ToNanoseconds() / 1e9 - time.time()) + 0.3)
            # the expired one is purged to make room: nothing is evicted
            r = mem.create(user, "newcomer", importance=0.1)
            self.assertEqual(r.evicted_memory_id, "")
            self.assertStatus(NOT_FOUND, mem.get, a.memory_id)
            newcomer = r.memory.memory_id
            r = mem.create(user, "another", importance=0.5)
            self.assertEqual(r.evicted_memory_id, newcomer)
            left = {m.memory_id for m in mem.list(user).memories}
            self.assertEqual(left, {b.memory_id, r.memory.memory_id})
            self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, mem.create, user, "no room",
                              quota=mp.QUOTA_POLICY_REJECT)
        finally:
            srv.close()


class EraseTest(E2ETestCase):

    def test_delete_user_bounded_complete_and_gone_from_file(self):
        srv = Server("--erase-batch", "25")
        try:
            srv.start()
            mem = Mem(srv.client())
            victim, other = "victim-" + uid("u"), "other-" + uid("u")
            sids = []
            for i in range(3):
                s = mem.c.create(victim)
                sids.append(s.session_id)
                mem.c.append(s.session_id, *[M("message %d" % q, client_message_id="c%d" % q)
                                             for q in range(20)])
            mids = [mem.create(victim, "victim fact %d" % i, embedding=[1, i],
                               policy=mp.DEDUP_POLICY_OFF).memory.memory_id for i in range(40)]
            keep = mem.create(other, "other fact", embedding=[1, 2]).memory
            # other writers keep going while the erasure runs
            stop = threading.Event()
            side = []

            def writer():
                w = Mem(srv.client())
                while not stop.is_set() and len(side) < 200:
                    side.append(w.create(other, "side write %d" % len(side),
                                         policy=mp.DEDUP_POLICY_OFF).memory.memory_id)
            t = threading.Thread(target=writer, daemon=True)
            t.start()
            r = mem.delete_user(victim)
            stop.set()
            t.join(10)
            self.assertEqual((r.deleted_sessions, r.deleted_messages, r.deleted_memories), (3, 60, 40))
            self.assertGreater(r.batches, 10, "erasure must take many bounded transactions")
            for mid in mids:
                self.assertStatus(NOT_FOUND, mem.get, mid)
            for sid in sids:
                self.assertStatus(NOT_FOUND, mem.c.get, sid)
            self.assertEqual(list(mem.list(victim).memories), [])
            self.assertEqual(list(mem.c.list_sessions(victim).sessions), [])
            st = mem.stats(victim)
            self.assertEqual((st.active_memories, st.sessions, st.embedding_dimension), (0, 0, 0))
            self.assertEqual(mem.get(keep.memory_id).text, "other fact")
            self.assertTrue(side)
            # a second erasure finds nothing
            r2 = mem.delete_user(victim)
            self.assertEqual((r2.deleted_sessions, r2.deleted_messages, r2.deleted_memories), (0, 0, 0))
            # the user is free to start over (new dimension)
            mem.create(victim, "fresh start", embedding=[1, 2, 3])
            mem.delete_user(victim)
            srv.stop()
            dbs = dump_data_dbs(srv.data_dir)
            self.assertIn("memories", dbs)
            needles = [victim.encode()] + [x.encode() for x in mids + sids]
            for name, rows in dbs.items():
                if name == "wal":
                    continue  # history until trimmed: see docs/security.md
                for k, v in rows:
                    for n in needles:
                        self.assertNotIn(n, k, "%s key still holds %r" % (name, n))
                        self.assertNotIn(n, v, "%s value still holds %r" % (name, n))
            self.assertTrue(any(other.encode() in k for k, _ in dbs["memories_by_user"]))
        finally:
            srv.close()


class MemoryCliTest(ServerTestCase):
    """engram memory add|get|update|delete|list|search, engram user delete|stats."""

    def cli(self, *args, want=0):
        import json
        from harness import ENGRAM_CLI, clean_env
        p = subprocess.run([ENGRAM_CLI, "--target", self.server.addr, "--json"] + list(args),
                           capture_output=True, timeout=30, env=clean_env())
        self.assertEqual(p.returncode, want, "engram %s: %s" % (" ".join(args), p.stderr.decode()))
        return json.loads(p.stdout.decode().splitlines()[0]) if want == 0 else p.stderr.decode()

    def test_cli_memory_and_user_commands(self):
        user = uid("u")
        r = self.cli("memory", "add", "--user", user, "--type", "preference", "--text",
                     "Pia likes oolong tea", "--tags", "drinks,tea", "--importance", "0.6",
                     "--embedding", "1,0,0")
        mid = r["memory"]["memoryId"]
        self.assertEqual(r["outcome"], "DEDUP_OUTCOME_CREATED")
        r = self.cli("memory", "add", "--user", user, "--type", "preference", "--text",
                     "Pia dislikes oolong tea")
        self.assertEqual(r["conflictsWith"], [mid])
        self.assertEqual(self.cli("memory", "get", mid)["tags"], ["drinks", "tea"])
        r = self.cli("memory", "search", "--user", user, "--query", "oolong", "--top-k", "1",
                     "--weights", "1,0,1,0")
        self.assertEqual(r["results"][0]["memory"]["memoryId"], mid)
        r = self.cli("memory", "update", mid, "--text", "Pia likes oolong and sencha",
                     "--clear-tags", "--expected-version", "1")
        self.assertEqual((r["version"], r["tags"]), ("2", []))
        r = self.cli("memory", "list", "--user", user, "--order", "importance", "--types",
                     "preference", "--page-size", "1")
        self.assertEqual(r["memories"][0]["memoryId"], mid)
        self.assertTrue(r["nextPageToken"])
        self.assertEqual(self.cli("memory", "delete", mid)["memory"]["state"], "MEMORY_STATE_DELETED")
        self.assertEqual(self.cli("user", "stats", user)["deletedMemories"], "1")
        self.assertEqual(self.cli("user", "delete", user)["deletedMemories"], "2")
        self.assertIn("NOT_FOUND", self.cli("memory", "get", mid, want=4))
        self.assertIn("--type", self.cli("memory", "add", "--user", user, "--type", "nope",
                                         "--text", "x", want=2))
        self.assertIn("importance", self.cli("memory", "add", "--user", user, "--type", "fact",
                                             "--text", "x", "--importance", "2", want=5))
