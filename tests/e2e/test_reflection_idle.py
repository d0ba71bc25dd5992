"""A reflection stream that asks nothing for EG_REFLECTION_IDLE_MS (10 s)
is ended DEADLINE_EXCEEDED, long before --call-timeout-ms: the streams
anyone may open without a token cannot lock reflection out by idling."""
import threading
import time

import grpc

from harness import E2ETestCase
from relay import Relay
from grpc_reflection.v1 import reflection_pb2, reflection_pb2_grpc

STREAMS_MAX = 8        # EG_REFLECTION_STREAMS_MAX
PEER_STREAMS = 2       # EG_REFLECTION_PEER_STREAMS
IDLE_S = 10            # EG_REFLECTION_IDLE_MS
CALL_TIMEOUT_MS = 40000
LIST = reflection_pb2.ServerReflectionRequest(list_services="")


class ReflectionIdleTest(E2ETestCase):

    def setUp(self):
        self.srv = self.start_server("--call-timeout-ms", str(CALL_TIMEOUT_MS))
        self.channel = grpc.insecure_channel(self.srv.addr)
        self.addCleanup(self.channel.close)
        self.stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        self.done = threading.Event()
        self.addCleanup(self.done.set)

    def silent(self):
        """Sends nothing and does not half-close."""
        self.done.wait()
        return
        yield  # a generator

    def test_idle_streams_are_ended(self):
        started = time.monotonic()
        # From STREAMS_MAX / PEER_STREAMS addresses: one holds PEER_STREAMS.
        idle = []
        for i in range(STREAMS_MAX // PEER_STREAMS):
            r = Relay(self.srv.addr, "127.0.0.%d" % (i + 2))
            self.addCleanup(r.close)
            ch = grpc.insecure_channel(r.addr)
            self.addCleanup(ch.close)
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            idle += [stub.ServerReflectionInfo(self.silent(), timeout=CALL_TIMEOUT_MS / 1000)
                     for _ in range(PEER_STREAMS)]
        # (That these take every place, so the next one is refused, is
        # test_reflection_peers' case; waiting for it here would race the
        # very idle bound under test on a slow build.)
        for call in idle:
            e = self.assertStatus(grpc.StatusCode.DEADLINE_EXCEEDED, list, call)
            self.assertIn("asked nothing for %d ms" % (IDLE_S * 1000), e.details())
        self.assertLess(time.monotonic() - started, CALL_TIMEOUT_MS / 1000 / 2)
        # The places are free again.
        self.assertEqual(len(list(self.stub.ServerReflectionInfo(iter([LIST]), timeout=10))), 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
