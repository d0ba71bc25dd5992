"""Fault injection through engramd-fault (driver.py): the short loop ctest
runs, and regression tests for what the loop found."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from driver import SHORT, Api, FaultServer, Loop, Run, code_of  # noqa: E402
from harness import E2ETestCase  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402

# How long the own-clock threads get to show up (each wakes about every second).
OWN_CLOCK_WAIT_S = 15


class FaultLoopTest(E2ETestCase):

    def test_short_loop(self):
        """Each point with its likeliest errors, N sampled: every failed call
        answers a clear status, leaves nothing behind, and its retry works."""
        loop = Loop(full=False, log=lambda s: None)
        elapsed = loop.run(SHORT)
        report = loop.report(elapsed)
        print("\n" + report, file=sys.stderr)
        self.assertGreater(loop.injections, 0, report)
        self.assertEqual(loop.findings, [], report)


class OwnClockThreadsTest(E2ETestCase):

    def test_idle_threads_on_their_own_clock_count_no_call(self):
        """An idle engramd-fault: its key rotation and reindex threads each
        start a reader about every second, and allocate, but no call of
        theirs counts at a point (shim.c, fault_skipped_threads), so the
        nth call a driver arms is the workload's. Waits until the shim
        saw them at the point (skipped) a few times in all, and asserts
        that nothing counted meanwhile."""
        srv = FaultServer()
        self.addCleanup(srv.close)
        srv.start()
        for point in ("reader", "malloc"):
            srv.arm("point=%s,nth=0" % point)
            skipped = [0]

            def seen_skipped():
                seen = srv.arm("point=%s,nth=0" % point)
                self.assertEqual(seen, 0, "%s: %d calls counted on an idle server" % (point, seen))
                skipped[0] += srv.skipped
                return skipped[0] >= 4
            self.wait_until(seen_skipped, OWN_CLOCK_WAIT_S,
                            "%s: 4 calls of the own-clock threads seen" % point)
        srv.arm("")


class BrokenEnvTest(E2ETestCase):

    def test_failed_meta_page_write_restarts(self):
        """A failed write of LMDB's meta page (a commit's last write) breaks
        the env. The call answers UNAVAILABLE "restarting" and Health
        NOT_SERVING at once (not at the next call), engramd-fault exits 1
        with one log line, and on a restart the call is absent and its
        retry works: Loop.after_broken checks each. N = 1, 2, ... reaches
        the first commit's meta page within a handful of runs."""
        loop = Loop(full=True, log=lambda s: None)
        loop.start()
        try:
            for n in range(1, 20):
                loop.one(("write", "ENOSPC"), n)
                if loop.restarts:
                    break
        finally:
            loop.stop()
        self.assertEqual(loop.findings, [], loop.report(0))
        self.assertEqual(loop.restarts, 1, loop.report(0))


class OutOfMemoryTest(E2ETestCase):

    def setUp(self):
        self.srv = FaultServer()
        self.addCleanup(self.srv.close)
        self.srv.start()
        self.api = Api(self.srv.client())
        self.run_ = Run(self.api)
        steps = self.run_.steps()
        for step in steps[:5]:  # session, 3 messages, a memory
            step.done(step.call())

    def each_malloc(self, call):
        """Fails each of call's mallocs in turn; yields the answers."""
        self.srv.arm("point=malloc,nth=0")
        call()
        total = self.srv.arm("")
        self.assertGreater(total, 0)
        for n in range(1, total + 1):
            self.srv.arm("point=malloc,nth=%d" % n)
            code, details, _ = code_of(call)
            self.srv.arm("")
            yield n, code, details

    def test_oom_opening_a_record_is_not_data_loss(self):
        """An allocation that fails while a field is decrypted is out of
        memory (retryable), not DATA_LOSS "tampered, or key missing"."""
        reads = [("ListMessages", self.run_.messages),
                 ("GetMemory", self.run_.get_memory),
                 ("SearchMemories", lambda: self.api.memory("SearchMemories",
                                                            mp.SearchMemoriesRequest(
                                                                user_id=self.run_.user,
                                                                query="tea", top_k=5)))]
        for name, call in reads:
            for n, code, details in self.each_malloc(call):
                with self.subTest(call=name, n=n):
                    self.assertIn(code, (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED),
                                  details)
                    if code != grpc.StatusCode.OK:
                        self.assertIn("out of memory", details)


if __name__ == "__main__":
    unittest.main()
