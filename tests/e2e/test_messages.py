"""Messages: append, seqs, retries, token estimates, listing, summaries, expiry."""
import math
import time

import grpc

from harness import M, ServerTestCase, pb, ts_ns, uid

NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECOND = grpc.StatusCode.FAILED_PRECONDITION
SEC = 1_000_000_000


class MessagesTest(ServerTestCase):

    def new_session(self, **kw):
        return self.client.create(uid("u"), **kw).session_id

    def test_append_one(self):
        s0 = self.client.create(uid("u"))
        sid = s0.session_id
        r = self.client.append(sid, M("hello there", role=pb.ROLE_USER))
        self.assertEqual(len(r.messages), 1)
        m = r.messages[0]
        self.assertEqual(m.seq, 1)
        self.assertEqual(m.content, "hello there")
        self.assertEqual(m.role, pb.ROLE_USER)
        self.assertTrue(m.HasField("create_time"))
        self.assertEqual(r.session.session_id, sid)
        self.assertEqual(r.session.message_count, 1)
        self.assertEqual(r.session.state, pb.SESSION_STATE_ACTIVE)
        self.assertEqual(ts_ns(r.session.create_time), ts_ns(s0.create_time))
        self.assertGreaterEqual(ts_ns(r.session.update_time), ts_ns(s0.update_time))
        self.assertEqual(self.client.get(sid).message_count, 1)

    def test_seqs_consecutive_in_request_order(self):
        sid = self.new_session()
        r1 = self.client.append(sid, "a", "b", "c")
        self.assertSeqs(r1.messages, [1, 2, 3])
        self.assertEqual([m.content for m in r1.messages], ["a", "b", "c"])
        r2 = self.client.append(sid, *["d", "e", "f", "g"])
        self.assertSeqs(r2.messages, [4, 5, 6, 7])
        self.assertEqual([m.content for m in r2.messages], ["d", "e", "f", "g"])
        self.assertEqual(r2.session.message_count, 7)
        msgs = self.client.all_messages(sid)
        self.assertSeqs(msgs, range(1, 8))
        self.assertEqual([m.content for m in msgs], list("abcdefg"))

    def test_fields_round_trip(self):
        sid = self.new_session()
        sent = [
            M("sys prompt", role=pb.ROLE_SYSTEM, metadata={"src": "cfg"}),
            M("question ✓ 日本語 🎉", role=pb.ROLE_USER, client_message_id="cm-1"),
            M("answer", role=pb.ROLE_ASSISTANT, token_count=42, metadata={"model": "x", "t": ""}),
            M('{"tool": "out"}', role=pb.ROLE_TOOL),
        ]
        self.client.append(sid, *sent)
        got = self.client.all_messages(sid)
        self.assertEqual(len(got), len(sent))
        for i, (s, g) in enumerate(zip(sent, got)):
            self.assertEqual(g.seq, i + 1)
            self.assertEqual(g.session_id, sid)
            self.assertEqual(g.role, s.role)
            self.assertEqual(g.content, s.content)
            self.assertEqual(dict(g.metadata), dict(s.metadata))
            self.assertEqual(g.client_message_id, s.client_message_id)
            self.assertTrue(g.HasField("create_time"))
        self.assertEqual(got[2].token_count, 42)

    def test_nul_characters_kept_or_refused(self):
        # U+0000 is valid UTF-8 and a valid proto3 string character. The
        # server must store it exactly, or refuse the request (INVALID_ARGUMENT
        # naming the field, nothing written); never cut the string short.
        sid = self.new_session()
        cases = [
            ("messages[0].content", lambda: self.client.append(sid, M("nul\x00inside")),
             lambda: self.client.all_messages(sid)[-1].content, "nul\x00inside"),
            ("messages[0].metadata", lambda: self.client.append(sid, M("m", metadata={"k": "v\x00w"})),
             lambda: dict(self.client.all_messages(sid)[-1].metadata), {"k": "v\x00w"}),
            ("messages[0].metadata", lambda: self.client.append(sid, M("m", metadata={"k\x00z": "v"})),
             lambda: dict(self.client.all_messages(sid)[-1].metadata), {"k\x00z": "v"}),
            ("summary", lambda: self.client.update_summary(sid, "sum\x00mary", 0),
             lambda: self.client.get(sid).summary, "sum\x00mary"),
        ]
        for field, write, read, want in cases:
            with self.subTest(field=field, want=want):
                before = self.client.get(sid)
                try:
                    write()
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
                    self.assertIn(field, e.details())
                    self.assertEqual(self.client.get(sid), before, "refused, yet written")
                    continue
                self.assertEqual(read(), want)
        u = uid("u")
        try:
            s = self.client.create(u, metadata={"a": "b\x00c"})
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
            self.assertIn("metadata", e.details())
            self.assertEqual(len(self.client.list_sessions(u).sessions), 0)
        else:
            self.assertEqual(dict(self.client.get(s.session_id).metadata), {"a": "b\x00c"})

    def test_token_count_estimate(self):
        sid = self.new_session()
        contents = ["abcd", "abcde", "日本語", "🎉", "x" * 4001, "é" * 3]
        r = self.client.append(sid, *contents, M("explicit", token_count=7))
        want = [math.ceil(len(c.encode()) / 4) for c in contents] + [7]
        self.assertEqual([m.token_count for m in r.messages], want)
        self.assertEqual([m.token_count for m in self.client.all_messages(sid)], want)

    def test_list_oldest_first_pages(self):
        sid = self.new_session()
        self.client.append(sid, *["m%d" % i for i in range(1, 13)])
        pages, token = [], ""
        for _ in range(6):
            r = self.client.list_messages(sid, page_size=5, page_token=token)
            pages.append([m.seq for m in r.messages])
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(token, "")
        self.assertEqual(pages, [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]])

    def test_list_newest_first_pages(self):
        sid = self.new_session()
        self.client.append(sid, *["m%d" % i for i in range(1, 13)])
        r = self.client.list_messages(sid, page_size=3, newest_first=True)
        self.assertSeqs(r.messages, [12, 11, 10])
        self.assertEqual([m.content for m in r.messages], ["m12", "m11", "m10"])
        pages, token = [], ""
        for _ in range(6):
            r = self.client.list_messages(sid, page_size=5, page_token=token, newest_first=True)
            pages.append([m.seq for m in r.messages])
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(token, "")
        self.assertEqual(pages, [[12, 11, 10, 9, 8], [7, 6, 5, 4, 3], [2, 1]])

    def test_list_default_page_size_50(self):
        sid = self.new_session()
        self.client.append(sid, *["m%d" % i for i in range(55)])
        r = self.client.list_messages(sid)
        self.assertSeqs(r.messages, range(1, 51))
        self.assertNotEqual(r.next_page_token, "")
        r2 = self.client.list_messages(sid, page_token=r.next_page_token)
        self.assertSeqs(r2.messages, range(51, 56))
        self.assertEqual(r2.next_page_token, "")

    def test_list_empty_session(self):
        r = self.client.list_messages(self.new_session())
        self.assertEqual(len(r.messages), 0)
        self.assertEqual(r.next_page_token, "")

    def test_list_errors(self):
        sid = self.new_session()
        self.client.append(sid, "a", "b", "c")
        self.assertStatus(NOT_FOUND, self.client.list_messages, uid("nope"))
        self.assertInvalid(self.client.list_messages, sid, page_size=-1, field="page_size")
        for garbage in ["garbage!!", "AAAAAAAAAAAA", "x" * 300]:
            for newest in (False, True):
                self.assertInvalid(self.client.list_messages, sid, page_size=1,
                                   page_token=garbage, newest_first=newest, field="page_token")

    def test_append_unknown_session(self):
        self.assertStatus(NOT_FOUND, self.client.append, uid("nope"), "x")

    def test_retry_returns_original_and_writes_nothing(self):
        sid = self.new_session()
        first = self.client.append(sid, M("original", client_message_id="req-1")).messages[0]
        self.assertEqual(first.seq, 1)
        self.client.append(sid, "other")
        r = self.client.append(sid, M("changed on retry", client_message_id="req-1"))
        self.assertEqual(len(r.messages), 1)
        self.assertEqual(r.messages[0].seq, 1)
        self.assertEqual(ts_ns(r.messages[0].create_time), ts_ns(first.create_time))
        self.assertEqual(r.session.message_count, 2)
        self.assertEqual(self.client.get(sid).message_count, 2)
        self.assertEqual([m.content for m in self.client.all_messages(sid)], ["original", "other"])

    def test_retry_mixed_with_new(self):
        sid = self.new_session()
        self.client.append(sid, M("a", client_message_id="a1"), M("b", client_message_id="b1"))
        r = self.client.append(sid, M("b", client_message_id="b1"), M("c", client_message_id="c1"),
                               M("d"))
        self.assertSeqs(r.messages, [2, 3, 4])
        self.assertEqual(r.session.message_count, 4)
        msgs = self.client.all_messages(sid)
        self.assertEqual([m.content for m in msgs], ["a", "b", "c", "d"])
        self.assertEqual([m.client_message_id for m in msgs], ["a1", "b1", "c1", ""])

    def test_same_client_message_id_twice_in_one_request(self):
        # Either refused, or the second is a retry of the first: never two
        # messages with one retry key.
        sid = self.new_session()
        try:
            r = self.client.append(sid, M("a", client_message_id="twice"),
                                   M("b", client_message_id="twice"))
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
            self.assertEqual(self.client.get(sid).message_count, 0)
            return
        self.assertSeqs(r.messages, [1, 1])
        self.assertEqual(r.session.message_count, 1)
        self.assertEqual([m.content for m in self.client.all_messages(sid)], ["a"])

    def test_page_token_of_another_session_leaks_nothing(self):
        s1, s2 = self.new_session(), self.new_session()
        self.client.append(s1, *["s1-m%d" % i for i in range(6)])
        self.client.append(s2, *["s2-m%d" % i for i in range(6)])
        for newest in (False, True):
            tok = self.client.list_messages(s1, page_size=2, newest_first=newest).next_page_token
            self.assertNotEqual(tok, "")
            try:
                r = self.client.list_messages(s2, page_size=10, page_token=tok,
                                              newest_first=newest)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
                continue
            for m in r.messages:
                self.assertEqual(m.session_id, s2)
                self.assertTrue(m.content.startswith("s2-"), m.content)

    def test_client_message_id_is_per_session(self):
        s1, s2 = self.new_session(), self.new_session()
        self.client.append(s1, "pad")
        self.assertEqual(self.client.append(s1, M("x", client_message_id="same")).messages[0].seq, 2)
        self.assertEqual(self.client.append(s2, M("y", client_message_id="same")).messages[0].seq, 1)
        self.assertEqual([m.content for m in self.client.all_messages(s2)], ["y"])

    def test_atomic_when_one_message_is_bad(self):
        sid = self.new_session()
        self.client.append(sid, "keep")
        before = self.client.all_messages(sid)
        bad = pb.Message(content="no role")
        self.assertInvalid(self.client.append, sid, M("good", client_message_id="g1"), bad,
                           field="messages[1].role")
        self.assertEqual(self.client.get(sid).message_count, 1)
        self.assertEqual(self.client.all_messages(sid), before)
        # the good message's retry key was not recorded either
        r = self.client.append(sid, M("good", client_message_id="g1"))
        self.assertEqual(r.messages[0].seq, 2)
        self.assertEqual(r.session.message_count, 2)

    def test_append_renews_expire_time(self):
        s = self.client.create(uid("u"))
        time.sleep(0.05)
        r = self.client.append(s.session_id, "ping")
        self.assertGreater(ts_ns(r.session.expire_time), ts_ns(s.expire_time))
        self.assertGreater(ts_ns(r.session.update_time), ts_ns(s.update_time))
        ttl = ts_ns(r.session.expire_time) - ts_ns(r.session.update_time)
        self.assertLessEqual(abs(ttl - 7200 * SEC), SEC)
        g = self.client.get(s.session_id)
        self.assertEqual(ts_ns(g.expire_time), ts_ns(r.session.expire_time))

    def test_summary_due(self):
        sid = self.new_session()
        for i in range(4):
            r = self.client.append(sid, "m%d" % i)
            self.assertFalse(r.session.summary_due, "after %d messages" % (i + 1))
        r = self.client.append(sid, "m4")
        self.assertTrue(r.session.summary_due, "5 messages after summary_through_seq 0")
        self.assertTrue(self.client.get(sid).summary_due)
        u = self.client.update_summary(sid, "they talked about m0..m2", 3)
        self.assertEqual(u.summary, "they talked about m0..m2")
        self.assertEqual(u.summary_through_seq, 3)
        self.assertFalse(u.summary_due)
        self.client.append(sid, "m5", "m6")  # 4 after seq 3
        self.assertFalse(self.client.get(sid).summary_due)
        r = self.client.append(sid, "m7")    # 5 after seq 3
        self.assertTrue(r.session.summary_due)
        u = self.client.update_summary(sid, "all of it", 8)
        self.assertFalse(u.summary_due)
        g = self.client.get(sid)
        self.assertEqual((g.summary, g.summary_through_seq, g.summary_due), ("all of it", 8, False))

    def test_update_summary_rules(self):
        sid = self.new_session()
        self.client.append(sid, "a", "b", "c", "d")
        u = self.client.update_summary(sid, "s1", 2)
        self.assertEqual((u.summary, u.summary_through_seq, u.message_count), ("s1", 2, 4))
        self.assertInvalid(self.client.update_summary, sid, "s", 5, field="through_seq")
        self.assertInvalid(self.client.update_summary, sid, "s", -1, field="through_seq")
        self.assertStatus(PRECOND, self.client.update_summary, sid, "s", 1)
        g = self.client.get(sid)
        self.assertEqual((g.summary, g.summary_through_seq), ("s1", 2))
        # the same through_seq again and the very end are both fine
        self.assertEqual(self.client.update_summary(sid, "s2", 2).summary, "s2")
        self.assertEqual(self.client.update_summary(sid, "s3", 4).summary_through_seq, 4)
        self.assertStatus(NOT_FOUND, self.client.update_summary, uid("nope"), "s", 0)

    def test_update_summary_lsn_and_empty_session(self):
        sid = self.new_session()
        u, lsn = self.client.call_lsn("UpdateSummary", pb.UpdateSummaryRequest(
            session_id=sid, summary="nothing yet", through_seq=0))
        self.assertIsNotNone(lsn)
        self.assertEqual((u.summary, u.summary_through_seq), ("nothing yet", 0))
        self.assertInvalid(self.client.update_summary, sid, "s", 1, field="through_seq")


