"""Many clients at once: gap-free seqs, exactly-once retries, unique ids."""
import threading
import time

import grpc

from harness import Client, M, ServerTestCase, pb, run_threads, ts_ns, uid

THREADS = 8


class ConcurrencyTest(ServerTestCase):

    def test_parallel_appends_one_session(self):
        sid = self.client.create(uid("u")).session_id
        per = 50
        got = [[] for _ in range(THREADS)]
        addr = self.server.addr

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    for n in range(per):
                        r = c.append(sid, M("t%d-n%d" % (i, n)))
                        self.assertEqual(len(r.messages), 1)
                        got[i].append(r.messages[0].seq)
                finally:
                    c.close()
            return run

        run_threads([worker(i) for i in range(THREADS)], timeout=120)
        total = THREADS * per
        msgs = self.client.all_messages(sid)
        self.assertSeqs(msgs, range(1, total + 1))
        contents = [m.content for m in msgs]
        want = sorted("t%d-n%d" % (i, n) for i in range(THREADS) for n in range(per))
        self.assertEqual(sorted(contents), want, "each content exactly once")
        self.assertEqual(self.client.get(sid).message_count, total)
        # each client saw increasing seqs, matching what was stored
        by_seq = {m.seq: m.content for m in msgs}
        for i in range(THREADS):
            self.assertEqual(got[i], sorted(got[i]))
            self.assertEqual([by_seq[s] for s in got[i]], ["t%d-n%d" % (i, n) for n in range(per)])

    def test_parallel_batches_stay_contiguous(self):
        sid = self.client.create(uid("u")).session_id
        addr = self.server.addr
        batches = []
        lock = threading.Lock()

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    for n in range(10):
                        r = c.append(sid, *["b%d-%d-%d" % (i, n, k) for k in range(5)])
                        with lock:
                            batches.append([m.seq for m in r.messages])
                finally:
                    c.close()
            return run

        run_threads([worker(i) for i in range(THREADS)], timeout=120)
        for b in batches:
            self.assertEqual(b, list(range(b[0], b[0] + 5)), "a batch was interleaved")
        msgs = self.client.all_messages(sid)
        self.assertSeqs(msgs, range(1, THREADS * 50 + 1))
        for b in batches:
            names = [msgs[s - 1].content for s in b]
            self.assertEqual(len({n.rsplit("-", 1)[0] for n in names}), 1)

    def test_same_client_message_id_races_once(self):
        sid = self.client.create(uid("u")).session_id
        self.client.append(sid, "first")
        addr = self.server.addr
        seqs = []
        lock = threading.Lock()
        barrier = threading.Barrier(THREADS, timeout=30)

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    c.health()  # connect before the race
                    barrier.wait()
                    r = c.append(sid, M("attempt %d" % i, client_message_id="the-one"))
                    with lock:
                        seqs.append(r.messages[0].seq)
                finally:
                    c.close()
            return run

        run_threads([worker(i) for i in range(THREADS)], timeout=60)
        self.assertEqual(seqs, [2] * THREADS)
        self.assertEqual(self.client.get(sid).message_count, 2)
        self.assertEqual(len(self.client.all_messages(sid)), 2)

    def test_parallel_creates_and_reads(self):
        user = uid("u")
        addr = self.server.addr
        ids = []
        lock = threading.Lock()

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    for _ in range(20):
                        s = c.create(user)
                        c.append(s.session_id, "hello")
                        self.assertEqual(c.get(s.session_id).message_count, 1)
                        c.list_sessions(user, page_size=5)
                        with lock:
                            ids.append(s.session_id)
                finally:
                    c.close()
            return run

        run_threads([worker(i) for i in range(THREADS)], timeout=120)
        self.assertEqual(len(set(ids)), THREADS * 20, "duplicate generated ids")
        listed = []
        token = ""
        for _ in range(10):
            r = self.client.list_sessions(user, page_size=50, page_token=token)
            listed += list(r.sessions)
            token = r.next_page_token
            if not token:
                break
        names = [s.session_id for s in listed]
        self.assertEqual(sorted(names), sorted(ids))
        self.assertEqual(len(names), len(set(names)))
        times = [ts_ns(s.create_time) for s in listed]
        self.assertEqual(times, sorted(times, reverse=True), "not newest first")

    def test_delete_racing_appends_leaves_nothing_behind(self):
        user = uid("u")
        addr = self.server.addr
        for round_ in range(3):
            sid = "race-%d-%s" % (round_, uid())
            self.client.create(user, session_id=sid)
            go = threading.Barrier(THREADS + 1, timeout=30)

            def appender(i):
                def run():
                    c = Client(addr)
                    try:
                        go.wait()
                        for n in range(15):
                            try:
                                c.append(sid, M("r%d-%d" % (i, n), client_message_id="c%d-%d" % (i, n)))
                            except grpc.RpcError as e:
                                self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND, e.details())
                                return
                    finally:
                        c.close()
                return run

            def deleter():
                c = Client(addr)
                try:
                    go.wait()
                    c.append(sid, "before delete")
                    c.delete(sid)
                finally:
                    c.close()

            run_threads([appender(i) for i in range(THREADS)] + [deleter], timeout=120)
            # the id comes back empty: no message, count or retry key survived
            s = self.client.create(user, session_id=sid)
            self.assertEqual(s.message_count, 0)
            self.assertEqual(len(self.client.all_messages(sid)), 0)
            r = self.client.append(sid, M("fresh", client_message_id="c0-0"))
            self.assertEqual((r.messages[0].seq, r.session.message_count), (1, 1))

    def test_cancelled_and_expired_calls_do_not_hurt(self):
        sid = self.client.create(uid("u")).session_id
        addr = self.server.addr

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    c.health()
                    for n in range(40):
                        try:
                            c.call("AppendMessages", pb.AppendMessagesRequest(
                                session_id=sid, messages=[M("d%d-%d" % (i, n))]),
                                timeout=0.0005 * (n % 4 + 1))
                        except grpc.RpcError as e:
                            self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED,
                                             e.details())
                        fut = c.stub.ListMessages.future(
                            pb.ListMessagesRequest(session_id=sid, page_size=100), timeout=5)
                        fut.cancel()
                finally:
                    c.close()
            return run

        run_threads([worker(i) for i in range(THREADS)], timeout=120)
        # A call the client gave up on may still commit a moment later (the
        # server cannot know the client left): wait, bounded, until the
        # count and the listing agree, then check them.
        for _ in range(50):
            count = self.client.get(sid).message_count
            msgs = self.client.all_messages(sid)
            if count == len(msgs) == self.client.get(sid).message_count:
                break
            time.sleep(0.1)
        self.assertSeqs(msgs, range(1, len(msgs) + 1))
        self.assertEqual(self.client.get(sid).message_count, len(msgs))
        self.assertEqual(len({m.content for m in msgs}), len(msgs))

    def test_many_sessions_interleaved(self):
        sids = [self.client.create(uid("u")).session_id for _ in range(THREADS)]
        addr = self.server.addr

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    for n in range(30):
                        sid = sids[(i + n) % THREADS]
                        c.call("AppendMessages", pb.AppendMessagesRequest(
                            session_id=sid, messages=[M("w%d-%d" % (i, n))]))
                finally:
                    c.close()
            return run

        run_threads([worker(i) for i in range(THREADS)], timeout=120)
        total = 0
        for sid in sids:
            msgs = self.client.all_messages(sid)
            self.assertSeqs(msgs, range(1, len(msgs) + 1))
            self.assertEqual(self.client.get(sid).message_count, len(msgs))
            total += len(msgs)
        self.assertEqual(total, THREADS * 30)


class OneWorkerTest(ServerTestCase):
    """--workers 1 still serves many clients at once, correctly."""
    server_args = ("--workers", "1")

    def test_parallel_appends(self):
        sid = self.client.create(uid("u")).session_id
        addr = self.server.addr

        def worker(i):
            def run():
                c = Client(addr)
                try:
                    for n in range(20):
                        c.append(sid, M("t%d-%d" % (i, n)))
                finally:
                    c.close()
            return run

        run_threads([worker(i) for i in range(4)], timeout=120)
        msgs = self.client.all_messages(sid)
        self.assertSeqs(msgs, range(1, 81))
        self.assertEqual(len({m.content for m in msgs}), 80)
