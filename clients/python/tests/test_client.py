"""Engram (blocking) against a real engramd: each namespace, iterators,
request forms, errors, deadlines, the 64 MiB receive limit."""
import random
import time

import grpc

import engram
from engram.v1 import admin_pb2, memory_pb2, session_pb2, user_pb2

from _support import ADMIN, SdkTestCase, uid

EMB_DIMS = 4096  # the server's largest embedding: 16 KiB a memory


class NamespacesTest(SdkTestCase):
    # Room for a reply of memories with embeddings above 4 MiB (see
    # test_page_above_grpc_default_receive_limit).
    server_args = ("--max-reply-bytes", str(8 * 1024 * 1024))

    def test_sessions_and_messages(self):
        c = self.client()
        user = uid("u")
        s = c.sessions.create_session(session={"user_id": user, "metadata": {"k": "v"}})
        self.assertEqual(s.user_id, user)
        self.assertEqual(c.sessions.get_session(session_id=s.session_id).metadata["k"], "v")
        r = c.messages.append_messages(session_id=s.session_id, messages=[
            {"role": "ROLE_USER", "content": "hello"},
            session_pb2.Message(role=session_pb2.ROLE_ASSISTANT, content="hi")])
        self.assertEqual([m.seq for m in r.messages], [1, 2])
        self.assertTrue(all(m.client_message_id for m in r.messages))
        self.assertIsInstance(r.session.message_count, int)  # int64 as int
        ctx = c.messages.get_context(session_id=s.session_id)
        self.assertEqual([m.content for m in ctx.messages], ["hello", "hi"])
        c.messages.update_summary(session_id=s.session_id, summary="greeted", through_seq=2)
        self.assertEqual(c.messages.get_context(session_id=s.session_id).summary, "greeted")
        self.assertEqual([m.seq for m in c.messages.list_messages(session_id=s.session_id)],
                         [1, 2])
        u = c.sessions.update_session(session_id=s.session_id, session={"agent_id": "bot"},
                                      update_mask={"paths": ["agent_id"]})
        self.assertEqual(u.agent_id, "bot")
        self.assertEqual(c.sessions.end_session(session_id=s.session_id).state,
                         session_pb2.SESSION_STATE_ENDED)
        self.assertEqual([x.session_id for x in c.sessions.list_sessions(user_id=user)],
                         [s.session_id])
        self.assertEqual(c.sessions.delete_session(session_id=s.session_id).deleted_messages, 2)
        with self.assertRaises(engram.NotFoundError):
            c.sessions.get_session(session_id=s.session_id)

    def test_append_leaves_the_callers_request_alone(self):
        """A request object reused for a second append stores both writes:
        the SDK fills client_message_id into a copy, never the caller's."""
        c = self.client()
        sid = c.sessions.create_session(session={"user_id": uid("u")}).session_id
        req = session_pb2.AppendMessagesRequest(session_id=sid)
        req.messages.add(role=session_pb2.ROLE_USER, content="first")
        r1 = c.messages.append_messages(req)
        self.assertEqual(req.messages[0].client_message_id, "")
        self.assertTrue(r1.messages[0].client_message_id.startswith("sdk-"))
        req.messages[0].content = "second"
        r2 = c.messages.append_messages(req)
        self.assertEqual([m.seq for m in r2.messages], [2])
        self.assertEqual([m.content for m in c.session(sid).messages()], ["first", "second"])

    def test_request_message_dict_or_fields(self):
        c = self.client()
        s = c.sessions.create_session(session_pb2.CreateSessionRequest(
            session=session_pb2.Session(user_id=uid("u"))))
        self.assertEqual(c.sessions.get_session({"session_id": s.session_id}).session_id,
                         s.session_id)
        with self.assertRaises(TypeError):
            c.sessions.get_session(session_pb2.GetSessionRequest(), session_id="x")
        with self.assertRaises(TypeError):
            c.sessions.get_session(memory_pb2.GetMemoryRequest(memory_id="x"))

    def test_session_object(self):
        c = self.client()
        s = c.session(c.sessions.create_session(session={"user_id": uid("u")}).session_id)
        s.append({"role": "ROLE_USER", "content": "one"}, {"role": "ROLE_USER", "content": "two"})
        self.assertEqual(s.get().message_count, 2)
        self.assertEqual([m.content for m in s.messages()], ["one", "two"])
        self.assertEqual(s.context(max_messages=1).messages[0].content, "two")
        self.assertEqual(s.update_summary("sum", 1).summary_through_seq, 1)
        self.assertEqual(s.messages_page(page_size=1).messages[0].seq, 1)
        self.assertEqual(s.lsn, c.lsn)  # consistency="client": one LSN
        self.assertGreater(c.lsn, 0)

    def test_memories_and_users(self):
        c = self.client()
        user = uid("u")
        m = c.memories.create_memory(memory={
            "user_id": user, "type": "MEMORY_TYPE_PREFERENCE", "text": "likes green tea",
            "importance": 0.8, "embedding": [1.0, 0.0, 0.5]})
        self.assertEqual(m.outcome, memory_pb2.DEDUP_OUTCOME_CREATED)
        mid = m.memory.memory_id
        self.assertEqual(c.memories.get_memory(memory_id=mid).text, "likes green tea")
        up = c.memories.update_memory(memory={"memory_id": mid, "importance": 0.9},
                                      update_mask={"paths": ["importance"]})
        self.assertEqual(up.version, 2)
        found = c.memories.search_memories(user_id=user, query="green tea",
                                           embedding=[1.0, 0.0, 0.4])
        self.assertEqual([r.memory.memory_id for r in found.results], [mid])
        self.assertGreater(found.results[0].keyword_score, 0)
        self.assertEqual([x.memory_id for x in c.memories.list_memories(user_id=user)], [mid])
        self.assertEqual(c.memories.deduplicate_memories(user_id=user).examined, 1)
        stats = c.users.get_user_stats(user_id=user)
        self.assertEqual((stats.active_memories, stats.embedding_dimension), (1, 3))
        kinds = [r.WhichOneof("item") for r in c.users.export_user(user_id=user)]
        self.assertEqual(kinds, ["memory"])
        self.assertTrue(c.memories.delete_memory(memory_id=mid, purge=True).purged)
        self.assertEqual(c.users.delete_user(user_id=user).deleted_memories, 0)

    def test_memory_batches(self):
        c = self.client()
        user = uid("u")
        mem = lambda text: {"memory": {"user_id": user, "type": "MEMORY_TYPE_FACT",  # noqa: E731
                                       "text": text, "metadata": {"k": "v"}}}
        r = c.memories.batch_create_memories(requests=[mem("owns a canoe"), mem(""),
                                                       mem("owns a canoe")])
        self.assertEqual([x.status.code for x in r.results],
                         [0, grpc.StatusCode.INVALID_ARGUMENT.value[0], 0])
        first = r.results[0].response.memory
        self.assertEqual(dict(first.metadata), {"k": "v"})
        self.assertEqual(r.results[2].response.matched_memory_id, first.memory_id)
        found = list(c.memories.list_memories(
            user_id=user, filter={"metadata_equals": [{"key": "k", "value": "v"}]}))
        self.assertEqual([m.memory_id for m in found], [first.memory_id])
        d = c.memories.batch_delete_memories(memory_ids=[first.memory_id, "nope"], purge=True)
        self.assertEqual([(x.memory_id, x.status.code, x.purged) for x in d.results],
                         [(first.memory_id, 0, True),
                          ("nope", grpc.StatusCode.NOT_FOUND.value[0], False)])
        with self.assertRaises(engram.InvalidArgumentError):
            c.memories.batch_delete_memories(memory_ids=["a", "a"])

    def test_admin(self):
        a = self.client(token=ADMIN)
        st = a.admin.status()
        self.assertEqual(st.role, "primary")
        self.assertTrue(st.serving)
        self.assertEqual(a.admin.health().status, 1)  # SERVING
        self.assertEqual(len(a.admin.checksum().sha256), 64)
        pol = a.admin.set_retention_policy(policy={"raw_message_retention": {"seconds": 3600}})
        self.assertEqual(pol.policy.raw_message_retention.seconds, 3600)
        self.assertEqual(a.admin.get_retention_policy().policy.raw_message_retention.seconds,
                         3600)
        chunks = list(a.admin.backup())
        self.assertTrue(chunks[-1].last)
        self.assertEqual(sum(len(ch.data) for ch in chunks), chunks[-1].total_bytes)
        with self.assertRaises(engram.FailedPreconditionError):
            a.admin.promote()
        # An agent token may not call AdminService; health needs no role.
        agent = self.client()
        with self.assertRaises(engram.PermissionDeniedError):
            agent.admin.status()
        self.assertEqual(agent.admin.health().status, 1)

    def test_iterators_follow_page_tokens(self):
        c = self.client()
        user = uid("u")
        sids = [c.sessions.create_session(session={"user_id": user}).session_id
                for _ in range(5)]
        first = c.sessions.list_sessions_page(user_id=user, page_size=2)
        self.assertEqual(len(first.sessions), 2)
        self.assertTrue(first.next_page_token)
        got = [s.session_id for s in c.sessions.list_sessions(user_id=user, page_size=2)]
        self.assertEqual(sorted(got), sorted(sids))
        self.assertEqual(len(got), 5)
        s = c.session(sids[0])
        s.append(*[{"role": "ROLE_USER", "content": "m%d" % i} for i in range(7)])
        self.assertEqual([m.seq for m in s.messages(page_size=3)], list(range(1, 8)))
        for i in range(3):
            c.memories.create_memory(memory={"user_id": user, "type": "MEMORY_TYPE_FACT",
                                             "text": "fact number %d about %s" % (i, uid())},
                                     dedup_policy="DEDUP_POLICY_OFF")
        self.assertEqual(len(list(c.memories.list_memories(user_id=user, page_size=1))), 3)

    def test_page_above_grpc_default_receive_limit(self):
        c = self.client()
        user = uid("u")
        rnd = random.Random(14)
        n = 300  # x 16 KiB of embedding: about 4.8 MiB in one page
        for i in range(n):
            c.memories.create_memory(memory={
                "user_id": user, "type": "MEMORY_TYPE_FACT", "text": "memory %d" % i,
                "embedding": [rnd.uniform(-1, 1) for _ in range(EMB_DIMS)]},
                dedup_policy="DEDUP_POLICY_OFF")
        page = c.memories.list_memories_page(user_id=user, page_size=1000,
                                             include_embeddings=True)
        self.assertEqual(len(page.memories), n)
        self.assertGreater(page.ByteSize(), 4 * 1024 * 1024)
        # The same page through a channel with gRPC's default limit fails:
        # the test does exercise the limit.
        with grpc.insecure_channel(self.server.addr) as ch:
            stub = engram.v1.memory_pb2_grpc.MemoryServiceStub(ch)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.ListMemories(memory_pb2.ListMemoriesRequest(
                    user_id=user, page_size=1000, include_embeddings=True),
                    timeout=10, metadata=(("authorization", "Bearer sdk-agent-token"),))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)


