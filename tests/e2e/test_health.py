"""grpc.health.v1 (issue 11) with static roles, real engramd processes on
loopback:

  ClusterHealthTest  per-service Check on a primary and a replica
                     (ReplicationService NOT_SERVING on a replica), GetStatus
                     saying the same; a replica whose primary is SIGSTOPped
                     turns NOT_SERVING (seen through Watch) and SERVING again
                     after SIGCONT; Watch of an unknown service
  WatchTest          Watch sends SERVING, then NOT_SERVING and a clean end
                     when the server gets SIGTERM; the cap on watches
                     (the 17th is UNAVAILABLE; a cancelled one frees its
                     place)
  ConnectionAgeTest  --max-connection-age-ms: the channel gets GOAWAY (leaves
                     READY) after the age while a stream in flight goes on,
                     and new calls reconnect
"""
import queue
import signal
import threading
import time

import grpc

from harness import NOT_SERVING, RPC_TIMEOUT, SERVING, E2ETestCase, health_pb2
from test_replication import Cluster, ReplicationCase, status

SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
PUBLIC = ["", "engram.v1.SessionService", "engram.v1.MemoryService", "engram.v1.UserService",
          "grpc.health.v1.Health"]
REPLICATION = "engram.v1.ReplicationService"
WATCHES_MAX = 16          # EG_HEALTH_WATCHES_MAX
WAIT_S = 30.0             # bound on any awaited event (ASan is slow)


