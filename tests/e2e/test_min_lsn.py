"""engram-min-lsn on a single node: reads wait (parked, not holding a
worker) until the LSN is in, fail UNAVAILABLE past --max-lsn-wait-ms, and
a SIGTERM while reads are parked answers them and exits cleanly."""
import threading
import time
import urllib.request

import grpc

from harness import Client, E2ETestCase, M, free_port, pb, uid

WAIT_S = 10  # bound on waiting for the parked gauge to reach a value


def parked_reads(test, port):
    """The engram_parked_reads gauge of the server whose /metrics is on port."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("engram_parked_reads "):
                return int(line.split()[1])
    test.fail("no engram_parked_reads in /metrics")


def wait_parked(test, port, n):
    """Waits (bounded) until that server holds n parked reads."""
    deadline = time.monotonic() + WAIT_S
    while (got := parked_reads(test, port)) != n:
        if time.monotonic() > deadline:
            test.fail("%d reads parked after %ss, want %d" % (got, WAIT_S, n))
        time.sleep(0.02)


class ParkingTestCase(E2ETestCase):
    """A server with /metrics on and one session; SERVER_ARGS says how it
    parks. Holds no tests itself (test_min_lsn_bounds builds on it)."""
    SERVER_ARGS = ()

    def setUp(self):
        self.metrics_port = free_port()
        self.server = self.start_server(*self.SERVER_ARGS,
                                        "--metrics-listen", "127.0.0.1:%d" % self.metrics_port)
        self.client = self.server.client()
        self.sid = self.client.create(uid("u")).session_id

    def parked_reads(self):
        return parked_reads(self, self.metrics_port)

    def wait_parked(self, n):
        wait_parked(self, self.metrics_port, n)


class MinLsnTest(ParkingTestCase):
    # One worker: a parked read that held it would block every other call.
    SERVER_ARGS = ("--workers", "1", "--max-lsn-wait-ms", "3000")

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
        self.wait_parked(1)
        # The lone worker is free while the read waits: other calls go through.
        self.assertEqual(self.client.get(self.sid).message_count, 1)
        self.assertTrue(t.is_alive())  # parked until LSN `want`, which nothing wrote
        self.client.append(self.sid, M("two"))  # commits LSN `want`
        t.join(timeout=10)
        self.assertFalse(t.is_alive())
        self.assertEqual(got["session"].message_count, 2)
        self.assertEqual(self.parked_reads(), 0)

    def test_unavailable_past_the_wait_bound(self):
        start = time.monotonic()
        self.assertStatus(grpc.StatusCode.UNAVAILABLE, self.get_at, 10**12)
        self.assertLess(time.monotonic() - start, 8)

    def test_sigterm_answers_parked_reads_and_exits_cleanly(self):
        answers = []
        lock = threading.Lock()
        # A channel of its own: stop() closes the server's clients first,
        # which would cancel the reads on our side before engramd answers.
        own = Client(self.server.addr)
        self.addCleanup(own.close)

        def reader():
            try:
                own.call("GetSession", pb.GetSessionRequest(session_id=self.sid), timeout=20,
                         metadata=(("engram-min-lsn", str(10**12)),))
                answer = (grpc.StatusCode.OK, "")
            except grpc.RpcError as e:
                answer = (e.code(), e.details())
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=reader) for _ in range(6)]
        for t in threads:
            t.start()
        self.wait_parked(6)
        self.server.stop()  # fails the test unless engramd exits 0 with a clean log
        for t in threads:
            t.join(timeout=20)
        self.assertEqual(len(answers), 6)
        # Each was answered by the server from parking, not cut off.
        for code, details in answers:
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
            self.assertIn("engram-min-lsn", details)
