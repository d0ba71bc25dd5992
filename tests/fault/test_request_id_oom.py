"""engram-request-id goes out with every non-OK reply, even one whose
google.rpc.Status could not be built because memory ran out (the failure
the request id is most needed for)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from driver import FaultServer  # noqa: E402
from harness import E2ETestCase, uid  # noqa: E402
from engram.v1 import session_pb2 as sp  # noqa: E402


class RequestIdOutOfMemoryTest(E2ETestCase):

    def setUp(self):
        self.srv = FaultServer()
        self.addCleanup(self.srv.close)
        self.srv.start()
        self.client = self.srv.client()

    def get_missing(self):
        """A GetSession that answers NOT_FOUND; returns (code, trailing)."""
        try:
            self.client.call("GetSession", sp.GetSessionRequest(session_id=uid("s")))
        except grpc.RpcError as e:
            return e.code(), dict(e.trailing_metadata() or ())
        self.fail("GetSession of a missing session answered OK")

    def test_request_id_survives_each_failed_malloc(self):
        """Fails each of the call's mallocs in turn (the last ones build its
        details): every answer is non-OK and names its request id."""
        self.srv.arm("point=malloc,nth=0")
        code, md = self.get_missing()
        total = self.srv.arm("")
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("grpc-status-details-bin", md)
        self.assertGreater(total, 0)
        without_details = 0
        for n in range(1, total + 1):
            self.srv.arm("point=malloc,nth=%d" % n)
            code, md = self.get_missing()
            self.srv.arm("")
            with self.subTest(n=n):
                self.assertNotEqual(code, grpc.StatusCode.OK)
                rid = md.get("engram-request-id", "")
                self.assertRegex(rid, r"^[0-9a-f]{1,32}$", md)
                without_details += "grpc-status-details-bin" not in md
        # Some failed malloc was one of the details' own.
        self.assertGreater(without_details, 0)


if __name__ == "__main__":
    unittest.main()
