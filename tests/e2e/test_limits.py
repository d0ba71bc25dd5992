"""Limits that bound the work of one call: every page reply stays under
--max-reply-bytes (a client with gRPC's default 4 MiB receive limit reads
every page), repeated request fields are counted before any work that grows
with them, and search scores stay in [0, 1] whatever the weights."""
import struct
import threading

import grpc

from harness import PY_GEN, RPC_TIMEOUT, M, ServerTestCase, uid  # noqa: F401

from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402

INVALID = grpc.StatusCode.INVALID_ARGUMENT
REPLY_MAX = 3 * 1024 * 1024      # --max-reply-bytes default
CONTENT = 60000                  # bytes per message / memory text
DIM = 4096


def content(i, n=CONTENT):
    head = "m%06d " % i
    return head + "x" * (n - len(head))


class MemoryServerTestCase(ServerTestCase):
    """A shared server with a MemoryService stub beside the session client."""

    @classmethod
    def connect(cls):
        super().connect()
        cls.mem = mpg.MemoryServiceStub(cls.client.channel)

    def mcall(self, method, req, timeout=RPC_TIMEOUT):
        return getattr(self.mem, method)(req, timeout=timeout, metadata=self.client.md)


class ReplyBudgetTest(MemoryServerTestCase):
    """The default budget: about 50 messages of 60 KB per page."""

    def fill_session(self, n, size=CONTENT):
        sid = self.client.create(uid("u")).session_id
        for start in range(0, n, 50):  # 50 x 60 KB: one request under 4 MiB
            self.client.append(sid, *[M(content(i, size)) for i in range(start, min(n, start + 50))])
        return sid

    def test_list_messages_pages_by_bytes(self):
        sid = self.fill_session(1000)
        seen, token, pages = [], "", 0
        while True:
            r = self.client.list_messages(sid, page_size=1000, page_token=token)
            pages += 1
            self.assertLessEqual(r.ByteSize(), REPLY_MAX)
            self.assertGreater(len(r.messages), 0)
            for m in r.messages:
                self.assertEqual(m.content, content(m.seq - 1))
            seen += [m.seq for m in r.messages]
            token = r.next_page_token
            if not token:
                break
            self.assertLess(len(r.messages), 1000)
            # Full: the next message would not have fit.
            self.assertGreater(r.ByteSize() + CONTENT, REPLY_MAX - 1024 - 200)
            self.assertLess(pages, 100)
        self.assertEqual(seen, list(range(1, 1001)))  # every one, exactly once, in order
        # Newest first pages the same way.
        seen, token = [], ""
        while True:
            r = self.client.list_messages(sid, page_size=1000, page_token=token, newest_first=True)
            self.assertLessEqual(r.ByteSize(), REPLY_MAX)
            seen += [m.seq for m in r.messages]
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(seen, list(range(1000, 0, -1)))

    def test_get_context_newest_that_fit(self):
        sid = self.fill_session(200)
        self.client.update_summary(sid, "s" * CONTENT, 10)
        r = self.client.context(sid, max_messages=1000)
        self.assertLessEqual(r.ByteSize(), REPLY_MAX)
        self.assertTrue(r.truncated)
        self.assertEqual(r.summary, "s" * CONTENT)
        # The newest contiguous run, oldest first, ending at the last message.
        seqs = [m.seq for m in r.messages]
        self.assertGreater(len(seqs), 10)
        self.assertEqual(seqs, list(range(201 - len(seqs), 201)))
        self.assertEqual(r.total_tokens, sum(m.token_count for m in r.messages))

    def test_list_sessions_under_budget(self):
        user = uid("u")
        meta = {"k%03d" % i: "v" * 150 for i in range(100)}  # ~16 KB of metadata each
        ids = sorted(self.client.create(user, metadata=meta).session_id for _ in range(250))
        seen, token = [], ""
        while True:
            r = self.client.list_sessions(user, page_size=1000, page_token=token)
            self.assertLessEqual(r.ByteSize(), REPLY_MAX)
            seen += [s.session_id for s in r.sessions]
            token = r.next_page_token
            if not token:
                break
            self.assertLess(len(r.sessions), 250)
        self.assertEqual(sorted(seen), ids)
        self.assertEqual(len(seen), len(set(seen)))

    def test_memories_with_embeddings(self):
        user = uid("u")
        ids = []
        for i in range(300):
            vec = [0.0] * DIM
            vec[i % DIM] = 1.0
            vec[(i * 7 + 1) % DIM] = 0.5
            # 16 KB of embedding + 20 KB of text: 100 results exceed the budget.
            m = mp.Memory(user_id=user, text="memory %d about things %s" % (i, "y" * 20000),
                          type=mp.MEMORY_TYPE_FACT,
                          importance=(i % 10) / 10.0, embedding=vec)
            ids.append(self.mcall("CreateMemory", mp.CreateMemoryRequest(
                memory=m, dedup_policy=mp.DEDUP_POLICY_OFF)).memory.memory_id)
        for order in (mp.MEMORY_ORDER_NEWEST_FIRST, mp.MEMORY_ORDER_IMPORTANCE):
            seen, token, pages = [], "", 0
            while True:
                r = self.mcall("ListMemories", mp.ListMemoriesRequest(
                    user_id=user, page_size=1000, page_token=token, order_by=order,
                    include_embeddings=True))
                pages += 1
                self.assertLessEqual(r.ByteSize(), REPLY_MAX)
                self.assertTrue(all(len(m.embedding) == DIM for m in r.memories))
                seen += [m.memory_id for m in r.memories]
                token = r.next_page_token
                if not token:
                    break
            self.assertGreater(pages, 1)
            self.assertEqual(sorted(seen), sorted(ids))
            self.assertEqual(len(seen), len(set(seen)))
        # Search: the best results that fit, best first.
        q = [1.0] * DIM
        r = self.mcall("SearchMemories", mp.SearchMemoriesRequest(
            user_id=user, embedding=q, top_k=100, include_embeddings=True))
        self.assertLessEqual(r.ByteSize(), REPLY_MAX)
        self.assertLess(len(r.results), 100)
        self.assertGreater(len(r.results), 70)
        full = self.mcall("SearchMemories", mp.SearchMemoriesRequest(user_id=user, embedding=q, top_k=100))
        self.assertEqual(len(full.results), 100)
        self.assertEqual([x.memory.memory_id for x in r.results],
                         [x.memory.memory_id for x in full.results[:len(r.results)]])


