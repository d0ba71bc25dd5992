"""A stream the client cancels is counted (engram_rpc_total) and ended as
CANCELLED, whatever its kind: a reflection stream that was answered (its
receive fails; that is not the client being done asking, which ends OK)
and a health Watch alike."""
import threading

import grpc

from harness import E2ETestCase, Server
from test_observability import parse, scrape, start, value
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1 import reflection_pb2, reflection_pb2_grpc

REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
WATCH = "/grpc.health.v1.Health/Watch"
LIST = reflection_pb2.ServerReflectionRequest(list_services="")


class StreamCancelTest(E2ETestCase):

    def setUp(self):
        self.srv = start(Server("--metrics-listen", "127.0.0.1:0"))
        self.addCleanup(self.srv.close)
        self.channel = grpc.insecure_channel(self.srv.addr)
        self.addCleanup(self.channel.close)
        # Lets go of the request generators that keep their streams open.
        self.done = threading.Event()
        self.addCleanup(self.done.set)

    def count(self, method, code):
        return value(parse(scrape(self.srv)), "engram_rpc_total", method=method, code=code) or 0

    def wait_count(self, method, code, want):
        self.wait_until(lambda: self.count(method, code) == want, 10,
                        "%s counted %s %d times" % (method, code, want), nodes=(self.srv,))

    def one_question(self):
        """One question, then nothing: the stream stays open (no half-close)."""
        yield LIST
        self.done.wait()

    def test_cancelled_reflection_stream_is_cancelled(self):
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        for _ in range(3):
            call = stub.ServerReflectionInfo(self.one_question())
            next(call)  # answered: the stream is open on the server
            call.cancel()
        self.wait_count(REFLECTION, "CANCELLED", 3)
        self.assertEqual(self.count(REFLECTION, "OK"), 0)
        # A client done asking (half-close) still ends OK.
        self.assertEqual(len(list(stub.ServerReflectionInfo(iter([LIST])))), 1)
        self.wait_count(REFLECTION, "OK", 1)

    def test_cancelled_health_watch_is_cancelled(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        next(call)
        call.cancel()
        self.wait_count(WATCH, "CANCELLED", 1)
        self.assertEqual(self.count(WATCH, "UNAVAILABLE"), 0)


if __name__ == "__main__":
    import unittest
    unittest.main()
