"""Memory metadata, namespaces, language and the List/Search filters on them
(agent_id, source_session_id, namespace_prefix, metadata_equals), and
BatchCreateMemories / BatchDeleteMemories, through the real engramd: each
filter alone and combined, prefixes at label boundaries, metadata encrypted
at rest, every limit at its edge, batch outcomes one by one, and memories
whose meta predates the filter tokens (layout 2, rewritten in the file)."""
import shutil

import grpc
from google.protobuf import field_mask_pb2

from harness import ServerTestCase, uid
from test_at_rest import mdb_dump, mdb_put

from engram.storage.v1 import memory_records_pb2 as mr  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FACT = mp.MEMORY_TYPE_FACT
OFF = mp.DEDUP_POLICY_OFF


class MemoryFiltersTest(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.m = mpg.MemoryServiceStub(self.client.channel)

    def call(self, method, req):
        return getattr(self.m, method)(req, timeout=10.0, metadata=self.client.md)

    def create(self, user, text, policy=OFF, **kw):
        return self.call("CreateMemory", mp.CreateMemoryRequest(
            memory=mp.Memory(user_id=user, text=text, type=FACT, **kw), dedup_policy=policy))

    def ids(self, user, **filt):
        """Memory ids ListMemories returns under MemoryFilter(**filt), paged
        one at a time (the filters hold across pages)."""
        out, token = [], ""
        for _ in range(100):
            r = self.call("ListMemories", mp.ListMemoriesRequest(
                user_id=user, filter=mp.MemoryFilter(**filt), page_size=1, page_token=token))
            out += [m.memory_id for m in r.memories]
            token = r.next_page_token
            if not token:
                return sorted(out)
        self.fail("ListMemories did not end")

    def found(self, user, query, language="", **filt):
        r = self.call("SearchMemories", mp.SearchMemoriesRequest(
            user_id=user, query=query, language=language, filter=mp.MemoryFilter(**filt)))
        return sorted(x.memory.memory_id for x in r.results)

    def md_eq(self, **pairs):
        return [mp.MemoryFilter.MetadataEquals(key=k, value=v) for k, v in pairs.items()]

    def fixture(self):
        """Four memories of a new user: (user, ids by name, session id)."""
        u = uid("u")
        sid = self.client.create(u).session_id
        mk = lambda text, **kw: self.create(u, text, **kw).memory.memory_id  # noqa: E731
        ids = {
            "tea": mk("likes green tea every morning", agent_id="a1", source_session_id=sid,
                      namespace="agent/planner", metadata={"project": "apollo", "env": "prod"}),
            "chess": mk("plays chess every sunday", agent_id="a2", namespace="agents",
                        metadata={"project": "apollo"}),
            "car": mk("drives a red car to work", agent_id="a1", namespace="agent",
                      metadata={"project": "zeus"}),
            "books": mk("reads science fiction books"),
        }
        return u, ids, sid

    def test_each_filter_alone_and_combined(self):
        u, i, sid = self.fixture()
        S = lambda *names: sorted(i[n] for n in names)  # noqa: E731
        self.assertEqual(self.ids(u), S("tea", "chess", "car", "books"))
        self.assertEqual(self.ids(u, agent_id="a1"), S("tea", "car"))
        self.assertEqual(self.ids(u, agent_id="a3"), [])
        self.assertEqual(self.ids(u, source_session_id=sid), S("tea"))
        # prefixes at label boundaries: "agent" is not a prefix of "agents"
        self.assertEqual(self.ids(u, namespace_prefix="agent"), S("tea", "car"))
        self.assertEqual(self.ids(u, namespace_prefix="agents"), S("chess"))
        self.assertEqual(self.ids(u, namespace_prefix="agent/planner"), S("tea"))
        self.assertEqual(self.ids(u, namespace_prefix="agent/plan"), [])
        self.assertEqual(self.ids(u, namespace_prefix="age"), [])
        self.assertEqual(self.ids(u, metadata_equals=self.md_eq(project="apollo")), S("tea", "chess"))
        self.assertEqual(self.ids(u, metadata_equals=self.md_eq(project="apollo", env="prod")),
                         S("tea"))
        self.assertEqual(self.ids(u, metadata_equals=self.md_eq(project="apoll")), [])
        self.assertEqual(self.ids(u, metadata_equals=self.md_eq(env="apollo")), [])
        self.assertEqual(self.ids(u, agent_id="a1", metadata_equals=self.md_eq(project="apollo")),
                         S("tea"))
        self.assertEqual(self.ids(u, agent_id="a1", namespace_prefix="agent",
                                  metadata_equals=self.md_eq(project="zeus")), S("car"))
        self.assertEqual(self.ids(u, agent_id="a2", namespace_prefix="agent"), [])
        # Search takes the same filters
        self.assertEqual(self.found(u, "tea"), S("tea"))
        self.assertEqual(self.found(u, "tea", agent_id="a2"), [])
        self.assertEqual(self.found(u, "chess", namespace_prefix="agents"), S("chess"))
        self.assertEqual(self.found(u, "chess", namespace_prefix="agent"), [])
        self.assertEqual(self.found(u, "car tea", metadata_equals=self.md_eq(project="zeus")),
                         S("car"))
        self.assertEqual(self.found(u, "car tea", source_session_id=sid), S("tea"))
        # replies carry metadata, namespace, language
        got = self.call("GetMemory", mp.GetMemoryRequest(memory_id=i["tea"]))
        self.assertEqual(dict(got.metadata), {"project": "apollo", "env": "prod"})
        self.assertEqual(got.namespace, "agent/planner")

    def test_metadata_encrypted_at_rest(self):
        if not shutil.which("mdb_dump"):
            self.fail("mdb_dump (lmdb-utils) not installed")
        u = uid("u")
        secret_k, secret_v = "keyZQ81plain", "valueZQ81plain"
        mid = self.create(u, "a fact with secret metadata",
                          metadata={secret_k: secret_v}).memory.memory_id
        self.assertEqual(dict(self.call("GetMemory", mp.GetMemoryRequest(memory_id=mid)).metadata),
                         {secret_k: secret_v})
        self.assertEqual(self.ids(u, metadata_equals=self.md_eq(**{secret_k: secret_v})), [mid])
        for db in ("memories", "memories_by_user", "memory_terms"):
            _, recs = mdb_dump(self.server.data_dir, db)
            for k, v in recs:
                for s in (secret_k, secret_v):
                    self.assertNotIn(s.encode(), k + v, "%s holds %r in plaintext" % (db, s))

    def test_limits_at_their_edges(self):
        u = uid("u")
        eight = "/".join("l%d" % n for n in range(8))
        self.assertEqual(self.create(u, "eight labels", namespace=eight).memory.namespace, eight)
        self.assertInvalid(self.create, u, "nine labels", namespace=eight + "/l8",
                           field="memory.namespace")
        n128 = "a" * 64 + "/" + "b" * 63
        self.assertEqual(len(n128), 128)
        self.create(u, "namespace of 128 bytes", namespace=n128)
        self.assertInvalid(self.create, u, "129 bytes", namespace=n128 + "b", field="memory.namespace")
        self.assertInvalid(self.create, u, "label 65", namespace="c" * 65, field="memory.namespace")
        for bad in ("a//b", "/a", "a/", "a b", "ü", ".", "..", "a/../b", "a/./b"):
            self.assertInvalid(self.create, u, "bad namespace", namespace=bad, field="memory.namespace")
            self.assertInvalid(self.ids, u, namespace_prefix=bad, field="filter.namespace_prefix")
        self.assertInvalid(self.create, u, "bad language", language="not a tag",
                           field="memory.language")
        md64 = {"k%02d" % n: "v" for n in range(64)}
        self.create(u, "sixty-four metadata entries", metadata=md64)
        md65 = dict(md64, k64="v")
        self.assertInvalid(self.create, u, "sixty-five", metadata=md65, field="memory.metadata")
        self.assertInvalid(self.create, u, "empty key", metadata={"": "v"}, field="memory.metadata")
        pairs16 = [mp.MemoryFilter.MetadataEquals(key="k%02d" % n, value="v") for n in range(16)]
        self.assertEqual(len(self.ids(u, metadata_equals=pairs16)), 1)
        pairs17 = pairs16 + [mp.MemoryFilter.MetadataEquals(key="k16", value="v")]
        self.assertInvalid(self.ids, u, metadata_equals=pairs17, field="filter.metadata_equals")
        self.assertInvalid(self.ids, u, metadata_equals=[mp.MemoryFilter.MetadataEquals(value="v")],
                           field="filter.metadata_equals[0].key")
        self.assertInvalid(self.ids, u, agent_id="bad id!", field="filter.agent_id")
        # batches: 100 and 1000 go, one more is refused and nothing written
        v = uid("v")
        reqs = [mp.CreateMemoryRequest(memory=mp.Memory(user_id=v, text="fact number %d" % n,
                                                        type=FACT), dedup_policy=OFF)
                for n in range(101)]
        self.assertInvalid(self.call, "BatchCreateMemories",
                           mp.BatchCreateMemoriesRequest(requests=reqs), field="requests")
        self.assertEqual(self.ids(v), [])
        self.assertInvalid(self.call, "BatchCreateMemories", mp.BatchCreateMemoriesRequest(),
                           field="requests")
        r = self.call("BatchCreateMemories", mp.BatchCreateMemoriesRequest(requests=reqs[:100]))
        self.assertEqual([x.status.code for x in r.results], [0] * 100)
        made = [x.response.memory.memory_id for x in r.results]
        self.assertEqual(sorted(made), self.ids(v))
        ids1000 = made + ["missing-%d" % n for n in range(900)]
        self.assertInvalid(self.call, "BatchDeleteMemories",
                           mp.BatchDeleteMemoriesRequest(memory_ids=ids1000 + ["one-more"]),
                           field="memory_ids")
        self.assertEqual(len(self.ids(v)), 100)
        self.assertInvalid(self.call, "BatchDeleteMemories", mp.BatchDeleteMemoriesRequest(),
                           field="memory_ids")
        r = self.call("BatchDeleteMemories", mp.BatchDeleteMemoriesRequest(memory_ids=ids1000))
        codes = [x.status.code for x in r.results]
        self.assertEqual(codes, [0] * 100 + [grpc.StatusCode.NOT_FOUND.value[0]] * 900)
        self.assertEqual(self.ids(v), [])

    def test_batch_create_outcomes(self):
        u = uid("u")
        req = lambda text, **kw: mp.CreateMemoryRequest(  # noqa: E731
            memory=mp.Memory(user_id=u, text=text, type=FACT, **kw))
        r = self.call("BatchCreateMemories", mp.BatchCreateMemoriesRequest(requests=[
            req("owns a small sailing boat", metadata={"src": "batch"}),
            req(""),
            req("owns a small sailing boat"),
            req("speaks fluent portuguese", memory_id="m-" + u),
            req("works as a carpenter", memory_id="m-" + u),
            req("bad namespace", namespace="a//b"),
        ]))
        st = [x.status for x in r.results]
        ok, inv = 0, INVALID.value[0]
        self.assertEqual([s.code for s in st],
                         [ok, inv, ok, ok, grpc.StatusCode.ALREADY_EXISTS.value[0], inv])
        self.assertIn("memory.text", st[1].message)
        self.assertIn("memory.namespace", st[5].message)
        self.assertFalse(r.results[1].HasField("response"))
        first = r.results[0].response
        self.assertEqual(first.outcome, mp.DEDUP_OUTCOME_CREATED)
        self.assertEqual(dict(first.memory.metadata), {"src": "batch"})
        # de-duplicated against the batch's own earlier memory
        second = r.results[2].response
        self.assertIn(second.outcome, (mp.DEDUP_OUTCOME_DUPLICATE, mp.DEDUP_OUTCOME_MERGED))
        self.assertEqual(second.matched_memory_id, first.memory.memory_id)
        # failed requests wrote nothing
        texts = sorted(m.text for m in self.call("ListMemories", mp.ListMemoriesRequest(
            user_id=u, filter=mp.MemoryFilter(states=[1, 2, 3, 4]))).memories)
        self.assertEqual(texts, ["owns a small sailing boat", "owns a small sailing boat",
                                 "speaks fluent portuguese"])

    def test_batch_delete(self):
        u = uid("u")
        a = self.create(u, "collects old stamps").memory.memory_id
        b = self.create(u, "grows tomatoes at home").memory.memory_id
        r = self.call("BatchDeleteMemories", mp.BatchDeleteMemoriesRequest(
            memory_ids=[a, "no-such-memory", b]))
        self.assertEqual([x.memory_id for x in r.results], [a, "no-such-memory", b])
        self.assertEqual([x.status.code for x in r.results],
                         [0, grpc.StatusCode.NOT_FOUND.value[0], 0])
        self.assertIn("no-such-memory", r.results[1].status.message)
        self.assertEqual([x.purged for x in r.results], [False, False, False])
        got = self.call("GetMemory", mp.GetMemoryRequest(memory_id=a))
        self.assertEqual(got.state, mp.MEMORY_STATE_DELETED)
        r = self.call("BatchDeleteMemories", mp.BatchDeleteMemoriesRequest(memory_ids=[a, b],
                                                                          purge=True))
        self.assertEqual([(x.status.code, x.purged) for x in r.results], [(0, True), (0, True)])
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.call, "GetMemory",
                          mp.GetMemoryRequest(memory_id=a))
        self.assertInvalid(self.call, "BatchDeleteMemories",
                           mp.BatchDeleteMemoriesRequest(memory_ids=["x1", "x2", "x1"]),
                           field="memory_ids[2]")
        self.assertInvalid(self.call, "BatchDeleteMemories",
                           mp.BatchDeleteMemoriesRequest(memory_ids=["x1", "bad id"]),
                           field="memory_ids[1]")

    def get(self, mid):
        return self.call("GetMemory", mp.GetMemoryRequest(memory_id=mid))

    def update(self, memory, *paths):
        return self.call("UpdateMemory", mp.UpdateMemoryRequest(
            memory=memory, update_mask=field_mask_pb2.FieldMask(paths=list(paths))))

    def test_update_metadata_namespace_language(self):
        u = uid("u")
        mid = self.create(u, "die Katzen schlafen im Garten", metadata={"k": "old"},
                          namespace="team/a").memory.memory_id
        got = self.update(mp.Memory(memory_id=mid, metadata={"k": "new", "x": "y"},
                                    namespace="team/b", language="de"),
                          "metadata", "namespace", "language")
        self.assertEqual(dict(got.metadata), {"k": "new", "x": "y"})
        self.assertEqual((got.namespace, got.language), ("team/b", "de"))
        self.assertEqual(self.ids(u, metadata_equals=self.md_eq(k="old")), [])
        self.assertEqual(self.ids(u, metadata_equals=self.md_eq(k="new", x="y")), [mid])
        self.assertEqual(self.ids(u, namespace_prefix="team/a"), [])
        self.assertEqual(self.ids(u, namespace_prefix="team"), [mid])
        # the stored text was indexed again, in the new language (words the
        # tokenizer reads alike in both, so this holds whatever it stems)
        self.assertEqual(self.found(u, "Katzen Garten", language="de"), [mid])
        self.assertEqual(self.get(mid).language, "de")
        # a text edit keeps the stored language; metadata and namespace cleared
        got = self.update(mp.Memory(memory_id=mid, text="der Hund bellt laut"), "text")
        self.assertEqual(got.language, "de")
        self.assertEqual(self.found(u, "Hund", language="de"), [mid])
        self.assertEqual(self.found(u, "Katzen", language="de"), [])
        got = self.update(mp.Memory(memory_id=mid), "metadata", "namespace")
        self.assertEqual((dict(got.metadata), got.namespace), ({}, ""))
        self.assertEqual(self.ids(u, namespace_prefix="team"), [])
        self.assertInvalid(self.update, mp.Memory(memory_id=mid, namespace="x//y"), "namespace",
                           field="memory.namespace")

    def test_memories_from_before_the_filter_tokens(self):
        """A memory whose meta is layout 2 and whose record has no tokens (as
        one written before schema 6): agent and source filters read its
        record, namespace and metadata filters skip it, and its next write
        gives it the current layout (4) with the tokens."""
        u = uid("u")
        sid = self.client.create(u).session_id
        mid = self.create(u, "an old memory", agent_id="ag1", source_session_id=sid).memory.memory_id
        self.server.stop()
        rhdr, recs = mdb_dump(self.server.data_dir, "memories")
        rh, rv = next((k, v) for k, v in recs if k.endswith(mid.encode()))
        rec = mr.MemoryRecord.FromString(rv)
        for f in ("agent_hash", "source_hash", "index_version"):
            rec.ClearField(f)
        header, metas = mdb_dump(self.server.data_dir, "memories_by_user")
        mk, mv = next((k, v) for k, v in metas if k.endswith(mid.encode()))
        self.assertEqual(mv[0], 4)
        n_tags = int.from_bytes(mv[6:8], "little")
        old = bytes([2]) + mv[1:56 + 8 * n_tags]
        mdb_put(self.server.data_dir, "memories", rhdr, [(rh, rec.SerializeToString())])
        mdb_put(self.server.data_dir, "memories_by_user", header, [(mk, old)])
        self.revive()
        self.m = mpg.MemoryServiceStub(self.client.channel)
        self.assertEqual(self.ids(u, agent_id="ag1"), [mid])
        self.assertEqual(self.ids(u, agent_id="ag2"), [])
        self.assertEqual(self.ids(u, source_session_id=sid), [mid])
        self.assertEqual(self.ids(u, namespace_prefix="a"), [])
        self.assertEqual(self.found(u, "old memory", agent_id="ag1"), [mid])
        # a write of anything else: layout 4, the tokens made from the ids
        self.update(mp.Memory(memory_id=mid, importance=0.9), "importance")
        _, metas = mdb_dump(self.server.data_dir, "memories_by_user")
        self.assertEqual(next(v for k, v in metas if k.endswith(mid.encode()))[0], 4)
        self.assertEqual(self.ids(u, agent_id="ag1"), [mid])
        self.assertEqual(self.ids(u, source_session_id=sid), [mid])
