"""engram-min-lsn bounds: a parked read leaves parking by the call's own
deadline, --call-timeout-ms included (not by --max-lsn-wait-ms alone), and
a method that reads no data (Health) ignores the header instead of
parking."""
import threading

import grpc

from harness import SERVING, health_pb2, pb
from test_min_lsn import WAIT_S, ParkingTestCase


class MinLsnBoundsTest(ParkingTestCase):
    # Parking would last a minute by --max-lsn-wait-ms; the call cap is 1 s.
    SERVER_ARGS = ("--max-lsn-wait-ms", "60000", "--call-timeout-ms", "1000")

    def test_parked_read_leaves_by_the_call_timeout(self):
        got = {}

        def reader():
            try:
                self.client.call("GetSession", pb.GetSessionRequest(session_id=self.sid),
                                 timeout=30, metadata=(("engram-min-lsn", str(10**9)),))
            except grpc.RpcError as e:
                got["code"], got["details"] = e.code(), e.details()

        t = threading.Thread(target=reader)
        t.start()
        self.wait_parked(1)
        # Out of parking by the 1 s cap, long before the client's 30 s or
        # the 60 s wait.
        self.wait_parked(0)
        t.join(WAIT_S)
        self.assertFalse(t.is_alive())
        # Parking and the reaper answer alike, whichever is first.
        self.assertEqual(got.get("code"), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertIn("--call-timeout-ms (1000 ms)", got.get("details"))
        # The server still serves.
        self.assertEqual(self.client.get(self.sid).session_id, self.sid)

    def test_health_ignores_min_lsn(self):
        resp = self.client._health(health_pb2.HealthCheckRequest(), timeout=20,
                                   metadata=(("engram-min-lsn", str(10**9)),))
        self.assertEqual(resp.status, SERVING)
        self.assertEqual(self.parked_reads(), 0)