class SummaryEveryTest(ServerTestCase):
    server_args = ("--summary-every", "2")

    def test_summary_every_flag(self):
        sid = self.client.create(uid("u")).session_id
        self.assertFalse(self.client.append(sid, "a").session.summary_due)
        self.assertTrue(self.client.append(sid, "b").session.summary_due)
        self.assertFalse(self.client.update_summary(sid, "s", 1).summary_due)
        self.assertTrue(self.client.append(sid, "c").session.summary_due)


class ExpiryTest(ServerTestCase):
    server_args = ("--session-ttl", "1")

    def test_idle_session_expires(self):
        c = self.client
        user = uid("u")
        s = c.create(user)
        sid = s.session_id
        ttl = ts_ns(s.expire_time) - ts_ns(s.create_time)
        self.assertLessEqual(abs(ttl - SEC), SEC // 2, "ttl %dns" % ttl)
        r = c.append(sid, "in time")
        deadline = ts_ns(r.session.expire_time)
        # wait until well past expire_time (bounded)
        while time.time_ns() < deadline + 1.5 * SEC:
            time.sleep(0.1)
        g = c.get(sid)
        self.assertEqual(g.state, pb.SESSION_STATE_EXPIRED)
        self.assertEqual([x.state for x in c.list_sessions(user).sessions],
                         [pb.SESSION_STATE_EXPIRED])
        self.assertStatus(PRECOND, c.append, sid, "too late")
        self.assertEqual(c.get(sid).message_count, 1)
        # reads still work
        self.assertEqual([m.content for m in c.all_messages(sid)], ["in time"])
        self.assertEqual([m.content for m in c.context(sid).messages], ["in time"])
