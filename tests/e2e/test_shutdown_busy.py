"""SIGTERM while a handler is still busy past --shutdown-grace-ms: engramd
cancels the calls, waits for the busy worker to hand its call back, and
exits 0 (it used to abort in gRPC when the worker replied on a completion
queue already shut down). The slow handler is a read whose LMDB reader
start sleeps, through the fault shim's delay_ms (engramd-fault)."""
import os
import signal
import threading
import time
import unittest

import grpc

from harness import ENGRAMD, E2ETestCase, Server, pb

ENGRAMD_FAULT = os.environ.get("ENGRAMD_FAULT") or os.path.join(os.path.dirname(ENGRAMD),
                                                                 "engramd-fault")
DELAY_MS = 3000


class FaultServer(Server):
    def argv(self):
        return [ENGRAMD_FAULT] + super().argv()[1:]


def wait_log(srv, needle, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in srv.log_text():
            return
        if srv.proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError("no %r in the log:\n%s" % (needle, srv.log_text()[-3000:]))


@unittest.skipUnless(os.path.isfile(ENGRAMD_FAULT), "engramd-fault not built")
class SigtermBusyWorkerTest(E2ETestCase):
    def sigterm_during_slow_read(self, delay_ms, *args):
        """Starts engramd-fault, makes one GetSession's reader sleep delay_ms,
        sends SIGTERM while it sleeps; returns (server, exit status, codes)."""
        srv = FaultServer("--workers", "1", "--shutdown-grace-ms", "300", *args)
        ctl = os.path.join(srv.tmp, "fault.ctl")
        srv.env["ENGRAM_FAULT_CTL"] = ctl
        self.addCleanup(srv.close)
        srv.start()
        sid = srv.client().create("u1").session_id
        with open(ctl, "w") as f:
            f.write("point=reader,nth=1,count=1,delay_ms=%d,gen=1" % delay_ms)
        os.kill(srv.pid, signal.SIGUSR1)
        wait_log(srv, "engram-fault: armed gen=1")
        codes = []

        def call():
            try:
                srv.client().get(sid)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        t = threading.Thread(target=call)
        t.start()
        wait_log(srv, "engram-fault: hit point=reader")
        p = srv.proc
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=delay_ms / 1000 + 30)
        srv.proc = None
        t.join(timeout=30)
        srv.check_log()
        return srv, rc, codes

    def test_sigterm_while_a_handler_runs_past_the_grace(self):
        srv, rc, codes = self.sigterm_during_slow_read(DELAY_MS)
        self.assertEqual(rc, 0, "exit status %s; log:\n%s" % (rc, srv.log_text()[-3000:]))
        self.assertIn("calls still running after 300 ms; cancelling them", srv.log_text())
        self.assertEqual(len(codes), 1)
        self.assertNotEqual(codes[0], grpc.StatusCode.OK)

    def test_a_handler_stuck_past_call_timeout_exits_1(self):
        srv, rc, _ = self.sigterm_during_slow_read(4000, "--call-timeout-ms", "500")
        self.assertEqual(rc, 1, "exit status %s; log:\n%s" % (rc, srv.log_text()[-3000:]))
        self.assertIn("a handler is still running 500 ms after the calls were cancelled",
                      srv.log_text())


if __name__ == "__main__":
    unittest.main()
