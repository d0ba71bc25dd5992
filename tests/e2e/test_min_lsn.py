"""engram-min-lsn on a single node: reads wait (parked, not holding a
worker) until the LSN is in, fail UNAVAILABLE past --max-lsn-wait-ms, and
a SIGTERM while reads are parked answers them and exits cleanly."""
import threading
import time

import grpc

from harness import E2ETestCase, M, Server, pb, uid


class MinLsnTest(E2ETestCase):
    def setUp(self):
        # One worker: a parked read that held it would block every other call.
        self.server = Server("--workers", "1", "--max-lsn-wait-ms", "3000")
        self.server.start()
        self.addCleanup(self.server.close)
        self.client = self.server.client()
        self.sid = self.client.create(uid("u")).session_id

    def get_at(self, lsn, timeout=10):
        return self.client.call("GetSession", pb.GetSessionRequest(session_id=self.sid),
                                timeout=timeout, metadata=(("engram-min-lsn", str(lsn)),))

    def test_parked_read_runs_when_the_write_lands_and_frees_the_worker(self):
        _, lsn = self.client.call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=self.sid, messages=[M("one")]))
        want = int(lsn) + 1
        got = {}

        def reader():
            got["session"] = self.get_at(want)

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        # The lone worker is free while the read waits: other calls go through.
        self.assertEqual(self.client.get(self.sid).message_count, 1)
        self.client.append(self.sid, M("two"))  # commits LSN `want`
        t.join(timeout=10)
        self.assertFalse(t.is_alive())
        self.assertEqual(got["session"].message_count, 2)

    def test_unavailable_past_the_wait_bound(self):
        start = time.monotonic()
        self.assertStatus(grpc.StatusCode.UNAVAILABLE, self.get_at, 10**12)
        self.assertLess(time.monotonic() - start, 8)

    def test_sigterm_answers_parked_reads_and_exits_cleanly(self):
        codes = []
        lock = threading.Lock()

        def reader():
            try:
                self.get_at(10**12, timeout=20)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=reader) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.server.stop()  # fails the test unless engramd exits 0 with a clean log
        for t in threads:
            t.join(timeout=20)
        self.assertEqual(len(codes), 6)
        self.assertNotIn(grpc.StatusCode.OK, codes)
