"""AppendMessages seals each message on the worker for the seq its read
snapshot predicts, and the writer stores that token only if the message
takes that very seq; else (an append to the same session committed in
between) the writer seals it again. Either way every message reads back
at its seq (a token opens only at the seq it was sealed for), none lost,
none twice; and the reply's session shows the summary and metadata as
committed, even when they change while the append is prepared."""
import threading

from harness import Client, M, ServerTestCase, pb, run_threads, uid

ROUNDS = 60


class AppendSealAheadTest(ServerTestCase):

    def test_two_clients_one_session_many_rounds(self):
        # Two clients racing on one session: most of their predictions
        # collide, so both the prepared tokens and the writer's re-seals
        # are stored. Calls of 1..3 messages with metadata move the seqs
        # by different amounts.
        sid = self.client.create(uid("u")).session_id
        addr = self.server.addr
        replies = [[] for _ in range(2)]

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    for n in range(ROUNDS):
                        msgs = [M("c%d-r%d-k%d" % (i, n, k), metadata={"who": "c%d" % i,
                                                                      "k": str(k)},
                                  client_message_id="c%d-r%d-k%d" % (i, n, k))
                                for k in range(1 + n % 3)]
                        r = c.call("AppendMessages", pb.AppendMessagesRequest(
                            session_id=sid, messages=msgs))
                        self.assertEqual(len(r.messages), len(msgs))
                        replies[i].extend((m.seq, m.content) for m in r.messages)
                finally:
                    c.close()
            return run

        run_threads([worker(0), worker(1)], timeout=300)
        want = sorted("c%d-r%d-k%d" % (i, n, k)
                      for i in range(2) for n in range(ROUNDS) for k in range(1 + n % 3))
        msgs = self.client.all_messages(sid)
        self.assertSeqs(msgs, range(1, len(want) + 1))
        self.assertEqual(sorted(m.content for m in msgs), want, "each message exactly once")
        by_seq = {m.seq: m for m in msgs}
        for i in range(2):
            for seq, content in replies[i]:
                self.assertEqual(by_seq[seq].content, content, "reply seq %d" % seq)
        for m in msgs:
            who, _, k = m.content.split("-")
            self.assertEqual(dict(m.metadata), {"who": who, "k": k[1:]})
            self.assertEqual(m.client_message_id, m.content)
        # The context reads (and opens) the newest ones at their seqs too.
        ctx = self.client.context(sid, max_messages=20)
        self.assertEqual([m.seq for m in ctx.messages], list(range(len(want) - 19, len(want) + 1)))
        self.assertEqual([m.content for m in ctx.messages], [by_seq[m.seq].content for m in ctx.messages])
        self.assertEqual(self.client.get(sid).message_count, len(want))

    def test_retries_and_repeated_ids_in_one_call(self):
        # A retry takes no seq (prepare finds it in its snapshot); an id
        # repeated within the call is found only by apply, which shifts
        # the seqs after it off the prediction: those are sealed again.
        sid = self.client.create(uid("u")).session_id
        first = self.client.append(sid, M("a", client_message_id="a")).messages[0]
        self.assertEqual(first.seq, 1)
        r = self.client.append(sid, M("a", client_message_id="a"), M("b", client_message_id="b"),
                               M("b", client_message_id="b"), M("c", client_message_id="c"),
                               M("d"))
        self.assertEqual([(m.seq, m.content) for m in r.messages],
                         [(1, "a"), (2, "b"), (2, "b"), (3, "c"), (4, "d")])
        msgs = self.client.all_messages(sid)
        self.assertEqual([(m.seq, m.content) for m in msgs], [(1, "a"), (2, "b"), (3, "c"), (4, "d")])
        self.assertEqual(r.session.message_count, 4)

    def test_reply_session_as_committed(self):
        # The reply's summary and metadata come from prepare's snapshot
        # only while their tokens are unchanged: with UpdateSummary racing
        # the appends, each reply's summary still matches its
        # summary_through_seq.
        sid = self.client.create(uid("u"), metadata={"topic": "seal"}).session_id
        self.client.append(sid, "m0")
        addr = self.server.addr
        stop = threading.Event()
        seen = []

        def appender():
            c = Client(addr)
            try:
                for n in range(ROUNDS * 2):
                    r = c.append(sid, "m%d" % (n + 1))
                    s = r.session
                    seen.append((s.summary, s.summary_through_seq))
                    self.assertEqual(dict(s.metadata), {"topic": "seal"})
            finally:
                stop.set()
                c.close()

        def summarizer():
            c = Client(addr)
            try:
                while not stop.is_set():
                    through = c.get(sid).message_count
                    c.update_summary(sid, "through %d" % through, through)
            finally:
                c.close()

        run_threads([appender, summarizer], timeout=300)
        for summary, through in seen:
            self.assertEqual(summary, "through %d" % through if through else "")
        self.assertTrue(any(through for _, through in seen), "no summary seen in a reply")