class ErrorsTest(SdkTestCase):
    server_args = ("--max-lsn-wait-ms", "5000")

    def test_invalid_argument_names_the_field(self):
        c = self.client()
        with self.assertRaises(engram.InvalidArgumentError) as cm:
            c.sessions.create_session(session={"user_id": ""})
        e = cm.exception
        self.assertIsInstance(e, engram.EngramError)
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("user_id", e.message)

    def test_details_from_grpc_status_details_bin(self):
        """engramd's rich errors: ErrorInfo, BadRequest, RequestInfo."""
        c = self.client()
        with self.assertRaises(engram.InvalidArgumentError) as cm:
            c.sessions.create_session(session={"user_id": ""})
        e = cm.exception
        self.assertEqual((e.reason, e.domain), ("INVALID_ARGUMENT", "engram.v1"))
        self.assertEqual([v.field for v in e.field_violations], ["session.user_id"])
        self.assertRegex(e.request_id, r"^[0-9a-f]{1,32}$")
        self.assertIsNone(e.retry_delay)
        with self.assertRaises(engram.NotFoundError) as cm:
            c.sessions.get_session(session_id=uid("missing"))
        self.assertEqual(cm.exception.reason, "NOT_FOUND")
        self.assertEqual(cm.exception.field_violations, [])

    def test_unauthenticated(self):
        c = self.client(token="not-a-token")
        with self.assertRaises(engram.UnauthenticatedError):
            c.sessions.get_session(session_id="x")

    def test_deadline_by_default_and_per_call(self):
        # A read that waits for an LSN no one writes parks up to 5 s on the
        # server: the client's deadline ends it first.
        far = (("engram-min-lsn", str(10 ** 12)),)
        c = self.client(deadline=0.5)
        sid = c.sessions.create_session(session={"user_id": uid("u")}).session_id
        start = time.monotonic()
        with self.assertRaises(engram.DeadlineExceededError):
            c.sessions.get_session(session_id=sid, metadata=far)
        with self.assertRaises(engram.DeadlineExceededError):
            self.client(deadline=None).sessions.get_session(session_id=sid, metadata=far,
                                                            timeout=0.5)
        self.assertLess(time.monotonic() - start, 4.5)

    def test_no_request_field_shadows_an_option(self):
        """timeout and metadata are the methods' own keywords: no request
        message of the API may have a top-level field so named."""
        for mod in (session_pb2, memory_pb2, user_pb2, admin_pb2):
            for name, desc in mod.DESCRIPTOR.message_types_by_name.items():
                if name.endswith("Request"):
                    self.assertFalse({"timeout", "metadata", "request"} &
                                     set(desc.fields_by_name), name)


class StreamDeadlineTest(SdkTestCase):
    """Streams (ExportUser, Backup) are not cut by the unary deadline: they
    get their own default (stream_deadline, 1 h)."""
    server_args = ("--max-lsn-wait-ms", "1500")

    def test_stream_outlives_the_unary_deadline(self):
        # An export that waits for an LSN no one writes stays open on the
        # server for 1.5 s, then ends UNAVAILABLE: three times the client's
        # 0.5 s unary deadline, which must not cut it.
        c = self.client(deadline=0.5)
        far = (("engram-min-lsn", str(10 ** 12)),)
        with self.assertRaises(engram.UnavailableError) as cm:
            list(c.users.export_user(user_id=uid("u"), metadata=far))
        self.assertIn("not applied", cm.exception.message)
        with self.assertRaises(engram.DeadlineExceededError):  # a stream's own bound holds
            list(self.client(stream_deadline=0.5).users.export_user(user_id=uid("u"),
                                                                    metadata=far))
        with self.assertRaises(engram.DeadlineExceededError):  # and so does timeout=
            list(c.users.export_user(user_id=uid("u"), metadata=far, timeout=0.5))

