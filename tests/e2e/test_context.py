"""GetContext: summary + the newest contiguous messages that fit both budgets."""
import grpc

from harness import M, ServerTestCase, uid


class ContextTest(ServerTestCase):

    def session_with_tokens(self, counts):
        sid = self.client.create(uid("u")).session_id
        self.client.append(sid, *[M("msg-%d" % (i + 1), token_count=t)
                                  for i, t in enumerate(counts)])
        return sid

    def check(self, r, seqs, total, truncated):
        self.assertSeqs(r.messages, seqs)
        self.assertEqual([m.content for m in r.messages], ["msg-%d" % s for s in seqs])
        self.assertEqual(r.total_tokens, total)
        self.assertEqual(r.truncated, truncated)

    def test_no_budgets_returns_all_oldest_first(self):
        sid = self.session_with_tokens([10, 10, 50, 10, 10])
        r = self.client.context(sid)
        self.check(r, [1, 2, 3, 4, 5], 90, False)
        self.assertEqual(r.summary, "")
        self.assertEqual(r.summary_through_seq, 0)

    def test_token_budget_stops_at_first_message_that_does_not_fit(self):
        sid = self.session_with_tokens([10, 10, 50, 10, 10])
        # seq 3 (50) does not fit in 25: seqs 1,2 must not be used to fill up
        self.check(self.client.context(sid, max_tokens=25), [4, 5], 20, True)
        self.check(self.client.context(sid, max_tokens=69), [4, 5], 20, True)
        # exact fit
        self.check(self.client.context(sid, max_tokens=70), [3, 4, 5], 70, True)
        self.check(self.client.context(sid, max_tokens=90), [1, 2, 3, 4, 5], 90, False)
        self.check(self.client.context(sid, max_tokens=10), [5], 10, True)
        # even the newest message does not fit
        self.check(self.client.context(sid, max_tokens=9), [], 0, True)

    def test_message_budget(self):
        sid = self.session_with_tokens([1, 2, 3, 4, 5])
        self.check(self.client.context(sid, max_messages=2), [4, 5], 9, True)
        self.check(self.client.context(sid, max_messages=5), [1, 2, 3, 4, 5], 15, False)
        self.check(self.client.context(sid, max_messages=6), [1, 2, 3, 4, 5], 15, False)
        # both budgets: the tighter one wins
        self.check(self.client.context(sid, max_messages=3, max_tokens=9), [4, 5], 9, True)
        self.check(self.client.context(sid, max_messages=1, max_tokens=100), [5], 5, True)

    def test_summary_bounds_the_messages(self):
        sid = self.session_with_tokens([10, 10, 10, 10, 10])
        self.client.update_summary(sid, "first two, summarised", 2)
        r = self.client.context(sid)
        self.assertEqual(r.summary, "first two, summarised")
        self.assertEqual(r.summary_through_seq, 2)
        self.check(r, [3, 4, 5], 30, False)
        self.check(self.client.context(sid, max_messages=2), [4, 5], 20, True)
        self.check(self.client.context(sid, max_tokens=30), [3, 4, 5], 30, False)
        self.client.update_summary(sid, "everything", 5)
        r = self.client.context(sid)
        self.assertEqual(r.summary, "everything")
        self.check(r, [], 0, False)

    def test_huge_token_counts_do_not_overflow(self):
        big = 2 ** 31 - 1
        sid = self.session_with_tokens([big, big, big])
        self.check(self.client.context(sid), [1, 2, 3], 3 * big, False)
        self.check(self.client.context(sid, max_tokens=big), [3], big, True)
        self.check(self.client.context(sid, max_tokens=big - 1), [], 0, True)

    def test_estimated_tokens_count(self):
        sid = self.client.create(uid("u")).session_id
        self.client.append(sid, M("x" * 40), M("y" * 41))  # 10 and 11 estimated
        r = self.client.context(sid)
        self.assertEqual(r.total_tokens, 21)
        self.assertEqual([m.token_count for m in r.messages], [10, 11])
        r = self.client.context(sid, max_tokens=20)
        self.assertEqual([m.seq for m in r.messages], [2])
        self.assertTrue(r.truncated)

    def test_empty_session(self):
        sid = self.client.create(uid("u")).session_id
        r = self.client.context(sid, max_messages=10, max_tokens=10)
        self.assertEqual(len(r.messages), 0)
        self.assertEqual(r.total_tokens, 0)
        self.assertFalse(r.truncated)

    def test_default_max_messages_50(self):
        sid = self.session_with_tokens([1] * 55)
        self.check(self.client.context(sid), list(range(6, 56)), 50, True)

    def test_errors(self):
        sid = self.session_with_tokens([1])
        self.assertInvalid(self.client.context, sid, max_messages=-1, field="max_messages")
        self.assertInvalid(self.client.context, sid, max_tokens=-1, field="max_tokens")
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.client.context, uid("nope"))


class ContextCapTest(ServerTestCase):
    server_args = ("--default-page-size", "3", "--max-page-size", "5")

    def test_max_messages_capped_at_max_page_size(self):
        sid = self.client.create(uid("u")).session_id
        self.client.append(sid, *[M("m%d" % i, token_count=1) for i in range(1, 9)])
        for asked in (5, 6, 100):
            r = self.client.context(sid, max_messages=asked)
            self.assertSeqs(r.messages, [4, 5, 6, 7, 8])
            self.assertTrue(r.truncated)
            self.assertEqual(r.total_tokens, 5)