class SmallReplyBudgetTest(ServerTestCase):
    """At the smallest budget that holds one largest item, paging still
    moves forward one item at a time."""
    server_args = ("--max-reply-bytes", "1048576", "--max-content-bytes", "1000000",
                   "--max-metadata-bytes", "0")

    def test_one_item_per_page(self):
        sid = self.client.create(uid("u")).session_id
        for i in range(3):
            self.client.append(sid, M(content(i, 1000000)))
        seen, token = [], ""
        while True:
            r = self.client.list_messages(sid, page_size=10, page_token=token)
            self.assertLessEqual(r.ByteSize(), 1048576)
            self.assertEqual(len(r.messages), 1)
            seen += [m.seq for m in r.messages]
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(seen, [1, 2, 3])
        r = self.client.context(sid)
        self.assertEqual(([m.seq for m in r.messages], r.truncated), ([3], True))


class RepeatedFieldLimitsTest(MemoryServerTestCase):
    server_args = ("--workers", "2")

    def tag_bomb(self, n=100000):
        # ~789 KB: distinct tags, so de-duplicating them is quadratic.
        return mp.CreateMemoryRequest(memory=mp.Memory(
            user_id=uid("u"), text="t", type=mp.MEMORY_TYPE_FACT,
            tags=["tag%06d" % i for i in range(n)]))

    def test_many_tags_refused_at_once(self):
        e = self.assertInvalid(self.mcall, "CreateMemory", self.tag_bomb(), field="memory.tags")
        self.assertIn("more than 64 values", e.details())
        user = uid("u")
        f = mp.MemoryFilter(tags=["tag%06d" % i for i in range(100000)])
        self.assertInvalid(self.mcall, "ListMemories", mp.ListMemoriesRequest(user_id=user, filter=f),
                           field="filter.tags")
        self.assertInvalid(self.mcall, "SearchMemories",
                           mp.SearchMemoriesRequest(user_id=user, query="x", filter=f),
                           field="filter.tags")
        self.assertInvalid(self.mcall, "ListMemories", mp.ListMemoriesRequest(
            user_id=user, filter=mp.MemoryFilter(types=[mp.MEMORY_TYPE_FACT] * 100000)),
            field="filter.types")
        # At the limit a memory is still fine (repeats dropped after counting).
        r = self.mcall("CreateMemory", mp.CreateMemoryRequest(memory=mp.Memory(
            user_id=user, text="t", type=mp.MEMORY_TYPE_FACT, tags=["a", "b", "a"] + ["c"] * 29)))
        self.assertEqual(list(r.memory.tags), ["a", "b", "c"])

    def test_bombs_do_not_stall_other_calls(self):
        sid = self.client.create(uid("u")).session_id
        errors, done = [], threading.Event()

        def bomb():
            try:
                self.mcall("CreateMemory", self.tag_bomb())
            except grpc.RpcError as e:
                errors.append(e.code())

        ts = [threading.Thread(target=bomb, daemon=True) for _ in range(4)]
        for t in ts:
            t.start()
        # One worker per bomb would be busy for seconds if the check were
        # quadratic; a plain read must still answer within its deadline.
        got = self.client.call("GetSession", __import__("harness").pb.GetSessionRequest(session_id=sid),
                               timeout=5.0)
        self.assertEqual(got.session_id, sid)
        for t in ts:
            t.join(RPC_TIMEOUT + 5)
            self.assertFalse(t.is_alive())
        done.set()
        self.assertEqual(errors, [INVALID] * 4)