def check(srv, service=""):
    ch = grpc.insecure_channel(srv.addr)
    try:
        fn = ch.unary_unary("/grpc.health.v1.Health/Check",
                            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        return fn(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT).status
    finally:
        ch.close()


class Watch:
    """One Health/Watch stream; its messages go to a queue on a thread of
    its own, and how it ended (None: OK) once it did."""

    def __init__(self, channel, service=""):
        fn = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        self.call = fn(health_pb2.HealthCheckRequest(service=service))
        self.got = queue.Queue()
        self.ended = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for m in self.call:
                self.got.put(m.status)
        except grpc.RpcError as e:
            self.error = e
        self.ended.set()

    def next(self, timeout=WAIT_S):
        try:
            return self.got.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no Watch message within %ss (error: %r)" % (timeout, self.error))

    def wait_for(self, want, timeout=WAIT_S):
        """Reads messages until one is want; returns those before it."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            s = self.next(max(0.0, deadline - time.monotonic()))
            if s == want:
                return seen
            seen.append(s)

    def cancel(self):
        self.call.cancel()
        self.ended.wait(WAIT_S)


class ClusterHealthTest(ReplicationCase):

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        cls.addClassCleanup(cls.cluster.close)  # also when a start below fails
        cls.p = cls.cluster.primary().start()
        cls.r1 = cls.cluster.replica("r1", cls.p.addr).start()

    def setUp(self):
        self.wait_connected(self.p, ["r1"])

    def test_per_service_check(self):
        for s in PUBLIC + [REPLICATION]:
            self.assertEqual(check(self.p, s), SERVING, s)
        for s in PUBLIC:
            self.assertEqual(check(self.r1, s), SERVING, s)
        # A replica serves no replica.
        self.assertEqual(check(self.r1, REPLICATION), NOT_SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            check(self.p, "engram.v1.NoSuchService")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        for n in (self.p, self.r1):
            st = status(n)
            self.assertTrue(st.serving)
            self.assertEqual(st.not_serving_reason, "")

    def test_watch_unknown_service(self):
        ch = grpc.insecure_channel(self.p.addr)
        try:
            w = Watch(ch, "engram.v1.NoSuchService")
            self.assertEqual(w.next(), SERVICE_UNKNOWN)
            w.cancel()
        finally:
            ch.close()

    def test_replica_of_a_stopped_primary_turns_not_serving(self):
        ch = grpc.insecure_channel(self.r1.addr)
        w = Watch(ch)
        try:
            self.assertEqual(w.next(), SERVING)
            self.p.proc.send_signal(signal.SIGSTOP)
            try:
                # The replica notices the silence of its stream.
                self.assertEqual(w.wait_for(NOT_SERVING), [])
                st = status(self.r1)
                self.assertFalse(st.serving)
                self.assertIn("not streaming from its primary", st.not_serving_reason)
                self.assertEqual(check(self.r1), NOT_SERVING)
            finally:
                self.p.proc.send_signal(signal.SIGCONT)
            self.assertEqual(w.wait_for(SERVING), [])
            self.assertEqual(check(self.r1), SERVING)
        finally:
            w.cancel()
            ch.close()


class WatchTest(E2ETestCase):

    def test_watch_sees_the_drain_and_ends_cleanly(self):
        srv = self.start_server()
        ch = grpc.insecure_channel(srv.addr)
        try:
            w = Watch(ch)
            self.assertEqual(w.next(), SERVING)
            srv.proc.send_signal(signal.SIGTERM)
            self.assertEqual(w.next(), NOT_SERVING)
            self.assertTrue(w.ended.wait(WAIT_S))
            self.assertIsNone(w.error)  # ended OK
            self.assertEqual(srv.proc.wait(timeout=WAIT_S), 0)
        finally:
            ch.close()
        srv.stop()  # checks the log (the process is gone already)

    def test_watches_are_capped(self):
        srv = self.start_server()
        chans = [grpc.insecure_channel(srv.addr) for _ in range(2)]
        watches = []
        try:
            for i in range(WATCHES_MAX):
                watches.append(Watch(chans[i % 2]))
            for w in watches:
                self.assertEqual(w.next(), SERVING)
            late = Watch(chans[0])
            self.assertTrue(late.ended.wait(WAIT_S))
            self.assertEqual(late.error.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("too many health watches open (at most %d)" % WATCHES_MAX,
                          late.error.details())
            # A watch whose client left gives its place back.
            watches.pop().cancel()
            deadline = time.monotonic() + WAIT_S
            while True:
                again = Watch(chans[1])
                try:
                    if again.next(timeout=RPC_TIMEOUT) == SERVING:
                        watches.append(again)
                        break
                except AssertionError:
                    self.assertEqual(again.error.code(), grpc.StatusCode.UNAVAILABLE)
                self.assertLess(time.monotonic(), deadline, "the place was not freed")
                time.sleep(0.05)
        finally:
            for w in watches:
                w.cancel()
            for c in chans:
                c.close()


class ConnectionAgeTest(E2ETestCase):

    def test_goaway_after_the_age_while_a_stream_finishes(self):
        srv = self.start_server("--max-connection-age-ms", "1000")
        ch = grpc.insecure_channel(srv.addr)
        left_ready = threading.Event()
        seen_ready = threading.Event()

        def on_state(s):
            if s == grpc.ChannelConnectivity.READY:
                seen_ready.set()
            elif seen_ready.is_set():
                left_ready.set()
        ch.subscribe(on_state, try_to_connect=True)
        try:
            w = Watch(ch)  # a stream in flight across the GOAWAY
            self.assertEqual(w.next(), SERVING)
            self.assertTrue(seen_ready.wait(WAIT_S))
            self.assertTrue(left_ready.wait(WAIT_S), "the channel never left READY")
            self.assertFalse(w.ended.is_set(), "the stream was cut by the GOAWAY")
            # New calls go on a new connection.
            fn = ch.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)
            self.assertEqual(fn(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT,
                                wait_for_ready=True).status, SERVING)
            # The old stream still finishes as it should.
            srv.proc.send_signal(signal.SIGTERM)
            self.assertEqual(w.next(), NOT_SERVING)
            self.assertTrue(w.ended.wait(WAIT_S))
            self.assertIsNone(w.error)
            self.assertEqual(srv.proc.wait(timeout=WAIT_S), 0)
        finally:
            ch.unsubscribe(on_state)
            ch.close()
        srv.stop()