class ScoreRangeTest(MemoryServerTestCase):
    def test_huge_weights_keep_scores_in_unit_range(self):
        user = uid("u")
        for i, text in enumerate(["tea in the garden", "green tea at noon", "coffee at dawn"]):
            self.mcall("CreateMemory", mp.CreateMemoryRequest(memory=mp.Memory(
                user_id=user, text=text, type=mp.MEMORY_TYPE_FACT, importance=0.9,
                embedding=[1.0, float(i), 0.5]), dedup_policy=mp.DEDUP_POLICY_OFF))
        fmax = struct.unpack("f", struct.pack("I", 0x7F7FFFFF))[0]  # FLT_MAX
        w = mp.SearchWeights(keyword=fmax, vector=fmax, importance=fmax, recency=fmax)
        r = self.mcall("SearchMemories", mp.SearchMemoriesRequest(
            user_id=user, query="tea", embedding=[1.0, 0.0, 0.5], weights=w))
        self.assertEqual(len(r.results), 3)
        for x in r.results:
            self.assertTrue(0.0 <= x.score <= 1.0, x.score)
        # min_score filters on that scale: equal weights, so a score is the
        # mean of the four components.
        for x in r.results:
            mean = (x.keyword_score + x.vector_score + x.importance_score + x.recency_score) / 4
            self.assertAlmostEqual(x.score, mean, places=5)
        cut = sorted(x.score for x in r.results)[1]
        r2 = self.mcall("SearchMemories", mp.SearchMemoriesRequest(
            user_id=user, query="tea", embedding=[1.0, 0.0, 0.5], weights=w, min_score=cut))
        self.assertEqual(len(r2.results), 2)
